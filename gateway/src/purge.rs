//! The data lifecycle (docs/data-protection.md): a person removed from the directory is
//! recorded as departed; once the retention delay is over, their personal data is erased
//! from the store, one node at a time (a lease in the store), in bounded steps so live
//! traffic is not stalled, idempotently (a purge cut by a crash resumes at the next run).
//! An admin may also erase a person at once (`DELETE /admin/users/{id}/data`, the `erase`
//! subcommand). Every purge and erasure is in the audit trail, with counts and a
//! pseudonym, never the person's id or content.
//!
//! The rules (who departed, which direct conversations go, the pseudonym) are pure and
//! tested here; [`Gateway::purge_departed`] and [`Gateway::erase_person`] apply them.

use crate::cmd::audit::{self, AuditEntry};
use crate::cmd::error::CmdError;
use crate::service::{Gateway, timed};
use hmac::{Hmac, Mac};
use preau_directory::Directory;
use preau_proto::{ChannelId, ChannelKind, ErrorCode};
use preau_store::{Erasure, Record};
use serde::Serialize;
use std::collections::BTreeSet;

/// Record kind of a departure: (school, user id), at the time the import removed them.
pub const DEPARTED: &str = "departed";
/// The lease one node holds while it purges.
const LEASE: &str = "purge";
/// How long a lease lasts without renewal.
const LEASE_MS: i64 = 10 * 60_000;
/// Rows changed per store call: small enough that other writes queue behind it for
/// milliseconds, not seconds.
pub const STEP_ROWS: u32 = 500;
/// Departures looked at per school per run (the next run takes the rest).
const PER_RUN: u32 = 1_000;

/// Who left: users of the `replaced` schools in `before` and absent from `after`, as
/// (school, user id).
pub fn departures(before: &Directory, after: &Directory, replaced: &[String]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = before
        .users()
        .into_iter()
        .filter(|u| replaced.contains(&u.school) && after.user(&u.id).is_none())
        .map(|u| (u.school.clone(), u.id.clone()))
        .collect();
    out.sort();
    out
}

/// The stable, opaque name a person's kept posts carry: `ancien-` and 12 hex digits of
/// an HMAC of their id under the school's secret salt (not reversible from known ids).
pub fn pseudonym(salt: &[u8], user: &str) -> String {
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(salt) else {
        return "ancien".into();
    };
    mac.update(user.as_bytes());
    let d = mac.finalize().into_bytes();
    let hex: String = d.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("ancien-{hex}")
}

/// The direct conversations of `user` to remove whole: those whose other side is gone
/// from the directory too, or all of them when the platform says so.
pub fn direct_to_remove(dir: &Directory, user: &str, channels: &[ChannelId], always: bool) -> Vec<ChannelId> {
    channels
        .iter()
        .filter(|c| c.kind() == ChannelKind::Direct)
        .filter(|c| {
            always
                || c.direct_pair().is_some_and(|(x, y)| {
                    let other = if x == user { y } else { x };
                    dir.user(other).is_none()
                })
        })
        .cloned()
        .collect()
}

/// One person purged (or, dry, to purge).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Purged {
    /// School.
    pub school: String,
    /// The person's id (in the report to the operator; never in the audit trail).
    pub user: String,
    /// Their pseudonym.
    pub pseudonym: String,
    /// Rows removed or rewritten (dry: that would be).
    pub rows: u64,
}

/// What a purge run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PurgeReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Another node holds the lease: this one did nothing.
    pub lease_held_elsewhere: bool,
    /// People purged.
    pub purged: Vec<Purged>,
    /// Departures still within their delay.
    pub waiting: usize,
    /// Departed people who are back in the directory (their record is dropped).
    pub returned: usize,
    /// Messages past their retention removed (not counted in a dry run).
    pub expired_rows: u64,
}

