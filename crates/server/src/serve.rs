//! `trellis dev` and `trellis server`: start a node and serve its APIs until SIGTERM/Ctrl-C.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::config::Config;
use crate::listen::Acceptor;
use crate::node::Node;

#[derive(clap::Args, Debug, Default)]
pub struct Flags {
    /// Configuration file (TOML).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data directory (overrides node.data_dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address (overrides node.grpc_addr).
    #[arg(long)]
    pub grpc_addr: Option<String>,
    /// HTTP listen address for the AWS JSON API (overrides node.http_addr).
    #[arg(long)]
    pub http_addr: Option<String>,
    /// Peer listen address: Raft, joins and forwarded calls between nodes (overrides
    /// node.peer_addr).
    #[arg(long)]
    pub peer_addr: Option<String>,
    /// Number of shards at bootstrap (overrides cluster.shards).
    #[arg(long)]
    pub shards: Option<u32>,
    /// This node's id (overrides node.id).
    #[arg(long)]
    pub node_id: Option<u64>,
    /// Take the node id from the hostname's ordinal plus one (Kubernetes StatefulSet).
    #[arg(long)]
    pub id_from_hostname: bool,
    /// The peer address other nodes reach this one at (overrides node.advertise_addr).
    #[arg(long)]
    pub advertise_addr: Option<String>,
    /// An existing member's peer address to join through (overrides cluster.join;
    /// comma-separated).
    #[arg(long)]
    pub join: Option<String>,
    /// Place shards once this many nodes are members (overrides cluster.bootstrap_expect).
    #[arg(long)]
    pub bootstrap_expect: Option<u32>,
    /// This node's zone label (overrides node.zone).
    #[arg(long)]
    pub zone: Option<String>,
    /// Map a Lambda function name to an HTTP endpoint: NAME=URL. Repeatable.
    #[arg(long = "function", value_name = "NAME=URL")]
    pub functions: Vec<String>,
    /// Serve on non-loopback addresses without authentication (client ports) or without
    /// peer mTLS (the peer port): anyone who reaches them can do anything. For a private
    /// network you trust (overrides node.insecure).
    #[arg(long)]
    pub insecure: bool,
}

impl Flags {
    /// Defaults -> TOML -> TRELLIS__ env -> these flags.
    pub fn config(&self) -> Result<Config> {
        let mut cfg = Config::load(self.config.as_deref(), std::env::vars())?;
        if let Some(d) = &self.data_dir {
            cfg.node.data_dir = d.clone();
        }
        if let Some(a) = &self.grpc_addr {
            cfg.node.grpc_addr = a.clone();
        }
        if let Some(a) = &self.http_addr {
            cfg.node.http_addr = a.clone();
        }
        if let Some(a) = &self.peer_addr {
            cfg.node.peer_addr = a.clone();
        }
        if let Some(s) = self.shards {
            cfg.cluster.shards = s;
        }
        if let Some(id) = self.node_id {
            cfg.node.id = id;
        }
        if self.id_from_hostname {
            cfg.node.id_from_hostname = true;
        }
        if cfg.node.id_from_hostname {
            let host = std::env::var("HOSTNAME")
                .ok()
                .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
                .unwrap_or_default();
            cfg.node.id = crate::config::id_from_hostname(host.trim())?;
        }
        if let Some(a) = &self.advertise_addr {
            cfg.node.advertise_addr = a.clone();
        }
        if let Some(j) = &self.join {
            cfg.cluster.join = j.clone();
        }
        if let Some(k) = self.bootstrap_expect {
            cfg.cluster.bootstrap_expect = k;
        }
        if let Some(z) = &self.zone {
            cfg.node.zone = z.clone();
        }
        if self.insecure {
            cfg.node.insecure = true;
        }
        for f in &self.functions {
            let (name, url) = f
                .split_once('=')
                .with_context(|| format!("--function expects NAME=URL, got '{f}'"))?;
            cfg.functions.insert(name.to_string(), url.to_string());
        }
        cfg.check()?;
        Ok(cfg)
    }
}

/// Runs a node until it is told to stop.
pub fn run(cfg: Config) -> Result<()> {
    let exposed = cfg.exposure();
    // The audit log (`trellis::audit`) is on by default when the node authenticates.
    let default = if !cfg.auth.enabled() {
        "info,openraft=error,openraft::replication=off,sled=warn,trellis::audit=off"
    } else {
        "info,openraft=error,openraft::replication=off,sled=warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRELLIS_LOG")
        .unwrap_or_else(|_| default.into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.node.log_format {
        crate::config::LogFormat::Json => logs.json().init(),
        crate::config::LogFormat::Text => {
            use std::io::IsTerminal;
            logs.with_ansi(std::io::stderr().is_terminal()).init()
        }
    }
    // Before any port is bound: a second node on the same directory stops here, with one
    // line saying why.
    let _lock = trellis_storage::lock_dir(&cfg.node.data_dir)?;
    if !exposed.is_empty() {
        if !cfg.node.insecure {
            anyhow::bail!(
                "refusing to start: {}; turn on authentication \
                 (TRELLIS_ROOT_ACCESS_KEY_ID and TRELLIS_ROOT_SECRET_ACCESS_KEY, or [auth]) and \
                 peer mTLS (tls.peer_ca_file), listen on loopback, or pass --insecure \
                 (docs/security.md)",
                exposed.join(" and ")
            );
        }
        tracing::warn!(exposed = %exposed.join("; "), "serving without protection (--insecure)");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut cfg = cfg;
        let listeners = Listeners::bind(&mut cfg).await?;
        eprintln!(
            "trellis: node {} listening: gRPC {} HTTP {} peer {}",
            cfg.node.id, cfg.node.grpc_addr, cfg.node.http_addr, cfg.node.peer_addr
        );
        let node = Node::open(cfg).await?;
        serve(node, listeners, shutdown_signal()).await
    })
}

