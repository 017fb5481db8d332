//! The command line: every subcommand and its arguments (clap).

use clap::{Parser, Subcommand};

pub(crate) use crate::bench::Bench;

#[derive(Parser)]
#[command(
    name = "trellisctl",
    version,
    about = "Trellis command-line client (gRPC)"
)]
pub(crate) struct Cli {
    /// gRPC endpoint of any node.
    #[arg(
        long,
        global = true,
        env = "TRELLIS_ENDPOINT",
        default_value = "http://127.0.0.1:7300"
    )]
    pub(crate) endpoint: String,
    /// Bearer token for a node that authenticates (a principal's token).
    #[arg(long, global = true, env = "TRELLIS_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// For an https:// endpoint: the CA to trust (PEM; default: the system's roots).
    #[arg(long, global = true, env = "TRELLIS_CA")]
    pub(crate) ca: Option<std::path::PathBuf>,
    /// A client certificate (PEM) for a node that asks for one; with --key.
    #[arg(long, global = true, env = "TRELLIS_CERT")]
    pub(crate) cert: Option<std::path::PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, global = true, env = "TRELLIS_KEY")]
    pub(crate) key: Option<std::path::PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) command: Cmd,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// State machines.
    #[command(subcommand)]
    Sm(Sm),
    /// Executions.
    #[command(subcommand)]
    Exec(Exec),
    /// Activities.
    #[command(subcommand)]
    Activity(Activity),
    /// A DISTRIBUTED Map's runs: list an execution's, describe one.
    #[command(subcommand)]
    Maprun(Maprun),
    /// Cluster health.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Cluster members: list, drain, remove, hand off before a restart, leave.
    #[command(subcommand)]
    Nodes(NodesCmd),
    /// Shards: list, show, move a replica, transfer the leadership, rebalance.
    #[command(subcommand)]
    Shards(ShardsCmd),
    /// Pause or resume the placement driver.
    #[command(subcommand)]
    Placement(PlacementCmd),
    /// What the stuck-execution detector found.
    Doctor,
    /// Load generator: start executions and report throughput and latency.
    Bench(Bench),
    /// Make a cluster CA and the certificates it issues (no node is contacted).
    #[command(subcommand)]
    Certs(CertsCmd),
}

