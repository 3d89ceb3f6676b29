//! The keys a gateway starts with: what verifies users' tokens (the portal's JWKS URL,
//! a JWKS file, a public key, or the development key), what issues development tokens,
//! and what signs room tokens. Every error names the flag, the file and the algorithm.

use crate::config::Config;
use crate::jwks::Jwks;
use preau_auth::{Issuer, Verifier};
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;

/// What [`load`] gives the gateway.
pub(crate) struct Keys {
    pub verifier: Verifier,
    /// Development tokens (development mode only).
    pub issuer: Option<Issuer>,
    pub room_issuer: Option<Issuer>,
    /// The portal's JWKS URL, when the keys come from there.
    pub jwks: Option<Arc<Jwks>>,
}

/// Loads the keys `cfg` names; a command-line tool (`tool`) takes no connections and
/// needs none.
pub(crate) async fn load(cfg: &Config, tool: bool) -> anyhow::Result<Keys> {
    let mut jwks = None;
    let (verifier, issuer) = if tool {
        // Verifies nothing anyone holds.
        let mut k = vec![0u8; 32];
        rand::rng().fill(&mut k[..]);
        (Verifier::hs256(&k), None)
    } else if let Some(url) = &cfg.jwks_url {
        let client = preau_ops::client::Client::new(cfg.http_ca.as_deref(), Duration::from_secs(10))
            .map_err(|e| anyhow::anyhow!("--http-ca {e}"))?;
        let cache = cfg.data_dir.join("portal-jwks.json");
        let min_gap = Duration::from_secs(cfg.jwks_min_interval_seconds);
        let (j, v) = Jwks::start(url, client, cache, min_gap).await?;
        jwks = Some(Arc::new(j));
        (v, None)
    } else if let Some(file) = &cfg.jwks {
        (key_file(file, "--jwks", "JWKS", |b| Verifier::from_jwks(&String::from_utf8_lossy(b)))?, None)
    } else if let Some(pem) = &cfg.jwt_public_key {
        let alg = preau_auth::parse_algorithm(&cfg.jwt_alg)?;
        (key_file(pem, "--jwt-public-key", &cfg.jwt_alg, |b| Verifier::from_pem(alg, b))?, None)
    } else {
        let key = dev_key(&cfg.data_dir)?;
        (Verifier::hs256(&key), Some(Issuer::hs256(&key)))
    };
    let verifier = verifier
        .with_issuer(cfg.jwt_issuer.clone())
        .with_audience(cfg.jwt_audience.clone())
        .with_leeway(cfg.jwt_leeway_seconds);
    let issuer =
        issuer.filter(|_| cfg.dev_mode()).map(|i| i.with_claims(cfg.jwt_issuer.clone(), cfg.jwt_audience.clone()));
    let room_issuer = match &cfg.room_signing_key {
        Some(pem) => {
            let alg = preau_auth::parse_algorithm(&cfg.room_signing_alg)?;
            Some(key_file(pem, "--room-signing-key", &cfg.room_signing_alg, |b| Issuer::from_pem(alg, b, None))?)
        }
        None if cfg.dev_mode() && !tool => Some(Issuer::hs256(&dev_key(&cfg.data_dir)?)),
        None => None,
    };
    Ok(Keys { verifier, issuer, room_issuer, jwks })
}

/// Reads a key file; an error names the file, what it is for and the algorithm expected.
fn key_file<T>(
    path: &std::path::Path,
    what: &str,
    alg: &str,
    parse: impl FnOnce(&[u8]) -> Result<T, preau_auth::KeyError>,
) -> anyhow::Result<T> {
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{what} {}: {e}", path.display()))?;
    parse(&bytes).map_err(|e| anyhow::anyhow!("{what} {}: not a usable {alg} key: {e}", path.display()))
}

/// The development HS256 key, created in the data folder on first start so tokens
/// survive restarts.
fn dev_key(data: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let path = data.join("dev-signing-key");
    if let Ok(k) = std::fs::read(&path)
        && k.len() >= 32
    {
        return Ok(k);
    }
    let mut k = vec![0u8; 32];
    rand::rng().fill(&mut k[..]);
    std::fs::write(&path, &k)?;
    Ok(k)
}
