//! The communication policy (cloisonnement). Pure functions of the directory.
//!
//! Who may write first to whom is the table of CONTEXT.md, which a school may open or
//! close pair by pair ([`crate::PolicyConfig::overrides`]). Anyone may answer a message
//! sent to them: the gateway allows a post in a direct conversation when the other member
//! has written in it, and in a group when the poster is a member (the creator was allowed
//! to write to every member).

use crate::index::{Directory, UserRec};
use crate::model::{PolicyConfig, Profile, Reach};

/// The default reach of each (sender, recipient) pair; `admin` is treated as `staff`.
pub fn default_reach(from: Profile, to: Profile) -> Reach {
    use Profile::*;
    use Reach::*;
    match (from, to) {
        (Teacher | Staff | Admin, _) => School,
        (Pupil, Pupil | Parent | Teacher) => Related,
        (Pupil, Staff | Admin) => School,
        (Parent, Pupil | Teacher) => Related,
        (Parent, Parent) => Nobody,
        (Parent, Staff | Admin) => School,
    }
}

/// The reach of a pair in a school, after its overrides (the last matching one wins).
pub fn reach(cfg: &PolicyConfig, from: Profile, to: Profile) -> Reach {
    cfg.overrides
        .iter()
        .rev()
        .find(|o| o.from == from && o.to == to)
        .map(|o| o.reach)
        .unwrap_or_else(|| default_reach(from, to))
}

/// The classes and groups a user belongs to, or a parent's children belong to.
fn contexts<'a>(dir: &'a Directory, u: &'a UserRec) -> Vec<&'a str> {
    let mut v: Vec<&str> = u.classes.iter().chain(u.groups.iter()).map(String::as_str).collect();
    if u.profile == Profile::Parent {
        for c in u.children.iter().filter_map(|c| dir.user(c)) {
            v.extend(c.classes.iter().chain(c.groups.iter()).map(String::as_str));
        }
    }
    v
}

/// Whether two users are related in the sense of the table's restricted cells:
/// a pupil and a parent only through a parent-child link; everyone else by sharing a class
/// or group (a parent through their children).
pub fn related(dir: &Directory, a: &UserRec, b: &UserRec) -> bool {
    match (a.profile, b.profile) {
        (Profile::Pupil, Profile::Parent) => a.parents.contains(&b.id),
        (Profile::Parent, Profile::Pupil) => a.children.contains(&b.id),
        _ => {
            let ca = contexts(dir, a);
            let cb = contexts(dir, b);
            ca.iter().any(|x| cb.contains(x))
        }
    }
}

/// Whether `me` may learn `other`'s name and profile (`profiles`: authors and readers
/// shown by name). Within one school only: its teachers, staff and admins are known to
/// all; a pupil to those who share a class or group with them (a parent through their
/// children) and to the school's adults; a parent to their children and the school's
/// adults, never to other parents or other pupils.
pub fn may_see_profile(dir: &Directory, me: &UserRec, other: &UserRec) -> bool {
    if me.id == other.id {
        return true;
    }
    if me.school != other.school {
        return false;
    }
    let adult = matches!(me.profile, Profile::Teacher | Profile::Staff | Profile::Admin);
    match other.profile {
        Profile::Teacher | Profile::Staff | Profile::Admin => true,
        Profile::Parent => adult || (me.profile == Profile::Pupil && me.parents.contains(&other.id)),
        Profile::Pupil => {
            adult || {
                let mine = contexts(dir, me);
                contexts(dir, other).iter().any(|c| mine.contains(c))
            }
        }
    }
}

/// Whether `from` may start a conversation with, or add to a group, `to`.
pub fn may_write_first(dir: &Directory, from: &UserRec, to: &UserRec) -> bool {
    if from.id == to.id || from.school != to.school {
        return false;
    }
    match reach(&dir.policy(&from.school), from.profile, to.profile) {
        Reach::Nobody => false,
        Reach::School => true,
        Reach::Related => related(dir, from, to),
    }
}

/// Whether `me` may post in their direct conversation with `other`: they may write to
/// `other` first, or `other` has written in it ("anyone may answer a message sent to
/// them"). A conversation whose other member left the directory takes no more posts.
///
/// The one home of this rule: `send`, `sync`, `channel_added` and `open_direct` all
/// answer from it.
pub fn may_post_direct(dir: &Directory, me: &UserRec, other: Option<&UserRec>, other_has_posted: bool) -> bool {
    other.is_some_and(|o| other_has_posted || may_write_first(dir, me, o))
}

/// What a user may do in a class's forum or announcements channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelAccess {
    /// Sees the channel and its contents.
    pub read: bool,
    /// May post (in a forum: in open threads, unless muted).
    pub post: bool,
    /// May open forum threads.
    pub create_thread: bool,
    /// May delete any post, lock and pin threads, mute pupils, see read receipts.
    pub moderate: bool,
}

