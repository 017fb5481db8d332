//! One in-process node for a fuzz run: a single-node cluster on a temporary data directory,
//! started on first use, with its runtime.

use std::sync::{Arc, OnceLock};

use trellis_server::config::Config;
use trellis_server::node::Node;

pub struct Running {
    pub rt: tokio::runtime::Runtime,
    pub node: Arc<Node>,
}

pub fn node() -> &'static Running {
    static NODE: OnceLock<Running> = OnceLock::new();
    NODE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = std::env::temp_dir().join(format!("trellis-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cfg = Config::default();
        cfg.node.data_dir = dir;
        cfg.cluster.shards = 4;
        cfg.node.grpc_addr = "127.0.0.1:0".into();
        cfg.node.http_addr = "127.0.0.1:0".into();
        cfg.node.peer_addr = "127.0.0.1:0".into();
        let node = rt.block_on(Node::start(cfg)).expect("node");
        Running { rt, node }
    })
}

/// Bounded: no call may take longer than this (a long poll or a stream is cut here).
pub const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
