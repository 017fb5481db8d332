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
    /// The child's index in its Map Run: its name and ARNs follow ([`child_identity`]).
    pub index: usize,
    /// The input, as compact JSON text (what the record holds; far smaller than a `Value`).
    pub input: String,
    /// `SUCCEEDED`, `FAILED`, `TIMED_OUT` or `ABORTED`.
    pub status: String,
    /// The output, as compact JSON text.
    pub output: Option<String>,
    pub error: Option<String>,
    pub cause: Option<String>,
    pub start_ms: i64,
    pub stop_ms: i64,
}

impl ChildResult {
    pub fn succeeded(&self) -> bool {
        self.status == "SUCCEEDED"
    }

    /// The child's execution record (`Transformation` `NONE`), in the Map Run
    /// `map_run_arn`.
    pub fn record(&self, map_run_arn: &str) -> Value {
        let (execution_arn, state_machine_arn, name) = child_identity(map_run_arn, self.index);
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
        m.insert("ExecutionArn".into(), s(&execution_arn));
        m.insert("Input".into(), Value::String(self.input.clone()));
        m.insert("InputDetails".into(), included());
        m.insert("Name".into(), s(&name));
        if let Some(o) = &self.output {
            m.insert("Output".into(), Value::String(o.clone()));
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
        m.insert("StateMachineArn".into(), s(&state_machine_arn));
        m.insert("Status".into(), s(&self.status));
        m.insert("StopDate".into(), s(&json::iso_millis(self.stop_ms)));
        Value::Object(m)
    }
}

/// The children's results in item order, shaped by `t`: a failed child is always its
/// execution record.
pub fn shape(results: &[ChildResult], t: Transformation, map_run_arn: &str) -> Vec<Value> {
    let mut out = Vec::with_capacity(results.len());
    for r in results {
        let output = match (&r.output, t) {
            (Some(o), Transformation::Compact | Transformation::Flatten) if r.succeeded() => {
                serde_json::from_str::<Value>(o).ok()
            }
            _ => None,
        };
        match (output, t) {
            (Some(Value::Array(a)), Transformation::Flatten) => out.extend(a),
            (Some(o), _) => out.push(o),
            (None, _) => out.push(r.record(map_run_arn)),
        }
    }
    out
}

/// The ARN, state machine ARN and name of child `index` of a Map Run: derived from the
/// Map Run and the index, not from randomness, so a child's identity does not depend on how
/// the children run and a retried start names the same child.
pub fn child_identity(map_run_arn: &str, index: usize) -> (String, String, String) {
    // arn:…:mapRun:{machine}/{label}:{id} -> the children's machine, `{machine}/{label}`.
    let machine = map_run_arn
        .split(":mapRun:")
        .nth(1)
        .and_then(|r| r.rsplit_once(':'))
        .map(|(m, _)| m.to_string())
        .unwrap_or_default();
    let prefix = map_run_arn.split(":mapRun:").next().unwrap_or_default();
    let mut seed =
        crate::env::SplitMix64::new(crate::env::fnv1a(&format!("{map_run_arn}#{index}")));
    let name = crate::env::uuid_v4(&mut seed);
    (
        format!("{prefix}:execution:{machine}:{name}"),
        format!("{prefix}:stateMachine:{machine}"),
        name,
    )
}

/// One file an export wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultFile {
    pub key: String,
    pub size: u64,
}

/// The files an export has written, by outcome, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Written {
    pub succeeded: Vec<ResultFile>,
    pub failed: Vec<ResultFile>,
}

/// The host's errand for a `ResultWriter` that exports to S3: put [`files`] (manifest last)
/// and answer with the [`Written`] they return (`TaskSucceeded`), or fail with
/// `States.ResultWriterFailed`. A long Map Run writes its results as they come, a chunk
/// at a time, and the manifest with the last chunk; writing the same request twice puts the
/// same objects under the same keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteResults {
    pub bucket: String,
    /// `Prefix`, possibly empty.
    pub prefix: String,
    pub map_run_arn: String,
    pub transformation: Transformation,
    pub output_type: OutputType,
    /// Records to write, in chunks; each chunk is its own files.
    pub chunks: Vec<Vec<ChildResult>>,
    /// What earlier writes of the run wrote: this write's files are numbered after them.
    pub written: Written,
    /// The run's last write: `manifest.json` too.
    pub last: bool,
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

    fn body(&self, values: &[Value]) -> Vec<u8> {
        match self.output_type {
            OutputType::Json => json::to_compact(&Value::Array(values.to_vec())).into_bytes(),
            OutputType::Jsonl => {
                let mut b = String::new();
                for v in values {
                    b.push_str(&json::to_compact(v));
                    b.push('\n');
                }
                b.into_bytes()
            }
        }
    }
}

