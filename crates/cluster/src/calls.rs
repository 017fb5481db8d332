//! The calls one node makes on another, typed: each request type is one [`Call`] variant,
//! has one reply type, and one handler that serves it where it lands ([`Forward`], all in
//! the table below).
//!
//! Calls about the cluster itself (placement, admission, a shard replica's controls) are
//! served by the cluster's parts. The API's calls (the registry's writes on the meta leader,
//! an execution's or a task token's calls on the shard's leader, a node's part of a fan-out)
//! come back into the API layer through [`Api`], which `trellis-server` implements: this
//! crate never depends on it.

use std::future::Future;
use std::pin::Pin;

use prost::Message;
use trellis_meta::placement::NodeState;
use trellis_proto::raft as rpb;
use trellis_proto::raft::forward_request::Call;
use trellis_proto::v1 as pb;
use trellis_proto::{ApiError, Code};

use crate::{ApiResult, Cluster};

/// A call's answer, later.
pub type Served<'a, T> = Pin<Box<dyn Future<Output = ApiResult<T>> + Send + 'a>>;

/// The API calls that run where the router sends them, served by the API layer on that
/// node. Each serves locally and never forwards: the router decided where it runs.
pub trait Api: Send + Sync + 'static {
    // The registry's writes, on the meta leader.
    fn create_state_machine(
        &self,
        r: pb::CreateStateMachineRequest,
    ) -> Served<'_, pb::CreateStateMachineResponse>;
    fn update_state_machine(
        &self,
        r: pb::UpdateStateMachineRequest,
    ) -> Served<'_, pb::UpdateStateMachineResponse>;
    fn delete_state_machine(&self, r: pb::DeleteStateMachineRequest) -> Served<'_, pb::Empty>;
    fn publish_version(
        &self,
        r: pb::PublishVersionRequest,
    ) -> Served<'_, pb::PublishVersionResponse>;
    fn delete_version(&self, r: pb::DeleteVersionRequest) -> Served<'_, pb::Empty>;
    fn create_alias(&self, r: pb::CreateAliasRequest) -> Served<'_, pb::CreateAliasResponse>;
    fn update_alias(&self, r: pb::UpdateAliasRequest) -> Served<'_, pb::UpdateAliasResponse>;
    fn delete_alias(&self, r: pb::DeleteAliasRequest) -> Served<'_, pb::Empty>;
    fn create_activity(
        &self,
        r: pb::CreateActivityRequest,
    ) -> Served<'_, pb::CreateActivityResponse>;
    fn delete_activity(&self, r: pb::DeleteActivityRequest) -> Served<'_, pb::Empty>;

    // An execution's calls, on its shard's leader.
    /// Starts an execution resolved on the node that took the call.
    fn start(&self, r: rpb::StartResolved) -> Served<'_, pb::StartExecutionResponse>;
    fn describe_execution(&self, r: pb::DescribeExecutionRequest) -> Served<'_, pb::Execution>;
    fn stop_execution(&self, r: pb::StopExecutionRequest) -> Served<'_, pb::StopExecutionResponse>;
    fn redrive_execution(
        &self,
        r: pb::RedriveExecutionRequest,
    ) -> Served<'_, pb::RedriveExecutionResponse>;
    fn pause_execution(&self, r: pb::PauseExecutionRequest) -> Served<'_, pb::Empty>;
    fn resume_execution(&self, r: pb::ResumeExecutionRequest) -> Served<'_, pb::Empty>;
    fn get_execution_history(
        &self,
        r: pb::GetExecutionHistoryRequest,
    ) -> Served<'_, pb::GetExecutionHistoryResponse>;

    // A task token's answers, on its shard's leader.
    fn send_task_success(&self, r: pb::SendTaskSuccessRequest) -> Served<'_, pb::Empty>;
    fn send_task_failure(&self, r: pb::SendTaskFailureRequest) -> Served<'_, pb::Empty>;
    fn send_task_heartbeat(&self, r: pb::SendTaskHeartbeatRequest) -> Served<'_, pb::Empty>;

    // A node's part of a fan-out: the shards it leads.
    fn list_executions(
        &self,
        r: pb::ListExecutionsRequest,
    ) -> Served<'_, pb::ListExecutionsResponse>;
    /// One look for an activity task (an empty task when there is none).
    fn poll_activity_task(&self, r: pb::GetActivityTaskRequest) -> Served<'_, pb::ActivityTask>;
    /// A Map Run among the executions of the shards this node leads (empty: not here).
    fn find_map_run(&self, r: pb::DescribeMapRunRequest) -> Served<'_, pb::MapRun>;
    /// `UpdateMapRun`, on the shard leader of `r.execution_arn`.
    fn update_map_run(&self, r: pb::UpdateMapRunRequest) -> Served<'_, pb::Empty>;
}

