//! The event-sourced step function.
//!
//! An [`Execution`] is a tree of *frames*: the top level, and one frame per running Parallel
//! branch or Map iteration. [`Execution::step`] applies one [`Input`], then runs every frame
//! that can make progress until each one waits on the outside world (a task, a timer) or the
//! execution ends. It returns the history events written and the [`Command`]s for the host.
//!
//! Determinism: given the same definition, inputs and [`Env`] answers, `step` produces the same
//! events and commands. The host persists events before it performs commands.

mod batch;
mod children;
mod context;
mod flow;
mod io;
mod redrive;
mod slots;
mod spread;

use redrive::{BranchPoint, Keeps, Kept, RedrivePoint};

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::definition::{BlockId, Resource, StateId, StateMachine};
use crate::env::Env;
use crate::error::Failure;
use crate::history::{EventType, HistoryEvent};

/// Limits, AWS's by default.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Limits {
    /// Maximum size of execution input, state input/output and task results, in bytes.
    pub max_payload_bytes: usize,
    /// Maximum number of history events per execution.
    pub max_history_events: u64,
    /// Record history events (off for benchmarks and Express executions without logging).
    pub record_history: bool,
    /// Default Map concurrency when `MaxConcurrency` is 0 (0 = unbounded).
    pub inline_map_concurrency: usize,
    /// Maximum total size of all live variables of an execution, in bytes.
    pub max_variable_bytes: usize,
    /// A DISTRIBUTED Map's children are executions the host runs ([`Command::StartChild`],
    /// answered with [`Input::ChildFinished`]); when false they run as frames inside this
    /// execution, with the same output and history.
    #[serde(default)]
    pub child_executions: bool,
    /// The most children one DISTRIBUTED Map runs at once, whatever its `MaxConcurrency`
    /// (AWS: 10,000, also the window of a Map without one). A host lowers it to what it
    /// can carry: a parent's state grows with its children in flight.
    #[serde(default = "map_run_window")]
    pub max_map_run_window: usize,
}

fn map_run_window() -> usize {
    children::MAP_RUN_WINDOW
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 262_144,
            max_history_events: 25_000,
            record_history: true,
            inline_map_concurrency: 0,
            max_variable_bytes: 10 * 1024 * 1024,
            child_executions: false,
            max_map_run_window: children::MAP_RUN_WINDOW,
        }
    }
}

/// Who this execution is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecutionInfo {
    pub execution_arn: String,
    pub name: String,
    pub state_machine_arn: String,
    pub state_machine_name: String,
    pub role_arn: String,
    pub region: String,
    pub input: Value,
    pub redrive_count: u64,
    pub state_machine_version_arn: Option<String>,
    pub state_machine_alias_arn: Option<String>,
    /// The input exactly as the client sent it, recorded verbatim in `ExecutionStarted`
    /// (`None`: the compact rendering of `input`).
    #[serde(default)]
    pub input_text: Option<String>,
    /// A spread inline Map iteration or Parallel branch runs in its parent's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Box<ParentScope>>,
}

/// What a spread iteration or branch sees of the execution it belongs to: the context
/// object's `Execution` and `StateMachine` are its parent's, and the variables visible in
/// the Map or Parallel state are visible (read-only) inside it, as they are inline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParentScope {
    pub execution_arn: String,
    pub name: String,
    pub state_machine_arn: String,
    pub state_machine_name: String,
    pub role_arn: String,
    pub input: Value,
    pub start_ms: i64,
    pub redrive_count: u64,
    pub variables: Map<String, Value>,
}

impl ExecutionInfo {
    /// Builds AWS-shaped ARNs from a region, an account, a machine name and an execution name.
    pub fn new(region: &str, account: &str, machine: &str, name: &str, input: Value) -> Self {
        ExecutionInfo {
            execution_arn: format!("arn:aws:states:{region}:{account}:execution:{machine}:{name}"),
            name: name.to_string(),
            state_machine_arn: format!("arn:aws:states:{region}:{account}:stateMachine:{machine}"),
            state_machine_name: machine.to_string(),
            role_arn: format!("arn:aws:iam::{account}:role/trellis"),
            region: region.to_string(),
            input,
            redrive_count: 0,
            state_machine_version_arn: None,
            state_machine_alias_arn: None,
            input_text: None,
            scope: None,
        }
    }

