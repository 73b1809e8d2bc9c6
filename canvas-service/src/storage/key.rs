//! The shape an object key must have. Keys travel as URL paths (the frontend
//! reads a key back from `new URL(url).pathname`), so they must need no
//! percent-encoding, and they must not reach outside the store's root.

/// The longest key S3 accepts, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// The longest path segment, in bytes: a file name on the local store's file
/// systems (NAME_MAX on Linux and macOS). S3 would take longer ones, but a
/// key must mean the same on both stores, and nothing this service or the
/// workers write comes near it.
pub const MAX_SEGMENT_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key is empty")]
    Empty,
    #[error("key is longer than {MAX_KEY_LEN} bytes")]
    TooLong,
    #[error("key must not start or end with '/'")]
    EdgeSlash,
    #[error("key contains a character other than A-Z a-z 0-9 . _ / -")]
    BadCharacter,
    #[error("key contains an empty, '.' or '..' path segment")]
    BadSegment,
    #[error("key has a path segment longer than {MAX_SEGMENT_LEN} bytes")]
    SegmentTooLong,
}

/// `validate_key`'s alphabet and slashes as a JSON-schema pattern, for the
/// OpenAPI documents: a fuzzer then generates keys that get past the shape
/// check. (The `.`/`..` segment rule is left to `validate_key`.)
pub const KEY_PATTERN: &str = "^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$";

/// The OpenAPI schema of a key field (`#[schema(schema_with = key_schema)]`).
pub fn key_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .description(Some(
            "An object key, e.g. `images/<session>/<id>.png` or `comfyui-results/…/x.png`",
        ))
        .pattern(Some(KEY_PATTERN))
        .min_length(Some(1))
        .max_length(Some(MAX_KEY_LEN))
        .build()
}

/// Checks a key from outside the process before it is used for anything.
pub fn validate_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong);
    }
    if key.starts_with('/') || key.ends_with('/') {
        return Err(KeyError::EdgeSlash);
    }
    // Control characters, spaces, `%`, `?`, `#`, backslashes and non-ASCII
    // all fall outside this alphabet.
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'))
    {
        return Err(KeyError::BadCharacter);
    }
    if key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(KeyError::BadSegment);
    }
    if key.split('/').any(|s| s.len() > MAX_SEGMENT_LEN) {
        return Err(KeyError::SegmentTooLong);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_upload_and_worker_keys() {
        assert_eq!(validate_key("images/0b7d/abc.png"), Ok(()));
        assert_eq!(validate_key("comfyui-results/2026/x_1.webp"), Ok(()));
        assert_eq!(validate_key("paid-api-results/a..b.png"), Ok(()));
    }

    #[test]
    fn refuses_traversal_and_odd_characters() {
        assert_eq!(validate_key(""), Err(KeyError::Empty));
        assert_eq!(validate_key("/images/a.png"), Err(KeyError::EdgeSlash));
        assert_eq!(validate_key("images/../x"), Err(KeyError::BadSegment));
        assert_eq!(validate_key("images//x"), Err(KeyError::BadSegment));
        assert_eq!(validate_key("images/./x"), Err(KeyError::BadSegment));
        assert_eq!(validate_key("a\nb"), Err(KeyError::BadCharacter));
        assert_eq!(validate_key("a b"), Err(KeyError::BadCharacter));
        assert_eq!(validate_key("a%2e"), Err(KeyError::BadCharacter));
        assert_eq!(validate_key("a\\b"), Err(KeyError::BadCharacter));
        assert_eq!(validate_key(&"a".repeat(1025)), Err(KeyError::TooLong));
        // 1024 bytes is still fine, in segments a file system can hold.
        assert_eq!(validate_key(&format!("{}aa", "a/".repeat(511))), Ok(()));
        let segment = |n: usize| format!("images/{}.png", "a".repeat(n - 4));
        assert_eq!(validate_key(&segment(255)), Ok(()));
        assert_eq!(validate_key(&segment(256)), Err(KeyError::SegmentTooLong));
    }
}
