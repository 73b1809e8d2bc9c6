//! One reading of a failed AWS SDK call for every client (S3, SQS,
//! DynamoDB, EC2): the service's error code, a message for the log, and
//! whether waiting and retrying is likely to help. Each client turns the
//! result into its own domain error (503 and retry for transient failures).

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::{display::DisplayErrorContext, metadata::ProvideErrorMetadata};

/// The code of a call that got no answer from the service: a timeout, a
/// connection that failed or broke, a response that could not be read.
pub const UNREACHABLE: &str = "Unreachable";

/// The code of a call that failed before it was sent (a bad request built
/// by this process, a missing credential).
pub const REQUEST_FAILED: &str = "RequestFailed";

/// The code of a service error that names none.
pub const UNKNOWN: &str = "Unknown";

/// Codes every AWS service uses for conditions that pass by themselves:
/// throttling and failures on the service's side. Each client adds the
/// codes that are transient for its own service (a queue that is being
/// created, an instance caught between states).
const TRANSIENT_CODES: &[&str] = &[
    // Server side.
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "Unavailable",
    "RequestTimeout",
    "RequestTimeoutException",
    // Throttling (each service spells it its own way; any code containing
    // "Throttl" counts too, see `is_transient_code`).
    "SlowDown",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestThrottled",
    "Throttling",
    "ThrottlingException",
];

/// A failed AWS call, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    /// The service's error code (`SlowDown`, `ThrottlingException`,
    /// `AWS.SimpleQueueService.NonExistentQueue`, …), or [`UNREACHABLE`],
    /// [`REQUEST_FAILED`], [`UNKNOWN`].
    pub code: String,
    /// The service's message, or the SDK's account of what failed. Never
    /// holds credentials (the SDK does not print them).
    pub message: String,
    /// Worth retrying later: no answer, throttling, a server-side failure,
    /// or one of the codes the caller named.
    pub transient: bool,
}

impl AwsError {
    /// Classifies `err`. `also_transient` lists the codes that are
    /// transient for this client's service beyond the shared ones; a code
    /// matches by itself or as the last dot-separated part of a namespaced
    /// code (`AWS.SimpleQueueService.NonExistentQueue` matches
    /// `NonExistentQueue`).
    pub fn classify<E, R>(err: &SdkError<E, R>, also_transient: &[&str]) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        match err {
            SdkError::ServiceError(service) => {
                let code = service.err().code().unwrap_or(UNKNOWN).to_owned();
                let message = service
                    .err()
                    .message()
                    .map(str::to_owned)
                    .unwrap_or_else(|| DisplayErrorContext(err).to_string());
                let transient = is_transient_code(&code, also_transient);
                Self {
                    code,
                    message,
                    transient,
                }
            }
            // The request may never have reached the service, or its answer
            // was lost: worth another try.
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => Self {
                code: UNREACHABLE.to_owned(),
                message: DisplayErrorContext(err).to_string(),
                transient: true,
            },
            _ => Self {
                code: REQUEST_FAILED.to_owned(),
                message: DisplayErrorContext(err).to_string(),
                transient: false,
            },
        }
    }

    pub fn is_transient(&self) -> bool {
        self.transient
    }
}

impl std::fmt::Display for AwsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for AwsError {}

fn is_transient_code(code: &str, also_transient: &[&str]) -> bool {
    let name = code.rsplit('.').next().unwrap_or(code);
    name.contains("Throttl")
        || TRANSIENT_CODES
            .iter()
            .chain(also_transient)
            .any(|t| *t == code || *t == name)
}

#[cfg(test)]
mod tests {
    use aws_smithy_types::error::ErrorMetadata;

    use super::*;

    /// A service's modelled error, as the SDK crates generate them.
    #[derive(Debug)]
    struct ServiceFault(ErrorMetadata);

    impl std::fmt::Display for ServiceFault {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "service fault")
        }
    }

    impl std::error::Error for ServiceFault {}

    impl ProvideErrorMetadata for ServiceFault {
        fn meta(&self) -> &ErrorMetadata {
            &self.0
        }
    }

    fn service(code: Option<&str>, message: Option<&str>) -> SdkError<ServiceFault, ()> {
        let mut meta = ErrorMetadata::builder();
        if let Some(code) = code {
            meta = meta.code(code);
        }
        if let Some(message) = message {
            meta = meta.message(message);
        }
        SdkError::service_error(ServiceFault(meta.build()), ())
    }

    #[test]
    fn throttling_and_server_errors_are_transient_everywhere() {
        for code in [
            "SlowDown",
            "ThrottlingException",
            "ProvisionedThroughputExceededException",
            "InternalError",
            "ServiceUnavailable",
            "RequestLimitExceeded",
            "AWS.SimpleQueueService.RequestThrottled",
            "SomeNewThrottledException",
        ] {
            let failure = AwsError::classify(&service(Some(code), Some("busy")), &[]);
            assert!(failure.transient, "{code}");
            assert_eq!(failure.code, code);
            assert_eq!(failure.message, "busy");
        }
    }

    #[test]
    fn client_mistakes_are_permanent_unless_the_client_says_otherwise() {
        let denied = AwsError::classify(&service(Some("AccessDenied"), Some("no")), &[]);
        assert!(!denied.transient);
        assert_eq!(denied.to_string(), "AccessDenied: no");

        let queue = service(Some("AWS.SimpleQueueService.NonExistentQueue"), None);
        assert!(!AwsError::classify(&queue, &[]).transient);
        let failure = AwsError::classify(&queue, &["NonExistentQueue"]);
        assert!(failure.transient);
        assert_eq!(failure.code, "AWS.SimpleQueueService.NonExistentQueue");
        // No message from the service: the SDK's account of the error.
        assert!(!failure.message.is_empty());

        let capacity = service(Some("InsufficientInstanceCapacity"), Some("none left"));
        assert!(AwsError::classify(&capacity, &["InsufficientInstanceCapacity"]).transient);
    }

    #[test]
    fn an_error_without_a_code_is_unknown_and_permanent() {
        let failure = AwsError::classify(&service(None, None), &[]);
        assert_eq!(failure.code, UNKNOWN);
        assert!(!failure.transient);
    }

    #[test]
    fn no_answer_is_transient_and_a_request_never_sent_is_not() {
        let timeout: SdkError<ServiceFault, ()> = SdkError::timeout_error("operation timed out");
        let failure = AwsError::classify(&timeout, &[]);
        assert_eq!(failure.code, UNREACHABLE);
        assert!(failure.transient);
        assert!(failure.message.contains("operation timed out"), "{failure}");

        let unbuilt: SdkError<ServiceFault, ()> = SdkError::construction_failure("no region");
        let failure = AwsError::classify(&unbuilt, &[]);
        assert_eq!(failure.code, REQUEST_FAILED);
        assert!(!failure.transient);
    }
}
