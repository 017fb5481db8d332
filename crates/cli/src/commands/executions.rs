//! `trellisctl exec`: start, describe, list, history, watch, stop, redrive, pause, resume.

use std::time::Instant;

use anyhow::{anyhow, Result};
use serde_json::{json, Value};
use trellis_client::{v1 as pb, Client};

use crate::args::*;
use crate::output::*;

pub(crate) fn execution_json(e: &pb::Execution) -> Value {
    let mut v = json!({"executionArn": e.execution_arn, "stateMachineArn": e.state_machine_arn, "name": e.name,
        "status": e.status, "startDate": e.start_date, "stopDate": e.stop_date, "input": e.input,
        "output": e.output, "error": e.error, "cause": e.cause, "paused": e.paused, "shard": e.shard});
    if !e.map_run_arn.is_empty() {
        v["mapRunArn"] = json!(e.map_run_arn);
    }
    if !e.map_runs.is_empty() {
        v["mapRuns"] = e
            .map_runs
            .iter()
            .map(super::mapruns::map_run_json)
            .collect();
    }
    v
}

/// An execution for people: readable dates, how long it ran, its input and output as
/// compact JSON.
fn describe_lines(e: &pb::Execution) -> Vec<String> {
    let status = if e.paused {
        format!("{} (paused)", e.status)
    } else {
        e.status.clone()
    };
    let stopped = match (ms(e.stop_date), took(e.start_date, e.stop_date)) {
        (s, _) if s == "-" => String::new(),
        (s, t) => format!("{s} (after {t})"),
    };
    let map_runs = if e.map_runs.is_empty() {
        String::new()
    } else {
        format!(
            "{} (trellisctl maprun list {})",
            e.map_runs.len(),
            e.execution_arn
        )
    };
    fields(&[
        ("execution", e.execution_arn.clone()),
        ("machine", e.state_machine_arn.clone()),
        ("status", status),
        ("started", ms(e.start_date)),
        ("stopped", stopped),
        ("shard", e.shard.to_string()),
        ("map run", e.map_run_arn.clone()),
        ("map runs", map_runs),
        ("input", e.input.clone()),
        ("output", e.output.clone().unwrap_or_default()),
        ("error", e.error.clone()),
        ("cause", e.cause.clone()),
    ])
}

pub(crate) async fn exec(c: &mut Client, j: bool, cmd: Exec) -> Result<()> {
    match cmd {
        Exec::Start {
            state_machine_arn,
            name,
            input,
            input_file,
            wait,
        } => {
            let state_machine_arn = machine_arn(c, &state_machine_arn).await?;
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
            if j {
                out!("{}", execution_json(&e));
            } else {
                for line in describe_lines(&e) {
                    out!("{line}");
                }
            }
        }
        Exec::List {
            state_machine_arn,
            status,
        } => {
            let state_machine_arn = machine_arn(c, &state_machine_arn).await?;
            let all = list_executions(c, &state_machine_arn, status.as_deref()).await?;
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
            let all = all_pages(|next_token| {
                let (mut c, arn) = (c.executions.clone(), arn.clone());
                async move {
                    let r = c
                        .get_execution_history(pb::GetExecutionHistoryRequest {
                            execution_arn: arn,
                            max_results: 1000,
                            reverse_order: reverse,
                            next_token,
                            include_execution_data: true,
                        })
                        .await
                        .map_err(api)?
                        .into_inner();
                    Ok((r.events, r.next_token))
                }
            })
            .await?;
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
pub(crate) async fn follow(c: &mut Client, arn: &str, started: Instant, j: bool) -> Result<()> {
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

/// Every execution of a machine, or every child of a Map Run (its ARN has `:mapRun:`), with
/// a status filter or none.
pub(crate) async fn list_executions(
    c: &Client,
    arn: &str,
    status: Option<&str>,
) -> Result<Vec<pb::ExecutionListItem>> {
    let map_run = arn.contains(":mapRun:");
    all_pages(|next_token| {
        let mut c = c.executions.clone();
        let (machine, run) = if map_run {
            (String::new(), arn.to_string())
        } else {
            (arn.to_string(), String::new())
        };
        let req = pb::ListExecutionsRequest {
            state_machine_arn: machine,
            map_run_arn: run,
            status_filter: status.unwrap_or_default().to_string(),
            max_results: 1000,
            next_token,
            redrive_filter_redriven: false,
        };
        async move {
            let r = c.list_executions(req).await.map_err(api)?.into_inner();
            Ok((r.executions, r.next_token))
        }
    })
    .await
}
