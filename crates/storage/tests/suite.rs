//! openraft's own storage test suite against the sled stores, plus restart checks.

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
        SnapshotData = tokio::fs::File,
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

    fn export(&self, out: &mut dyn std::io::Write) -> trellis_storage::Result<()> {
        trellis_storage::export_trees([("kv", &self.tree)], out)
    }

    fn import(&mut self, input: &mut dyn std::io::Read) -> trellis_storage::Result<()> {
        trellis_storage::import_trees(input, [("kv", &self.tree)])
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
    let db = reopen(dir.path()).await;
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

/// Replication reads at most `REPLICATION_READ_BYTES` of entries at once, and always one.
#[tokio::test]
async fn replication_reads_are_bounded_in_bytes() {
    let db = NodeDb::temporary().unwrap();
    let mut log = LogStore::<Kv>::new(db.group(2).unwrap());
    let big = "x".repeat(trellis_storage::REPLICATION_READ_BYTES / 4 - 200);
    let entries: Vec<_> = (1..=10).map(|i| entry(1, i, "k", &big)).collect();
    log.append_durably(entries).await.unwrap();
    let got = log.limited_get_log_entries(1, 11).await.unwrap();
    // Four entries are just under the budget; the fifth reaches it.
    assert_eq!(got.len(), 5, "{} entries", got.len());
    assert_eq!(got[0].log_id.index, 1);
    // One entry larger than the budget still goes, alone.
    let huge = "y".repeat(trellis_storage::REPLICATION_READ_BYTES * 2);
    log.append_durably([entry(1, 11, "h", &huge)])
        .await
        .unwrap();
    let got = log.limited_get_log_entries(11, 12).await.unwrap();
    assert_eq!(got.len(), 1);
    // Small entries come all at once.
    let small: Vec<_> = (12..=100).map(|i| entry(1, i, "s", "v")).collect();
    log.append_durably(small).await.unwrap();
    assert_eq!(
        log.limited_get_log_entries(12, 101).await.unwrap().len(),
        89
    );
}

/// Snapshots are files: one replica streams its snapshot out in chunks, another writes the
/// chunks into the file it was given and installs it; the snapshot survives a restart, and
/// files a crash left behind are removed.
#[tokio::test]
async fn snapshots_stream_through_files() {
    use openraft::RaftSnapshotBuilder;
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a_db = NodeDb::open(a_dir.path()).unwrap();
    let a_trees = a_db.group(4).unwrap();
    let mut a = StateMachineStore::open(a_trees.clone(), KvApp::open(&a_trees)).unwrap();
    let value = "v".repeat(1000);
    let entries: Vec<_> = (1..=500)
        .map(|i| entry(1, i, &format!("k{i}"), &value))
        .collect();
    a.apply(entries).await.unwrap();
    let built = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let mut out = a.get_current_snapshot().await.unwrap().expect("a snapshot");
    assert_eq!(out.meta, built.meta);

    let b_db = NodeDb::open(b_dir.path()).unwrap();
    let b_trees = b_db.group(4).unwrap();
    let mut b = StateMachineStore::open(b_trees.clone(), KvApp::open(&b_trees)).unwrap();
    let mut into = b.begin_receiving_snapshot().await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut offset = 0u64;
    loop {
        let n = out.snapshot.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        into.seek(std::io::SeekFrom::Start(offset)).await.unwrap();
        into.write_all(&buf[..n]).await.unwrap();
        offset += n as u64;
    }
    into.flush().await.unwrap();
    assert!(offset > 500 * 1000, "{offset} bytes");
    b.install_snapshot(&out.meta, into).await.unwrap();
    let kv = b_trees.sm_tree("kv").unwrap();
    assert_eq!(kv.len(), 500);
    assert_eq!(kv.get("k7").unwrap().unwrap(), value.as_bytes());
    let (applied, _) = b.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(500));
    b_db.flush().await.unwrap();
    drop((b, b_trees, kv, b_db));

    // A leftover of an interrupted transfer; after a restart only the snapshot is there.
    let dir = b_dir.path().join("raft-snapshots").join("g4");
    std::fs::write(dir.join("0-0.part"), b"half").unwrap();
    let b_db = reopen(b_dir.path()).await;
    let b_trees = b_db.group(4).unwrap();
    let mut b = StateMachineStore::open(b_trees.clone(), KvApp::open(&b_trees)).unwrap();
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let again = b.get_current_snapshot().await.unwrap().expect("kept");
    assert_eq!(again.meta, out.meta);
    b_db.drop_group(4).unwrap();
    assert!(!dir.exists());
}

/// Opens a database this process had open: sled's background flusher can hold the file
/// lock for a moment after the last handle is dropped, so wait (bounded) for it.
async fn reopen(path: &std::path::Path) -> NodeDb {
    let mut last = None;
    for _ in 0..100 {
        match NodeDb::open(path) {
            Ok(db) => return db,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("cannot reopen {}: {last:?}", path.display());
}
