//! What the controller can do to a GPU host — look at it, start it, stop it —
//! in domain terms, so that neither the controller nor the orchestrator ever
//! sees an EC2 type. [`NoGpuHost`] stands for "no GPU instance configured".

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The machine that runs GPU jobs.
///
/// Every operation must be idempotent, because two orchestrators may drive
/// the same host at once: starting a `pending` or `running` host and stopping
/// a `stopping` or `stopped` one succeed without doing anything.
#[async_trait::async_trait]
pub trait GpuHost: Send + Sync + 'static {
    /// The host's state and addresses as the provider reports them now.
    async fn describe(&self) -> Result<InstanceView, HostError>;
    async fn start(&self) -> Result<(), HostError>;
    async fn stop(&self) -> Result<(), HostError>;
    /// `None` when there is no instance to manage (the embedded set-up):
    /// the controller then never calls the host and reports it `running`.
    fn instance_id(&self) -> Option<&str>;
}

/// The lifecycle state of an instance, spelt as EC2 spells it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum InstanceState {
    Pending,
    Running,
    Stopping,
    Stopped,
    ShuttingDown,
    Terminated,
    /// A state this code does not know (a provider may add some).
    Unknown(String),
}

impl InstanceState {
    /// The EC2 name: `pending`, `running`, `stopping`, `stopped`,
    /// `shutting-down`, `terminated`, or whatever unknown name was read.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::ShuttingDown => "shutting-down",
            Self::Terminated => "terminated",
            Self::Unknown(name) => name,
        }
    }

    /// Parses an EC2 state name; names it does not know become `Unknown`.
    pub fn from_name(name: &str) -> Self {
        match name {
            "pending" => Self::Pending,
            "running" => Self::Running,
            "stopping" => Self::Stopping,
            "stopped" => Self::Stopped,
            "shutting-down" => Self::ShuttingDown,
            "terminated" => Self::Terminated,
            other => Self::Unknown(other.to_owned()),
        }
    }

    /// A state that changes by itself soon, so it is worth polling often.
    pub fn is_transitional(&self) -> bool {
        matches!(self, Self::Pending | Self::Stopping | Self::ShuttingDown)
    }

    /// A host in this state can never run again.
    pub fn is_gone(&self) -> bool {
        matches!(self, Self::ShuttingDown | Self::Terminated)
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for InstanceState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for InstanceState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Ok(Self::from_name(&name))
    }
}

/// One look at the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceView {
    pub state: InstanceState,
    pub public_ip: Option<String>,
    pub private_ip: Option<String>,
}

impl InstanceView {
    /// A view with a state and no addresses.
    pub fn in_state(state: InstanceState) -> Self {
        Self {
            state,
            public_ip: None,
            private_ip: None,
        }
    }
}

/// A host operation that failed, with the provider's error code so that an
/// operator can tell "no capacity in this zone" from "no permission".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct HostError {
    /// The provider's code, e.g. `InsufficientInstanceCapacity`.
    pub code: String,
    pub message: String,
    /// Worth retrying soon (capacity, throttling, a network blip); `false`
    /// for errors that need a person (permissions, unknown instance).
    pub transient: bool,
}

impl HostError {
    pub fn new(code: impl Into<String>, message: impl Into<String>, transient: bool) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            transient,
        }
    }
}

/// No GPU instance configured (the embedded, zero-configuration set-up): GPU
/// work runs wherever the worker runs, so the host is always `running`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoGpuHost;

#[async_trait::async_trait]
impl GpuHost for NoGpuHost {
    async fn describe(&self) -> Result<InstanceView, HostError> {
        Ok(InstanceView::in_state(InstanceState::Running))
    }

    async fn start(&self) -> Result<(), HostError> {
        Ok(())
    }

    async fn stop(&self) -> Result<(), HostError> {
        Ok(())
    }

    fn instance_id(&self) -> Option<&str> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_ec2_names() {
        for state in [
            InstanceState::Pending,
            InstanceState::Running,
            InstanceState::Stopping,
            InstanceState::Stopped,
            InstanceState::ShuttingDown,
            InstanceState::Terminated,
            InstanceState::Unknown("hibernating".to_owned()),
        ] {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            assert_eq!(serde_json::from_str::<InstanceState>(&json).unwrap(), state);
        }
        assert_eq!(
            serde_json::to_string(&InstanceState::ShuttingDown).unwrap(),
            "\"shutting-down\""
        );
    }
}
