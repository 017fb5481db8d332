//! The shard's listing index (tree `listing`): what `ListExecutions` shows of each
//! execution, under keys that put a state machine's (or a Map Run's) executions newest first,
//! with or without a status, so one page reads about a page of entries whatever the number
//! of executions kept.
//!
//! ```text
//! key   := kind owner 0x00 [status] (u64::MAX - start_ms) id      (integers big-endian)
//! kind  := 0 (by state machine) | 1 (by Map Run, its children) | 2 (by state machine and status)
//! value := ListItem (JSON)
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

fn status_byte(s: Status) -> u8 {
    match s {
        Status::Queued => 0,
        Status::Running => 1,
        Status::Succeeded => 2,
        Status::Failed => 3,
        Status::TimedOut => 4,
        Status::Aborted => 5,
    }
}

fn prefix(kind: u8, owner: &str, status: Option<Status>) -> Vec<u8> {
    let mut k = Vec::with_capacity(owner.len() + 19);
    k.push(kind);
    k.extend_from_slice(owner.as_bytes());
    k.push(0);
    if let Some(s) = status {
        k.push(status_byte(s));
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
        Some(v) => Some(serde_json::from_slice(&v)?),
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
    let value = serde_json::to_vec(&item)?;
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

/// Up to `limit` items of `owner` (with `status`, when given) after `after`, in listing
/// order, plus any that share the last one's start time (so a caller merging shards can
/// cut at the right place between equal times).
pub(crate) fn page(
    tree: &sled::Tree,
    owner: Owner<'_>,
    status: Option<Status>,
    after: Option<&Cursor>,
    limit: usize,
) -> Result<Vec<ListItem>> {
    let (kind, owner, indexed_status, filter) = match owner {
        Owner::Machine(m) => match status {
            Some(s) => (BY_STATUS, m, Some(s), None),
            None => (BY_MACHINE, m, None, None),
        },
        Owner::MapRun(r) => (BY_MAP_RUN, r, None, status),
    };
    let prefix = prefix(kind, owner, indexed_status);
    let mut from = prefix.clone();
    if let Some(c) = after {
        from.extend_from_slice(&newest_first(c.start_ms));
    }
    let mut out: Vec<ListItem> = Vec::new();
    for kv in tree.range(from..) {
        let (k, v) = kv?;
        if !k.starts_with(&prefix) {
            break;
        }
        let item: ListItem = serde_json::from_slice(&v)?;
        if after.is_some_and(|c| !item.after(c)) || filter.is_some_and(|s| item.status != s) {
            continue;
        }
        if out.len() >= limit && out.last().is_some_and(|l| l.start_ms != item.start_ms) {
            break;
        }
        out.push(item);
    }
    out.sort_by(|a, b| b.start_ms.cmp(&a.start_ms).then_with(|| a.arn.cmp(&b.arn)));
    Ok(out)
}
