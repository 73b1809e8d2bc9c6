//! Which image URLs a job may name. The GPU and CPU hosts fetch every
//! `*_url` field of a job from inside the VPC, so an unchecked URL lets
//! anyone make them fetch the instance metadata service, ComfyUI's own API on
//! 127.0.0.1 or any private address (SSRF). A URL is accepted only when its
//! origin — scheme, host, port — is exactly one of the allowed origins:
//! `IMAGE_URL_ORIGINS`, or by default the canvas service's own public
//! origins (its CDN, its bucket, or `PUBLIC_BASE_URL` on a laptop).
//!
//! The API checks the text of the URL ([`ImageUrlPolicy::check`]); the worker
//! checks again before calling its backend and also resolves the host
//! ([`ImageUrlPolicy::check_resolved`]): a public origin whose name resolves
//! to a private address is refused unless that origin was listed on purpose.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use common::config::{ConfigError, Env};
use serde_json::Value;
use url::{Host, Url};

/// An origin as the policy compares them: lower-case host, explicit port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// The origin of an absolute http(s) URL without userinfo.
    fn of(url: &Url) -> Option<Self> {
        let scheme = url.scheme();
        if scheme != "http" && scheme != "https" {
            return None;
        }
        let host = match url.host()? {
            Host::Domain(d) => d.to_ascii_lowercase(),
            Host::Ipv4(ip) => ip.to_string(),
            Host::Ipv6(ip) => format!("[{ip}]"),
        };
        Some(Self {
            scheme: scheme.to_owned(),
            host,
            port: url.port_or_known_default()?,
        })
    }

    /// Parses a configured origin: `scheme://host[:port]`, nothing after
    /// but an optional `/`.
    fn parse(raw: &str) -> Result<Self, String> {
        let url = Url::parse(raw.trim()).map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!("{raw:?} must not carry a user name or password"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "{raw:?} must be an origin only (scheme://host[:port]), without a path"
            ));
        }
        Self::of(&url).ok_or_else(|| format!("{raw:?} must be an http or https origin"))
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// Why a URL was refused; the text goes into a 422 `detail` after the field
/// name, so it says what the client can fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefusal {
    #[error("must be an absolute http(s) URL")]
    NotHttp,
    #[error("must not contain a user name or password")]
    Userinfo,
    #[error("must point at an allowed image origin ({allowed}), not {origin}")]
    OriginNotAllowed { origin: String, allowed: String },
    #[error("its host {host} resolves to a non-public address ({address})")]
    PrivateAddress { host: String, address: IpAddr },
    #[error("its host {host} cannot be resolved")]
    Unresolvable { host: String },
}

#[derive(Debug, Clone)]
pub struct ImageUrlPolicy {
    allowed: HashSet<Origin>,
    /// Listed on purpose (`IMAGE_URL_ORIGINS` or `PUBLIC_BASE_URL`): may
    /// resolve to private addresses (a laptop, a VPC endpoint).
    trusted_internal: HashSet<Origin>,
    /// For messages: the allowed origins as configured.
    display: String,
}