/// The objects a write puts, keys and bodies, `manifest.json` last when it is the run's
/// last: for each chunk, `SUCCEEDED_{n}.json` and `FAILED_{n}.json` (failed, timed-out and
/// aborted children) when it has such results, numbered on from what was written before;
/// and what the run has written once they are.
pub fn files(w: &WriteResults) -> (Vec<(String, Vec<u8>)>, Written) {
    let folder = w.folder();
    let mut out = Vec::new();
    let mut written = w.written.clone();
    for chunk in &w.chunks {
        for ok in [false, true] {
            let chosen: Vec<ChildResult> = chunk
                .iter()
                .filter(|r| r.succeeded() == ok)
                .cloned()
                .collect();
            if chosen.is_empty() {
                continue;
            }
            let (group, list) = if ok {
                ("SUCCEEDED", &mut written.succeeded)
            } else {
                ("FAILED", &mut written.failed)
            };
            let body = w.body(&shape(&chosen, w.transformation, &w.map_run_arn));
            let key = format!("{folder}{group}_{}.json", list.len());
            list.push(ResultFile {
                key: key.clone(),
                size: body.len() as u64,
            });
            out.push((key, body));
        }
    }
    if w.last {
        let list = |files: &[ResultFile]| {
            Value::Array(
                files
                    .iter()
                    .map(|f| {
                        let mut e = Map::new();
                        e.insert("Key".into(), Value::String(f.key.clone()));
                        e.insert("Size".into(), Value::from(f.size));
                        Value::Object(e)
                    })
                    .collect(),
            )
        };
        let mut listed = Map::new();
        listed.insert("FAILED".into(), list(&written.failed));
        listed.insert("PENDING".into(), Value::Array(Vec::new()));
        listed.insert("SUCCEEDED".into(), list(&written.succeeded));
        let mut manifest = Map::new();
        manifest.insert("DestinationBucket".into(), Value::String(w.bucket.clone()));
        manifest.insert("MapRunArn".into(), Value::String(w.map_run_arn.clone()));
        manifest.insert("ResultFiles".into(), Value::Object(listed));
        out.push((
            w.manifest_key(),
            json::to_compact(&Value::Object(manifest)).into_bytes(),
        ));
    }
    (out, written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn child(i: usize, ok: bool, output: Value) -> ChildResult {
        ChildResult {
            index: i,
            input: json!({"i": i}).to_string(),
            status: if ok { "SUCCEEDED" } else { "FAILED" }.into(),
            output: ok.then(|| output.to_string()),
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
        let arn = "arn:aws:states:us-east-1:1:mapRun:m/L:abc";
        let compact = shape(&r, Transformation::Compact, arn);
        assert_eq!(compact[..2], [json!([1, 2]), json!({"a": 1})]);
        assert_eq!(compact[2]["Error"], "Boom");
        let flat = shape(&r, Transformation::Flatten, arn);
        assert_eq!(flat[..3], [json!(1), json!(2), json!({"a": 1})]);
        let none = shape(&r, Transformation::None, arn);
        let (execution_arn, _, name) = child_identity(arn, 0);
        assert_eq!(none[0]["ExecutionArn"], execution_arn.as_str());
        assert_eq!(none[0]["Name"], name.as_str());
        assert!(execution_arn.starts_with("arn:aws:states:us-east-1:1:execution:m/L:"));
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
            chunks: vec![vec![child(0, true, json!(1)), child(1, false, Value::Null)]],
            written: Written::default(),
            last: false,
        };
        assert_eq!(
            w.state_output(),
            json!({"MapRunArn": w.map_run_arn, "ResultWriterDetails": {"Bucket": "out", "Key": "jobs/abc/manifest.json"}})
        );
        // A chunk written while the run goes on: no manifest yet.
        let (f, written) = files(&w);
        let keys: Vec<&str> = f.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["jobs/abc/FAILED_0.json", "jobs/abc/SUCCEEDED_0.json"]
        );
        assert_eq!(f[1].1, b"1\n");
        // The last write numbers its files after the first's, and lists them all.
        let last = WriteResults {
            chunks: vec![vec![child(2, true, json!(2))]],
            written,
            last: true,
            ..w.clone()
        };
        let (f, written) = files(&last);
        let keys: Vec<&str> = f.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["jobs/abc/SUCCEEDED_1.json", "jobs/abc/manifest.json"]
        );
        assert_eq!(written.succeeded.len(), 2);
        let m: Value = serde_json::from_slice(&f[1].1).unwrap();
        assert_eq!(m["DestinationBucket"], "out");
        assert_eq!(m["ResultFiles"]["PENDING"], json!([]));
        assert_eq!(
            m["ResultFiles"]["SUCCEEDED"],
            json!([{"Key": "jobs/abc/SUCCEEDED_0.json", "Size": 2}, {"Key": "jobs/abc/SUCCEEDED_1.json", "Size": 2}])
        );
        assert_eq!(
            m["ResultFiles"]["FAILED"][0]["Key"],
            "jobs/abc/FAILED_0.json"
        );
        // The same write again: the same objects.
        assert_eq!(files(&last).0, f);
        let no_prefix = WriteResults {
            prefix: String::new(),
            ..w
        };
        assert_eq!(no_prefix.manifest_key(), "abc/manifest.json");
    }
}
