//! The API operations as clients call them, on any node: each runs where it can be served
//! (see [`super::route`]); the `*_here` methods in `node.rs` do the work there.

use std::time::Duration;

use trellis_meta::records::MachineType;
use trellis_proto::error::{ApiError, Code};
use trellis_proto::raft as rpb;
use trellis_proto::v1 as pb;
use trellis_shard::record::parse_token;

use crate::node::{ApiResult, Node};
use futures::future::join_all;

impl Node {
    // ------------------------------------------------------------ meta writes

    pub async fn create_state_machine(
        &self,
        r: pb::CreateStateMachineRequest,
    ) -> ApiResult<pb::CreateStateMachineResponse> {
        self.on_meta(r).await
    }

    pub async fn update_state_machine(
        &self,
        r: pb::UpdateStateMachineRequest,
    ) -> ApiResult<pb::UpdateStateMachineResponse> {
        self.on_meta(r).await
    }

    pub async fn delete_state_machine(&self, arn: &str) -> ApiResult<()> {
        let r = pb::DeleteStateMachineRequest {
            state_machine_arn: arn.to_string(),
        };
        self.on_meta(r).await.map(drop)
    }

    pub async fn publish_version(
        &self,
        r: pb::PublishVersionRequest,
    ) -> ApiResult<pb::PublishVersionResponse> {
        self.on_meta(r).await
    }

    pub async fn delete_version(&self, arn: &str) -> ApiResult<()> {
        let r = pb::DeleteVersionRequest {
            state_machine_version_arn: arn.to_string(),
        };
        self.on_meta(r).await.map(drop)
    }

    pub async fn create_alias(
        &self,
        r: pb::CreateAliasRequest,
    ) -> ApiResult<pb::CreateAliasResponse> {
        self.on_meta(r).await
    }

    pub async fn update_alias(
        &self,
        r: pb::UpdateAliasRequest,
    ) -> ApiResult<pb::UpdateAliasResponse> {
        self.on_meta(r).await
    }

    pub async fn delete_alias(&self, arn: &str) -> ApiResult<()> {
        let r = pb::DeleteAliasRequest {
            state_machine_alias_arn: arn.to_string(),
        };
        self.on_meta(r).await.map(drop)
    }

    pub async fn create_activity(&self, name: &str) -> ApiResult<pb::CreateActivityResponse> {
        let r = pb::CreateActivityRequest {
            name: name.to_string(),
        };
        self.on_meta(r).await
    }

    pub async fn delete_activity(&self, arn: &str) -> ApiResult<()> {
        let r = pb::DeleteActivityRequest {
            activity_arn: arn.to_string(),
        };
        self.on_meta(r).await.map(drop)
    }

    // ------------------------------------------------------------ executions

    /// StartExecution: resolved here, once (an alias rolls once), then started on the
    /// shard's leader. Express executions run here, in memory.
    pub async fn start_execution(
        &self,
        r: pb::StartExecutionRequest,
    ) -> ApiResult<pb::StartExecutionResponse> {
        let resolved = self
            .meta_read(|| self.resolve(&r.state_machine_arn))
            .await?;
        if resolved.machine.kind == MachineType::Express {
            return self.start_express(r, resolved).await;
        }
        // The name decides the shard, so it is chosen here, once.
        let start = self.start_request(r, resolved)?;
        let shard = self.shard_id(&self.execution_arn(&start.state_machine_name, &start.name))?;
        self.on_shard(shard, start).await
    }

