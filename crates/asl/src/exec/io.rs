//! A DISTRIBUTED Map's S3 reads and writes: its `ItemReader` before the Map Run starts,
//! its `ResultWriter` once the children are done. Each is a task of its own kind
//! ([`TaskKind::ReadItems`], [`TaskKind::WriteResults`]) that the host carries out; neither
//! writes task events.

use serde_json::Value;

use super::*;
use crate::definition::{Kind, Reader, State};
use crate::error::names;
use crate::export::{ChildResult, WriteResults};
use crate::items::{ItemFormat, ItemSource, ReadItems};
use crate::json;

impl Execution {
    /// Asks the host for the items the Map's `ItemReader` names.
    pub(super) fn start_reader(
        &mut self,
        fid: FrameId,
        st: &State,
        reader: &Reader,
        input: &Value,
        env: &mut dyn Env,
    ) {
        let fail = |cause: String| Failure::new(names::ITEM_READER_FAILED, cause);
        if let Some(why) = &reader.unsupported {
            return self.data_failed(fid, fail(why.clone()), "ItemReader", env);
        }
        let args = match &reader.arguments {
            Some(t) => match self.eval_template(fid, st, t, input, "ItemReader", env) {
                Ok(v) => v,
                Err(f) => return self.data_failed(fid, f, "ItemReader", env),
            },
            None => Value::Null,
        };
        let text = |k: &str| args.get(k).and_then(Value::as_str).map(str::to_string);
        let Some(bucket) = text("Bucket").filter(|b| !b.is_empty()) else {
            let f = fail("The ItemReader's parameters must name a 'Bucket'".into());
            return self.data_failed(fid, f, "ItemReader", env);
        };
        let source = if reader.listing {
            ItemSource::Listing {
                bucket,
                prefix: text("Prefix"),
            }
        } else {
            let Some(key) = text("Key").filter(|k| !k.is_empty()) else {
                let f = fail("The ItemReader's parameters must name a 'Key'".into());
                return self.data_failed(fid, f, "ItemReader", env);
            };
            ItemSource::Object {
                bucket,
                key,
                version_id: text("VersionId"),
            }
        };
        let max_items = match &reader.max_items {
            Some(d) => {
                match self.dynamic_int(fid, st, d, input, "MaxItems", 0, env) {
                    Ok(n) if n <= 100_000_000 => n as u64,
                    Ok(n) => {
                        let msg = format!("The value for the field 'MaxItems' must be at most 100000000, but was {n}");
                        return self.data_failed(fid, Failure::runtime(msg), "MaxItems", env);
                    }
                    Err(f) => return self.data_failed(fid, f, "MaxItems", env),
                }
            }
            None => 0,
        };
        let mut format = reader.format.clone();
        // ItemsPath, with a JSON reader, selects the array inside the object read.
        if let Kind::Map {
            items_path: Some(p),
            ..
        } = &st.kind
        {
            if !p.is_root_only() {
                match (&mut format, p.as_pointer()) {
                    (
                        Some(ItemFormat::Json {
                            pointer: ptr @ None,
                        }),
                        Some(q),
                    ) => *ptr = Some(q),
                    _ => {
                        let f = fail(format!("The ItemsPath '{}' cannot select items read by this ItemReader: only a plain path into a JSON object can (or use ItemsPointer)", p.as_str()));
                        return self.data_failed(fid, f, "ItemsPath", env);
                    }
                }
            }
        }
        let action = if reader.listing {
            "listObjectsV2"
        } else {
            "getObject"
        };
        let request = ReadItems {
            source,
            format,
            max_items,
        };
        let task_id = self.io_task(fid, st, action, args, TaskKind::ReadItems(request));
        self.active_mut(fid).waiting = Waiting::Reader { task_id };
    }

