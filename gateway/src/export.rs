//! A person's data, exported (the RGPD's right of access; docs/data-protection.md gives
//! the format): their directory record, their conversations with every message in them
//! (sent and received), their other posts (forums, announcements), their read markers,
//! and the moderation acts and reports about or by them. Written as a stream of JSON
//! chunks, a page of entries at a time, so a long history never sits whole in memory.

use crate::cmd::error::CmdError;
use crate::service::{Gateway, timed};
use bytes::Bytes;
use preau_proto::{ChannelId, Seq};
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The export's format name (a new major version when a field changes meaning).
pub const FORMAT: &str = "preau-export/1";
/// Entries read per store call.
const PAGE: u32 = 500;

/// A stream of JSON chunks; an `Err` ends it (the document is then incomplete).
pub type Chunks = mpsc::Receiver<Result<Bytes, std::io::Error>>;

impl Gateway {
    /// Starts the export of `user` of `school`; recorded in the audit trail as `actor`'s.
    pub fn export_person(self: &Arc<Self>, school: &str, user: &str, actor: &str) -> Chunks {
        let (tx, rx) = mpsc::channel(8);
        let (g, school, user, actor) = (self.clone(), school.to_owned(), user.to_owned(), actor.to_owned());
        tokio::spawn(async move {
            let out = tx.clone();
            if let Err(e) = g.write_export(&school, &user, &actor, &out).await {
                let _ = tx.send(Err(std::io::Error::other(e.message))).await;
            }
        });
        rx
    }

    async fn write_export(
        &self,
        school: &str,
        user: &str,
        actor: &str,
        tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) -> Result<(), CmdError> {
        let send = async |s: String| {
            tx.send(Ok(Bytes::from(s)))
                .await
                .map_err(|_| CmdError::new(preau_proto::ErrorCode::Internal, "export cancelled"))
        };
        let dir = self.dir();
        let record = dir.user(user).map(|u| {
            json!({ "id": u.id, "school": u.school, "profile": u.profile.as_str(), "name": u.name,
                    "classes": u.classes, "groups": u.groups, "children": u.children, "parents": u.parents })
        });
        let head = json!({ "format": FORMAT, "generated_at_ms": self.clock.now_ms(), "user": user, "school": school,
                           "directory_record": record });
        let head = head.to_string();
        send(format!("{},\"conversations\":[", head.trim_end_matches('}'))).await?;
        let convs = timed("conversations_of", self.store.conversations_of(user)).await?;
        let mut seen: HashSet<ChannelId> = HashSet::new();
        for (i, c) in convs.iter().enumerate() {
            seen.insert(c.channel.clone());
            let meta = json!({ "channel": c.channel, "kind": c.kind, "title": c.title, "creator": c.creator,
                               "members": c.members });
            let meta = meta.to_string();
            send(format!("{}{},\"entries\":[", if i > 0 { "," } else { "" }, meta.trim_end_matches('}'))).await?;
            let mut after: Seq = 0;
            let mut first = true;
            loop {
                let (page, more) = timed("history", self.store.history(&c.channel, Some(after), None, PAGE)).await?;
                let Some(last) = page.last() else { break };
                after = last.seq;
                let mut chunk = String::new();
                for e in &page {
                    if !std::mem::take(&mut first) {
                        chunk.push(',');
                    }
                    chunk.push_str(&serde_json::to_string(e).unwrap_or_default());
                }
                send(chunk).await?;
                if !more {
                    break;
                }
            }
            send("]}".into()).await?;
        }
        send("],\"posts\":[".into()).await?;
        let mut after: Option<(ChannelId, Seq)> = None;
        let mut first = true;
        loop {
            let page = timed("authored", self.store.authored(user, after.clone(), PAGE)).await?;
            let Some((ch, e)) = page.last() else { break };
            after = Some((ch.clone(), e.seq));
            let mut chunk = String::new();
            for (ch, e) in page.iter().filter(|(ch, _)| !seen.contains(ch)) {
                if !std::mem::take(&mut first) {
                    chunk.push(',');
                }
                chunk.push_str(&json!({ "channel": ch, "entry": e }).to_string());
            }
            send(chunk).await?;
        }
        let markers = timed("read_markers_of", self.store.read_markers_of(user)).await?;
        let markers: Vec<_> = markers.iter().map(|(c, s)| json!({ "channel": c, "seq": s })).collect();
        send(format!("],\"read_markers\":{}", serde_json::Value::Array(markers))).await?;
        // Moderation acts and reports of the school that concern them, whole.
        let quoted = serde_json::to_string(user).unwrap_or_default();
        for (kind, field) in [(crate::cmd::audit::KIND, "moderation"), (crate::cmd::report::KIND, "reports")] {
            let mut docs = Vec::new();
            let mut since = 0;
            loop {
                let page = timed("records", self.store.records(kind, school, since, 1000)).await?;
                let n = page.len();
                for r in &page {
                    if r.doc.contains(&quoted) {
                        docs.push(serde_json::from_str::<serde_json::Value>(&r.doc).unwrap_or_default());
                    }
                }
                match page.last() {
                    Some(last) if n == 1000 && last.at_ms + 1 > since => since = last.at_ms + 1,
                    _ => break,
                }
            }
            send(format!(",\"{field}\":{}", serde_json::Value::Array(docs))).await?;
        }
        send("}".into()).await?;
        let who = crate::purge::pseudonym(&self.salt(school).await?, user);
        let e = crate::cmd::audit::AuditEntry::new(
            self.clock.now_ms(),
            school,
            actor,
            "personal_data_exported",
            format!("data of {who} exported (RGPD access request)"),
        );
        crate::cmd::audit::record(self, e).await;
        Ok(())
    }
}
