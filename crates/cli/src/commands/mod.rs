//! One module per command group.

pub(crate) mod activities;
pub(crate) mod certs;
pub(crate) mod cluster;
pub(crate) mod executions;
pub(crate) mod lifecycle;
pub(crate) mod machines;
pub(crate) mod mapruns;
