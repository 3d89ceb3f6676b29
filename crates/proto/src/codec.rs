//! Codecs. A client picks one with the WebSocket subprotocol; both carry the same frames.
//! MessagePack frames are maps with field names (`rmp_serde::to_vec_named`), so the two
//! encodings stay field-for-field identical and unknown fields are skipped alike.

use crate::frames::{ClientFrame, Command, ServerFrame};
use crate::{ErrorCode, SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK};
use bytes::Bytes;
use serde::Deserialize;
use std::sync::OnceLock;

/// The encoding of a session's frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// JSON in text frames.
    Json,
    /// MessagePack in binary frames.
    MsgPack,
}

impl Encoding {
    /// The encoding a subprotocol names.
    pub fn from_subprotocol(p: &str) -> Option<Self> {
        match p {
            SUBPROTOCOL_JSON => Some(Encoding::Json),
            SUBPROTOCOL_MSGPACK => Some(Encoding::MsgPack),
            _ => None,
        }
    }

    /// The subprotocol naming this encoding.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Encoding::Json => SUBPROTOCOL_JSON,
            Encoding::MsgPack => SUBPROTOCOL_MSGPACK,
        }
    }

    /// Whether frames travel as WebSocket text (else binary).
    pub fn is_text(self) -> bool {
        self == Encoding::Json
    }
}

/// A client frame that could not be used, with what to answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecodeError {
    /// The request id, if the frame was readable enough to carry one.
    pub id: Option<u64>,
    /// `bad_frame`, `unknown_command` or `bad_request`.
    pub code: ErrorCode,
    /// Plain explanation.
    pub message: String,
}

/// Just enough of a frame to answer an error: its id and type, whatever else is wrong.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    id: Option<Lenient<u64>>,
    #[serde(default, rename = "type")]
    kind: Option<Lenient<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Lenient<T> {
    Ok(T),
    Other(serde::de::IgnoredAny),
}

impl<T> Lenient<T> {
    fn ok(self) -> Option<T> {
        match self {
            Lenient::Ok(v) => Some(v),
            Lenient::Other(_) => None,
        }
    }
}

fn parse<'a, T: Deserialize<'a>>(enc: Encoding, bytes: &'a [u8]) -> Result<T, String> {
    match enc {
        Encoding::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        Encoding::MsgPack => rmp_serde::from_slice(bytes).map_err(|e| e.to_string()),
    }
}

