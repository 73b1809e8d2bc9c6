//! The GPU host as one EC2 instance (`GPU_INSTANCE_ID`), driven with
//! DescribeInstances / StartInstances / StopInstances. EC2 types stay in this
//! file; everything it returns speaks [`crate::host`]'s terms.

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use common::aws::AwsError;

use crate::host::{GpuHost, HostError, InstanceState, InstanceView};

/// EC2's own codes worth retrying soon, beyond throttling and server errors
/// (which `common::aws` knows): EC2 may have capacity again in a minute, an
/// instance caught mid-transition will settle.
const TRANSIENT_CODES: &[&str] = &[
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "IncorrectInstanceState",
    "IncorrectState",
];

pub struct Ec2GpuHost {
    client: aws_sdk_ec2::Client,
    instance_id: String,
}

impl std::fmt::Debug for Ec2GpuHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ec2GpuHost")
            .field("instance_id", &self.instance_id)
            .finish_non_exhaustive()
    }
}

impl Ec2GpuHost {
    /// A host for `instance_id`, reached with the deployment's AWS settings
    /// (an emulator when `AWS_ENDPOINT_URL` is set). Makes no request.
    pub async fn new(aws: &common::aws::AwsSettings, instance_id: &str) -> Self {
        let config = aws.sdk_config_for(common::aws::AwsService::Ec2).await;
        Self {
            client: aws_sdk_ec2::Client::new(&config),
            instance_id: instance_id.to_owned(),
        }
    }
}

#[async_trait::async_trait]
impl GpuHost for Ec2GpuHost {
    async fn describe(&self) -> Result<InstanceView, HostError> {
        let output = self
            .client
            .describe_instances()
            .instance_ids(&self.instance_id)
            .send()
            .await
            .map_err(host_error)?;
        let instance = output
            .reservations()
            .iter()
            .flat_map(|reservation| reservation.instances())
            .find(|instance| instance.instance_id() == Some(self.instance_id.as_str()))
            .ok_or_else(|| {
                HostError::new(
                    "InvalidInstanceID.NotFound",
                    format!("instance {} is not in the account", self.instance_id),
                    false,
                )
            })?;
        let state = instance
            .state()
            .and_then(|state| state.name())
            .map(|name| InstanceState::from_name(name.as_str()))
            .unwrap_or_else(|| InstanceState::Unknown("unreported".to_owned()));
        Ok(InstanceView {
            state,
            public_ip: instance.public_ip_address().map(str::to_owned),
            private_ip: instance.private_ip_address().map(str::to_owned),
        })
    }

    async fn start(&self) -> Result<(), HostError> {
        self.client
            .start_instances()
            .instance_ids(&self.instance_id)
            .send()
            .await
            .map_err(host_error)?;
        Ok(())
    }

    async fn stop(&self) -> Result<(), HostError> {
        self.client
            .stop_instances()
            .instance_ids(&self.instance_id)
            .send()
            .await
            .map_err(host_error)?;
        Ok(())
    }

    fn instance_id(&self) -> Option<&str> {
        Some(&self.instance_id)
    }
}

/// Keeps EC2's error code (what an operator searches for) and says whether
/// waiting is likely to help; a call that got no answer reads `Unreachable`.
fn host_error<E>(err: SdkError<E>) -> HostError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let failure = AwsError::classify(&err, TRANSIENT_CODES);
    HostError::new(failure.code, failure.message, failure.transient)
}
