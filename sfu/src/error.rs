//! Errors at the SFU's edge. A client sees a stable [`SignalCode`] and a plain message;
//! webrtc-rs's and Redis's error texts go to the log, where they are handled, never to
//! the client.

use crate::room::RoomError;
use preau_live::signal::{SignalCode, SignalError};
use std::fmt::Display;

/// Something failed inside the SFU (webrtc-rs refused a local step): logged, and the
/// client gets `internal`.
pub fn internal(context: &'static str, e: impl Display) -> SignalError {
    tracing::warn!(error = %e, context, "internal error");
    SignalError::new(SignalCode::Internal, "the live-class server could not do this; try again")
}

/// The client's SDP could not be read or applied: `bad_sdp`, the details in the log.
pub fn bad_sdp(what: &'static str, e: impl Display) -> SignalError {
    tracing::debug!(error = %e, what, "unusable SDP");
    SignalError::new(SignalCode::BadSdp, format!("the {what} could not be used"))
}

/// The room registry (Redis) is unreachable: `unavailable`, retryable.
pub fn registry_unavailable(e: impl Display) -> SignalError {
    tracing::warn!(error = %e, "room registry unreachable");
    SignalError::new(SignalCode::Unavailable, "the live-class registry is unreachable; retry shortly")
}

impl From<RoomError> for SignalError {
    fn from(e: RoomError) -> Self {
        let code = match e {
            RoomError::NotHost => SignalCode::NotHost,
            RoomError::NotInRoom => SignalCode::NotInRoom,
            RoomError::AlreadyJoined => SignalCode::AlreadyJoined,
            RoomError::Full => SignalCode::RoomFull,
            RoomError::Locked => SignalCode::RoomLocked,
            RoomError::Ended => SignalCode::RoomEnded,
            RoomError::NotGranted(_) => SignalCode::NotGranted,
            RoomError::WrongRole => SignalCode::WrongRole,
            RoomError::BadPoll => SignalCode::BadPoll,
            RoomError::NoPoll => SignalCode::NoPoll,
            RoomError::AlreadyAnswered => SignalCode::AlreadyAnswered,
            RoomError::BadBreakout(_) => SignalCode::BadBreakout,
            RoomError::NoBreakout => SignalCode::NoBreakout,
        };
        SignalError::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_text_never_reaches_the_client() {
        let e = internal("create answer", "DTLS transport: sctp association closed at 10.0.0.3");
        assert_eq!(e.code, SignalCode::Internal);
        assert!(!e.message.contains("10.0.0.3") && !e.message.contains("DTLS"));
        let e = bad_sdp("offer", "SdpInvalidSyntax(\"a=ssrc\")");
        assert!(!e.message.contains("SdpInvalid"));
        let e = registry_unavailable("Connection refused (os error 111)");
        assert_eq!(e.code, SignalCode::Unavailable);
        assert!(!e.message.contains("os error"));
    }

    #[test]
    fn room_refusals_keep_their_documented_codes() {
        // RoomError::code names the same codes as SignalCode.
        for e in [
            RoomError::NotHost,
            RoomError::NotInRoom,
            RoomError::AlreadyJoined,
            RoomError::Full,
            RoomError::Locked,
            RoomError::Ended,
            RoomError::NotGranted(crate::room::Media::Audio),
            RoomError::WrongRole,
        ] {
            assert_eq!(SignalError::from(e.clone()).code.as_str(), e.code());
        }
    }
}