    /// Exports a finished Map Run's results to S3: the Map state ends as `then` says once
    /// they are written.
    pub(super) fn start_writer(
        &mut self,
        fid: FrameId,
        results: Vec<ChildResult>,
        map_run_arn: String,
        then: AfterWrite,
        env: &mut dyn Env,
    ) {
        let sm = self.sm.clone();
        let st = sm.state(self.frame(fid).block, self.active(fid).state);
        let Kind::Map { distributed, .. } = &st.kind else {
            return;
        };
        let Some(w) = &distributed.result_writer else {
            return;
        };
        let input = self.active(fid).eff().clone();
        let args = match &w.arguments {
            Some(t) => match self.eval_template(fid, st, t, &input, "ResultWriter", env) {
                Ok(v) => v,
                Err(f) => return self.data_failed(fid, f, "ResultWriter", env),
            },
            None => Value::Null,
        };
        let text = |k: &str| args.get(k).and_then(Value::as_str).map(str::to_string);
        let Some(bucket) = text("Bucket").filter(|b| !b.is_empty()) else {
            let f = Failure::new(
                names::RESULT_WRITER_FAILED,
                "The ResultWriter's parameters must name a 'Bucket'",
            );
            return self.data_failed(fid, f, "ResultWriter", env);
        };
        let request = WriteResults {
            bucket,
            prefix: text("Prefix").unwrap_or_default(),
            map_run_arn,
            transformation: w.config.transformation(true),
            output_type: w.config.output_type,
            results,
        };
        let then = match then {
            AfterWrite::Succeed { summary, .. } => AfterWrite::Succeed {
                summary,
                output: request.state_output(),
            },
            fail => fail,
        };
        let task_id = self.io_task(fid, st, "putObject", args, TaskKind::WriteResults(request));
        self.active_mut(fid).waiting = Waiting::Writer { task_id, then };
    }

    /// Issues a reader's or writer's task.
    fn io_task(
        &mut self,
        fid: FrameId,
        st: &State,
        action: &str,
        parameters: Value,
        kind: TaskKind,
    ) -> u64 {
        let task_id = self.st.next_task_id;
        self.st.next_task_id += 1;
        self.st.tasks.insert(task_id, fid);
        self.out.commands.push(Command::InvokeTask(TaskRequest {
            task_id,
            execution_arn: self.st.info.execution_arn.clone(),
            state_name: st.name.clone(),
            resource: Resource::Service {
                service: "s3".into(),
                action: action.into(),
                pattern: crate::definition::Pattern::RequestResponse,
            },
            resource_arn: format!("arn:aws:states:::s3:{action}"),
            parameters,
            timeout_seconds: None,
            heartbeat_seconds: None,
            token: None,
            credentials: None,
            attempt: 0,
            kind,
        }));
        task_id
    }

    /// The Map frame waiting for this reader's or writer's task.
    pub(super) fn io_frame(&self, task_id: u64) -> Option<FrameId> {
        let fid = *self.st.tasks.get(&task_id)?;
        match &self.frame(fid).active.as_ref()?.waiting {
            Waiting::Reader { task_id: t } | Waiting::Writer { task_id: t, .. }
                if *t == task_id =>
            {
                Some(fid)
            }
            _ => None,
        }
    }

    /// A reader's or writer's task ended: `Ok` with its output, or its failure.
    pub(super) fn on_io_done(
        &mut self,
        fid: FrameId,
        task_id: u64,
        result: Result<Value, Failure>,
        env: &mut dyn Env,
    ) {
        self.st.tasks.remove(&task_id);
        let waiting = std::mem::replace(&mut self.active_mut(fid).waiting, Waiting::Nothing);
        match waiting {
            Waiting::Reader { .. } => match result {
                Ok(Value::Array(items)) => {
                    let sm = self.sm.clone();
                    let st = sm.state(self.frame(fid).block, self.active(fid).state);
                    let input = self.active(fid).eff().clone();
                    self.map_over(fid, st, items, None, input, env);
                }
                Ok(other) => {
                    let f = Failure::new(
                        names::ITEM_READER_FAILED,
                        format!(
                            "The ItemReader produced {}, not an array of items",
                            json::type_name(&other)
                        ),
                    );
                    self.data_failed(fid, f, "ItemReader", env);
                }
                Err(f) => {
                    let f = io_failure(f, names::ITEM_READER_FAILED);
                    self.data_failed(fid, f, "ItemReader", env);
                }
            },
            Waiting::Writer { then, .. } => match (then, result) {
                (AfterWrite::Succeed { summary, output }, Ok(_)) => {
                    self.end_run(summary, MapRunStatus::Succeeded);
                    self.emit(Some(fid), EventType::MapRunSucceeded, || None);
                    self.emit(Some(fid), EventType::MapStateSucceeded, || None);
                    self.complete(fid, output, None, env);
                }
                (AfterWrite::Succeed { summary, .. }, Err(f)) => {
                    let f = io_failure(f, names::RESULT_WRITER_FAILED);
                    self.end_run(summary, MapRunStatus::Failed);
                    let (e, c) = (f.error.clone(), f.cause.clone());
                    self.emit(Some(fid), EventType::MapRunFailed, || {
                        details([
                            ("error", e.map(Value::String).unwrap_or(Value::Null)),
                            ("cause", c.map(Value::String).unwrap_or(Value::Null)),
                        ])
                    });
                    self.emit(Some(fid), EventType::MapStateFailed, || None);
                    self.state_failed(fid, f, env);
                }
                (AfterWrite::Fail { summary, failure }, _) => {
                    self.run_failed(fid, summary, failure, env);
                }
            },
            other => self.active_mut(fid).waiting = other,
        }
    }

