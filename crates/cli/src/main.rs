//! `trellisctl`: manage state machines, executions and activities, inspect the cluster, and
//! generate load — over gRPC only.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use trellis_client::{v1 as pb, Client};

#[derive(Parser)]
#[command(
    name = "trellisctl",
    version,
    about = "Trellis command-line client (gRPC)"
)]
struct Cli {
    /// gRPC endpoint of any node.
    #[arg(
        long,
        global = true,
        env = "TRELLIS_ENDPOINT",
        default_value = "http://127.0.0.1:7300"
    )]
    endpoint: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// State machines.
    #[command(subcommand)]
    Sm(Sm),
    /// Executions.
    #[command(subcommand)]
    Exec(Exec),
    /// Activities.
    #[command(subcommand)]
    Activity(Activity),
    /// Cluster health.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Cluster members: list, drain, remove.
    #[command(subcommand)]
    Nodes(NodesCmd),
    /// Shards: list, show, move a replica, transfer the leadership, rebalance.
    #[command(subcommand)]
    Shards(ShardsCmd),
    /// Pause or resume the placement driver.
    #[command(subcommand)]
    Placement(PlacementCmd),
    /// What the stuck-execution detector found.
    Doctor,
    /// Load generator: start executions and report throughput and latency.
    Bench(Bench),
}

#[derive(Subcommand)]
enum Sm {
    /// Create a state machine from a definition file.
    Create {
        name: String,
        #[arg(long)]
        definition: std::path::PathBuf,
        #[arg(long, default_value = "STANDARD")]
        r#type: String,
        #[arg(long, default_value = "arn:aws:iam::000000000000:role/trellis")]
        role: String,
        #[arg(long)]
        publish: bool,
        /// Cap on concurrently running executions (0 = none).
        #[arg(long, default_value_t = 0)]
        max_concurrent: u32,
    },
    /// Update a state machine's definition.
    Update {
        arn: String,
        #[arg(long)]
        definition: Option<std::path::PathBuf>,
        #[arg(long)]
        publish: bool,
    },
    List,
    Describe {
        arn: String,
    },
    Delete {
        arn: String,
    },
    /// Validate a definition file (ValidateStateMachineDefinition).
    Validate {
        definition: std::path::PathBuf,
        #[arg(long)]
        express: bool,
    },
}

#[derive(Subcommand)]
enum Exec {
    /// Start an execution.
    Start {
        state_machine_arn: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, conflicts_with = "input_file")]
        input: Option<String>,
        #[arg(long)]
        input_file: Option<std::path::PathBuf>,
        /// Follow it: show each state and the elapsed time until it ends.
        #[arg(long)]
        wait: bool,
    },
    Describe {
        arn: String,
    },
    List {
        state_machine_arn: String,
        #[arg(long)]
        status: Option<String>,
    },
    History {
        arn: String,
        #[arg(long)]
        reverse: bool,
    },
    /// Stream history events as they are written.
    Watch {
        arn: String,
    },
    Stop {
        arn: String,
        #[arg(long)]
        error: Option<String>,
        #[arg(long)]
        cause: Option<String>,
    },
    Pause {
        arn: String,
    },
    Resume {
        arn: String,
    },
    Redrive {
        arn: String,
    },
}

