//! Shard records and history events as `trellis.v1` messages.

use serde_json::Value;
use trellis_proto::v1 as pb;
use trellis_shard::Status;

pub fn execution_pb(rec: &trellis_shard::ExecRecord, shard: u32) -> pb::Execution {
    pb::Execution {
        execution_arn: rec.arn.clone(),
        state_machine_arn: rec.state_machine_arn.clone(),
        name: rec.name.clone(),
        status: rec.status.as_str().into(),
        start_date: rec.start_ms,
        stop_date: rec.stop_ms.unwrap_or(0),
        input: rec.input.clone(),
        output: if rec.status == Status::Succeeded {
            rec.output.clone()
        } else {
            None
        },
        error: rec.error.clone().unwrap_or_default(),
        cause: rec.cause.clone().unwrap_or_default(),
        redrive_count: rec.redrive_count,
        redrive_date: rec.redrive_ms.unwrap_or(0),
        redrive_status: if matches!(
            rec.status,
            Status::Failed | Status::TimedOut | Status::Aborted
        ) {
            "REDRIVABLE"
        } else {
            "NOT_REDRIVABLE"
        }
        .into(),
        redrive_status_reason: match rec.status {
            Status::Running | Status::Queued => {
                "Execution is RUNNING and cannot be redriven".into()
            }
            Status::Succeeded => "Execution is SUCCEEDED and cannot be redriven".into(),
            _ => String::new(),
        },
        state_machine_version_arn: rec.version_arn.clone().unwrap_or_default(),
        state_machine_alias_arn: rec.alias_arn.clone().unwrap_or_default(),
        paused: rec.paused,
        shard,
        map_run_arn: map_run_of(rec),
        map_runs: rec
            .map_runs
            .iter()
            .map(|r| map_run_pb(r, &rec.arn))
            .collect(),
    }
}

/// A Map Run as `trellis.v1.MapRun`; `execution_arn` is the execution that started it.
pub fn map_run_pb(r: &trellis_asl::exec::MapRunSummary, execution_arn: &str) -> pb::MapRun {
    let counts = |c: &trellis_asl::exec::MapRunCounts| pb::MapRunCounts {
        pending: c.pending,
        running: c.running,
        succeeded: c.succeeded,
        failed: c.failed,
        timed_out: c.timed_out,
        aborted: c.aborted,
        total: c.total,
    };
    // arn:…:mapRun:{machine}/{label}:{id} -> arn:…:stateMachine:{machine}/{label}
    let state_machine_arn = r
        .map_run_arn
        .rsplit_once(':')
        .map(|(head, _)| head.replacen(":mapRun:", ":stateMachine:", 1))
        .unwrap_or_default();
    pb::MapRun {
        map_run_arn: r.map_run_arn.clone(),
        execution_arn: execution_arn.to_string(),
        state_machine_arn,
        status: r.status.as_str().into(),
        start_date: r.start_ms,
        stop_date: r.stop_ms.unwrap_or(0),
        max_concurrency: r.max_concurrency,
        tolerated_failure_count: r.tolerated_failure_count,
        tolerated_failure_percentage: r.tolerated_failure_percentage,
        item_counts: Some(counts(&r.items)),
        execution_counts: Some(counts(&r.executions)),
        redrive_count: u32::try_from(r.redrive_count).unwrap_or(u32::MAX),
        redrive_date: r.redrive_ms.unwrap_or(0),
    }
}

/// The Map Run that started a child execution (empty for any other).
pub fn map_run_of(rec: &trellis_shard::ExecRecord) -> String {
    rec.parent
        .as_ref()
        .map(|p| p.map_run_arn.clone())
        .unwrap_or_default()
}

pub fn event_pb(e: &trellis_asl::HistoryEvent) -> pb::HistoryEvent {
    let aws = e.to_aws_json();
    let mut details = serde_json::Map::new();
    if let Value::Object(m) = aws {
        for (k, v) in m {
            if k.ends_with("EventDetails") {
                details.insert(k, v);
            }
        }
    }
    pb::HistoryEvent {
        timestamp: e.timestamp_ms,
        r#type: e.event_type.as_str().into(),
        id: e.id,
        previous_event_id: e.previous_event_id,
        details_json: if details.is_empty() {
            String::new()
        } else {
            Value::Object(details).to_string()
        },
    }
}