    /// A read of meta records that, when it finds nothing, first catches this node's meta
    /// replica up with the meta leader and reads again: a client that created something
    /// through one node finds it through any other.
    pub(crate) async fn meta_read<T>(&self, read: impl Fn() -> ApiResult<T>) -> ApiResult<T> {
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

    /// The shard of an execution ARN, after checking the ARN.
    fn execution_shard(&self, arn: &str) -> ApiResult<u32> {
        self.check_execution_arn(arn)?;
        self.shard_id(arn)
    }

    pub async fn describe_execution(&self, arn: &str) -> ApiResult<pb::Execution> {
        let shard = self.execution_shard(arn)?;
        let r = pb::DescribeExecutionRequest {
            execution_arn: arn.to_string(),
        };
        self.on_shard(shard, r).await
    }

    pub async fn stop_execution(
        &self,
        r: pb::StopExecutionRequest,
    ) -> ApiResult<pb::StopExecutionResponse> {
        let shard = self.execution_shard(&r.execution_arn)?;
        self.on_shard(shard, r).await
    }

    pub async fn redrive_execution(&self, arn: &str) -> ApiResult<pb::RedriveExecutionResponse> {
        let shard = self.execution_shard(arn)?;
        let r = pb::RedriveExecutionRequest {
            execution_arn: arn.to_string(),
            client_token: String::new(),
        };
        self.on_shard(shard, r).await
    }

    pub async fn pause_execution(&self, arn: &str, pause: bool) -> ApiResult<()> {
        let shard = self.execution_shard(arn)?;
        let execution_arn = arn.to_string();
        if pause {
            let r = pb::PauseExecutionRequest { execution_arn };
            self.on_shard(shard, r).await.map(drop)
        } else {
            let r = pb::ResumeExecutionRequest { execution_arn };
            self.on_shard(shard, r).await.map(drop)
        }
    }

    pub async fn get_execution_history(
        &self,
        r: pb::GetExecutionHistoryRequest,
    ) -> ApiResult<pb::GetExecutionHistoryResponse> {
        let shard = self.execution_shard(&r.execution_arn)?;
        self.on_shard(shard, r).await
    }

    // ------------------------------------------------------------ task tokens

    fn token_shard(&self, token: &str) -> ApiResult<u32> {
        let bad = || ApiError::new(Code::InvalidToken, format!("Invalid Token: '{token}'"));
        if token.is_empty() || token.len() > 2048 {
            return Err(bad());
        }
        let (shard, _, _) = parse_token(token).ok_or_else(bad)?;
        if shard >= self.shard_count() {
            return Err(bad());
        }
        Ok(shard)
    }

    pub async fn send_task_success(&self, token: &str, output: &str) -> ApiResult<()> {
        let shard = self.token_shard(token)?;
        let r = pb::SendTaskSuccessRequest {
            task_token: token.to_string(),
            output: output.to_string(),
        };
        self.on_shard(shard, r).await.map(drop)
    }

    pub async fn send_task_failure(&self, token: &str, error: &str, cause: &str) -> ApiResult<()> {
        let shard = self.token_shard(token)?;
        let r = pb::SendTaskFailureRequest {
            task_token: token.to_string(),
            error: error.to_string(),
            cause: cause.to_string(),
        };
        self.on_shard(shard, r).await.map(drop)
    }

    pub async fn send_task_heartbeat(&self, token: &str) -> ApiResult<()> {
        let shard = self.token_shard(token)?;
        let r = pb::SendTaskHeartbeatRequest {
            task_token: token.to_string(),
        };
        self.on_shard(shard, r).await.map(drop)
    }

    // ------------------------------------------------------------ operators

    /// The detector's findings on every shard, from every node.
    pub async fn doctor(&self) -> ApiResult<pb::DoctorReport> {
        let mut out = self.doctor_here().await?;
        let fan = self
            .other_nodes()
            .into_iter()
            .map(|n| self.forward(n, rpb::DoctorRequest {}));
        for r in join_all(fan).await {
            let r = r?;
            out.scanned_executions += r.scanned_executions;
            out.findings.extend(r.findings);
        }
        Ok(out)
    }

    /// Every shard: the map's replica set and epoch, with its leader's view.
    pub async fn list_shards(&self) -> ApiResult<pb::ListShardsResponse> {
        self.shard_views(true).await
    }

    /// [`Node::list_shards`]; without `count_live` the leaders do not count their live
    /// executions (the placement driver asks every second and needs only the leaders).
    pub(crate) async fn shard_views(&self, count_live: bool) -> ApiResult<pb::ListShardsResponse> {
        let map = self.meta.shard_map().map_err(crate::node::from_meta)?;
        let mut reports = vec![(self.id(), self.local_shards(count_live))];
        let others = self.other_nodes();
        let fan = others.iter().map(|n| async move {
            tokio::time::timeout(
                Duration::from_secs(2),
                self.forward(*n, rpb::LocalShardsRequest { count_live }),
            )
            .await
        });
        for (n, r) in others.iter().zip(join_all(fan).await) {
            if let Ok(Ok(r)) = r {
                reports.push((*n, r));
            }
        }
        let shards = map
            .into_iter()
            .map(|s| {
                // The leader's report of itself, if it answered.
                let lead = reports
                    .iter()
                    .flat_map(|(n, r)| r.shards.iter().filter(move |x| x.leader == *n))
                    .filter(|x| x.id == s.id)
                    .max_by_key(|x| x.term)
                    .cloned();
                let mut out = lead.unwrap_or(pb::Shard {
                    id: s.id,
                    ..Default::default()
                });
                out.replicas = s.replicas;
                out.epoch = s.epoch;
                out
            })
            .collect();
        Ok(pb::ListShardsResponse { shards })
    }

    /// The members with their state (DOWN when they do not answer a ping) and shard counts.
    pub async fn list_nodes(&self) -> ApiResult<Vec<pb::Node>> {
        let nodes = self.meta.nodes().map_err(crate::node::from_meta)?;
        let shards = self.list_shards().await?.shards;
        let voters: Vec<u64> = {
            let m = self.meta.raft.metrics().borrow().clone();
            m.membership_config.membership().voter_ids().collect()
        };
        let pings = nodes.iter().map(|n| async move {
            if n.id == self.id() {
                return true;
            }
            let Ok(mut c) = self.peer_client(n.id) else {
                return false;
            };
            let ping = c.ping(trellis_proto::raft::PingRequest { from: self.id() });
            matches!(
                tokio::time::timeout(Duration::from_secs(1), ping).await,
                Ok(Ok(_))
            )
        });
        let alive = join_all(pings).await;
        Ok(nodes
            .into_iter()
            .zip(alive)
            .map(|(n, alive)| pb::Node {
                id: n.id,
                grpc_addr: n.grpc_addr,
                http_addr: n.http_addr,
                state: if n.state == trellis_meta::placement::NodeState::Up && !alive {
                    "DOWN".into()
                } else {
                    n.state.as_str().into()
                },
                leader_shards: shards.iter().filter(|s| s.leader == n.id).count() as u32,
                replica_shards: shards.iter().filter(|s| s.replicas.contains(&n.id)).count() as u32,
                zone: n.zone,
                meta_voter: voters.contains(&n.id),
            })
            .collect())
    }

    /// Health: leaderless and under-replicated shards.
    pub async fn cluster_status(&self) -> ApiResult<pb::ClusterStatusResponse> {
        let nodes = self.list_nodes().await?;
        let shards = self.list_shards().await?.shards;
        let live: Vec<u64> = nodes
            .iter()
            .filter(|n| n.state == "UP" || n.state == "DRAINING")
            .map(|n| n.id)
            .collect();
        // The replicas a shard should have: a down member still counts (its replicas are
        // missing until it returns or is replaced).
        let members = nodes.iter().filter(|n| n.state != "REMOVED").count();
        let rf = (self.cfg.cluster.replication_factor as usize).min(members.max(1));
        let leaderless: Vec<u32> = shards
            .iter()
            .filter(|s| s.leader == 0)
            .map(|s| s.id)
            .collect();
        let under: Vec<u32> = shards
            .iter()
            .filter(|s| s.replicas.iter().filter(|r| live.contains(r)).count() < rf)
            .map(|s| s.id)
            .collect();
        let health = if !leaderless.is_empty() {
            "UNAVAILABLE"
        } else if !under.is_empty() {
            "DEGRADED"
        } else {
            "HEALTHY"
        };
        Ok(pb::ClusterStatusResponse {
            node_id: self.id(),
            meta_leader: self.meta.leader().unwrap_or(0),
            shard_count: self.shard_count(),
            meta_voters: nodes
                .iter()
                .filter(|n| n.meta_voter)
                .map(|n| n.id)
                .collect(),
            nodes,
            under_replicated: under,
            leaderless,
            health: health.into(),
            replication_factor: self.cfg.cluster.replication_factor,
            placement_paused: self.placement_paused(),
            moving: self
                .meta
                .shard_map()
                .unwrap_or_default()
                .iter()
                .filter(|s| !s.learners.is_empty())
                .map(|s| s.id)
                .collect(),
        })
    }

    /// Fault injection: cuts this node off from `nodes` (both directions); empty heals.
    pub fn partition(&self, nodes: Vec<u64>) -> ApiResult<()> {
        if !self.cfg.cluster.fault_injection {
            return Err(ApiError::new(
                Code::ValidationException,
                "fault injection is off on this node (cluster.fault_injection)",
            ));
        }
        tracing::warn!(node_id = self.id(), blocked = ?nodes, "fault injection: partition");
        self.transport.block(nodes);
        Ok(())
    }
}

// ------------------------------------------------------------ placement (meta leader)

impl Node {
    pub async fn drain_node(&self, id: u64) -> ApiResult<()> {
        let r = rpb::SetNodeStateRequest {
            node_id: id,
            state: rpb::NodeStateChange::Draining as i32,
        };
        self.on_meta(r).await.map(drop)
    }