/// A request that a node can serve for another.
pub trait Forward: Message + Clone + Send + Sync + Sized + 'static {
    /// What the call answers.
    type Reply: Message + Default + Send;
    /// The request as a forwarded call.
    fn into_call(self) -> Call;
    /// Serves the request on this node. Never forwards.
    fn serve(self, c: &Cluster) -> Served<'_, Self::Reply>;
}

/// The forwarded calls: request type, `Call` variant, reply type, and the local handler.
macro_rules! calls {
    ($($req:ty => $variant:ident: $reply:ty = |$c:ident, $r:ident| $body:expr;)*) => {
        $(
            impl Forward for $req {
                type Reply = $reply;
                fn into_call(self) -> Call {
                    Call::$variant(self)
                }
                fn serve(self, $c: &Cluster) -> Served<'_, $reply> {
                    let $r = self;
                    Box::pin(async move { $body })
                }
            }
        )*

        /// Serves a forwarded call with its handler and encodes the reply.
        pub(crate) async fn dispatch(c: &Cluster, call: Call) -> ApiResult<Vec<u8>> {
            match call {
                $(Call::$variant(r) => r.serve(c).await.map(|m| m.encode_to_vec()),)*
            }
        }
    };
}

/// How long the node that forwards a call waits for the answer before it takes the target
/// for unreachable (a frozen or overloaded node accepts connections and never answers) and
/// tries the next candidate. Every call has one, chosen here (no catch-all: a new call needs
/// a decision): point calls on a shard leader answer once their entry commits, in
/// milliseconds; reads that scan, deliveries of many messages and operator commands that
/// wait for the cluster get longer.
pub(crate) fn deadline(call: &Call) -> std::time::Duration {
    use std::time::Duration;
    const POINT: Duration = Duration::from_secs(2);
    const META: Duration = Duration::from_secs(5);
    const SCAN: Duration = Duration::from_secs(30);
    const OPERATOR: Duration = Duration::from_secs(60);
    match call {
        Call::CreateStateMachine(_)
        | Call::UpdateStateMachine(_)
        | Call::DeleteStateMachine(_)
        | Call::PublishVersion(_)
        | Call::DeleteVersion(_)
        | Call::CreateAlias(_)
        | Call::UpdateAlias(_)
        | Call::DeleteAlias(_)
        | Call::CreateActivity(_)
        | Call::DeleteActivity(_)
        | Call::AdmissionKick(_)
        | Call::MemberCheck(_)
        | Call::Admit(_)
        | Call::UpdateMapRun(_)
        | Call::PollActivityTask(_) => META,
        Call::MetaIndexRequest(_)
        | Call::StartExecution(_)
        | Call::DescribeExecution(_)
        | Call::StopExecution(_)
        | Call::RedriveExecution(_)
        | Call::PauseExecution(_)
        | Call::ResumeExecution(_)
        | Call::SendTaskSuccess(_)
        | Call::SendTaskFailure(_)
        | Call::SendTaskHeartbeat(_) => POINT,
        Call::GetExecutionHistory(_)
        | Call::Deliver(_)
        | Call::ListExecutions(_)
        | Call::FindMapRun(_)
        | Call::Doctor(_)
        | Call::AdmissionReport(_)
        | Call::LocalShards(_)
        // Waits (up to 20 s) for the deliveries under way.
        | Call::MailHold(_) => SCAN,
        // The first part builds a snapshot.
        Call::ExportGroup(r) if r.token.is_empty() => OPERATOR,
        Call::ExportGroup(_) => SCAN,
        Call::SetNodeState(_)
        | Call::MoveShard(_)
        | Call::TransferShardLeader(_)
        | Call::Rebalance(_)
        | Call::SetPlacement(_)
        | Call::ShardControl(_) => OPERATOR,
    }
}

