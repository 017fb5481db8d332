//! Routing: any node accepts any request and runs it where it can be served.
//!
//! * Shard-bound calls (an execution, a task token) run on the shard's leader. The entry
//!   node guesses the leader (its own replica's view, then a cache, then the shard map's
//!   replicas), forwards the call with `Forward`, and follows `NotLeader` hints, with bounded
//!   retries while a shard elects a leader.
//! * Meta writes run on the meta leader. The reply carries the leader's applied meta index
//!   and the entry node waits for its own replica to reach it, so a client that writes
//!   through one node reads its write back through the same node.
//! * A forwarded call is a typed [`Call`]: each request type is one variant, has one reply
//!   type and one handler that serves it locally ([`Forward`], all in the table below). The
//!   receiver runs that handler or answers `NotLeader`; it never forwards again, so a stale
//!   hint costs one more hop, never a loop.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use prost::Message;
use trellis_meta::placement::NodeState;
use trellis_proto::error::{ApiError, Code};
use trellis_proto::raft as rpb;
use trellis_proto::raft::forward_request::Call;
use trellis_proto::v1 as pb;

use crate::node::{ApiResult, Node};

/// How many times a call is re-routed before it fails with `ServiceUnavailable`.
const MAX_ATTEMPTS: u32 = 60;

/// How long a node waits for its meta replica to catch up with a forwarded call's (or a
/// forwarded write's) meta index.
const META_CATCH_UP: Duration = Duration::from_secs(5);

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((25 * u64::from(attempt + 1)).min(200))
}

type Served<'a, T> = Pin<Box<dyn Future<Output = ApiResult<T>> + Send + 'a>>;

/// A request that another node can serve for this one.
pub(crate) trait Forward: Message + Clone + Send + Sync + Sized + 'static {
    /// What the call answers.
    type Reply: Message + Default;
    /// The request as a forwarded call.
    fn into_call(self) -> Call;
    /// Serves the request on this node (the shard's leader, the meta leader, or the node
    /// whose part of a fan-out is asked for). Never forwards.
    fn serve(self, node: &Node) -> Served<'_, Self::Reply>;
}

/// The forwarded calls: request type, `Call` variant, reply type, and the local handler.
macro_rules! calls {
    ($($req:ty => $variant:ident: $reply:ty = |$node:ident, $r:ident| $body:expr;)*) => {
        $(
            impl Forward for $req {
                type Reply = $reply;
                fn into_call(self) -> Call {
                    Call::$variant(self)
                }
                fn serve(self, $node: &Node) -> Served<'_, $reply> {
                    let $r = self;
                    Box::pin(async move { $body })
                }
            }
        )*

        /// Serves a forwarded call with its handler and encodes the reply.
        async fn dispatch(node: &Node, call: Call) -> ApiResult<Vec<u8>> {
            match call {
                $(Call::$variant(r) => r.serve(node).await.map(|m| m.encode_to_vec()),)*
            }
        }
    };
}

fn empty(r: ApiResult<()>) -> ApiResult<pb::Empty> {
    r.map(|()| pb::Empty {})
}

