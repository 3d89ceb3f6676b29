//! The storage contract as executable checks. Every backend's tests call [`run_all`] on a
//! fresh store; a failed check panics with what broke.

use crate::{Committed, Erasure, NewConversation, Store, StoreError, Write};
use preau_proto::{ChannelId, EntryKind};
use std::sync::{Arc, Mutex};

/// Records what a store's commit hook saw, to check publication order.
#[derive(Clone, Default)]
pub struct HookLog(pub Arc<Mutex<Vec<Committed>>>);

impl HookLog {
    /// A hook appending to this log.
    pub fn hook(&self) -> crate::CommitHook {
        let log = self.0.clone();
        Box::new(move |c| {
            if let Ok(mut v) = log.lock() {
                v.push(c.clone());
            }
        })
    }

    /// Seqs published for `channel`, in publication order, once `n` of them are (the hook
    /// may run after the writes are answered), or after 10 s.
    pub async fn seqs_when(&self, channel: &ChannelId, n: usize) -> Vec<u64> {
        for _ in 0..1000 {
            let seqs = self.seqs(channel);
            if seqs.len() >= n {
                return seqs;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.seqs(channel)
    }

    /// Seqs published for `channel`, in publication order.
    pub fn seqs(&self, channel: &ChannelId) -> Vec<u64> {
        self.0
            .lock()
            .map(|v| {
                v.iter()
                    .filter_map(|c| match c {
                        Committed::Entry(a) if &a.channel == channel => Some(a.entry.seq),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A plain message post.
pub fn post(channel: &ChannelId, author: &str, client_id: &str, body: &str) -> Write {
    Write::Post {
        channel: channel.clone(),
        kind: EntryKind::Message,
        author: author.into(),
        client_id: client_id.into(),
        body: body.into(),
        title: None,
        thread: None,
        reply_to: None,
        respect_lock: true,
    }
}

/// Runs every check. `log` must be the log whose hook the store was opened with.
pub async fn run_all(store: Arc<dyn Store>, log: HookLog) {
    gapless_under_concurrency(store.clone(), &log).await;
    idempotent_posts(store.as_ref()).await;
    edits_and_deletes(store.as_ref()).await;
    forum_threads(store.as_ref()).await;
    read_markers_and_unread(store.as_ref()).await;
    history_paging(store.as_ref()).await;
    conversations(store.as_ref()).await;
    mutes_and_directory(store.as_ref()).await;
    records(store.as_ref()).await;
    leases(store.as_ref()).await;
}

/// Retention: messages written before the cutoff go, in bounded steps, except each
/// channel's last, emptied, so the channel's seq goes on; other prefixes are untouched.
pub async fn expiry(store: &dyn Store) {
    let old = ChannelId::forum("0750009Z", "x1");
    let other = ChannelId::forum("0750008Y", "x1");
    for i in 0..7 {
        store.write(post(&old, "u1", &format!("o{i}"), "ancien message")).await.expect("post");
    }
    store.write(post(&other, "u1", "k", "autre école")).await.expect("post");
    let x = |limit| crate::Expiry { prefix: "forum:0750009Z:".into(), before_ms: i64::MAX, limit };
    let mut calls = 0;
    while !store.expire(x(3)).await.expect("expire").done {
        calls += 1;
        assert!(calls < 20, "expiry never finishes");
    }
    let (h, _) = store.history(&old, Some(0), None, 10).await.expect("history");
    assert_eq!(h.len(), 1, "only the last entry stays");
    assert!(h[0].seq == 7 && h[0].deleted && h[0].body.is_none() && h[0].author.is_empty(), "{:?}", h[0]);
    assert_eq!(store.write(post(&old, "u2", "n", "nouveau")).await.expect("post").entry.seq, 8, "the seq goes on");
    assert_eq!(store.history(&other, Some(0), None, 10).await.map(|h| h.0.len()), Ok(1), "another school's stays");
    // With a cutoff of "always", the old tombstone goes and the new last entry is emptied.
    assert_eq!(store.expire(x(3)).await.map(|r| r.rows), Ok(2));
}

/// A store opened with a backlog of 4: writes queued one after the other without waiting
/// (far faster than commits) are applied in the order queued, and those beyond the
/// backlog are refused `Overloaded` with nothing stored.
pub async fn small_backlog(store: &dyn Store) {
    let ch = ChannelId::group("burst");
    let mut pending = Vec::new();
    let mut refused = 0;
    for i in 0..300 {
        match store.queue_write(post(&ch, "u", &format!("k{i}"), "m")).await {
            Ok(p) => pending.push(p),
            Err(StoreError::Overloaded) => refused += 1,
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    let mut seqs = Vec::new();
    for p in pending {
        seqs.push(p.await.expect("queued write").entry.seq);
    }
    assert!(refused > 0, "a backlog of 4 refuses some of 300 writes queued at once");
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "queued writes are applied in the order queued");
    let (h, _) = store.history(&ch, Some(0), None, 1000).await.expect("history");
    assert_eq!(h.len(), seqs.len(), "refused writes stored nothing");
}

/// One holder at a time; the holder renews; an expired lease passes on.
pub async fn leases(store: &dyn Store) {
    assert_eq!(store.try_lease("purge", "gw1", 1_000, 61_000).await, Ok(true));
    assert_eq!(store.try_lease("purge", "gw2", 2_000, 62_000).await, Ok(false), "held by gw1");
    assert_eq!(store.try_lease("purge", "gw1", 30_000, 90_000).await, Ok(true), "renewed");
    assert_eq!(store.try_lease("other", "gw2", 30_000, 90_000).await, Ok(true), "leases are apart");
    assert_eq!(store.try_lease("purge", "gw2", 90_001, 150_000).await, Ok(true), "expired: taken over");
    assert_eq!(store.try_lease("purge", "gw1", 100_000, 160_000).await, Ok(false));
}

/// A person's erasure (every backend): bounded steps
/// until done, a dry run that changes nothing, their direct conversation gone, their
/// shared posts pseudonymised (kept or emptied), their name out of membership entries,
/// their memberships, markers and mutes gone, and a second run finding nothing.
pub async fn erasure(store: &dyn Store) {
    let dm = ChannelId::direct("gone", "t1");
    let grp = ChannelId::group("erase-g");
    let forum = ChannelId::forum("0750001A", "erase-f");
    let nc = |ch: &ChannelId, members: &[&str]| NewConversation {
        channel: ch.clone(),
        title: "t".into(),
        creator: "gone".into(),
        client_id: Some(format!("k-{ch}")),
        members: members.iter().map(|s| (*s).to_owned()).collect(),
    };
    store.create_conversation(nc(&dm, &["gone", "t1"])).await.expect("dm");
    store.create_conversation(nc(&grp, &["gone", "p2", "t1"])).await.expect("group");
    for i in 0..4 {
        store.write(post(&dm, "gone", &format!("d{i}"), "Mon fils est malade")).await.expect("dm post");
    }
    store.write(post(&dm, "t1", "r", "Bon rétablissement")).await.expect("answer");
    let join =
        Write::Membership { channel: grp.clone(), author: "t1".into(), members: vec!["gone".into()], joined: true };
    store.write(join).await.expect("join entry");
    store.write(post(&grp, "gone", "g1", "Réunion jeudi")).await.expect("group post");
    let kept = store.write(post(&forum, "gone", "f1", "Ma réponse à l'exercice")).await.expect("forum").entry.seq;
    store.write(post(&forum, "gone2", "f2", "Autre réponse")).await.expect("forum 2");
    store.mark_read("gone", &forum, 2).await.expect("marker");
    store.set_mute(&forum, "gone", 5_000).await.expect("mute");

    // What a person's export reads: their entries by channel, paged, and their markers.
    let mut mine = Vec::new();
    let mut after = None;
    loop {
        let page = store.authored("gone", after.clone(), 2).await.expect("authored");
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some((last.0.clone(), last.1.seq));
        mine.extend(page.into_iter().map(|(c, e)| (c.to_string(), e.seq)));
    }
    let want: Vec<(String, u64)> =
        (1..=4).map(|s| (dm.to_string(), s)).chain([(forum.to_string(), kept)]).chain([(grp.to_string(), 2)]).collect();
    let mut sorted = want.clone();
    sorted.sort();
    assert_eq!(mine, sorted, "every entry of theirs, by channel then seq");
    assert_eq!(store.read_markers_of("gone").await, Ok(vec![(forum.clone(), 2)]));
    let e = |user: &str, keep: bool, limit: u32, dry_run: bool| Erasure {
        user: user.into(),
        pseudonym: format!("ancien-{user}"),
        keep_shared_posts: keep,
        direct: if user == "gone" { vec![dm.clone()] } else { Vec::new() },
        limit,
        dry_run,
    };
    let dry = store.erase_user(e("gone", true, 3, true)).await.expect("dry run");
    assert!(dry.done && dry.rows >= 12, "a dry run counts everything: {dry:?}");
    assert_eq!(store.history(&dm, Some(0), None, 10).await.map(|h| h.0.len()), Ok(5), "the dry run changed nothing");
    let mut calls = 0;
    let mut rows = 0;
    loop {
        calls += 1;
        assert!(calls < 50, "erasure never finishes");
        let step = store.erase_user(e("gone", true, 3, false)).await.expect("erase");
        assert!(step.rows <= 3 + 5, "a step is bounded: {step:?}");
        rows += step.rows;
        if step.done {
            break;
        }
    }
    assert!(
        calls > 1 && rows >= dry.rows,
        "bounded steps ({calls}) removed what the dry run counted ({rows} of {})",
        dry.rows
    );
    assert_eq!(store.conversation(&dm).await, Ok(None), "the direct conversation is gone");
    assert_eq!(store.history(&dm, Some(0), None, 10).await.map(|h| h.0.len()), Ok(0));
    let f = store.entry(&forum, kept).await.expect("read").expect("kept");
    assert_eq!(
        (f.author.as_str(), f.body.as_deref(), f.client_id.as_deref()),
        ("ancien-gone", Some("Ma réponse à l'exercice"), None)
    );
    let g = store.conversation(&grp).await.expect("read").expect("group stays");
    assert_eq!(g.members, vec!["p2".to_owned(), "t1".to_owned()]);
    assert_eq!(g.creator, "ancien-gone");
    let (h, _) = store.history(&grp, Some(0), None, 10).await.expect("history");
    assert!(h.iter().all(|e| e.author != "gone" && !e.members.contains(&"gone".to_owned())), "{h:?}");
    assert!(h.iter().any(|e| e.members.contains(&"ancien-gone".to_owned())), "membership entries name the pseudonym");
    assert_eq!(store.read_markers(&forum, &["gone".into()]).await, Ok(vec![0]));
    assert_eq!(store.muted_until(&forum, "gone").await, Ok(0));
    assert_eq!(store.conversations_of("gone").await, Ok(Vec::new()));
    let again = store.erase_user(e("gone", true, 100, false)).await.expect("again");
    assert_eq!(again, crate::Erased { rows: 0, done: true }, "idempotent");
    // A person who objected: their shared posts lose their text.
    while !store.erase_user(e("gone2", false, 100, false)).await.expect("erase 2").done {}
    let f2 = store.entry(&forum, kept + 1).await.expect("read").expect("stays");
    assert!(f2.deleted && f2.body.is_none() && f2.author == "ancien-gone2", "{f2:?}");
}

/// Many concurrent writers on one channel get 1..=n without gaps, published in order.
pub async fn gapless_under_concurrency(store: Arc<dyn Store>, log: &HookLog) {
    let ch = ChannelId::group("gapless");
    let mut tasks = Vec::new();
    for t in 0..8 {
        let s = store.clone();
        let ch = ch.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..50 {
                let a = s.write(post(&ch, &format!("u{t}"), &format!("c{i}"), "x")).await.expect("write");
                seqs.push(a.entry.seq);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    all.sort_unstable();
    assert_eq!(all, (1..=400).collect::<Vec<u64>>(), "seqs are gapless and unique");
    assert_eq!(log.seqs_when(&ch, 400).await, (1..=400).collect::<Vec<u64>>(), "published in seq order");
}

/// A retried post is acknowledged with the first seq and stored once.
pub async fn idempotent_posts(store: &dyn Store) {
    let ch = ChannelId::group("idem");
    let a = store.write(post(&ch, "u1", "k1", "hello")).await.expect("first");
    let b = store.write(post(&ch, "u1", "k1", "hello")).await.expect("retry");
    assert!(!a.duplicate && b.duplicate);
    assert_eq!(a.entry.seq, b.entry.seq);
    let c = store.write(post(&ch, "u2", "k1", "other author, same key")).await.expect("other");
    assert_eq!(c.entry.seq, 2, "keys are per author");
    let (h, _) = store.history(&ch, Some(0), None, 10).await.expect("history");
    assert_eq!(h.len(), 2);
}

/// Authors edit and delete their own messages; moderators delete any.
pub async fn edits_and_deletes(store: &dyn Store) {
    let ch = ChannelId::group("edits");
    let m = store.write(post(&ch, "u1", "k", "first")).await.expect("post").entry.seq;
    let edit = |author: &str, body: &str| Write::Edit {
        channel: ch.clone(),
        author: author.into(),
        target: m,
        body: body.into(),
    };
    assert_eq!(store.write(edit("u2", "hijack")).await, Err(StoreError::NotAuthor));
    let e = store.write(edit("u1", "second")).await.expect("edit");
    assert_eq!((e.entry.kind, e.entry.target), (EntryKind::Edit, Some(m)));
    let cur = store.entry(&ch, m).await.expect("read").expect("exists");
    assert_eq!((cur.body.as_deref(), cur.edited), (Some("second"), true));
    let del = |author: &str, moderator: bool| Write::Delete {
        channel: ch.clone(),
        author: author.into(),
        target: m,
        moderator,
    };
    assert_eq!(store.write(del("u2", false)).await, Err(StoreError::NotAuthor));
    store.write(del("t1", true)).await.expect("moderator deletes");
    let cur = store.entry(&ch, m).await.expect("read").expect("exists");
    assert!(cur.deleted && cur.body.is_none());
    assert_eq!(store.write(del("u1", false)).await, Err(StoreError::NotFound), "already deleted");
    assert_eq!(store.write(edit("u1", "x")).await, Err(StoreError::NotFound));
    let (h, _) = store.history(&ch, Some(0), None, 10).await.expect("history");
    assert_eq!(h.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3], "refused writes took no seq");
}

/// Threads, locks and replies in a forum.
pub async fn forum_threads(store: &dyn Store) {
    let ch = ChannelId::forum("0750001A", "f1");
    let thread = Write::Post {
        channel: ch.clone(),
        kind: EntryKind::Thread,
        author: "t1".into(),
        client_id: "th".into(),
        body: "Exercices".into(),
        title: Some("Chapitre 3".into()),
        thread: None,
        reply_to: None,
        respect_lock: true,
    };
    let t = store.write(thread).await.expect("thread").entry.seq;
    let reply = |author: &str, cid: &str, thread: u64, reply_to: Option<u64>, respect_lock: bool| Write::Post {
        channel: ch.clone(),
        kind: EntryKind::Message,
        author: author.into(),
        client_id: cid.into(),
        body: "réponse".into(),
        title: None,
        thread: Some(thread),
        reply_to,
        respect_lock,
    };
    let p = store.write(reply("e1", "r1", t, None, true)).await.expect("post").entry.seq;
    store.write(reply("e2", "r2", t, Some(p), true)).await.expect("reply to post");
    assert_eq!(store.write(reply("e2", "r3", 99, None, true)).await, Err(StoreError::NotFound), "no such thread");
    assert_eq!(
        store.write(reply("e2", "r4", p, None, true)).await,
        Err(StoreError::NotFound),
        "a post is not a thread"
    );
    let lock =
        Write::ThreadState { channel: ch.clone(), author: "t1".into(), thread: t, locked: Some(true), pinned: None };
    let st = store.write(lock).await.expect("lock");
    assert_eq!((st.entry.locked, st.entry.pinned), (Some(true), Some(false)));
    assert_eq!(store.write(reply("e1", "r5", t, None, true)).await, Err(StoreError::Locked));
    store.write(reply("t1", "r6", t, None, false)).await.expect("moderators post in locked threads");
}

/// Markers only move forward, are clamped to the last seq, and unread counts follow.
pub async fn read_markers_and_unread(store: &dyn Store) {
    let ch = ChannelId::announcements("0750001A", "c1");
    for i in 0..5 {
        store.write(post(&ch, "t1", &format!("a{i}"), "annonce")).await.expect("post");
    }
    let s = store.summaries("p1", std::slice::from_ref(&ch)).await.expect("summary");
    assert_eq!(s[0].unread, 5);
    assert_eq!(store.mark_read("p1", &ch, 3).await, Ok(3));
    assert_eq!(store.mark_read("p1", &ch, 2).await, Ok(3), "markers do not go back");
    assert_eq!(store.mark_read("p1", &ch, 99).await, Ok(5), "clamped to the last seq");
    let s = store.summaries("p1", std::slice::from_ref(&ch)).await.expect("summary");
    assert_eq!((s[0].last_seq, s[0].read_seq, s[0].unread), (5, 5, 0));
    let author = store.summaries("t1", std::slice::from_ref(&ch)).await.expect("summary");
    assert_eq!(author[0].unread, 0, "one's own messages are not unread");
    assert_eq!(store.read_markers(&ch, &["p1".into(), "p2".into()]).await, Ok(vec![5, 0]));
}

/// Pages after and before a seq, with `more`.
pub async fn history_paging(store: &dyn Store) {
    let ch = ChannelId::group("paging");
    for i in 0..25 {
        store.write(post(&ch, "u", &format!("p{i}"), "m")).await.expect("post");
    }
    let (p1, more1) = store.history(&ch, Some(0), None, 10).await.expect("p1");
    let (p3, more3) = store.history(&ch, Some(20), None, 10).await.expect("p3");
    assert_eq!((p1.first().map(|e| e.seq), p1.len(), more1), (Some(1), 10, true));
    assert_eq!((p3.first().map(|e| e.seq), p3.len(), more3), (Some(21), 5, false));
    let (last, more) = store.history(&ch, None, None, 10).await.expect("latest");
    assert_eq!((last.first().map(|e| e.seq), last.last().map(|e| e.seq), more), (Some(16), Some(25), true));
    let (before, more) = store.history(&ch, None, Some(5), 10).await.expect("before");
    assert_eq!((before.len(), more), (4, false));
}

/// Conversations are created once, by channel or by (creator, client id).
pub async fn conversations(store: &dyn Store) {
    let dm = ChannelId::direct("a", "b");
    let nc = |ch: &ChannelId, cid: Option<&str>, members: &[&str]| NewConversation {
        channel: ch.clone(),
        title: "t".into(),
        creator: "a".into(),
        client_id: cid.map(Into::into),
        members: members.iter().map(|s| (*s).to_owned()).collect(),
    };
    let c1 = store.create_conversation(nc(&dm, None, &["a", "b"])).await.expect("dm");
    let c2 = store.create_conversation(nc(&dm, None, &["a", "b"])).await.expect("dm again");
    assert_eq!(c1, c2);
    let g = store.create_conversation(nc(&ChannelId::group("g1"), Some("k"), &["a", "c", "d"])).await.expect("g");
    let again = store.create_conversation(nc(&ChannelId::group("g2"), Some("k"), &["a"])).await.expect("g retry");
    assert_eq!(again.channel, g.channel, "same creator and key: same group");
    let of_a: Vec<String> =
        store.conversations_of("a").await.expect("of a").into_iter().map(|c| c.channel.to_string()).collect();
    assert_eq!(of_a, vec!["dm:a:b".to_owned(), "grp:g1".to_owned()]);
    let leave =
        Write::Membership { channel: g.channel.clone(), author: "c".into(), members: vec!["c".into()], joined: false };
    store.write(leave).await.expect("leave");
    let g = store.conversation(&g.channel).await.expect("read").expect("exists");
    assert_eq!(g.members, vec!["a".to_owned(), "d".to_owned()]);
    assert!(!store.has_posted(&dm, "b").await.expect("read"));
    store.write(post(&dm, "b", "x", "bonjour")).await.expect("post");
    assert!(store.has_posted(&dm, "b").await.expect("read"));
}

/// Mutes and saved directory documents.
pub async fn mutes_and_directory(store: &dyn Store) {
    let ch = ChannelId::forum("0750001A", "m1");
    assert_eq!(store.muted_until(&ch, "e1").await, Ok(0));
    store.set_mute(&ch, "e1", 1_000).await.expect("mute");
    assert_eq!(store.muted_until(&ch, "e1").await, Ok(1_000));
    store.set_mute(&ch, "e1", 0).await.expect("unmute");
    assert_eq!(store.muted_until(&ch, "e1").await, Ok(0));
    store.save_directory("S1", "{\"a\":1}".into()).await.expect("save");
    store.save_directory("S1", "{\"a\":2}".into()).await.expect("replace");
    assert_eq!(store.load_directories().await, Ok(vec!["{\"a\":2}".to_owned()]));
    assert_eq!(store.load_setting("suspensions").await, Ok(None));
    store.save_setting("suspensions", "{\"platform\":null}".into()).await.expect("setting");
    store.save_setting("suspensions", "{\"platform\":1}".into()).await.expect("replace");
    assert_eq!(store.load_setting("suspensions").await, Ok(Some("{\"platform\":1}".to_owned())));
    store.ping().await.expect("ping");
}

/// Records (audit entries, reports): put, replace, list from a time, retention.
pub async fn records(store: &dyn Store) {
    let rec = |id: &str, at_ms: i64, doc: &str| crate::Record {
        kind: "audit".into(),
        school: "S1".into(),
        id: id.into(),
        at_ms,
        doc: doc.into(),
    };
    for (id, at) in [("b", 2_000), ("a", 1_000), ("c", 3_000)] {
        store.put_record(rec(id, at, "{}")).await.expect("put");
    }
    store.put_record(crate::Record { school: "S2".into(), ..rec("x", 1_500, "{}") }).await.expect("other school");
    store.put_record(rec("b", 2_000, "{\"closed\":true}")).await.expect("replace");
    let ids = |v: Vec<crate::Record>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(store.records("audit", "S1", 0, 10).await.map(ids), Ok(vec!["a".into(), "b".into(), "c".into()]));
    assert_eq!(store.records("audit", "S1", 2_000, 1).await.map(ids), Ok(vec!["b".into()]));
    assert_eq!(store.record("audit", "S1", "b").await.map(|r| r.map(|r| r.doc)), Ok(Some("{\"closed\":true}".into())));
    assert_eq!(store.record("report", "S1", "b").await, Ok(None), "kinds are apart");
    store.delete_record("audit", "S1", "c").await.expect("delete");
    store.delete_record("audit", "S1", "nothing").await.expect("deleting what is not there");
    assert_eq!(store.record("audit", "S1", "c").await, Ok(None));
    store.put_record(rec("c", 3_000, "{}")).await.expect("put back");
    assert_eq!(store.purge_records("audit", 2_000).await, Ok(2), "a (S1) and x (S2)");
    assert_eq!(store.records("audit", "S1", 0, 10).await.map(ids), Ok(vec!["b".into(), "c".into()]));
}
