//! The Raft network of a node without peers.

use std::marker::PhantomData;

use openraft::error::{
    InstallSnapshotError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftTypeConfig, Snapshot, Vote};

/// The transport of a single-node cluster: a group whose only voter is this node never
/// sends an RPC, and if it ever tries, the peer is reported unreachable. Multi-node
/// clusters use the gRPC transport instead.
pub struct NoPeers<C>(PhantomData<C>);

impl<C> Default for NoPeers<C> {
    fn default() -> Self {
        NoPeers(PhantomData)
    }
}

fn unreachable() -> Unreachable {
    Unreachable::new(&std::io::Error::other("this node has no peers"))
}

impl<C: RaftTypeConfig> RaftNetworkFactory<C> for NoPeers<C> {
    type Network = NoPeers<C>;

    async fn new_client(&mut self, _target: C::NodeId, _node: &C::Node) -> Self::Network {
        NoPeers::default()
    }
}

impl<C: RaftTypeConfig> RaftNetwork<C> for NoPeers<C> {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<C>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<C::NodeId>, RPCError<C::NodeId, C::Node, RaftError<C::NodeId>>>
    {
        Err(RPCError::Unreachable(unreachable()))
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<C>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<C::NodeId>,
        RPCError<C::NodeId, C::Node, RaftError<C::NodeId, InstallSnapshotError>>,
    > {
        Err(RPCError::Unreachable(unreachable()))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<C::NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<C::NodeId>, RPCError<C::NodeId, C::Node, RaftError<C::NodeId>>> {
        Err(RPCError::Unreachable(unreachable()))
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote<C::NodeId>,
        _snapshot: Snapshot<C>,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<C::NodeId>, StreamingError<C, openraft::error::Fatal<C::NodeId>>>
    {
        Err(StreamingError::Unreachable(unreachable()))
    }
}
