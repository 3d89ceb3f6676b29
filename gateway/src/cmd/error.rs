//! A refused command: a stable code and a plain message, never internals.

use preau_proto::ErrorCode;
use preau_store::StoreError;

/// How long a client told `overloaded` waits before retrying: about the time the store
/// takes to commit a full backlog.
pub const OVERLOAD_RETRY_MS: u64 = 200;

/// A refused command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdError {
    /// Stable code.
    pub code: ErrorCode,
    /// Plain explanation.
    pub message: String,
    /// For `rate_limited`, `overloaded` and `outside_hours`.
    pub retry_after_ms: Option<u64>,
}

impl CmdError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        CmdError { code, message: message.into(), retry_after_ms: None }
    }

    /// `overloaded`: nothing was stored; retry after [`OVERLOAD_RETRY_MS`].
    pub fn overloaded(message: impl Into<String>) -> Self {
        CmdError { code: ErrorCode::Overloaded, message: message.into(), retry_after_ms: Some(OVERLOAD_RETRY_MS) }
    }

    /// `rate_limited`, to retry after `wait`.
    pub fn rate_limited(message: impl Into<String>, wait: std::time::Duration) -> Self {
        CmdError {
            code: ErrorCode::RateLimited,
            message: message.into(),
            retry_after_ms: Some(wait.as_millis().max(1) as u64),
        }
    }
}

/// `bad_request`.
pub fn bad(msg: impl Into<String>) -> CmdError {
    CmdError::new(ErrorCode::BadRequest, msg)
}

/// `forbidden`.
pub fn forbidden(msg: impl Into<String>) -> CmdError {
    CmdError::new(ErrorCode::Forbidden, msg)
}

/// The same answer for a channel that does not exist and one the user may not see, so
/// nothing leaks about channels beyond the user's reach.
pub fn no_channel() -> CmdError {
    forbidden("this channel is not available to you")
}

/// `forbidden` for a post the rules refuse.
pub fn may_not_post() -> CmdError {
    forbidden("you may not post in this channel")
}

impl From<StoreError> for CmdError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => CmdError::new(ErrorCode::NotFound, "no such message or thread"),
            StoreError::NotAuthor => forbidden("only its author (or a moderator) may do this"),
            StoreError::Locked => CmdError::new(ErrorCode::Locked, "this thread is locked"),
            StoreError::Invalid(why) => bad(why),
            StoreError::Overloaded => CmdError::overloaded("the server takes no more writes for now; retry shortly"),
            StoreError::Unavailable(detail) => {
                // Logged where handled: the client gets a plain retryable answer.
                tracing::warn!(%detail, "store unavailable");
                CmdError::new(ErrorCode::Unavailable, "storage is unavailable; retry shortly")
            }
        }
    }
}

/// Checks a text field: not blank, at most `max` bytes.
pub fn check_text(what: &str, s: &str, max: usize) -> Result<(), CmdError> {
    if s.trim().is_empty() {
        return Err(bad(format!("`{what}` is empty")));
    }
    if s.len() > max {
        return Err(CmdError::new(ErrorCode::TooLarge, format!("`{what}` is longer than {max} bytes")));
    }
    Ok(())
}

/// Longest client message id.
pub const MAX_CLIENT_ID: usize = 64;

/// Checks a client id: 1 to [`MAX_CLIENT_ID`] bytes.
pub fn check_client_id(cid: &str) -> Result<(), CmdError> {
    if cid.is_empty() || cid.len() > MAX_CLIENT_ID {
        return Err(bad(format!("`client_id` must be 1 to {MAX_CLIENT_ID} bytes")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_client_id_checks() {
        assert_eq!(check_text("body", "  ", 10).map_err(|e| e.code), Err(ErrorCode::BadRequest));
        assert_eq!(check_text("body", "abcdefghijk", 10).map_err(|e| e.code), Err(ErrorCode::TooLarge));
        assert!(check_text("body", "bonjour", 10).is_ok());
        assert!(check_client_id("").is_err());
        assert!(check_client_id(&"x".repeat(MAX_CLIENT_ID + 1)).is_err());
        assert!(check_client_id("c-1").is_ok());
    }

    #[test]
    fn store_errors_become_stable_codes_without_internals() {
        let e = CmdError::from(StoreError::Unavailable("disk I/O error at /data/preau.db".into()));
        assert_eq!(e.code, ErrorCode::Unavailable);
        assert!(!e.message.contains("/data"), "no internals: {}", e.message);
        assert_eq!(CmdError::from(StoreError::Locked).code, ErrorCode::Locked);
        assert_eq!(CmdError::from(StoreError::NotAuthor).code, ErrorCode::Forbidden);
    }
}
