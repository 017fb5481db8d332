//! Redrive: what a failed, stopped or timed-out execution keeps of the states it was in (the
//! redrive point, a Map's or Parallel's `Kept`, each branch's `BranchPoint`), and how
//! `Input::Redrive` enters the stopped state again with it.

use serde_json::{Map, Value};

use super::*;

/// Where a branch or iteration that failed or was aborted stopped: a redrive resumes it
/// there (its state, that state's input, its variables), rather than from its start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BranchPoint {
    pub(super) state: StateId,
    pub(super) input: Value,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub(super) vars: Map<String, Value>,
    #[serde(default)]
    pub(super) var_bytes: usize,
    /// It stopped in a Map or Parallel state: what that state keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) kept: Option<Box<Kept>>,
}

/// The top-level state an execution stopped in, its input and the variables then.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "StoredPoint")]
pub(crate) struct RedrivePoint {
    pub(super) state: StateId,
    pub(super) input: Value,
    pub(super) vars: Map<String, Value>,
    pub(super) var_bytes: usize,
    /// A Map or Parallel state: what it keeps for the redrive.
    #[serde(default, skip_serializing_if = "Keeps::is_empty")]
    pub(super) keeps: Keeps,
}

/// A redrive point as stored, also by builds that kept a Map's results and Map Run at its
/// top level (`done`, `run`).
#[derive(Deserialize)]
struct StoredPoint {
    pub(super) state: StateId,
    pub(super) input: Value,
    pub(super) vars: Map<String, Value>,
    pub(super) var_bytes: usize,
    #[serde(default)]
    pub(super) keeps: Keeps,
    #[serde(default)]
    pub(super) done: BTreeMap<usize, Value>,
    #[serde(default)]
    pub(super) run: Option<usize>,
}

impl From<StoredPoint> for RedrivePoint {
    fn from(p: StoredPoint) -> RedrivePoint {
        RedrivePoint {
            state: p.state,
            input: p.input,
            vars: p.vars,
            var_bytes: p.var_bytes,
            keeps: p.keeps.or_legacy(p.done, p.run),
        }
    }
}

impl RedrivePoint {
    pub(super) fn keeping(mut self, kept: Option<Kept>) -> RedrivePoint {
        if let Some(k) = kept {
            self.keeps = k.keeps;
        }
        self
    }

    /// What the redrive keeps of the state it enters again, if anything.
    pub(super) fn kept(&mut self) -> Option<Kept> {
        let k = &self.keeps;
        let nothing = k.results.is_empty() && k.run.is_none() && k.resume.is_empty();
        (!nothing).then(|| Kept {
            state: self.state,
            keeps: std::mem::take(&mut self.keeps),
        })
    }
}

/// What a Map or Parallel state that did not succeed keeps for a redrive, in its state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "StoredKept")]
pub(crate) struct Kept {
    pub(super) state: StateId,
    #[serde(default, skip_serializing_if = "Keeps::is_empty")]
    pub(super) keeps: Keeps,
}

/// What a state keeps as stored, also by builds that kept it at the top level (`results`,
/// `run`).
#[derive(Deserialize)]
struct StoredKept {
    pub(super) state: StateId,
    #[serde(default)]
    pub(super) keeps: Keeps,
    #[serde(default)]
    pub(super) results: BTreeMap<usize, Value>,
    #[serde(default)]
    pub(super) run: Option<usize>,
}

impl From<StoredKept> for Kept {
    fn from(k: StoredKept) -> Kept {
        Kept {
            state: k.state,
            keeps: k.keeps.or_legacy(k.results, k.run),
        }
    }
}

