//! Direct and group conversations: `open_direct`, `create_group`, `add_members`,
//! `leave`, `members`, `typing`; and the `channel_added` each new member receives.

use super::access::{self, conversation_title};
use super::error::{bad, forbidden, may_not_post, no_channel};
use super::error::{check_client_id, check_text};
use super::post::MAX_TITLE_BYTES;
use super::{Access, CmdError, Ctx};
use crate::service::{Gateway, timed};
use preau_bus::Topic;
use preau_directory::policy::{may_post_direct, may_write_first};
use preau_directory::{Directory, UserRec};
use preau_proto::{Ack, ChannelId, ChannelKind, ErrorCode, MemberInfo, ProfileInfo, ServerFrame};
use preau_store::{Conversation, NewConversation, Write};

/// One answer whether the user does not exist or the rules keep them apart.
fn may_not_write() -> CmdError {
    forbidden("you may not write to this user")
}

/// What `open_direct` does.
#[derive(Debug, PartialEq, Eq)]
pub enum DirectPlan {
    /// The conversation exists: answer with it (it is the other's message to answer).
    Existing(ChannelId),
    /// Create it.
    Create(NewConversation),
}

/// Decides `open_direct` with `other` (the directory's record, if any) and the existing
/// conversation between the two, if any.
pub fn decide_open_direct(
    cx: Ctx<'_>,
    other: Option<&UserRec>,
    existing: Option<&Conversation>,
) -> Result<DirectPlan, CmdError> {
    let o = other.filter(|o| o.id != cx.me.id).ok_or_else(may_not_write)?;
    if let Some(c) = existing {
        return Ok(DirectPlan::Existing(c.channel.clone()));
    }
    if !may_write_first(cx.dir, cx.me, o) {
        return Err(may_not_write());
    }
    Ok(DirectPlan::Create(NewConversation {
        channel: ChannelId::direct(&cx.me.id, &o.id),
        title: String::new(),
        creator: cx.me.id.clone(),
        client_id: None,
        members: vec![cx.me.id.clone(), o.id.clone()],
    }))
}

/// `open_direct`.
pub async fn open_direct(g: &Gateway, cx: Ctx<'_>, ack: Ack, other: String) -> Result<Ack, CmdError> {
    let o = cx.dir.user(&other).filter(|o| o.id != cx.me.id);
    let existing = match o {
        Some(o) => timed("conversation", g.store.conversation(&ChannelId::direct(&cx.me.id, &o.id))).await?,
        None => None,
    };
    match decide_open_direct(cx, o, existing.as_ref())? {
        DirectPlan::Existing(channel) => Ok(Ack { channel: Some(channel), ..ack }),
        DirectPlan::Create(nc) => {
            g.brake(cx.me, &nc.channel)?;
            g.take_send(&cx.me.id)?;
            let conv = timed("create_conversation", g.store.create_conversation(nc)).await?;
            announce(g, cx.dir, &conv, &conv.members).await;
            Ok(Ack { channel: Some(conv.channel), ..ack })
        }
    }
}

/// A group of `current` members may take `new` ones: under the size limit, and `me`
/// may write to each (one answer for unknown and forbidden users).
pub fn check_new_members(cx: Ctx<'_>, max: usize, current: usize, new: &[String]) -> Result<(), CmdError> {
    if current + new.len() > max {
        return Err(CmdError::new(ErrorCode::GroupFull, format!("a group has at most {max} members")));
    }
    let denied: Vec<&str> = new
        .iter()
        .filter(|m| !cx.dir.user(m).is_some_and(|u| may_write_first(cx.dir, cx.me, u)))
        .map(String::as_str)
        .collect();
    if denied.is_empty() { Ok(()) } else { Err(forbidden(format!("you may not write to: {}", denied.join(", ")))) }
}

