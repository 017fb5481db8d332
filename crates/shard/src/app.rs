//! The shard's replicated state: executions (with their pending timers and tasks) and
//! their histories, in the group's sled trees. Every replica applies the same entries.
//!
//! A new executor rebuilds its timer wheel, token table and activity queues from the live
//! executions ([`ShardApp::for_each_live`]): the `live` index holds an entry for each
//! ([`codec::LiveEntry`]), with the timers of those waiting on timers only, whose records
//! are then not read at all (a shard may hold a million of them; `executor::park`). The
//! `timers`, `tokens` and `activities` trees of earlier versions are emptied when a replica
//! opens, and stay in the snapshot format (empty).
//!
//! Retention: every closed execution has an entry in the `closed` index
//! ([`keys::Closed`]), written when its record is; [`ShardOp::Expire`] deletes the ones the
//! leader found due. `counters` holds the id high-water mark (so ids of deleted executions
//! are never given again) and the marker saying the `closed` index is complete (a store or a
//! snapshot of an earlier version has none, and the index is built from the records).

use openraft::LogId;
use trellis_asl::HistoryEvent;
use trellis_storage::{AppStateMachine, GroupTrees};

use crate::codec;
use crate::record::{keys, ExecRecord};
use crate::request::{Expiry, ShardConfig, ShardOp, ShardRequest, ShardResponse};
use crate::Result;

const TREES: [&str; 11] = [
    "executions",
    "ids",
    "history",
    "timers",
    "tokens",
    "activities",
    "definitions",
    "closed",
    "counters",
    "listing",
    "live",
];

/// `counters` keys.
const NEXT_ID: &[u8] = b"next_id";
const CLOSED_INDEXED: &[u8] = b"closed_indexed";
const LISTED: &[u8] = b"listed";
const LIVE_INDEXED: &[u8] = b"live_indexed";

/// Trees earlier versions wrote and nothing read: emptied on open.
const RETIRED: [usize; 3] = [3, 4, 5];

/// A shard's state machine.
#[derive(Clone)]
pub struct ShardApp {
    /// Execution ARN -> record.
    executions: sled::Tree,
    /// Execution id -> ARN.
    ids: sled::Tree,
    /// (execution id, event id) -> event.
    history: sled::Tree,
    /// Definition hash -> definition text.
    definitions: sled::Tree,
    /// [`keys::Closed`] -> execution ARN.
    closed: sled::Tree,
    counters: sled::Tree,
    /// [`crate::listing`]: what ListExecutions shows, newest first.
    listing: sled::Tree,
    /// Execution id -> [`codec::LiveEntry`], for every [`ExecRecord::is_live`] record.
    live: sled::Tree,
    all: Vec<(String, sled::Tree)>,
}

impl ShardApp {
    pub fn open(trees: &GroupTrees) -> Result<ShardApp> {
        let mut all = Vec::new();
        for name in TREES {
            all.push((name.to_string(), trees.sm_tree(name)?));
        }
        for i in RETIRED {
            all[i].1.clear()?;
        }
        let t = |i: usize| all[i].1.clone();
        let app = ShardApp {
            executions: t(0),
            ids: t(1),
            history: t(2),
            definitions: t(6),
            closed: t(7),
            counters: t(8),
            listing: t(9),
            live: t(10),
            all,
        };
        app.index()?;
        Ok(app)
    }

    /// Builds the `closed`, `listing` and `live` indexes from the records, unless they are
    /// complete already (a store or snapshot of a version without them).
    fn index(&self) -> Result<()> {
        let closed = !self.counters.contains_key(CLOSED_INDEXED)?;
        let listed = !self.counters.contains_key(LISTED)?;
        let live = !self.counters.contains_key(LIVE_INDEXED)?;
        if !closed && !listed && !live {
            return Ok(());
        }
        if closed {
            self.closed.clear()?;
        }
        if listed {
            self.listing.clear()?;
        }
        if live {
            self.live.clear()?;
        }
        let mut batch = sled::Batch::default();
        for kv in self.executions.iter() {
            let (k, v) = kv?;
            let rec = codec::decode_record(&v)?;
            if let (true, Some(c)) = (closed, rec.closed_key()) {
                batch.insert(&c.to_bytes(), k);
            }
            if listed {
                crate::listing::put(&self.listing, &rec)?;
            }
            if live && rec.is_live() {
                self.live
                    .insert(rec.id.to_be_bytes(), codec::encode_live(&rec))?;
            }
        }
        self.closed.apply_batch(batch)?;
        self.counters.insert(CLOSED_INDEXED, &[1])?;
        self.counters.insert(LISTED, &[1])?;
        self.counters.insert(LIVE_INDEXED, &[1])?;
        Ok(())
    }

