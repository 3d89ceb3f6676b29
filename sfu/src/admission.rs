//! Getting into a room: the room token (in the query or the first message), its
//! checks, the node's capacity, the room's placement, and the room's own answer. One
//! function, [`admit`], returns either the member's place or one [`Refusal`] that says
//! what to tell the client and with which close code.

use crate::node::Sfu;
use crate::room::{PeerId, Role, RoomError};
use crate::room_task::{PEER_QUEUE, PeerCmd, RoomMsg, RoomRef};
use axum::extract::ws::{Message, WebSocket};
use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use preau_live::signal::{self, ClientCmd, SignalCode, SignalError};
use preau_proto::close;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long a client has to send `join` after connecting.
pub const JOIN_WITHIN: Duration = Duration::from_secs(10);

/// Why someone does not get in: what to answer, and how to close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The `join` message's id, when it had one.
    pub id: Option<u64>,
    /// The error sent.
    pub error: SignalError,
    /// The close code that follows.
    pub close: u16,
    /// The close reason.
    pub reason: &'static str,
}

impl Refusal {
    fn new(id: Option<u64>, error: SignalError, close: u16, reason: &'static str) -> Self {
        Refusal { id, error, close, reason }
    }
}

/// A member let into a room (maybe into its waiting room).
pub(crate) struct Admitted {
    pub peer: PeerId,
    pub role: Role,
    pub key: String,
    pub room: Arc<RoomRef>,
    pub rx: mpsc::Receiver<PeerCmd>,
    pub join_id: Option<u64>,
}

/// The role a room token's `role` claim names.
pub fn role_of(claim: &str) -> Option<Role> {
    match claim {
        "host" => Some(Role::Host),
        "participant" => Some(Role::Participant),
        "observer" => Some(Role::Observer),
        _ => None,
    }
}

/// The room token and the `join` id: from the query, or from a first message that must
/// be `join`.
pub fn token_from_first(text: &str) -> Result<(String, Option<u64>), Refusal> {
    let auth = |id, e| Refusal::new(id, e, close::TOKEN_EXPIRED, "join first");
    match signal::decode(text) {
        Ok(signal::ClientMsg { id, cmd: ClientCmd::Join { token } }) => Ok((token, id)),
        Ok(msg) => Err(auth(msg.id, SignalError::new(SignalCode::NotJoined, "send `join` first"))),
        Err((id, e)) => Err(auth(id, e)),
    }
}

/// The room's answer to a join, as a refusal.
pub fn room_refusal(id: Option<u64>, e: RoomError) -> Refusal {
    let reason = e.code();
    Refusal::new(id, SignalError::from(e), close::ACCOUNT_REMOVED, reason)
}

/// Lets a connecting client in, or says why not.
pub(crate) async fn admit(
    sfu: &Arc<Sfu>,
    query_token: Option<String>,
    stream: &mut SplitStream<WebSocket>,
) -> Result<Admitted, Refusal> {
    let (token, join_id) = match query_token {
        Some(t) => (t, None),
        None => match tokio::time::timeout(JOIN_WITHIN, stream.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => token_from_first(&t)?,
            _ => {
                let e = SignalError::new(SignalCode::NotJoined, "send `join` first");
                return Err(Refusal::new(None, e, close::TOKEN_EXPIRED, "join first"));
            }
        },
    };
    let bad_token = |e: SignalError| Refusal::new(join_id, e, close::TOKEN_EXPIRED, "bad room token");
    let claims = sfu.verifier.verify_room(&token).map_err(|e| {
        // The reason is the verifier's stable one (expired, wrong audience...), never key material.
        bad_token(SignalError::new(SignalCode::Unauthorized, e.to_string()))
    })?;
    let role = role_of(&claims.role)
        .ok_or_else(|| bad_token(SignalError::new(SignalCode::Unauthorized, "unknown role in the room token")))?;
    if sfu.is_full() {
        let e = SignalError::new(SignalCode::NodeFull, "this live-class node is full");
        return Err(Refusal::new(join_id, e, close::ELSEWHERE, "node full"));
    }
    let key = format!("{}/{}", claims.school, claims.room);
    if let Some((class_room, group)) = key.rsplit_once('~') {
        // A breakout group's room: a pupil gets into their own group only.
        if !class_room.contains("/class:") || !preau_proto::valid_breakout_group(group) {
            return Err(bad_token(SignalError::new(SignalCode::Unauthorized, "not a breakout group's room")));
        }
        if role == Role::Participant && sfu.breakout_group(class_room, &claims.sub).await.as_deref() != Some(group) {
            let e = SignalError::new(SignalCode::NotInGroup, "this breakout group is not yours");
            return Err(Refusal::new(join_id, e, close::ACCOUNT_REMOVED, "not_in_group"));
        }
    }
    let room = sfu.room(&key).await.map_err(|e| Refusal::new(join_id, e, close::ELSEWHERE, "elsewhere"))?;
    let peer = sfu.new_peer();
    let (tx, rx) = mpsc::channel::<PeerCmd>(PEER_QUEUE);
    let (reply, answer) = oneshot::channel();
    let join = RoomMsg::Join { peer, user: claims.sub.clone(), name: claims.name.clone(), role, tx, reply };
    let joined = match room.tx.send(join).await {
        Ok(()) => answer.await.unwrap_or(Err(RoomError::Ended)),
        Err(_) => Err(RoomError::Ended),
    };
    joined.map_err(|e| room_refusal(join_id, e))?;
    Ok(Admitted { peer, role, key, room, rx, join_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_messages_and_roles() {
        assert_eq!(token_from_first(r#"{"id":1,"type":"join","token":"abc"}"#), Ok(("abc".into(), Some(1))));
        let r = token_from_first(r#"{"id":2,"type":"raise_hand"}"#).expect_err("not join");
        assert_eq!((r.id, r.error.code, r.close), (Some(2), SignalCode::NotJoined, close::TOKEN_EXPIRED));
        let r = token_from_first("{").expect_err("not json");
        assert_eq!(r.error.code, SignalCode::BadFrame);
        assert_eq!(role_of("host"), Some(Role::Host));
        assert_eq!(role_of("participant"), Some(Role::Participant));
        assert_eq!(role_of("observer"), Some(Role::Observer));
        assert_eq!(role_of("admin"), None);
        let r = room_refusal(Some(3), RoomError::Locked);
        assert_eq!((r.error.code, r.close, r.reason), (SignalCode::RoomLocked, close::ACCOUNT_REMOVED, "room_locked"));
    }
}