/// The node's three listeners, bound.
pub struct Listeners {
    /// gRPC for clients: `trellis.v1` only.
    pub grpc: tokio::net::TcpListener,
    /// The AWS JSON API, `/metrics`, `/healthz`, `/readyz`.
    pub http: tokio::net::TcpListener,
    /// Raft, snapshots, joins and forwarded calls between nodes.
    pub peer: tokio::net::TcpListener,
}

impl Listeners {
    /// Binds the configured addresses and writes the ports got back into `cfg` (port 0
    /// means any free port: peers and clients are told the real one).
    pub async fn bind(cfg: &mut Config) -> Result<Listeners> {
        async fn bind(addr: &mut String, key: &str) -> Result<tokio::net::TcpListener> {
            let l = tokio::net::TcpListener::bind(addr.as_str())
                .await
                .with_context(|| format!("cannot listen on {addr} ({key})"))?;
            *addr = l.local_addr()?.to_string();
            Ok(l)
        }
        Ok(Listeners {
            grpc: bind(&mut cfg.node.grpc_addr, "node.grpc_addr").await?,
            http: bind(&mut cfg.node.http_addr, "node.http_addr").await?,
            peer: bind(&mut cfg.node.peer_addr, "node.peer_addr").await?,
        })
    }
}

/// Serves the node's APIs on bound listeners until `stop` resolves, then shuts the node
/// down: the peer port first (peers reach this node's Raft groups through it while it
/// joins), the client ports once the node serves its shards.
pub async fn serve(
    node: Arc<Node>,
    listeners: Listeners,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let idle = std::time::Duration::from_secs(node.cfg.node.idle_timeout_seconds);
    let http = Acceptor::new(listeners.http, idle, "http");
    let grpc = Acceptor::new(listeners.grpc, idle, "grpc");
    let peer = Acceptor::new(listeners.peer, idle, "peer");
    let (http_addr, grpc_addr, peer_addr) =
        (http.local_addr()?, grpc.local_addr()?, peer.local_addr()?);
    let tls = node.tls.clone();
    let scheme = if tls.http.is_some() { "https" } else { "http" };
    let cap = node.cfg.node.max_connections;
    let peer = peer.incoming(tls.peer, cap);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let stopped = move |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let peer_task = tokio::spawn(crate::grpc::serve_peer(
        node.clone(),
        peer,
        stopped(rx.clone()),
    ));
    let joined = async {
        node.bootstrap().await?;
        node.wait_ready(std::time::Duration::from_secs(120)).await
    };
    // A node the cluster says it removed stops, with the reason as its error.
    let removed = node.cluster().membership().removed();
    tokio::pin!(stop, removed);
    tokio::select! {
        r = joined => r?,
        _ = &mut stop => {
            let _ = tx.send(true);
            let _ = peer_task.await;
            node.shutdown().await;
            return Ok(());
        }
        why = &mut removed => {
            let _ = tx.send(true);
            let _ = peer_task.await;
            node.shutdown().await;
            anyhow::bail!("{why}");
        }
    }
    // The client APIs answer once the node serves its shards.
    let grpc = grpc.incoming(tls.grpc, cap);
    let grpc_task = tokio::spawn(crate::grpc::serve(node.clone(), grpc, stopped(rx.clone())));
    let app = crate::aws::router(node.clone());
    let http_stop = stopped(rx);
    let http = http.incoming(tls.http, cap);
    let http_task = tokio::spawn(async move {
        axum::serve(http, app)
            .with_graceful_shutdown(http_stop)
            .await
    });
    tracing::info!(%http_addr, %grpc_addr, %peer_addr, node_id = node.id(), shards = node.shard_count(),
        "serving the AWS JSON API and gRPC");
    eprintln!(
        "trellis: node {} serving the AWS Step Functions API on {scheme}://{http_addr}, gRPC on {grpc_addr}, peers on {peer_addr}",
        node.id()
    );
    eprintln!("{}", banner(&node, scheme, http_addr, grpc_addr));
    let result = tokio::select! {
        _ = &mut stop => Ok(()),
        why = &mut removed => Err(anyhow::anyhow!("{why}")),
    };
    tracing::info!("shutting down");
    let _ = tx.send(true);
    let _ = http_task.await;
    let _ = grpc_task.await;
    let _ = peer_task.await;
    node.shutdown().await;
    result
}

/// What a new user needs once the node serves: where its data is, how to reach it, how to
/// stop it.
fn banner(
    node: &Node,
    scheme: &str,
    http: std::net::SocketAddr,
    grpc: std::net::SocketAddr,
) -> String {
    let dir = &node.cfg.node.data_dir;
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
    let grpc_scheme = if node.tls.grpc.is_some() {
        "https"
    } else {
        "http"
    };
    format!(
        "  data      {} ({} shards)\n  \
         AWS API   aws stepfunctions --endpoint-url {scheme}://{http} list-state-machines\n  \
         CLI       trellisctl --endpoint {grpc_scheme}://{grpc} cluster status\n  \
         metrics   {scheme}://{http}/metrics\n  \
         stop      Ctrl-C or SIGTERM (the node finishes what it acknowledged; its data stays)",
        dir.display(),
        node.shard_count(),
    )
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
