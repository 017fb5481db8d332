//! Parse, validate and run arbitrary definitions: nothing may panic or hang.
//!
//! The fuzz input is `DEFINITION` or `DEFINITION \0 INPUT`. Tasks answer from a generator
//! seeded by the input: succeed with their parameters, fail, or stay pending until their
//! timeout. Timers fire on a virtual clock.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use trellis_asl::driver::{Driver, Tasks};
use trellis_asl::env::{Entropy, SplitMix64};
use trellis_asl::exec::{ExecutionInfo, TaskRequest};
use trellis_asl::{Execution, Input, Limits, ManualEnv, Options};

struct Answers(SplitMix64);

impl Tasks for Answers {
    fn invoke(&mut self, t: &TaskRequest) -> Result<Option<Input>, String> {
        Ok(match self.0.next_u64() % 8 {
            0 => Some(Input::TaskFailed {
                task_id: t.task_id,
                error: Some("CustomError".into()),
                cause: Some("fuzz".into()),
            }),
            1 => Some(Input::TaskFailed {
                task_id: t.task_id,
                error: None,
                cause: None,
            }),
            2 if t.timeout_seconds.is_some() || t.heartbeat_seconds.is_some() => None,
            3 => Some(Input::TaskSucceeded {
                task_id: t.task_id,
                output: json!({"n": 1, "s": "x", "a": [1, 2.5, "y", null, true]}),
            }),
            _ => Some(Input::TaskSucceeded {
                task_id: t.task_id,
                output: t.parameters.clone(),
            }),
        })
    }
}

fn seed(data: &[u8]) -> u64 {
    data.iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100_0000_01b3))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (def, input) = text.split_once('\0').unwrap_or((text, ""));
    let _ = trellis_asl::validate::validate(def, Options { express: true });
    let Ok(sm) = trellis_asl::parse(def, Options::default()) else {
        return;
    };
    let input: Value = serde_json::from_str(input)
        .unwrap_or_else(|_| json!({"a": 1, "b": "two", "items": [1, 2, 3], "o": {"k": [true]}}));
    let info = ExecutionInfo::new("us-east-1", "123456789012", "Fuzz", "run", input);
    let limits = Limits {
        max_history_events: 2_000,
        ..Limits::default()
    };
    let mut exec = Execution::new(sm, info, limits);
    let mut env = ManualEnv::new(1_700_000_000_000, seed(data));
    let mut answers = Answers(SplitMix64::new(seed(data) ^ 1));
    let mut driver = Driver::new().max_steps(5_000);
    let _ = driver.run(&mut exec, &mut env, &mut answers);
    for e in driver.history() {
        let _ = e.to_aws_json();
    }
});
