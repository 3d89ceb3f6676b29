//! The data lifecycle on ScyllaDB: a person's entries listed, a person erased, messages
//! expired by a school's retention, and the indexes these need, backfilled by `migrate`.
//!
//! Entries are found by their channel and seq only, so the write path keeps indexes:
//! `authored` (author → channel, seq), `mentions` (a user named by a membership entry),
//! `creators`, `user_mutes`, and `written_days` / `scope_days` (which channels of a scope
//! had entries written on a day, for retention). Each step below changes at most the
//! rows it was allowed and removes the index rows it has handled, so a step killed at any
//! point is resumed by the next one, and a second run finds nothing.

use super::{ScyllaStore, bucket, unavailable};
use crate::types::*;
use preau_proto::{ChannelId, Entry, EntryKind, Seq};
use scylla::client::session::Session;
use scylla::deserialize::row::DeserializeRow;
use scylla::response::{PagingState, PagingStateResponse};
use scylla::serialize::row::SerializeRow;

/// Milliseconds in a day (the granularity of `written_days`).
pub(super) const DAY_MS: i64 = 86_400_000;
/// Index rows read per query of a step.
const PAGE: u32 = 500;
/// The most rows a dry run reads from one index (it counts, so it never deletes).
const DRY_PAGE: u32 = 1_000_000;

/// The scope a channel is indexed under for retention: `dm:`, `grp:`, `forum:{school}:`,
/// `ann:{school}:` (the prefixes the purge expires by).
pub(super) fn scope(ch: &str) -> &str {
    let colons = if ch.starts_with("forum:") || ch.starts_with("ann:") { 2 } else { 1 };
    match ch.match_indices(':').nth(colons - 1) {
        Some((i, _)) => &ch[..=i],
        None => ch,
    }
}

