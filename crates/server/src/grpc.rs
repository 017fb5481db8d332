//! The gRPC API (`trellis.v1`): thin wrappers over [`Node`]. Errors carry an `ErrorDetail`
//! with the AWS exception name (see `trellis_proto::error`).

use std::sync::Arc;
use std::time::Duration;

use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use trellis_proto::v1 as pb;
use trellis_proto::v1::activities_server::{Activities, ActivitiesServer};
use trellis_proto::v1::admin_server::{Admin, AdminServer};
use trellis_proto::v1::executions_server::{Executions, ExecutionsServer};
use trellis_proto::v1::state_machines_server::{StateMachines, StateMachinesServer};

use crate::auth::grpc::{Authn, Resource};
use crate::listen::{Incoming, KEEPALIVE, KEEPALIVE_TIMEOUT};
use crate::node::Node;

type R<T> = Result<Response<T>, Status>;

fn ok<T>(v: T) -> R<T> {
    Ok(Response::new(v))
}

/// A gRPC server with the node's connection settings: HTTP/2 pings keep live connections
/// from looking idle to [`crate::listen::Conn`].
fn server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
}

/// The client services (`trellis.v1`), each behind the authenticating interceptor: what
/// [`serve`] serves, and what the fuzz targets call directly.
pub fn routes(node: Arc<Node>) -> tonic::service::Routes {
    let authn = Authn(node.auth.clone());
    let svc = Svc(node);
    tonic::service::Routes::new(StateMachinesServer::with_interceptor(
        svc.clone(),
        authn.clone(),
    ))
    .add_service(ExecutionsServer::with_interceptor(
        svc.clone(),
        authn.clone(),
    ))
    .add_service(ActivitiesServer::with_interceptor(
        svc.clone(),
        authn.clone(),
    ))
    .add_service(AdminServer::with_interceptor(svc, authn))
}

/// Serves the client services (`trellis.v1`) on `listener` until `stop` resolves. The
/// peer services are not here: they have a port of their own ([`serve_peer`]).
pub async fn serve(
    node: Arc<Node>,
    listener: Incoming,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    server()
        .add_routes(routes(node))
        .serve_with_incoming_shutdown(listener.into_stream(), stop)
        .await
}

/// Serves the peer services (Raft, snapshots, joins, pings, forwarded calls) on the peer
/// listener until `stop` resolves.
pub async fn serve_peer(
    node: Arc<Node>,
    listener: Incoming,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    server()
        .add_service(trellis_cluster::service::Service::new(node.cluster()))
        .serve_with_incoming_shutdown(listener.into_stream(), stop)
        .await
}

#[derive(Clone)]
struct Svc(Arc<Node>);

impl Svc {
    /// The caller's rate limits and policy for `action` on what `r` names.
    fn allow<T: Resource>(&self, r: &Request<T>, action: &str) -> Result<(), Status> {
        self.0.auth.allow_grpc(r, action, &self.0.cfg.aws)
    }
}

