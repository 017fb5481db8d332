//! What happens to an AWS API request before it is dispatched: its body is read (bounded),
//! its signature checked (when the node authenticates), then the call is checked against
//! the principal's rate limits and policy ([`crate::auth::Auth::allow`]); and the audit
//! record of the call, whatever came of it.

use axum::http::{HeaderMap, Uri};
use serde::Deserialize;
use trellis_proto::ApiError;

use crate::node::Node;

/// Reads the request's body and admits the call: the body, if the call may go on.
pub(super) async fn admit(
    node: &Node,
    uri: &Uri,
    headers: &HeaderMap,
    body: axum::body::Body,
    audit: &mut Audit<'_>,
) -> Result<axum::body::Bytes, ApiError> {
    let body = super::shapes::body(headers, body).await?;
    let principals = node.auth.principals();
    let who = crate::auth::sigv4::check(principals.as_deref(), uri, headers, &body)?;
    let audited = tracing::enabled!(target: "trellis::audit", tracing::Level::INFO);
    let resource = if who.is_some() || audited {
        resource(audit.operation(), &body, &node.cfg.aws)
    } else {
        None
    };
    audit.called(who.map(|p| p.name.as_str()), resource.clone());
    // Policies name Step Functions' operations; an unknown target is refused as such by
    // the dispatcher.
    if let (Some(p), true) = (who, audit.known) {
        let action = format!("states:{}", audit.operation());
        node.auth
            .allow(p, &action, resource.as_deref().unwrap_or("*"))?;
    }
    Ok(body)
}

/// The audit record of one AWS API call: who called which operation on which resource, and
/// the outcome, as an INFO event of its own target (`trellis::audit`), so it can be shipped
/// apart (on by default when the node authenticates, see `docs/security.md`).
pub(super) struct Audit<'a> {
    request_id: &'a str,
    operation: String,
    /// Whether the target is `AWSStepFunctions.<operation>`.
    known: bool,
    principal: Option<String>,
    resource: Option<String>,
}

/// The resource a request names (read without keeping the rest of the body).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Named {
    execution_arn: Option<String>,
    state_machine_arn: Option<String>,
    state_machine_alias_arn: Option<String>,
    state_machine_version_arn: Option<String>,
    activity_arn: Option<String>,
    map_run_arn: Option<String>,
    resource_arn: Option<String>,
    name: Option<String>,
}

/// The resource an AWS API call acts on, for its policy check and the audit log: the ARN
/// it names, or for a create, the ARN it would make; `None` when it names none (a List, a
/// task token's call).
fn resource(operation: &str, body: &[u8], aws: &crate::config::AwsSection) -> Option<String> {
    let n = serde_json::from_slice::<Named>(body).ok()?;
    let kind = match operation {
        "CreateStateMachine" => Some("stateMachine"),
        "CreateActivity" => Some("activity"),
        _ => None,
    };
    if let (Some(kind), Some(name)) = (kind, &n.name) {
        return Some(format!(
            "arn:aws:states:{}:{}:{kind}:{name}",
            aws.region, aws.account
        ));
    }
    n.execution_arn
        .or(n.state_machine_alias_arn)
        .or(n.state_machine_version_arn)
        .or(n.state_machine_arn)
        .or(n.activity_arn)
        .or(n.map_run_arn)
        .or(n.resource_arn)
}

impl<'a> Audit<'a> {
    pub(super) fn new(request_id: &'a str, headers: &HeaderMap) -> Audit<'a> {
        let target = (headers.get("x-amz-target"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        Audit {
            request_id,
            known: target.starts_with("AWSStepFunctions."),
            operation: target
                .strip_prefix("AWSStepFunctions.")
                .unwrap_or(target)
                .to_string(),
            principal: None,
            resource: None,
        }
    }

    /// The operation's name (`StartExecution`), or the whole target when it is not one of
    /// Step Functions'.
    pub(super) fn operation(&self) -> &str {
        &self.operation
    }

    /// The caller was authenticated (or authentication is off) and the call names this
    /// resource.
    pub(super) fn called(&mut self, principal: Option<&str>, resource: Option<String>) {
        self.principal = principal.map(str::to_string);
        self.resource = resource;
    }

    /// Writes the record: `ok`, or the error's code.
    pub(super) fn record(self, error: Option<&ApiError>) {
        let outcome = error.map_or("ok", |e| e.code.name());
        tracing::info!(
            target: "trellis::audit",
            request_id = self.request_id,
            principal = self.principal.as_deref().unwrap_or("-"),
            operation = %self.operation,
            resource = self.resource.as_deref().unwrap_or("-"),
            outcome,
            "AWS API call"
        );
    }
}
