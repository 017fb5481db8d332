//! A Trellis node: the meta group, the shards this node leads, and the API operations with
//! AWS Step Functions semantics. Both front ends (gRPC and the AWS JSON API) call these
//! methods; requests and responses are the `trellis.v1` messages.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::sync::Mutex;
use trellis_asl::exec::ExecutionInfo;
use trellis_asl::{Env, ExecStatus, Execution, Limits};
use trellis_meta::{Meta, MetaOp, Table};
use trellis_proto::raft as rpb;
use trellis_proto::v1 as pb;
use trellis_proto::{ApiError, Code};
use trellis_shard::executor::{Control, StartRequest, TokenAnswer};
use trellis_shard::raft::ShardRaft;
use trellis_shard::{shard_of, ShardApp, ShardHandle, Status};
use trellis_storage::NodeDb;

use crate::cluster::transport::Transport;
use crate::config::Config;
use crate::connectors::Connectors;
use crate::nested::ExecutionStarter;
use futures::future::join_all;

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

/// AWS's naming rule for state machines, executions, activities and aliases.
pub fn check_name(name: &str) -> ApiResult<()> {
    let bad = name.is_empty()
        || name.chars().count() > 80
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>{}[]?*\"#%\\^|~`$&,;:/".contains(c));
    if bad {
        return Err(ApiError::new(
            Code::InvalidName,
            format!("Invalid Name: '{name}'"),
        ));
    }
    Ok(())
}

/// A parsed Step Functions ARN: `arn:<partition>:states:<region>:<account>:<kind>:<rest>`.
struct Arn<'a> {
    kind: &'a str,
    parts: Vec<&'a str>,
}

fn parse_arn<'a>(arn: &'a str, kinds: &[&str]) -> ApiResult<Arn<'a>> {
    let invalid = |why: &str| ApiError::new(Code::InvalidArn, format!("Invalid Arn: '{why}'"));
    let p: Vec<&str> = arn.split(':').collect();
    if p.len() < 7 || p[0] != "arn" || p[2] != "states" {
        return Err(invalid(&format!("Invalid ARN prefix: {arn}")));
    }
    if !kinds.contains(&p[5]) {
        return Err(invalid(&format!(
            "Resource type not valid in this context: {}",
            p[5]
        )));
    }
    if p[6..].iter().any(|s| s.is_empty()) {
        return Err(invalid(&format!("Invalid ARN: {arn}")));
    }
    Ok(Arn {
        kind: p[5],
        parts: p[6..].to_vec(),
    })
}

/// This node's replica of one shard.
pub(crate) struct Replica {
    pub(crate) shard: u32,
    pub(crate) raft: ShardRaft,
    pub(crate) app: ShardApp,
    /// The executor's handle while this node leads the shard.
    leading: std::sync::RwLock<Option<ShardHandle>>,
}

impl Replica {
    pub(crate) fn new(shard: u32, raft: ShardRaft, app: ShardApp) -> Replica {
        Replica {
            shard,
            raft,
            app,
            leading: Default::default(),
        }
    }

    pub(crate) fn handle(&self) -> Option<ShardHandle> {
        self.leading
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_handle(&self, h: Option<ShardHandle>) {
        *self.leading.write().unwrap_or_else(|p| p.into_inner()) = h;
    }
}

/// A shard's slot on this node: empty when the node holds no replica of it.
#[derive(Default)]
pub(crate) struct ShardCell(std::sync::RwLock<Option<Arc<Replica>>>);

impl ShardCell {
    pub(crate) fn get(&self) -> Option<Arc<Replica>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set(&self, r: Arc<Replica>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(r);
    }