fn empty(r: ApiResult<()>) -> ApiResult<pb::Empty> {
    r.map(|()| pb::Empty {})
}

calls! {
    // The registry's writes, on the meta leader.
    pb::CreateStateMachineRequest => CreateStateMachine: pb::CreateStateMachineResponse =
        |c, r| c.api()?.create_state_machine(r).await;
    pb::UpdateStateMachineRequest => UpdateStateMachine: pb::UpdateStateMachineResponse =
        |c, r| c.api()?.update_state_machine(r).await;
    pb::DeleteStateMachineRequest => DeleteStateMachine: pb::Empty =
        |c, r| c.api()?.delete_state_machine(r).await;
    pb::PublishVersionRequest => PublishVersion: pb::PublishVersionResponse =
        |c, r| c.api()?.publish_version(r).await;
    pb::DeleteVersionRequest => DeleteVersion: pb::Empty =
        |c, r| c.api()?.delete_version(r).await;
    pb::CreateAliasRequest => CreateAlias: pb::CreateAliasResponse =
        |c, r| c.api()?.create_alias(r).await;
    pb::UpdateAliasRequest => UpdateAlias: pb::UpdateAliasResponse =
        |c, r| c.api()?.update_alias(r).await;
    pb::DeleteAliasRequest => DeleteAlias: pb::Empty = |c, r| c.api()?.delete_alias(r).await;
    pb::CreateActivityRequest => CreateActivity: pb::CreateActivityResponse =
        |c, r| c.api()?.create_activity(r).await;
    pb::DeleteActivityRequest => DeleteActivity: pb::Empty =
        |c, r| c.api()?.delete_activity(r).await;

    // The cluster's own meta-leader calls.
    // Answers with the meta leader's applied index, in the reply envelope.
    rpb::MetaIndexRequest => MetaIndexRequest: pb::Empty = |_c, _r| Ok(pb::Empty {});
    rpb::SetNodeStateRequest => SetNodeState: pb::Empty = |c, r| {
        let state = match rpb::NodeStateChange::try_from(r.state) {
            Ok(rpb::NodeStateChange::Draining) => NodeState::Draining,
            Ok(rpb::NodeStateChange::Removed) => NodeState::Removed,
            Ok(rpb::NodeStateChange::Restarting) => NodeState::Restarting,
            Ok(rpb::NodeStateChange::Up) => NodeState::Up,
            Err(_) => {
                return Err(ApiError::new(
                    Code::ValidationException,
                    format!("unknown node state {}", r.state),
                ))
            }
        };
        // A node announcing itself may not know the meta leader (a removed node's view of
        // the group is stale), so it asks any member; a member that does not lead the meta
        // group passes the call on once, to the leader it knows.
        if c.meta().leader() == Some(c.id()) {
            empty(c.membership().set_node_state_here(r.node_id, state).await)
        } else {
            c.router().on_meta(r).await
        }
    };
    rpb::ExportGroupRequest => ExportGroup: rpb::ExportGroupReply =
        |c, r| c.backups().export_here(r).await;
    rpb::MailHoldRequest => MailHold: pb::Empty = |c, r| empty(c.backups().hold_here(r).await);
    rpb::MemberCheckRequest => MemberCheck: pb::Empty = |c, r| {
        if c.meta().leader() == Some(c.id()) {
            empty(c.membership().check_member_here(r.node_id))
        } else {
            c.router().on_meta(r).await
        }
    };
    pb::MoveShardRequest => MoveShard: pb::Empty =
        |c, r| empty(c.driver().move_shard_here(r).await);
    pb::TransferShardLeaderRequest => TransferShardLeader: pb::Empty =
        |c, r| empty(c.driver().transfer_shard_leader_here(r).await);
    rpb::RebalanceRequest => Rebalance: pb::RebalanceResponse =
        |c, _r| c.driver().rebalance_here().await;
    pb::SetPlacementRequest => SetPlacement: pb::Empty =
        |c, r| empty(c.driver().set_paused_here(r.paused).await);
    rpb::AdmissionKick => AdmissionKick: pb::Empty =
        |c, r| empty(c.admission().kick_here(r).await);

    // Shard-bound calls, on the shard's leader.
    rpb::StartResolved => StartExecution: pb::StartExecutionResponse =
        |c, r| c.api()?.start(r).await;
    pb::DescribeExecutionRequest => DescribeExecution: pb::Execution =
        |c, r| c.api()?.describe_execution(r).await;
    pb::StopExecutionRequest => StopExecution: pb::StopExecutionResponse =
        |c, r| c.api()?.stop_execution(r).await;
    pb::RedriveExecutionRequest => RedriveExecution: pb::RedriveExecutionResponse =
        |c, r| c.api()?.redrive_execution(r).await;
    pb::PauseExecutionRequest => PauseExecution: pb::Empty =
        |c, r| c.api()?.pause_execution(r).await;
    pb::ResumeExecutionRequest => ResumeExecution: pb::Empty =
        |c, r| c.api()?.resume_execution(r).await;
    pb::GetExecutionHistoryRequest => GetExecutionHistory: pb::GetExecutionHistoryResponse =
        |c, r| c.api()?.get_execution_history(r).await;
    pb::SendTaskSuccessRequest => SendTaskSuccess: pb::Empty =
        |c, r| c.api()?.send_task_success(r).await;
    pb::SendTaskFailureRequest => SendTaskFailure: pb::Empty =
        |c, r| c.api()?.send_task_failure(r).await;
    pb::SendTaskHeartbeatRequest => SendTaskHeartbeat: pb::Empty =
        |c, r| c.api()?.send_task_heartbeat(r).await;
    rpb::AdmitRequest => Admit: pb::Empty =
        |c, r| empty(c.admission().admit_here(&r.execution_arn).await);
    rpb::ShardControl => ShardControl: rpb::ShardControlReply =
        |c, r| c.host().shard_control_here(r).await;
    rpb::DeliverRequest => Deliver: pb::Empty = |c, r| empty(c.mail.deliver_here(r).await);

    // The receiving node's part of a fan-out.
    pb::ListExecutionsRequest => ListExecutions: pb::ListExecutionsResponse =
        |c, r| c.api()?.list_executions(r).await;
    pb::DescribeMapRunRequest => FindMapRun: pb::MapRun = |c, r| c.api()?.find_map_run(r).await;
    pb::UpdateMapRunRequest => UpdateMapRun: pb::Empty = |c, r| c.api()?.update_map_run(r).await;
    pb::GetActivityTaskRequest => PollActivityTask: pb::ActivityTask =
        |c, r| c.api()?.poll_activity_task(r).await;
    rpb::DoctorRequest => Doctor: pb::DoctorReport = |c, _r| c.host().doctor_here().await;
    rpb::AdmissionReportRequest => AdmissionReport: rpb::AdmissionReport =
        |c, _r| Ok(c.admission().report_here().await);
    rpb::LocalShardsRequest => LocalShards: pb::ListShardsResponse =
        |c, r| Ok(c.host().local_shards(r.count_live));
}