    /// Applies one op; returns how many executions it deleted.
    pub fn apply_op(&self, op: &ShardOp) -> Result<usize> {
        match op {
            ShardOp::Put {
                record,
                events,
                definition,
            } => self.put(record, events, definition.as_ref()).map(|()| 0),
            ShardOp::Expire { executions } => {
                let mut deleted = 0;
                for e in executions {
                    deleted += usize::from(self.expire(e)?);
                }
                Ok(deleted)
            }
        }
    }

    /// Deletes a closed execution if its index entry is still its own and it has no
    /// message left to send; drops the index entry either way. Applying it again (after a
    /// crash part-way) finishes what is left: the record goes last but one, the index
    /// entry last.
    fn expire(&self, e: &Expiry) -> Result<bool> {
        let key = e.key.to_bytes();
        let due = match self.record(&e.arn)? {
            Some(rec) if rec.closed_key() == Some(e.key) && rec.outbox.is_empty() => Some(rec),
            _ => None,
        };
        if let Some(rec) = &due {
            let next = self.counter(NEXT_ID)?.max(rec.id + 1);
            self.counters.insert(NEXT_ID, &next.to_be_bytes())?;
            let mut history = sled::Batch::default();
            for k in self
                .history
                .range(keys::event(rec.id, 0)..=keys::event(rec.id, u64::MAX))
                .keys()
            {
                history.remove(k?);
            }
            self.history.apply_batch(history)?;
            crate::listing::remove(&self.listing, rec)?;
            self.ids.remove(rec.id.to_be_bytes())?;
            self.executions.remove(e.arn.as_bytes())?;
        }
        self.closed.remove(key)?;
        Ok(due.is_some())
    }

    fn counter(&self, key: &[u8]) -> Result<u64> {
        Ok(self
            .counters
            .get(key)?
            .and_then(|v| trellis_storage::from_be(&v))
            .unwrap_or(0))
    }

    fn put(
        &self,
        rec: &ExecRecord,
        events: &[HistoryEvent],
        definition: Option<&(u64, String)>,
    ) -> Result<()> {
        if let Some((hash, text)) = definition {
            self.definitions
                .insert(hash.to_be_bytes(), text.as_bytes())?;
        }
        // A write's events are one value, under the first one's id.
        if let Some(first) = events.first() {
            self.history
                .insert(keys::event(rec.id, first.id), codec::encode_events(events))?;
        }
        // No need to read (and parse) the previous record: only its existence matters.
        if !self.executions.contains_key(rec.arn.as_bytes())? {
            self.ids.insert(rec.id.to_be_bytes(), rec.arn.as_bytes())?;
        }
        self.executions
            .insert(rec.arn.as_bytes(), codec::encode_record(rec)?)?;
        crate::listing::put(&self.listing, rec)?;
        if rec.is_live() {
            self.live
                .insert(rec.id.to_be_bytes(), codec::encode_live(rec))?;
        } else {
            self.live.remove(rec.id.to_be_bytes())?;
        }
        // A redrive leaves the earlier entry behind: retention drops it when it comes due.
        if let Some(c) = rec.closed_key() {
            self.closed.insert(c.to_bytes(), rec.arn.as_bytes())?;
        }
        Ok(())
    }

    // ------------------------------------------------------------------ reads

    /// The record of an execution, by ARN.
    pub fn record(&self, arn: &str) -> Result<Option<ExecRecord>> {
        match self.executions.get(arn.as_bytes())? {
            Some(v) => Ok(Some(codec::decode_record(&v)?)),
            None => Ok(None),
        }
    }

