//! What bounding proposals in bytes costs: `split_by_bytes` over a batch of 512 ops, each a
//! 1 KB record (input and interpreter state) with three history events, as the executor
//! proposes them under load. `cargo bench -p trellis-shard --bench split`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde_json::json;
use trellis_asl::history::EventType;
use trellis_asl::HistoryEvent;
use trellis_shard::request::split_by_bytes;
use trellis_shard::request::ShardOp;
use trellis_shard::ExecRecord;

fn op(id: u64) -> ShardOp {
    let state = format!(
        "{{\"frames\":[{{\"input\":{{\"k\":\"{}\"}}}}]}}",
        "v".repeat(600)
    );
    let mut record = ExecRecord::new(
        id,
        format!("arn:aws:states:us-east-1:000000000000:execution:M:{id}"),
        id.to_string(),
        "arn:aws:states:us-east-1:000000000000:stateMachine:M".into(),
        1,
        json!({"order": id, "items": ["a", "b", "c"]}).to_string(),
        1,
    );
    record.last_event_id = 3;
    record.state = Some(serde_json::value::RawValue::from_string(state).unwrap());
    let events = (1..=3)
        .map(|i| HistoryEvent {
            id: i,
            previous_event_id: i - 1,
            timestamp_ms: 1,
            event_type: EventType::PassStateEntered,
            details: json!({"name": "S", "input": "{\"order\":1}"})
                .as_object()
                .cloned(),
        })
        .collect();
    ShardOp::Put {
        record: Box::new(record),
        events,
        definition: None,
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("split_by_bytes");
    g.throughput(Throughput::Elements(512));
    g.bench_function("512 ops under the 4 MiB bound", |b| {
        b.iter_batched(
            || (0..512).map(op).collect::<Vec<_>>(),
            |ops| split_by_bytes(ops, 4 << 20),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
