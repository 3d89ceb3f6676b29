//! The entry rules every backend applies, written once: which entries a write looks at,
//! whether it may be applied (thread exists and is open, reply in the same thread, only
//! the author edits, the author or a moderator deletes), and the log entry it appends.
//!
//! A backend gathers the entries named by [`targets`] (its IO), asks [`decide`] (pure),
//! then stores what it returns, allocating the seq. A refusal takes no seq. Idempotency
//! is keyed by [`idempotency_key`].

use crate::types::{StoreError, Write};
use preau_proto::{Entry, EntryKind, Seq};

/// The entries `w`'s rules need to see, by seq.
pub fn targets(w: &Write) -> Vec<Seq> {
    match w {
        Write::Post { thread, reply_to, .. } => thread.iter().chain(reply_to.iter()).copied().collect(),
        Write::Edit { target, .. } | Write::Delete { target, .. } => vec![*target],
        Write::ThreadState { thread, .. } => vec![*thread],
        Write::Membership { .. } => Vec::new(),
    }
}

/// The key under which a post is stored once: `(channel, author, client_id)`.
pub fn idempotency_key(w: &Write) -> Option<(&str, &str, &str)> {
    match w {
        Write::Post { channel, author, client_id, .. } => Some((channel.as_str(), author, client_id)),
        _ => None,
    }
}

fn live_message(e: Option<&Entry>) -> Result<&Entry, StoreError> {
    e.filter(|e| matches!(e.kind, EntryKind::Message | EntryKind::Thread) && !e.deleted).ok_or(StoreError::NotFound)
}

fn live_thread(e: Option<&Entry>) -> Result<&Entry, StoreError> {
    e.filter(|e| e.kind == EntryKind::Thread && !e.deleted).ok_or(StoreError::NotFound)
}

fn bare(kind: EntryKind, author: &str, at: i64) -> Entry {
    Entry::new(0, kind, author, at)
}

