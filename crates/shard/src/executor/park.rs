//! Waiting executions out of memory.
//!
//! An execution that waits on timers only (a `Wait` state, a retry's back-off) needs nothing
//! from the leader's memory until a timer fires: its committed record holds everything a new
//! leader would load. Once the entry that made it wait commits, the executor drops its
//! interpreter state and record ("parks" it), keeping its timers in the timer index, its
//! ARN in `by_arn`, and its timer list for the detector. Anything that reaches it (a timer
//! firing, a stop, a pause, a message, the detector finding a timer not armed) loads it
//! back from the store first ([`Executor::wake`]), as a new leader would.
//!
//! Not parked: executions with a task, an outbox, a send in flight, under a concurrency cap
//! (the cap counts them in memory), EXPRESS children, and those with no timer (a Map
//! waiting on its children stays in memory, as their results come often).

use super::{Executor, Live};
use crate::record::ExecRecord;

impl Executor {
    /// Keeps `rec` out of memory: its timers armed, its ARN known.
    pub(super) fn park_record(&mut self, rec: &ExecRecord) {
        let timers = rec.timers.iter().map(|(t, d)| (*t, *d)).collect();
        self.park_entry(rec.id, rec.arn.clone(), timers);
    }

    /// Keeps execution `id` out of memory, as its `live` index entry describes it.
    pub(super) fn park_entry(&mut self, id: u64, arn: String, timers: Box<[(u64, i64)]>) {
        for (timer, due) in timers.iter() {
            self.timers.insert((*due, id, *timer));
        }
        self.by_arn.insert(arn, id);
        if self.parked.insert(id, timers).is_none() {
            self.cfg.metrics.parked.inc();
        }
    }

    /// After a commit: parks those of `ids` that wait on timers only.
    pub(super) fn park(&mut self, ids: &[u64]) {
        for id in ids {
            let ready = self.live.get(id).is_some_and(|l| {
                l.rec.parkable()
                    && l.events.is_empty()
                    && l.new_definition.is_none()
                    && !self.sending.contains(id)
                    && !self.dirty.contains(id)
            });
            if ready {
                if let Some(l) = self.live.remove(id) {
                    self.park_record(&l.rec);
                }
            }
        }
    }

    /// Brings the parked execution `id` back into memory from its stored record. Returns
    /// false when it is not parked, or cannot be read (logged; it stays parked, and the
    /// detector tries again).
    pub(super) fn wake(&mut self, id: u64) -> bool {
        if !self.parked.contains_key(&id) {
            return false;
        }
        let loaded = self
            .app
            .arn_of(id)
            .and_then(|arn| match arn {
                Some(arn) => self.app.record(&arn),
                None => Ok(None),
            })
            .and_then(|rec| match rec {
                Some(rec) => self.revive(rec).map(Some),
                None => Ok(None),
            });
        match loaded {
            Ok(Some(live)) => {
                self.parked.remove(&id);
                self.cfg.metrics.parked.dec();
                self.live.insert(id, live);
                true
            }
            Ok(None) => {
                tracing::warn!(
                    shard_id = self.cfg.shard,
                    id,
                    "a parked execution has no record; dropped"
                );
                self.parked.remove(&id);
                self.cfg.metrics.parked.dec();
                self.cfg.metrics.running.dec();
                false
            }
            Err(e) => {
                tracing::warn!(shard_id = self.cfg.shard, id, error = %e, "a parked execution could not be loaded");
                false
            }
        }
    }

    /// [`Executor::wake`] by ARN.
    pub(super) fn wake_arn(&mut self, arn: &str) {
        if let Some(id) = self.by_arn.get(arn).copied() {
            self.wake(id);
        }
    }

    /// An execution's live state from its committed record.
    pub(super) fn revive(&mut self, rec: ExecRecord) -> crate::Result<Live> {
        let sm = self.machine(rec.definition, None)?;
        let Some(raw) = &rec.state else {
            return Err(crate::Error::Corrupt(format!(
                "{} is live without state",
                rec.arn
            )));
        };
        let state: trellis_asl::exec::ExecutionState = serde_json::from_str(raw.get())?;
        let exec = trellis_asl::Execution::from_state(sm, state);
        // The interpreter holds the state now; the record's copy is written from it.
        let mut rec = rec;
        rec.state = None;
        Ok(Live {
            exec,
            rec,
            events: Vec::new(),
            new_definition: None,
        })
    }

    /// For the detector: wakes the parked executions whose timers it would repair (one not
    /// armed, or overdue), so its scan of live executions finds them; counts the others as
    /// scanned.
    pub(super) fn wake_for_scan(&mut self, now: i64, overdue_ms: i64) -> usize {
        let suspect: Vec<u64> = self
            .parked
            .iter()
            .filter(|(id, timers)| {
                timers.iter().any(|(timer, due)| {
                    now - due > overdue_ms || !self.timers.contains(&(*due, **id, *timer))
                })
            })
            .map(|(id, _)| *id)
            .collect();
        for id in suspect {
            self.wake(id);
        }
        self.parked.len()
    }
}
