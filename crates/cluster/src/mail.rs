//! The mail: delivers the shards' outbox messages ([`trellis_shard::outbox`]) to the
//! leaders of the shards they are for, through the router.

use std::collections::BTreeMap;
use std::sync::Arc;

use trellis_proto::raft as rpb;
use trellis_shard::executor::BoxFuture;
use trellis_shard::outbox::{Mailer, Message};

use crate::router::Router;
use crate::{from_shard, ApiResult, Core};

/// Sends messages to their shards' leaders; one part of the cluster.
pub struct Mail {
    core: Arc<Core>,
    router: Arc<Router>,
}

impl Mail {
    pub(crate) fn new(core: Arc<Core>, router: Arc<Router>) -> Mail {
        Mail { core, router }
    }

    /// Serves a delivery on the receiving shard's leader (this node).
    pub(crate) async fn deliver_here(&self, r: rpb::DeliverRequest) -> ApiResult<()> {
        let messages: Vec<Message> = serde_json::from_slice(&r.messages).map_err(|e| {
            trellis_proto::ApiError::new(
                trellis_proto::Code::ValidationException,
                format!("undecodable shard messages: {e}"),
            )
        })?;
        self.core
            .shards
            .leading(r.shard)?
            .deliver(messages)
            .await
            .map_err(from_shard)
    }
}

impl Mailer for Mail {
    /// Groups the messages by the shard of their target, keeping their order, and sends
    /// the groups concurrently; `Ok` once every group is applied.
    fn send(&self, messages: Vec<Message>) -> BoxFuture<'static, Result<(), String>> {
        let core = self.core.clone();
        let router = self.router.clone();
        Box::pin(async move {
            let mut groups: BTreeMap<u32, Vec<Message>> = BTreeMap::new();
            for m in messages {
                let shard = core.shards.shard_of(m.target()).map_err(|e| e.message)?;
                groups.entry(shard).or_default().push(m);
            }
            let sends = groups.into_iter().map(|(shard, group)| {
                let router = router.clone();
                async move {
                    let messages = serde_json::to_vec(&group).map_err(|e| e.to_string())?;
                    let r = rpb::DeliverRequest { shard, messages };
                    router
                        .on_shard(shard, r)
                        .await
                        .map(drop)
                        .map_err(|e| format!("shard {shard}: {}", e.message))
                }
            });
            let failed: Vec<String> = futures::future::join_all(sends)
                .await
                .into_iter()
                .filter_map(Result::err)
                .collect();
            if failed.is_empty() {
                Ok(())
            } else {
                Err(failed.join("; "))
            }
        })
    }
}
