//! The node's side of the connectors: the shard executor's [`Connectors`] trait over the
//! one connector set, and the node as the [`ExecutionStarter`] of nested executions.

use trellis_asl::exec::TaskRequest;
use trellis_asl::Input;
use trellis_proto::v1 as pb;
use trellis_shard::executor::{BoxFuture, Connectors, Fence};

use crate::nested::ExecutionStarter;
use crate::node::Node;

impl Connectors for crate::connectors::Connectors {
    fn invoke(&self, t: TaskRequest, fence: Fence) -> BoxFuture<'static, Input> {
        let me = self.clone();
        // Term 0: an Express execution, which runs outside any shard.
        let fence = (fence.term > 0).then(|| fence.to_string());
        Box::pin(async move { me.run_task(t, fence).await })
    }
}

impl ExecutionStarter for Node {
    fn start(
        &self,
        r: pb::StartExecutionRequest,
    ) -> BoxFuture<'_, Result<pb::StartExecutionResponse, trellis_proto::ApiError>> {
        Box::pin(self.start_execution(r))
    }

    fn start_sync(
        &self,
        r: pb::StartExecutionRequest,
    ) -> BoxFuture<'_, Result<pb::SyncExecutionResult, trellis_proto::ApiError>> {
        Box::pin(self.start_sync_execution(r))
    }

    fn describe<'a>(
        &'a self,
        execution_arn: &'a str,
    ) -> BoxFuture<'a, Result<pb::Execution, trellis_proto::ApiError>> {
        Box::pin(self.describe_execution(execution_arn))
    }

    fn is_express(&self, state_machine_arn: &str) -> bool {
        self.describe_state_machine(state_machine_arn)
            .is_ok_and(|m| m.r#type == pb::StateMachineType::Express as i32)
    }
}
