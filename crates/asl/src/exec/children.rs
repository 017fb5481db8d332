//! Parallel branches and Map iterations: starting them, the Map's window (MaxConcurrency),
//! ItemSelector and ItemBatcher, and a DISTRIBUTED Map's run (its children as frames or as
//! child executions, its tolerance, its summary and `UpdateMapRun`). How a frame ends is
//! in `flow.rs`; this module settles what its parent does next.

use std::collections::{BTreeMap, VecDeque};

use serde_json::Value;

use super::context::Scope;
use super::flow::seed_of;
use super::*;
use crate::definition::{Dynamic, Kind, MapMode, State, MAX_BATCH_BYTES};
use crate::error::names;
use crate::json;
use crate::template::Template;

/// The children a DISTRIBUTED Map runs at once when its `MaxConcurrency` is 0 or absent:
/// AWS runs up to 10,000 child workflow executions in parallel. The window is also what
/// bounds the messages and the records a Map Run keeps in flight.
pub(crate) const MAP_RUN_WINDOW: usize = 10_000;

/// The children a Map Run with `MaxConcurrency` `given` runs at once: `given`, or
/// [`MAP_RUN_WINDOW`] for 0, and never more than the host's `cap`.
fn map_run_window(given: u64, cap: usize) -> usize {
    let want = match given {
        0 => MAP_RUN_WINDOW,
        n => usize::try_from(n).unwrap_or(usize::MAX),
    };
    want.min(cap.max(1))
}

/// Where a Map's items come from.
pub(super) enum MapItems {
    /// `ItemsPath`/`Items`: all of them, and an object's keys.
    Given(Vec<Value>, Option<Vec<String>>),
    /// An `ItemReader`, page by page.
    Read(io::Feed),
}

impl Execution {
    /// A DISTRIBUTED Map's tolerated failures, resolved and checked as AWS does when the
    /// state starts: a count that is a non-negative integer, a percentage that is a number
    /// from 0 to 100, either may be a string of one. A failure names the field.
    #[allow(clippy::type_complexity)]
    pub(super) fn tolerance(
        &self,
        fid: FrameId,
        st: &State,
        d: &crate::definition::Distributed,
        input: &Value,
        env: &mut dyn Env,
    ) -> Result<(Option<u64>, Option<f64>), (Failure, &'static str)> {
        let mut out = (None, None);
        // What AWS says of a value of the wrong type: the path it came from, or the field.
        let not_a = |dy: &Dynamic, field: &str, kind: &str, v: &Value| {
            let msg = match dy {
                Dynamic::Path(p) => format!(
                    "The {field}Path field refers to value \"{}\" which is not a valid {kind}: {}",
                    json::to_compact(v),
                    p.as_str()
                ),
                _ => format!(
                    "The {field} field has value \"{}\" which is not a valid {kind}",
                    json::to_compact(v)
                ),
            };
            if matches!(dy, Dynamic::Expr(_)) {
                Failure::query(msg)
            } else {
                Failure::runtime(msg)
            }
        };
        if let Some(dy) = &d.tolerated_failure_count {
            const F: &str = "ToleratedFailureCount";
            let v = self
                .eval_dynamic(fid, st, dy, input, F, env)
                .map_err(|f| (f, F))?;
            // A number, or a string of one (AWS reads "1" as 1).
            let n = match &v {
                Value::String(t) => t.trim().parse::<i64>().ok(),
                _ => v
                    .as_i64()
                    .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
            }
            .ok_or_else(|| (not_a(dy, F, "integer", &v), F))?;
            if n < 0 {
                return Err((
                    Failure::runtime("ToleratedFailureCount cannot be negative."),
                    F,
                ));
            }
            out.0 = Some(n as u64);
        }
        if let Some(dy) = &d.tolerated_failure_percentage {
            const F: &str = "ToleratedFailurePercentage";
            let v = self
                .eval_dynamic(fid, st, dy, input, F, env)
                .map_err(|f| (f, F))?;
            let p = match &v {
                Value::String(t) => t.trim().parse::<f64>().ok().filter(|p| p.is_finite()),
                _ => v.as_f64(),
            }
            .ok_or_else(|| (not_a(dy, F, "float", &v), F))?;
            if !(0.0..=100.0).contains(&p) {
                return Err((
                    Failure::runtime("ToleratedFailurePercentage must be between 0 and 100."),
                    F,
                ));
            }
            out.1 = Some(p);
        }
        Ok(out)
    }

