//! The executor: runs on the shard's Raft leader and is the only place where the shard's
//! executions advance.
//!
//! One task owns the live executions. It takes a batch of commands (starts, task results,
//! timer firings, stop/pause/resume, activity hand-outs), steps the executions they concern,
//! proposes every changed execution's new record and events in one Raft entry, and only once
//! that entry is committed replies to the callers and performs the side effects: task
//! dispatch (connectors, activity queues) and timers. If the proposal fails, this node is no
//! longer the leader: the executor stops, and the next leader rebuilds everything from the
//! replicated records.

mod control;
mod detector;
mod express;
mod park;
mod relay;
mod retention;
mod tasks;

pub use detector::{DetectorConfig, Finding, ScanReport};
pub use retention::{RetentionConfig, AWS_RETENTION};

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use trellis_asl::definition::Resource;
use trellis_asl::env::Entropy;
use trellis_asl::exec::{ChildRequest, ExecutionInfo, ExecutionState, ParentScope, TaskRequest};
use trellis_asl::{Command, Env, Execution, HistoryEvent, Input, Limits, StateMachine};

use crate::app::{LiveExecution, ShardApp};
use crate::outbox::{Mailer, Message, ParentLink};
use crate::record::{ExecRecord, Status, TaskRecord};
use crate::request::{Expiry, ShardOp, ShardRequest};
use crate::token::TokenKey;
use crate::{definition_hash, Error, Redrive, Result};

/// A boxed future, for the object-safe traits below.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Who performs a side effect: the shard, its epoch in the shard map and the Raft term of
/// the leader whose executor dispatched it. Connectors pass it on (HTTP calls carry it in a
/// `Trellis-Fence` header), so a receiver can refuse calls from an era that has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fence {
    pub shard: u32,
    pub epoch: u64,
    pub term: u64,
}

impl std::fmt::Display for Fence {
    /// `shard=3;epoch=2;term=7`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "shard={};epoch={};term={}",
            self.shard, self.epoch, self.term
        )
    }
}

/// Performs task side effects for the executor.
pub trait Connectors: Send + Sync + 'static {
    /// Runs a non-activity task (`http:invoke`, Lambda, ...) on behalf of `fence`. Resolves
    /// to what to feed back: `TaskSucceeded`/`TaskFailed`, or `TaskSubmitted` for
    /// `.waitForTaskToken` tasks, whose result then arrives through the task token.
    ///
    /// The result goes back to the executor that dispatched the task and to no other: if
    /// that executor has stopped (its leader was deposed), the result is dropped, and the
    /// current leader dispatches the task again.
    fn invoke(&self, task: TaskRequest, fence: Fence) -> BoxFuture<'static, Input>;
}

/// Gets entries committed.
pub trait Proposer: Send + Sync + 'static {
    fn propose(&self, req: ShardRequest) -> BoxFuture<'_, Result<()>>;
}

impl Proposer for openraft::Raft<crate::ShardConfig> {
    fn propose(&self, req: ShardRequest) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            match self.client_write(req).await {
                Ok(_) => Ok(()),
                Err(openraft::error::RaftError::APIError(
                    openraft::error::ClientWriteError::ForwardToLeader(f),
                )) => Err(Error::NotLeader {
                    leader: f.leader_id,
                }),
                Err(e) => Err(Error::Raft(e.to_string())),
            }
        })
    }
}

/// Settings of one shard's executor.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    pub shard: u32,
    /// The shard's epoch in the shard map, and the Raft term in which this executor's node
    /// leads it: together with `shard`, the [`Fence`] its side effects carry.
    pub epoch: u64,
    pub term: u64,
    pub region: String,
    pub account: String,
    pub limits: Limits,
    /// Most commands taken into one proposal.
    pub max_batch: usize,
    /// Most bytes (as JSON) of one proposal: a batch whose changes are larger is proposed
    /// as several entries, each of whole executions, so that every Raft append (up to
    /// [`crate::raft::MAX_APPEND_ENTRIES`] entries) fits in a peer message. One execution's
    /// change larger than this goes alone.
    pub max_entry_bytes: usize,
    pub detector: DetectorConfig,
    /// Fault injection, for tests only: replies and side effects go out *before* the batch
    /// that describes them commits. This breaks the fencing invariant (a leader cut off from
    /// its quorum would hand out tasks), so the partition test can show that it fails.
    pub effects_before_commit: bool,
    /// Where this executor counts (the node's registry).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// How long a DISTRIBUTED Map's EXPRESS child may run (AWS: 5 minutes).
    pub express_max: Duration,
    /// Backpressure: while this many executions are in the leader's memory (parked ones do
    /// not count), the
    /// shard refuses deliveries that would start more children
    /// ([`crate::Error::Full`]); they wait in their senders' outboxes and come again.
    pub max_live: usize,
    /// The cluster's key for task tokens (from the meta group).
    pub token_key: TokenKey,
    /// When closed executions are deleted.
    pub retention: RetentionConfig,
}

/// Sends to other shards in flight at once from one shard's outboxes; the others wait for
/// a slot (their messages wait in their records meanwhile).
pub const SENDS_IN_FLIGHT: usize = 64;

