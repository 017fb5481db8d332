//! The backup directory: what `trellisctl backup` writes and `trellis restore` reads.
//!
//! ```text
//! <dir>/manifest.json       the groups, their log ids, sizes and SHA-256 sums
//! <dir>/group-<N>.snap      group N's snapshot (0: the meta group; shard S: S + 1)
//! ```
//!
//! A snapshot file is the node's own snapshot format (`trellis_storage::export_trees`). The
//! manifest is written last, so a directory without one holds no complete backup; each file
//! is checked against its sum before a restore uses it (`sha256sum` checks it too).
//!
//! In S3 (`s3://bucket/prefix`) a backup is the same objects under the prefix, uploaded as
//! the parts arrive ([`write`] to [`Destination::S3`]: a multipart upload per group, a few
//! parts in flight, the manifest last; nothing is staged on local disk) and downloaded into a
//! directory ([`download`]) before it is read.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use trellis_proto::v1 as pb;
use trellis_proto::v1::admin_client::AdminClient;

/// The version of the directory layout this code writes and reads.
pub const FORMAT: u32 = 1;
/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";

/// A backup's description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: u32,
    /// When the backup finished (RFC 3339, UTC).
    pub created: String,
    /// The cluster's shard count; a restored cluster keeps it.
    pub shards: u32,
    /// Every shard group, then the meta group, in the order they were copied.
    pub groups: Vec<GroupCopy>,
}

impl Manifest {
    /// A manifest's text, checked: this format, every group once (the meta group among
    /// them), each in its own file. `name` says where it came from.
    fn parse(text: &[u8], name: &str) -> Result<Manifest, BackupError> {
        let bad = |what: String| Err(BackupError::Invalid(format!("{name}: {what}")));
        let m: Manifest = match serde_json::from_slice(text) {
            Ok(m) => m,
            Err(e) => return bad(e.to_string()),
        };
        if m.format != FORMAT {
            return bad(format!(
                "format {} (this trellis reads format {FORMAT})",
                m.format
            ));
        }
        let mut groups: Vec<u64> = m.groups.iter().map(|g| g.group).collect();
        groups.sort_unstable();
        groups.dedup();
        if groups.len() != m.groups.len()
            || groups.first() != Some(&0)
            || m.groups.len() != m.shards as usize + 1
        {
            return bad(format!("{} groups for {} shards", m.groups.len(), m.shards));
        }
        if let Some(g) = m.groups.iter().find(|g| g.file != group_file(g.group)) {
            return bad(format!("group {} names file {:?}", g.group, g.file));
        }
        Ok(m)
    }
}

/// One group's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupCopy {
    /// 0: the meta group; shard N: N + 1.
    pub group: u64,
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    /// The log id the snapshot matches.
    pub term: u64,
    pub leader_node: u64,
    pub index: u64,
}

/// What can go wrong writing or reading a backup directory.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Status(#[from] tonic::Status),
    #[error("{0}")]
    Invalid(String),
    #[error("S3: {0}")]
    S3(String),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A backup's place in S3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// Without a trailing slash; may be empty.
    pub prefix: String,
}

impl S3Location {
    /// `s3://bucket[/prefix]`; `None` for anything else (a directory).
    pub fn parse(s: &str) -> Option<Result<S3Location, BackupError>> {
        let rest = s.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Some(Err(BackupError::Invalid(format!(
                "{s}: no bucket (s3://bucket/prefix)"
            ))));
        }
        Some(Ok(S3Location {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        }))
    }

    fn key(&self, name: &str) -> object_store::path::Path {
        if self.prefix.is_empty() {
            object_store::path::Path::from(name)
        } else {
            object_store::path::Path::from(format!("{}/{name}", self.prefix))
        }
    }
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

fn s3(e: impl std::fmt::Display) -> BackupError {
    BackupError::S3(e.to_string())
}

/// Where [`write`] puts a backup.
pub enum Destination<'a> {
    /// A directory, absent or empty.
    Dir(&'a Path),
    /// S3, under a prefix that holds nothing yet (a backup never mixes with another).
    S3 {
        to: &'a S3Location,
        cfg: &'a crate::s3::S3Config,
    },
}

impl std::fmt::Display for Destination<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Dir(d) => write!(f, "{}", d.display()),
            Destination::S3 { to, .. } => write!(f, "{to}"),
        }
    }
}

