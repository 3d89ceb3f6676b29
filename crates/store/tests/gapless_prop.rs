//! Property test of the store's ordering contract: random interleavings of concurrent
//! writes to several channels — new posts, retries of earlier ones (same client id),
//! edits, deletes and thread changes, many of them refused by the entry rules — always
//! leave each channel's log gapless (1..=n), every accepted write at exactly one seq, every
//! retry answered with the first write's seq, every refusal without a seq, and the
//! commit hook called once per entry in seq order.

use futures_util::future::join_all;
use preau_proto::{ChannelId, EntryKind, Seq};
use preau_store::contract::HookLog;
use preau_store::{SqliteOptions, SqliteStore, Store, StoreError, Write};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

fn channels() -> [ChannelId; 3] {
    [
        ChannelId::forum("0750001A", "6A"),
        ChannelId::announcements("0750001A", "6A"),
        ChannelId::group("0123456789abcdef"),
    ]
}

#[derive(Clone, Debug)]
enum Op {
    Post { ch: usize, author: u8, cid: u8, thread: Option<Seq> },
    Thread { author: u8, cid: u8 },
    Edit { ch: usize, author: u8, target: Seq },
    Delete { ch: usize, author: u8, target: Seq, moderator: bool },
    SetThread { target: Seq, locked: bool },
}

fn op() -> impl Strategy<Value = Op> {
    let seq = || 1u64..25;
    prop_oneof![
        6 => (0usize..3, 0u8..3, 0u8..12, proptest::option::of(seq()))
            .prop_map(|(ch, author, cid, thread)| Op::Post { ch, author, cid, thread }),
        2 => (0u8..3, 0u8..12).prop_map(|(author, cid)| Op::Thread { author, cid }),
        2 => (0usize..3, 0u8..3, seq()).prop_map(|(ch, author, target)| Op::Edit { ch, author, target }),
        2 => (0usize..3, 0u8..3, seq(), any::<bool>())
            .prop_map(|(ch, author, target, moderator)| Op::Delete { ch, author, target, moderator }),
        1 => (seq(), any::<bool>()).prop_map(|(target, locked)| Op::SetThread { target, locked }),
    ]
}

fn write(o: &Op) -> Write {
    let ch = channels();
    let user = |a: u8| format!("u{a}");
    match *o {
        Op::Post { ch: c, author, cid, thread } => Write::Post {
            channel: ch[c].clone(),
            kind: EntryKind::Message,
            author: user(author),
            client_id: format!("m{cid}"),
            body: "texte".into(),
            title: None,
            // Threads exist only in the forum.
            thread: if c == 0 { thread } else { None },
            reply_to: None,
            respect_lock: true,
        },
        Op::Thread { author, cid } => Write::Post {
            channel: ch[0].clone(),
            kind: EntryKind::Thread,
            author: user(author),
            client_id: format!("t{cid}"),
            body: "sujet".into(),
            title: Some("Sujet".into()),
            thread: None,
            reply_to: None,
            respect_lock: false,
        },
        Op::Edit { ch: c, author, target } => {
            Write::Edit { channel: ch[c].clone(), author: user(author), target, body: "corrigé".into() }
        }
        Op::Delete { ch: c, author, target, moderator } => {
            Write::Delete { channel: ch[c].clone(), author: user(author), target, moderator }
        }
        Op::SetThread { target, locked } => Write::ThreadState {
            channel: ch[0].clone(),
            author: "t01".into(),
            thread: target,
            locked: Some(locked),
            pinned: None,
        },
    }
}

async fn run(ops: Vec<Op>, waves: Vec<usize>, shared: bool) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = HookLog::default();
    let mut opts = SqliteOptions::new(dir.path().join("preau.db"));
    opts.shared = shared;
    opts.max_batch = 4;
    let store = Arc::new(SqliteStore::open(opts, log.hook()).expect("open"));
    // Writes go in waves of concurrent submissions, so batches and refusals interleave.
    let mut results = Vec::new();
    let mut rest = ops.as_slice();
    for w in waves.into_iter().chain(std::iter::repeat(4)) {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at(w.clamp(1, rest.len()));
        rest = later;
        let wave = now.iter().map(|o| {
            let s = store.clone();
            let w = write(o);
            async move { (w.clone(), s.write(w).await) }
        });
        results.extend(join_all(wave).await);
    }
    let mut accepted: HashMap<ChannelId, Vec<Seq>> = HashMap::new();
    let mut first_of: HashMap<(ChannelId, String, String), Seq> = HashMap::new();
    for (w, r) in &results {
        match r {
            Ok(a) if !a.duplicate => {
                accepted.entry(a.channel.clone()).or_default().push(a.entry.seq);
                if let Write::Post { author, client_id, .. } = w {
                    let fresh = first_of.insert((a.channel.clone(), author.clone(), client_id.clone()), a.entry.seq);
                    prop_assert!(fresh.is_none(), "a post stored twice: {w:?}");
                }
            }
            Ok(_) => {}
            Err(StoreError::Unavailable(e)) => return Err(TestCaseError::fail(format!("store failed: {e}"))),
            Err(_) => {}
        }
    }
    for (w, r) in &results {
        if let (Ok(a), Write::Post { author, client_id, .. }) = (r, w)
            && a.duplicate
        {
            let first = first_of.get(&(a.channel.clone(), author.clone(), client_id.clone()));
            prop_assert_eq!(first, Some(&a.entry.seq), "a retry answers with the first write's seq");
        }
    }
    for ch in channels() {
        let (entries, more) = store.history(&ch, Some(0), None, 1000).await.expect("history");
        prop_assert!(!more);
        let seqs: Vec<Seq> = entries.iter().map(|e| e.seq).collect();
        let want: Vec<Seq> = (1..=seqs.len() as Seq).collect();
        prop_assert_eq!(&seqs, &want, "gapless in {}", ch);
        let mut acked = accepted.remove(&ch).unwrap_or_default();
        acked.sort_unstable();
        prop_assert_eq!(&acked, &want, "every accepted write of {} at one seq", ch);
        prop_assert_eq!(log.seqs_when(&ch, want.len()).await, want, "the hook saw {}'s entries once, in order", ch);
        let unique: HashSet<Seq> = seqs.iter().copied().collect();
        prop_assert_eq!(unique.len(), seqs.len());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn sequences_stay_gapless_under_random_interleavings(
        ops in proptest::collection::vec(op(), 1..80),
        waves in proptest::collection::vec(1usize..12, 0..20),
        shared in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(run(ops, waves, shared))?;
    }
}
