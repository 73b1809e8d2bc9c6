//! AWS SDK configuration from the variables the deployment already sets:
//! region, the credential aliases of `CONTRACT.md` §3, and
//! `AWS_ENDPOINT_URL` for an emulator such as moto. With no keys set, the
//! SDK's default chain applies (the ECS task role in production). Failed
//! calls are read by one classifier, [`AwsError::classify`].

mod errors;

pub use errors::{AwsError, REQUEST_FAILED, UNKNOWN, UNREACHABLE};

/// The task table's GSI (`status` hash, `created_at` range) the old system
/// created and the orchestrator queries; named here once for the
/// orchestrator and the test fixtures that create the table.
pub const TASK_STATUS_INDEX: &str = "status-created_at-index";

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
    /// `AWS_ENDPOINT_URL_<SERVICE>` (the SDKs' standard names): one service
    /// elsewhere, over `endpoint_url` — e.g. each behind its own fault proxy.
    pub service_endpoints: Vec<(AwsService, String)>,
    /// `DEPENDENCY_TIMEOUT_SECONDS`: the bound on one small call, retries
    /// included (see [`call_timeouts`]).
    pub dependency_timeout: Duration,
}

// Hand-written so that secrets never reach a log line through `{:?}`.
impl std::fmt::Debug for AwsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSettings")
            .field("region", &self.region)
            .field("static_credentials", &self.access_key_id.is_some())
            .field("endpoint_url", &self.endpoint_url)
            .field("service_endpoints", &self.service_endpoints)
            .field("dependency_timeout", &self.dependency_timeout)
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
            service_endpoints: AwsService::ALL
                .into_iter()
                .filter_map(|service| {
                    env.string(&[service.endpoint_variable()])
                        .map(|url| (service, url))
                })
                .collect(),
            dependency_timeout: crate::config::dependency_timeout(env)?,
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
            service_endpoints: Vec::new(),
            dependency_timeout: crate::config::DEFAULT_DEPENDENCY_TIMEOUT,
        }
    }

    /// Builds the SDK configuration. Timeouts are short on purpose: when AWS
    /// is unreachable a request should fail within the dependency timeout
    /// with 503, not hang. Every call, retries included, is bounded by it;
    /// the calls that legitimately take longer (an upload's body, a long
    /// poll) override it per call.
    pub async fn sdk_config(&self) -> SdkConfig {
        self.load(self.endpoint_url.as_deref()).await
    }

    /// [`Self::sdk_config`] for one service: its own endpoint when
    /// `AWS_ENDPOINT_URL_<SERVICE>` names one.
    pub async fn sdk_config_for(&self, service: AwsService) -> SdkConfig {
        let endpoint = self
            .service_endpoints
            .iter()
            .find(|(s, _)| *s == service)
            .map(|(_, url)| url.as_str())
            .or(self.endpoint_url.as_deref());
        self.load(endpoint).await
    }

    async fn load(&self, endpoint_url: Option<&str>) -> SdkConfig {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .timeout_config(call_timeouts(self.dependency_timeout));
        if let (Some(id), Some(secret)) = (&self.access_key_id, &self.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                id,
                secret,
                self.session_token.clone(),
                None,
                "environment",
            ));
        }
        if let Some(url) = endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let sdk = loader.load().await;
        if endpoint_url.is_some() {
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

/// The AWS services the backend calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsService {
    S3,
    Sqs,
    DynamoDb,
    Ec2,
}

impl AwsService {
    pub const ALL: [AwsService; 4] = [Self::S3, Self::Sqs, Self::DynamoDb, Self::Ec2];

    /// The SDKs' standard variable for this service's endpoint.
    pub fn endpoint_variable(self) -> &'static str {
        match self {
            Self::S3 => "AWS_ENDPOINT_URL_S3",
            Self::Sqs => "AWS_ENDPOINT_URL_SQS",
            Self::DynamoDb => "AWS_ENDPOINT_URL_DYNAMODB",
            Self::Ec2 => "AWS_ENDPOINT_URL_EC2",
        }
    }
}

/// Timeouts for small request/response calls (DynamoDB, SQS, S3 heads and
/// deletes): the whole operation, retries included, ends after `total`, so
/// a part that refuses fails after a few quick retries and one that accepts
/// connections and never answers fails after `total` — not after the read
/// timeout three times over. Each attempt may use the whole budget: a
/// retry only happens when an attempt failed early.
pub fn call_timeouts(total: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(total)
        .read_timeout(total)
        .operation_attempt_timeout(total)
        .operation_timeout(total)
        .build()
}

/// The slowest upload rate a PutObject is given time for, beyond the
/// dependency timeout: 1 MiB/s.
const SLOWEST_UPLOAD_BYTES_PER_SECOND: u64 = 1024 * 1024;

/// Timeouts for a call that sends a body of `bytes`: the dependency timeout
/// plus the time the body takes at 1 MiB/s. A small image fails as fast as
/// any other call when S3 hangs; a 50 MB one gets its 50 s.
pub fn upload_timeouts(dependency: Duration, bytes: u64) -> TimeoutConfig {
    let sending = Duration::from_secs_f64(bytes as f64 / SLOWEST_UPLOAD_BYTES_PER_SECOND as f64);
    let total = dependency + sending;
    TimeoutConfig::builder()
        .connect_timeout(dependency)
        // Between bytes of the response; the request body is bounded by
        // the operation timeout below.
        .read_timeout(total)
        .operation_attempt_timeout(total)
        .operation_timeout(total)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_call_ends_within_its_budget_retries_included() {
        let quick = call_timeouts(Duration::from_secs(2));
        assert_eq!(quick.operation_timeout(), Some(Duration::from_secs(2)));
        assert_eq!(quick.connect_timeout(), Some(Duration::from_secs(2)));
        let small = upload_timeouts(Duration::from_secs(2), 10_000);
        assert!(small.operation_timeout().unwrap() < Duration::from_millis(2_010));
        let large = upload_timeouts(Duration::from_secs(2), 50 * 1024 * 1024);
        assert_eq!(large.operation_timeout(), Some(Duration::from_secs(52)));
    }

    #[test]
    fn the_dependency_timeout_is_read_with_the_aws_settings() {
        let env = Env::from_pairs([("DEPENDENCY_TIMEOUT_SECONDS", "1.5")]);
        let settings = AwsSettings::from_env(&env).unwrap();
        assert_eq!(settings.dependency_timeout, Duration::from_millis(1500));
    }
}