#[tonic::async_trait]
impl StateMachines for Svc {
    async fn create_state_machine(
        &self,
        r: Request<pb::CreateStateMachineRequest>,
    ) -> R<pb::CreateStateMachineResponse> {
        self.allow(&r, "states:CreateStateMachine")?;
        ok(self.0.create_state_machine(r.into_inner()).await?)
    }
    async fn update_state_machine(
        &self,
        r: Request<pb::UpdateStateMachineRequest>,
    ) -> R<pb::UpdateStateMachineResponse> {
        self.allow(&r, "states:UpdateStateMachine")?;
        ok(self.0.update_state_machine(r.into_inner()).await?)
    }
    async fn describe_state_machine(
        &self,
        r: Request<pb::DescribeStateMachineRequest>,
    ) -> R<pb::StateMachine> {
        self.allow(&r, "states:DescribeStateMachine")?;
        ok(self
            .0
            .describe_state_machine(&r.into_inner().state_machine_arn)?)
    }
    async fn list_state_machines(
        &self,
        r: Request<pb::ListStateMachinesRequest>,
    ) -> R<pb::ListStateMachinesResponse> {
        self.allow(&r, "states:ListStateMachines")?;
        ok(self.0.list_state_machines(r.into_inner())?)
    }
    async fn delete_state_machine(
        &self,
        r: Request<pb::DeleteStateMachineRequest>,
    ) -> R<pb::Empty> {
        self.allow(&r, "states:DeleteStateMachine")?;
        self.0
            .delete_state_machine(&r.into_inner().state_machine_arn)
            .await?;
        ok(pb::Empty {})
    }
    async fn validate_state_machine_definition(
        &self,
        r: Request<pb::ValidateRequest>,
    ) -> R<pb::ValidateResponse> {
        self.allow(&r, "states:ValidateStateMachineDefinition")?;
        ok(self.0.validate(&r.into_inner())?)
    }
    async fn publish_state_machine_version(
        &self,
        r: Request<pb::PublishVersionRequest>,
    ) -> R<pb::PublishVersionResponse> {
        self.allow(&r, "states:PublishStateMachineVersion")?;
        ok(self.0.publish_version(r.into_inner()).await?)
    }
    async fn list_state_machine_versions(
        &self,
        r: Request<pb::ListVersionsRequest>,
    ) -> R<pb::ListVersionsResponse> {
        self.allow(&r, "states:ListStateMachineVersions")?;
        ok(self.0.list_versions(r.into_inner())?)
    }
    async fn delete_state_machine_version(
        &self,
        r: Request<pb::DeleteVersionRequest>,
    ) -> R<pb::Empty> {
        self.allow(&r, "states:DeleteStateMachineVersion")?;
        self.0
            .delete_version(&r.into_inner().state_machine_version_arn)
            .await?;
        ok(pb::Empty {})
    }
    async fn create_state_machine_alias(
        &self,
        r: Request<pb::CreateAliasRequest>,
    ) -> R<pb::CreateAliasResponse> {
        self.allow(&r, "states:CreateStateMachineAlias")?;
        ok(self.0.create_alias(r.into_inner()).await?)
    }
    async fn describe_state_machine_alias(
        &self,
        r: Request<pb::DescribeAliasRequest>,
    ) -> R<pb::Alias> {
        self.allow(&r, "states:DescribeStateMachineAlias")?;
        ok(self
            .0
            .describe_alias(&r.into_inner().state_machine_alias_arn)?)
    }
    async fn update_state_machine_alias(
        &self,
        r: Request<pb::UpdateAliasRequest>,
    ) -> R<pb::UpdateAliasResponse> {
        self.allow(&r, "states:UpdateStateMachineAlias")?;
        ok(self.0.update_alias(r.into_inner()).await?)
    }
    async fn delete_state_machine_alias(&self, r: Request<pb::DeleteAliasRequest>) -> R<pb::Empty> {
        self.allow(&r, "states:DeleteStateMachineAlias")?;
        self.0
            .delete_alias(&r.into_inner().state_machine_alias_arn)
            .await?;
        ok(pb::Empty {})
    }
    async fn list_state_machine_aliases(
        &self,
        r: Request<pb::ListAliasesRequest>,
    ) -> R<pb::ListAliasesResponse> {
        self.allow(&r, "states:ListStateMachineAliases")?;
        ok(self.0.list_aliases(r.into_inner())?)
    }
}

#[tonic::async_trait]
impl Executions for Svc {
    async fn start_execution(
        &self,
        r: Request<pb::StartExecutionRequest>,
    ) -> R<pb::StartExecutionResponse> {
        self.allow(&r, "states:StartExecution")?;
        ok(self.0.start_execution(r.into_inner()).await?)
    }
    async fn start_sync_execution(
        &self,
        r: Request<pb::StartExecutionRequest>,
    ) -> R<pb::SyncExecutionResult> {
        self.allow(&r, "states:StartSyncExecution")?;
        ok(self.0.start_sync_execution(r.into_inner()).await?)
    }
    async fn stop_execution(
        &self,
        r: Request<pb::StopExecutionRequest>,
    ) -> R<pb::StopExecutionResponse> {
        self.allow(&r, "states:StopExecution")?;
        ok(self.0.stop_execution(r.into_inner()).await?)
    }
    async fn describe_execution(
        &self,
        r: Request<pb::DescribeExecutionRequest>,
    ) -> R<pb::Execution> {
        self.allow(&r, "states:DescribeExecution")?;
        ok(self
            .0
            .describe_execution(&r.into_inner().execution_arn)
            .await?)
    }
    async fn describe_map_run(&self, r: Request<pb::DescribeMapRunRequest>) -> R<pb::MapRun> {
        self.allow(&r, "states:DescribeMapRun")?;
        ok(self.0.describe_map_run(&r.into_inner().map_run_arn).await?)
    }
    async fn update_map_run(&self, r: Request<pb::UpdateMapRunRequest>) -> R<pb::Empty> {
        self.allow(&r, "states:UpdateMapRun")?;
        self.0.update_map_run(r.into_inner()).await?;
        ok(pb::Empty {})
    }
    async fn list_map_runs(
        &self,
        r: Request<pb::ListMapRunsRequest>,
    ) -> R<pb::ListMapRunsResponse> {
        self.allow(&r, "states:ListMapRuns")?;
        ok(self.0.list_map_runs(r.into_inner()).await?)
    }
    async fn list_executions(
        &self,
        r: Request<pb::ListExecutionsRequest>,
    ) -> R<pb::ListExecutionsResponse> {
        self.allow(&r, "states:ListExecutions")?;
        ok(self.0.list_executions(r.into_inner()).await?)
    }
    async fn get_execution_history(
        &self,
        r: Request<pb::GetExecutionHistoryRequest>,
    ) -> R<pb::GetExecutionHistoryResponse> {
        self.allow(&r, "states:GetExecutionHistory")?;
        ok(self.0.get_execution_history(r.into_inner()).await?)
    }
    async fn redrive_execution(
        &self,
        r: Request<pb::RedriveExecutionRequest>,
    ) -> R<pb::RedriveExecutionResponse> {
        self.allow(&r, "states:RedriveExecution")?;
        ok(self
            .0
            .redrive_execution(&r.into_inner().execution_arn)
            .await?)
    }
    async fn pause_execution(&self, r: Request<pb::PauseExecutionRequest>) -> R<pb::Empty> {
        self.allow(&r, "states:PauseExecution")?;
        self.0
            .pause_execution(&r.into_inner().execution_arn, true)
            .await?;
        ok(pb::Empty {})
    }
    async fn resume_execution(&self, r: Request<pb::ResumeExecutionRequest>) -> R<pb::Empty> {
        self.allow(&r, "states:ResumeExecution")?;
        self.0
            .pause_execution(&r.into_inner().execution_arn, false)
            .await?;
        ok(pb::Empty {})
    }

