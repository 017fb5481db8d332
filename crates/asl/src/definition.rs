//! The parsed, validated state machine. Built by [`crate::validate`]; immutable afterwards and
//! shared (`Arc`) by every execution of the same revision.

use std::collections::HashMap;

use serde_json::Value;

use crate::choice::Rule;
use crate::path::Path;
use crate::template::Template;

/// `QueryLanguage` of a machine or state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryLanguage {
    JsonPath,
    Jsonata,
}

/// A state machine: a tree of blocks (the top level, Parallel branches, Map processors).
#[derive(Debug)]
pub struct StateMachine {
    pub comment: Option<String>,
    pub query_language: QueryLanguage,
    pub timeout_seconds: Option<u64>,
    /// `blocks[0]` is the top level.
    pub blocks: Vec<Block>,
}

pub type BlockId = usize;
pub type StateId = usize;

/// A `{StartAt, States}` object.
#[derive(Debug)]
pub struct Block {
    pub start_at: StateId,
    pub states: Vec<State>,
    pub by_name: HashMap<String, StateId>,
    /// A Parallel branch or Map ItemProcessor as a definition of its own (`StartAt`,
    /// `States`, and `QueryLanguage` when its state's is JSONata), for running it as a child
    /// execution; `None` for the top level.
    pub source: Option<std::sync::Arc<str>>,
}

/// Where a state goes when it is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Next(StateId),
    End,
}

/// An optional path field: absent means `$`, JSON `null` means "discard".
#[derive(Debug, Clone)]
pub enum PathField {
    Default,
    Null,
    Path(Path),
}

/// A number that is fixed, read from a path, or computed by JSONata.
#[derive(Debug, Clone)]
pub enum Dynamic {
    Fixed(Value),
    Path(Path),
    Expr(Template),
}

/// A string field of a Fail state.
#[derive(Debug, Clone)]
pub enum Text {
    Fixed(String),
    Path(Path),
    Intrinsic(crate::intrinsics::Call),
    Expr(Template),
}

/// A retrier.
#[derive(Debug, Clone)]
pub struct Retrier {
    pub error_equals: Vec<String>,
    pub interval_seconds: f64,
    pub max_attempts: u64,
    pub backoff_rate: f64,
    pub max_delay_seconds: Option<f64>,
    pub jitter_full: bool,
}

/// A catcher.
#[derive(Debug, Clone)]
pub struct Catcher {
    pub error_equals: Vec<String>,
    pub next: StateId,
    pub result_path: PathField,
    pub output: Option<Template>,
    pub assign: Option<Template>,
}

/// The integration pattern of a service task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Pattern {
    RequestResponse,
    Sync,
    Sync2,
    WaitForTaskToken,
}

/// What a Task's `Resource` names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Resource {
    /// `arn:aws:states:<r>:<a>:activity:<name>`
    Activity { arn: String },
    /// A bare Lambda function ARN (legacy `LambdaFunction*` events).
    Lambda { arn: String },
    /// `arn:aws:states:::<service>:<action>[.pattern]`, including `aws-sdk:<svc>:<action>`.
    Service {
        service: String,
        action: String,
        pattern: Pattern,
    },
}

impl Resource {
    /// Parses a Task `Resource`. The error says why it is not valid.
    pub fn parse(arn: &str) -> Result<Resource, String> {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        if parts.len() < 6 || parts[0] != "arn" || parts[1].is_empty() {
            return Err(format!("Resource '{arn}' is not a valid ARN"));
        }
        match (parts[2], parts[5]) {
            ("lambda", rest) if rest.starts_with("function:") && rest.len() > 9 => {
                Ok(Resource::Lambda {
                    arn: arn.to_string(),
                })
            }
            ("states", rest) if rest.starts_with("activity:") && rest.len() > 9 => {
                Ok(Resource::Activity {
                    arn: arn.to_string(),
                })
            }
            ("states", rest) if parts[3].is_empty() && parts[4].is_empty() => {
                let (svc_action, pattern) = if let Some(s) = rest.strip_suffix(".sync:2") {
                    (s, Pattern::Sync2)
                } else if let Some(s) = rest.strip_suffix(".sync") {
                    (s, Pattern::Sync)
                } else if let Some(s) = rest.strip_suffix(".waitForTaskToken") {
                    (s, Pattern::WaitForTaskToken)
                } else {
                    (rest, Pattern::RequestResponse)
                };
                let (service, action) = match svc_action.rsplit_once(':') {
                    Some((svc, action)) if !svc.is_empty() && !action.is_empty() => (svc, action),
                    _ => return Err(format!("Resource '{arn}' does not name a service action")),
                };
                if service.starts_with("aws-sdk") && !service.starts_with("aws-sdk:") {
                    return Err(format!("Resource '{arn}' does not name a service action"));
                }
                Ok(Resource::Service {
                    service: service.to_string(),
                    action: action.to_string(),
                    pattern,
                })
            }
            _ => Err(format!("Resource '{arn}' is not a supported Task resource")),
        }
    }

