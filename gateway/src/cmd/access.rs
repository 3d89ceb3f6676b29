//! What a user may do in a channel, and every channel they see. Class channels follow
//! from the directory alone; conversations also need the stored conversation and, for a
//! direct one, whether the other member has written (the answer rule,
//! [`preau_directory::may_post_direct`]).

use super::error::no_channel;
use super::{CmdError, Ctx};
use crate::service::{Gateway, timed};
use preau_directory::policy::{class_access, class_channels, may_post_direct, may_write_first};
use preau_directory::{Directory, UserRec};
use preau_proto::{ChannelId, ChannelInfo, ChannelKind};
use preau_store::{ChannelState, Conversation};

/// What a user may do in a channel, with the conversation when it is one.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Sees it.
    pub read: bool,
    /// May post.
    pub post: bool,
    /// May open threads (forums).
    pub create_thread: bool,
    /// Moderates it (or, for a group, created it).
    pub moderate: bool,
    /// The conversation, for direct and group channels.
    pub conv: Option<Conversation>,
}

/// What a channel's access depends on beyond the directory.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The stored conversation (direct and group channels).
    pub conv: Option<Conversation>,
    /// In a direct conversation: the other member has posted in it.
    pub other_posted: bool,
}

/// The other member of a direct conversation `ch`, when `me` is one of the pair.
fn direct_other<'c>(me: &UserRec, ch: &'c ChannelId) -> Option<&'c str> {
    let (x, y) = ch.direct_pair()?;
    if x == me.id {
        Some(y)
    } else if y == me.id {
        Some(x)
    } else {
        None
    }
}

/// Decides what `me` may do in `ch` from the directory and the facts; `forbidden` (the
/// same answer as a channel that does not exist) when they may not even see it.
pub fn decide(dir: &Directory, me: &UserRec, ch: &ChannelId, facts: Facts) -> Result<Access, CmdError> {
    let a = match ch.kind() {
        ChannelKind::Forum | ChannelKind::Announcements => {
            let (school, class) = ch.school_class().unwrap_or_default();
            let c = class_access(dir, me, school, class, ch.kind() == ChannelKind::Announcements);
            Access { read: c.read, post: c.post, create_thread: c.create_thread, moderate: c.moderate, conv: None }
        }
        ChannelKind::Direct => {
            let other = direct_other(me, ch).ok_or_else(no_channel)?;
            let conv = facts.conv.ok_or_else(no_channel)?;
            let post = may_post_direct(dir, me, dir.user(other), facts.other_posted);
            Access { read: true, post, create_thread: false, moderate: false, conv: Some(conv) }
        }
        ChannelKind::Group => {
            let conv = facts.conv.filter(|c| c.members.contains(&me.id)).ok_or_else(no_channel)?;
            let creator = conv.creator == me.id;
            Access { read: true, post: true, create_thread: false, moderate: creator, conv: Some(conv) }
        }
    };
    if a.read { Ok(a) } else { Err(no_channel()) }
}

/// Whether the answer rule needs to know if `other` posted in the direct conversation:
/// only when `me` may not write to them first anyway.
fn needs_other_posted(dir: &Directory, me: &UserRec, other: &str) -> bool {
    dir.user(other).is_some_and(|o| !may_write_first(dir, me, o))
}

/// Gathers the facts of `ch` for `me` (store reads), then decides.
pub async fn access(g: &Gateway, dir: &Directory, me: &UserRec, ch: &ChannelId) -> Result<Access, CmdError> {
    let mut facts = Facts::default();
    match ch.kind() {
        ChannelKind::Forum | ChannelKind::Announcements => {}
        ChannelKind::Direct => {
            // Not one of the pair: refused without a store read.
            let Some(other) = direct_other(me, ch) else { return Err(no_channel()) };
            facts.conv = timed("conversation", g.store.conversation(ch)).await?;
            if facts.conv.is_some() && needs_other_posted(dir, me, other) {
                facts.other_posted = timed("has_posted", g.store.has_posted(ch, other)).await?;
            }
        }
        ChannelKind::Group => facts.conv = timed("conversation", g.store.conversation(ch)).await?,
    }
    decide(dir, me, ch, facts)
}

/// Access in `cx` (the command's snapshot).
pub async fn of(g: &Gateway, cx: Ctx<'_>, ch: &ChannelId) -> Result<Access, CmdError> {
    access(g, cx.dir, cx.me, ch).await
}

/// The title `me` sees for a conversation: the other member's name for a direct one.
pub fn conversation_title(dir: &Directory, me: &str, conv: &Conversation) -> String {
    match conv.kind {
        ChannelKind::Direct => {
            let other = conv.members.iter().find(|u| **u != me);
            other.and_then(|o| dir.user(o)).map(|o| o.name.clone()).unwrap_or_else(|| "(compte supprimé)".into())
        }
        _ => conv.title.clone(),
    }
}

/// The class channels `me` sees, with titles and access (pure).
pub fn class_entries(dir: &Directory, me: &UserRec) -> Vec<(ChannelId, String, Access)> {
    let mut out = Vec::new();
    for (class, forum, ann) in class_channels(dir, me) {
        let name = dir.class(&me.school, &class).map(|c| c.name.clone()).unwrap_or_default();
        for (on, ch, title) in [
            (forum, ChannelId::forum(&me.school, &class), format!("Forum {name}")),
            (ann, ChannelId::announcements(&me.school, &class), format!("Annonces {name}")),
        ] {
            if on && let Ok(a) = decide(dir, me, &ch, Facts::default()) {
                out.push((ch, title, a));
            }
        }
    }
    out
}

