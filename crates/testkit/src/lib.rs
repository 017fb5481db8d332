//! `trellis-testkit`: a cluster of real `trellis server` processes on 127.0.0.1 for tests.
//!
//! * [`Cluster::start`] starts N nodes (node 1 bootstraps, the others join it), each on
//!   ports the OS picks, with a data directory under one temporary directory, and waits
//!   until every shard has a leader.
//! * [`Cluster::kill`] sends SIGKILL; [`Cluster::restart`] starts the node again on the same
//!   ports and data; [`Cluster::add_node`] starts a new member.
//! * [`Cluster::partition`] cuts a node off from others in both directions, through the
//!   nodes' fault-injection hook (`cluster.fault_injection`), and [`Cluster::heal`] undoes it.
//!
//! Each node's log is kept in `<dir>/n<id>.log`; [`Cluster::logs`] returns them for a
//! failing test's message.

pub mod s3;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use tonic::Status;
pub use trellis_client::{backup, v1 as pb, ApiError, Client, Code};

/// What the harness can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("client: {0}")]
    Client(#[from] trellis_client::Error),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Node(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to start the cluster.
#[derive(Debug, Clone)]
pub struct Options {
    pub shards: u32,
    pub replication_factor: u32,
    /// Extra `TRELLIS__…` settings for every node.
    pub env: Vec<(String, String)>,
    /// Start every node under `ulimit -n` of this many open files.
    pub max_open_files: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            shards: 16,
            replication_factor: 3,
            env: Vec::new(),
            max_open_files: None,
        }
    }
}

/// One node process.
pub struct NodeProc {
    pub id: u64,
    /// `127.0.0.1:port`, fixed after the first start.
    pub grpc: String,
    pub http: String,
    /// The peer port (Raft, joins, forwarded calls).
    pub peer: String,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl NodeProc {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// CPU seconds (user + system) the process has used, from `/proc` (Linux).
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        Some(ticks / 100.0)
    }
}

/// A running cluster; dropping it kills every node.
pub struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    opts: Options,
    bootstrap_expect: usize,
    pub nodes: BTreeMap<u64, NodeProc>,
}

impl Cluster {
    /// Starts `n` nodes of the `trellis` binary at `bin` and waits until every shard has a
    /// leader.
    pub async fn start(bin: impl AsRef<Path>, n: usize, opts: Options) -> Result<Cluster> {
        let mut c = Cluster {
            bin: bin.as_ref().to_path_buf(),
            dir: tempfile::tempdir()?,
            opts,
            bootstrap_expect: n,
            nodes: BTreeMap::new(),
        };
        for id in 1..=n as u64 {
            c.spawn_new(id)?;
        }
        if let Err(e) = c.wait_leaders(Duration::from_secs(60)).await {
            // A cluster that does not come up is diagnosed from its nodes' logs.
            return Err(Error::Timeout(format!("{e}\n{}", c.logs())));
        }
        Ok(c)
    }

