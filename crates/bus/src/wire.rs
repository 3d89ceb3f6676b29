//! The bus's wire form between nodes, without IO (fuzzed: it reads what Redis hands
//! over, which any process with access to Redis could have written).

use crate::{BusMessage, Topic};
use bytes::Bytes;
use preau_proto::{ChannelId, Encoding, SharedFrame, decode_server};
use std::sync::Arc;

/// The Redis channel of control notices (directory changes).
pub const CONTROL: &str = "preau:ctl";

/// The Redis channel of a topic.
pub fn topic_key(t: &Topic) -> String {
    match t {
        Topic::Channel(c) => format!("preau:c:{c}"),
        Topic::User(u) => format!("preau:u:{u}"),
    }
}

/// Wire form: `[origin len][origin][kind][payload]`; kind 0 channel frame, 1 user frame
/// (payload: MessagePack frame, the topic comes from the Redis channel name), 2 directory
/// change (payload: JSON list of UAIs), 3 setting change (payload: its key), 4 a user's
/// sessions to end (payload: the user id).
pub fn encode(origin: &str, msg: &BusMessage) -> Option<(String, Vec<u8>)> {
    let mut out = Vec::with_capacity(64);
    out.push(origin.len().min(255) as u8);
    out.extend_from_slice(&origin.as_bytes()[..origin.len().min(255)]);
    match msg {
        BusMessage::Frame { topic, frame } => {
            out.push(if matches!(topic, Topic::Channel(_)) { 0 } else { 1 });
            out.extend_from_slice(&frame.encoded(Encoding::MsgPack));
            Some((topic_key(topic), out))
        }
        BusMessage::DirectoryChanged { schools } => {
            out.push(2);
            out.extend_from_slice(&serde_json::to_vec(schools).ok()?);
            Some((CONTROL.to_owned(), out))
        }
        BusMessage::SettingsChanged { key } => {
            out.push(3);
            out.extend_from_slice(key.as_bytes());
            Some((CONTROL.to_owned(), out))
        }
        BusMessage::Disconnect { user } => {
            out.push(4);
            out.extend_from_slice(user.as_bytes());
            Some((CONTROL.to_owned(), out))
        }
    }
}

/// Decodes a message from Redis; `None` for our own, or for anything malformed.
pub fn decode(me: &str, redis_channel: &str, payload: &[u8]) -> Option<BusMessage> {
    let (&olen, rest) = payload.split_first()?;
    let origin = rest.get(..olen as usize)?;
    if origin == me.as_bytes() {
        return None;
    }
    let (&kind, body) = rest.get(olen as usize..)?.split_first()?;
    match kind {
        0 | 1 => {
            let frame = decode_server(Encoding::MsgPack, body).ok()?;
            let topic = if kind == 0 {
                Topic::Channel(ChannelId::parse(redis_channel.strip_prefix("preau:c:")?).ok()?)
            } else {
                Topic::User(redis_channel.strip_prefix("preau:u:")?.to_owned())
            };
            let frame = Arc::new(SharedFrame::with_encoded(frame, Encoding::MsgPack, Bytes::copy_from_slice(body)));
            Some(BusMessage::Frame { topic, frame })
        }
        2 => Some(BusMessage::DirectoryChanged { schools: serde_json::from_slice(body).ok()? }),
        3 => Some(BusMessage::SettingsChanged { key: std::str::from_utf8(body).ok()?.to_owned() }),
        4 => Some(BusMessage::Disconnect { user: std::str::from_utf8(body).ok()?.to_owned() }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use preau_proto::ServerFrame;

    #[test]
    fn round_trips_and_refuses_garbage_without_panicking() {
        let frame = ServerFrame::Typing { channel: ChannelId::forum("0750001A", "6A"), user: "e001".into() };
        let msg = BusMessage::Frame {
            topic: Topic::Channel(ChannelId::forum("0750001A", "6A")),
            frame: Arc::new(SharedFrame::new(frame.clone())),
        };
        let (key, bytes) = encode("gw-a", &msg).expect("encode");
        assert_eq!(key, "preau:c:forum:0750001A:6A");
        assert!(decode("gw-a", &key, &bytes).is_none(), "a node ignores its own messages");
        match decode("gw-b", &key, &bytes) {
            Some(BusMessage::Frame { topic: Topic::Channel(c), frame: f }) => {
                assert_eq!(c, ChannelId::forum("0750001A", "6A"));
                assert_eq!(f.frame(), &frame);
            }
            other => panic!("decoded {other:?}"),
        }
        let d = BusMessage::DirectoryChanged { schools: vec!["0750001A".into()] };
        let (key, bytes) = encode("gw-a", &d).expect("encode");
        assert!(matches!(decode("gw-b", &key, &bytes), Some(BusMessage::DirectoryChanged { .. })));
        let (k, b) = encode("gw-a", &BusMessage::SettingsChanged { key: "suspensions".into() }).expect("encode");
        assert!(matches!(decode("gw-b", &k, &b), Some(BusMessage::SettingsChanged { key }) if key == "suspensions"));
        let (k, b) = encode("gw-a", &BusMessage::Disconnect { user: "p001".into() }).expect("encode");
        assert!(matches!(decode("gw-b", &k, &b), Some(BusMessage::Disconnect { user }) if user == "p001"));
        // Every truncation and a few corruptions: never a panic.
        for cut in 0..bytes.len() {
            let _ = decode("gw-b", &key, &bytes[..cut]);
        }
        for bad in [&b""[..], b"\xff", b"\x03gw", b"\x03gw2\x09xx", b"\x03gw2\x00\xc1", &[0, 9]] {
            assert!(decode("gw-b", "preau:c:forum:0750001A:6A", bad).is_none());
        }
    }
}
