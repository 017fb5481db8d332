//! The registry's writes (run on the meta leader), and the node as the API layer of its
//! cluster: the calls the router runs here, whether this node took them or another node
//! forwarded them (`trellis_cluster::Api`).

use trellis_cluster::{Api, Served};
use trellis_proto::raft as rpb;
use trellis_proto::v1 as pb;

use super::{ApiResult, Node};

fn empty(r: ApiResult<()>) -> ApiResult<pb::Empty> {
    r.map(|()| pb::Empty {})
}

impl Node {
    pub async fn create_state_machine(
        &self,
        r: pb::CreateStateMachineRequest,
    ) -> ApiResult<pb::CreateStateMachineResponse> {
        self.cluster.router().on_meta(r).await
    }

    pub async fn update_state_machine(
        &self,
        r: pb::UpdateStateMachineRequest,
    ) -> ApiResult<pb::UpdateStateMachineResponse> {
        self.cluster.router().on_meta(r).await
    }

    pub async fn delete_state_machine(&self, arn: &str) -> ApiResult<()> {
        let r = pb::DeleteStateMachineRequest {
            state_machine_arn: arn.to_string(),
        };
        self.cluster.router().on_meta(r).await.map(drop)
    }

    pub async fn publish_version(
        &self,
        r: pb::PublishVersionRequest,
    ) -> ApiResult<pb::PublishVersionResponse> {
        self.cluster.router().on_meta(r).await
    }

    pub async fn delete_version(&self, arn: &str) -> ApiResult<()> {
        let r = pb::DeleteVersionRequest {
            state_machine_version_arn: arn.to_string(),
        };
        self.cluster.router().on_meta(r).await.map(drop)
    }

    pub async fn create_alias(
        &self,
        r: pb::CreateAliasRequest,
    ) -> ApiResult<pb::CreateAliasResponse> {
        self.cluster.router().on_meta(r).await
    }

    pub async fn update_alias(
        &self,
        r: pb::UpdateAliasRequest,
    ) -> ApiResult<pb::UpdateAliasResponse> {
        self.cluster.router().on_meta(r).await
    }

    pub async fn delete_alias(&self, arn: &str) -> ApiResult<()> {
        let r = pb::DeleteAliasRequest {
            state_machine_alias_arn: arn.to_string(),
        };
        self.cluster.router().on_meta(r).await.map(drop)
    }

    pub async fn create_activity(&self, name: &str) -> ApiResult<pb::CreateActivityResponse> {
        let r = pb::CreateActivityRequest {
            name: name.to_string(),
        };
        self.cluster.router().on_meta(r).await
    }

    pub async fn delete_activity(&self, arn: &str) -> ApiResult<()> {
        let r = pb::DeleteActivityRequest {
            activity_arn: arn.to_string(),
        };
        self.cluster.router().on_meta(r).await.map(drop)
    }
}