    pub async fn remove_node(&self, id: u64) -> ApiResult<()> {
        let r = rpb::SetNodeStateRequest {
            node_id: id,
            state: rpb::NodeStateChange::Removed as i32,
        };
        self.on_meta(r).await.map(drop)
    }

    pub async fn set_placement(&self, paused: bool) -> ApiResult<()> {
        self.on_meta(pb::SetPlacementRequest { paused })
            .await
            .map(drop)
    }

    pub async fn rebalance(&self) -> ApiResult<pb::RebalanceResponse> {
        self.on_meta(rpb::RebalanceRequest {}).await
    }

    /// Runs one operator-requested step on the meta leader and waits for it.
    async fn operator_step(&self, step: trellis_meta::placement::Step) -> ApiResult<()> {
        let shard = step.shard();
        if !self.moving().insert(shard) {
            return Err(ApiError::new(
                Code::ConflictException,
                format!("shard {shard} is already changing; retry when it is done"),
            ));
        }
        let r = self.run_step(&step).await;
        self.moving().remove(&shard);
        r
    }

    pub async fn move_shard(&self, r: pb::MoveShardRequest) -> ApiResult<()> {
        self.on_meta(r).await.map(drop)
    }

    /// Moves a replica of a shard, on the meta leader.
    pub(crate) async fn move_shard_here(&self, r: pb::MoveShardRequest) -> ApiResult<()> {
        let rec = self
            .meta
            .shard_map()
            .map_err(crate::node::from_meta)?
            .into_iter()
            .find(|s| s.id == r.shard)
            .ok_or_else(|| {
                ApiError::new(
                    Code::ResourceNotFound,
                    format!("Resource Not Found: 'shard {}'", r.shard),
                )
            })?;
        if !rec.replicas.contains(&r.from) {
            return Err(ApiError::new(
                Code::ValidationException,
                format!("node {} holds no replica of shard {}", r.from, r.shard),
            ));
        }
        if rec.replicas.contains(&r.to) {
            return Err(ApiError::new(
                Code::ValidationException,
                format!("node {} already holds a replica of shard {}", r.to, r.shard),
            ));
        }
        let up = self
            .meta
            .nodes()
            .map_err(crate::node::from_meta)?
            .into_iter()
            .any(|n| n.id == r.to && n.state == trellis_meta::placement::NodeState::Up);
        if !up {
            return Err(ApiError::new(
                Code::ValidationException,
                format!("node {} is not an UP member", r.to),
            ));
        }
        let leader = self
            .list_shards()
            .await?
            .shards
            .into_iter()
            .find(|s| s.id == r.shard)
            .map(|s| s.leader);
        if leader == Some(r.from) {
            // A replica never moves off its leader: the leadership goes first.
            let to = rec
                .replicas
                .iter()
                .copied()
                .find(|x| *x != r.from)
                .unwrap_or(r.to);
            self.operator_step(trellis_meta::placement::Step::TransferLeader {
                shard: r.shard,
                from: r.from,
                to,
            })
            .await?;
        }
        self.operator_step(trellis_meta::placement::Step::Move {
            shard: r.shard,
            from: Some(r.from),
            to: r.to,
        })
        .await
    }

    pub async fn transfer_shard_leader(&self, r: pb::TransferShardLeaderRequest) -> ApiResult<()> {
        self.on_meta(r).await.map(drop)
    }

    /// Hands a shard's leadership to another replica, on the meta leader.
    pub(crate) async fn transfer_shard_leader_here(
        &self,
        r: pb::TransferShardLeaderRequest,
    ) -> ApiResult<()> {
        let leader = self
            .list_shards()
            .await?
            .shards
            .into_iter()
            .find(|s| s.id == r.shard)
            .map(|s| s.leader)
            .ok_or_else(|| {
                ApiError::new(
                    Code::ResourceNotFound,
                    format!("Resource Not Found: 'shard {}'", r.shard),
                )
            })?;
        if leader == r.to {
            return Ok(());
        }
        self.operator_step(trellis_meta::placement::Step::TransferLeader {
            shard: r.shard,
            from: leader,
            to: r.to,
        })
        .await
    }
}