#[derive(Subcommand)]
pub(crate) enum CertsCmd {
    /// A new CA: `ca.pem` (give it to nodes and clients) and `ca-key.pem` (keep it safe).
    Ca {
        /// Where to write them (made if missing; existing files are not overwritten).
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
    },
    /// A node's certificate (`NAME.pem`, `NAME-key.pem`), for its client and peer ports.
    Node {
        name: String,
        /// A DNS name or IP address the node is reached at (repeat for each).
        #[arg(long = "san", required = true)]
        sans: Vec<String>,
        /// The directory of `ca.pem` and `ca-key.pem`, and of the new files.
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
    },
    /// A client certificate for the principal NAME (`NAME.pem`, `NAME-key.pem`).
    Client {
        name: String,
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
pub(crate) enum Maprun {
    /// The Map Runs an execution started.
    List { execution_arn: String },
    /// A Map Run: status, window, tolerance, and its items and children by state.
    Describe { map_run_arn: String },
    /// Change a running Map Run's window or tolerance.
    Update {
        map_run_arn: String,
        #[arg(long)]
        max_concurrency: Option<u64>,
        #[arg(long)]
        tolerated_failure_count: Option<u64>,
        #[arg(long)]
        tolerated_failure_percentage: Option<f64>,
    },
}

#[derive(Subcommand)]
pub(crate) enum Sm {
    /// Create a state machine from a definition file.
    Create {
        name: String,
        #[arg(long)]
        definition: std::path::PathBuf,
        #[arg(long, default_value = "STANDARD")]
        r#type: String,
        #[arg(long, default_value = "arn:aws:iam::000000000000:role/trellis")]
        role: String,
        #[arg(long)]
        publish: bool,
        /// Cap on concurrently running executions (0 = none).
        #[arg(long, default_value_t = 0)]
        max_concurrent: u32,
        /// How long its closed executions are kept (`30d`, `12h`); default: the cluster's
        /// `cluster.retention`.
        #[arg(long, value_name = "PERIOD")]
        retention: Option<String>,
    },
    /// Update a state machine's definition.
    Update {
        arn: String,
        #[arg(long)]
        definition: Option<std::path::PathBuf>,
        #[arg(long)]
        publish: bool,
    },
    List,
    Describe {
        arn: String,
    },
    Delete {
        arn: String,
    },
    /// Show or set which inline Map and Parallel states spread their children over the
    /// cluster (local, spread, or auto:N for N children and more). Without options, shows
    /// the policy; new executions take the new one.
    Sharding {
        arn: String,
        /// The placement of the states not named.
        #[arg(long, value_name = "PLACEMENT")]
        default: Option<String>,
        /// A state's placement, as NAME=PLACEMENT (repeatable).
        #[arg(long = "state", value_name = "NAME=PLACEMENT")]
        states: Vec<String>,
        /// Forget a state's placement (it takes the default).
        #[arg(long = "unset", value_name = "NAME")]
        unset: Vec<String>,
        /// Start over from an all-local policy.
        #[arg(long)]
        clear: bool,
    },
    /// Show or set how long the machine's closed executions are kept before they are
    /// deleted. Executions keep the period they started with.
    Retention {
        arn: String,
        /// A period (`30d`, `12h`, `20s`), or `default` for the cluster's
        /// (`cluster.retention`). Without it, shows the machine's.
        period: Option<String>,
    },
    /// Validate a definition file (ValidateStateMachineDefinition).
    Validate {
        definition: std::path::PathBuf,
        #[arg(long)]
        express: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum Exec {
    /// Start an execution.
    Start {
        state_machine_arn: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, conflicts_with = "input_file")]
        input: Option<String>,
        #[arg(long)]
        input_file: Option<std::path::PathBuf>,
        /// Follow it: show each state and the elapsed time until it ends.
        #[arg(long)]
        wait: bool,
    },
    Describe {
        arn: String,
    },
    /// The executions of a state machine, or the child executions of a Map Run (give its
    /// ARN, from the parent's `MapRunStarted` event).
    List {
        state_machine_arn: String,
        #[arg(long)]
        status: Option<String>,
    },
    History {
        arn: String,
        #[arg(long)]
        reverse: bool,
    },
    /// Stream history events as they are written.
    Watch {
        arn: String,
    },
    Stop {
        arn: String,
        #[arg(long)]
        error: Option<String>,
        #[arg(long)]
        cause: Option<String>,
    },
    Pause {
        arn: String,
    },
    Resume {
        arn: String,
    },
    Redrive {
        arn: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum Activity {
    Create {
        name: String,
    },
    List,
    /// Wait for one task of the activity and print it.
    Poll {
        arn: String,
        #[arg(long, default_value = "trellisctl")]
        worker: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum ClusterCmd {
    /// Health, meta leader and voters, under-replicated and leaderless shards, moves in
    /// progress, and the nodes.
    Status,
    /// Same as `nodes list`.
    #[command(hide = true)]
    Nodes,
    /// Same as `shards list`.
    #[command(hide = true)]
    Shards,
}

#[derive(Subcommand)]
pub(crate) enum NodesCmd {
    /// Members with their state, zone, meta role and shard counts.
    List,
    /// Move every leader and replica off a node (it stays DRAINING until removed).
    Drain { id: u64 },
    /// Take a drained node out of the cluster.
    Remove { id: u64 },
    /// Before a restart: move a node's shard and meta leaderships to other nodes and wait
    /// until it leads nothing. Its replicas stay; it is UP again once it has restarted.
    HandOff {
        #[command(flatten)]
        node: NodeArg,
        /// Give up after this long (the leaderships that moved stay moved).
        #[arg(long, default_value_t = 60)]
        wait_seconds: u64,
    },
    /// Decommission a node: drain it, wait until it holds nothing, remove it. As a
    /// Kubernetes preStop hook, `nodes leave --self --if-beyond-replicas` decommissions on a
    /// scale-in and only hands off on a restart.
    Leave {
        #[command(flatten)]
        node: NodeArg,
        /// Decommission only if this pod's ordinal is at or above its StatefulSet's replica
        /// count (read from the Kubernetes API with the pod's service account); otherwise
        /// hand off, as before a restart.
        #[arg(long)]
        if_beyond_replicas: bool,
        /// Give up after this long (what was drained stays drained).
        #[arg(long, default_value_t = 600)]
        wait_seconds: u64,
    },
}

/// Which node: an id, or the node this command talks to.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
pub(crate) struct NodeArg {
    /// The node's id.
    pub(crate) id: Option<u64>,
    /// The node at --endpoint (in a pod: the pod's own node).
    #[arg(long = "self")]
    pub(crate) this: bool,
}

#[derive(Subcommand)]
pub(crate) enum ShardsCmd {
    /// Every shard: leader, replicas, epoch, term, applied index, lag, live executions.
    List,
    /// One shard.
    Show { id: u32 },
    /// Move the replica on one node to another (waits until done).
    Move {
        id: u32,
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: u64,
    },
    /// Make a replica the shard's leader (waits until it leads).
    TransferLeader {
        id: u32,
        #[arg(long)]
        to: u64,
    },
    /// Start the placement steps due now and print them.
    Rebalance,
}

#[derive(Subcommand)]
pub(crate) enum PlacementCmd {
    /// Stop moving replicas and leaders (failed-node repair too).
    Pause,
    /// Start again.
    Resume,
}
