//! A small HTTP/1.1 client for what the servers fetch or send themselves: the ENT
//! portal's JWKS, and webhooks to the ENT's backend. `http://` or `https://` (the
//! system's roots, plus a CA the operator names for a private PKI), one request per
//! connection, every step bounded in time. Errors name the URL.

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The most a response body may hold.
const MAX_BODY: usize = 1 << 20;

/// An HTTP client.
#[derive(Clone)]
pub struct Client {
    tls: tokio_rustls::TlsConnector,
    timeout: Duration,
}

/// A response: status and body.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body (at most 1 MiB).
    pub body: Bytes,
}

impl Client {
    /// Trusts the system's roots and, if given, the CA certificates in `extra_ca` (PEM).
    /// `timeout` bounds a whole request.
    pub fn new(extra_ca: Option<&Path>, timeout: Duration) -> Result<Client, String> {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(c);
        }
        if let Some(p) = extra_ca {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(p)
                .map_err(|e| format!("{}: cannot read a PEM CA certificate: {e}", p.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{}: not a PEM CA certificate: {e}", p.display()))?;
            if certs.is_empty() {
                return Err(format!("{}: no certificate in it", p.display()));
            }
            for c in certs {
                roots.add(c).map_err(|e| format!("{}: {e}", p.display()))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Client { tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)), timeout })
    }

    /// GETs `url`.
    pub async fn get(&self, url: &str) -> Result<Answer, String> {
        self.send(url, "GET", &[], Bytes::new()).await
    }

    /// POSTs `body` to `url` with `headers`.
    pub async fn post(&self, url: &str, headers: &[(&str, String)], body: Bytes) -> Result<Answer, String> {
        self.send(url, "POST", headers, body).await
    }

    async fn send(&self, url: &str, method: &str, headers: &[(&str, String)], body: Bytes) -> Result<Answer, String> {
        tokio::time::timeout(self.timeout, self.send_inner(url, method, headers, body))
            .await
            .map_err(|_| format!("{url}: no answer within {} s", self.timeout.as_secs()))?
            .map_err(|e| format!("{url}: {e}"))
    }

    async fn send_inner(
        &self,
        url: &str,
        method: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Answer, String> {
        let uri: Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err("expected an http:// or https:// URL".into()),
        };
        let host = uri.host().ok_or("no host in the URL")?.trim_matches(['[', ']']).to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let authority = uri.authority().map(|a| a.as_str().to_owned()).unwrap_or_else(|| host.clone());
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut req = Request::builder().method(method).uri(path).header("host", authority);
        req = req.header("user-agent", concat!("preau/", env!("CARGO_PKG_VERSION")));
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        if https {
            let name = ServerName::try_from(host).map_err(|e| e.to_string())?;
            let tls = self.tls.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
            exchange(TokioIo::new(tls), req).await
        } else {
            exchange(TokioIo::new(tcp), req).await
        }
    }
}

async fn exchange<T>(io: T, req: Request<Full<Bytes>>) -> Result<Answer, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let res = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let body = Limited::new(res.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    conn.abort();
    Ok(Answer { status, body })
}
