use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::certs::{Authority, Usage};
use super::*;

fn write(dir: &Path, name: &str, issued: &certs::Issued) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    (cert, key)
}

fn localhost() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}

/// Serves one TLS connection with `cfg`, echoing a line; the outcome of the client's
/// handshake and exchange with `client`.
async fn exchange(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Result<String, String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(server);
    let served = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut s = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let peer = s
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first().and_then(common_name));
        let mut b = [0u8; 5];
        s.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        s.write_all(&b).await.map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(peer)
    });
    let connect = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut s = tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(b"hello").await.map_err(|e| e.to_string())?;
        let mut b = [0u8; 5];
        s.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(String::from_utf8_lossy(&b).into_owned())
    };
    let got = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| "timed out".to_string())?;
    let peer = tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .map_err(|_| "server timed out".to_string())?
        .unwrap();
    match (got, peer) {
        (Ok(echo), Ok(peer)) => Ok(format!("{echo} from {}", peer.unwrap_or_default())),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

#[tokio::test]
async fn mutual_tls_takes_certificates_of_its_ca_only() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::generate().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let (cert, key) = write(
        dir.path(),
        "node",
        &ca.issue("node-1", &localhost(), Usage::Node).unwrap(),
    );
    let (ccert, ckey) = write(
        dir.path(),
        "client",
        &ca.issue("ops", &[], Usage::Client).unwrap(),
    );
    let stranger = Authority::generate().unwrap();
    let (scert, skey) = write(
        dir.path(),
        "stranger",
        &stranger.issue("ops", &[], Usage::Client).unwrap(),
    );

    let server = server_config(
        Identity::from_files(&cert, &key).unwrap(),
        Some(&ca_file),
        &[],
    )
    .unwrap();
    let client = |c: &Path, k: &Path| {
        client_config(Some(&ca_file), Some(Identity::from_files(c, k).unwrap())).unwrap()
    };
    // A client certificate of the CA: served, and the server sees who it is.
    assert_eq!(
        exchange(server.clone(), client(&ccert, &ckey)).await,
        Ok("hello from ops".into())
    );
    // None, or one of another CA: refused.
    let none = client_config(Some(&ca_file), None).unwrap();
    assert!(exchange(server.clone(), none).await.is_err());
    assert!(exchange(server.clone(), client(&scert, &skey))
        .await
        .is_err());
    // A client that does not trust the server's CA refuses it.
    let stranger_ca = dir.path().join("stranger-ca.pem");
    std::fs::write(&stranger_ca, stranger.cert_pem()).unwrap();
    let wary = client_config(
        Some(&stranger_ca),
        Some(Identity::from_files(&ccert, &ckey).unwrap()),
    )
    .unwrap();
    assert!(exchange(server, wary).await.is_err());
    // Without a client CA, no certificate is asked for.
    let open = server_config(Identity::from_files(&cert, &key).unwrap(), None, &[]).unwrap();
    let anonymous = client_config(Some(&ca_file), None).unwrap();
    assert_eq!(exchange(open, anonymous).await, Ok("hello from ".into()));
}

#[test]
fn an_identity_is_read_again_when_its_files_change() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::generate().unwrap();
    let (cert, key) = write(
        dir.path(),
        "node",
        &ca.issue("first", &localhost(), Usage::Node).unwrap(),
    );
    let id = Identity::from_files(&cert, &key).unwrap();
    let cn = |id: &Identity| common_name(&id.current().cert[0]).unwrap();
    assert_eq!(cn(&id), "first");
    assert!(!id.reload(true), "nothing changed");
    // Rotated: a new certificate and key.
    write(
        dir.path(),
        "node",
        &ca.issue("second-one", &localhost(), Usage::Node).unwrap(),
    );
    assert!(id.reload(true));
    assert_eq!(cn(&id), "second-one");
    // Half a rotation (a key that does not match), then garbage: the last good one stays.
    let other = ca.issue("third", &localhost(), Usage::Node).unwrap();
    std::fs::write(&cert, &other.cert_pem).unwrap();
    assert!(!id.reload(true));
    assert_eq!(cn(&id), "second-one");
    std::fs::write(&key, "not a key").unwrap();
    assert!(!id.reload(true));
    // The rotation completes: taken.
    std::fs::write(&key, &other.key_pem).unwrap();
    assert!(id.reload(true));
    assert_eq!(cn(&id), "third");
}

#[test]
fn bad_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let e = Identity::from_files(&missing, &missing)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.pem"), "{e}");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "hello").unwrap();
    let e = read_certs(&junk).unwrap_err().to_string();
    assert!(e.contains("no certificate"), "{e}");
    assert!(read_key(&junk).is_err());
}

#[test]
fn a_ca_remade_from_its_key_issues_certificates_that_chain_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::generate().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let again = Authority::from_key_pem(&ca.key_pem()).unwrap();
    let (cert, key) = write(
        dir.path(),
        "late",
        &again.issue("late", &localhost(), Usage::Node).unwrap(),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = server_config(Identity::from_files(&cert, &key).unwrap(), None, &[]).unwrap();
    let client = client_config(Some(&ca_file), None).unwrap();
    assert_eq!(
        rt.block_on(exchange(server, client)),
        Ok("hello from ".into())
    );
}
