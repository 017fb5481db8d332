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
    /// Copy the meta group and every shard into a new directory, consistently (messages
    /// between shards are held meanwhile); `trellis restore` builds a new cluster from it.
    Backup {
        /// Where to write it: a directory (absent or empty), or s3://bucket/prefix (nothing
        /// under it yet; the AWS SDKs' variables say where S3 is and with which credentials:
        /// AWS_ENDPOINT_URL_S3, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_PROFILE, ...). Written:
        /// manifest.json and one file per group.
        #[arg(long)]
        to: String,
    },
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
        /// The node's name (the certificate's common name and file names).
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
        /// The principal's name (the certificate's common name).
        name: String,
        /// The directory of `ca.pem` and `ca-key.pem`, and of the new files.
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
pub(crate) enum Maprun {
    /// The Map Runs an execution started.
    List {
        /// The parent execution's ARN.
        execution_arn: String,
    },
    /// A Map Run: status, window, tolerance, and its items and children by state.
    Describe {
        /// The Map Run's ARN (from `maprun list` or the parent's `MapRunStarted` event).
        map_run_arn: String,
    },
    /// Change a running Map Run's window or tolerance.
    Update {
        /// The Map Run's ARN.
        map_run_arn: String,
        /// Children running at once (0: as many as the cluster allows).
        #[arg(long)]
        max_concurrency: Option<u64>,
        /// Failed children tolerated before the Map Run fails.
        #[arg(long)]
        tolerated_failure_count: Option<u64>,
        /// Failed children tolerated, as a percentage of all (0 to 100).
        #[arg(long)]
        tolerated_failure_percentage: Option<f64>,
    },
}

#[derive(Subcommand)]
pub(crate) enum Sm {
    /// Create a state machine from a definition file.
    Create {
        /// The machine's name (1-80 characters).
        name: String,
        /// The Amazon States Language definition (a JSON file).
        #[arg(long)]
        definition: std::path::PathBuf,
        /// STANDARD (durable, replicated) or EXPRESS (in memory, at most five minutes).
        #[arg(long, default_value = "STANDARD")]
        r#type: String,
        /// The IAM role ARN recorded with the machine (Trellis does not assume it).
        #[arg(long, default_value = "arn:aws:iam::000000000000:role/trellis")]
        role: String,
        /// Publish the definition as version 1 as well.
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
        /// The machine's name or ARN.
        arn: String,
        /// The new definition (a JSON file); running executions keep theirs.
        #[arg(long)]
        definition: Option<std::path::PathBuf>,
        /// Publish the new definition as the next version.
        #[arg(long)]
        publish: bool,
    },
    /// Every state machine: name, type, creation date, ARN.
    List,
    /// One state machine (name, ARN, version ARN or alias ARN): its definition and settings.
    Describe {
        /// The machine's name or ARN (or a version's or alias's ARN).
        arn: String,
    },
    /// Delete a state machine with its versions and aliases (its executions stay).
    Delete {
        /// The machine's name or ARN.
        arn: String,
    },
    /// Show or set which inline Map and Parallel states spread their children over the
    /// cluster (local, spread, or auto:N for N children and more). Without options, shows
    /// the policy; new executions take the new one.
    Sharding {
        /// The machine's name or ARN.
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
        /// The machine's name or ARN.
        arn: String,
        /// A period (`30d`, `12h`, `20s`), or `default` for the cluster's
        /// (`cluster.retention`). Without it, shows the machine's.
        period: Option<String>,
    },
    /// Validate a definition file (ValidateStateMachineDefinition).
    Validate {
        /// The definition (a JSON file).
        definition: std::path::PathBuf,
        /// Validate it for an EXPRESS machine.
        #[arg(long)]
        express: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum Exec {
    /// Start an execution.
    Start {
        /// The state machine's name or ARN (or a version's or alias's ARN).
        state_machine_arn: String,
        /// The execution's name (default: a random UUID); a name is used once per machine.
        #[arg(long)]
        name: Option<String>,
        /// The input, as JSON text (default `{}`).
        #[arg(long, conflicts_with = "input_file")]
        input: Option<String>,
        /// Read the input from a JSON file.
        #[arg(long)]
        input_file: Option<std::path::PathBuf>,
        /// Follow it: show each state and the elapsed time until it ends.
        #[arg(long)]
        wait: bool,
    },
    /// One execution: status, dates, input, output or error.
    Describe {
        /// The execution's ARN.
        arn: String,
    },
    /// The executions of a state machine, or the child executions of a Map Run (give its
    /// ARN, from the parent's `MapRunStarted` event).
    List {
        /// The state machine's name or ARN, or a Map Run's ARN.
        state_machine_arn: String,
        /// Only those with this status (RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED,
        /// PENDING_REDRIVE).
        #[arg(long)]
        status: Option<String>,
    },
    /// An execution's history events.
    History {
        /// The execution's ARN.
        arn: String,
        /// Newest first.
        #[arg(long)]
        reverse: bool,
    },
    /// Stream history events as they are written.
    Watch {
        /// The execution's ARN.
        arn: String,
    },
    /// Stop a running execution (ABORTED).
    Stop {
        /// The execution's ARN.
        arn: String,
        /// The error recorded with the stop.
        #[arg(long)]
        error: Option<String>,
        /// The cause recorded with the stop.
        #[arg(long)]
        cause: Option<String>,
    },
    /// Hold a running execution after its current step (Trellis).
    Pause {
        /// The execution's ARN.
        arn: String,
    },
    /// Let a paused execution go on.
    Resume {
        /// The execution's ARN.
        arn: String,
    },
    /// Run a failed, timed-out or aborted execution again from where it stopped.
    Redrive {
        /// The execution's ARN.
        arn: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum Activity {
    /// Create an activity (idempotent).
    Create {
        /// The activity's name.
        name: String,
    },
    /// Every activity.
    List,
    /// Wait for one task of the activity and print it.
    Poll {
        /// The activity's ARN.
        arn: String,
        /// The worker name recorded with the task.
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
    Drain {
        /// The node's id.
        id: u64,
        /// Wait until it leads and holds nothing (a progress bar on a terminal).
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long (what was drained stays drained).
        #[arg(long, default_value_t = 600)]
        wait_seconds: u64,
    },
    /// Take a drained node out of the cluster.
    Remove {
        /// The node's id.
        id: u64,
    },
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
    Show {
        /// The shard's id.
        id: u32,
    },
    /// Move the replica on one node to another (waits until done).
    Move {
        /// The shard's id.
        id: u32,
        /// The node whose replica moves.
        #[arg(long)]
        from: u64,
        /// The node that gets it.
        #[arg(long)]
        to: u64,
    },
    /// Make a replica the shard's leader (waits until it leads).
    TransferLeader {
        /// The shard's id.
        id: u32,
        /// The node that leads it next (one of its replicas).
        #[arg(long)]
        to: u64,
    },
    /// Start the placement steps due now and print them.
    Rebalance {
        /// Go on until nothing is left to do and no move is in progress (a spinner on a
        /// terminal).
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long (moves started go on).
        #[arg(long, default_value_t = 600)]
        wait_seconds: u64,
    },
}

#[derive(Subcommand)]
pub(crate) enum PlacementCmd {
    /// Stop moving replicas and leaders (failed-node repair too).
    Pause,
    /// Start again.
    Resume,
}
