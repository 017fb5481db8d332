//! `trellis-server`: the API surfaces of a Trellis node (the AWS JSON API, gRPC, serving) over
//! its cluster membership (`trellis-cluster`), the one connector set, and the local runner
//! (`trellis run`). The `trellis` binary (`src/main.rs`) is [`cli::main`]; tests start nodes
//! in-process through [`node::Node`] and [`serve::serve`].

pub mod auth;
pub mod aws;
pub mod cli;
pub mod config;
pub mod connectors;
pub mod grpc;
pub mod ids;
pub mod listen;
pub mod mock;
pub mod nested;
pub mod node;
pub mod registry;
pub mod restore;
pub mod run;
pub mod s3;
pub mod serve;
pub mod tls;