impl Gateway {
    /// Records the departures an import made (see [`departures`]).
    pub(crate) async fn record_departures(&self, left: &[(String, String)]) {
        let at = self.clock.now_ms();
        for (school, user) in left {
            let r =
                Record { kind: DEPARTED.into(), school: school.clone(), id: user.clone(), at_ms: at, doc: "{}".into() };
            if let Err(e) = self.store.put_record(r).await {
                tracing::error!(error = %e, school, "could not record a departure; it will not be purged");
            }
        }
    }

    /// The school's pseudonym salt, made at first use.
    pub(crate) async fn salt(&self, school: &str) -> Result<Vec<u8>, CmdError> {
        let key = format!("pseudonym-salt:{school}");
        if let Some(s) = timed("load_setting", self.store.load_setting(&key)).await? {
            return Ok(s.into_bytes());
        }
        let fresh: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
        let json = serde_json::to_string(&fresh).map_err(|e| CmdError::new(ErrorCode::Internal, e.to_string()))?;
        timed("save_setting", self.store.save_setting(&key, json.clone())).await?;
        Ok(json.into_bytes())
    }

    /// Erases `user` of `school` now: bounded steps until done. `objected`: the person
    /// objected to their shared posts being kept, so their text goes whatever the school's
    /// choice. Returns rows changed (or that would be, dry). Recorded in the audit trail
    /// as `actor`'s, without the id.
    pub async fn erase_person(
        &self,
        school: &str,
        user: &str,
        actor: &str,
        objected: bool,
        dry_run: bool,
    ) -> Result<Purged, CmdError> {
        let salt = self.salt(school).await?;
        let pseudonym = pseudonym(&salt, user);
        let convs: Vec<ChannelId> = timed("conversations_of", self.store.conversations_of(user))
            .await?
            .into_iter()
            .map(|c| c.channel)
            .collect();
        let dir = self.dir();
        let rules = dir.school(school).map(|s| s.data.clone()).unwrap_or_default();
        let e = Erasure {
            user: user.to_owned(),
            pseudonym: pseudonym.clone(),
            keep_shared_posts: !objected && rules.keep_shared_posts.unwrap_or(self.cfg.purge_keep_shared_posts),
            direct: direct_to_remove(
                &dir,
                user,
                &convs,
                rules.remove_direct_always.unwrap_or(self.cfg.purge_direct_always),
            ),
            limit: STEP_ROWS,
            dry_run,
        };
        let started = tokio::time::Instant::now();
        let mut rows = 0;
        loop {
            let step = timed("erase_user", self.store.erase_user(e.clone())).await?;
            rows += step.rows;
            if !dry_run {
                metrics::counter!(crate::metrics::PURGE_ROWS).increment(step.rows);
            }
            if step.done {
                break;
            }
            // Let the writes waiting behind this step go first.
            tokio::task::yield_now().await;
        }
        if !dry_run {
            // Their push-notification settings too.
            timed("delete_record", self.store.delete_record(crate::server_api::NOTIFY_KIND, school, user)).await?;
            self.forget_notify_prefs(user);
            metrics::histogram!(crate::metrics::PURGE_SECONDS).record(started.elapsed().as_secs_f64());
            let detail = format!("personal data of {pseudonym} erased: {rows} rows");
            audit::record(self, AuditEntry::new(self.clock.now_ms(), school, actor, "personal_data_erased", detail))
                .await;
        }
        Ok(Purged { school: school.to_owned(), user: user.to_owned(), pseudonym, rows })
    }

