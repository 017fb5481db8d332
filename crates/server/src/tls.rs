//! The node's TLS configurations, from `[tls]` (see `docs/security.md`): the client
//! listeners' (HTTP and gRPC, optionally requiring client certificates), the peer
//! listener's (mTLS against the cluster CA) and the one it connects to peers with.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use trellis_tls::rustls::{ClientConfig, ServerConfig};
use trellis_tls::Identity;

use crate::config::TlsSection;

/// What the node's listeners and peer connections use; `None`s are plaintext.
#[derive(Default, Clone)]
pub struct NodeTls {
    /// The AWS API's listener (HTTP/1.1).
    pub http: Option<Arc<ServerConfig>>,
    /// The client gRPC listener (HTTP/2).
    pub grpc: Option<Arc<ServerConfig>>,
    /// The peer listener: mTLS, peers' certificates checked against the cluster CA.
    pub peer: Option<Arc<ServerConfig>>,
    /// Connections to peers: the cluster CA and this node's certificate.
    pub to_peers: Option<Arc<ClientConfig>>,
}

impl NodeTls {
    /// Reads the certificates `[tls]` names; an unreadable or invalid file is an error.
    pub fn from_config(t: &TlsSection) -> anyhow::Result<NodeTls> {
        let mut tls = NodeTls::default();
        if !t.cert_file.is_empty() {
            let id = Identity::from_files(Path::new(&t.cert_file), Path::new(&t.key_file))
                .context("tls.cert_file / tls.key_file")?;
            let ca = (!t.client_ca_file.is_empty()).then(|| Path::new(&t.client_ca_file));
            let server = |alpn: &[&[u8]]| {
                trellis_tls::server_config(id.clone(), ca, alpn).context("tls.client_ca_file")
            };
            tls.http = Some(server(&[b"http/1.1"])?);
            tls.grpc = Some(server(&[b"h2"])?);
        }
        if let Some((cert, key)) = t.peer_identity() {
            let id = Identity::from_files(Path::new(cert), Path::new(key))
                .context("the node's peer certificate")?;
            let ca = Path::new(&t.peer_ca_file);
            tls.peer = Some(
                trellis_tls::server_config(id.clone(), Some(ca), &[b"h2"])
                    .context("tls.peer_ca_file")?,
            );
            tls.to_peers =
                Some(trellis_tls::client_config(Some(ca), Some(id)).context("tls.peer_ca_file")?);
        }
        Ok(tls)
    }
}
