//! `trellis restore`: a new cluster's first node, from a backup (`trellisctl backup`,
//! [`trellis_client::backup`]).
//!
//! Each group's copy becomes that group's state on this node as if a snapshot had been
//! installed: the log id the copy matches, an empty log, and this node as the only voter.
//! The meta group forgets the nodes of the cluster the copy came from and names this node
//! as every shard's only replica (a new epoch); the rest (state machines, versions, aliases,
//! activities, settings, the task-token key) is kept, so task tokens handed out before the
//! backup still answer. Started, the node leads every group; nodes that join get replicas
//! from the placement driver as in any cluster.

use std::io::BufReader;
use std::path::Path;

use anyhow::{bail, Context, Result};
use openraft::{BasicNode, CommittedLeaderId, LogId};
use trellis_client::backup::{self, GroupCopy};
use trellis_storage::{AppStateMachine, NodeDb};

use crate::config::Config;

/// What a restore wrote.
#[derive(Debug)]
pub struct Restored {
    pub shards: u32,
    pub bytes: u64,
}

/// Builds `cfg.node.data_dir` (absent or empty) from the backup in `from`: a directory, or
/// `s3://bucket/prefix`, downloaded into a directory beside the data directory first (and
/// removed after). On failure the data directory is left empty again.
pub fn restore(from: &str, cfg: &Config) -> Result<Restored> {
    let Some(s3) = backup::S3Location::parse(from) else {
        return restore_dir(Path::new(from), cfg);
    };
    let s3 = s3.map_err(|e| anyhow::anyhow!("{e}"))?;
    let data = &cfg.node.data_dir;
    let name = data
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    let dir = data.with_file_name(format!(".{name}.backup-{}", std::process::id()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt
        .block_on(backup::download(&s3, &cfg.aws.s3(), &dir))
        .map_err(|e| anyhow::anyhow!("{e}"))
        .and_then(|_| restore_dir(&dir, cfg));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn restore_dir(from: &Path, cfg: &Config) -> Result<Restored> {
    let manifest = backup::read(from).map_err(|e| anyhow::anyhow!("{e}"))?;
    let data = &cfg.node.data_dir;
    let peer = cfg.node.advertised().to_string();
    if peer.ends_with(":0") {
        bail!(
            "the restored node is a voter at its peer address, which must be fixed: give \
             --peer-addr (or --advertise-addr) with a port, not {peer}"
        );
    }
    if data.exists()
        && std::fs::read_dir(data)
            .with_context(|| format!("cannot read {}", data.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} is not empty: restore into a new data directory",
            data.display()
        );
    }
    std::fs::create_dir_all(data).with_context(|| format!("cannot create {}", data.display()))?;
    let written = write(from, &manifest, cfg);
    if written.is_err() {
        // Nothing half-restored stays behind to be started by mistake.
        if let Ok(entries) = std::fs::read_dir(data) {
            for e in entries.flatten() {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
    }
    written
}

fn write(from: &Path, manifest: &backup::Manifest, cfg: &Config) -> Result<Restored> {
    let data = &cfg.node.data_dir;
    let peer = cfg.node.advertised().to_string();
    let _lock = trellis_storage::lock_dir(data)?;
    let db = NodeDb::open_with_cache(data, cfg.node.cache_mib << 20)?;
    let node = cfg.node.id;
    let member = BasicNode::new(&peer);
    let mut bytes = 0;
    for g in &manifest.groups {
        let input = &mut BufReader::with_capacity(1 << 20, open(from, g)?);
        let trees = db.group(g.group)?;
        let last = LogId::new(CommittedLeaderId::new(g.term, g.leader_node), g.index);
        if g.group == 0 {
            let mut app = trellis_meta::MetaApp::open(&trees)?;
            app.import(input)?;
            app.rehome(node)?;
            seed::<trellis_meta::MetaConfig, _>(&trees, &app, last, node, &member)?;
        } else {
            let mut app = trellis_shard::ShardApp::open(&trees)?;
            app.import(input)?;
            seed::<trellis_shard::ShardConfig, _>(&trees, &app, last, node, &member)?;
        }
        bytes += g.bytes;
    }
    db.sled().flush()?;
    Ok(Restored {
        shards: manifest.shards,
        bytes,
    })
}

/// The group's Raft state on this node: `app`'s state as of `last`, `node` its only voter.
fn seed<C, A>(
    trees: &trellis_storage::GroupTrees,
    app: &A,
    last: LogId<u64>,
    node: u64,
    member: &BasicNode,
) -> Result<()>
where
    C: openraft::RaftTypeConfig<NodeId = u64, Node = BasicNode>,
    A: AppStateMachine<C>,
{
    trellis_storage::restore_group::<C, _>(trees, app, last, node, member.clone())?;
    Ok(())
}

fn open(dir: &Path, g: &GroupCopy) -> Result<std::fs::File> {
    let path = dir.join(&g.file);
    std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))
}
