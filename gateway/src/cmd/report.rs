//! Reporting (signalement): anyone reports a message they can read; the report reaches
//! the school's moderators — the forum's moderators (the class's teachers, the school's
//! admins) for a forum post, the school's direction (staff, admins) for announcements
//! and conversations — in a queue they read (`reports`) and act on (`close_report`:
//! delete the message, or dismiss). The reported content is kept with the report, so
//! deleting the message does not hide it from the moderators.

use super::access;
use super::audit::{self, AuditEntry};
use super::error::{bad, check_text};
use super::post::original_text;
use super::{CmdError, Ctx};
use crate::service::{Gateway, timed};
use preau_directory::policy::class_access;
use preau_directory::{Directory, Profile, UserRec};
use preau_proto::{Ack, ChannelId, ChannelKind, EntryKind, ErrorCode, ReportInfo, Seq};
use preau_store::{Record, Write};
use serde::{Deserialize, Serialize};

/// The store's record kind.
pub const KIND: &str = "report";
/// Longest reason, bytes.
pub const MAX_REASON: usize = 500;
/// Most reports read for a queue.
const QUEUE_SCAN: u32 = 5000;

/// A report as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stored {
    /// What moderators see.
    pub info: ReportInfo,
    /// How it was closed: (who, action, when).
    #[serde(default)]
    pub closed: Option<(String, String, i64)>,
}

/// Whether `me` moderates reports of messages in `ch` (a channel of `me`'s school).
pub fn moderates(dir: &Directory, me: &UserRec, ch: &ChannelId) -> bool {
    match ch.kind() {
        ChannelKind::Forum => {
            let (school, class) = ch.school_class().unwrap_or_default();
            class_access(dir, me, school, class, false).moderate
        }
        ChannelKind::Announcements | ChannelKind::Direct | ChannelKind::Group => {
            matches!(me.profile, Profile::Staff | Profile::Admin) && ch.school().is_none_or(|s| s == me.school)
        }
    }
}

/// Who moderates reports of `ch` in `school`: the forum's moderators (the class's teachers
/// and the school's admins) for a forum, the school's direction otherwise. The same
/// answer as [`moderates`], from the directory's indexes rather than every user.
pub fn moderators(dir: &Directory, school: &str, ch: &ChannelId) -> Vec<String> {
    let mut to: Vec<String> = match ch.kind() {
        ChannelKind::Forum => {
            let class = ch.school_class().and_then(|(s, c)| dir.class(s, c));
            let teachers = class.into_iter().flat_map(|c| c.teachers.iter().cloned());
            let admins =
                dir.direction(school).iter().filter(|u| dir.user(u).is_some_and(|r| r.profile == Profile::Admin));
            teachers.chain(admins.cloned()).collect()
        }
        _ => dir.direction(school).to_vec(),
    };
    to.retain(|u| dir.user(u).is_some_and(|r| moderates(dir, r, ch)));
    to.sort();
    to.dedup();
    to
}

fn no_report() -> CmdError {
    CmdError::new(ErrorCode::NotFound, "no such open report")
}

/// `report`.
pub async fn report(
    g: &Gateway,
    cx: Ctx<'_>,
    ack: Ack,
    channel: ChannelId,
    seq: Seq,
    reason: String,
) -> Result<Ack, CmdError> {
    check_text("reason", &reason, MAX_REASON)?;
    access::of(g, cx, &channel).await?;
    let entry = timed("entry", g.store.entry(&channel, seq)).await?;
    let Some(entry) = entry.filter(|e| matches!(e.kind, EntryKind::Message | EntryKind::Thread) && !e.deleted) else {
        return Err(CmdError::new(ErrorCode::NotFound, "no such message"));
    };
    if entry.author == cx.me.id {
        return Err(bad("you cannot report your own message"));
    }
    let id = format!("{:016x}", rand::random::<u64>());
    let info = ReportInfo {
        id: id.clone(),
        channel: channel.clone(),
        seq,
        author: entry.author.clone(),
        content: original_text(&entry),
        reporter: cx.me.id.clone(),
        reason: reason.trim().to_owned(),
        at_ms: cx.now_ms,
    };
    let doc = serde_json::to_string(&Stored { info, closed: None }).map_err(|e| bad(e.to_string()))?;
    let rec = Record { kind: KIND.into(), school: cx.me.school.clone(), id: id.clone(), at_ms: cx.now_ms, doc };
    timed("put_record", g.store.put_record(rec)).await?;
    let about = cx.dir.user(&entry.author).cloned().unwrap_or_else(|| UserRec {
        id: entry.author.clone(),
        school: cx.me.school.clone(),
        profile: Profile::Pupil,
        name: "(compte supprimé)".into(),
        classes: Default::default(),
        groups: Default::default(),
        children: Default::default(),
        parents: Default::default(),
    });
    let to = moderators(cx.dir, &cx.me.school, &channel);
    g.alert(&to, &about, "report", format!("Un message de {} a été signalé : {}", about.name, reason.trim()));
    Ok(Ack { report: Some(id), ..ack })
}

