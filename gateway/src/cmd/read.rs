//! Reading: `sync` (what changed since the client's positions), `history` (pages of a
//! channel), `mark_read`, and `receipts` (who read a message, for its author).

use super::access::{self, info};
use super::error::{bad, forbidden};
use super::{Access, CmdError, Ctx};
use crate::service::{Gateway, timed};
use preau_proto::{Ack, ChannelId, ChannelKind, Entry, EntryKind, ErrorCode, Position, Receipt, Seq};
use std::collections::{HashMap, HashSet};

/// Most entries per page of history or sync.
pub const MAX_PAGE: u32 = 200;

/// Most bytes of entries in one answer (their JSON size, which bounds MessagePack's too).
/// Well under what the WebSocket layer lets a socket hold (`http::WS_MAX_WRITE_BUFFER`,
/// 1 MiB): 130 messages at the 8 KiB body limit used to exceed it and drop the
/// connection on every resume.
pub const MAX_REPLY_BYTES: usize = 512 * 1024;

/// The JSON size of an entry, counted without building it.
pub fn json_size(e: &Entry) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing to a counter cannot fail; an entry that could not be encoded counts as large.
    if serde_json::to_writer(&mut c, e).is_err() {
        return MAX_REPLY_BYTES;
    }
    c.0
}

/// Cuts a page to `budget` bytes: keeps the oldest entries (`keep_newest` false, paging
/// forward) or the newest (paging back), at least one. Returns the page, whether it was
/// cut, and the bytes left.
pub fn fit(mut entries: Vec<Entry>, budget: usize, keep_newest: bool) -> (Vec<Entry>, bool, usize) {
    let sizes: Vec<usize> = entries.iter().map(json_size).collect();
    let mut used = 0;
    let mut n = 0;
    let order: Box<dyn Iterator<Item = &usize>> =
        if keep_newest { Box::new(sizes.iter().rev()) } else { Box::new(sizes.iter()) };
    for sz in order {
        if n > 0 && used + sz > budget {
            break;
        }
        used += sz;
        n += 1;
    }
    let cut = n < entries.len();
    if keep_newest {
        entries.drain(..entries.len() - n);
    } else {
        entries.truncate(n);
    }
    (entries, cut, budget.saturating_sub(used))
}