    /// A copy without the (possibly large) input.
    pub(crate) fn clone_without_input(&self) -> ExecutionInfo {
        ExecutionInfo {
            execution_arn: self.execution_arn.clone(),
            name: self.name.clone(),
            state_machine_arn: self.state_machine_arn.clone(),
            state_machine_name: self.state_machine_name.clone(),
            role_arn: self.role_arn.clone(),
            region: self.region.clone(),
            input: Value::Null,
            redrive_count: self.redrive_count,
            state_machine_version_arn: self.state_machine_version_arn.clone(),
            state_machine_alias_arn: self.state_machine_alias_arn.clone(),
            input_text: None,
            scope: None,
        }
    }
}

/// Something that happened to the execution.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Input {
    /// Start the execution with `ExecutionInfo::input`.
    Start,
    /// An activity worker took the task (`ActivityStarted`).
    TaskStarted {
        task_id: u64,
        worker_name: Option<String>,
    },
    /// A callback or `.sync` task was submitted (`TaskSubmitted`).
    TaskSubmitted {
        task_id: u64,
        output: Value,
    },
    TaskSucceeded {
        task_id: u64,
        output: Value,
    },
    TaskFailed {
        task_id: u64,
        error: Option<String>,
        cause: Option<String>,
    },
    /// A heartbeat for a task with `HeartbeatSeconds`.
    TaskHeartbeat {
        task_id: u64,
    },
    TimerFired {
        timer_id: u64,
    },
    /// `StopExecution`.
    Stop {
        error: Option<String>,
        cause: Option<String>,
    },
    /// Start no new state until `Resume`.
    Pause,
    Resume,
    /// `RedriveExecution`: run a FAILED, TIMED_OUT or ABORTED execution again from the
    /// top-level state where it stopped. Ignored unless [`Execution::redrivable`].
    Redrive,
    /// A child execution started by [`Command::StartChild`] ended. Ignored when the child
    /// is no longer awaited (its Map Run failed or was aborted), so duplicates are harmless.
    /// A spread iteration's or branch's child sends its history (`events`), which its
    /// parent writes into its own, as the inline state would have.
    ChildFinished {
        child_id: u64,
        outcome: Outcome,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        events: Vec<HistoryEvent>,
    },
    /// `UpdateMapRun`: a running Map Run's window and tolerance change (each that is
    /// given). Ignored when no such Map Run runs.
    UpdateMapRun {
        map_run_arn: String,
        max_concurrency: Option<u64>,
        tolerated_failure_count: Option<u64>,
        tolerated_failure_percentage: Option<f64>,
    },
}

/// A task for the host to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRequest {
    pub task_id: u64,
    /// The execution the task belongs to.
    #[serde(default)]
    pub execution_arn: String,
    pub state_name: String,
    pub resource: Resource,
    pub resource_arn: String,
    pub parameters: Value,
    pub timeout_seconds: Option<u64>,
    pub heartbeat_seconds: Option<u64>,
    pub token: Option<String>,
    pub credentials: Option<Value>,
    /// 0 for the first attempt, then 1, 2 ... for retries.
    pub attempt: u64,
    /// A state's work, or a DISTRIBUTED Map's S3 reads and writes.
    #[serde(default)]
    pub kind: TaskKind,
}

/// What a task is for. A reader or writer writes no task events: its success continues the
/// Map state, its failure fails it with `States.ItemReaderFailed` or
/// `States.ResultWriterFailed` (the error the host answers with).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub enum TaskKind {
    /// A Task state's resource: `resource` and `parameters` say what to call.
    #[default]
    State,
    /// An `ItemReader`: answer with the items as a JSON array.
    ReadItems(crate::items::ReadItems),
    /// A `ResultWriter` exporting to S3: put [`crate::export::files`], answer with any value.
    WriteResults(crate::export::WriteResults),
}

/// What the host must do after a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    InvokeTask(TaskRequest),
    /// The task is no longer wanted (timed out, aborted); results for it will be ignored.
    CancelTask {
        task_id: u64,
    },
    StartTimer {
        timer_id: u64,
        fire_at_ms: i64,
    },
    CancelTimer {
        timer_id: u64,
    },
    /// The execution reached a terminal status.
    Finish(Outcome),
    /// Start a child execution (a DISTRIBUTED Map's child, a spread iteration or branch)
    /// and answer with [`Input::ChildFinished`] when it ends.
    StartChild(ChildRequest),
    /// The child is no longer wanted (its Map Run failed or was aborted): stop it.
    StopChild {
        child_id: u64,
        /// The ARN it was started with (derived again, so a host need not keep it).
        child_arn: String,
    },
}

