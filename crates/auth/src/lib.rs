//! Identity for Préau: the ENT portal signs a JWT naming the user, their profile and
//! school; the gateway verifies it on every WebSocket and HTTP call. Development mode
//! signs its own tokens with an HS256 key; production verifies RS256, ES256 or EdDSA
//! signatures with public keys from a PEM or JWKS file.
//!
//! # Layout
//! - [`Claims`]: what a user token says; [`RoomClaims`]: what a live-class room token
//!   says (audience [`ROOM_AUDIENCE`], so neither passes for the other).
//! - [`Verifier`]: keys and checks (expiry, optional issuer and audience).
//! - [`Issuer`]: signs tokens (development mode, tests, SFU room tokens).
//! - [`AuthError`]: why a token was refused, with a stable reason code.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, jwk::JwkSet};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// What a Préau token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User id in the directory.
    pub sub: String,
    /// Profile: pupil, parent, teacher, staff or admin.
    pub profile: String,
    /// School UAI.
    pub school: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// Audience of room tokens: the SFU accepts nothing else, the gateway never accepts them.
pub const ROOM_AUDIENCE: &str = "preau-sfu";

/// A room token: the gateway checked the directory and lets `sub` into a class's live
/// session with a role. Short-lived: it only serves to join.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomClaims {
    /// User id.
    pub sub: String,
    /// Display name.
    pub name: String,
    /// School UAI.
    pub school: String,
    /// Room id (`class:<class id>`).
    pub room: String,
    /// `host`, `participant` or `observer`.
    pub role: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Always [`ROOM_AUDIENCE`].
    pub aud: String,
}

/// Why a token was refused. Every variant maps to HTTP 401.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum AuthError {
    /// No token was presented.
    #[error("no token: send `Authorization: Bearer <token>` or `?token=`")]
    Missing,
    /// The token's expiry has passed.
    #[error("the token has expired")]
    Expired,
    /// The signature does not verify, the algorithm is not the configured one, or the key
    /// id is unknown.
    #[error("the token's signature is not valid")]
    BadSignature,
    /// The token is not for this service.
    #[error("the token is not meant for this service")]
    WrongAudience,
    /// The token was issued by someone else.
    #[error("the token was not issued by the expected issuer")]
    WrongIssuer,
    /// Not a JWT, or a required claim is missing or malformed.
    #[error("the token is malformed or lacks a required claim")]
    Malformed,
}

impl AuthError {
    /// Stable reason code, sent with HTTP 401 and the `unauthorized` error code.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "token_missing",
            AuthError::Expired => "token_expired",
            AuthError::BadSignature => "token_invalid",
            AuthError::WrongAudience => "token_wrong_audience",
            AuthError::WrongIssuer => "token_wrong_issuer",
            AuthError::Malformed => "token_malformed",
        }
    }
}

/// A problem loading keys (startup only).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The PEM or JWKS could not be read as a key of the named algorithm.
    #[error("cannot load {what}: {detail}")]
    Invalid {
        /// What was being loaded.
        what: String,
        /// The library's explanation.
        detail: String,
    },
}

fn key_err(what: &str, e: impl std::fmt::Display) -> KeyError {
    KeyError::Invalid { what: what.to_owned(), detail: e.to_string() }
}

/// Parses an algorithm name accepted for Préau tokens.
pub fn parse_algorithm(s: &str) -> Result<Algorithm, KeyError> {
    match s {
        "HS256" => Ok(Algorithm::HS256),
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        "EdDSA" => Ok(Algorithm::EdDSA),
        other => Err(key_err("algorithm", format!("`{other}` is not one of HS256, RS256, ES256, EdDSA"))),
    }
}

enum Keys {
    Single(DecodingKey, Algorithm),
    ByKid(HashMap<String, (DecodingKey, Algorithm)>),
}

/// Verifies tokens. Built once at startup, shared read-only.
pub struct Verifier {
    keys: Keys,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
}

impl Verifier {
    /// HS256 with a shared secret (development mode).
    pub fn hs256(secret: &[u8]) -> Self {
        Verifier::with_keys(Keys::Single(DecodingKey::from_secret(secret), Algorithm::HS256))
    }

    /// A public key in PEM for `alg` (RS256, ES256 or EdDSA).
    pub fn from_pem(alg: Algorithm, pem: &[u8]) -> Result<Self, KeyError> {
        let key = match alg {
            Algorithm::RS256 => DecodingKey::from_rsa_pem(pem),
            Algorithm::ES256 => DecodingKey::from_ec_pem(pem),
            Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
            other => return Err(key_err("PEM key", format!("{other:?} is not a public-key algorithm"))),
        }
        .map_err(|e| key_err("PEM key", e))?;
        Ok(Verifier::with_keys(Keys::Single(key, alg)))
    }