    /// `resourceType` and `resource` as they appear in Task history events.
    pub fn history_names(&self) -> (String, String) {
        match self {
            Resource::Service {
                service,
                action,
                pattern,
            } => {
                let suffix = match pattern {
                    Pattern::RequestResponse => "",
                    Pattern::Sync => ".sync",
                    Pattern::Sync2 => ".sync:2",
                    Pattern::WaitForTaskToken => ".waitForTaskToken",
                };
                (service.clone(), format!("{action}{suffix}"))
            }
            Resource::Activity { arn } | Resource::Lambda { arn } => (String::new(), arn.clone()),
        }
    }
}

/// Map `ProcessorConfig.Mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapMode {
    Inline,
    Distributed,
}

/// Settings that only a DISTRIBUTED Map has; parsed and validated.
#[derive(Debug, Clone, Default)]
pub struct Distributed {
    pub execution_type: Option<String>,
    pub item_reader: Option<Reader>,
    pub item_batcher: Option<Batcher>,
    pub result_writer: Option<Writer>,
    pub tolerated_failure_count: Option<Dynamic>,
    pub tolerated_failure_percentage: Option<Dynamic>,
    pub label: Option<String>,
}

/// A DISTRIBUTED Map's `ItemReader`: where its items come from, in what form.
#[derive(Debug, Clone)]
pub struct Reader {
    /// `s3:getObject` (one object, decoded by `format`) or `s3:listObjectsV2` (its items
    /// are the objects under a prefix).
    pub listing: bool,
    /// `Parameters` (JSONPath) or `Arguments` (JSONata): `Bucket`, `Key`/`Prefix`,
    /// `VersionId`.
    pub arguments: Option<Template>,
    /// `ReaderConfig` without `MaxItems`; `None` for `s3:listObjectsV2`.
    pub format: Option<crate::items::ItemFormat>,
    /// `MaxItems[Path]`: read at most this many items (0: all).
    pub max_items: Option<Dynamic>,
    /// A `ReaderConfig` AWS accepts and Trellis cannot read (PARQUET, ATHENA_DATA
    /// manifests, LOAD_AND_FLATTEN): the state fails with `States.ItemReaderFailed` and this
    /// cause.
    pub unsupported: Option<String>,
}

/// A DISTRIBUTED Map's `ResultWriter`: the children's results exported to S3 and/or shaped.
#[derive(Debug, Clone)]
pub struct Writer {
    /// `Resource` `s3:putObject`: the results go to S3.
    pub to_s3: bool,
    /// `Parameters` (JSONPath) or `Arguments` (JSONata): `Bucket` and `Prefix`.
    pub arguments: Option<Template>,
    pub config: crate::export::WriterConfig,
}

/// The most bytes of one batch's input, AWS's bound on `MaxInputBytesPerBatch`.
pub const MAX_BATCH_BYTES: u64 = 262_144;

/// A DISTRIBUTED Map's `ItemBatcher`: each child execution gets
/// `{"BatchInput": ..., "Items": [...]}` instead of one item.
#[derive(Debug, Clone, Default)]
pub struct Batcher {
    /// `MaxItemsPerBatch[Path]`: at most this many items per batch.
    pub max_items: Option<Dynamic>,
    /// `MaxInputBytesPerBatch[Path]`: at most this many bytes of JSON per batch input
    /// (AWS's bound, 256 KiB, when absent).
    pub max_bytes: Option<Dynamic>,
    /// `BatchInput`: the same JSON in every batch (a payload template or JSONata).
    pub batch_input: Option<Template>,
}

