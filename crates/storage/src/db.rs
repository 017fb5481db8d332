//! The node's sled database and the trees of each Raft group.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::Result;

/// Makes writes durable with as few fsyncs as possible: callers that ask while a flush runs
/// share the next one (group commit across every Raft group of the node).
pub(crate) struct Flusher {
    db: sled::Db,
    /// Flush requests so far.
    requested: AtomicU64,
    /// The request count the last completed flush covered.
    done: tokio::sync::Mutex<u64>,
}

impl Flusher {
    fn new(db: sled::Db) -> Arc<Flusher> {
        Arc::new(Flusher {
            db,
            requested: AtomicU64::new(0),
            done: tokio::sync::Mutex::new(0),
        })
    }

    /// Returns once everything written before the call is on disk.
    pub(crate) async fn flush(&self) -> Result<()> {
        let mine = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut done = self.done.lock().await;
        if *done >= mine {
            // A flush that started after this request finished meanwhile.
            return Ok(());
        }
        let covers = self.requested.load(Ordering::SeqCst);
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| crate::Error::Corrupt(format!("flush task: {e}")))??;
        *done = covers;
        Ok(())
    }
}

/// A process's hold on a data directory: an exclusive lock on `<dir>/trellis.lock`, released
/// when this is dropped or the process ends (however it ends).
#[derive(Debug)]
pub struct DirLock {
    _file: std::fs::File,
}

/// Takes the data directory `dir` (created if missing) for this process, or fails with
/// [`crate::Error::InUse`] at once when another process holds it.
pub fn lock_dir(dir: &Path) -> Result<DirLock> {
    std::fs::create_dir_all(dir)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("trellis.lock"))?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(crate::Error::InUse {
            dir: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

/// Copies the store in `from` (a stopped node's data directory) into the new directory
/// `into`: every tree, rewritten compactly, and the snapshot files. sled 0.34 does not give
/// back the space of deleted data (its file keeps its largest size and is reused poorly);
/// a copy holds only what is live. Returns the bytes of both directories.
pub fn compact_into(from: &Path, into: &Path) -> Result<(u64, u64)> {
    const COMPACT_CACHE_BYTES: u64 = 64 << 20;
    let _held = lock_dir(from)?;
    if into.exists() && std::fs::read_dir(into)?.next().is_some() {
        return Err(crate::Error::Io(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!(
                "{} is not empty: compact into a new directory",
                into.display()
            ),
        )));
    }
    // Both stores are read or written once, in order: a small page cache does.
    let old = sled::Config::new()
        .path(from)
        .cache_capacity(COMPACT_CACHE_BYTES)
        .open()
        .map_err(|e| in_use(e, from))?;
    let _new_lock = lock_dir(into)?;
    let new = sled::Config::new()
        .path(into)
        .mode(sled::Mode::HighThroughput)
        .cache_capacity(COMPACT_CACHE_BYTES)
        .open()?;
    // sled's import panics on a failed write (a full disk) rather than returning it.
    let imported = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        new.import(old.export());
    }));
    if imported.is_err() {
        return Err(crate::Error::Corrupt(format!(
            "copying into {} failed (is the disk full?); {} is unchanged",
            into.display(),
            from.display()
        )));
    }
    new.flush()?;
    drop(new);
    copy_dir(&from.join("raft-snapshots"), &into.join("raft-snapshots"))?;
    Ok((dir_bytes(from)?, dir_bytes(into)?))
}

fn copy_dir(from: &Path, into: &Path) -> Result<()> {
    if !from.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(into)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let to = into.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &to)?;
        } else {
            std::fs::copy(e.path(), &to)?;
            std::fs::File::open(&to)?.sync_all()?;
        }
    }
    Ok(())
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let meta = e.metadata()?;
        n += if meta.is_dir() {
            dir_bytes(&e.path())?
        } else {
            meta.len()
        };
    }
    Ok(n)
}