    /// A JWKS document: tokens name their key with `kid`; each key must state its `alg`.
    pub fn from_jwks(json: &str) -> Result<Self, KeyError> {
        let set: JwkSet = serde_json::from_str(json).map_err(|e| key_err("JWKS", e))?;
        let mut map = HashMap::new();
        for jwk in &set.keys {
            let kid = jwk.common.key_id.clone().ok_or_else(|| key_err("JWKS", "a key has no `kid`"))?;
            let alg = jwk
                .common
                .key_algorithm
                .ok_or_else(|| key_err("JWKS", format!("key `{kid}` has no `alg`")))
                .and_then(|a| parse_algorithm(&format!("{a:?}")))?;
            let key = DecodingKey::from_jwk(jwk).map_err(|e| key_err("JWKS", e))?;
            map.insert(kid, (key, alg));
        }
        if map.is_empty() {
            return Err(key_err("JWKS", "no keys"));
        }
        Ok(Verifier::with_keys(Keys::ByKid(map)))
    }

    fn with_keys(keys: Keys) -> Self {
        Verifier { keys, issuer: None, audience: None, leeway_secs: 30 }
    }

    /// Requires this issuer.
    pub fn with_issuer(mut self, iss: Option<String>) -> Self {
        self.issuer = iss;
        self
    }

    /// Requires this audience.
    pub fn with_audience(mut self, aud: Option<String>) -> Self {
        self.audience = aud;
        self
    }

    /// Verifies a user token and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_as(token, self.audience.as_deref())
    }

    /// Verifies a room token (audience [`ROOM_AUDIENCE`]) and returns its claims.
    pub fn verify_room(&self, token: &str) -> Result<RoomClaims, AuthError> {
        self.verify_as(token, Some(ROOM_AUDIENCE))
    }

    fn verify_as<T: serde::de::DeserializeOwned>(&self, token: &str, audience: Option<&str>) -> Result<T, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let (key, alg) = match &self.keys {
            Keys::Single(k, a) => (k, *a),
            Keys::ByKid(map) => {
                let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
                let kid = header.kid.ok_or(AuthError::BadSignature)?;
                let (k, a) = map.get(&kid).ok_or(AuthError::BadSignature)?;
                (k, *a)
            }
        };
        let mut v = Validation::new(alg);
        v.leeway = self.leeway_secs;
        v.set_required_spec_claims(&["exp", "sub"]);
        match audience {
            Some(a) => v.set_audience(&[a]),
            // No audience configured: still refuse room tokens as user tokens.
            None => {
                v.validate_aud = false;
                if let Ok(d) = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(token)
                    && d.claims.get("aud").and_then(|a| a.as_str()) == Some(ROOM_AUDIENCE)
                {
                    return Err(AuthError::WrongAudience);
                }
            }
        }
        if let Some(i) = &self.issuer {
            v.set_issuer(&[i]);
        }
        jsonwebtoken::decode::<T>(token, key, &v).map(|d| d.claims).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => AuthError::Expired,
                K::InvalidAudience => AuthError::WrongAudience,
                K::InvalidIssuer => AuthError::WrongIssuer,
                K::InvalidSignature | K::InvalidAlgorithm | K::InvalidKeyFormat => AuthError::BadSignature,
                _ => AuthError::Malformed,
            }
        })
    }
}

