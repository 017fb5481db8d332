//! A DISTRIBUTED Map's `ResultWriter`: the children's results shaped by `WriterConfig`, and
//! the files an export to S3 consists of (`SUCCEEDED_0.json`, `FAILED_0.json`, then
//! `manifest.json`). The interpreter builds a [`WriteResults`]; the host puts [`files`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::json;

/// `WriterConfig.Transformation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transformation {
    /// Each child's execution record: ARN, name, input, output or error, status, dates.
    None,
    /// Each child's output alone.
    Compact,
    /// Each child's output, arrays spliced into the result.
    Flatten,
}

/// `WriterConfig.OutputType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum OutputType {
    #[default]
    Json,
    Jsonl,
}

/// `WriterConfig`, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WriterConfig {
    pub transformation: Option<Transformation>,
    pub output_type: OutputType,
}

impl WriterConfig {
    /// The transformation in force: `NONE` when the results go to S3, `COMPACT` when they
    /// stay in the state output, unless `WriterConfig` says otherwise.
    pub fn transformation(&self, to_s3: bool) -> Transformation {
        self.transformation.unwrap_or(if to_s3 {
            Transformation::None
        } else {
            Transformation::Compact
        })
    }
}

/// How one child execution ended, as the writer reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildResult {
    pub execution_arn: String,
    pub name: String,
    pub state_machine_arn: String,
    pub input: Value,
    /// `SUCCEEDED`, `FAILED`, `TIMED_OUT` or `ABORTED`.
    pub status: String,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub cause: Option<String>,
    pub start_ms: i64,
    pub stop_ms: i64,
}

impl ChildResult {
    pub fn succeeded(&self) -> bool {
        self.status == "SUCCEEDED"
    }

    /// The child's execution record (`Transformation` `NONE`).
    pub fn record(&self) -> Value {
        let mut m = Map::new();
        let s = |v: &str| Value::String(v.to_string());
        let included = || {
            let mut d = Map::new();
            d.insert("Included".into(), Value::Bool(true));
            Value::Object(d)
        };
        if let Some(c) = &self.cause {
            m.insert("Cause".into(), s(c));
        }
        if let Some(e) = &self.error {
            m.insert("Error".into(), s(e));
        }
        m.insert("ExecutionArn".into(), s(&self.execution_arn));
        m.insert("Input".into(), Value::String(json::to_compact(&self.input)));
        m.insert("InputDetails".into(), included());
        m.insert("Name".into(), s(&self.name));
        if let Some(o) = &self.output {
            m.insert("Output".into(), Value::String(json::to_compact(o)));
            m.insert("OutputDetails".into(), included());
        }
        m.insert("RedriveCount".into(), Value::from(0));
        if self.succeeded() {
            m.insert("RedriveStatus".into(), s("NOT_REDRIVABLE"));
            m.insert(
                "RedriveStatusReason".into(),
                s("Execution is SUCCEEDED and cannot be redriven"),
            );
        } else {
            m.insert("RedriveStatus".into(), s("REDRIVABLE_BY_MAP_RUN"));
        }
        m.insert("StartDate".into(), s(&json::iso_millis(self.start_ms)));
        m.insert("StateMachineArn".into(), s(&self.state_machine_arn));
        m.insert("Status".into(), s(&self.status));
        m.insert("StopDate".into(), s(&json::iso_millis(self.stop_ms)));
        Value::Object(m)
    }
}

/// The children's results in item order, shaped by `t`: a failed child is always its
/// execution record.
pub fn shape(results: &[ChildResult], t: Transformation) -> Vec<Value> {
    let mut out = Vec::with_capacity(results.len());
    for r in results {
        match (&r.output, t) {
            (Some(o), Transformation::Compact) if r.succeeded() => out.push(o.clone()),
            (Some(Value::Array(a)), Transformation::Flatten) if r.succeeded() => {
                out.extend(a.iter().cloned())
            }
            (Some(o), Transformation::Flatten) if r.succeeded() => out.push(o.clone()),
            _ => out.push(r.record()),
        }
    }
    out
}

/// The host's errand for a `ResultWriter` that exports to S3: put [`files`], then answer
/// with `TaskSucceeded` (any output), or fail with `States.ResultWriterFailed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteResults {
    pub bucket: String,
    /// `Prefix`, possibly empty.
    pub prefix: String,
    pub map_run_arn: String,
    pub transformation: Transformation,
    pub output_type: OutputType,
    /// In item order.
    pub results: Vec<ChildResult>,
}

impl WriteResults {
    /// `{Prefix}/{map run id}/`: where the files go.
    pub fn folder(&self) -> String {
        let id = self.map_run_arn.rsplit(':').next().unwrap_or_default();
        let prefix = self.prefix.trim_end_matches('/');
        if prefix.is_empty() {
            format!("{id}/")
        } else {
            format!("{prefix}/{id}/")
        }
    }

    /// The key of `manifest.json`.
    pub fn manifest_key(&self) -> String {
        format!("{}manifest.json", self.folder())
    }

    /// What the Map state's output is once the files are written.
    pub fn state_output(&self) -> Value {
        let mut d = Map::new();
        d.insert("Bucket".into(), Value::String(self.bucket.clone()));
        d.insert("Key".into(), Value::String(self.manifest_key()));
        let mut m = Map::new();
        m.insert("MapRunArn".into(), Value::String(self.map_run_arn.clone()));
        m.insert("ResultWriterDetails".into(), Value::Object(d));
        Value::Object(m)
    }
}