calls! {
    // Meta writes, on the meta leader.
    pb::CreateStateMachineRequest => CreateStateMachine: pb::CreateStateMachineResponse =
        |n, r| n.registry().create_state_machine(r).await;
    pb::UpdateStateMachineRequest => UpdateStateMachine: pb::UpdateStateMachineResponse =
        |n, r| n.registry().update_state_machine(r).await;
    pb::DeleteStateMachineRequest => DeleteStateMachine: pb::Empty =
        |n, r| empty(n.registry().delete_state_machine(&r.state_machine_arn).await);
    pb::PublishVersionRequest => PublishVersion: pb::PublishVersionResponse =
        |n, r| n.registry().publish_version(r).await;
    pb::DeleteVersionRequest => DeleteVersion: pb::Empty =
        |n, r| empty(n.registry().delete_version(&r.state_machine_version_arn).await);
    pb::CreateAliasRequest => CreateAlias: pb::CreateAliasResponse =
        |n, r| n.registry().create_alias(r).await;
    pb::UpdateAliasRequest => UpdateAlias: pb::UpdateAliasResponse =
        |n, r| n.registry().update_alias(r).await;
    pb::DeleteAliasRequest => DeleteAlias: pb::Empty =
        |n, r| empty(n.registry().delete_alias(&r.state_machine_alias_arn).await);
    pb::CreateActivityRequest => CreateActivity: pb::CreateActivityResponse =
        |n, r| n.registry().create_activity(&r.name).await;
    pb::DeleteActivityRequest => DeleteActivity: pb::Empty =
        |n, r| empty(n.registry().delete_activity(&r.activity_arn).await);
    // Answers with the meta leader's applied index, in the reply envelope.
    rpb::MetaIndexRequest => MetaIndexRequest: pb::Empty = |_n, _r| Ok(pb::Empty {});
    rpb::SetNodeStateRequest => SetNodeState: pb::Empty = |n, r| {
        let state = match rpb::NodeStateChange::try_from(r.state) {
            Ok(rpb::NodeStateChange::Draining) => NodeState::Draining,
            Ok(rpb::NodeStateChange::Removed) => NodeState::Removed,
            Err(_) => {
                return Err(ApiError::new(
                    Code::ValidationException,
                    format!("unknown node state {}", r.state),
                ))
            }
        };
        empty(n.set_node_state_here(r.node_id, state).await)
    };
    pb::MoveShardRequest => MoveShard: pb::Empty = |n, r| empty(n.move_shard_here(r).await);
    pb::TransferShardLeaderRequest => TransferShardLeader: pb::Empty =
        |n, r| empty(n.transfer_shard_leader_here(r).await);
    rpb::RebalanceRequest => Rebalance: pb::RebalanceResponse = |n, _r| {
        let me = n
            .arc()
            .ok_or_else(|| ApiError::new(Code::ServiceUnavailable, "the node is stopping"))?;
        me.rebalance_here().await
    };
    pb::SetPlacementRequest => SetPlacement: pb::Empty =
        |n, r| empty(n.set_placement_paused_here(r.paused).await);
    rpb::AdmissionKick => AdmissionKick: pb::Empty = |n, r| empty(n.admission_kick_here(r).await);

    // Shard-bound calls, on the shard's leader.
    rpb::StartResolved => StartExecution: pb::StartExecutionResponse =
        |n, r| n.start_resolved_here(r).await;
    pb::DescribeExecutionRequest => DescribeExecution: pb::Execution =
        |n, r| n.describe_execution_here(&r.execution_arn);
    pb::StopExecutionRequest => StopExecution: pb::StopExecutionResponse =
        |n, r| n.stop_execution_here(r).await;
    pb::RedriveExecutionRequest => RedriveExecution: pb::RedriveExecutionResponse =
        |n, r| n.redrive_execution_here(&r.execution_arn).await;
    pb::PauseExecutionRequest => PauseExecution: pb::Empty =
        |n, r| empty(n.pause_execution_here(&r.execution_arn, true).await);
    pb::ResumeExecutionRequest => ResumeExecution: pb::Empty =
        |n, r| empty(n.pause_execution_here(&r.execution_arn, false).await);
    pb::GetExecutionHistoryRequest => GetExecutionHistory: pb::GetExecutionHistoryResponse =
        |n, r| n.get_execution_history_here(&r);
    pb::SendTaskSuccessRequest => SendTaskSuccess: pb::Empty =
        |n, r| empty(n.send_task_success_here(&r.task_token, &r.output).await);
    pb::SendTaskFailureRequest => SendTaskFailure: pb::Empty =
        |n, r| empty(n.send_task_failure_here(&r.task_token, &r.error, &r.cause).await);
    pb::SendTaskHeartbeatRequest => SendTaskHeartbeat: pb::Empty =
        |n, r| empty(n.send_task_heartbeat_here(&r.task_token).await);
    rpb::AdmitRequest => Admit: pb::Empty = |n, r| empty(n.admit_here(&r.execution_arn).await);
    rpb::ShardControl => ShardControl: rpb::ShardControlReply =
        |n, r| n.shard_control_here(r).await;

    // The receiving node's part of a fan-out.
    pb::ListExecutionsRequest => ListExecutions: pb::ListExecutionsResponse =
        |n, r| n.list_executions_here(&r);
    pb::GetActivityTaskRequest => PollActivityTask: pb::ActivityTask =
        |n, r| n.poll_activity_here(&r.activity_arn, &r.worker_name).await;
    rpb::DoctorRequest => Doctor: pb::DoctorReport = |n, _r| n.doctor_here().await;
    rpb::AdmissionReportRequest => AdmissionReport: rpb::AdmissionReport =
        |n, _r| Ok(n.admission_report_here().await);
    rpb::LocalShardsRequest => LocalShards: pb::ListShardsResponse =
        |n, r| Ok(n.local_shards(r.count_live));
}

