//! Discussion hours at the command layer: outside the school's hours, pupils and parents
//! may read but not write in conversations (class forums and announcements follow their
//! own rules). Off unless the school configures it.

use super::CmdError;
use preau_directory::{Directory, Profile, UserRec};
use preau_proto::{Command, ErrorCode};

/// Whether `cmd` by `me` at `now_ms` falls outside the school's discussion hours.
pub fn check(dir: &Directory, me: &UserRec, cmd: &Command, now_ms: i64) -> Result<(), CmdError> {
    if !matches!(me.profile, Profile::Pupil | Profile::Parent) {
        return Ok(());
    }
    if !super::written(cmd).is_some_and(|w| w.is_conversation()) {
        return Ok(());
    }
    let Some(hours) = dir.policy(&me.school).discussion_hours else { return Ok(()) };
    hours.check(now_ms).map_err(|(wait_ms, opens)| {
        let mut e = CmdError::new(
            ErrorCode::OutsideHours,
            format!("conversations are closed at this hour; they reopen at {opens}"),
        );
        e.retry_after_ms = Some(wait_ms.max(1) as u64);
        e
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use preau_directory::demo;
    use preau_directory::hours::DiscussionHours;
    use preau_proto::ChannelId;

    #[test]
    fn pupils_and_parents_wait_for_the_morning_in_conversations_only() {
        let mut doc = demo::demo_doc();
        doc.schools[0].policy.discussion_hours =
            Some(DiscussionHours { start: "07:00".into(), end: "20:00".into(), time_zone: "Europe/Paris".into() });
        let d = Directory::from_docs([doc]).expect("demo with hours");
        let u = |id: &str| d.user(id).expect("user").clone();
        // 2026-12-01 21:30 UTC = 22:30 in Paris.
        let night = 1_796_160_600_000;
        let dm = ChannelId::direct("e001", "e002");
        let send = |ch: &ChannelId| Command::Send {
            channel: ch.clone(),
            client_id: "c".into(),
            body: "x".into(),
            thread: None,
            reply_to: None,
        };
        let e = check(&d, &u("e001"), &send(&dm), night).expect_err("a pupil at night");
        assert_eq!(e.code, ErrorCode::OutsideHours);
        assert_eq!(e.retry_after_ms, Some(8 * 3_600_000 + 30 * 60_000), "until 07:00 Paris");
        assert!(e.message.contains("07:00"));
        assert!(check(&d, &u("pa001"), &Command::OpenDirect { user: "t01".into() }, night).is_err(), "parents too");
        assert!(check(&d, &u("t01"), &send(&dm), night).is_ok(), "teachers are not bound");
        let forum = ChannelId::forum(demo::SCHOOL, "6A");
        assert!(check(&d, &u("e001"), &send(&forum), night).is_ok(), "class forums follow their own rules");
        let read = Command::History { channel: dm.clone(), after: Some(0), before: None, limit: None };
        assert!(check(&d, &u("e001"), &read, night).is_ok(), "reading is always open");
        // 2026-12-01 09:00 UTC = 10:00 in Paris.
        assert!(check(&d, &u("e001"), &send(&dm), 1_796_115_600_000).is_ok());
        // Without hours configured, always open.
        let free = Directory::from_docs([demo::demo_doc()]).expect("demo");
        assert!(check(&free, free.user("e001").expect("pupil"), &send(&dm), night).is_ok());
    }
}
