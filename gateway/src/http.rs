//! HTTP surface: the WebSocket upgrade, health, readiness, metrics, room tickets, the
//! admin routes ([`crate::admin`]), and (development mode only) the demo users, their tokens and a demo page.

use crate::metrics as m;
use crate::service::Gateway;
use crate::session::{self, SessionStart};
use axum::Json;
use axum::Router;
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use preau_auth::{AuthError, Claims};
use preau_proto::Encoding;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// WebSocket read buffer, held for the life of a connection. Most idle connections never
/// send more than small commands, so 512 bytes (3.5 KB less per connection than 4 KiB;
/// tungstenite's default of 128 KiB would cost that much): a larger frame only takes a
/// few more reads, and grows the buffer while it is read.
pub const WS_READ_BUFFER: usize = 512;
/// Bytes gathered before a write reaches the socket; the session flushes after each batch.
pub const WS_WRITE_BUFFER: usize = 4 * 1024;
/// Most bytes a slow socket may hold in tungstenite's write buffer before writes fail.
pub const WS_MAX_WRITE_BUFFER: usize = 1024 * 1024;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    /// The gateway.
    pub g: Arc<Gateway>,
    /// Renders /metrics.
    pub prom: Option<PrometheusHandle>,
    /// Permits for open connections (the node's cap).
    pub conns: Arc<Semaphore>,
    /// Node shutdown signal, handed to sessions.
    pub shutdown: watch::Receiver<bool>,
}

/// An HTTP error body with a stable code.
pub(crate) fn err(status: StatusCode, code: &str, reason: &str, message: &str) -> Response {
    (status, Json(json!({ "code": code, "reason": reason, "message": message }))).into_response()
}

/// A JSON body that must be an object: serde reads a struct from an array too (its
/// fields in order), which no client means. The one reader of every HTTP body.
pub(crate) fn json_object<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Box<Response>> {
    let bad = |m: &str| Box::new(err(StatusCode::BAD_REQUEST, "bad_request", "invalid_json", m));
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(bad("the body is a JSON object"));
    }
    serde_json::from_slice(bytes).map_err(|e| bad(&e.to_string()))
}

/// A whole number from a JSON body: `1200` or `1200.0` (JSON Schema's `integer` allows
/// both, and clients write either), never a fraction or a negative.
pub(crate) fn whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    if let Some(u) = n.as_u64() {
        return Ok(u);
    }
    match n.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= 9_007_199_254_740_992.0 => Ok(f as u64),
        _ => Err(serde::de::Error::custom(format!("{n} is not a whole number"))),
    }
}

fn unauthorized(e: &AuthError) -> Response {
    metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => e.reason()).increment(1);
    err(StatusCode::UNAUTHORIZED, "unauthorized", e.reason(), &e.to_string())
}

/// The bearer token from `Authorization`, else from `?token=` (browsers cannot set
/// headers on a WebSocket).
fn token<'a>(headers: &'a HeaderMap, q: &'a HashMap<String, String>) -> &'a str {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| q.get("token").map(String::as_str))
        .unwrap_or("")
}

