//! Routing: any node accepts any request and runs it where it can be served.
//!
//! * Shard-bound calls (an execution, a task token) run on the shard's leader. The entry
//!   node guesses the leader (its own replica's view, then a cache, then the shard map's
//!   replicas), forwards the call with `Forward`, and follows `NotLeader` hints, with bounded
//!   retries while a shard elects a leader.
//! * Meta writes run on the meta leader. The reply carries the leader's applied meta index
//!   and the entry node waits for its own replica to reach it, so a client that writes
//!   through one node reads its write back through the same node.
//! * A forwarded call is served where it lands or answered with `NotLeader`; it is never
//!   forwarded again, so a stale hint costs one more hop, never a loop.

use std::time::Duration;

use prost::Message;
use trellis_proto::error::{ApiError, Code};
use trellis_proto::raft as rpb;
use trellis_proto::v1 as pb;

use crate::node::{ApiResult, Node};

tokio::task_local! {
    static FORWARDED: bool;
}

/// Whether the running call was forwarded here by another node.
pub(crate) fn forwarded() -> bool {
    FORWARDED.try_with(|f| *f).unwrap_or(false)
}

/// How many times a call is re-routed before it fails with `ServiceUnavailable`.
const MAX_ATTEMPTS: u32 = 60;

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((25 * u64::from(attempt + 1)).min(200))
}

fn bad_request(e: prost::DecodeError) -> ApiError {
    ApiError::new(
        Code::SerializationException,
        format!("cannot decode a forwarded request: {e}"),
    )
}

