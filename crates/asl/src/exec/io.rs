//! A DISTRIBUTED Map's S3 reads and writes: its `ItemReader` before the Map Run starts,
//! its `ResultWriter` once the children are done. Each is a task of its own kind
//! ([`TaskKind::ReadItems`], [`TaskKind::WriteResults`]) that the host carries out; neither
//! writes task events.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::*;
use crate::definition::{Kind, Reader, State};
use crate::error::names;
use std::collections::BTreeMap;

use crate::export::{ChildResult, WriteResults, Written};
use crate::items::{ItemFormat, ItemSource, Page, ReadCursor, ReadItems};

impl Execution {
    /// Starts a Map whose items its `ItemReader` names: the Map Run starts, then reads its
    /// items page by page as its window moves.
    pub(super) fn start_reader(
        &mut self,
        fid: FrameId,
        st: &State,
        reader: &Reader,
        input: Value,
        env: &mut dyn Env,
    ) {
        let fail = |cause: String| Failure::new(names::ITEM_READER_FAILED, cause);
        if let Some(why) = &reader.unsupported {
            return self.data_failed(fid, fail(why.clone()), "ItemReader", env);
        }
        let args = match &reader.arguments {
            Some(t) => match self.eval_template(fid, st, t, &input, "ItemReader", env) {
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
        let limit = match &reader.max_items {
            Some(d) => {
                match self.dynamic_int(fid, st, d, &input, "MaxItems", 0, env) {
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
        let feed = Feed {
            request: ReadItems {
                source,
                format,
                max_items: 0,
                cursor: ReadCursor::default(),
            },
            limit,
            read: 0,
            in_flight: None,
            ended: false,
            carry: Vec::new(),
            per_child: 1,
            batch: None,
        };
        self.map_over(fid, st, super::children::MapItems::Read(feed), input, env);
    }

    /// Asks the host for a fed Map's next page of items.
    pub(super) fn read_page(&mut self, fid: FrameId) {
        let sm = self.sm.clone();
        let st = sm.state(self.frame(fid).block, self.active(fid).state);
        let task_id = self.st.next_task_id;
        let request = {
            let Waiting::Children(c) = &mut self.active_mut(fid).waiting else {
                return;
            };
            let window = match c.max_concurrency {
                0 => PAGE_MAX,
                n => n,
            };
            let Some(feed) = c.feed.as_mut() else { return };
            // Enough items to fill the window twice, within bounds.
            let mut page = (window as u64)
                .saturating_mul(2)
                .saturating_mul(feed.per_child)
                .clamp(PAGE_MIN, PAGE_MAX as u64);
            if feed.limit > 0 {
                page = page.min(feed.limit - feed.read);
            }
            feed.in_flight = Some(task_id);
            let mut r = feed.request.clone();
            r.max_items = page;
            r
        };
        let action = match request.source {
            ItemSource::Listing { .. } => "listObjectsV2",
            ItemSource::Object { .. } => "getObject",
        };
        let parameters = match &request.source {
            ItemSource::Object {
                bucket,
                key,
                version_id,
            } => {
                let mut m = serde_json::Map::new();
                m.insert("Bucket".into(), Value::String(bucket.clone()));
                m.insert("Key".into(), Value::String(key.clone()));
                if let Some(v) = version_id {
                    m.insert("VersionId".into(), Value::String(v.clone()));
                }
                Value::Object(m)
            }
            ItemSource::Listing { bucket, prefix } => {
                let mut m = serde_json::Map::new();
                m.insert("Bucket".into(), Value::String(bucket.clone()));
                if let Some(p) = prefix {
                    m.insert("Prefix".into(), Value::String(p.clone()));
                }
                Value::Object(m)
            }
        };
        let id = self.io_task(fid, st, action, parameters, TaskKind::ReadItems(request));
        debug_assert_eq!(id, task_id);
    }

    /// A page of items arrived: they become children (batched when the Map batches), and
    /// the window fills. A page that cannot be read fails the Map Run.
    fn on_page(&mut self, fid: FrameId, result: Result<Value, Failure>, env: &mut dyn Env) {
        let page = result.and_then(|v| {
            serde_json::from_value::<Page>(v).map_err(|e| {
                Failure::new(
                    names::ITEM_READER_FAILED,
                    format!("The ItemReader's answer is not a page of items: {e}"),
                )
            })
        });
        let page = match page {
            Ok(p) => p,
            Err(f) => {
                return self.reader_failed(fid, io_failure(f, names::ITEM_READER_FAILED), env)
            }
        };
        let sm = self.sm.clone();
        let st = sm.state(self.frame(fid).block, self.active(fid).state);
        let Kind::Map {
            item_selector,
            distributed,
            ..
        } = &st.kind
        else {
            return;
        };
        let (first, selector_input, carry, ended) = {
            let Waiting::Children(c) = &mut self.active_mut(fid).waiting else {
                return;
            };
            let Some(feed) = c.feed.as_mut() else { return };
            feed.in_flight = None;
            feed.read += page.items.len() as u64;
            feed.ended = page.next.is_none() || (feed.limit > 0 && feed.read >= feed.limit);
            if let Some(next) = page.next {
                feed.request.cursor = next;
            }
            let first = feed.read as usize - page.items.len();
            (
                first,
                c.selector_input.clone(),
                std::mem::take(&mut feed.carry),
                feed.ended,
            )
        };
        let n_items = page.items.len() as u64;
        // New children: the items themselves, or their batches.
        let (children, sizes, carry) = match &distributed.item_batcher {
            None => (page.items, Vec::new(), Vec::new()),
            Some(b) => {
                let batches = self.page_batches(
                    fid,
                    st,
                    b,
                    item_selector.as_ref(),
                    (first, page.items),
                    carry,
                    ended,
                    &selector_input,
                    env,
                );
                match batches {
                    Ok(x) => x,
                    Err((f, field)) => {
                        self.abort_children(fid);
                        if let Waiting::Children(Children { run: Some(r), .. }) =
                            &self.active(fid).waiting
                        {
                            let summary = r.summary;
                            self.end_run(summary, MapRunStatus::Failed);
                        }
                        self.emit(Some(fid), EventType::MapStateFailed, || None);
                        self.active_mut(fid).waiting = Waiting::Nothing;
                        return self.data_failed(fid, f, field, env);
                    }
                }
            }
        };
        let n_children = children.len();
        let summary = {
            let Waiting::Children(c) = &mut self.active_mut(fid).waiting else {
                return;
            };
            if let Some(feed) = c.feed.as_mut() {
                feed.carry = carry;
                if let Some(max) = sizes.iter().max() {
                    feed.per_child = feed.per_child.max(*max);
                }
            }
            c.items.extend(children);
            c.add_children(n_children);
            let before = c.children() - n_children;
            let Some(run) = c.run.as_mut() else { return };
            if !sizes.is_empty() {
                // Batches: each child's items (children before were single items).
                run.sizes.resize(before, 1);
                run.sizes.extend(sizes);
            } else if !run.sizes.is_empty() {
                run.sizes.resize(run.sizes.len() + n_children, 1);
            }
            run.total_items += n_items;
            run.reading = !ended;
            (run.summary, run.exceeded())
        };
        let (summary, exceeded) = summary;
        if let Some(s) = self.st.map_runs.get_mut(summary) {
            s.items.total += n_items;
            s.items.pending += n_items;
            s.executions.total += n_children as u64;
            s.executions.pending += n_children as u64;
        }
        if exceeded {
            // Failures judged against the total, now that it is known.
            return self.run_exceeded(fid, summary, env);
        }
        self.fill_map(fid, env);
        self.settle(fid, env);
    }

    /// A page's items through ItemSelector into batches, after the items carried over from
    /// the page before; the last, partial batch is carried to the next page unless the items
    /// ended. Returns the closed batches, their sizes and the carry.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn page_batches(
        &mut self,
        fid: FrameId,
        st: &State,
        b: &crate::definition::Batcher,
        selector: Option<&crate::template::Template>,
        (first, items): (usize, Vec<Value>),
        carry: Vec<Value>,
        ended: bool,
        input: &Value,
        env: &mut dyn Env,
    ) -> Result<(Vec<Value>, Vec<u64>, Vec<Value>), (Failure, &'static str)> {
        let spec = match &self.feed_of(fid).and_then(|f| f.batch.clone()) {
            Some(spec) => spec.clone(),
            None => self.batch_spec(fid, st, b, input, env)?,
        };
        let max_bytes = spec.max_bytes;
        self.remember_batch(fid, &spec);
        let mut batches = super::batch::Batches::from_spec(spec);
        for item in carry {
            batches.push(item).map_err(|_| {
                (
                    Failure::runtime("a carried item no longer fits"),
                    "ItemBatcher",
                )
            })?;
        }
        for (i, item) in items.into_iter().enumerate() {
            let item = match selector {
                Some(t) => self
                    .select(fid, st, t, input, (first + i, &item, None), env)
                    .map_err(|f| (f, "ItemSelector"))?,
                None => item,
            };
            if let Err(crate::exec::batch::TooLarge(n)) = batches.push(item) {
                let msg = format!("The item at index {} is {n} bytes of JSON, more than a batch of at most {max_bytes} bytes (MaxInputBytesPerBatch) can hold", first + i);
                return Err((Failure::runtime(msg), "MaxInputBytesPerBatch"));
            }
        }
        if ended {
            let (done, sizes) = batches.finish();
            return Ok((done, sizes, Vec::new()));
        }
        let (done, sizes, open) = batches.finish_closed();
        Ok((done, sizes, open))
    }

    fn feed_of(&self, fid: FrameId) -> Option<&Feed> {
        match &self.active(fid).waiting {
            Waiting::Children(c) => c.feed.as_ref(),
            _ => None,
        }
    }

    fn remember_batch(&mut self, fid: FrameId, spec: &super::batch::BatchSpec) {
        if let Waiting::Children(Children { feed: Some(f), .. }) = &mut self.active_mut(fid).waiting
        {
            f.batch.get_or_insert_with(|| spec.clone());
        }
    }

    /// The Map Run cannot read its items: its children are aborted and it fails with
    /// `States.ItemReaderFailed`.
    fn reader_failed(&mut self, fid: FrameId, f: Failure, env: &mut dyn Env) {
        self.abort_children(fid);
        let w = std::mem::replace(&mut self.active_mut(fid).waiting, Waiting::Nothing);
        let Waiting::Children(Children { run: Some(run), .. }) = w else {
            return self.data_failed(fid, f, "ItemReader", env);
        };
        self.run_failed(fid, run.summary, f, env);
    }

    /// A Map with a `ResultWriter`: its export, the destination resolved (the state fails
    /// before its Map Run starts when it cannot be).
    pub(super) fn export_for(
        &mut self,
        fid: FrameId,
        st: &State,
        w: &crate::definition::Writer,
        input: &Value,
        map_run_arn: &str,
        env: &mut dyn Env,
    ) -> Result<Export, Failure> {
        let mut e = Export {
            running: BTreeMap::new(),
            ended: Vec::new(),
            to_s3: None,
            flushing: None,
            in_flush: Vec::new(),
        };
        if !w.to_s3 {
            return Ok(e);
        }
        let args = match &w.arguments {
            Some(t) => self.eval_template(fid, st, t, input, "ResultWriter", env)?,
            None => Value::Null,
        };
        let text = |k: &str| args.get(k).and_then(Value::as_str).map(str::to_string);
        let Some(bucket) = text("Bucket").filter(|b| !b.is_empty()) else {
            return Err(Failure::new(
                names::RESULT_WRITER_FAILED,
                "The ResultWriter's parameters must name a 'Bucket'",
            ));
        };
        e.to_s3 = Some(WriteResults {
            bucket,
            prefix: text("Prefix").unwrap_or_default(),
            map_run_arn: map_run_arn.to_string(),
            transformation: w.config.transformation(true),
            output_type: w.config.output_type,
            chunks: Vec::new(),
            written: Written::default(),
            last: false,
        });
        Ok(e)
    }

    /// The run's last write: what is left of its results, and the manifest. The Map state
    /// ends as `then` says once it is written. A chunk still being written is written again
    /// under the same keys (its write, when it lands, puts the same objects).
    pub(super) fn final_write(&mut self, fid: FrameId, mut e: Export, then: AfterWrite) {
        if let Some(task_id) = e.flushing.take() {
            self.st.tasks.remove(&task_id);
            self.out.commands.push(Command::CancelTask { task_id });
        }
        let Some(mut request) = e.to_s3.take() else {
            return;
        };
        let mut chunks = Vec::new();
        if !e.in_flush.is_empty() {
            chunks.push(std::mem::take(&mut e.in_flush));
        }
        let ended = in_item_order(e.ended);
        if !ended.is_empty() {
            chunks.push(ended);
        }
        request.chunks = chunks;
        request.last = true;
        let then = match then {
            AfterWrite::Succeed { summary, .. } => AfterWrite::Succeed {
                summary,
                output: request.state_output(),
            },
            AfterWrite::Fail {
                summary, failure, ..
            } => AfterWrite::Fail {
                summary,
                failure,
                written: (request.chunks.iter().flatten())
                    .filter(|r| r.succeeded())
                    .map(|r| r.index)
                    .collect(),
            },
        };
        let sm = self.sm.clone();
        let st = sm.state(self.frame(fid).block, self.active(fid).state);
        let args = destination(&request);
        let task_id = self.io_task(fid, st, "putObject", args, TaskKind::WriteResults(request));
        self.active_mut(fid).waiting = Waiting::Writer { task_id, then };
    }

    /// Writes the ended children's records while the run goes on, once enough have ended
    /// and no chunk is being written.
    fn maybe_flush(&mut self, fid: FrameId) {
        let request = {
            let Waiting::Children(c) = &mut self.active_mut(fid).waiting else {
                return;
            };
            let Some(e) = c.export.as_mut() else { return };
            let Some(template) = &e.to_s3 else { return };
            if e.flushing.is_some() || e.ended.len() < FLUSH_RECORDS {
                return;
            }
            e.in_flush = in_item_order(std::mem::take(&mut e.ended));
            let mut r = template.clone();
            r.chunks = vec![e.in_flush.clone()];
            r
        };
        let sm = self.sm.clone();
        let st = sm.state(self.frame(fid).block, self.active(fid).state);
        let args = destination(&request);
        let task_id = self.io_task(fid, st, "putObject", args, TaskKind::WriteResults(request));
        if let Waiting::Children(Children {
            export: Some(e), ..
        }) = &mut self.active_mut(fid).waiting
        {
            e.flushing = Some(task_id);
        }
    }

    /// A chunk of results was written: the run goes on. One that could not be fails the run.
    fn on_flushed(&mut self, fid: FrameId, result: Result<Value, Failure>, env: &mut dyn Env) {
        let written = result.and_then(|v| {
            serde_json::from_value::<Written>(v).map_err(|e| {
                Failure::new(
                    names::RESULT_WRITER_FAILED,
                    format!("The ResultWriter's answer is not a list of files: {e}"),
                )
            })
        });
        let written = match written {
            Ok(w) => w,
            Err(f) => {
                let f = io_failure(f, names::RESULT_WRITER_FAILED);
                self.abort_children(fid);
                let w = std::mem::replace(&mut self.active_mut(fid).waiting, Waiting::Nothing);
                if let Waiting::Children(Children { run: Some(run), .. }) = w {
                    return self.run_failed(fid, run.summary, f, env);
                }
                return self.state_failed(fid, f, env);
            }
        };
        if let Waiting::Children(Children {
            export: Some(e), ..
        }) = &mut self.active_mut(fid).waiting
        {
            e.flushing = None;
            e.in_flush.clear();
            if let Some(t) = e.to_s3.as_mut() {
                t.written = written;
            }
        }
        self.maybe_flush(fid);
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
            Waiting::Writer { task_id: t, .. } if *t == task_id => Some(fid),
            Waiting::Children(Children {
                feed: Some(Feed {
                    in_flight: Some(t), ..
                }),
                ..
            }) if *t == task_id => Some(fid),
            Waiting::Children(Children {
                export: Some(Export {
                    flushing: Some(t), ..
                }),
                ..
            }) if *t == task_id => Some(fid),
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
        if let Waiting::Children(c) = &self.active(fid).waiting {
            let flush = c.export.as_ref().and_then(|e| e.flushing) == Some(task_id);
            return if flush {
                self.on_flushed(fid, result, env)
            } else {
                self.on_page(fid, result, env)
            };
        }
        let waiting = std::mem::replace(&mut self.active_mut(fid).waiting, Waiting::Nothing);
        match waiting {
            Waiting::Writer { then, .. } => match (then, result) {
                (AfterWrite::Succeed { summary, output }, Ok(_)) => {
                    self.end_run(summary, MapRunStatus::Succeeded);
                    self.emit(Some(fid), EventType::MapRunSucceeded, || None);
                    self.emit(Some(fid), EventType::MapStateSucceeded, || None);
                    self.complete(fid, output, None, env);
                }
                (AfterWrite::Succeed { summary, .. }, Err(f)) => {
                    let f = io_failure(f, names::RESULT_WRITER_FAILED);
                    self.run_failed(fid, summary, f, env);
                }
                (
                    AfterWrite::Fail {
                        summary,
                        failure,
                        written,
                    },
                    result,
                ) => {
                    // What a redrive keeps now includes this write's records and files.
                    let files = result
                        .ok()
                        .and_then(|v| serde_json::from_value::<Written>(v).ok());
                    if let (Some(files), Some(k)) = (files, self.st.kept.as_mut()) {
                        k.wrote(written, files);
                    }
                    self.run_failed(fid, summary, failure, env);
                }
            },
            other => self.active_mut(fid).waiting = other,
        }
    }

    /// The ARN, state machine ARN and name of a DISTRIBUTED Map's child.
    pub(super) fn child_identity(map_run_arn: &str, index: usize) -> (String, String, String) {
        crate::export::child_identity(map_run_arn, index)
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
        let _ = run;
        export.running.insert(
            slot,
            ChildResult {
                index: slot,
                input: crate::json::to_compact(input),
                status: "RUNNING".into(),
                output: None,
                error: None,
                cause: None,
                start_ms: now,
                stop_ms: now,
            },
        );
    }

    /// A child of a Map with a `ResultWriter` ended: its record is complete, and written
    /// with the next chunk.
    pub(super) fn export_ended(
        &mut self,
        fid: FrameId,
        slot: usize,
        status: &str,
        output: Option<&Value>,
        failure: Option<&Failure>,
    ) {
        let now = self.now;
        {
            let Some(Some(Frame {
                active: Some(a), ..
            })) = self.st.frames.get_mut(fid)
            else {
                return;
            };
            let Waiting::Children(c) = &mut a.waiting else {
                return;
            };
            let Some(e) = c.export.as_mut() else { return };
            let Some(mut r) = e.running.remove(&slot) else {
                return;
            };
            r.status = status.to_string();
            r.output = output.map(crate::json::to_compact);
            r.error = failure.and_then(|f| f.error.clone());
            r.cause = failure.and_then(|f| f.cause.clone());
            r.stop_ms = now;
            e.ended.push((slot, r));
        }
        self.maybe_flush(fid);
    }
}

/// The records written in one chunk while a run goes on.
const FLUSH_RECORDS: usize = 1000;

/// A Map's `ResultWriter` at work: the records of its children, until they are written.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Export {
    /// Records of running children, by slot.
    running: BTreeMap<usize, ChildResult>,
    /// Records of ended children not written yet (without an export to S3: all of them,
    /// shaped into the state's output at the end), with their slots.
    pub(crate) ended: Vec<(usize, ChildResult)>,
    /// The export to S3 (no chunks), and the files written so far; `None`: the results
    /// stay in the state's output.
    to_s3: Option<WriteResults>,
    /// A chunk being written: its task and its records.
    flushing: Option<u64>,
    in_flush: Vec<ChildResult>,
}

impl Export {
    pub(crate) fn to_s3(&self) -> bool {
        self.to_s3.is_some()
    }

    /// The task writing a chunk, no longer awaited.
    pub(crate) fn cancel(&mut self) -> Option<u64> {
        self.flushing.take()
    }

    /// Children whose records are not in S3 yet: running, ended and waiting for a chunk,
    /// or in the chunk being written.
    pub(crate) fn unwritten(&self) -> std::collections::BTreeSet<usize> {
        (self.running.keys().copied())
            .chain(self.ended.iter().map(|(s, _)| *s))
            .chain(self.in_flush.iter().map(|r| r.index))
            .collect()
    }

    /// The files written to S3 so far (an export to S3 only).
    pub(crate) fn written(&self) -> Option<crate::export::Written> {
        self.to_s3.as_ref().map(|w| w.written.clone())
    }

    /// A redriven run's export: its files are numbered after, and its manifest lists, those
    /// the earlier attempts wrote.
    pub(crate) fn continue_from(&mut self, written: crate::export::Written) {
        if let Some(w) = self.to_s3.as_mut() {
            w.written = written;
        }
    }
}

/// Records in item order (a chunk's files list its children by item).
fn in_item_order(mut ended: Vec<(usize, ChildResult)>) -> Vec<ChildResult> {
    ended.sort_by_key(|(slot, _)| *slot);
    ended.into_iter().map(|(_, r)| r).collect()
}

/// A write's `Bucket` and `Prefix`, as its task's parameters.
fn destination(w: &WriteResults) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("Bucket".into(), Value::String(w.bucket.clone()));
    m.insert("Prefix".into(), Value::String(w.prefix.clone()));
    Value::Object(m)
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

/// The fewest and most items a page asks for.
const PAGE_MIN: u64 = 100;
const PAGE_MAX: usize = 10_000;

/// A Map fed by its `ItemReader`: what to read next, and what was read.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Feed {
    /// The next page's request (its cursor where the last page ended).
    request: ReadItems,
    /// `MaxItems`: 0, all of them.
    limit: u64,
    /// Items read so far.
    read: u64,
    /// The task reading a page, if one is.
    in_flight: Option<u64>,
    /// No more items will come.
    ended: bool,
    /// Items (after ItemSelector) of a batch still open at the end of the last page.
    carry: Vec<Value>,
    /// The most items a child holds so far (a batch's), to size pages.
    per_child: u64,
    /// `ItemBatcher`, resolved with the first page.
    #[serde(default)]
    batch: Option<super::batch::BatchSpec>,
}

impl Feed {
    pub(crate) fn ended(&self) -> bool {
        self.ended && self.in_flight.is_none() && self.carry.is_empty()
    }

    /// More items may come and none are being read.
    pub(crate) fn wants_page(&self) -> bool {
        !self.ended && self.in_flight.is_none()
    }

    /// Stops waiting for a page: the task reading it, if any.
    pub(crate) fn cancel(&mut self) -> Option<u64> {
        self.ended = true;
        self.carry.clear();
        self.in_flight.take()
    }
}
