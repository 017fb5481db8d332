//! The shard's listing index (tree `listing`): what `ListExecutions` shows of each
//! execution, under keys that put a state machine's (or a Map Run's) executions newest first,
//! with or without a status, so one page reads about a page of entries whatever the number
//! of executions kept.
//!
//! ```text
//! key   := kind owner 0x00 [status] (u64::MAX - start_ms) id      (integers big-endian)
//! kind  := 0 (by state machine) | 1 (by Map Run, its children) | 2 (by state machine and status)
//! value := ListItem, compact (`crate::codec::encode_item`; an earlier version's JSON reads)
//! ```
//!
//! Applying a record writes its entries only when its item changed (a step that changes
//! neither status, stop time nor redrive count writes nothing here); a status change moves
//! its kind-2 entry.

use serde::{Deserialize, Serialize};

use crate::record::{ExecRecord, Status};
use crate::Result;

const BY_MACHINE: u8 = 0;
const BY_MAP_RUN: u8 = 1;
const BY_STATUS: u8 = 2;

/// One execution as a listing shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListItem {
    pub arn: String,
    pub state_machine_arn: String,
    pub name: String,
    pub status: Status,
    pub start_ms: i64,
    pub stop_ms: Option<i64>,
    pub redrive_count: u32,
    /// A DISTRIBUTED Map child's Map Run.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub map_run_arn: String,
}

impl ListItem {
    pub fn of(rec: &ExecRecord) -> ListItem {
        ListItem {
            arn: rec.arn.clone(),
            state_machine_arn: rec.state_machine_arn.clone(),
            name: rec.name.clone(),
            status: rec.status,
            start_ms: rec.start_ms,
            stop_ms: rec.stop_ms,
            redrive_count: rec.redrive_count,
            map_run_arn: rec
                .parent
                .as_ref()
                .map(|p| p.map_run_arn.clone())
                .unwrap_or_default(),
        }
    }

    /// Whether it comes after `c` in listing order: newest first, then by ARN.
    pub fn after(&self, c: &Cursor) -> bool {
        self.start_ms < c.start_ms || (self.start_ms == c.start_ms && self.arn > c.arn)
    }
}

/// Where a page ended: the last item's start time and ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub start_ms: i64,
    pub arn: String,
}

impl Cursor {
    /// The token a client gets back: `<start ms>:<ARN>`.
    pub fn token(&self) -> String {
        format!("{}:{}", self.start_ms, self.arn)
    }

    pub fn parse(token: &str) -> Option<Cursor> {
        let (start, arn) = token.split_once(':')?;
        Some(Cursor {
            start_ms: start.parse().ok()?,
            arn: arn.to_string(),
        })
    }
}