    pub(super) fn start_parallel(
        &mut self,
        fid: FrameId,
        st: &State,
        branches: &[BlockId],
        env: &mut dyn Env,
    ) {
        let input = self.active(fid).eff().clone();
        let branch_input = match &st.parameters {
            Some(p) => match self.eval_template(fid, st, p, &input, st.parameters_field(), env) {
                Ok(v) => v,
                Err(f) => return self.data_failed(fid, f, "Parameters", env),
            },
            None => input,
        };
        let started = self.emit(Some(fid), EventType::ParallelStateStarted, || None);
        let spread = self.spreads(fid, st, branches.len());
        // A redrive runs only the branches that did not succeed, each from where it stopped.
        let (done, mut resume) = self
            .take_rerun(fid)
            .map(|k| (k.keeps.results, k.keeps.resume))
            .unwrap_or_default();
        let mut results = vec![None; branches.len()];
        let mut running = BTreeMap::new();
        let mut remote = BTreeMap::new();
        for (slot, block) in branches.iter().enumerate() {
            if let Some(v) = done.get(&slot) {
                results[slot] = Some(v.clone());
                continue;
            }
            if spread {
                let child_id = self.start_inline_child(fid, st, *block, slot, branch_input.clone());
                remote.insert(slot, child_id);
                continue;
            }
            let silent = self.frame(fid).silent;
            let frame = Frame::child(*block, Parent { frame: fid, slot }, started, silent, false);
            let child = self.begin_branch(frame, resume.remove(&slot), branch_input.clone());
            running.insert(slot, child);
        }
        self.active_mut(fid).waiting = Waiting::Children(Children {
            is_map: false,
            results,
            running,
            next_index: branches.len(),
            items: VecDeque::new(),
            keys: None,
            selector_input: Value::Null,
            max_concurrency: 0,
            done: done.len(),
            last_event: started,
            run: None,
            preselected: false,
            export: None,
            feed: None,
            items_base: 0,
            unkept: None,
            spread: spread.then(|| remote.keys().map(|slot| (*slot, started)).collect()),
            remote,
            failing: None,
            unsuccessful: Default::default(),
            skip: Default::default(),
            pending_done: BTreeMap::new(),
            resume: BTreeMap::new(),
        });
        if !done.is_empty() {
            self.settle(fid, env);
        }
    }

    pub(super) fn start_map(&mut self, fid: FrameId, st: &State, env: &mut dyn Env) {
        let Kind::Map {
            items_path,
            items,
            mode,
            distributed,
            ..
        } = &st.kind
        else {
            return;
        };
        let input = self.active(fid).eff().clone();
        if let (MapMode::Distributed, Some(r)) = (mode, &distributed.item_reader) {
            if items.is_some() {
                let f = Failure::new(
                    names::ITEM_READER_FAILED,
                    "The field 'Items' cannot be used with an ItemReader",
                );
                return self.data_failed(fid, f, "Items", env);
            }
            return self.start_reader(fid, st, r, input, env);
        }
        let value = if st.is_jsonata() {
            match items {
                Some(t) => self.eval_template(fid, st, t, &input, "Items", env),
                None => Ok(input.clone()),
            }
        } else {
            match items_path {
                Some(p) => {
                    let scope = Scope {
                        exec: self,
                        frame: fid,
                        input: &input,
                        map_item: None,
                    };
                    p.resolve(&scope)
                        .map(|v| v.into_owned())
                        .ok_or_else(|| p.no_results())
                }
                None => Ok(input.clone()),
            }
        };
        let (list, keys) = match value {
            Ok(Value::Array(a)) => (a, None),
            Ok(Value::Object(m)) if st.is_jsonata() => {
                let keys: Vec<String> = m.keys().cloned().collect();
                (m.into_iter().map(|(_, v)| v).collect(), Some(keys))
            }
            Ok(other) => {
                let field = if st.is_jsonata() {
                    "Items"
                } else {
                    "ItemsPath"
                };
                let msg = format!(
                    "The {field} field must point to a JSON array, but was {}",
                    json::type_name(&other)
                );
                let f = if st.is_jsonata() {
                    Failure::query(msg)
                } else {
                    Failure::runtime(msg)
                };
                return self.data_failed(fid, f, field, env);
            }
            Err(f) => {
                return self.data_failed(
                    fid,
                    f,
                    if st.is_jsonata() {
                        "Items"
                    } else {
                        "ItemsPath"
                    },
                    env,
                )
            }
        };
        self.map_over(fid, st, MapItems::Given(list, keys), input, env);
    }

