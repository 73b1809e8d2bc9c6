//! The canvas service's settings, read once from the environment at start-up.
//! Zero configuration means SQLite and a directory under `DATA_DIR`; a
//! Postgres `DATABASE_URL` and an `S3_BUCKET` switch to production parts.

use std::{path::PathBuf, time::Duration};

use common::{
    auth::AuthSettings,
    aws::AwsSettings,
    config::{ConfigError, Env, HttpSettings},
    rate_limit::LimitSettings,
    telemetry::LogFormat,
};

use crate::storage::PublicUrls;

pub const DEFAULT_PORT: u16 = 9000;
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 25 * 1024 * 1024;
/// 100 megapixels: a 10000 × 10000 image. Decoded as RGBA that is 400 MB,
/// which is what a decompression bomb aims at (its file stays tiny).
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 100_000_000;
/// Uploads spooling at once. A 0.25 vCPU task copes with this many streams
/// to disk and S3; the rest are told to come back rather than queued on
/// disk.
pub const DEFAULT_MAX_CONCURRENT_UPLOADS: usize = 16;

#[derive(Debug, Clone)]
pub struct CanvasConfig {
    pub http: HttpSettings,
    pub log_format: LogFormat,
    pub database: DatabaseSettings,
    pub storage: StorageSettings,
    /// `MAX_UPLOAD_BYTES`: the largest image accepted, in bytes.
    pub max_upload_bytes: u64,
    /// `RATE_LIMIT_UPLOADS_PER_MINUTE` / `RATE_LIMIT_UPLOADS_BURST`.
    pub uploads_rate: LimitSettings,
    /// `RATE_LIMIT_SESSIONS_PER_MINUTE` / `RATE_LIMIT_SESSIONS_BURST`.
    pub sessions_rate: LimitSettings,
    /// `MAX_IMAGE_PIXELS`: the largest width × height accepted, as read from
    /// the image's header.
    pub max_image_pixels: u64,
    /// `MAX_CONCURRENT_UPLOADS`: uploads received at once; past it, 503 with
    /// `Retry-After`. `None` (set to 0) means no limit.
    pub max_concurrent_uploads: Option<usize>,
    /// `AUTH_MODE` and the Supabase project that signs access tokens.
    pub auth: AuthSettings,
}

/// Dropping a folder of images onto the canvas uploads them all at once.
pub const DEFAULT_UPLOADS_RATE: LimitSettings = LimitSettings {
    per_minute: 120,
    burst: 60,
};

/// The frontend creates one session per page load.
pub const DEFAULT_SESSIONS_RATE: LimitSettings = LimitSettings {
    per_minute: 20,
    burst: 10,
};

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `sqlite://…` or `postgres://…`.
    pub url: String,
    pub max_connections: u32,
    /// How long a request waits for a connection before answering 503.
    pub acquire_timeout: Duration,
    /// Named prepared statements; off for poolers in transaction mode.
    pub statement_cache: bool,
    pub run_migrations: bool,
}

impl DatabaseSettings {
    pub fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")
    }
}

#[derive(Debug, Clone)]
pub enum StorageSettings {
    /// Objects under `<dir>/objects`, served by this service at
    /// `<public_base_url>/<key>`.
    Local {
        dir: PathBuf,
        public_base_url: String,
    },
    S3 {
        bucket: String,
        urls: PublicUrls,
        spool_dir: PathBuf,
        aws: AwsSettings,
    },
}

