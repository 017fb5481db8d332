//! The Raft log of one group: `RaftLogReader` + `RaftLogStorage` on sled.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, OptionalSend, RaftLogReader, RaftTypeConfig, StorageError,
    StorageIOError, Vote,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::db::GroupTrees;
use crate::{be, Error};

pub(crate) const VOTE: &[u8] = b"vote";
pub(crate) const COMMITTED: &[u8] = b"committed";
pub(crate) const LAST_PURGED: &[u8] = b"last_purged";

/// The most bytes of stored entries one read for replication returns (always at least one
/// entry). openraft gives an `AppendEntries` one heartbeat interval to be answered; an
/// append of many large entries to a busy follower times out and is sent again, and every
/// stale copy still costs the follower its decoding. Small appends keep answering in time.
pub const REPLICATION_READ_BYTES: usize = 1 << 20;

/// The log of one Raft group. Cheap to clone: clones share the trees.
pub struct LogStore<C> {
    trees: GroupTrees,
    _c: PhantomData<C>,
}

impl<C> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        LogStore {
            trees: self.trees.clone(),
            _c: PhantomData,
        }
    }
}

fn io<NID: openraft::NodeId>(
    f: fn(AnyError) -> StorageIOError<NID>,
) -> impl Fn(Error) -> StorageError<NID> {
    move |e| StorageError::from(f(AnyError::new(&e)))
}

fn get<T: DeserializeOwned>(tree: &sled::Tree, key: &[u8]) -> crate::Result<Option<T>> {
    match tree.get(key)? {
        Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
        None => Ok(None),
    }
}

fn put<T: Serialize>(tree: &sled::Tree, key: &[u8], v: &T) -> crate::Result<()> {
    tree.insert(key, serde_json::to_vec(v)?)?;
    Ok(())
}

impl<C> LogStore<C>
where
    C: RaftTypeConfig<Entry = Entry<C>>,
{
    pub fn new(trees: GroupTrees) -> Self {
        LogStore {
            trees,
            _c: PhantomData,
        }
    }

    fn last_purged(&self) -> crate::Result<Option<LogId<C::NodeId>>> {
        get(&self.trees.raft, LAST_PURGED)
    }

    fn read_range(&self, range: impl RangeBounds<u64>) -> crate::Result<Vec<Entry<C>>> {
        let start = match range.start_bound() {
            Bound::Included(n) => Bound::Included(be(*n)),
            Bound::Excluded(n) => Bound::Excluded(be(*n)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(n) => Bound::Included(be(*n)),
            Bound::Excluded(n) => Bound::Excluded(be(*n)),
            Bound::Unbounded => Bound::Unbounded,
        };
        self.trees
            .log
            .range::<[u8; 8], _>((start, end))
            .map(|kv| {
                let (_, v) = kv?;
                Ok(serde_json::from_slice(&v)?)
            })
            .collect()
    }

    /// Entries `start..end`, stopping after the one that reaches `budget` bytes as stored.
    fn read_limited(&self, start: u64, end: u64, budget: usize) -> crate::Result<Vec<Entry<C>>> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for kv in self.trees.log.range(be(start)..be(end)) {
            let (_, v) = kv?;
            bytes += v.len();
            out.push(serde_json::from_slice(&v)?);
            if bytes >= budget {
                break;
            }
        }
        Ok(out)
    }

    fn last_entry_id(&self) -> crate::Result<Option<LogId<C::NodeId>>> {
        match self.trees.log.last()? {
            Some((_, v)) => {
                let e: Entry<C> = serde_json::from_slice(&v)?;
                Ok(Some(e.log_id))
            }
            None => Ok(None),
        }
    }

    /// Writes entries and flushes them to disk: what `append` does before it reports the
    /// entries durable.
    pub async fn append_durably(
        &self,
        entries: impl IntoIterator<Item = Entry<C>>,
    ) -> crate::Result<()> {
        self.write_entries(entries)?;
        self.trees.flush().await
    }

    fn write_entries(&self, entries: impl IntoIterator<Item = Entry<C>>) -> crate::Result<()> {
        let mut batch = sled::Batch::default();
        for e in entries {
            batch.insert(&be(e.log_id.index), serde_json::to_vec(&e)?);
        }
        self.trees.log.apply_batch(batch)?;
        Ok(())
    }

    fn remove_range(&self, range: impl RangeBounds<[u8; 8]>) -> crate::Result<()> {
        let mut batch = sled::Batch::default();
        for kv in self.trees.log.range(range) {
            batch.remove(kv?.0);
        }
        self.trees.log.apply_batch(batch)?;
        Ok(())
    }
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig<Entry = Entry<C>>,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        self.read_range(range)
            .map_err(io(StorageIOError::read_logs))
    }

    /// What replication sends: at most [`REPLICATION_READ_BYTES`] of entries.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        self.read_limited(start, end, REPLICATION_READ_BYTES)
            .map_err(io(StorageIOError::read_logs))
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig<Entry = Entry<C>>,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<C::NodeId>> {
        let last_purged_log_id = self.last_purged().map_err(io(StorageIOError::read_logs))?;
        let last_log_id = self
            .last_entry_id()
            .map_err(io(StorageIOError::read_logs))?
            .or_else(|| last_purged_log_id.clone());
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let err = io(StorageIOError::write_vote);
        put(&self.trees.raft, VOTE, vote).map_err(&err)?;
        // A vote must be on disk before this node acts on it.
        self.trees.flush().await.map_err(&err)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, StorageError<C::NodeId>> {
        get(&self.trees.raft, VOTE).map_err(io(StorageIOError::read_vote))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<C::NodeId>>,
    ) -> Result<(), StorageError<C::NodeId>> {
        // Not flushed: losing it only means re-applying from the last applied id.
        put(&self.trees.raft, COMMITTED, &committed).map_err(io(StorageIOError::write))
    }

    async fn read_committed(
        &mut self,
    ) -> Result<Option<LogId<C::NodeId>>, StorageError<C::NodeId>> {
        Ok(get::<Option<LogId<C::NodeId>>>(&self.trees.raft, COMMITTED)
            .map_err(io(StorageIOError::read))?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let err = io(StorageIOError::write_logs);
        // Durable before openraft is told so.
        let flushed = self.append_durably(entries).await;
        let result = match &flushed {
            Ok(()) => Ok(()),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        };
        callback.log_io_completed(result);
        flushed.map_err(&err)
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        self.remove_range(be(log_id.index)..)
            .map_err(io(StorageIOError::write_logs))
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let err = io(StorageIOError::write_logs);
        // Record the purge point first: a crash in between leaves extra entries, never a gap.
        put(&self.trees.raft, LAST_PURGED, &log_id).map_err(&err)?;
        self.remove_range(..=be(log_id.index)).map_err(&err)
    }
}