    /// Removes messages past their retention: each school's class channels by its
    /// `data.message_retention_days` (else `--retention-days`), conversations by
    /// `--retention-days`. Returns the rows removed.
    async fn expire_messages(&self, dir: &Directory, now: i64) -> Result<u64, CmdError> {
        let platform = self.cfg.retention_days;
        let mut plan: Vec<(String, u32)> = vec![("dm:".into(), platform), ("grp:".into(), platform)];
        for (uai, _) in dir.school_docs() {
            let days = dir.school(uai).and_then(|s| s.data.message_retention_days).unwrap_or(platform);
            plan.push((format!("forum:{uai}:"), days));
            plan.push((format!("ann:{uai}:"), days));
        }
        let mut rows = 0;
        for (prefix, days) in plan.into_iter().filter(|(_, d)| *d > 0) {
            let x = preau_store::Expiry { prefix, before_ms: now - i64::from(days) * 86_400_000, limit: STEP_ROWS };
            loop {
                let step = timed("expire", self.store.expire(x.clone())).await?;
                rows += step.rows;
                metrics::counter!(crate::metrics::PURGE_ROWS).increment(step.rows);
                if step.done {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        Ok(rows)
    }

    /// One purge run: every departure past `--departed-retention-days` is erased, on one
    /// node at a time. `holder` names this node in the lease.
    pub async fn purge_departed(&self, holder: &str, dry_run: bool) -> Result<PurgeReport, CmdError> {
        let now = self.clock.now_ms();
        let mut report = PurgeReport { dry_run, ..PurgeReport::default() };
        if !dry_run && !timed("try_lease", self.store.try_lease(LEASE, holder, now, now + LEASE_MS)).await? {
            report.lease_held_elsewhere = true;
            return Ok(report);
        }
        let dir = self.dir();
        let schools: BTreeSet<String> = dir.school_docs().map(|(u, _)| u.to_owned()).collect();
        for school in schools {
            let days = dir
                .school(&school)
                .and_then(|s| s.data.departed_retention_days)
                .unwrap_or(self.cfg.departed_retention_days);
            let cutoff = now - i64::from(days) * 86_400_000;
            for r in timed("records", self.store.records(DEPARTED, &school, 0, PER_RUN)).await? {
                if dir.user(&r.id).is_some() {
                    report.returned += 1;
                    if !dry_run {
                        timed("delete_record", self.store.delete_record(DEPARTED, &school, &r.id)).await?;
                    }
                    continue;
                }
                if r.at_ms > cutoff {
                    report.waiting += 1;
                    continue;
                }
                if !dry_run {
                    // Renewed per person: a long run keeps its lease.
                    let now = self.clock.now_ms();
                    timed("try_lease", self.store.try_lease(LEASE, holder, now, now + LEASE_MS)).await?;
                }
                let p = self.erase_person(&school, &r.id, "preau-purge", false, dry_run).await?;
                if !dry_run {
                    // Last: a run cut before this point erases again (idempotent) next time.
                    timed("delete_record", self.store.delete_record(DEPARTED, &school, &r.id)).await?;
                }
                report.purged.push(p);
            }
        }
        if !dry_run {
            report.expired_rows = self.expire_messages(&dir, now).await?;
            let end = self.clock.now_ms();
            metrics::gauge!(crate::metrics::PURGE_LAST_RUN).set(end as f64 / 1000.0);
            // Released (renewed to expire now), so the next run on any node need not wait.
            timed("try_lease", self.store.try_lease(LEASE, holder, end, end)).await?;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Cli;
    use clap::Parser;
    use preau_directory::demo::demo_doc;
    use preau_proto::Command;

    /// Every file under `dir`, whole.
    fn bytes_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(bytes_under(&p));
            } else if let Ok(b) = std::fs::read(&p) {
                out.push((p, b));
            }
        }
        out
    }

    fn found(files: &[(std::path::PathBuf, Vec<u8>)], needle: &str) -> Vec<String> {
        let n = needle.as_bytes();
        files.iter().filter(|(_, b)| b.windows(n.len()).any(|w| w == n)).map(|(p, _)| p.display().to_string()).collect()
    }

    /// The case, on simulated time: a parent who left the directory, with their
    /// message "Mon fils est malade", is kept for the delay, then erased; the data folder's
    /// bytes then hold neither their id, nor their name, nor their message.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_departed_parent_is_erased_after_the_delay_and_nothing_of_them_is_left_in_the_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let args = ["preau-gateway", "--data-dir", data.to_str().expect("utf-8"), "--purge-direct-always", "true"];
        let clock = preau_proto::clock::ManualClock::at(1_796_160_600_000);
        let g = Gateway::start_with_clock(Cli::parse_from(args).config, clock.clone()).await.expect("gateway");
        let doc = demo_doc();
        let parent = doc.users.iter().find(|u| u.id == "pa050").expect("pa050").clone();
        assert_eq!(doc.users.iter().filter(|u| u.name == parent.name).count(), 1, "the name is the parent's alone");
        let dir0 = g.dir();
        let class = dir0.user("e050").and_then(|u| u.classes.iter().next().cloned()).expect("e050's class");
        let teacher = dir0
            .users()
            .into_iter()
            .find(|u| u.profile == preau_directory::Profile::Teacher && u.classes.contains(&class))
            .expect("a teacher")
            .id
            .clone();
        let text = "Mon fils est malade, il ne viendra pas demain";
        let dm = g
            .handle("pa050", 1, Command::OpenDirect { user: teacher.clone() })
            .await
            .expect("open")
            .channel
            .expect("dm");
        let send = Command::Send {
            channel: dm.clone(),
            client_id: "c1".into(),
            body: text.into(),
            thread: None,
            reply_to: None,
        };
        g.handle("pa050", 2, send).await.expect("send");
        g.handle("pa050", 3, Command::MarkRead { channel: dm.clone(), seq: 1 }).await.expect("read");

        // The school's next import no longer lists the parent.
        let mut next = demo_doc();
        next.users.retain(|u| u.id != "pa050");
        next.links.retain(|l| l.parent != "pa050");
        g.import(next).await.expect("import");
        clock.advance(89 * 86_400_000);
        let r = g.purge_departed("gw-test", false).await.expect("purge");
        assert_eq!((r.purged.len(), r.waiting), (0, 1), "kept within the delay");
        assert!(g.store.conversation(&dm).await.expect("read").is_some());

        clock.advance(2 * 86_400_000);
        let dry = g.purge_departed("gw-test", true).await.expect("dry run");
        assert_eq!(dry.purged.len(), 1);
        assert!(g.store.conversation(&dm).await.expect("read").is_some(), "a dry run changes nothing");
        let r = g.purge_departed("gw-test", false).await.expect("purge");
        assert_eq!(r.purged.len(), 1);
        assert_eq!(r.purged[0].rows, dry.purged[0].rows, "the dry run said what would go");
        assert!(g.store.conversation(&dm).await.expect("read").is_none(), "the conversation is gone");
        assert_eq!(g.store.history(&dm, Some(0), None, 10).await.expect("history").0.len(), 0);
        let again = g.purge_departed("gw-test", false).await.expect("again");
        assert!(again.purged.is_empty() && again.waiting == 0, "done once");
        let trail = g.store.records(crate::cmd::audit::KIND, "0750001A", 0, 100).await.expect("audit");
        let erased: Vec<_> = trail.iter().filter(|t| t.doc.contains("personal_data_erased")).collect();
        assert_eq!(erased.len(), 1, "recorded");
        assert!(!erased[0].doc.contains("pa050") && erased[0].doc.contains(&r.purged[0].pseudonym));

        let files = bytes_under(&data);
        for needle in ["pa050", parent.name.as_str(), "Mon fils est malade"] {
            assert_eq!(found(&files, needle), Vec::<String>::new(), "{needle:?} is still in the data folder");
        }
    }

    /// A school's own choices win over the platform's: a shorter delay, and posts that
    /// lose their text.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_school_chooses_its_delay_and_whether_posts_keep_their_text() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let args = ["preau-gateway", "--data-dir", data.to_str().expect("utf-8")];
        let clock = preau_proto::clock::ManualClock::at(1_796_160_600_000);
        let g = Gateway::start_with_clock(Cli::parse_from(args).config, clock.clone()).await.expect("gateway");
        let forum = ChannelId::forum("0750001A", "6A");
        // An old announcement, past the school's retention of 30 days by the end.
        let ann = ChannelId::announcements("0750001A", "6A");
        for (i, body) in ["ancienne annonce", "annonce récente"].iter().enumerate() {
            let send = Command::Send {
                channel: ann.clone(),
                client_id: format!("a{i}"),
                body: (*body).into(),
                thread: None,
                reply_to: None,
            };
            g.handle("t01", 10 + i as u64, send).await.expect("announce");
        }
        let create = Command::CreateThread {
            channel: forum.clone(),
            client_id: "t".into(),
            title: "S".into(),
            body: "x".into(),
        };
        let thread = g.handle("t01", 1, create).await.expect("thread").seq.expect("seq");
        let post = Command::Send {
            channel: forum.clone(),
            client_id: "p".into(),
            body: "ma réponse".into(),
            thread: Some(thread),
            reply_to: None,
        };
        let seq = g.handle("e001", 2, post).await.expect("post").seq.expect("seq");
        let mut doc = demo_doc();
        doc.schools[0].data.departed_retention_days = Some(10);
        doc.schools[0].data.keep_shared_posts = Some(false);
        doc.schools[0].data.message_retention_days = Some(30);
        doc.users.retain(|u| u.id != "e001");
        doc.links.retain(|l| l.child != "e001");
        g.import(doc).await.expect("import");
        clock.advance(11 * 86_400_000);
        let r = g.purge_departed("gw-test", false).await.expect("purge");
        assert_eq!(r.purged.len(), 1, "ten days, not the platform's ninety");
        let e = g.store.entry(&forum, seq).await.expect("read").expect("the post's place stays");
        assert!(e.deleted && e.body.is_none() && e.author == r.purged[0].pseudonym, "{e:?}");
        assert_eq!(r.expired_rows, 0, "nothing is 30 days old yet");
        clock.advance(20 * 86_400_000);
        let r = g.purge_departed("gw-test", false).await.expect("purge");
        assert!(r.expired_rows >= 2, "31 days: the school's retention applies ({r:?})");
        let (h, _) = g.store.history(&ann, Some(0), None, 10).await.expect("history");
        assert_eq!(h.len(), 1, "only the channel's last entry stays, emptied: {h:?}");
        assert!(h[0].body.is_none() && h[0].seq == 2);
    }

