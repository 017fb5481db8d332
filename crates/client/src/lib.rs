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
//! A node that authenticates wants a bearer token or a client certificate, and one that
//! serves TLS an `https://` endpoint: [`Client::connect_with`] and [`Options`].
//!
//! Failures are [`Error`]s; an API failure keeps the AWS exception name
//! ([`trellis_proto::ApiError`]). A call that reached a node that does not lead the group is
//! retried on the leader by the cluster's router; the client itself talks to one endpoint.

pub mod backup;
pub mod s3;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
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
    #[error("the token cannot be sent: {0}")]
    BadToken(String),
    #[error("TLS: {0}")]
    Tls(#[from] trellis_tls::Error),
    /// The call failed below the API: the connection, TLS or HTTP/2.
    #[error(
        "the connection failed before the node answered ({reason}); if the node serves TLS, \
         use an https:// endpoint (and --ca); if it asks for a client certificate, give \
         --cert and --key"
    )]
    Transport { reason: String },
    #[error("{0}")]
    Api(#[from] ApiError),
}

impl From<tonic::Status> for Error {
    /// An error the node answered (its `ErrorDetail`) is [`Error::Api`]; one without, where
    /// the call never reached a Trellis handler (a TLS or HTTP/2 failure), is
    /// [`Error::Transport`] with its innermost cause.
    fn from(s: tonic::Status) -> Self {
        let transport = matches!(
            s.code(),
            tonic::Code::Unknown
                | tonic::Code::Cancelled
                | tonic::Code::Unavailable
                | tonic::Code::Internal
        );
        if !s.details().is_empty() || !transport {
            return Error::Api(ApiError::from_status(&s));
        }
        let mut reason = s.message().to_string();
        let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(&s);
        while let Some(c) = cause {
            reason = c.to_string();
            cause = c.source();
        }
        Error::Transport { reason }
    }
}

/// How a client presents itself.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// A bearer token (`authorization: Bearer <token>` on every call).
    pub token: Option<String>,
    /// For `https://` endpoints: the CA to trust (PEM; default: the system's roots).
    pub ca: Option<std::path::PathBuf>,
    /// A client certificate and its key (PEM) to present, for nodes that ask for one.
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

/// Adds the bearer token, if any, to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            r.metadata_mut().insert("authorization", v.clone());
        }
        Ok(r)
    }
}

/// The connection every service client shares.
pub type Transport = InterceptedService<Channel, Bearer>;

/// Clients of every service on one connection.
#[derive(Clone)]
pub struct Client {
    pub state_machines: StateMachinesClient<Transport>,
    pub executions: ExecutionsClient<Transport>,
    pub activities: ActivitiesClient<Transport>,
    pub admin: AdminClient<Transport>,
}

impl Client {
    /// Connects to `endpoint` (`http://host:port`; a bare `host:port` is accepted).
    pub async fn connect(endpoint: &str) -> Result<Client, Error> {
        Client::connect_with(endpoint, &Options::default()).await
    }

    /// Connects to `endpoint` with `options`.
    pub async fn connect_with(endpoint: &str, options: &Options) -> Result<Client, Error> {
        let url = if endpoint.contains("://") {
            endpoint.to_string()
        } else {
            format!("http://{endpoint}")
        };
        let bearer = match &options.token {
            None => Bearer(None),
            Some(t) => {
                Bearer(Some(format!("Bearer {t}").parse().map_err(|_| {
                    Error::BadToken("it must be printable ASCII".into())
                })?))
            }
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
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(err)?
            .connect_timeout(std::time::Duration::from_secs(5));
        let identity = match (&options.cert, &options.key) {
            (Some(c), Some(k)) => Some(trellis_tls::Identity::from_files(c, k)?),
            (None, None) => None,
            _ => {
                return Err(Error::Connect {
                    endpoint: url.clone(),
                    reason: "a client certificate needs its key (and the key its certificate)"
                        .into(),
                })
            }
        };
        let channel = if url.starts_with("https://") {
            let cfg = trellis_tls::client_config(options.ca.as_deref(), identity)?;
            trellis_tls::channel(endpoint, cfg).await.map_err(err)?
        } else {
            if options.ca.is_some() || identity.is_some() {
                return Err(Error::Connect {
                    endpoint: url.clone(),
                    reason: "a CA or a client certificate needs an https:// endpoint".into(),
                });
            }
            endpoint.connect().await.map_err(err)?
        };
        let t = |c: &Channel| InterceptedService::new(c.clone(), bearer.clone());
        Ok(Client {
            state_machines: StateMachinesClient::new(t(&channel)),
            executions: ExecutionsClient::new(t(&channel)),
            activities: ActivitiesClient::new(t(&channel)),
            admin: AdminClient::new(t(&channel)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_answer_is_an_api_error_and_a_broken_connection_says_what_to_check() {
        let answered = ApiError::new(Code::AccessDeniedException, "no").to_status();
        assert!(
            matches!(Error::from(answered), Error::Api(e) if e.code == Code::AccessDeniedException)
        );
        let broken = tonic::Status::unknown("connection closed");
        let text = Error::from(broken).to_string();
        assert!(
            text.contains("connection closed") && text.contains("https://"),
            "{text}"
        );
        // A status of another code without details is still read as an API error.
        let other = tonic::Status::invalid_argument("bad");
        assert!(matches!(Error::from(other), Error::Api(_)));
    }
}
