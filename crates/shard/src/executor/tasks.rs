//! Tasks the executor waits on from outside: task-token answers (`SendTaskSuccess`,
//! `SendTaskFailure`, `SendTaskHeartbeat`) and activity tasks handed to workers.

use super::*;

impl Executor {
    /// Checks a token's answer against its pending task (or the call that closed it) and
    /// feeds it to the execution.
    pub(super) fn token(
        &mut self,
        token: &str,
        answer: TokenAnswer,
        request_id: u64,
        now: i64,
    ) -> Result<()> {
        let invalid = || Error::InvalidToken {
            token: token.to_string(),
        };
        // A forged or altered token fails here, before anything is looked up.
        let id = self.cfg.token_key.check(token).ok_or_else(invalid)?;
        if id.shard != self.cfg.shard {
            return Err(invalid());
        }
        let (exec, task) = (id.exec, id.task);
        let Some(live) = self.live.get_mut(&exec) else {
            // Not in memory: ended, or parked (a parked execution has no task).
            let stored = match self.app.arn_of(exec)? {
                Some(arn) => self.app.record(&arn)?,
                None => None,
            };
            return match stored {
                Some(rec) if rec.answered_by(task, request_id) => Ok(()),
                Some(_) => Err(Error::TaskClosed),
                // Only a genuine token learns that its execution is gone; a token from
                // before MACs could be a guess.
                None if id.signed => Err(Error::TaskDoesNotExist),
                None => Err(invalid()),
            };
        };
        let Some(t) = live.rec.tasks.get_mut(&task) else {
            // This very call closed it already: its reply was lost, and it came again.
            if live.rec.answered_by(task, request_id) {
                return Ok(());
            }
            return Err(Error::TaskClosed);
        };
        if t.token.as_deref() != Some(token) {
            return Err(invalid());
        }
        if !matches!(answer, TokenAnswer::Heartbeat) {
            live.rec.answered(task, request_id);
        }
        let input = match answer {
            TokenAnswer::Success(output) => Input::TaskSucceeded {
                task_id: task,
                output,
            },
            TokenAnswer::Failure { error, cause } => Input::TaskFailed {
                task_id: task,
                error,
                cause,
            },
            TokenAnswer::Heartbeat => Input::TaskHeartbeat { task_id: task },
        };
        self.feed(exec, input, now);
        Ok(())
    }

    /// Hands out the oldest queued task of activity `arn` still waiting for a worker.
    pub(super) fn take_activity(
        &mut self,
        arn: &str,
        worker: &str,
        now: i64,
    ) -> Option<ActivityTask> {
        loop {
            let (exec, task) = self.activities.get_mut(arn)?.pop_front()?;
            let Some(live) = self.live.get_mut(&exec) else {
                continue;
            };
            let Some(t) = live.rec.tasks.get_mut(&task) else {
                continue;
            };
            if t.started {
                continue;
            }
            t.started = true;
            let out = ActivityTask {
                token: t.token.clone().unwrap_or_default(),
                input: t.request.parameters.to_string(),
            };
            self.feed(
                exec,
                Input::TaskStarted {
                    task_id: task,
                    worker_name: (!worker.is_empty()).then(|| worker.to_string()),
                },
                now,
            );
            return Some(out);
        }
    }
}