    #[test]
    fn departures_are_the_users_of_a_replaced_school_no_longer_listed() {
        let before = Directory::from_docs([demo_doc()]).expect("demo");
        let mut doc = demo_doc();
        doc.users.retain(|u| u.id != "pa002" && u.id != "e003");
        doc.links.retain(|l| l.parent != "pa002" && l.child != "e003");
        let (after, replaced) = before.with_import(doc).expect("import");
        assert_eq!(
            departures(&before, &after, &replaced),
            vec![("0750001A".to_owned(), "e003".to_owned()), ("0750001A".to_owned(), "pa002".to_owned())]
        );
        assert!(departures(&before, &after, &[]).is_empty(), "schools not replaced lose nobody");
    }

    #[test]
    fn pseudonyms_are_stable_per_salt_and_opaque() {
        let a = pseudonym(b"salt-a", "pa002");
        assert_eq!(a, pseudonym(b"salt-a", "pa002"));
        assert_ne!(a, pseudonym(b"salt-b", "pa002"), "another school, another name");
        assert_ne!(a, pseudonym(b"salt-a", "pa003"));
        assert!(a.starts_with("ancien-") && a.len() == 19 && !a.contains("pa002"));
    }

    #[test]
    fn direct_conversations_go_when_both_sides_are_gone_or_always() {
        let dir = Directory::from_docs([demo_doc()]).expect("demo");
        let with_teacher = ChannelId::direct("gone1", "t01");
        let with_gone = ChannelId::direct("gone1", "gone2");
        let group = ChannelId::group("g1");
        let chans = [with_teacher.clone(), with_gone.clone(), group];
        assert_eq!(direct_to_remove(&dir, "gone1", &chans, false), vec![with_gone.clone()]);
        assert_eq!(direct_to_remove(&dir, "gone1", &chans, true), vec![with_teacher, with_gone]);
    }
}
