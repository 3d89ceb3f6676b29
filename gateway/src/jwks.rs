//! The ENT portal's signing keys, fetched from its JWKS URL (`--jwks-url`): at start,
//! every `--jwks-refresh-seconds`, and when a token names a key the set does not have
//! (the portal rotated), at most every `--jwks-min-interval-seconds` so a flood of bad
//! tokens cannot turn into a flood of fetches. A fetch that fails keeps the last good set;
//! that set is also kept in the data folder, so a gateway restarted while the portal is
//! down still starts.

use preau_auth::Verifier;
use preau_ops::client::Client;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Where the portal's keys come from, and when they were last fetched for a stranger.
pub struct Jwks {
    url: String,
    client: Client,
    cache: PathBuf,
    min_gap: Duration,
    last_unknown: Mutex<Option<Instant>>,
}

impl Jwks {
    /// Fetches the keys (or, with the portal down, reads the cached copy) and returns the
    /// source with a verifier holding them. Errors name the URL and what was expected.
    pub async fn start(
        url: &str,
        client: Client,
        cache: PathBuf,
        min_gap: Duration,
    ) -> anyhow::Result<(Jwks, Verifier)> {
        let j = Jwks { url: url.to_owned(), client, cache, min_gap, last_unknown: Mutex::new(None) };
        let doc = match j.fetch().await {
            Ok(doc) => doc,
            Err(e) => match std::fs::read_to_string(&j.cache) {
                Ok(doc) => {
                    tracing::warn!(error = %e, cache = %j.cache.display(), "portal keys unreachable; starting on the cached copy");
                    doc
                }
                Err(_) => anyhow::bail!("--jwks-url {e} (and no cached copy in {})", j.cache.display()),
            },
        };
        let v = Verifier::from_jwks(&doc)
            .map_err(|e| anyhow::anyhow!("--jwks-url {}: not a usable JWKS (keys with `kid` and `alg`): {e}", url))?;
        j.keep(&doc);
        Ok((j, v))
    }

    async fn fetch(&self) -> Result<String, String> {
        let a = self.client.get(&self.url).await?;
        if a.status != 200 {
            return Err(format!("{}: HTTP {}", self.url, a.status));
        }
        String::from_utf8(a.body.to_vec()).map_err(|_| format!("{}: the JWKS is not UTF-8", self.url))
    }

    /// Keeps a good set in the data folder (written beside and renamed: never half).
    fn keep(&self, doc: &str) {
        let tmp = self.cache.with_extension("tmp");
        if let Err(e) = std::fs::write(&tmp, doc).and_then(|_| std::fs::rename(&tmp, &self.cache)) {
            tracing::warn!(error = %e, cache = %self.cache.display(), "cannot keep a copy of the portal's keys");
        }
    }

    /// Fetches the keys again and, if they load, puts them in `v`. Returns how many keys.
    pub async fn refresh(&self, v: &Verifier) -> Result<usize, String> {
        let doc = self.fetch().await?;
        let n = v
            .replace_jwks(&doc)
            .map_err(|e| format!("{}: not a usable JWKS (keys with `kid` and `alg`): {e}", self.url))?;
        self.keep(&doc);
        Ok(n)
    }

    /// A token named a key the set does not have: fetch again, unless that was done less
    /// than `--jwks-min-interval-seconds` ago. Callers verify again afterwards either way
    /// (another request may have fetched the new keys meanwhile).
    pub async fn refresh_for_unknown_kid(&self, v: &Verifier, kid: &str) {
        let mut last = self.last_unknown.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.min_gap) {
            return;
        }
        *last = Some(Instant::now());
        match self.refresh(v).await {
            Ok(n) => tracing::info!(kid, keys = n, "portal keys fetched for an unknown key id"),
            Err(e) => tracing::warn!(kid, error = %e, "portal keys not fetched; the last good set stays"),
        }
    }

    /// Refreshes every `every`, for as long as the task runs.
    pub async fn refresh_every(&self, v: &Verifier, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            match self.refresh(v).await {
                Ok(n) => tracing::debug!(keys = n, "portal keys refreshed"),
                Err(e) => tracing::warn!(error = %e, "portal keys not refreshed; the last good set stays"),
            }
        }
    }
}
