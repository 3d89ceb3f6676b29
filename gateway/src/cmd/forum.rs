//! `set_thread` and `mute`: a class teacher's moderation of the forum.

use super::audit::{self, AuditEntry};
use super::error::{bad, forbidden};
use super::{Access, CmdError, Ctx, access};
use crate::service::{Gateway, timed};
use preau_proto::{Ack, ChannelId, ChannelKind, ErrorCode, Seq};
use preau_store::Write;

/// Longest forum mute, minutes (a week).
pub const MAX_MUTE_MINUTES: u32 = 7 * 24 * 60;

fn moderators_only() -> CmdError {
    forbidden("only the class's teachers moderate its forum")
}

/// Decides `set_thread`.
pub fn decide_set_thread(
    cx: Ctx<'_>,
    a: &Access,
    channel: ChannelId,
    thread: Seq,
    locked: Option<bool>,
    pinned: Option<bool>,
) -> Result<Write, CmdError> {
    if !a.moderate {
        return Err(moderators_only());
    }
    Ok(Write::ThreadState { channel, author: cx.me.id.clone(), thread, locked, pinned })
}

/// `set_thread`.
pub async fn set_thread(
    g: &Gateway,
    cx: Ctx<'_>,
    ack: Ack,
    channel: ChannelId,
    thread: Seq,
    locked: Option<bool>,
    pinned: Option<bool>,
) -> Result<Ack, CmdError> {
    if channel.kind() != ChannelKind::Forum {
        return Err(bad("threads exist only in forums"));
    }
    if locked.is_none() && pinned.is_none() {
        return Err(bad("give `locked`, `pinned` or both"));
    }
    let a = access::of(g, cx, &channel).await?;
    let w = decide_set_thread(cx, &a, channel.clone(), thread, locked, pinned)?;
    let r = timed("write", g.store.write(w)).await?;
    let said = |v: Option<bool>, yes: &str, no: &str| v.map(|b| if b { yes } else { no }.to_owned());
    let detail: Vec<String> = [said(r.entry.locked, "locked", "unlocked"), said(r.entry.pinned, "pinned", "unpinned")]
        .into_iter()
        .flatten()
        .collect();
    let mut e = AuditEntry::new(cx.now_ms, &cx.me.school, &cx.me.id, "thread_state", detail.join(", "));
    e.channel = Some(channel);
    e.seq = Some(thread);
    audit::record(g, e).await;
    Ok(Ack { seq: Some(r.entry.seq), ..ack })
}

/// Decides `mute`: until when `user` is muted (0 lifts the mute).
pub fn decide_mute(cx: Ctx<'_>, a: &Access, channel: &ChannelId, user: &str, minutes: u32) -> Result<i64, CmdError> {
    if minutes > MAX_MUTE_MINUTES {
        return Err(bad(format!("`minutes` is at most {MAX_MUTE_MINUTES}")));
    }
    if !a.moderate {
        return Err(moderators_only());
    }
    let class = channel.school_class().and_then(|(s, c)| cx.dir.class(s, c));
    if !class.is_some_and(|c| c.pupils.iter().any(|p| p == user)) {
        return Err(CmdError::new(ErrorCode::NotFound, "no such pupil in this class"));
    }
    Ok(if minutes == 0 { 0 } else { cx.now_ms + i64::from(minutes) * 60_000 })
}

/// `mute`.
pub async fn mute(
    g: &Gateway,
    cx: Ctx<'_>,
    ack: Ack,
    channel: ChannelId,
    user: String,
    minutes: u32,
) -> Result<Ack, CmdError> {
    if channel.kind() != ChannelKind::Forum {
        return Err(bad("mutes exist only in forums"));
    }
    if minutes > MAX_MUTE_MINUTES {
        return Err(bad(format!("`minutes` is at most {MAX_MUTE_MINUTES}")));
    }
    let a = access::of(g, cx, &channel).await?;
    let until = decide_mute(cx, &a, &channel, &user, minutes)?;
    timed("set_mute", g.store.set_mute(&channel, &user, until)).await?;
    let detail = if minutes == 0 { "mute lifted".to_owned() } else { format!("muted for {minutes} min") };
    let mut e = AuditEntry::new(cx.now_ms, &cx.me.school, &cx.me.id, "mute", detail);
    e.channel = Some(channel);
    e.subject = Some(user);
    audit::record(g, e).await;
    Ok(ack)
}

#[cfg(test)]
mod tests {
    use super::*;
    use preau_directory::{Directory, demo};

    #[test]
    fn mute_decisions() {
        let d = Directory::from_docs([demo::demo_doc()]).expect("demo");
        let cx = Ctx { dir: &d, me: d.user("t01").expect("teacher"), now_ms: 1_000 };
        let f = ChannelId::forum("0750001A", "6A");
        let moderator = Access { read: true, post: true, create_thread: true, moderate: true, conv: None };
        let pupil = Access { moderate: false, create_thread: false, ..moderator.clone() };
        assert_eq!(decide_mute(cx, &moderator, &f, "e001", 10), Ok(1_000 + 600_000));
        assert_eq!(decide_mute(cx, &moderator, &f, "e001", 0), Ok(0));
        let code = |r: Result<i64, CmdError>| r.map_err(|e| e.code);
        assert_eq!(code(decide_mute(cx, &moderator, &f, "e026", 10)), Err(ErrorCode::NotFound), "other class");
        assert_eq!(code(decide_mute(cx, &moderator, &f, "t01", 10)), Err(ErrorCode::NotFound), "not a pupil");
        assert_eq!(code(decide_mute(cx, &pupil, &f, "e002", 10)), Err(ErrorCode::Forbidden));
        assert_eq!(code(decide_mute(cx, &moderator, &f, "e001", MAX_MUTE_MINUTES + 1)), Err(ErrorCode::BadRequest));
        assert!(decide_set_thread(cx, &pupil, f.clone(), 1, Some(true), None).is_err());
        assert!(decide_set_thread(cx, &moderator, f, 1, Some(true), None).is_ok());
    }
}
