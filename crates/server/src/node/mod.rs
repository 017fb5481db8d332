//! A Trellis node: the API operations with AWS Step Functions semantics, over the node's
//! cluster membership (`trellis_cluster`). Both front ends (gRPC and the AWS JSON API) call
//! these methods; requests and responses are the `trellis.v1` messages.
//!
//! `Node` builds and wires the parts: the [`Cluster`] (router, shard replicas, membership,
//! placement, admission), the [`Registry`] (state machines, versions, aliases, activities),
//! the [`Connectors`], and the metrics registry. The operations are grouped by subject:
//! [`executions`], [`tasks`] (activities and task tokens), and [`api`] (the registry's
//! writes, and the calls other nodes send here through `trellis_cluster::Api`).

mod api;
mod convert;
mod executions;
mod maprun;
mod tasks;

use std::sync::Arc;
use std::time::Duration;

use trellis_cluster::{Cluster, Member, Settings};
use trellis_proto::v1 as pb;
use trellis_proto::{ApiError, Code};
use trellis_storage::NodeDb;

pub use convert::{event_pb, execution_pb};

use crate::config::Config;
use crate::connectors::Connectors;
use crate::nested::ExecutionStarter;
use crate::registry::Registry;

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// Largest execution input, task output and definition, as AWS.
pub const MAX_PAYLOAD: usize = 262_144;

/// A Trellis node: a member of the cluster, serving the API.
pub struct Node {
    pub cfg: Config,
    cluster: Arc<Cluster>,
    registry: Registry,
    /// The Prometheus registry `/metrics` exposes (the cluster registers its metrics in it).
    metrics: prometheus_client::registry::Registry,
    connectors: Connectors,
    /// Who may call the AWS API; `None`: authentication is off.
    /// Who may call, and what (shared with the gRPC front end).
    pub auth: Arc<crate::auth::Auth>,
    /// TLS on the listeners and to peers (`[tls]`).
    pub tls: crate::tls::NodeTls,
}

impl Node {
    /// Opens the data directory and this node's meta replica. Nothing is served or joined
    /// yet: serve the peer port, then call [`Node::bootstrap`].
    pub async fn open(cfg: Config) -> anyhow::Result<Arc<Node>> {
        std::fs::create_dir_all(&cfg.node.data_dir)?;
        let db = NodeDb::open_with_cache(&cfg.node.data_dir, cfg.node.cache_mib << 20)?;
        let ca = (!cfg.connectors.ca_file.is_empty())
            .then(|| std::path::PathBuf::from(&cfg.connectors.ca_file));
        let connectors = Connectors::new(cfg.functions.clone(), ca.as_deref(), cfg.aws.s3())?;
        // The node's metrics: registered once here, handed to the parts that count.
        let mut metrics = prometheus_client::registry::Registry::default();
        let tls = crate::tls::NodeTls::from_config(&cfg.tls)?;
        let settings = Settings {
            member: Member {
                id: cfg.node.id,
                grpc_addr: cfg.node.advertised_grpc(),
                http_addr: cfg.node.advertised_http(),
                peer_addr: cfg.node.advertised().to_string(),
                zone: cfg.node.zone.clone(),
            },
            cluster: cfg.cluster.clone(),
            region: cfg.aws.region.clone(),
            account: cfg.aws.account.clone(),
            peer_tls: tls.to_peers.clone(),
        };
        let cluster =
            Cluster::open(settings, db, Arc::new(connectors.clone()), &mut metrics).await?;
        let registry = Registry::new(cluster.meta().clone(), &cfg.aws.region, &cfg.aws.account);
        let auth = Arc::new(crate::auth::Auth::new(&cfg.auth, &cfg.aws.account)?);
        auth.watch(Duration::from_secs(1));
        let node = Arc::new(Node {
            cfg,
            cluster,
            registry,
            metrics,
            connectors,
            auth,
            tls,
        });
        // Forwarded API calls land on this node; nested executions start through it.
        let api: Arc<dyn trellis_cluster::Api> = node.clone();
        node.cluster.bind_api(Arc::downgrade(&api));
        let starter: Arc<dyn ExecutionStarter> = node.clone();
        node.connectors.bind(Arc::downgrade(&starter));
        Ok(node)
    }

    /// Opens a node that needs no peers to start (a new single-node cluster, or a restart)
    /// and waits until its shards have leaders. Nodes that join others use [`Node::open`],
    /// serve, then [`Node::bootstrap`].
    pub async fn start(cfg: Config) -> anyhow::Result<Arc<Node>> {
        let node = Node::open(cfg).await?;
        node.bootstrap().await?;
        node.wait_ready(Duration::from_secs(60)).await?;
        tracing::info!(
            node_id = node.id(),
            shards = node.shard_count(),
            data_dir = %node.cfg.node.data_dir.display(),
            "node started"
        );
        Ok(node)
    }

