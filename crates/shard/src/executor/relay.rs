//! The executor's side of cross-shard messages ([`crate::outbox`]): applying what other
//! shards send, and sending what this shard's records hold, one send in flight per record.

use super::*;
use trellis_asl::exec::{ChildOrigin, Outcome};

/// The pause after a first failed send, doubled after each failure up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(20);
const MAX_PAUSE: Duration = Duration::from_secs(2);

impl Executor {
    /// Applies messages from other shards, in order. Each is idempotent: a start of a
    /// child that exists, the end of a child its parent no longer waits for, a stop of an
    /// execution that is not running, change nothing.
    ///
    /// Backpressure: while `max_live` executions run here, a start of a new child is held,
    /// with every later message for that child (its stop must not overtake its start);
    /// the rest apply. A delivery with held messages is refused ([`Error::Full`]): its
    /// sender keeps it in its outbox and sends it again, and what applied changes nothing
    /// the second time. Ends and stops free room, so they are never held for room.
    pub(super) fn receive(&mut self, messages: Vec<Message>, now: i64) -> Result<()> {
        let mut held: HashSet<String> = HashSet::new();
        for m in messages {
            if held.contains(m.target()) {
                continue;
            }
            self.wake_arn(m.target());
            if let Message::StartChild { request, .. } = &m {
                let live = self.live.len() + self.express.len();
                if live >= self.cfg.max_live && self.would_start(request)? {
                    held.insert(request.execution_arn.clone());
                    continue;
                }
            }
            match m {
                Message::StartChild {
                    parent_arn,
                    request,
                    retention_ms,
                } => self.start_child(parent_arn, request, retention_ms, now)?,
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
        if held.is_empty() {
            return Ok(());
        }
        self.cfg.metrics.deliveries_refused.inc();
        Err(Error::Full {
            shard: self.cfg.shard,
            live: self.live.len() + self.express.len(),
        })
    }

    /// Whether applying this request would start an execution here (a child that does not
    /// exist yet, or a redrive of one).
    fn would_start(&self, request: &ChildRequest) -> Result<bool> {
        let arn = &request.execution_arn;
        if self.by_arn.contains_key(arn) || self.express_by_arn.contains_key(arn) {
            return Ok(false);
        }
        Ok(match self.existing(arn)? {
            None => true,
            Some(_) => request.redrive,
        })
    }

    /// Starts a child execution (a DISTRIBUTED Map's, a spread iteration or branch),
    /// unless it exists (a message delivered again).
    pub(super) fn start_child(
        &mut self,
        parent_arn: String,
        c: ChildRequest,
        retention_ms: Option<u64>,
        now: i64,
    ) -> Result<()> {
        if let ChildOrigin::MapRun {
            map_run_arn,
            express: true,
        } = &c.origin
        {
            // An EXPRESS child runs in memory.
            let map_run_arn = map_run_arn.clone();
            return self.start_express_child(parent_arn, c, map_run_arn, retention_ms, now);
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
            retention: retention_ms.map(Duration::from_millis),
            request_id: 0,
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
    /// sent again after a back-off until delivered or this executor stops.
    pub(super) fn send(&mut self, exec: u64) {
        self.send_again(exec, Instant::now(), FIRST_PAUSE);
    }

    /// One send of every message the execution's record holds now: a message written
    /// while an earlier send failed goes with the next attempt (a stop must not wait for
    /// a start a full shard holds back). At most [`SENDS_IN_FLIGHT`] at once per shard.
    pub(super) fn send_again(&mut self, exec: u64, since: Instant, pause: Duration) {
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
        let slots = self.send_slots.clone();
        tokio::spawn(async move {
            let sent = {
                let Ok(_slot) = slots.acquire().await else {
                    return;
                };
                mailer.send(messages).await
            };
            let cmd = match sent {
                Ok(()) => Cmd::Delivered {
                    exec,
                    seq: last,
                    since,
                },
                Err(e) => {
                    tracing::debug!(shard_id = shard, error = %e, "messages not delivered yet; sent again after a pause");
                    // The slot is given back for the pause: a receiver that refuses does
                    // not hold up the sends to others. Once the executor is gone, the next
                    // leader sends them.
                    tokio::time::sleep(pause).await;
                    Cmd::Resend {
                        exec,
                        since,
                        pause: (pause * 2).min(MAX_PAUSE),
                    }
                }
            };
            if let Some(tx) = tx.upgrade() {
                let _ = tx.send(cmd).await;
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
