//! The JSON Schema of the live-class signaling (`docs/schema/live.schema.json`): the
//! frames of `preau_live::signal` and the room's events, which this crate sends as they
//! are. Generated from the types like the messaging one ([`preau_proto::schema`]).

use preau_live::signal::{ClientMsg, ServerMsg};
use preau_proto::schema::Document;

/// Both directions of the signaling.
pub fn live() -> Document {
    Document::new().client::<ClientMsg>().server::<ServerMsg>().server::<crate::room::Event>()
}

/// [`live`] as committed.
pub fn live_document() -> serde_json::Value {
    live().finish(
        "urn:preau:schema:live:v1",
        "Préau live-class signaling, version 1",
        "Frames between a browser and the SFU's WebSocket (`/ws`, JSON text frames; docs/protocol.md, Live classes). Server frames are a signaling message or a room event. Generated from crates/live and sfu/src/room: do not edit.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_committed_matches_the_types() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/schema/live.schema.json");
        if let Err(e) = preau_proto::schema::check_committed(&path, &live_document()) {
            panic!("{e}");
        }
    }

    #[test]
    fn schema_types_read_as_they_are_written() {
        assert_eq!(live().conflicts(), Vec::<String>::new());
    }

    #[test]
    fn schema_names_every_signal_code() {
        let text = live_document().to_string();
        for code in ["not_host", "room_locked", "elsewhere", "bad_sdp", "connection_failed"] {
            assert!(text.contains(&format!("\"{code}\"")), "{code}");
        }
        for frame in ["join", "publish", "welcome", "admitted", "waiting", "poll_results"] {
            assert!(text.contains(&format!("\"{frame}\"")), "{frame}");
        }
    }
}