/// The objects an export writes, keys and bodies, `manifest.json` last: one file per
/// outcome that has results (`SUCCEEDED_0.json`, `FAILED_0.json`), shaped and formatted as
/// `WriterConfig` says.
pub fn files(w: &WriteResults) -> Vec<(String, Vec<u8>)> {
    let folder = w.folder();
    let mut out = Vec::new();
    let mut listed = Map::new();
    for (group, pick) in [("FAILED", false), ("PENDING", false), ("SUCCEEDED", true)] {
        let chosen: Vec<ChildResult> = if group == "PENDING" {
            Vec::new()
        } else {
            w.results
                .iter()
                .filter(|r| r.succeeded() == pick)
                .cloned()
                .collect()
        };
        let mut entries = Vec::new();
        if !chosen.is_empty() {
            let values = shape(&chosen, w.transformation);
            let body = match w.output_type {
                OutputType::Json => json::to_compact(&Value::Array(values)).into_bytes(),
                OutputType::Jsonl => {
                    let mut b = String::new();
                    for v in &values {
                        b.push_str(&json::to_compact(v));
                        b.push('\n');
                    }
                    b.into_bytes()
                }
            };
            let key = format!("{folder}{group}_0.json");
            let mut e = Map::new();
            e.insert("Key".into(), Value::String(key.clone()));
            e.insert("Size".into(), Value::from(body.len()));
            entries.push(Value::Object(e));
            out.push((key, body));
        }
        listed.insert(group.into(), Value::Array(entries));
    }
    let mut manifest = Map::new();
    manifest.insert("DestinationBucket".into(), Value::String(w.bucket.clone()));
    manifest.insert("MapRunArn".into(), Value::String(w.map_run_arn.clone()));
    manifest.insert("ResultFiles".into(), Value::Object(listed));
    out.push((
        w.manifest_key(),
        json::to_compact(&Value::Object(manifest)).into_bytes(),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn child(i: usize, ok: bool, output: Value) -> ChildResult {
        ChildResult {
            execution_arn: format!("arn:aws:states:us-east-1:1:execution:m/L:c{i}"),
            name: format!("c{i}"),
            state_machine_arn: "arn:aws:states:us-east-1:1:stateMachine:m/L".into(),
            input: json!({"i": i}),
            status: if ok { "SUCCEEDED" } else { "FAILED" }.into(),
            output: ok.then_some(output),
            error: (!ok).then(|| "Boom".to_string()),
            cause: (!ok).then(|| "it broke".to_string()),
            start_ms: 0,
            stop_ms: 1_000,
        }
    }

    #[test]
    fn shapes() {
        let r = vec![
            child(0, true, json!([1, 2])),
            child(1, true, json!({"a": 1})),
            child(2, false, Value::Null),
        ];
        let compact = shape(&r, Transformation::Compact);
        assert_eq!(compact[..2], [json!([1, 2]), json!({"a": 1})]);
        assert_eq!(compact[2]["Error"], "Boom");
        let flat = shape(&r, Transformation::Flatten);
        assert_eq!(flat[..3], [json!(1), json!(2), json!({"a": 1})]);
        let none = shape(&r, Transformation::None);
        assert_eq!(none[0]["Output"], "[1,2]");
        assert_eq!(none[0]["Input"], r#"{"i":0}"#);
        assert_eq!(none[0]["Status"], "SUCCEEDED");
        assert_eq!(none[0]["StopDate"], "1970-01-01T00:00:01.000Z");
        assert_eq!(none[2]["Cause"], "it broke");
        assert!(none[2].get("Output").is_none());
    }

    #[test]
    fn export_files() {
        let w = WriteResults {
            bucket: "out".into(),
            prefix: "jobs/".into(),
            map_run_arn: "arn:aws:states:us-east-1:1:mapRun:m/L:abc".into(),
            transformation: Transformation::Compact,
            output_type: OutputType::Jsonl,
            results: vec![child(0, true, json!(1)), child(1, false, Value::Null)],
        };
        assert_eq!(
            w.state_output(),
            json!({"MapRunArn": w.map_run_arn, "ResultWriterDetails": {"Bucket": "out", "Key": "jobs/abc/manifest.json"}})
        );
        let f = files(&w);
        let keys: Vec<&str> = f.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "jobs/abc/FAILED_0.json",
                "jobs/abc/SUCCEEDED_0.json",
                "jobs/abc/manifest.json"
            ]
        );
        assert_eq!(f[1].1, b"1\n");
        let m: Value = serde_json::from_slice(&f[2].1).unwrap();
        assert_eq!(m["DestinationBucket"], "out");
        assert_eq!(m["ResultFiles"]["PENDING"], json!([]));
        assert_eq!(
            m["ResultFiles"]["SUCCEEDED"],
            json!([{"Key": "jobs/abc/SUCCEEDED_0.json", "Size": 2}])
        );
        let no_prefix = WriteResults {
            prefix: String::new(),
            ..w
        };
        assert_eq!(no_prefix.manifest_key(), "abc/manifest.json");
    }
}