/// Decides `w` against the entries it targets (`found(seq)` is the stored entry, if
/// any) and returns the entry to append (seq 0: the backend allocates it), stamped `at`.
pub fn decide<'a>(w: &Write, found: impl Fn(Seq) -> Option<&'a Entry>, at: i64) -> Result<Entry, StoreError> {
    match w {
        Write::Post { kind, author, client_id, body, title, thread, reply_to, respect_lock, .. } => {
            if let Some(t) = thread {
                let te = live_thread(found(*t))?;
                if *respect_lock && te.locked == Some(true) {
                    return Err(StoreError::Locked);
                }
            }
            if let Some(r) = reply_to {
                let re = live_message(found(*r))?;
                let re_thread = if re.kind == EntryKind::Thread { Some(re.seq) } else { re.thread };
                if re_thread != *thread {
                    return Err(StoreError::Invalid("reply_to is in another thread"));
                }
            }
            let mut e = bare(*kind, author, at);
            e.body = Some(body.clone());
            e.title = title.clone();
            e.thread = *thread;
            e.reply_to = *reply_to;
            e.client_id = Some(client_id.clone());
            if *kind == EntryKind::Thread {
                e.locked = Some(false);
                e.pinned = Some(false);
            }
            Ok(e)
        }
        Write::Edit { author, target, body, .. } => {
            let t = live_message(found(*target))?;
            if t.author != *author {
                return Err(StoreError::NotAuthor);
            }
            let mut e = bare(EntryKind::Edit, author, at);
            e.target = Some(*target);
            e.body = Some(body.clone());
            Ok(e)
        }
        Write::Delete { author, target, moderator, .. } => {
            // A recording listed in the announcements is taken down as a message is.
            let t = found(*target)
                .filter(|e| {
                    matches!(e.kind, EntryKind::Message | EntryKind::Thread | EntryKind::Recording) && !e.deleted
                })
                .ok_or(StoreError::NotFound)?;
            if t.author != *author && !moderator {
                return Err(StoreError::NotAuthor);
            }
            let mut e = bare(EntryKind::Delete, author, at);
            e.target = Some(*target);
            Ok(e)
        }
        Write::ThreadState { author, thread, locked, pinned, .. } => {
            let t = live_thread(found(*thread))?;
            let mut e = bare(EntryKind::ThreadState, author, at);
            e.target = Some(*thread);
            e.locked = Some(locked.or(t.locked).unwrap_or(false));
            e.pinned = Some(pinned.or(t.pinned).unwrap_or(false));
            Ok(e)
        }
        Write::Membership { author, members, joined, .. } => {
            let mut e = bare(EntryKind::Membership, author, at);
            e.members = members.clone();
            e.joined = Some(*joined);
            Ok(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use preau_proto::ChannelId;

    fn msg(seq: Seq, kind: EntryKind, author: &str, thread: Option<Seq>) -> Entry {
        let mut e = bare(kind, author, 1);
        e.seq = seq;
        e.thread = thread;
        if kind == EntryKind::Thread {
            e.locked = Some(false);
            e.pinned = Some(false);
        }
        e
    }

    fn post(thread: Option<Seq>, reply_to: Option<Seq>, respect_lock: bool) -> Write {
        Write::Post {
            channel: ChannelId::forum("0750001A", "6A"),
            kind: EntryKind::Message,
            author: "e001".into(),
            client_id: "c1".into(),
            body: "bonjour".into(),
            title: None,
            thread,
            reply_to,
            respect_lock,
        }
    }

    /// Seq 1: open thread by t01; 2: post by e001 in it; 3: locked thread; 4: deleted
    /// post; 5: post by e002 in thread 3.
    fn log() -> Vec<Entry> {
        let mut locked = msg(3, EntryKind::Thread, "t01", None);
        locked.locked = Some(true);
        let mut deleted = msg(4, EntryKind::Message, "e001", Some(1));
        deleted.deleted = true;
        vec![
            msg(1, EntryKind::Thread, "t01", None),
            msg(2, EntryKind::Message, "e001", Some(1)),
            locked,
            deleted,
            msg(5, EntryKind::Message, "e002", Some(3)),
        ]
    }

    fn run(w: &Write) -> Result<Entry, StoreError> {
        let l = log();
        decide(w, |s| l.iter().find(|e| e.seq == s), 42)
    }

    #[test]
    fn the_rules_table() {
        let edit = |author: &str, target| Write::Edit {
            channel: ChannelId::forum("0750001A", "6A"),
            author: author.into(),
            target,
            body: "corrigé".into(),
        };
        let delete = |author: &str, target, moderator| Write::Delete {
            channel: ChannelId::forum("0750001A", "6A"),
            author: author.into(),
            target,
            moderator,
        };
        let state = |thread| Write::ThreadState {
            channel: ChannelId::forum("0750001A", "6A"),
            author: "t01".into(),
            thread,
            locked: Some(true),
            pinned: None,
        };
        let rows: Vec<(&str, Write, Result<(), StoreError>)> = vec![
            ("post in an open thread", post(Some(1), None, true), Ok(())),
            ("post in a locked thread", post(Some(3), None, true), Err(StoreError::Locked)),
            ("moderator posts in a locked thread", post(Some(3), None, false), Ok(())),
            ("post in a missing thread", post(Some(9), None, true), Err(StoreError::NotFound)),
            ("a message is not a thread", post(Some(2), None, true), Err(StoreError::NotFound)),
            ("reply in the same thread", post(Some(1), Some(2), true), Ok(())),
            ("reply to the thread itself", post(Some(1), Some(1), true), Ok(())),
            (
                "reply across threads",
                post(Some(1), Some(5), false),
                Err(StoreError::Invalid("reply_to is in another thread")),
            ),
            ("reply to a deleted post", post(Some(1), Some(4), true), Err(StoreError::NotFound)),
            ("author edits", edit("e001", 2), Ok(())),
            ("someone else edits", edit("e002", 2), Err(StoreError::NotAuthor)),
            ("edit a deleted post", edit("e001", 4), Err(StoreError::NotFound)),
            ("author deletes", delete("e001", 2, false), Ok(())),
            ("someone else deletes", delete("e002", 2, false), Err(StoreError::NotAuthor)),
            ("moderator deletes", delete("t01", 2, true), Ok(())),
            ("delete twice", delete("e001", 4, false), Err(StoreError::NotFound)),
            ("lock a thread", state(1), Ok(())),
            ("lock a message", state(2), Err(StoreError::NotFound)),
        ];
        for (what, w, want) in rows {
            assert_eq!(run(&w).map(|_| ()), want, "{what}");
        }
    }

    #[test]
    fn entries_carry_what_was_decided() {
        let e = run(&post(Some(1), Some(2), true)).expect("post");
        assert_eq!((e.seq, e.at, e.thread, e.reply_to), (0, 42, Some(1), Some(2)));
        assert_eq!(e.client_id.as_deref(), Some("c1"));
        let w = Write::ThreadState {
            channel: ChannelId::forum("0750001A", "6A"),
            author: "t01".into(),
            thread: 3,
            locked: None,
            pinned: Some(true),
        };
        let e = run(&w).expect("state");
        // Unchanged fields keep their stored value.
        assert_eq!((e.locked, e.pinned, e.target), (Some(true), Some(true), Some(3)));
        assert_eq!(targets(&post(Some(1), Some(2), true)), vec![1, 2]);
        assert_eq!(idempotency_key(&post(None, None, true)), Some(("forum:0750001A:6A", "e001", "c1")));
    }
}
