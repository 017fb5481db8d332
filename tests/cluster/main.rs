//! Cluster tests: real `trellis server` processes on 127.0.0.1 through `trellis-testkit`.
//!
//! Run with `cargo nextest run -p trellis-cluster-tests`. Each test starts its own
//! cluster in a temporary directory; node logs are printed when a test fails.

mod backup;
mod cap;
mod fanout;
mod five;
mod freeze;
mod kill;
mod leader_loss;
mod lifecycle;
mod names;
mod partition;
mod placement;
mod ports;
mod rolling;
mod tls;
mod workload;
