//! `trellisctl bench`: the load generator.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use serde_json::{json, Value};
use trellis_client::{v1 as pb, Client};

use crate::output::*;

mod activity;

#[derive(clap::Args)]
pub(crate) struct Bench {
    /// Executions to run.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) executions: u64,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    pub(crate) concurrency: usize,
    /// Use an EXPRESS machine and StartSyncExecution.
    #[arg(long)]
    pub(crate) express: bool,
    /// Requests per second (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub(crate) rate: u64,
    /// Describe every Standard execution right after its start (one more RPC each) instead
    /// of checking them all with ListExecutions at the end.
    #[arg(long)]
    pub(crate) describe_each: bool,
    /// Instead of many executions, run one Map over this many items (a Pass child each)
    /// and report children per second.
    #[arg(long, default_value_t = 0)]
    pub(crate) map_items: u64,
    /// The Map's MaxConcurrency (0 = unbounded).
    #[arg(long, default_value_t = 1000)]
    pub(crate) map_concurrency: u64,
    /// Run the Map INLINE (iterations inside the execution) instead of DISTRIBUTED (each
    /// child an execution on its own shard).
    #[arg(long)]
    pub(crate) inline: bool,
    /// Delete the bench's state machine afterwards, whatever the outcome (its executions
    /// stay until the cluster's retention deletes them, as on AWS).
    #[arg(long)]
    pub(crate) cleanup: bool,
    /// Instead of the 10-state machine, time the activity round trip: each of the
    /// --concurrency workers runs one execution of a one-activity machine at a time
    /// (StartExecution, GetActivityTask, SendTaskSuccess, DescribeExecution until it ends).
    #[arg(long)]
    pub(crate) activity: bool,
    /// Hold every Standard execution in a Wait state of this many seconds after its fourth
    /// state (0: no Wait): executions stay RUNNING, to measure what waiting ones cost.
    #[arg(long, default_value_t = 0)]
    pub(crate) wait_seconds: u64,
}

/// A progress bar of `total` steps on stderr, drawn only when stderr is a terminal.
pub(crate) fn progress(total: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
        "{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {what} ({{per_sec}})"
    )) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Deletes the bench's machine when asked to.
async fn cleanup(c: &Client, b: &Bench, arn: &str) -> Result<()> {
    if b.cleanup {
        c.state_machines
            .clone()
            .delete_state_machine(pb::DeleteStateMachineRequest {
                state_machine_arn: arn.to_string(),
            })
            .await
            .map_err(api)?;
    }
    Ok(())
}

/// Creates the bench's machine `name` (not published) and returns its ARN.
async fn create_machine(
    c: &Client,
    name: &str,
    definition: &Value,
    ty: pb::StateMachineType,
) -> Result<String> {
    Ok(c.state_machines
        .clone()
        .create_state_machine(pb::CreateStateMachineRequest {
            name: name.to_string(),
            definition: definition.to_string(),
            role_arn: "arn:aws:iam::000000000000:role/bench".into(),
            r#type: ty as i32,
            publish: false,
            version_description: String::new(),
            settings: None,
        })
        .await
        .map_err(api)?
        .into_inner()
        .state_machine_arn)
}

/// `DescribeExecution`.
async fn describe(c: &Client, arn: &str) -> Result<pb::Execution> {
    Ok(c.executions
        .clone()
        .describe_execution(pb::DescribeExecutionRequest {
            execution_arn: arn.to_string(),
        })
        .await
        .map_err(api)?
        .into_inner())
}

/// One Map over `items` generated in the state (`[0..items-1]`, so the input stays small),
/// each child a Pass state that doubles its item; the state's output is the number of
/// results (the results themselves stay under the payload limit that way).
pub(crate) fn map_machine(items: u64, max_concurrency: u64, inline: bool) -> Value {
    let mode = if inline { "INLINE" } else { "DISTRIBUTED" };
    let mut config = json!({"Mode": mode});
    if !inline {
        config["ExecutionType"] = json!("STANDARD");
    }
    json!({"QueryLanguage": "JSONata", "StartAt": "Fan", "States": {"Fan": {
        "Type": "Map", "Items": format!("{{% [0..{}] %}}", items.saturating_sub(1)),
        "MaxConcurrency": max_concurrency,
        "ItemProcessor": {"ProcessorConfig": config, "StartAt": "Double", "States": {
            "Double": {"Type": "Pass", "Output": "{% $states.input * 2 %}", "End": true}}},
        "Output": "{% $count($states.result) %}", "End": true}}})
}

/// Runs one Map execution of `b.map_items` items and reports children per second.
pub(crate) async fn bench_map(c: &Client, b: &Bench, j: bool) -> Result<()> {
    let mode = if b.inline { "INLINE" } else { "DISTRIBUTED" };
    let name = format!(
        "trellisctl-bench-map-{}-{}",
        mode.to_lowercase(),
        std::process::id()
    );
    let definition = map_machine(b.map_items, b.map_concurrency, b.inline);
    let arn = create_machine(c, &name, &definition, pb::StateMachineType::Standard).await?;
    let r = run_map(c, b, j, &name, &arn).await;
    let cleaned = cleanup(c, b, &arn).await;
    r.and(cleaned)
}

