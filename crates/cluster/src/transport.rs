//! The Raft transport between nodes.
//!
//! Every group on a node (the meta group, each shard replica) sends its Raft messages through
//! one [`Transport`]. Per peer node there is one HTTP/2 connection for Raft messages and one
//! for snapshot chunks. A peer's sender task takes whatever is queued when it runs and sends
//! it as one `Batch` call, so under load many groups' appends and heartbeats share a call;
//! calls are pipelined on the connection.
//!
//! Fault injection (tests only, `cluster.fault_injection`): [`Transport::block`] drops every
//! message to and from the given nodes, which cuts this node off from them both ways.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft, RaftTypeConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, Endpoint};
use trellis_proto::raft as rpb;
use trellis_proto::raft::raft_transport_client::RaftTransportClient;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Most messages in one batch.
const MAX_BATCH: usize = 256;

/// A message this large travels in a call of its own: a batch is answered when its slowest
/// message is, and heartbeats must not wait behind a large append.
const SOLO_BYTES: usize = 32 * 1024;

/// Receives the messages addressed to one group on this node.
pub trait GroupHandler: Send + Sync + 'static {
    fn handle(&self, kind: rpb::Kind, payload: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, String>>;
}

impl<C> GroupHandler for Raft<C>
where
    C: RaftTypeConfig<NodeId = u64, Node = BasicNode, SnapshotData = tokio::fs::File>,
    C::D: Serialize + DeserializeOwned,
    C::R: Serialize + DeserializeOwned,
    C::Entry: Serialize + DeserializeOwned,
{
    fn handle(&self, kind: rpb::Kind, payload: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, String>> {
        Box::pin(async move {
            let out = match kind {
                rpb::Kind::AppendEntries => {
                    let req: AppendEntriesRequest<C> = decode(&payload)?;
                    serde_json::to_vec(&self.append_entries(req).await)
                }
                rpb::Kind::Vote => {
                    let req: VoteRequest<u64> = decode(&payload)?;
                    serde_json::to_vec(&self.vote(req).await)
                }
                rpb::Kind::InstallSnapshot => {
                    let req: InstallSnapshotRequest<C> = decode(&payload)?;
                    serde_json::to_vec(&self.install_snapshot(req).await)
                }
            };
            out.map_err(|e| format!("cannot encode a Raft reply: {e}"))
        })
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("cannot decode a Raft message: {e}"))
}

struct Pending {
    msg: rpb::RaftMessage,
    reply: oneshot::Sender<Result<rpb::RaftReply, String>>,
}

struct Peer {
    addr: String,
    queue: mpsc::UnboundedSender<Pending>,
    snapshots: RaftTransportClient<Channel>,
    /// Forwarded API calls and joins: a connection of their own, so a long poll or a large
    /// payload never sits in front of heartbeats.
    api: RaftTransportClient<Channel>,
    /// Raft messages to it last failed to arrive: logged once when it goes, once when it
    /// comes back, never per retry.
    down: std::sync::atomic::AtomicBool,
}

impl Peer {
    /// Records whether the last Raft message reached the node, logging a change.
    fn reached(&self, me: u64, node: u64, outcome: Result<(), &str>) {
        use std::sync::atomic::Ordering;
        match outcome {
            Ok(()) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!(node_id = me, peer = node, "peer reachable again");
                }
            }
            Err(why) => {
                if !self.down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(node_id = me, peer = node, error = %why,
                        "peer unreachable; its Raft messages are retried without further logs until it answers");
                }
            }
        }
    }
}

/// This node's end of the transport: the peers it sends to and the groups it receives for.
pub struct Transport {
    node_id: u64,
    /// The largest message sent or taken (`cluster.peer_max_message_bytes`).
    max_message: usize,
    /// Snapshot chunks received (`trellis_raft_snapshot_chunks_received_total`).
    snapshot_chunks: prometheus_client::metrics::counter::Counter,
    /// Forwarded calls whose target did not answer within the call's deadline
    /// (`trellis_forward_deadline_exceeded_total`).
    forward_timeouts: prometheus_client::metrics::counter::Counter,
    peers: Mutex<HashMap<u64, Arc<Peer>>>,
    /// mTLS to peers (none: plaintext).
    tls: Option<Arc<trellis_tls::rustls::ClientConfig>>,
    groups: RwLock<HashMap<u64, Arc<dyn GroupHandler>>>,
    blocked: RwLock<HashSet<u64>>,
    /// Groups whose outgoing messages are dropped (a leader handing over its leadership),
    /// but those to the node named (the transfer's target), if any.
    muted: RwLock<HashMap<u64, Option<u64>>>,
}

