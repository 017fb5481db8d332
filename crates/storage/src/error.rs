//! The storage crate's error.

/// What can go wrong below Raft.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("encoding: {0}")]
    Json(#[from] serde_json::Error),
    /// A snapshot file could not be written or read.
    #[error("snapshot file: {0}")]
    Io(#[from] std::io::Error),
    /// Stored bytes that cannot be what this crate wrote.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// An application state machine refused an entry or a snapshot.
    #[error("state machine: {0}")]
    App(String),
    /// Another process holds the data directory.
    #[error(
        "the data directory {} is in use by another process (a node already runs on it): stop that node or choose another data directory",
        dir.display()
    )]
    InUse { dir: std::path::PathBuf },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
