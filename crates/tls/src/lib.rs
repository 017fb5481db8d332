//! `trellis-tls`: TLS for Trellis's listeners and its gRPC clients, on rustls (ring).
//!
//! * An [`Identity`] is a certificate chain and its key read from PEM files, and read again
//!   when the files change (checked at most once a second, on the next handshake), so a
//!   certificate rotated by cert-manager is served without a restart. A file that turns
//!   unreadable or invalid keeps the identity as it was (logged as a WARN).
//! * [`server_config`] serves an identity, and with a CA requires and verifies client
//!   certificates (mTLS). [`client_config`] trusts a CA (or the system's roots) and can
//!   present an identity.
//! * [`Connector`] makes tonic channels over TLS (`channel`, `channel_lazy`), since tonic's
//!   own TLS reads its certificates once.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use hyper_util::rt::TokioIo;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

pub mod certs;

pub use rustls;
pub use tokio_rustls::{server::TlsStream, TlsAcceptor};

/// What can go wrong with certificates and keys.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0}")]
    Verifier(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The one crypto provider (ring), named explicitly, so that no other provider a dependency
/// may enable is ever picked.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn invalid(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Invalid {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The certificates of a PEM file (at least one).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(path, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| invalid(path, format!("no private key: {e}")))
}

/// A set of trusted CA certificates from a PEM file.
pub fn read_roots(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for c in read_certs(path)? {
        roots
            .add(c)
            .map_err(|e| invalid(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// The subject common name of a certificate (which principal a client certificate is).
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// A file as it was: modified time and size.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

struct Checked {
    at: Instant,
    files: (Stamp, Stamp),
}

/// A certificate chain and key from PEM files, read again when they change.
pub struct Identity {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    checked: Mutex<Checked>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// How often an identity's files are looked at (on handshakes).
const CHECK_EVERY: Duration = Duration::from_secs(1);

impl Identity {
    /// Reads `cert` (the chain, leaf first) and `key`; both must be valid and match.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Arc<Identity>> {
        let files = (stamp(cert), stamp(key));
        let ck = load(cert, key)?;
        Ok(Arc::new(Identity {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(ck)),
            checked: Mutex::new(Checked {
                at: Instant::now(),
                files,
            }),
        }))
    }

    /// The certified key to present now, read again first if the files changed since they
    /// were last read (looked at no more than once a second).
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.reload(false);
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the files again if they changed (`force`: look now, whenever they were last
    /// looked at). Whether the identity changed.
    pub fn reload(&self, force: bool) -> bool {
        let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        if !force && checked.at.elapsed() < CHECK_EVERY {
            return false;
        }
        checked.at = Instant::now();
        let files = (stamp(&self.cert), stamp(&self.key));
        if files == checked.files {
            return false;
        }
        checked.files = files;
        match load(&self.cert, &self.key) {
            Ok(ck) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ck);
                tracing::info!(cert = %self.cert.display(), "certificate reloaded");
                true
            }
            Err(e) => {
                // A rotation writes two files: the next look may find the pair whole.
                checked.files = (None, None);
                tracing::warn!(cert = %self.cert.display(), error = %e, "certificate not reloaded; the previous one stays");
                false
            }
        }
    }
}

fn load(cert: &Path, key: &Path) -> Result<CertifiedKey> {
    let chain = read_certs(cert)?;
    let signing = provider()
        .key_provider
        .load_private_key(read_key(key)?)
        .map_err(|e| invalid(key, e))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match()
        .map_err(|e| invalid(key, format!("does not match the certificate: {e}")))?;
    Ok(ck)
}

impl ResolvesServerCert for Identity {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for Identity {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A server configuration presenting `identity`; with `client_ca`, clients must present a
/// certificate signed by it. `alpn`: the protocols offered (`h2` for gRPC).
pub fn server_config(
    identity: Arc<Identity>,
    client_ca: Option<&Path>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(read_roots(ca)?), provider())
                    .build()
                    .map_err(|e| Error::Verifier(format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_cert_resolver(identity);
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// A client configuration (HTTP/2) that trusts `ca`, or the system's roots without one, and
/// presents `identity` when a server asks for a certificate.
pub fn client_config(
    ca: Option<&Path>,
    identity: Option<Arc<Identity>>,
) -> Result<Arc<ClientConfig>> {
    let roots = match ca {
        Some(ca) => read_roots(ca)?,
        None => {
            let mut roots = RootCertStore::empty();
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
            roots
        }
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut cfg = match identity {
        Some(id) => builder.with_client_cert_resolver(id),
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// Connects tonic channels over TLS: TCP to the URI's host and port, then a handshake that
/// checks the server's certificate against the URI's host name (or IP address).
#[derive(Clone)]
pub struct Connector {
    tls: tokio_rustls::TlsConnector,
}

impl Connector {
    pub fn new(cfg: Arc<ClientConfig>) -> Connector {
        Connector {
            tls: tokio_rustls::TlsConnector::from(cfg),
        }
    }
}

type Connecting = Pin<
    Box<
        dyn Future<Output = std::io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>>
            + Send,
    >,
>;

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Connecting {
        let tls = self.tls.clone();
        Box::pin(async move {
            let bad = |why: &str| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{uri}: {why}"))
            };
            let host = uri.host().ok_or_else(|| bad("no host"))?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let name = ServerName::try_from(host.clone()).map_err(|_| bad("not a host name"))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            Ok(TokioIo::new(tls.connect(name, tcp).await?))
        })
    }
}

/// A channel to `endpoint` over TLS, connected on first use.
pub fn channel_lazy(
    endpoint: tonic::transport::Endpoint,
    cfg: Arc<ClientConfig>,
) -> tonic::transport::Channel {
    endpoint.connect_with_connector_lazy(Connector::new(cfg))
}

/// A channel to `endpoint` over TLS, connected now.
pub async fn channel(
    endpoint: tonic::transport::Endpoint,
    cfg: Arc<ClientConfig>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    endpoint.connect_with_connector(Connector::new(cfg)).await
}

#[cfg(test)]
mod tests;
