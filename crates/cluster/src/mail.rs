//! The mail: delivers the shards' outbox messages ([`trellis_shard::outbox`]) to the
//! leaders of the shards they are for, through the router.
//!
//! A backup holds the mail on every node ([`Mail::hold`]): deliveries under way finish, no
//! other starts until it is released. While held, a message is either applied by its
//! receiver already (it is in the receiver's copy) or still in its sender's outbox (it is in
//! the sender's copy), so copies taken meanwhile lose no message; one in both is applied
//! once, as every receiver is idempotent.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedRwLockWriteGuard, RwLock};

use trellis_proto::raft as rpb;
use trellis_shard::executor::BoxFuture;
use trellis_shard::outbox::{Mailer, Message};

use crate::router::Router;
use crate::{from_shard, ApiResult, Core};

/// Sends messages to their shards' leaders; one part of the cluster.
pub struct Mail {
    core: Arc<Core>,
    router: Arc<Router>,
    /// Every delivery holds it shared; a hold takes it alone.
    gate: Arc<RwLock<()>>,
    /// The hold, with the number that names it (a later hold's expiry must not end it).
    held: std::sync::Mutex<Option<(u64, OwnedRwLockWriteGuard<()>)>>,
}

/// How long a hold waits for the deliveries under way to finish.
const HOLD_WAIT: Duration = Duration::from_secs(20);

impl Mail {
    pub(crate) fn new(core: Arc<Core>, router: Arc<Router>) -> Mail {
        Mail {
            core,
            router,
            gate: Arc::new(RwLock::new(())),
            held: std::sync::Mutex::new(None),
        }
    }

    /// Holds this node's deliveries (once those under way are done) until [`Mail::release`]
    /// or `ttl` passes, whichever comes first; a hold already in place is renewed.
    pub(crate) async fn hold(self: &Arc<Self>, ttl: Duration) -> ApiResult<()> {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let renewed = {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            match held.as_mut() {
                Some((s, _)) => {
                    *s = seq;
                    true
                }
                None => false,
            }
        };
        if !renewed {
            let guard = tokio::time::timeout(HOLD_WAIT, self.gate.clone().write_owned())
                .await
                .map_err(|_| {
                    trellis_proto::ApiError::new(
                        trellis_proto::Code::ServiceUnavailable,
                        format!(
                            "node {}: deliveries between shards did not finish within {HOLD_WAIT:?}",
                            self.core.id()
                        ),
                    )
                })?;
            *self.held.lock().unwrap_or_else(|p| p.into_inner()) = Some((seq, guard));
        }
        tracing::info!(
            node_id = self.core.id(),
            "messages between shards held for a backup"
        );
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(ttl).await;
            if let Some(mail) = this.upgrade() {
                mail.release_if(Some(seq));
            }
        });
        Ok(())
    }

    /// Ends the hold.
    pub(crate) fn release(&self) {
        self.release_if(None);
    }

    fn release_if(&self, seq: Option<u64>) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held
            .as_ref()
            .is_some_and(|(s, _)| seq.is_none_or(|q| q == *s))
        {
            *held = None;
            tracing::info!(
                node_id = self.core.id(),
                "messages between shards flow again"
            );
        }
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
        let gate = self.gate.clone();
        Box::pin(async move {
            let _delivering = gate.read_owned().await;
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