/// A channel to a node's peer address, over TLS with `tls`; connects on first use and
/// reconnects after failures.
pub fn channel(
    addr: &str,
    tls: Option<&Arc<trellis_tls::rustls::ClientConfig>>,
) -> Result<Channel, String> {
    let bare = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = Endpoint::from_shared(format!("{scheme}://{bare}"))
        .map_err(|e| format!("bad node address '{addr}': {e}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(1))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5));
    Ok(match tls {
        Some(cfg) => trellis_tls::channel_lazy(endpoint, cfg.clone()),
        None => endpoint.connect_lazy(),
    })
}

impl Transport {
    pub fn new(
        node_id: u64,
        max_message: usize,
        snapshot_chunks: prometheus_client::metrics::counter::Counter,
        tls: Option<Arc<trellis_tls::rustls::ClientConfig>>,
    ) -> Arc<Transport> {
        Arc::new(Transport {
            node_id,
            tls,
            max_message,
            snapshot_chunks,
            forward_timeouts: Default::default(),
            peers: Mutex::default(),
            groups: RwLock::default(),
            blocked: RwLock::default(),
            muted: RwLock::default(),
        })
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Counts forwarded calls that got no answer within their deadline.
    pub fn forward_timeouts(&self) -> &prometheus_client::metrics::counter::Counter {
        &self.forward_timeouts
    }

    /// A channel to the peer port at `addr`, with this node's TLS settings.
    pub fn channel(&self, addr: &str) -> Result<Channel, String> {
        channel(addr, self.tls.as_ref())
    }

    /// Routes incoming messages for `group` to `handler`.
    pub fn register(&self, group: u64, handler: Arc<dyn GroupHandler>) {
        self.groups
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(group, handler);
    }

    pub fn unregister(&self, group: u64) {
        self.groups
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&group);
    }

    /// Fault injection: drop all traffic to and from `nodes` (replaces the previous set).
    pub fn block(&self, nodes: impl IntoIterator<Item = u64>) {
        *self.blocked.write().unwrap_or_else(|p| p.into_inner()) = nodes.into_iter().collect();
    }

    /// Drops (or stops dropping) everything this node sends for `group`.
    pub fn mute(&self, group: u64, on: bool) {
        let mut m = self.muted.write().unwrap_or_else(|p| p.into_inner());
        if on {
            m.insert(group, None);
        } else {
            m.remove(&group);
        }
    }

    /// Drops what this node sends for `group` to every node but `to`: a leader handing its
    /// leadership to `to` keeps it caught up (with it, still a quorum of three, writes go
    /// on) while the others' leases run out, so they vote for it.
    pub fn mute_except(&self, group: u64, to: u64) {
        self.muted
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(group, Some(to));
    }

    /// Whether this node drops everything it sends for `group`.
    pub fn is_muted(&self, group: u64) -> bool {
        self.muted
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&group)
            .is_some_and(Option::is_none)
    }

    /// Whether this node drops any of what it sends for `group` (a transfer is under way).
    pub fn is_muted_any(&self, group: u64) -> bool {
        self.muted
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&group)
    }

    /// Whether this node drops what it sends for `group` to `target`.
    fn drops(&self, group: u64, target: u64) -> bool {
        self.muted
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&group)
            .is_some_and(|except| *except != Some(target))
    }

    pub fn is_blocked(&self, node: u64) -> bool {
        self.blocked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&node)
    }

    /// A network factory for one group, for `Raft::new`.
    pub fn network<C>(self: &Arc<Self>, group: u64) -> GroupNetwork<C> {
        GroupNetwork {
            group,
            transport: self.clone(),
            _c: PhantomData,
        }
    }

    fn peer(&self, node: u64, addr: &str) -> Result<Arc<Peer>, String> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = peers.get(&node) {
            if p.addr == addr && !p.queue.is_closed() {
                return Ok(p.clone());
            }
        }
        let client = |addr| -> Result<RaftTransportClient<Channel>, String> {
            Ok(RaftTransportClient::new(self.channel(addr)?)
                .max_decoding_message_size(self.max_message)
                .max_encoding_message_size(self.max_message))
        };
        let (snapshots, api) = (client(addr)?, client(addr)?);
        let client = client(addr)?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(send_loop(self.node_id, client, rx));
        let p = Arc::new(Peer {
            addr: addr.to_string(),
            queue: tx,
            snapshots,
            api,
            down: Default::default(),
        });
        peers.insert(node, p.clone());
        Ok(p)
    }

    /// A client for forwarded calls to node `node` at `addr`.
    pub fn api_client(
        &self,
        node: u64,
        addr: &str,
    ) -> Result<RaftTransportClient<Channel>, String> {
        if self.is_blocked(node) {
            return Err(format!("node {node} is partitioned away (fault injection)"));
        }
        Ok(self.peer(node, addr)?.api.clone())
    }

    /// Sends one message to `group` on node `target` and waits for the reply.
    async fn send(
        &self,
        target: u64,
        addr: &str,
        msg: rpb::RaftMessage,
        ttl: Duration,
    ) -> Result<Vec<u8>, SendError> {
        if self.is_blocked(target) {
            return Err(SendError::Unreachable(
                "partitioned (fault injection)".into(),
            ));
        }
        if self.drops(msg.group, target) {
            return Err(SendError::Unreachable(
                "muted while handing over leadership".into(),
            ));
        }
        let peer = self.peer(target, addr).map_err(SendError::Unreachable)?;
        let sent = self.deliver(&peer, msg, ttl).await;
        let why = match &sent {
            Ok(_) => None,
            Err(SendError::Unreachable(m) | SendError::Network(m)) => Some(m.as_str()),
            Err(SendError::Timeout) => Some("no answer in time"),
        };
        peer.reached(self.node_id, target, why.map_or(Ok(()), Err));
        let reply = sent?;
        if !reply.unreachable.is_empty() {
            return Err(SendError::Unreachable(reply.unreachable));
        }
        Ok(reply.payload)
    }

    /// Sends one message over the peer's connections: the reply, or why it did not arrive.
    async fn deliver(
        &self,
        peer: &Peer,
        msg: rpb::RaftMessage,
        ttl: Duration,
    ) -> Result<rpb::RaftReply, SendError> {
        let reply = if msg.kind == rpb::Kind::InstallSnapshot as i32 {
            let mut c = peer.snapshots.clone();
            let call = c.snapshot(rpb::RaftBatch {
                from: self.node_id,
                messages: vec![msg],
            });
            match tokio::time::timeout(ttl, call).await {
                Err(_) => return Err(SendError::Timeout),
                Ok(Err(s)) => return Err(status_error(&s)),
                Ok(Ok(r)) => r
                    .into_inner()
                    .replies
                    .into_iter()
                    .next()
                    .ok_or_else(|| SendError::Network("empty snapshot reply".into()))?,
            }
        } else {
            let (tx, rx) = oneshot::channel();
            peer.queue
                .send(Pending { msg, reply: tx })
                .map_err(|_| SendError::Unreachable("peer sender stopped".into()))?;
            match tokio::time::timeout(ttl, rx).await {
                Err(_) => return Err(SendError::Timeout),
                Ok(Err(_)) => return Err(SendError::Network("batch dropped".into())),
                Ok(Ok(Err(e))) => return Err(SendError::Unreachable(e)),
                Ok(Ok(Ok(r))) => r,
            }
        };
        Ok(reply)
    }

    /// Delivers a batch that arrived from node `from`.
    pub async fn receive(&self, batch: rpb::RaftBatch) -> Result<rpb::RaftBatchReply, String> {
        if self.is_blocked(batch.from) {
            return Err("partitioned (fault injection)".into());
        }
        let mut set = tokio::task::JoinSet::new();
        let n = batch.messages.len();
        for (i, m) in batch.messages.into_iter().enumerate() {
            let handler = self
                .groups
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&m.group)
                .cloned();
            let chunks = self.snapshot_chunks.clone();
            set.spawn(async move {
                let reply = match handler {
                    None => rpb::RaftReply {
                        payload: Vec::new(),
                        unreachable: format!("group {} is not on this node", m.group),
                    },
                    Some(h) => {
                        let kind = rpb::Kind::try_from(m.kind).unwrap_or(rpb::Kind::AppendEntries);
                        if kind == rpb::Kind::InstallSnapshot {
                            chunks.inc();
                        }
                        match h.handle(kind, m.payload).await {
                            Ok(payload) => rpb::RaftReply {
                                payload,
                                unreachable: String::new(),
                            },
                            Err(e) => rpb::RaftReply {
                                payload: Vec::new(),
                                unreachable: e,
                            },
                        }
                    }
                };
                (i, reply)
            });
        }
        let mut replies = vec![rpb::RaftReply::default(); n];
        while let Some(r) = set.join_next().await {
            let (i, reply) = r.map_err(|e| format!("a Raft handler failed: {e}"))?;
            replies[i] = reply;
        }
        Ok(rpb::RaftBatchReply { replies })
    }
}