/// Access of `u` to the forum (`announcements == false`) or announcements of `school`'s
/// `class`. Nobody reaches another school's class channels.
pub fn class_access(dir: &Directory, u: &UserRec, school: &str, class: &str, announcements: bool) -> ChannelAccess {
    if school != u.school {
        return ChannelAccess::default();
    }
    let Some(c) = dir.class(school, class) else {
        return ChannelAccess::default();
    };
    let teaches = u.profile == Profile::Teacher && c.teachers.contains(&u.id);
    let in_class = u.profile == Profile::Pupil && c.pupils.contains(&u.id);
    let child_in = u.profile == Profile::Parent && u.children.iter().any(|ch| c.pupils.contains(ch));
    let school_wide = matches!(u.profile, Profile::Staff | Profile::Admin);
    if announcements {
        let author = teaches || school_wide;
        ChannelAccess { read: author || in_class || child_in, post: author, create_thread: false, moderate: author }
    } else {
        let parents_read = dir.policy(&u.school).parents_read_forums;
        ChannelAccess {
            read: teaches || school_wide || in_class || (child_in && parents_read),
            post: teaches || school_wide || in_class,
            create_thread: teaches || school_wide,
            moderate: teaches || u.profile == Profile::Admin,
        }
    }
}

/// A role in a class's live session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiveRole {
    /// A teacher of the class hosts.
    Host,
    /// A pupil of the class takes part.
    Participant,
    /// Staff and admins of the school may look on.
    Observer,
}

impl LiveRole {
    /// The role's name in room tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            LiveRole::Host => "host",
            LiveRole::Participant => "participant",
            LiveRole::Observer => "observer",
        }
    }
}

/// The role `u` gets in the live session of `class`, or `None`: everyone else (parents,
/// other classes, other schools) is refused.
pub fn live_role(dir: &Directory, u: &UserRec, class: &str) -> Option<LiveRole> {
    let c = dir.class(&u.school, class)?;
    match u.profile {
        Profile::Teacher if c.teachers.contains(&u.id) => Some(LiveRole::Host),
        Profile::Pupil if c.pupils.contains(&u.id) => Some(LiveRole::Participant),
        Profile::Staff | Profile::Admin => Some(LiveRole::Observer),
        _ => None,
    }
}

/// The live room `class` names: `assembly` is the whole school's assembly, where the head
/// teacher (staff or admin) hosts and teachers and pupils take part; any other name is a
/// class ([`live_role`]). Parents never join either.
pub fn room_role(dir: &Directory, u: &UserRec, class: &str) -> Option<(String, LiveRole)> {
    if class == ASSEMBLY {
        let role = match u.profile {
            Profile::Staff | Profile::Admin => LiveRole::Host,
            Profile::Teacher | Profile::Pupil => LiveRole::Participant,
            _ => return None,
        };
        return Some((format!("assembly:{}", u.school), role));
    }
    live_role(dir, u, class).map(|r| (format!("class:{class}"), r))
}

/// The name of the school assembly's live room in `POST /rooms/{class}/token`.
pub const ASSEMBLY: &str = "assembly";

