//! Activities and task tokens: workers poll for activity tasks (every shard, long-polled),
//! and answer task tokens (on the token's shard's leader).

use std::time::Duration;

use serde_json::Value;
use trellis_cluster::from_shard;
use trellis_proto::v1 as pb;
use trellis_proto::{ApiError, Code};
use trellis_shard::executor::{BoxFuture, TokenAnswer};
use trellis_shard::token;

use super::{non_empty, ApiResult, Node, MAX_PAYLOAD};
use crate::nested::ExecutionStarter;

impl Node {
    /// The shard a task token names, after checking the token.
    fn token_shard(&self, token: &str) -> ApiResult<u32> {
        let bad = || ApiError::new(Code::InvalidToken, format!("Invalid Token: '{token}'"));
        if token.is_empty() || token.len() > 2048 {
            return Err(bad());
        }
        let (shard, _, _) = token::route(token).ok_or_else(bad)?;
        if shard >= self.shard_count() {
            return Err(bad());
        }
        Ok(shard)
    }

    /// `request_id` names the call (0: this node names it), so that the router's attempts
    /// after a lost reply, or the client's own with the same id, find the answer taken.
    pub async fn send_task_success(
        &self,
        token: &str,
        output: &str,
        request_id: u64,
    ) -> ApiResult<()> {
        let shard = self.token_shard(token)?;
        let r = pb::SendTaskSuccessRequest {
            task_token: token.to_string(),
            output: output.to_string(),
            request_id: named(request_id),
        };
        self.cluster.router().on_shard(shard, r).await.map(drop)
    }

    pub async fn send_task_failure(
        &self,
        token: &str,
        error: &str,
        cause: &str,
        request_id: u64,
    ) -> ApiResult<()> {
        let shard = self.token_shard(token)?;
        let r = pb::SendTaskFailureRequest {
            task_token: token.to_string(),
            error: error.to_string(),
            cause: cause.to_string(),
            request_id: named(request_id),
        };
        self.cluster.router().on_shard(shard, r).await.map(drop)
    }

    pub async fn send_task_heartbeat(&self, token: &str) -> ApiResult<()> {
        let shard = self.token_shard(token)?;
        let r = pb::SendTaskHeartbeatRequest {
            task_token: token.to_string(),
        };
        self.cluster.router().on_shard(shard, r).await.map(drop)
    }

    /// Long-polls every shard for a task of the activity, up to `wait`: the shards this node
    /// leads as their tasks are queued, the other nodes' shards every 200 ms.
    pub async fn get_activity_task(
        &self,
        arn: &str,
        worker: &str,
        wait: Duration,
    ) -> ApiResult<pb::ActivityTask> {
        let router = self.cluster.router();
        router.meta_read(|| self.registry.activity(arn)).await?;
        let deadline = tokio::time::Instant::now() + wait;
        let req = pb::GetActivityTaskRequest {
            activity_arn: arn.to_string(),
            worker_name: worker.to_string(),
        };
        loop {
            // Register interest before looking, so a task queued meanwhile wakes us.
            let queued: Vec<_> = self
                .cluster
                .shards()
                .led()
                .into_iter()
                .map(|(_, h)| h.activities.clone())
                .collect();
            let waits: Vec<_> = queued
                .iter()
                .map(|b| Box::pin(b.queued.notified()))
                .collect();
            let here = self.poll_activity_here(arn, worker).await?;
            if !here.task_token.is_empty() {
                return Ok(here);
            }
            let others = self.cluster.core().other_nodes();
            for n in others.iter() {
                if let Ok(t) = router.forward(*n, req.clone()).await {
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

    /// One look for a task of the activity on the shards this node leads (an empty task
    /// when there is none). Only shards with tasks queued are asked.
    pub(crate) async fn poll_activity_here(
        &self,
        arn: &str,
        worker: &str,
    ) -> ApiResult<pb::ActivityTask> {
        let led: Vec<_> = self
            .cluster
            .shards()
            .led()
            .into_iter()
            .map(|(_, h)| h)
            .filter(|h| h.activities.any())
            .collect();
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

    async fn answer_here(
        &self,
        token: &str,
        answer: TokenAnswer,
        request_id: u64,
    ) -> ApiResult<()> {
        let shard = self.token_shard(token)?;
        self.cluster
            .shards()
            .leading(shard)?
            .answer(token, answer, request_id)
            .await
            .map_err(from_shard)
    }

    pub(crate) async fn send_task_success_here(
        &self,
        token: &str,
        output: &str,
        request_id: u64,
    ) -> ApiResult<()> {
        if output.len() > MAX_PAYLOAD {
            return Err(ApiError::new(Code::ValidationException, format!("1 validation error detected: Value at 'output' failed to satisfy constraint: Member must have length less than or equal to {MAX_PAYLOAD}")));
        }
        let v: Value = serde_json::from_str(output)
            .map_err(|e| ApiError::new(Code::InvalidOutput, format!("Invalid Output: '{e}'")))?;
        self.answer_here(token, TokenAnswer::Success(v), request_id)
            .await
    }

    pub(crate) async fn send_task_failure_here(
        &self,
        token: &str,
        error: &str,
        cause: &str,
        request_id: u64,
    ) -> ApiResult<()> {
        self.answer_here(
            token,
            TokenAnswer::Failure {
                error: non_empty(error.to_string()),
                cause: non_empty(cause.to_string()),
            },
            request_id,
        )
        .await
    }

    pub(crate) async fn send_task_heartbeat_here(&self, token: &str) -> ApiResult<()> {
        self.answer_here(token, TokenAnswer::Heartbeat, 0).await
    }
}

/// A call's name: the one given, or a random one (never 0).
fn named(request_id: u64) -> u64 {
    if request_id != 0 {
        request_id
    } else {
        rand::random::<u64>().max(1)
    }
}

/// The node as the starter of nested executions (`states:startExecution` tasks).
impl ExecutionStarter for Node {
    fn start(
        &self,
        r: pb::StartExecutionRequest,
    ) -> BoxFuture<'_, Result<pb::StartExecutionResponse, ApiError>> {
        Box::pin(self.start_execution(r))
    }

    fn start_sync(
        &self,
        r: pb::StartExecutionRequest,
    ) -> BoxFuture<'_, Result<pb::SyncExecutionResult, ApiError>> {
        Box::pin(self.start_sync_execution(r))
    }

    fn describe<'a>(
        &'a self,
        execution_arn: &'a str,
    ) -> BoxFuture<'a, Result<pb::Execution, ApiError>> {
        Box::pin(self.describe_execution(execution_arn))
    }

    fn is_express(&self, state_machine_arn: &str) -> bool {
        self.describe_state_machine(state_machine_arn)
            .is_ok_and(|m| m.r#type == pb::StateMachineType::Express as i32)
    }
}
