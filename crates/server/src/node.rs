//! A Trellis node: the meta group, the shards this node leads, and the API operations with
//! AWS Step Functions semantics. Both front ends (gRPC and the AWS JSON API) call these
//! methods; requests and responses are the `trellis.v1` messages.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::Mutex;
use trellis_asl::exec::ExecutionInfo;
use trellis_asl::{Env, ExecStatus, Execution, Limits};
use trellis_meta::{Meta, MetaOp, Table};
use trellis_proto::raft as rpb;
use trellis_proto::v1 as pb;
use trellis_proto::{ApiError, Code};
use trellis_shard::executor::{Control, StartRequest, TokenAnswer};
use trellis_shard::{shard_of, ShardHandle, Status};
use trellis_storage::NodeDb;

use crate::cluster::shards::{ShardCell, ShardTable};
use crate::cluster::transport::Transport;
use crate::config::Config;
use crate::connectors::Connectors;
use crate::nested::ExecutionStarter;
use crate::registry::{check_name, page_size, parse_arn, Registry, Resolved};
use futures::future::join_all;
use trellis_meta::records::{MachineRecord, MachineType};

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// Largest execution input, task output and definition, as AWS.
pub const MAX_PAYLOAD: usize = 262_144;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(Code::InternalFailure, e.to_string())
}

/// The one mapping of shard errors to AWS's exceptions and messages; no catch-all, so a new
/// variant must be placed here.
pub(crate) fn from_shard(e: trellis_shard::Error) -> ApiError {
    use trellis_shard::{Error as E, Redrive};
    match e {
        E::NotLeader { leader } => ApiError::not_leader(leader),
        E::Stopped => ApiError::new(Code::ServiceUnavailable, "the shard is restarting; retry"),
        E::Raft(why) => ApiError::new(
            Code::ServiceUnavailable,
            format!("the shard cannot commit now ({why}); retry"),
        ),
        E::ExecutionDoesNotExist { arn } => ApiError::new(
            Code::ExecutionDoesNotExist,
            format!("Execution Does Not Exist: '{arn}'"),
        ),
        E::ExecutionAlreadyExists { arn } => ApiError::new(
            Code::ExecutionAlreadyExists,
            format!("Execution Already Exists: '{arn}'"),
        ),
        E::InvalidExecutionInput { reason } => ApiError::new(
            Code::InvalidExecutionInput,
            format!("Invalid State Machine Execution Input: '{reason}'"),
        ),
        E::InvalidDefinition { reason } => ApiError::new(Code::InvalidDefinition, reason),
        E::InvalidToken { token } => {
            ApiError::new(Code::InvalidToken, format!("Invalid Token: '{token}'"))
        }
        E::TaskClosed => ApiError::new(
            Code::TaskTimedOut,
            "Task Timed Out: the task is already closed",
        ),
        E::TaskDoesNotExist => ApiError::new(Code::TaskDoesNotExist, "Task Does Not Exist"),
        E::NotRunning { arn } => ApiError::new(
            Code::ExecutionNotRedrivable,
            format!("Execution is not running: '{arn}'"),
        ),
        E::Queued { arn } => ApiError::new(
            Code::ValidationException,
            format!("Execution is queued, not running: '{arn}'"),
        ),
        E::NotRedrivable { arn, why } => ApiError::new(
            Code::ExecutionNotRedrivable,
            match why {
                Redrive::Running => format!("Execution is RUNNING and cannot be redriven: '{arn}'"),
                Redrive::Ended(status) => format!(
                    "Execution is {} and cannot be redriven: '{arn}'",
                    status.as_str()
                ),
                Redrive::TooOld => format!(
                    "Execution closed more than 14 days ago and cannot be redriven: '{arn}'"
                ),
                Redrive::HistoryFull(n) => {
                    format!("Execution has {n} history events and cannot be redriven: '{arn}'")
                }
            },
        ),
        e @ (E::Storage(_) | E::Sled(_) | E::Json(_) | E::Corrupt(_)) => internal(e),
    }
}

pub(crate) fn from_meta(e: trellis_meta::Error) -> ApiError {
    match e {
        trellis_meta::Error::NotLeader { leader } => ApiError::not_leader(leader),
        e => internal(e),
    }
}

