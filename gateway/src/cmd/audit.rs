//! The moderation audit trail: every moderation act (a post of someone else deleted, a
//! mute, a lock or pin, a suspension, a report handled, a directory import) is recorded
//! with who, when, what, and the original content of what was removed, readable by the
//! school's direction and the operator (`GET /admin/audit`), kept `--audit-retention-days`.

use crate::service::{Gateway, timed};
use preau_proto::{ChannelId, Seq};
use preau_store::Record;
use serde::{Deserialize, Serialize};

/// The store's record kind.
pub const KIND: &str = "audit";
/// The school key of platform-wide acts.
pub const PLATFORM: &str = "*";

/// One moderation act.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When, milliseconds since the epoch.
    pub at_ms: i64,
    /// The school concerned (`*` for the platform).
    pub school: String,
    /// Who acted (a user id, or `operator`).
    pub actor: String,
    /// `delete`, `mute`, `thread_state`, `suspension`, `report_closed`, `directory_import`.
    pub action: String,
    /// The channel, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ChannelId>,
    /// The entry acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<Seq>,
    /// The person acted on (the author of a deleted post, a muted pupil).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// What was done, in plain words.
    pub detail: String,
    /// The original content of what was removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
}

impl AuditEntry {
    /// An entry of `action` by `actor` in `school` at `at_ms`.
    pub fn new(at_ms: i64, school: &str, actor: &str, action: &str, detail: impl Into<String>) -> Self {
        AuditEntry {
            at_ms,
            school: school.to_owned(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            channel: None,
            seq: None,
            subject: None,
            detail: detail.into(),
            original: None,
        }
    }
}

/// Records an act. The act is already done: a failure to record it is logged for a
/// person to look at, never turned into a failure of the act.
pub async fn record(g: &Gateway, e: AuditEntry) {
    let Ok(doc) = serde_json::to_string(&e) else { return };
    let id = format!("{:013}-{:016x}", e.at_ms, rand::random::<u64>());
    let r = Record { kind: KIND.into(), school: e.school.clone(), id, at_ms: e.at_ms, doc };
    if let Err(err) = timed("put_record", g.store.put_record(r)).await {
        tracing::error!(error = %err, action = %e.action, "moderation act not recorded in the audit trail");
    }
}

/// The trail of `school` since `since_ms`, oldest first.
pub async fn list(g: &Gateway, school: &str, since_ms: i64, limit: u32) -> Result<Vec<AuditEntry>, super::CmdError> {
    let recs = timed("records", g.store.records(KIND, school, since_ms, limit)).await?;
    Ok(recs.into_iter().filter_map(|r| serde_json::from_str(&r.doc).ok()).collect())
}
