//! Backups: a copy of the meta group and every shard, each as a snapshot its leader takes,
//! read in parts through the node that took the operator's call.
//!
//! * On the group's leader, [`Backups::export_here`] takes a snapshot (openraft builds it
//!   from the applied state, so it matches one log id), links the file into the node's
//!   backup directory under a new token and answers with its first part. Later parts are
//!   read from that copy on that node, whoever leads the group by then; the last part
//!   removes it, and copies older than [`STALE`] (an abandoned backup) go at the next one.
//! * On the node that took the call, [`Backups::run`] holds the mail on every node (see
//!   [`crate::mail`]), reads every shard and then the meta group, and releases the mail.
//!   Shards go first: a state machine made after its shard's copy has no execution in it
//!   either, and one made before is in the meta copy.
//!
//! `trellis restore` (`crates/server/src/restore.rs`) builds a new cluster from the copy.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::{Raft, RaftTypeConfig};
use tokio::sync::mpsc;
use trellis_proto::raft as rpb;
use trellis_proto::v1 as pb;
use trellis_proto::{ApiError, Code};

use crate::mail::Mail;
use crate::router::Router;
use crate::{internal, ApiResult, Core};

/// The most bytes of one part.
pub const PART_BYTES: usize = 1 << 20;
/// How long the mail stays held if the backup that held it stops answering.
const HOLD_TTL: Duration = Duration::from_secs(300);
/// How long a snapshot may take to build.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(50);
/// Copies older than this belong to a backup that was given up.
const STALE: Duration = Duration::from_secs(3600);

/// This node's side of backups; one part of the cluster.
pub struct Backups {
    core: Arc<Core>,
    router: Arc<Router>,
    mail: Arc<Mail>,
}

impl Backups {
    pub(crate) fn new(core: Arc<Core>, router: Arc<Router>, mail: Arc<Mail>) -> Backups {
        Backups { core, router, mail }
    }

    /// Holds or releases this node's mail (a forwarded [`rpb::MailHoldRequest`]).
    pub(crate) async fn hold_here(&self, r: rpb::MailHoldRequest) -> ApiResult<()> {
        if r.hold {
            self.mail
                .hold(Duration::from_millis(r.ttl_ms.clamp(1_000, 3_600_000)))
                .await
        } else {
            self.mail.release();
            Ok(())
        }
    }

    /// Serves one part of a group's snapshot (a forwarded [`rpb::ExportGroupRequest`]).
    pub(crate) async fn export_here(
        &self,
        r: rpb::ExportGroupRequest,
    ) -> ApiResult<rpb::ExportGroupReply> {
        let dir = self.core.db.backup_dir();
        if r.token.is_empty() {
            self.remove_stale(&dir);
            let (log_id, snapshot) = self.snapshot(r.group).await?;
            let token = format!(
                "g{}-{}-{:016x}",
                r.group,
                log_id.index,
                rand::random::<u64>()
            );
            std::fs::create_dir_all(&dir).map_err(internal)?;
            // A link: the copy outlives the next snapshot, which removes the group's file.
            std::fs::hard_link(&snapshot, dir.join(&token)).map_err(|e| {
                ApiError::new(
                    Code::ServiceUnavailable,
                    format!(
                        "group {}: the snapshot was replaced while being copied ({e}); retry",
                        r.group
                    ),
                )
            })?;
            let mut reply = self.read_part(&dir, &token, 0)?;
            reply.term = log_id.leader_id.term;
            reply.leader_node = log_id.leader_id.node_id;
            reply.index = log_id.index;
            Ok(reply)
        } else {
            self.read_part(&dir, &r.token, r.offset)
        }
    }

