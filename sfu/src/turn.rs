//! ICE servers handed to browsers in `welcome`, with TURN credentials in coturn's REST
//! scheme (`use-auth-secret`): user `<expiry>:preau`, password
//! base64(HMAC-SHA1(secret, user)). Pure: the time is an argument, so a node that runs
//! for weeks still hands out fresh credentials (they are made per join, not at start).

use base64::Engine as _;
use hmac::Mac as _;
use serde_json::{Value, json};

/// How long TURN credentials stay valid: longer than any class.
pub const CREDENTIAL_TTL_SECS: u64 = 12 * 3600;

/// The `RTCIceServer` objects for `urls` at `now_secs` (seconds since the epoch). TURN
/// URLs get credentials when a shared secret is configured; STUN URLs never need them.
pub fn ice_servers(urls: &[String], secret: Option<&str>, now_secs: u64) -> Vec<Value> {
    urls.iter()
        .map(|url| match secret {
            Some(secret) if url.starts_with("turn") => {
                let user = format!("{}:preau", now_secs + CREDENTIAL_TTL_SECS);
                json!({"urls": url, "username": user, "credential": credential(secret, &user)})
            }
            _ => json!({"urls": url}),
        })
        .collect()
}

fn credential(secret: &str, user: &str) -> String {
    // HMAC takes keys of any length; the error arm cannot happen.
    hmac::Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes())
        .map(|mut mac| {
            mac.update(user.as_bytes());
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_urls_get_coturn_credentials_and_stun_urls_none() {
        let urls = vec!["stun:stun.example.fr:3478".to_owned(), "turns:turn.example.fr:443?transport=tcp".to_owned()];
        let now = 1_700_000_000;
        let v = ice_servers(&urls, Some("coturn-secret"), now);
        assert_eq!(v[0], json!({"urls": "stun:stun.example.fr:3478"}));
        // The same credential coturn computes for this user and secret.
        assert_eq!(
            v[1],
            json!({"urls": urls[1], "username": "1700043200:preau", "credential": "Sw+hoiWl16z/BOWCG/og5tLnhxY="})
        );
        // Later joins get later expiries.
        assert_eq!(ice_servers(&urls, Some("coturn-secret"), now + 3600)[1]["username"], "1700046800:preau");
        // Without a secret, TURN URLs go as they are (static credentials in the URL's server).
        assert_eq!(ice_servers(&urls, None, now)[1], json!({"urls": urls[1]}));
    }
}
