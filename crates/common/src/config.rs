//! Reading typed settings from the environment, once, at start-up.
//!
//! Every lookup goes through [`Env`], which knows the aliases the deployed
//! `.env` files and task definitions already use (`CONTRACT.md` §3) and names
//! the variable that was wrong when a value does not parse.

use std::{collections::HashMap, fmt::Display, str::FromStr};

/// A setting that could not be used; the message names the variable.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {variable}: {message}")]
pub struct ConfigError {
    pub variable: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(variable: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            variable: variable.into(),
            message: message.into(),
        }
    }
}

/// Loads `.env` from the working directory (or a parent) into the process
/// environment, without overriding variables that are already set. Call it
/// once at the top of `main`, before anything reads the environment.
pub fn load_dotenv() {
    match dotenvy::dotenv() {
        Ok(_) => {}
        // No .env is the normal case in containers.
        Err(e) if e.not_found() => {}
        // A malformed .env should not stop the service, but must be seen.
        Err(e) => eprintln!("warning: could not read .env: {e}"),
    }
}

/// A snapshot of the variables a service reads. Built from the process
/// environment in production and from a map in tests, so that tests never
/// mutate the (process-global) environment.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// The process environment as it is now.
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
        }
    }

    /// An environment made of the given pairs only.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// This environment with `name` set to `value` (a launcher running two
    /// services gives each its own `PORT`).
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.vars.insert(name.to_owned(), value.into());
        self
    }

    /// The first of `names` that is set to a non-blank value, with the name
    /// it was found under. Blank values count as unset, because compose
    /// files often write `VAR=` for "not configured".
    pub fn lookup(&self, names: &[&'static str]) -> Option<(&'static str, &str)> {
        names.iter().find_map(|name| {
            self.vars
                .get(*name)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(|v| (*name, v))
        })
    }

    /// The value of the first of `names` that is set.
    pub fn string(&self, names: &[&'static str]) -> Option<String> {
        self.lookup(names).map(|(_, v)| v.to_owned())
    }

    /// The value parsed as `T`, or `default` when unset. A value that does
    /// not parse is an error naming the variable.
    pub fn parse_or<T>(&self, names: &[&'static str], default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        Ok(self.parse(names)?.unwrap_or(default))
    }

    /// A count or duration that must be above zero, or `default` when unset.
    pub fn positive<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr + Default + PartialEq,
        T::Err: Display,
    {
        let value = self.parse_or(&[name], default)?;
        if value == T::default() {
            return Err(ConfigError::new(name, "must be greater than 0"));
        }
        Ok(value)
    }

    /// The value parsed as `T`, or `None` when unset.
    pub fn parse<T>(&self, names: &[&'static str]) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.lookup(names) {
            None => Ok(None),
            Some((name, raw)) => raw
                .parse::<T>()
                .map(Some)
                .map_err(|e| ConfigError::new(name, format!("{raw:?} is not valid: {e}"))),
        }
    }

    /// A boolean: `true/false`, `1/0`, `yes/no`, `on/off`.
    pub fn flag(&self, names: &[&'static str], default: bool) -> Result<bool, ConfigError> {
        match self.lookup(names) {
            None => Ok(default),
            Some((name, raw)) => match raw.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(ConfigError::new(
                    name,
                    format!("{raw:?} is not a boolean (use true or false)"),
                )),
            },
        }
    }

    /// A comma-separated list, blanks dropped.
    pub fn list(&self, names: &[&'static str]) -> Vec<String> {
        self.lookup(names)
            .map(|(_, raw)| {
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// `DEPENDENCY_TIMEOUT_SECONDS` when unset: how long a request waits on a
/// part (database, S3, SQS, DynamoDB, EC2) before answering 503.
pub const DEFAULT_DEPENDENCY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `DEPENDENCY_TIMEOUT_SECONDS` (default 2, fractions allowed): the bound on
/// one call to a part, retries included, so that a part that is down or
/// hangs turns into a 503 within seconds instead of holding the request.
/// Per-part settings (`DATABASE_TIMEOUT_SECONDS`) override it for their part.
pub fn dependency_timeout(env: &Env) -> Result<std::time::Duration, ConfigError> {
    seconds_or(
        env,
        "DEPENDENCY_TIMEOUT_SECONDS",
        DEFAULT_DEPENDENCY_TIMEOUT,
    )
}

/// A positive number of seconds (fractions allowed) under `name`, or
/// `default` when unset.
pub fn seconds_or(
    env: &Env,
    name: &'static str,
    default: std::time::Duration,
) -> Result<std::time::Duration, ConfigError> {
    match env.parse::<f64>(&[name])? {
        None => Ok(default),
        Some(s) if s.is_finite() && s > 0.0 && s < 86_400.0 => {
            Ok(std::time::Duration::from_secs_f64(s))
        }
        Some(s) => Err(ConfigError::new(
            name,
            format!("{s} is not a number of seconds greater than 0"),
        )),
    }
}

/// Settings of the HTTP front door that both services share.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Address to bind; `0.0.0.0` in containers.
    pub bind: std::net::IpAddr,
    pub port: u16,
    /// `CORS_ORIGINS`; empty means "any origin" (local development).
    pub cors_origins: Vec<String>,
    /// `TRUSTED_PROXY_HOPS`: load balancers in front of the service that
    /// append to `X-Forwarded-For`; 0 (the default) trusts only the TCP peer.
    pub trusted_proxy_hops: usize,
    /// How long a client may take to send a whole request.
    pub deadlines: RequestDeadlines,
    /// `SHUTDOWN_DELAY_SECONDS`: after SIGTERM, how long the service keeps
    /// serving (with `/ready` at 503) before it stops accepting.
    pub shutdown_delay: std::time::Duration,
    /// `SHUTDOWN_GRACE_SECONDS`: then, how long requests in flight may take.
    pub shutdown_grace: std::time::Duration,
}

/// How long a client may take to send a request (headers and body, counted
/// from its arrival) before it is cut: a client that trickles bytes must not
/// hold a connection, a spool file or the shutdown. Responses are not
/// limited (event streams stay open for hours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestDeadlines {
    /// Every request but uploads; also the header read timeout of every
    /// connection.
    pub request: Deadline,
    /// Routes a service marks as uploads (`common::http::upload_deadline`).
    pub upload: Deadline,
}

/// One deadline and the setting it came from, which the 408 names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    pub after: std::time::Duration,
    pub setting: &'static str,
}

impl RequestDeadlines {
    pub const DEFAULT_REQUEST_SECONDS: u64 = 15;
    pub const DEFAULT_UPLOAD_SECONDS: u64 = 60;

    /// `REQUEST_TIMEOUT_SECONDS`, when set, is the deadline of every route;
    /// unset, uploads get 60 s and the rest 15 s. `UPLOAD_TIMEOUT_SECONDS`
    /// overrides the upload deadline alone.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let seconds = |name: &'static str| -> Result<Option<Deadline>, ConfigError> {
            match env.parse::<u64>(&[name])? {
                None => Ok(None),
                Some(0) => Err(ConfigError::new(name, "must be greater than 0")),
                Some(s) => Ok(Some(Deadline {
                    after: std::time::Duration::from_secs(s),
                    setting: name,
                })),
            }
        };
        let request = seconds("REQUEST_TIMEOUT_SECONDS")?;
        let upload = seconds("UPLOAD_TIMEOUT_SECONDS")?;
        let default = |s: u64| Deadline {
            after: std::time::Duration::from_secs(s),
            setting: "REQUEST_TIMEOUT_SECONDS",
        };
        Ok(Self {
            request: request.unwrap_or(default(Self::DEFAULT_REQUEST_SECONDS)),
            upload: upload.or(request).unwrap_or(Deadline {
                setting: "UPLOAD_TIMEOUT_SECONDS",
                ..default(Self::DEFAULT_UPLOAD_SECONDS)
            }),
        })
    }
}

impl HttpSettings {
    pub fn from_env(env: &Env, default_port: u16) -> Result<Self, ConfigError> {
        let cors_origins = env.list(&["CORS_ORIGINS"]);
        for origin in &cors_origins {
            if origin != "*" && http::HeaderValue::from_str(origin).is_err() {
                return Err(ConfigError::new(
                    "CORS_ORIGINS",
                    format!("{origin:?} is not a valid origin"),
                ));
            }
        }
        Ok(Self {
            bind: env.parse_or(&["BIND_ADDR"], std::net::Ipv4Addr::UNSPECIFIED.into())?,
            port: env.parse_or(&["PORT"], default_port)?,
            cors_origins,
            trusted_proxy_hops: env.parse_or(&["TRUSTED_PROXY_HOPS"], 0)?,
            deadlines: RequestDeadlines::from_env(env)?,
            shutdown_delay: std::time::Duration::from_secs(
                env.parse_or(&["SHUTDOWN_DELAY_SECONDS"], 5)?,
            ),
            // Below the 30 s ECS stop timeout, with the delay before it.
            shutdown_grace: std::time::Duration::from_secs(
                env.parse_or(&["SHUTDOWN_GRACE_SECONDS"], 20)?,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_tried_in_order_and_blank_means_unset() {
        let env = Env::from_pairs([
            ("S3_BUCKET", " "),
            ("S3_BUCKET_NAME", "b1"),
            ("AWS_S3_BUCKET", "b2"),
        ]);
        assert_eq!(
            env.lookup(&["S3_BUCKET", "S3_BUCKET_NAME", "AWS_S3_BUCKET"]),
            Some(("S3_BUCKET_NAME", "b1"))
        );
    }

    #[test]
    fn a_bad_number_names_the_variable() {
        let env = Env::from_pairs([("PORT", "90x")]);
        let err = env.parse_or::<u16>(&["PORT"], 9000).unwrap_err();
        assert_eq!(err.variable, "PORT");
        assert!(err.to_string().contains("90x"));
    }

    #[test]
    fn request_deadlines() {
        use std::time::Duration;
        let unset = RequestDeadlines::from_env(&Env::default()).unwrap();
        assert_eq!(unset.request.after, Duration::from_secs(15));
        assert_eq!(unset.upload.after, Duration::from_secs(60));
        assert_eq!(unset.upload.setting, "UPLOAD_TIMEOUT_SECONDS");

        let set = Env::from_pairs([("REQUEST_TIMEOUT_SECONDS", "1")]);
        let set = RequestDeadlines::from_env(&set).unwrap();
        assert_eq!(set.request.after, Duration::from_secs(1));
        assert_eq!(set.upload.after, Duration::from_secs(1));
        assert_eq!(set.upload.setting, "REQUEST_TIMEOUT_SECONDS");

        let both = Env::from_pairs([
            ("REQUEST_TIMEOUT_SECONDS", "5"),
            ("UPLOAD_TIMEOUT_SECONDS", "120"),
        ]);
        let both = RequestDeadlines::from_env(&both).unwrap();
        assert_eq!(both.request.after, Duration::from_secs(5));
        assert_eq!(both.upload.after, Duration::from_secs(120));

        for name in ["REQUEST_TIMEOUT_SECONDS", "UPLOAD_TIMEOUT_SECONDS"] {
            for bad in ["0", "soon"] {
                let err = RequestDeadlines::from_env(&Env::from_pairs([(name, bad)])).unwrap_err();
                assert_eq!(err.variable, name);
            }
        }
    }

    #[test]
    fn dependency_timeout_defaults_to_two_seconds_and_takes_fractions() {
        use std::time::Duration;
        assert_eq!(
            dependency_timeout(&Env::default()).unwrap(),
            Duration::from_secs(2)
        );
        let env = Env::from_pairs([("DEPENDENCY_TIMEOUT_SECONDS", "0.5")]);
        assert_eq!(
            dependency_timeout(&env).unwrap(),
            Duration::from_millis(500)
        );
        for bad in ["0", "-1", "soon", "inf"] {
            let env = Env::from_pairs([("DEPENDENCY_TIMEOUT_SECONDS", bad)]);
            assert_eq!(
                dependency_timeout(&env).unwrap_err().variable,
                "DEPENDENCY_TIMEOUT_SECONDS"
            );
        }
    }

    #[test]
    fn lists_and_flags() {
        let env = Env::from_pairs([
            ("CORS_ORIGINS", "http://a, ,http://b"),
            ("RUN_MIGRATIONS", "false"),
        ]);
        assert_eq!(env.list(&["CORS_ORIGINS"]), vec!["http://a", "http://b"]);
        assert!(!env.flag(&["RUN_MIGRATIONS"], true).unwrap());
        assert!(env.flag(&["MISSING"], true).unwrap());
        let bad = Env::from_pairs([("RUN_MIGRATIONS", "maybe")]);
        assert_eq!(
            bad.flag(&["RUN_MIGRATIONS"], true).unwrap_err().variable,
            "RUN_MIGRATIONS"
        );
    }
}
