//! The server API, for the ENT's own back end (`/server/v1/...`): post an announcement
//! to a class on behalf of a teacher or of the school, sign a user out everywhere, see
//! who of a class is online, import the directory, and set a user's push
//! notifications. Authenticated by an API key of its own (`--api-keys-file`), never by
//! a user's token; a key may be limited to some schools. Every answer is JSON; errors are
//! `{code, reason, message}` as elsewhere (docs/server-api.md).

use crate::http::{AppState, err};
use crate::webhook::{NotifyPrefs, class_readers};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use preau_bus::BusMessage;
use preau_directory::DirectoryDoc;
use preau_proto::{ChannelId, Command, EntryKind, ErrorCode};
use preau_store::{Record, Write};
use serde::Deserialize;
use serde_json::json;
use std::path::Path as FsPath;

/// The record kind holding a user's push-notification settings.
pub const NOTIFY_KIND: &str = "notify";

/// One API key: who holds it and which schools it may act on (`*`: all).
#[derive(Clone, Debug, Deserialize)]
pub struct ApiKey {
    /// Who holds it (in the audit trail and the logs).
    pub name: String,
    /// The secret, at least 32 characters.
    pub key: String,
    /// UAIs it may act on; `["*"]` for a whole region.
    pub schools: Vec<String>,
}

#[derive(Deserialize)]
struct KeysFile {
    keys: Vec<ApiKey>,
}

/// Reads `--api-keys-file`: every error names the file and what was expected.
pub fn load_keys(path: &FsPath) -> Result<Vec<ApiKey>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("--api-keys-file {}: {e}", path.display()))?;
    let f: KeysFile = serde_json::from_str(&text).map_err(|e| {
        format!("--api-keys-file {}: expected {{\"keys\": [{{\"name\", \"key\", \"schools\"}}]}}: {e}", path.display())
    })?;
    for k in &f.keys {
        if k.key.len() < 32 {
            return Err(format!(
                "--api-keys-file {}: the key of `{}` is shorter than 32 characters",
                path.display(),
                k.name
            ));
        }
        if k.schools.is_empty() {
            return Err(format!("--api-keys-file {}: `{}` names no school (\"*\" for all)", path.display(), k.name));
        }
    }
    Ok(f.keys)
}

/// Equal-time comparison, so a key cannot be guessed from how long a refusal takes.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The caller's key, or the refusal.
fn caller(s: &AppState, headers: &HeaderMap) -> Result<ApiKey, Box<Response>> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if given.is_empty() {
        let m = "send Authorization: Bearer <API key>";
        return Err(Box::new(err(StatusCode::UNAUTHORIZED, "unauthorized", "api_key_missing", m)));
    }
    let mut found = None;
    for k in s.g.api_keys.iter() {
        if same(k.key.as_bytes(), given.as_bytes()) {
            found = Some(k.clone());
        }
    }
    found.ok_or_else(|| {
        Box::new(err(StatusCode::UNAUTHORIZED, "unauthorized", "api_key_invalid", "this API key is not known"))
    })
}

fn may_act_on(k: &ApiKey, school: &str) -> bool {
    k.schools.iter().any(|s| s == "*" || s == school)
}

fn other_school() -> Response {
    err(StatusCode::FORBIDDEN, "forbidden", "other_school", "this API key may not act on that school")
}

fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Forbidden | ErrorCode::Suspended | ErrorCode::Muted | ErrorCode::Locked => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::RateLimited | ErrorCode::OutsideHours | ErrorCode::Held => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable | ErrorCode::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    }
}

