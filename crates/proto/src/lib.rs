//! `trellis-proto`: the gRPC API generated from `proto/trellis/v1/*.proto`, and the one table
//! that maps Trellis/AWS error codes to gRPC statuses and AWS JSON exceptions ([`error`]).

#![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]

pub mod error;

/// The public API (`trellis.v1`).
pub mod v1 {
    tonic::include_proto!("trellis.v1");
}

/// The internal Raft transport (`trellis.raft.v1`).
pub mod raft {
    tonic::include_proto!("trellis.raft.v1");
}

pub use error::{ApiError, Code};
