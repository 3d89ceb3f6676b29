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
    /// Expiry, seconds since the Unix epoch (RFC 7519 NumericDate: fractions are read
    /// and rounded down).
    #[serde(deserialize_with = "numeric_date")]
    pub exp: u64,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "opt_numeric_date")]
    pub iat: Option<u64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience: one string or an array of them (RFC 7519 allows both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
}

/// The `aud` claim: one audience or several.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "preau"`.
    One(String),
    /// `"aud": ["preau", "ent"]`.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `a` is one of the audiences.
    pub fn contains(&self, a: &str) -> bool {
        match self {
            Audience::One(x) => x == a,
            Audience::Many(v) => v.iter().any(|x| x == a),
        }
    }
}

impl From<&str> for Audience {
    fn from(a: &str) -> Self {
        Audience::One(a.to_owned())
    }
}

impl From<String> for Audience {
    fn from(a: String) -> Self {
        Audience::One(a)
    }
}

/// A NumericDate: seconds since the epoch, an integer or not (RFC 7519, section 2).
fn numeric_date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let f = f64::deserialize(d)?;
    if f.is_finite() && f >= 0.0 { Ok(f.floor() as u64) } else { Err(serde::de::Error::custom("not a NumericDate")) }
}

fn opt_numeric_date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    numeric_date(d).map(Some)
}

/// The time claims every token is checked on.
#[derive(Deserialize)]
struct Times {
    exp: f64,
    #[serde(default)]
    nbf: Option<f64>,
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
    #[serde(deserialize_with = "numeric_date")]
    pub exp: u64,
    /// Always [`ROOM_AUDIENCE`].
    pub aud: String,
}

/// Audience of recording download links: only the SFU's `/recordings/...` accepts them.
pub const RECORDING_AUDIENCE: &str = "preau-recording";

/// A recording download link's token: the gateway checked that the holder may read the
/// class announcement listing the recording. Minutes-lived: it serves one download.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkClaims {
    /// The recording's id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    #[serde(deserialize_with = "numeric_date")]
    pub exp: u64,
    /// Always [`RECORDING_AUDIENCE`].
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
    /// The token is not valid yet (`nbf` is ahead, beyond the leeway).
    #[error("the token is not valid yet")]
    NotYetValid,
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
            AuthError::NotYetValid => "token_not_yet_valid",
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

/// Reads a JWKS document: every key with its `kid` and `alg`.
fn parse_jwks(json: &str) -> Result<HashMap<String, (DecodingKey, Algorithm)>, KeyError> {
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
    Ok(map)
}

enum Keys {
    Single(DecodingKey, Algorithm),
    ByKid(HashMap<String, (DecodingKey, Algorithm)>),
}

