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

/// The first byte of an entry stored as CBOR; an entry without it is JSON (`{...}`), as
/// versions before this one stored every entry. Payloads that serialize as bytes (a shard's
/// compact ops) are stored as they are, where JSON needed them in base64.
const ENTRY_CBOR: u8 = 0x01;

/// An entry as this version stores it: [`ENTRY_CBOR`], then its CBOR.
fn encode_entry<T: Serialize>(e: &T) -> crate::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    out.push(ENTRY_CBOR);
    ciborium::into_writer(e, &mut out)
        .map_err(|e| Error::Corrupt(format!("encoding a log entry: {e}")))?;
    Ok(out)
}

/// An entry as stored by this version (CBOR) or an earlier one (JSON).
fn decode_entry<T: DeserializeOwned>(v: &[u8]) -> crate::Result<T> {
    match v.split_first() {
        Some((&ENTRY_CBOR, cbor)) => {
            ciborium::from_reader(cbor).map_err(|e| Error::Corrupt(format!("a log entry: {e}")))
        }
        _ => Ok(serde_json::from_slice(v)?),
    }
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
                decode_entry(&v)
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
            out.push(decode_entry(&v)?);
            if bytes >= budget {
                break;
            }
        }
        Ok(out)
    }

    fn last_entry_id(&self) -> crate::Result<Option<LogId<C::NodeId>>> {
        match self.trees.log.last()? {
            Some((_, v)) => {
                let e: Entry<C> = decode_entry(&v)?;
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
            batch.insert(&be(e.log_id.index), encode_entry(&e)?);
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

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader};

    use super::*;

    openraft::declare_raft_types!(
        Bin:
            D = Blob,
            R = (),
            NodeId = u64,
            Node = openraft::BasicNode,
            Entry = openraft::Entry<Bin>,
            SnapshotData = tokio::fs::File,
            AsyncRuntime = openraft::TokioRuntime,
    );

    /// A payload that serializes as bytes, as the shard requests do in a binary format.
    #[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
    struct Blob(#[serde(with = "bytes")] Vec<u8>);

    mod bytes {
        pub fn serialize<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(b)
        }
        pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Vec<u8>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Vec<u8>, E> {
                    Ok(b.to_vec())
                }
            }
            d.deserialize_bytes(V)
        }
    }

    fn entry(index: u64, payload: Vec<u8>) -> Entry<Bin> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Normal(Blob(payload)),
        }
    }

    #[tokio::test]
    async fn entries_are_stored_as_cbor_and_json_ones_of_earlier_versions_still_read() {
        let db = crate::NodeDb::temporary().unwrap();
        let trees = db.group(1).unwrap();
        let mut log = LogStore::<Bin>::new(trees.clone());
        // Index 1 as an earlier version stored it: JSON (a payload without bytes).
        let old = Entry::<Bin> {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), 1),
            payload: EntryPayload::Blank,
        };
        trees
            .log
            .insert(be(1), serde_json::to_vec(&old).unwrap())
            .unwrap();
        log.append_durably([entry(2, vec![7; 600]), entry(3, vec![9; 3])])
            .await
            .unwrap();
        let stored = trees.log.get(be(2)).unwrap().unwrap();
        assert_eq!(stored[0], ENTRY_CBOR);
        // The payload's 600 bytes as they are (base64 in JSON: 800), and the log id's field
        // names around them.
        assert!(stored.len() < 600 + 80, "{} bytes stored", stored.len());
        let got = log.try_get_log_entries(1..4).await.unwrap();
        assert_eq!(got.len(), 3);
        assert!(matches!(got[0].payload, EntryPayload::Blank));
        assert!(matches!(&got[1].payload, EntryPayload::Normal(b) if b.0 == vec![7; 600]));
        assert!(matches!(&got[2].payload, EntryPayload::Normal(b) if b.0 == vec![9; 3]));
        assert_eq!(log.last_entry_id().unwrap().map(|l| l.index), Some(3));
        // Bytes that are neither form are an error, not a panic.
        trees.log.insert(be(4), vec![ENTRY_CBOR, 0xff]).unwrap();
        assert!(log.read_range(4..5).is_err());
    }
}
