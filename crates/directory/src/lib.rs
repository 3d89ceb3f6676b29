//! The school directory and the communication policy: who may write to whom, and who may
//! read, post in and moderate each channel. Everything here is pure data and pure
//! functions, so the policy is table-tested in microseconds.
//!
//! # Layout
//! - [`model`]: the import document ([`DirectoryDoc`]): schools with their policy
//!   configuration, classes, groups, users and parent-child links, as JSON.
//! - [`index`]: [`Directory`], the validated, indexed in-memory view built from one
//!   document per school; re-importing a school replaces its part.
//! - [`policy`]: the default who-may-write-to-whom table of CONTEXT.md, school overrides,
//!   and the channel access rules.
//! - [`hours`]: discussion hours in the school's time zone.
//! - [`demo`]: the demo school loaded on a first development start.

pub mod demo;
pub mod hours;
pub mod index;
pub mod model;
pub mod policy;

pub use index::{Directory, DirectoryError, UserRec};
pub use model::{
    ClassDoc, DataRules, DirectoryDoc, GroupDoc, LinkDoc, Override, PolicyConfig, Profile, Reach, SchoolDoc, UserDoc,
};
pub use policy::{
    ASSEMBLY, ChannelAccess, LiveRole, class_access, class_channels, live_role, may_post_direct, may_see_profile,
    may_write_first, room_role,
};
