//! The `RaftTransport` gRPC service: Raft messages in, joins, pings and forwarded calls.

use std::sync::{Arc, Weak};

use tonic::{Request, Response, Status};
use trellis_proto::raft as rpb;
use trellis_proto::raft::raft_transport_server::{RaftTransport, RaftTransportServer};

use crate::cluster::transport::Transport;
use crate::node::Node;

/// Serves the transport for `node`. Raft messages need only the transport, so they flow
/// while the node is still joining.
#[derive(Clone)]
pub struct Service {
    transport: Arc<Transport>,
    node: Weak<Node>,
}

impl Service {
    /// The service, taking and sending messages of at most
    /// `cluster.peer_max_message_bytes`: a larger one is refused from its length prefix,
    /// before its body is read.
    pub fn new(node: &Arc<Node>) -> RaftTransportServer<Service> {
        let max = node.cfg.cluster.peer_max_message_bytes;
        RaftTransportServer::new(Service {
            transport: node.transport.clone(),
            node: Arc::downgrade(node),
        })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max)
    }

    fn node(&self) -> Result<Arc<Node>, Status> {
        self.node
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
        let node = self.node()?;
        Ok(Response::new(node.admit_node(r.into_inner()).await?))
    }

    async fn ping(&self, r: Request<rpb::PingRequest>) -> Result<Response<rpb::PingReply>, Status> {
        let node = self.node()?;
        if self.transport.is_blocked(r.get_ref().from) {
            return Err(Status::unavailable("partitioned (fault injection)"));
        }
        Ok(Response::new(rpb::PingReply { node_id: node.id() }))
    }

    async fn forward(
        &self,
        r: Request<rpb::ForwardRequest>,
    ) -> Result<Response<rpb::ForwardReply>, Status> {
        let node = self.node()?;
        let payload = node.serve_forward(r.into_inner()).await?;
        Ok(Response::new(rpb::ForwardReply {
            payload,
            meta_applied: node.meta_applied(),
        }))
    }
}
