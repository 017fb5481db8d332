//! The `RaftTransport` gRPC service: Raft messages in, joins, pings and forwarded calls.

use std::sync::{Arc, Weak};

use tonic::{Request, Response, Status};
use trellis_proto::raft as rpb;
use trellis_proto::raft::raft_transport_server::{RaftTransport, RaftTransportServer};

use crate::transport::Transport;
use crate::Cluster;

/// Serves the peer services for a node's cluster. Raft messages need only the transport, so
/// they flow while the node is still joining.
#[derive(Clone)]
pub struct Service {
    transport: Arc<Transport>,
    cluster: Weak<Cluster>,
}

impl Service {
    /// The service, taking and sending messages of at most
    /// `cluster.peer_max_message_bytes`: a larger one is refused from its length prefix,
    /// before its body is read.
    pub fn new(cluster: &Arc<Cluster>) -> RaftTransportServer<Service> {
        let max = cluster.core().settings.cluster.peer_max_message_bytes;
        RaftTransportServer::new(Service {
            transport: cluster.core().transport.clone(),
            cluster: Arc::downgrade(cluster),
        })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max)
    }

    fn cluster(&self) -> Result<Arc<Cluster>, Status> {
        self.cluster
            .upgrade()
            .ok_or_else(|| Status::unavailable("the node is stopping"))
    }
}

#[tonic::async_trait]
impl RaftTransport for Service {
    async fn batch(
        &self,
        r: Request<rpb::RaftBatch>,
    ) -> Result<Response<rpb::RaftBatchReply>, Status> {
        self.transport
            .receive(r.into_inner())
            .await
            .map(Response::new)
            .map_err(Status::unavailable)
    }

    async fn snapshot(
        &self,
        r: Request<rpb::RaftBatch>,
    ) -> Result<Response<rpb::RaftBatchReply>, Status> {
        self.batch(r).await
    }

    async fn join(&self, r: Request<rpb::JoinRequest>) -> Result<Response<rpb::JoinReply>, Status> {
        let c = self.cluster()?;
        Ok(Response::new(
            c.membership().admit_node(r.into_inner()).await?,
        ))
    }

    async fn ping(&self, r: Request<rpb::PingRequest>) -> Result<Response<rpb::PingReply>, Status> {
        let c = self.cluster()?;
        if self.transport.is_blocked(r.get_ref().from) {
            return Err(Status::unavailable("partitioned (fault injection)"));
        }
        Ok(Response::new(rpb::PingReply { node_id: c.id() }))
    }

    async fn forward(
        &self,
        r: Request<rpb::ForwardRequest>,
    ) -> Result<Response<rpb::ForwardReply>, Status> {
        let c = self.cluster()?;
        let payload = c.router().serve_forward(r.into_inner()).await?;
        Ok(Response::new(rpb::ForwardReply {
            payload,
            meta_applied: c.meta().applied(),
        }))
    }
}