/// What `DescribeMapRun` tells of a Map Run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapRunSummary {
    pub map_run_arn: String,
    /// The Map state.
    pub state_name: String,
    pub start_ms: i64,
    pub stop_ms: Option<i64>,
    pub status: MapRunStatus,
    /// 0: unbounded.
    pub max_concurrency: u64,
    pub tolerated_failure_count: u64,
    pub tolerated_failure_percentage: f64,
    /// The items, and the child executions (batches of items with an ItemBatcher).
    pub items: MapRunCounts,
    pub executions: MapRunCounts,
    /// Times its parent's redrive redrove it, and when it last did.
    #[serde(default)]
    pub redrive_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redrive_ms: Option<i64>,
}

/// A Map Run's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapRunStatus {
    Running,
    Succeeded,
    Failed,
    Aborted,
}

impl MapRunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MapRunStatus::Running => "RUNNING",
            MapRunStatus::Succeeded => "SUCCEEDED",
            MapRunStatus::Failed => "FAILED",
            MapRunStatus::Aborted => "ABORTED",
        }
    }
}

/// Items or child executions of a Map Run, by where they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapRunCounts {
    pub pending: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub timed_out: u64,
    pub aborted: u64,
    pub total: u64,
}

/// A child execution for the host to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildRequest {
    pub child_id: u64,
    /// The child's ARN: `…:execution:{machine}/{label}:{name}` (a Map Run's child) or
    /// `…:execution:{machine}/{parent}:{state}-{index}-{child id}` (a spread iteration or
    /// branch).
    pub execution_arn: String,
    pub name: String,
    /// The child's state machine ARN: `…:stateMachine:{machine}/{label}` or
    /// `…:stateMachine:{machine}/{parent}`.
    pub state_machine_arn: String,
    /// The item's (or batch's) index in the Map Run, the iteration's or the branch's.
    pub index: usize,
    pub input: Value,
    /// The ItemProcessor or branch as a definition of its own.
    pub definition: String,
    pub origin: ChildOrigin,
    /// A redriven Map Run's child that ran before: redrive it (it keeps its ARN) unless it
    /// succeeded, in which case its end is reported again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redrive: bool,
    /// The policy its own inline Map and Parallel states follow: its parent's.
    #[serde(default, skip_serializing_if = "crate::sharding::Sharding::is_local")]
    pub sharding: crate::sharding::Sharding,
}

/// Why a child execution runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ChildOrigin {
    /// A DISTRIBUTED Map's child, listed under its Map Run.
    MapRun {
        map_run_arn: String,
        /// `ExecutionType: EXPRESS`.
        express: bool,
    },
    /// An inline Map's iteration or a Parallel's branch, spread by the sharding policy: it
    /// runs in its parent's name and sends its history back with its end.
    Inline { scope: Box<ParentScope> },
}

impl ChildRequest {
    /// The Map Run a DISTRIBUTED Map's child belongs to.
    pub fn map_run_arn(&self) -> Option<&str> {
        match &self.origin {
            ChildOrigin::MapRun { map_run_arn, .. } => Some(map_run_arn),
            ChildOrigin::Inline { .. } => None,
        }
    }
}

/// An execution's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecStatus {
    NotStarted,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Aborted,
}

impl ExecStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecStatus::NotStarted | ExecStatus::Running => "RUNNING",
            ExecStatus::Succeeded => "SUCCEEDED",
            ExecStatus::Failed => "FAILED",
            ExecStatus::TimedOut => "TIMED_OUT",
            ExecStatus::Aborted => "ABORTED",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, ExecStatus::NotStarted | ExecStatus::Running)
    }
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub status: ExecStatus,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub cause: Option<String>,
}

/// What one step produced.
#[derive(Debug, Default)]
pub struct StepOutput {
    pub events: Vec<HistoryEvent>,
    pub commands: Vec<Command>,
}

pub(crate) type FrameId = usize;

/// A frame's place under its parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Parent {
    frame: FrameId,
    slot: usize,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Waiting {
    Nothing,
    Task {
        task_id: u64,
        timeout_timer: Option<u64>,
        heartbeat_timer: Option<u64>,
        heartbeat_seconds: Option<u64>,
    },
    Retry {
        timer_id: u64,
    },
    Wait {
        timer_id: u64,
    },
    Children(Children),
    /// A DISTRIBUTED Map's children are done; it waits for its `ResultWriter`, then ends as
    /// `then` says.
    Writer {
        task_id: u64,
        then: AfterWrite,
    },
}

