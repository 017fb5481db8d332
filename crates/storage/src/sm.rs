//! The Raft state machine of one group: applied state, membership and snapshots, around an
//! application state machine.

use std::io::Cursor;
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
const SNAPSHOT_META: &[u8] = b"snapshot_meta";
const SNAPSHOT_DATA: &[u8] = b"snapshot_data";

/// What a group replicates. The storage layer applies membership and blank entries itself
/// and hands normal entries to the application.
///
/// Applying must be idempotent: after a crash, entries after the last *recorded* applied id
/// are applied again, and the application may already hold their effects. Writing the
/// values an entry carries (events, states) rather than re-deriving them makes that so.
pub trait AppStateMachine<C: RaftTypeConfig>: Send + Sync + 'static {
    /// Applies one normal entry.
    fn apply(&mut self, log_id: &LogId<C::NodeId>, request: &C::D) -> Result<C::R>;

    /// Everything the application holds, as bytes for a snapshot.
    fn export(&self) -> Result<Vec<u8>>;

    /// Replaces everything with a snapshot made by [`AppStateMachine::export`].
    fn import(&mut self, data: &[u8]) -> Result<()>;
}

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct Applied<C: RaftTypeConfig> {
    last_applied: Option<LogId<C::NodeId>>,
    membership: StoredMembership<C::NodeId, C::Node>,
}

struct StoredSnapshot<C: RaftTypeConfig> {
    meta: SnapshotMeta<C::NodeId, C::Node>,
    data: Vec<u8>,
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
    C: RaftTypeConfig<Entry = Entry<C>, SnapshotData = Cursor<Vec<u8>>>,
    C::R: Default,
    A: AppStateMachine<C>,
{
    /// Opens the group's state machine; `app` must already hold the state persisted in the
    /// group's application trees.
    pub fn open(trees: GroupTrees, app: A) -> Result<Self> {
        let applied = match trees.raft.get(APPLIED)? {
            Some(v) => serde_json::from_slice(&v)?,
            None => Applied {
                last_applied: None,
                membership: StoredMembership::default(),
            },
        };
        Ok(StateMachineStore {
            trees,
            inner: Arc::new(Mutex::new(Inner {
                app,
                applied,
                snapshot_seq: 0,
            })),
        })
    }

    /// Runs `f` on the application state machine (for reads).
    pub fn with_app<T>(&self, f: impl FnOnce(&A) -> T) -> T {
        let inner = self.lock();
        f(&inner.app)
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
        let (Some(meta), Some(data)) = (
            self.trees.raft.get(SNAPSHOT_META)?,
            self.trees.raft.get(SNAPSHOT_DATA)?,
        ) else {
            return Ok(None);
        };
        Ok(Some(StoredSnapshot {
            meta: serde_json::from_slice(&meta)?,
            data: data.to_vec(),
        }))
    }

    /// Saves a snapshot (meta and data in one batch) and flushes it.
    async fn save_snapshot(&self, s: &StoredSnapshot<C>) -> Result<()> {
        let mut batch = sled::Batch::default();
        batch.insert(SNAPSHOT_META, serde_json::to_vec(&s.meta)?);
        batch.insert(SNAPSHOT_DATA, s.data.as_slice());
        self.trees.raft.apply_batch(batch)?;
        self.trees.flush().await
    }
}

impl<C, A> RaftSnapshotBuilder<C> for StateMachineStore<C, A>
where
    C: RaftTypeConfig<Entry = Entry<C>, SnapshotData = Cursor<Vec<u8>>>,
    C::R: Default,
    A: AppStateMachine<C>,
{
    async fn build_snapshot(&mut self) -> Result<Snapshot<C>, StorageError<C::NodeId>> {
        let stored = {
            let mut inner = self.lock();
            let data = inner.app.export().map_err(snap_err)?;
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
                data,
            }
        };
        self.save_snapshot(&stored).await.map_err(snap_err)?;
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl<C, A> RaftStateMachine<C> for StateMachineStore<C, A>
where
    C: RaftTypeConfig<Entry = Entry<C>, SnapshotData = Cursor<Vec<u8>>>,
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

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<C::SnapshotData>, StorageError<C::NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<C::NodeId, C::Node>,
        snapshot: Box<C::SnapshotData>,
    ) -> Result<(), StorageError<C::NodeId>> {
        let data = snapshot.into_inner();
        {
            let mut inner = self.lock();
            inner.app.import(&data).map_err(snap_err)?;
            inner.applied = Applied {
                last_applied: meta.last_log_id.clone(),
                membership: meta.last_membership.clone(),
            };
            self.save_applied(&inner.applied).map_err(snap_err)?;
        }
        let stored = StoredSnapshot::<C> {
            meta: meta.clone(),
            data,
        };
        self.save_snapshot(&stored).await.map_err(snap_err)
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<C>>, StorageError<C::NodeId>> {
        let stored = self.stored_snapshot().map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(None, AnyError::new(&e)))
        })?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