#[derive(Subcommand)]
enum Activity {
    Create {
        name: String,
    },
    List,
    /// Wait for one task of the activity and print it.
    Poll {
        arn: String,
        #[arg(long, default_value = "trellisctl")]
        worker: String,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Health, meta leader and voters, under-replicated and leaderless shards, moves in
    /// progress, and the nodes.
    Status,
    /// Same as `nodes list`.
    #[command(hide = true)]
    Nodes,
    /// Same as `shards list`.
    #[command(hide = true)]
    Shards,
}

#[derive(Subcommand)]
enum NodesCmd {
    /// Members with their state, zone, meta role and shard counts.
    List,
    /// Move every leader and replica off a node.
    Drain { id: u64 },
    /// Take a drained node out of the cluster.
    Remove { id: u64 },
}

#[derive(Subcommand)]
enum ShardsCmd {
    /// Every shard: leader, replicas, epoch, term, applied index, lag, live executions.
    List,
    /// One shard.
    Show { id: u32 },
    /// Move the replica on one node to another (waits until done).
    Move {
        id: u32,
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: u64,
    },
    /// Make a replica the shard's leader (waits until it leads).
    TransferLeader {
        id: u32,
        #[arg(long)]
        to: u64,
    },
    /// Start the placement steps due now and print them.
    Rebalance,
}

#[derive(Subcommand)]
enum PlacementCmd {
    /// Stop moving replicas and leaders (failed-node repair too).
    Pause,
    /// Start again.
    Resume,
}

#[derive(clap::Args)]
struct Bench {
    /// Executions to run.
    #[arg(long, default_value_t = 10_000)]
    executions: u64,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Use an EXPRESS machine and StartSyncExecution.
    #[arg(long)]
    express: bool,
    /// Requests per second (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Describe every Standard execution right after its start (one more RPC each) instead
    /// of checking them all with ListExecutions at the end.
    #[arg(long)]
    describe_each: bool,
}

/// `println!` that ends the program quietly when stdout is closed (`trellisctl ... | head`).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("trellisctl: cannot write the output: {e}");
            std::process::exit(1);
        }
    }};
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trellisctl: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn read(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn api(s: tonic::Status) -> anyhow::Error {
    anyhow!("{}", trellis_client::ApiError::from_status(&s))
}

fn ms(t: i64) -> String {
    if t == 0 {
        return "-".into();
    }
    let secs = t / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let days = secs / 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

/// Prints rows as an aligned table.
fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        out!("{}", s.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn type_name(t: i32) -> &'static str {
    if t == pb::StateMachineType::Express as i32 {
        "EXPRESS"
    } else {
        "STANDARD"
    }
}

fn details(e: &pb::HistoryEvent) -> Value {
    serde_json::from_str(&e.details_json).unwrap_or(Value::Null)
}

fn event_json(e: &pb::HistoryEvent) -> Value {
    json!({"id": e.id, "previousEventId": e.previous_event_id, "timestamp": e.timestamp,
           "type": e.r#type, "details": details(e)})
}

fn state_name(e: &pb::HistoryEvent) -> Option<String> {
    let d = details(e);
    d.as_object()?
        .values()
        .find_map(|v| v.get("name").and_then(Value::as_str).map(str::to_string))
}

async fn run(cli: Cli) -> Result<()> {
    let mut c = Client::connect(&cli.endpoint).await?;
    let j = cli.json;
    match cli.command {
        Cmd::Sm(cmd) => sm(&mut c, j, cmd).await,
        Cmd::Exec(cmd) => exec(&mut c, j, cmd).await,
        Cmd::Activity(cmd) => activity(&mut c, j, cmd).await,
        Cmd::Cluster(cmd) => cluster(&mut c, j, cmd).await,
        Cmd::Nodes(cmd) => nodes(&mut c, j, cmd).await,
        Cmd::Shards(cmd) => shards(&mut c, j, cmd).await,
        Cmd::Placement(cmd) => {
            let paused = matches!(cmd, PlacementCmd::Pause);
            c.admin
                .set_placement(pb::SetPlacementRequest { paused })
                .await
                .map_err(api)?;
            if j {
                out!("{}", json!({"placementPaused": paused}));
            } else {
                out!("placement {}", if paused { "paused" } else { "resumed" });
            }
            Ok(())
        }
        Cmd::Doctor => {
            let r = c
                .admin
                .doctor(pb::Empty {})
                .await
                .map_err(api)?
                .into_inner();
            if j {
                out!(
                    "{}",
                    json!({"scannedExecutions": r.scanned_executions, "findings": r.findings.iter().map(|f| json!({
                    "shard": f.shard, "kind": f.kind, "executionArn": f.execution_arn, "detail": f.detail, "repaired": f.repaired})).collect::<Vec<_>>()})
                );
            } else {
                out!(
                    "scanned {} executions, {} findings",
                    r.scanned_executions,
                    r.findings.len()
                );
                table(
                    &["SHARD", "KIND", "EXECUTION", "REPAIRED", "DETAIL"],
                    r.findings
                        .iter()
                        .map(|f| {
                            vec![
                                f.shard.to_string(),
                                f.kind.clone(),
                                f.execution_arn.clone(),
                                f.repaired.to_string(),
                                f.detail.clone(),
                            ]
                        })
                        .collect(),
                );
            }
            Ok(())
        }
        Cmd::Bench(b) => bench(&c, b, j).await,
    }
}

async fn sm(c: &mut Client, j: bool, cmd: Sm) -> Result<()> {
    match cmd {
        Sm::Create {
            name,
            definition,
            r#type,
            role,
            publish,
            max_concurrent,
        } => {
            let ty = match r#type.to_ascii_uppercase().as_str() {
                "STANDARD" => pb::StateMachineType::Standard,
                "EXPRESS" => pb::StateMachineType::Express,
                other => return Err(anyhow!("--type must be STANDARD or EXPRESS, got '{other}'")),
            };
            let r = c
                .state_machines
                .create_state_machine(pb::CreateStateMachineRequest {
                    name,
                    definition: read(&definition)?,
                    role_arn: role,
                    r#type: ty as i32,
                    publish,
                    version_description: String::new(),
                    settings: Some(pb::StateMachineSettings {
                        max_concurrent_executions: max_concurrent,
                    }),
                })
                .await
                .map_err(api)?
                .into_inner();
            if j {
                out!(
                    "{}",
                    json!({"stateMachineArn": r.state_machine_arn, "creationDate": r.creation_date, "stateMachineVersionArn": r.state_machine_version_arn})
                );
            } else {
                out!("{}", r.state_machine_arn);
            }
        }
        Sm::Update {
            arn,
            definition,
            publish,
        } => {
            let definition = definition.map(|d| read(&d)).transpose()?;
            let r = c
                .state_machines
                .update_state_machine(pb::UpdateStateMachineRequest {
                    state_machine_arn: arn,
                    definition,
                    role_arn: None,
                    publish,
                    version_description: String::new(),
                    settings: None,
                })
                .await
                .map_err(api)?
                .into_inner();
            if j {
                out!(
                    "{}",
                    json!({"revisionId": r.revision_id, "updateDate": r.update_date, "stateMachineVersionArn": r.state_machine_version_arn})
                );
            } else {
                out!("revision {}", r.revision_id);
            }
        }
        Sm::List => {
            let mut all = Vec::new();
            let mut token = String::new();
            loop {
                let r = c
                    .state_machines
                    .list_state_machines(pb::ListStateMachinesRequest {
                        max_results: 1000,
                        next_token: token,
                    })
                    .await
                    .map_err(api)?
                    .into_inner();
                all.extend(r.state_machines);
                if r.next_token.is_empty() {
                    break;
                }
                token = r.next_token;
            }
            if j {
                out!("{}", Value::Array(all.iter().map(|m| json!({"stateMachineArn": m.state_machine_arn, "name": m.name, "type": type_name(m.r#type), "creationDate": m.creation_date})).collect()));
            } else {
                table(
                    &["NAME", "TYPE", "CREATED", "ARN"],
                    all.iter()
                        .map(|m| {
                            vec![
                                m.name.clone(),
                                type_name(m.r#type).into(),
                                ms(m.creation_date),
                                m.state_machine_arn.clone(),
                            ]
                        })
                        .collect(),
                );
            }
        }
        Sm::Describe { arn } => {
            let m = c
                .state_machines
                .describe_state_machine(pb::DescribeStateMachineRequest {
                    state_machine_arn: arn,
                })
                .await
                .map_err(api)?
                .into_inner();
            let def: Value =
                serde_json::from_str(&m.definition).unwrap_or(Value::String(m.definition.clone()));
            let v = json!({"stateMachineArn": m.state_machine_arn, "name": m.name, "status": m.status, "type": type_name(m.r#type),
                "roleArn": m.role_arn, "creationDate": m.creation_date, "revisionId": m.revision_id,
                "maxConcurrentExecutions": m.settings.map(|s| s.max_concurrent_executions).unwrap_or(0), "definition": def});
            out!(
                "{}",
                if j {
                    v.to_string()
                } else {
                    serde_json::to_string_pretty(&v)?
                }
            );
        }
        Sm::Delete { arn } => {
            c.state_machines
                .delete_state_machine(pb::DeleteStateMachineRequest {
                    state_machine_arn: arn.clone(),
                })
                .await
                .map_err(api)?;
            if !j {
                out!("deleted {arn}");
            }
        }
        Sm::Validate {
            definition,
            express,
        } => {
            let ty = if express {
                pb::StateMachineType::Express
            } else {
                pb::StateMachineType::Standard
            };
            let r = c
                .state_machines
                .validate_state_machine_definition(pb::ValidateRequest {
                    definition: read(&definition)?,
                    r#type: ty as i32,
                })
                .await
                .map_err(api)?
                .into_inner();
            if j {
                out!(
                    "{}",
                    json!({"result": r.result, "diagnostics": r.diagnostics.iter().map(|d| json!({"severity": d.severity, "code": d.code, "message": d.message, "location": d.location})).collect::<Vec<_>>()})
                );
            } else {
                out!("{}", r.result);
                table(
                    &["SEVERITY", "CODE", "LOCATION", "MESSAGE"],
                    r.diagnostics
                        .iter()
                        .map(|d| {
                            vec![
                                d.severity.clone(),
                                d.code.clone(),
                                d.location.clone(),
                                d.message.clone(),
                            ]
                        })
                        .collect(),
                );
            }
            if r.result != "OK" {
                return Err(anyhow!("the definition is not valid"));
            }
        }
    }
    Ok(())
}

fn execution_json(e: &pb::Execution) -> Value {
    json!({"executionArn": e.execution_arn, "stateMachineArn": e.state_machine_arn, "name": e.name,
        "status": e.status, "startDate": e.start_date, "stopDate": e.stop_date, "input": e.input,
        "output": e.output, "error": e.error, "cause": e.cause, "paused": e.paused, "shard": e.shard})
}

async fn exec(c: &mut Client, j: bool, cmd: Exec) -> Result<()> {
    match cmd {
        Exec::Start {
            state_machine_arn,
            name,
            input,
            input_file,
            wait,
        } => {
            let input = match (input, input_file) {
                (Some(i), _) => i,
                (None, Some(f)) => read(&f)?,
                (None, None) => "{}".into(),
            };
            let started = Instant::now();
            let r = c
                .executions
                .start_execution(pb::StartExecutionRequest {
                    state_machine_arn,
                    name: name.unwrap_or_default(),
                    input,
                })
                .await
                .map_err(api)?
                .into_inner();
            if !wait {
                if j {
                    out!(
                        "{}",
                        json!({"executionArn": r.execution_arn, "startDate": r.start_date})
                    );
                } else {
                    out!("{}", r.execution_arn);
                }
                return Ok(());
            }
            if !j {
                out!("{}", r.execution_arn);
            }
            follow(c, &r.execution_arn, started, j).await?;
            let e = c
                .executions
                .describe_execution(pb::DescribeExecutionRequest {
                    execution_arn: r.execution_arn,
                })
                .await
                .map_err(api)?
                .into_inner();
            if j {
                out!("{}", execution_json(&e));
            } else {
                out!("{} after {:.3}s", e.status, started.elapsed().as_secs_f64());
                if let Some(o) = &e.output {
                    out!("output: {o}");
                }
                if !e.error.is_empty() {
                    out!("error: {}\ncause: {}", e.error, e.cause);
                }
            }
            if e.status != "SUCCEEDED" {
                return Err(anyhow!("the execution ended {}", e.status));
            }
        }
        Exec::Describe { arn } => {
            let e = c
                .executions
                .describe_execution(pb::DescribeExecutionRequest { execution_arn: arn })
                .await
                .map_err(api)?
                .into_inner();
            let v = execution_json(&e);
            out!(
                "{}",
                if j {
                    v.to_string()
                } else {
                    serde_json::to_string_pretty(&v)?
                }
            );
        }
        Exec::List {
            state_machine_arn,
            status,
        } => {
            let mut all = Vec::new();
            let mut token = String::new();
            loop {
                let r = c
                    .executions
                    .list_executions(pb::ListExecutionsRequest {
                        state_machine_arn: state_machine_arn.clone(),
                        status_filter: status.clone().unwrap_or_default(),
                        max_results: 1000,
                        next_token: token,
                        redrive_filter_redriven: false,
                    })
                    .await
                    .map_err(api)?
                    .into_inner();
                all.extend(r.executions);
                if r.next_token.is_empty() {
                    break;
                }
                token = r.next_token;
            }
            if j {
                out!("{}", Value::Array(all.iter().map(|e| json!({"executionArn": e.execution_arn, "name": e.name, "status": e.status, "startDate": e.start_date, "stopDate": e.stop_date})).collect()));
            } else {
                table(
                    &["NAME", "STATUS", "STARTED", "STOPPED"],
                    all.iter()
                        .map(|e| {
                            vec![
                                e.name.clone(),
                                e.status.clone(),
                                ms(e.start_date),
                                ms(e.stop_date),
                            ]
                        })
                        .collect(),
                );
            }
        }
        Exec::History { arn, reverse } => {
            let mut all = Vec::new();
            let mut token = String::new();
            loop {
                let r = c
                    .executions
                    .get_execution_history(pb::GetExecutionHistoryRequest {
                        execution_arn: arn.clone(),
                        max_results: 1000,
                        reverse_order: reverse,
                        next_token: token,
                        include_execution_data: true,
                    })
                    .await
                    .map_err(api)?
                    .into_inner();
                all.extend(r.events);
                if r.next_token.is_empty() {
                    break;
                }
                token = r.next_token;
            }
            if j {
                out!("{}", Value::Array(all.iter().map(event_json).collect()));
            } else {
                table(
                    &["ID", "PREV", "TIME", "TYPE", "STATE"],
                    all.iter()
                        .map(|e| {
                            vec![
                                e.id.to_string(),
                                e.previous_event_id.to_string(),
                                ms(e.timestamp),
                                e.r#type.clone(),
                                state_name(e).unwrap_or_default(),
                            ]
                        })
                        .collect(),
                );
            }
        }
        Exec::Watch { arn } => {
            let mut s = c
                .executions
                .watch_execution(pb::WatchExecutionRequest {
                    execution_arn: arn,
                    after_event_id: 0,
                })
                .await
                .map_err(api)?
                .into_inner();
            while let Some(e) = s.message().await.map_err(api)? {
                if j {
                    out!("{}", event_json(&e));
                } else {
                    out!(
                        "{:>5}  {}  {:<28} {}",
                        e.id,
                        ms(e.timestamp),
                        e.r#type,
                        state_name(&e).unwrap_or_default()
                    );
                }
            }
        }
        Exec::Stop { arn, error, cause } => {
            let r = c
                .executions
                .stop_execution(pb::StopExecutionRequest {
                    execution_arn: arn,
                    error: error.unwrap_or_default(),
                    cause: cause.unwrap_or_default(),
                })
                .await
                .map_err(api)?
                .into_inner();
            if j {
                out!("{}", json!({"stopDate": r.stop_date}));
            } else {
                out!("stopped at {}", ms(r.stop_date));
            }
        }
        Exec::Pause { arn } => {
            c.executions
                .pause_execution(pb::PauseExecutionRequest { execution_arn: arn })
                .await
                .map_err(api)?;
            if !j {
                out!("paused");
            }
        }
        Exec::Resume { arn } => {
            c.executions
                .resume_execution(pb::ResumeExecutionRequest { execution_arn: arn })
                .await
                .map_err(api)?;
            if !j {
                out!("resumed");
            }
        }
        Exec::Redrive { arn } => {
            let r = c
                .executions
                .redrive_execution(pb::RedriveExecutionRequest {
                    execution_arn: arn,
                    client_token: String::new(),
                })
                .await
                .map_err(api)?
                .into_inner();
            if j {
                out!("{}", json!({"redriveDate": r.redrive_date}));
            } else {
                out!("redriven at {}", ms(r.redrive_date));
            }
        }
    }
    Ok(())
}

/// The live view of `exec start --wait`: each state as it is entered, with the elapsed time.
async fn follow(c: &mut Client, arn: &str, started: Instant, j: bool) -> Result<()> {
    let mut s = c
        .executions
        .watch_execution(pb::WatchExecutionRequest {
            execution_arn: arn.into(),
            after_event_id: 0,
        })
        .await
        .map_err(api)?
        .into_inner();
    let mut transitions = 0u64;
    while let Some(e) = s.message().await.map_err(api)? {
        if e.r#type.ends_with("StateEntered") {
            transitions += 1;
            if !j {
                out!(
                    "  [{:>8.3}s] #{transitions:<4} -> {}",
                    started.elapsed().as_secs_f64(),
                    state_name(&e).unwrap_or_default()
                );
            }
        } else if !j
            && (e.r#type.starts_with("Execution") && e.r#type != "ExecutionStarted"
                || e.r#type.ends_with("Failed"))
        {
            out!(
                "  [{:>8.3}s]       {}",
                started.elapsed().as_secs_f64(),
                e.r#type
            );
        }
    }
    Ok(())
}

async fn activity(c: &mut Client, j: bool, cmd: Activity) -> Result<()> {
    match cmd {
        Activity::Create { name } => {
            let r = c
                .activities
                .create_activity(pb::CreateActivityRequest { name })
                .await
                .map_err(api)?
                .into_inner();
            if j {
                out!(
                    "{}",
                    json!({"activityArn": r.activity_arn, "creationDate": r.creation_date})
                );
            } else {
                out!("{}", r.activity_arn);
            }
        }
        Activity::List => {
            let r = c
                .activities
                .list_activities(pb::ListActivitiesRequest {
                    max_results: 1000,
                    next_token: String::new(),
                })
                .await
                .map_err(api)?
                .into_inner();
            if j {
                out!("{}", Value::Array(r.activities.iter().map(|a| json!({"activityArn": a.activity_arn, "name": a.name, "creationDate": a.creation_date})).collect()));
            } else {
                table(
                    &["NAME", "CREATED", "ARN"],
                    r.activities
                        .iter()
                        .map(|a| vec![a.name.clone(), ms(a.creation_date), a.activity_arn.clone()])
                        .collect(),
                );
            }
        }
        Activity::Poll { arn, worker } => {
            let t = c
                .activities
                .get_activity_task(pb::GetActivityTaskRequest {
                    activity_arn: arn,
                    worker_name: worker,
                })
                .await
                .map_err(api)?
                .into_inner();
            if t.task_token.is_empty() {
                return Err(anyhow!("no task arrived within 60 s"));
            }
            out!("{}", json!({"taskToken": t.task_token, "input": t.input}));
        }
    }
    Ok(())
}

const NODE_HEADERS: &[&str] = &[
    "NODE", "STATE", "GRPC", "HTTP", "ZONE", "META", "LEADS", "REPLICAS",
];

fn node_row(n: &pb::Node) -> Vec<String> {
    vec![
        n.id.to_string(),
        n.state.clone(),
        n.grpc_addr.clone(),
        n.http_addr.clone(),
        if n.zone.is_empty() {
            "-".into()
        } else {
            n.zone.clone()
        },
        if n.meta_voter { "voter" } else { "learner" }.into(),
        n.leader_shards.to_string(),
        n.replica_shards.to_string(),
    ]
}

fn node_json(n: &pb::Node) -> Value {
    json!({"id": n.id, "state": n.state, "grpcAddr": n.grpc_addr, "httpAddr": n.http_addr,
        "zone": n.zone, "metaVoter": n.meta_voter, "leaderShards": n.leader_shards,
        "replicaShards": n.replica_shards})
}

const SHARD_HEADERS: &[&str] = &[
    "SHARD",
    "LEADER",
    "REPLICAS",
    "EPOCH",
    "TERM",
    "APPLIED",
    "LAG",
    "EXECUTIONS",
];

fn shard_row(s: &pb::Shard) -> Vec<String> {
    vec![
        s.id.to_string(),
        if s.leader == 0 {
            "-".into()
        } else {
            s.leader.to_string()
        },
        s.replicas
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(","),
        s.epoch.to_string(),
        s.term.to_string(),
        s.applied_index.to_string(),
        s.lag.to_string(),
        s.running_executions.to_string(),
    ]
}

fn shard_json(s: &pb::Shard) -> Value {
    json!({"id": s.id, "leader": s.leader, "replicas": s.replicas, "epoch": s.epoch,
        "term": s.term, "appliedIndex": s.applied_index, "lag": s.lag,
        "liveExecutions": s.running_executions})
}

async fn cluster(c: &mut Client, j: bool, cmd: ClusterCmd) -> Result<()> {
    match cmd {
        ClusterCmd::Status => {
            let s = c
                .admin
                .cluster_status(pb::Empty {})
                .await
                .map_err(api)?
                .into_inner();
            if j {
                out!(
                    "{}",
                    json!({"health": s.health, "nodeId": s.node_id, "metaLeader": s.meta_leader,
                        "metaVoters": s.meta_voters, "shardCount": s.shard_count,
                        "replicationFactor": s.replication_factor,
                        "underReplicated": s.under_replicated, "leaderless": s.leaderless,
                        "moving": s.moving, "placementPaused": s.placement_paused,
                        "nodes": s.nodes.iter().map(node_json).collect::<Vec<_>>()})
                );
            } else {
                out!(
                    "health {}  meta leader {}  meta voters {}  shards {}  replication factor {}",
                    s.health,
                    s.meta_leader,
                    s.meta_voters
                        .iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                    s.shard_count,
                    s.replication_factor
                );
                out!(
                    "under-replicated: {}  leaderless: {}  moving: {}  placement: {}",
                    list_or_none(&s.under_replicated),
                    list_or_none(&s.leaderless),
                    list_or_none(&s.moving),
                    if s.placement_paused {
                        "paused"
                    } else {
                        "active"
                    }
                );
                table(NODE_HEADERS, s.nodes.iter().map(node_row).collect());
            }
            Ok(())
        }
        ClusterCmd::Nodes => nodes(c, j, NodesCmd::List).await,
        ClusterCmd::Shards => shards(c, j, ShardsCmd::List).await,
    }
}

async fn nodes(c: &mut Client, j: bool, cmd: NodesCmd) -> Result<()> {
    match cmd {
        NodesCmd::List => {
            let r = c
                .admin
                .list_nodes(pb::Empty {})
                .await
                .map_err(api)?
                .into_inner();
            if j {
                out!("{}", Value::Array(r.nodes.iter().map(node_json).collect()));
            } else {
                table(NODE_HEADERS, r.nodes.iter().map(node_row).collect());
            }
        }
        NodesCmd::Drain { id } => {
            c.admin
                .drain_node(pb::NodeRequest { node_id: id })
                .await
                .map_err(api)?;
            done(j, &format!("node {id} is draining"));
        }
        NodesCmd::Remove { id } => {
            c.admin
                .remove_node(pb::NodeRequest { node_id: id })
                .await
                .map_err(api)?;
            done(j, &format!("node {id} removed"));
        }
    }
    Ok(())
}

fn done(j: bool, what: &str) {
    if j {
        out!("{}", json!({"ok": true, "message": what}));
    } else {
        out!("{what}");
    }
}

async fn shards(c: &mut Client, j: bool, cmd: ShardsCmd) -> Result<()> {
    match cmd {
        ShardsCmd::List | ShardsCmd::Show { .. } => {
            let r = c
                .admin
                .list_shards(pb::Empty {})
                .await
                .map_err(api)?
                .into_inner();
            let list: Vec<&pb::Shard> = match cmd {
                ShardsCmd::Show { id } => {
                    let s: Vec<_> = r.shards.iter().filter(|s| s.id == id).collect();
                    if s.is_empty() {
                        bail!("no shard {id} (the cluster has {} shards)", r.shards.len());
                    }
                    s
                }
                _ => r.shards.iter().collect(),
            };
            if j {
                if let ShardsCmd::Show { .. } = cmd {
                    out!("{}", shard_json(list[0]));
                } else {
                    out!(
                        "{}",
                        Value::Array(list.iter().map(|s| shard_json(s)).collect())
                    );
                }
            } else {
                table(SHARD_HEADERS, list.iter().map(|s| shard_row(s)).collect());
            }
        }
        ShardsCmd::Move { id, from, to } => {
            c.admin
                .move_shard(pb::MoveShardRequest {
                    shard: id,
                    from,
                    to,
                })
                .await
                .map_err(api)?;
            done(
                j,
                &format!("shard {id} moved from node {from} to node {to}"),
            );
        }
        ShardsCmd::TransferLeader { id, to } => {
            c.admin
                .transfer_shard_leader(pb::TransferShardLeaderRequest { shard: id, to })
                .await
                .map_err(api)?;
            done(j, &format!("node {to} leads shard {id}"));
        }
        ShardsCmd::Rebalance => {
            let r = c
                .admin
                .rebalance(pb::Empty {})
                .await
                .map_err(api)?
                .into_inner();
            if j {
                out!("{}", json!({"steps": r.steps}));
            } else if r.steps.is_empty() {
                out!("balanced: nothing to do");
            } else {
                for s in r.steps {
                    out!("{s}");
                }
            }
        }
    }
    Ok(())
}

fn list_or_none(ids: &[u32]) -> String {
    if ids.is_empty() {
        "none".into()
    } else {
        ids.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A 10-state Pass/Choice machine: four Pass states, a Choice, four more Pass states and a
/// Succeed — every execution makes 10 transitions.
fn bench_machine() -> Value {
    json!({"StartAt": "P1", "States": {
        "P1": {"Type": "Pass", "Parameters": {"n.$": "$.n", "step": 1}, "Next": "P2"},
        "P2": {"Type": "Pass", "Result": 2, "ResultPath": "$.step", "Next": "P3"},
        "P3": {"Type": "Pass", "Result": 3, "ResultPath": "$.step", "Next": "P4"},
        "P4": {"Type": "Pass", "Result": 4, "ResultPath": "$.step", "Next": "Pick"},
        "Pick": {"Type": "Choice", "Choices": [{"Variable": "$.n", "NumericGreaterThanEquals": 0, "Next": "P5"}], "Default": "P5"},
        "P5": {"Type": "Pass", "Result": 5, "ResultPath": "$.step", "Next": "P6"},
        "P6": {"Type": "Pass", "Result": 6, "ResultPath": "$.step", "Next": "P7"},
        "P7": {"Type": "Pass", "Result": 7, "ResultPath": "$.step", "Next": "P8"},
        "P8": {"Type": "Pass", "Result": 8, "ResultPath": "$.step", "Next": "Done"},
        "Done": {"Type": "Succeed"}}})
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn bench(c: &Client, b: Bench, j: bool) -> Result<()> {
    let kind = if b.express { "EXPRESS" } else { "STANDARD" };
    let name = format!(
        "trellisctl-bench-{}-{}",
        kind.to_lowercase(),
        std::process::id()
    );
    let ty = if b.express {
        pb::StateMachineType::Express
    } else {
        pb::StateMachineType::Standard
    };
    let arn = c
        .state_machines
        .clone()
        .create_state_machine(pb::CreateStateMachineRequest {
            name: name.clone(),
            definition: bench_machine().to_string(),
            role_arn: "arn:aws:iam::000000000000:role/bench".into(),
            r#type: ty as i32,
            publish: false,
            version_description: String::new(),
            settings: None,
        })
        .await
        .map_err(api)?
        .into_inner()
        .state_machine_arn;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..b.concurrency.max(1) {
        let (c, arn, next) = (c.clone(), arn.clone(), next.clone());
        let (total, rate, express, describe_each) =
            (b.executions, b.rate, b.express, b.describe_each);
        set.spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(lat);
                }
                if rate > 0 {
                    let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                let t0 = Instant::now();
                let req = pb::StartExecutionRequest {
                    state_machine_arn: arn.clone(),
                    name: format!("b{i}"),
                    input: format!("{{\"n\":{i}}}"),
                };
                let status = if express {
                    c.executions
                        .clone()
                        .start_sync_execution(req)
                        .await
                        .map_err(api)?
                        .into_inner()
                        .status
                } else {
                    let r = c
                        .executions
                        .clone()
                        .start_execution(req)
                        .await
                        .map_err(api)?
                        .into_inner();
                    if !describe_each {
                        // The bench machine runs whole inside the start's Raft entry, so the
                        // reply marks its end; all are checked to have SUCCEEDED at the end.
                        lat.push(t0.elapsed());
                        continue;
                    }
                    // Confirm this one ended before starting the next.
                    c.executions
                        .clone()
                        .describe_execution(pb::DescribeExecutionRequest {
                            execution_arn: r.execution_arn,
                        })
                        .await
                        .map_err(api)?
                        .into_inner()
                        .status
                };
                if status != "SUCCEEDED" {
                    return Err(anyhow!("execution b{i} ended {status}"));
                }
                lat.push(t0.elapsed());
            }
        });
    }
    let mut lat = Vec::new();
    while let Some(r) = set.join_next().await {
        lat.extend(r??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    if !b.express && !b.describe_each {
        // Every execution must have ended SUCCEEDED.
        let mut ok = 0u64;
        let mut token = String::new();
        loop {
            let page = c
                .executions
                .clone()
                .list_executions(pb::ListExecutionsRequest {
                    state_machine_arn: arn.clone(),
                    status_filter: "SUCCEEDED".into(),
                    max_results: 1000,
                    next_token: token,
                    redrive_filter_redriven: false,
                })
                .await
                .map_err(api)?
                .into_inner();
            ok += page.executions.len() as u64;
            if page.next_token.is_empty() {
                break;
            }
            token = page.next_token;
        }
        if ok != lat.len() as u64 {
            return Err(anyhow!("only {ok} of {} executions SUCCEEDED", lat.len()));
        }
    }
    lat.sort_unstable();
    let n = lat.len() as f64;
    let v = json!({"machine": name, "type": kind, "executions": lat.len(), "concurrency": b.concurrency,
        "seconds": elapsed, "executionsPerSecond": n / elapsed, "transitionsPerSecond": n * 10.0 / elapsed,
        "latencyMs": {"p50": percentile(&lat, 0.50), "p99": percentile(&lat, 0.99), "p999": percentile(&lat, 0.999)}});
    if j {
        out!("{v}");
    } else {
        out!(
            "{} {} executions in {:.2}s (concurrency {}{})",
            lat.len(),
            kind,
            elapsed,
            b.concurrency,
            if b.rate > 0 {
                format!(", target {}/s", b.rate)
            } else {
                String::new()
            }
        );
        out!("  executions/s   {:>10.1}", n / elapsed);
        out!("  transitions/s  {:>10.1}", n * 10.0 / elapsed);
        out!(
            "  latency ms     p50 {:.3}  p99 {:.3}  p999 {:.3}",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            percentile(&lat, 0.999)
        );
    }
    Ok(())
}
