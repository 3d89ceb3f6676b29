//! `send`, `create_thread`, `edit`, `delete`: posts and their changes. The entry rules
//! (thread open, reply in the same thread, only the author edits) are the store's
//! (`preau_store::rules`); what is decided here is who may post where, and when.

use super::audit::{self, AuditEntry};
use super::error::{bad, check_client_id, check_text, forbidden, may_not_post};
use super::{Access, CmdError, Ctx, access};
use crate::metrics as m;
use crate::service::{Gateway, timed};
use preau_proto::{Ack, ChannelId, ChannelKind, EntryKind, ErrorCode, Seq};
use preau_store::{BoxFut, Write};

/// Longest thread title and group name, bytes.
pub const MAX_TITLE_BYTES: usize = 200;

/// A `send` command.
#[derive(Debug, Clone)]
pub struct Send {
    /// Channel.
    pub channel: ChannelId,
    /// Idempotency key.
    pub client_id: String,
    /// Text.
    pub body: String,
    /// Forum thread.
    pub thread: Option<Seq>,
    /// Post answered (forums).
    pub reply_to: Option<Seq>,
}

/// Checks of a `send` that need nothing but the command.
pub fn validate_send(s: &Send, max_body: usize) -> Result<(), CmdError> {
    check_client_id(&s.client_id)?;
    check_text("body", &s.body, max_body)
}

/// Whether a `send` must know the author's forum mute: a non-moderator posting in a
/// forum thread.
pub fn needs_mute(s: &Send, a: &Access) -> bool {
    s.channel.kind() == ChannelKind::Forum && s.thread.is_some() && a.post && !a.moderate
}

/// Decides a `send`: the write, or why not. `muted_until` is the author's forum mute
/// (0 when none or not asked).
pub fn decide_send(cx: Ctx<'_>, a: &Access, s: Send, muted_until: i64) -> Result<Write, CmdError> {
    if !a.post {
        return Err(may_not_post());
    }
    match s.channel.kind() {
        ChannelKind::Forum => {
            if s.thread.is_none() {
                return Err(bad("posts in a forum belong to a thread: give `thread`"));
            }
            if !a.moderate && muted_until > cx.now_ms {
                return Err(CmdError::new(ErrorCode::Muted, "a teacher has muted you in this forum for now"));
            }
        }
        _ if s.thread.is_some() || s.reply_to.is_some() => {
            return Err(bad("`thread` and `reply_to` exist only in forums"));
        }
        _ => {}
    }
    Ok(Write::Post {
        channel: s.channel,
        kind: EntryKind::Message,
        author: cx.me.id.clone(),
        client_id: s.client_id,
        body: s.body,
        title: None,
        thread: s.thread,
        reply_to: s.reply_to,
        respect_lock: !a.moderate,
    })
}

/// `send`, to its end.
pub async fn send(g: &Gateway, cx: Ctx<'_>, ack: Ack, s: Send) -> Result<Ack, CmdError> {
    queue_send(g, cx, ack, s).await?.await
}

/// `send` up to its write being queued; the future answers once it is durable. Refused
/// at once (`overloaded`) when the store's backlog is full.
pub async fn queue_send(
    g: &Gateway,
    cx: Ctx<'_>,
    ack: Ack,
    s: Send,
) -> Result<BoxFut<'static, Result<Ack, CmdError>>, CmdError> {
    let started = tokio::time::Instant::now();
    validate_send(&s, g.cfg.max_body_bytes)?;
    let a = access::of(g, cx, &s.channel).await?;
    let muted_until =
        if needs_mute(&s, &a) { timed("muted_until", g.store.muted_until(&s.channel, &cx.me.id)).await? } else { 0 };
    let w = decide_send(cx, &a, s, muted_until)?;
    if matches!(w.channel().kind(), ChannelKind::Direct | ChannelKind::Group) {
        g.brake(cx.me, w.channel())?;
    }
    g.take_send(&cx.me.id)?;
    let pending = g.store.queue_write(w).await?;
    Ok(Box::pin(async move {
        let r = timed("write", pending).await?;
        metrics::histogram!(m::SEND_ACK_SECONDS).record(started.elapsed().as_secs_f64());
        Ok(Ack { seq: Some(r.entry.seq), duplicate: r.duplicate, ..ack })
    }))
}