/// What a redrive keeps of a Map or Parallel state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Keeps {
    /// The results of the iterations or branches that succeeded, by slot: a redrive runs
    /// only the others.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) results: BTreeMap<usize, Value>,
    /// A DISTRIBUTED Map: its Map Run (its entry in `map_runs`), redriven rather than
    /// started anew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) run: Option<usize>,
    /// A Map Run whose results went to S3: the children that succeeded (their results are
    /// in the files), and the files written, which the redriven run's export continues.
    #[serde(default, skip_serializing_if = "slots::Slots::is_empty")]
    pub(super) succeeded: slots::Slots,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) written: Option<crate::export::Written>,
    /// An inline Map or Parallel: where its failed or aborted branches stopped, by slot.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) resume: BTreeMap<usize, BranchPoint>,
}

impl Keeps {
    pub(super) fn is_empty(&self) -> bool {
        self.results.is_empty()
            && self.run.is_none()
            && self.succeeded.is_empty()
            && self.written.is_none()
            && self.resume.is_empty()
    }

    /// These, or what an older build stored in their place.
    pub(super) fn or_legacy(
        mut self,
        results: BTreeMap<usize, Value>,
        run: Option<usize>,
    ) -> Keeps {
        if self.results.is_empty() {
            self.results = results;
        }
        self.run = self.run.or(run);
        self
    }
}

impl Kept {
    /// A Map Run's last write landed: its children that succeeded are in S3, and the run's
    /// files are these.
    pub(super) fn wrote(&mut self, succeeded: Vec<usize>, files: crate::export::Written) {
        let k = &mut self.keeps;
        if k.written.is_some() {
            k.succeeded = k.succeeded.with(succeeded);
            k.written = Some(files);
        }
    }
}

impl Execution {
    /// Remembers the top-level state the execution is in, for a redrive.
    pub(super) fn capture_redrive(&mut self) {
        let Some(root) = self.st.frames.first().and_then(Option::as_ref) else {
            return;
        };
        if root.parent.is_some() {
            return;
        }
        let kept = self.st.kept.take();
        // Where its running branches are, for a redrive to resume them there.
        if root.active.is_some() {
            self.capture_points(0);
        }
        let Some(root) = self.st.frames.first().and_then(Option::as_ref) else {
            return;
        };
        self.st.redrive = Some(match &root.active {
            Some(a) => RedrivePoint {
                state: a.state,
                input: a.raw_input.clone(),
                vars: root.vars.clone(),
                var_bytes: root.var_bytes,
                // The iterations or branches that succeeded are not run again: those of an
                // inline Map or Parallel that failed, or that runs (stopped, timed out).
                keeps: Default::default(),
            }
            .keeping(match (&a.waiting, kept) {
                (Waiting::Children(c), _) => c.kept(a.state),
                (_, Some(k)) if k.state == a.state => Some(k),
                _ => None,
            }),
            // Not in a state (stopped between states, or failed on the execution input):
            // start over.
            None => RedrivePoint {
                state: self.sm.block(0).start_at,
                input: self.st.info.input.clone(),
                vars: root.vars.clone(),
                var_bytes: root.var_bytes,
                keeps: Default::default(),
            },
        });
    }

    /// A top-level inline Map or Parallel is failing: what its children have done is kept
    /// for a redrive (until the failure is retried or caught).
    /// A nested one keeps it in its frame, for the branch's [`BranchPoint`].
    pub(super) fn keep_for_redrive(&mut self, fid: FrameId) {
        self.capture_points(fid);
        let Some(a) = self.frame(fid).active.as_ref() else {
            return;
        };
        let Waiting::Children(c) = &a.waiting else {
            return;
        };
        let kept = c.kept(a.state);
        if self.frame(fid).parent.is_none() {
            self.st.kept = kept;
        } else {
            self.frame_mut(fid).kept = kept.map(Box::new);
        }
    }

    /// A state retried or caught runs whole again: it keeps nothing for a redrive.
    pub(super) fn forget_kept(&mut self, fid: FrameId) {
        self.st.kept = None;
        self.frame_mut(fid).kept = None;
    }

