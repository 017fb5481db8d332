//! The node's ports: the client gRPC port serves no peer service, the peer port refuses an
//! oversized message before reading it, every listener serves again after the process ran
//! out of file descriptors, and a connection that says nothing is closed.

use std::io::Read;
use std::time::{Duration, Instant};

use trellis_proto::raft as rpb;
use trellis_proto::raft::raft_transport_client::RaftTransportClient;
use trellis_testkit::{pb, Cluster, Options};

fn peer_client(addr: &str) -> RaftTransportClient<tonic::transport::Channel> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    RaftTransportClient::new(ch)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX)
}

/// One node with 4 shards and these `TRELLIS__…` settings.
async fn one_node(env: &[(&str, &str)]) -> Cluster {
    let opts = Options {
        shards: 4,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    Cluster::start(env!("CARGO_BIN_EXE_trellis-node"), 1, opts)
        .await
        .expect("cluster")
}

/// Resident memory of a process, in bytes (Linux).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_services_only_on_the_peer_port_and_messages_are_bounded() {
    let opts = Options {
        shards: 4,
        ..Default::default()
    };
    let c = Cluster::start(env!("CARGO_BIN_EXE_trellis-node"), 1, opts)
        .await
        .expect("cluster");
    let node = &c.nodes[&1];

    // The client port does not know the peer service.
    let err = peer_client(&node.grpc)
        .ping(rpb::PingRequest { from: 9 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
    let err = peer_client(&node.grpc)
        .join(rpb::JoinRequest {
            node_id: 9,
            peer_addr: "127.0.0.1:1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
    // The peer port does, and it serves no client service.
    peer_client(&node.peer)
        .ping(rpb::PingRequest { from: 9 })
        .await
        .expect("ping on the peer port");
    let mut wrong = trellis_testkit::Client::connect(&format!("http://{}", node.peer))
        .await
        .unwrap();
    let err = wrong
        .state_machines
        .list_state_machines(pb::ListStateMachinesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");

    // A 1 GiB message to the peer port is refused from its length prefix.
    let pid = node.pid().unwrap();
    let huge = rpb::RaftBatch {
        from: 9,
        messages: vec![rpb::RaftMessage {
            group: 0,
            kind: rpb::Kind::AppendEntries as i32,
            payload: vec![7u8; 1 << 30],
        }],
    };
    let sent = tokio::time::timeout(
        Duration::from_secs(120),
        peer_client(&node.peer).batch(huge),
    )
    .await
    .expect("an answer within two minutes");
    let err = sent.expect_err("a 1 GiB peer message must be refused");
    assert!(
        matches!(
            err.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{err:?}"
    );
    assert!(
        rss(pid) < 512 << 20,
        "the node holds {} MiB after the refused message",
        rss(pid) >> 20
    );
    // And it still serves.
    c.client(1)
        .await
        .unwrap()
        .state_machines
        .list_state_machines(pb::ListStateMachinesRequest::default())
        .await
        .expect("the node serves after the refused message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_outlive_running_out_of_file_descriptors() {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let ours: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        ours >= 4096,
        "this test opens 1,100 connections: raise `ulimit -n` (now {ours}) to 4096 or more"
    );
    let opts = Options {
        shards: 4,
        max_open_files: Some(1024),
        env: vec![("TRELLIS__NODE__IDLE_TIMEOUT_SECONDS".into(), "600".into())],
        ..Default::default()
    };
    let c = Cluster::start(env!("CARGO_BIN_EXE_trellis-node"), 1, opts)
        .await
        .expect("cluster");
    let node = &c.nodes[&1];

    // 1,100 connections that say nothing, over the three ports: more than the node can
    // hold under 1,024 descriptors, so its accept loops meet EMFILE.
    let addrs = [node.grpc.clone(), node.http.clone(), node.peer.clone()];
    let mut idle = Vec::new();
    let connecting = Instant::now() + Duration::from_secs(60);
    for i in 0..1_100 {
        if Instant::now() > connecting {
            break;
        }
        let addr = &addrs[i % addrs.len()];
        // A connect that fails or waits: the accept backlog is full, the kernel holds the
        // rest back.
        let connect = tokio::net::TcpStream::connect(addr);
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), connect).await {
            idle.push(s);
        }
    }
    assert!(
        idle.len() > 1_024,
        "only {} connections were opened",
        idle.len()
    );
    // The accept loops run into the limit (bounded wait on the node's log).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !c.logs().contains("cannot accept connections") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        c.logs().contains("cannot accept connections"),
        "the node never ran out of descriptors:\n{}",
        c.logs()
    );
    drop(idle);

    // Every listener serves again (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let grpc = async {
            let mut cl = trellis_testkit::Client::connect(&node.endpoint()).await?;
            cl.state_machines
                .list_state_machines(pb::ListStateMachinesRequest::default())
                .await
                .map_err(|s| trellis_testkit::Error::Client(s.into()))?;
            Ok::<_, trellis_testkit::Error>(())
        };
        let mut pc = peer_client(&node.peer);
        let peer = pc.ping(rpb::PingRequest { from: 9 }).await;
        let http = healthz(&node.http);
        let (grpc, peer) = match (grpc.await, peer, http) {
            (Ok(()), Ok(_), Ok(())) => break,
            (g, p, h) => (g, (p, h)),
        };
        assert!(
            Instant::now() < deadline,
            "the listeners do not serve again: grpc {grpc:?}, peer and http {peer:?}\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn healthz(addr: &str) -> Result<(), String> {
    match get(addr, "/healthz")? {
        (200, _) => Ok(()),
        (status, body) => Err(format!("{status}: {body}")),
    }
}

/// `GET path` over HTTP/1.0: the status and the body.
fn get(addr: &str, path: &str) -> Result<(u16, String), String> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {text}"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_when_the_node_cannot_serve() {
    let opts = Options {
        shards: 4,
        ..Default::default()
    };
    let mut c = Cluster::start(env!("CARGO_BIN_EXE_trellis-node"), 3, opts)
        .await
        .expect("cluster");
    let http = c.nodes[&1].http.clone();
    assert_eq!(get(&http, "/readyz"), Ok((200, "ok".into())));
    // Without its two peers, node 1 cannot lead or follow anything: not ready, and why.
    c.kill(2);
    c.kill(3);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (status, why) = loop {
        let (status, body) = get(&http, "/readyz").expect("node 1 answers");
        if status != 200 || Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 503, "{why}");
    assert!(why.starts_with("not ready: "), "{why}");
    // /healthz is liveness: the process is up.
    assert_eq!(healthz(&http), Ok(()));
    // Back with one peer: a quorum again, ready again.
    c.restart(2).expect("restart node 2");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = get(&http, "/readyz");
        if matches!(r, Ok((200, _))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready again: {r:?}\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_says_nothing_is_closed() {
    let c = one_node(&[("TRELLIS__NODE__IDLE_TIMEOUT_SECONDS", "1")]).await;
    let node = &c.nodes[&1];
    for addr in [&node.grpc, &node.http, &node.peer] {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        // The node closes it; the bound only keeps a broken build from hanging here.
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        // An HTTP/2 server speaks first (its SETTINGS); then nothing, until it closes.
        let mut buf = [0u8; 256];
        let closed = loop {
            match s.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        assert!(closed.is_ok(), "{addr} was not closed: {closed:?}");
    }
    // A live gRPC client is not idle: HTTP/2 keeps it busy enough, and it still answers.
    let mut cl = c.client(1).await.unwrap();
    for _ in 0..3 {
        cl.state_machines
            .list_state_machines(pb::ListStateMachinesRequest::default())
            .await
            .expect("a client that keeps talking is served");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_do_not_stop_others_from_being_served() {
    let c = one_node(&[("TRELLIS__NODE__IDLE_TIMEOUT_SECONDS", "600")]).await;
    let node = &c.nodes[&1];
    let addrs = [node.grpc.clone(), node.http.clone()];
    let mut idle = Vec::new();
    for i in 0..1_000 {
        let s = tokio::net::TcpStream::connect(&addrs[i % 2])
            .await
            .expect("connect");
        idle.push(s);
    }
    // While they stay open, saying nothing, both client ports serve others.
    let mut cl = trellis_testkit::Client::connect(&node.endpoint())
        .await
        .unwrap();
    cl.state_machines
        .list_state_machines(pb::ListStateMachinesRequest::default())
        .await
        .expect("gRPC with 1,000 idle connections open");
    healthz(&node.http).expect("HTTP with 1,000 idle connections open");
    assert_eq!(idle.len(), 1_000);
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_new_connections_wait_for_a_place() {
    let c = one_node(&[
        ("TRELLIS__NODE__IDLE_TIMEOUT_SECONDS", "600"),
        ("TRELLIS__NODE__MAX_CONNECTIONS", "20"),
    ])
    .await;
    let http = c.nodes[&1].http.clone();
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(
            tokio::net::TcpStream::connect(&http)
                .await
                .expect("connect"),
        );
    }
    // The 21st waits: its request is answered only once a place frees.
    let waiting = {
        let http = http.clone();
        std::thread::spawn(move || -> Result<String, String> {
            use std::io::Write;
            let mut s = std::net::TcpStream::connect(&http).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(60)))
                .map_err(|e| e.to_string())?;
            write!(s, "GET /healthz HTTP/1.0\r\nHost: {http}\r\n\r\n")
                .map_err(|e| e.to_string())?;
            let mut text = String::new();
            s.read_to_string(&mut text).map_err(|e| e.to_string())?;
            Ok(text)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !c.logs().contains("as many connections open as allowed") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        c.logs().contains("as many connections open as allowed"),
        "the cap was never reached:\n{}",
        c.logs()
    );
    assert!(!waiting.is_finished(), "served past the cap");
    drop(idle);
    let answer = waiting
        .join()
        .unwrap()
        .expect("served once the idle connections closed");
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
}