/// A request to start an execution.
#[derive(Debug, Clone)]
pub struct StartRequest {
    /// The state machine's ARN (not a version or alias ARN).
    pub state_machine_arn: String,
    pub state_machine_name: String,
    pub version_arn: Option<String>,
    pub alias_arn: Option<String>,
    pub role_arn: Option<String>,
    pub name: String,
    /// JSON text.
    pub input: String,
    pub definition: String,
    /// Hold it QUEUED until [`ShardHandle::admit`] (a per-machine concurrency cap).
    pub queued: bool,
    /// A child execution (a DISTRIBUTED Map's, a spread iteration or branch): its parent,
    /// told when it ends.
    pub parent: Option<ParentLink>,
    /// Which inline Map and Parallel states spread their children.
    pub sharding: trellis_asl::Sharding,
    /// A spread iteration or branch runs in its parent's name.
    pub scope: Option<Box<ParentScope>>,
    /// How long it is kept once closed, when its state machine sets its own period (its
    /// children inherit it); `None`: the cluster's.
    pub retention: Option<Duration>,
    /// Names the API call (0: none). The node that took a call may send it to the shard's
    /// leader again after its answer was lost (the leader died or did not answer in time);
    /// the execution it made then answers for it, whatever its status, not
    /// `ExecutionAlreadyExists`.
    pub request_id: u64,
}

/// What a start returned.
#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    pub execution_arn: String,
    pub start_ms: i64,
    /// The execution already existed (an idempotent repeat of the same start).
    pub existed: bool,
}

/// What a shard holds of one capped state machine's executions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CappedMachine {
    pub state_machine_arn: String,
    pub running: u64,
    /// (start date in epoch ms, execution ARN), oldest first.
    pub queued: Vec<(i64, String)>,
}

/// How a run is controlled from outside.
#[derive(Debug, Clone)]
pub enum Control {
    Stop {
        error: Option<String>,
        cause: Option<String>,
    },
    Pause,
    Resume,
}

/// A task token's answer.
#[derive(Debug, Clone)]
pub enum TokenAnswer {
    Success(Value),
    Failure {
        error: Option<String>,
        cause: Option<String>,
    },
    Heartbeat,
}

/// An activity task handed to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityTask {
    pub token: String,
    /// JSON text.
    pub input: String,
}

type Reply<T> = oneshot::Sender<Result<T>>;

enum Cmd {
    Start(Box<StartRequest>, Reply<Started>),
    Feed {
        exec: u64,
        input: Input,
    },
    /// A token's answer, and the call that sent it (0: not named).
    Token(String, TokenAnswer, u64, Reply<()>),
    Control(String, Control, Reply<i64>),
    TakeActivity(String, String, Reply<Option<ActivityTask>>),
    Scan(Reply<ScanReport>),
    /// A retention sweep now; answers how many executions were due.
    Sweep(Reply<usize>),
    Admit(String, Reply<()>),
    Capped(Reply<Vec<CappedMachine>>),
    Redrive(String, Reply<i64>),
    /// Messages from other shards ([`crate::outbox`]), applied in order.
    Deliver(Vec<Message>, Reply<()>),
    /// An input for a running execution, answered once committed (`UpdateMapRun`).
    Input(String, Input, Reply<()>),
    /// The messages of an execution up to `seq` were delivered (sent at `since`).
    Delivered {
        exec: u64,
        seq: u64,
        since: Instant,
    },
    /// A send of an execution's messages failed; after a pause, they go again (with what
    /// was written since), the next pause `pause`.
    Resend {
        exec: u64,
        since: Instant,
        pause: Duration,
    },
    /// An EXPRESS child's in-memory run ended.
    ExpressDone {
        id: u64,
        outcome: trellis_asl::Outcome,
    },
    #[cfg(feature = "fault-injection")]
    DropTimers(String, Reply<()>),
}

/// Talks to a running executor. Cheap to clone.
#[derive(Clone)]
pub struct ShardHandle {
    tx: mpsc::Sender<Cmd>,
    /// The shard's committed state, for reads.
    pub app: ShardApp,
    /// The shard's queued activity tasks, for the workers' long polls.
    pub activities: Arc<ActivityBacklog>,
}

/// What a worker's long poll needs to know of a shard's activity tasks without asking its
/// executor: how many wait for a worker, and a wake-up when one is queued.
#[derive(Default)]
pub struct ActivityBacklog {
    /// Tasks queued for a worker, of every activity, as of the executor's last commit.
    /// Set before [`ActivityBacklog::queued`] is notified, so a poller that registered for
    /// the notification before reading 0 is woken by the task queued after its read.
    waiting: std::sync::atomic::AtomicU64,
    /// Woken (`notify_waiters`) whenever tasks are queued.
    pub queued: Notify,
}

impl ActivityBacklog {
    /// Whether a task may wait here for a worker: `false` only when none does. A poll skips
    /// a shard that answers `false`; `true` may still find no task of the activity asked
    /// for (another activity's, or taken meanwhile).
    pub fn any(&self) -> bool {
        self.waiting.load(std::sync::atomic::Ordering::SeqCst) > 0
    }

    fn set(&self, waiting: u64) {
        self.waiting
            .store(waiting, std::sync::atomic::Ordering::SeqCst);
    }
}

