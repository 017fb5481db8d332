//! The Raft state machine of one group: applied state, membership and snapshots, around an
//! application state machine.

use std::io::{BufReader, BufWriter, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, RaftTypeConfig,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::db::GroupTrees;
use crate::{Error, Result};

const APPLIED: &[u8] = b"applied";
/// The current snapshot's meta and file name.
const SNAPSHOT: &[u8] = b"snapshot";

/// What an application export (a backup) holds: the log id it matches.
pub type Exported<C> = Option<LogId<<C as RaftTypeConfig>::NodeId>>;
/// Where earlier versions kept the snapshot in the tree itself (removed on open).
const LEGACY: [&[u8]; 2] = [b"snapshot_meta", b"snapshot_data"];

/// What a group replicates. The storage layer applies membership and blank entries itself
/// and hands normal entries to the application.
///
/// Applying must be idempotent: after a crash, entries after the last *recorded* applied id
/// are applied again, and the application may already hold their effects. Writing the
/// values an entry carries (events, states) rather than re-deriving them makes that so.
pub trait AppStateMachine<C: RaftTypeConfig>: Send + Sync + 'static {
    /// Applies one normal entry.
    fn apply(&mut self, log_id: &LogId<C::NodeId>, request: &C::D) -> Result<C::R>;

    /// Writes everything the application holds to `out`, for a snapshot (see
    /// [`crate::export_trees`]). Nothing is applied meanwhile.
    fn export(&self, out: &mut dyn std::io::Write) -> Result<()>;

    /// Replaces everything with a snapshot written by [`AppStateMachine::export`].
    fn import(&mut self, input: &mut dyn std::io::Read) -> Result<()>;
}

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct Applied<C: RaftTypeConfig> {
    last_applied: Option<LogId<C::NodeId>>,
    membership: StoredMembership<C::NodeId, C::Node>,
}

/// The current snapshot: its meta, and the file in the group's snapshot directory that
/// holds its data. The file is complete and synced before this record names it.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct StoredSnapshot<C: RaftTypeConfig> {
    meta: SnapshotMeta<C::NodeId, C::Node>,
    file: String,
}

/// A new file name in a snapshot directory: unique across restarts and concurrent calls.
fn new_file(dir: &Path, suffix: &str) -> Result<(String, PathBuf)> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let name = format!(
        "{nanos:024}-{}.{suffix}",
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let path = dir.join(&name);
    Ok((name, path))
}

/// Writes a new snapshot file in `dir` through a 1 MiB buffer and syncs it; on failure the
/// file is removed. Returns its name.
fn write_snapshot_file(
    dir: &Path,
    write: impl FnOnce(&mut dyn std::io::Write) -> Result<()>,
) -> Result<String> {
    let (name, path) = new_file(dir, "snap")?;
    let written = (|| {
        let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
        write(&mut out)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&path);
    }
    written.map(|()| name)
}