    /// The name and ARN of a DISTRIBUTED Map's child, and of what it runs: derived from the
    /// Map Run and the item's index, not from `env`, so a child's identity does not depend
    /// on how the children run and a retried start names the same child.
    pub(super) fn child_identity(map_run_arn: &str, index: usize) -> (String, String, String) {
        // arn:…:mapRun:{machine}/{label}:{id} -> the children's machine, `{machine}/{label}`.
        let machine = map_run_arn
            .split(":mapRun:")
            .nth(1)
            .and_then(|r| r.rsplit_once(':'))
            .map(|(m, _)| m.to_string())
            .unwrap_or_default();
        let prefix = map_run_arn.split(":mapRun:").next().unwrap_or_default();
        let mut seed =
            crate::env::SplitMix64::new(super::flow::fnv1a(&format!("{map_run_arn}#{index}")));
        let name = crate::env::uuid_v4(&mut seed);
        (
            format!("{prefix}:execution:{machine}:{name}"),
            format!("{prefix}:stateMachine:{machine}"),
            name,
        )
    }

    /// A child of a Map with a `ResultWriter` started: its record begins.
    pub(super) fn export_started(&mut self, fid: FrameId, slot: usize, input: &Value) {
        let now = self.now;
        let Waiting::Children(c) = &mut self.active_mut(fid).waiting else {
            return;
        };
        let (Some(export), Some(run)) = (c.export.as_mut(), c.run.as_ref()) else {
            return;
        };
        let (execution_arn, state_machine_arn, name) = Self::child_identity(&run.arn, slot);
        if let Some(e) = export.get_mut(slot) {
            *e = Some(ChildResult {
                execution_arn,
                name,
                state_machine_arn,
                input: input.clone(),
                status: "RUNNING".into(),
                output: None,
                error: None,
                cause: None,
                start_ms: now,
                stop_ms: now,
            });
        }
    }

    /// A child of a Map with a `ResultWriter` ended: its record is complete.
    pub(super) fn export_ended(
        &mut self,
        fid: FrameId,
        slot: usize,
        status: &str,
        output: Option<&Value>,
        failure: Option<&Failure>,
    ) {
        let now = self.now;
        let Some(Some(Frame {
            active: Some(a), ..
        })) = self.st.frames.get_mut(fid)
        else {
            return;
        };
        let Waiting::Children(c) = &mut a.waiting else {
            return;
        };
        let Some(Some(r)) = c.export.as_mut().and_then(|e| e.get_mut(slot)) else {
            return;
        };
        r.status = status.to_string();
        r.output = output.cloned();
        r.error = failure.and_then(|f| f.error.clone());
        r.cause = failure.and_then(|f| f.cause.clone());
        r.stop_ms = now;
    }
}

/// A reader's or writer's failure as the state reports it: the host's error when it gave
/// one of the two names, else `name` with the host's words as the cause.
fn io_failure(f: Failure, name: &str) -> Failure {
    match f.error.as_deref() {
        Some(e) if e == names::ITEM_READER_FAILED || e == names::RESULT_WRITER_FAILED => f,
        Some(e) => Failure::new(
            name,
            match f.cause {
                Some(c) => format!("{e}: {c}"),
                None => e.to_string(),
            },
        ),
        None => Failure::new(name, f.cause.unwrap_or_default()),
    }
}
