//! Push notifications through the ENT's back end. When a message reaches someone with
//! no open session anywhere (a parent whose phone app is closed), the node that stored it
//! tells the ENT's back end by a webhook (`--webhook-url`), which sends the push through
//! the ENT's own mobile app.
//!
//! - What is told: messages and threads in direct and group conversations, and
//!   announcements of a class (to its pupils, their parents and its teachers); not forum
//!   posts (their volume would drown the rest; the unread counts show them). Never the
//!   author.
//! - To whom: people with no session on any node, whose settings allow it now
//!   ([`NotifyPrefs`]: push off, or inside their quiet hours, means not told).
//! - How: events are batched (`--webhook-max-batch`, `--webhook-batch-ms`), each batch
//!   signed with HMAC-SHA256 under `--webhook-secret-file` and retried with growing delays
//!   until the receiver answers 2xx (about three minutes, then dropped and counted).
//!   Each event has a stable id, so a receiver that saw a batch twice can tell.
//!   Pending events are held in memory only: a node that dies loses them (these are
//!   notices of messages that are themselves stored; the unread counts remain).
//!
//! Who is told is decided without IO ([`recipients`], [`NotifyPrefs::wants`]); the task
//! here only gathers the facts (members, presence, settings) and sends.

use crate::service::Gateway;
use hmac::{Hmac, Mac};
use preau_directory::Directory;
use preau_directory::hours::DiscussionHours;
use preau_proto::{ChannelId, ChannelKind, EntryKind};
use preau_store::Appended;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Events waiting for the sender; beyond, the newest are dropped (and counted).
const QUEUE: usize = 100_000;
/// Entries waiting to be resolved into events.
pub const ENTRY_QUEUE: usize = 65_536;
/// Delays between the attempts of one batch.
const RETRIES: [u64; 8] = [1, 2, 4, 8, 16, 30, 60, 60];

/// A user's push-notification settings (the server API sets them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyPrefs {
    /// Whether to be told at all.
    #[serde(default = "yes")]
    pub push: bool,
    /// A window when nothing is pushed (e.g. 21:00 to 07:00, in a time zone).
    #[serde(default)]
    pub quiet_hours: Option<DiscussionHours>,
}

fn yes() -> bool {
    true
}

impl Default for NotifyPrefs {
    fn default() -> Self {
        NotifyPrefs { push: true, quiet_hours: None }
    }
}

impl NotifyPrefs {
    /// Whether a push may be sent at `utc_ms`.
    pub fn wants(&self, utc_ms: i64) -> bool {
        self.push && self.quiet_hours.as_ref().is_none_or(|q| q.check(utc_ms).is_err())
    }
}

/// The pupils, their parents and the teachers of a class (who read its announcements).
pub fn class_readers(dir: &Directory, school: &str, class: &str) -> Vec<String> {
    let Some(c) = dir.class(school, class) else { return Vec::new() };
    let mut out: Vec<String> = c.teachers.iter().chain(c.pupils.iter()).cloned().collect();
    for p in &c.pupils {
        if let Some(u) = dir.user(p) {
            out.extend(u.parents.iter().cloned());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Who is told of an entry, before presence and settings: the conversation's members
/// (`members`) or the class's readers, never the author; nobody for forums and for what
/// is not a message or a thread.
pub fn recipients(
    dir: &Directory,
    channel: &ChannelId,
    kind: EntryKind,
    author: &str,
    members: &[String],
) -> Vec<String> {
    if !matches!(kind, EntryKind::Message | EntryKind::Thread) {
        return Vec::new();
    }
    let mut who = match channel.kind() {
        ChannelKind::Direct | ChannelKind::Group => members.to_vec(),
        ChannelKind::Announcements => match channel.school_class() {
            Some((school, class)) => class_readers(dir, school, class),
            None => Vec::new(),
        },
        _ => Vec::new(),
    };
    who.retain(|u| u != author);
    who
}

/// Whether the webhook cares about an entry at all (cheap: on the store's thread).
pub fn interesting(a: &Appended) -> bool {
    !a.duplicate
        && matches!(a.entry.kind, EntryKind::Message | EntryKind::Thread)
        && matches!(a.channel.kind(), ChannelKind::Direct | ChannelKind::Group | ChannelKind::Announcements)
}

/// One notice, as the receiver gets it (docs/server-api.md).
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// `<channel>/<seq>/<user>`: the same event always has the same id.
    pub id: String,
    /// Who to tell.
    pub user: String,
    /// Their school.
    pub school: String,
    /// Where the message is.
    pub channel: ChannelId,
    /// Its seq there.
    pub seq: u64,
    /// `direct`, `group` or `announcements`.
    pub channel_kind: ChannelKind,
    /// Who wrote it (a user id, or `school:<uai>`).
    pub author: String,
    /// Their display name.
    pub author_name: String,
    /// When it was written, milliseconds since the epoch.
    pub at: i64,
    /// The start of the text, with `--webhook-previews` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
}

/// The signature header's value: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub fn sign(secret: &[u8], t: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// The webhook's settings.
#[derive(Clone)]
pub struct Settings {
    /// Where batches go.
    pub url: String,
    /// The HMAC key.
    pub secret: Vec<u8>,
    /// Most events per batch.
    pub max_batch: usize,
    /// Longest wait for a batch to fill.
    pub batch_wait: Duration,
    /// Whether events carry the start of the text.
    pub previews: bool,
}

/// Starts the webhook: entries from the commit hook (`rx`) are resolved into events and
/// sent in batches, until the gateway is gone.
pub fn start(g: &Arc<Gateway>, settings: Settings, rx: mpsc::Receiver<Appended>) {
    let (tx, events) = mpsc::channel(QUEUE);
    let client = match preau_ops::client::Client::new(g.cfg.http_ca.as_deref(), Duration::from_secs(10)) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook not started");
            return;
        }
    };
    tokio::spawn(resolve(Arc::downgrade(g), rx, tx, settings.previews));
    tokio::spawn(send(client, settings, events));
}