impl ImageUrlPolicy {
    /// `IMAGE_URL_ORIGINS` when set; otherwise the canvas service's own
    /// public origins, read from the same variables canvas-service reads:
    /// `CLOUDFRONT_DOMAIN`; else, with a bucket, the bucket's S3 origin
    /// (objects served as presigned URLs); else `PUBLIC_BASE_URL`
    /// (default `http://localhost:9000`) and its `127.0.0.1` twin.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        if let Some((name, raw)) = env.lookup(&["IMAGE_URL_ORIGINS"]) {
            let origins = raw
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Origin::parse(s).map_err(|e| ConfigError::new(name, e)))
                .collect::<Result<Vec<_>, _>>()?;
            if origins.is_empty() {
                return Err(ConfigError::new(name, "lists no origin"));
            }
            return Ok(Self::new(origins.clone(), origins));
        }
        if let Some((name, domain)) = env.lookup(&["CLOUDFRONT_DOMAIN"]) {
            let base = if domain.contains("://") {
                domain.trim_end_matches('/').to_owned()
            } else {
                format!("https://{}", domain.trim_end_matches('/'))
            };
            let origin = Origin::parse(&base).map_err(|e| ConfigError::new(name, e))?;
            return Ok(Self::new(vec![origin], vec![]));
        }
        if let Some((_, bucket)) = env.lookup(&["S3_BUCKET", "S3_BUCKET_NAME", "AWS_S3_BUCKET"]) {
            // Path-style on an emulator (the endpoint's origin, listed on
            // purpose); virtual-hosted on AWS.
            if let Some((name, endpoint)) = env.lookup(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"])
            {
                let origin = Origin::parse(endpoint.trim_end_matches('/'))
                    .map_err(|e| ConfigError::new(name, e))?;
                return Ok(Self::new(vec![origin.clone()], vec![origin]));
            }
            let region = env
                .string(&["AWS_REGION", "AWS_DEFAULT_REGION"])
                .unwrap_or_else(|| "us-east-1".to_owned());
            let origins = [
                format!("https://{bucket}.s3.{region}.amazonaws.com"),
                format!("https://{bucket}.s3.amazonaws.com"),
            ]
            .iter()
            .map(|o| Origin::parse(o).map_err(|e| ConfigError::new("S3_BUCKET", e)))
            .collect::<Result<Vec<_>, _>>()?;
            return Ok(Self::new(origins, vec![]));
        }
        let (name, base) = env
            .lookup(&["PUBLIC_BASE_URL"])
            .map_or(("PUBLIC_BASE_URL", "http://localhost:9000"), |(n, v)| {
                (n, v)
            });
        let origin =
            Origin::parse(base.trim_end_matches('/')).map_err(|e| ConfigError::new(name, e))?;
        let mut origins = vec![origin.clone()];
        // The browser may have loaded the page from either spelling.
        for (from, to) in [("localhost", "127.0.0.1"), ("127.0.0.1", "localhost")] {
            if origin.host == from {
                origins.push(Origin {
                    host: to.to_owned(),
                    ..origin.clone()
                });
            }
        }
        Ok(Self::new(origins.clone(), origins))
    }

    /// The zero-configuration policy: the canvas service on this machine.
    pub fn local_default() -> Self {
        let local = |host: &str| Origin {
            scheme: "http".to_owned(),
            host: host.to_owned(),
            port: 9000,
        };
        let origins = vec![local("localhost"), local("127.0.0.1")];
        Self::new(origins.clone(), origins)
    }

    fn new(allowed: Vec<Origin>, trusted_internal: Vec<Origin>) -> Self {
        let display = allowed
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            allowed: allowed.into_iter().collect(),
            trusted_internal: trusted_internal.into_iter().collect(),
            display,
        }
    }

    /// The allowed origins, for logs.
    pub fn describe(&self) -> &str {
        &self.display
    }

    /// The text check, done by the API on every URL field of a submit.
    pub fn check(&self, raw: &str) -> Result<(), UrlRefusal> {
        self.origin_of(raw).map(|_| ())
    }

    fn origin_of(&self, raw: &str) -> Result<(Url, Origin), UrlRefusal> {
        if raw.len() > 4096 || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(UrlRefusal::NotHttp);
        }
        let url = Url::parse(raw).map_err(|_| UrlRefusal::NotHttp)?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlRefusal::Userinfo);
        }
        let origin = Origin::of(&url).ok_or(UrlRefusal::NotHttp)?;
        if !self.allowed.contains(&origin) {
            return Err(UrlRefusal::OriginNotAllowed {
                origin: origin.to_string(),
                allowed: self.display.clone(),
            });
        }
        Ok((url, origin))
    }

    /// The worker's check: the text check, then — unless the origin was
    /// listed on purpose — every address the host resolves to must be
    /// public. (The backend resolves the name again when it fetches; an
    /// egress rule on the hosts is what closes that last gap.)
    pub async fn check_resolved(&self, raw: &str) -> Result<(), UrlRefusal> {
        let (url, origin) = self.origin_of(raw)?;
        if self.trusted_internal.contains(&origin) {
            return Ok(());
        }
        let addresses: Vec<IpAddr> = match url.host() {
            Some(Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
            Some(Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
            Some(Host::Domain(name)) => {
                let lookup = tokio::net::lookup_host((name, origin.port));
                match tokio::time::timeout(Duration::from_secs(5), lookup).await {
                    Ok(Ok(found)) => found.map(|a| a.ip()).collect(),
                    _ => vec![],
                }
            }
            None => vec![],
        };
        if addresses.is_empty() {
            return Err(UrlRefusal::Unresolvable {
                host: origin.host.clone(),
            });
        }
        match addresses.into_iter().find(|a| !is_public(*a)) {
            Some(address) => Err(UrlRefusal::PrivateAddress {
                host: origin.host.clone(),
                address,
            }),
            None => Ok(()),
        }
    }
}

/// Every `*_url` string in a job's request body, with its field name: the
/// worker checks what it is about to hand to its backend, whoever queued it.
pub fn url_fields(request_body: &Value) -> Vec<(&str, &str)> {
    request_body
        .as_object()
        .map(|fields| {
            fields
                .iter()
                .filter(|(name, _)| name.ends_with("_url"))
                .filter_map(|(name, value)| value.as_str().map(|v| (name.as_str(), v)))
                .collect()
        })
        .unwrap_or_default()
}

/// An address on the public internet: not loopback, private (RFC 1918, ULA),
/// link-local (the metadata service lives there), CGNAT, multicast,
/// broadcast, unspecified or documentation space.
pub fn is_public(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_unspecified()
        || ip.is_documentation()
        || a == 0
        // 100.64.0.0/10, carrier-grade NAT.
        || (a == 100 && (64..128).contains(&b))
        // 198.18.0.0/15, benchmarking; 240.0.0.0/4, reserved.
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // fc00::/7 unique local, fe80::/10 link-local.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        // 2001:db8::/32 documentation; 64:ff9b::/96 NAT64 may reach private v4.
        || (first == 0x2001 && ip.segments()[1] == 0x0db8)
        || (first == 0x0064 && ip.segments()[1] == 0xff9b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(pairs: &[(&str, &str)]) -> ImageUrlPolicy {
        ImageUrlPolicy::from_env(&Env::from_pairs(pairs.iter().copied())).unwrap()
    }

    #[test]
    fn default_is_the_local_canvas_in_both_spellings() {
        let p = policy(&[]);
        p.check("http://localhost:9000/images/s/a.png").unwrap();
        p.check("http://127.0.0.1:9000/images/s/a.png").unwrap();
        p.check("http://LOCALHOST:9000/images/s/a.png").unwrap();
        assert!(p.check("http://localhost:9001/images/s/a.png").is_err());
        assert!(p.check("https://localhost:9000/images/s/a.png").is_err());
        assert!(p.check("http://127.0.0.1:8188/prompt").is_err());
    }

    #[test]
    fn cloudfront_domain_without_scheme_means_https() {
        let p = policy(&[("CLOUDFRONT_DOMAIN", "d111.cloudfront.net")]);
        p.check("https://d111.cloudfront.net/images/s/a.png")
            .unwrap();
        p.check("https://D111.CloudFront.net:443/images/s/a.png")
            .unwrap();
        assert!(
            p.check("http://d111.cloudfront.net/images/s/a.png")
                .is_err()
        );
        assert!(p.check("http://localhost:9000/images/s/a.png").is_err());
    }

    #[test]
    fn presigned_bucket_origins() {
        let p = policy(&[("S3_BUCKET", "canvas"), ("AWS_REGION", "eu-west-1")]);
        p.check("https://canvas.s3.eu-west-1.amazonaws.com/images/a.png?X-Amz-Signature=1")
            .unwrap();
        assert!(
            p.check("https://other.s3.eu-west-1.amazonaws.com/a.png")
                .is_err()
        );
        let moto = policy(&[
            ("S3_BUCKET", "canvas"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
        ]);
        moto.check("http://127.0.0.1:5000/canvas/images/a.png")
            .unwrap();
    }

    #[test]
    fn bad_configuration_names_the_variable() {
        for bad in [
            "cdn.example.com",
            "https://cdn.example.com/images",
            "ftp://x",
            "https://u:p@x",
        ] {
            let err = ImageUrlPolicy::from_env(&Env::from_pairs([("IMAGE_URL_ORIGINS", bad)]))
                .unwrap_err();
            assert_eq!(err.variable, "IMAGE_URL_ORIGINS", "{bad}");
        }
    }

    #[test]
    fn public_and_private_addresses() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "52.84.1.1", "100.128.0.1", "2600:9000::1"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