/// A destination, opened: where each file of the backup is made.
enum Sink {
    Dir(PathBuf),
    S3 {
        store: object_store::aws::AmazonS3,
        to: S3Location,
        /// The objects made so far, deleted again if the backup fails.
        made: Vec<String>,
    },
}

/// One file of the backup being written.
enum Part {
    File {
        path: PathBuf,
        w: std::io::BufWriter<std::fs::File>,
    },
    Upload(Box<object_store::WriteMultipart>),
}

/// Most parts of a multipart upload buffered or in flight at once (`object_store`'s parts
/// are 5 MiB), so memory stays bounded whatever a group's size.
const PARTS_IN_FLIGHT: usize = 4;

impl Sink {
    async fn open(to: &Destination<'_>) -> Result<Sink, BackupError> {
        match to {
            Destination::Dir(dir) => {
                new_dir(dir, "back up")?;
                Ok(Sink::Dir(dir.to_path_buf()))
            }
            Destination::S3 { to, cfg } => {
                let store = cfg.store(&to.bucket).map_err(s3)?;
                check_empty(&store, to).await?;
                Ok(Sink::S3 {
                    store,
                    to: (*to).clone(),
                    made: Vec::new(),
                })
            }
        }
    }

    async fn create(&mut self, name: &str) -> Result<Part, BackupError> {
        use object_store::ObjectStore;
        match self {
            Sink::Dir(dir) => {
                let path = dir.join(name);
                let file = std::fs::File::create(&path).map_err(io(&path))?;
                Ok(Part::File {
                    path,
                    w: std::io::BufWriter::with_capacity(1 << 20, file),
                })
            }
            Sink::S3 { store, to, made } => {
                let upload = store.put_multipart(&to.key(name)).await.map_err(s3)?;
                made.push(name.to_string());
                Ok(Part::Upload(Box::new(object_store::WriteMultipart::new(
                    upload,
                ))))
            }
        }
    }

    /// A small file written whole: the manifest.
    async fn put(&mut self, name: &str, bytes: Vec<u8>) -> Result<(), BackupError> {
        let mut part = self.create(name).await?;
        part.write(&bytes).await?;
        part.finish().await
    }

    /// After a failure: the objects made in S3 are deleted (best effort; without the
    /// manifest they are no backup in any case). A directory keeps what was written, which
    /// a restore refuses without its manifest.
    async fn discard(self) {
        use object_store::ObjectStore;
        if let Sink::S3 { store, to, made } = self {
            for name in made {
                let _ = store.delete(&to.key(&name)).await;
            }
        }
    }
}

impl Part {
    async fn write(&mut self, data: &[u8]) -> Result<(), BackupError> {
        match self {
            Part::File { path, w } => w.write_all(data).map_err(io(path)),
            Part::Upload(w) => {
                w.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(s3)?;
                w.write(data);
                Ok(())
            }
        }
    }

    /// The file complete and durable (a directory's file synced; an upload completed).
    async fn finish(self) -> Result<(), BackupError> {
        match self {
            Part::File { path, w } => w
                .into_inner()
                .map_err(|e| io(&path)(e.into_error()))?
                .sync_all()
                .map_err(io(&path)),
            Part::Upload(w) => w.finish().await.map(drop).map_err(s3),
        }
    }

    async fn abort(self) {
        if let Part::Upload(w) = self {
            let _ = w.abort().await;
        }
    }
}

/// That nothing is under `to` yet: a backup never mixes with another.
async fn check_empty(
    store: &impl object_store::ObjectStore,
    to: &S3Location,
) -> Result<(), BackupError> {
    use futures::StreamExt;
    let prefix =
        (!to.prefix.is_empty()).then(|| object_store::path::Path::from(to.prefix.as_str()));
    match store.list(prefix.as_ref()).next().await {
        None => Ok(()),
        Some(first) => Err(BackupError::Invalid(format!(
            "{to} is not empty (it holds {}): back up under a new prefix",
            first.map_err(s3)?.location
        ))),
    }
}

/// Downloads the backup under `from` into `dir` (absent or empty) and checks it.
pub async fn download(
    from: &S3Location,
    cfg: &crate::s3::S3Config,
    dir: &Path,
) -> Result<Manifest, BackupError> {
    use futures::StreamExt;
    new_dir(dir, "download")?;
    let store = cfg.store(&from.bucket).map_err(s3)?;
    let text = get(&store, from, MANIFEST)
        .await?
        .bytes()
        .await
        .map_err(s3)?;
    let manifest = Manifest::parse(&text, &format!("{from}/{MANIFEST}"))?;
    for g in &manifest.groups {
        let path = dir.join(&g.file);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).map_err(io(&path))?);
        let mut body = get(&store, from, &g.file).await?.into_stream();
        while let Some(chunk) = body.next().await {
            f.write_all(&chunk.map_err(s3)?).map_err(io(&path))?;
        }
        f.flush().map_err(io(&path))?;
    }
    let path = dir.join(MANIFEST);
    std::fs::write(&path, &text).map_err(io(&path))?;
    read(dir)
}

