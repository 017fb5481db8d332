//! The gRPC API's side of [`super::Auth`]: an interceptor that authenticates each call by
//! its bearer token (`authorization: Bearer <token>`), or else by the client certificate
//! the listener verified (its subject common name is the principal's name), and hands the
//! principal to the handler ([`Caller`]), and the resource each request names ([`Resource`]), so that the
//! handler can check the call as the AWS API does.

use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::{Request, Status};
use trellis_proto::v1 as pb;
use trellis_proto::{ApiError, Code};

use super::{Auth, Principal};
use crate::config::AwsSection;
use crate::listen::IoInfo;

/// The authenticated principal of a gRPC call (in the request's extensions).
#[derive(Clone)]
pub struct Caller(pub Arc<Principal>);

/// Authenticates gRPC calls when the node has principals; passes every call when not.
#[derive(Clone)]
pub struct Authn(pub Arc<Auth>);

impl Interceptor for Authn {
    fn call(&mut self, mut r: Request<()>) -> Result<Request<()>, Status> {
        let Some(principals) = self.0.principals() else {
            return Ok(r);
        };
        let header = r.metadata().get("authorization").map(|v| v.to_str());
        // No token: a client certificate the listener verified (tls.client_ca_file) names
        // its principal by its subject common name.
        let certified = r
            .extensions()
            .get::<IoInfo>()
            .and_then(|i| i.peer_certificates.as_ref())
            .and_then(|c| c.first())
            .map(|c| trellis_tls::common_name(c).unwrap_or_default());
        if let (None, Some(name)) = (&header, certified) {
            let Some(p) = principals.by_name(&name) else {
                return Err(refuse(
                    Code::UnrecognizedClientException,
                    "The client certificate names no principal.",
                    "unknown client certificate",
                ));
            };
            r.extensions_mut().insert(Caller(p));
            return Ok(r);
        }
        let token = match header {
            None => {
                return Err(refuse(
                    Code::MissingAuthenticationTokenException,
                    "Missing Authentication Token",
                    "no bearer token",
                ))
            }
            Some(Ok(v)) => v
                .strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .map(str::trim),
            Some(Err(_)) => None,
        };
        let Some(token) = token else {
            return Err(refuse(
                Code::IncompleteSignatureException,
                "The authorization metadata must be 'Bearer <token>'.",
                "malformed authorization",
            ));
        };
        let Some(p) = principals.by_token(token) else {
            return Err(refuse(
                Code::UnrecognizedClientException,
                "The security token included in the request is invalid.",
                "unknown bearer token",
            ));
        };
        r.extensions_mut().insert(Caller(p));
        Ok(r)
    }
}

fn refuse(code: Code, message: &str, reason: &str) -> Status {
    tracing::info!(code = %code, reason, "gRPC call refused");
    ApiError::new(code, message).to_status()
}

impl Auth {
    /// Whether the gRPC call `r` may do `action` on what it names: its caller's rate limits
    /// and policy, as on the AWS API. Every call passes when authentication is off.
    pub fn allow_grpc<T: Resource>(
        &self,
        r: &Request<T>,
        action: &str,
        aws: &AwsSection,
    ) -> Result<(), Status> {
        if !self.on() {
            return Ok(());
        }
        let Some(Caller(p)) = r.extensions().get::<Caller>() else {
            return Err(ApiError::new(
                Code::MissingAuthenticationTokenException,
                "Missing Authentication Token",
            )
            .to_status());
        };
        let resource = r.get_ref().resource(aws);
        let outcome = self.allow(p, action, resource.as_deref().unwrap_or("*"));
        tracing::info!(
            target: "trellis::audit",
            principal = %p.name,
            operation = action,
            resource = resource.as_deref().unwrap_or("-"),
            outcome = outcome.as_ref().err().map_or("ok", |e| e.code.name()),
            "gRPC call"
        );
        outcome.map_err(|e| e.to_status())
    }
}

/// The resource a request acts on: the ARN it names, for a create the ARN it would make,
/// `None` when it names none.
pub trait Resource {
    fn resource(&self, aws: &AwsSection) -> Option<String>;
}

fn arn(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

macro_rules! names {
    ($($t:ident => |$m:ident, $aws:ident| $e:expr;)*) => {
        $(impl Resource for pb::$t {
            fn resource(&self, $aws: &AwsSection) -> Option<String> {
                let $m = self;
                let _ = (&$m, $aws);
                $e
            }
        })*
    };
}

names! {
    CreateStateMachineRequest => |m, aws| arn(&format!("arn:aws:states:{}:{}:stateMachine:{}", aws.region, aws.account, m.name));
    UpdateStateMachineRequest => |m, aws| arn(&m.state_machine_arn);
    DescribeStateMachineRequest => |m, aws| arn(&m.state_machine_arn);
    DeleteStateMachineRequest => |m, aws| arn(&m.state_machine_arn);
    PublishVersionRequest => |m, aws| arn(&m.state_machine_arn);
    ListVersionsRequest => |m, aws| arn(&m.state_machine_arn);
    DeleteVersionRequest => |m, aws| arn(&m.state_machine_version_arn);
    CreateAliasRequest => |m, aws| None;
    DescribeAliasRequest => |m, aws| arn(&m.state_machine_alias_arn);
    UpdateAliasRequest => |m, aws| arn(&m.state_machine_alias_arn);
    DeleteAliasRequest => |m, aws| arn(&m.state_machine_alias_arn);
    ListAliasesRequest => |m, aws| arn(&m.state_machine_arn);
    ListStateMachinesRequest => |m, aws| None;
    ValidateRequest => |m, aws| None;
    StartExecutionRequest => |m, aws| arn(&m.state_machine_arn);
    StopExecutionRequest => |m, aws| arn(&m.execution_arn);
    DescribeExecutionRequest => |m, aws| arn(&m.execution_arn);
    DescribeMapRunRequest => |m, aws| arn(&m.map_run_arn);
    UpdateMapRunRequest => |m, aws| arn(&m.map_run_arn);
    ListMapRunsRequest => |m, aws| arn(&m.execution_arn);
    ListExecutionsRequest => |m, aws| arn(&m.map_run_arn).or_else(|| arn(&m.state_machine_arn));
    GetExecutionHistoryRequest => |m, aws| arn(&m.execution_arn);
    RedriveExecutionRequest => |m, aws| arn(&m.execution_arn);
    PauseExecutionRequest => |m, aws| arn(&m.execution_arn);
    ResumeExecutionRequest => |m, aws| arn(&m.execution_arn);
    WatchExecutionRequest => |m, aws| arn(&m.execution_arn);
    CreateActivityRequest => |m, aws| arn(&format!("arn:aws:states:{}:{}:activity:{}", aws.region, aws.account, m.name));
    DescribeActivityRequest => |m, aws| arn(&m.activity_arn);
    DeleteActivityRequest => |m, aws| arn(&m.activity_arn);
    ListActivitiesRequest => |m, aws| None;
    GetActivityTaskRequest => |m, aws| arn(&m.activity_arn);
    SendTaskSuccessRequest => |m, aws| None;
    SendTaskFailureRequest => |m, aws| None;
    SendTaskHeartbeatRequest => |m, aws| None;
    Empty => |m, aws| None;
    NodeRequest => |m, aws| None;
    MoveShardRequest => |m, aws| None;
    TransferShardLeaderRequest => |m, aws| None;
    SetPlacementRequest => |m, aws| None;
    BackupRequest => |m, aws| None;
    PartitionRequest => |m, aws| None;
}