/// Decides `create_group`; `gid` is the new group's random id.
pub fn decide_group(
    cx: Ctx<'_>,
    max: usize,
    client_id: String,
    name: String,
    members: Vec<String>,
    gid: &str,
) -> Result<NewConversation, CmdError> {
    check_client_id(&client_id)?;
    check_text("name", &name, MAX_TITLE_BYTES)?;
    let mut set: Vec<String> = members.into_iter().filter(|m| *m != cx.me.id).collect();
    set.sort();
    set.dedup();
    if set.is_empty() {
        return Err(bad("a group needs at least one other member"));
    }
    check_new_members(cx, max, 1, &set)?;
    set.push(cx.me.id.clone());
    Ok(NewConversation {
        channel: ChannelId::group(gid),
        title: name,
        creator: cx.me.id.clone(),
        client_id: Some(client_id),
        members: set,
    })
}

/// `create_group`.
pub async fn create_group(
    g: &Gateway,
    cx: Ctx<'_>,
    ack: Ack,
    client_id: String,
    name: String,
    members: Vec<String>,
) -> Result<Ack, CmdError> {
    let nc = decide_group(cx, g.cfg.max_group_members, client_id, name, members, &g.new_group_id())?;
    g.brake(cx.me, &nc.channel)?;
    g.take_send(&cx.me.id)?;
    let conv = timed("create_conversation", g.store.create_conversation(nc)).await?;
    announce(g, cx.dir, &conv, &conv.members).await;
    Ok(Ack { channel: Some(conv.channel), ..ack })
}

/// Decides `add_members`: the membership write, or `None` when all are members already.
pub fn decide_add(cx: Ctx<'_>, max: usize, a: &Access, members: Vec<String>) -> Result<Option<Write>, CmdError> {
    if !a.moderate {
        return Err(forbidden("only the group's creator adds members"));
    }
    let conv = a.conv.as_ref().ok_or_else(no_channel)?;
    let mut new: Vec<String> = members.into_iter().filter(|m| !conv.members.contains(m)).collect();
    new.sort();
    new.dedup();
    if new.is_empty() {
        return Ok(None);
    }
    check_new_members(cx, max, conv.members.len(), &new)?;
    Ok(Some(Write::Membership { channel: conv.channel.clone(), author: cx.me.id.clone(), members: new, joined: true }))
}

/// `add_members`.
pub async fn add_members(
    g: &Gateway,
    cx: Ctx<'_>,
    ack: Ack,
    channel: ChannelId,
    members: Vec<String>,
) -> Result<Ack, CmdError> {
    if channel.kind() != ChannelKind::Group {
        return Err(bad("members are added to group conversations only"));
    }
    let a = access::of(g, cx, &channel).await?;
    let Some(w) = decide_add(cx, g.cfg.max_group_members, &a, members)? else { return Ok(ack) };
    let Write::Membership { members: new, .. } = &w else { return Ok(ack) };
    let new = new.clone();
    let r = timed("write", g.store.write(w)).await?;
    if let Some(conv) = timed("conversation", g.store.conversation(&channel)).await? {
        announce(g, cx.dir, &conv, &new).await;
    }
    Ok(Ack { seq: Some(r.entry.seq), ..ack })
}

/// `leave` (groups).
pub async fn leave(g: &Gateway, cx: Ctx<'_>, ack: Ack, channel: ChannelId) -> Result<Ack, CmdError> {
    if channel.kind() != ChannelKind::Group {
        return Err(bad("only group conversations can be left"));
    }
    access::of(g, cx, &channel).await?;
    let w = Write::Membership {
        channel: channel.clone(),
        author: cx.me.id.clone(),
        members: vec![cx.me.id.clone()],
        joined: false,
    };
    let r = timed("write", g.store.write(w)).await?;
    g.publish(Topic::User(cx.me.id.clone()), ServerFrame::ChannelRemoved { channel });
    Ok(Ack { seq: Some(r.entry.seq), ..ack })
}