/// sled's own lock on its files, taken by another process, as [`crate::Error::InUse`].
fn in_use(e: sled::Error, dir: &Path) -> crate::Error {
    match &e {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            crate::Error::InUse {
                dir: dir.to_path_buf(),
            }
        }
        _ => e.into(),
    }
}

/// The page cache of a store opened with [`NodeDb::open`]: 256 MiB.
pub const DEFAULT_CACHE_BYTES: u64 = 256 << 20;

/// One node's store: a single `sled::Db` shared by every Raft group on the node, and a
/// directory of snapshot files (`raft-snapshots/g{N}/`).
#[derive(Clone)]
pub struct NodeDb {
    db: sled::Db,
    flusher: Arc<Flusher>,
    snapshots: Arc<SnapshotRoot>,
}

/// Where snapshot files live; a temporary store's directory goes with it.
struct SnapshotRoot {
    path: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl NodeDb {
    /// Opens (or creates) the store in `dir`, with a page cache of
    /// [`DEFAULT_CACHE_BYTES`].
    pub fn open(dir: impl AsRef<Path>) -> Result<NodeDb> {
        NodeDb::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) the store in `dir`, its page cache at most `cache_bytes` (sled's
    /// own default is 1 GiB, more than a small node should spend on it).
    pub fn open_with_cache(dir: impl AsRef<Path>, cache_bytes: u64) -> Result<NodeDb> {
        let started = std::time::Instant::now();
        let db = sled::Config::new()
            .path(dir.as_ref())
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|e| in_use(e, dir.as_ref()))?;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "store opened"
        );
        Ok(NodeDb {
            flusher: Flusher::new(db.clone()),
            db,
            snapshots: Arc::new(SnapshotRoot {
                path: dir.as_ref().join("raft-snapshots"),
                _temp: None,
            }),
        })
    }

    /// A store in a temporary directory, removed when the last handle is dropped.
    pub fn temporary() -> Result<NodeDb> {
        let db = sled::Config::new().temporary(true).open()?;
        let temp = tempfile::tempdir()?;
        Ok(NodeDb {
            flusher: Flusher::new(db.clone()),
            db,
            snapshots: Arc::new(SnapshotRoot {
                path: temp.path().to_path_buf(),
                _temp: Some(temp),
            }),
        })
    }

    /// The trees of Raft group `group`.
    pub fn group(&self, group: u64) -> Result<GroupTrees> {
        Ok(GroupTrees {
            group,
            snapshot_dir: self.snapshots.path.join(format!("g{group}")),
            db: self.db.clone(),
            flusher: self.flusher.clone(),
            log: self.db.open_tree(format!("g{group}/log"))?,
            raft: self.db.open_tree(format!("g{group}/raft"))?,
        })
    }

    /// Where a node keeps copies of snapshots being read for a backup.
    pub fn backup_dir(&self) -> PathBuf {
        self.snapshots.path.join("backups")
    }