/// Whose executions a listing shows.
#[derive(Debug, Clone, Copy)]
pub enum Owner<'a> {
    Machine(&'a str),
    MapRun(&'a str),
}

fn prefix(kind: u8, owner: &str, status: Option<Status>) -> Vec<u8> {
    let mut k = Vec::with_capacity(owner.len() + 19);
    k.push(kind);
    k.extend_from_slice(owner.as_bytes());
    k.push(0);
    if let Some(s) = status {
        k.push(crate::codec::status_code(s));
    }
    k
}

fn newest_first(start_ms: i64) -> [u8; 8] {
    (u64::MAX - start_ms.max(0) as u64).to_be_bytes()
}

fn key(kind: u8, owner: &str, status: Option<Status>, start_ms: i64, id: u64) -> Vec<u8> {
    let mut k = prefix(kind, owner, status);
    k.extend_from_slice(&newest_first(start_ms));
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The entries of `item` (execution `id`).
fn keys(item: &ListItem, id: u64) -> Vec<Vec<u8>> {
    let mut out = vec![
        key(BY_MACHINE, &item.state_machine_arn, None, item.start_ms, id),
        key(
            BY_STATUS,
            &item.state_machine_arn,
            Some(item.status),
            item.start_ms,
            id,
        ),
    ];
    if !item.map_run_arn.is_empty() {
        out.push(key(BY_MAP_RUN, &item.map_run_arn, None, item.start_ms, id));
    }
    out
}

/// Writes a record's entries if its item changed.
pub(crate) fn put(tree: &sled::Tree, rec: &ExecRecord) -> Result<()> {
    let item = ListItem::of(rec);
    let main = key(
        BY_MACHINE,
        &item.state_machine_arn,
        None,
        item.start_ms,
        rec.id,
    );
    let old: Option<ListItem> = match tree.get(&main)? {
        Some(v) => Some(crate::codec::decode_item(&v)?),
        None => None,
    };
    if old.as_ref() == Some(&item) {
        return Ok(());
    }
    let mut batch = sled::Batch::default();
    if let Some(old) = &old {
        for k in keys(old, rec.id) {
            batch.remove(k);
        }
    }
    let value = crate::codec::encode_item(&item);
    for k in keys(&item, rec.id) {
        batch.insert(k, value.clone());
    }
    tree.apply_batch(batch)?;
    Ok(())
}

/// Removes a record's entries.
pub(crate) fn remove(tree: &sled::Tree, rec: &ExecRecord) -> Result<()> {
    let mut batch = sled::Batch::default();
    for k in keys(&ListItem::of(rec), rec.id) {
        batch.remove(k);
    }
    tree.apply_batch(batch)?;
    Ok(())
}

/// The items of `owner` (with `status`, when given) after `after`, in listing order (newest
/// first, ties by ARN), read from the index as they are asked for: a caller that takes a
/// page reads about a page of entries.
pub struct Listing {
    iter: sled::Iter,
    prefix: Vec<u8>,
    after: Option<Cursor>,
    /// A Map Run's listing filters by status as it reads (it has no status entries).
    filter: Option<Status>,
    /// The rest of the current group of items with one start time, sorted by ARN.
    group: std::collections::VecDeque<ListItem>,
    /// The first item of the next group, read while finding where the current one ends.
    ahead: Option<ListItem>,
    done: bool,
}

impl Listing {
    pub(crate) fn new(
        tree: &sled::Tree,
        owner: Owner<'_>,
        status: Option<Status>,
        after: Option<Cursor>,
    ) -> Listing {
        let (kind, owner, indexed_status, filter) = match owner {
            Owner::Machine(m) => match status {
                Some(s) => (BY_STATUS, m, Some(s), None),
                None => (BY_MACHINE, m, None, None),
            },
            Owner::MapRun(r) => (BY_MAP_RUN, r, None, status),
        };
        let prefix = prefix(kind, owner, indexed_status);
        let mut from = prefix.clone();
        if let Some(c) = &after {
            from.extend_from_slice(&newest_first(c.start_ms));
        }
        Listing {
            iter: tree.range(from..),
            prefix,
            after,
            filter,
            group: Default::default(),
            ahead: None,
            done: false,
        }
    }

    /// The next entry that belongs to the listing, in index order (newest first, then id).
    fn read(&mut self) -> Result<Option<ListItem>> {
        while !self.done {
            let Some(kv) = self.iter.next() else {
                self.done = true;
                break;
            };
            let (k, v) = kv?;
            if !k.starts_with(&self.prefix) {
                self.done = true;
                break;
            }
            let item = crate::codec::decode_item(&v)?;
            if self.after.as_ref().is_some_and(|c| !item.after(c))
                || self.filter.is_some_and(|s| item.status != s)
            {
                continue;
            }
            return Ok(Some(item));
        }
        Ok(None)
    }
}

impl Iterator for Listing {
    type Item = Result<ListItem>;

    fn next(&mut self) -> Option<Result<ListItem>> {
        if self.group.is_empty() {
            // The next group: every item with the start time of the first.
            let first = match self.ahead.take() {
                Some(i) => i,
                None => match self.read() {
                    Ok(Some(i)) => i,
                    Ok(None) => return None,
                    Err(e) => return Some(Err(e)),
                },
            };
            let mut group = vec![first];
            loop {
                match self.read() {
                    Ok(Some(i)) if i.start_ms == group[0].start_ms => group.push(i),
                    Ok(Some(i)) => {
                        self.ahead = Some(i);
                        break;
                    }
                    Ok(None) => break,
                    Err(e) => return Some(Err(e)),
                }
            }
            group.sort_by(|a, b| a.arn.cmp(&b.arn));
            self.group = group.into();
        }
        self.group.pop_front().map(Ok)
    }
}

/// Merges listings (of several shards) into the first `limit` items in listing order,
/// reading from each only as far as the merge needs.
pub fn merge(listings: Vec<Listing>, limit: usize) -> Result<Vec<ListItem>> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    /// Orders items as listings do: the "smallest" is the newest, then the lowest ARN.
    struct Head(ListItem, usize);
    impl PartialEq for Head {
        fn eq(&self, o: &Self) -> bool {
            self.cmp(o) == std::cmp::Ordering::Equal
        }
    }
    impl Eq for Head {}
    impl PartialOrd for Head {
        fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(o))
        }
    }
    impl Ord for Head {
        fn cmp(&self, o: &Self) -> std::cmp::Ordering {
            o.0.start_ms
                .cmp(&self.0.start_ms)
                .then_with(|| self.0.arn.cmp(&o.0.arn))
        }
    }
    let mut listings = listings;
    let mut heap = BinaryHeap::new();
    for (i, l) in listings.iter_mut().enumerate() {
        if let Some(item) = l.next().transpose()? {
            heap.push(Reverse(Head(item, i)));
        }
    }
    let mut out = Vec::with_capacity(limit.min(1024));
    while out.len() < limit {
        let Some(Reverse(Head(item, i))) = heap.pop() else {
            break;
        };
        out.push(item);
        if let Some(next) = listings[i].next().transpose()? {
            heap.push(Reverse(Head(next, i)));
        }
    }
    Ok(out)
}