/// Signs tokens.
pub struct Issuer {
    key: EncodingKey,
    alg: Algorithm,
    kid: Option<String>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl Issuer {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8]) -> Self {
        Issuer { key: EncodingKey::from_secret(secret), alg: Algorithm::HS256, kid: None, issuer: None, audience: None }
    }

    /// A private key in PEM (PKCS#8 for EC and Ed25519).
    pub fn from_pem(alg: Algorithm, pem: &[u8], kid: Option<String>) -> Result<Self, KeyError> {
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
            other => return Err(key_err("PEM key", format!("{other:?} is not a public-key algorithm"))),
        }
        .map_err(|e| key_err("PEM private key", e))?;
        Ok(Issuer { key, alg, kid, issuer: None, audience: None })
    }

    /// Sets the `iss` and `aud` claims of issued tokens.
    pub fn with_claims(mut self, issuer: Option<String>, audience: Option<String>) -> Self {
        self.issuer = issuer;
        self.audience = audience;
        self
    }

    /// Signs a token for `sub` valid `ttl_secs` from now.
    pub fn issue(&self, sub: &str, profile: &str, school: &str, ttl_secs: u64) -> String {
        let now = now_secs();
        self.sign(&Claims {
            sub: sub.to_owned(),
            profile: profile.to_owned(),
            school: school.to_owned(),
            exp: now + ttl_secs,
            iat: Some(now),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        })
    }

    /// Signs a room token valid `ttl_secs` from now.
    pub fn issue_room(&self, sub: &str, name: &str, school: &str, room: &str, role: &str, ttl_secs: u64) -> String {
        let claims = RoomClaims {
            sub: sub.to_owned(),
            name: name.to_owned(),
            school: school.to_owned(),
            room: room.to_owned(),
            role: role.to_owned(),
            exp: now_secs() + ttl_secs,
            aud: ROOM_AUDIENCE.to_owned(),
        };
        self.sign_any(&claims)
    }

    /// Signs the given claims as they are.
    pub fn sign(&self, claims: &Claims) -> String {
        self.sign_any(claims)
    }

    fn sign_any<T: Serialize>(&self, claims: &T) -> String {
        let mut h = Header::new(self.alg);
        h.kid = self.kid.clone();
        // Signing plain claims with a key loaded at startup only fails on a broken key,
        // which the constructor already refused.
        jsonwebtoken::encode(&h, claims, &self.key).unwrap_or_default()
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    use preau_proto::clock::Clock as _;
    preau_proto::clock::SystemClock.now_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "t01".into(),
            profile: "teacher".into(),
            school: "0750001A".into(),
            exp,
            iat: None,
            iss: None,
            aud: None,
        }
    }

    #[test]
    fn hs256_roundtrip_and_refusals() {
        let iss = Issuer::hs256(b"secret-secret-secret-secret-1234");
        let v = Verifier::hs256(b"secret-secret-secret-secret-1234");
        let t = iss.issue("t01", "teacher", "0750001A", 60);
        assert_eq!(v.verify(&t).map(|c| c.sub), Ok("t01".into()));
        assert_eq!(v.verify(""), Err(AuthError::Missing));
        assert_eq!(v.verify("not-a-jwt"), Err(AuthError::Malformed));
        let expired = iss.sign(&claims(now_secs() - 3600));
        assert_eq!(v.verify(&expired), Err(AuthError::Expired));
        let forged = Issuer::hs256(b"another-key-another-key-another!!").issue("t01", "teacher", "x", 60);
        assert_eq!(v.verify(&forged), Err(AuthError::BadSignature));
        let mut tampered = t.clone();
        tampered.insert(tampered.len() - 3, 'A');
        assert!(v.verify(&tampered).is_err());
    }

    #[test]
    fn audience_and_issuer() {
        let iss = Issuer::hs256(b"k").with_claims(Some("ent".into()), Some("other".into()));
        let v = Verifier::hs256(b"k").with_audience(Some("preau".into())).with_issuer(Some("ent".into()));
        assert_eq!(v.verify(&iss.issue("u", "pupil", "s", 60)), Err(AuthError::WrongAudience));
        let iss2 = Issuer::hs256(b"k").with_claims(Some("evil".into()), Some("preau".into()));
        assert_eq!(v.verify(&iss2.issue("u", "pupil", "s", 60)), Err(AuthError::WrongIssuer));
        let ok = Issuer::hs256(b"k").with_claims(Some("ent".into()), Some("preau".into()));
        assert!(v.verify(&ok.issue("u", "pupil", "s", 60)).is_ok());
    }

    #[test]
    fn public_key_algorithms() {
        for (alg, key, public) in [
            (Algorithm::RS256, &include_bytes!("../testdata/rsa.key")[..], &include_bytes!("../testdata/rsa.pub")[..]),
            (Algorithm::ES256, include_bytes!("../testdata/ec.key"), include_bytes!("../testdata/ec.pub")),
            (Algorithm::EdDSA, include_bytes!("../testdata/ed.key"), include_bytes!("../testdata/ed.pub")),
        ] {
            let iss = Issuer::from_pem(alg, key, None).expect("private key");
            let v = Verifier::from_pem(alg, public).expect("public key");
            let t = iss.issue("e001", "pupil", "0750001A", 60);
            assert_eq!(v.verify(&t).map(|c| c.profile), Ok("pupil".into()), "{alg:?}");
            // An HS256 token must not pass a public-key verifier (algorithm confusion).
            let hs = Issuer::hs256(public).issue("e001", "pupil", "0750001A", 60);
            assert_eq!(v.verify(&hs), Err(AuthError::BadSignature), "{alg:?}");
        }
    }

    #[test]
    fn room_tokens_and_user_tokens_never_pass_for_each_other() {
        let iss = Issuer::hs256(b"k");
        let v = Verifier::hs256(b"k");
        let room = iss.issue_room("e001", "Léa", "0750001A", "class:6A", "participant", 60);
        let r = v.verify_room(&room).expect("room token");
        assert_eq!((r.room.as_str(), r.role.as_str()), ("class:6A", "participant"));
        assert_eq!(v.verify(&room), Err(AuthError::WrongAudience), "a room token is not a user token");
        let user = iss.issue("e001", "pupil", "0750001A", 60);
        assert!(v.verify_room(&user).is_err(), "a user token is not a room token");
        let with_aud = Verifier::hs256(b"k").with_audience(Some("preau".into()));
        assert!(with_aud.verify(&room).is_err());
    }

    #[test]
    fn jwks_by_kid() {
        let v = Verifier::from_jwks(include_str!("../testdata/jwks.json")).expect("jwks");
        let good = Issuer::from_pem(Algorithm::EdDSA, include_bytes!("../testdata/ed.key"), Some("ent-2026".into()))
            .expect("key");
        assert!(v.verify(&good.issue("u", "parent", "s", 60)).is_ok());
        let unknown_kid =
            Issuer::from_pem(Algorithm::EdDSA, include_bytes!("../testdata/ed.key"), Some("old".into())).expect("key");
        assert_eq!(v.verify(&unknown_kid.issue("u", "parent", "s", 60)), Err(AuthError::BadSignature));
        assert!(Verifier::from_jwks("{\"keys\":[]}").is_err());
    }
}