    fn read_part(
        &self,
        dir: &std::path::Path,
        token: &str,
        offset: u64,
    ) -> ApiResult<rpb::ExportGroupReply> {
        if token.contains(['/', '\\']) || token.starts_with('.') {
            return Err(ApiError::new(Code::ValidationException, "bad backup token"));
        }
        let path = dir.join(token);
        let mut f = std::fs::File::open(&path).map_err(|e| {
            ApiError::new(
                Code::ResourceNotFound,
                format!(
                    "node {}: no backup copy {token} ({e}); start the backup again",
                    self.core.id()
                ),
            )
        })?;
        let size = f.metadata().map_err(internal)?.len();
        f.seek(SeekFrom::Start(offset.min(size)))
            .map_err(internal)?;
        let mut data = Vec::with_capacity(PART_BYTES.min((size - offset.min(size)) as usize));
        f.take(PART_BYTES as u64)
            .read_to_end(&mut data)
            .map_err(internal)?;
        if offset + data.len() as u64 >= size {
            let _ = std::fs::remove_file(&path);
        }
        Ok(rpb::ExportGroupReply {
            token: token.to_string(),
            node_id: self.core.id(),
            size,
            data,
            ..Default::default()
        })
    }

    fn remove_stale(&self, dir: &std::path::Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE);
            if old {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// A snapshot of `group` taken now on this node, which must lead it: its log id and file.
    async fn snapshot(&self, group: u64) -> ApiResult<(openraft::LogId<u64>, PathBuf)> {
        let trees = self.core.db.group(group).map_err(internal)?;
        if group == 0 {
            if self.core.meta.leader() != Some(self.core.id()) {
                return Err(not_leader(group, self.core.meta.leader()));
            }
            snapshot_of(&self.core.meta.raft, group).await?;
            current::<trellis_meta::MetaConfig>(&trees, group)
        } else {
            let shard = (group - 1) as u32;
            let rep = self
                .core
                .shards
                .replica(shard)
                .ok_or_else(|| not_leader(group, None))?;
            let leader = rep.raft.metrics().borrow().current_leader;
            if leader != Some(self.core.id()) {
                return Err(not_leader(group, leader));
            }
            snapshot_of(&rep.raft, group).await?;
            current::<trellis_shard::request::ShardConfig>(&trees, group)
        }
    }

    /// Runs a backup from this node: every part of every shard, then of the meta group, in
    /// order into `tx`. Ends early if the receiver goes away.
    pub async fn run(&self, tx: mpsc::Sender<ApiResult<pb::BackupChunk>>) {
        if let Err(e) = self.run_inner(&tx).await {
            let _ = tx.send(Err(e)).await;
        }
    }

    async fn run_inner(&self, tx: &mpsc::Sender<ApiResult<pb::BackupChunk>>) -> ApiResult<()> {
        let shards = self.core.shards.count();
        if shards == 0 {
            return Err(ApiError::new(
                Code::ServiceUnavailable,
                "this node does not know the shard map yet; retry",
            ));
        }
        let nodes = self.hold_all().await;
        let result = async {
            let nodes = nodes?;
            tracing::info!(
                node_id = self.core.id(),
                nodes = nodes.len(),
                shards,
                "backup: mail held, copying"
            );
            for group in (1..=u64::from(shards)).chain([0]) {
                self.copy_group(group, shards, tx).await?;
            }
            Ok(())
        }
        .await;
        self.release_all().await;
        result
    }

    /// Holds the mail on every member. A member that does not answer a ping is left out (a
    /// node that is down leads nothing: its shards elect leaders on held nodes); one that
    /// answers but cannot be held fails the backup.
    async fn hold_all(&self) -> ApiResult<Vec<u64>> {
        let hold = rpb::MailHoldRequest {
            hold: true,
            ttl_ms: HOLD_TTL.as_millis() as u64,
        };
        self.hold_here(hold).await?;
        let mut held = vec![self.core.id()];
        for n in self.core.other_nodes() {
            match self.router.forward(n, hold).await {
                Ok(_) => held.push(n),
                Err(e) if !self.router.ping(n, Duration::from_secs(1)).await => {
                    tracing::warn!(node_id = self.core.id(), peer = n, error = %e.message,
                        "backup: a node is down; its mail is not held");
                }
                Err(e) => {
                    return Err(ApiError::new(
                        Code::ServiceUnavailable,
                        format!(
                            "node {n} could not hold its messages for the backup ({}); retry",
                            e.message
                        ),
                    ))
                }
            }
        }
        Ok(held)
    }

    async fn release_all(&self) {
        let release = rpb::MailHoldRequest {
            hold: false,
            ttl_ms: 0,
        };
        self.mail.release();
        for n in self.core.other_nodes() {
            if let Err(e) = self.router.forward(n, release).await {
                tracing::warn!(node_id = self.core.id(), peer = n, error = %e.message,
                    "backup: could not release a node's mail; it flows again when the hold ends");
            }
        }
    }

    async fn copy_group(
        &self,
        group: u64,
        shards: u32,
        tx: &mpsc::Sender<ApiResult<pb::BackupChunk>>,
    ) -> ApiResult<()> {
        let first = rpb::ExportGroupRequest {
            group,
            token: String::new(),
            offset: 0,
        };
        let mut head = if group == 0 {
            self.router.on_meta(first).await?
        } else {
            self.router.on_shard((group - 1) as u32, first).await?
        };
        let mut offset = 0u64;
        // The first part's data goes out as it is; `head` keeps the copy's identity.
        let mut part = rpb::ExportGroupReply {
            data: std::mem::take(&mut head.data),
            ..Default::default()
        };
        loop {
            let n = part.data.len() as u64;
            if n == 0 && offset < head.size {
                return Err(internal(format!(
                    "group {group}: the copy on node {} ended at {offset} of {} bytes",
                    head.node_id, head.size
                )));
            }
            let chunk = pb::BackupChunk {
                group,
                size: head.size,
                term: head.term,
                leader_node: head.leader_node,
                index: head.index,
                offset,
                data: part.data,
                shards,
            };
            if tx.send(Ok(chunk)).await.is_err() {
                return Err(ApiError::new(
                    Code::ValidationException,
                    "the backup was cancelled",
                ));
            }
            offset += n;
            if offset >= head.size {
                return Ok(());
            }
            let next = rpb::ExportGroupRequest {
                group,
                token: head.token.clone(),
                offset,
            };
            part = if head.node_id == self.core.id() {
                self.export_here(next).await?
            } else {
                self.router.forward(head.node_id, next).await?
            };
        }
    }
}

fn not_leader(group: u64, leader: Option<u64>) -> ApiError {
    let mut e = ApiError::new(
        Code::NotLeader,
        format!("this node does not lead group {group}"),
    );
    e.leader_hint = leader;
    e
}

/// Builds a snapshot of what `raft` has applied and waits until it is the current one. A
/// trigger while another snapshot is being built is ignored, so it is sent again while the
/// current one is older.
async fn snapshot_of<C>(raft: &Raft<C>, group: u64) -> ApiResult<()>
where
    C: RaftTypeConfig<NodeId = u64>,
{
    const ROUND: Duration = Duration::from_secs(5);
    let applied = raft.metrics().borrow().last_applied.map(|l| l.index);
    let deadline = tokio::time::Instant::now() + SNAPSHOT_WAIT;
    loop {
        raft.trigger()
            .snapshot()
            .await
            .map_err(|e| internal(format!("group {group}: snapshot: {e}")))?;
        let built = raft
            .wait(Some(ROUND))
            .metrics(
                |m| m.snapshot.map(|s| s.index) >= applied,
                "the snapshot covers what was applied",
            )
            .await;
        match built {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(ApiError::new(
                    Code::ServiceUnavailable,
                    format!("group {group}: the snapshot was not built in time: {e}"),
                ))
            }
            Err(_) => {}
        }
    }
}

fn current<C>(
    trees: &trellis_storage::GroupTrees,
    group: u64,
) -> ApiResult<(openraft::LogId<u64>, PathBuf)>
where
    C: RaftTypeConfig<NodeId = u64>,
{
    match trellis_storage::current_snapshot::<C>(trees).map_err(internal)? {
        Some((Some(log_id), path)) => Ok((log_id, path)),
        _ => Err(internal(format!(
            "group {group} has no snapshot after building one"
        ))),
    }
}