/// Takes what is queued for one peer and sends it as one call, without waiting for the
/// previous call's reply.
async fn send_loop(
    from: u64,
    client: RaftTransportClient<Channel>,
    mut rx: mpsc::UnboundedReceiver<Pending>,
) {
    let mut held: Option<Pending> = None;
    loop {
        // A message whose sender stopped waiting (openraft timed it out and sends again)
        // is not sent: a follower that falls behind is not buried under stale copies of
        // large appends.
        let first = match held.take() {
            Some(p) => p,
            None => loop {
                match rx.recv().await {
                    Some(p) if p.reply.is_closed() => continue,
                    Some(p) => break p,
                    None => return,
                }
            },
        };
        let mut batch = vec![first];
        if batch[0].msg.payload.len() < SOLO_BYTES {
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(p) if p.reply.is_closed() => {}
                    Ok(p) if p.msg.payload.len() >= SOLO_BYTES => {
                        held = Some(p);
                        break;
                    }
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
        }
        let mut client = client.clone();
        tokio::spawn(async move {
            let (messages, waiters): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|p| (p.msg, p.reply)).unzip();
            match client.batch(rpb::RaftBatch { from, messages }).await {
                Ok(r) => {
                    let mut replies = r.into_inner().replies.into_iter();
                    for w in waiters {
                        let _ = w.send(
                            replies
                                .next()
                                .ok_or_else(|| "short batch reply".to_string()),
                        );
                    }
                }
                Err(s) => {
                    let e = format!("{}: {}", s.code(), s.message());
                    for w in waiters {
                        let _ = w.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

#[derive(Debug)]
enum SendError {
    Unreachable(String),
    Network(String),
    Timeout,
}

fn status_error(s: &tonic::Status) -> SendError {
    SendError::Unreachable(format!("{}: {}", s.code(), s.message()))
}

impl SendError {
    fn into_rpc<E: std::error::Error>(self) -> RPCError<u64, BasicNode, RaftError<u64, E>> {
        let io = |m: String| std::io::Error::other(m);
        match self {
            SendError::Unreachable(m) => RPCError::Unreachable(Unreachable::new(&io(m))),
            SendError::Network(m) => RPCError::Network(NetworkError::new(&io(m))),
            SendError::Timeout => RPCError::Network(NetworkError::new(&io(
                "the peer did not answer in time".into(),
            ))),
        }
    }
}

/// The network factory of one group.
pub struct GroupNetwork<C> {
    group: u64,
    transport: Arc<Transport>,
    _c: PhantomData<C>,
}

/// A group's connection to one peer.
pub struct GroupClient<C> {
    group: u64,
    target: u64,
    addr: String,
    transport: Arc<Transport>,
    _c: PhantomData<C>,
}

impl<C> RaftNetworkFactory<C> for GroupNetwork<C>
where
    C: RaftTypeConfig<NodeId = u64, Node = BasicNode>,
    C::D: Serialize + DeserializeOwned,
    C::R: Serialize + DeserializeOwned,
    C::Entry: Serialize + DeserializeOwned,
{
    type Network = GroupClient<C>;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> GroupClient<C> {
        GroupClient {
            group: self.group,
            target,
            addr: node.addr.clone(),
            transport: self.transport.clone(),
            _c: PhantomData,
        }
    }
}

impl<C> GroupClient<C> {
    async fn call<Req: Serialize, Resp: DeserializeOwned, E>(
        &self,
        kind: rpb::Kind,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        E: std::error::Error + DeserializeOwned,
    {
        let payload =
            serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let msg = rpb::RaftMessage {
            group: self.group,
            kind: kind as i32,
            payload,
        };
        let bytes = self
            .transport
            .send(self.target, &self.addr, msg, ttl)
            .await
            .map_err(SendError::into_rpc)?;
        let r: Result<Resp, RaftError<u64, E>> =
            serde_json::from_slice(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        r.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(self.target, e)))
    }
}

impl<C> RaftNetwork<C> for GroupClient<C>
where
    C: RaftTypeConfig<NodeId = u64, Node = BasicNode>,
    C::D: Serialize + DeserializeOwned,
    C::R: Serialize + DeserializeOwned,
    C::Entry: Serialize + DeserializeOwned,
{
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(rpb::Kind::AppendEntries, &rpc, option.hard_ttl())
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call(rpb::Kind::InstallSnapshot, &rpc, option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(rpb::Kind::Vote, &rpc, option.hard_ttl()).await
    }
}
