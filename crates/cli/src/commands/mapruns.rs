//! `trellisctl maprun`.

use anyhow::Result;
use serde_json::{json, Value};
use trellis_client::{v1 as pb, Client};

use crate::args::*;
use crate::output::*;

fn counts_json(c: Option<pb::MapRunCounts>) -> Value {
    let c = c.unwrap_or_default();
    json!({"pending": c.pending, "running": c.running, "succeeded": c.succeeded, "failed": c.failed,
        "timedOut": c.timed_out, "aborted": c.aborted, "total": c.total})
}

pub(crate) fn map_run_json(m: &pb::MapRun) -> Value {
    json!({"mapRunArn": m.map_run_arn, "executionArn": m.execution_arn,
        "stateMachineArn": m.state_machine_arn, "status": m.status, "startDate": m.start_date,
        "stopDate": m.stop_date, "maxConcurrency": m.max_concurrency,
        "toleratedFailureCount": m.tolerated_failure_count,
        "toleratedFailurePercentage": m.tolerated_failure_percentage,
        "itemCounts": counts_json(m.item_counts), "executionCounts": counts_json(m.execution_counts),
        "redriveCount": m.redrive_count, "redriveDate": m.redrive_date})
}

/// Item or child counts as `succeeded/total` with what else is not zero.
fn counts(c: Option<pb::MapRunCounts>) -> String {
    let c = c.unwrap_or_default();
    let mut s = format!("{}/{} succeeded", c.succeeded, c.total);
    for (n, what) in [
        (c.running, "running"),
        (c.pending, "pending"),
        (c.failed, "failed"),
        (c.timed_out, "timed out"),
        (c.aborted, "aborted"),
    ] {
        if n > 0 {
            s.push_str(&format!(", {n} {what}"));
        }
    }
    s
}

/// `maprun describe` for people: one field a line, dates readable.
fn describe_lines(m: &pb::MapRun) -> Vec<String> {
    let stopped = match took(m.start_date, m.stop_date) {
        t if t.is_empty() => ms(m.stop_date),
        t => format!("{} (after {t})", ms(m.stop_date)),
    };
    let tolerated = match (m.tolerated_failure_count, m.tolerated_failure_percentage) {
        (0, 0.0) => "none".to_string(),
        (n, p) => format!("{n} failures or {p}%"),
    };
    fields(&[
        ("map run", m.map_run_arn.clone()),
        ("execution", m.execution_arn.clone()),
        ("machine", m.state_machine_arn.clone()),
        ("status", m.status.clone()),
        ("started", ms(m.start_date)),
        ("stopped", stopped),
        ("concurrency", m.max_concurrency.to_string()),
        ("tolerated", tolerated),
        ("items", counts(m.item_counts)),
        ("children", counts(m.execution_counts)),
        (
            "redriven",
            match m.redrive_count {
                0 => String::new(),
                n => format!("{n} times, last {}", ms(m.redrive_date)),
            },
        ),
    ])
}

pub(crate) async fn maprun(c: &mut Client, j: bool, cmd: Maprun) -> Result<()> {
    match cmd {
        Maprun::List { execution_arn } => {
            let runs = all_pages(|next_token| {
                let (mut c, execution_arn) = (c.executions.clone(), execution_arn.clone());
                async move {
                    let r = c
                        .list_map_runs(pb::ListMapRunsRequest {
                            execution_arn,
                            max_results: 1000,
                            next_token,
                        })
                        .await
                        .map_err(api)?
                        .into_inner();
                    Ok((r.map_runs, r.next_token))
                }
            })
            .await?;
            if j {
                out!("{}", Value::Array(runs.iter().map(map_run_json).collect()));
            } else {
                table(
                    &[
                        "MAP RUN", "STATUS", "STARTED", "STOPPED", "CHILDREN", "FAILED",
                    ],
                    runs.iter()
                        .map(|m| {
                            let e = m.execution_counts.unwrap_or_default();
                            vec![
                                m.map_run_arn.clone(),
                                m.status.clone(),
                                ms(m.start_date),
                                ms(m.stop_date),
                                format!("{}/{}", e.succeeded, e.total),
                                (e.failed + e.timed_out).to_string(),
                            ]
                        })
                        .collect(),
                );
            }
        }
        Maprun::Update {
            map_run_arn,
            max_concurrency,
            tolerated_failure_count,
            tolerated_failure_percentage,
        } => {
            c.executions
                .update_map_run(pb::UpdateMapRunRequest {
                    map_run_arn,
                    max_concurrency,
                    tolerated_failure_count,
                    tolerated_failure_percentage,
                    execution_arn: String::new(),
                })
                .await
                .map_err(api)?;
        }
        Maprun::Describe { map_run_arn } => {
            let m = c
                .executions
                .describe_map_run(pb::DescribeMapRunRequest { map_run_arn })
                .await
                .map_err(api)?
                .into_inner();
            if j {
                out!("{}", map_run_json(&m));
            } else {
                for line in describe_lines(&m) {
                    out!("{line}");
                }
            }
        }
    }
    Ok(())
}