/// Keeps serde's explanation (it names the field and the expected type) but bounds it.
fn plain(mut s: String) -> String {
    if s.len() > 200 {
        let mut cut = 200;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Decodes a client frame. Never panics; every failure says which stable code to answer.
pub fn decode_client(enc: Encoding, bytes: &[u8]) -> Result<ClientFrame, DecodeError> {
    if !is_object(enc, bytes) {
        // serde would take an array for a struct; the protocol says objects (maps) only.
        return Err(DecodeError {
            id: None,
            code: ErrorCode::BadFrame,
            message: format!("frame is not a {} object", enc_name(enc)),
        });
    }
    match parse::<ClientFrame>(enc, bytes) {
        Ok(f) => Ok(f),
        Err(full) => {
            // Second, lenient pass only on the error path: find the id and type to answer.
            let Ok(env) = parse::<Envelope>(enc, bytes) else {
                return Err(DecodeError {
                    id: None,
                    code: ErrorCode::BadFrame,
                    message: format!("frame is not a {} object", enc_name(enc)),
                });
            };
            let id = env.id.and_then(Lenient::ok);
            let kind = env.kind.and_then(Lenient::ok);
            let (code, message) = match kind {
                None => (ErrorCode::BadFrame, "frame is not an object with a string field `type`".to_owned()),
                Some(k) if !Command::TYPES.contains(&k.as_str()) => {
                    (ErrorCode::UnknownCommand, format!("unknown command `{}`", plain(k)))
                }
                Some(_) if id.is_none() => (ErrorCode::BadRequest, "frame has no integer field `id`".to_owned()),
                Some(k) => (ErrorCode::BadRequest, format!("invalid `{}` command: {}", plain(k), plain(full))),
            };
            Err(DecodeError { id, code, message })
        }
    }
}

/// Whether `bytes` start an object: `{` in JSON, a map in MessagePack.
fn is_object(enc: Encoding, bytes: &[u8]) -> bool {
    match enc {
        Encoding::Json => bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'),
        Encoding::MsgPack => matches!(bytes.first(), Some(0x80..=0x8f | 0xde | 0xdf)),
    }
}

/// The `id` of a frame, if it is an object with an integer `id`, whatever else is in it.
/// Used to answer frames refused before decoding (rate limit, size), so every command
/// gets its answer with its id.
pub fn peek_id(enc: Encoding, bytes: &[u8]) -> Option<u64> {
    if !is_object(enc, bytes) {
        return None;
    }
    parse::<Envelope>(enc, bytes).ok()?.id.and_then(Lenient::ok)
}

fn enc_name(enc: Encoding) -> &'static str {
    match enc {
        Encoding::Json => "JSON",
        Encoding::MsgPack => "MessagePack",
    }
}

/// Encodes a server frame. Frames are plain data, so this cannot fail in practice; a
/// failure would be a bug in a `Serialize` impl and yields an empty frame.
pub fn encode_server(enc: Encoding, frame: &ServerFrame) -> Bytes {
    let v = match enc {
        Encoding::Json => serde_json::to_vec(frame).unwrap_or_default(),
        Encoding::MsgPack => rmp_serde::to_vec_named(frame).unwrap_or_default(),
    };
    Bytes::from(v)
}

/// Encodes a client frame (used by clients and tests).
pub fn encode_client(enc: Encoding, frame: &ClientFrame) -> Bytes {
    let v = match enc {
        Encoding::Json => serde_json::to_vec(frame).unwrap_or_default(),
        Encoding::MsgPack => rmp_serde::to_vec_named(frame).unwrap_or_default(),
    };
    Bytes::from(v)
}

/// Decodes a server frame (used by clients).
pub fn decode_server(enc: Encoding, bytes: &[u8]) -> Result<ServerFrame, String> {
    parse(enc, bytes)
}

/// Reads the `auth` frame a session opens with when its token was not at the upgrade
/// (JSON in a text frame is always read as JSON, as for every client frame).
pub fn decode_auth(enc: Encoding, bytes: &[u8]) -> Result<crate::AuthFrame, String> {
    parse(enc, bytes).map_err(plain)
}

/// A server frame shared by every recipient: encoded at most once per encoding, on first
/// use, whatever the number of recipients. Wrap it in an `Arc`.
#[derive(Debug)]
pub struct SharedFrame {
    frame: ServerFrame,
    json: OnceLock<Bytes>,
    msgpack: OnceLock<Bytes>,
}

impl SharedFrame {
    /// Wraps a frame; nothing is encoded yet.
    pub fn new(frame: ServerFrame) -> Self {
        SharedFrame { frame, json: OnceLock::new(), msgpack: OnceLock::new() }
    }

    /// Wraps a frame whose bytes in `enc` are already known (a frame received from
    /// another node), so they are not encoded again.
    pub fn with_encoded(frame: ServerFrame, enc: Encoding, bytes: Bytes) -> Self {
        let sf = SharedFrame::new(frame);
        let cell = match enc {
            Encoding::Json => &sf.json,
            Encoding::MsgPack => &sf.msgpack,
        };
        let _ = cell.set(bytes);
        sf
    }

    /// The frame.
    pub fn frame(&self) -> &ServerFrame {
        &self.frame
    }

    /// The frame's bytes in `enc`, encoded on first call (cheap clone afterwards).
    pub fn encoded(&self, enc: Encoding) -> Bytes {
        let cell = match enc {
            Encoding::Json => &self.json,
            Encoding::MsgPack => &self.msgpack,
        };
        cell.get_or_init(|| encode_server(enc, &self.frame)).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::*;
    use crate::ids::ChannelId;

    fn send_frame() -> ClientFrame {
        ClientFrame {
            id: 7,
            cmd: Command::Send {
                channel: ChannelId::forum("0750001A", "6A"),
                client_id: "c1".into(),
                body: "Bonjour".into(),
                thread: Some(3),
                reply_to: None,
            },
        }
    }

    #[test]
    fn roundtrip_both_encodings() {
        for enc in [Encoding::Json, Encoding::MsgPack] {
            let f = send_frame();
            let b = encode_client(enc, &f);
            assert_eq!(decode_client(enc, &b), Ok(f));
        }
    }

    #[test]
    fn json_wire_shape() {
        let f: ClientFrame = serde_json::from_str(
            r#"{"id":1,"type":"send","channel":"dm:a:b","client_id":"x","body":"hi","extra":[1,2]}"#,
        )
        .expect("unknown fields are ignored");
        assert_eq!(f.cmd.name(), "send");
        let ping: ClientFrame = serde_json::from_str(r#"{"id":2,"type":"ping"}"#).expect("ping");
        assert_eq!(ping.cmd, Command::Ping {});
    }

    #[test]
    fn errors_are_classified() {
        let e = decode_client(Encoding::Json, b"\xff\x00garbage").expect_err("garbage");
        assert_eq!((e.id, e.code), (None, ErrorCode::BadFrame));
        let e = decode_client(Encoding::Json, br#"{"id":4,"type":"explode"}"#).expect_err("unknown");
        assert_eq!((e.id, e.code), (Some(4), ErrorCode::UnknownCommand));
        let e = decode_client(Encoding::Json, br#"{"id":5,"type":"send","channel":"dm:a:b"}"#).expect_err("missing");
        assert_eq!((e.id, e.code), (Some(5), ErrorCode::BadRequest));
        let e = decode_client(Encoding::Json, br#"{"id":"x","type":"ping"}"#).expect_err("id");
        assert_eq!((e.id, e.code), (None, ErrorCode::BadRequest));
        let e = decode_client(Encoding::Json, br#"{"id":6,"type":"send","channel":"nope","client_id":"x","body":"b"}"#)
            .expect_err("bad channel");
        assert_eq!((e.id, e.code), (Some(6), ErrorCode::BadRequest));
        let e = decode_client(Encoding::MsgPack, &[0xc1, 0x92]).expect_err("msgpack garbage");
        assert_eq!(e.code, ErrorCode::BadFrame);
        let e = decode_client(Encoding::Json, b"[1,2]").expect_err("array");
        assert_eq!(e.code, ErrorCode::BadFrame);
        // A MessagePack array is not an object either, even one serde could read as a
        // struct: `[1, "ping"]`.
        let e = decode_client(Encoding::MsgPack, &[0x92, 0x01, 0xa4, b'p', b'i', b'n', b'g']).expect_err("array");
        assert_eq!((e.id, e.code), (None, ErrorCode::BadFrame));
        // Frames refused before decoding still give up their id.
        assert_eq!(peek_id(Encoding::Json, br#" {"id":9,"type":"send","body":"x"}"#), Some(9));
        assert_eq!(peek_id(Encoding::Json, br#"[9]"#), None);
        let mp = rmp_serde::to_vec_named(&serde_json::json!({"id": 12, "type": "ping"})).expect("msgpack");
        assert_eq!(peek_id(Encoding::MsgPack, &mp), Some(12));
    }

    #[test]
    fn answers_carry_their_empty_lists() {
        let ack = ServerFrame::Ack(Ack { id: 3, ..Ack::default() });
        let v: serde_json::Value = serde_json::from_slice(&encode_server(Encoding::Json, &ack)).expect("json");
        for field in ["entries", "channels", "removed", "members", "receipts", "reports"] {
            assert_eq!(v[field], serde_json::json!([]), "{field}");
        }
        assert_eq!((v["duplicate"].as_bool(), v["more"].as_bool()), (Some(false), Some(false)));
        assert!(v.get("seq").is_none() && v.get("channel").is_none(), "absent values stay absent");
        // An old answer without them still reads.
        let old = decode_server(Encoding::Json, br#"{"type":"ack","id":3}"#).expect("old ack");
        assert!(matches!(old, ServerFrame::Ack(a) if a.entries.is_empty() && !a.duplicate));
    }

    #[test]
    fn shared_frame_encodes_once_and_decodes_back() {
        let sf = SharedFrame::new(ServerFrame::Presence { user: "u1".into(), online: true });
        let a = sf.encoded(Encoding::MsgPack);
        let b = sf.encoded(Encoding::MsgPack);
        assert_eq!(a.as_ptr(), b.as_ptr(), "second call reuses the first encoding");
        assert_eq!(decode_server(Encoding::MsgPack, &a), Ok(sf.frame().clone()));
        let j = sf.encoded(Encoding::Json);
        assert_eq!(decode_server(Encoding::Json, &j), Ok(sf.frame().clone()));
    }

    #[test]
    fn ack_roundtrip() {
        let f = ServerFrame::Ack(Ack { id: 9, seq: Some(4), duplicate: true, ..Ack::default() });
        for enc in [Encoding::Json, Encoding::MsgPack] {
            assert_eq!(decode_server(enc, &encode_server(enc, &f)), Ok(f.clone()));
        }
    }

    /// A short, deterministic mutation pass (the fuzz target in `fuzz/` goes further):
    /// valid frames of every command, bytes flipped, inserted, dropped and cut, in both
    /// encodings; decoding must answer, never panic.
    #[test]
    fn mutated_frames_never_panic() {
        let ch = ChannelId::group("g1");
        let cmds = vec![
            Command::Ping {},
            Command::Send {
                channel: ch.clone(),
                client_id: "c".into(),
                body: "b".into(),
                thread: Some(1),
                reply_to: Some(2),
            },
            Command::CreateThread {
                channel: ChannelId::forum("0750001A", "6A"),
                client_id: "c".into(),
                title: "t".into(),
                body: "b".into(),
            },
            Command::Edit { channel: ch.clone(), seq: 3, body: "x".into() },
            Command::Delete { channel: ch.clone(), seq: 3 },
            Command::SetThread {
                channel: ChannelId::forum("0750001A", "6A"),
                thread: 1,
                locked: Some(true),
                pinned: None,
            },
            Command::Mute { channel: ChannelId::forum("0750001A", "6A"), user: "e1".into(), minutes: 5 },
            Command::OpenDirect { user: "t1".into() },
            Command::CreateGroup { client_id: "c".into(), name: "n".into(), members: vec!["a".into(), "b".into()] },
            Command::Sync { positions: vec![Position { channel: ch.clone(), seq: 4 }], limit: Some(10) },
            Command::History { channel: ch.clone(), after: Some(1), before: None, limit: Some(5) },
            Command::Receipts { channel: ch.clone(), seq: 1 },
            Command::Report { channel: ch.clone(), seq: 2, reason: "insulte".into() },
            Command::Reports {},
            Command::CloseReport { report: "0123".into(), action: "dismiss".into() },
            Command::Profiles { users: vec!["t01".into(), "e002".into()] },
        ];
        assert_eq!(cmds.len() + 5, Command::TYPES.len(), "every command but the trivial ones is mutated");
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut decoded = 0;
        for enc in [Encoding::Json, Encoding::MsgPack] {
            for (i, cmd) in cmds.iter().enumerate() {
                let base = encode_client(enc, &ClientFrame { id: i as u64, cmd: cmd.clone() }).to_vec();
                for _ in 0..1500 {
                    let mut b = base.clone();
                    for _ in 0..=(next() % 4) {
                        let at = (next() as usize) % b.len().max(1);
                        match next() % 4 {
                            0 if !b.is_empty() => b[at] ^= 1 << (next() % 8),
                            1 => b.insert(at.min(b.len()), next() as u8),
                            2 if !b.is_empty() => {
                                b.remove(at);
                            }
                            _ => b.truncate(at),
                        }
                    }
                    if decode_client(enc, &b).is_ok() {
                        decoded += 1;
                    }
                }
            }
        }
        assert!(decoded > 0, "some mutations stay valid, so both paths were exercised");
    }
}