/// How a Map state ends once its results are exported.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum AfterWrite {
    /// Succeeds with `{MapRunArn, ResultWriterDetails}`.
    Succeed { summary: usize, output: Value },
    /// Fails as its Map Run did. `written`: the children that succeeded whose records this
    /// last write puts in S3 (a redrive runs them no more once it has).
    Fail {
        summary: usize,
        failure: Failure,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        written: Vec<usize>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Children {
    is_map: bool,
    results: Vec<Option<Value>>,
    /// slot -> running frame
    running: BTreeMap<usize, FrameId>,
    next_index: usize,
    /// Map: the items (a fed Map: those not started yet); Parallel: none.
    items: VecDeque<Value>,
    keys: Option<Vec<String>>,
    /// The effective input handed to ItemSelector.
    selector_input: Value,
    max_concurrency: usize,
    done: usize,
    /// The last event of the child that finished last.
    last_event: u64,
    /// A DISTRIBUTED Map: its Map Run.
    #[serde(default)]
    run: Option<MapRun>,
    /// `items` are the children's inputs already (ItemSelector and ItemBatcher applied).
    #[serde(default)]
    preselected: bool,
    /// Slots running as child executions: slot -> child id.
    #[serde(default)]
    remote: BTreeMap<usize, u64>,
    /// A DISTRIBUTED Map with a `ResultWriter`: each started child's record, by slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    export: Option<io::Export>,
    /// A Map fed by its `ItemReader`, page by page: `items` holds only the children not
    /// started yet, the first of them child number `items_base`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    feed: Option<io::Feed>,
    #[serde(default)]
    items_base: usize,
    /// The results go to S3 (a ResultWriter's export), not to the state's output: they
    /// are not kept, and this counts the children known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unkept: Option<usize>,
    /// An inline Map or Parallel whose children are child executions (the sharding
    /// policy): slot -> the event their history follows in this one's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spread: Option<BTreeMap<usize, u64>>,
    /// A spread child failed: the state fails with this once the others, stopped, have
    /// sent their histories (an inline state writes its aborted branches' events first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failing: Option<Failure>,
    /// A DISTRIBUTED Map's children that failed, timed out or were aborted (their slots
    /// hold `{"Error","Cause"}` or nothing): a redrive runs them again.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    unsuccessful: std::collections::BTreeSet<usize>,
    /// A redriven Map Run: children that succeeded before and run no more, whose results
    /// went to S3 (`skip`), or whose results come in with a page of items not read yet
    /// (`pending_done`, by slot).
    #[serde(default, skip_serializing_if = "slots::Slots::is_empty")]
    skip: slots::Slots,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pending_done: BTreeMap<usize, Value>,
    /// An inline Map or Parallel: where branches stopped (those that failed or were
    /// aborted, for a redrive; on a redrive, those still to resume there).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    resume: BTreeMap<usize, BranchPoint>,
}

impl Children {
    /// Children running, as frames or as child executions.
    fn in_flight(&self) -> usize {
        self.running.len() + self.remote.len()
    }

    /// Children known so far (all of them, unless pages of items are still to come).
    fn known(&self) -> usize {
        self.items_base + self.items.len()
    }

    /// Every child is known and has ended.
    fn all_done(&self) -> bool {
        self.done == self.children() && self.feed.as_ref().is_none_or(io::Feed::ended)
    }

    /// Children known so far.
    fn children(&self) -> usize {
        self.unkept.unwrap_or(self.results.len())
    }

    /// A child's result, kept for the output (unless an export takes it).
    fn keep(&mut self, slot: usize, v: Value) {
        if self.unkept.is_none() {
            if let Some(r) = self.results.get_mut(slot) {
                *r = Some(v);
            }
        }
    }

    /// The results of the children that succeeded so far, by slot.
    fn succeeded(&self) -> BTreeMap<usize, Value> {
        self.results
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.unsuccessful.contains(i))
            .filter_map(|(i, r)| Some((i, r.clone()?)))
            .collect()
    }

    /// Whether slot `slot` succeeded in an earlier attempt and runs no more.
    fn done_before(&self, slot: usize) -> bool {
        self.results.get(slot).is_some_and(Option::is_some) || self.skip.contains(slot)
    }

    /// What a redrive of this state keeps: the children that succeeded (their results, or,
    /// when the results went to S3, their slots and the files written), and a DISTRIBUTED
    /// Map's run, redriven under its ARN.
    fn kept(&self, state: StateId) -> Option<Kept> {
        let run = self.run.as_ref().map(|r| r.summary);
        let mut results = self.succeeded();
        results.extend(self.pending_done.clone());
        let succeeded = match self.unkept {
            None => slots::Slots::default(),
            // Started and not unsuccessful (nor still running), or skipped and not reached.
            Some(_) => {
                // Only those whose records are in S3 already (the last write adds its own
                // once it lands).
                let unwritten: std::collections::BTreeSet<usize> = self
                    .export
                    .as_ref()
                    .map(io::Export::unwritten)
                    .unwrap_or_default();
                let started = (0..self.next_index).filter(|s| {
                    !self.unsuccessful.contains(s)
                        && !self.remote.contains_key(s)
                        && !unwritten.contains(s)
                });
                let ahead = self.skip.iter().filter(|s| *s >= self.next_index);
                slots::Slots::from_sorted(started.chain(ahead))
            }
        };
        let written = self.export.as_ref().and_then(io::Export::written);
        let resume = match self.run {
            Some(_) => BTreeMap::new(),
            None => (self.resume.iter())
                .filter(|(slot, _)| !results.contains_key(slot))
                .map(|(slot, p)| (*slot, p.clone()))
                .collect(),
        };
        Some(Kept {
            state,
            keeps: Keeps {
                results,
                run,
                succeeded,
                written,
                resume,
            },
        })
    }

    /// `n` more children (a page of items).
    fn add_children(&mut self, n: usize) {
        match &mut self.unkept {
            Some(k) => *k += n,
            None => {
                let from = self.results.len();
                self.results.resize(from + n, None);
                // A redrive's results of children that succeeded before, now known.
                let now: Vec<usize> = self
                    .pending_done
                    .range(from..from + n)
                    .map(|(s, _)| *s)
                    .collect();
                for slot in now {
                    self.results[slot] = self.pending_done.remove(&slot);
                }
            }
        }
    }
}

