//! Room tickets for live classes: the directory decides the role
//! ([`preau_directory::room_role`]); the gateway signs a short room token and names the
//! SFU node that holds (or now claims) the room.

use super::CmdError;
use super::error::forbidden;
use crate::service::Gateway;
use preau_proto::{ChannelId, ChannelKind, EntryKind, ErrorCode, RecordingInfo, Seq};

/// What a member needs to join a live class.
#[derive(Debug, Clone)]
pub struct RoomTicket {
    /// Room token (audience `preau-sfu`).
    pub token: String,
    /// `host`, `participant` or `observer`.
    pub role: &'static str,
    /// Room id (`class:<class>`).
    pub room: String,
    /// Signaling URL of the SFU node hosting the room.
    pub sfu: String,
}

/// A room ticket for `user` in the live session of `class`, or in its breakout `group`
/// (`g1`..`g20`: the same role as in the class; the SFU lets a pupil into their own
/// group only). `forbidden` for everyone the directory does not give a role, and for
/// unknown classes alike.
pub async fn ticket(g: &Gateway, user: &str, class: &str, group: Option<&str>) -> Result<RoomTicket, CmdError> {
    let dir = g.dir();
    let me = dir.user(user).ok_or_else(|| forbidden("your account is no longer in the directory"))?;
    let (room, role) = preau_directory::room_role(&dir, me, class)
        .ok_or_else(|| forbidden("you may not join this class's live session"))?;
    let room = match group {
        None => room,
        Some(gr) if preau_proto::valid_breakout_group(gr) && room.starts_with("class:") => format!("{room}~{gr}"),
        Some(_) => return Err(CmdError::new(ErrorCode::BadRequest, "group is g1 to g20, for a class")),
    };
    let issuer = g
        .room_issuer
        .as_ref()
        .ok_or_else(|| CmdError::new(ErrorCode::Unavailable, "live classes are not configured on this server"))?;
    let token = issuer.issue_room(&me.id, &me.name, &me.school, &room, role.as_str(), g.cfg.room_token_ttl);
    // The SFU keys rooms by school and room, as the registry does.
    let key = format!("{}/{room}", me.school);
    let sfu = g.bus.place_room(&key).await.unwrap_or_else(|| g.cfg.sfu_url.clone());
    Ok(RoomTicket { token, role: role.as_str(), room, sfu })
}

/// Seconds a recording's download link lives: long enough to start the download.
pub const LINK_TTL: u64 = 300;

/// A download link for the recording listed at `seq` of `channel`, for `user`: whoever
/// reads the channel (the policy of the class announcements) gets one; a recording
/// deleted, or emptied by the retention, is gone.
pub async fn recording_link(g: &Gateway, user: &str, channel: &ChannelId, seq: Seq) -> Result<String, CmdError> {
    let dir = g.dir();
    let me = dir.user(user).ok_or_else(|| forbidden("your account is no longer in the directory"))?;
    if channel.kind() != ChannelKind::Announcements {
        return Err(CmdError::new(ErrorCode::NotFound, "recordings are listed in class announcements"));
    }
    let access = super::access::access(g, &dir, me, channel).await?;
    if !access.read {
        return Err(forbidden("you may not read this channel"));
    }
    let gone = || CmdError::new(ErrorCode::NotFound, "no such recording (deleted, or past its retention)");
    let entry = g.store.entry(channel, seq).await.map_err(|e| CmdError::new(ErrorCode::Unavailable, e.to_string()))?;
    let entry = entry.filter(|e| e.kind == EntryKind::Recording && !e.deleted).ok_or_else(gone)?;
    let info: RecordingInfo = entry.body.as_deref().and_then(|b| serde_json::from_str(b).ok()).ok_or_else(gone)?;
    let issuer = g
        .room_issuer
        .as_ref()
        .ok_or_else(|| CmdError::new(ErrorCode::Unavailable, "live classes are not configured on this server"))?;
    let token = issuer.issue_link(&info.id, LINK_TTL);
    Ok(format!("{}?token={token}", info.url))
}