async fn get(
    store: &impl object_store::ObjectStore,
    from: &S3Location,
    name: &str,
) -> Result<object_store::GetResult, BackupError> {
    store.get(&from.key(name)).await.map_err(|e| match e {
        object_store::Error::NotFound { .. } => {
            BackupError::Invalid(format!("{from}: no {name} (not a complete backup)"))
        }
        e => s3(e),
    })
}

/// Makes `dir`, which must be absent or empty, for what `doing` writes into it.
fn new_dir(dir: &Path, doing: &str) -> Result<(), BackupError> {
    if dir.exists() && std::fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
        return Err(BackupError::Invalid(format!(
            "{} is not empty: {doing} into a new directory",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))
}

/// The file a group's snapshot goes in.
pub fn group_file(group: u64) -> String {
    format!("group-{group}.snap")
}

struct Open {
    copy: GroupCopy,
    /// The size the node announced.
    size: u64,
    part: Part,
    sum: Sha256,
}

impl Open {
    async fn finish(mut self) -> Result<GroupCopy, BackupError> {
        if self.copy.bytes != self.size {
            self.part.abort().await;
            return Err(BackupError::Invalid(format!(
                "group {}: {} of {} bytes arrived",
                self.copy.group, self.copy.bytes, self.size
            )));
        }
        self.part.finish().await?;
        self.copy.sha256 = hex(&self.sum.finalize());
        Ok(self.copy)
    }
}

/// Takes a backup through `admin` into `to`, each part written as it arrives. `progress`
/// sees each part (group, bytes of the group so far, the group's size). Returns the manifest
/// it wrote last. If it fails, nothing is left in S3; a directory keeps the files written, but
/// no manifest.
pub async fn write(
    admin: &mut AdminClient<crate::Transport>,
    to: Destination<'_>,
    progress: impl FnMut(u64, u64, u64),
) -> Result<Manifest, BackupError> {
    let mut sink = Sink::open(&to).await?;
    let mut open = None;
    let written = copy(admin, &mut sink, &mut open, progress).await;
    if written.is_err() {
        if let Some(o) = open.take() {
            o.part.abort().await;
        }
        sink.discard().await;
    }
    written
}

async fn copy(
    admin: &mut AdminClient<crate::Transport>,
    sink: &mut Sink,
    open: &mut Option<Open>,
    mut progress: impl FnMut(u64, u64, u64),
) -> Result<Manifest, BackupError> {
    let mut stream = admin.backup(pb::BackupRequest {}).await?.into_inner();
    let mut groups: Vec<GroupCopy> = Vec::new();
    let mut shards = 0;
    while let Some(chunk) = stream.message().await? {
        shards = chunk.shards;
        if open.as_ref().is_none_or(|o| o.copy.group != chunk.group) {
            if let Some(o) = open.take() {
                groups.push(o.finish().await?);
            }
            if chunk.offset != 0 || groups.iter().any(|g| g.group == chunk.group) {
                return Err(BackupError::Invalid(format!(
                    "group {}: parts out of order (offset {})",
                    chunk.group, chunk.offset
                )));
            }
            let name = group_file(chunk.group);
            let part = sink.create(&name).await?;
            *open = Some(Open {
                copy: GroupCopy {
                    group: chunk.group,
                    file: name,
                    bytes: 0,
                    sha256: String::new(),
                    term: chunk.term,
                    leader_node: chunk.leader_node,
                    index: chunk.index,
                },
                size: chunk.size,
                part,
                sum: Sha256::new(),
            });
        }
        let o = open.as_mut().expect("opened above");
        if chunk.offset != o.copy.bytes {
            return Err(BackupError::Invalid(format!(
                "group {}: part at {} after {} bytes",
                chunk.group, chunk.offset, o.copy.bytes
            )));
        }
        o.part.write(&chunk.data).await?;
        o.sum.update(&chunk.data);
        o.copy.bytes += chunk.data.len() as u64;
        progress(chunk.group, o.copy.bytes, chunk.size);
    }
    if let Some(o) = open.take() {
        groups.push(o.finish().await?);
    }
    if !groups.iter().any(|g| g.group == 0) || groups.len() != shards as usize + 1 {
        return Err(BackupError::Invalid(format!(
            "the node sent {} of {} groups",
            groups.len(),
            shards + 1
        )));
    }
    let manifest = Manifest {
        format: FORMAT,
        created: now_rfc3339(),
        shards,
        groups,
    };
    let text =
        serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Invalid(e.to_string()))?;
    sink.put(MANIFEST, text).await?;
    Ok(manifest)
}