/// Verifies tokens. Built at startup and shared; a JWKS key set may be replaced while
/// serving ([`Verifier::replace_jwks`], the portal's keys rotating).
pub struct Verifier {
    keys: std::sync::RwLock<std::sync::Arc<Keys>>,
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
        Ok(Verifier::with_keys(Keys::ByKid(parse_jwks(json)?)))
    }

    /// Replaces the key set with a new JWKS document (keys rotated at the portal); a
    /// document that does not load changes nothing. Returns how many keys it holds.
    pub fn replace_jwks(&self, json: &str) -> Result<usize, KeyError> {
        let map = parse_jwks(json)?;
        let n = map.len();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(Keys::ByKid(map));
        Ok(n)
    }

    /// The `kid` a token names when the key set has no such key (the portal may have
    /// rotated: worth fetching its keys again).
    pub fn unknown_kid(&self, token: &str) -> Option<String> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        let Keys::ByKid(map) = keys.as_ref() else { return None };
        let kid = jsonwebtoken::decode_header(token).ok()?.kid?;
        (!map.contains_key(&kid)).then_some(kid)
    }

    fn with_keys(keys: Keys) -> Self {
        Verifier {
            keys: std::sync::RwLock::new(std::sync::Arc::new(keys)),
            issuer: None,
            audience: None,
            leeway_secs: 30,
        }
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

    /// Clock skew tolerated on `exp` and `nbf`, seconds (30 by default).
    pub fn with_leeway(mut self, secs: u64) -> Self {
        self.leeway_secs = secs;
        self
    }

    /// Verifies a user token now and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_at(token, now_secs())
    }

    /// Verifies a user token at `now` (seconds since the epoch).
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        self.verify_as(token, self.audience.as_deref(), now)
    }

    /// Verifies a room token (audience [`ROOM_AUDIENCE`]) and returns its claims.
    pub fn verify_room(&self, token: &str) -> Result<RoomClaims, AuthError> {
        self.verify_as(token, Some(ROOM_AUDIENCE), now_secs())
    }

    /// Verifies a recording link's token (audience [`RECORDING_AUDIENCE`]).
    pub fn verify_link(&self, token: &str) -> Result<LinkClaims, AuthError> {
        self.verify_as(token, Some(RECORDING_AUDIENCE), now_secs())
    }

    fn verify_as<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        audience: Option<&str>,
        now: u64,
    ) -> Result<T, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        // An unsigned (`alg: none`) or unknown-algorithm token is a bad signature, not a
        // malformed token: it is well formed, and must never verify.
        if header_alg(token).is_some_and(|a| parse_algorithm(&a).is_err()) {
            return Err(AuthError::BadSignature);
        }
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        let (key, alg) = match keys.as_ref() {
            Keys::Single(k, a) => (k, *a),
            Keys::ByKid(map) => {
                let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
                let kid = header.kid.ok_or(AuthError::BadSignature)?;
                let (k, a) = map.get(&kid).ok_or(AuthError::BadSignature)?;
                (k, *a)
            }
        };
        let mut v = Validation::new(alg);
        // Times are checked below, on NumericDates with fractions and on our clock.
        v.validate_exp = false;
        v.validate_nbf = false;
        let mut required = vec!["sub"];
        match audience {
            Some(a) => {
                v.set_audience(&[a]);
                required.push("aud");
            }
            // No audience configured: still refuse room tokens as user tokens.
            None => {
                v.validate_aud = false;
                if let Ok(d) = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(token)
                    && d.claims
                        .get("aud")
                        .and_then(|a| a.as_str())
                        .is_some_and(|a| a == ROOM_AUDIENCE || a == RECORDING_AUDIENCE)
                {
                    return Err(AuthError::WrongAudience);
                }
            }
        }
        if let Some(i) = &self.issuer {
            v.set_issuer(&[i]);
            required.push("iss");
        }
        v.set_required_spec_claims(&required);
        let claims = jsonwebtoken::decode::<serde_json::Value>(token, key, &v).map(|d| d.claims).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::InvalidAudience => AuthError::WrongAudience,
                K::InvalidIssuer => AuthError::WrongIssuer,
                K::MissingRequiredClaim(c) if c == "aud" => AuthError::WrongAudience,
                K::MissingRequiredClaim(c) if c == "iss" => AuthError::WrongIssuer,
                K::InvalidSignature | K::InvalidAlgorithm | K::InvalidKeyFormat | K::InvalidAlgorithmName => {
                    AuthError::BadSignature
                }
                _ => AuthError::Malformed,
            }
        })?;
        let times: Times = serde_json::from_value(claims.clone()).map_err(|_| AuthError::Malformed)?;
        let (now, leeway) = (now as f64, self.leeway_secs as f64);
        if !times.exp.is_finite() || times.exp < now - leeway {
            return Err(AuthError::Expired);
        }
        if times.nbf.is_some_and(|nbf| !nbf.is_finite() || nbf > now + leeway) {
            return Err(AuthError::NotYetValid);
        }
        serde_json::from_value(claims).map_err(|_| AuthError::Malformed)
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
            aud: self.audience.clone().map(Audience::One),
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

    /// Signs a recording link's token for recording `id`, valid `ttl_secs` from now.
    pub fn issue_link(&self, id: &str, ttl_secs: u64) -> String {
        let claims = LinkClaims { sub: id.to_owned(), exp: now_secs() + ttl_secs, aud: RECORDING_AUDIENCE.to_owned() };
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

/// The `alg` a token's header names, if the header is readable JSON.
fn header_alg(token: &str) -> Option<String> {
    use base64::Engine as _;
    let head = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head.trim_end_matches('=')).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("alg")?.as_str().map(str::to_owned)
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

    /// A token signed with `key` over any JSON claims.
    fn raw(key: &[u8], claims: serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(key)).expect("sign")
    }

    #[test]
    fn configured_audience_and_issuer_are_required() {
        let v = Verifier::hs256(b"k").with_audience(Some("preau".into())).with_issuer(Some("ent".into()));
        let now = now_secs();
        let base = serde_json::json!({"sub": "u", "profile": "pupil", "school": "s", "exp": now + 60});
        let with = |extra: serde_json::Value| {
            let mut c = base.clone();
            c.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
            raw(b"k", c)
        };
        assert_eq!(v.verify(&with(serde_json::json!({"iss": "ent"}))), Err(AuthError::WrongAudience), "no aud");
        assert_eq!(v.verify(&with(serde_json::json!({"aud": "preau"}))), Err(AuthError::WrongIssuer), "no iss");
        assert!(v.verify(&with(serde_json::json!({"aud": "preau", "iss": "ent"}))).is_ok());
        // RFC 7519: an array audience, fractional dates.
        let std = with(
            serde_json::json!({"aud": ["ent", "preau"], "iss": "ent", "exp": now as f64 + 60.5, "iat": now as f64 - 0.25}),
        );
        let c = v.verify(&std).expect("array aud and fractional dates");
        assert_eq!(c.exp, now + 60);
        assert!(c.aud.is_some_and(|a| a.contains("preau")));
        let other = with(serde_json::json!({"aud": ["ent", "other"], "iss": "ent"}));
        assert_eq!(v.verify(&other), Err(AuthError::WrongAudience));
        // Without a configured audience or issuer, neither is required.
        assert!(Verifier::hs256(b"k").verify(&raw(b"k", base)).is_ok());
    }

    #[test]
    fn not_before_and_leeway_are_honoured_on_the_given_clock() {
        let v = Verifier::hs256(b"k").with_leeway(10);
        let t = |exp: u64, nbf: Option<u64>| {
            let mut c = serde_json::json!({"sub": "u", "profile": "pupil", "school": "s", "exp": exp});
            if let Some(n) = nbf {
                c["nbf"] = n.into();
            }
            raw(b"k", c)
        };
        let now = 1_800_000_000;
        assert_eq!(v.verify_at(&t(now + 600, Some(now + 60)), now), Err(AuthError::NotYetValid));
        assert!(v.verify_at(&t(now + 600, Some(now + 5)), now).is_ok(), "within the leeway");
        assert!(v.verify_at(&t(now + 600, Some(now + 60)), now + 60).is_ok(), "once it begins");
        assert!(v.verify_at(&t(now - 5, None), now).is_ok(), "expired within the leeway");
        assert_eq!(v.verify_at(&t(now - 11, None), now), Err(AuthError::Expired));
        assert_eq!(AuthError::NotYetValid.reason(), "token_not_yet_valid");
    }

    #[test]
    fn unsigned_tokens_are_invalid_not_malformed() {
        use base64::Engine as _;
        let b64 = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let claims = serde_json::json!({"sub": "t01", "profile": "teacher", "school": "s", "exp": now_secs() + 60});
        for alg in ["none", "None", "NONE"] {
            let t = format!("{}.{}.", b64(serde_json::json!({"alg": alg, "typ": "JWT"})), b64(claims.clone()));
            assert_eq!(Verifier::hs256(b"k").verify(&t), Err(AuthError::BadSignature), "alg {alg}");
            assert_eq!(AuthError::BadSignature.reason(), "token_invalid");
        }
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
    fn recording_links_pass_for_nothing_else() {
        let iss = Issuer::hs256(b"k");
        let v = Verifier::hs256(b"k");
        let link = iss.issue_link("20261203-0001", 300);
        assert_eq!(v.verify_link(&link).expect("link").sub, "20261203-0001");
        assert_eq!(v.verify(&link), Err(AuthError::WrongAudience), "a link is not a user token");
        assert!(v.verify_room(&link).is_err(), "nor a room token");
        assert!(v.verify_link(&iss.issue_room("e001", "Léa", "s", "class:6A", "host", 60)).is_err());
        assert!(v.verify_link(&iss.issue("e001", "pupil", "s", 60)).is_err());
        assert_eq!(Verifier::hs256(b"other").verify_link(&link), Err(AuthError::BadSignature));
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

    #[test]
    fn a_rotated_key_set_replaces_the_old_one_and_a_bad_one_changes_nothing() {
        let jwks = include_str!("../testdata/jwks.json");
        let v = Verifier::from_jwks(jwks).expect("jwks");
        let key = include_bytes!("../testdata/ed.key");
        let old = Issuer::from_pem(Algorithm::EdDSA, key, Some("ent-2026".into())).expect("key");
        let new = Issuer::from_pem(Algorithm::EdDSA, key, Some("ent-2027".into())).expect("key");
        let (t_old, t_new) = (old.issue("u", "parent", "s", 60), new.issue("u", "parent", "s", 60));
        assert_eq!(v.unknown_kid(&t_new).as_deref(), Some("ent-2027"));
        assert_eq!(v.unknown_kid(&t_old), None);
        assert_eq!(v.replace_jwks(&jwks.replace("ent-2026", "ent-2027")).expect("rotated"), 1);
        assert!(v.verify(&t_new).is_ok());
        assert_eq!(v.verify(&t_old), Err(AuthError::BadSignature), "the removed key no longer verifies");
        assert!(v.replace_jwks("{\"keys\":[]}").is_err());
        assert!(v.verify(&t_new).is_ok(), "a bad document keeps the last good set");
        assert_eq!(Verifier::hs256(b"k").unknown_kid(&t_new), None, "no key set, no kid to look for");
    }
}
