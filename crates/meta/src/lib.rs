//! `trellis-meta`: the meta group (Raft group 0).
//!
//! It replicates small, rarely written records: state machines with their revisions,
//! versions and aliases, activities (typed: [`records`]), nodes and the shard map
//! ([`placement`]), and cluster settings (the shard count). What a record means (ARNs,
//! revision ids, validation) is decided by the node before it proposes it. A write can carry
//! conditions ([`Condition`]: absent, or unchanged since read), checked when the entry is
//! applied: a read-modify-write is a compare-and-set in the state machine, never a check on
//! the leader followed by a write.

pub mod placement;
pub mod records;
pub mod voters;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, LogId, Raft};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use trellis_storage::{AppStateMachine, GroupTrees, LogStore, NoPeers, NodeDb, StateMachineStore};

/// The tables of the meta group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Table {
    /// State machine ARN -> record.
    Machines,
    /// Version ARN -> record.
    Versions,
    /// Alias ARN -> record.
    Aliases,
    /// Activity ARN -> record.
    Activities,
    /// Setting name -> value.
    Settings,
    /// Node id (20 digits) -> `{"id", "grpcAddr", "httpAddr", "peerAddr", "zone", "state"}`.
    Nodes,
    /// Shard id (10 digits) -> `{"id", "replicas": [node ids], "epoch"}`.
    Shards,
}

impl Table {
    pub const ALL: [Table; 7] = [
        Table::Machines,
        Table::Versions,
        Table::Aliases,
        Table::Activities,
        Table::Settings,
        Table::Nodes,
        Table::Shards,
    ];

    fn name(self) -> &'static str {
        match self {
            Table::Machines => "machines",
            Table::Versions => "versions",
            Table::Aliases => "aliases",
            Table::Activities => "activities",
            Table::Settings => "settings",
            Table::Nodes => "nodes",
            Table::Shards => "shards",
        }
    }
}

/// One write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MetaOp {
    Put {
        table: Table,
        key: String,
        value: Value,
    },
    Delete {
        table: Table,
        key: String,
    },
}

/// What must hold for a write to apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Condition {
    /// No record under the key.
    Absent { table: Table, key: String },
    /// The record under the key is this one (as read before the write was decided).
    Unchanged {
        table: Table,
        key: String,
        value: Value,
    },
}

impl Condition {
    /// No record of `R`'s table under `key`.
    pub fn absent<R: records::Record>(key: &str) -> Condition {
        Condition::Absent {
            table: R::TABLE,
            key: key.to_string(),
        }
    }
}

/// A meta entry: writes applied together, when every condition holds, or not at all.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetaRequest {
    /// Entries written before conditions existed have none.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    pub ops: Vec<MetaOp>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct MetaResponse {
    /// The first condition that did not hold (then nothing was written).
    #[serde(default)]
    pub failed: Option<usize>,
}

/// A record as read, with the value it was stored as, for a compare-and-set against it (a
/// record written by an older version may not serialize back to the same JSON).
#[derive(Debug, Clone)]
pub struct Read<R> {
    pub record: R,
    key: String,
    stored: Value,
}

impl<R: records::Record> Read<R> {
    /// The condition that the record is still stored as it was read.
    pub fn unchanged(&self) -> Condition {
        Condition::Unchanged {
            table: R::TABLE,
            key: self.key.clone(),
            value: self.stored.clone(),
        }
    }
}

/// The outcome of a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Applied,
    /// Condition `n` did not hold; nothing was written. Read again and decide again.
    Conflict(usize),
}

/// A record op.
impl MetaOp {
    pub fn put<R: records::Record>(r: &R) -> Result<MetaOp> {
        Ok(MetaOp::Put {
            table: R::TABLE,
            key: r.key().to_string(),
            value: serde_json::to_value(r)?,
        })
    }

    pub fn delete<R: records::Record>(key: &str) -> MetaOp {
        MetaOp::Delete {
            table: R::TABLE,
            key: key.to_string(),
        }
    }
}