/// Reads `dir`'s manifest and checks every file against its size and sum.
pub fn read(dir: &Path) -> Result<Manifest, BackupError> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read(&path).map_err(io(&path))?;
    let m = Manifest::parse(&text, &path.display().to_string())?;
    for g in &m.groups {
        let file = dir.join(&g.file);
        let mut f = std::fs::File::open(&file).map_err(io(&file))?;
        let mut sum = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut bytes = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(io(&file))?;
            if n == 0 {
                break;
            }
            sum.update(&buf[..n]);
            bytes += n as u64;
        }
        if bytes != g.bytes || hex(&sum.finalize()) != g.sha256 {
            return Err(BackupError::Invalid(format!(
                "{}: does not match the manifest (damaged or changed)",
                file.display()
            )));
        }
    }
    Ok(m)
}

/// Now as RFC 3339 (UTC, seconds).
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backup directory of `shards` shards whose files hold `content`.
    fn fake(dir: &Path, shards: u32, content: &[u8]) -> Manifest {
        let groups = (1..=u64::from(shards))
            .chain([0])
            .map(|group| {
                std::fs::write(dir.join(group_file(group)), content).unwrap();
                GroupCopy {
                    group,
                    file: group_file(group),
                    bytes: content.len() as u64,
                    sha256: hex(&Sha256::digest(content)),
                    term: 2,
                    leader_node: 1,
                    index: 10 + group,
                }
            })
            .collect();
        let m = Manifest {
            format: FORMAT,
            created: now_rfc3339(),
            shards,
            groups,
        };
        std::fs::write(dir.join(MANIFEST), serde_json::to_vec(&m).unwrap()).unwrap();
        m
    }

    #[test]
    fn s3_locations() {
        let l = |s| S3Location::parse(s).map(|r| r.map_err(|e| e.to_string()));
        assert_eq!(l("./dir"), None);
        assert_eq!(
            l("s3://b/daily/2026-12-01/"),
            Some(Ok(S3Location {
                bucket: "b".into(),
                prefix: "daily/2026-12-01".into()
            }))
        );
        let root = S3Location::parse("s3://b").unwrap().unwrap();
        assert_eq!(root.prefix, "");
        assert_eq!(root.key(MANIFEST).as_ref(), "manifest.json");
        assert!(l("s3:///x").unwrap().unwrap_err().contains("no bucket"));
    }

    #[test]
    fn a_backup_reads_back_only_whole_and_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let m = fake(dir.path(), 2, b"snapshot bytes");
        assert_eq!(read(dir.path()).unwrap(), m);
        assert!(
            m.created.ends_with('Z') && m.created.len() == 20,
            "{}",
            m.created
        );

        // One byte changed in one file.
        std::fs::write(dir.path().join(group_file(1)), b"snapshot bytez").unwrap();
        let e = read(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("group-1.snap: does not match the manifest"),
            "{e}"
        );

        // A file missing.
        fake(dir.path(), 2, b"x");
        std::fs::remove_file(dir.path().join(group_file(0))).unwrap();
        let e = read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("group-0.snap"), "{e}");

        // A group missing from the manifest, or another format.
        let mut m = fake(dir.path(), 2, b"x");
        m.groups.pop();
        std::fs::write(dir.path().join(MANIFEST), serde_json::to_vec(&m).unwrap()).unwrap();
        let e = read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("2 groups for 2 shards"), "{e}");
        let mut m = fake(dir.path(), 2, b"x");
        m.format = 9;
        std::fs::write(dir.path().join(MANIFEST), serde_json::to_vec(&m).unwrap()).unwrap();
        let e = read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("format 9"), "{e}");

        // No manifest: no backup.
        let empty = tempfile::tempdir().unwrap();
        let e = read(empty.path()).unwrap_err().to_string();
        assert!(e.contains("manifest.json"), "{e}");
    }
}
