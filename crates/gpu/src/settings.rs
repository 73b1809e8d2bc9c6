//! How often the controller looks at the host, how long the host may sit idle,
//! and how patiently a failed start is retried.

use std::time::Duration;

use common::config::{ConfigError, Env};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuSettings {
    /// How often the cached view of the host is refreshed (`GPU_POLL_SECONDS`).
    pub poll_interval: Duration,
    /// How long the host must have had no GPU work before it is stopped
    /// (`GPU_IDLE_MINUTES`).
    pub idle_timeout: Duration,
    /// First wait after a failed start; doubled after each further failure…
    pub min_backoff: Duration,
    /// …up to this.
    pub max_backoff: Duration,
    /// How often to look while the host is between states (`pending`,
    /// `stopping`) or a start is waiting on it: a job that arrived while the
    /// host was stopping must start it soon after it has stopped.
    pub transition_poll_interval: Duration,
}

impl Default for GpuSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30 * 60),
            min_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(60),
            transition_poll_interval: Duration::from_secs(2),
        }
    }
}

impl GpuSettings {
    /// Reads `GPU_POLL_SECONDS` (default 30) and `GPU_IDLE_MINUTES`
    /// (default 30); the backoff keeps its defaults.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let poll_seconds: u64 = env.parse_or(&["GPU_POLL_SECONDS"], 30)?;
        if poll_seconds == 0 {
            return Err(ConfigError::new(
                "GPU_POLL_SECONDS",
                "must be at least 1 (seconds between looks at the GPU host)",
            ));
        }
        let idle_minutes: u64 = env.parse_or(&["GPU_IDLE_MINUTES"], 30)?;
        if idle_minutes == 0 {
            return Err(ConfigError::new(
                "GPU_IDLE_MINUTES",
                "must be at least 1 (minutes without GPU work before the host is stopped)",
            ));
        }
        let poll_interval = Duration::from_secs(poll_seconds);
        Ok(Self {
            poll_interval,
            idle_timeout: Duration::from_secs(idle_minutes.saturating_mul(60)),
            transition_poll_interval: defaults.transition_poll_interval.min(poll_interval),
            ..defaults
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let settings = GpuSettings::from_env(&Env::default()).unwrap();
        assert_eq!(settings, GpuSettings::default());

        let env = Env::from_pairs([("GPU_POLL_SECONDS", "10"), ("GPU_IDLE_MINUTES", "5")]);
        let settings = GpuSettings::from_env(&env).unwrap();
        assert_eq!(settings.poll_interval, Duration::from_secs(10));
        assert_eq!(settings.idle_timeout, Duration::from_secs(300));
    }

    #[test]
    fn zero_or_garbage_names_the_variable() {
        let env = Env::from_pairs([("GPU_IDLE_MINUTES", "0")]);
        assert_eq!(
            GpuSettings::from_env(&env).unwrap_err().variable,
            "GPU_IDLE_MINUTES"
        );
        let env = Env::from_pairs([("GPU_POLL_SECONDS", "soon")]);
        assert_eq!(
            GpuSettings::from_env(&env).unwrap_err().variable,
            "GPU_POLL_SECONDS"
        );
    }
}
