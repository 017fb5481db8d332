//! Map Runs: `DescribeMapRun` looks for the run among the executions of every node's shards;
//! `ListMapRuns` reads the parent execution's record, on its shard's leader.

use trellis_cluster::from_shard;
use trellis_proto::v1 as pb;
use trellis_proto::{ApiError, Code};

use super::convert::map_run_pb;
use super::{ApiResult, Node};
use crate::registry::{page_offset, page_size};

impl Node {
    /// A Map Run among the executions of the shards this node leads; an empty `MapRun`
    /// when none of them started it.
    pub(crate) fn find_map_run_here(&self, arn: &str) -> ApiResult<pb::MapRun> {
        for rep in self.cluster.shards().replicas() {
            if rep.handle().is_none() {
                continue;
            }
            let mut after: Option<String> = None;
            loop {
                let batch = rep.app.scan(after.as_deref(), 1024).map_err(from_shard)?;
                let Some(last) = batch.last() else { break };
                after = Some(last.arn.clone());
                for rec in &batch {
                    if let Some(r) = rec.map_runs.iter().find(|r| r.map_run_arn == arn) {
                        return Ok(map_run_pb(r, &rec.arn));
                    }
                }
            }
        }
        Ok(pb::MapRun::default())
    }

    /// `DescribeMapRun`: asks every node (no index of Map Runs yet: each scans the records
    /// of the shards it leads).
    pub async fn describe_map_run(&self, arn: &str) -> ApiResult<pb::MapRun> {
        if !arn.contains(":mapRun:") {
            return Err(ApiError::new(
                Code::InvalidArn,
                format!("Invalid Arn: '{arn}'"),
            ));
        }
        let r = pb::DescribeMapRunRequest {
            map_run_arn: arn.to_string(),
        };
        let mut unanswered = None;
        for (_, part) in self.cluster.router().fan_out(r, None).await {
            match part {
                Ok(m) if !m.map_run_arn.is_empty() => return Ok(m),
                Ok(_) => {}
                Err(e) => unanswered = Some(e),
            }
        }
        // Not found where every node answered; a node that did not answer may hold it.
        Err(unanswered.unwrap_or_else(|| {
            ApiError::new(
                Code::ResourceNotFound,
                format!("Map Run Does Not Exist: '{arn}'"),
            )
        }))
    }

    /// `UpdateMapRun`: checks the values, finds the execution that started the run, and
    /// feeds it the update on its shard's leader. The request's `execution_arn` is always
    /// the resolved one: whatever a client put there is replaced.
    pub async fn update_map_run(&self, mut r: pb::UpdateMapRunRequest) -> ApiResult<()> {
        let invalid = |m: String| Err(ApiError::new(Code::ValidationException, m));
        if r.max_concurrency.is_none()
            && r.tolerated_failure_count.is_none()
            && r.tolerated_failure_percentage.is_none()
        {
            return invalid("At least one of maxConcurrency, toleratedFailureCount and toleratedFailurePercentage must be given".into());
        }
        if let Some(p) = r.tolerated_failure_percentage {
            if !(0.0..=100.0).contains(&p) {
                return invalid(format!("1 validation error detected: Value '{p}' at 'toleratedFailurePercentage' failed to satisfy constraint: Member must have value between 0 and 100"));
            }
        }
        let m = self.describe_map_run(&r.map_run_arn).await?;
        if m.status != "RUNNING" {
            return invalid(format!(
                "Map Run '{}' is {}, not RUNNING",
                r.map_run_arn, m.status
            ));
        }
        r.execution_arn = m.execution_arn;
        let shard = self.execution_shard(&r.execution_arn)?;
        self.cluster.router().on_shard(shard, r).await.map(drop)
    }

    /// `UpdateMapRun` on the shard leader of the execution that started the run.
    pub(crate) async fn update_map_run_here(
        &self,
        r: pb::UpdateMapRunRequest,
    ) -> ApiResult<pb::Empty> {
        self.cluster
            .shards()
            .local(&r.execution_arn)?
            .update_map_run(
                &r.execution_arn,
                &r.map_run_arn,
                r.max_concurrency,
                r.tolerated_failure_count,
                r.tolerated_failure_percentage,
            )
            .await
            .map_err(from_shard)?;
        Ok(pb::Empty {})
    }

    /// `ListMapRuns`: the Map Runs an execution started, in start order, paged.
    pub async fn list_map_runs(
        &self,
        r: pb::ListMapRunsRequest,
    ) -> ApiResult<pb::ListMapRunsResponse> {
        let max = page_size(r.max_results)?;
        let offset = page_offset(&r.next_token)?;
        let e = self.describe_execution(&r.execution_arn).await?;
        let end = (offset + max).min(e.map_runs.len());
        let map_runs = e.map_runs.get(offset..end).unwrap_or_default().to_vec();
        let next_token = if end < e.map_runs.len() {
            end.to_string()
        } else {
            String::new()
        };
        Ok(pb::ListMapRunsResponse {
            map_runs,
            next_token,
        })
    }
}