async fn run_map(c: &Client, b: &Bench, j: bool, name: &str, arn: &str) -> Result<()> {
    let mode = if b.inline { "INLINE" } else { "DISTRIBUTED" };
    let started = Instant::now();
    let exec = c
        .executions
        .clone()
        .start_execution(pb::StartExecutionRequest {
            state_machine_arn: arn.to_string(),
            name: "map".into(),
            input: "{}".into(),
        })
        .await
        .map_err(api)?
        .into_inner()
        .execution_arn;
    // Poll until it ends: at most an hour.
    let e = loop {
        let e = describe(c, &exec).await?;
        if e.status != "RUNNING" {
            break e;
        }
        if started.elapsed() > Duration::from_secs(3600) {
            return Err(anyhow!("{exec} still runs after an hour"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elapsed = started.elapsed().as_secs_f64();
    if e.status != "SUCCEEDED" || e.output.as_deref() != Some(&*b.map_items.to_string()) {
        return Err(anyhow!(
            "the map ended {} with output {:?} ({} {})",
            e.status,
            e.output,
            e.error,
            e.cause
        ));
    }
    let per_second = b.map_items as f64 / elapsed;
    let v = json!({"machine": name, "map": mode, "items": b.map_items,
        "maxConcurrency": b.map_concurrency, "seconds": elapsed, "childrenPerSecond": per_second});
    if j {
        out!("{v}");
    } else {
        out!(
            "one {mode} Map of {} items (MaxConcurrency {}) in {elapsed:.2}s",
            b.map_items,
            b.map_concurrency
        );
        out!("  children/s     {per_second:>10.1}");
    }
    Ok(())
}

/// [`bench_machine`], with a Wait of `seconds` after its fourth state when `seconds > 0`.
pub(crate) fn bench_machine_waiting(seconds: u64) -> Value {
    let mut m = bench_machine();
    if seconds > 0 {
        m["States"]["P4"]["Next"] = json!("Hold");
        m["States"]["Hold"] = json!({"Type": "Wait", "Seconds": seconds, "Next": "Pick"});
    }
    m
}

/// A 10-state Pass/Choice machine: four Pass states, a Choice, four more Pass states and a
/// Succeed — every execution makes 10 transitions.
pub(crate) fn bench_machine() -> Value {
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

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

pub(crate) async fn bench(c: &Client, b: Bench, j: bool) -> Result<()> {
    if b.map_items > 0 {
        return bench_map(c, &b, j).await;
    }
    if b.activity {
        if b.express || b.wait_seconds > 0 || b.describe_each || b.rate > 0 {
            return Err(anyhow!(
                "--activity times its own machine: it goes with none of --express, --wait-seconds, --describe-each, --rate"
            ));
        }
        return activity::bench_activity(c, &b, j).await;
    }
    if b.wait_seconds > 0 && (b.express || b.describe_each) {
        return Err(anyhow!(
            "--wait-seconds holds Standard executions: it goes with neither --express nor --describe-each"
        ));
    }
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
    let arn = create_machine(c, &name, &bench_machine_waiting(b.wait_seconds), ty).await?;
    let r = run(c, &b, j, &name, &arn).await;
    let cleaned = cleanup(c, &b, &arn).await;
    r.and(cleaned)
}

async fn run(c: &Client, b: &Bench, j: bool, name: &str, arn: &str) -> Result<()> {
    let kind = if b.express { "EXPRESS" } else { "STANDARD" };
    let bar = progress(b.executions, "executions");
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..b.concurrency.max(1) {
        let (c, arn, next, bar) = (c.clone(), arn.to_string(), next.clone(), bar.clone());
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
                        bar.inc(1);
                        continue;
                    }
                    // Confirm this one ended before starting the next.
                    describe(&c, &r.execution_arn).await?.status
                };
                if status != "SUCCEEDED" {
                    return Err(anyhow!("execution b{i} ended {status}"));
                }
                lat.push(t0.elapsed());
                bar.inc(1);
            }
        });
    }
    let mut lat = Vec::new();
    while let Some(r) = set.join_next().await {
        lat.extend(r??);
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    if !b.express && !b.describe_each {
        // Every execution must have ended SUCCEEDED (or wait RUNNING in its Wait).
        let list = |s| crate::commands::executions::list_executions(c, arn, Some(s));
        let mut ok = list("SUCCEEDED").await?.len() as u64;
        if b.wait_seconds > 0 {
            ok += list("RUNNING").await?.len() as u64;
        }
        if ok != lat.len() as u64 {
            let want = if b.wait_seconds > 0 {
                "RUNNING or SUCCEEDED"
            } else {
                "SUCCEEDED"
            };
            return Err(anyhow!("only {ok} of {} executions {want}", lat.len()));
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
