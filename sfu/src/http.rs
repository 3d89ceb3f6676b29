//! The node's HTTP routes: the signaling WebSocket, probes, metrics, the classroom
//! page and recording downloads.

use crate::node::Sfu;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use preau_live::signal;
use std::sync::Arc;

/// The classroom page (also served by the gateway).
pub const CLASSROOM_HTML: &str = include_str!("../static/classroom.html");

#[derive(serde::Deserialize)]
struct WsQuery {
    token: Option<String>,
}

/// Initial WebSocket read and write buffers (they grow for a large offer).
const WS_BUFFER: usize = 4096;

async fn ws(State(sfu): State<Arc<Sfu>>, Query(q): Query<WsQuery>, up: WebSocketUpgrade) -> Response {
    // Signaling messages are a few KB: tungstenite's 128 KiB read and write buffers cost
    // 0.13 MB per peer (1.39 -> 1.26 MB with 100 pupils, one class).
    up.max_message_size(signal::MAX_MESSAGE)
        .read_buffer_size(WS_BUFFER)
        .write_buffer_size(WS_BUFFER)
        .on_upgrade(move |ws| crate::peer::session(sfu, ws, q.token))
}

/// The OpenAPI document of these routes (docs/openapi/sfu.json).
pub const OPENAPI: &str = include_str!("../../docs/openapi/sfu.json");

/// @preau/client as one ES module: the classroom page takes its simulcast recipe from it
/// (the gateway serves the same file).
const SDK: &str = include_str!("../../gateway/static/app/preau-client.js");

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(sfu): State<Arc<Sfu>>) -> Response {
    if sfu.ready() {
        axum::Json(serde_json::json!({"ready": true})).into_response()
    } else {
        let body = serde_json::json!({"ready": false, "draining": sfu.is_draining()});
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    }
}

async fn metrics_page(State(sfu): State<Arc<Sfu>>) -> Response {
    match &sfu.prom {
        Some(h) => {
            let mut text = h.render();
            text.push_str(&preau_ops::process::render("preau-sfu", env!("CARGO_PKG_VERSION")));
            ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
        }
        None => (StatusCode::NOT_FOUND, "metrics are off").into_response(),
    }
}

fn refusal(status: StatusCode, code: &str, reason: &str, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "code": code, "reason": reason, "message": message }))).into_response()
}

/// A recording, to the holder of a link the gateway signed (`?token=`, minutes-lived).
async fn recording(State(sfu): State<Arc<Sfu>>, Path(file): Path<String>, Query(q): Query<WsQuery>) -> Response {
    let Some(id) = file.strip_suffix(".webm") else {
        return refusal(StatusCode::NOT_FOUND, "not_found", "no_recording", "no such recording");
    };
    let claims = match sfu.verifier.verify_link(q.token.as_deref().unwrap_or("")) {
        Ok(c) => c,
        Err(preau_auth::AuthError::Expired) => {
            return refusal(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "link_expired",
                "this link has expired: ask for a new one",
            );
        }
        Err(_) => return refusal(StatusCode::UNAUTHORIZED, "unauthorized", "link_invalid", "this link is not valid"),
    };
    if claims.sub != id {
        return refusal(StatusCode::UNAUTHORIZED, "unauthorized", "link_invalid", "this link is for another recording");
    }
    let Some((path, meta)) = sfu.recordings.open(id) else {
        return refusal(StatusCode::NOT_FOUND, "not_found", "no_recording", "this recording is no longer kept");
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(_) => {
            return refusal(StatusCode::NOT_FOUND, "not_found", "no_recording", "this recording is no longer kept");
        }
    };
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    // Read in chunks: an hour of class is hundreds of megabytes.
    let chunks = futures_util::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt as _;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    let disposition = format!("attachment; filename=\"{}\"", meta.download_name());
    (
        [
            (header::CONTENT_TYPE, "video/webm".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, "private, no-store".to_owned()),
        ],
        axum::body::Body::from_stream(chunks),
    )
        .into_response()
}

async fn classroom() -> Html<&'static str> {
    Html(CLASSROOM_HTML)
}

/// The node's HTTP routes.
pub fn router(sfu: Arc<Sfu>) -> axum::Router {
    axum::Router::new()
        .route("/ws", get(ws))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_page))
        .route("/openapi.json", get(|| async { preau_ops::asset("application/json", OPENAPI) }))
        .route("/preau-client.js", get(|| async { preau_ops::asset("text/javascript", SDK) }))
        .route("/classroom", get(classroom))
        .route("/recordings/{file}", get(recording))
        .route("/", get(|| async { Redirect::temporary("/classroom") }))
        .with_state(sfu)
}

#[cfg(test)]
mod tests {
    use preau_ops::testing::{routes_in_openapi, routes_in_source};

    /// The SFU's OpenAPI document (docs/openapi/sfu.json) describes exactly its routes.
    #[test]
    fn every_route_is_documented() {
        let routes = routes_in_source(include_str!("http.rs"));
        assert_eq!(routes.len(), 9, "{routes:?}");
        assert_eq!(routes, routes_in_openapi(super::OPENAPI).expect("parses"));
    }
}