/// Decides `create_thread`.
pub fn decide_thread(
    cx: Ctx<'_>,
    a: &Access,
    channel: ChannelId,
    client_id: String,
    title: String,
    body: String,
) -> Result<Write, CmdError> {
    if !a.create_thread {
        return Err(forbidden("only teachers and staff open threads"));
    }
    Ok(Write::Post {
        channel,
        kind: EntryKind::Thread,
        author: cx.me.id.clone(),
        client_id,
        body,
        title: Some(title),
        thread: None,
        reply_to: None,
        respect_lock: false,
    })
}

/// `create_thread`.
pub async fn create_thread(
    g: &Gateway,
    cx: Ctx<'_>,
    ack: Ack,
    channel: ChannelId,
    client_id: String,
    title: String,
    body: String,
) -> Result<Ack, CmdError> {
    check_client_id(&client_id)?;
    check_text("title", &title, MAX_TITLE_BYTES)?;
    check_text("body", &body, g.cfg.max_body_bytes)?;
    if channel.kind() != ChannelKind::Forum {
        return Err(bad("threads exist only in forums"));
    }
    let a = access::of(g, cx, &channel).await?;
    let w = decide_thread(cx, &a, channel, client_id, title, body)?;
    g.take_send(&cx.me.id)?;
    let r = timed("write", g.store.write(w)).await?;
    Ok(Ack { seq: Some(r.entry.seq), duplicate: r.duplicate, ..ack })
}

/// Decides `edit` (that only the author edits is the store's rule).
pub fn decide_edit(cx: Ctx<'_>, a: &Access, channel: ChannelId, seq: Seq, body: String) -> Result<Write, CmdError> {
    if !a.post {
        return Err(may_not_post());
    }
    Ok(Write::Edit { channel, author: cx.me.id.clone(), target: seq, body })
}

/// `edit`.
pub async fn edit(
    g: &Gateway,
    cx: Ctx<'_>,
    ack: Ack,
    channel: ChannelId,
    seq: Seq,
    body: String,
) -> Result<Ack, CmdError> {
    check_text("body", &body, g.cfg.max_body_bytes)?;
    let a = access::of(g, cx, &channel).await?;
    let w = decide_edit(cx, &a, channel, seq, body)?;
    g.take_send(&cx.me.id)?;
    let r = timed("write", g.store.write(w)).await?;
    Ok(Ack { seq: Some(r.entry.seq), ..ack })
}

/// Decides `delete`: anyone who sees the channel may ask; the store lets the author, or
/// a moderator, delete.
pub fn decide_delete(cx: Ctx<'_>, a: &Access, channel: ChannelId, seq: Seq) -> Write {
    Write::Delete { channel, author: cx.me.id.clone(), target: seq, moderator: a.moderate }
}

/// `delete`. A moderator deleting someone else's post is recorded in the audit trail,
/// with the post's original content.
pub async fn delete(g: &Gateway, cx: Ctx<'_>, ack: Ack, channel: ChannelId, seq: Seq) -> Result<Ack, CmdError> {
    let a = access::of(g, cx, &channel).await?;
    let before = if a.moderate { timed("entry", g.store.entry(&channel, seq)).await? } else { None };
    let w = decide_delete(cx, &a, channel.clone(), seq);
    let r = timed("write", g.store.write(w)).await?;
    if let Some(e) = before.filter(|e| e.author != cx.me.id) {
        let mut entry =
            AuditEntry::new(cx.now_ms, &cx.me.school, &cx.me.id, "delete", "post of another deleted by a moderator");
        entry.channel = Some(channel);
        entry.seq = Some(seq);
        entry.subject = Some(e.author.clone());
        entry.original = Some(original_text(&e));
        audit::record(g, entry).await;
    }
    Ok(Ack { seq: Some(r.entry.seq), ..ack })
}

