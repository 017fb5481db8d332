//! `trellis run`: one execution, in-process, on the real step function.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};
use trellis_asl::definition::{Pattern, Resource};
use trellis_asl::driver::{Clock, Driver};
use trellis_asl::env::Entropy;
use trellis_asl::exec::{ExecutionInfo, TaskRequest};
use trellis_asl::{Env, ExecStatus, Execution, Input, Limits};
use trellis_shard::executor::BoxFuture;

use crate::connectors::{failed, Connectors};
use crate::mock::{MockCase, Mocked};

#[derive(clap::Args)]
pub struct Args {
    /// The definition file (Amazon States Language JSON).
    definition: PathBuf,
    /// Execution input as JSON text.
    #[arg(long, conflicts_with = "input_file")]
    input: Option<String>,
    /// Read the execution input from a file.
    #[arg(long)]
    input_file: Option<PathBuf>,
    /// Add the AWS GetExecutionHistory events to the output.
    #[arg(long)]
    history: bool,
    /// Fire Wait and retry timers at once (the clock jumps forward).
    #[arg(long)]
    fast_timers: bool,
    /// Map a Lambda function name to an HTTP endpoint: NAME=URL. Repeatable.
    #[arg(long = "function", value_name = "NAME=URL")]
    functions: Vec<String>,
    /// A PEM file of CA certificates to trust for HTTPS calls, besides the system's.
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// A Step Functions Local MockConfigFile.
    #[arg(long, requires = "test_case")]
    mock_config: Option<PathBuf>,
    /// The test case of the mock config to use.
    #[arg(long, requires = "mock_config")]
    test_case: Option<String>,
    /// Execution name (default: a random UUID).
    #[arg(long)]
    name: Option<String>,
    /// State machine name (default: the definition file's stem).
    #[arg(long)]
    state_machine_name: Option<String>,
}

/// Real clock plus an offset that `--fast-timers` moves forward.
struct SystemEnv {
    offset_ms: i64,
    fast_timers: bool,
    rng: crate::ids::Entropy,
}

/// The runner waits for timers in real time; with `--fast-timers` it moves the clock to a
/// timer instead, while no task runs.
impl Clock for SystemEnv {
    fn advance_to(&mut self, at_ms: i64) {
        let now = self.now_ms();
        if self.fast_timers && at_ms > now {
            self.offset_ms += at_ms - now;
        }
    }
}

/// `trellis run`'s tasks: the mock config first, then the connector set. What needs a
/// worker or a callback stops the run with a hint to mock it.
struct RunTasks {
    connectors: Connectors,
    mock: Option<MockCase>,
}

impl trellis_shard::runner::Tasks for RunTasks {
    fn start(&mut self, t: TaskRequest) -> Result<Option<BoxFuture<'static, Input>>, String> {
        if let Some(m) = self.mock.as_mut().and_then(|m| m.next(&t.state_name)) {
            let input = match m {
                Mocked::Return(v) => Input::TaskSucceeded {
                    task_id: t.task_id,
                    output: v,
                },
                Mocked::Throw { error, cause } => Input::TaskFailed {
                    task_id: t.task_id,
                    error,
                    cause,
                },
            };
            return Ok(Some(Box::pin(std::future::ready(input))));
        }
        let callback = || {
            format!(
                "state '{}' waits for a task token callback, which `trellis run` cannot receive; mock it with --mock-config",
                t.state_name
            )
        };
        match &t.resource {
            Resource::Activity { arn } => {
                return Err(format!(
                    "state '{}' waits for activity {arn}; `trellis run` has no activity workers, so mock it with --mock-config",
                    t.state_name
                ))
            }
            Resource::Lambda { .. } => {}
            Resource::Service {
                service,
                action,
                pattern,
            } => {
                let http = service == "http" && action == "invoke";
                let lambda = service == "lambda" && action == "invoke";
                if *pattern == Pattern::WaitForTaskToken
                    || (http && *pattern != Pattern::RequestResponse)
                {
                    return Err(callback());
                }
                if !http && !lambda {
                    let input = failed(
                        t.task_id,
                        "States.Runtime",
                        format!(
                            "`trellis run` has no connector for {}; mock it with --mock-config",
                            t.resource_arn
                        ),
                    );
                    return Ok(Some(Box::pin(std::future::ready(input))));
                }
            }
        }
        let c = self.connectors.clone();
        Ok(Some(Box::pin(async move { c.run_task(t, None).await })))
    }
}

