//! `trellis-client`: a gRPC client for a Trellis node.
//!
//! ```no_run
//! # async fn f() -> Result<(), trellis_client::Error> {
//! let mut c = trellis_client::Client::connect("http://127.0.0.1:7300").await?;
//! let machines = c
//!     .state_machines
//!     .list_state_machines(trellis_client::v1::ListStateMachinesRequest::default())
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Failures are [`Error`]s; an API failure keeps the AWS exception name
//! ([`trellis_proto::ApiError`]). A call that reached a node that does not lead the group is
//! retried on the leader by the cluster's router; the client itself talks to one endpoint.

use tonic::transport::{Channel, Endpoint};
use trellis_proto::v1::activities_client::ActivitiesClient;
use trellis_proto::v1::admin_client::AdminClient;
use trellis_proto::v1::executions_client::ExecutionsClient;
use trellis_proto::v1::state_machines_client::StateMachinesClient;
pub use trellis_proto::{v1, ApiError, Code};

/// What a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error("{0}")]
    Api(#[from] ApiError),
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        Error::Api(ApiError::from_status(&s))
    }
}

/// Clients of every service on one connection.
#[derive(Clone)]
pub struct Client {
    pub state_machines: StateMachinesClient<Channel>,
    pub executions: ExecutionsClient<Channel>,
    pub activities: ActivitiesClient<Channel>,
    pub admin: AdminClient<Channel>,
}

impl Client {
    /// Connects to `endpoint` (`http://host:port`; a bare `host:port` is accepted).
    pub async fn connect(endpoint: &str) -> Result<Client, Error> {
        let url = if endpoint.contains("://") {
            endpoint.to_string()
        } else {
            format!("http://{endpoint}")
        };
        let err = |e: tonic::transport::Error| {
            // The innermost cause is the readable one ("Connection refused").
            let mut cause: &dyn std::error::Error = &e;
            while let Some(next) = cause.source() {
                cause = next;
            }
            Error::Connect {
                endpoint: url.clone(),
                reason: cause.to_string(),
            }
        };
        let channel = Endpoint::from_shared(url.clone())
            .map_err(err)?
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect()
            .await
            .map_err(err)?;
        Ok(Client {
            state_machines: StateMachinesClient::new(channel.clone()),
            executions: ExecutionsClient::new(channel.clone()),
            activities: ActivitiesClient::new(channel.clone()),
            admin: AdminClient::new(channel),
        })
    }
}
