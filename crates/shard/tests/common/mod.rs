//! Helpers shared by the shard's integration tests: a one-node shard group with its
//! executor, on a data directory that survives restarts.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use trellis_asl::Limits;
use trellis_shard::executor::{
    BoxFuture, Connectors, DetectorConfig, ExecutorConfig, RetentionConfig, StartRequest,
};
use trellis_shard::outbox::{Mailer, Message, NoMail};
use trellis_shard::raft::{open_single_node, ShardRaft};
use trellis_shard::{Executor, ShardHandle};
use trellis_storage::NodeDb;

pub struct ShardNode {
    pub raft: ShardRaft,
    pub handle: ShardHandle,
    pub executor: tokio::task::JoinHandle<trellis_shard::Result<()>>,
    pub metrics: Arc<trellis_shard::metrics::Metrics>,
}

/// Executions a test shard runs before it refuses child starts: more than any test needs,
/// unless the test is about that bound ([`boot_shards_with`]).
pub const MAX_LIVE: usize = 100_000;

impl ShardNode {
    /// Shuts the group down and waits until nothing holds the database any more.
    pub async fn stop(self) {
        self.raft.shutdown().await.unwrap();
        drop(self.handle);
        let _ = self.executor.await;
    }
}

/// Opens the store, waiting for a previous instance's lock to go (sled releases it from a
/// background thread after the last handle drops).
pub async fn open_db(dir: &std::path::Path) -> NodeDb {
    for _ in 0..250 {
        if let Ok(db) = NodeDb::open(dir) {
            return db;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the database stayed locked");
}

/// Opens shard group 1 on `dir` and starts its executor.
pub async fn boot(
    dir: &std::path::Path,
    connectors: impl Connectors,
    detector: DetectorConfig,
) -> ShardNode {
    let db = open_db(dir).await;
    let limits = Limits::default();
    let connectors: Arc<dyn Connectors> = Arc::new(connectors);
    start_shard(
        &db,
        0,
        connectors,
        Arc::new(NoMail),
        limits,
        detector,
        MAX_LIVE,
    )
    .await
}

/// Opens shard `shard` (group `shard + 1`) of `db` and starts its executor.
pub async fn start_shard(
    db: &NodeDb,
    shard: u32,
    connectors: Arc<dyn Connectors>,
    mailer: Arc<dyn Mailer>,
    limits: Limits,
    detector: DetectorConfig,
    max_live: usize,
) -> ShardNode {
    start_shard_with(
        db,
        shard,
        connectors,
        mailer,
        limits,
        detector,
        max_live,
        Default::default(),
    )
    .await
}

/// [`start_shard`] with a retention of its own.
#[allow(clippy::too_many_arguments)]
pub async fn start_shard_with(
    db: &NodeDb,
    shard: u32,
    connectors: Arc<dyn Connectors>,
    mailer: Arc<dyn Mailer>,
    limits: Limits,
    detector: DetectorConfig,
    max_live: usize,
    retention: RetentionConfig,
) -> ShardNode {
    let metrics = Arc::new(trellis_shard::metrics::Metrics::default());
    let (raft, app) = open_single_node(db, u64::from(shard) + 1, 1, "local")
        .await
        .unwrap();
    let cfg = ExecutorConfig {
        metrics: metrics.clone(),
        shard,
        epoch: 1,
        term: raft.metrics().borrow().current_term,
        region: "us-east-1".into(),
        account: "000000000000".into(),
        limits,
        max_batch: 256,
        max_entry_bytes: 4 << 20,
        detector,
        effects_before_commit: false,
        express_max: std::time::Duration::from_secs(300),
        max_live,
        token_key: trellis_shard::token::TokenKey::new([7; 32]),
        retention,
    };
    let (ex, handle) = Executor::new(cfg, app, Arc::new(raft.clone()), connectors, mailer).unwrap();
    let executor = tokio::spawn(ex.run());
    ShardNode {
        raft,
        handle,
        executor,
        metrics,
    }
}

/// Delivers shard messages to in-process executors, by the shard of their target; can
/// refuse deliveries (a partition) or make each twice (a retry after a lost answer).
#[derive(Clone, Default)]
pub struct Loopback {
    pub handles: Arc<Mutex<Vec<ShardHandle>>>,
    pub refuse: Arc<AtomicBool>,
    pub twice: Arc<AtomicBool>,
    pub delivered: Arc<AtomicUsize>,
}

impl Mailer for Loopback {
    fn send(&self, messages: Vec<Message>) -> BoxFuture<'static, Result<(), String>> {
        let me = self.clone();
        Box::pin(async move {
            if me.refuse.load(Ordering::SeqCst) {
                return Err("deliveries refused".into());
            }
            let handles = me.handles.lock().unwrap().clone();
            if handles.is_empty() {
                return Err("the shards are not up yet".into());
            }
            let n = handles.len() as u32;
            let mut groups: BTreeMap<u32, Vec<Message>> = BTreeMap::new();
            for m in messages {
                groups
                    .entry(trellis_shard::shard_of(m.target(), n))
                    .or_default()
                    .push(m);
            }
            // Every group is tried, as the cluster's mail sends them all at once.
            let mut failed = Vec::new();
            for (shard, group) in groups {
                let h = &handles[shard as usize];
                let times = if me.twice.load(Ordering::SeqCst) {
                    2
                } else {
                    1
                };
                let mut ok = true;
                for _ in 0..times {
                    if let Err(e) = h.deliver(group.clone()).await {
                        failed.push(e.to_string());
                        ok = false;
                        break;
                    }
                }
                if ok {
                    me.delivered.fetch_add(group.len(), Ordering::SeqCst);
                }
            }
            if failed.is_empty() {
                Ok(())
            } else {
                Err(failed.join("; "))
            }
        })
    }
}

/// `n` shards on one data directory, sending each other messages through `mail`, with
/// DISTRIBUTED Map children as child executions.
pub async fn boot_shards(
    dir: &std::path::Path,
    n: u32,
    connectors: Arc<dyn Connectors>,
    mail: &Loopback,
) -> (NodeDb, Vec<ShardNode>) {
    boot_shards_with(dir, n, connectors, mail, MAX_LIVE).await
}

/// [`boot_shards`], each shard refusing child starts while it runs `max_live` executions.
pub async fn boot_shards_with(
    dir: &std::path::Path,
    n: u32,
    connectors: Arc<dyn Connectors>,
    mail: &Loopback,
    max_live: usize,
) -> (NodeDb, Vec<ShardNode>) {
    let db = open_db(dir).await;
    let limits = Limits {
        child_executions: true,
        ..Limits::default()
    };
    let mut nodes = Vec::new();
    for shard in 0..n {
        let mailer: Arc<dyn Mailer> = Arc::new(mail.clone());
        let node = start_shard(
            &db,
            shard,
            connectors.clone(),
            mailer,
            limits.clone(),
            Default::default(),
            max_live,
        )
        .await;
        nodes.push(node);
    }
    *mail.handles.lock().unwrap() = nodes.iter().map(|n| n.handle.clone()).collect();
    (db, nodes)
}

pub fn start_req(name: &str, definition: &Value, input: Value) -> StartRequest {
    StartRequest {
        state_machine_arn: "arn:aws:states:us-east-1:000000000000:stateMachine:M".into(),
        state_machine_name: "M".into(),
        version_arn: None,
        alias_arn: None,
        role_arn: None,
        name: name.into(),
        input: input.to_string(),
        definition: definition.to_string(),
        queued: false,
        parent: None,
        sharding: Default::default(),
        scope: None,
        retention: None,
        request_id: 0,
    }
}

/// Polls `f` until it returns something (bounded: 30 s).
pub async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..1500 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}