fn body<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, Box<Response>> {
    crate::http::json_object(bytes)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Announcement {
    school: String,
    class: String,
    /// A teacher of the class (or staff) posting; absent: the school itself.
    #[serde(default)]
    author: Option<String>,
    body: String,
    /// The ENT's idempotency key: a retry with the same key is stored once.
    client_id: String,
}

/// `POST /server/v1/announcements`.
pub async fn announce(State(s): State<AppState>, headers: HeaderMap, bytes: axum::body::Bytes) -> Response {
    let key = match caller(&s, &headers) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let a: Announcement = match body(&bytes) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    if !may_act_on(&key, &a.school) {
        return other_school();
    }
    if s.g.dir().class(&a.school, &a.class).is_none() {
        return err(StatusCode::NOT_FOUND, "not_found", "no_class", "no such class in that school");
    }
    let channel = ChannelId::announcements(&a.school, &a.class);
    let (seq, duplicate) = match &a.author {
        // A person: every rule a person's own send goes through (may they post there,
        // suspensions, limits, idempotency).
        Some(author) => {
            if s.g.dir().user(author).is_none_or(|u| u.school != a.school) {
                return err(StatusCode::NOT_FOUND, "not_found", "no_author", "no such user in that school");
            }
            let cmd = Command::Send {
                channel: channel.clone(),
                client_id: a.client_id.clone(),
                body: a.body.clone(),
                thread: None,
                reply_to: None,
            };
            match s.g.handle(author, 0, cmd).await {
                Ok(ack) => (ack.seq.unwrap_or(0), ack.duplicate),
                Err(e) => return err(status_of(e.code), e.code.as_str(), "refused", &e.message),
            }
        }
        // The school itself: no person's rights apply, the checks of a send do.
        None => {
            if a.body.trim().is_empty() || a.body.len() > s.g.cfg.max_body_bytes {
                let m = format!("the body must hold 1 to {} bytes", s.g.cfg.max_body_bytes);
                return err(StatusCode::BAD_REQUEST, "bad_request", "bad_body", &m);
            }
            if a.client_id.is_empty() || a.client_id.len() > 64 {
                return err(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "bad_client_id",
                    "client_id holds 1 to 64 characters",
                );
            }
            let w = Write::Post {
                channel: channel.clone(),
                kind: EntryKind::Message,
                author: school_author(&a.school),
                client_id: a.client_id.clone(),
                body: a.body.clone(),
                title: None,
                thread: None,
                reply_to: None,
                respect_lock: false,
            };
            match s.g.store.write(w).await {
                Ok(r) => (r.entry.seq, r.duplicate),
                Err(e) => return err(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "store", &e.to_string()),
            }
        }
    };
    tracing::info!(api = %key.name, %channel, seq, duplicate, "announcement posted through the server API");
    Json(json!({ "channel": channel, "seq": seq, "duplicate": duplicate })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordingPost {
    school: String,
    class: String,
    /// The host who recorded (a teacher of the class, or staff).
    author: String,
    id: String,
    url: String,
    #[serde(deserialize_with = "crate::http::whole")]
    duration_ms: u64,
    #[serde(deserialize_with = "crate::http::whole")]
    size: u64,
    #[serde(deserialize_with = "crate::http::whole")]
    started_at: u64,
}

/// `POST /server/v1/recordings`: an SFU node lists a class recording it made in the
/// class announcements (an entry of kind `recording`); listed once per id.
pub async fn recording(State(s): State<AppState>, headers: HeaderMap, bytes: axum::body::Bytes) -> Response {
    let key = match caller(&s, &headers) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let r: RecordingPost = match body(&bytes) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    if !may_act_on(&key, &r.school) {
        return other_school();
    }
    let dir = s.g.dir();
    if dir.class(&r.school, &r.class).is_none() {
        return err(StatusCode::NOT_FOUND, "not_found", "no_class", "no such class in that school");
    }
    let hosts = dir.user(&r.author).filter(|u| u.school == r.school).and_then(|u| {
        preau_directory::room_role(&dir, u, &r.class).filter(|(_, role)| *role == preau_directory::LiveRole::Host)
    });
    if hosts.is_none() {
        return err(
            StatusCode::FORBIDDEN,
            "forbidden",
            "not_host",
            "the author does not host this class's live session",
        );
    }
    let id_ok = (1..=64).contains(&r.id.len()) && r.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let url_ok = (r.url.starts_with("https://") || r.url.starts_with("http://")) && r.url.len() <= 512;
    if !id_ok || !url_ok {
        let m = "id holds 1 to 64 letters, digits and dashes; url is an http(s) URL";
        return err(StatusCode::BAD_REQUEST, "bad_request", "bad_recording", m);
    }
    let info = preau_proto::RecordingInfo {
        id: r.id.clone(),
        url: r.url,
        duration_ms: r.duration_ms,
        size: r.size,
        started_at: i64::try_from(r.started_at).unwrap_or(i64::MAX),
    };
    let channel = ChannelId::announcements(&r.school, &r.class);
    let w = Write::Post {
        channel: channel.clone(),
        kind: EntryKind::Recording,
        author: r.author,
        client_id: format!("recording:{}", r.id),
        body: serde_json::to_string(&info).unwrap_or_default(),
        title: None,
        thread: None,
        reply_to: None,
        respect_lock: false,
    };
    let (seq, duplicate) = match s.g.store.write(w).await {
        Ok(w) => (w.entry.seq, w.duplicate),
        Err(e) => return err(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "store", &e.to_string()),
    };
    tracing::info!(api = %key.name, %channel, seq, duplicate, id = %r.id, "recording listed");
    Json(json!({ "channel": channel, "seq": seq, "duplicate": duplicate })).into_response()
}

/// The author of what a school posts itself.
pub fn school_author(uai: &str) -> String {
    format!("school:{uai}")
}

/// `POST /server/v1/users/{id}/disconnect`: every session of the user, on every node.
pub async fn disconnect(State(s): State<AppState>, headers: HeaderMap, Path(user): Path<String>) -> Response {
    let key = match caller(&s, &headers) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let dir = s.g.dir();
    let Some(u) = dir.user(&user) else {
        return err(StatusCode::NOT_FOUND, "not_found", "no_user", "no such user");
    };
    if !may_act_on(&key, &u.school) {
        return other_school();
    }
    let here = s.g.hub.session_count(&user);
    s.g.bus.publish(BusMessage::Disconnect { user: user.clone() });
    tracing::info!(api = %key.name, user = %crate::pii::Pii(&user), "user signed out through the server API");
    Json(json!({ "user": user, "sessions_on_this_node": here })).into_response()
}

/// `GET /server/v1/schools/{uai}/classes/{class}/online`: the class's pupils, teachers
/// and parents who have a session now, on any node.
pub async fn online(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((school, class)): Path<(String, String)>,
) -> Response {
    let key = match caller(&s, &headers) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    if !may_act_on(&key, &school) {
        return other_school();
    }
    let dir = s.g.dir();
    if dir.class(&school, &class).is_none() {
        return err(StatusCode::NOT_FOUND, "not_found", "no_class", "no such class in that school");
    }
    let members = class_readers(&dir, &school, &class);
    let away: Vec<String> = members.iter().filter(|u| !s.g.hub.online(u)).cloned().collect();
    let elsewhere = s.g.bus.online_elsewhere(away.clone()).await;
    let mut on = Vec::new();
    for u in &members {
        let here = s.g.hub.online(u);
        let there = away.iter().position(|a| a == u).and_then(|i| elsewhere.get(i).copied()).unwrap_or(false);
        if (here || there)
            && let Some(r) = dir.user(u)
        {
            on.push(json!({ "id": r.id, "name": r.name, "profile": r.profile.as_str() }));
        }
    }
    Json(json!({ "school": school, "class": class, "members": members.len(), "online": on })).into_response()
}

/// `POST /server/v1/directory`: a directory import, as `preau-gateway import` does.
pub async fn import(State(s): State<AppState>, headers: HeaderMap, bytes: axum::body::Bytes) -> Response {
    let key = match caller(&s, &headers) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let doc: DirectoryDoc = match body(&bytes) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    if doc.schools.iter().any(|sc| !may_act_on(&key, &sc.uai)) {
        return other_school();
    }
    match s.g.import_as(doc, &format!("api:{}", key.name)).await {
        Ok(schools) => Json(json!({ "schools": schools })).into_response(),
        Err(e) => err(StatusCode::BAD_REQUEST, e.code.as_str(), "invalid_directory", &e.message),
    }
}

/// The school of `user`, when the caller's key may act on it.
fn school_of(s: &AppState, headers: &HeaderMap, user: &str) -> Result<String, Box<Response>> {
    let key = caller(s, headers)?;
    let Some(school) = s.g.dir().user(user).map(|u| u.school.clone()) else {
        return Err(Box::new(err(StatusCode::NOT_FOUND, "not_found", "no_user", "no such user")));
    };
    if !may_act_on(&key, &school) {
        return Err(Box::new(other_school()));
    }
    Ok(school)
}

/// `GET /server/v1/users/{id}/notifications`.
pub async fn get_notifications(State(s): State<AppState>, headers: HeaderMap, Path(user): Path<String>) -> Response {
    let school = match school_of(&s, &headers, &user) {
        Ok(school) => school,
        Err(r) => return *r,
    };
    match s.g.notify_prefs(&school, &user).await {
        Ok(p) => Json(p).into_response(),
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "store", &e),
    }
}

/// `PUT /server/v1/users/{id}/notifications`: push on or off, quiet hours.
pub async fn put_notifications(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(user): Path<String>,
    bytes: axum::body::Bytes,
) -> Response {
    let school = match school_of(&s, &headers, &user) {
        Ok(school) => school,
        Err(r) => return *r,
    };
    let p: NotifyPrefs = match body(&bytes) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    if let Some(q) = &p.quiet_hours
        && let Err(e) = q.validate()
    {
        return err(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "bad_quiet_hours",
            &e.replace("discussion hours", "quiet hours"),
        );
    }
    let doc = match serde_json::to_string(&p) {
        Ok(d) => d,
        Err(e) => return err(StatusCode::INTERNAL_SERVER_ERROR, "internal", "encode", &e.to_string()),
    };
    let r =
        Record { kind: NOTIFY_KIND.into(), school: school.clone(), id: user.clone(), at_ms: s.g.clock.now_ms(), doc };
    if let Err(e) = s.g.store.put_record(r).await {
        return err(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "store", &e.to_string());
    }
    s.g.forget_notify_prefs(&user);
    Json(p).into_response()
}
