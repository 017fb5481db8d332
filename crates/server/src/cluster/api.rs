//! The API operations as clients call them, on any node: each runs where it can be served
//! (see [`super::route`]); the `*_here` methods in `node.rs` do the work there.

use std::time::Duration;

use trellis_proto::error::{ApiError, Code};
use trellis_proto::v1 as pb;
use trellis_shard::record::parse_token;

use crate::cluster::join_all;
use crate::node::{ApiResult, Node};

impl Node {
    // ------------------------------------------------------------ meta writes

    pub async fn create_state_machine(
        &self,
        r: pb::CreateStateMachineRequest,
    ) -> ApiResult<pb::CreateStateMachineResponse> {
        self.on_meta("CreateStateMachine", r, move |r| async move {
            self.create_state_machine_here(r).await
        })
        .await
    }

    pub async fn update_state_machine(
        &self,
        r: pb::UpdateStateMachineRequest,
    ) -> ApiResult<pb::UpdateStateMachineResponse> {
        self.on_meta("UpdateStateMachine", r, move |r| async move {
            self.update_state_machine_here(r).await
        })
        .await
    }

    pub async fn delete_state_machine(&self, arn: &str) -> ApiResult<()> {
        let r = pb::DeleteStateMachineRequest {
            state_machine_arn: arn.to_string(),
        };
        self.on_meta("DeleteStateMachine", r, move |r| async move {
            self.delete_state_machine_here(&r.state_machine_arn)
                .await
                .map(|()| pb::Empty {})
        })
        .await
        .map(drop)
    }

    pub async fn publish_version(
        &self,
        r: pb::PublishVersionRequest,
    ) -> ApiResult<pb::PublishVersionResponse> {
        self.on_meta("PublishStateMachineVersion", r, move |r| async move {
            self.publish_version_here(r).await
        })
        .await
    }

    pub async fn delete_version(&self, arn: &str) -> ApiResult<()> {
        let r = pb::DeleteVersionRequest {
            state_machine_version_arn: arn.to_string(),
        };
        self.on_meta("DeleteStateMachineVersion", r, move |r| async move {
            self.delete_version_here(&r.state_machine_version_arn)
                .await
                .map(|()| pb::Empty {})
        })
        .await
        .map(drop)
    }

    pub async fn create_alias(
        &self,
        r: pb::CreateAliasRequest,
    ) -> ApiResult<pb::CreateAliasResponse> {
        self.on_meta("CreateStateMachineAlias", r, move |r| async move {
            self.create_alias_here(r).await
        })
        .await
    }

    pub async fn update_alias(
        &self,
        r: pb::UpdateAliasRequest,
    ) -> ApiResult<pb::UpdateAliasResponse> {
        self.on_meta("UpdateStateMachineAlias", r, move |r| async move {
            self.update_alias_here(r).await
        })
        .await
    }

    pub async fn delete_alias(&self, arn: &str) -> ApiResult<()> {
        let r = pb::DeleteAliasRequest {
            state_machine_alias_arn: arn.to_string(),
        };
        self.on_meta("DeleteStateMachineAlias", r, move |r| async move {
            self.delete_alias_here(&r.state_machine_alias_arn)
                .await
                .map(|()| pb::Empty {})
        })
        .await
        .map(drop)
    }

    pub async fn create_activity(&self, name: &str) -> ApiResult<pb::CreateActivityResponse> {
        let r = pb::CreateActivityRequest {
            name: name.to_string(),
        };
        self.on_meta("CreateActivity", r, move |r| async move {
            self.create_activity_here(&r.name).await
        })
        .await
    }

    pub async fn delete_activity(&self, arn: &str) -> ApiResult<()> {
        let r = pb::DeleteActivityRequest {
            activity_arn: arn.to_string(),
        };
        self.on_meta("DeleteActivity", r, move |r| async move {
            self.delete_activity_here(&r.activity_arn)
                .await
                .map(|()| pb::Empty {})
        })
        .await
        .map(drop)
    }

    // ------------------------------------------------------------ executions

