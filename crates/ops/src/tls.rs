//! TLS termination for the HTTP and WebSocket servers: a certificate chain and key read
//! from PEM files, read again when they change (a renewed certificate, a Kubernetes
//! Secret updated in place) without a restart, and a listener that hands axum either
//! plain TCP or TLS streams.
//!
//! Handshakes run in their own tasks, bounded in time, so a slow or silent client never
//! holds up the accept loop (a reconnect storm is thousands of handshakes at once).

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A handshake not finished in this time is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the files are checked for a change.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// The PEM files of a server certificate: the chain (leaf first) and its private key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// Both files, or neither; one without the other is a configuration error that names
    /// the flags.
    pub fn from_flags(
        cert: Option<&Path>,
        key: Option<&Path>,
        cert_flag: &str,
        key_flag: &str,
    ) -> Result<Option<TlsFiles>, String> {
        match (cert, key) {
            (Some(c), Some(k)) => Ok(Some(TlsFiles { cert: c.to_owned(), key: k.to_owned() })),
            (None, None) => Ok(None),
            (Some(_), None) => Err(format!("{cert_flag} needs {key_flag} (the certificate's private key)")),
            (None, Some(_)) => Err(format!("{key_flag} needs {cert_flag} (the certificate chain)")),
        }
    }

    /// Reads and checks both files: every error names the file and what was expected.
    pub fn load(&self) -> Result<ServerConfig, String> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: cannot read: {e}", p.display()));
        let cert_pem = read(&self.cert)?;
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&cert_pem)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{}: not a PEM certificate chain: {e}", self.cert.display()))?;
        if chain.is_empty() {
            return Err(format!("{}: no certificate in it (expected PEM \"BEGIN CERTIFICATE\")", self.cert.display()));
        }
        let key = PrivateKeyDer::from_pem_slice(&read(&self.key)?)
            .map_err(|e| format!("{}: not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}", self.key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| {
                format!("{} and {}: the key does not fit the certificate: {e}", self.cert.display(), self.key.display())
            })?;
        // WebSocket upgrades are HTTP/1.1.
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(cfg)
    }

    /// When each file last changed (and its size), to notice a new certificate.
    fn stamp(&self) -> Option<(SystemTime, u64, SystemTime, u64)> {
        let c = std::fs::metadata(&self.cert).ok()?;
        let k = std::fs::metadata(&self.key).ok()?;
        Some((c.modified().ok()?, c.len(), k.modified().ok()?, k.len()))
    }
}

/// The current certificate, replaced when its files change.
pub struct Reloading {
    files: TlsFiles,
    acceptor: RwLock<TlsAcceptor>,
}

impl Reloading {
    /// Loads the files now (an error stops the start-up, naming the file), then checks
    /// them every [`RELOAD_EVERY`]: a new pair that loads replaces the old one; one that
    /// does not is logged and the old one kept.
    pub fn start(files: TlsFiles) -> Result<Arc<Reloading>, String> {
        let cfg = files.load()?;
        let r = Arc::new(Reloading { acceptor: RwLock::new(TlsAcceptor::from(Arc::new(cfg))), files });
        let weak = Arc::downgrade(&r);
        tokio::spawn(async move {
            let mut last = weak.upgrade().and_then(|r| r.files.stamp());
            let mut tick = tokio::time::interval(RELOAD_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(r) = weak.upgrade() else { return };
                let now = r.files.stamp();
                if now.is_none() || now == last {
                    continue;
                }
                last = now;
                match r.files.load() {
                    Ok(cfg) => {
                        *r.acceptor.write().unwrap_or_else(|p| p.into_inner()) = TlsAcceptor::from(Arc::new(cfg));
                        tracing::info!(cert = %r.files.cert.display(), "TLS certificate reloaded");
                    }
                    Err(e) => tracing::warn!(error = %e, "TLS certificate not reloaded; the previous one stays"),
                }
            }
        });
        Ok(r)
    }

    fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A connection: plain TCP, or TLS over TCP.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP, the handshake done.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// A listener for `axum::serve`: plain TCP, or TLS with [`Reloading`] certificates.
/// Accepted sockets get `TCP_NODELAY` (small frames must not wait for Nagle).
pub struct Listener {
    local: SocketAddr,
    rx: mpsc::Receiver<(Stream, SocketAddr)>,
}

impl Listener {
    /// Serves `tcp`, with TLS when `tls` is given.
    pub fn new(tcp: TcpListener, tls: Option<Arc<Reloading>>) -> io::Result<Listener> {
        let local = tcp.local_addr()?;
        // Room for a burst of finished handshakes while axum spawns their connections.
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(accept_loop(tcp, tls, tx));
        Ok(Listener { local, rx })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

async fn accept_loop(tcp: TcpListener, tls: Option<Arc<Reloading>>, tx: mpsc::Sender<(Stream, SocketAddr)>) {
    loop {
        let (sock, peer) = match tcp.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors or a connection reset before accept: wait a
                // little rather than spin (as axum's own listener does).
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if tx.is_closed() {
            return;
        }
        let _ = sock.set_nodelay(true);
        match &tls {
            None => {
                if tx.send((Stream::Plain(sock), peer)).await.is_err() {
                    return;
                }
            }
            Some(r) => {
                let (acceptor, tx) = (r.acceptor(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await {
                        Ok(Ok(s)) => {
                            let _ = tx.send((Stream::Tls(Box::new(s)), peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

impl axum::serve::Listener for Listener {
    type Io = Stream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Stream, SocketAddr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
