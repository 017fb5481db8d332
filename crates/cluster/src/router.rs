//! Routing: any node accepts any request and runs it where it can be served.
//!
//! * Shard-bound calls (an execution, a task token) run on the shard's leader. The entry
//!   node guesses the leader (its own replica's view, then a cache, then the shard map's
//!   replicas), forwards the call with `Forward`, and follows `NotLeader` hints, with bounded
//!   retries while a shard elects a leader.
//! * Meta writes run on the meta leader. The reply carries the leader's applied meta index
//!   and the entry node waits for its own replica to reach it, so a client that writes
//!   through one node reads its write back through the same node.
//! * A forwarded call is a typed [`Call`] ([`crate::calls`]): each request type is one
//!   variant, has one reply type and one handler that serves it locally. The receiver runs
//!   that handler or answers `NotLeader`; it never forwards again, so a stale hint costs one
//!   more hop, never a loop.
//! * Every forwarded call has a deadline ([`crate::calls::deadline`]); a target that does
//!   not answer in time counts as unreachable, and the call goes to the next candidate.
//! * The peer directory is the meta group's node records (each node's peer address), with
//!   the meta group's Raft membership as a fallback while a record is not applied yet.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::join_all;
use prost::Message;
use trellis_meta::placement::{self, NodeRecord};
use trellis_meta::Table;
use trellis_proto::error::{ApiError, Code};
use trellis_proto::raft as rpb;
use trellis_proto::raft::forward_request::Call;
use trellis_proto::raft::raft_transport_client::RaftTransportClient;

use crate::calls::{dispatch, Forward};
use crate::retry::Backoff;
use crate::{ApiResult, Cluster, Core};

/// How a call is re-routed while a leader is elected: 60 attempts, pauses growing by 25 ms
/// to 200 ms (about 11 s in all), then `ServiceUnavailable`.
fn reroute() -> Backoff {
    Backoff::new(Duration::from_millis(25), Duration::from_millis(200), 60)
}

/// How long a node waits for its meta replica to catch up with a forwarded call's (or a
/// forwarded write's) meta index.
const META_CATCH_UP: Duration = Duration::from_secs(5);

/// Runs calls where they can be served.
pub struct Router {
    core: Arc<Core>,
    /// This node's cluster, to serve a call that lands here.
    local: Weak<Cluster>,
}

impl Router {
    pub(crate) fn new(core: Arc<Core>, local: Weak<Cluster>) -> Router {
        Router { core, local }
    }

    fn me(&self) -> u64 {
        self.core.id()
    }

    /// Serves a call on this node.
    async fn serve_here<Req: Forward>(&self, req: Req) -> ApiResult<Req::Reply> {
        let c = self
            .local
            .upgrade()
            .ok_or_else(|| ApiError::new(Code::ServiceUnavailable, "the node is stopping"))?;
        req.serve(&c).await
    }

    /// Runs a call on the node that leads `shard`: here, or forwarded.
    pub async fn on_shard<Req: Forward>(&self, shard: u32, req: Req) -> ApiResult<Req::Reply> {
        let me = self.me();
        let mut hint: Option<u64> = None;
        let mut last: Option<ApiError> = None;
        let mut failed: Vec<u64> = Vec::new();
        let mut retry = reroute();
        while retry.begin() {
            let attempt = retry.attempts() - 1;
            if failed.len() > 8 {
                // Everyone was tried: start over (leaders are being elected).
                failed.clear();
            }
            let target = hint
                .take()
                .or_else(|| self.leader_guess(shard, attempt, &failed));
            match target {
                None => {}
                Some(t) if t == me => match self.serve_here(req.clone()).await {
                    Err(e) if e.code == Code::NotLeader => {
                        hint = e.leader_hint.filter(|h| *h != me && !failed.contains(h));
                        failed.push(me);
                        last = Some(e);
                    }
                    // The executor restarting (a new term: an election, a transfer that fell
                    // back) or the shard full: as for a remote leader, again after a pause.
                    // Calls on a shard are idempotent (a start names its call).
                    Err(e) if e.code == Code::ServiceUnavailable => last = Some(e),
                    r => return r,
                },
                Some(t) => match self.forward(t, req.clone()).await {
                    Err(e) if e.code == Code::NotLeader => {
                        self.core.shards.forget_leader(shard, t);
                        failed.push(t);
                        hint = e.leader_hint.filter(|h| *h != t && !failed.contains(h));
                        last = Some(e);
                    }
                    Err(e) if e.code == Code::ServiceUnavailable => {
                        self.core.shards.forget_leader(shard, t);
                        failed.push(t);
                        last = Some(e);
                    }
                    Ok(r) => {
                        self.core.shards.remember_leader(shard, t);
                        return Ok(r);
                    }
                    Err(e) => return Err(e),
                },
            }
            if hint.is_none() {
                retry.pause().await;
            }
        }
        Err(ApiError::new(
            Code::ServiceUnavailable,
            format!(
                "shard {shard} has no reachable leader; retry ({})",
                last.map(|e| e.to_string()).unwrap_or_default()
            ),
        ))
    }