    type WatchExecutionStream = ReceiverStream<Result<pb::HistoryEvent, Status>>;

    async fn watch_execution(
        &self,
        r: Request<pb::WatchExecutionRequest>,
    ) -> R<Self::WatchExecutionStream> {
        self.allow(&r, "states:WatchExecution")?;
        let r = r.into_inner();
        // Fail fast on an unknown execution.
        self.0.describe_execution(&r.execution_arn).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let node = self.0.clone();
        tokio::spawn(async move {
            let mut after = r.after_event_id;
            loop {
                match node.events_after(&r.execution_arn, after).await {
                    Ok((events, done)) => {
                        for e in events {
                            after = e.id;
                            if tx.send(Ok(e)).await.is_err() {
                                return;
                            }
                        }
                        if done {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_status())).await;
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        ok(ReceiverStream::new(rx))
    }
}

#[tonic::async_trait]
impl Activities for Svc {
    async fn create_activity(
        &self,
        r: Request<pb::CreateActivityRequest>,
    ) -> R<pb::CreateActivityResponse> {
        self.allow(&r, "states:CreateActivity")?;
        ok(self.0.create_activity(&r.into_inner().name).await?)
    }
    async fn describe_activity(&self, r: Request<pb::DescribeActivityRequest>) -> R<pb::Activity> {
        self.allow(&r, "states:DescribeActivity")?;
        ok(self.0.describe_activity(&r.into_inner().activity_arn)?)
    }
    async fn list_activities(
        &self,
        r: Request<pb::ListActivitiesRequest>,
    ) -> R<pb::ListActivitiesResponse> {
        self.allow(&r, "states:ListActivities")?;
        ok(self.0.list_activities(r.into_inner())?)
    }
    async fn delete_activity(&self, r: Request<pb::DeleteActivityRequest>) -> R<pb::Empty> {
        self.allow(&r, "states:DeleteActivity")?;
        self.0.delete_activity(&r.into_inner().activity_arn).await?;
        ok(pb::Empty {})
    }
    async fn get_activity_task(
        &self,
        r: Request<pb::GetActivityTaskRequest>,
    ) -> R<pb::ActivityTask> {
        self.allow(&r, "states:GetActivityTask")?;
        let r = r.into_inner();
        ok(self
            .0
            .get_activity_task(&r.activity_arn, &r.worker_name, Duration::from_secs(60))
            .await?)
    }
    async fn send_task_success(&self, r: Request<pb::SendTaskSuccessRequest>) -> R<pb::Empty> {
        self.allow(&r, "states:SendTaskSuccess")?;
        let r = r.into_inner();
        self.0
            .send_task_success(&r.task_token, &r.output, r.request_id)
            .await?;
        ok(pb::Empty {})
    }
    async fn send_task_failure(&self, r: Request<pb::SendTaskFailureRequest>) -> R<pb::Empty> {
        self.allow(&r, "states:SendTaskFailure")?;
        let r = r.into_inner();
        self.0
            .send_task_failure(&r.task_token, &r.error, &r.cause, r.request_id)
            .await?;
        ok(pb::Empty {})
    }
    async fn send_task_heartbeat(&self, r: Request<pb::SendTaskHeartbeatRequest>) -> R<pb::Empty> {
        self.allow(&r, "states:SendTaskHeartbeat")?;
        self.0
            .send_task_heartbeat(&r.into_inner().task_token)
            .await?;
        ok(pb::Empty {})
    }
}

#[tonic::async_trait]
impl Admin for Svc {
    async fn cluster_status(&self, r: Request<pb::Empty>) -> R<pb::ClusterStatusResponse> {
        self.allow(&r, "trellis:ClusterStatus")?;
        ok(self.0.cluster().status().await?)
    }
    async fn list_nodes(&self, r: Request<pb::Empty>) -> R<pb::ListNodesResponse> {
        self.allow(&r, "trellis:ListNodes")?;
        ok(pb::ListNodesResponse {
            nodes: self.0.cluster().list_nodes().await?,
        })
    }
    async fn list_shards(&self, r: Request<pb::Empty>) -> R<pb::ListShardsResponse> {
        self.allow(&r, "trellis:ListShards")?;
        ok(self.0.cluster().driver().list_shards().await?)
    }
    async fn doctor(&self, r: Request<pb::Empty>) -> R<pb::DoctorReport> {
        self.allow(&r, "trellis:Doctor")?;
        ok(self.0.cluster().doctor().await?)
    }
    async fn partition(&self, r: Request<pb::PartitionRequest>) -> R<pb::Empty> {
        self.allow(&r, "trellis:Partition")?;
        self.0.cluster().partition(r.into_inner().nodes)?;
        ok(pb::Empty {})
    }
    async fn drain_node(&self, r: Request<pb::NodeRequest>) -> R<pb::Empty> {
        self.allow(&r, "trellis:DrainNode")?;
        self.0
            .cluster()
            .membership()
            .drain_node(r.into_inner().node_id)
            .await?;
        ok(pb::Empty {})
    }
    async fn remove_node(&self, r: Request<pb::NodeRequest>) -> R<pb::Empty> {
        self.allow(&r, "trellis:RemoveNode")?;
        self.0
            .cluster()
            .membership()
            .remove_node(r.into_inner().node_id)
            .await?;
        ok(pb::Empty {})
    }
    async fn hand_off_node(&self, r: Request<pb::NodeRequest>) -> R<pb::Empty> {
        self.allow(&r, "trellis:HandOffNode")?;
        self.0
            .cluster()
            .membership()
            .hand_off_node(r.into_inner().node_id)
            .await?;
        ok(pb::Empty {})
    }
    async fn move_shard(&self, r: Request<pb::MoveShardRequest>) -> R<pb::Empty> {
        self.allow(&r, "trellis:MoveShard")?;
        self.0.cluster().driver().move_shard(r.into_inner()).await?;
        ok(pb::Empty {})
    }
    async fn transfer_shard_leader(
        &self,
        r: Request<pb::TransferShardLeaderRequest>,
    ) -> R<pb::Empty> {
        self.allow(&r, "trellis:TransferShardLeader")?;
        self.0
            .cluster()
            .driver()
            .transfer_shard_leader(r.into_inner())
            .await?;
        ok(pb::Empty {})
    }
    async fn rebalance(&self, r: Request<pb::Empty>) -> R<pb::RebalanceResponse> {
        self.allow(&r, "trellis:Rebalance")?;
        ok(self.0.cluster().driver().rebalance().await?)
    }
    type BackupStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::BackupChunk, Status>> + Send>>;

    async fn backup(&self, r: Request<pb::BackupRequest>) -> R<Self::BackupStream> {
        use futures::StreamExt;
        self.allow(&r, "trellis:Backup")?;
        // A few parts ahead of the client: the node holds at most that much for it.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let cluster = self.0.cluster().clone();
        tokio::spawn(async move { cluster.backups().run(tx).await });
        let stream = ReceiverStream::new(rx).map(|r| r.map_err(|e| e.to_status()));
        ok(Box::pin(stream) as Self::BackupStream)
    }
    async fn set_placement(&self, r: Request<pb::SetPlacementRequest>) -> R<pb::Empty> {
        self.allow(&r, "trellis:SetPlacement")?;
        self.0
            .cluster()
            .driver()
            .set_placement(r.into_inner().paused)
            .await?;
        ok(pb::Empty {})
    }
}
