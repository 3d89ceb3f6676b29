//! What the gateway and the SFU share to run in production, apart from their own work.
//!
//! # Layout
//! - [`tls`]: TLS termination from PEM files reloaded when they change, and the listener
//!   `axum::serve` takes (plain or TLS, handshakes off the accept loop).
//! - [`process`]: the `process_*` metrics (CPU, memory, open files and their limit) and
//!   `preau_build_info`, appended to each `/metrics`.
//! - [`client`]: the HTTP client the servers use themselves (the portal's JWKS, webhooks).
//! - [`metrics`]: metric descriptions (kind and HELP text), one table per server.
//! - [`logging`]: logs on standard error, plain or JSON for every line.
//! - [`asset`]: a file built into the binary, served with its type (OpenAPI documents,
//!   pages, scripts).
//! - `testing` (feature `testing`): a CA of a test's own, its leaves and pins; promtool;
//!   a router's routes against its OpenAPI document.

pub mod client;
pub mod logging;
pub mod metrics;
pub mod process;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;

/// A file built into the binary (an OpenAPI document, a page's script), served with its
/// content type and revalidated at each load (a new release serves new files).
pub fn asset(content_type: &'static str, body: &'static str) -> axum::response::Response {
    use axum::http::header;
    use axum::response::IntoResponse;
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}