impl ScyllaStore {
    /// Rows of an unprepared query (the lifecycle runs rarely: hourly, or on request).
    async fn typed<T>(&self, cql: String, v: impl SerializeRow) -> Result<Vec<T>, StoreError>
    where
        T: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        let r = self.session.query_unpaged(cql, v).await.map_err(unavailable)?;
        if !r.is_rows() {
            return Ok(Vec::new());
        }
        r.into_rows_result()
            .map_err(unavailable)?
            .rows::<T>()
            .map_err(unavailable)?
            .collect::<Result<_, _>>()
            .map_err(unavailable)
    }

    async fn exec(&self, cql: String, v: impl SerializeRow) -> Result<(), StoreError> {
        self.session.query_unpaged(cql, v).await.map(|_| ()).map_err(unavailable)
    }

    /// The seconds an entry has left to live (0: no TTL), or `None` when it is gone.
    /// Cells updated later carry this TTL, so a row never outlives itself in part.
    pub(super) async fn entry_ttl(&self, ch: &str, seq: Seq) -> Result<Option<i32>, StoreError> {
        let ks = &self.ks;
        let r: Vec<(Option<i32>,)> = self
            .typed(
                format!("SELECT TTL(kind) FROM {ks}.entries WHERE channel = ? AND bucket = ? AND seq = ?"),
                (ch, bucket(seq), seq as i64),
            )
            .await?;
        Ok(r.first().map(|t| t.0.unwrap_or(0)))
    }

    /// Removes one entry and the index rows that name it.
    async fn delete_entry(&self, ch: &str, e: &Entry) -> Result<(), StoreError> {
        let ks = &self.ks;
        let seq = e.seq as i64;
        self.exec(
            format!("DELETE FROM {ks}.entries WHERE channel = ? AND bucket = ? AND seq = ?"),
            (ch, bucket(e.seq), seq),
        )
        .await?;
        self.unindex(ch, e).await
    }

    /// Removes the index rows naming an entry (its author's, its idempotency key, the
    /// members it names).
    async fn unindex(&self, ch: &str, e: &Entry) -> Result<(), StoreError> {
        let ks = &self.ks;
        let seq = e.seq as i64;
        if !e.author.is_empty() {
            self.exec(
                format!("DELETE FROM {ks}.authored WHERE author = ? AND channel = ? AND seq = ?"),
                (e.author.as_str(), ch, seq),
            )
            .await?;
            if let Some(cid) = &e.client_id {
                self.exec(
                    format!("DELETE FROM {ks}.client_ids WHERE channel = ? AND author = ? AND client_id = ?"),
                    (ch, e.author.as_str(), cid.as_str()),
                )
                .await?;
            }
        }
        for m in &e.members {
            self.exec(
                format!("DELETE FROM {ks}.mentions WHERE user = ? AND channel = ? AND seq = ?"),
                (m.as_str(), ch, seq),
            )
            .await?;
        }
        Ok(())
    }

    /// Entries `author` wrote, by channel then seq, after `after` ([`crate::Store::authored`]).
    pub(super) async fn authored_inner(
        &self,
        author: &str,
        after: Option<(ChannelId, Seq)>,
        limit: u32,
    ) -> Result<Vec<(ChannelId, Entry)>, StoreError> {
        let ks = &self.ks;
        let (ch, seq) = after.map(|(c, s)| (c.as_str().to_owned(), s as i64)).unwrap_or((String::new(), -1));
        let keys: Vec<(String, i64)> = self
            .typed(
                format!("SELECT channel, seq FROM {ks}.authored WHERE author = ? AND (channel, seq) > (?, ?) LIMIT ?"),
                (author, ch.as_str(), seq, limit.max(1) as i32),
            )
            .await?;
        let mut out = Vec::with_capacity(keys.len());
        for (ch, seq) in keys {
            // An index row may outlive its entry by moments (both expire by TTL).
            if let (Ok(id), Some(e)) = (ChannelId::parse(&ch), self.get_entry(&ch, seq as Seq).await?) {
                out.push((id, e));
            }
        }
        Ok(out)
    }

    /// One bounded step of an erasure ([`crate::Store::erase_user`]). A dry run counts
    /// what a real one would change, reading every index whole and changing nothing.
    pub(super) async fn erase_step(&self, e: &Erasure) -> Result<Erased, StoreError> {
        let ks = &self.ks;
        let dry = e.dry_run;
        let (u, p) = (e.user.as_str(), e.pseudonym.as_str());
        let direct: Vec<&str> = e.direct.iter().map(|c| c.as_str()).collect();
        // A dry run does not remove the direct conversations, so the indexes still list
        // them: they are counted once, with the conversation.
        let skip = |ch: &str| dry && direct.contains(&ch);
        let mut left: u64 = if dry { u64::MAX } else { u64::from(e.limit.max(1)) };
        let page = |left: u64| -> i32 {
            let n = if dry { DRY_PAGE } else { left.min(u64::from(PAGE)) as u32 };
            n as i32
        };
        let mut rows = 0u64;

        // 1. Direct conversations removed whole: entries first, then the conversation.
        for &ch in &direct {
            loop {
                if left == 0 {
                    return Ok(Erased { rows, done: false });
                }
                let (entries, more) = self.history_inner(ch, Some(0), None, page(left) as u32).await?;
                for en in &entries {
                    if !dry {
                        self.delete_entry(ch, en).await?;
                    }
                }
                rows += entries.len() as u64;
                left -= (entries.len() as u64).min(left);
                if dry || !more {
                    break;
                }
            }
            if left == 0 {
                return Ok(Erased { rows, done: false });
            }
            let conv: Vec<(Option<String>, Option<String>)> = self
                .typed(format!("SELECT creator, client_id FROM {ks}.conversations WHERE channel = ?"), (ch,))
                .await?;
            let members: Vec<(String,)> =
                self.typed(format!("SELECT user FROM {ks}.members WHERE channel = ?"), (ch,)).await?;
            rows += conv.len() as u64 + members.len() as u64;
            if dry {
                continue;
            }
            for (m,) in &members {
                let m = m.as_str();
                self.exec(format!("DELETE FROM {ks}.user_channels WHERE user = ? AND channel = ?"), (m, ch)).await?;
                self.exec(format!("DELETE FROM {ks}.read_markers WHERE user = ? AND channel = ?"), (m, ch)).await?;
                self.exec(format!("DELETE FROM {ks}.user_mutes WHERE user = ? AND channel = ?"), (m, ch)).await?;
            }
            for t in ["members", "mutes", "posters", "channel_heads"] {
                self.exec(format!("DELETE FROM {ks}.{t} WHERE channel = ?"), (ch,)).await?;
            }
            if let Some((creator, cid)) = conv.first() {
                let creator = creator.as_deref().unwrap_or_default();
                if let Some(cid) = cid {
                    self.exec(
                        format!("DELETE FROM {ks}.conversation_keys WHERE creator = ? AND client_id = ?"),
                        (creator, cid.as_str()),
                    )
                    .await?;
                }
                self.exec(format!("DELETE FROM {ks}.creators WHERE creator = ? AND channel = ?"), (creator, ch))
                    .await?;
            }
            self.exec(format!("DELETE FROM {ks}.conversations WHERE channel = ?"), (ch,)).await?;
        }

        // 2. Their entries elsewhere: pseudonymised, texts kept or removed.
        while left > 0 {
            let want = page(left);
            let keys: Vec<(String, i64)> = self
                .typed(format!("SELECT channel, seq FROM {ks}.authored WHERE author = ? LIMIT ?"), (u, want))
                .await?;
            let n = keys.len();
            for (ch, seq) in keys.iter().filter(|(ch, _)| !skip(ch)) {
                rows += 1;
                left -= 1;
                if dry {
                    continue;
                }
                let seq = *seq as Seq;
                if let (Some(ttl), Some(en)) = (self.entry_ttl(ch, seq).await?, self.get_entry(ch, seq).await?) {
                    let keep = e.keep_shared_posts;
                    let deleted = en.deleted || (!keep && matches!(en.kind, EntryKind::Message | EntryKind::Thread));
                    let (body, title) = if keep { (en.body.clone(), en.title.clone()) } else { (None, None) };
                    self.exec(
                        format!(
                            "UPDATE {ks}.entries USING TTL ? SET author = ?, client_id = null, body = ?, title = ?, \
                             deleted = ? WHERE channel = ? AND bucket = ? AND seq = ?"
                        ),
                        (ttl, p, body, title, deleted, ch.as_str(), bucket(seq), seq as i64),
                    )
                    .await?;
                    if let Some(cid) = &en.client_id {
                        self.exec(
                            format!("DELETE FROM {ks}.client_ids WHERE channel = ? AND author = ? AND client_id = ?"),
                            (ch.as_str(), u, cid.as_str()),
                        )
                        .await?;
                    }
                }
                self.exec(format!("DELETE FROM {ks}.posters WHERE channel = ? AND user = ?"), (ch.as_str(), u)).await?;
                self.exec(
                    format!("DELETE FROM {ks}.authored WHERE author = ? AND channel = ? AND seq = ?"),
                    (u, ch.as_str(), seq as i64),
                )
                .await?;
            }
            if dry || n < want as usize {
                break;
            }
        }

        // 3. Membership entries naming them: the pseudonym instead.
        while left > 0 {
            let want = page(left);
            let keys: Vec<(String, i64)> =
                self.typed(format!("SELECT channel, seq FROM {ks}.mentions WHERE user = ? LIMIT ?"), (u, want)).await?;
            let n = keys.len();
            for (ch, seq) in keys.iter().filter(|(ch, _)| !skip(ch)) {
                rows += 1;
                left -= 1;
                if dry {
                    continue;
                }
                let seq = *seq as Seq;
                if let (Some(ttl), Some(en)) = (self.entry_ttl(ch, seq).await?, self.get_entry(ch, seq).await?) {
                    let members: Vec<String> =
                        en.members.iter().map(|m| if m == u { p.to_owned() } else { m.clone() }).collect();
                    self.exec(
                        format!(
                            "UPDATE {ks}.entries USING TTL ? SET members = ? WHERE channel = ? AND bucket = ? AND seq = ?"
                        ),
                        (ttl, members, ch.as_str(), bucket(seq), seq as i64),
                    )
                    .await?;
                }
                self.exec(
                    format!("DELETE FROM {ks}.mentions WHERE user = ? AND channel = ? AND seq = ?"),
                    (u, ch.as_str(), seq as i64),
                )
                .await?;
            }
            if dry || n < want as usize {
                break;
            }
        }

        // 4. Conversations they created: the pseudonym as creator, the key gone.
        //    5. Their memberships, 6. read markers, 7. mutes.
        let lists: [(&str, &str); 4] =
            [("creators", "creator"), ("user_channels", "user"), ("read_markers", "user"), ("user_mutes", "user")];
        for (table, col) in lists {
            while left > 0 {
                let want = page(left);
                let chans: Vec<(String,)> =
                    self.typed(format!("SELECT channel FROM {ks}.{table} WHERE {col} = ? LIMIT ?"), (u, want)).await?;
                let n = chans.len();
                for (ch,) in chans.iter().filter(|(ch,)| !skip(ch)) {
                    rows += 1;
                    left -= 1;
                    if !dry {
                        self.unlist(table, col, ch, u, p).await?;
                    }
                }
                if dry || n < want as usize {
                    break;
                }
            }
        }
        Ok(Erased { rows, done: dry || left > 0 })
    }

    /// Removes one row of a person's per-user lists, and what it stands for.
    async fn unlist(&self, table: &str, col: &str, ch: &str, u: &str, p: &str) -> Result<(), StoreError> {
        let ks = &self.ks;
        match table {
            "creators" => {
                let cid: Vec<(Option<String>,)> =
                    self.typed(format!("SELECT client_id FROM {ks}.conversations WHERE channel = ?"), (ch,)).await?;
                if let Some((Some(cid),)) = cid.first() {
                    self.exec(
                        format!("DELETE FROM {ks}.conversation_keys WHERE creator = ? AND client_id = ?"),
                        (u, cid.as_str()),
                    )
                    .await?;
                }
                if !cid.is_empty() {
                    self.exec(
                        format!("UPDATE {ks}.conversations SET creator = ?, client_id = null WHERE channel = ?"),
                        (p, ch),
                    )
                    .await?;
                }
            }
            "user_channels" => {
                self.exec(format!("DELETE FROM {ks}.members WHERE channel = ? AND user = ?"), (ch, u)).await?;
            }
            "user_mutes" => {
                self.exec(format!("DELETE FROM {ks}.mutes WHERE channel = ? AND user = ?"), (ch, u)).await?;
            }
            _ => {}
        }
        self.exec(format!("DELETE FROM {ks}.{table} WHERE {col} = ? AND channel = ?"), (u, ch)).await
    }

    /// One bounded step of retention ([`crate::Store::expire`]): the channels of the
    /// expiry's scope written on each day up to its cutoff, oldest day first. A day's
    /// index rows go once the day is over and wholly past the cutoff, so later steps and
    /// runs start where this one stopped.
    pub(super) async fn expire_step(&self, x: &Expiry) -> Result<Erased, StoreError> {
        let ks = &self.ks;
        if scope(&x.prefix) != x.prefix {
            return Err(StoreError::Invalid(
                "a ScyllaDB retention names a scope: dm:, grp:, forum:{school}:, ann:{school}:",
            ));
        }
        let sc = x.prefix.as_str();
        let today = self.clock.now_ms().div_euclid(DAY_MS);
        let last_day = x.before_ms.div_euclid(DAY_MS);
        let limit = u64::from(x.limit.max(1));
        let mut left = limit;
        let days: Vec<(i64,)> =
            self.typed(format!("SELECT day FROM {ks}.scope_days WHERE scope = ? AND day <= ?"), (sc, last_day)).await?;
        for (day,) in days {
            let closed = day < today && (day + 1) * DAY_MS <= x.before_ms;
            let mut paging = PagingState::start();
            loop {
                let (r, next) = self
                    .session
                    .query_single_page(
                        format!("SELECT channel FROM {ks}.written_days WHERE scope = ? AND day = ?"),
                        (sc, day),
                        paging,
                    )
                    .await
                    .map_err(unavailable)?;
                let chans: Vec<(String,)> = r
                    .into_rows_result()
                    .map_err(unavailable)?
                    .rows::<(String,)>()
                    .map_err(unavailable)?
                    .collect::<Result<_, _>>()
                    .map_err(unavailable)?;
                for (ch,) in chans {
                    if !self.expire_channel(&ch, x.before_ms, &mut left).await? {
                        return Ok(Erased { rows: limit - left, done: false });
                    }
                    if closed {
                        self.exec(
                            format!("DELETE FROM {ks}.written_days WHERE scope = ? AND day = ? AND channel = ?"),
                            (sc, day, ch.as_str()),
                        )
                        .await?;
                    }
                }
                match next {
                    PagingStateResponse::HasMorePages { state } => paging = state,
                    PagingStateResponse::NoMorePages => break,
                }
            }
            if closed {
                self.exec(format!("DELETE FROM {ks}.scope_days WHERE scope = ? AND day = ?"), (sc, day)).await?;
            }
        }
        Ok(Erased { rows: limit - left, done: left > 0 })
    }

    /// Removes a channel's entries written before `before_ms` but its last, which is
    /// emptied (so its seq goes on). False when `left` ran out first.
    async fn expire_channel(&self, ch: &str, before_ms: i64, left: &mut u64) -> Result<bool, StoreError> {
        let ks = &self.ks;
        let last = self.last_seq(ch).await?;
        let mut after = 0;
        loop {
            let (page, more) = self.history_inner(ch, Some(after), None, PAGE).await?;
            for e in &page {
                if e.at >= before_ms {
                    return Ok(true);
                }
                after = e.seq;
                let tombstone = e.seq >= last;
                if tombstone && e.author.is_empty() {
                    continue;
                }
                if *left == 0 {
                    return Ok(false);
                }
                *left -= 1;
                if tombstone {
                    // Gone by its TTL meanwhile: nothing to empty (an update would
                    // bring back a row without one).
                    let Some(ttl) = self.entry_ttl(ch, e.seq).await? else { continue };
                    self.exec(
                        format!(
                            "UPDATE {ks}.entries USING TTL ? SET body = null, title = null, members = null, \
                             client_id = null, author = '', deleted = true WHERE channel = ? AND bucket = ? AND seq = ?"
                        ),
                        (ttl, ch, bucket(e.seq), e.seq as i64),
                    )
                    .await?;
                    self.unindex(ch, e).await?;
                } else {
                    self.delete_entry(ch, e).await?;
                }
            }
            if !more {
                return Ok(true);
            }
        }
    }
}

