//! The shard table: this node's replica of each shard it holds (with the executor's handle
//! while it leads the shard), and the leader cache (which node last served each shard as
//! its leader). It owns that state; the other parts read it through these methods.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use trellis_proto::{ApiError, Code};
use trellis_shard::raft::ShardRaft;
use trellis_shard::{shard_of, ShardApp, ShardHandle};

use crate::ApiResult;

/// This node's replica of one shard.
pub struct Replica {
    pub shard: u32,
    pub raft: ShardRaft,
    pub app: ShardApp,
    /// The executor's handle while this node leads the shard.
    leading: std::sync::RwLock<Option<ShardHandle>>,
}

impl Replica {
    pub fn new(shard: u32, raft: ShardRaft, app: ShardApp) -> Replica {
        Replica {
            shard,
            raft,
            app,
            leading: Default::default(),
        }
    }

    pub fn handle(&self) -> Option<ShardHandle> {
        self.leading
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_handle(&self, h: Option<ShardHandle>) {
        *self.leading.write().unwrap_or_else(|p| p.into_inner()) = h;
    }
}

/// A shard's slot on this node: empty when the node holds no replica of it.
#[derive(Default)]
pub struct ShardCell(std::sync::RwLock<Option<Arc<Replica>>>);

impl ShardCell {
    pub fn get(&self) -> Option<Arc<Replica>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, r: Arc<Replica>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(r);
    }

    pub fn clear(&self) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// One cell per shard once the shard count is known, and the leader cache.
#[derive(Default)]
pub struct ShardTable {
    cells: OnceLock<Box<[ShardCell]>>,
    /// Shard -> the node that last served it as leader.
    leaders: Mutex<HashMap<u32, u64>>,
}

impl ShardTable {
    /// The cells (none until the shard count is known).
    pub fn cells(&self) -> &[ShardCell] {
        self.cells.get().map(|b| &b[..]).unwrap_or(&[])
    }

    /// The cells, made for `n` shards the first time.
    pub fn init(&self, n: u32) -> &[ShardCell] {
        self.cells
            .get_or_init(|| (0..n).map(|_| ShardCell::default()).collect())
    }

    /// This node's replica of `shard`, if it holds one.
    pub fn replica(&self, shard: u32) -> Option<Arc<Replica>> {
        self.cells().get(shard as usize).and_then(ShardCell::get)
    }

    /// The cluster's shard count (0 until this node knows the shard map).
    pub fn count(&self) -> u32 {
        self.cells().len() as u32
    }

    /// The shard of an execution.
    pub fn shard_of(&self, execution_arn: &str) -> ApiResult<u32> {
        match self.count() {
            0 => Err(ApiError::new(
                Code::ServiceUnavailable,
                "this node has not joined the cluster yet; retry",
            )),
            n => Ok(shard_of(execution_arn, n)),
        }
    }

    /// The executor of a shard this node leads, or `NotLeader` with the leader it knows.
    pub fn leading(&self, shard: u32) -> ApiResult<ShardHandle> {
        let Some(rep) = self.replica(shard) else {
            return Err(ApiError::not_leader(None));
        };
        rep.handle()
            .ok_or_else(|| ApiError::not_leader(rep.raft.metrics().borrow().current_leader))
    }

    /// The executor of the shard of `execution_arn`, if this node leads it.
    pub fn local(&self, execution_arn: &str) -> ApiResult<ShardHandle> {
        self.leading(self.shard_of(execution_arn)?)
    }

    /// The replicas this node holds.
    pub fn replicas(&self) -> impl Iterator<Item = Arc<Replica>> + '_ {
        self.cells().iter().filter_map(ShardCell::get)
    }

    /// The executors of the shards this node leads, with their shard ids.
    pub fn led(&self) -> Vec<(u32, ShardHandle)> {
        self.replicas()
            .filter_map(|r| r.handle().map(|h| (r.shard, h)))
            .collect()
    }

    fn leaders(&self) -> std::sync::MutexGuard<'_, HashMap<u32, u64>> {
        self.leaders.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node that last served `shard` as its leader.
    pub fn cached_leader(&self, shard: u32) -> Option<u64> {
        self.leaders().get(&shard).copied()
    }

    pub fn remember_leader(&self, shard: u32, node: u64) {
        self.leaders().insert(shard, node);
    }

    /// Forgets `node` as `shard`'s leader (when it said it is not, or did not answer).
    pub fn forget_leader(&self, shard: u32, node: u64) {
        let mut c = self.leaders();
        if c.get(&shard) == Some(&node) {
            c.remove(&shard);
        }
    }
}
