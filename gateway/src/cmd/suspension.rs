//! Suspension switches: the operator suspends messaging platform-wide, a school's admin
//! school-wide (as the minister did in March 2024 when compromised accounts sent threats
//! through ENT messaging). Writing is refused with `suspended`; reading stays open; the
//! school's direction (staff, admins) may keep posting announcements if the suspension
//! says so. Kept in the store (it survives restarts) and reloaded by every node when the
//! bus says it changed.

use super::{CmdError, Written};
use preau_directory::{Profile, UserRec};
use preau_proto::{ChannelKind, Command, ErrorCode, SuspensionInfo};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The store key of the suspensions.
pub const KEY: &str = "suspensions";

/// One suspension.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspension {
    /// Why, in the words of who suspended it (shown to users).
    pub reason: String,
    /// Since when, milliseconds since the epoch.
    pub since_ms: i64,
    /// Who suspended it (user id, or `operator`).
    pub by: String,
    /// The school's direction may still post announcements.
    pub announcements_open: bool,
}

/// Every suspension in force.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspensions {
    /// Platform-wide (the operator).
    #[serde(default)]
    pub platform: Option<Suspension>,
    /// By school UAI (the school's admin, or the operator).
    #[serde(default)]
    pub schools: BTreeMap<String, Suspension>,
}

/// Where a suspension applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every school.
    Platform,
    /// One school.
    School(String),
}

impl Suspensions {
    /// The suspension in force for `school`, platform first, with its scope's name.
    pub fn for_school(&self, school: &str) -> Option<(&'static str, &Suspension)> {
        self.platform.as_ref().map(|s| ("platform", s)).or_else(|| self.schools.get(school).map(|s| ("school", s)))
    }

    /// What `hello` and `sync` show a user of `school`.
    pub fn info(&self, school: &str) -> Option<SuspensionInfo> {
        self.for_school(school).map(|(scope, s)| SuspensionInfo {
            scope: scope.into(),
            reason: s.reason.clone(),
            since_ms: s.since_ms,
            announcements_open: s.announcements_open,
        })
    }

    /// These suspensions with `scope` set (`Some`) or lifted (`None`).
    pub fn with(&self, scope: &Scope, s: Option<Suspension>) -> Suspensions {
        let mut next = self.clone();
        match (scope, s) {
            (Scope::Platform, s) => next.platform = s,
            (Scope::School(uai), Some(s)) => {
                next.schools.insert(uai.clone(), s);
            }
            (Scope::School(uai), None) => {
                next.schools.remove(uai);
            }
        }
        next
    }
}

/// Whether `cmd` is refused by a suspension for `me`: posting, editing, new
/// conversations and groups, and typing are; reading, leaving and moderation (delete,
/// lock, mute) are not; announcements of the school's direction are not when the
/// suspension leaves them open.
pub fn check(s: &Suspensions, me: &UserRec, cmd: &Command) -> Result<(), CmdError> {
    let Some((scope, sus)) = s.for_school(&me.school) else { return Ok(()) };
    let Some(w) = super::written(cmd) else { return Ok(()) };
    let direction = matches!(me.profile, Profile::Staff | Profile::Admin);
    if sus.announcements_open && direction && matches!(w, Written::In(c) if c.kind() == ChannelKind::Announcements) {
        return Ok(());
    }
    let whom = if scope == "platform" { "on the whole platform" } else { "in your school" };
    Err(CmdError::new(
        ErrorCode::Suspended,
        format!("messaging is suspended {whom} for now: reading stays open ({})", sus.reason),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use preau_directory::{Directory, demo};
    use preau_proto::ChannelId;

    #[test]
    fn what_a_suspension_refuses() {
        let d = Directory::from_docs([demo::demo_doc()]).expect("demo");
        let u = |id: &str| d.user(id).expect("user").clone();
        let sus =
            |open| Suspension { reason: "menaces".into(), since_ms: 1, by: "ad01".into(), announcements_open: open };
        let school = Suspensions::default().with(&Scope::School(demo::SCHOOL.into()), Some(sus(true)));
        let ann = ChannelId::announcements(demo::SCHOOL, "6A");
        let send = |ch: &ChannelId| Command::Send {
            channel: ch.clone(),
            client_id: "c".into(),
            body: "x".into(),
            thread: None,
            reply_to: None,
        };
        let code = |r: Result<(), CmdError>| r.map_err(|e| e.code).err();
        let dm = ChannelId::direct("e001", "e002");
        assert_eq!(code(check(&school, &u("e001"), &send(&dm))), Some(ErrorCode::Suspended));
        assert_eq!(code(check(&school, &u("t01"), &send(&ann))), Some(ErrorCode::Suspended), "teachers too");
        assert_eq!(code(check(&school, &u("s01"), &send(&ann))), None, "the direction's announcements stay open");
        assert_eq!(code(check(&school, &u("s01"), &send(&dm))), Some(ErrorCode::Suspended), "not its messages");
        assert_eq!(
            code(check(&school, &u("e001"), &Command::OpenDirect { user: "e002".into() })),
            Some(ErrorCode::Suspended)
        );
        let read = Command::History { channel: dm.clone(), after: Some(0), before: None, limit: None };
        assert_eq!(code(check(&school, &u("e001"), &read)), None, "reading stays open");
        assert_eq!(
            code(check(&school, &u("t01"), &Command::Delete { channel: ann.clone(), seq: 1 })),
            None,
            "moderation"
        );
        let closed = Suspensions::default().with(&Scope::School(demo::SCHOOL.into()), Some(sus(false)));
        assert_eq!(code(check(&closed, &u("s01"), &send(&ann))), Some(ErrorCode::Suspended));
        // Another school's suspension changes nothing here; the platform's does.
        let other = Suspensions::default().with(&Scope::School("0930002B".into()), Some(sus(false)));
        assert_eq!(code(check(&other, &u("e001"), &send(&dm))), None);
        let platform = other.with(&Scope::Platform, Some(sus(false)));
        assert_eq!(platform.info(demo::SCHOOL).map(|i| i.scope), Some("platform".into()));
        assert_eq!(code(check(&platform, &u("e001"), &send(&dm))), Some(ErrorCode::Suspended));
        let lifted = platform.with(&Scope::Platform, None).with(&Scope::School("0930002B".into()), None);
        assert_eq!(lifted, Suspensions::default());
    }
}
