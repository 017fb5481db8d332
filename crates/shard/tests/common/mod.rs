//! Helpers shared by the shard's integration tests: a one-node shard group with its
//! executor, on a data directory that survives restarts.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use trellis_asl::Limits;
use trellis_shard::executor::{Connectors, DetectorConfig, ExecutorConfig, StartRequest};
use trellis_shard::raft::{open_single_node, ShardRaft};
use trellis_shard::{Executor, ShardHandle};
use trellis_storage::NodeDb;

pub struct ShardNode {
    pub raft: ShardRaft,
    pub handle: ShardHandle,
    pub executor: tokio::task::JoinHandle<trellis_shard::Result<()>>,
}

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
    let (raft, app) = open_single_node(&db, 1, 1, "local").await.unwrap();
    let cfg = ExecutorConfig {
        metrics: Default::default(),
        shard: 0,
        epoch: 1,
        term: raft.metrics().borrow().current_term,
        region: "us-east-1".into(),
        account: "000000000000".into(),
        limits: Limits::default(),
        max_batch: 256,
        max_entry_bytes: 4 << 20,
        detector,
        effects_before_commit: false,
    };
    let (ex, handle) =
        Executor::new(cfg, app, Arc::new(raft.clone()), Arc::new(connectors)).unwrap();
    let executor = tokio::spawn(ex.run());
    ShardNode {
        raft,
        handle,
        executor,
    }
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