async fn open_reports(g: &Gateway, school: &str) -> Result<Vec<Stored>, CmdError> {
    let recs = timed("records", g.store.records(KIND, school, 0, QUEUE_SCAN)).await?;
    Ok(recs
        .into_iter()
        .filter_map(|r| serde_json::from_str::<Stored>(&r.doc).ok())
        .filter(|s| s.closed.is_none())
        .collect())
}

/// `reports`: the open reports `me` moderates, oldest first.
pub async fn reports(g: &Gateway, cx: Ctx<'_>, ack: Ack) -> Result<Ack, CmdError> {
    let reports = open_reports(g, &cx.me.school)
        .await?
        .into_iter()
        .filter(|s| moderates(cx.dir, cx.me, &s.info.channel))
        .map(|s| s.info)
        .collect();
    Ok(Ack { reports, ..ack })
}

/// `close_report`: `delete` removes the message (as a moderator), `dismiss` keeps it;
/// either way the report leaves the queue and the act enters the audit trail.
pub async fn close_report(g: &Gateway, cx: Ctx<'_>, ack: Ack, report: String, action: String) -> Result<Ack, CmdError> {
    if !matches!(action.as_str(), "delete" | "dismiss") {
        return Err(bad("`action` is `delete` or `dismiss`"));
    }
    let rec = timed("record", g.store.record(KIND, &cx.me.school, &report)).await?.ok_or_else(no_report)?;
    let mut stored: Stored = serde_json::from_str(&rec.doc).map_err(|_| no_report())?;
    // One answer for a report that does not exist, is closed, or is not one's to handle.
    if stored.closed.is_some() || !moderates(cx.dir, cx.me, &stored.info.channel) {
        return Err(no_report());
    }
    let info = stored.info.clone();
    if action == "delete" {
        let w = Write::Delete {
            channel: info.channel.clone(),
            author: cx.me.id.clone(),
            target: info.seq,
            moderator: true,
        };
        match timed("write", g.store.write(w)).await {
            // Deleted meanwhile (by its author): the report is still closed as asked.
            Ok(_) | Err(preau_store::StoreError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    stored.closed = Some((cx.me.id.clone(), action.clone(), cx.now_ms));
    let doc = serde_json::to_string(&stored).map_err(|e| bad(e.to_string()))?;
    timed("put_record", g.store.put_record(Record { doc, ..rec })).await?;
    let mut e = AuditEntry::new(
        cx.now_ms,
        &cx.me.school,
        &cx.me.id,
        "report_closed",
        format!("report by {} ({}): {action}", info.reporter, info.reason),
    );
    e.channel = Some(info.channel);
    e.seq = Some(info.seq);
    e.subject = Some(info.author);
    e.original = Some(info.content);
    audit::record(g, e).await;
    Ok(ack)
}

#[cfg(test)]
mod tests {
    use super::*;
    use preau_directory::demo;

    #[test]
    fn who_moderates_which_report() {
        let d = Directory::from_docs([demo::demo_doc()]).expect("demo");
        let u = |id: &str| d.user(id).expect("user");
        let forum = ChannelId::forum(demo::SCHOOL, "6A");
        let dm = ChannelId::direct("e001", "e002");
        let ann = ChannelId::announcements(demo::SCHOOL, "6A");
        // (who, channel, moderates)
        let rows = [
            ("t01", &forum, true),
            ("t05", &forum, true),
            ("t03", &forum, false),
            ("ad01", &forum, true),
            ("s01", &forum, false),
            ("e001", &forum, false),
            ("s01", &dm, true),
            ("ad01", &dm, true),
            ("t01", &dm, false),
            ("s01", &ann, true),
            ("t01", &ann, false),
        ];
        for (who, ch, want) in rows {
            assert_eq!(moderates(&d, u(who), ch), want, "{who} on {ch}");
        }
        let other = ChannelId::announcements("0930002B", "6A");
        assert!(!moderates(&d, u("s01"), &other), "another school's");
        // The recipients of a report are exactly the users who moderate it.
        for ch in [&forum, &dm, &ann] {
            let all: Vec<String> = d
                .users()
                .into_iter()
                .filter(|x| x.school == demo::SCHOOL && moderates(&d, x, ch))
                .map(|x| x.id.clone())
                .collect();
            assert_eq!(moderators(&d, demo::SCHOOL, ch), all, "{ch}");
        }
    }
}
