//! Stable error codes. A client switches on the code; the message is for people.

use serde::{Deserialize, Serialize};

/// The code of an `error` frame or of an HTTP error body. Codes are stable across versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame could not be decoded (not MessagePack/JSON, or not an object with `type`).
    BadFrame,
    /// The `type` of the command is not one this server knows.
    UnknownCommand,
    /// A field is missing, of the wrong type, or out of range.
    BadRequest,
    /// The frame or message is larger than the limit.
    TooLarge,
    /// No valid token, or an expired, forged or wrong-audience one.
    Unauthorized,
    /// The school's rules do not allow this action, or the channel is not visible.
    Forbidden,
    /// The target message or thread does not exist in a channel the user can see.
    NotFound,
    /// The thread is locked.
    Locked,
    /// The user is muted in this forum for now.
    Muted,
    /// Too many sends; retry after `retry_after_ms`.
    RateLimited,
    /// A group would exceed its member limit.
    GroupFull,
    /// The service cannot take this now (storage unavailable, draining); retry later.
    Unavailable,
    /// Something failed on the server; nothing was stored.
    Internal,
    /// Messaging is suspended (platform-wide by the operator, or school-wide by the
    /// school's admin): reading stays open, writing waits until it is lifted.
    Suspended,
    /// The account is held for a while: it wrote to too many conversations too fast (the
    /// mass-send brake); the school's direction was told.
    Held,
    /// Outside the school's discussion hours (pupils and parents, in conversations);
    /// `retry_after_ms` says when they reopen.
    OutsideHours,
    /// The node takes no more writes for now (its store's write backlog is full, or this
    /// connection has as many sends in flight as it may): nothing was stored; retry after
    /// `retry_after_ms`.
    Overloaded,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::UnknownCommand => "unknown_command",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Locked => "locked",
            ErrorCode::Muted => "muted",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::GroupFull => "group_full",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::Suspended => "suspended",
            ErrorCode::Held => "held",
            ErrorCode::OutsideHours => "outside_hours",
            ErrorCode::Overloaded => "overloaded",
        }
    }

    /// Whether the same request may succeed if retried later unchanged.
    pub fn retryable(self) -> bool {
        matches!(self, ErrorCode::RateLimited | ErrorCode::Unavailable | ErrorCode::Internal | ErrorCode::Overloaded)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
