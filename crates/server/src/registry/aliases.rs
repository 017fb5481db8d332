//! Aliases: routing configurations over a machine's versions.

use trellis_meta::records::{AliasRecord, Route, VersionRecord};
use trellis_meta::{Condition, MetaOp};
use trellis_proto::v1 as pb;
use trellis_proto::{ApiError, Code};

use super::{check_name, now_ms, parse_arn, Decision, Registry};
use crate::node::ApiResult;
use trellis_cluster::from_meta;

impl Registry {
    /// Checks a routing configuration; returns the machine its versions belong to, and the
    /// conditions that those versions still exist.
    fn check_routes(
        &self,
        routes: &[pb::RoutingConfiguration],
    ) -> ApiResult<(String, Vec<Condition>)> {
        if routes.is_empty() || routes.len() > 2 {
            return Err(ApiError::new(Code::ValidationException, "1 validation error detected: Value at 'routingConfiguration' failed to satisfy constraint: Member must have length between 1 and 2"));
        }
        let total: u32 = routes.iter().map(|r| r.weight).sum();
        if total != 100 || routes.iter().any(|r| r.weight > 100) {
            return Err(ApiError::new(
                Code::ValidationException,
                "The sum of the weights in the routing configuration must be equal to 100",
            ));
        }
        let mut machine = None;
        let mut conditions = Vec::new();
        for r in routes {
            let a = parse_arn(&r.state_machine_version_arn, &["stateMachine"])?;
            let version = if a.parts.len() == 2 {
                self.meta
                    .app
                    .read::<VersionRecord>(&r.state_machine_version_arn)
                    .map_err(from_meta)?
            } else {
                None
            };
            let Some(version) = version else {
                return Err(ApiError::new(
                    Code::ResourceNotFound,
                    format!("Resource Not Found: '{}'", r.state_machine_version_arn),
                ));
            };
            conditions.push(version.unchanged());
            let m = format!("{}:stateMachine:{}", self.prefix, a.parts[0]);
            if machine.get_or_insert_with(|| m.clone()) != &m {
                return Err(ApiError::new(
                    Code::ValidationException,
                    "All versions in a routing configuration must belong to the same state machine",
                ));
            }
        }
        Ok((machine.unwrap_or_default(), conditions))
    }

    pub(crate) async fn create_alias(
        &self,
        r: pb::CreateAliasRequest,
    ) -> ApiResult<pb::CreateAliasResponse> {
        check_name(&r.name)?;
        if r.name.chars().all(|c| c.is_ascii_digit()) {
            return Err(ApiError::new(
                Code::InvalidName,
                format!("Invalid Name: '{}'", r.name),
            ));
        }
        let now = now_ms();
        self.write(|| {
            let (machine, mut conditions) = self.check_routes(&r.routing_configuration)?;
            let arn = format!("{machine}:{}", r.name);
            if self.get::<AliasRecord>(&arn)?.is_some() {
                return Err(ApiError::new(
                    Code::ConflictException,
                    format!("Alias already exists: '{arn}'"),
                ));
            }
            conditions.push(Condition::absent::<AliasRecord>(&arn));
            let alias = AliasRecord {
                state_machine_alias_arn: arn.clone(),
                name: r.name.clone(),
                description: r.description.clone(),
                routing_configuration: routes(&r.routing_configuration),
                creation_date: now,
                update_date: now,
            };
            Ok(Decision::Write {
                conditions,
                ops: vec![MetaOp::put(&alias).map_err(from_meta)?],
                answer: pb::CreateAliasResponse {
                    state_machine_alias_arn: arn,
                    creation_date: now,
                },
            })
        })
        .await
    }

    /// An alias record, or AWS's `ResourceNotFound`.
    pub(super) fn alias(&self, arn: &str) -> ApiResult<AliasRecord> {
        self.get::<AliasRecord>(arn)?.ok_or_else(|| {
            ApiError::new(
                Code::ResourceNotFound,
                format!("Resource Not Found: '{arn}'"),
            )
        })
    }

    pub fn describe_alias(&self, arn: &str) -> ApiResult<pb::Alias> {
        parse_arn(arn, &["stateMachine"])?;
        Ok(alias_pb(self.alias(arn)?))
    }

    pub(crate) async fn update_alias(
        &self,
        r: pb::UpdateAliasRequest,
    ) -> ApiResult<pb::UpdateAliasResponse> {
        let now = now_ms();
        self.write(|| {
            let read = self
                .meta
                .app
                .read::<AliasRecord>(&r.state_machine_alias_arn)
                .map_err(from_meta)?
                .ok_or_else(|| {
                    ApiError::new(
                        Code::ResourceNotFound,
                        format!("Resource Not Found: '{}'", r.state_machine_alias_arn),
                    )
                })?;
            let mut a = read.record.clone();
            let mut conditions = vec![read.unchanged()];
            if !r.routing_configuration.is_empty() {
                let (_, versions) = self.check_routes(&r.routing_configuration)?;
                conditions.extend(versions);
                a.routing_configuration = routes(&r.routing_configuration);
            }
            if let Some(d) = &r.description {
                a.description = d.clone();
            }
            a.update_date = now;
            Ok(Decision::Write {
                conditions,
                ops: vec![MetaOp::put(&a).map_err(from_meta)?],
                answer: pb::UpdateAliasResponse { update_date: now },
            })
        })
        .await
    }

    pub(crate) async fn delete_alias(&self, arn: &str) -> ApiResult<()> {
        parse_arn(arn, &["stateMachine"])?;
        self.meta
            .write(vec![MetaOp::delete::<AliasRecord>(arn)])
            .await
            .map_err(from_meta)
    }

    pub fn list_aliases(&self, r: pb::ListAliasesRequest) -> ApiResult<pb::ListAliasesResponse> {
        self.machine(&r.state_machine_arn)?;
        let items = self
            .meta
            .app
            .records_under::<AliasRecord>(&format!("{}:", r.state_machine_arn))
            .map_err(from_meta)?
            .into_iter()
            .map(|a| pb::AliasListItem {
                state_machine_alias_arn: a.state_machine_alias_arn,
                creation_date: a.creation_date,
            })
            .collect();
        Ok(pb::ListAliasesResponse {
            state_machine_aliases: items,
            next_token: String::new(),
        })
    }
}

fn routes(r: &[pb::RoutingConfiguration]) -> Vec<Route> {
    r.iter()
        .map(|r| Route {
            state_machine_version_arn: r.state_machine_version_arn.clone(),
            weight: r.weight,
        })
        .collect()
}

fn alias_pb(a: AliasRecord) -> pb::Alias {
    pb::Alias {
        state_machine_alias_arn: a.state_machine_alias_arn,
        name: a.name,
        description: a.description,
        routing_configuration: a
            .routing_configuration
            .into_iter()
            .map(|r| pb::RoutingConfiguration {
                state_machine_version_arn: r.state_machine_version_arn,
                weight: r.weight,
            })
            .collect(),
        creation_date: a.creation_date,
        update_date: a.update_date,
    }
}

/// Picks a version of an alias by its weights.
pub(super) fn pick_version(alias: &AliasRecord, rng: &mut impl rand::Rng) -> String {
    let routes = &alias.routing_configuration;
    let roll: u32 = rng.gen_range(0..100);
    let mut acc = 0;
    for r in routes {
        acc += r.weight;
        if roll < acc {
            return r.state_machine_version_arn.clone();
        }
    }
    routes
        .first()
        .map(|r| r.state_machine_version_arn.clone())
        .unwrap_or_default()
}