impl CanvasConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let http = HttpSettings::from_env(env, DEFAULT_PORT)?;
        let data_dir = PathBuf::from(env.string(&["DATA_DIR"]).unwrap_or_else(|| "./data".into()));

        let database_url = match env.lookup(&["DATABASE_URL"]) {
            Some((_, url)) => url.to_owned(),
            // A deployment (S3 or Supabase configured) must not quietly keep
            // its metadata in a file inside the container.
            None => match env.lookup(&[
                "S3_BUCKET",
                "S3_BUCKET_NAME",
                "AWS_S3_BUCKET",
                "SUPABASE_URL",
            ]) {
                Some((set, _)) => {
                    return Err(ConfigError::new(
                        "DATABASE_URL",
                        format!(
                            "{set} is set, so this is a deployment: set DATABASE_URL to the Supabase Postgres connection string"
                        ),
                    ));
                }
                None => format!("sqlite://{}", data_dir.join("canvas.db").display()),
            },
        };
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(ConfigError::new(
                "DATABASE_URL",
                "must start with postgres://, postgresql:// or sqlite:",
            ));
        }
        // Supabase's transaction pooler listens on 6543 and does not keep
        // prepared statements between transactions.
        let pooled_transactions = database_url.contains(":6543/");
        // A Postgres server can be cut off like any part: waiting for it is
        // bounded by the dependency timeout. An SQLite file cannot; waiting
        // for its one writer is contention, and keeps the longer 5 s.
        let is_network = !database_url.starts_with("sqlite:");
        let database_wait = if is_network {
            common::config::dependency_timeout(env)?
        } else {
            Duration::from_secs(5)
        };
        let database = DatabaseSettings {
            statement_cache: env.flag(&["DATABASE_STATEMENT_CACHE"], !pooled_transactions)?,
            url: database_url,
            max_connections: env.positive("DATABASE_MAX_CONNECTIONS", 10)?,
            // The pool's acquire timeout, its connect included: the
            // database's own override of the dependency timeout.
            acquire_timeout: common::config::seconds_or(
                env,
                "DATABASE_TIMEOUT_SECONDS",
                database_wait,
            )?,
            run_migrations: env.flag(&["RUN_MIGRATIONS"], true)?,
        };

        let storage = match env.string(&["S3_BUCKET", "S3_BUCKET_NAME", "AWS_S3_BUCKET"]) {
            None => StorageSettings::Local {
                public_base_url: match env.lookup(&["PUBLIC_BASE_URL"]) {
                    Some((name, url)) => absolute_url(name, url)?,
                    None => format!("http://localhost:{}", http.port),
                },
                dir: data_dir,
            },
            Some(bucket) => StorageSettings::S3 {
                bucket,
                urls: match env.lookup(&["CLOUDFRONT_DOMAIN"]) {
                    Some((_, domain)) if domain.contains("://") => {
                        PublicUrls::Cdn(absolute_url("CLOUDFRONT_DOMAIN", domain)?)
                    }
                    // Deployed .env files hold the bare CloudFront host name.
                    Some((_, domain)) => PublicUrls::Cdn(absolute_url(
                        "CLOUDFRONT_DOMAIN",
                        &format!("https://{domain}"),
                    )?),
                    None => {
                        let seconds: u32 = env.parse_or(&["PRESIGN_EXPIRY_SECONDS"], 3600)?;
                        // SigV4 presigned URLs live at most 7 days.
                        if !(1..=604_800).contains(&seconds) {
                            return Err(ConfigError::new(
                                "PRESIGN_EXPIRY_SECONDS",
                                "must be between 1 and 604800 (7 days)",
                            ));
                        }
                        PublicUrls::Presigned(Duration::from_secs(seconds.into()))
                    }
                },
                spool_dir: env
                    .string(&["SPOOL_DIR"])
                    .map_or_else(|| std::env::temp_dir().join("canvas-spool"), PathBuf::from),
                aws: AwsSettings::from_env(env)?,
            },
        };

        let max_upload_bytes = env.parse_or(&["MAX_UPLOAD_BYTES"], DEFAULT_MAX_UPLOAD_BYTES)?;
        if max_upload_bytes == 0 {
            return Err(ConfigError::new(
                "MAX_UPLOAD_BYTES",
                "must be greater than 0",
            ));
        }

        let max_image_pixels = env.parse_or(&["MAX_IMAGE_PIXELS"], DEFAULT_MAX_IMAGE_PIXELS)?;
        if max_image_pixels == 0 {
            return Err(ConfigError::new(
                "MAX_IMAGE_PIXELS",
                "must be greater than 0",
            ));
        }
        let max_concurrent_uploads =
            match env.parse_or(&["MAX_CONCURRENT_UPLOADS"], DEFAULT_MAX_CONCURRENT_UPLOADS)? {
                0 => None,
                n => Some(n),
            };

        Ok(Self {
            http,
            log_format: LogFormat::from_env(env)?,
            database,
            storage,
            max_upload_bytes,
            uploads_rate: LimitSettings::from_env(
                env,
                "RATE_LIMIT_UPLOADS_PER_MINUTE",
                "RATE_LIMIT_UPLOADS_BURST",
                DEFAULT_UPLOADS_RATE,
            )?,
            sessions_rate: LimitSettings::from_env(
                env,
                "RATE_LIMIT_SESSIONS_PER_MINUTE",
                "RATE_LIMIT_SESSIONS_BURST",
                DEFAULT_SESSIONS_RATE,
            )?,
            max_image_pixels,
            max_concurrent_uploads,
            auth: AuthSettings::from_env(env)?,
        })
    }
}

