//! The directory import document. One JSON file may hold several schools; every class,
//! group, user and link names its school (links through the child). See
//! `docs/directory.md` for the format with an example.

use serde::{Deserialize, Serialize};

/// A user's profile, as the national directory exports name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Élève.
    Pupil,
    /// Responsable légal.
    Parent,
    /// Enseignant.
    Teacher,
    /// Personnel (vie scolaire, direction, secrétariat).
    Staff,
    /// Administrateur ENT of the school.
    Admin,
}

impl Profile {
    /// Every profile, in table order.
    pub const ALL: [Profile; 5] = [Profile::Pupil, Profile::Parent, Profile::Teacher, Profile::Staff, Profile::Admin];

    /// The profile's name on the wire and in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Pupil => "pupil",
            Profile::Parent => "parent",
            Profile::Teacher => "teacher",
            Profile::Staff => "staff",
            Profile::Admin => "admin",
        }
    }

    /// Parses a profile name.
    pub fn parse(s: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// How far a profile may write first to another profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reach {
    /// To nobody of that profile.
    Nobody,
    /// Only to those related (classmates, own parents or children, teachers of one's
    /// classes or of one's children's classes).
    Related,
    /// To everyone of that profile in the school.
    School,
}

/// A school's change to the default table for one (sender, recipient) pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    /// Sender profile.
    pub from: Profile,
    /// Recipient profile.
    pub to: Profile,
    /// What the school allows.
    pub reach: Reach,
}

/// A school's communication settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyConfig {
    /// Pairs opened or closed relative to the default table.
    #[serde(default)]
    pub overrides: Vec<Override>,
    /// Parents may read their children's class forums.
    #[serde(default)]
    pub parents_read_forums: bool,
    /// When pupils and parents may write in conversations; always when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discussion_hours: Option<crate::hours::DiscussionHours>,
}

/// A school (établissement), keyed by its UAI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchoolDoc {
    /// UAI, e.g. `0751234A`.
    pub uai: String,
    /// Name.
    pub name: String,
    /// Communication settings.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// The school's choices on personal data (docs/data-protection.md); absent ones
    /// take the platform's (the gateway's flags).
    #[serde(default, skip_serializing_if = "DataRules::is_default")]
    pub data: DataRules,
}

/// A school's choices on the personal data of people who leave.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataRules {
    /// Days between a departure and the purge (at most 3650).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub departed_retention_days: Option<u32>,
    /// A departed person's shared posts stay pseudonymised (true) or lose their text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_shared_posts: Option<bool>,
    /// Direct conversations go even when the other side stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_direct_always: Option<bool>,
    /// Days the messages of the school's class forums and announcements are kept (0:
    /// kept); at most 3650.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_retention_days: Option<u32>,
}

impl DataRules {
    fn is_default(&self) -> bool {
        *self == DataRules::default()
    }
}

/// A class (division).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassDoc {
    /// Id, unique within its school (another school may have the same).
    pub id: String,
    /// UAI of its school.
    pub school: String,
    /// Name, e.g. `6e A`.
    pub name: String,
}

/// A teaching group (groupe), e.g. an option shared by pupils of several classes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDoc {
    /// Id, unique within its school (another school may have the same).
    pub id: String,
    /// UAI of its school.
    pub school: String,
    /// Name.
    pub name: String,
}

/// A user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDoc {
    /// Id, unique across the directory (`[A-Za-z0-9_.-]{1,64}`).
    pub id: String,
    /// UAI of the school.
    pub school: String,
    /// Profile.
    pub profile: Profile,
    /// Display name.
    pub name: String,
    /// Classes: a pupil's class, the classes a teacher teaches. Others leave it empty.
    #[serde(default)]
    pub classes: Vec<String>,
    /// Teaching groups of a pupil or teacher.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// A parent-child link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkDoc {
    /// The parent's user id.
    pub parent: String,
    /// The child's user id.
    pub child: String,
}

/// An import document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryDoc {
    /// Schools. Importing replaces each listed school's classes, groups, users and links.
    #[serde(default)]
    pub schools: Vec<SchoolDoc>,
    /// Classes.
    #[serde(default)]
    pub classes: Vec<ClassDoc>,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<GroupDoc>,
    /// Users.
    #[serde(default)]
    pub users: Vec<UserDoc>,
    /// Parent-child links.
    #[serde(default)]
    pub links: Vec<LinkDoc>,
}