/// A DISTRIBUTED Map's run: its children are separate executions, so it counts their
/// failures against the tolerated ones and writes `MapRun*` events, not iteration events.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct MapRun {
    arn: String,
    /// Its entry in `ExecutionState::map_runs`.
    #[serde(default)]
    summary: usize,
    /// Items in each child (batches); empty when every child has one item.
    sizes: Vec<u64>,
    total_items: u64,
    failed_items: u64,
    /// `ToleratedFailureCount`, `ToleratedFailurePercentage`; neither: no failure is.
    tolerated_count: Option<u64>,
    tolerated_percentage: Option<f64>,
    /// Items are still being read: the total is not known, so a percentage is not judged
    /// yet.
    #[serde(default)]
    reading: bool,
    /// A redrive redrives it: its children that ran before are redriven, not started.
    #[serde(default)]
    redriven: bool,
}

impl MapRun {
    fn items_of(&self, slot: usize) -> u64 {
        self.sizes.get(slot).copied().unwrap_or(1)
    }

    /// Its children (executions) and their items, moved from one count to another.
    fn moved(&self, runs: &mut [MapRunSummary], slot: usize, change: fn(&mut MapRunCounts)) {
        if let Some(s) = runs.get_mut(self.summary) {
            let items = self.items_of(slot);
            change(&mut s.executions);
            for _ in 0..items {
                change(&mut s.items);
            }
        }
    }