impl ShardHandle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    pub async fn start(&self, req: StartRequest) -> Result<Started> {
        self.call(|r| Cmd::Start(Box::new(req), r)).await
    }

    /// Answers a task token (`SendTaskSuccess`, `SendTaskFailure`, `SendTaskHeartbeat`).
    /// `request_id` names the call (random, not 0; 0: not named): sent again after its
    /// answer closed the task (a reply lost, a leader changed), it succeeds again instead of
    /// finding the task closed.
    pub async fn answer(&self, token: &str, answer: TokenAnswer, request_id: u64) -> Result<()> {
        self.call(|r| Cmd::Token(token.to_string(), answer, request_id, r))
            .await
    }

    /// Stop, pause or resume. Returns the stop date for `Stop`.
    pub async fn control(&self, arn: &str, c: Control) -> Result<i64> {
        self.call(|r| Cmd::Control(arn.to_string(), c, r)).await
    }

    /// Hands the oldest queued task of an activity to a worker, if there is one.
    pub async fn take_activity(&self, arn: &str, worker: &str) -> Result<Option<ActivityTask>> {
        self.call(|r| Cmd::TakeActivity(arn.to_string(), worker.to_string(), r))
            .await
    }

    /// `RedriveExecution`: runs a FAILED, TIMED_OUT or ABORTED execution again from the
    /// top-level state where it stopped. Returns the redrive date.
    pub async fn redrive(&self, arn: &str) -> Result<i64> {
        self.call(|r| Cmd::Redrive(arn.to_string(), r)).await
    }

    /// Lets a QUEUED execution run.
    pub async fn admit(&self, arn: &str) -> Result<()> {
        self.call(|r| Cmd::Admit(arn.to_string(), r)).await
    }

    /// The capped executions this shard holds, per state machine: how many run, and the
    /// queued ones, oldest first.
    pub async fn capped(&self) -> Result<Vec<CappedMachine>> {
        self.call(Cmd::Capped).await
    }

    /// Runs a retention sweep now (as the executor does every
    /// [`RetentionConfig::interval`]); returns how many closed executions were due, at most
    /// twice a sweep's budget. Those it deletes are gone once it returns.
    pub async fn sweep_retention(&self) -> Result<usize> {
        self.call(Cmd::Sweep).await
    }

    /// Runs the detector now and returns what it found (and repaired).
    pub async fn scan(&self) -> Result<ScanReport> {
        self.call(Cmd::Scan).await
    }

    /// Fault injection: forgets an execution's armed timers (as a lost in-memory timer
    /// would), leaving its record as it is.
    #[cfg(feature = "fault-injection")]
    pub async fn inject_drop_timers(&self, arn: &str) -> Result<()> {
        self.call(|r| Cmd::DropTimers(arn.to_string(), r)).await
    }

    /// `UpdateMapRun` on the execution that started the Map Run: its window and tolerance
    /// change. Returns once committed.
    pub async fn update_map_run(
        &self,
        execution_arn: &str,
        map_run_arn: &str,
        max_concurrency: Option<u64>,
        tolerated_failure_count: Option<u64>,
        tolerated_failure_percentage: Option<f64>,
    ) -> Result<()> {
        let input = Input::UpdateMapRun {
            map_run_arn: map_run_arn.to_string(),
            max_concurrency,
            tolerated_failure_count,
            tolerated_failure_percentage,
        };
        self.call(|r| Cmd::Input(execution_arn.to_string(), input, r))
            .await
    }

    /// Applies messages from other shards, in order; returns once they are committed.
    pub async fn deliver(&self, messages: Vec<Message>) -> Result<()> {
        self.call(|r| Cmd::Deliver(messages, r)).await
    }

    /// True once the executor stopped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The clock: epoch milliseconds that follow tokio's clock, so tests can pause and advance
/// time.
#[derive(Clone, Copy)]
struct Clock {
    base_ms: i64,
    base: Instant,
}

impl Clock {
    fn new() -> Clock {
        let base_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Clock {
            base_ms,
            base: Instant::now(),
        }
    }

    fn now_ms(&self) -> i64 {
        self.base_ms + self.base.elapsed().as_millis() as i64
    }

    fn instant(&self, ms: i64) -> Instant {
        self.base + std::time::Duration::from_millis((ms - self.base_ms).max(0) as u64)
    }
}

struct ShardEnv<'a> {
    now: i64,
    rng: &'a mut StdRng,
    key: &'a TokenKey,
    shard: u32,
    exec: u64,
}

impl Entropy for ShardEnv<'_> {
    fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }
}

impl ShardEnv<'_> {
    /// 128 random bits for a task token: tokens are bearer credentials.
    fn nonce(&mut self) -> u128 {
        self.rng.gen()
    }
}

impl Env for ShardEnv<'_> {
    fn now_ms(&mut self) -> i64 {
        self.now
    }

    fn task_token(&mut self, _execution_arn: &str, task_id: u64) -> String {
        let nonce = self.nonce();
        self.key.issue(self.shard, self.exec, task_id, nonce)
    }
}

/// A live execution.
struct Live {
    exec: Execution,
    rec: ExecRecord,
    /// Events since the last proposal.
    events: Vec<HistoryEvent>,
    /// The definition, when it is not stored on the shard yet.
    new_definition: Option<(u64, String)>,
}

/// Work to do once the batch is committed.
enum Effect {
    Dispatch(u64, TaskRequest),
    Timer(u64, u64, i64),
    Started(Reply<Started>, Started),
    Done(Reply<()>),
    Controlled(Reply<i64>, i64),
    Activity(Reply<Option<ActivityTask>>, Option<ActivityTask>),
    Scanned(Reply<ScanReport>, ScanReport),
    Swept(Reply<usize>, usize),
    Capped(Reply<Vec<CappedMachine>>, Vec<CappedMachine>),
    /// Send the execution's pending messages.
    Send(u64),
    /// Run an EXPRESS child in memory (its start committed).
    RunExpress(u64),
}