impl Node {
    /// Runs a call on the node that leads `shard`: here, or forwarded.
    pub(crate) async fn on_shard<Req: Forward>(
        &self,
        shard: u32,
        req: Req,
    ) -> ApiResult<Req::Reply> {
        let me = self.id();
        let mut hint: Option<u64> = None;
        let mut last: Option<ApiError> = None;
        let mut failed: Vec<u64> = Vec::new();
        for attempt in 0..MAX_ATTEMPTS {
            if failed.len() > 8 {
                // Everyone was tried: start over (leaders are being elected).
                failed.clear();
            }
            let target = hint
                .take()
                .or_else(|| self.leader_guess(shard, attempt, &failed));
            match target {
                None => {}
                Some(t) if t == me => match req.clone().serve(self).await {
                    Err(e) if e.code == Code::NotLeader => {
                        hint = e.leader_hint.filter(|h| *h != me && !failed.contains(h));
                        failed.push(me);
                        last = Some(e);
                    }
                    r => return r,
                },
                Some(t) => match self.forward(t, req.clone()).await {
                    Err(e) if e.code == Code::NotLeader => {
                        self.forget_leader(shard, t);
                        failed.push(t);
                        hint = e.leader_hint.filter(|h| *h != t && !failed.contains(h));
                        last = Some(e);
                    }
                    Err(e) if e.code == Code::ServiceUnavailable => {
                        self.forget_leader(shard, t);
                        failed.push(t);
                        last = Some(e);
                    }
                    Ok(r) => {
                        self.remember_leader(shard, t);
                        return Ok(r);
                    }
                    Err(e) => return Err(e),
                },
            }
            if hint.is_none() {
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
        Err(ApiError::new(
            Code::ServiceUnavailable,
            format!(
                "shard {shard} has no reachable leader; retry ({})",
                last.map(|e| e.to_string()).unwrap_or_default()
            ),
        ))
    }

    /// Runs a meta write on the meta leader, then waits until this node has applied it.
    pub(crate) async fn on_meta<Req: Forward>(&self, req: Req) -> ApiResult<Req::Reply> {
        let me = self.id();
        let mut last: Option<ApiError> = None;
        for attempt in 0..MAX_ATTEMPTS {
            match self.meta.leader() {
                None => {}
                Some(l) if l == me => match req.clone().serve(self).await {
                    Err(e) if e.code == Code::NotLeader => last = Some(e),
                    r => return r,
                },
                Some(l) => match self.forward_raw(l, req.clone().into_call()).await {
                    Ok(reply) => {
                        self.catch_up_meta(reply.meta_applied).await;
                        return decode_reply::<Req>(&reply.payload);
                    }
                    Err(e) if matches!(e.code, Code::NotLeader | Code::ServiceUnavailable) => {
                        last = Some(e)
                    }
                    Err(e) => return Err(e),
                },
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
        Err(ApiError::new(
            Code::ServiceUnavailable,
            format!(
                "the meta group has no reachable leader; retry ({})",
                last.map(|e| e.to_string()).unwrap_or_default()
            ),
        ))
    }

    /// Waits until this node's meta replica has applied `index` (a forwarded write's), so
    /// the client reads its write back through this node. The write itself succeeded, so
    /// the reply goes out either way; a replica that cannot catch up in time is logged, and
    /// a later read that misses catches up with the leader first (`Node::meta_read`).
    async fn catch_up_meta(&self, index: u64) {
        if self.meta.wait_for(index, META_CATCH_UP).await.is_err() {
            tracing::warn!(
                node_id = self.id(),
                wanted = index,
                applied = self.meta.applied(),
                "this node's meta replica did not catch up with a forwarded write in time"
            );
        }
    }

    /// Sends a call to node `to` and decodes its reply.
    pub(crate) async fn forward<Req: Forward>(&self, to: u64, req: Req) -> ApiResult<Req::Reply> {
        let reply = self.forward_raw(to, req.into_call()).await?;
        decode_reply::<Req>(&reply.payload)
    }

    async fn forward_raw(&self, to: u64, call: Call) -> ApiResult<rpb::ForwardReply> {
        let mut client = self.peer_client(to)?;
        let call = client.forward(rpb::ForwardRequest {
            meta_index: self.meta.applied(),
            call: Some(call),
        });
        match call.await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => {
                let e = ApiError::from_status(&s);
                if e.code == Code::InternalFailure && s.details().is_empty() {
                    // A transport failure, not an answer: try elsewhere.
                    return Err(ApiError::new(
                        Code::ServiceUnavailable,
                        format!("node {to} is unreachable: {}", s.message()),
                    ));
                }
                Err(e)
            }
        }
    }

    /// Serves a call another node forwarded here, with the handler its variant names.
    pub(crate) async fn serve_forward(&self, r: rpb::ForwardRequest) -> ApiResult<Vec<u8>> {
        // Reads on this node must see what the caller's node had applied.
        if r.meta_index > self.meta.applied()
            && self
                .meta
                .wait_for(r.meta_index, META_CATCH_UP)
                .await
                .is_err()
        {
            return Err(ApiError::new(
                Code::ServiceUnavailable,
                format!(
                    "node {} has not applied meta index {} yet; retry",
                    self.id(),
                    r.meta_index
                ),
            ));
        }
        let call = r.call.ok_or_else(|| {
            ApiError::new(
                Code::UnknownOperationException,
                "a forwarded call without a request (a peer of another version?)",
            )
        })?;
        dispatch(self, call).await
    }
}

fn decode_reply<Req: Forward>(payload: &[u8]) -> ApiResult<Req::Reply> {
    Req::Reply::decode(payload)
        .map_err(|e| ApiError::new(Code::InternalFailure, format!("bad forwarded reply: {e}")))
}