    /// Whether the failures so far exceed what the run tolerates.
    fn exceeded(&self) -> bool {
        let (count, pct) = (self.tolerated_count, self.tolerated_percentage);
        let over_count = self.failed_items > count.unwrap_or(0);
        let over_pct = || {
            !self.reading
                && self.total_items > 0
                && self.failed_items as f64 * 100.0 / self.total_items as f64 > pct.unwrap_or(0.0)
        };
        match (count, pct) {
            (None, None) | (Some(_), None) => over_count,
            (None, Some(_)) => over_pct(),
            (Some(_), Some(_)) => over_count || over_pct(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Active {
    state: StateId,
    entered_id: u64,
    entered_ms: i64,
    raw_input: Value,
    /// The effective input after InputPath; `None` when it is the raw input.
    input: Option<Value>,
    retry_counts: Vec<u64>,
    retry_count: u64,
    token: Option<String>,
    waiting: Waiting,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Frame {
    block: BlockId,
    parent: Option<Parent>,
    vars: Map<String, Value>,
    /// The serialized size of `vars`, in bytes.
    var_bytes: usize,
    prev: u64,
    active: Option<Active>,
    /// Runs inside a DISTRIBUTED Map's child: it writes no events to this history.
    #[serde(default)]
    silent: bool,
    /// The top frame of such a child: variable lookups stop here (a child execution sees
    /// none of its parent's variables).
    #[serde(default)]
    scope_root: bool,
    /// A branch or iteration whose Map or Parallel state is failing: what that state keeps
    /// for a redrive (the top-level frame keeps it in `ExecutionState::kept`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kept: Option<Box<Kept>>,
    /// A redriven branch or iteration resumed in a Map or Parallel state: what that state
    /// kept (the top-level frame's is `ExecutionState::rerun`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rerun: Option<Box<Kept>>,
}

impl Frame {
    /// A branch's or iteration's frame, with no variables yet.
    fn child(block: BlockId, parent: Parent, prev: u64, silent: bool, scope_root: bool) -> Frame {
        Frame {
            block,
            parent: Some(parent),
            vars: Map::new(),
            var_bytes: 0,
            prev,
            active: None,
            silent,
            scope_root,
            kept: None,
            rerun: None,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum TimerKind {
    Execution,
    Wait(FrameId),
    Retry(FrameId),
    TaskTimeout(FrameId),
    Heartbeat(FrameId),
}

/// Work to do inside a step.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Work {
    Enter {
        frame: FrameId,
        state: StateId,
        input: Value,
    },
}

/// The durable part of an execution: everything but the definition and per-step scratch.
///
/// Hosts persist it (serde) and rebuild the execution with [`Execution::from_state`] and the
/// same definition. Steps are deterministic given the state, the input and the [`Env`].
#[derive(Debug, Serialize, Deserialize)]
pub struct ExecutionState {
    info: ExecutionInfo,
    limits: Limits,
    frames: Vec<Option<Frame>>,
    free: Vec<FrameId>,
    next_event_id: u64,
    next_timer_id: u64,
    next_task_id: u64,
    timers: BTreeMap<u64, TimerKind>,
    tasks: BTreeMap<u64, FrameId>,
    status: ExecStatus,
    start_ms: i64,
    paused: bool,
    /// The serialized size of the variables of every live frame.
    var_bytes: usize,
    /// Work of this step; empty between steps.
    queue: VecDeque<Work>,
    /// States waiting for `Resume`.
    parked: VecDeque<Work>,
    outcome: Option<Outcome>,
    /// Where a redrive starts: the top-level state the execution stopped in.
    #[serde(default)]
    redrive: Option<RedrivePoint>,
    /// Child executions awaited: child id -> (Map frame, slot).
    #[serde(default)]
    children: BTreeMap<u64, (FrameId, usize)>,
    /// Every Map Run this execution started, running or ended, in start order.
    #[serde(default)]
    map_runs: Vec<MapRunSummary>,
    #[serde(default)]
    next_child_id: u64,
    /// Which inline Map and Parallel states spread their children.
    #[serde(default, skip_serializing_if = "crate::sharding::Sharding::is_local")]
    sharding: crate::sharding::Sharding,
    /// A top-level inline Map or Parallel failed: what its children had done, until the
    /// failure is retried, caught, or ends the execution (then the redrive point takes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kept: Option<Kept>,
    /// A redrive is entering such a state: the children not to run again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rerun: Option<Kept>,
}

/// One execution.
pub struct Execution {
    sm: Arc<StateMachine>,
    st: ExecutionState,
    // Per-step scratch.
    now: i64,
    out: StepOutput,
}

impl Execution {
    pub fn new(sm: Arc<StateMachine>, info: ExecutionInfo, limits: Limits) -> Self {
        Self::from_state(
            sm,
            ExecutionState {
                info,
                limits,
                frames: Vec::new(),
                free: Vec::new(),
                next_event_id: 1,
                next_timer_id: 1,
                next_task_id: 1,
                timers: BTreeMap::new(),
                tasks: BTreeMap::new(),
                status: ExecStatus::NotStarted,
                start_ms: 0,
                paused: false,
                var_bytes: 0,
                queue: VecDeque::new(),
                parked: VecDeque::new(),
                outcome: None,
                redrive: None,
                children: BTreeMap::new(),
                map_runs: Vec::new(),
                next_child_id: 1,
                sharding: Default::default(),
                kept: None,
                rerun: None,
            },
        )
    }

    /// Spreads inline Map iterations and Parallel branches as the policy says (when the
    /// host runs child executions, [`Limits::child_executions`]).
    pub fn with_sharding(mut self, sharding: crate::sharding::Sharding) -> Self {
        self.st.sharding = sharding;
        self
    }

    /// Runs it in the name of the execution whose iteration or branch it is (before it
    /// starts).
    pub fn set_scope(&mut self, scope: Box<ParentScope>) {
        self.st.info.scope = Some(scope);
    }

    /// The sharding policy it runs under.
    pub fn sharding(&self) -> &crate::sharding::Sharding {
        &self.st.sharding
    }

    /// Rebuilds an execution from its saved state and the definition it was started with.
    pub fn from_state(sm: Arc<StateMachine>, st: ExecutionState) -> Self {
        Execution {
            sm,
            st,
            now: 0,
            out: StepOutput::default(),
        }
    }

    /// The durable state, to persist between steps.
    pub fn state(&self) -> &ExecutionState {
        &self.st
    }

    pub fn into_state(self) -> ExecutionState {
        self.st
    }

    /// The definition this execution runs.
    pub fn state_machine(&self) -> &Arc<StateMachine> {
        &self.sm
    }

    pub fn info(&self) -> &ExecutionInfo {
        &self.st.info
    }

    pub fn status(&self) -> ExecStatus {
        self.st.status
    }

    pub fn outcome(&self) -> Option<&Outcome> {
        self.st.outcome.as_ref()
    }

    pub fn is_paused(&self) -> bool {
        self.st.paused
    }

    /// The number of history events written so far.
    pub fn event_count(&self) -> u64 {
        self.st.next_event_id - 1
    }

    /// Task ids that are waiting for a result.
    pub fn pending_tasks(&self) -> impl Iterator<Item = u64> + '_ {
        self.st.tasks.keys().copied()
    }

    /// Every Map Run it started, running or ended, in start order.
    pub fn map_runs(&self) -> &[MapRunSummary] {
        &self.st.map_runs
    }

    /// The limits it runs under.
    pub fn limits(&self) -> &Limits {
        &self.st.limits
    }

    /// Child executions awaited.
    pub fn pending_children(&self) -> impl Iterator<Item = u64> + '_ {
        self.st.children.keys().copied()
    }

    /// Timer ids that are set.
    pub fn pending_timers(&self) -> impl Iterator<Item = u64> + '_ {
        self.st.timers.keys().copied()
    }

    /// Can `Input::Redrive` run this execution again? (FAILED, TIMED_OUT or ABORTED, with a
    /// state to start from.)
    pub fn redrivable(&self) -> bool {
        matches!(
            self.st.status,
            ExecStatus::Failed | ExecStatus::TimedOut | ExecStatus::Aborted
        ) && self.st.redrive.is_some()
    }

    /// Applies one input and runs until every frame waits or the execution ends.
    pub fn step(&mut self, input: Input, env: &mut dyn Env) -> StepOutput {
        self.now = env.now_ms();
        if matches!(input, Input::Redrive) {
            if self.redrivable() {
                self.on_redrive();
                self.run(env);
            }
            return std::mem::take(&mut self.out);
        }
        if self.st.status.is_terminal() {
            return StepOutput::default();
        }
        match input {
            Input::Start => self.on_start(env),
            Input::TaskStarted {
                task_id,
                worker_name,
            } => self.on_task_started(task_id, worker_name),
            Input::TaskSubmitted { task_id, output } => self.on_task_submitted(task_id, output),
            Input::TaskSucceeded { task_id, output } => {
                self.on_task_succeeded(task_id, output, env)
            }
            Input::TaskFailed {
                task_id,
                error,
                cause,
            } => self.on_task_failed(
                task_id,
                Failure {
                    error,
                    cause,
                    heartbeat: false,
                },
                env,
            ),
            Input::TaskHeartbeat { task_id } => self.on_heartbeat(task_id),
            Input::TimerFired { timer_id } => self.on_timer(timer_id, env),
            Input::Stop { error, cause } => self.on_stop(error, cause),
            Input::Pause => self.st.paused = true,
            Input::Resume => {
                self.st.paused = false;
                let parked = std::mem::take(&mut self.st.parked);
                self.st.queue.extend(parked);
            }
            Input::Redrive => {}
            Input::ChildFinished {
                child_id,
                outcome,
                events,
            } => self.on_child_finished(child_id, outcome, events, env),
            Input::UpdateMapRun {
                map_run_arn,
                max_concurrency,
                tolerated_failure_count,
                tolerated_failure_percentage,
            } => self.on_update_map_run(
                &map_run_arn,
                max_concurrency,
                (tolerated_failure_count, tolerated_failure_percentage),
                env,
            ),
        }
        self.run(env);
        std::mem::take(&mut self.out)
    }

    fn run(&mut self, env: &mut dyn Env) {
        while let Some(work) = self.st.queue.pop_front() {
            if self.st.status.is_terminal() {
                self.st.queue.clear();
                break;
            }
            if self.st.paused {
                self.st.parked.push_back(work);
                continue;
            }
            match work {
                Work::Enter {
                    frame,
                    state,
                    input,
                } => self.enter(frame, state, input, env),
            }
        }
        if self.st.status.is_terminal() {
            self.st.queue.clear();
            self.st.parked.clear();
        }
    }

    // ---- bookkeeping ------------------------------------------------------------------

    pub(crate) fn frame(&self, id: FrameId) -> &Frame {
        self.st.frames[id].as_ref().expect("live frame")
    }

    pub(crate) fn frame_mut(&mut self, id: FrameId) -> &mut Frame {
        self.st.frames[id].as_mut().expect("live frame")
    }

    pub(crate) fn alloc_frame(&mut self, f: Frame) -> FrameId {
        match self.st.free.pop() {
            Some(id) => {
                self.st.frames[id] = Some(f);
                id
            }
            None => {
                self.st.frames.push(Some(f));
                self.st.frames.len() - 1
            }
        }
    }

    pub(crate) fn release_frame(&mut self, id: FrameId) {
        if let Some(f) = self.st.frames[id].take() {
            self.st.var_bytes -= f.var_bytes;
        }
        self.st.free.push(id);
    }

    /// Writes an event on a frame's chain (or the execution's when `frame` is `None`).
    pub(crate) fn emit(
        &mut self,
        frame: Option<FrameId>,
        event_type: EventType,
        details: impl FnOnce() -> Option<Map<String, Value>>,
    ) -> u64 {
        let prev = frame.map(|f| self.frame(f).prev).unwrap_or(0);
        self.emit_after(frame, prev, event_type, details)
    }

    /// Writes an event that belongs to `owner`'s children (Map iterations) after `prev`,
    /// unless `owner` is silent.
    pub(crate) fn emit_for(
        &mut self,
        owner: FrameId,
        prev: u64,
        event_type: EventType,
        details: impl FnOnce() -> Option<Map<String, Value>>,
    ) -> u64 {
        if self.frame(owner).silent {
            return prev;
        }
        self.emit_after(None, prev, event_type, details)
    }

    /// Writes an event with an explicit `previousEventId`.
    pub(crate) fn emit_after(
        &mut self,
        frame: Option<FrameId>,
        prev: u64,
        event_type: EventType,
        details: impl FnOnce() -> Option<Map<String, Value>>,
    ) -> u64 {
        if frame.is_some_and(|f| self.frame(f).silent) {
            return prev;
        }
        let id = self.write_event(prev, self.now, event_type, details);
        if let Some(f) = frame {
            self.frame_mut(f).prev = id;
        }
        id
    }

    /// Writes the next event of the history (recorded unless history is off) and returns
    /// its id.
    pub(crate) fn write_event(
        &mut self,
        prev: u64,
        timestamp_ms: i64,
        event_type: EventType,
        details: impl FnOnce() -> Option<Map<String, Value>>,
    ) -> u64 {
        let id = self.st.next_event_id;
        self.st.next_event_id += 1;
        if self.st.limits.record_history {
            self.out.events.push(HistoryEvent {
                id,
                previous_event_id: prev,
                timestamp_ms,
                event_type,
                details: details(),
            });
        }
        id
    }

    pub(crate) fn start_timer(&mut self, kind: TimerKind, fire_at_ms: i64) -> u64 {
        let id = self.st.next_timer_id;
        self.st.next_timer_id += 1;
        self.st.timers.insert(id, kind);
        self.out.commands.push(Command::StartTimer {
            timer_id: id,
            fire_at_ms,
        });
        id
    }

    pub(crate) fn cancel_timer(&mut self, id: Option<u64>) {
        if let Some(id) = id {
            if self.st.timers.remove(&id).is_some() {
                self.out
                    .commands
                    .push(Command::CancelTimer { timer_id: id });
            }
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        self.st.status = outcome.status;
        let timers: Vec<u64> = self.st.timers.keys().copied().collect();
        for t in timers {
            self.cancel_timer(Some(t));
        }
        let tasks: Vec<u64> = std::mem::take(&mut self.st.tasks).into_keys().collect();
        for task_id in tasks {
            self.out.commands.push(Command::CancelTask { task_id });
        }
        self.st.outcome = Some(outcome.clone());
        self.out.commands.push(Command::Finish(outcome));
    }
}

pub(crate) fn details<const N: usize>(pairs: [(&str, Value); N]) -> Option<Map<String, Value>> {
    let mut m = Map::with_capacity(N);
    for (k, v) in pairs {
        if !v.is_null() {
            m.insert(k.to_string(), v);
        }
    }
    Some(m)
}

pub(crate) fn truncated() -> Value {
    let mut m = Map::new();
    m.insert("truncated".into(), Value::Bool(false));
    Value::Object(m)
}

#[cfg(test)]
mod tests;