/// Verifies the request's token. A token signed with a key the portal's set does not
/// have yet (a rotation) fetches the set again (rate-limited) and is verified once more.
pub(crate) async fn authenticate(
    s: &AppState,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> Result<Claims, Box<Response>> {
    verify(s, token(headers, q)).await.map_err(|e| Box::new(unauthorized(&e)))
}

/// Verifies a token (see [`authenticate`]).
async fn verify(s: &AppState, t: &str) -> Result<Claims, AuthError> {
    let mut r = s.g.verifier.verify(t);
    if r == Err(preau_auth::AuthError::BadSignature)
        && let Some(j) = &s.g.jwks
        && let Some(kid) = s.g.verifier.unknown_kid(t)
    {
        j.refresh_for_unknown_kid(&s.g.verifier, &kid).await;
        r = s.g.verifier.verify(t);
    }
    r
}

/// The router.
pub fn router(state: AppState) -> Router {
    let mut r = Router::new()
        .route("/ws", get(ws))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_page))
        .route("/openapi.json", get(|| async { preau_ops::asset("application/json", OPENAPI) }))
        .route("/admin/directory", post(crate::admin::import))
        .route("/admin/suspension", get(crate::admin::suspensions).put(crate::admin::suspend))
        .route("/admin/audit", get(crate::admin::audit_trail))
        .route("/admin/users/{id}/data", axum::routing::delete(crate::admin::erase))
        .route("/admin/users/{id}/export", get(crate::admin::export))
        .route("/rooms/{class}/token", post(room_token))
        .route("/recordings/link", post(recording_link))
        .route("/server/v1/announcements", post(crate::server_api::announce))
        .route("/server/v1/recordings", post(crate::server_api::recording))
        .route("/server/v1/users/{id}/disconnect", post(crate::server_api::disconnect))
        .route(
            "/server/v1/users/{id}/notifications",
            get(crate::server_api::get_notifications).put(crate::server_api::put_notifications),
        )
        .route("/server/v1/schools/{uai}/classes/{class}/online", get(crate::server_api::online))
        .route("/server/v1/directory", post(crate::server_api::import))
        // The live classroom page (the same file the SFU serves), and the SDK its chat
        // imports (sdk/js, built into static/app).
        .route("/classroom", get(|| async { Html(include_str!("../../sfu/static/classroom.html")) }))
        .route(
            "/preau-client.js",
            get(|| async { preau_ops::asset("text/javascript", include_str!("../static/app/preau-client.js")) }),
        );
    if state.g.cfg.dev_mode() {
        r = r
            .route("/dev/users", get(dev_users))
            .route("/dev/token", get(dev_token))
            // The messaging web app (sdk/js/app, built into static/app by `npm run build`).
            .route("/", get(|| async { Html(include_str!("../static/app/index.html")) }))
            .route(
                "/app.js",
                get(|| async { preau_ops::asset("text/javascript", include_str!("../static/app/app.js")) }),
            )
            .route("/app.css", get(|| async { preau_ops::asset("text/css", include_str!("../static/app/app.css")) }))
            .route(
                "/config.js",
                get(|| async { preau_ops::asset("text/javascript", include_str!("../static/app/config.js")) }),
            );
    }
    let origins: Arc<[String]> = state.g.cfg.cors_origins.clone().into();
    r.with_state(state).layer(axum::middleware::from_fn_with_state(origins, cors))
}

/// CORS for the pages of the origins in `--cors-origins` (an ENT's portal on its own
/// origin calling `POST /rooms/<class>/token`, say): a preflight from one of them is
/// answered 204 with what it may send; one from elsewhere 403 `origin_not_allowed`; the
/// answers to their requests carry `Access-Control-Allow-Origin`. Tokens travel in
/// `Authorization`, never in cookies, so no credentials are allowed.
async fn cors(
    State(origins): State<Arc<[String]>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let allowed = origin.as_ref().filter(|o| origins.iter().any(|a| a == *o)).cloned();
    let preflight = req.method() == axum::http::Method::OPTIONS
        && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let Some(o) = allowed else {
            return err(
                StatusCode::FORBIDDEN,
                "forbidden",
                "origin_not_allowed",
                "this origin is not in --cors-origins",
            );
        };
        return (
            StatusCode::NO_CONTENT,
            [
                (header::ACCESS_CONTROL_ALLOW_ORIGIN, o),
                (header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, PUT, DELETE".to_owned()),
                (header::ACCESS_CONTROL_ALLOW_HEADERS, "authorization, content-type".to_owned()),
                (header::ACCESS_CONTROL_MAX_AGE, "600".to_owned()),
                (header::VARY, "origin".to_owned()),
            ],
        )
            .into_response();
    }
    let mut res = next.run(req).await;
    if let Some(o) = allowed
        && let Ok(v) = axum::http::HeaderValue::from_str(&o)
    {
        res.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        res.headers_mut().append(header::VARY, axum::http::HeaderValue::from_static("origin"));
    }
    res
}

async fn ws(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if s.g.draining.load(Ordering::Relaxed) {
        return err(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "draining", "this node is restarting; retry");
    }
    // A token at the upgrade is checked now (refusals are HTTP errors); without one, the
    // session's first frame must be `auth` (browsers: no token in the URL).
    let early = if token(&headers, &q).is_empty() {
        None
    } else {
        let claims = match authenticate(&s, &headers, &q).await {
            Ok(c) => c,
            Err(r) => return *r,
        };
        match admit(&s, &claims) {
            Ok(user) => Some((user, claims.exp)),
            Err(refusal) => return refusal.response(),
        }
    };
    let Ok(permit): Result<OwnedSemaphorePermit, _> = s.conns.clone().try_acquire_owned() else {
        metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "node_full").increment(1);
        return err(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "node_full", "this node is full; retry another");
    };
    let upgrade = upgrade
        .protocols([preau_proto::SUBPROTOCOL_MSGPACK, preau_proto::SUBPROTOCOL_JSON])
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(WS_WRITE_BUFFER)
        .max_write_buffer_size(WS_MAX_WRITE_BUFFER)
        // Frames up to 4x the limit are read and answered with `too_large`; beyond that
        // the WebSocket layer closes with 1009 rather than buffer them.
        .max_message_size(s.g.cfg.max_frame_bytes * 4)
        .max_frame_size(s.g.cfg.max_frame_bytes * 4);
    let enc = upgrade
        .selected_protocol()
        .and_then(|p| p.to_str().ok())
        .and_then(Encoding::from_subprotocol)
        .unwrap_or(Encoding::Json);
    let g = s.g.clone();
    upgrade.on_upgrade(move |mut socket| async move {
        let (user, exp) = match early {
            Some(u) => u,
            None => match first_frame_auth(&s, &mut socket, enc).await {
                Some(u) => u,
                None => return,
            },
        };
        let start = SessionStart { user, exp, enc, shutdown: s.shutdown.clone() };
        session::run(g, socket, start).await;
        drop(permit);
    })
}

