//! The executor's side of cross-shard messages ([`crate::outbox`]): applying what other
//! shards send, and sending what this shard's records hold, one send in flight per record.

use super::*;
use trellis_asl::exec::{ChildOrigin, Outcome};

impl Executor {
    /// Applies messages from other shards, in order. Each is idempotent: a start of a
    /// child that exists, the end of a child its parent no longer waits for, a stop of an
    /// execution that is not running, change nothing.
    pub(super) fn receive(&mut self, messages: Vec<Message>, now: i64) -> Result<()> {
        for m in messages {
            match m {
                Message::StartChild {
                    parent_arn,
                    request,
                } => self.start_child(parent_arn, request, now)?,
                Message::ChildFinished {
                    parent_arn,
                    child_id,
                    outcome,
                    events,
                } => {
                    if let Some(id) = self.by_arn.get(&parent_arn).copied() {
                        let done = Input::ChildFinished {
                            child_id,
                            outcome,
                            events,
                        };
                        self.feed(id, done, now);
                    }
                }
                Message::StopChild { child_arn } => {
                    if self.stop_express(&child_arn, now) {
                        continue;
                    }
                    let running = self
                        .by_arn
                        .get(&child_arn)
                        .and_then(|id| self.live.get(id))
                        .is_some_and(|l| l.rec.status == Status::Running);
                    if running {
                        let stop = Control::Stop {
                            error: None,
                            cause: None,
                        };
                        self.control(&child_arn, stop, now)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Starts a child execution (a DISTRIBUTED Map's, a spread iteration or branch),
    /// unless it exists (a message delivered again).
    pub(super) fn start_child(
        &mut self,
        parent_arn: String,
        c: ChildRequest,
        now: i64,
    ) -> Result<()> {
        if let ChildOrigin::MapRun {
            map_run_arn,
            express: true,
        } = &c.origin
        {
            // An EXPRESS child runs in memory.
            let map_run_arn = map_run_arn.clone();
            return self.start_express_child(parent_arn, c, map_run_arn, now);
        }
        if let Some(rec) = self.existing(&c.execution_arn)? {
            if c.redrive {
                self.redrive_child(rec, parent_arn, c.child_id, now)?;
            }
            return Ok(());
        }
        let machine = c
            .state_machine_arn
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_string();
        let (scope, map_run_arn) = match c.origin {
            ChildOrigin::Inline { scope } => (Some(scope), String::new()),
            ChildOrigin::MapRun { map_run_arn, .. } => (None, map_run_arn),
        };
        let req = StartRequest {
            state_machine_arn: c.state_machine_arn,
            state_machine_name: machine,
            version_arn: None,
            alias_arn: None,
            role_arn: None,
            name: c.name,
            input: c.input.to_string(),
            definition: c.definition,
            queued: false,
            parent: Some(ParentLink {
                arn: parent_arn,
                child_id: c.child_id,
                map_run_arn,
                inline: scope.is_some(),
            }),
            sharding: c.sharding,
            scope,
        };
        self.start(req, now).map(drop)
    }

    /// A redriven Map Run's child that ran before: redriven when it did not succeed (it
    /// keeps its ARN and history, as on AWS), its end reported again when it did (its
    /// parent had stopped waiting for it). Either way it now answers to `child_id`. One
    /// that still runs (a stop not applied yet cannot be: messages apply in order) is left
    /// to end and report.
    pub(super) fn redrive_child(
        &mut self,
        rec: ExecRecord,
        parent_arn: String,
        child_id: u64,
        now: i64,
    ) -> Result<()> {
        // Already answering to that child id: this request was applied (a duplicate).
        if rec.parent.as_ref().is_some_and(|p| p.child_id == child_id) {
            return Ok(());
        }
        let relink = |p: &mut Option<ParentLink>| {
            if let Some(p) = p.as_mut() {
                p.child_id = child_id;
            }
        };
        if !rec.status.is_terminal() {
            if let Some(live) = self
                .by_arn
                .get(&rec.arn)
                .and_then(|id| self.live.get_mut(id))
            {
                relink(&mut live.rec.parent);
                self.dirty.insert(live.rec.id);
            }
            return Ok(());
        }
        if rec.status != Status::Succeeded {
            match self.redrive_for(&rec.arn, now, Some(child_id)) {
                Ok(_) => return Ok(()),
                // Not redrivable (too old, history full): its end stands, reported again.
                Err(Error::NotRedrivable { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let id = rec.id;
        let mut rec = self.mail.remove(&id).unwrap_or(rec);
        relink(&mut rec.parent);
        let outcome = Outcome {
            status: rec.status.to_asl(),
            output: rec
                .output
                .as_deref()
                .and_then(|o| serde_json::from_str(o).ok()),
            error: rec.error.clone(),
            cause: rec.cause.clone(),
        };
        rec.send(Message::ChildFinished {
            parent_arn,
            child_id,
            outcome,
            events: Vec::new(),
        });
        self.cfg.metrics.outbox.inc();
        self.mail.insert(id, rec);
        self.dirty.insert(id);
        self.effects.push(Effect::Send(id));
        Ok(())
    }

    /// Hands an execution's pending messages to the mailer, unless a send is in flight;
    /// retried with a back-off until delivered or this executor stops.
    pub(super) fn send(&mut self, exec: u64) {
        if self.sending.contains(&exec) {
            return;
        }
        let rec = match self.live.get(&exec) {
            Some(l) => &l.rec,
            None => match self.mail.get(&exec) {
                Some(r) => r,
                None => return,
            },
        };
        let Some(last) = rec.outbox.last().map(|o| o.seq) else {
            return;
        };
        let messages: Vec<Message> = rec.outbox.iter().map(|o| o.message.clone()).collect();
        self.sending.insert(exec);
        let mailer = self.mailer.clone();
        let tx = self.tx.clone();
        let shard = self.cfg.shard;
        tokio::spawn(async move {
            let since = Instant::now();
            let mut pause = Duration::from_millis(20);
            loop {
                match mailer.send(messages.clone()).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::debug!(shard_id = shard, error = %e, "messages not delivered yet; retrying");
                    }
                }
                // Stop trying once the executor is gone: the next leader sends them.
                if tx.upgrade().is_none() {
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            if let Some(tx) = tx.upgrade() {
                let _ = tx
                    .send(Cmd::Delivered {
                        exec,
                        seq: last,
                        since,
                    })
                    .await;
            }
        });
    }

    /// Messages up to `seq` were delivered: drop them from the record (the next entry), and
    /// send what was written since.
    pub(super) fn delivered(&mut self, exec: u64, seq: u64, since: Instant) {
        self.sending.remove(&exec);
        let m = self.cfg.metrics.clone();
        m.delivery_seconds.observe(since.elapsed().as_secs_f64());
        let rec = match self.live.get_mut(&exec) {
            Some(l) => &mut l.rec,
            None => match self.mail.get_mut(&exec) {
                Some(r) => r,
                None => return,
            },
        };
        let dropped = rec.delivered(seq);
        m.outbox.dec_by(dropped as i64);
        if !rec.outbox.is_empty() {
            self.effects.push(Effect::Send(exec));
        }
        self.dirty.insert(exec);
    }
}