openraft::declare_raft_types!(
    /// The openraft type configuration of the meta group.
    pub MetaConfig:
        D = MetaRequest,
        R = MetaResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<MetaConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The meta crate's error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage: {0}")]
    Storage(#[from] trellis_storage::Error),
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("encoding: {0}")]
    Json(#[from] serde_json::Error),
    #[error("raft: {0}")]
    Raft(String),
    #[error("not the meta leader")]
    NotLeader { leader: Option<u64> },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The meta state machine: one sled tree per table.
#[derive(Clone)]
pub struct MetaApp {
    tables: Vec<(Table, sled::Tree)>,
}

impl MetaApp {
    pub fn open(trees: &GroupTrees) -> Result<MetaApp> {
        let mut tables = Vec::new();
        for t in Table::ALL {
            tables.push((t, trees.sm_tree(t.name())?));
        }
        Ok(MetaApp { tables })
    }

    fn tree(&self, t: Table) -> &sled::Tree {
        // Every table is opened in `open`.
        &self.tables.iter().find(|(n, _)| *n == t).expect("table").1
    }

    pub fn get(&self, table: Table, key: &str) -> Result<Option<Value>> {
        match self.tree(table).get(key.as_bytes())? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// A typed record.
    pub fn record<R: records::Record>(&self, key: &str) -> Result<Option<R>> {
        match self.tree(R::TABLE).get(key.as_bytes())? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// A typed record as read, for a compare-and-set ([`Read::unchanged`]).
    pub fn read<R: records::Record>(&self, key: &str) -> Result<Option<Read<R>>> {
        let Some(stored) = self.get(R::TABLE, key)? else {
            return Ok(None);
        };
        Ok(Some(Read {
            record: serde_json::from_value(stored.clone())?,
            key: key.to_string(),
            stored,
        }))
    }

    /// Typed records in key order after `after` (exclusive), at most `limit`.
    pub fn records<R: records::Record>(&self, after: Option<&str>, limit: usize) -> Result<Vec<R>> {
        self.list(R::TABLE, after, limit)?
            .into_iter()
            .map(|(_, v)| Ok(serde_json::from_value(v)?))
            .collect()
    }

    /// Typed records whose keys start with `prefix`, in key order.
    pub fn records_under<R: records::Record>(&self, prefix: &str) -> Result<Vec<R>> {
        self.tree(R::TABLE)
            .scan_prefix(prefix.as_bytes())
            .map(|kv| {
                let (_, v) = kv?;
                Ok(serde_json::from_slice(&v)?)
            })
            .collect()
    }

    /// Whether `c` holds now.
    fn holds(&self, c: &Condition) -> Result<bool> {
        Ok(match c {
            Condition::Absent { table, key } => !self.tree(*table).contains_key(key.as_bytes())?,
            Condition::Unchanged { table, key, value } => {
                self.get(*table, key)?.as_ref() == Some(value)
            }
        })
    }

    /// Records of a table in key order, after `after` (exclusive), at most `limit`.
    pub fn list(
        &self,
        table: Table,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Value)>> {
        let tree = self.tree(table);
        let iter = match after {
            Some(a) => tree.range::<&[u8], _>((
                std::ops::Bound::Excluded(a.as_bytes()),
                std::ops::Bound::Unbounded,
            )),
            None => tree.iter(),
        };
        iter.take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((
                    String::from_utf8_lossy(&k).into_owned(),
                    serde_json::from_slice(&v)?,
                ))
            })
            .collect()
    }

    /// After a restore onto node `node` alone (`trellis restore`): the nodes of the cluster
    /// the backup came from are forgotten, and `node` is every shard's only replica (a new
    /// epoch, no move in progress). Not replicated: the restore writes it before any node
    /// of the new cluster runs.
    pub fn rehome(&self, node: u64) -> Result<()> {
        self.tree(Table::Nodes).clear()?;
        let shards = self.tree(Table::Shards);
        for kv in shards.iter() {
            let (k, v) = kv?;
            let mut s: placement::ShardRecord = serde_json::from_slice(&v)?;
            s.replicas = vec![node];
            s.learners.clear();
            s.epoch += 1;
            shards.insert(k, serde_json::to_vec(&s)?)?;
        }
        Ok(())
    }

    /// Applies one entry's writes as one batch per table: a reader of a table sees all of
    /// the entry's writes to it or none (the first shard map is one entry of every shard's
    /// record; a node that read part of it took the cluster for a smaller one).
    fn apply_ops(&self, ops: &[MetaOp]) -> Result<()> {
        let mut batches: Vec<(Table, sled::Batch)> = Vec::new();
        for op in ops {
            let table = match op {
                MetaOp::Put { table, .. } | MetaOp::Delete { table, .. } => *table,
            };
            let at = match batches.iter().position(|(t, _)| *t == table) {
                Some(i) => i,
                None => {
                    batches.push((table, sled::Batch::default()));
                    batches.len() - 1
                }
            };
            let batch = &mut batches[at].1;
            match op {
                MetaOp::Put { key, value, .. } => {
                    batch.insert(key.as_bytes(), serde_json::to_vec(value)?);
                }
                MetaOp::Delete { key, .. } => batch.remove(key.as_bytes()),
            }
        }
        for (table, batch) in batches {
            self.tree(table).apply_batch(batch)?;
        }
        Ok(())
    }
}

impl AppStateMachine<MetaConfig> for MetaApp {
    fn apply(
        &mut self,
        _: &LogId<u64>,
        req: &MetaRequest,
    ) -> trellis_storage::Result<MetaResponse> {
        let app = |e: Error| trellis_storage::Error::App(e.to_string());
        for (i, c) in req.conditions.iter().enumerate() {
            if !self.holds(c).map_err(app)? {
                return Ok(MetaResponse { failed: Some(i) });
            }
        }
        self.apply_ops(&req.ops).map_err(app)?;
        Ok(MetaResponse { failed: None })
    }

    fn export(&self, out: &mut dyn std::io::Write) -> trellis_storage::Result<()> {
        trellis_storage::export_trees(self.tables.iter().map(|(t, tree)| (t.name(), tree)), out)
    }

    fn import(&mut self, input: &mut dyn std::io::Read) -> trellis_storage::Result<()> {
        trellis_storage::import_trees(input, self.tables.iter().map(|(t, tree)| (t.name(), tree)))
    }
}

/// The meta group on this node.
#[derive(Clone)]
pub struct Meta {
    pub raft: Raft<MetaConfig>,
    pub app: MetaApp,
}

impl Meta {
    /// Opens this node's replica of the meta group, sending through `network`. It is not
    /// initialized: the bootstrapping node calls [`Meta::initialize`], the others join.
    pub async fn open<N>(db: &NodeDb, node: u64, network: N) -> Result<Meta>
    where
        N: openraft::network::RaftNetworkFactory<MetaConfig>,
    {
        let trees = db.group(0)?;
        let app = MetaApp::open(&trees)?;
        let sm = StateMachineStore::open(trees.clone(), app.clone())?;
        let log = LogStore::<MetaConfig>::new(trees);
        let cfg = openraft::Config {
            cluster_name: "meta".into(),
            heartbeat_interval: 200,
            election_timeout_min: 500,
            election_timeout_max: 900,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Raft(e.to_string()))?;
        let raft = Raft::new(node, Arc::new(cfg), network, log, sm)
            .await
            .map_err(|e| Error::Raft(e.to_string()))?;
        Ok(Meta { raft, app })
    }

    /// Makes this node the meta group's only voter, unless the group was initialized
    /// before (a restart).
    pub async fn initialize(&self, node: u64, addr: &str) -> Result<()> {
        if !self
            .raft
            .is_initialized()
            .await
            .map_err(|e| Error::Raft(e.to_string()))?
        {
            self.raft
                .initialize(BTreeMap::from([(node, BasicNode::new(addr))]))
                .await
                .map_err(|e| Error::Raft(e.to_string()))?;
        }
        Ok(())
    }

    /// Opens the meta group of a single-node cluster and waits until this node leads it.
    pub async fn open_single_node(db: &NodeDb, node: u64, addr: &str) -> Result<Meta> {
        let meta = Meta::open(db, node, NoPeers::default()).await?;
        meta.initialize(node, addr).await?;
        meta.raft
            .wait(Some(Duration::from_secs(30)))
            .current_leader(node, "this node leads meta")
            .await
            .map_err(|e| Error::Raft(e.to_string()))?;
        meta.wait_applied().await?;
        Ok(meta)
    }

    /// Waits until everything in the local log is applied.
    pub async fn wait_applied(&self) -> Result<()> {
        let last = self.raft.metrics().borrow().last_log_index;
        if last.is_some() {
            self.raft
                .wait(Some(Duration::from_secs(30)))
                .applied_index_at_least(last, "meta applied")
                .await
                .map_err(|e| Error::Raft(e.to_string()))?;
        }
        Ok(())
    }

    /// The meta leader as this node knows it.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    /// This node's last applied meta index.
    pub fn applied(&self) -> u64 {
        self.raft
            .metrics()
            .borrow()
            .last_applied
            .map(|l| l.index)
            .unwrap_or(0)
    }

    /// Waits (up to `timeout`) until this node has applied `index`.
    pub async fn wait_for(&self, index: u64, timeout: Duration) -> Result<()> {
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "meta caught up")
            .await
            .map(|_| ())
            .map_err(|e| Error::Raft(e.to_string()))
    }

    /// The node records, in id order.
    pub fn nodes(&self) -> Result<Vec<placement::NodeRecord>> {
        self.app
            .list(Table::Nodes, None, usize::MAX)?
            .into_iter()
            .map(|(_, v)| Ok(serde_json::from_value(v)?))
            .collect()
    }

    /// The shard map, in shard order.
    pub fn shard_map(&self) -> Result<Vec<placement::ShardRecord>> {
        self.app
            .list(Table::Shards, None, usize::MAX)?
            .into_iter()
            .map(|(_, v)| Ok(serde_json::from_value(v)?))
            .collect()
    }

    /// The shard map once it is whole: shards `0..n` for the cluster's shard count `n`
    /// (the `shards` setting, written before the first map); empty before. A node sizes its
    /// shard table, and so the hashing of every execution to its shard, from it once.
    pub fn whole_shard_map(&self) -> Result<Vec<placement::ShardRecord>> {
        let map = self.shard_map()?;
        let count = self
            .app
            .get(Table::Settings, "shards")?
            .and_then(|v| v.as_u64());
        let whole = !map.is_empty()
            && count.is_none_or(|n| map.len() as u64 == n)
            && map.iter().enumerate().all(|(i, s)| s.id as usize == i);
        Ok(if whole { map } else { Vec::new() })
    }

    /// Proposes writes and waits until they are applied here.
    pub async fn write(&self, ops: Vec<MetaOp>) -> Result<()> {
        self.write_if(Vec::new(), ops).await.map(drop)
    }

    /// Writes `ops` if every condition holds when the entry applies.
    pub async fn write_if(&self, conditions: Vec<Condition>, ops: Vec<MetaOp>) -> Result<Written> {
        match self
            .raft
            .client_write(MetaRequest { conditions, ops })
            .await
        {
            Ok(r) => Ok(match r.data.failed {
                None => Written::Applied,
                Some(i) => Written::Conflict(i),
            }),
            Err(openraft::error::RaftError::APIError(
                openraft::error::ClientWriteError::ForwardToLeader(f),
            )) => Err(Error::NotLeader {
                leader: f.leader_id,
            }),
            Err(e) => Err(Error::Raft(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_restored_meta_group_names_only_its_new_node() {
        let db = NodeDb::temporary().unwrap();
        let mut app = MetaApp::open(&db.group(0).unwrap()).unwrap();
        let node = |id| placement::NodeRecord {
            id,
            grpc_addr: format!("n{id}:7300"),
            http_addr: format!("n{id}:8083"),
            peer_addr: format!("n{id}:7301"),
            zone: String::new(),
            state: placement::NodeState::Up,
        };
        let shard = |id, replicas: Vec<u64>, learners: Vec<u64>| placement::ShardRecord {
            id,
            replicas,
            epoch: 4,
            learners,
        };
        let ops = vec![
            MetaOp::put(&node(3)).unwrap(),
            MetaOp::put(&node(5)).unwrap(),
            MetaOp::put(&shard(0, vec![3, 5], vec![])).unwrap(),
            MetaOp::put(&shard(1, vec![5, 3], vec![7])).unwrap(),
            MetaOp::Put {
                table: Table::Settings,
                key: "shards".into(),
                value: json!(2),
            },
        ];
        let req = MetaRequest {
            conditions: vec![],
            ops,
        };
        app.apply(&LogId::default(), &req).unwrap();
        app.rehome(1).unwrap();
        assert!(app
            .records::<placement::NodeRecord>(None, 10)
            .unwrap()
            .is_empty());
        let shards = app.records::<placement::ShardRecord>(None, 10).unwrap();
        assert_eq!(
            shards,
            vec![shard(0, vec![1], vec![]), shard(1, vec![1], vec![])]
                .into_iter()
                .map(|mut s| {
                    s.epoch = 5;
                    s
                })
                .collect::<Vec<_>>()
        );
        // The rest stays.
        assert_eq!(app.get(Table::Settings, "shards").unwrap(), Some(json!(2)));
    }

    #[tokio::test]
    async fn the_shard_map_is_read_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let db = NodeDb::open(dir.path()).unwrap();
        let meta = Meta::open_single_node(&db, 1, "local").await.unwrap();
        let shard = |id| placement::ShardRecord {
            id,
            replicas: vec![1],
            epoch: 1,
            learners: vec![],
        };
        meta.write(vec![MetaOp::Put {
            table: Table::Settings,
            key: "shards".into(),
            value: json!(3),
        }])
        .await
        .unwrap();
        assert!(meta.whole_shard_map().unwrap().is_empty());
        // Part of the map (as a reader between two of an entry's writes would have seen it
        // before they were one batch): not whole.
        meta.write(vec![
            MetaOp::put(&shard(0)).unwrap(),
            MetaOp::put(&shard(2)).unwrap(),
        ])
        .await
        .unwrap();
        assert_eq!(meta.shard_map().unwrap().len(), 2);
        assert!(meta.whole_shard_map().unwrap().is_empty());
        meta.write(vec![MetaOp::put(&shard(1)).unwrap()])
            .await
            .unwrap();
        let ids: Vec<u32> = meta
            .whole_shard_map()
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, [0, 1, 2]);
    }

    #[tokio::test]
    async fn writes_are_replicated_reads() {
        let dir = tempfile::tempdir().unwrap();
        let db = NodeDb::open(dir.path()).unwrap();
        let meta = Meta::open_single_node(&db, 1, "local").await.unwrap();
        meta.write(vec![
            MetaOp::Put {
                table: Table::Machines,
                key: "b".into(),
                value: json!({"n": 2}),
            },
            MetaOp::Put {
                table: Table::Machines,
                key: "a".into(),
                value: json!({"n": 1}),
            },
        ])
        .await
        .unwrap();
        meta.write(vec![MetaOp::Delete {
            table: Table::Machines,
            key: "b".into(),
        }])
        .await
        .unwrap();
        let rows = meta.app.list(Table::Machines, None, 10).unwrap();
        assert_eq!(rows, vec![("a".to_string(), json!({"n": 1}))]);
        let mut copy = meta.app.clone();
        let mut snap = Vec::new();
        copy.export(&mut snap).unwrap();
        copy.import(&mut snap.as_slice()).unwrap();
        assert_eq!(
            meta.app.get(Table::Machines, "a").unwrap(),
            Some(json!({"n": 1}))
        );
        meta.raft.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn conditions_are_checked_when_the_entry_applies() {
        let dir = tempfile::tempdir().unwrap();
        let db = NodeDb::open(dir.path()).unwrap();
        let meta = Meta::open_single_node(&db, 1, "local").await.unwrap();
        let act = |n: i64| records::ActivityRecord {
            activity_arn: "a".into(),
            name: "a".into(),
            creation_date: n,
        };
        let absent = || vec![Condition::absent::<records::ActivityRecord>("a")];
        let put = |n| vec![MetaOp::put(&act(n)).unwrap()];
        assert_eq!(
            meta.write_if(absent(), put(1)).await.unwrap(),
            Written::Applied
        );
        // A second put-if-absent loses, and writes nothing.
        assert_eq!(
            meta.write_if(absent(), put(2)).await.unwrap(),
            Written::Conflict(0)
        );
        let now: records::ActivityRecord = meta.app.record("a").unwrap().unwrap();
        assert_eq!(now.creation_date, 1);
        // Compare-and-set: against what was read, then against a stale read.
        let read = meta
            .app
            .read::<records::ActivityRecord>("a")
            .unwrap()
            .unwrap();
        assert_eq!(read.record, act(1));
        let seen = vec![read.unchanged()];
        assert_eq!(
            meta.write_if(seen.clone(), put(3)).await.unwrap(),
            Written::Applied
        );
        assert_eq!(
            meta.write_if(seen, put(4)).await.unwrap(),
            Written::Conflict(0)
        );
        let now: records::ActivityRecord = meta.app.record("a").unwrap().unwrap();
        assert_eq!(now.creation_date, 3);
        meta.raft.shutdown().await.unwrap();
    }
}