/// A Trellis node: a member of the meta group and a replica of some shards, leading some.
pub struct Node {
    pub cfg: Config,
    db: NodeDb,
    pub(crate) meta: Meta,
    pub(crate) transport: Arc<Transport>,
    /// Serializes this (meta leader) node's Raft membership changes of the meta group.
    pub(crate) membership_lock: Mutex<()>,
    registry: Registry,
    /// The Prometheus registry `/metrics` exposes.
    metrics: prometheus_client::registry::Registry,
    /// What this node's executors count into.
    pub(crate) shard_metrics: Arc<trellis_shard::metrics::Metrics>,
    /// This node's replicas of the shards, and the leader cache.
    shards: ShardTable,
    connectors: Connectors,
    admission: crate::cluster::admission::Admission,
    stopping: std::sync::atomic::AtomicBool,
    pub(crate) bootstrapped: std::sync::atomic::AtomicBool,
    /// The placement driver's view (meaningful on the meta leader): when each node last
    /// answered a ping, and the shards with a step in flight.
    last_seen: std::sync::Mutex<HashMap<u64, std::time::Instant>>,
    moving: std::sync::Mutex<std::collections::HashSet<u32>>,
    this: std::sync::OnceLock<std::sync::Weak<Node>>,
}

impl Node {
    /// Opens the data directory and this node's meta replica. Nothing is served or joined
    /// yet: serve the transport, then call [`Node::bootstrap`].
    pub async fn open(cfg: Config) -> anyhow::Result<Arc<Node>> {
        std::fs::create_dir_all(&cfg.node.data_dir)?;
        let db = NodeDb::open(&cfg.node.data_dir)?;
        // The node's metrics: registered once here, handed to the parts that count.
        let mut metrics = prometheus_client::registry::Registry::default();
        let shard_metrics = Arc::new(trellis_shard::metrics::Metrics::register(&mut metrics));
        let snapshot_chunks = prometheus_client::metrics::counter::Counter::default();
        metrics.register(
            "trellis_raft_snapshot_chunks_received",
            "Raft snapshot chunks received (a replica too far behind catches up by snapshot)",
            snapshot_chunks.clone(),
        );
        let transport = Transport::new(
            cfg.node.id,
            cfg.cluster.peer_max_message_bytes,
            snapshot_chunks,
        );
        let meta = Meta::open(&db, cfg.node.id, transport.network(0)).await?;
        transport.register(0, Arc::new(meta.raft.clone()));
        let registry = Registry::new(meta.clone(), &cfg.aws.region, &cfg.aws.account);
        let ca = (!cfg.connectors.ca_file.is_empty())
            .then(|| std::path::PathBuf::from(&cfg.connectors.ca_file));
        let connectors = Connectors::new(cfg.functions.clone(), ca.as_deref())?;
        let node = Arc::new(Node {
            cfg,
            db,
            meta,
            transport,
            membership_lock: Mutex::new(()),
            registry,
            metrics,
            shard_metrics,
            shards: Default::default(),
            connectors,
            admission: Default::default(),
            stopping: Default::default(),
            bootstrapped: Default::default(),
            last_seen: Default::default(),
            moving: Default::default(),
            this: Default::default(),
        });
        let _ = node.this.set(Arc::downgrade(&node));
        let starter: Arc<dyn ExecutionStarter> = node.clone();
        let starter = Arc::downgrade(&starter);
        node.connectors.bind(starter);
        node.spawn_admission();
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

    pub(crate) fn cells(&self) -> &[ShardCell] {
        self.shards.cells()
    }

    /// This node's replicas of the shards, and the leader cache.
    pub(crate) fn shards(&self) -> &ShardTable {
        &self.shards
    }

    /// This node as an `Arc`, for work that outlives a call.
    pub(crate) fn arc(&self) -> Option<Arc<Node>> {
        self.this.get().and_then(std::sync::Weak::upgrade)
    }

    pub(crate) fn last_seen(&self) -> std::sync::MutexGuard<'_, HashMap<u64, std::time::Instant>> {
        self.last_seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn moving_set(&self) -> &std::sync::Mutex<std::collections::HashSet<u32>> {
        &self.moving
    }

    pub(crate) fn db(&self) -> &NodeDb {
        &self.db
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn connectors(&self) -> &Connectors {
        &self.connectors
    }

    pub(crate) fn meta_applied(&self) -> u64 {
        self.meta.applied()
    }

    pub(crate) fn admission(&self) -> &crate::cluster::admission::Admission {
        &self.admission
    }

    /// The cap of a state machine (0 = none).
    pub(crate) fn cap(&self, machine_arn: &str) -> u64 {
        self.registry.cap(machine_arn)
    }

    /// Stops every Raft group and flushes the store.
    pub async fn shutdown(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        for c in self.cells() {
            if let Some(r) = c.get() {
                r.set_handle(None);
                let _ = r.raft.shutdown().await;
            }
        }
        let _ = self.meta.raft.shutdown().await;
        let _ = self.db.flush().await;
    }

    /// The cluster's shard count (0 until this node knows the shard map).
    pub fn shard_count(&self) -> u32 {
        self.cells().len() as u32
    }

    /// The shard of an execution.
    pub(crate) fn shard_id(&self, execution_arn: &str) -> ApiResult<u32> {
        match self.shard_count() {
            0 => Err(ApiError::new(
                Code::ServiceUnavailable,
                "this node has not joined the cluster yet; retry",
            )),
            n => Ok(shard_of(execution_arn, n)),
        }
    }

    /// The executor of a shard this node leads, or `NotLeader` with the leader it knows.
    pub(crate) fn leading(&self, shard: u32) -> ApiResult<ShardHandle> {
        let Some(rep) = self.shards.replica(shard) else {
            return Err(ApiError::not_leader(None));
        };
        rep.handle()
            .ok_or_else(|| ApiError::not_leader(rep.raft.metrics().borrow().current_leader))
    }

    /// The executor of the shard of `execution_arn`, if this node leads it.
    pub(crate) fn local(&self, execution_arn: &str) -> ApiResult<ShardHandle> {
        self.leading(self.shard_id(execution_arn)?)
    }

    pub(crate) fn arn_prefix(&self) -> &str {
        self.registry.arn_prefix()
    }

    // ============================================================ state machines

    /// `/metrics`: the node's registry in the OpenMetrics text format.
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.metrics);
        out
    }