    pub(crate) fn clear(&self) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// A state machine ARN (or version, or alias) resolved to what runs.
pub(crate) struct Resolved {
    /// The machine record.
    pub(crate) machine: Value,
    /// The version that runs, when one was named or an alias picked one.
    pub(crate) version: Option<String>,
    /// The alias named.
    pub(crate) alias: Option<String>,
    pub(crate) definition: String,
}

/// A Trellis node: a member of the meta group and a replica of some shards, leading some.
pub struct Node {
    pub cfg: Config,
    db: NodeDb,
    pub(crate) meta: Meta,
    pub(crate) transport: Arc<Transport>,
    /// Serializes read-modify-write of meta records on this (leader) node.
    pub(crate) meta_lock: Mutex<()>,
    /// One cell per shard, once the shard count is known.
    shards: std::sync::OnceLock<Box<[ShardCell]>>,
    connectors: Connectors,
    admission: crate::cluster::admission::Admission,
    /// Shard -> the node that last served it as leader.
    leaders: std::sync::Mutex<HashMap<u32, u64>>,
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
        let transport = Transport::new(cfg.node.id, cfg.cluster.peer_max_message_bytes);
        let meta = Meta::open(&db, cfg.node.id, transport.network(0)).await?;
        transport.register(0, Arc::new(meta.raft.clone()));
        let ca = (!cfg.connectors.ca_file.is_empty())
            .then(|| std::path::PathBuf::from(&cfg.connectors.ca_file));
        let connectors = Connectors::new(cfg.functions.clone(), ca.as_deref())?;
        let node = Arc::new(Node {
            cfg,
            db,
            meta,
            transport,
            meta_lock: Mutex::new(()),
            shards: Default::default(),
            connectors,
            admission: Default::default(),
            leaders: Default::default(),
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
        self.shards.get().map(|b| &b[..]).unwrap_or(&[])
    }

    pub(crate) fn init_cells(&self, n: u32) -> &[ShardCell] {
        self.shards
            .get_or_init(|| (0..n).map(|_| ShardCell::default()).collect())
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

    pub(crate) fn leader_cache(&self) -> std::sync::MutexGuard<'_, HashMap<u32, u64>> {
        self.leaders.lock().unwrap_or_else(|p| p.into_inner())
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
        self.meta
            .app
            .get(Table::Machines, machine_arn)
            .ok()
            .flatten()
            .and_then(|m| m["maxConcurrentExecutions"].as_u64())
            .unwrap_or(0)
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
        let Some(rep) = self.cells().get(shard as usize).and_then(ShardCell::get) else {
            return Err(ApiError::not_leader(None));
        };
        rep.handle()
            .ok_or_else(|| ApiError::not_leader(rep.raft.metrics().borrow().current_leader))
    }

    /// The executor of the shard of `execution_arn`, if this node leads it.
    pub(crate) fn local(&self, execution_arn: &str) -> ApiResult<ShardHandle> {
        self.leading(self.shard_id(execution_arn)?)
    }

    pub(crate) fn arn_prefix(&self) -> String {
        format!(
            "arn:aws:states:{}:{}",
            self.cfg.aws.region, self.cfg.aws.account
        )
    }

    // ============================================================ state machines

    fn machine(&self, arn: &str) -> ApiResult<Value> {
        self.meta
            .app
            .get(Table::Machines, arn)
            .map_err(from_meta)?
            .ok_or_else(|| {
                ApiError::new(
                    Code::StateMachineDoesNotExist,
                    format!("State Machine Does Not Exist: '{arn}'"),
                )
            })
    }

    /// Resolves a state machine, version or alias ARN to the machine record and the
    /// definition that runs (an alias rolls its weighted version here).
    pub(crate) fn resolve(&self, arn: &str) -> ApiResult<Resolved> {
        let a = parse_arn(arn, &["stateMachine"])?;
        match a.parts.len() {
            1 => {
                let m = self.machine(arn)?;
                let definition = m["definition"].as_str().unwrap_or_default().to_string();
                Ok(Resolved {
                    machine: m,
                    version: None,
                    alias: None,
                    definition,
                })
            }
            2 => {
                let base = format!("{}:stateMachine:{}", self.arn_prefix(), a.parts[0]);
                let m = self.machine(&base)?;
                if a.parts[1].chars().all(|c| c.is_ascii_digit()) {
                    let v = self
                        .meta
                        .app
                        .get(Table::Versions, arn)
                        .map_err(from_meta)?
                        .ok_or_else(|| {
                            ApiError::new(
                                Code::StateMachineDoesNotExist,
                                format!("State Machine Does Not Exist: '{arn}'"),
                            )
                        })?;
                    let definition = v["definition"].as_str().unwrap_or_default().to_string();
                    Ok(Resolved {
                        machine: m,
                        version: Some(arn.to_string()),
                        alias: None,
                        definition,
                    })
                } else {
                    let alias = self.alias(arn)?;
                    let version = pick_version(&alias, &mut rand::thread_rng());
                    let v = self
                        .meta
                        .app
                        .get(Table::Versions, &version)
                        .map_err(from_meta)?
                        .ok_or_else(|| {
                            internal(format!("alias {arn} routes to a missing version"))
                        })?;
                    let definition = v["definition"].as_str().unwrap_or_default().to_string();
                    Ok(Resolved {
                        machine: m,
                        version: Some(version),
                        alias: Some(arn.to_string()),
                        definition,
                    })
                }
            }
            _ => Err(ApiError::new(
                Code::InvalidArn,
                format!("Invalid Arn: 'Invalid ARN: {arn}'"),
            )),
        }
    }

    fn validate_definition(definition: &str, express: bool) -> ApiResult<()> {
        let diags = trellis_asl::validate::validate(definition, trellis_asl::Options { express });
        let errors: Vec<_> = diags
            .into_iter()
            .filter(|d| d.severity == trellis_asl::Severity::Error)
            .collect();
        if errors.is_empty() {
            return Ok(());
        }
        Err(ApiError::new(
            Code::InvalidDefinition,
            format!(
                "Invalid State Machine Definition: '{}'",
                trellis_asl::validate::summary(&errors)
            ),
        ))
    }

    pub(crate) async fn create_state_machine_here(
        &self,
        r: pb::CreateStateMachineRequest,
    ) -> ApiResult<pb::CreateStateMachineResponse> {
        check_name(&r.name)?;
        if r.role_arn.is_empty() {
            return Err(ApiError::new(
                Code::ValidationException,
                "1 validation error detected: Value null at 'roleArn' failed to satisfy constraint: Member must not be null",
            ));
        }
        let express = r.r#type == pb::StateMachineType::Express as i32;
        Self::validate_definition(&r.definition, express)?;
        let arn = format!("{}:stateMachine:{}", self.arn_prefix(), r.name);
        let _g = self.meta_lock.lock().await;
        if let Some(existing) = self
            .meta
            .app
            .get(Table::Machines, &arn)
            .map_err(from_meta)?
        {
            // Idempotent when the definition and type are the same.
            if existing["definition"] == json!(r.definition)
                && existing["type"] == json!(type_name(r.r#type))
            {
                return Ok(pb::CreateStateMachineResponse {
                    state_machine_arn: arn,
                    creation_date: existing["creationDate"].as_i64().unwrap_or(0),
                    state_machine_version_arn: String::new(),
                });
            }
            return Err(ApiError::new(
                Code::StateMachineAlreadyExists,
                format!("State Machine Already Exists: '{arn}'"),
            ));
        }
        let now = now_ms();
        let revision = revision_id();
        let mut record = json!({
            "stateMachineArn": arn, "name": r.name, "definition": r.definition,
            "roleArn": r.role_arn, "type": type_name(r.r#type), "creationDate": now,
            "revisionId": revision, "description": "", "versions": 0,
            "maxConcurrentExecutions": r.settings.map(|s| s.max_concurrent_executions).unwrap_or(0),
        });
        let mut ops = Vec::new();
        let mut version_arn = String::new();
        if r.publish {
            let (op, varn) = publish_op(&mut record, &r.version_description, now);
            ops.push(op);
            version_arn = varn;
        }
        ops.push(MetaOp::Put {
            table: Table::Machines,
            key: arn.clone(),
            value: record,
        });
        self.meta.write(ops).await.map_err(from_meta)?;
        Ok(pb::CreateStateMachineResponse {
            state_machine_arn: arn,
            creation_date: now,
            state_machine_version_arn: version_arn,
        })
    }

    pub(crate) async fn update_state_machine_here(
        &self,
        r: pb::UpdateStateMachineRequest,
    ) -> ApiResult<pb::UpdateStateMachineResponse> {
        parse_arn(&r.state_machine_arn, &["stateMachine"])?;
        if r.definition.is_none() && r.role_arn.is_none() && r.settings.is_none() {
            return Err(ApiError::new(
                Code::MissingRequiredParameter,
                "Either the definition, the roleArn or the settings must be specified",
            ));
        }
        let _g = self.meta_lock.lock().await;
        let mut m = self.machine(&r.state_machine_arn)?;
        let express = m["type"] == "EXPRESS";
        let now = now_ms();
        if let Some(d) = &r.definition {
            Self::validate_definition(d, express)?;
            m["definition"] = json!(d);
            m["revisionId"] = json!(revision_id());
        }
        if let Some(role) = &r.role_arn {
            m["roleArn"] = json!(role);
        }
        if let Some(s) = &r.settings {
            m["maxConcurrentExecutions"] = json!(s.max_concurrent_executions);
        }
        m["updateDate"] = json!(now);
        let mut ops = Vec::new();
        let mut version_arn = String::new();
        if r.publish {
            let (op, varn) = publish_op(&mut m, &r.version_description, now);
            ops.push(op);
            version_arn = varn;
        }
        let revision = m["revisionId"].as_str().unwrap_or_default().to_string();
        ops.push(MetaOp::Put {
            table: Table::Machines,
            key: r.state_machine_arn.clone(),
            value: m,
        });
        self.meta.write(ops).await.map_err(from_meta)?;
        Ok(pb::UpdateStateMachineResponse {
            update_date: now,
            revision_id: revision,
            state_machine_version_arn: version_arn,
        })
    }

    pub fn describe_state_machine(&self, arn: &str) -> ApiResult<pb::StateMachine> {
        let Resolved {
            machine: m,
            version,
            definition: def,
            ..
        } = self.resolve(arn)?;
        Ok(pb::StateMachine {
            state_machine_arn: version.unwrap_or_else(|| {
                m["stateMachineArn"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            }),
            name: m["name"].as_str().unwrap_or_default().into(),
            status: "ACTIVE".into(),
            definition: def,
            role_arn: m["roleArn"].as_str().unwrap_or_default().into(),
            r#type: type_enum(m["type"].as_str().unwrap_or_default()),
            creation_date: m["creationDate"].as_i64().unwrap_or(0),
            revision_id: m["revisionId"].as_str().unwrap_or_default().into(),
            description: m["description"].as_str().unwrap_or_default().into(),
            settings: Some(pb::StateMachineSettings {
                max_concurrent_executions: m["maxConcurrentExecutions"].as_u64().unwrap_or(0)
                    as u32,
            }),
        })
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

    /// Deletes one meta record.
    async fn meta_delete(&self, table: Table, key: impl Into<String>) -> ApiResult<()> {
        let key = key.into();
        self.meta
            .write(vec![MetaOp::Delete { table, key }])
            .await
            .map_err(from_meta)
    }

    /// One page of a meta table in key order; the token is the last key returned.
    fn meta_page(
        &self,
        table: Table,
        max_results: u32,
        next_token: &str,
    ) -> ApiResult<(Vec<(String, Value)>, String)> {
        let max = page_size(max_results)?;
        let after = (!next_token.is_empty()).then_some(next_token);
        let mut rows = self
            .meta
            .app
            .list(table, after, max + 1)
            .map_err(from_meta)?;
        let more = rows.len() > max;
        rows.truncate(max);
        let token = match (more, rows.last()) {
            (true, Some((k, _))) => k.clone(),
            _ => String::new(),
        };
        Ok((rows, token))
    }

    pub fn list_state_machines(
        &self,
        r: pb::ListStateMachinesRequest,
    ) -> ApiResult<pb::ListStateMachinesResponse> {
        let (items, next_token) = self.meta_page(Table::Machines, r.max_results, &r.next_token)?;
        Ok(pb::ListStateMachinesResponse {
            state_machines: items
                .into_iter()
                .map(|(_, m)| pb::StateMachineListItem {
                    state_machine_arn: m["stateMachineArn"].as_str().unwrap_or_default().into(),
                    name: m["name"].as_str().unwrap_or_default().into(),
                    r#type: type_enum(m["type"].as_str().unwrap_or_default()),
                    creation_date: m["creationDate"].as_i64().unwrap_or(0),
                })
                .collect(),
            next_token,
        })
    }

    pub(crate) async fn delete_state_machine_here(&self, arn: &str) -> ApiResult<()> {
        parse_arn(arn, &["stateMachine"])?;
        let _g = self.meta_lock.lock().await;
        if self
            .meta
            .app
            .get(Table::Machines, arn)
            .map_err(from_meta)?
            .is_none()
        {
            // Deleting a missing machine succeeds, as on AWS.
            return Ok(());
        }
        let mut ops = vec![MetaOp::Delete {
            table: Table::Machines,
            key: arn.to_string(),
        }];
        for table in [Table::Versions, Table::Aliases] {
            let prefix = format!("{arn}:");
            for (k, _) in self
                .meta
                .app
                .list(table, None, usize::MAX)
                .map_err(from_meta)?
            {
                if k.starts_with(&prefix) {
                    ops.push(MetaOp::Delete { table, key: k });
                }
            }
        }
        self.meta.write(ops).await.map_err(from_meta)
    }

    pub(crate) async fn publish_version_here(
        &self,
        r: pb::PublishVersionRequest,
    ) -> ApiResult<pb::PublishVersionResponse> {
        parse_arn(&r.state_machine_arn, &["stateMachine"])?;
        let _g = self.meta_lock.lock().await;
        let mut m = self.machine(&r.state_machine_arn)?;
        if !r.revision_id.is_empty() && m["revisionId"] != json!(r.revision_id) {
            return Err(ApiError::new(
                Code::ConflictException,
                format!("Failed to publish the State Machine version for revision {}. The current State Machine revision is {}.", r.revision_id, m["revisionId"].as_str().unwrap_or_default()),
            ));
        }
        let now = now_ms();
        let (op, varn) = publish_op(&mut m, &r.description, now);
        self.meta
            .write(vec![
                op,
                MetaOp::Put {
                    table: Table::Machines,
                    key: r.state_machine_arn.clone(),
                    value: m,
                },
            ])
            .await
            .map_err(from_meta)?;
        Ok(pb::PublishVersionResponse {
            creation_date: now,
            state_machine_version_arn: varn,
        })
    }

    pub fn list_versions(&self, r: pb::ListVersionsRequest) -> ApiResult<pb::ListVersionsResponse> {
        self.machine(&r.state_machine_arn)?;
        let prefix = format!("{}:", r.state_machine_arn);
        let mut items: Vec<(u64, pb::VersionListItem)> = self
            .meta
            .app
            .list(Table::Versions, None, usize::MAX)
            .map_err(from_meta)?
            .into_iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| {
                let n = k[prefix.len()..].parse().unwrap_or(0);
                (
                    n,
                    pb::VersionListItem {
                        state_machine_version_arn: k,
                        creation_date: v["creationDate"].as_i64().unwrap_or(0),
                    },
                )
            })
            .collect();
        items.sort_by_key(|v| std::cmp::Reverse(v.0));
        Ok(pb::ListVersionsResponse {
            state_machine_versions: items.into_iter().map(|(_, v)| v).collect(),
            next_token: String::new(),
        })
    }

    pub(crate) async fn delete_version_here(&self, arn: &str) -> ApiResult<()> {
        let a = parse_arn(arn, &["stateMachine"])?;
        if a.parts.len() != 2 {
            return Err(ApiError::new(
                Code::InvalidArn,
                format!("Invalid Arn: 'Invalid ARN: {arn}'"),
            ));
        }
        let _g = self.meta_lock.lock().await;
        for (k, alias) in self
            .meta
            .app
            .list(Table::Aliases, None, usize::MAX)
            .map_err(from_meta)?
        {
            let routes = alias["routingConfiguration"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if routes
                .iter()
                .any(|r| r["stateMachineVersionArn"] == json!(arn))
            {
                return Err(ApiError::new(
                    Code::ConflictException,
                    format!("Version to be deleted must not be referenced by an alias. Current list of aliases referencing this version: [{k}]"),
                ));
            }
        }
        self.meta_delete(Table::Versions, arn.to_string()).await
    }

    fn check_routes(&self, routes: &[pb::RoutingConfiguration]) -> ApiResult<String> {
        if routes.is_empty() || routes.len() > 2 {
            return Err(ApiError::new(Code::ValidationException, "1 validation error detected: Value at 'routingConfiguration' failed to satisfy constraint: Member must have length between 1 and 2"));
        }
        let total: u32 = routes.iter().map(|r| r.weight).sum();
        if total != 100 || routes.iter().any(|r| r.weight > 100) {
            return Err(ApiError::new(
                Code::ValidationException,
                "The sum of the weights in the routing configuration must be equal to 100",
            ));
        }
        let mut machine = None;
        for r in routes {
            let a = parse_arn(&r.state_machine_version_arn, &["stateMachine"])?;
            if a.parts.len() != 2
                || self
                    .meta
                    .app
                    .get(Table::Versions, &r.state_machine_version_arn)
                    .map_err(from_meta)?
                    .is_none()
            {
                return Err(ApiError::new(
                    Code::ResourceNotFound,
                    format!("Resource Not Found: '{}'", r.state_machine_version_arn),
                ));
            }
            let m = format!("{}:stateMachine:{}", self.arn_prefix(), a.parts[0]);
            if machine.get_or_insert_with(|| m.clone()) != &m {
                return Err(ApiError::new(
                    Code::ValidationException,
                    "All versions in a routing configuration must belong to the same state machine",
                ));
            }
        }
        Ok(machine.unwrap_or_default())
    }

    pub(crate) async fn create_alias_here(
        &self,
        r: pb::CreateAliasRequest,
    ) -> ApiResult<pb::CreateAliasResponse> {
        check_name(&r.name)?;
        if r.name.chars().all(|c| c.is_ascii_digit()) {
            return Err(ApiError::new(
                Code::InvalidName,
                format!("Invalid Name: '{}'", r.name),
            ));
        }
        let machine = self.check_routes(&r.routing_configuration)?;
        let arn = format!("{machine}:{}", r.name);
        let _g = self.meta_lock.lock().await;
        if self
            .meta
            .app
            .get(Table::Aliases, &arn)
            .map_err(from_meta)?
            .is_some()
        {
            return Err(ApiError::new(
                Code::ConflictException,
                format!("Alias already exists: '{arn}'"),
            ));
        }
        let now = now_ms();
        let value = json!({"stateMachineAliasArn": arn, "name": r.name, "description": r.description,
            "routingConfiguration": routes_json(&r.routing_configuration), "creationDate": now, "updateDate": now});
        self.meta_put(Table::Aliases, arn.clone(), value).await?;
        Ok(pb::CreateAliasResponse {
            state_machine_alias_arn: arn,
            creation_date: now,
        })
    }

    /// An alias record, or AWS's `ResourceNotFound`.
    fn alias(&self, arn: &str) -> ApiResult<Value> {
        self.meta
            .app
            .get(Table::Aliases, arn)
            .map_err(from_meta)?
            .ok_or_else(|| {
                ApiError::new(
                    Code::ResourceNotFound,
                    format!("Resource Not Found: '{arn}'"),
                )
            })
    }

    pub fn describe_alias(&self, arn: &str) -> ApiResult<pb::Alias> {
        parse_arn(arn, &["stateMachine"])?;
        let a = self.alias(arn)?;
        Ok(alias_pb(&a))
    }

    pub(crate) async fn update_alias_here(
        &self,
        r: pb::UpdateAliasRequest,
    ) -> ApiResult<pb::UpdateAliasResponse> {
        let _g = self.meta_lock.lock().await;
        let mut a = self.alias(&r.state_machine_alias_arn)?;
        if !r.routing_configuration.is_empty() {
            self.check_routes(&r.routing_configuration)?;
            a["routingConfiguration"] = routes_json(&r.routing_configuration);
        }
        if let Some(d) = r.description {
            a["description"] = json!(d);
        }
        let now = now_ms();
        a["updateDate"] = json!(now);
        self.meta_put(Table::Aliases, r.state_machine_alias_arn, a)
            .await?;
        Ok(pb::UpdateAliasResponse { update_date: now })
    }

    pub(crate) async fn delete_alias_here(&self, arn: &str) -> ApiResult<()> {
        parse_arn(arn, &["stateMachine"])?;
        self.meta_delete(Table::Aliases, arn.to_string()).await
    }

    pub fn list_aliases(&self, r: pb::ListAliasesRequest) -> ApiResult<pb::ListAliasesResponse> {
        self.machine(&r.state_machine_arn)?;
        let prefix = format!("{}:", r.state_machine_arn);
        let items = self
            .meta
            .app
            .list(Table::Aliases, None, usize::MAX)
            .map_err(from_meta)?
            .into_iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| pb::AliasListItem {
                state_machine_alias_arn: k,
                creation_date: v["creationDate"].as_i64().unwrap_or(0),
            })
            .collect();
        Ok(pb::ListAliasesResponse {
            state_machine_aliases: items,
            next_token: String::new(),
        })
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
            state_machine_arn: m["stateMachineArn"].as_str().unwrap_or_default().into(),
            state_machine_name: m["name"].as_str().unwrap_or_default().into(),
            version_arn: resolved.version.unwrap_or_default(),
            alias_arn: resolved.alias.unwrap_or_default(),
            role_arn: m["roleArn"].as_str().unwrap_or_default().into(),
            name: self.execution_name(&r.name)?,
            input: Self::check_input(&r.input)?,
            capped: m["maxConcurrentExecutions"].as_u64().unwrap_or(0) > 0,
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
        if m["type"] != "EXPRESS" {
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
        m: &Value,
        name: &str,
        input: &str,
        definition: &str,
    ) -> ApiResult<pb::SyncExecutionResult> {
        let machine_arn = m["stateMachineArn"].as_str().unwrap_or_default();
        let machine = m["name"].as_str().unwrap_or_default();
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
        self.machine(&r.state_machine_arn)?;
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

    pub(crate) async fn create_activity_here(
        &self,
        name: &str,
    ) -> ApiResult<pb::CreateActivityResponse> {
        check_name(name)?;
        let arn = format!("{}:activity:{name}", self.arn_prefix());
        let _g = self.meta_lock.lock().await;
        if let Some(a) = self
            .meta
            .app
            .get(Table::Activities, &arn)
            .map_err(from_meta)?
        {
            // CreateActivity is idempotent.
            return Ok(pb::CreateActivityResponse {
                activity_arn: arn,
                creation_date: a["creationDate"].as_i64().unwrap_or(0),
            });
        }
        let now = now_ms();
        self.meta_put(
            Table::Activities,
            arn.clone(),
            json!({"activityArn": arn, "name": name, "creationDate": now}),
        )
        .await?;
        Ok(pb::CreateActivityResponse {
            activity_arn: arn,
            creation_date: now,
        })
    }

    fn activity(&self, arn: &str) -> ApiResult<Value> {
        parse_arn(arn, &["activity"])?;
        self.meta
            .app
            .get(Table::Activities, arn)
            .map_err(from_meta)?
            .ok_or_else(|| {
                ApiError::new(
                    Code::ActivityDoesNotExist,
                    format!("Activity Does Not Exist: '{arn}'"),
                )
            })
    }

    pub fn describe_activity(&self, arn: &str) -> ApiResult<pb::Activity> {
        let a = self.activity(arn)?;
        Ok(pb::Activity {
            activity_arn: arn.into(),
            name: a["name"].as_str().unwrap_or_default().into(),
            creation_date: a["creationDate"].as_i64().unwrap_or(0),
        })
    }

    pub fn list_activities(
        &self,
        r: pb::ListActivitiesRequest,
    ) -> ApiResult<pb::ListActivitiesResponse> {
        let (rows, next_token) = self.meta_page(Table::Activities, r.max_results, &r.next_token)?;
        Ok(pb::ListActivitiesResponse {
            activities: rows
                .into_iter()
                .map(|(k, a)| pb::Activity {
                    activity_arn: k,
                    name: a["name"].as_str().unwrap_or_default().into(),
                    creation_date: a["creationDate"].as_i64().unwrap_or(0),
                })
                .collect(),
            next_token,
        })
    }

    pub(crate) async fn delete_activity_here(&self, arn: &str) -> ApiResult<()> {
        parse_arn(arn, &["activity"])?;
        self.meta_delete(Table::Activities, arn.to_string()).await
    }

    /// Long-polls every shard for a task of the activity, up to `wait`: the shards this node
    /// leads as their tasks are queued, the other nodes' shards every 200 ms.
    pub async fn get_activity_task(
        &self,
        arn: &str,
        worker: &str,
        wait: Duration,
    ) -> ApiResult<pb::ActivityTask> {
        self.meta_read(|| self.activity(arn)).await?;
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

fn page_size(max: u32) -> ApiResult<usize> {
    if max > 1000 {
        return Err(ApiError::new(
            Code::ValidationException,
            format!("1 validation error detected: Value '{max}' at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to 1000"),
        ));
    }
    Ok(if max == 0 { 100 } else { max as usize })
}

fn type_name(t: i32) -> &'static str {
    if t == pb::StateMachineType::Express as i32 {
        "EXPRESS"
    } else {
        "STANDARD"
    }
}

fn type_enum(s: &str) -> i32 {
    if s == "EXPRESS" {
        pb::StateMachineType::Express as i32
    } else {
        pb::StateMachineType::Standard as i32
    }
}

/// A new revision id: a random UUID, as AWS gives.
fn revision_id() -> String {
    crate::ids::uuid()
}

/// Publishes the machine's current definition as its next version.
fn publish_op(m: &mut Value, description: &str, now: i64) -> (MetaOp, String) {
    let n = m["versions"].as_u64().unwrap_or(0) + 1;
    m["versions"] = json!(n);
    let arn = format!("{}:{n}", m["stateMachineArn"].as_str().unwrap_or_default());
    let value = json!({"stateMachineVersionArn": arn, "definition": m["definition"], "roleArn": m["roleArn"],
        "revisionId": m["revisionId"], "description": description, "creationDate": now});
    (
        MetaOp::Put {
            table: Table::Versions,
            key: arn.clone(),
            value,
        },
        arn,
    )
}

fn routes_json(routes: &[pb::RoutingConfiguration]) -> Value {
    Value::Array(routes.iter().map(|r| json!({"stateMachineVersionArn": r.state_machine_version_arn, "weight": r.weight})).collect())
}

fn alias_pb(a: &Value) -> pb::Alias {
    pb::Alias {
        state_machine_alias_arn: a["stateMachineAliasArn"]
            .as_str()
            .unwrap_or_default()
            .into(),
        name: a["name"].as_str().unwrap_or_default().into(),
        description: a["description"].as_str().unwrap_or_default().into(),
        routing_configuration: a["routingConfiguration"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| pb::RoutingConfiguration {
                state_machine_version_arn: r["stateMachineVersionArn"]
                    .as_str()
                    .unwrap_or_default()
                    .into(),
                weight: r["weight"].as_u64().unwrap_or(0) as u32,
            })
            .collect(),
        creation_date: a["creationDate"].as_i64().unwrap_or(0),
        update_date: a["updateDate"].as_i64().unwrap_or(0),
    }
}

/// Picks a version of an alias by its weights.
fn pick_version(alias: &Value, rng: &mut impl rand::Rng) -> String {
    let routes = alias["routingConfiguration"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let roll: u64 = rng.gen_range(0..100);
    let mut acc = 0;
    for r in &routes {
        acc += r["weight"].as_u64().unwrap_or(0);
        if roll < acc {
            return r["stateMachineVersionArn"]
                .as_str()
                .unwrap_or_default()
                .to_string();
        }
    }
    routes
        .first()
        .and_then(|r| r["stateMachineVersionArn"].as_str())
        .unwrap_or_default()
        .to_string()
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