/// Why a verified token does not open a session.
enum Refusal {
    UnknownUser,
    TooMany,
}

impl Refusal {
    fn response(&self) -> Response {
        match self {
            Refusal::UnknownUser => err(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "unknown_user",
                "the token's user is not in this school's directory",
            ),
            Refusal::TooMany => err(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too_many_connections",
                "too many connections for this user",
            ),
        }
    }

    /// The same refusal after the upgrade: a close code and its reason.
    fn close(&self) -> (u16, &'static str) {
        match self {
            Refusal::UnknownUser => (preau_proto::close::ACCOUNT_REMOVED, "unknown_user"),
            Refusal::TooMany => (preau_proto::close::TOO_MANY_CONNECTIONS, "too_many_connections"),
        }
    }
}

/// The directory's user for verified claims, within the per-user connection limit.
fn admit(s: &AppState, claims: &Claims) -> Result<preau_directory::UserRec, Refusal> {
    let Some(user) = s.g.resolve(claims) else {
        metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "unknown_user").increment(1);
        return Err(Refusal::UnknownUser);
    };
    if s.g.hub.session_count(&user.id) >= s.g.cfg.max_connections_per_user {
        metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "per_user").increment(1);
        return Err(Refusal::TooMany);
    }
    Ok(user)
}