/// The executor of one shard.
pub struct Executor {
    cfg: ExecutorConfig,
    app: ShardApp,
    proposer: Arc<dyn Proposer>,
    connectors: Arc<dyn Connectors>,
    mailer: Arc<dyn Mailer>,
    rx: mpsc::Receiver<Cmd>,
    tx: mpsc::WeakSender<Cmd>,
    activity_backlog: Arc<ActivityBacklog>,
    clock: Clock,
    /// A CSPRNG: task-token nonces are bearer credentials.
    rng: StdRng,
    live: HashMap<u64, Live>,
    /// Running executions waiting on timers only, out of memory ([`park`]): id -> their
    /// timers (timer id, due), for the detector.
    parked: HashMap<u64, Box<[(u64, i64)]>>,
    /// Every live or parked execution's id, by ARN.
    by_arn: HashMap<String, u64>,
    machines: HashMap<u64, Arc<StateMachine>>,
    /// (due, execution id, timer id)
    timers: BTreeSet<(i64, u64, u64)>,
    /// Activity ARN -> queued (execution id, task id), oldest first.
    activities: HashMap<String, VecDeque<(u64, u64)>>,
    next_id: u64,
    /// This executor's share of the node's activity backlog gauge.
    backlog: u64,
    /// Notified when a capped execution ends.
    on_capped_end: Option<Arc<Notify>>,
    /// When each connector task was last dispatched: (execution, task) -> epoch ms.
    dispatched: HashMap<(u64, u64), i64>,
    /// Ended executions whose messages are not all delivered yet, by id.
    mail: HashMap<u64, ExecRecord>,
    /// Executions with a send in flight (one at a time each, so their messages stay in
    /// order).
    sending: HashSet<u64>,
    /// Slots for sends in flight ([`SENDS_IN_FLIGHT`]).
    send_slots: Arc<tokio::sync::Semaphore>,
    /// EXPRESS children running here in memory, by id and by ARN, and the definitions of
    /// those started since the last commit (written with it).
    express: HashMap<u64, express::Express>,
    express_by_arn: HashMap<String, u64>,
    express_definitions: Vec<(u64, String)>,
    /// Closed executions whose deletion goes with this batch ([`retention`]).
    expiring: Vec<Expiry>,
    /// This executor's share of the retention-due gauge.
    due_reported: i64,
    // Per batch.
    dirty: HashSet<u64>,
    effects: Vec<Effect>,
}

impl Executor {
    /// Builds the executor from the shard's committed state (the caller makes sure this node
    /// leads the shard and has applied its log) and returns it with its handle.
    pub fn new(
        cfg: ExecutorConfig,
        app: ShardApp,
        proposer: Arc<dyn Proposer>,
        connectors: Arc<dyn Connectors>,
        mailer: Arc<dyn Mailer>,
    ) -> Result<(Executor, ShardHandle)> {
        let (tx, rx) = mpsc::channel(4096);
        let activities = Arc::new(ActivityBacklog::default());
        let mut ex = Executor {
            next_id: app.next_exec_id()?,
            backlog: 0,
            on_capped_end: None,
            dispatched: HashMap::new(),
            mail: HashMap::new(),
            sending: HashSet::new(),
            send_slots: Arc::new(tokio::sync::Semaphore::new(SENDS_IN_FLIGHT)),
            express: HashMap::new(),
            express_by_arn: HashMap::new(),
            express_definitions: Vec::new(),
            cfg,
            app: app.clone(),
            proposer,
            connectors,
            mailer,
            rx,
            tx: tx.downgrade(),
            activity_backlog: activities.clone(),
            clock: Clock::new(),
            rng: StdRng::from_entropy(),
            live: HashMap::new(),
            parked: HashMap::new(),
            by_arn: HashMap::new(),
            machines: HashMap::new(),
            timers: BTreeSet::new(),
            activities: HashMap::new(),
            expiring: Vec::new(),
            due_reported: 0,
            dirty: HashSet::new(),
            effects: Vec::new(),
        };
        ex.load()?;
        Ok((
            ex,
            ShardHandle {
                tx,
                app,
                activities,
            },
        ))
    }

    /// Notifies `ended` whenever a capped execution ends, after the entry that ends it
    /// commits (its slot under the cap is free).
    pub fn on_capped_end(mut self, ended: Arc<Notify>) -> Self {
        self.on_capped_end = Some(ended);
        self
    }

    /// Rebuilds live executions, timers and queues from the committed records, and
    /// dispatches again the tasks whose results never arrived (at-least-once). Executions
    /// waiting on timers only are parked from the `live` index, their records unread.
    fn load(&mut self) -> Result<()> {
        let started = std::time::Instant::now();
        let app = self.app.clone();
        let mut running = 0i64;
        app.for_each_live(|e| {
            let rec = match e {
                LiveExecution::Waiting { id, arn, timers } => {
                    running += 1;
                    self.park_entry(id, arn, timers);
                    return Ok(());
                }
                LiveExecution::Record(rec) => *rec,
            };
            if !rec.outbox.is_empty() {
                self.cfg.metrics.outbox.inc_by(rec.outbox.len() as i64);
                self.effects.push(Effect::Send(rec.id));
            }
            if rec.status.is_terminal() {
                // Ended with messages still to deliver.
                self.mail.insert(rec.id, rec);
                return Ok(());
            }
            if rec.express {
                // An EXPRESS child that was running on the last leader: it runs again.
                self.resume_express(rec);
                return Ok(());
            }
            if rec.status == Status::Running {
                running += 1;
            }
            if rec.parkable() {
                self.park_record(&rec);
                return Ok(());
            }
            for (timer, due) in &rec.timers {
                self.timers.insert((*due, rec.id, *timer));
            }
            for (task, t) in &rec.tasks {
                match (&t.activity, t.started) {
                    (Some(a), false) => self
                        .activities
                        .entry(a.clone())
                        .or_default()
                        .push_back((rec.id, *task)),
                    (None, false) => self
                        .effects
                        .push(Effect::Dispatch(rec.id, t.request.clone())),
                    _ => {}
                }
            }
            self.by_arn.insert(rec.arn.clone(), rec.id);
            let id = rec.id;
            let live = self.revive(rec)?;
            self.live.insert(id, live);
            Ok(())
        })?;
        for q in self.activities.values_mut() {
            q.make_contiguous().sort_unstable();
        }
        self.cfg.metrics.running.inc_by(running);
        tracing::debug!(
            shard_id = self.cfg.shard,
            live = self.live.len(),
            parked = self.parked.len(),
            timers = self.timers.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "executor loaded"
        );
        Ok(())
    }