    /// State machines, versions, aliases and activities.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn resolve(&self, arn: &str) -> ApiResult<Resolved> {
        self.registry.resolve(arn)
    }

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

    /// Writes one meta record.
    pub(crate) async fn meta_put(
        &self,
        table: Table,
        key: impl Into<String>,
        value: Value,
    ) -> ApiResult<()> {
        let key = key.into();
        self.meta
            .write(vec![MetaOp::Put { table, key, value }])
            .await
            .map_err(from_meta)
    }

    pub fn validate(&self, r: &pb::ValidateRequest) -> pb::ValidateResponse {
        let express = r.r#type == pb::StateMachineType::Express as i32;
        let diags =
            trellis_asl::validate::validate(&r.definition, trellis_asl::Options { express });
        let failed = diags
            .iter()
            .any(|d| d.severity == trellis_asl::Severity::Error);
        pb::ValidateResponse {
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
            truncated: false,
        }
    }

    // ============================================================ executions

    fn check_input(input: &str) -> ApiResult<String> {
        let input = if input.is_empty() { "{}" } else { input };
        if input.len() > MAX_PAYLOAD {
            return Err(ApiError::new(
                Code::ValidationException,
                format!("1 validation error detected: Value at 'input' failed to satisfy constraint: Member must have length less than or equal to {MAX_PAYLOAD}"),
            ));
        }
        serde_json::from_str::<Value>(input).map_err(|e| {
            ApiError::new(
                Code::InvalidExecutionInput,
                format!("Invalid State Machine Execution Input: '{e}'"),
            )
        })?;
        Ok(input.to_string())
    }

    /// The execution name: the one given (checked), or a random UUID as AWS picks.
    pub(crate) fn execution_name(&self, given: &str) -> ApiResult<String> {
        if given.is_empty() {
            return Ok(crate::ids::uuid());
        }
        check_name(given)?;
        Ok(given.to_string())
    }

    /// The ARN of execution `name` of machine `machine_name`.
    pub(crate) fn execution_arn(&self, machine_name: &str, name: &str) -> String {
        format!("{}:execution:{machine_name}:{name}", self.arn_prefix())
    }

    /// A Standard start, decided on the node that took the call: the name (given, or a
    /// random UUID), the checked input and the resolved definition.
    pub(crate) fn start_request(
        &self,
        r: pb::StartExecutionRequest,
        resolved: Resolved,
    ) -> ApiResult<rpb::StartResolved> {
        let m = &resolved.machine;
        Ok(rpb::StartResolved {
            state_machine_arn: m.state_machine_arn.clone(),
            state_machine_name: m.name.clone(),
            version_arn: resolved.version.unwrap_or_default(),
            alias_arn: resolved.alias.unwrap_or_default(),
            role_arn: m.role_arn.clone(),
            name: self.execution_name(&r.name)?,
            input: Self::check_input(&r.input)?,
            capped: m.max_concurrent_executions > 0,
            definition: resolved.definition,
        })
    }

    /// Starts a resolved Standard execution on this node, which leads its shard.
    pub(crate) async fn start_resolved_here(
        &self,
        r: rpb::StartResolved,
    ) -> ApiResult<pb::StartExecutionResponse> {
        let arn = self.execution_arn(&r.state_machine_name, &r.name);
        let capped = r.capped;
        let started = self
            .local(&arn)?
            .start(StartRequest {
                state_machine_arn: r.state_machine_arn,
                state_machine_name: r.state_machine_name,
                version_arn: non_empty(r.version_arn),
                alias_arn: non_empty(r.alias_arn),
                role_arn: non_empty(r.role_arn),
                name: r.name,
                input: r.input,
                definition: r.definition,
                queued: capped,
            })
            .await
            .map_err(from_shard)?;
        if capped && !started.existed {
            // Admitted before the reply when the cap allows, as on a single node.
            self.admit_now().await;
        }
        Ok(pb::StartExecutionResponse {
            execution_arn: started.execution_arn,
            start_date: started.start_ms,
        })
    }

    /// StartExecution of an EXPRESS machine: runs here, in memory.
    pub(crate) async fn start_express(
        &self,
        r: pb::StartExecutionRequest,
        resolved: Resolved,
    ) -> ApiResult<pb::StartExecutionResponse> {
        let name = self.execution_name(&r.name)?;
        let input = Self::check_input(&r.input)?;
        let res = self
            .run_express(&resolved.machine, &name, &input, &resolved.definition)
            .await?;
        Ok(pb::StartExecutionResponse {
            execution_arn: res.execution_arn,
            start_date: res.start_date,
        })
    }

    pub async fn start_sync_execution(
        &self,
        r: pb::StartExecutionRequest,
    ) -> ApiResult<pb::SyncExecutionResult> {
        let Resolved {
            machine: m,
            definition,
            ..
        } = self
            .meta_read(|| self.resolve(&r.state_machine_arn))
            .await?;
        if m.kind != MachineType::Express {
            return Err(ApiError::new(
                Code::StateMachineTypeNotSupported,
                "This operation is not supported by this type of state machine",
            ));
        }
        let name = self.execution_name(&r.name)?;
        let input = Self::check_input(&r.input)?;
        self.run_express(&m, &name, &input, &definition).await
    }

    /// Runs an Express execution of machine record `m` in memory on this node (not
    /// persisted, as AWS Express).
    async fn run_express(
        &self,
        m: &MachineRecord,
        name: &str,
        input: &str,
        definition: &str,
    ) -> ApiResult<pb::SyncExecutionResult> {
        let machine_arn = m.state_machine_arn.as_str();
        let machine = m.name.as_str();
        let sm = trellis_asl::parse(definition, trellis_asl::Options { express: true })
            .map_err(|e| ApiError::new(Code::InvalidDefinition, e.to_string()))?;
        let uuid = crate::ids::uuid();
        let input_v: Value = serde_json::from_str(input).map_err(internal)?;
        let mut info = ExecutionInfo::new(
            &self.cfg.aws.region,
            &self.cfg.aws.account,
            machine,
            name,
            input_v,
        );
        info.execution_arn = format!("{}:express:{machine}:{name}:{uuid}", self.arn_prefix());
        info.state_machine_arn = machine_arn.to_string();
        let arn = info.execution_arn.clone();
        let mut exec = Execution::new(
            sm,
            info,
            Limits {
                record_history: false,
                ..Limits::default()
            },
        );
        let start = now_ms();
        let mut env = RealEnv::default();
        // Express executions run for at most `cluster.express_max_seconds` (AWS: 5 minutes).
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(self.cfg.cluster.express_max_seconds);
        let mut driver = trellis_asl::driver::Driver::new().discard_history();
        // Outside any shard: no fence.
        let mut tasks = self.connectors.clone();
        let ended = crate::runner::run(
            &mut driver,
            &mut exec,
            &mut env,
            &mut tasks,
            crate::runner::Options {
                fast_timers: false,
                deadline: Some(deadline),
            },
        )
        .await
        .map_err(internal)?;
        let timed_out = ended == crate::runner::Ended::DeadlinePassed;
        let o = if timed_out {
            trellis_asl::Outcome {
                status: ExecStatus::TimedOut,
                output: None,
                error: Some(trellis_asl::error::names::TIMEOUT.into()),
                cause: Some("The execution timed out.".into()),
            }
        } else {
            exec.outcome()
                .cloned()
                .ok_or_else(|| internal("no outcome"))?
        };
        Ok(pb::SyncExecutionResult {
            execution_arn: arn,
            state_machine_arn: machine_arn.to_string(),
            name: name.to_string(),
            start_date: start,
            stop_date: now_ms(),
            status: o.status.as_str().into(),
            error: o.error.unwrap_or_default(),
            cause: o.cause.unwrap_or_default(),
            input: input.to_string(),
            output: if o.status == ExecStatus::Succeeded {
                o.output.map(|v| v.to_string())
            } else {
                None
            },
        })
    }

    fn record(&self, arn: &str) -> ApiResult<trellis_shard::ExecRecord> {
        self.check_execution_arn(arn)?;
        self.local(arn)?
            .app
            .record(arn)
            .map_err(from_shard)?
            .ok_or_else(|| {
                ApiError::new(
                    Code::ExecutionDoesNotExist,
                    format!("Execution Does Not Exist: '{arn}'"),
                )
            })
    }

    /// Checks that `arn` names a Standard execution.
    pub(crate) fn check_execution_arn(&self, arn: &str) -> ApiResult<()> {
        let a = parse_arn(arn, &["execution", "express"])?;
        if a.kind == "express" {
            return Err(ApiError::new(
                Code::InvalidArn,
                "Invalid Arn: 'Resource type not valid in this context: express'",
            ));
        }
        if a.parts.len() != 2 {
            return Err(ApiError::new(
                Code::InvalidArn,
                format!("Invalid Arn: 'Invalid ARN: {arn}'"),
            ));
        }
        Ok(())
    }

    pub(crate) fn describe_execution_here(&self, arn: &str) -> ApiResult<pb::Execution> {
        let rec = self.record(arn)?;
        Ok(execution_pb(&rec, shard_of(arn, self.shard_count())))
    }

    pub(crate) async fn stop_execution_here(
        &self,
        r: pb::StopExecutionRequest,
    ) -> ApiResult<pb::StopExecutionResponse> {
        self.record(&r.execution_arn)?;
        let at = self
            .local(&r.execution_arn)?
            .control(
                &r.execution_arn,
                Control::Stop {
                    error: non_empty(r.error),
                    cause: non_empty(r.cause),
                },
            )
            .await
            .map_err(from_shard)?;
        Ok(pb::StopExecutionResponse { stop_date: at })
    }

    pub(crate) async fn redrive_execution_here(
        &self,
        arn: &str,
    ) -> ApiResult<pb::RedriveExecutionResponse> {
        self.record(arn)?;
        let at = self.local(arn)?.redrive(arn).await.map_err(from_shard)?;
        Ok(pb::RedriveExecutionResponse { redrive_date: at })
    }

    pub(crate) async fn pause_execution_here(&self, arn: &str, pause: bool) -> ApiResult<()> {
        let rec = self.record(arn)?;
        if rec.status.is_terminal() {
            return Err(ApiError::new(
                Code::ValidationException,
                format!("Execution is not running: '{arn}'"),
            ));
        }
        self.local(arn)?
            .control(
                arn,
                if pause {
                    Control::Pause
                } else {
                    Control::Resume
                },
            )
            .await
            .map_err(from_shard)?;
        Ok(())
    }

    /// The executions of one state machine on the shards this node leads, newest first,
    /// with the shards they cover.
    pub(crate) fn list_executions_here(
        &self,
        r: &pb::ListExecutionsRequest,
    ) -> ApiResult<pb::ListExecutionsResponse> {
        let status = Self::status_filter(&r.status_filter)?;
        let mut all = Vec::new();
        let mut covered = Vec::new();
        for (i, c) in self.cells().iter().enumerate() {
            let Some(rep) = c.get() else { continue };
            if rep.handle().is_none() {
                continue;
            }
            covered.push(i as u32);
            let mut after: Option<String> = None;
            loop {
                let batch = rep.app.scan(after.as_deref(), 1024).map_err(from_shard)?;
                let Some(last) = batch.last() else { break };
                after = Some(last.arn.clone());
                all.extend(batch.into_iter().filter(|e| {
                    e.state_machine_arn == r.state_machine_arn
                        && status.is_none_or(|st| e.status == st)
                }));
            }
        }
        Ok(pb::ListExecutionsResponse {
            executions: all
                .into_iter()
                .map(|e| pb::ExecutionListItem {
                    execution_arn: e.arn,
                    state_machine_arn: e.state_machine_arn,
                    name: e.name,
                    status: e.status.as_str().into(),
                    start_date: e.start_ms,
                    stop_date: e.stop_ms.unwrap_or(0),
                    redrive_count: e.redrive_count,
                })
                .collect(),
            next_token: String::new(),
            shards: covered,
        })
    }

    fn status_filter(filter: &str) -> ApiResult<Option<Status>> {
        if filter.is_empty() {
            return Ok(None);
        }
        Status::parse(filter).map(Some).ok_or_else(|| {
            ApiError::new(Code::ValidationException, format!("1 validation error detected: Value '{filter}' at 'statusFilter' failed to satisfy constraint: Member must satisfy enum value set: [SUCCEEDED, TIMED_OUT, PENDING_REDRIVE, ABORTED, FAILED, RUNNING]"))
        })
    }

    /// ListExecutions: every node's part (the shards it leads), merged, newest first; the
    /// token is an offset into that order.
    pub async fn list_executions(
        &self,
        r: pb::ListExecutionsRequest,
    ) -> ApiResult<pb::ListExecutionsResponse> {
        self.registry.machine(&r.state_machine_arn)?;
        Self::status_filter(&r.status_filter)?;
        let max = page_size(r.max_results)?;
        let offset: usize = if r.next_token.is_empty() {
            0
        } else {
            r.next_token.parse().map_err(|_| {
                ApiError::new(
                    Code::InvalidToken,
                    format!("Invalid Token: '{}'", r.next_token),
                )
            })?
        };
        let mut all = Vec::new();
        let mut covered = vec![false; self.shard_count() as usize];
        let mut missing = usize::MAX;
        for attempt in 0..40u32 {
            all.clear();
            covered.iter_mut().for_each(|c| *c = false);
            let mut parts = vec![self.list_executions_here(&r)?];
            let fan = self
                .other_nodes()
                .into_iter()
                .map(|n| self.forward(n, r.clone()));
            for p in join_all(fan).await {
                match p {
                    Ok(p) => parts.push(p),
                    Err(e) if matches!(e.code, Code::ServiceUnavailable | Code::NotLeader) => {}
                    Err(e) => return Err(e),
                }
            }
            for p in parts {
                for s in p.shards {
                    if let Some(c) = covered.get_mut(s as usize) {
                        if *c {
                            // Two nodes answered for one shard (a leader change meanwhile).
                            continue;
                        }
                        *c = true;
                    }
                }
                all.extend(p.executions);
            }
            missing = covered.iter().filter(|c| !**c).count();
            if missing == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt.min(4) + 1))).await;
        }
        if missing > 0 {
            return Err(ApiError::new(
                Code::ServiceUnavailable,
                format!("{missing} shards have no reachable leader; retry"),
            ));
        }
        // A shard answered twice carries duplicates; newest first, ties by ARN.
        all.sort_by(|a, b| {
            b.start_date
                .cmp(&a.start_date)
                .then_with(|| a.execution_arn.cmp(&b.execution_arn))
        });
        all.dedup_by(|a, b| a.execution_arn == b.execution_arn);
        let page: Vec<_> = all.iter().skip(offset).take(max).cloned().collect();
        let next_token = if offset + page.len() < all.len() {
            (offset + page.len()).to_string()
        } else {
            String::new()
        };
        Ok(pb::ListExecutionsResponse {
            executions: page,
            next_token,
            shards: Vec::new(),
        })
    }

    pub(crate) fn get_execution_history_here(
        &self,
        r: &pb::GetExecutionHistoryRequest,
    ) -> ApiResult<pb::GetExecutionHistoryResponse> {
        let rec = self.record(&r.execution_arn)?;
        let max = page_size(r.max_results)? as u64;
        let app = &self.local(&r.execution_arn)?.app;
        let bad_token = || {
            ApiError::new(
                Code::InvalidToken,
                format!("Invalid Token: '{}'", r.next_token),
            )
        };
        let cursor: Option<u64> = if r.next_token.is_empty() {
            None
        } else {
            Some(r.next_token.parse().map_err(|_| bad_token())?)
        };
        let last = rec.last_event_id;
        let (from, to) = if r.reverse_order {
            let hi = cursor.unwrap_or(last);
            (hi.saturating_sub(max - 1).max(1), hi)
        } else {
            let lo = cursor.unwrap_or(1);
            (lo, (lo + max - 1).min(last))
        };
        if from > to + 1 || to > last {
            return Err(bad_token());
        }
        let mut events = if from <= to {
            app.history(rec.id, from, to).map_err(from_shard)?
        } else {
            Vec::new()
        };
        let next_token = if r.reverse_order {
            if from > 1 {
                (from - 1).to_string()
            } else {
                String::new()
            }
        } else if to < last {
            (to + 1).to_string()
        } else {
            String::new()
        };
        if r.reverse_order {
            events.reverse();
        }
        Ok(pb::GetExecutionHistoryResponse {
            events: events.iter().map(event_pb).collect(),
            next_token,
        })
    }

    /// History events with ids after `after`, for WatchExecution: (events, terminal).
    pub async fn events_after(
        &self,
        arn: &str,
        after: u64,
    ) -> ApiResult<(Vec<pb::HistoryEvent>, bool)> {
        // The status first: if it is terminal, the history read next is complete.
        let e = self.describe_execution(arn).await?;
        let terminal = !matches!(e.status.as_str(), "RUNNING" | "QUEUED" | "PAUSED");
        let h = self
            .get_execution_history(pb::GetExecutionHistoryRequest {
                execution_arn: arn.to_string(),
                max_results: 1000,
                next_token: (after + 1).to_string(),
                reverse_order: false,
                include_execution_data: true,
            })
            .await?;
        let done = terminal && h.next_token.is_empty();
        Ok((h.events, done))
    }

    // ============================================================ activities and tasks

    /// Long-polls every shard for a task of the activity, up to `wait`: the shards this node
    /// leads as their tasks are queued, the other nodes' shards every 200 ms.
    pub async fn get_activity_task(
        &self,
        arn: &str,
        worker: &str,
        wait: Duration,
    ) -> ApiResult<pb::ActivityTask> {
        self.meta_read(|| self.registry.activity(arn)).await?;
        let deadline = tokio::time::Instant::now() + wait;
        let req = pb::GetActivityTaskRequest {
            activity_arn: arn.to_string(),
            worker_name: worker.to_string(),
        };
        loop {
            // Register interest before looking, so a task queued meanwhile wakes us.
            let queued: Vec<_> = self
                .led_shards()
                .iter()
                .map(|h| h.activity_queued.clone())
                .collect();
            let waits: Vec<_> = queued.iter().map(|n| Box::pin(n.notified())).collect();
            let here = self.poll_activity_here(arn, worker).await?;
            if !here.task_token.is_empty() {
                return Ok(here);
            }
            let others = self.other_nodes();
            for n in others.iter() {
                if let Ok(t) = self.forward(*n, req.clone()).await {
                    if !t.task_token.is_empty() {
                        return Ok(t);
                    }
                }
            }
            let tick = if others.is_empty() {
                Duration::from_secs(3600)
            } else {
                Duration::from_millis(200)
            };
            let until = deadline.min(tokio::time::Instant::now() + tick);
            if !waits.is_empty() {
                let _ = tokio::time::timeout_at(until, futures::future::select_all(waits)).await;
            } else {
                tokio::time::sleep_until(until).await;
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(pb::ActivityTask::default());
            }
        }
    }

    /// The executors of the shards this node leads.
    fn led_shards(&self) -> Vec<ShardHandle> {
        self.cells()
            .iter()
            .filter_map(|c| c.get().and_then(|r| r.handle()))
            .collect()
    }

    /// One look for a task of the activity on the shards this node leads (an empty task
    /// when there is none).
    pub(crate) async fn poll_activity_here(
        &self,
        arn: &str,
        worker: &str,
    ) -> ApiResult<pb::ActivityTask> {
        let led = self.led_shards();
        let start = rand::Rng::gen_range(&mut rand::thread_rng(), 0..led.len().max(1));
        for i in 0..led.len() {
            let h = &led[(start + i) % led.len()];
            match h.take_activity(arn, worker).await {
                Ok(Some(t)) => {
                    return Ok(pb::ActivityTask {
                        task_token: t.token,
                        input: t.input,
                    })
                }
                Ok(None) => {}
                // The shard changed hands meanwhile: its tasks are polled there.
                Err(trellis_shard::Error::Stopped | trellis_shard::Error::NotLeader { .. }) => {}
                Err(e) => return Err(from_shard(e)),
            }
        }
        Ok(pb::ActivityTask::default())
    }

    pub(crate) async fn answer_here(&self, token: &str, answer: TokenAnswer) -> ApiResult<()> {
        if token.is_empty() || token.len() > 2048 {
            return Err(ApiError::new(
                Code::InvalidToken,
                format!("Invalid Token: '{token}'"),
            ));
        }
        let (shard, _, _) = trellis_shard::record::parse_token(token).ok_or_else(|| {
            ApiError::new(Code::InvalidToken, format!("Invalid Token: '{token}'"))
        })?;
        if shard >= self.shard_count() {
            return Err(ApiError::new(
                Code::InvalidToken,
                format!("Invalid Token: '{token}'"),
            ));
        }
        self.leading(shard)?
            .answer(token, answer)
            .await
            .map_err(from_shard)
    }

    pub(crate) async fn send_task_success_here(&self, token: &str, output: &str) -> ApiResult<()> {
        if output.len() > MAX_PAYLOAD {
            return Err(ApiError::new(Code::ValidationException, format!("1 validation error detected: Value at 'output' failed to satisfy constraint: Member must have length less than or equal to {MAX_PAYLOAD}")));
        }
        let v: Value = serde_json::from_str(output)
            .map_err(|e| ApiError::new(Code::InvalidOutput, format!("Invalid Output: '{e}'")))?;
        self.answer_here(token, TokenAnswer::Success(v)).await
    }

    pub(crate) async fn send_task_failure_here(
        &self,
        token: &str,
        error: &str,
        cause: &str,
    ) -> ApiResult<()> {
        self.answer_here(
            token,
            TokenAnswer::Failure {
                error: non_empty(error.to_string()),
                cause: non_empty(cause.to_string()),
            },
        )
        .await
    }

    pub(crate) async fn send_task_heartbeat_here(&self, token: &str) -> ApiResult<()> {
        self.answer_here(token, TokenAnswer::Heartbeat).await
    }

    // ============================================================ admin

    /// Runs the detector on every shard this node leads and collects what it found.
    pub(crate) async fn doctor_here(&self) -> ApiResult<pb::DoctorReport> {
        let mut out = pb::DoctorReport::default();
        for c in self.cells() {
            let Some(h) = c.get().and_then(|r| r.handle()) else {
                continue;
            };
            let r = h.scan().await.map_err(from_shard)?;
            out.scanned_executions += r.scanned;
            out.findings
                .extend(r.findings.into_iter().map(|f| pb::Finding {
                    shard: f.shard,
                    kind: f.kind.into(),
                    execution_arn: f.execution_arn,
                    detail: f.detail,
                    repaired: f.repaired,
                }));
        }
        Ok(out)
    }
}

