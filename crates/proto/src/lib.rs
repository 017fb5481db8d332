//! `trellis-proto`: the gRPC API generated from `proto/trellis/v1/*.proto`, and the one table
//! that maps Trellis/AWS error codes to gRPC statuses and AWS JSON exceptions ([`error`]).

#![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]

pub mod error;

/// The generated code, in modules that follow the proto packages (so `trellis.raft.v1`
/// can name `trellis.v1` messages).
pub mod trellis {
    /// The public API (`trellis.v1`).
    pub mod v1 {
        tonic::include_proto!("trellis.v1");
    }

    pub mod raft {
        /// The internal transport between nodes (`trellis.raft.v1`).
        pub mod v1 {
            tonic::include_proto!("trellis.raft.v1");
        }
    }
}

pub use trellis::raft::v1 as raft;
pub use trellis::v1;

pub use error::{ApiError, Code};