    fn machine(&mut self, hash: u64, text: Option<&str>) -> Result<Arc<StateMachine>> {
        if let Some(sm) = self.machines.get(&hash) {
            return Ok(sm.clone());
        }
        let text = match text {
            Some(t) => t.to_string(),
            None => self
                .app
                .definition(hash)?
                .ok_or_else(|| Error::Corrupt(format!("definition {hash:x} is missing")))?,
        };
        let sm = trellis_asl::parse(&text, Default::default()).map_err(|e| {
            Error::InvalidDefinition {
                reason: e.to_string(),
            }
        })?;
        self.machines.insert(hash, sm.clone());
        Ok(sm)
    }

    /// Runs until the handle is dropped or this node stops leading the shard.
    pub async fn run(mut self) -> Result<()> {
        let r = self.run_loop().await;
        // These executions now advance elsewhere (or after a restart).
        let m = self.cfg.metrics.clone();
        let running = self
            .live
            .values()
            .filter(|l| l.rec.status == Status::Running)
            .count()
            + self.parked.len();
        m.running.dec_by(running as i64);
        m.parked.dec_by(self.parked.len() as i64);
        m.activity_backlog.dec_by(self.backlog as i64);
        let pending: usize = (self.live.values().map(|l| &l.rec))
            .chain(self.mail.values())
            .map(|r| r.outbox.len())
            .sum();
        m.outbox.dec_by(pending as i64);
        m.expiry_due.dec_by(self.due_reported);
        r
    }