#[derive(Default)]
struct RealEnv {
    rng: crate::ids::Entropy,
}

impl trellis_asl::Entropy for RealEnv {
    fn next_u64(&mut self) -> u64 {
        trellis_asl::Entropy::next_u64(&mut self.rng)
    }
}

impl Env for RealEnv {
    fn now_ms(&mut self) -> i64 {
        now_ms()
    }
}

/// Wall time: the runner waits for timers in real time, so there is nothing to move.
impl trellis_asl::driver::Clock for RealEnv {
    fn advance_to(&mut self, _at_ms: i64) {}
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

pub fn execution_pb(rec: &trellis_shard::ExecRecord, shard: u32) -> pb::Execution {
    pb::Execution {
        execution_arn: rec.arn.clone(),
        state_machine_arn: rec.state_machine_arn.clone(),
        name: rec.name.clone(),
        status: rec.status.as_str().into(),
        start_date: rec.start_ms,
        stop_date: rec.stop_ms.unwrap_or(0),
        input: rec.input.clone(),
        output: if rec.status == Status::Succeeded {
            rec.output.clone()
        } else {
            None
        },
        error: rec.error.clone().unwrap_or_default(),
        cause: rec.cause.clone().unwrap_or_default(),
        redrive_count: rec.redrive_count,
        redrive_date: rec.redrive_ms.unwrap_or(0),
        redrive_status: if matches!(
            rec.status,
            Status::Failed | Status::TimedOut | Status::Aborted
        ) {
            "REDRIVABLE"
        } else {
            "NOT_REDRIVABLE"
        }
        .into(),
        redrive_status_reason: match rec.status {
            Status::Running | Status::Queued => {
                "Execution is RUNNING and cannot be redriven".into()
            }
            Status::Succeeded => "Execution is SUCCEEDED and cannot be redriven".into(),
            _ => String::new(),
        },
        state_machine_version_arn: rec.version_arn.clone().unwrap_or_default(),
        state_machine_alias_arn: rec.alias_arn.clone().unwrap_or_default(),
        paused: rec.paused,
        shard,
    }
}

pub fn event_pb(e: &trellis_asl::HistoryEvent) -> pb::HistoryEvent {
    let aws = e.to_aws_json();
    let mut details = serde_json::Map::new();
    if let Value::Object(m) = aws {
        for (k, v) in m {
            if k.ends_with("EventDetails") {
                details.insert(k, v);
            }
        }
    }
    pb::HistoryEvent {
        timestamp: e.timestamp_ms,
        r#type: e.event_type.as_str().into(),
        id: e.id,
        previous_event_id: e.previous_event_id,
        details_json: if details.is_empty() {
            String::new()
        } else {
            Value::Object(details).to_string()
        },
    }
}