/// Each call served here, by the handler that does the work on this node.
impl Api for Node {
    fn create_state_machine(
        &self,
        r: pb::CreateStateMachineRequest,
    ) -> Served<'_, pb::CreateStateMachineResponse> {
        Box::pin(self.registry.create_state_machine(r))
    }

    fn update_state_machine(
        &self,
        r: pb::UpdateStateMachineRequest,
    ) -> Served<'_, pb::UpdateStateMachineResponse> {
        Box::pin(self.registry.update_state_machine(r))
    }

    fn delete_state_machine(&self, r: pb::DeleteStateMachineRequest) -> Served<'_, pb::Empty> {
        Box::pin(async move {
            empty(
                self.registry
                    .delete_state_machine(&r.state_machine_arn)
                    .await,
            )
        })
    }

    fn publish_version(
        &self,
        r: pb::PublishVersionRequest,
    ) -> Served<'_, pb::PublishVersionResponse> {
        Box::pin(self.registry.publish_version(r))
    }

    fn delete_version(&self, r: pb::DeleteVersionRequest) -> Served<'_, pb::Empty> {
        Box::pin(async move {
            empty(
                self.registry
                    .delete_version(&r.state_machine_version_arn)
                    .await,
            )
        })
    }

    fn create_alias(&self, r: pb::CreateAliasRequest) -> Served<'_, pb::CreateAliasResponse> {
        Box::pin(self.registry.create_alias(r))
    }

    fn update_alias(&self, r: pb::UpdateAliasRequest) -> Served<'_, pb::UpdateAliasResponse> {
        Box::pin(self.registry.update_alias(r))
    }

    fn delete_alias(&self, r: pb::DeleteAliasRequest) -> Served<'_, pb::Empty> {
        Box::pin(async move { empty(self.registry.delete_alias(&r.state_machine_alias_arn).await) })
    }

    fn create_activity(
        &self,
        r: pb::CreateActivityRequest,
    ) -> Served<'_, pb::CreateActivityResponse> {
        Box::pin(async move { self.registry.create_activity(&r.name).await })
    }

    fn delete_activity(&self, r: pb::DeleteActivityRequest) -> Served<'_, pb::Empty> {
        Box::pin(async move { empty(self.registry.delete_activity(&r.activity_arn).await) })
    }

    fn start(&self, r: rpb::StartResolved) -> Served<'_, pb::StartExecutionResponse> {
        Box::pin(self.start_here(r))
    }

    fn describe_execution(&self, r: pb::DescribeExecutionRequest) -> Served<'_, pb::Execution> {
        Box::pin(async move { self.describe_execution_here(&r.execution_arn) })
    }

    fn stop_execution(&self, r: pb::StopExecutionRequest) -> Served<'_, pb::StopExecutionResponse> {
        Box::pin(self.stop_execution_here(r))
    }

    fn redrive_execution(
        &self,
        r: pb::RedriveExecutionRequest,
    ) -> Served<'_, pb::RedriveExecutionResponse> {
        Box::pin(async move { self.redrive_execution_here(&r.execution_arn).await })
    }

    fn pause_execution(&self, r: pb::PauseExecutionRequest) -> Served<'_, pb::Empty> {
        Box::pin(async move { empty(self.pause_execution_here(&r.execution_arn, true).await) })
    }

    fn resume_execution(&self, r: pb::ResumeExecutionRequest) -> Served<'_, pb::Empty> {
        Box::pin(async move { empty(self.pause_execution_here(&r.execution_arn, false).await) })
    }

    fn get_execution_history(
        &self,
        r: pb::GetExecutionHistoryRequest,
    ) -> Served<'_, pb::GetExecutionHistoryResponse> {
        Box::pin(async move { self.get_execution_history_here(&r) })
    }

    fn send_task_success(&self, r: pb::SendTaskSuccessRequest) -> Served<'_, pb::Empty> {
        Box::pin(async move {
            empty(
                self.send_task_success_here(&r.task_token, &r.output, r.request_id)
                    .await,
            )
        })
    }

    fn send_task_failure(&self, r: pb::SendTaskFailureRequest) -> Served<'_, pb::Empty> {
        Box::pin(async move {
            empty(
                self.send_task_failure_here(&r.task_token, &r.error, &r.cause, r.request_id)
                    .await,
            )
        })
    }

    fn send_task_heartbeat(&self, r: pb::SendTaskHeartbeatRequest) -> Served<'_, pb::Empty> {
        Box::pin(async move { empty(self.send_task_heartbeat_here(&r.task_token).await) })
    }

    fn list_executions(
        &self,
        r: pb::ListExecutionsRequest,
    ) -> Served<'_, pb::ListExecutionsResponse> {
        Box::pin(async move { self.list_executions_here(&r) })
    }

    fn find_map_run(&self, r: pb::DescribeMapRunRequest) -> Served<'_, pb::MapRun> {
        Box::pin(async move { self.find_map_run_here(&r.map_run_arn) })
    }

    fn update_map_run(&self, r: pb::UpdateMapRunRequest) -> Served<'_, pb::Empty> {
        Box::pin(async move { self.update_map_run_here(r).await })
    }

    fn poll_activity_task(&self, r: pb::GetActivityTaskRequest) -> Served<'_, pb::ActivityTask> {
        Box::pin(async move {
            self.poll_activity_here(&r.activity_arn, &r.worker_name)
                .await
        })
    }
}