/// Every channel `me` sees, with a title and access: the class channels, then the
/// conversations, each judged by [`decide`] as a command on it would be.
pub async fn visible(g: &Gateway, dir: &Directory, me: &UserRec) -> Result<Vec<(ChannelId, String, Access)>, CmdError> {
    let mut out = class_entries(dir, me);
    for conv in timed("conversations_of", g.store.conversations_of(&me.id)).await? {
        let ch = conv.channel.clone();
        let mut facts = Facts { conv: Some(conv), other_posted: false };
        if let Some(other) = direct_other(me, &ch)
            && needs_other_posted(dir, me, other)
        {
            facts.other_posted = timed("has_posted", g.store.has_posted(&ch, other)).await?;
        }
        let title = facts.conv.as_ref().map(|c| conversation_title(dir, &me.id, c)).unwrap_or_default();
        if let Ok(a) = decide(dir, me, &ch, facts) {
            out.push((ch, title, a));
        }
    }
    Ok(out)
}

/// A channel's summary as `sync` and `channel_added` show it.
pub fn info(ch: &ChannelId, title: String, a: &Access, st: &ChannelState) -> ChannelInfo {
    ChannelInfo {
        channel: ch.clone(),
        kind: ch.kind(),
        title,
        last_seq: st.last_seq,
        read_seq: st.read_seq,
        unread: st.unread,
        can_post: a.post,
        moderator: a.moderate,
        entries: Vec::new(),
        more: false,
    }
}

/// A channel's summary for `me`, for `channel_added` (a failed read shows zeros; the
/// client's next `sync` corrects them).
pub async fn channel_info(g: &Gateway, me: &str, ch: &ChannelId, title: String, a: &Access) -> ChannelInfo {
    let st = timed("summaries", g.store.summaries(me, std::slice::from_ref(ch)))
        .await
        .ok()
        .and_then(|v| v.into_iter().next())
        .unwrap_or_default();
    info(ch, title, a, &st)
}

#[cfg(test)]
mod tests {
    use super::*;
    use preau_directory::demo;

    fn dir() -> Directory {
        Directory::from_docs([demo::demo_doc()]).expect("demo")
    }

    fn conv(ch: &ChannelId, creator: &str, members: &[&str]) -> Conversation {
        Conversation {
            channel: ch.clone(),
            kind: ch.kind(),
            title: "Sortie".into(),
            creator: creator.into(),
            members: members.iter().map(|m| m.to_string()).collect(),
        }
    }

    #[test]
    fn access_table() {
        let d = dir();
        let u = |id: &str| d.user(id).expect("user").clone();
        let dm = ChannelId::direct("pa051", "t01");
        let grp = ChannelId::group("0123456789abcdef");
        let forum = ChannelId::forum("0750001A", "6A");
        let ann = ChannelId::announcements("0750001A", "6A");
        let with = |c: &Conversation, posted| Facts { conv: Some(c.clone()), other_posted: posted };
        let dm_conv = conv(&dm, "t01", &["pa051", "t01"]);
        let grp_conv = conv(&grp, "t01", &["e001", "t01"]);
        // (who, channel, facts, Some((post, moderate)) or None for refused)
        type Row<'a> = (&'a str, &'a ChannelId, Facts, Option<(bool, bool)>, &'a str);
        let rows: Vec<Row> = vec![
            ("e001", &forum, Facts::default(), Some((true, false)), "pupil in own forum"),
            ("e026", &forum, Facts::default(), None, "pupil in another class's forum"),
            ("t01", &forum, Facts::default(), Some((true, true)), "teacher moderates"),
            ("e001", &ann, Facts::default(), Some((false, false)), "pupil reads ann"),
            ("pa001", &ann, Facts::default(), Some((false, false)), "parent reads ann"),
            ("pa051", &dm, with(&dm_conv, false), Some((false, false)), "parent may not write first"),
            ("pa051", &dm, with(&dm_conv, true), Some((true, false)), "parent answers the teacher"),
            ("t01", &dm, with(&dm_conv, false), Some((true, false)), "teacher writes first"),
            ("e001", &dm, with(&dm_conv, true), None, "not one of the pair"),
            ("pa051", &dm, Facts::default(), None, "no such conversation"),
            ("e001", &grp, with(&grp_conv, false), Some((true, false)), "group member"),
            ("t01", &grp, with(&grp_conv, false), Some((true, true)), "group creator"),
            ("e002", &grp, with(&grp_conv, false), None, "not a member"),
        ];
        for (who, ch, facts, want, what) in rows {
            let got = decide(&d, &u(who), ch, facts).ok().map(|a| (a.post, a.moderate));
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn class_entries_match_decide() {
        let d = dir();
        for id in ["e001", "pa001", "t01", "s01", "t03"] {
            let me = d.user(id).expect("user");
            for (ch, title, a) in class_entries(&d, me) {
                let again = decide(&d, me, &ch, Facts::default()).expect("visible means readable");
                assert_eq!((a.post, a.moderate, a.create_thread), (again.post, again.moderate, again.create_thread));
                assert!(title.starts_with("Forum ") || title.starts_with("Annonces "), "{title}");
            }
        }
    }
}