    /// The ARN of an execution id.
    pub fn arn_of(&self, id: u64) -> Result<Option<String>> {
        Ok(self
            .ids
            .get(id.to_be_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The next free execution id: one past the highest stored or deleted.
    pub fn next_exec_id(&self) -> Result<u64> {
        let stored = match self.ids.last()? {
            Some((k, _)) => trellis_storage::from_be(&k).unwrap_or(0) + 1,
            None => 1,
        };
        Ok(stored.max(self.counter(NEXT_ID)?))
    }

    /// Entries of the `closed` index due for deletion, oldest first, at most `limit`:
    /// those kept for the cluster's retention that stopped at or before `stopped_by`, then
    /// those whose own retention ended at or before `now`.
    pub fn closed_due(
        &self,
        stopped_by: Option<i64>,
        now: i64,
        limit: usize,
    ) -> Result<Vec<Expiry>> {
        use keys::Closed;
        let mut out = Vec::new();
        let mut ranges = Vec::new();
        if let Some(by) = stopped_by {
            ranges.push((
                [Closed::DEFAULT_TAG][..].to_vec(),
                Closed::bound(Closed::DEFAULT_TAG, by),
            ));
        }
        ranges.push((
            [Closed::CUSTOM_TAG][..].to_vec(),
            Closed::bound(Closed::CUSTOM_TAG, now),
        ));
        for (from, to) in ranges {
            for kv in self.closed.range(from..=to.to_vec()) {
                if out.len() >= limit {
                    return Ok(out);
                }
                let (k, v) = kv?;
                let key = Closed::from_bytes(&k)
                    .ok_or_else(|| crate::Error::Corrupt("a malformed closed index key".into()))?;
                out.push(Expiry {
                    key,
                    arn: String::from_utf8_lossy(&v).into_owned(),
                });
            }
        }
        Ok(out)
    }

    pub fn definition(&self, hash: u64) -> Result<Option<String>> {
        Ok(self
            .definitions
            .get(hash.to_be_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// History events of an execution with ids in `from..=to`, in order. Values hold the
    /// events of one write each, keyed by the first one's id (an earlier version's, one
    /// event each): the read starts at the value holding `from`.
    pub fn history(&self, exec: u64, from: u64, to: u64) -> Result<Vec<HistoryEvent>> {
        let start = match self
            .history
            .range(keys::event(exec, 0)..=keys::event(exec, from))
            .next_back()
        {
            Some(kv) => kv?.0.to_vec(),
            None => keys::event(exec, from).to_vec(),
        };
        let mut out = Vec::new();
        for kv in self.history.range(start..=keys::event(exec, to).to_vec()) {
            let events = codec::decode_events(&kv?.1)?;
            out.extend(events.into_iter().filter(|e| (from..=to).contains(&e.id)));
        }
        Ok(out)
    }

    /// The executions of `owner` (with `status`, when given) after `after`, newest first,
    /// read from the listing index as they are taken ([`crate::listing::Listing`]).
    pub fn listing(
        &self,
        owner: crate::listing::Owner<'_>,
        status: Option<crate::record::Status>,
        after: Option<crate::listing::Cursor>,
    ) -> crate::listing::Listing {
        crate::listing::Listing::new(&self.listing, owner, status, after)
    }

    /// The first `limit` items of [`ShardApp::listing`].
    pub fn list(
        &self,
        owner: crate::listing::Owner<'_>,
        status: Option<crate::record::Status>,
        after: Option<&crate::listing::Cursor>,
        limit: usize,
    ) -> Result<Vec<crate::listing::ListItem>> {
        self.listing(owner, status, after.cloned())
            .take(limit)
            .collect()
    }

    /// Every execution record, in ARN order, after `after` (exclusive), at most `limit`.
    pub fn scan(&self, after: Option<&str>, limit: usize) -> Result<Vec<ExecRecord>> {
        let iter = match after {
            Some(a) => self.executions.range::<&[u8], _>((
                std::ops::Bound::Excluded(a.as_bytes()),
                std::ops::Bound::Unbounded,
            )),
            None => self.executions.iter(),
        };
        iter.take(limit)
            .map(|kv| codec::decode_record(&kv?.1))
            .collect()
    }

    /// How many executions are live ([`ExecRecord::is_live`]).
    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    /// The live executions ([`ExecRecord::is_live`]), in id order, one at a time (a shard's
    /// need not fit in memory at once): those waiting on timers only from the `live` index
    /// alone, the others with their records.
    pub fn for_each_live(&self, mut f: impl FnMut(LiveExecution) -> Result<()>) -> Result<()> {
        for kv in self.live.iter() {
            let (k, v) = kv?;
            let id = trellis_storage::from_be(&k)
                .ok_or_else(|| crate::Error::Corrupt("a malformed live index key".into()))?;
            let entry = codec::decode_live(&v)?;
            let next = match entry.waiting {
                Some(timers) => LiveExecution::Waiting {
                    id,
                    arn: entry.arn,
                    timers,
                },
                None => {
                    LiveExecution::Record(Box::new(self.record(&entry.arn)?.ok_or_else(|| {
                        crate::Error::Corrupt(format!(
                            "{} is indexed as live without a record",
                            entry.arn
                        ))
                    })?))
                }
            };
            f(next)?;
        }
        Ok(())
    }
}

/// A live execution, as [`ShardApp::for_each_live`] reads it.
#[derive(Debug)]
pub enum LiveExecution {
    /// Waiting on timers only ([`ExecRecord::parkable`]); its record is not read.
    Waiting {
        id: u64,
        arn: String,
        timers: Box<[(u64, i64)]>,
    },
    Record(Box<ExecRecord>),
}

/// Snapshots hold every tree, in `trellis_storage::export_trees`'s format.
impl AppStateMachine<ShardConfig> for ShardApp {
    fn apply(
        &mut self,
        _log_id: &LogId<u64>,
        req: &ShardRequest,
    ) -> trellis_storage::Result<ShardResponse> {
        for op in &req.ops {
            self.apply_op(op)
                .map_err(|e| trellis_storage::Error::App(e.to_string()))?;
        }
        Ok(ShardResponse)
    }

    fn export(&self, out: &mut dyn std::io::Write) -> trellis_storage::Result<()> {
        trellis_storage::export_trees(self.all.iter().map(|(n, t)| (&**n, t)), out)
    }

    fn import(&mut self, input: &mut dyn std::io::Read) -> trellis_storage::Result<()> {
        trellis_storage::import_trees(input, self.all.iter().map(|(n, t)| (&**n, t)))?;
        // A snapshot of an earlier version has no `closed` or `listing` index.
        self.index()
            .map_err(|e| trellis_storage::Error::App(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Status;
    use trellis_storage::NodeDb;

    fn closed(id: u64, stop_ms: i64) -> ExecRecord {
        let mut r = ExecRecord::new(
            id,
            format!("arn:e:{id}"),
            id.to_string(),
            "arn:m".into(),
            1,
            "{}".into(),
            stop_ms - 10,
        );
        r.status = Status::Succeeded;
        r.stop_ms = Some(stop_ms);
        r
    }

    fn put(app: &ShardApp, r: &ExecRecord) {
        app.apply_op(&ShardOp::Put {
            record: Box::new(r.clone()),
            events: Vec::new(),
            definition: None,
        })
        .unwrap();
    }

    fn expire(app: &ShardApp, due: Vec<Expiry>) -> usize {
        app.apply_op(&ShardOp::Expire { executions: due }).unwrap()
    }

    #[test]
    fn a_redriven_execution_only_loses_its_stale_index_entry() {
        let db = NodeDb::temporary().unwrap();
        let app = ShardApp::open(&db.group(1).unwrap()).unwrap();
        let mut r = closed(1, 1_000);
        put(&app, &r);
        let due = app.closed_due(Some(5_000), 5_000, 10).unwrap();
        assert_eq!(due.len(), 1);
        // Redriven (RUNNING again) before the deletion applies.
        r.redriven(2_000, None);
        put(&app, &r);
        assert_eq!(expire(&app, due.clone()), 0);
        assert!(app.record("arn:e:1").unwrap().is_some());
        assert!(app.closed_due(Some(5_000), 5_000, 10).unwrap().is_empty());
        // Closed again later: indexed under its new stop time, and deleted once due.
        r.status = Status::Failed;
        r.stop_ms = Some(3_000);
        put(&app, &r);
        assert!(app.closed_due(Some(2_999), 5_000, 10).unwrap().is_empty());
        let due = app.closed_due(Some(3_000), 5_000, 10).unwrap();
        assert_eq!(expire(&app, due.clone()), 1);
        // Applying the same entry again changes nothing.
        assert_eq!(expire(&app, due), 0);
        assert!(app.record("arn:e:1").unwrap().is_none());
        assert_eq!(app.next_exec_id().unwrap(), 2);
    }

    #[test]
    fn own_retention_orders_by_expiry_and_messages_still_to_send_keep_a_record() {
        let db = NodeDb::temporary().unwrap();
        let app = ShardApp::open(&db.group(1).unwrap()).unwrap();
        let mut own = closed(1, 1_000);
        own.retention_ms = Some(10_000);
        put(&app, &own);
        let mut mail = closed(2, 1_000);
        mail.send(crate::outbox::Message::StopChild {
            child_arn: "c".into(),
        });
        put(&app, &mail);
        // The cluster's retention is due for the one with mail; its own is not.
        let due = app.closed_due(Some(2_000), 2_000, 10).unwrap();
        assert_eq!(due.iter().map(|e| e.key.id()).collect::<Vec<_>>(), [2]);
        assert_eq!(expire(&app, due), 0, "its messages are not delivered");
        // Delivered: written again, indexed again, deleted.
        mail.delivered(0);
        put(&app, &mail);
        let due = app.closed_due(Some(2_000), 2_000, 10).unwrap();
        assert_eq!(expire(&app, due), 1);
        // Without a cluster retention only the machine's own counts.
        assert!(app.closed_due(None, 10_999, 10).unwrap().is_empty());
        let due = app.closed_due(None, 11_000, 10).unwrap();
        assert_eq!(expire(&app, due), 1);
    }

    fn event(id: u64) -> HistoryEvent {
        HistoryEvent {
            id,
            previous_event_id: id - 1,
            timestamp_ms: 1_000 + id as i64,
            event_type: trellis_asl::EventType::PassStateEntered,
            details: None,
        }
    }

    #[test]
    fn history_reads_any_range_across_writes_and_an_earlier_versions_events() {
        let db = NodeDb::temporary().unwrap();
        let app = ShardApp::open(&db.group(1).unwrap()).unwrap();
        let mut r = closed(3, 2_000);
        r.status = Status::Running;
        // As an earlier version stored them: one JSON value per event.
        for id in 1..=2 {
            app.history
                .insert(keys::event(3, id), serde_json::to_vec(&event(id)).unwrap())
                .unwrap();
        }
        // Then three writes of this version; and another execution's next to it.
        for ids in [3..=5, 6..=6, 7..=10] {
            app.apply_op(&ShardOp::Put {
                record: Box::new(r.clone()),
                events: ids.map(event).collect(),
                definition: None,
            })
            .unwrap();
        }
        let mut other = closed(4, 2_000);
        other.arn = "arn:e:4".into();
        app.apply_op(&ShardOp::Put {
            record: Box::new(other),
            events: vec![event(1)],
            definition: None,
        })
        .unwrap();
        let ids = |from, to| {
            app.history(3, from, to)
                .unwrap()
                .iter()
                .map(|e| e.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(1, u64::MAX), (1..=10).collect::<Vec<_>>());
        assert_eq!(ids(4, 8), [4, 5, 6, 7, 8]);
        assert_eq!(ids(2, 3), [2, 3]);
        assert_eq!(ids(9, 9), [9]);
        assert!(ids(11, 20).is_empty());
        assert_eq!(app.history(4, 1, u64::MAX).unwrap(), [event(1)]);
        assert!(app.history(5, 1, u64::MAX).unwrap().is_empty());
        // Deleted by retention, every value of it goes.
        r.status = Status::Succeeded;
        app.apply_op(&ShardOp::Put {
            record: Box::new(r),
            events: Vec::new(),
            definition: None,
        })
        .unwrap();
        let due = app.closed_due(Some(5_000), 5_000, 10).unwrap();
        assert_eq!(expire(&app, due), 2);
        assert_eq!(app.history.len(), 0);
    }

    fn names(items: &[crate::listing::ListItem]) -> Vec<&str> {
        items.iter().map(|i| i.name.as_str()).collect()
    }

    #[test]
    fn listings_page_newest_first_by_status_and_by_map_run() {
        use crate::listing::{Cursor, Owner};
        let db = NodeDb::temporary().unwrap();
        let app = ShardApp::open(&db.group(1).unwrap()).unwrap();
        // Five executions: two start at the same time (ties go by ARN).
        for (id, start) in [(1, 100), (2, 300), (3, 200), (4, 300), (5, 50)] {
            let mut r = closed(id, start + 10);
            r.start_ms = start;
            if id % 2 == 0 {
                r.status = Status::Running;
                r.stop_ms = None;
            }
            if id == 5 {
                r.parent = Some(crate::outbox::ParentLink {
                    arn: "arn:e:parent".into(),
                    child_id: 0,
                    map_run_arn: "arn:run".into(),
                    inline: false,
                });
            }
            put(&app, &r);
        }
        let all = app.list(Owner::Machine("arn:m"), None, None, 10).unwrap();
        assert_eq!(names(&all), ["2", "4", "3", "1", "5"]);
        // Pages: ties on start time go by ARN, and the cursor goes on after the last.
        let p1 = app.list(Owner::Machine("arn:m"), None, None, 1).unwrap();
        assert_eq!(names(&p1), ["2"]);
        let c = Cursor {
            start_ms: 300,
            arn: "arn:e:2".into(),
        };
        let p2 = app
            .list(Owner::Machine("arn:m"), None, Some(&c), 2)
            .unwrap();
        assert_eq!(names(&p2), ["4", "3"]);
        let c = Cursor::parse(
            &Cursor {
                start_ms: 200,
                arn: "arn:e:3".into(),
            }
            .token(),
        )
        .unwrap();
        let p3 = app
            .list(Owner::Machine("arn:m"), None, Some(&c), 2)
            .unwrap();
        assert_eq!(names(&p3), ["1", "5"]);
        // By status; a status change moves the entry.
        let running = app
            .list(Owner::Machine("arn:m"), Some(Status::Running), None, 10)
            .unwrap();
        assert_eq!(names(&running), ["2", "4"]);
        let mut four = app.record("arn:e:4").unwrap().unwrap();
        four.status = Status::Failed;
        four.stop_ms = Some(400);
        put(&app, &four);
        let running = app
            .list(Owner::Machine("arn:m"), Some(Status::Running), None, 10)
            .unwrap();
        assert_eq!(names(&running), ["2"]);
        let failed = app
            .list(Owner::Machine("arn:m"), Some(Status::Failed), None, 10)
            .unwrap();
        assert_eq!(failed[0].stop_ms, Some(400));
        // A Map Run's children.
        let children = app.list(Owner::MapRun("arn:run"), None, None, 10).unwrap();
        assert_eq!(names(&children), ["5"]);
        assert_eq!(children[0].map_run_arn, "arn:run");
        // Deleted by retention: gone from every listing.
        let due = app.closed_due(Some(10_000), 10_000, 10).unwrap();
        expire(&app, due);
        assert_eq!(
            names(&app.list(Owner::Machine("arn:m"), None, None, 10).unwrap()),
            ["2"]
        );
        assert!(app
            .list(Owner::MapRun("arn:run"), None, None, 10)
            .unwrap()
            .is_empty());
        assert!(app
            .list(Owner::Machine("arn:m"), Some(Status::Failed), None, 10)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn listings_of_shards_merge_in_order_reading_only_what_they_need() {
        use crate::listing::{merge, Cursor, Owner};
        let db = NodeDb::temporary().unwrap();
        let a = ShardApp::open(&db.group(1).unwrap()).unwrap();
        let b = ShardApp::open(&db.group(2).unwrap()).unwrap();
        // Start times 1..=40 over two shards, every third one tied with another shard's.
        for i in 1..=40u64 {
            let mut r = closed(i, 0);
            r.start_ms = (i - i % 3) as i64;
            r.stop_ms = Some(r.start_ms + 1);
            put(if i % 2 == 0 { &a } else { &b }, &r);
        }
        let want: Vec<String> = {
            let mut all: Vec<(i64, String)> = (1..=40u64)
                .map(|i| ((i - i % 3) as i64, format!("arn:e:{i}")))
                .collect();
            all.sort_by(|x, y| y.0.cmp(&x.0).then_with(|| x.1.cmp(&y.1)));
            all.into_iter().map(|x| x.1).collect()
        };
        let mut got = Vec::new();
        let mut after: Option<Cursor> = None;
        for _ in 0..10 {
            let page = merge(
                vec![
                    a.listing(Owner::Machine("arn:m"), None, after.clone()),
                    b.listing(Owner::Machine("arn:m"), None, after.clone()),
                ],
                7,
            )
            .unwrap();
            let Some(last) = page.last() else { break };
            after = Some(Cursor {
                start_ms: last.start_ms,
                arn: last.arn.clone(),
            });
            got.extend(page.into_iter().map(|i| i.arn));
        }
        assert_eq!(got, want);
    }

    #[test]
    fn a_store_without_the_index_gets_it_from_its_records() {
        let db = NodeDb::temporary().unwrap();
        let trees = db.group(1).unwrap();
        let app = ShardApp::open(&trees).unwrap();
        put(&app, &closed(1, 1_000));
        let mut running = closed(2, 1_000);
        running.status = Status::Running;
        running.stop_ms = None;
        put(&app, &running);
        // As an earlier version left it: no index, no marker.
        app.closed.clear().unwrap();
        app.listing.clear().unwrap();
        app.live.clear().unwrap();
        app.counters.clear().unwrap();
        let app = ShardApp::open(&trees).unwrap();
        assert_eq!(ids_of(&live(&app)), [2]);
        let due = app.closed_due(Some(1_000), 1_000, 10).unwrap();
        assert_eq!(due.iter().map(|e| e.key.id()).collect::<Vec<_>>(), [1]);
        let listed = app
            .list(crate::listing::Owner::Machine("arn:m"), None, None, 10)
            .unwrap();
        assert_eq!(listed.len(), 2);
        // A snapshot of it carries the index to a new replica.
        let mut snap = Vec::new();
        app.export(&mut snap).unwrap();
        let other = NodeDb::temporary().unwrap();
        let mut copy = ShardApp::open(&other.group(1).unwrap()).unwrap();
        copy.import(&mut snap.as_slice()).unwrap();
        assert_eq!(copy.closed_due(Some(1_000), 1_000, 10).unwrap(), due);
        assert_eq!(ids_of(&live(&copy)), [2]);
    }

    fn live(app: &ShardApp) -> Vec<LiveExecution> {
        let mut out = Vec::new();
        app.for_each_live(|e| {
            out.push(e);
            Ok(())
        })
        .unwrap();
        out
    }

    fn ids_of(live: &[LiveExecution]) -> Vec<u64> {
        live.iter()
            .map(|e| match e {
                LiveExecution::Waiting { id, .. } => *id,
                LiveExecution::Record(r) => r.id,
            })
            .collect()
    }

    #[test]
    fn the_live_index_follows_each_write_and_holds_the_timers_of_waiting_executions() {
        let db = NodeDb::temporary().unwrap();
        let app = ShardApp::open(&db.group(1).unwrap()).unwrap();
        let mut waiting = closed(1, 1_000);
        waiting.status = Status::Running;
        waiting.stop_ms = None;
        waiting.timers.insert(7, 86_400_000);
        waiting.timers.insert(9, 5_000);
        put(&app, &waiting);
        let mut capped = waiting.clone();
        capped.id = 2;
        capped.arn = "arn:e:2".into();
        capped.capped = true;
        put(&app, &capped);
        put(&app, &closed(3, 1_000));
        let mut sending = closed(4, 1_000);
        sending.send(crate::outbox::Message::StopChild {
            child_arn: "arn:e:5".into(),
        });
        put(&app, &sending);

        let got = live(&app);
        assert_eq!(ids_of(&got), [1, 2, 4]);
        match &got[0] {
            LiveExecution::Waiting { arn, timers, .. } => {
                assert_eq!(arn, "arn:e:1");
                assert_eq!(&timers[..], [(7, 86_400_000), (9, 5_000)]);
            }
            other => panic!("{other:?}"),
        }
        // Under a cap it stays in memory, so its record is read.
        assert!(matches!(&got[1], LiveExecution::Record(r) if r.capped));
        assert_eq!(app.live_count(), 3);

        // It ends: out of the index; its messages delivered: out as well.
        waiting.status = Status::Succeeded;
        waiting.stop_ms = Some(2_000);
        waiting.timers.clear();
        put(&app, &waiting);
        sending.delivered(u64::MAX);
        put(&app, &sending);
        assert_eq!(ids_of(&live(&app)), [2]);
    }
}