/// The member list of `conv`, with who is online (`online[i]` for `conv.members[i]`).
pub fn member_infos(dir: &Directory, conv: &Conversation, online: &[bool]) -> Vec<MemberInfo> {
    conv.members
        .iter()
        .zip(online.iter().copied().chain(std::iter::repeat(false)))
        .map(|(u, online)| {
            let rec = dir.user(u);
            MemberInfo {
                user: u.clone(),
                name: rec.map(|r| r.name.clone()).unwrap_or_else(|| "(compte supprimé)".into()),
                profile: rec.map(|r| r.profile.as_str().to_owned()).unwrap_or_default(),
                online,
            }
        })
        .collect()
}

/// `members`.
pub async fn members(g: &Gateway, cx: Ctx<'_>, ack: Ack, channel: ChannelId) -> Result<Ack, CmdError> {
    if !matches!(channel.kind(), ChannelKind::Direct | ChannelKind::Group) {
        return Err(bad("member lists exist for conversations only"));
    }
    let a = access::of(g, cx, &channel).await?;
    let conv = a.conv.ok_or_else(no_channel)?;
    let elsewhere = g.bus.online_elsewhere(conv.members.clone()).await;
    let online: Vec<bool> = conv
        .members
        .iter()
        .zip(elsewhere.iter().copied().chain(std::iter::repeat(false)))
        .map(|(u, far)| far || g.hub.online(u))
        .collect();
    Ok(Ack { members: member_infos(cx.dir, &conv, &online), ..ack })
}

/// `profiles`: the names the asker may know of (the directory's rule, one home:
/// [`preau_directory::may_see_profile`]); others are left out, unknown ids alike.
pub fn profiles(cx: Ctx<'_>, ack: Ack, users: Vec<String>) -> Result<Ack, CmdError> {
    if users.len() > preau_proto::MAX_PROFILES {
        return Err(bad(format!("at most {} users per profiles command", preau_proto::MAX_PROFILES)));
    }
    let mut seen = std::collections::HashSet::new();
    let profiles = users
        .iter()
        .filter(|u| seen.insert(u.as_str()))
        .filter_map(|u| cx.dir.user(u))
        .filter(|u| preau_directory::may_see_profile(cx.dir, cx.me, u))
        .map(|u| ProfileInfo { user: u.id.clone(), name: u.name.clone(), profile: u.profile.as_str().to_owned() })
        .collect();
    Ok(Ack { profiles, ..ack })
}

/// `typing`.
pub async fn typing(g: &Gateway, cx: Ctx<'_>, ack: Ack, channel: ChannelId) -> Result<Ack, CmdError> {
    if !matches!(channel.kind(), ChannelKind::Direct | ChannelKind::Group) {
        return Err(bad("typing is shown in conversations only"));
    }
    let a = access::of(g, cx, &channel).await?;
    if !a.post {
        return Err(may_not_post());
    }
    g.publish(Topic::Channel(channel.clone()), ServerFrame::Typing { channel, user: cx.me.id.clone() });
    Ok(ack)
}

/// What member `u` of a newly created (or joined) conversation sees of it: its title and
/// access. Nobody has posted in a new conversation yet, so a direct one's answer rule
/// starts from "has not written".
pub fn announcement(dir: &Directory, conv: &Conversation, u: &UserRec) -> (String, Access) {
    let post = match conv.kind {
        ChannelKind::Direct => {
            let other = conv.members.iter().find(|m| **m != u.id).and_then(|o| dir.user(o));
            may_post_direct(dir, u, other, false)
        }
        _ => true,
    };
    let moderate = conv.kind == ChannelKind::Group && conv.creator == u.id;
    let a = Access { read: true, post, create_thread: false, moderate, conv: None };
    (conversation_title(dir, &u.id, conv), a)
}

