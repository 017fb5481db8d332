//! The founding examples, run through the `trellis` binary exactly as their walkthroughs say.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn trellis(args: &[&str]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .current_dir(root())
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {stdout:?} stderr {:?}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), line)
}

#[test]
fn product_import_happy_path_and_retry() {
    let expected = json!({"status": "SUCCEEDED", "output": {"batch": "batch-42", "imported": 3, "stock": [
        {"sku": "CHAIR-1", "stock": 12}, {"sku": "TABLE-7", "stock": 3}, {"sku": "LAMP-2", "stock": 40}]}});
    let base = [
        "run",
        "examples/product-import/definition.json",
        "--input-file",
        "examples/product-import/input.json",
        "--mock-config",
        "examples/product-import/mocks.json",
        "--name",
        "batch-42",
    ];
    let (code, line) = trellis(&[&base[..], &["--test-case", "HappyPath"]].concat());
    assert_eq!((code, &line), (0, &expected));
    let (code, mut line) = trellis(
        &[
            &base[..],
            &[
                "--test-case",
                "FlakyTransform",
                "--fast-timers",
                "--history",
            ],
        ]
        .concat(),
    );
    let history = line.as_object_mut().unwrap().remove("history").unwrap();
    assert_eq!((code, &line), (0, &expected));
    let types: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types.iter().filter(|t| **t == "TaskFailed").count(), 1);
    assert_eq!(types.iter().filter(|t| **t == "TaskScheduled").count(), 10);
}

#[test]
fn order_processing_paths() {
    let run = |input: &str, case: &str| {
        trellis(&[
            "run",
            "examples/order-processing/definition.json",
            "--input-file",
            input,
            "--mock-config",
            "examples/order-processing/mocks.json",
            "--test-case",
            case,
        ])
    };
    let input = "examples/order-processing/input.json";
    assert_eq!(
        run(input, "Confirmed"),
        (
            0,
            json!({"status": "SUCCEEDED", "output": {"orderId": "ORD-1001", "status": "SHIPPED", "summary": "149.5 EUR for 2 items"}})
        )
    );
    let cancelled = (
        0,
        json!({"status": "SUCCEEDED", "output": {"orderId": "ORD-1001", "status": "CANCELLED"}}),
    );
    assert_eq!(run(input, "Rejected"), cancelled);
    assert_eq!(run(input, "NoAnswer"), cancelled);
    assert_eq!(
        run("examples/order-processing/empty-order.json", "Confirmed"),
        (
            1,
            json!({"status": "FAILED", "error": "OrderEmpty", "cause": "The order has no items"})
        )
    );
}

#[test]
fn invalid_definition_exits_2() {
    let dir = std::env::temp_dir().join(format!("trellis-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let def = dir.join("bad.json");
    std::fs::write(
        &def,
        r#"{"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "Nowhere"}}}"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["run", def.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MISSING_TRANSITION_TARGET"));
    let (code, line) = trellis(&["validate", def.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert_eq!(line["result"], "FAIL");
    assert_eq!(line["diagnostics"][0]["location"], "/States/A/Next");
}