    /// Runs a meta write on the meta leader, then waits until this node has applied it.
    pub async fn on_meta<Req: Forward>(&self, req: Req) -> ApiResult<Req::Reply> {
        let me = self.me();
        let mut last: Option<ApiError> = None;
        let mut retry = reroute();
        while retry.begin() {
            match self.core.meta.leader() {
                None => {}
                Some(l) if l == me => match self.serve_here(req.clone()).await {
                    Err(e) if e.code == Code::NotLeader => last = Some(e),
                    r => return r,
                },
                Some(l) => match self.forward_raw(l, req.clone().into_call()).await {
                    Ok(reply) => {
                        self.catch_up_meta(reply.meta_applied).await;
                        return decode_reply::<Req>(&reply.payload);
                    }
                    Err(e) if matches!(e.code, Code::NotLeader | Code::ServiceUnavailable) => {
                        last = Some(e)
                    }
                    Err(e) => return Err(e),
                },
            }
            retry.pause().await;
        }
        Err(ApiError::new(
            Code::ServiceUnavailable,
            format!(
                "the meta group has no reachable leader; retry ({})",
                last.map(|e| e.to_string()).unwrap_or_default()
            ),
        ))
    }

    /// Waits until this node's meta replica has applied `index` (a forwarded write's), so
    /// the client reads its write back through this node. The write itself succeeded, so
    /// the reply goes out either way; a replica that cannot catch up in time is logged, and
    /// a later read that misses catches up with the leader first ([`Router::meta_read`]).
    async fn catch_up_meta(&self, index: u64) {
        if self.core.meta.wait_for(index, META_CATCH_UP).await.is_err() {
            tracing::warn!(
                node_id = self.me(),
                wanted = index,
                applied = self.core.meta.applied(),
                "this node's meta replica did not catch up with a forwarded write in time"
            );
        }
    }

    /// Sends a call to node `to` and decodes its reply.
    pub async fn forward<Req: Forward>(&self, to: u64, req: Req) -> ApiResult<Req::Reply> {
        let reply = self.forward_raw(to, req.into_call()).await?;
        decode_reply::<Req>(&reply.payload)
    }

    async fn forward_raw(&self, to: u64, call: Call) -> ApiResult<rpb::ForwardReply> {
        let mut client = self.peer_client(to)?;
        let deadline = crate::calls::deadline(&call);
        let call = client.forward(rpb::ForwardRequest {
            meta_index: self.core.meta.applied(),
            call: Some(call),
        });
        let Ok(answer) = tokio::time::timeout(deadline, call).await else {
            self.core.transport.forward_timeouts().inc();
            // No answer in time: as if it were unreachable, so the caller tries the next
            // candidate. The call may still take effect there (as with a lost reply):
            // shard calls are idempotent or answer for the state they find.
            return Err(ApiError::new(
                Code::ServiceUnavailable,
                format!("node {to} did not answer within {deadline:?}"),
            ));
        };
        match answer {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => {
                let e = ApiError::from_status(&s);
                if e.code == Code::InternalFailure && s.details().is_empty() {
                    // A transport failure, not an answer: try elsewhere.
                    return Err(ApiError::new(
                        Code::ServiceUnavailable,
                        format!("node {to} is unreachable: {}", s.message()),
                    ));
                }
                Err(e)
            }
        }
    }

    /// Serves a call another node forwarded here, with the handler its variant names.
    pub async fn serve_forward(&self, r: rpb::ForwardRequest) -> ApiResult<Vec<u8>> {
        // Reads on this node must see what the caller's node had applied.
        if r.meta_index > self.core.meta.applied()
            && self
                .core
                .meta
                .wait_for(r.meta_index, META_CATCH_UP)
                .await
                .is_err()
        {
            return Err(ApiError::new(
                Code::ServiceUnavailable,
                format!(
                    "node {} has not applied meta index {} yet; retry",
                    self.me(),
                    r.meta_index
                ),
            ));
        }
        let call = r.call.ok_or_else(|| {
            ApiError::new(
                Code::UnknownOperationException,
                "a forwarded call without a request (a peer of another version?)",
            )
        })?;
        let c = self
            .local
            .upgrade()
            .ok_or_else(|| ApiError::new(Code::ServiceUnavailable, "the node is stopping"))?;
        dispatch(&c, call).await
    }