    /// A Map state's items are known, or its reader is ready: its Map Run (DISTRIBUTED)
    /// and its children start.
    pub(super) fn map_over(
        &mut self,
        fid: FrameId,
        st: &State,
        items: MapItems,
        input: Value,
        env: &mut dyn Env,
    ) {
        let (list, keys, feed) = match items {
            MapItems::Given(list, keys) => (list, keys, None),
            MapItems::Read(feed) => (Vec::new(), None, Some(feed)),
        };
        let Kind::Map {
            max_concurrency,
            mode,
            distributed,
            ..
        } = &st.kind
        else {
            return;
        };
        let given =
            match self.dynamic_int(fid, st, max_concurrency, &input, "MaxConcurrency", 0, env) {
                Ok(n) => n as usize,
                Err(f) => return self.data_failed(fid, f, "MaxConcurrency", env),
            };
        let mc = match (given, *mode) {
            (n, MapMode::Distributed) => self.map_run_window(n as u64),
            (0, _) => self.st.limits.inline_map_concurrency,
            (n, _) => n,
        };
        let length = list.len();
        let (mut list, mut run, mut preselected) = (list, None, false);
        let mut export = None;
        // A redrive keeps the children that succeeded (and a DISTRIBUTED Map's run).
        let rerun = self.take_rerun(fid);
        let mut redriven = None;
        if *mode == MapMode::Distributed {
            let (tolerated_count, tolerated_percentage) =
                match self.tolerance(fid, st, distributed, &input, env) {
                    Ok(t) => t,
                    Err((f, field)) => return self.data_failed(fid, f, field, env),
                };
            let mut sizes = Vec::new();
            if feed.is_some() {
                // Items come page by page, batched as they come.
                preselected = distributed.item_batcher.is_some();
            } else if let Some(b) = &distributed.item_batcher {
                match self.batch(fid, st, b, list, keys.as_deref(), &input, env) {
                    Ok((batches, s)) => (list, sizes, preselected) = (batches, s, true),
                    Err((f, field)) => return self.data_failed(fid, f, field, env),
                }
            }
            // The run a redrive redrives keeps its ARN.
            redriven = rerun.as_ref().and_then(|k| k.keeps.run).filter(|i| {
                self.st
                    .map_runs
                    .get(*i)
                    .is_some_and(|r| r.state_name == st.name)
            });
            let arn = match redriven {
                Some(i) => self.st.map_runs[i].map_run_arn.clone(),
                None => self.map_run_arn(distributed, env),
            };
            if let Some(w) = &distributed.result_writer {
                match self.export_for(fid, st, w, &input, &arn, env) {
                    Ok(e) => export = Some(e),
                    Err(f) => return self.data_failed(fid, f, "ResultWriter", env),
                }
            }
            let children = if sizes.is_empty() {
                length as u64
            } else {
                sizes.len() as u64
            };
            // A Map Run inside a child running as frames belongs to that child, which has
            // no record of its own: it is not listed.
            let silent = self.frame(fid).silent;
            let summary = match (silent, redriven) {
                (true, _) => usize::MAX,
                (false, Some(i)) => i,
                (false, None) => self.st.map_runs.len(),
            };
            let mut record = MapRunSummary {
                map_run_arn: arn.clone(),
                state_name: st.name.clone(),
                start_ms: self.now,
                stop_ms: None,
                status: MapRunStatus::Running,
                max_concurrency: given as u64,
                tolerated_failure_count: tolerated_count.unwrap_or(0),
                tolerated_failure_percentage: tolerated_percentage.unwrap_or(0.0),
                items: MapRunCounts {
                    pending: length as u64,
                    total: length as u64,
                    ..Default::default()
                },
                executions: MapRunCounts {
                    pending: children,
                    total: children,
                    ..Default::default()
                },
                redrive_count: 0,
                redrive_ms: None,
            };
            match (silent, redriven) {
                (true, _) => {}
                (false, Some(i)) => {
                    let old = &self.st.map_runs[i];
                    record.start_ms = old.start_ms;
                    record.redrive_count = old.redrive_count + 1;
                    record.redrive_ms = Some(self.now);
                    self.st.map_runs[i] = record;
                }
                (false, None) => self.st.map_runs.push(record),
            }
            run = Some(MapRun {
                arn,
                summary,
                sizes,
                total_items: length as u64,
                failed_items: 0,
                tolerated_count,
                tolerated_percentage,
                reading: feed.is_some(),
                redriven: redriven.is_some(),
            });
        }
        let len = list.len();
        let mut started = self.emit(Some(fid), EventType::MapStateStarted, || {
            details([("length", Value::from(length))])
        });
        if let Some(r) = &run {
            let arn = r.arn.clone();
            started = match redriven {
                Some(i) => {
                    let count = self.st.map_runs[i].redrive_count;
                    self.emit(Some(fid), EventType::MapRunRedriven, || {
                        details([
                            ("mapRunArn", Value::String(arn)),
                            ("redriveCount", Value::from(count)),
                        ])
                    })
                }
                None => self.emit(Some(fid), EventType::MapRunStarted, || {
                    details([("mapRunArn", Value::String(arn))])
                }),
            };
        }
        if len == 0 && feed.is_none() {
            if let Some(r) = &run {
                self.end_run(r.summary, MapRunStatus::Succeeded);
                self.emit(Some(fid), EventType::MapRunSucceeded, || None);
            }
            self.emit(Some(fid), EventType::MapStateSucceeded, || None);
            return self.complete(fid, Value::Array(Vec::new()), None, env);
        }
        let reads = feed.is_some();
        let unkept = export.as_ref().filter(|e| e.to_s3()).map(|_| len);
        let spread = (run.is_none() && self.spreads(fid, st, len)).then(BTreeMap::new);
        // A redrive runs only the children that did not succeed (those of a Map Run it
        // does not redrive run again, in a new run): their results kept here, or, when they
        // went to S3, their slots (and the export goes on after the files written).
        let (done, skip) = match (&rerun, &run) {
            (Some(k), None) => (k.keeps.results.clone(), Default::default()),
            (Some(k), Some(_)) if redriven.is_some() => {
                if let (Some(e), Some(w)) = (export.as_mut(), k.keeps.written.clone()) {
                    e.continue_from(w);
                }
                (k.keeps.results.clone(), k.keeps.succeeded.clone())
            }
            _ => Default::default(),
        };
        let resume = match (&rerun, &run) {
            (Some(k), None) => k.keeps.resume.clone(),
            _ => BTreeMap::new(),
        };
        let done_count = done.len() + skip.len();
        // Read items: their results wait for their page (counted as they are skipped).
        let (done, pending_done) = if reads {
            (BTreeMap::new(), done)
        } else {
            (done, BTreeMap::new())
        };
        if let Some(r) = &run {
            for slot in done.keys() {
                r.moved(&mut self.st.map_runs, *slot, |c| {
                    c.pending = c.pending.saturating_sub(1);
                    c.succeeded += 1;
                });
            }
        }
        let mut results = if unkept.is_some() {
            Vec::new()
        } else {
            vec![None; len]
        };
        for (slot, v) in &done {
            if let Some(r) = results.get_mut(*slot) {
                *r = Some(v.clone());
            }
        }
        self.active_mut(fid).waiting = Waiting::Children(Children {
            is_map: true,
            results,
            running: BTreeMap::new(),
            next_index: 0,
            items: list.into(),
            keys,
            selector_input: input,
            max_concurrency: mc,
            done: done_count,
            last_event: started,
            run,
            preselected,
            remote: BTreeMap::new(),
            export,
            feed,
            items_base: 0,
            unkept,
            spread,
            failing: None,
            unsuccessful: Default::default(),
            skip,
            pending_done,
            resume,
        });
        self.fill_map(fid, env);
        // Every child succeeded before: nothing runs, the state ends now.
        if !reads && done_count > 0 && done_count == len {
            self.settle(fid, env);
        }
    }