    /// Builds node 1 of a new cluster from the backup in `backup` (`trellis restore`), starts
    /// it and waits until it leads every shard; [`Cluster::add_node`] adds others.
    pub async fn restore(bin: impl AsRef<Path>, backup: &Path, opts: Options) -> Result<Cluster> {
        let mut c = Cluster {
            bin: bin.as_ref().to_path_buf(),
            dir: tempfile::tempdir()?,
            opts,
            bootstrap_expect: 1,
            nodes: BTreeMap::new(),
        };
        // The restored node is its groups' voter at its peer address, so the port is fixed
        // before it first starts.
        let peer = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.to_string()
        };
        let mut node = NodeProc {
            id: 1,
            grpc: "127.0.0.1:0".into(),
            http: "127.0.0.1:0".into(),
            peer,
            data: c.dir.path().join("d1"),
            log: c.dir.path().join("n1.log"),
            child: None,
        };
        let out = Command::new(&c.bin)
            .arg("restore")
            .arg("--from")
            .arg(backup)
            .args(["--node-id", "1"])
            .arg("--data-dir")
            .arg(&node.data)
            .args(["--peer-addr", &node.peer])
            .output()?;
        if !out.status.success() {
            return Err(Error::Node(format!(
                "trellis restore failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        c.launch(&mut node, None)?;
        c.nodes.insert(1, node);
        if let Err(e) = c.wait_leaders(Duration::from_secs(60)).await {
            return Err(Error::Timeout(format!("{e}\n{}", c.logs())));
        }
        Ok(c)
    }

    fn join_addr(&self) -> Option<String> {
        self.nodes
            .values()
            .find(|n| n.is_running())
            .map(|n| n.peer.clone())
    }

    fn spawn_new(&mut self, id: u64) -> Result<()> {
        let data = self.dir.path().join(format!("d{id}"));
        let log = self.dir.path().join(format!("n{id}.log"));
        let join = self.join_addr();
        let mut node = NodeProc {
            id,
            grpc: "127.0.0.1:0".into(),
            http: "127.0.0.1:0".into(),
            peer: "127.0.0.1:0".into(),
            data,
            log,
            child: None,
        };
        self.launch(&mut node, join)?;
        self.nodes.insert(id, node);
        Ok(())
    }

    fn launch(&self, node: &mut NodeProc, join: Option<String>) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let start_len = log.metadata()?.len();
        let mut cmd = match self.opts.max_open_files {
            // `sh` lowers the limit and then becomes the node (exec), so the pid is the
            // node's.
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        cmd.arg("server")
            .args(["--node-id", &node.id.to_string()])
            .arg("--data-dir")
            .arg(&node.data)
            .args(["--grpc-addr", &node.grpc])
            .args(["--http-addr", &node.http])
            .args(["--peer-addr", &node.peer])
            .args(["--shards", &self.opts.shards.to_string()])
            .args(["--bootstrap-expect", &self.bootstrap_expect.to_string()])
            .env("TRELLIS__CLUSTER__FAULT_INJECTION", "true")
            .env(
                "TRELLIS__CLUSTER__REPLICATION_FACTOR",
                self.opts.replication_factor.to_string(),
            )
            .env(
                "TRELLIS_LOG",
                // The node's own default, so tests see what an operator sees.
                std::env::var("TRELLIS_LOG").unwrap_or_else(|_| {
                    "info,openraft=error,openraft::replication=off,sled=warn".into()
                }),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(j) = join {
            cmd.args(["--join", &j]);
        }
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        node.child = Some(cmd.spawn()?);
        // The node prints its ports once it listens.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&node.log)?;
            let fresh = text.get(start_len as usize..).unwrap_or("");
            if let Some(line) = fresh
                .lines()
                .find(|l| l.starts_with(&format!("trellis: node {} listening:", node.id)))
            {
                let words: Vec<&str> = line.split_whitespace().collect();
                let grpc = words
                    .iter()
                    .position(|w| *w == "gRPC")
                    .and_then(|i| words.get(i + 1));
                let http = words
                    .iter()
                    .position(|w| *w == "HTTP")
                    .and_then(|i| words.get(i + 1));
                let peer = words
                    .iter()
                    .position(|w| *w == "peer")
                    .and_then(|i| words.get(i + 1));
                if let (Some(g), Some(h), Some(p)) = (grpc, http, peer) {
                    node.grpc = g.to_string();
                    node.http = h.to_string();
                    node.peer = p.to_string();
                    return Ok(());
                }
            }
            if let Some(child) = node.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    node.child = None;
                    return Err(Error::Node(format!(
                        "node {} exited at start ({status}):\n{}",
                        node.id, fresh
                    )));
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!("node {} did not listen", node.id)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a new member that joins through a running node.
    pub async fn add_node(&mut self) -> Result<u64> {
        let id = self.nodes.keys().max().copied().unwrap_or(0) + 1;
        self.spawn_new(id)?;
        Ok(id)
    }

    /// Stops node `id` if it runs, deletes its data, and starts a new node under the same
    /// id that joins through a running node: a StatefulSet pod that comes back after a
    /// scale-in deleted its volume.
    pub fn replace(&mut self, id: u64) -> Result<()> {
        self.stop(id);
        if let Some(n) = self.nodes.remove(&id) {
            std::fs::remove_dir_all(&n.data).or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })?;
        }
        self.spawn_new(id)
    }

    /// Waits at most `timeout` for node `id`'s process to exit by itself; returns its exit
    /// status and its log.
    pub fn wait_exit(
        &mut self,
        id: u64,
        timeout: Duration,
    ) -> Result<(std::process::ExitStatus, String)> {
        let n = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| Error::Node(format!("no node {id}")))?;
        let deadline = Instant::now() + timeout;
        loop {
            let Some(c) = n.child.as_mut() else {
                return Err(Error::Node(format!("node {id} is not running")));
            };
            if let Some(status) = c.try_wait()? {
                n.child = None;
                return Ok((status, std::fs::read_to_string(&n.log)?));
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "node {id} still runs after {timeout:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL, no warning.
    pub fn kill(&mut self, id: u64) {
        if let Some(n) = self.nodes.get_mut(&id) {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// SIGSTOP: the node keeps its sockets (connections are accepted by the kernel) and
    /// answers nothing until [`Cluster::thaw`].
    pub fn freeze(&self, id: u64) {
        self.signal(id, "-STOP");
    }

    /// SIGCONT after [`Cluster::freeze`].
    pub fn thaw(&self, id: u64) {
        self.signal(id, "-CONT");
    }

    fn signal(&self, id: u64, sig: &str) {
        if let Some(pid) = self.nodes.get(&id).and_then(|n| n.pid()) {
            let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
        }
    }

    /// SIGTERM, then wait for a graceful exit (SIGKILL after 20 s).
    pub fn stop(&mut self, id: u64) {
        if let Some(n) = self.nodes.get_mut(&id) {
            if let Some(mut c) = n.child.take() {
                let _ = Command::new("kill")
                    .args(["-TERM", &c.id().to_string()])
                    .status();
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    if let Ok(Some(_)) = c.try_wait() {
                        break;
                    }
                    if Instant::now() > deadline {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    /// Starts a stopped node again with its data and ports.
    pub fn restart(&mut self, id: u64) -> Result<()> {
        let mut node = self
            .nodes
            .remove(&id)
            .ok_or_else(|| Error::Node(format!("no node {id}")))?;
        let r = self.launch(&mut node, None);
        self.nodes.insert(id, node);
        r
    }

    /// A client of node `id`.
    pub async fn client(&self, id: u64) -> Result<Client> {
        let n = self
            .nodes
            .get(&id)
            .ok_or_else(|| Error::Node(format!("no node {id}")))?;
        Ok(Client::connect(&n.endpoint()).await?)
    }

    /// A client of some running node.
    pub async fn any_client(&self) -> Result<Client> {
        for n in self.nodes.values().filter(|n| n.is_running()) {
            if let Ok(c) = Client::connect(&n.endpoint()).await {
                return Ok(c);
            }
        }
        Err(Error::Node("no node answers".into()))
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.is_running())
            .map(|n| n.id)
            .collect()
    }

    /// The shard map with leaders, as node `id` reports it.
    pub async fn shards_from(&self, id: u64) -> Result<Vec<pb::Shard>> {
        let mut c = self.client(id).await?;
        shards_of(&mut c).await
    }

    /// The shard map with leaders, as a running node reports it.
    pub async fn shards(&self) -> Result<Vec<pb::Shard>> {
        let mut c = self.any_client().await?;
        shards_of(&mut c).await
    }

    /// Waits until every shard has a leader among the running nodes; returns how long.
    pub async fn wait_leaders(&self, timeout: Duration) -> Result<Duration> {
        let t0 = Instant::now();
        let running = self.running();
        loop {
            let last = match self.shards().await {
                Ok(shards) => {
                    let without: Vec<String> = shards
                        .iter()
                        .filter(|s| s.leader == 0 || !running.contains(&s.leader))
                        .map(|s| format!("{} (leader {})", s.id, s.leader))
                        .collect();
                    if !shards.is_empty() && without.is_empty() {
                        return Ok(t0.elapsed());
                    }
                    if shards.is_empty() {
                        "the shard map is empty".to_string()
                    } else {
                        format!("shards {}", without.join(", "))
                    }
                }
                Err(e) => format!("no shard map: {e}"),
            };
            if t0.elapsed() > timeout {
                return Err(Error::Timeout(format!(
                    "shards without a running leader after {timeout:?}: {last}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The node that leads the most shards.
    pub async fn busiest_leader(&self) -> Result<u64> {
        let mut count: BTreeMap<u64, usize> = BTreeMap::new();
        for s in self.shards().await? {
            *count.entry(s.leader).or_default() += 1;
        }
        count
            .into_iter()
            .filter(|(n, _)| *n != 0)
            .max_by_key(|(_, c)| *c)
            .map(|(n, _)| n)
            .ok_or_else(|| Error::Node("no shard has a leader".into()))
    }

    /// Cuts node `id` off from every other node, both ways.
    pub async fn partition(&self, id: u64) -> Result<()> {
        let others: Vec<u64> = self.nodes.keys().copied().filter(|n| *n != id).collect();
        self.block(id, others.clone()).await?;
        for o in others {
            if self.nodes[&o].is_running() {
                self.block(o, vec![id]).await?;
            }
        }
        Ok(())
    }

    /// Undoes every partition.
    pub async fn heal(&self) -> Result<()> {
        for n in self.running() {
            self.block(n, Vec::new()).await?;
        }
        Ok(())
    }

    async fn block(&self, on: u64, nodes: Vec<u64>) -> Result<()> {
        let mut c = self.client(on).await?;
        c.admin
            .partition(pb::PartitionRequest { nodes })
            .await
            .map_err(trellis_client::Error::from)?;
        Ok(())
    }

    /// Node `id`'s Prometheus metrics (`GET /metrics` on its HTTP port).
    pub fn metrics(&self, id: u64) -> Result<String> {
        use std::io::{Read, Write};
        let n = self
            .nodes
            .get(&id)
            .ok_or_else(|| Error::Node(format!("no node {id}")))?;
        let mut s = std::net::TcpStream::connect(&n.http)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n", n.http)?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    }

    /// A counter or gauge from node `id`'s metrics.
    pub fn metric(&self, id: u64, name: &str) -> Result<f64> {
        let text = self.metrics(id)?;
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| Error::Node(format!("node {id} has no metric {name}")))
    }

    /// Waits until every shard has `rf` replicas and a leader on running nodes, and replica
    /// and leader counts over `nodes` differ by at most one; returns how long it took.
    pub async fn wait_balanced(
        &self,
        nodes: &[u64],
        rf: usize,
        timeout: Duration,
    ) -> Result<Duration> {
        let t0 = Instant::now();
        let mut last = String::new();
        while t0.elapsed() < timeout {
            if let Ok(shards) = self.shards().await {
                let replicas: Vec<usize> = nodes
                    .iter()
                    .map(|n| shards.iter().filter(|s| s.replicas.contains(n)).count())
                    .collect();
                let leaders: Vec<usize> = nodes
                    .iter()
                    .map(|n| shards.iter().filter(|s| s.leader == *n).count())
                    .collect();
                let spread =
                    |v: &[usize]| v.iter().max().unwrap_or(&0) - v.iter().min().unwrap_or(&0);
                let placed = shards.iter().all(|s| {
                    s.replicas.len() == rf
                        && s.replicas.iter().all(|r| nodes.contains(r))
                        && nodes.contains(&s.leader)
                });
                if placed && spread(&replicas) <= 1 && spread(&leaders) <= 1 {
                    return Ok(t0.elapsed());
                }
                last = format!("replicas {replicas:?} leaders {leaders:?} placed {placed}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Error::Timeout(format!(
            "not balanced after {timeout:?}: {last}"
        )))
    }

    /// Node `id`'s whole log.
    pub fn log(&self, id: u64) -> String {
        self.nodes
            .get(&id)
            .and_then(|n| std::fs::read_to_string(&n.log).ok())
            .unwrap_or_default()
    }

    /// The last lines of every node's log, for a failing test's message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in self.nodes.values() {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(80).collect();
            out.push_str(&format!("--- node {} ---\n", n.id));
            // What broke first may be long before the tail: panics and fatal errors.
            let first: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("panicked") || l.contains("Fatal") || l.contains("fatal"))
                .take(10)
                .collect();
            for l in first {
                out.push_str("(early) ");
                out.push_str(l);
                out.push('\n');
            }
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

async fn shards_of(c: &mut Client) -> Result<Vec<pb::Shard>> {
    Ok(c.admin
        .list_shards(pb::Empty {})
        .await
        .map_err(trellis_client::Error::from)?
        .into_inner()
        .shards)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in self.nodes.values_mut() {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
