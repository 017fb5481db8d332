//! `trellis-server`: the Trellis node (meta group, shards, the AWS JSON API and gRPC front
//! ends) and the local runner. The `trellis` binary (`src/main.rs`) is a thin CLI over it;
//! tests start nodes in-process through [`node::Node`] and [`serve::serve`].

pub mod aws;
pub mod config;
pub mod connectors;
pub mod grpc;
pub mod ids;
pub mod listen;
pub mod mock;
pub mod nested;
pub mod node;
pub mod registry;
pub mod run;
pub mod runner;
pub mod serve;