/// The classes whose channels `u` may read: (class id, forum readable, announcements
/// readable).
pub fn class_channels(dir: &Directory, u: &UserRec) -> Vec<(String, bool, bool)> {
    dir.classes_of(&u.school)
        .into_iter()
        .filter_map(|c| {
            let f = class_access(dir, u, &u.school, &c.id, false).read;
            let a = class_access(dir, u, &u.school, &c.id, true).read;
            (f || a).then(|| (c.id.clone(), f, a))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo;
    use crate::model::{DirectoryDoc, Override};

    fn dir_with(doc: DirectoryDoc) -> Directory {
        Directory::from_docs([doc]).expect("valid")
    }

    /// Demo users by role: `e001` (6A, parents pa001 and pa076), `e002` (6A), `e026` (5B),
    /// `pa001` (parent of e001 in 6A and e026 in 5B), `pa002` (parent of e002 in 6A),
    /// `pa051` (parent of e051 in 4C), `t01` (teaches 6A and 5B), `t03` (teaches 4C only),
    /// `s01` (staff).
    fn check(dir: &Directory, from: &str, to: &str) -> bool {
        let f = dir.user(from).expect("from");
        let t = dir.user(to).expect("to");
        may_write_first(dir, f, t)
    }

    #[test]
    fn who_may_see_whose_name() {
        let d = dir_with(demo::demo_doc());
        let sees = |a: &str, b: &str| may_see_profile(&d, d.user(a).expect("a"), d.user(b).expect("b"));
        // Adults of the school are known to all; pupils to classmates and the school's
        // adults; parents to their children and the school's adults only.
        assert!(sees("e001", "t03") && sees("pa051", "s01") && sees("e001", "e001"));
        assert!(sees("e001", "e002") && !sees("e001", "e026") && !sees("e001", "e051"));
        assert!(sees("pa002", "e001"), "a parent reading the class forum sees classmates' names");
        assert!(!sees("pa051", "e001"), "not another class's pupils");
        assert!(sees("e001", "pa001") && !sees("e002", "pa001"), "a pupil knows their own parents only");
        assert!(!sees("pa002", "pa001"), "parents never learn other parents' names");
        assert!(sees("t03", "pa001") && sees("t03", "e001"));
    }

    /// Every row of the CONTEXT.md table, each cell allowed and, where it is restricted,
    /// denied.
    #[test]
    fn the_default_table() {
        let d = dir_with(demo::demo_doc());
        let rows: &[(&str, &str, bool, &str)] = &[
            // teacher row: every pupil, every parent, all teachers, all staff
            ("t01", "e001", true, "teacher -> pupil of own class"),
            ("t03", "e001", true, "teacher -> pupil of another class"),
            ("t03", "pa001", true, "teacher -> any parent"),
            ("t01", "t03", true, "teacher -> teacher"),
            ("t01", "s01", true, "teacher -> staff"),
            // staff row: all
            ("s01", "e051", true, "staff -> pupil"),
            ("s01", "pa051", true, "staff -> parent"),
            ("s01", "t03", true, "staff -> teacher"),
            ("s01", "s02", true, "staff -> staff"),
            // pupil row
            ("e001", "e002", true, "pupil -> classmate"),
            ("e001", "e026", false, "pupil -> pupil of another class"),
            ("e001", "pa001", true, "pupil -> own parent"),
            ("e001", "pa002", false, "pupil -> classmate's parent"),
            ("e001", "t01", true, "pupil -> teacher of own class"),
            ("e001", "t03", false, "pupil -> teacher not of own class"),
            ("e001", "s01", true, "pupil -> staff"),
            // parent row
            ("pa001", "e001", true, "parent -> own child"),
            ("pa001", "e026", true, "parent -> own other child"),
            ("pa001", "e002", false, "parent -> another family's child"),
            ("pa001", "pa002", false, "parent -> other parent"),
            ("pa001", "pa076", false, "parent -> co-parent (no parent-to-parent by default)"),
            ("pa001", "t01", true, "parent -> teacher of a child's class"),
            ("pa051", "t01", false, "parent -> teacher not of the child's class"),
            ("pa051", "t03", true, "parent -> teacher of the child's class (4C)"),
            ("pa001", "s02", true, "parent -> staff"),
            // nobody writes to themselves
            ("t01", "t01", false, "self"),
        ];
        for (from, to, allowed, what) in rows {
            assert_eq!(check(&d, from, to), *allowed, "{what}: {from} -> {to}");
        }
    }

    #[test]
    fn direct_posting_is_writing_first_or_answering() {
        let d = dir_with(demo::demo_doc());
        let u = |id: &str| d.user(id).expect("user");
        // pa051 may not write first to t01, but may answer once t01 has written.
        assert!(!may_post_direct(&d, u("pa051"), Some(u("t01")), false));
        assert!(may_post_direct(&d, u("pa051"), Some(u("t01")), true));
        assert!(may_post_direct(&d, u("t01"), Some(u("pa051")), false));
        // The other member left the directory: no more posts, even as an answer.
        assert!(!may_post_direct(&d, u("t01"), None, true));
    }

    #[test]
    fn school_overrides_open_and_close_pairs() {
        let mut doc = demo::demo_doc();
        doc.schools[0].policy.overrides = vec![
            Override { from: Profile::Parent, to: Profile::Parent, reach: Reach::Related },
            Override { from: Profile::Pupil, to: Profile::Pupil, reach: Reach::Nobody },
            Override { from: Profile::Teacher, to: Profile::Parent, reach: Reach::Related },
        ];
        let d = dir_with(doc);
        assert!(check(&d, "pa001", "pa002"), "parents of the same class, once opened");
        assert!(!check(&d, "pa051", "pa002"), "parents of different classes stay apart");
        assert!(!check(&d, "e001", "e002"), "pupil messaging closed");
        assert!(check(&d, "t01", "pa001"), "teacher -> parent of own class");
        assert!(!check(&d, "t03", "pa002"), "teacher -> parent of another class, once closed");
    }

    #[test]
    fn other_schools_are_out_of_reach() {
        let mut other = demo::demo_doc();
        other.schools[0].uai = "0999999Z".into();
        for c in &mut other.classes {
            c.school = "0999999Z".into();
            c.id = format!("x{}", c.id);
        }
        for g in &mut other.groups {
            g.school = "0999999Z".into();
            g.id = format!("x{}", g.id);
        }
        for u in &mut other.users {
            u.school = "0999999Z".into();
            u.id = format!("x{}", u.id);
            u.classes = u.classes.iter().map(|c| format!("x{c}")).collect();
            u.groups = u.groups.iter().map(|c| format!("x{c}")).collect();
        }
        for l in &mut other.links {
            l.parent = format!("x{}", l.parent);
            l.child = format!("x{}", l.child);
        }
        let d = Directory::from_docs([demo::demo_doc(), other]).expect("two schools");
        assert!(!check(&d, "s01", "xe001"), "staff of one school -> pupil of another");
        assert!(!check(&d, "t01", "xt01"));
    }

    #[test]
    fn class_channel_access_table() {
        let d = dir_with(demo::demo_doc());
        let a = |u: &str, class: &str, ann: bool| class_access(&d, d.user(u).expect("user"), demo::SCHOOL, class, ann);
        let full = ChannelAccess { read: true, post: true, create_thread: true, moderate: true };
        let reader = ChannelAccess { read: true, ..ChannelAccess::default() };
        let none = ChannelAccess::default();
        // forums
        assert_eq!(a("t01", "6A", false), full, "teacher of the class moderates its forum");
        assert_eq!(a("t03", "6A", false), none, "teacher of another class");
        assert_eq!(a("e001", "6A", false), ChannelAccess { read: true, post: true, ..none }, "pupil of the class");
        assert_eq!(a("e026", "6A", false), none, "pupil of another class");
        assert_eq!(a("pa001", "6A", false), none, "parents do not read forums unless opened");
        assert_eq!(a("s01", "6A", false), ChannelAccess { moderate: false, ..full }, "staff posts, does not moderate");
        assert_eq!(a("ad01", "6A", false), full, "admin moderates");
        // announcements
        let author = ChannelAccess { read: true, post: true, create_thread: false, moderate: true };
        assert_eq!(a("t01", "6A", true), author);
        assert_eq!(a("s01", "6A", true), author);
        assert_eq!(a("e001", "6A", true), reader, "pupils read announcements");
        assert_eq!(a("pa001", "6A", true), reader, "parents read their children's announcements");
        assert_eq!(a("pa051", "6A", true), none, "other parents do not");
        assert_eq!(a("t03", "6A", true), none);
        assert_eq!(a("e001", "nope", true), none, "unknown class");

        let mut doc = demo::demo_doc();
        doc.schools[0].policy.parents_read_forums = true;
        let d2 = dir_with(doc);
        assert_eq!(class_access(&d2, d2.user("pa001").expect("pa001"), demo::SCHOOL, "6A", false), reader);
    }

    #[test]
    fn live_class_roles() {
        let d = dir_with(demo::demo_doc());
        let role = |u: &str, class: &str| live_role(&d, d.user(u).expect("user"), class);
        let rows = [
            ("t01", "6A", Some(LiveRole::Host), "teacher of the class hosts"),
            ("t03", "6A", None, "teacher of another class is refused"),
            ("e001", "6A", Some(LiveRole::Participant), "pupil of the class"),
            ("e026", "6A", None, "pupil of another class"),
            ("s01", "6A", Some(LiveRole::Observer), "staff observe"),
            ("ad01", "4C", Some(LiveRole::Observer), "admin observes"),
            ("pa001", "6A", None, "parents are refused, even their child's class"),
            ("t01", "nope", None, "unknown class"),
        ];
        for (u, c, want, what) in rows {
            assert_eq!(role(u, c), want, "{what}");
        }
    }

    #[test]
    fn assembly_roles() {
        let d = dir_with(demo::demo_doc());
        let role = |u: &str| room_role(&d, d.user(u).expect("user"), ASSEMBLY);
        assert_eq!(role("s01"), Some(("assembly:0750001A".into(), LiveRole::Host)), "the head teacher hosts");
        assert_eq!(role("ad01").map(|r| r.1), Some(LiveRole::Host));
        assert_eq!(role("t05").map(|r| r.1), Some(LiveRole::Participant));
        assert_eq!(role("e070").map(|r| r.1), Some(LiveRole::Participant), "every pupil of the school");
        assert_eq!(role("pa001"), None, "parents are not in the assembly");
        let class = room_role(&d, d.user("t01").expect("user"), "6A");
        assert_eq!(class, Some(("class:6A".into(), LiveRole::Host)));
    }

    #[test]
    fn class_channel_lists() {
        let d = dir_with(demo::demo_doc());
        let list = |u: &str| class_channels(&d, d.user(u).expect("user"));
        assert_eq!(list("e001"), vec![("6A".to_owned(), true, true)]);
        assert_eq!(list("pa001").len(), 2, "two children in two classes");
        assert!(list("pa001").iter().all(|(_, forum, ann)| !forum && *ann));
        assert_eq!(list("s01").len(), 3);
    }
}
