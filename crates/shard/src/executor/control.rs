//! Control of a run from outside: stop, pause, resume, and redrive.

use super::*;

impl Executor {
    /// Stop, pause or resume execution `arn`; a stop answers its stop date.
    pub(super) fn control(&mut self, arn: &str, c: Control, now: i64) -> Result<i64> {
        let Some(&id) = self.by_arn.get(arn) else {
            return match self.app.record(arn)? {
                Some(rec) => match c {
                    Control::Stop { .. } => Ok(rec.stop_ms.unwrap_or(now)),
                    _ => Err(Error::NotRunning {
                        arn: arn.to_string(),
                    }),
                },
                None => Err(Error::ExecutionDoesNotExist {
                    arn: arn.to_string(),
                }),
            };
        };
        if let Some(l) = self
            .live
            .get_mut(&id)
            .filter(|l| l.rec.status == Status::Queued)
        {
            // Never started: it ends without running a state.
            if let Control::Stop { error, cause } = c {
                l.rec.status = Status::Aborted;
                l.rec.stop_ms = Some(now);
                l.rec.error = error;
                l.rec.cause = cause;
                self.dirty.insert(id);
                return Ok(now);
            }
            return Err(Error::Queued {
                arn: arn.to_string(),
            });
        }
        let input = match c {
            Control::Stop { error, cause } => Input::Stop { error, cause },
            Control::Pause => Input::Pause,
            Control::Resume => Input::Resume,
        };
        self.feed(id, input, now);
        Ok(now)
    }

    pub(super) fn redrive(&mut self, arn: &str, now: i64) -> Result<i64> {
        self.redrive_for(arn, now, None)
    }

    /// Redrives an execution; a Map Run's child redriven by its parent's redrive first
    /// answers to its parent's new `child_id`.
    pub(super) fn redrive_for(
        &mut self,
        arn: &str,
        now: i64,
        child_id: Option<u64>,
    ) -> Result<i64> {
        let not = |why: Redrive| Error::NotRedrivable {
            arn: arn.to_string(),
            why,
        };
        if self.by_arn.contains_key(arn) {
            return Err(not(Redrive::Running));
        }
        let Some(mut rec) = self.app.record(arn)? else {
            return Err(Error::ExecutionDoesNotExist {
                arn: arn.to_string(),
            });
        };
        // One with messages still to send is redriven from that copy (which it leaves),
        // with the interpreter state only the stored record holds.
        if let Some(m) = self.mail.get(&rec.id) {
            let state = rec.state.take();
            rec = m.clone();
            rec.state = state;
        }
        let Some(raw) = rec.state.take() else {
            return Err(not(Redrive::Ended(rec.status)));
        };
        if rec.stop_ms.is_some_and(|s| now - s > 14 * 86_400_000) {
            return Err(not(Redrive::TooOld));
        }
        if rec.last_event_id >= 24_999 {
            return Err(not(Redrive::HistoryFull(rec.last_event_id)));
        }
        let sm = self.machine(rec.definition, None)?;
        let state: ExecutionState = serde_json::from_str(raw.get())?;
        let exec = Execution::from_state(sm, state);
        if !exec.redrivable() {
            return Err(not(Redrive::Ended(rec.status)));
        }
        let id = rec.id;
        rec.redriven(now, child_id);
        self.mail.remove(&id);
        self.by_arn.insert(arn.to_string(), id);
        self.live.insert(
            id,
            Live {
                exec,
                rec,
                events: Vec::new(),
                new_definition: None,
            },
        );
        self.cfg.metrics.running.inc();
        self.feed(id, Input::Redrive, now);
        Ok(now)
    }
}
