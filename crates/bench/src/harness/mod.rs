//! What every scenario shares, so that a scenario file only says what it
//! loads and what it reports: the service as a child process, `/proc`
//! sampling, percentiles, knobs, the load loop, the HTTP calls, the AWS and
//! Postgres fixtures (testkit's, through a fault proxy when a soak cuts
//! them), a stand-in inference API and the printed tables.

pub mod aws;
pub mod child;
pub mod cut;
pub mod http;
pub mod images;
pub mod jobs;
pub mod knobs;
pub mod load;
pub mod postgres;
pub mod report;
pub mod sampling;
pub mod stand_in;
pub mod stats;

/// Any failure that ends a scenario; printed and turned into exit code 1.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Only loopback is ever contacted: a benchmark must not load a real
/// deployment by mistake. `url` names the setting in the error.
pub fn require_loopback(setting: &str, url: &str) -> Result<(), BoxError> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{setting}={url:?}: {e}"))?;
    match parsed.host_str() {
        Some("127.0.0.1" | "localhost" | "[::1]") => Ok(()),
        _ => Err(format!("{setting} must point at loopback (127.0.0.1), not {url}").into()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_loopback_is_accepted() {
        for url in [
            "http://127.0.0.1:5000",
            "postgres://postgres@localhost:5432/postgres",
        ] {
            assert!(super::require_loopback("X", url).is_ok(), "{url}");
        }
        let refused = super::require_loopback("MOTO_URL", "https://sqs.us-east-1.amazonaws.com")
            .unwrap_err()
            .to_string();
        assert!(refused.contains("MOTO_URL"), "{refused}");
    }
}