    /// What a redrive keeps of the state it enters: the children that succeeded before,
    /// the Map Run to redrive, and where the others stopped. The top-level frame's comes
    /// from the redrive point, a resumed branch's from its [`BranchPoint`].
    pub(super) fn take_rerun(&mut self, fid: FrameId) -> Option<Kept> {
        let state = self.active(fid).state;
        let kept = if self.frame(fid).parent.is_none() {
            self.st.rerun.take()
        } else {
            self.frame_mut(fid).rerun.take().map(|k| *k)
        };
        kept.filter(|k| k.state == state)
    }

    /// Records where each branch or iteration that frame `fid`'s Map or Parallel runs as
    /// a frame now stands (`Children::resume`), so that a redrive resumes it there.
    pub(super) fn capture_points(&mut self, fid: FrameId) {
        let running: Vec<(usize, FrameId)> = match &self.frame(fid).active {
            Some(Active {
                waiting: Waiting::Children(c),
                ..
            }) if c.run.is_none() => c.running.iter().map(|(s, f)| (*s, *f)).collect(),
            _ => return,
        };
        for (slot, child) in running {
            if let Some(p) = self.branch_point(child) {
                if let Waiting::Children(c) = &mut self.active_mut(fid).waiting {
                    c.resume.insert(slot, p);
                }
            }
        }
    }

    /// Where a branch's or iteration's frame stands: its state and that state's input (or
    /// the state it is about to enter), its variables, and what a Map or Parallel it is in
    /// keeps. `None`: it has not begun (it reruns from its start).
    pub(super) fn branch_point(&mut self, fid: FrameId) -> Option<BranchPoint> {
        let at = match &self.frame(fid).active {
            Some(a) => Some((a.state, a.raw_input.clone())),
            None => (self.st.queue.iter().chain(&self.st.parked)).find_map(|w| match w {
                Work::Enter {
                    frame,
                    state,
                    input,
                } if *frame == fid => Some((*state, input.clone())),
                _ => None,
            }),
        };
        let (state, input) = at?;
        let kept = match self.frame_mut(fid).kept.take() {
            Some(k) => Some(k),
            None => {
                self.capture_points(fid);
                match &self.frame(fid).active {
                    Some(Active {
                        state,
                        waiting: Waiting::Children(c),
                        ..
                    }) => c.kept(*state).map(Box::new),
                    _ => None,
                }
            }
        };
        let f = self.frame(fid);
        Some(BranchPoint {
            state,
            input,
            vars: f.vars.clone(),
            var_bytes: f.var_bytes,
            kept,
        })
    }

    /// `RedriveExecution`: `ExecutionRedriven`, then the stopped state runs again with the
    /// same input and variables.
    pub(super) fn on_redrive(&mut self) {
        let Some(mut point) = self.st.redrive.take() else {
            return;
        };
        self.st.status = ExecStatus::Running;
        self.st.outcome = None;
        self.st.info.redrive_count += 1;
        let count = self.st.info.redrive_count;
        let last = self.st.next_event_id.saturating_sub(1);
        let redriven = self.emit_after(None, last, EventType::ExecutionRedriven, || {
            details([("redriveCount", Value::from(count))])
        });
        if let Some(t) = self.sm.timeout_seconds {
            self.start_timer(TimerKind::Execution, self.now + (t as i64) * 1000);
        }
        // The old top-level frame was aborted when the execution ended; the new one takes
        // its place (frame 0).
        if self.st.frames.first().and_then(Option::as_ref).is_some() {
            self.release_frame(0);
        }
        self.st.rerun = point.kept();
        let root = self.alloc_frame(Frame {
            block: 0,
            parent: None,
            vars: point.vars,
            var_bytes: point.var_bytes,
            prev: redriven,
            active: None,
            silent: false,
            scope_root: false,
            kept: None,
            rerun: None,
        });
        self.st.var_bytes = point.var_bytes;
        self.st.queue.push_back(Work::Enter {
            frame: root,
            state: point.state,
            input: point.input,
        });
    }
}