    /// A Map Run's ARN: `arn:{partition}:states:{region}:{account}:mapRun:{machine}/{label}:{id}`,
    /// the label a fresh UUID when the state has no `Label`.
    pub(super) fn map_run_arn(
        &self,
        d: &crate::definition::Distributed,
        env: &mut dyn Env,
    ) -> String {
        let info = &self.st.info;
        let mut parts = info.state_machine_arn.split(':');
        let partition = parts.nth(1).filter(|p| !p.is_empty()).unwrap_or("aws");
        let account = parts.nth(2).unwrap_or("000000000000");
        let label = match &d.label {
            Some(l) => l.clone(),
            None => crate::env::uuid_v4(env),
        };
        let id = crate::env::uuid_v4(env);
        format!(
            "arn:{partition}:states:{}:{account}:mapRun:{}/{label}:{id}",
            info.region, info.state_machine_name
        )
    }

    /// Applies ItemSelector to one item (`$$.Map.Item` is the item, its index and key).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn select(
        &self,
        fid: FrameId,
        st: &State,
        t: &Template,
        sel: &Value,
        mi: (usize, &Value, Option<&str>),
        env: &mut dyn Env,
    ) -> Result<Value, Failure> {
        if st.is_jsonata() {
            let seed = seed_of(env);
            self.with_bindings(fid, sel, None, None, Some(mi), seed, |b| {
                t.eval_jsonata(b, "ItemSelector")
            })
        } else {
            let scope = Scope {
                exec: self,
                frame: fid,
                input: sel,
                map_item: Some(mi),
            };
            t.eval(&scope, env)
        }
    }

    /// `ItemBatcher`'s maxima and `BatchInput`, resolved against the state input.
    pub(super) fn batch_spec(
        &self,
        fid: FrameId,
        st: &State,
        b: &crate::definition::Batcher,
        input: &Value,
        env: &mut dyn Env,
    ) -> Result<super::batch::BatchSpec, (Failure, &'static str)> {
        const ITEMS: &str = "MaxItemsPerBatch";
        const BYTES: &str = "MaxInputBytesPerBatch";
        let max_items = match &b.max_items {
            Some(d) => self
                .dynamic_int(fid, st, d, input, ITEMS, 1, env)
                .map_err(|f| (f, ITEMS))? as usize,
            None => usize::MAX,
        };
        let max_bytes = match &b.max_bytes {
            Some(d) => self
                .dynamic_int(fid, st, d, input, BYTES, 1, env)
                .map_err(|f| (f, BYTES))? as u64,
            None => MAX_BATCH_BYTES,
        };
        if max_bytes > MAX_BATCH_BYTES {
            let msg = format!("The value for the field '{BYTES}' must be at most {MAX_BATCH_BYTES}, but was {max_bytes}");
            return Err((Failure::runtime(msg), BYTES));
        }
        let max_bytes = max_bytes as usize;
        let batch_input = match &b.batch_input {
            Some(t) => Some(
                self.eval_template(fid, st, t, input, "BatchInput", env)
                    .map_err(|f| (f, "BatchInput"))?,
            ),
            None => None,
        };
        Ok(super::batch::BatchSpec {
            batch_input,
            max_items,
            max_bytes,
        })
    }

    /// A DISTRIBUTED Map's ItemBatcher: ItemSelector is applied to every item, then the
    /// items go, in order, into batches `{"BatchInput": ..., "Items": [...]}` of at most
    /// `MaxItemsPerBatch` items and `MaxInputBytesPerBatch` bytes of JSON (256 KiB when
    /// absent). Returns the batches and how many items each holds.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    pub(super) fn batch(
        &self,
        fid: FrameId,
        st: &State,
        b: &crate::definition::Batcher,
        items: Vec<Value>,
        keys: Option<&[String]>,
        input: &Value,
        env: &mut dyn Env,
    ) -> Result<(Vec<Value>, Vec<u64>), (Failure, &'static str)> {
        let spec = self.batch_spec(fid, st, b, input, env)?;
        let max_bytes = spec.max_bytes;
        let item_selector = match &st.kind {
            Kind::Map { item_selector, .. } => item_selector.as_ref(),
            _ => None,
        };
        let mut batches = super::batch::Batches::from_spec(spec);
        for (i, item) in items.into_iter().enumerate() {
            let item = match item_selector {
                Some(t) => {
                    let key = keys.map(|k| k[i].as_str());
                    self.select(fid, st, t, input, (i, &item, key), env)
                        .map_err(|f| (f, "ItemSelector"))?
                }
                None => item,
            };
            if let Err(super::batch::TooLarge(n)) = batches.push(item) {
                let msg = format!("The item at index {i} is {n} bytes of JSON, more than a batch of at most {max_bytes} bytes (MaxInputBytesPerBatch) can hold");
                return Err((Failure::runtime(msg), "MaxInputBytesPerBatch"));
            }
        }
        Ok(batches.finish())
    }

    /// Starts Map iterations up to MaxConcurrency.
    pub(super) fn fill_map(&mut self, fid: FrameId, env: &mut dyn Env) {
        loop {
            let sm = self.sm.clone();
            let st = sm.state(self.frame(fid).block, self.active(fid).state);
            let Kind::Map {
                processor,
                item_selector,
                ..
            } = &st.kind
            else {
                return;
            };
            // A redriven Map skips the children that succeeded before (a read one's item
            // is dropped, and it counts as succeeded now that it is known).
            let skipped = {
                let Waiting::Children(c) = &mut self.active_mut(fid).waiting else {
                    return;
                };
                let mut skipped = Vec::new();
                while c.next_index < c.known() && c.done_before(c.next_index) {
                    let slot = c.next_index;
                    if c.feed.is_some() {
                        c.items_base += 1;
                        c.items.pop_front();
                    }
                    if c.feed.is_some() || c.skip.contains(slot) {
                        skipped.push(slot);
                    }
                    c.next_index += 1;
                }
                skipped
            };
            for slot in skipped {
                self.run_moved(fid, slot, |c| {
                    c.pending = c.pending.saturating_sub(1);
                    c.succeeded += 1;
                });
            }
            let (index, item, key, distributed, preselected, spread) = {
                let Waiting::Children(c) = &mut self.active_mut(fid).waiting else {
                    return;
                };
                if c.failing.is_some()
                    || (c.max_concurrency > 0 && c.in_flight() >= c.max_concurrency)
                {
                    return;
                }
                if c.next_index >= c.known() {
                    if c.feed.as_ref().is_some_and(io::Feed::wants_page) {
                        return self.read_page(fid);
                    }
                    return;
                }
                let index = c.next_index;
                // A fed Map keeps only the children not started yet.
                let item = if c.feed.is_some() {
                    c.items_base += 1;
                    c.items.pop_front().unwrap_or(Value::Null)
                } else {
                    c.items[index].clone()
                };
                c.next_index += 1;
                (
                    index,
                    item,
                    c.keys.as_ref().map(|k| k[index].clone()),
                    c.run.is_some(),
                    c.preselected,
                    c.spread.is_some(),
                )
            };
            self.run_moved(fid, index, |c| {
                c.pending = c.pending.saturating_sub(1);
                c.running += 1;
            });
            let iteration_input = match item_selector.as_ref().filter(|_| !preselected) {
                None => Ok(item),
                Some(t) => {
                    let Waiting::Children(c) = &self.active(fid).waiting else {
                        return;
                    };
                    self.select(
                        fid,
                        st,
                        t,
                        &c.selector_input,
                        (index, &item, key.as_deref()),
                        env,
                    )
                }
            };
            let iteration_input = match iteration_input {
                Ok(v) => v,
                Err(f) => {
                    self.abort_children(fid);
                    if let Waiting::Children(Children { run: Some(r), .. }) =
                        &self.active(fid).waiting
                    {
                        let summary = r.summary;
                        self.end_run(summary, MapRunStatus::Failed);
                    }
                    self.emit(Some(fid), EventType::MapStateFailed, || None);
                    self.active_mut(fid).waiting = Waiting::Nothing;
                    return self.data_failed(fid, f, "ItemSelector", env);
                }
            };
            if distributed {
                self.export_started(fid, index, &iteration_input);
            }
            if distributed && self.st.limits.child_executions {
                self.start_child(fid, st, index, iteration_input);
                continue;
            }
            let name = st.name.clone();
            let prev = self.frame(fid).prev;
            // A DISTRIBUTED Map's child is an execution of its own: no iteration events here.
            let started = if distributed {
                prev
            } else {
                self.emit_for(fid, prev, EventType::MapIterationStarted, || {
                    details([("name", Value::String(name)), ("index", Value::from(index))])
                })
            };
            if spread {
                let child_id = self.start_inline_child(fid, st, *processor, index, iteration_input);
                if let Waiting::Children(c) = &mut self.active_mut(fid).waiting {
                    c.remote.insert(index, child_id);
                    if let Some(s) = c.spread.as_mut() {
                        s.insert(index, started);
                    }
                }
                continue;
            }
            let silent = distributed || self.frame(fid).silent;
            let parent = Parent {
                frame: fid,
                slot: index,
            };
            let frame = Frame::child(*processor, parent, started, silent, distributed);
            // A redriven iteration resumes where it stopped.
            let point = match &mut self.active_mut(fid).waiting {
                Waiting::Children(c) => c.resume.remove(&index),
                _ => None,
            };
            let child = self.begin_branch(frame, point, iteration_input);
            if let Waiting::Children(c) = &mut self.active_mut(fid).waiting {
                c.running.insert(index, child);
            }
        }
    }

    /// Starts a branch's or iteration's frame: at its block's start with `input`, or, on a
    /// redrive, where it stopped (that state's input, its variables, and what a Map or
    /// Parallel there kept).
    fn begin_branch(
        &mut self,
        mut frame: Frame,
        point: Option<BranchPoint>,
        input: Value,
    ) -> FrameId {
        let (state, input) = match point {
            None => (self.sm.block(frame.block).start_at, input),
            Some(p) => {
                frame.vars = p.vars;
                frame.var_bytes = p.var_bytes;
                frame.rerun = p.kept;
                self.st.var_bytes += p.var_bytes;
                (p.state, p.input)
            }
        };
        let child = self.alloc_frame(frame);
        self.st.queue.push_back(Work::Enter {
            frame: child,
            state,
            input,
        });
        child
    }

    /// The window of a Map Run given `MaxConcurrency` `given`.
    fn map_run_window(&self, given: u64) -> usize {
        map_run_window(given, self.st.limits.max_map_run_window)
    }

    /// Asks the host to start a DISTRIBUTED Map's child as an execution of its own.
    pub(super) fn start_child(&mut self, fid: FrameId, st: &State, index: usize, input: Value) {
        let Kind::Map {
            distributed,
            processor,
            ..
        } = &st.kind
        else {
            return;
        };
        let Waiting::Children(c) = &self.active(fid).waiting else {
            return;
        };
        let Some(run) = &c.run else { return };
        let map_run_arn = run.arn.clone();
        let redrive = run.redriven;
        let (execution_arn, state_machine_arn, name) = Self::child_identity(&map_run_arn, index);
        let child_id = self.await_child(fid, index);
        if let Waiting::Children(c) = &mut self.active_mut(fid).waiting {
            c.remote.insert(index, child_id);
        }
        self.out.commands.push(Command::StartChild(ChildRequest {
            child_id,
            execution_arn,
            state_machine_arn,
            name,
            index,
            input,
            definition: self.block_source(*processor),
            origin: ChildOrigin::MapRun {
                map_run_arn,
                express: distributed.execution_type.as_deref() == Some("EXPRESS"),
            },
            sharding: self.st.sharding.clone(),
            redrive,
        }));
    }

    /// A new child execution's id, awaited by slot `index` of frame `fid`.
    pub(super) fn await_child(&mut self, fid: FrameId, index: usize) -> u64 {
        let child_id = self.st.next_child_id.max(1);
        self.st.next_child_id = child_id + 1;
        self.st.children.insert(child_id, (fid, index));
        child_id
    }

    /// A branch or ItemProcessor as a definition of its own.
    pub(super) fn block_source(&self, block: BlockId) -> String {
        self.sm
            .block(block)
            .source
            .as_deref()
            .unwrap_or_default()
            .to_string()
    }

    /// A child execution ended: its output fills its slot, or its failure counts against
    /// the Map Run's tolerance. A child no longer awaited is ignored.
    pub(super) fn on_child_finished(
        &mut self,
        child_id: u64,
        o: Outcome,
        events: Vec<HistoryEvent>,
        env: &mut dyn Env,
    ) {
        let Some((fid, slot)) = self.st.children.remove(&child_id) else {
            return;
        };
        let awaited = match self.st.frames.get_mut(fid).and_then(Option::as_mut) {
            Some(Frame {
                active: Some(a), ..
            }) => match &mut a.waiting {
                Waiting::Children(c) if c.remote.get(&slot) == Some(&child_id) => {
                    c.remote.remove(&slot);
                    true
                }
                _ => false,
            },
            _ => false,
        };
        if !awaited {
            return;
        }
        if matches!(&self.active(fid).waiting, Waiting::Children(c) if c.spread.is_some()) {
            return self.inline_child_finished(fid, slot, o, events, env);
        }
        if o.status == ExecStatus::Succeeded {
            self.run_moved(fid, slot, |c| {
                c.running = c.running.saturating_sub(1);
                c.succeeded += 1;
            });
            let output = o.output.unwrap_or(Value::Null);
            self.export_ended(fid, slot, "SUCCEEDED", Some(&output), None);
            if let Waiting::Children(c) = &mut self.active_mut(fid).waiting {
                c.keep(slot, output);
                c.done += 1;
            }
            return self.settle(fid, env);
        }
        let timed_out = o.status == ExecStatus::TimedOut;
        let error = o
            .error
            .or_else(|| timed_out.then(|| names::TIMEOUT.to_string()));
        let f = Failure {
            error,
            cause: o.cause,
            heartbeat: false,
        };
        self.child_failed(fid, slot, f, timed_out, env);
    }

    /// `UpdateMapRun`: the running Map Run gets a new window or tolerance; more children
    /// start when the window grew, and the run fails at once when its failures exceed the
    /// new tolerance.
    pub(super) fn on_update_map_run(
        &mut self,
        arn: &str,
        max_concurrency: Option<u64>,
        tolerance: (Option<u64>, Option<f64>),
        env: &mut dyn Env,
    ) {
        let found = self.st.frames.iter().position(|f| {
            matches!(f, Some(Frame { active: Some(a), .. })
                if matches!(&a.waiting, Waiting::Children(Children { run: Some(r), .. }) if r.arn == arn))
        });
        let Some(fid) = found else { return };
        let cap = self.st.limits.max_map_run_window;
        let window = |mc: u64| map_run_window(mc, cap);
        let (summary, exceeded) = {
            let Waiting::Children(c) = &mut self.active_mut(fid).waiting else {
                return;
            };
            if let Some(mc) = max_concurrency {
                c.max_concurrency = window(mc);
            }
            let Some(run) = c.run.as_mut() else { return };
            if let Some(n) = tolerance.0 {
                run.tolerated_count = Some(n);
            }
            if let Some(p) = tolerance.1 {
                run.tolerated_percentage = Some(p);
            }
            (run.summary, run.exceeded())
        };
        if let Some(s) = self.st.map_runs.get_mut(summary) {
            if let Some(mc) = max_concurrency {
                s.max_concurrency = mc;
            }
            if let Some(n) = tolerance.0 {
                s.tolerated_failure_count = n;
            }
            if let Some(p) = tolerance.1 {
                s.tolerated_failure_percentage = p;
            }
        }
        if exceeded {
            return self.run_exceeded(fid, summary, env);
        }
        self.fill_map(fid, env);
    }

    /// Moves a DISTRIBUTED Map's child (and its items) from one count of its Map Run to
    /// another.
    pub(super) fn run_moved(&mut self, fid: FrameId, slot: usize, change: fn(&mut MapRunCounts)) {
        let st = &mut self.st;
        let Some(Some(Frame {
            active: Some(a), ..
        })) = st.frames.get(fid)
        else {
            return;
        };
        if let Waiting::Children(Children { run: Some(run), .. }) = &a.waiting {
            run.moved(&mut st.map_runs, slot, change);
        }
    }

    /// A Map Run ended.
    pub(super) fn end_run(&mut self, summary: usize, status: MapRunStatus) {
        if let Some(s) = self.st.map_runs.get_mut(summary) {
            s.status = status;
            s.stop_ms = Some(self.now);
        }
    }

    /// A child of a Parallel or Map frame ended and its result is in: start more, or, when
    /// every child is done, the state succeeds with the results in order.
    pub(super) fn settle(&mut self, fid: FrameId, env: &mut dyn Env) {
        let (all_done, is_map) = match &self.active(fid).waiting {
            Waiting::Children(c) => (c.all_done(), c.is_map),
            _ => return,
        };
        if !all_done {
            if is_map {
                self.fill_map(fid, env);
            }
            return;
        }
        let w = std::mem::replace(&mut self.active_mut(fid).waiting, Waiting::Nothing);
        let Waiting::Children(mut c) = w else { return };
        let mut last = c.last_event;
        let mut shaped = None;
        if let (Some(mut export), Some(r)) = (c.export.take(), &c.run) {
            if export.to_s3() {
                let then = AfterWrite::Succeed {
                    summary: r.summary,
                    output: Value::Null,
                };
                return self.final_write(fid, export, then);
            }
            let sm = self.sm.clone();
            let st = sm.state(self.frame(fid).block, self.active(fid).state);
            if let Kind::Map {
                distributed:
                    crate::definition::Distributed {
                        result_writer: Some(w),
                        ..
                    },
                ..
            } = &st.kind
            {
                export.ended.sort_by_key(|(slot, _)| *slot);
                let records: Vec<_> = export.ended.into_iter().map(|(_, r)| r).collect();
                let t = w.config.transformation(false);
                shaped = Some(crate::export::shape(&records, t, &r.arn));
            }
        }
        if let Some(r) = &c.run {
            self.end_run(r.summary, MapRunStatus::Succeeded);
            last = self.emit_after(Some(fid), last, EventType::MapRunSucceeded, || None);
        }
        let ty = if c.is_map {
            EventType::MapStateSucceeded
        } else {
            EventType::ParallelStateSucceeded
        };
        self.emit_after(Some(fid), last, ty, || None);
        let results = Value::Array(shaped.unwrap_or_else(|| {
            c.results
                .into_iter()
                .map(|r| r.unwrap_or(Value::Null))
                .collect()
        }));
        self.complete(fid, results, None, env);
    }

    /// A DISTRIBUTED Map's child failed: its items count against the tolerated failures.
    /// Within them, its place in the results holds its error and cause and the run goes
    /// on; beyond them, the other children are aborted and the state fails with
    /// `States.ExceedToleratedFailureThreshold`.
    pub(super) fn child_failed(
        &mut self,
        map: FrameId,
        slot: usize,
        f: Failure,
        timed_out: bool,
        env: &mut dyn Env,
    ) {
        let parent = Parent { frame: map, slot };
        let status = if timed_out { "TIMED_OUT" } else { "FAILED" };
        self.export_ended(map, slot, status, None, Some(&f));
        if timed_out {
            self.run_moved(map, slot, |c| {
                c.running = c.running.saturating_sub(1);
                c.timed_out += 1;
            });
        } else {
            self.run_moved(map, slot, |c| {
                c.running = c.running.saturating_sub(1);
                c.failed += 1;
            });
        }
        let exceeded = {
            let Waiting::Children(c) = &mut self.active_mut(parent.frame).waiting else {
                return;
            };
            c.keep(parent.slot, f.to_error_output());
            c.unsuccessful.insert(parent.slot);
            c.done += 1;
            let Some(run) = c.run.as_mut() else { return };
            run.failed_items += run.items_of(parent.slot);
            (run.exceeded(), run.summary)
        };
        let (exceeded, summary) = exceeded;
        if !exceeded {
            return self.settle(parent.frame, env);
        }
        self.run_exceeded(parent.frame, summary, env);
    }

    /// A Map Run's failures exceed its tolerance: the children still running are aborted,
    /// `MapRunFailed`, and the state fails with `States.ExceedToleratedFailureThreshold`.
    pub(super) fn run_exceeded(&mut self, map: FrameId, summary: usize, env: &mut dyn Env) {
        let parent = Parent {
            frame: map,
            slot: 0,
        };
        self.keep_for_redrive(map);
        self.abort_children(parent.frame);
        const CAUSE: &str = "The specified tolerated failure threshold was exceeded";
        let failure = Failure::new(names::EXCEED_TOLERATED_FAILURE_THRESHOLD, CAUSE);
        let w = std::mem::replace(&mut self.active_mut(parent.frame).waiting, Waiting::Nothing);
        if let Waiting::Children(Children {
            export: Some(export),
            ..
        }) = w
        {
            if export.to_s3() {
                let then = AfterWrite::Fail {
                    summary,
                    failure,
                    written: Vec::new(),
                };
                return self.final_write(map, export, then);
            }
        }
        self.run_failed(map, summary, failure, env);
    }

    /// A Map Run failed: `MapRunFailed`, and the state fails as the run did.
    pub(super) fn run_failed(
        &mut self,
        map: FrameId,
        summary: usize,
        f: Failure,
        env: &mut dyn Env,
    ) {
        self.end_run(summary, MapRunStatus::Failed);
        let (e, c) = (f.error.clone(), f.cause.clone());
        self.emit(Some(map), EventType::MapRunFailed, || {
            details([
                ("error", e.map(Value::String).unwrap_or(Value::Null)),
                ("cause", c.map(Value::String).unwrap_or(Value::Null)),
            ])
        });
        self.emit(Some(map), EventType::MapStateFailed, || None);
        self.state_failed(map, f, env);
    }

    /// Aborts every running child of a Parallel/Map frame (emitting their aborted events).
    pub(super) fn abort_children(&mut self, fid: FrameId) {
        if let Waiting::Children(c) = &mut self.active_mut(fid).waiting {
            let reading = c.feed.as_mut().and_then(io::Feed::cancel);
            let writing = c.export.as_mut().and_then(io::Export::cancel);
            for task_id in reading.into_iter().chain(writing) {
                self.st.tasks.remove(&task_id);
                self.out.commands.push(Command::CancelTask { task_id });
            }
        }
        let (running, iterations, remote) = match &mut self.active_mut(fid).waiting {
            Waiting::Children(c) => {
                let r: Vec<(usize, FrameId)> = std::mem::take(&mut c.running).into_iter().collect();
                (
                    r,
                    c.is_map && c.run.is_none(),
                    std::mem::take(&mut c.remote),
                )
            }
            _ => return,
        };
        let aborted = |c: &mut MapRunCounts| {
            c.running = c.running.saturating_sub(1);
            c.aborted += 1;
        };
        let name = self.current_state(fid).0.name.clone();
        for (slot, child_id) in remote {
            let child_arn = self.child_arn(fid, slot, child_id);
            self.export_ended(fid, slot, "ABORTED", None, None);
            self.run_moved(fid, slot, aborted);
            self.st.children.remove(&child_id);
            self.out.commands.push(Command::StopChild {
                child_id,
                child_arn,
            });
            // A spread iteration ends as an inline one does (its events stay with it).
            let from = match &mut self.active_mut(fid).waiting {
                Waiting::Children(c) => c.spread.as_mut().and_then(|s| s.remove(&slot)),
                _ => None,
            };
            if let (true, Some(from)) = (iterations, from) {
                let n = name.clone();
                let id = self.emit_for(fid, from, EventType::MapIterationAborted, || {
                    details([("name", Value::String(n)), ("index", Value::from(slot))])
                });
                self.frame_mut(fid).prev = id;
            }
        }
        for (slot, _) in &running {
            self.export_ended(fid, *slot, "ABORTED", None, None);
            self.run_moved(fid, *slot, aborted);
        }
        for (slot, child) in running {
            self.abort_frame(child);
            if iterations {
                let prev = self.frame(child).prev;
                let n = name.clone();
                let id = self.emit_for(fid, prev, EventType::MapIterationAborted, || {
                    details([("name", Value::String(n)), ("index", Value::from(slot))])
                });
                self.frame_mut(fid).prev = id;
            }
            self.release_frame(child);
        }
    }
}
