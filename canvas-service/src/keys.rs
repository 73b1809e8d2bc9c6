//! Who may do what with an object key. Upload keys are built here, never
//! taken from a client, and `images/<session>/…` belongs to that session.

use common::ApiError;
use uuid::Uuid;

use crate::storage::validate_key;

/// The prefix under which uploads live: `images/<session_id>/`.
const UPLOADS: &str = "images/";

/// `images/{session_id}/{uuid}.{ext}`.
pub fn upload_key(session_id: Uuid, ext: &str) -> String {
    format!("{UPLOADS}{session_id}/{}.{ext}", Uuid::new_v4())
}

/// Whether the key names another session's upload.
pub fn is_other_sessions_upload(session_id: Uuid, key: &str) -> bool {
    match key.strip_prefix(UPLOADS) {
        None => false,
        Some(rest) => {
            let owner = rest.split('/').next().unwrap_or_default();
            owner != session_id.to_string()
        }
    }
}

/// Refuses a malformed key (400) and another session's upload (403).
pub fn check_client_key(session_id: Uuid, key: &str) -> Result<(), ApiError> {
    validate_key(key).map_err(|e| ApiError::bad_request(format!("s3_key: {e}")))?;
    if is_other_sessions_upload(session_id, key) {
        return Err(ApiError::forbidden(
            "s3_key: this image was uploaded to another session",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_of_upload_keys() {
        let me = Uuid::new_v4();
        let other = Uuid::new_v4();
        assert!(!is_other_sessions_upload(me, &upload_key(me, "png")));
        assert!(is_other_sessions_upload(me, &upload_key(other, "png")));
        assert!(is_other_sessions_upload(me, "images/not-a-session/x.png"));
        assert!(!is_other_sessions_upload(me, "comfyui-results/x.png"));
        assert!(check_client_key(me, "images/../x.png").is_err());
    }
}