    pub async fn start_execution(
        &self,
        mut r: pb::StartExecutionRequest,
    ) -> ApiResult<pb::StartExecutionResponse> {
        if crate::cluster::route::forwarded() {
            return self.start_execution_here(r).await;
        }
        let resolved = self
            .meta_read(|| self.resolve(&r.state_machine_arn))
            .await?;
        let m = &resolved.0;
        if m["type"] == "EXPRESS" {
            // Express executions run in memory on the node that takes the call.
            return self.start_resolved(r, resolved).await;
        }
        // The name decides the shard, so it is chosen here, once.
        r.name = self.execution_name(&r.name)?;
        let arn = format!(
            "{}:execution:{}:{}",
            self.arn_prefix(),
            m["name"].as_str().unwrap_or_default(),
            r.name
        );
        let shard = self.shard_id(&arn)?;
        if self.leading(shard).is_ok() {
            // The common case on a single node: no second meta read.
            match self.start_resolved(r.clone(), resolved).await {
                Err(e) if e.code == Code::NotLeader => {}
                done => return done,
            }
        }
        self.on_shard(shard, "StartExecution", r, move |r| async move {
            self.start_execution_here(r).await
        })
        .await
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
                ) && !crate::cluster::route::forwarded() =>
            {
                let caught_up = self
                    .on_meta("MetaIndex", pb::Empty {}, |_| async { Ok(pb::Empty {}) })
                    .await;
                if caught_up.is_err() {
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
        self.on_shard(shard, "DescribeExecution", r, move |r| async move {
            self.describe_execution_here(&r.execution_arn)
        })
        .await
    }

    pub async fn stop_execution(
        &self,
        r: pb::StopExecutionRequest,
    ) -> ApiResult<pb::StopExecutionResponse> {
        let shard = self.execution_shard(&r.execution_arn)?;
        self.on_shard(shard, "StopExecution", r, move |r| async move {
            self.stop_execution_here(r).await
        })
        .await
    }

    pub async fn redrive_execution(&self, arn: &str) -> ApiResult<pb::RedriveExecutionResponse> {
        let shard = self.execution_shard(arn)?;
        let r = pb::RedriveExecutionRequest {
            execution_arn: arn.to_string(),
            client_token: String::new(),
        };
        self.on_shard(shard, "RedriveExecution", r, move |r| async move {
            self.redrive_execution_here(&r.execution_arn).await
        })
        .await
    }

    pub async fn pause_execution(&self, arn: &str, pause: bool) -> ApiResult<()> {
        let shard = self.execution_shard(arn)?;
        let r = pb::PauseExecutionRequest {
            execution_arn: arn.to_string(),
        };
        let op = if pause {
            "PauseExecution"
        } else {
            "ResumeExecution"
        };
        self.on_shard(shard, op, r, move |r| async move {
            self.pause_execution_here(&r.execution_arn, pause)
                .await
                .map(|()| pb::Empty {})
        })
        .await
        .map(drop)
    }

    pub async fn get_execution_history(
        &self,
        r: pb::GetExecutionHistoryRequest,
    ) -> ApiResult<pb::GetExecutionHistoryResponse> {
        let shard = self.execution_shard(&r.execution_arn)?;
        self.on_shard(shard, "GetExecutionHistory", r, move |r| async move {
            self.get_execution_history_here(&r)
        })
        .await
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
        self.on_shard(shard, "SendTaskSuccess", r, move |r| async move {
            self.send_task_success_here(&r.task_token, &r.output)
                .await
                .map(|()| pb::Empty {})
        })
        .await
        .map(drop)
    }

    pub async fn send_task_failure(&self, token: &str, error: &str, cause: &str) -> ApiResult<()> {
        let shard = self.token_shard(token)?;
        let r = pb::SendTaskFailureRequest {
            task_token: token.to_string(),
            error: error.to_string(),
            cause: cause.to_string(),
        };
        self.on_shard(shard, "SendTaskFailure", r, move |r| async move {
            self.send_task_failure_here(&r.task_token, &r.error, &r.cause)
                .await
                .map(|()| pb::Empty {})
        })
        .await
        .map(drop)
    }

    pub async fn send_task_heartbeat(&self, token: &str) -> ApiResult<()> {
        let shard = self.token_shard(token)?;
        let r = pb::SendTaskHeartbeatRequest {
            task_token: token.to_string(),
        };
        self.on_shard(shard, "SendTaskHeartbeat", r, move |r| async move {
            self.send_task_heartbeat_here(&r.task_token)
                .await
                .map(|()| pb::Empty {})
        })
        .await
        .map(drop)
    }

    // ------------------------------------------------------------ operators

    /// The detector's findings on every shard, from every node.
    pub async fn doctor(&self) -> ApiResult<pb::DoctorReport> {
        let mut out = self.doctor_here().await?;
        if crate::cluster::route::forwarded() {
            return Ok(out);
        }
        let fan = self.other_nodes().into_iter().map(|n| async move {
            self.forward::<_, pb::DoctorReport>(n, "Doctor", &pb::Empty {})
                .await
        });
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
        let op = if count_live {
            "ListShards"
        } else {
            "ShardLeaders"
        };
        let map = self.meta.shard_map().map_err(crate::node::from_meta)?;
        let mut reports = vec![(self.id(), self.local_shards(count_live))];
        let others = self.other_nodes();
        let fan = others.iter().map(|n| async move {
            tokio::time::timeout(
                Duration::from_secs(2),
                self.forward::<_, pb::ListShardsResponse>(*n, op, &pb::Empty {}),
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
    /// A placement action on the shard's leader.
    pub(crate) async fn shard_control(
        &self,
        r: trellis_proto::raft::ShardControl,
    ) -> ApiResult<trellis_proto::raft::ShardControlReply> {
        let shard = r.shard;
        self.on_shard(shard, "ShardControl", r, move |r| async move {
            self.shard_control_here(r).await
        })
        .await
    }

    pub async fn drain_node(&self, id: u64) -> ApiResult<()> {
        let r = pb::NodeRequest { node_id: id };
        self.on_meta("DrainNode", r, move |r| async move {
            self.set_node_state_here(r.node_id, trellis_meta::placement::NodeState::Draining)
                .await
                .map(|()| pb::Empty {})
        })
        .await
        .map(drop)
    }

    pub async fn remove_node(&self, id: u64) -> ApiResult<()> {
        let r = pb::NodeRequest { node_id: id };
        self.on_meta("RemoveNode", r, move |r| async move {
            self.set_node_state_here(r.node_id, trellis_meta::placement::NodeState::Removed)
                .await
                .map(|()| pb::Empty {})
        })
        .await
        .map(drop)
    }

    pub async fn set_placement(&self, paused: bool) -> ApiResult<()> {
        let r = pb::SetPlacementRequest { paused };
        self.on_meta("SetPlacement", r, move |r| async move {
            self.set_placement_paused_here(r.paused)
                .await
                .map(|()| pb::Empty {})
        })
        .await
        .map(drop)
    }

    pub async fn rebalance(&self) -> ApiResult<pb::RebalanceResponse> {
        self.on_meta("Rebalance", pb::Empty {}, move |_| async move {
            let me = self
                .arc()
                .ok_or_else(|| ApiError::new(Code::ServiceUnavailable, "the node is stopping"))?;
            me.rebalance_here().await
        })
        .await
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
        self.on_meta("MoveShard", r, move |r| async move {
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
            .map(|()| pb::Empty {})
        })
        .await
        .map(drop)
    }

    pub async fn transfer_shard_leader(&self, r: pb::TransferShardLeaderRequest) -> ApiResult<()> {
        self.on_meta("TransferShardLeader", r, move |r| async move {
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
                return Ok(pb::Empty {});
            }
            self.operator_step(trellis_meta::placement::Step::TransferLeader {
                shard: r.shard,
                from: leader,
                to: r.to,
            })
            .await
            .map(|()| pb::Empty {})
        })
        .await
        .map(drop)
    }
}