    /// Groups that have trees in this store (for restart).
    pub fn groups(&self) -> Vec<u64> {
        let mut out: Vec<u64> = self
            .db
            .tree_names()
            .iter()
            .filter_map(|n| {
                let n = std::str::from_utf8(n).ok()?;
                n.strip_prefix('g')?.strip_suffix("/raft")?.parse().ok()
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Removes every tree and snapshot file of a group (after its replica moved away).
    pub fn drop_group(&self, group: u64) -> Result<()> {
        match std::fs::remove_dir_all(self.snapshots.path.join(format!("g{group}"))) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        let prefix = format!("g{group}/");
        for name in self.db.tree_names() {
            if name.starts_with(prefix.as_bytes()) {
                self.db.drop_tree(name)?;
            }
        }
        Ok(())
    }

    /// Writes everything buffered to disk.
    pub async fn flush(&self) -> Result<()> {
        self.flusher.flush().await
    }

    /// Bytes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    pub fn sled(&self) -> &sled::Db {
        &self.db
    }
}

/// The trees of one Raft group.
#[derive(Clone)]
pub struct GroupTrees {
    pub group: u64,
    /// The group's snapshot files.
    pub(crate) snapshot_dir: PathBuf,
    pub(crate) db: sled::Db,
    flusher: Arc<Flusher>,
    /// Log entries by index (big-endian u64 keys).
    pub(crate) log: sled::Tree,
    /// Vote, committed id, last purged id, applied state, snapshot.
    pub(crate) raft: sled::Tree,
}

impl GroupTrees {
    /// An application tree of this group's state machine: `g{N}/sm/<name>`.
    pub fn sm_tree(&self, name: &str) -> Result<sled::Tree> {
        Ok(self.db.open_tree(format!("g{}/sm/{name}", self.group))?)
    }

    /// Names of this group's application trees (without the prefix).
    pub fn sm_tree_names(&self) -> Vec<String> {
        let prefix = format!("g{}/sm/", self.group);
        self.db
            .tree_names()
            .iter()
            .filter_map(|n| {
                std::str::from_utf8(n)
                    .ok()?
                    .strip_prefix(&prefix)
                    .map(str::to_string)
            })
            .collect()
    }

    pub(crate) async fn flush(&self) -> Result<()> {
        self.flusher.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_listed_and_dropped() {
        let db = NodeDb::temporary().unwrap();
        let g3 = db.group(3).unwrap();
        db.group(10).unwrap();
        g3.sm_tree("executions").unwrap().insert("k", "v").unwrap();
        assert_eq!(db.groups(), vec![3, 10]);
        assert_eq!(g3.sm_tree_names(), vec!["executions".to_string()]);
        db.drop_group(3).unwrap();
        assert_eq!(db.groups(), vec![10]);
    }
}

#[cfg(test)]
mod in_use_tests {
    use super::*;

    #[test]
    fn a_compacted_copy_holds_the_same_trees_in_less_space() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("old");
        {
            let db = NodeDb::open(&from).unwrap();
            let g = db.group(3).unwrap();
            let t = g.sm_tree("executions").unwrap();
            for i in 0u32..20_000 {
                t.insert(i.to_be_bytes(), vec![7u8; 400]).unwrap();
            }
            for i in 0u32..19_000 {
                t.remove(i.to_be_bytes()).unwrap();
            }
            db.db.flush().unwrap();
            std::fs::create_dir_all(from.join("raft-snapshots/g3")).unwrap();
            std::fs::write(from.join("raft-snapshots/g3/current"), b"snap").unwrap();
        }
        let into = dir.path().join("new");
        let (before, after) = compact_into(&from, &into).unwrap();
        assert!(after < before / 2, "{before} -> {after}");
        let db = NodeDb::open(&into).unwrap();
        assert_eq!(db.groups(), [3]);
        let t = db.group(3).unwrap().sm_tree("executions").unwrap();
        assert_eq!(t.len(), 1_000);
        assert_eq!(
            t.first().unwrap().unwrap().0.as_ref(),
            19_000u32.to_be_bytes()
        );
        assert_eq!(
            std::fs::read(into.join("raft-snapshots/g3/current")).unwrap(),
            b"snap"
        );
        drop(db);
        // Never over a directory that holds something.
        let e = compact_into(&from, &into).unwrap_err();
        assert!(e.to_string().contains("is not empty"), "{e}");
    }

    #[test]
    fn a_directory_in_use_is_refused_with_one_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_dir(dir.path()).unwrap();
        let e = lock_dir(dir.path()).unwrap_err();
        assert!(matches!(e, crate::Error::InUse { .. }), "{e}");
        assert!(
            e.to_string().contains("is in use by another process"),
            "{e}"
        );
        drop(held);
        let _again = lock_dir(dir.path()).unwrap();

        // sled's own lock says the same.
        let db = NodeDb::open(dir.path().join("db")).unwrap();
        let e = NodeDb::open(dir.path().join("db")).err().unwrap();
        assert!(matches!(e, crate::Error::InUse { .. }), "{e}");
        drop(db);
    }
}
