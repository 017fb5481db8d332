//! openraft's own storage test suite against the sled stores, plus restart checks.

use std::collections::BTreeMap;
use std::io::Cursor;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{Entry, EntryPayload, LogId, RaftLogReader, StorageError};
use serde::{Deserialize, Serialize};
use trellis_storage::{AppStateMachine, GroupTrees, LogStore, NodeDb, StateMachineStore};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Set {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Previous(Option<String>);

openraft::declare_raft_types!(
    pub Kv:
        D = Set,
        R = Previous,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<Kv>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A key-value state machine kept in one sled tree of the group.
struct KvApp {
    tree: sled::Tree,
}

impl KvApp {
    fn open(trees: &GroupTrees) -> KvApp {
        KvApp {
            tree: trees.sm_tree("kv").unwrap(),
        }
    }
}

impl AppStateMachine<Kv> for KvApp {
    fn apply(&mut self, _: &LogId<u64>, req: &Set) -> trellis_storage::Result<Previous> {
        let old = self.tree.insert(req.key.as_bytes(), req.value.as_bytes())?;
        Ok(Previous(
            old.map(|v| String::from_utf8_lossy(&v).into_owned()),
        ))
    }

    fn export(&self) -> trellis_storage::Result<Vec<u8>> {
        let mut all = BTreeMap::new();
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            all.insert(
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            );
        }
        Ok(serde_json::to_vec(&all)?)
    }

    fn import(&mut self, data: &[u8]) -> trellis_storage::Result<()> {
        let all: BTreeMap<String, String> = serde_json::from_slice(data)?;
        self.tree.clear()?;
        for (k, v) in all {
            self.tree.insert(k.as_bytes(), v.as_bytes())?;
        }
        Ok(())
    }
}

type Sm = StateMachineStore<Kv, KvApp>;

struct Builder;

impl StoreBuilder<Kv, LogStore<Kv>, Sm, NodeDb> for Builder {
    async fn build(&self) -> Result<(NodeDb, LogStore<Kv>, Sm), StorageError<u64>> {
        let db = NodeDb::temporary().unwrap();
        let trees = db.group(7).unwrap();
        let sm = StateMachineStore::open(trees.clone(), KvApp::open(&trees)).unwrap();
        Ok((db, LogStore::new(trees), sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}

fn entry(term: u64, index: u64, key: &str, value: &str) -> Entry<Kv> {
    Entry {
        log_id: LogId::new(openraft::CommittedLeaderId::new(term, 0), index),
        payload: EntryPayload::Normal(Set {
            key: key.into(),
            value: value.into(),
        }),
    }
}

#[tokio::test]
async fn log_and_state_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = NodeDb::open(dir.path()).unwrap();
        let trees = db.group(1).unwrap();
        let mut log = LogStore::<Kv>::new(trees.clone());
        let mut sm = StateMachineStore::open(trees.clone(), KvApp::open(&trees)).unwrap();
        let entries = vec![entry(1, 1, "a", "1"), entry(1, 2, "b", "2")];
        // Write through the trait's reader/writer: entries go in, the reader sees them.
        log.save_vote(&openraft::Vote::new(1, 0)).await.unwrap();
        log.append_durably(entries.clone()).await.unwrap();
        let replies = sm.apply(entries).await.unwrap();
        assert_eq!(replies, vec![Previous(None), Previous(None)]);
        db.flush().await.unwrap();
    }
    let db = NodeDb::open(dir.path()).unwrap();
    assert_eq!(db.groups(), vec![1]);
    let trees = db.group(1).unwrap();
    let mut log = LogStore::<Kv>::new(trees.clone());
    let mut sm = StateMachineStore::open(trees.clone(), KvApp::open(&trees)).unwrap();
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(openraft::Vote::new(1, 0))
    );
    let got = log.try_get_log_entries(1..3).await.unwrap();
    assert_eq!(got.len(), 2);
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(2));
    let previous = sm.apply([entry(1, 3, "a", "3")]).await.unwrap();
    assert_eq!(previous, vec![Previous(Some("1".into()))]);
}