/// An `http(s)://host[:port]` origin without a trailing slash, so that
/// `<origin>/<key>` has exactly the key as its path.
fn absolute_url(name: &'static str, raw: &str) -> Result<String, ConfigError> {
    let trimmed = raw.trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .ok_or_else(|| {
            ConfigError::new(name, format!("{raw:?} must start with http:// or https://"))
        })?;
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ']) {
        return Err(ConfigError::new(
            name,
            format!("{raw:?} must be a bare origin such as https://cdn.example.com (no path)"),
        ));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_configuration_is_embedded() {
        let config = CanvasConfig::from_env(&Env::default()).unwrap();
        assert_eq!(config.http.port, 9000);
        assert_eq!(config.database.url, "sqlite://./data/canvas.db");
        assert!(config.database.run_migrations);
        assert_eq!(config.max_upload_bytes, 25 * 1024 * 1024);
        assert_eq!(config.max_image_pixels, 100_000_000);
        assert_eq!(config.max_concurrent_uploads, Some(16));
        assert_eq!(config.http.deadlines.upload.after, Duration::from_secs(60));
        let unlimited = Env::from_pairs([("MAX_CONCURRENT_UPLOADS", "0")]);
        assert_eq!(
            CanvasConfig::from_env(&unlimited)
                .unwrap()
                .max_concurrent_uploads,
            None
        );
        match config.storage {
            StorageSettings::Local {
                dir,
                public_base_url,
            } => {
                assert_eq!(dir, PathBuf::from("./data"));
                assert_eq!(public_base_url, "http://localhost:9000");
            }
            other => panic!("expected local storage, got {other:?}"),
        }
    }

    #[test]
    fn bucket_aliases_and_bare_cloudfront_domain() {
        let env = Env::from_pairs([
            ("AWS_S3_BUCKET", "media"),
            ("CLOUDFRONT_DOMAIN", "d111.cloudfront.net/"),
            (
                "DATABASE_URL",
                "postgres://u@pooler.supabase.com:6543/postgres",
            ),
        ]);
        let config = CanvasConfig::from_env(&env).unwrap();
        assert!(!config.database.statement_cache, "transaction pooler");
        match config.storage {
            StorageSettings::S3 {
                bucket,
                urls: PublicUrls::Cdn(cdn),
                ..
            } => {
                assert_eq!(bucket, "media");
                assert_eq!(cdn, "https://d111.cloudfront.net");
            }
            other => panic!("expected S3 behind a CDN, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_variable() {
        for (name, value) in [
            ("MAX_UPLOAD_BYTES", "0"),
            ("MAX_UPLOAD_BYTES", "lots"),
            ("MAX_IMAGE_PIXELS", "0"),
            ("MAX_IMAGE_PIXELS", "-1"),
            ("MAX_CONCURRENT_UPLOADS", "many"),
            ("REQUEST_TIMEOUT_SECONDS", "0"),
            ("PUBLIC_BASE_URL", "localhost:9000"),
            ("PUBLIC_BASE_URL", "http://host/prefix"),
            ("DATABASE_URL", "mysql://x"),
            ("RUN_MIGRATIONS", "perhaps"),
            ("PORT", "99999"),
        ] {
            let err = CanvasConfig::from_env(&Env::from_pairs([(name, value)])).unwrap_err();
            assert_eq!(err.variable, name, "{value}");
        }
        let err = CanvasConfig::from_env(&Env::from_pairs([
            ("S3_BUCKET", "b"),
            ("DATABASE_URL", "postgres://db/x"),
            ("PRESIGN_EXPIRY_SECONDS", "0"),
        ]))
        .unwrap_err();
        assert_eq!(err.variable, "PRESIGN_EXPIRY_SECONDS");
        // Production storage without a database URL is refused, not SQLite.
        for set in ["S3_BUCKET", "SUPABASE_URL"] {
            let err = CanvasConfig::from_env(&Env::from_pairs([(set, "x")])).unwrap_err();
            assert_eq!(err.variable, "DATABASE_URL", "{set}");
        }
    }
}
