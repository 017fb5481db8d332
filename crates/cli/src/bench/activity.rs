//! `trellisctl bench --activity`: the activity round trip, timed step by step.
//!
//! Each worker runs one execution at a time of a machine whose single state is an activity
//! task: `StartExecution`, `GetActivityTask` until it hands a task out, `SendTaskSuccess`,
//! then `DescribeExecution` until the execution it answered has SUCCEEDED. Over gRPC, so
//! the figures are the node's and not a scripting client's.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use serde_json::json;
use trellis_client::{v1 as pb, Client};

use super::{percentile, Bench};
use crate::output::*;

/// The steps of one round trip, in order.
const STEPS: [&str; 5] = ["start", "hand-out", "answer", "end seen", "round trip"];

/// The longest a worker waits for a task it was promised, or for the execution it
/// answered to end, before the bench fails.
const PATIENCE: Duration = Duration::from_secs(30);

pub(crate) async fn bench_activity(c: &Client, b: &Bench, j: bool) -> Result<()> {
    let name = format!("trellisctl-bench-activity-{}", std::process::id());
    let activity = c
        .activities
        .clone()
        .create_activity(pb::CreateActivityRequest { name: name.clone() })
        .await
        .map_err(api)?
        .into_inner()
        .activity_arn;
    let definition = json!({"StartAt": "Work", "States": {
        "Work": {"Type": "Task", "Resource": activity, "End": true}}});
    let machine =
        super::create_machine(c, &name, &definition, pb::StateMachineType::Standard).await;
    let r = match &machine {
        Ok(m) => {
            let r = run(c, b, j, &name, m, &activity).await;
            r.and(super::cleanup(c, b, m).await)
        }
        Err(_) => Ok(()),
    };
    // The activity goes with --cleanup even when the machine could not be made.
    let deleted = if b.cleanup {
        c.activities
            .clone()
            .delete_activity(pb::DeleteActivityRequest {
                activity_arn: activity,
            })
            .await
            .map(drop)
            .map_err(api)
    } else {
        Ok(())
    };
    machine.and(r).and(deleted)
}

async fn run(
    c: &Client,
    b: &Bench,
    j: bool,
    name: &str,
    machine: &str,
    activity: &str,
) -> Result<()> {
    let bar = super::progress(b.executions, "round trips");
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for w in 0..b.concurrency.max(1) {
        let (c, machine, activity) = (c.clone(), machine.to_string(), activity.to_string());
        let (next, bar, total) = (next.clone(), bar.clone(), b.executions);
        set.spawn(async move {
            let mut rows = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(rows);
                }
                rows.push(round_trip(&c, &machine, &activity, w, i).await?);
                bar.inc(1);
            }
        });
    }
    let mut rows: Vec<[Duration; 5]> = Vec::new();
    while let Some(r) = set.join_next().await {
        rows.extend(r??);
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let mut steps = serde_json::Map::new();
    let mut lines = Vec::new();
    for (k, step) in STEPS.iter().enumerate() {
        let mut xs: Vec<Duration> = rows.iter().map(|r| r[k]).collect();
        xs.sort_unstable();
        let (p50, p99) = (percentile(&xs, 0.5), percentile(&xs, 0.99));
        steps.insert(step.to_string(), json!({"p50": p50, "p99": p99}));
        lines.push(format!("  {step:<12} p50 {p50:>7.3} ms  p99 {p99:>7.3} ms"));
    }
    if j {
        out!(
            "{}",
            json!({"machine": name, "roundTrips": rows.len(), "concurrency": b.concurrency,
                "seconds": elapsed, "roundTripsPerSecond": rows.len() as f64 / elapsed,
                "latencyMs": steps})
        );
    } else {
        out!(
            "{} activity round trips in {elapsed:.2}s (concurrency {})",
            rows.len(),
            b.concurrency
        );
        for l in lines {
            out!("{l}");
        }
    }
    Ok(())
}

/// One execution through its activity task; the time of each step of [`STEPS`].
async fn round_trip(
    c: &Client,
    machine: &str,
    activity: &str,
    worker: usize,
    i: u64,
) -> Result<[Duration; 5]> {
    let t0 = Instant::now();
    c.executions
        .clone()
        .start_execution(pb::StartExecutionRequest {
            state_machine_arn: machine.to_string(),
            name: format!("a{i}"),
            input: json!({"n": i}).to_string(),
        })
        .await
        .map_err(api)?;
    let t1 = Instant::now();
    // With several workers, the task handed out may be another worker's execution: this
    // worker answers it and waits for that one's end.
    let task = loop {
        let t = c
            .activities
            .clone()
            .get_activity_task(pb::GetActivityTaskRequest {
                activity_arn: activity.to_string(),
                worker_name: format!("bench-{worker}"),
            })
            .await
            .map_err(api)?
            .into_inner();
        if !t.task_token.is_empty() {
            break t;
        }
        if t1.elapsed() > PATIENCE {
            return Err(anyhow!(
                "no task handed out for execution a{i} in {PATIENCE:?}"
            ));
        }
    };
    let t2 = Instant::now();
    let n = serde_json::from_str::<serde_json::Value>(&task.input)
        .ok()
        .and_then(|v| v["n"].as_u64())
        .ok_or_else(|| anyhow!("a task's input is not the bench's: {}", task.input))?;
    c.activities
        .clone()
        .send_task_success(pb::SendTaskSuccessRequest {
            task_token: task.task_token,
            output: "{}".into(),
            request_id: 0,
        })
        .await
        .map_err(api)?;
    let t3 = Instant::now();
    let answered = format!(
        "{}:a{n}",
        machine.replacen(":stateMachine:", ":execution:", 1)
    );
    loop {
        let e = super::describe(c, &answered).await?;
        match e.status.as_str() {
            "SUCCEEDED" => break,
            "RUNNING" if t3.elapsed() < PATIENCE => {}
            s => return Err(anyhow!("execution a{n} is {s} after its answer")),
        }
    }
    let t4 = Instant::now();
    Ok([t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0])
}