/// How long a session without a token at the upgrade has to send its `auth` frame.
pub const AUTH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads the `auth` frame that opens a session whose upgrade carried no token; closes the
/// socket with the reason when it does not come in time or does not admit anyone.
async fn first_frame_auth(
    s: &AppState,
    socket: &mut axum::extract::ws::WebSocket,
    enc: Encoding,
) -> Option<(preau_directory::UserRec, u64)> {
    use axum::extract::ws::{CloseFrame, Message};
    let token = match tokio::time::timeout(AUTH_DEADLINE, socket.recv()).await {
        Ok(Some(Ok(Message::Text(t)))) => preau_proto::decode_auth(Encoding::Json, t.as_bytes()).ok(),
        Ok(Some(Ok(Message::Binary(b)))) => preau_proto::decode_auth(enc, &b).ok(),
        _ => None,
    };
    let refused = |code: u16, reason: &'static str| {
        Message::Close(Some(CloseFrame { code, reason: axum::extract::ws::Utf8Bytes::from_static(reason) }))
    };
    let Some(token) = token else {
        metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "token_missing").increment(1);
        let _ = socket.send(refused(preau_proto::close::TOKEN_EXPIRED, "token_missing")).await;
        return None;
    };
    let claims = match verify(s, &token.token).await {
        Ok(c) => c,
        Err(e) => {
            metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => e.reason()).increment(1);
            let _ = socket.send(refused(preau_proto::close::TOKEN_EXPIRED, e.reason())).await;
            return None;
        }
    };
    match admit(s, &claims) {
        Ok(user) => Some((user, claims.exp)),
        Err(r) => {
            let (code, reason) = r.close();
            let _ = socket.send(refused(code, reason)).await;
            None
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkAsk {
    channel: preau_proto::ChannelId,
    #[serde(deserialize_with = "whole")]
    seq: preau_proto::Seq,
}

/// A short-lived download link for the recording listed at `seq` of a class's
/// announcements, to whoever may read them.
async fn recording_link(State(s): State<AppState>, headers: HeaderMap, bytes: axum::body::Bytes) -> Response {
    let claims = match authenticate(&s, &headers, &HashMap::new()).await {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let Some(user) = s.g.resolve(&claims) else {
        let m = "the token's user is not in the directory";
        return err(StatusCode::UNAUTHORIZED, "unauthorized", "unknown_user", m);
    };
    let ask: LinkAsk = match json_object(&bytes) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    match crate::cmd::room::recording_link(&s.g, &user.id, &ask.channel, ask.seq).await {
        Ok(url) => Json(json!({ "url": url, "expires_in": crate::cmd::room::LINK_TTL })).into_response(),
        Err(e) => {
            let status = match e.code {
                preau_proto::ErrorCode::Forbidden => StatusCode::FORBIDDEN,
                preau_proto::ErrorCode::NotFound => StatusCode::NOT_FOUND,
                preau_proto::ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            err(status, e.code.as_str(), "recording", &e.message)
        }
    }
}

/// A room token for a class's live session (the SFU admits with it alone).
async fn room_token(
    State(s): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(class): axum::extract::Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let groups: Vec<&str> = q.iter().filter(|(k, _)| k == "group").map(|(_, v)| v.as_str()).collect();
    if groups.len() > 1 {
        return err(StatusCode::BAD_REQUEST, "bad_request", "bad_group", "give `group` once");
    }
    let claims = match authenticate(&s, &headers, &HashMap::new()).await {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let Some(user) = s.g.resolve(&claims) else {
        return err(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown_user",
            "the token's user is not in the directory",
        );
    };
    match s.g.room_token(&user.id, &class, groups.first().copied()).await {
        Ok(t) => Json(json!({
            "token": t.token, "room": t.room, "role": t.role, "sfu": t.sfu, "expires_in": s.g.cfg.room_token_ttl,
        }))
        .into_response(),
        Err(e) => {
            let status = match e.code {
                preau_proto::ErrorCode::Forbidden => StatusCode::FORBIDDEN,
                preau_proto::ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            err(status, e.code.as_str(), "room", &e.message)
        }
    }
}

async fn readyz(State(s): State<AppState>) -> Response {
    if s.g.ready().await {
        (StatusCode::OK, Json(json!({ "ready": true }))).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "ready": false }))).into_response()
    }
}

async fn metrics_page(State(s): State<AppState>) -> Response {
    match &s.prom {
        Some(p) => {
            let mut text = p.render();
            text.push_str(&preau_ops::process::render("preau-gateway", env!("CARGO_PKG_VERSION")));
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
        }
        None => err(StatusCode::NOT_FOUND, "not_found", "no_recorder", "metrics are not enabled"),
    }
}

/// The OpenAPI document of these routes (docs/openapi/gateway.json; a test keeps the two
/// equal).
pub const OPENAPI: &str = include_str!("../../docs/openapi/gateway.json");

async fn dev_users(State(s): State<AppState>) -> Response {
    let dir = s.g.dir();
    let users: Vec<_> = dir
        .users()
        .into_iter()
        .map(|u| {
            json!({
                "id": u.id, "name": u.name, "profile": u.profile.as_str(), "school": u.school,
                "classes": u.classes, "groups": u.groups, "children": u.children,
            })
        })
        .collect();
    Json(json!({ "users": users })).into_response()
}

#[derive(Deserialize)]
struct TokenQuery {
    user: Option<String>,
}

async fn dev_token(State(s): State<AppState>, Query(q): Query<TokenQuery>) -> Response {
    let Some(user) = q.user else {
        return err(StatusCode::BAD_REQUEST, "bad_request", "missing_user", "give ?user=ID");
    };
    match s.g.dev_token(&user) {
        Some(t) => Json(json!({ "token": t, "user": user })).into_response(),
        None => err(StatusCode::NOT_FOUND, "not_found", "unknown_user", "no such user in the directory"),
    }
}

/// Binds the listener with a listen backlog of `backlog` (tokio's `bind` uses 1,024).
pub fn bind(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As std's and tokio's bind do: a restarted node can listen again at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize, Debug)]
    struct N {
        #[serde(deserialize_with = "super::whole")]
        n: u64,
    }

    #[test]
    fn whole_numbers_are_read_as_json_schema_means_them() {
        let n = |s: &str| serde_json::from_str::<N>(s).map(|v| v.n).ok();
        assert_eq!(n(r#"{"n": 1200}"#), Some(1200));
        assert_eq!(n(r#"{"n": 1200.0}"#), Some(1200), "an integer written with a fraction of zero");
        assert_eq!(n(r#"{"n": 12.5}"#), None);
        assert_eq!(n(r#"{"n": -1}"#), None);
        assert_eq!(n(r#"{"n": 5.2e25}"#), None, "beyond what a double holds exactly");
        assert_eq!(n(r#"{"n": "12"}"#), None);
    }
}