/// Tells each of `to` (members of `conv`) that they now see it; their sessions on
/// every node subscribe.
pub async fn announce(g: &Gateway, dir: &Directory, conv: &Conversation, to: &[String]) {
    for u in to {
        let Some(rec) = dir.user(u) else { continue };
        let (title, a) = announcement(dir, conv, rec);
        let info = access::channel_info(g, u, &conv.channel, title, &a).await;
        g.publish(Topic::User(u.clone()), ServerFrame::ChannelAdded { info });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use preau_directory::demo;

    fn dir() -> Directory {
        Directory::from_docs([demo::demo_doc()]).expect("demo")
    }

    #[test]
    fn open_direct_decisions() {
        let d = dir();
        let cx = |id: &str| Ctx { dir: &d, me: d.user(id).expect("user"), now_ms: 0 };
        let u = |id: &str| d.user(id);
        assert!(matches!(decide_open_direct(cx("t01"), u("pa051"), None), Ok(DirectPlan::Create(_))));
        let refused = |r: Result<DirectPlan, CmdError>| r.map_err(|e| e.code).err();
        assert_eq!(refused(decide_open_direct(cx("pa051"), u("t01"), None)), Some(ErrorCode::Forbidden));
        assert_eq!(refused(decide_open_direct(cx("t01"), None, None)), Some(ErrorCode::Forbidden), "unknown");
        assert_eq!(refused(decide_open_direct(cx("t01"), u("t01"), None)), Some(ErrorCode::Forbidden), "self");
        // An existing conversation is returned even where one could not write first.
        let conv = Conversation {
            channel: ChannelId::direct("pa051", "t01"),
            kind: ChannelKind::Direct,
            title: String::new(),
            creator: "t01".into(),
            members: vec!["pa051".into(), "t01".into()],
        };
        assert_eq!(
            decide_open_direct(cx("pa051"), u("t01"), Some(&conv)),
            Ok(DirectPlan::Existing(conv.channel.clone()))
        );
        // channel_added for that conversation: the parent may not post until answered.
        let (title, a) = announcement(&d, &conv, d.user("pa051").expect("parent"));
        assert!(!a.post);
        assert!(!title.is_empty());
        assert!(announcement(&d, &conv, d.user("t01").expect("teacher")).1.post);
    }

    #[test]
    fn group_decisions() {
        let d = dir();
        let cx = Ctx { dir: &d, me: d.user("e001").expect("pupil"), now_ms: 0 };
        let g = |members: &[&str], max| {
            decide_group(cx, max, "c1".into(), "Exposé".into(), members.iter().map(|m| m.to_string()).collect(), "ab")
                .map_err(|e| e.code)
        };
        let nc = g(&["e002", "e002", "e001"], 50).expect("classmate");
        assert_eq!(nc.members, vec!["e002".to_string(), "e001".to_string()]);
        assert_eq!(g(&["e001"], 50).err(), Some(ErrorCode::BadRequest), "only myself");
        assert_eq!(g(&["e026"], 50).err(), Some(ErrorCode::Forbidden), "another class");
        assert_eq!(g(&["e002", "e003"], 2).err(), Some(ErrorCode::GroupFull));
        let conv = Conversation {
            channel: ChannelId::group("ab"),
            kind: ChannelKind::Group,
            title: "Exposé".into(),
            creator: "e001".into(),
            members: vec!["e001".into(), "e002".into()],
        };
        let creator = Access { read: true, post: true, create_thread: false, moderate: true, conv: Some(conv) };
        assert_eq!(decide_add(cx, 50, &creator, vec!["e002".into()]), Ok(None), "already a member");
        assert!(matches!(decide_add(cx, 50, &creator, vec!["e003".into()]), Ok(Some(Write::Membership { .. }))));
        let member = Access { moderate: false, ..creator };
        assert!(decide_add(cx, 50, &member, vec!["e003".into()]).is_err());
    }

    #[test]
    fn member_list_marks_departed_accounts() {
        let d = dir();
        let conv = Conversation {
            channel: ChannelId::group("ab"),
            kind: ChannelKind::Group,
            title: String::new(),
            creator: "e001".into(),
            members: vec!["e001".into(), "gone".into()],
        };
        let m = member_infos(&d, &conv, &[true]);
        assert!(m[0].online && !m[1].online);
        assert_eq!(m[1].name, "(compte supprimé)");
    }
}
