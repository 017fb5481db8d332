//! A DISTRIBUTED Map's EXPRESS children: each runs in memory on its shard's leader
//! ([`crate::runner`]), with no history and no per-step Raft entries. Its record is written
//! twice, when it starts (so a new leader knows it) and when it ends (with its
//! `ChildFinished` in the outbox). A leader that dies takes the run with it; the next one
//! finds the record RUNNING and runs the child again from its input: at least once, as AWS
//! runs Express children.

use tokio::task::AbortHandle;
use trellis_asl::driver::Driver;
use trellis_asl::exec::{ChildRequest, ExecStatus, Outcome};

use super::*;

/// An EXPRESS child running here.
pub(super) struct Express {
    pub(super) rec: ExecRecord,
    run: Option<AbortHandle>,
}

/// Wall time for an in-memory run: timers are waited for in real time.
struct WallClock(StdRng);

impl trellis_asl::Entropy for WallClock {
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
}

impl trellis_asl::Env for WallClock {
    fn now_ms(&mut self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

impl trellis_asl::driver::Clock for WallClock {
    fn advance_to(&mut self, _at_ms: i64) {}
}

/// The connectors, fenced by this leader, as a runner's tasks.
struct Fenced {
    connectors: Arc<dyn Connectors>,
    fence: Fence,
}

impl crate::runner::Tasks for Fenced {
    fn start(&mut self, t: TaskRequest) -> Result<Option<BoxFuture<'static, Input>>, String> {
        Ok(Some(self.connectors.invoke(t, self.fence)))
    }
}

impl Executor {
    /// Starts an EXPRESS child, unless it exists (a message delivered again). A redriven
    /// Map Run's child that did not succeed runs again, as AWS starts its EXPRESS children
    /// again; one that did reports its end again.
    pub(super) fn start_express_child(
        &mut self,
        parent_arn: String,
        c: ChildRequest,
        map_run_arn: String,
        retention_ms: Option<u64>,
        now: i64,
    ) -> Result<()> {
        if let Some(id) = self.express_by_arn.get(&c.execution_arn).copied() {
            // Running: it answers to the parent's latest request.
            if let (true, Some(e)) = (c.redrive, self.express.get_mut(&id)) {
                if let Some(p) = e.rec.parent.as_mut() {
                    p.child_id = c.child_id;
                }
                self.dirty.insert(id);
            }
            return Ok(());
        }
        if let Some(mut rec) = self.existing(&c.execution_arn)? {
            let applied = rec
                .parent
                .as_ref()
                .is_some_and(|p| p.child_id == c.child_id);
            if !c.redrive || applied {
                return Ok(());
            }
            if rec.status == Status::Succeeded {
                return self.redrive_child(rec, parent_arn, c.child_id, now);
            }
            if let Some(m) = self.mail.remove(&rec.id) {
                rec = m;
            }
            rec.redriven(now, Some(c.child_id));
            self.cfg.metrics.started.inc();
            self.resume_express(rec);
            let id = self.express_by_arn[&c.execution_arn];
            self.dirty.insert(id);
            return Ok(());
        }
        let hash = definition_hash(&c.definition);
        let stored = self.machines.contains_key(&hash) || self.app.definition(hash)?.is_some();
        // Parsed now, so a bad definition fails the start, not the run.
        self.machine(hash, Some(&c.definition))?;
        let id = self.next_id;
        self.next_id += 1;
        let name = c
            .execution_arn
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_string();
        let mut rec = ExecRecord::new(
            id,
            c.execution_arn.clone(),
            name,
            c.state_machine_arn.clone(),
            hash,
            c.input.to_string(),
            now,
        );
        rec.express = true;
        rec.retention_ms = retention_ms;
        rec.parent = Some(ParentLink {
            arn: parent_arn,
            child_id: c.child_id,
            map_run_arn,
            inline: false,
        });
        self.cfg.metrics.children_started.inc();
        self.cfg.metrics.started.inc();
        self.cfg.metrics.running.inc();
        if !stored {
            // The definition is written with the record, as a durable start's is.
            self.express_definitions.push((hash, c.definition.clone()));
        }
        self.express_by_arn.insert(rec.arn.clone(), id);
        self.express.insert(id, Express { rec, run: None });
        self.dirty.insert(id);
        self.effects.push(Effect::RunExpress(id));
        Ok(())
    }

