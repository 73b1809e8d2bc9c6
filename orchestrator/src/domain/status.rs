//! Job statuses as stored (lower-case strings, shared with the adapters).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    Pending,
    Processing,
    Completed,
    Failed,
    /// Stopped at a client's request; final. Reads as `failed` on the old
    /// polling endpoint, whose frontend stops only on completed/failed.
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw.to_ascii_lowercase().as_str() {
            "pending" => Some(Self::Pending),
            "processing" => Some(Self::Processing),
            "completed" => Some(Self::Completed),
            "failed" => Some(Self::Failed),
            "cancelled" | "canceled" => Some(Self::Cancelled),
            _ => None,
        }
    }

    /// A final status is never overwritten.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status as found in a record: one of ours, or whatever else an old
/// adapter wrote (kept, and shown as it is).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StoredStatus {
    Known(JobStatus),
    Unknown(String),
}

impl StoredStatus {
    /// Case-insensitive, as the adapters' spellings vary.
    pub fn parse(raw: &str) -> Self {
        JobStatus::parse(raw).map_or_else(|| Self::Unknown(raw.to_ascii_lowercase()), Self::Known)
    }

    pub fn known(&self) -> Option<JobStatus> {
        match self {
            Self::Known(status) => Some(*status),
            Self::Unknown(_) => None,
        }
    }

    pub fn is(&self, status: JobStatus) -> bool {
        self.known() == Some(status)
    }

    /// A final status is never overwritten; an unknown one is not final.
    pub fn is_final(&self) -> bool {
        self.known().is_some_and(JobStatus::is_final)
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Known(status) => status.as_str(),
            Self::Unknown(raw) => raw,
        }
    }
}

impl From<JobStatus> for StoredStatus {
    fn from(status: JobStatus) -> Self {
        Self::Known(status)
    }
}

impl From<&str> for StoredStatus {
    fn from(raw: &str) -> Self {
        Self::parse(raw)
    }
}

impl From<String> for StoredStatus {
    fn from(raw: String) -> Self {
        Self::parse(&raw)
    }
}

impl fmt::Display for StoredStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for StoredStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_spellings_are_known_and_the_rest_kept() {
        assert_eq!(
            StoredStatus::parse("COMPLETED"),
            JobStatus::Completed.into()
        );
        assert_eq!(StoredStatus::parse("canceled"), JobStatus::Cancelled.into());
        let odd = StoredStatus::parse("Queued");
        assert_eq!(odd, StoredStatus::Unknown("queued".into()));
        assert!(!odd.is_final());
        assert_eq!(odd.as_str(), "queued");
    }
}
