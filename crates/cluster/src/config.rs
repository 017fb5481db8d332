//! The `[cluster]` configuration section, and what a node tells the cluster about itself.

use serde::{Deserialize, Serialize};

/// How this node reaches others and is reached, as recorded in the meta group.
#[derive(Debug, Clone, Default)]
pub struct Member {
    pub id: u64,
    /// The client gRPC address shown to operators.
    pub grpc_addr: String,
    /// The AWS API address shown to operators.
    pub http_addr: String,
    /// The peer address other nodes use (Raft, joins, forwarded calls).
    pub peer_addr: String,
    /// Placement spreads a shard's replicas over distinct zones when nodes carry one.
    pub zone: String,
}

/// What the cluster needs to know of the node it runs in.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub member: Member,
    pub cluster: ClusterConfig,
    /// The region and account of the ARNs executors write.
    pub region: String,
    pub account: String,
    /// mTLS to peers: the cluster CA to trust and this node's certificate to present.
    /// `None`: plaintext (a private network, or `trellis dev` on loopback).
    pub peer_tls: Option<std::sync::Arc<trellis_tls::rustls::ClientConfig>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Number of shards; fixed when the cluster is bootstrapped.
    pub shards: u32,
    /// Most commands a shard executor takes into one Raft proposal.
    pub max_batch: usize,
    /// The longest an Express execution may run before it times out (AWS: 5 minutes). Read
    /// by the API layer, which runs Express executions outside the shards.
    pub express_max_seconds: u64,
    /// Existing members to join through, comma-separated peer addresses. Empty (or only
    /// this node's own address): this node bootstraps a new cluster.
    pub join: String,
    /// The bootstrapping node places shards once this many nodes are members.
    pub bootstrap_expect: u32,
    /// Replicas per shard group (capped at the node count).
    pub replication_factor: u32,
    /// Tests only: accept `trellisctl`'s partition commands (drop traffic to chosen nodes).
    pub fault_injection: bool,
    /// Tests only, and only with `fault_injection`: break the fencing invariant on purpose
    /// (executors ignore the lease and act before their batches commit), to show that the
    /// partition test catches it.
    pub break_fencing: bool,
    /// A node that has not answered the placement driver for this long is down: its
    /// replicas are re-created on other nodes. Long enough for a rolling restart.
    pub down_after_seconds: u64,
    /// A node that has not answered for this long is gone for good: the placement driver
    /// decommissions it (DRAINING; REMOVED once its replicas live elsewhere), and its meta
    /// vote goes to another node. 0 never does. A removed node's id may join again only
    /// with a new data directory.
    pub decommission_after_seconds: u64,
    /// A shard replica snapshots its state every this many log entries.
    pub snapshot_logs: u64,
    /// The largest message the peer port accepts (and sends). A Raft entry larger than this
    /// cannot replicate.
    pub peer_max_message_bytes: usize,
    /// Backpressure: while a shard runs this many executions (in its leader's memory), it
    /// refuses child starts from other shards; they wait, durable, in their senders'
    /// outboxes and are sent again.
    pub max_live_per_shard: usize,
    /// The most children one DISTRIBUTED Map runs at once, whatever its `MaxConcurrency`
    /// (AWS runs up to 10,000): a parent's state, written at each of its steps, grows with
    /// its children in flight.
    pub map_run_max_concurrency: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            shards: 64,
            max_batch: 512,
            express_max_seconds: 300,
            join: String::new(),
            bootstrap_expect: 1,
            replication_factor: 3,
            fault_injection: false,
            break_fencing: false,
            down_after_seconds: 30,
            decommission_after_seconds: 3_600,
            snapshot_logs: 5_000,
            peer_max_message_bytes: 256 << 20,
            max_live_per_shard: 5_000,
            map_run_max_concurrency: 1_000,
        }
    }
}

impl ClusterConfig {
    /// Whether the fencing invariant is broken on purpose (tests only).
    pub fn breaks_fencing(&self) -> bool {
        self.fault_injection && self.break_fencing
    }

    /// The join addresses, without this node's own.
    pub fn join_addrs(&self, own: &str) -> Vec<String> {
        self.join
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty() && *a != own)
            .map(str::to_string)
            .collect()
    }
}
