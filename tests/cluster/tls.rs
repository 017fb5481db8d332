//! mTLS between nodes: with a cluster CA, nodes join and replicate over TLS, and nobody
//! without a certificate of that CA (no certificate, another CA's, plaintext) can join,
//! send a Raft message or ping the peer port.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use trellis_proto::raft as rpb;
use trellis_proto::raft::raft_transport_client::RaftTransportClient;
use trellis_testkit::{pb, Cluster, Options};
use trellis_tls::certs::{Authority, Usage};

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    /// A CA (`{ca}.pem`) and a node certificate of it for 127.0.0.1 (`{ca}-node.pem`).
    fn authority(&self, ca: &str) -> Authority {
        let a = Authority::generate().unwrap();
        std::fs::write(self.path(&format!("{ca}.pem")), a.cert_pem()).unwrap();
        let node = a
            .issue(
                "node",
                &["127.0.0.1".into(), "localhost".into()],
                Usage::Node,
            )
            .unwrap();
        std::fs::write(self.path(&format!("{ca}-node.pem")), node.cert_pem).unwrap();
        std::fs::write(self.path(&format!("{ca}-node-key.pem")), node.key_pem).unwrap();
        a
    }

    fn env(&self, ca: &str) -> Vec<(String, String)> {
        let p = |f: String| self.path(&f).display().to_string();
        vec![
            ("TRELLIS__TLS__PEER_CA_FILE".into(), p(format!("{ca}.pem"))),
            (
                "TRELLIS__TLS__PEER_CERT_FILE".into(),
                p(format!("{ca}-node.pem")),
            ),
            (
                "TRELLIS__TLS__PEER_KEY_FILE".into(),
                p(format!("{ca}-node-key.pem")),
            ),
        ]
    }
}

/// A peer client to `addr`: over TLS trusting `ca` and presenting `identity`, or plaintext.
async fn peer_client(
    addr: &str,
    tls: Option<(&Path, Option<(PathBuf, PathBuf)>)>,
) -> Result<RaftTransportClient<tonic::transport::Channel>, String> {
    let channel = match tls {
        None => tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .map_err(|e| e.to_string())?,
        Some((ca, id)) => {
            let id = id.map(|(c, k)| trellis_tls::Identity::from_files(&c, &k).unwrap());
            let cfg = trellis_tls::client_config(Some(ca), id).unwrap();
            let ep = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
                .unwrap()
                .connect_timeout(Duration::from_secs(5));
            trellis_tls::channel(ep, cfg)
                .await
                .map_err(|e| format!("{e:?}"))?
        }
    };
    Ok(RaftTransportClient::new(channel))
}

/// Forged Raft traffic from node 99 at term 1000: a vote request and an append.
fn forged(kind: rpb::Kind) -> rpb::RaftBatch {
    let payload: &[u8] = match kind {
        rpb::Kind::Vote => br#"{"vote":{"leader_id":{"term":1000,"node_id":99},"committed":false},"last_log_id":null}"#,
        _ => br#"{"vote":{"leader_id":{"term":1000,"node_id":99},"committed":true},"prev_log_id":null,"entries":[],"leader_commit":null}"#,
    };
    rpb::RaftBatch {
        from: 99,
        messages: vec![rpb::RaftMessage {
            group: 1,
            kind: kind as i32,
            payload: payload.to_vec(),
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_need_a_certificate_of_the_cluster_ca() {
    let pki = Pki {
        dir: tempfile::tempdir().unwrap(),
    };
    pki.authority("cluster");
    pki.authority("stranger");
    let opts = Options {
        shards: 4,
        replication_factor: 2,
        env: pki.env("cluster"),
        ..Default::default()
    };
    // Two nodes join and elect leaders over mTLS.
    let c = Cluster::start(env!("CARGO_BIN_EXE_trellis-node"), 2, opts)
        .await
        .expect("cluster");
    c.wait_leaders(Duration::from_secs(60))
        .await
        .expect("leaders");
    let peer = c.nodes[&1].peer.clone();
    let ca = pki.path("cluster.pem");
    let own = Some((
        pki.path("cluster-node.pem"),
        pki.path("cluster-node-key.pem"),
    ));
    let theirs = Some((
        pki.path("stranger-node.pem"),
        pki.path("stranger-node-key.pem"),
    ));

    // With the cluster's certificate: served (the control).
    let mut ok = peer_client(&peer, Some((&ca, own))).await.expect("mTLS");
    ok.ping(rpb::PingRequest { from: 2 })
        .await
        .expect("ping with the cluster's certificate");

    // Plaintext, TLS without a certificate, TLS with another CA's: no vote, no append, no
    // join.
    let attempts = [
        ("plaintext", peer_client(&peer, None).await),
        (
            "no certificate",
            peer_client(&peer, Some((&ca, None))).await,
        ),
        (
            "another CA's certificate",
            peer_client(&peer, Some((&ca, theirs.clone()))).await,
        ),
    ];
    for (what, client) in attempts {
        let Ok(mut client) = client else {
            continue; // refused at the handshake already
        };
        for kind in [rpb::Kind::Vote, rpb::Kind::AppendEntries] {
            let r = client.batch(forged(kind)).await;
            assert!(r.is_err(), "{what}: a forged {kind:?} was answered: {r:?}");
        }
        let join = client
            .join(rpb::JoinRequest {
                node_id: 99,
                peer_addr: "127.0.0.1:1".into(),
                ..Default::default()
            })
            .await;
        assert!(join.is_err(), "{what}: a join was answered: {join:?}");
    }

    // A node whose certificate is another CA's tries to join: it never becomes a member.
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("stranger.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_trellis-node"));
    cmd.arg("server")
        .args(["--node-id", "9"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args([
            "--peer-addr",
            "127.0.0.1:0",
            "--shards",
            "4",
            "--join",
            &peer,
        ])
        .env("TRELLIS_LOG", "info")
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    for (k, v) in pki.env("stranger") {
        // It trusts the cluster's CA (so it is the cluster that refuses it), but presents
        // the stranger's certificate.
        let v = if k.ends_with("PEER_CA_FILE") {
            ca.display().to_string()
        } else {
            v
        };
        cmd.env(k, v);
    }
    let mut stranger = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut refused = false;
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains("cannot join yet") {
            refused = true;
            break;
        }
        assert!(!text.contains("joined the cluster"), "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let _ = stranger.kill();
    let _ = stranger.wait();
    assert!(refused, "the stranger never tried to join:\n{text}");
    let mut client = c.client(1).await.unwrap();
    let nodes = client
        .admin
        .list_nodes(pb::Empty {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(
        nodes.iter().map(|n| n.id).collect::<Vec<_>>(),
        [1, 2],
        "{nodes:?}"
    );
}
