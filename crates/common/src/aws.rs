//! AWS SDK configuration from the variables the deployment already sets:
//! region, the credential aliases of `CONTRACT.md` §3, and
//! `AWS_ENDPOINT_URL` for an emulator such as moto. With no keys set, the
//! SDK's default chain applies (the ECS task role in production).

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig, retry::RetryConfig, timeout::TimeoutConfig};
use aws_credential_types::Credentials;

use crate::config::{ConfigError, Env};

#[derive(Clone)]
pub struct AwsSettings {
    pub region: String,
    /// Static keys, when the environment gives them (under any alias).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// `AWS_ENDPOINT_URL`: every service at this address (moto, LocalStack).
    pub endpoint_url: Option<String>,
}

// Hand-written so that secrets never reach a log line through `{:?}`.
impl std::fmt::Debug for AwsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSettings")
            .field("region", &self.region)
            .field("static_credentials", &self.access_key_id.is_some())
            .field("endpoint_url", &self.endpoint_url)
            .finish()
    }
}

impl AwsSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let access_key_id = env.string(&["AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY"]);
        let secret_access_key = env.string(&["AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_SECRET"]);
        if access_key_id.is_some() != secret_access_key.is_some() {
            let missing = if access_key_id.is_some() {
                "AWS_SECRET_ACCESS_KEY"
            } else {
                "AWS_ACCESS_KEY_ID"
            };
            return Err(ConfigError::new(
                missing,
                "set both the access key id and the secret access key, or neither",
            ));
        }
        Ok(Self {
            region: env
                .string(&["AWS_REGION", "AWS_DEFAULT_REGION"])
                .unwrap_or_else(|| "us-east-1".to_owned()),
            access_key_id,
            secret_access_key,
            session_token: env.string(&["AWS_SESSION_TOKEN"]),
            endpoint_url: env.string(&["AWS_ENDPOINT_URL"]),
        })
    }

    /// Settings for a local emulator, as tests use them.
    pub fn emulator(endpoint_url: &str) -> Self {
        Self {
            region: "us-east-1".to_owned(),
            access_key_id: Some("testing".to_owned()),
            secret_access_key: Some("testing".to_owned()),
            session_token: None,
            endpoint_url: Some(endpoint_url.to_owned()),
        }
    }

    /// Builds the SDK configuration. Timeouts are short on purpose: when AWS
    /// is unreachable a request should fail within seconds with 503, not hang.
    /// Reads and writes of objects get no total deadline (a large upload
    /// legitimately takes long) but a read timeout between bytes.
    pub async fn sdk_config(&self) -> SdkConfig {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .read_timeout(Duration::from_secs(20))
                    .build(),
            );
        if let (Some(id), Some(secret)) = (&self.access_key_id, &self.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                id,
                secret,
                self.session_token.clone(),
                None,
                "environment",
            ));
        }
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let sdk = loader.load().await;
        if self.endpoint_url.is_some() {
            return sdk;
        }
        // The SDK reads AWS_ENDPOINT_URL itself, and a blank one (compose
        // files write `AWS_ENDPOINT_URL=`) would become an empty endpoint;
        // these settings already treat blank as unset, so drop it.
        let mut builder = sdk.into_builder();
        builder.set_endpoint_url(None);
        builder.build()
    }
}

/// Timeouts for small request/response calls (DynamoDB, SQS): each attempt
/// gets `attempt`, all retries together twice that plus a bit, so an
/// endpoint that accepts connections and never answers fails the request
/// within seconds instead of hanging on the read timeout three times.
pub fn call_timeouts(attempt: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .read_timeout(attempt)
        .operation_attempt_timeout(attempt)
        .operation_timeout(attempt * 2 + Duration::from_secs(2))
        .build()
}