    /// Runs a call on node `node`: here, or forwarded.
    pub async fn call<Req: Forward>(&self, node: u64, req: Req) -> ApiResult<Req::Reply> {
        if node == self.me() {
            self.serve_here(req).await
        } else {
            self.forward(node, req).await
        }
    }

    /// Runs a call on every member (this node included), each bounded by `limit` when
    /// given; the answers in member order, this node's first.
    pub async fn fan_out<Req: Forward>(
        &self,
        req: Req,
        limit: Option<Duration>,
    ) -> Vec<(u64, ApiResult<Req::Reply>)> {
        let mut nodes = vec![self.me()];
        nodes.extend(self.core.other_nodes());
        let calls = nodes.iter().map(|n| {
            let req = req.clone();
            async move {
                let call = self.call(*n, req);
                match limit {
                    None => call.await,
                    Some(l) => tokio::time::timeout(l, call).await.unwrap_or_else(|_| {
                        Err(ApiError::new(
                            Code::ServiceUnavailable,
                            format!("node {n} did not answer in {l:?}"),
                        ))
                    }),
                }
            }
        });
        nodes.iter().copied().zip(join_all(calls).await).collect()
    }

    /// A read of meta records that, when it finds nothing, first catches this node's meta
    /// replica up with the meta leader and reads again: a client that created something
    /// through one node finds it through any other.
    pub async fn meta_read<T>(&self, read: impl Fn() -> ApiResult<T>) -> ApiResult<T> {
        match read() {
            Err(e)
                if matches!(
                    e.code,
                    Code::StateMachineDoesNotExist
                        | Code::ActivityDoesNotExist
                        | Code::ResourceNotFound
                ) =>
            {
                if self.on_meta(rpb::MetaIndexRequest {}).await.is_err() {
                    return Err(e);
                }
                read()
            }
            r => r,
        }
    }

    /// The node to try first for `shard`.
    ///
    /// In order: this node when it runs the shard's executor, the leader its replica knows,
    /// the cache, then the shard map's replicas in turn; nodes in `failed` (tried by this
    /// call already) are skipped, so a stale view cannot hold a call on a dead node.
    fn leader_guess(&self, shard: u32, attempt: u32, failed: &[u64]) -> Option<u64> {
        let ok = |n: &u64| !failed.contains(n);
        let shards = &self.core.shards;
        if let Some(r) = shards.replica(shard) {
            if r.handle().is_some() {
                return Some(self.me());
            }
            if let Some(l) = r.raft.metrics().borrow().current_leader.filter(ok) {
                return Some(l);
            }
        }
        if let Some(l) = shards.cached_leader(shard).filter(ok) {
            return Some(l);
        }
        let map = self.core.meta.shard_map().ok()?;
        let s = map.iter().find(|s| s.id == shard)?;
        let untried: Vec<u64> = s.replicas.iter().copied().filter(ok).collect();
        let pool = if untried.is_empty() {
            &s.replicas
        } else {
            &untried
        };
        (!pool.is_empty()).then(|| pool[attempt as usize % pool.len()])
    }

    /// A client for the peer services of another node: its peer address from the meta
    /// group's node record, or from the meta group's membership.
    pub fn peer_client(
        &self,
        node: u64,
    ) -> ApiResult<RaftTransportClient<tonic::transport::Channel>> {
        let meta = &self.core.meta;
        let addr = meta
            .app
            .get(Table::Nodes, &placement::node_key(node))
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_value::<NodeRecord>(v).ok())
            .map(|n| n.peer().to_string())
            .or_else(|| {
                let m = meta.raft.metrics().borrow().clone();
                m.membership_config
                    .membership()
                    .get_node(&node)
                    .map(|n| n.addr.clone())
            })
            .ok_or_else(|| {
                ApiError::new(
                    Code::ServiceUnavailable,
                    format!("node {node} is not known here"),
                )
            })?;
        self.core
            .transport
            .api_client(node, &addr)
            .map_err(|e| ApiError::new(Code::ServiceUnavailable, e))
    }

    /// Whether node `node` answers a ping within `limit` (this node always does).
    pub async fn ping(&self, node: u64, limit: Duration) -> bool {
        if node == self.me() {
            return true;
        }
        let Ok(mut c) = self.peer_client(node) else {
            return false;
        };
        let ping = c.ping(rpb::PingRequest { from: self.me() });
        matches!(tokio::time::timeout(limit, ping).await, Ok(Ok(_)))
    }
}

fn decode_reply<Req: Forward>(payload: &[u8]) -> ApiResult<Req::Reply> {
    Req::Reply::decode(payload)
        .map_err(|e| ApiError::new(Code::InternalFailure, format!("bad forwarded reply: {e}")))
}