    async fn run_loop(&mut self) -> Result<()> {
        // Effects left by `load` (tasks to dispatch again).
        self.perform_effects();
        let mut batch = Vec::new();
        let mut scan = tokio::time::interval(self.cfg.detector.interval);
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        scan.tick().await;
        let mut sweep = tokio::time::interval(self.cfg.retention.interval);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        sweep.tick().await;
        loop {
            let next_timer = self.timers.first().map(|t| self.clock.instant(t.0));
            let mut periodic = false;
            let mut retention = false;
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(c) => batch.push(c),
                    None => return Ok(()),
                },
                _ = sleep_until(next_timer) => {}
                _ = scan.tick() => periodic = true,
                _ = sweep.tick() => retention = true,
            }
            if retention {
                if let Err(e) = self.sweep(self.clock.now_ms()) {
                    tracing::warn!(shard_id = self.cfg.shard, error = %e, "retention sweep failed");
                }
            }
            if periodic {
                let report = self.detect(self.clock.now_ms());
                for f in &report.findings {
                    tracing::warn!(shard_id = f.shard, execution_id = %f.execution_arn, kind = f.kind,
                        repaired = f.repaired, detail = %f.detail, "detector finding");
                }
            }
            while batch.len() < self.cfg.max_batch {
                match self.rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            let now = self.clock.now_ms();
            for cmd in batch.drain(..) {
                self.handle(cmd, now);
            }
            self.fire_timers(now);
            if let Err(e) = self.commit().await {
                tracing::warn!(shard_id = self.cfg.shard, error = %e, "proposal failed; executor stops");
                return Err(e);
            }
        }
    }

    fn handle(&mut self, cmd: Cmd, now: i64) {
        match cmd {
            Cmd::Start(req, reply) => match self.start(*req, now) {
                Ok(Some(started)) => self.effects.push(Effect::Started(reply, started)),
                Ok(None) => {}
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Cmd::Feed { exec, input } => {
                self.wake(exec);
                if self.live.contains_key(&exec) {
                    self.feed(exec, input, now);
                }
            }
            Cmd::Token(token, answer, request_id, reply) => {
                match self.token(&token, answer, request_id, now) {
                    Ok(()) => self.effects.push(Effect::Done(reply)),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Cmd::Control(arn, c, reply) => {
                self.wake_arn(&arn);
                match self.control(&arn, c, now) {
                    Ok(at) => self.effects.push(Effect::Controlled(reply, at)),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Cmd::TakeActivity(arn, worker, reply) => {
                let task = self.take_activity(&arn, &worker, now);
                self.effects.push(Effect::Activity(reply, task));
            }
            Cmd::Admit(arn, reply) => {
                if let Some(id) = self.by_arn.get(&arn).copied() {
                    let queued = self
                        .live
                        .get(&id)
                        .is_some_and(|l| l.rec.status == Status::Queued);
                    if queued {
                        if let Some(l) = self.live.get_mut(&id) {
                            l.rec.status = Status::Running;
                        }
                        self.feed(id, Input::Start, now);
                        self.cfg.metrics.running.inc();
                    }
                }
                self.effects.push(Effect::Done(reply));
            }
            Cmd::Capped(reply) => {
                let capped = self.capped();
                self.effects.push(Effect::Capped(reply, capped));
            }
            Cmd::Redrive(arn, reply) => match self.redrive(&arn, now) {
                Ok(at) => self.effects.push(Effect::Controlled(reply, at)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Cmd::Scan(reply) => {
                let report = self.detect(now);
                self.effects.push(Effect::Scanned(reply, report));
            }
            Cmd::Sweep(reply) => match self.sweep(now) {
                Ok(due) => self.effects.push(Effect::Swept(reply, due)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Cmd::Deliver(messages, reply) => match self.receive(messages, now) {
                Ok(()) => self.effects.push(Effect::Done(reply)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Cmd::Delivered { exec, seq, since } => self.delivered(exec, seq, since),
            Cmd::Resend { exec, since, pause } => {
                self.sending.remove(&exec);
                self.send_again(exec, since, pause);
            }
            Cmd::ExpressDone { id, outcome } => self.express_done(id, outcome, now),
            Cmd::Input(arn, input, reply) => {
                self.wake_arn(&arn);
                let running = self.by_arn.get(&arn).copied().filter(|id| {
                    self.live
                        .get(id)
                        .is_some_and(|l| l.rec.status == Status::Running)
                });
                match running {
                    Some(id) => {
                        self.feed(id, input, now);
                        self.effects.push(Effect::Done(reply));
                    }
                    None => {
                        let _ = reply.send(Err(Error::NotRunning { arn }));
                    }
                }
            }
            #[cfg(feature = "fault-injection")]
            Cmd::DropTimers(arn, reply) => {
                self.wake_arn(&arn);
                if let Some(id) = self.by_arn.get(&arn).copied() {
                    self.timers.retain(|t| t.1 != id);
                }
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// Counts the live capped executions, per state machine. The answer goes out once the
    /// batch commits, so it describes committed state.
    fn capped(&self) -> Vec<CappedMachine> {
        let mut by: std::collections::BTreeMap<&str, CappedMachine> = Default::default();
        for l in self.live.values().filter(|l| l.rec.capped) {
            let m = by
                .entry(l.rec.state_machine_arn.as_str())
                .or_insert_with(|| CappedMachine {
                    state_machine_arn: l.rec.state_machine_arn.clone(),
                    ..Default::default()
                });
            match l.rec.status {
                Status::Queued => m.queued.push((l.rec.start_ms, l.rec.arn.clone())),
                Status::Running => m.running += 1,
                _ => {}
            }
        }
        by.into_values()
            .map(|mut m| {
                m.queued.sort_unstable();
                m
            })
            .collect()
    }

    /// Starts an execution. `Ok(None)` when the reply was already sent.
    fn start(&mut self, req: StartRequest, now: i64) -> Result<Option<Started>> {
        let arn = format!(
            "arn:aws:states:{}:{}:execution:{}:{}",
            self.cfg.region, self.cfg.account, req.state_machine_name, req.name
        );
        if let Some(rec) = self.existing(&arn)? {
            // Idempotent start: the same input while it runs returns the same execution, and
            // the same call sent again always does.
            let same_call = req.request_id != 0 && rec.request_id == req.request_id;
            if same_call || (!rec.status.is_terminal() && rec.input == req.input) {
                return Ok(Some(Started {
                    execution_arn: arn,
                    start_ms: rec.start_ms,
                    existed: true,
                }));
            }
            return Err(Error::ExecutionAlreadyExists { arn });
        }
        let input: Value =
            serde_json::from_str(&req.input).map_err(|e| Error::InvalidExecutionInput {
                reason: e.to_string(),
            })?;
        let hash = definition_hash(&req.definition);
        let stored = self.machines.contains_key(&hash) || self.app.definition(hash)?.is_some();
        let sm = self.machine(hash, Some(&req.definition))?;
        let mut info = ExecutionInfo::new(
            &self.cfg.region,
            &self.cfg.account,
            &req.state_machine_name,
            &req.name,
            input,
        );
        info.state_machine_arn = req.state_machine_arn.clone();
        if let Some(r) = &req.role_arn {
            info.role_arn = r.clone();
        }
        info.state_machine_version_arn = req.version_arn.clone();
        info.input_text = Some(req.input.clone());
        info.state_machine_alias_arn = req.alias_arn.clone();
        info.scope = req.scope;
        let id = self.next_id;
        self.next_id += 1;
        let mut rec = ExecRecord::new(
            id,
            arn.clone(),
            req.name,
            req.state_machine_arn,
            hash,
            req.input,
            now,
        );
        rec.version_arn = req.version_arn;
        rec.alias_arn = req.alias_arn;
        rec.capped = req.queued;
        if req.queued {
            rec.status = Status::Queued;
        }
        if req.parent.is_some() {
            self.cfg.metrics.children_started.inc();
        }
        rec.parent = req.parent;
        rec.retention_ms = req
            .retention
            .map(|r| u64::try_from(r.as_millis()).unwrap_or(u64::MAX));
        rec.request_id = req.request_id;
        self.by_arn.insert(arn.clone(), id);
        self.live.insert(
            id,
            Live {
                exec: Execution::new(sm, info, self.cfg.limits.clone()).with_sharding(req.sharding),
                rec,
                events: Vec::new(),
                new_definition: (!stored).then_some((hash, req.definition)),
            },
        );
        let m = self.cfg.metrics.clone();
        m.started.inc();
        if req.queued {
            // Stored as QUEUED; it starts when admitted.
            self.dirty.insert(id);
        } else {
            self.feed(id, Input::Start, now);
            m.running.inc();
        }
        Ok(Some(Started {
            execution_arn: arn,
            start_ms: now,
            existed: false,
        }))
    }

    /// The record of an execution by ARN, live or stored (a parked one's is as stored).
    fn existing(&self, arn: &str) -> Result<Option<ExecRecord>> {
        if let Some(l) = self.by_arn.get(arn).and_then(|id| self.live.get(id)) {
            return Ok(Some(l.rec.clone()));
        }
        self.app.record(arn)
    }

    /// Steps one execution and records what the step asks for.
    fn feed(&mut self, id: u64, input: Input, now: i64) {
        let Some(live) = self.live.get_mut(&id) else {
            return;
        };
        let _span = tracing::debug_span!(
            "step",
            shard_id = self.cfg.shard,
            execution_id = %live.rec.arn
        )
        .entered();
        tracing::trace!(?input, "input");
        let submitted = match &input {
            Input::TaskSubmitted { task_id, .. } => Some(*task_id),
            _ => None,
        };
        let mut env = ShardEnv {
            now,
            rng: &mut self.rng,
            key: &self.cfg.token_key,
            shard: self.cfg.shard,
            exec: id,
        };
        let queued = live.rec.outbox.len();
        let out = live.exec.step(input, &mut env);
        let entered = out
            .events
            .iter()
            .filter(|e| e.event_type.as_str().ends_with("StateEntered"))
            .count() as u64;
        self.cfg.metrics.transitions.inc_by(entered);
        live.events.extend(out.events);
        let rec = &mut live.rec;
        for cmd in out.commands {
            match cmd {
                Command::InvokeTask(t) => {
                    let activity = match &t.resource {
                        Resource::Activity { arn } => Some(arn.clone()),
                        _ => None,
                    };
                    if let Some(a) = &activity {
                        self.activities
                            .entry(a.clone())
                            .or_default()
                            .push_back((id, t.task_id));
                    }
                    rec.tasks.insert(
                        t.task_id,
                        TaskRecord {
                            request: t.clone(),
                            token: t.token.clone(),
                            activity: activity.clone(),
                            started: false,
                        },
                    );
                    if activity.is_none() {
                        self.effects.push(Effect::Dispatch(id, t));
                    }
                }
                Command::StartTimer {
                    timer_id,
                    fire_at_ms,
                } => {
                    rec.timers.insert(timer_id, fire_at_ms);
                    self.effects.push(Effect::Timer(id, timer_id, fire_at_ms));
                }
                Command::CancelTimer { .. } | Command::CancelTask { .. } => {}
                Command::StartChild(request) => {
                    rec.send(Message::StartChild {
                        parent_arn: rec.arn.clone(),
                        request,
                        retention_ms: rec.retention_ms,
                    });
                }
                Command::StopChild { child_arn, .. } => {
                    rec.send(Message::StopChild { child_arn });
                }
                Command::Finish(outcome) => {
                    if let Some(p) = &rec.parent {
                        self.cfg.metrics.children_finished.inc();
                        // A spread iteration or branch: its parent writes its history.
                        let events = if p.inline {
                            match self.app.history(id, 1, u64::MAX) {
                                Ok(mut h) => {
                                    h.extend(live.events.iter().cloned());
                                    h
                                }
                                Err(e) => {
                                    tracing::warn!(shard_id = self.cfg.shard, execution_id = %rec.arn, error = %e, "history not readable; the parent gets none");
                                    live.events.clone()
                                }
                            }
                        } else {
                            Vec::new()
                        };
                        rec.send(Message::ChildFinished {
                            parent_arn: p.arn.clone(),
                            child_id: p.child_id,
                            outcome: outcome.clone(),
                            events,
                        });
                    }
                    rec.status = Status::from_asl(outcome.status);
                    self.cfg.metrics.finished(rec.status);
                    self.cfg.metrics.running.dec();
                    rec.stop_ms = Some(now);
                    rec.output = outcome.output.map(|v| v.to_string());
                    rec.error = outcome.error;
                    rec.cause = outcome.cause;
                }
            }
        }
        if rec.outbox.len() > queued {
            self.cfg
                .metrics
                .outbox
                .inc_by((rec.outbox.len() - queued) as i64);
            self.effects.push(Effect::Send(id));
        }
        let timers: HashSet<u64> = live.exec.pending_timers().collect();
        let tasks: HashSet<u64> = live.exec.pending_tasks().collect();
        rec.timers.retain(|t, _| timers.contains(t));
        rec.tasks.retain(|t, _| tasks.contains(t));
        // A callback task whose call returned waits for its token: it is not dispatched
        // again, and the detector does not count it as undelivered.
        if let Some(t) = submitted.and_then(|t| rec.tasks.get_mut(&t)) {
            t.started = true;
        }
        if rec.map_runs.as_slice() != live.exec.map_runs() {
            rec.map_runs = live.exec.map_runs().to_vec();
        }
        rec.paused = live.exec.is_paused();
        rec.last_event_id = live.exec.event_count();
        self.dirty.insert(id);
    }

    /// Fires the timers due by `now`, at most `max_batch` of them (each may load a parked
    /// execution: a million Waits ending at once are loaded a batch at a time, and the loop
    /// comes straight back for the rest).
    fn fire_timers(&mut self, now: i64) {
        let mut fired = 0;
        while let Some(&(due, exec, timer)) = self.timers.first() {
            if due > now || fired >= self.cfg.max_batch.max(1) {
                break;
            }
            fired += 1;
            self.timers.pop_first();
            self.cfg
                .metrics
                .timer_lag_seconds
                .observe((now - due).max(0) as f64 / 1000.0);
            self.wake(exec);
            let pending = self
                .live
                .get(&exec)
                .is_some_and(|l| l.rec.timers.contains_key(&timer));
            if pending {
                self.feed(exec, Input::TimerFired { timer_id: timer }, now);
            }
        }
    }

    /// Proposes every changed execution, then performs the batch's effects.
    async fn commit(&mut self) -> Result<()> {
        if self.dirty.is_empty() && self.expiring.is_empty() {
            self.perform_effects();
            return Ok(());
        }
        let mut ops = Vec::with_capacity(self.dirty.len());
        let mut dirty: Vec<u64> = self.dirty.drain().collect();
        dirty.sort_unstable();
        let mut definitions: HashMap<u64, String> = self.express_definitions.drain(..).collect();
        for id in &dirty {
            let Some(live) = self.live.get_mut(id) else {
                // An ended execution whose messages were delivered (its outbox shrank), or
                // an EXPRESS child that started or ended.
                let rec = self
                    .mail
                    .get(id)
                    .or_else(|| self.express.get(id).map(|e| &e.rec));
                if let Some(rec) = rec {
                    let definition = definitions
                        .remove(&rec.definition)
                        .map(|text| (rec.definition, text));
                    ops.push(ShardOp::Put {
                        record: Box::new(rec.clone()),
                        events: Vec::new(),
                        definition,
                    });
                }
                continue;
            };
            let mut record = live.rec.clone();
            // A finished execution needs no interpreter state (redrive would; it is not
            // implemented yet, see docs/compatibility.md).
            if !record.status.is_terminal() || live.exec.redrivable() {
                let state = serde_json::to_string(live.exec.state())?;
                record.state = Some(RawValue::from_string(state)?);
                // An ended one whose messages wait in `mail` is written again from there
                // as they are delivered: that copy keeps what a redrive needs.
                if record.status.is_terminal() {
                    live.rec.state = record.state.clone();
                }
            }
            ops.push(ShardOp::Put {
                record: Box::new(record),
                events: std::mem::take(&mut live.events),
                definition: live.new_definition.take(),
            });
        }
        let expired = match self.expire_op() {
            Some((op, n)) => {
                ops.push(op);
                n
            }
            None => 0,
        };
        if self.cfg.effects_before_commit {
            self.perform_effects();
        }
        let m = self.cfg.metrics.clone();
        m.batch_size.observe(ops.len() as f64);
        let t0 = Instant::now();
        let mut proposed = Ok(());
        for (entry, bytes) in crate::request::split_by_bytes(ops, self.cfg.max_entry_bytes) {
            m.entry_bytes.observe(bytes as f64);
            proposed = self.proposer.propose(ShardRequest { ops: entry }).await;
            if proposed.is_err() {
                break;
            }
        }
        m.apply_seconds.observe(t0.elapsed().as_secs_f64());
        // A failure after some entries committed stops the executor like any failure: the
        // next leader loads what committed, and callers retry (starts are idempotent).
        if let Err(e) = proposed {
            // In-memory state is ahead of what committed: answer every waiter and stop.
            for effect in self.effects.drain(..) {
                fail(effect, &e);
            }
            return Err(e);
        }
        m.expired.inc_by(expired as u64);
        for &id in &dirty {
            if self
                .live
                .get(&id)
                .is_some_and(|l| l.rec.status.is_terminal())
            {
                if let Some(l) = self.live.remove(&id) {
                    self.by_arn.remove(&l.rec.arn);
                    if let (true, Some(ended)) = (l.rec.capped, &self.on_capped_end) {
                        ended.notify_one();
                    }
                    if !l.rec.outbox.is_empty() {
                        self.mail.insert(id, l.rec);
                    }
                }
            } else if self.mail.get(&id).is_some_and(|r| r.outbox.is_empty()) {
                self.mail.remove(&id);
            }
        }
        self.perform_effects();
        // Sends just started keep theirs in memory until delivered.
        self.park(&dirty);
        Ok(())
    }

    fn perform_effects(&mut self) {
        let mut activity = false;
        let mut sends = Vec::new();
        for effect in std::mem::take(&mut self.effects) {
            match effect {
                Effect::Dispatch(exec, task) => {
                    self.dispatched
                        .insert((exec, task.task_id), self.clock.now_ms());
                    let connectors = self.connectors.clone();
                    let tx = self.tx.clone();
                    let fence = Fence {
                        shard: self.cfg.shard,
                        epoch: self.cfg.epoch,
                        term: self.cfg.term,
                    };
                    tokio::spawn(async move {
                        let input = connectors.invoke(task, fence).await;
                        if let Some(tx) = tx.upgrade() {
                            let _ = tx.send(Cmd::Feed { exec, input }).await;
                        }
                    });
                }
                Effect::Timer(exec, timer, due) => {
                    self.timers.insert((due, exec, timer));
                }
                Effect::Started(r, s) => {
                    let _ = r.send(Ok(s));
                }
                Effect::Done(r) => {
                    let _ = r.send(Ok(()));
                }
                Effect::Controlled(r, at) => {
                    let _ = r.send(Ok(at));
                }
                Effect::Activity(r, t) => {
                    let _ = r.send(Ok(t));
                }
                Effect::Scanned(r, report) => {
                    let _ = r.send(Ok(report));
                }
                Effect::Swept(r, due) => {
                    let _ = r.send(Ok(due));
                }
                Effect::Capped(r, capped) => {
                    let _ = r.send(Ok(capped));
                }
                Effect::Send(exec) => sends.push(exec),
                Effect::RunExpress(id) => self.run_express(id),
            }
        }
        for exec in sends {
            self.send(exec);
        }
        let backlog: u64 = self.activities.values().map(|q| q.len() as u64).sum();
        if backlog > 0 {
            activity = true;
        }
        let m = &self.cfg.metrics.activity_backlog;
        m.inc_by(backlog as i64);
        m.dec_by(self.backlog as i64);
        self.backlog = backlog;
        self.activity_backlog.set(backlog);
        if activity {
            self.activity_backlog.queued.notify_waiters();
        }
    }
}

fn fail(effect: Effect, e: &Error) {
    let err = || match e {
        Error::NotLeader { leader } => Error::NotLeader { leader: *leader },
        _ => Error::Stopped,
    };
    match effect {
        Effect::Started(r, _) => {
            let _ = r.send(Err(err()));
        }
        Effect::Done(r) => {
            let _ = r.send(Err(err()));
        }
        Effect::Controlled(r, _) => {
            let _ = r.send(Err(err()));
        }
        Effect::Activity(r, _) => {
            let _ = r.send(Err(err()));
        }
        Effect::Scanned(r, _) => {
            let _ = r.send(Err(err()));
        }
        Effect::Swept(r, _) => {
            let _ = r.send(Err(err()));
        }
        Effect::Capped(r, _) => {
            let _ = r.send(Err(err()));
        }
        Effect::Dispatch(..) | Effect::Timer(..) | Effect::Send(..) | Effect::RunExpress(..) => {}
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