impl Node {
    /// Runs a call on the node that leads `shard`: here, or forwarded.
    pub(crate) async fn on_shard<Req, Resp, Fut>(
        &self,
        shard: u32,
        op: &'static str,
        req: Req,
        here: impl Fn(Req) -> Fut,
    ) -> ApiResult<Resp>
    where
        Req: Message + Clone,
        Resp: Message + Default,
        Fut: std::future::Future<Output = ApiResult<Resp>>,
    {
        if forwarded() {
            return here(req).await;
        }
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
                Some(t) if t == me => match here(req.clone()).await {
                    Err(e) if e.code == Code::NotLeader => {
                        hint = e.leader_hint.filter(|h| *h != me && !failed.contains(h));
                        failed.push(me);
                        last = Some(e);
                    }
                    r => return r,
                },
                Some(t) => match self.forward::<Req, Resp>(t, op, &req).await {
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
    pub(crate) async fn on_meta<Req, Resp, Fut>(
        &self,
        op: &'static str,
        req: Req,
        here: impl Fn(Req) -> Fut,
    ) -> ApiResult<Resp>
    where
        Req: Message + Clone,
        Resp: Message + Default,
        Fut: std::future::Future<Output = ApiResult<Resp>>,
    {
        if forwarded() {
            return here(req).await;
        }
        let me = self.id();
        let mut last: Option<ApiError> = None;
        for attempt in 0..MAX_ATTEMPTS {
            match self.meta.leader() {
                None => {}
                Some(l) if l == me => match here(req.clone()).await {
                    Err(e) if e.code == Code::NotLeader => last = Some(e),
                    r => return r,
                },
                Some(l) => match self.forward_raw(l, op, req.encode_to_vec()).await {
                    Ok(reply) => {
                        let _ = self
                            .meta
                            .wait_for(reply.meta_applied, Duration::from_secs(5))
                            .await;
                        return Resp::decode(reply.payload.as_slice()).map_err(|e| {
                            ApiError::new(
                                Code::InternalFailure,
                                format!("bad forwarded reply: {e}"),
                            )
                        });
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

    /// Sends a call to node `to` and decodes its reply.
    pub(crate) async fn forward<Req: Message, Resp: Message + Default>(
        &self,
        to: u64,
        op: &'static str,
        req: &Req,
    ) -> ApiResult<Resp> {
        let reply = self.forward_raw(to, op, req.encode_to_vec()).await?;
        Resp::decode(reply.payload.as_slice())
            .map_err(|e| ApiError::new(Code::InternalFailure, format!("bad forwarded reply: {e}")))
    }

    async fn forward_raw(
        &self,
        to: u64,
        op: &'static str,
        payload: Vec<u8>,
    ) -> ApiResult<rpb::ForwardReply> {
        let mut client = self.peer_client(to)?;
        let call = client.forward(rpb::ForwardRequest {
            op: op.to_string(),
            payload,
            meta_index: self.meta.applied(),
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

    /// Serves a call another node forwarded here.
    pub(crate) async fn serve_forward(&self, r: rpb::ForwardRequest) -> ApiResult<Vec<u8>> {
        // Reads on this node must see what the caller's node had applied.
        if r.meta_index > self.meta.applied() {
            let _ = self
                .meta
                .wait_for(r.meta_index, Duration::from_secs(5))
                .await;
        }
        FORWARDED.scope(true, self.dispatch(r.op, r.payload)).await
    }

    async fn dispatch(&self, op: String, payload: Vec<u8>) -> ApiResult<Vec<u8>> {
        macro_rules! call {
            ($req:ty, $r:ident => $body:expr) => {{
                let $r = <$req>::decode(payload.as_slice()).map_err(bad_request)?;
                Ok($body.await?.encode_to_vec())
            }};
        }
        let empty = |r: ApiResult<()>| r.map(|()| pb::Empty {});
        match op.as_str() {
            "CreateStateMachine" => {
                call!(pb::CreateStateMachineRequest, r => self.create_state_machine(r))
            }
            "UpdateStateMachine" => {
                call!(pb::UpdateStateMachineRequest, r => self.update_state_machine(r))
            }
            "DeleteStateMachine" => call!(pb::DeleteStateMachineRequest, r => async {
                empty(self.delete_state_machine(&r.state_machine_arn).await)
            }),
            "PublishStateMachineVersion" => {
                call!(pb::PublishVersionRequest, r => self.publish_version(r))
            }
            "DeleteStateMachineVersion" => call!(pb::DeleteVersionRequest, r => async {
                empty(self.delete_version(&r.state_machine_version_arn).await)
            }),
            "CreateStateMachineAlias" => call!(pb::CreateAliasRequest, r => self.create_alias(r)),
            "UpdateStateMachineAlias" => call!(pb::UpdateAliasRequest, r => self.update_alias(r)),
            "DeleteStateMachineAlias" => call!(pb::DeleteAliasRequest, r => async {
                empty(self.delete_alias(&r.state_machine_alias_arn).await)
            }),
            "CreateActivity" => {
                call!(pb::CreateActivityRequest, r => self.create_activity(&r.name))
            }
            "DeleteActivity" => call!(pb::DeleteActivityRequest, r => async {
                empty(self.delete_activity(&r.activity_arn).await)
            }),
            "StartExecution" => call!(pb::StartExecutionRequest, r => self.start_execution(r)),
            "DescribeExecution" => {
                call!(pb::DescribeExecutionRequest, r => self.describe_execution(&r.execution_arn))
            }
            "StopExecution" => call!(pb::StopExecutionRequest, r => self.stop_execution(r)),
            "RedriveExecution" => {
                call!(pb::RedriveExecutionRequest, r => self.redrive_execution(&r.execution_arn))
            }
            "PauseExecution" => call!(pb::PauseExecutionRequest, r => async {
                empty(self.pause_execution(&r.execution_arn, true).await)
            }),
            "ResumeExecution" => call!(pb::ResumeExecutionRequest, r => async {
                empty(self.pause_execution(&r.execution_arn, false).await)
            }),
            "GetExecutionHistory" => {
                call!(pb::GetExecutionHistoryRequest, r => self.get_execution_history(r))
            }
            "ListExecutions" => call!(pb::ListExecutionsRequest, r => self.list_executions(r)),
            "SendTaskSuccess" => call!(pb::SendTaskSuccessRequest, r => async {
                empty(self.send_task_success(&r.task_token, &r.output).await)
            }),
            "SendTaskFailure" => call!(pb::SendTaskFailureRequest, r => async {
                empty(self.send_task_failure(&r.task_token, &r.error, &r.cause).await)
            }),
            "SendTaskHeartbeat" => call!(pb::SendTaskHeartbeatRequest, r => async {
                empty(self.send_task_heartbeat(&r.task_token).await)
            }),
            "GetActivityTask" => call!(pb::GetActivityTaskRequest, r => self.get_activity_task(
                &r.activity_arn,
                &r.worker_name,
                Duration::ZERO
            )),
            "Doctor" => call!(pb::Empty, _r => self.doctor()),
            // Answers with the meta leader's applied index (in the reply envelope).
            "MetaIndex" => call!(pb::Empty, _r => async { Ok::<_, ApiError>(pb::Empty {}) }),
            "ShardControl" => call!(rpb::ShardControl, r => self.shard_control(r)),
            "ShardControlHere" => call!(rpb::ShardControl, r => self.shard_control_here(r)),
            "DrainNode" => call!(pb::NodeRequest, r => async {
                empty(self.drain_node(r.node_id).await)
            }),
            "RemoveNode" => call!(pb::NodeRequest, r => async {
                empty(self.remove_node(r.node_id).await)
            }),
            "MoveShard" => call!(pb::MoveShardRequest, r => async {
                empty(self.move_shard(r).await)
            }),
            "TransferShardLeader" => call!(pb::TransferShardLeaderRequest, r => async {
                empty(self.transfer_shard_leader(r).await)
            }),
            "Rebalance" => call!(pb::Empty, _r => self.rebalance()),
            "SetPlacement" => call!(pb::SetPlacementRequest, r => async {
                empty(self.set_placement(r.paused).await)
            }),
            "AdmissionReport" => {
                call!(pb::Empty, _r => async { Ok::<_, ApiError>(self.admission_report_here().await) })
            }
            "AdmissionKick" => call!(rpb::AdmissionKick, r => async {
                self.admission_kick_here(r).await.map(|()| pb::Empty {})
            }),
            "AdmitExecution" => call!(pb::DescribeExecutionRequest, r => async {
                self.admit_here(&r.execution_arn).await.map(|()| pb::Empty {})
            }),
            "ListShards" => {
                call!(pb::Empty, _r => async { Ok::<_, ApiError>(self.local_shards(true)) })
            }
            "ShardLeaders" => {
                call!(pb::Empty, _r => async { Ok::<_, ApiError>(self.local_shards(false)) })
            }
            _ => Err(ApiError::new(
                Code::UnknownOperationException,
                format!("cannot forward '{op}'"),
            )),
        }
    }
}