/// What an entry said, for the audit trail: its title and body.
pub fn original_text(e: &preau_proto::Entry) -> String {
    match (&e.title, &e.body) {
        (Some(t), Some(b)) => format!("{t}\n{b}"),
        (None, Some(b)) => b.clone(),
        (Some(t), None) => t.clone(),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use preau_directory::{Directory, demo};

    fn send(ch: ChannelId, thread: Option<Seq>, reply_to: Option<Seq>) -> Send {
        Send { channel: ch, client_id: "c1".into(), body: "bonjour".into(), thread, reply_to }
    }

    fn acc(post: bool, moderate: bool) -> Access {
        Access { read: true, post, create_thread: moderate, moderate, conv: None }
    }

    #[test]
    fn send_decisions() {
        let d = Directory::from_docs([demo::demo_doc()]).expect("demo");
        let me = d.user("e001").expect("pupil");
        let cx = Ctx { dir: &d, me, now_ms: 1_000_000 };
        let forum = ChannelId::forum("0750001A", "6A");
        let dm = ChannelId::direct("e001", "e002");
        let code = |r: Result<Write, CmdError>| r.map(|_| ()).map_err(|e| e.code);
        type Row<'a> = (&'a str, Send, Access, i64, Result<(), ErrorCode>);
        let rows: Vec<Row> = vec![
            ("post in a thread", send(forum.clone(), Some(1), None), acc(true, false), 0, Ok(())),
            ("no thread in a forum", send(forum.clone(), None, None), acc(true, false), 0, Err(ErrorCode::BadRequest)),
            ("muted", send(forum.clone(), Some(1), None), acc(true, false), 2_000_000, Err(ErrorCode::Muted)),
            ("mute over", send(forum.clone(), Some(1), None), acc(true, false), 999_999, Ok(())),
            ("moderators are never muted", send(forum.clone(), Some(1), None), acc(true, true), 2_000_000, Ok(())),
            ("may not post", send(forum.clone(), Some(1), None), acc(false, false), 0, Err(ErrorCode::Forbidden)),
            ("thread outside forums", send(dm.clone(), Some(1), None), acc(true, false), 0, Err(ErrorCode::BadRequest)),
            ("reply outside forums", send(dm.clone(), None, Some(1)), acc(true, false), 0, Err(ErrorCode::BadRequest)),
            ("direct message", send(dm, None, None), acc(true, false), 0, Ok(())),
        ];
        for (what, s, a, muted, want) in rows {
            assert_eq!(code(decide_send(cx, &a, s, muted)), want, "{what}");
        }
        // Moderators ignore locks; others respect them.
        let w = decide_send(cx, &acc(true, true), send(forum.clone(), Some(1), None), 0).expect("ok");
        assert!(matches!(w, Write::Post { respect_lock: false, .. }));
        let w = decide_send(cx, &acc(true, false), send(forum, Some(1), None), 0).expect("ok");
        assert!(matches!(w, Write::Post { respect_lock: true, ref author, .. } if author == "e001"));
    }

    #[test]
    fn mute_is_read_only_when_it_matters() {
        let forum = ChannelId::forum("0750001A", "6A");
        assert!(needs_mute(&send(forum.clone(), Some(1), None), &acc(true, false)));
        assert!(!needs_mute(&send(forum.clone(), Some(1), None), &acc(true, true)));
        assert!(!needs_mute(&send(forum.clone(), None, None), &acc(true, false)));
        assert!(!needs_mute(&send(forum, Some(1), None), &acc(false, false)));
        assert!(!needs_mute(&send(ChannelId::announcements("0750001A", "6A"), None, None), &acc(true, false)));
    }

    #[test]
    fn thread_edit_delete_decisions() {
        let d = Directory::from_docs([demo::demo_doc()]).expect("demo");
        let cx = Ctx { dir: &d, me: d.user("t01").expect("teacher"), now_ms: 0 };
        let f = ChannelId::forum("0750001A", "6A");
        let t = |a: &Access| decide_thread(cx, a, f.clone(), "c".into(), "Titre".into(), "Texte".into());
        assert!(matches!(t(&acc(true, true)), Ok(Write::Post { kind: EntryKind::Thread, .. })));
        assert_eq!(t(&acc(true, false)).map(|_| ()).map_err(|e| e.code), Err(ErrorCode::Forbidden));
        assert!(decide_edit(cx, &acc(false, false), f.clone(), 3, "x".into()).is_err());
        assert!(matches!(
            decide_edit(cx, &acc(true, false), f.clone(), 3, "x".into()),
            Ok(Write::Edit { target: 3, .. })
        ));
        assert!(matches!(decide_delete(cx, &acc(true, true), f, 3), Write::Delete { moderator: true, .. }));
    }
}
