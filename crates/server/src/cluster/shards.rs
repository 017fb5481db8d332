//! The shard table: this node's replica of each shard it holds (with the executor's handle
//! while it leads the shard), and the leader cache (which node last served each shard as
//! its leader). It owns that state; the node and the router read it through these methods.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use trellis_shard::raft::ShardRaft;
use trellis_shard::{ShardApp, ShardHandle};

/// This node's replica of one shard.
pub(crate) struct Replica {
    pub(crate) shard: u32,
    pub(crate) raft: ShardRaft,
    pub(crate) app: ShardApp,
    /// The executor's handle while this node leads the shard.
    leading: std::sync::RwLock<Option<ShardHandle>>,
}

impl Replica {
    pub(crate) fn new(shard: u32, raft: ShardRaft, app: ShardApp) -> Replica {
        Replica {
            shard,
            raft,
            app,
            leading: Default::default(),
        }
    }

    pub(crate) fn handle(&self) -> Option<ShardHandle> {
        self.leading
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_handle(&self, h: Option<ShardHandle>) {
        *self.leading.write().unwrap_or_else(|p| p.into_inner()) = h;
    }
}

/// A shard's slot on this node: empty when the node holds no replica of it.
#[derive(Default)]
pub(crate) struct ShardCell(std::sync::RwLock<Option<Arc<Replica>>>);

impl ShardCell {
    pub(crate) fn get(&self) -> Option<Arc<Replica>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set(&self, r: Arc<Replica>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(r);
    }

    pub(crate) fn clear(&self) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// One cell per shard once the shard count is known, and the leader cache.
#[derive(Default)]
pub(crate) struct ShardTable {
    cells: OnceLock<Box<[ShardCell]>>,
    /// Shard -> the node that last served it as leader.
    leaders: Mutex<HashMap<u32, u64>>,
}

impl ShardTable {
    /// The cells (none until the shard count is known).
    pub(crate) fn cells(&self) -> &[ShardCell] {
        self.cells.get().map(|b| &b[..]).unwrap_or(&[])
    }

    /// The cells, made for `n` shards the first time.
    pub(crate) fn init(&self, n: u32) -> &[ShardCell] {
        self.cells
            .get_or_init(|| (0..n).map(|_| ShardCell::default()).collect())
    }

    /// This node's replica of `shard`, if it holds one.
    pub(crate) fn replica(&self, shard: u32) -> Option<Arc<Replica>> {
        self.cells().get(shard as usize).and_then(ShardCell::get)
    }

    fn leaders(&self) -> std::sync::MutexGuard<'_, HashMap<u32, u64>> {
        self.leaders.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node that last served `shard` as its leader.
    pub(crate) fn cached_leader(&self, shard: u32) -> Option<u64> {
        self.leaders().get(&shard).copied()
    }

    pub(crate) fn remember_leader(&self, shard: u32, node: u64) {
        self.leaders().insert(shard, node);
    }

    /// Forgets `node` as `shard`'s leader (when it said it is not, or did not answer).
    pub(crate) fn forget_leader(&self, shard: u32, node: u64) {
        let mut c = self.leaders();
        if c.get(&shard) == Some(&node) {
            c.remove(&shard);
        }
    }
}