    /// Runs an EXPRESS child in memory (once its start is committed, or again on a new
    /// leader); its end comes back as [`Cmd::ExpressDone`].
    pub(super) fn run_express(&mut self, id: u64) {
        let Some(e) = self.express.get(&id) else {
            return;
        };
        let definition = e.rec.definition;
        let sm = match self.machine(definition, None) {
            Ok(sm) => sm,
            Err(err) => {
                let o = Outcome {
                    status: ExecStatus::Failed,
                    output: None,
                    error: Some(trellis_asl::error::names::RUNTIME.into()),
                    cause: Some(format!("the child's definition cannot be loaded: {err}")),
                };
                return self.express_done(id, o, self.clock.now_ms());
            }
        };
        let Some(e) = self.express.get(&id) else {
            return;
        };
        let input: Value = serde_json::from_str(&e.rec.input).unwrap_or(Value::Null);
        let machine = e
            .rec
            .state_machine_arn
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_string();
        let mut info = ExecutionInfo::new(
            &self.cfg.region,
            &self.cfg.account,
            &machine,
            &e.rec.name,
            input,
        );
        info.execution_arn = e.rec.arn.clone();
        info.state_machine_arn = e.rec.state_machine_arn.clone();
        let limits = Limits {
            record_history: false,
            child_executions: false,
            ..self.cfg.limits.clone()
        };
        let mut exec = Execution::new(sm, info, limits);
        let mut tasks = Fenced {
            connectors: self.connectors.clone(),
            fence: Fence {
                shard: self.cfg.shard,
                epoch: self.cfg.epoch,
                term: self.cfg.term,
            },
        };
        let tx = self.tx.clone();
        let max = self.cfg.express_max;
        let handle =
            tokio::spawn(async move {
                let mut driver = Driver::new().discard_history();
                let mut env = WallClock(StdRng::from_entropy());
                let opts = crate::runner::Options {
                    fast_timers: false,
                    deadline: Some(tokio::time::Instant::now() + max),
                };
                let outcome =
                    match crate::runner::run(&mut driver, &mut exec, &mut env, &mut tasks, opts)
                        .await
                    {
                        Ok(crate::runner::Ended::Terminal) => exec.outcome().cloned(),
                        Ok(crate::runner::Ended::DeadlinePassed) => None,
                        Err(e) => Some(Outcome {
                            status: ExecStatus::Failed,
                            output: None,
                            error: Some(trellis_asl::error::names::RUNTIME.into()),
                            cause: Some(e),
                        }),
                    }
                    .unwrap_or(Outcome {
                        status: ExecStatus::TimedOut,
                        output: None,
                        error: Some(trellis_asl::error::names::TIMEOUT.into()),
                        cause: Some("The execution timed out.".into()),
                    });
                if let Some(tx) = tx.upgrade() {
                    let _ = tx.send(Cmd::ExpressDone { id, outcome }).await;
                }
            });
        if let Some(e) = self.express.get_mut(&id) {
            e.run = Some(handle.abort_handle());
        }
    }

    /// An EXPRESS child ended (or was stopped): its record ends, with its end in the outbox
    /// for its parent.
    pub(super) fn express_done(&mut self, id: u64, outcome: Outcome, now: i64) {
        let Some(mut e) = self.express.remove(&id) else {
            return;
        };
        if let Some(run) = e.run.take() {
            run.abort();
        }
        self.express_by_arn.remove(&e.rec.arn);
        let rec = &mut e.rec;
        rec.status = Status::from_asl(outcome.status);
        rec.stop_ms = Some(now);
        rec.output = outcome.output.as_ref().map(|v| v.to_string());
        rec.error = outcome.error.clone();
        rec.cause = outcome.cause.clone();
        self.cfg.metrics.finished(rec.status);
        self.cfg.metrics.running.dec();
        if let Some(p) = rec.parent.clone() {
            self.cfg.metrics.children_finished.inc();
            rec.send(Message::ChildFinished {
                parent_arn: p.arn,
                child_id: p.child_id,
                outcome,
                events: Vec::new(),
            });
            self.cfg.metrics.outbox.inc();
            self.effects.push(Effect::Send(id));
        }
        self.mail.insert(id, e.rec);
        self.dirty.insert(id);
    }

    /// A stop of an EXPRESS child that runs here: it ends ABORTED.
    pub(super) fn stop_express(&mut self, arn: &str, now: i64) -> bool {
        let Some(id) = self.express_by_arn.get(arn).copied() else {
            return false;
        };
        let o = Outcome {
            status: ExecStatus::Aborted,
            output: None,
            error: None,
            cause: None,
        };
        self.express_done(id, o, now);
        true
    }

    /// A new leader's EXPRESS children that were running: they run again from their input.
    pub(super) fn resume_express(&mut self, rec: ExecRecord) {
        let id = rec.id;
        self.cfg.metrics.running.inc();
        self.express_by_arn.insert(rec.arn.clone(), id);
        self.express.insert(id, Express { rec, run: None });
        self.effects.push(Effect::RunExpress(id));
    }
}
