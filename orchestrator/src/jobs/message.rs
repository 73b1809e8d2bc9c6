//! The queue message, the one wire format between the orchestrator and every
//! worker adapter (`CONTRACT.md` §2): GPU `{"task_id","api_path",
//! "request_body"}`, CPU the same plus `task_type`. Built by the submit,
//! parsed by our worker and the dead-letter sweep; the Python adapters parse
//! it too, so its shape is pinned by the test below.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::JobKind;

// Fields in alphabetical order: the bytes match what the earlier
// `serde_json::json!` (a sorted map) produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobMessage {
    /// The path the adapter POSTs `request_body` to on its host.
    pub api_path: String,
    /// The request, defaults filled in.
    #[serde(default)]
    pub request_body: Value,
    pub task_id: String,
    /// CPU kinds only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<String>,
}

impl JobMessage {
    pub fn new(kind: &JobKind, task_id: &str, request_body: Value) -> Self {
        Self {
            api_path: kind.api_path.to_owned(),
            request_body,
            task_id: task_id.to_owned(),
            task_type: kind.task_type.map(str::to_owned),
        }
    }

    /// The body as sent on the queue.
    pub fn to_body(&self) -> String {
        // A struct of strings and a `Value` always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn parse(body: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(body)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::jobs::kinds::KINDS;

    fn kind(name: &str) -> &'static JobKind {
        KINDS.iter().find(|k| k.name == name).unwrap()
    }

    #[test]
    fn gpu_and_cpu_messages_are_exactly_the_contract() {
        let body = json!({"image_url": "https://cdn.example/a.png", "seed": 7});
        let gpu = JobMessage::new(kind("camera-angle"), "t-1", body.clone()).to_body();
        assert_eq!(
            gpu,
            r#"{"api_path":"/api/v1/camera-angle/jobs","request_body":{"image_url":"https://cdn.example/a.png","seed":7},"task_id":"t-1"}"#
        );
        let cpu = JobMessage::new(kind("face-swap"), "t-2", body).to_body();
        assert_eq!(
            cpu,
            r#"{"api_path":"/api/v1/face-swap/jobs","request_body":{"image_url":"https://cdn.example/a.png","seed":7},"task_id":"t-2","task_type":"face_swap"}"#
        );
        let parsed = JobMessage::parse(&cpu).unwrap();
        assert_eq!(parsed.task_type.as_deref(), Some("face_swap"));
        assert_eq!(parsed.to_body(), cpu);
    }

    #[test]
    fn a_message_from_an_older_sender_without_a_body_parses() {
        let parsed = JobMessage::parse(r#"{"task_id":"t","api_path":"/x"}"#).unwrap();
        assert_eq!(parsed.request_body, Value::Null);
    }
}
