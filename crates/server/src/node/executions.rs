//! Executions: start (Standard on its shard's leader, Express here in memory), describe,
//! stop, redrive, pause and resume, history, and the cluster-wide list.
//!
//! The client-facing method resolves and checks a request on the node that took it, then
//! runs it where it can be served (`trellis_cluster::router`); the `*_here` methods do the
//! work on the shard's leader.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use trellis_asl::exec::ExecutionInfo;
use trellis_asl::{Env, ExecStatus, Execution, Limits};
use trellis_cluster::retry::Backoff;
use trellis_cluster::{from_shard, internal};
use trellis_meta::records::{MachineRecord, MachineType};
use trellis_proto::raft as rpb;
use trellis_proto::v1 as pb;
use trellis_proto::{ApiError, Code};
use trellis_shard::executor::{Control, StartRequest};
use trellis_shard::listing::{Cursor, ListItem, Owner};
use trellis_shard::{shard_of, Status};

use super::{event_pb, execution_pb, non_empty, ApiResult, Node, MAX_PAYLOAD};
use crate::registry::{check_name, page_size, parse_arn, Resolved};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Node {
    /// StartExecution: resolved here, once (an alias rolls once), then started on the
    /// shard's leader. Express executions run here, in memory.
    pub async fn start_execution(
        &self,
        r: pb::StartExecutionRequest,
    ) -> ApiResult<pb::StartExecutionResponse> {
        let resolved = self
            .cluster
            .router()
            .meta_read(|| self.registry.resolve(&r.state_machine_arn))
            .await?;
        if resolved.machine.kind == MachineType::Express {
            return self.start_express(r, resolved).await;
        }
        // The name decides the shard, so it is chosen here, once.
        let start = self.start_request(r, resolved)?;
        let arn = self.execution_arn(&start.state_machine_name, &start.name);
        let shard = self.cluster.shards().shard_of(&arn)?;
        self.cluster.router().on_shard(shard, start).await
    }

    /// The shard of an execution ARN, after checking the ARN.
    pub(super) fn execution_shard(&self, arn: &str) -> ApiResult<u32> {
        self.check_execution_arn(arn)?;
        self.cluster.shards().shard_of(arn)
    }

    pub async fn describe_execution(&self, arn: &str) -> ApiResult<pb::Execution> {
        let shard = self.execution_shard(arn)?;
        let r = pb::DescribeExecutionRequest {
            execution_arn: arn.to_string(),
        };
        self.cluster.router().on_shard(shard, r).await
    }

    pub async fn stop_execution(
        &self,
        r: pb::StopExecutionRequest,
    ) -> ApiResult<pb::StopExecutionResponse> {
        let shard = self.execution_shard(&r.execution_arn)?;
        self.cluster.router().on_shard(shard, r).await
    }

    pub async fn redrive_execution(&self, arn: &str) -> ApiResult<pb::RedriveExecutionResponse> {
        let shard = self.execution_shard(arn)?;
        let r = pb::RedriveExecutionRequest {
            execution_arn: arn.to_string(),
            client_token: String::new(),
        };
        self.cluster.router().on_shard(shard, r).await
    }

    pub async fn pause_execution(&self, arn: &str, pause: bool) -> ApiResult<()> {
        let shard = self.execution_shard(arn)?;
        let execution_arn = arn.to_string();
        let router = self.cluster.router();
        if pause {
            let r = pb::PauseExecutionRequest { execution_arn };
            router.on_shard(shard, r).await.map(drop)
        } else {
            let r = pb::ResumeExecutionRequest { execution_arn };
            router.on_shard(shard, r).await.map(drop)
        }
    }

    pub async fn get_execution_history(
        &self,
        r: pb::GetExecutionHistoryRequest,
    ) -> ApiResult<pb::GetExecutionHistoryResponse> {
        let shard = self.execution_shard(&r.execution_arn)?;
        self.cluster.router().on_shard(shard, r).await
    }

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
            sharding: Some(crate::registry::sharding::to_pb(&m.sharding)),
            retention_seconds: m.retention_seconds,
            request_id: rand::random::<u64>().max(1),
        })
    }

    /// Starts a resolved Standard execution on this node, which leads its shard.
    pub(crate) async fn start_here(
        &self,
        r: rpb::StartResolved,
    ) -> ApiResult<pb::StartExecutionResponse> {
        let arn = self.execution_arn(&r.state_machine_name, &r.name);
        let capped = r.capped;
        let sharding = match &r.sharding {
            Some(s) => crate::registry::sharding::read(s)?,
            None => Default::default(),
        };
        let started = self
            .cluster
            .shards()
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
                parent: None,
                sharding,
                scope: None,
                retention: (r.retention_seconds > 0)
                    .then(|| std::time::Duration::from_secs(r.retention_seconds)),
                request_id: r.request_id,
            })
            .await
            .map_err(from_shard)?;
        if capped && !started.existed {
            // Admitted before the reply when the cap allows, as on a single node.
            self.cluster.admission().admit_now().await;
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
            .cluster
            .router()
            .meta_read(|| self.registry.resolve(&r.state_machine_arn))
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
        let ended = trellis_shard::runner::run(
            &mut driver,
            &mut exec,
            &mut env,
            &mut tasks,
            trellis_shard::runner::Options {
                fast_timers: false,
                deadline: Some(deadline),
            },
        )
        .await
        .map_err(internal)?;
        let timed_out = ended == trellis_shard::runner::Ended::DeadlinePassed;
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
        self.cluster
            .shards()
            .local(arn)?
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
            .cluster
            .shards()
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
        let at = self
            .cluster
            .shards()
            .local(arn)?
            .redrive(arn)
            .await
            .map_err(from_shard)?;
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
        self.cluster
            .shards()
            .local(arn)?
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

    /// One page of the executions of a state machine (or a Map Run's children) on the
    /// shards this node leads, newest first: the `max_results` items after the request's
    /// cursor (`next_token`), merged from each shard's listing index as far as the page
    /// needs; with the shards they cover.
    pub(crate) fn list_executions_here(
        &self,
        r: &pb::ListExecutionsRequest,
    ) -> ApiResult<pb::ListExecutionsResponse> {
        let status = Self::status_filter(&r.status_filter)?;
        let after = Self::cursor(&r.next_token)?;
        let owner = if r.map_run_arn.is_empty() {
            Owner::Machine(&r.state_machine_arn)
        } else {
            Owner::MapRun(&r.map_run_arn)
        };
        let limit = r.max_results.max(1) as usize;
        let mut listings = Vec::new();
        let mut covered = Vec::new();
        for rep in self.cluster.shards().replicas() {
            if rep.handle().is_none() {
                continue;
            }
            covered.push(rep.shard);
            listings.push(rep.app.listing(owner, status, after.clone()));
        }
        let all = trellis_shard::listing::merge(listings, limit).map_err(from_shard)?;
        Ok(pb::ListExecutionsResponse {
            executions: all.into_iter().map(list_item).collect(),
            next_token: String::new(),
            shards: covered,
        })
    }

    /// A ListExecutions token: where the last page ended.
    fn cursor(token: &str) -> ApiResult<Option<Cursor>> {
        if token.is_empty() {
            return Ok(None);
        }
        Cursor::parse(token)
            .map(Some)
            .ok_or_else(|| ApiError::new(Code::InvalidToken, format!("Invalid Token: '{token}'")))
    }

    fn status_filter(filter: &str) -> ApiResult<Option<Status>> {
        if filter.is_empty() {
            return Ok(None);
        }
        Status::parse(filter).map(Some).ok_or_else(|| {
            ApiError::new(Code::ValidationException, format!("1 validation error detected: Value '{filter}' at 'statusFilter' failed to satisfy constraint: Member must satisfy enum value set: [SUCCEEDED, TIMED_OUT, PENDING_REDRIVE, ABORTED, FAILED, RUNNING]"))
        })
    }

    /// ListExecutions: every node's page (from the shards it leads), merged, newest first;
    /// the token is where the page ended (`<start ms>:<ARN>`), so a page costs about a page
    /// of index entries per shard, however many executions are kept.
    pub async fn list_executions(
        &self,
        r: pb::ListExecutionsRequest,
    ) -> ApiResult<pb::ListExecutionsResponse> {
        match (r.state_machine_arn.is_empty(), r.map_run_arn.is_empty()) {
            (false, true) => drop(self.registry.machine(&r.state_machine_arn)?),
            // The children of a Map Run: an unknown one is ResourceNotFound, as on AWS
            // (found as DescribeMapRun finds it).
            (true, false) if r.map_run_arn.contains(":mapRun:") => {
                self.describe_map_run(&r.map_run_arn).await?;
            }
            (true, false) => {
                return Err(ApiError::new(
                    Code::InvalidArn,
                    format!("Invalid Arn: '{}'", r.map_run_arn),
                ))
            }
            _ => {
                return Err(ApiError::new(
                    Code::ValidationException,
                    "Exactly one of stateMachineArn and mapRunArn must be given",
                ))
            }
        }
        Self::status_filter(&r.status_filter)?;
        let max = page_size(r.max_results)?;
        Self::cursor(&r.next_token)?;
        // Each node answers one more than a page, to tell whether another page follows.
        let ask = pb::ListExecutionsRequest {
            max_results: max as u32 + 1,
            ..r.clone()
        };
        let mut all = Vec::new();
        let mut covered = vec![false; self.shard_count() as usize];
        let mut missing = usize::MAX;
        // Until every shard answered (leaders being elected), within about 9 s.
        let mut retry = Backoff::new(Duration::from_millis(50), Duration::from_millis(250), 40);
        while retry.begin() {
            all.clear();
            covered.iter_mut().for_each(|c| *c = false);
            let mut parts = Vec::new();
            for (_, p) in self.cluster.router().fan_out(ask.clone(), None).await {
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
            retry.pause().await;
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
        let more = all.len() > max;
        all.truncate(max);
        let next_token = match (more, all.last()) {
            (true, Some(last)) => Cursor {
                start_ms: last.start_date,
                arn: last.execution_arn.clone(),
            }
            .token(),
            _ => String::new(),
        };
        Ok(pb::ListExecutionsResponse {
            executions: all,
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
        let app = &self.cluster.shards().local(&r.execution_arn)?.app;
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

/// A listing's item as `trellis.v1.ExecutionListItem`.
fn list_item(i: ListItem) -> pb::ExecutionListItem {
    pb::ExecutionListItem {
        execution_arn: i.arn,
        state_machine_arn: i.state_machine_arn,
        name: i.name,
        status: i.status.as_str().into(),
        start_date: i.start_ms,
        stop_date: i.stop_ms.unwrap_or(0),
        redrive_count: i.redrive_count,
        map_run_arn: i.map_run_arn,
    }
}
