//! Interpreter throughput: state transitions per second through `Execution::step`.
//!
//! `cargo bench -p trellis-asl --bench step`

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::{json, Map, Value};
use trellis_asl::exec::ExecutionInfo;
use trellis_asl::{Execution, Input, Limits, ManualEnv, StateMachine};

fn machine(def: &Value) -> Arc<StateMachine> {
    trellis_asl::parse(&def.to_string(), Default::default()).unwrap()
}

fn pass_chain(n: usize) -> Value {
    let mut states = Map::new();
    for i in 0..n {
        let mut s =
            json!({"Type": "Pass", "Parameters": {"id.$": "$.id", "step": i, "tags.$": "$.tags"}});
        if i + 1 == n {
            s["End"] = json!(true);
        } else {
            s["Next"] = json!(format!("S{}", i + 1));
        }
        states.insert(format!("S{i}"), s);
    }
    json!({"StartAt": "S0", "States": states})
}

fn choice_loop() -> Value {
    json!({"StartAt": "Init", "States": {
        "Init": {"Type": "Pass", "Parameters": {"i": 0, "n.$": "$.n"}, "Next": "Check"},
        "Check": {"Type": "Choice", "Choices": [{"Variable": "$.i", "NumericLessThanPath": "$.n", "Next": "Inc"}], "Default": "Done"},
        "Inc": {"Type": "Pass", "Parameters": {"i.$": "States.MathAdd($.i, 1)", "n.$": "$.n"}, "Next": "Check"},
        "Done": {"Type": "Succeed"}
    }})
}

fn inline_map() -> Value {
    json!({"StartAt": "M", "States": {"M": {"Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 0,
        "ItemSelector": {"v.$": "$$.Map.Item.Value", "i.$": "$$.Map.Item.Index"},
        "ItemProcessor": {"StartAt": "P", "States": {"P": {"Type": "Pass", "Parameters": {"x.$": "$.v"}, "End": true}}},
        "End": true}}})
}

fn run(sm: &Arc<StateMachine>, input: &Value, history: bool) -> usize {
    let limits = Limits {
        record_history: history,
        max_history_events: u64::MAX,
        ..Limits::default()
    };
    let info = ExecutionInfo::new("us-east-1", "000000000000", "bench", "run", input.clone());
    let mut exec = Execution::new(sm.clone(), info, limits);
    let mut env = ManualEnv::new(1_700_000_000_000, 1);
    let out = exec.step(Input::Start, &mut env);
    assert_eq!(
        exec.status(),
        trellis_asl::ExecStatus::Succeeded,
        "{:?}",
        exec.outcome()
    );
    out.events.len()
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("transitions");
    let chain = machine(&pass_chain(100));
    let input = json!({"id": "order-1", "tags": ["a", "b"]});
    for history in [false, true] {
        g.throughput(Throughput::Elements(100));
        g.bench_with_input(
            BenchmarkId::new(
                "pass_chain_100",
                if history { "history" } else { "no_history" },
            ),
            &history,
            |b, &h| b.iter(|| run(&chain, &input, h)),
        );
    }
    let lp = machine(&choice_loop());
    let n = 100;
    for history in [false, true] {
        // Each round trip is a Choice and a Pass: 2 transitions per iteration.
        g.throughput(Throughput::Elements(2 * n + 2));
        g.bench_with_input(
            BenchmarkId::new(
                "choice_loop_100",
                if history { "history" } else { "no_history" },
            ),
            &history,
            |b, &h| b.iter(|| run(&lp, &json!({"n": n}), h)),
        );
    }
    let map = machine(&inline_map());
    let items = json!({"items": (0..1000).map(|i| json!({"sku": i})).collect::<Vec<_>>()});
    for history in [false, true] {
        g.throughput(Throughput::Elements(1001));
        g.bench_with_input(
            BenchmarkId::new(
                "inline_map_1000",
                if history { "history" } else { "no_history" },
            ),
            &history,
            |b, &h| b.iter(|| run(&map, &items, h)),
        );
    }
    g.finish();
}

criterion_group!(step, benches);
criterion_main!(step);