/// What a state does.
#[derive(Debug)]
pub enum Kind {
    Pass {
        result: Option<Value>,
    },
    Task {
        resource: Resource,
        resource_arn: String,
        timeout_seconds: Option<Dynamic>,
        heartbeat_seconds: Option<Dynamic>,
        credentials: Option<Template>,
    },
    Choice {
        rules: Vec<Rule>,
        default: Option<StateId>,
    },
    Wait {
        wait: Wait,
    },
    Succeed,
    Fail {
        error: Option<Text>,
        cause: Option<Text>,
    },
    Parallel {
        branches: Vec<BlockId>,
    },
    Map {
        processor: BlockId,
        mode: MapMode,
        items_path: Option<Path>,
        items: Option<Template>,
        item_selector: Option<Template>,
        max_concurrency: Dynamic,
        distributed: Distributed,
    },
}

/// How a Wait state waits.
#[derive(Debug, Clone)]
pub enum Wait {
    Seconds(Dynamic),
    Timestamp(Dynamic),
}

/// One state.
#[derive(Debug)]
pub struct State {
    pub name: String,
    pub type_name: &'static str,
    pub query_language: QueryLanguage,
    pub transition: Option<Transition>,
    pub input_path: PathField,
    pub output_path: PathField,
    /// `Parameters` (JSONPath) or `Arguments` (JSONata).
    pub parameters: Option<Template>,
    pub result_selector: Option<Template>,
    pub result_path: PathField,
    /// JSONata `Output`.
    pub output: Option<Template>,
    pub assign: Option<Template>,
    pub retry: Vec<Retrier>,
    pub catch: Vec<Catcher>,
    pub kind: Kind,
}

impl State {
    pub fn is_jsonata(&self) -> bool {
        self.query_language == QueryLanguage::Jsonata
    }

    /// The name of the field that holds [`State::parameters`] in this state's language.
    pub fn parameters_field(&self) -> &'static str {
        if self.is_jsonata() {
            "Arguments"
        } else {
            "Parameters"
        }
    }
}

impl StateMachine {
    pub fn block(&self, id: BlockId) -> &Block {
        &self.blocks[id]
    }

    pub fn state(&self, block: BlockId, id: StateId) -> &State {
        &self.blocks[block].states[id]
    }

    /// Every Task resource ARN in the machine, for connectors and EXPRESS checks.
    pub fn resources(&self) -> impl Iterator<Item = (&State, &Resource)> {
        self.blocks
            .iter()
            .flat_map(|b| b.states.iter())
            .filter_map(|s| match &s.kind {
                Kind::Task { resource, .. } => Some((s, resource)),
                _ => None,
            })
    }

    /// The number of states, counting nested ones.
    pub fn state_count(&self) -> usize {
        self.blocks.iter().map(|b| b.states.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources() {
        assert_eq!(
            Resource::parse("arn:aws:states:::lambda:invoke.waitForTaskToken").unwrap(),
            Resource::Service {
                service: "lambda".into(),
                action: "invoke".into(),
                pattern: Pattern::WaitForTaskToken
            }
        );
        assert_eq!(
            Resource::parse("arn:aws:states:::aws-sdk:s3:getObject")
                .unwrap()
                .history_names(),
            ("aws-sdk:s3".into(), "getObject".into())
        );
        assert_eq!(
            Resource::parse("arn:aws:states:::states:startExecution.sync:2")
                .unwrap()
                .history_names(),
            ("states".into(), "startExecution.sync:2".into())
        );
        assert!(matches!(
            Resource::parse("arn:aws:lambda:us-east-1:123:function:f"),
            Ok(Resource::Lambda { .. })
        ));
        assert!(matches!(
            Resource::parse("arn:aws:states:us-east-1:123:activity:a"),
            Ok(Resource::Activity { .. })
        ));
        assert!(Resource::parse("nope").is_err());
        assert!(Resource::parse("arn:aws:states:::lambda").is_err());
        assert!(Resource::parse("arn:aws:s3:::bucket").is_err());
    }
}