/// Fills the lifecycle indexes from the rows written before they existed (schema 2 to
/// 3): every entry's author and members, every conversation's creator, every mute. Index
/// rows carry what is left of their entry's TTL.
pub(super) async fn backfill(s: &Session, ks: &str) -> Result<u64, StoreError> {
    let mut n = 0u64;
    let mut paging = PagingState::start();
    loop {
        let (r, next) = s
            .query_single_page(
                format!("SELECT channel, seq, author, members, at, TTL(kind) FROM {ks}.entries"),
                (),
                paging,
            )
            .await
            .map_err(unavailable)?;
        type Row = (String, i64, String, Option<Vec<String>>, i64, Option<i32>);
        let rows: Vec<Row> = r
            .into_rows_result()
            .map_err(unavailable)?
            .rows::<Row>()
            .map_err(unavailable)?
            .collect::<Result<_, _>>()
            .map_err(unavailable)?;
        for (ch, seq, author, members, at, ttl) in rows {
            let ttl = ttl.unwrap_or(0);
            if !author.is_empty() {
                let cql = format!("INSERT INTO {ks}.authored (author, channel, seq) VALUES (?, ?, ?) USING TTL ?");
                s.query_unpaged(cql, (author.as_str(), ch.as_str(), seq, ttl)).await.map_err(unavailable)?;
            }
            for m in members.unwrap_or_default() {
                let cql = format!("INSERT INTO {ks}.mentions (user, channel, seq) VALUES (?, ?, ?) USING TTL ?");
                s.query_unpaged(cql, (m.as_str(), ch.as_str(), seq, ttl)).await.map_err(unavailable)?;
            }
            let (sc, day) = (scope(&ch), at.div_euclid(DAY_MS));
            let cql = format!("INSERT INTO {ks}.written_days (scope, day, channel) VALUES (?, ?, ?)");
            s.query_unpaged(cql, (sc, day, ch.as_str())).await.map_err(unavailable)?;
            let cql = format!("INSERT INTO {ks}.scope_days (scope, day) VALUES (?, ?)");
            s.query_unpaged(cql, (sc, day)).await.map_err(unavailable)?;
            n += 1;
        }
        match next {
            PagingStateResponse::HasMorePages { state } => paging = state,
            PagingStateResponse::NoMorePages => break,
        }
    }
    let convs: Vec<(String, Option<String>)> =
        all(s, format!("SELECT channel, creator FROM {ks}.conversations")).await?;
    for (ch, creator) in convs {
        if let Some(c) = creator {
            let cql = format!("INSERT INTO {ks}.creators (creator, channel) VALUES (?, ?)");
            s.query_unpaged(cql, (c.as_str(), ch.as_str())).await.map_err(unavailable)?;
        }
    }
    let mutes: Vec<(String, String)> = all(s, format!("SELECT channel, user FROM {ks}.mutes")).await?;
    for (ch, user) in mutes {
        let cql = format!("INSERT INTO {ks}.user_mutes (user, channel) VALUES (?, ?)");
        s.query_unpaged(cql, (user.as_str(), ch.as_str())).await.map_err(unavailable)?;
    }
    Ok(n)
}

/// Every row of a query, page by page.
async fn all<T>(s: &Session, cql: String) -> Result<Vec<T>, StoreError>
where
    T: for<'f, 'm> DeserializeRow<'f, 'm>,
{
    let mut out = Vec::new();
    let mut paging = PagingState::start();
    loop {
        let (r, next) = s.query_single_page(cql.clone(), (), paging).await.map_err(unavailable)?;
        out.extend(
            r.into_rows_result()
                .map_err(unavailable)?
                .rows::<T>()
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?,
        );
        match next {
            PagingStateResponse::HasMorePages { state } => paging = state,
            PagingStateResponse::NoMorePages => return Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::scope;

    #[test]
    fn scopes_are_the_prefixes_the_purge_expires_by() {
        assert_eq!(scope("dm:a:b"), "dm:");
        assert_eq!(scope("grp:x"), "grp:");
        assert_eq!(scope("forum:0750001A:6e-b"), "forum:0750001A:");
        assert_eq!(scope("ann:0750001A:6e-b"), "ann:0750001A:");
        assert_eq!(scope("forum:0750001A:"), "forum:0750001A:");
        assert_eq!(scope("dm:"), "dm:");
    }
}