    /// Joins or bootstraps the cluster and opens this node's shard replicas.
    pub async fn bootstrap(&self) -> anyhow::Result<()> {
        Ok(self.cluster.bootstrap().await?)
    }

    /// Waits until the node is ready ([`Node::readiness`]).
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        Ok(self.cluster.wait_ready(timeout).await?)
    }

    /// Whether this node can serve, or why not (`/readyz`).
    pub fn readiness(&self) -> Result<(), String> {
        self.cluster.readiness()
    }

    /// Stops every Raft group and flushes the store.
    pub async fn shutdown(&self) {
        self.cluster.shutdown().await;
    }

    pub fn id(&self) -> u64 {
        self.cfg.node.id
    }

    /// The cluster's shard count (0 until this node knows the shard map).
    pub fn shard_count(&self) -> u32 {
        self.cluster.shard_count()
    }

    /// This node's cluster membership: operators' calls (nodes, shards, placement, the
    /// detector) go straight to it.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// State machines, versions, aliases and activities.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn arn_prefix(&self) -> &str {
        self.registry.arn_prefix()
    }

    /// `/metrics`: the node's registry in the OpenMetrics text format.
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.metrics);
        out
    }

    // ============================================================ registry reads

    pub fn describe_state_machine(&self, arn: &str) -> ApiResult<pb::StateMachine> {
        self.registry.describe_state_machine(arn)
    }

    pub fn list_state_machines(
        &self,
        r: pb::ListStateMachinesRequest,
    ) -> ApiResult<pb::ListStateMachinesResponse> {
        self.registry.list_state_machines(r)
    }

    pub fn list_versions(&self, r: pb::ListVersionsRequest) -> ApiResult<pb::ListVersionsResponse> {
        self.registry.list_versions(r)
    }

    pub fn describe_alias(&self, arn: &str) -> ApiResult<pb::Alias> {
        self.registry.describe_alias(arn)
    }

    pub fn list_aliases(&self, r: pb::ListAliasesRequest) -> ApiResult<pb::ListAliasesResponse> {
        self.registry.list_aliases(r)
    }

    pub fn describe_activity(&self, arn: &str) -> ApiResult<pb::Activity> {
        self.registry.describe_activity(arn)
    }

    pub fn list_activities(
        &self,
        r: pb::ListActivitiesRequest,
    ) -> ApiResult<pb::ListActivitiesResponse> {
        self.registry.list_activities(r)
    }

    /// ValidateStateMachineDefinition: the result, and the diagnostics of at least the
    /// asked severity (errors by default), at most `max_results` (100) of them.
    pub fn validate(&self, r: &pb::ValidateRequest) -> ApiResult<pb::ValidateResponse> {
        let warnings = match r.severity.as_str() {
            "" | "ERROR" => false,
            "WARNING" => true,
            other => {
                return Err(ApiError::new(
                    Code::ValidationException,
                    format!("1 validation error detected: Value '{other}' at 'severity' failed to satisfy constraint: Member must satisfy enum value set: [ERROR, WARNING]"),
                ))
            }
        };
        let max = match r.max_results {
            0 => 100,
            n @ 1..=100 => n as usize,
            n => {
                return Err(ApiError::new(
                    Code::ValidationException,
                    format!("1 validation error detected: Value '{n}' at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to 100"),
                ))
            }
        };
        let express = r.r#type == pb::StateMachineType::Express as i32;
        let mut diags =
            trellis_asl::validate::validate(&r.definition, trellis_asl::Options { express });
        let failed = diags
            .iter()
            .any(|d| d.severity == trellis_asl::Severity::Error);
        diags.retain(|d| warnings || d.severity == trellis_asl::Severity::Error);
        let truncated = diags.len() > max;
        diags.truncate(max);
        Ok(pb::ValidateResponse {
            result: if failed { "FAIL" } else { "OK" }.into(),
            diagnostics: diags
                .into_iter()
                .map(|d| pb::Diagnostic {
                    severity: match d.severity {
                        trellis_asl::Severity::Error => "ERROR",
                        trellis_asl::Severity::Warning => "WARNING",
                    }
                    .into(),
                    code: d.code,
                    message: d.message,
                    location: d.location,
                })
                .collect(),
            truncated,
        })
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}