/// Turns entries into events for the people not connected anywhere.
async fn resolve(
    g: std::sync::Weak<Gateway>,
    mut rx: mpsc::Receiver<Appended>,
    tx: mpsc::Sender<Event>,
    previews: bool,
) {
    while let Some(a) = rx.recv().await {
        let Some(g) = g.upgrade() else { return };
        let members = match a.channel.kind() {
            ChannelKind::Direct | ChannelKind::Group => match g.store.conversation(&a.channel).await {
                Ok(Some(c)) => c.members,
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        let dir = g.dir();
        let who = recipients(&dir, &a.channel, a.entry.kind, &a.entry.author, &members);
        let away: Vec<String> = who.into_iter().filter(|u| !g.hub.online(u)).collect();
        if away.is_empty() {
            continue;
        }
        let elsewhere = g.bus.online_elsewhere(away.clone()).await;
        let now = g.clock.now_ms();
        let author_name = dir
            .user(&a.entry.author)
            .map(|u| u.name.clone())
            .or_else(|| dir.school(a.entry.author.strip_prefix("school:").unwrap_or("")).map(|s| s.name.clone()))
            .unwrap_or_default();
        for (i, user) in away.into_iter().enumerate() {
            if elsewhere.get(i).copied().unwrap_or(false) {
                continue;
            }
            let Some(rec) = dir.user(&user) else { continue };
            match g.notify_prefs(&rec.school, &user).await {
                Ok(p) if p.wants(now) => {}
                Ok(_) => {
                    metrics::counter!(crate::metrics::WEBHOOK_EVENTS, "outcome" => "not_wanted").increment(1);
                    continue;
                }
                // Settings unreadable now: better one push too many than a missed one.
                Err(_) => {}
            }
            let e = Event {
                id: format!("{}/{}/{}", a.channel, a.entry.seq, user),
                school: rec.school.clone(),
                user,
                channel: a.channel.clone(),
                seq: a.entry.seq,
                channel_kind: a.channel.kind(),
                author: a.entry.author.clone(),
                author_name: author_name.clone(),
                at: a.entry.at,
                preview: previews.then(|| a.entry.body.as_deref().unwrap_or("").chars().take(120).collect()),
            };
            if tx.try_send(e).is_err() {
                metrics::counter!(crate::metrics::WEBHOOK_EVENTS, "outcome" => "dropped").increment(1);
            }
        }
    }
}

impl Gateway {
    /// A user's push-notification settings (the defaults when none were set).
    pub async fn notify_prefs(&self, school: &str, user: &str) -> Result<NotifyPrefs, String> {
        if let Some((at, p)) = self.notify.lock().get(user)
            && at.elapsed() < Duration::from_secs(60)
        {
            return Ok(p.clone());
        }
        let r = self.store.record(crate::server_api::NOTIFY_KIND, school, user).await.map_err(|e| e.to_string())?;
        let p: NotifyPrefs = r.and_then(|r| serde_json::from_str(&r.doc).ok()).unwrap_or_default();
        let mut cache = self.notify.lock();
        // Bounded: at most a node's worth of recent recipients.
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(user.to_owned(), (Instant::now(), p.clone()));
        Ok(p)
    }

    /// Forgets the cached settings of `user` (they were just changed here).
    pub fn forget_notify_prefs(&self, user: &str) {
        self.notify.lock().remove(user);
    }
}

/// Sends events in signed batches, each retried until it is taken.
async fn send(client: preau_ops::client::Client, s: Settings, mut rx: mpsc::Receiver<Event>) {
    let mut n = 0u64;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + s.batch_wait;
        while batch.len() < s.max_batch {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(e)) => batch.push(e),
                _ => break,
            }
        }
        n += 1;
        let id = format!("{:x}-{n}", rand::random::<u64>());
        let body = serde_json::json!({ "delivery": id, "events": batch }).to_string();
        let count = batch.len() as u64;
        let mut sent = false;
        for (attempt, wait) in std::iter::once(0).chain(RETRIES).enumerate() {
            tokio::time::sleep(Duration::from_secs(wait)).await;
            let t = preau_auth::now_secs();
            let headers = [
                ("content-type", "application/json".to_owned()),
                ("x-preau-delivery", id.clone()),
                ("x-preau-signature", sign(&s.secret, t, body.as_bytes())),
            ];
            match client.post(&s.url, &headers, body.clone().into()).await {
                Ok(a) if (200..300).contains(&a.status) => {
                    sent = true;
                    break;
                }
                Ok(a) => tracing::warn!(delivery = %id, attempt, status = a.status, "webhook refused; retrying"),
                Err(e) => tracing::warn!(delivery = %id, attempt, error = %e, "webhook failed; retrying"),
            }
        }
        let outcome = if sent { "sent" } else { "failed" };
        if !sent {
            tracing::error!(delivery = %id, events = count, "webhook batch dropped after every retry");
        }
        metrics::counter!(crate::metrics::WEBHOOK_EVENTS, "outcome" => outcome).increment(count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use preau_directory::demo;

    #[test]
    fn announcements_reach_the_class_and_its_parents_not_the_author_and_forums_reach_nobody() {
        let dir = Directory::from_docs([demo::demo_doc()]).expect("demo");
        let class = dir.classes_of(demo::SCHOOL)[0].clone();
        let teacher = class.teachers.iter().next().expect("a teacher").clone();
        let ann = ChannelId::announcements(demo::SCHOOL, &class.id);
        let who = recipients(&dir, &ann, EntryKind::Message, &teacher, &[]);
        assert!(!who.contains(&teacher), "never the author");
        for p in &class.pupils {
            assert!(who.contains(p), "pupil {p}");
            for parent in &dir.user(p).expect("pupil").parents {
                assert!(who.contains(parent), "parent {parent}");
            }
        }
        let forum = ChannelId::forum(demo::SCHOOL, &class.id);
        assert!(recipients(&dir, &forum, EntryKind::Message, &teacher, &[]).is_empty());
        assert!(recipients(&dir, &ann, EntryKind::Edit, &teacher, &[]).is_empty(), "edits are not pushed");
        let dm = ChannelId::direct("p001", "t01");
        let members = ["p001".to_owned(), "t01".to_owned()];
        assert_eq!(recipients(&dir, &dm, EntryKind::Message, "t01", &members), vec!["p001".to_owned()]);
    }

    #[test]
    fn quiet_hours_and_opt_out_hold_pushes() {
        // 2026-12-03 21:30 in Paris (20:30 UTC).
        let evening = ((20_425 * 1440) + 20 * 60 + 30) * 60_000;
        let morning = ((20_425 * 1440) + 9 * 60) * 60_000;
        let quiet = DiscussionHours { start: "21:00".into(), end: "07:00".into(), time_zone: "Europe/Paris".into() };
        let p = NotifyPrefs { push: true, quiet_hours: Some(quiet) };
        assert!(!p.wants(evening), "quiet at 21:30");
        assert!(p.wants(morning), "told at 10:00");
        assert!(!NotifyPrefs { push: false, quiet_hours: None }.wants(morning), "opted out");
        assert!(NotifyPrefs::default().wants(evening));
    }

    #[test]
    fn signatures_cover_the_time_and_the_body() {
        let s = sign(b"secret", 1_764_750_000, b"{}");
        assert!(s.starts_with("t=1764750000,v1=") && s.len() == "t=1764750000,v1=".len() + 64, "{s}");
        assert_ne!(s, sign(b"secret", 1_764_750_001, b"{}"));
        assert_ne!(s, sign(b"secret", 1_764_750_000, b"{ }"));
        assert_ne!(s, sign(b"other", 1_764_750_000, b"{}"));
    }
}
