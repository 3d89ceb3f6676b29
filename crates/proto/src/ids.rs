//! Identifiers. Everything here is parsed from untrusted input and validated.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Position of an entry in a channel's log. Gapless, starting at 1.
pub type Seq = u64;

/// A user id as the directory knows it (`[A-Za-z0-9_.-]{1,64}`).
pub type UserId = String;

/// Longest id accepted for users, classes, groups and schools.
pub const MAX_ID_LEN: usize = 64;

/// Whether `s` is a valid directory id: 1 to 64 of `[A-Za-z0-9_.-]`.
///
/// The restricted alphabet keeps `:` free as the channel id separator.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Why a channel id was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    /// The prefix is not one of `forum`, `ann`, `dm`, `grp`.
    #[error("unknown channel kind")]
    UnknownKind,
    /// A part is empty, too long, or has characters outside `[A-Za-z0-9_.-]`.
    #[error("malformed channel id")]
    Malformed,
}

/// What a channel is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// A class forum: threads, posts and replies, moderated by the class's teachers.
    Forum,
    /// Announcements of a class: written by teachers and staff, read by pupils and parents.
    Announcements,
    /// A conversation between two users.
    Direct,
    /// A conversation of up to the group limit.
    Group,
}

/// A channel id: `forum:<school>:<class>`, `ann:<school>:<class>`, `dm:<user>:<user>`
/// (sorted), `grp:<id>`.
///
/// Class channels name their school (its UAI): class ids are a school's own (every collège
/// has a `6A`), so `forum:0750001A:6A` and `forum:0930002B:6A` are two channels, in the
/// store, the hub, the bus and the policy alike. User and group ids are platform-wide.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ChannelId(String);

/// On the wire a channel id is a string; the schema says which strings.
impl schemars::JsonSchema for ChannelId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ChannelId".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // The id alphabet and length of [`valid_id`], said once.
        let id = format!("[A-Za-z0-9_.-]{{1,{MAX_ID_LEN}}}");
        let pattern = format!("^((forum|ann):{id}:{id}|dm:{id}:{id}|grp:{id})$");
        schemars::json_schema!({
            "type": "string",
            "description": format!("`forum:<school>:<class>`, `ann:<school>:<class>`, `dm:<user>:<user>` (the two ids sorted), or `grp:<id>`; every id part is 1 to {MAX_ID_LEN} of [A-Za-z0-9_.-]."),
            "pattern": pattern,
            "maxLength": 200
        })
    }
}

impl ChannelId {
    /// Parses and validates a channel id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let (kind, rest) = s.split_once(':').ok_or(IdError::Malformed)?;
        match kind {
            "forum" | "ann" => {
                let (school, class) = rest.split_once(':').ok_or(IdError::Malformed)?;
                if !valid_id(school) || !valid_id(class) {
                    return Err(IdError::Malformed);
                }
            }
            "grp" => {
                if !valid_id(rest) {
                    return Err(IdError::Malformed);
                }
            }
            "dm" => {
                let (a, b) = rest.split_once(':').ok_or(IdError::Malformed)?;
                if !valid_id(a) || !valid_id(b) || a >= b {
                    return Err(IdError::Malformed);
                }
            }
            _ => return Err(IdError::UnknownKind),
        }
        Ok(ChannelId(s.to_owned()))
    }

    /// The forum of a school's class.
    pub fn forum(school: &str, class: &str) -> Self {
        ChannelId(format!("forum:{school}:{class}"))
    }

    /// The announcements channel of a school's class.
    pub fn announcements(school: &str, class: &str) -> Self {
        ChannelId(format!("ann:{school}:{class}"))
    }

    /// The direct conversation between two users (order does not matter).
    pub fn direct(a: &str, b: &str) -> Self {
        let (x, y) = if a < b { (a, b) } else { (b, a) };
        ChannelId(format!("dm:{x}:{y}"))
    }

    /// A group conversation.
    pub fn group(id: &str) -> Self {
        ChannelId(format!("grp:{id}"))
    }

    /// The kind, from the prefix.
    pub fn kind(&self) -> ChannelKind {
        match self.0.split_once(':').map(|(k, _)| k) {
            Some("forum") => ChannelKind::Forum,
            Some("ann") => ChannelKind::Announcements,
            Some("dm") => ChannelKind::Direct,
            _ => ChannelKind::Group,
        }
    }

    /// The school and class of a forum or announcements channel.
    pub fn school_class(&self) -> Option<(&str, &str)> {
        match self.kind() {
            ChannelKind::Forum | ChannelKind::Announcements => {
                self.0.split_once(':').and_then(|(_, r)| r.split_once(':'))
            }
            _ => None,
        }
    }

    /// The class of a forum or announcements channel (within its school).
    pub fn class(&self) -> Option<&str> {
        self.school_class().map(|(_, c)| c)
    }

    /// The school of a forum or announcements channel.
    pub fn school(&self) -> Option<&str> {
        self.school_class().map(|(s, _)| s)
    }

    /// The two users of a direct conversation.
    pub fn direct_pair(&self) -> Option<(&str, &str)> {
        match self.kind() {
            ChannelKind::Direct => self.0.split_once(':').and_then(|(_, r)| r.split_once(':')),
            _ => None,
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ChannelId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        ChannelId::parse(&s)
    }
}

