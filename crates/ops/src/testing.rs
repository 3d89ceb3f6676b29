//! A certificate authority of a test's own (feature `testing`): leaves for the names a
//! test serves (`preau.test`, `127.0.0.1`), written as the PEM files a server reads, a
//! client configuration that trusts only this CA, and the SPKI pin Chromium takes.

use crate::tls::TlsFiles;
use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls_pki_types::CertificateDer;
use std::path::Path;
use std::sync::Arc;

/// A CA made for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate's files and its pin.
pub struct Leaf {
    /// Where the chain and key were written.
    pub files: TlsFiles,
    /// base64(SHA-256(SubjectPublicKeyInfo)) of the leaf, for
    /// `--ignore-certificate-errors-spki-list`.
    pub spki_sha256: String,
}

impl TestCa {
    /// A new CA ("Préau test CA").
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "Préau test CA");
        let key = KeyPair::generate().expect("CA key");
        TestCa { issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate") }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf for `names` (DNS names or IP addresses), written to `dir` as
    /// `<stem>.crt` (leaf then CA) and `<stem>.key`.
    pub fn leaf(&self, names: &[&str], dir: &Path, stem: &str) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("preau.test"));
        let cert = params.signed_by(&key, &self.issuer).expect("leaf certificate");
        let files = TlsFiles { cert: dir.join(format!("{stem}.crt")), key: dir.join(format!("{stem}.key")) };
        // Written beside and renamed, as a Secret update or certbot would: a reader never
        // sees half a file.
        let put = |path: &Path, text: String| {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).expect("write PEM");
            std::fs::rename(&tmp, path).expect("rename PEM");
        };
        put(&files.key, key.serialize_pem());
        put(&files.cert, format!("{}{}", cert.pem(), self.issuer.pem()));
        // The public key's PEM is its SubjectPublicKeyInfo, base64 between two lines.
        let b64 = base64::engine::general_purpose::STANDARD;
        let body: String = key.public_key_pem().lines().filter(|l| !l.starts_with("-----")).collect();
        let spki = b64.decode(body).expect("SPKI");
        let digest = ring::digest::digest(&ring::digest::SHA256, &spki);
        Leaf { files, spki_sha256: b64.encode(digest.as_ref()) }
    }

    /// A client configuration that trusts this CA only.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(self.issuer.der().to_vec())).expect("CA into the roots");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(cfg)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

/// Runs `promtool check metrics` (Debian's `prometheus` package; scripts/test installs
/// it) on a `/metrics` page: `Err` with promtool's complaints when it finds any.
pub fn promtool_check_metrics(page: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("promtool is missing ({e}): scripts/test installs it (apt-get install prometheus)"))?;
    child.stdin.take().ok_or("promtool stdin")?.write_all(page.as_bytes()).map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() && out.stdout.is_empty() && out.stderr.is_empty() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

/// The routes an axum router's source declares: each `.route("<path>", get(..).put(..))`
/// as `(METHOD, path)` pairs, sorted. For the tests that keep a server's OpenAPI document
/// and its routes equal (a route added without its document fails them).
pub fn routes_in_source(source: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        let Some(open) = rest.find('"') else { break };
        let Some(close) = rest[open + 1..].find('"') else { break };
        let path = &rest[open + 1..open + 1 + close];
        // The method routers up to the next route or the end of the statement.
        let end = [rest.find(".route("), rest.find(';')].into_iter().flatten().min().unwrap_or(rest.len());
        let methods = &rest[open + 1 + close..end];
        for m in ["get", "post", "put", "delete", "patch"] {
            let calls = [format!("({m}("), format!(" {m}("), format!(".{m}("), format!("::{m}(")];
            if calls.iter().any(|c| methods.contains(c.as_str())) {
                out.push((m.to_uppercase(), path.to_owned()));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The `(METHOD, path)` pairs an OpenAPI document describes, sorted.
pub fn routes_in_openapi(doc: &str) -> Result<Vec<(String, String)>, String> {
    let v: serde_json::Value = serde_json::from_str(doc).map_err(|e| e.to_string())?;
    let paths = v["paths"].as_object().ok_or("no paths")?;
    let mut out = Vec::new();
    for (path, ops) in paths {
        for m in ["get", "post", "put", "delete", "patch"] {
            if ops.get(m).is_some() {
                out.push((m.to_uppercase(), path.clone()));
            }
        }
    }
    out.sort();
    Ok(out)
}