/// Removes the files in `dir` but `keep` (none when `dir` does not exist).
fn remove_files_except(dir: &Path, keep: Option<&str>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for e in entries {
        let e = match e {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        if Some(e.file_name().to_string_lossy().as_ref()) != keep {
            match std::fs::remove_file(e.path()) {
                // A snapshot built in the background and one installed clean up the
                // same directory at the same time: a file the other removed first is
                // gone, as wanted, and must not fail the group (a storage error stops
                // its Raft for good).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                r => r?,
            }
        }
    }
    Ok(())
}

struct Inner<C: RaftTypeConfig, A> {
    app: A,
    applied: Applied<C>,
    snapshot_seq: u64,
}

/// The state machine of one Raft group. Clones share it (the snapshot builder is a clone).
pub struct StateMachineStore<C: RaftTypeConfig, A> {
    trees: GroupTrees,
    inner: Arc<Mutex<Inner<C, A>>>,
}

impl<C: RaftTypeConfig, A> Clone for StateMachineStore<C, A> {
    fn clone(&self) -> Self {
        StateMachineStore {
            trees: self.trees.clone(),
            inner: self.inner.clone(),
        }
    }
}

fn sm_err<NID: openraft::NodeId>(e: Error) -> StorageError<NID> {
    StorageError::from(StorageIOError::write_state_machine(AnyError::new(&e)))
}

fn snap_err<NID: openraft::NodeId>(e: Error) -> StorageError<NID> {
    StorageError::from(StorageIOError::write_snapshot(None, AnyError::new(&e)))
}

impl<C, A> StateMachineStore<C, A>
where
    C: RaftTypeConfig<Entry = Entry<C>, SnapshotData = tokio::fs::File>,
    C::R: Default,
    A: AppStateMachine<C>,
{
    /// Opens the group's state machine; `app` must already hold the state persisted in the
    /// group's application trees.
    pub fn open(trees: GroupTrees, app: A) -> Result<Self> {
        for k in LEGACY {
            trees.raft.remove(k)?;
        }
        let applied = match trees.raft.get(APPLIED)? {
            Some(v) => serde_json::from_slice(&v)?,
            None => Applied {
                last_applied: None,
                membership: StoredMembership::default(),
            },
        };
        let sm = StateMachineStore {
            trees,
            inner: Arc::new(Mutex::new(Inner {
                app,
                applied,
                snapshot_seq: 0,
            })),
        };
        // Files a crash left behind: partly received, or built but never recorded.
        let current = sm.stored_snapshot()?.map(|s| s.file);
        sm.remove_files_except(current.as_deref())?;
        Ok(sm)
    }

    /// Runs `f` on the application state machine (for reads).
    pub fn with_app<T>(&self, f: impl FnOnce(&A) -> T) -> T {
        let inner = self.lock();
        f(&inner.app)
    }

    /// Writes the application's state to `out` (the snapshot format, [`AppStateMachine::export`])
    /// and returns the log id it matches. Applying waits meanwhile, as for a snapshot.
    pub fn export_app(&self, out: &mut dyn std::io::Write) -> Result<Exported<C>> {
        let inner = self.lock();
        inner.app.export(out)?;
        Ok(inner.applied.last_applied.clone())
    }

    /// The last applied log id.
    pub fn last_applied(&self) -> Option<LogId<C::NodeId>> {
        self.lock().applied.last_applied.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<C, A>> {
        // A panic while applying leaves the state as the panicking apply left it; the entry
        // is applied again after restart, which idempotent application tolerates.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save_applied(&self, applied: &Applied<C>) -> Result<()> {
        self.trees
            .raft
            .insert(APPLIED, serde_json::to_vec(applied)?)?;
        Ok(())
    }

    fn stored_snapshot(&self) -> Result<Option<StoredSnapshot<C>>> {
        match self.trees.raft.get(SNAPSHOT)? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// Makes `s` the current snapshot (its file is complete and synced), then removes the
    /// older files.
    async fn save_snapshot(&self, s: &StoredSnapshot<C>) -> Result<()> {
        self.trees.raft.insert(SNAPSHOT, serde_json::to_vec(s)?)?;
        self.trees.flush().await?;
        self.remove_files_except(Some(&s.file))
    }

    /// Removes the group's snapshot files but `keep`. A file being sent stays readable
    /// through its open handle.
    fn remove_files_except(&self, keep: Option<&str>) -> Result<()> {
        remove_files_except(&self.trees.snapshot_dir, keep)
    }

    async fn open_snapshot(&self, s: StoredSnapshot<C>) -> Result<Snapshot<C>> {
        let file = tokio::fs::File::open(self.trees.snapshot_dir.join(&s.file)).await?;
        Ok(Snapshot {
            meta: s.meta,
            snapshot: Box::new(file),
        })
    }
}

impl<C, A> RaftSnapshotBuilder<C> for StateMachineStore<C, A>
where
    C: RaftTypeConfig<Entry = Entry<C>, SnapshotData = tokio::fs::File>,
    C::R: Default,
    A: AppStateMachine<C>,
{
    /// Streams the application's state to a new file. Applying waits meanwhile, so the file
    /// matches the last applied log id.
    async fn build_snapshot(&mut self) -> Result<Snapshot<C>, StorageError<C::NodeId>> {
        let stored = {
            let mut inner = self.lock();
            let file = write_snapshot_file(&self.trees.snapshot_dir, |out| inner.app.export(out))
                .map_err(snap_err)?;
            inner.snapshot_seq += 1;
            let last = inner.applied.last_applied.clone();
            let snapshot_id = match last {
                Some(ref l) => format!("{}-{}-{}", l.leader_id, l.index, inner.snapshot_seq),
                None => format!("--{}", inner.snapshot_seq),
            };
            StoredSnapshot::<C> {
                meta: SnapshotMeta {
                    last_log_id: last,
                    last_membership: inner.applied.membership.clone(),
                    snapshot_id,
                },
                file,
            }
        };
        self.save_snapshot(&stored).await.map_err(snap_err)?;
        self.open_snapshot(stored).await.map_err(snap_err)
    }
}

impl<C, A> RaftStateMachine<C> for StateMachineStore<C, A>
where
    C: RaftTypeConfig<Entry = Entry<C>, SnapshotData = tokio::fs::File>,
    C::R: Default,
    A: AppStateMachine<C>,
{
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<C::NodeId>>,
            StoredMembership<C::NodeId, C::Node>,
        ),
        StorageError<C::NodeId>,
    > {
        let inner = self.lock();
        Ok((
            inner.applied.last_applied.clone(),
            inner.applied.membership.clone(),
        ))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<C::R>, StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.lock();
        let mut out = Vec::new();
        for entry in entries {
            inner.applied.last_applied = Some(entry.log_id.clone());
            match entry.payload {
                EntryPayload::Blank => out.push(C::R::default()),
                EntryPayload::Normal(ref req) => {
                    let r = inner.app.apply(&entry.log_id, req).map_err(|e| {
                        StorageError::from(StorageIOError::apply(
                            entry.log_id.clone(),
                            AnyError::new(&e),
                        ))
                    })?;
                    out.push(r);
                }
                EntryPayload::Membership(ref m) => {
                    inner.applied.membership =
                        StoredMembership::new(Some(entry.log_id.clone()), m.clone());
                    out.push(C::R::default());
                }
            }
        }
        self.save_applied(&inner.applied).map_err(sm_err)?;
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    /// A new file for chunks to be written into (removed once installed, or on restart).
    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<C::SnapshotData>, StorageError<C::NodeId>> {
        let (_, path) = new_file(&self.trees.snapshot_dir, "part").map_err(snap_err)?;
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| snap_err(e.into()))?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<C::NodeId, C::Node>,
        snapshot: Box<C::SnapshotData>,
    ) -> Result<(), StorageError<C::NodeId>> {
        // The received file becomes this replica's current snapshot under a new name (its
        // own name is not known here), then the state is read from it.
        let mut received = snapshot.into_std().await;
        let file = write_snapshot_file(&self.trees.snapshot_dir, |out| {
            received.seek(SeekFrom::Start(0))?;
            std::io::copy(&mut received, out)?;
            Ok(())
        })
        .map_err(snap_err)?;
        drop(received);
        let path = self.trees.snapshot_dir.join(&file);
        {
            let mut inner = self.lock();
            let mut input = BufReader::with_capacity(
                1 << 20,
                std::fs::File::open(&path).map_err(|e| snap_err(e.into()))?,
            );
            inner.app.import(&mut input).map_err(snap_err)?;
            inner.applied = Applied {
                last_applied: meta.last_log_id.clone(),
                membership: meta.last_membership.clone(),
            };
            self.save_applied(&inner.applied).map_err(snap_err)?;
        }
        let stored = StoredSnapshot::<C> {
            meta: meta.clone(),
            file,
        };
        self.save_snapshot(&stored).await.map_err(snap_err)
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<C>>, StorageError<C::NodeId>> {
        let read_err =
            |e: Error| StorageError::from(StorageIOError::read_snapshot(None, AnyError::new(&e)));
        match self.stored_snapshot().map_err(read_err)? {
            Some(s) => Ok(Some(self.open_snapshot(s).await.map_err(read_err)?)),
            None => Ok(None),
        }
    }
}

/// The group's current snapshot: the log id it matches and its file (open it before the
/// next snapshot replaces it; an open file stays readable).
pub fn current_snapshot<C: RaftTypeConfig>(
    trees: &GroupTrees,
) -> Result<Option<(Exported<C>, PathBuf)>> {
    match trees.raft.get(SNAPSHOT)? {
        Some(v) => {
            let s: StoredSnapshot<C> = serde_json::from_slice(&v)?;
            Ok(Some((s.meta.last_log_id, trees.snapshot_dir.join(s.file))))
        }
        None => Ok(None),
    }
}

/// Seeds group `trees` of a new node from an application state `app` already holds (a
/// restored backup), as if a snapshot at `last` had been installed: the state becomes the
/// group's current snapshot, the log is empty and purged up to `last`, and `member` (with
/// its peer address) is the only voter. Started, the node elects itself in the next term;
/// other nodes catch up from the snapshot.
pub fn restore_group<C, A>(
    trees: &GroupTrees,
    app: &A,
    last: LogId<C::NodeId>,
    member: C::NodeId,
    node: C::Node,
) -> Result<()>
where
    C: RaftTypeConfig,
    A: AppStateMachine<C>,
{
    if !trees.raft.is_empty() || !trees.log.is_empty() {
        return Err(Error::Corrupt(format!(
            "group {} already has Raft state here: restore into an empty data directory",
            trees.group
        )));
    }
    let membership = StoredMembership::new(
        Some(last.clone()),
        openraft::Membership::new(
            vec![std::collections::BTreeSet::from([member.clone()])],
            std::collections::BTreeMap::from([(member.clone(), node)]),
        ),
    );
    let file = write_snapshot_file(&trees.snapshot_dir, |out| app.export(out))?;
    let stored = StoredSnapshot::<C> {
        meta: SnapshotMeta {
            last_log_id: Some(last.clone()),
            last_membership: membership.clone(),
            snapshot_id: format!("{}-{}-restored", last.leader_id, last.index),
        },
        file,
    };
    let applied = Applied::<C> {
        last_applied: Some(last.clone()),
        membership,
    };
    let vote = openraft::Vote::new(last.leader_id.term, member);
    trees.raft.insert(APPLIED, serde_json::to_vec(&applied)?)?;
    trees.raft.insert(SNAPSHOT, serde_json::to_vec(&stored)?)?;
    trees
        .raft
        .insert(crate::log::LAST_PURGED, serde_json::to_vec(&last)?)?;
    trees
        .raft
        .insert(crate::log::COMMITTED, serde_json::to_vec(&Some(last))?)?;
    trees
        .raft
        .insert(crate::log::VOTE, serde_json::to_vec(&vote)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// A snapshot built in the background and one being installed clean the same
    /// directory at once: neither fails for a file the other removed first.
    #[test]
    fn concurrent_cleanups_do_not_fail() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..50 {
            for i in 0..40 {
                std::fs::write(dir.path().join(format!("{round}-{i}.snap")), b"x").unwrap();
            }
            let a = {
                let d = dir.path().to_path_buf();
                std::thread::spawn(move || super::remove_files_except(&d, Some("keep")))
            };
            let b = super::remove_files_except(dir.path(), None);
            a.join().unwrap().unwrap();
            b.unwrap();
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        }
    }
}