impl From<ChannelId> for String {
    fn from(c: ChannelId) -> String {
        c.0
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind() {
        assert_eq!(ChannelId::parse("forum:0750001A:6A").map(|c| c.kind()), Ok(ChannelKind::Forum));
        assert_eq!(ChannelId::parse("ann:0750001A:6A").map(|c| c.kind()), Ok(ChannelKind::Announcements));
        assert_eq!(ChannelId::parse("dm:a:b").map(|c| c.kind()), Ok(ChannelKind::Direct));
        assert_eq!(ChannelId::parse("grp:x1").map(|c| c.kind()), Ok(ChannelKind::Group));
        assert_eq!(ChannelId::direct("b", "a").as_str(), "dm:a:b");
        let f = ChannelId::forum("0750001A", "6A");
        assert_eq!((f.school(), f.class(), f.as_str()), (Some("0750001A"), Some("6A"), "forum:0750001A:6A"));
        assert_ne!(f, ChannelId::forum("0930002B", "6A"), "two schools' 6A are two channels");
        assert_eq!(ChannelId::group("x").class(), None);
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            "",
            "forum",
            "forum:",
            "forum:6A",
            "ann:6A",
            "forum:S:",
            "x:y",
            "dm:b:a",
            "dm:a:a",
            "dm:a",
            "grp:a b",
            "forum:S:é",
        ] {
            assert!(ChannelId::parse(bad).is_err(), "{bad}");
        }
        let long = format!("grp:{}", "a".repeat(65));
        assert_eq!(ChannelId::parse(&long), Err(IdError::Malformed));
    }
}

/// Most breakout groups of a class (`g1`..`g20`).
pub const MAX_BREAKOUT_GROUPS: usize = 20;

/// Whether `s` names a breakout group of a class (`g1`..`g20`): its live room is
/// `class:<class>~<s>`, a ticket the gateway gives for `?group=<s>`.
pub fn valid_breakout_group(s: &str) -> bool {
    // Digits only: `parse` would take a sign ("g+1").
    let Some(n) = s.strip_prefix('g').filter(|n| !n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit())) else {
        return false;
    };
    n.parse::<usize>().is_ok_and(|n| (1..=MAX_BREAKOUT_GROUPS).contains(&n))
}

#[cfg(test)]
mod breakout_tests {
    #[test]
    fn group_names() {
        use super::valid_breakout_group as v;
        assert!(v("g1") && v("g20"));
        assert!(!v("g0") && !v("g21") && !v("g01") && !v("x1") && !v("g") && !v("g+1") && !v("g-1"));
    }
}