impl Entropy for SystemEnv {
    fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }
}

impl Env for SystemEnv {
    fn now_ms(&mut self) -> i64 {
        wall_ms() + self.offset_ms
    }
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn main(args: Args) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&args.definition)
        .with_context(|| format!("cannot read {}", args.definition.display()))?;
    let sm = match trellis_asl::parse(&text, Default::default()) {
        Ok(sm) => sm,
        Err(trellis_asl::Error::InvalidDefinition(diags)) => {
            for d in &diags {
                eprintln!("{}", serde_json::to_string(d).unwrap_or_default());
            }
            eprintln!(
                "trellis: invalid state machine definition ({} problems)",
                diags.len()
            );
            return Ok(ExitCode::from(2));
        }
        Err(e) => bail!(e),
    };
    let input_text = match (&args.input, &args.input_file) {
        (Some(s), _) => s.clone(),
        (None, Some(p)) => {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?
        }
        (None, None) => "{}".into(),
    };
    let input: Value = serde_json::from_str(&input_text)
        .map_err(|e| anyhow!("the input is not valid JSON: {e}"))?;
    let mut functions = HashMap::new();
    for f in &args.functions {
        let (name, url) = f
            .split_once('=')
            .ok_or_else(|| anyhow!("--function expects NAME=URL, got '{f}'"))?;
        functions.insert(name.to_string(), url.to_string());
    }
    let machine = args
        .state_machine_name
        .clone()
        .or_else(|| {
            args.definition
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "StateMachine".into());
    let mock = match (&args.mock_config, &args.test_case) {
        (Some(p), Some(case)) => {
            let doc: Value = serde_json::from_str(
                &std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read {}", p.display()))?,
            )
            .map_err(|e| anyhow!("{} is not valid JSON: {e}", p.display()))?;
            Some(MockCase::load(&doc, case, None)?)
        }
        _ => None,
    };
    let mut env = SystemEnv {
        offset_ms: 0,
        fast_timers: args.fast_timers,
        rng: crate::ids::Entropy::default(),
    };
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| trellis_asl::env::uuid_v4(&mut env));
    let info = ExecutionInfo::new("us-east-1", "000000000000", &machine, &name, input);
    let mut exec = Execution::new(sm, info, Limits::default());
    let connectors = Connectors::new(
        functions,
        args.ca_file.as_deref(),
        crate::config::AwsSection::default().s3(),
    )?;
    let mut tasks = RunTasks { connectors, mock };

    let mut driver = Driver::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(trellis_shard::runner::run(
        &mut driver,
        &mut exec,
        &mut env,
        &mut tasks,
        trellis_shard::runner::Options {
            fast_timers: args.fast_timers,
            deadline: None,
        },
    ))
    .map_err(|e| anyhow!(e))?;
    let history = driver.into_history();
    let outcome = exec
        .outcome()
        .cloned()
        .ok_or_else(|| anyhow!("the execution ended without an outcome"))?;
    let mut line = serde_json::Map::new();
    line.insert("status".into(), json!(outcome.status.as_str()));
    if outcome.status == ExecStatus::Succeeded {
        line.insert("output".into(), outcome.output.unwrap_or(Value::Null));
    } else {
        line.insert(
            "error".into(),
            outcome.error.map(Value::String).unwrap_or(Value::Null),
        );
        line.insert(
            "cause".into(),
            outcome.cause.map(Value::String).unwrap_or(Value::Null),
        );
    }
    if args.history {
        line.insert(
            "history".into(),
            Value::Array(history.iter().map(|e| e.to_aws_json()).collect()),
        );
    }
    println!("{}", Value::Object(line));
    Ok(if outcome.status == ExecStatus::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