/// A page size from the client's `limit`: [`MAX_PAGE`] when absent; `bad_request` outside
/// 1..=MAX_PAGE (as documented), rather than a silent clamp.
pub fn page_limit(limit: Option<u32>) -> Result<u32, CmdError> {
    match limit {
        None => Ok(MAX_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(bad(format!("`limit` is 1 to {MAX_PAGE}"))),
    }
}

/// The channels named in `positions` that the user no longer sees.
pub fn removed(positions: &[Position], seen: &[ChannelId]) -> Vec<ChannelId> {
    let seen: HashSet<&ChannelId> = seen.iter().collect();
    positions.iter().filter(|p| !seen.contains(&p.channel)).map(|p| p.channel.clone()).collect()
}

/// `sync`.
pub async fn sync(
    g: &Gateway,
    cx: Ctx<'_>,
    ack: Ack,
    positions: Vec<Position>,
    limit: Option<u32>,
) -> Result<Ack, CmdError> {
    let limit = page_limit(limit)?;
    let vis = access::visible(g, cx.dir, cx.me).await?;
    let chans: Vec<ChannelId> = vis.iter().map(|(c, _, _)| c.clone()).collect();
    let states = timed("summaries", g.store.summaries(&cx.me.id, &chans)).await?;
    let pos: HashMap<&ChannelId, Seq> = positions.iter().map(|p| (&p.channel, p.seq)).collect();
    let mut infos = Vec::with_capacity(vis.len());
    // One budget for the whole answer: a channel past it gets no entries and `more`, and
    // the client pages it with `history`.
    let mut budget = MAX_REPLY_BYTES.saturating_sub(vis.len() * 512);
    for ((ch, title, a), st) in vis.iter().zip(states.iter()) {
        let mut info = info(ch, title.clone(), a, st);
        if let Some(after) = pos.get(ch).copied()
            && after < st.last_seq
        {
            if budget < 16 * 1024 {
                info.more = true;
            } else {
                let (entries, more) = timed("history", g.store.history(ch, Some(after), None, limit)).await?;
                let (entries, cut, left) = fit(entries, budget, false);
                budget = left;
                info.entries = entries;
                info.more = more || cut;
            }
        }
        infos.push(info);
    }
    let suspension = g.suspensions().info(&cx.me.school);
    Ok(Ack { channels: infos, removed: removed(&positions, &chans), suspension, ..ack })
}

/// `history`.
pub async fn history(
    g: &Gateway,
    cx: Ctx<'_>,
    ack: Ack,
    channel: ChannelId,
    after: Option<Seq>,
    before: Option<Seq>,
    limit: Option<u32>,
) -> Result<Ack, CmdError> {
    if after.is_some() && before.is_some() {
        return Err(bad("give `after` or `before`, not both"));
    }
    let limit = page_limit(limit)?;
    access::of(g, cx, &channel).await?;
    let (entries, more) = timed("history", g.store.history(&channel, after, before, limit)).await?;
    // Paging back (`before`) keeps the newest of the page, forward the oldest.
    let (entries, cut, _) = fit(entries, MAX_REPLY_BYTES, before.is_some());
    Ok(Ack { entries, more: more || cut, ..ack })
}

/// `mark_read`.
pub async fn mark_read(g: &Gateway, cx: Ctx<'_>, ack: Ack, channel: ChannelId, seq: Seq) -> Result<Ack, CmdError> {
    access::of(g, cx, &channel).await?;
    let s = timed("mark_read", g.store.mark_read(&cx.me.id, &channel, seq)).await?;
    Ok(Ack { seq: Some(s), ..ack })
}

/// Decides `receipts`: who should have read `entry` (the readers whose markers the
/// author sees), or why the asker may not see them. Read state is personal data of
/// pupils and parents: only the message's author sees it, not other teachers of the
/// class, staff or admins, though they moderate the channel.
pub fn receipt_readers(
    cx: Ctx<'_>,
    a: &Access,
    channel: &ChannelId,
    entry: Option<Entry>,
) -> Result<Vec<String>, CmdError> {
    let Some(entry) = entry.filter(|e| matches!(e.kind, EntryKind::Message | EntryKind::Thread)) else {
        return Err(CmdError::new(ErrorCode::NotFound, "no such message"));
    };
    if entry.author != cx.me.id {
        return Err(forbidden("read receipts are for the message's author"));
    }
    let mut readers: Vec<String> = match (&a.conv, channel.school_class().and_then(|(s, c)| cx.dir.class(s, c))) {
        (Some(conv), _) => conv.members.clone(),
        (None, Some(class)) => {
            let mut v: Vec<String> = class.pupils.iter().cloned().collect();
            if channel.kind() == ChannelKind::Announcements {
                for p in &class.pupils {
                    if let Some(u) = cx.dir.user(p) {
                        v.extend(u.parents.iter().cloned());
                    }
                }
            }
            v
        }
        _ => Vec::new(),
    };
    readers.retain(|u| *u != entry.author);
    readers.sort();
    readers.dedup();
    Ok(readers)
}

/// `receipts`.
pub async fn receipts(g: &Gateway, cx: Ctx<'_>, ack: Ack, channel: ChannelId, seq: Seq) -> Result<Ack, CmdError> {
    let a = access::of(g, cx, &channel).await?;
    let entry = timed("entry", g.store.entry(&channel, seq)).await?;
    let readers = receipt_readers(cx, &a, &channel, entry)?;
    let marks = timed("read_markers", g.store.read_markers(&channel, &readers)).await?;
    let receipts = readers.into_iter().zip(marks).map(|(user, m)| Receipt { user, read: m >= seq }).collect();
    Ok(Ack { receipts, ..ack })
}

#[cfg(test)]
mod tests {
    use super::*;
    use preau_directory::{Directory, demo};

    fn entry_of(seq: Seq, body_len: usize) -> Entry {
        let mut e = Entry::new(seq, EntryKind::Message, "e001", 0);
        e.body = Some("é".repeat(body_len / 2));
        e
    }

    #[test]
    fn pages_are_cut_by_bytes_in_the_direction_of_paging() {
        let page: Vec<Entry> = (1..=150).map(|s| entry_of(s, 8000)).collect();
        let (fwd, cut, _) = fit(page.clone(), MAX_REPLY_BYTES, false);
        assert!(cut && fwd.len() < 70 && fwd.len() > 50, "{}", fwd.len());
        assert_eq!(fwd.first().map(|e| e.seq), Some(1), "forward keeps the oldest");
        assert!(fwd.iter().map(json_size).sum::<usize>() <= MAX_REPLY_BYTES);
        let (back, cut, _) = fit(page.clone(), MAX_REPLY_BYTES, true);
        assert!(cut);
        assert_eq!(back.last().map(|e| e.seq), Some(150), "backward keeps the newest");
        let (one, cut, left) = fit(page[..1].to_vec(), 10, false);
        assert_eq!((one.len(), cut, left), (1, false, 0), "at least one entry");
        let (small, cut, _) = fit(page[..3].to_vec(), MAX_REPLY_BYTES, false);
        assert_eq!((small.len(), cut), (3, false));
        // Escapes count: a body of quotes doubles in JSON.
        let mut q = entry_of(1, 0);
        q.body = Some("\"".repeat(1000));
        assert!(json_size(&q) > 2000);
    }

    #[test]
    fn page_limits_and_removed_channels() {
        assert_eq!(page_limit(None), Ok(MAX_PAGE));
        assert_eq!(page_limit(Some(1)), Ok(1));
        assert_eq!(page_limit(Some(MAX_PAGE)), Ok(MAX_PAGE));
        for bad in [0, MAX_PAGE + 1, 10_000] {
            assert_eq!(page_limit(Some(bad)).map_err(|e| e.code), Err(ErrorCode::BadRequest), "{bad}");
        }
        let p = |c: ChannelId| Position { channel: c, seq: 3 };
        let gone = removed(
            &[p(ChannelId::forum("0750001A", "6A")), p(ChannelId::forum("0750001A", "5B"))],
            &[ChannelId::forum("0750001A", "6A")],
        );
        assert_eq!(gone, vec![ChannelId::forum("0750001A", "5B")]);
    }

    #[test]
    fn receipts_are_for_the_author_only() {
        let d = Directory::from_docs([demo::demo_doc()]).expect("demo");
        let entry = |author: &str, kind| {
            let mut e = Entry::new(1, kind, author, 0);
            e.body = Some("x".into());
            e
        };
        let ann = ChannelId::announcements("0750001A", "6A");
        let teacher = Ctx { dir: &d, me: d.user("t01").expect("t"), now_ms: 0 };
        let pupil = Ctx { dir: &d, me: d.user("e001").expect("p"), now_ms: 0 };
        let moder = Access { read: true, post: true, create_thread: false, moderate: true, conv: None };
        let reader = Access { post: false, moderate: false, ..moder.clone() };
        let r = receipt_readers(teacher, &moder, &ann, Some(entry("t01", EntryKind::Message))).expect("author");
        // 25 pupils of 6A and their linked parents, never the author.
        assert!(r.len() > 25 && r.contains(&"e001".to_string()) && r.contains(&"pa001".to_string()));
        assert!(!r.contains(&"t01".to_string()));
        let code = |r: Result<Vec<String>, CmdError>| r.map_err(|e| e.code).err();
        let colleague = Ctx { dir: &d, me: d.user("t05").expect("t"), now_ms: 0 };
        assert_eq!(
            code(receipt_readers(colleague, &moder, &ann, Some(entry("t01", EntryKind::Message)))),
            Some(ErrorCode::Forbidden),
            "another moderator of the class"
        );
        assert_eq!(
            code(receipt_readers(pupil, &reader, &ann, Some(entry("t01", EntryKind::Message)))),
            Some(ErrorCode::Forbidden)
        );
        assert_eq!(code(receipt_readers(teacher, &moder, &ann, None)), Some(ErrorCode::NotFound));
        assert_eq!(
            code(receipt_readers(teacher, &moder, &ann, Some(entry("t01", EntryKind::Edit)))),
            Some(ErrorCode::NotFound)
        );
    }
}
