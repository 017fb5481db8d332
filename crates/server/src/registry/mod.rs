//! The registry: state machines, their versions and aliases, and activities, as typed meta
//! records (`trellis_meta::records`).
//!
//! Reads run on any node's meta replica. Writes run on the meta leader (the router sends
//! them there) as compare-and-set entries: each is decided from the records as read, and
//! carries the conditions that those records are unchanged (or still absent); the meta state
//! machine applies it only if they hold. On a conflict the write is decided again from a
//! fresh read, so two racing writers never both win, whatever node leads meta meanwhile.

use trellis_meta::records::{AliasRecord, MachineRecord, MachineType, Record, VersionRecord};
use trellis_meta::{Condition, Meta, MetaOp, Written};
use trellis_proto::v1 as pb;
use trellis_proto::{ApiError, Code};

use crate::node::ApiResult;
use trellis_cluster::retry::Backoff;
use trellis_cluster::{from_meta, internal};

mod activities;
mod aliases;
pub(crate) mod sharding;

use aliases::pick_version;

/// How many times a write is decided (again after losing a race, with a jittered pause that
/// grows, so racing writers spread out).
const CONFLICT_RETRIES: u32 = 64;

/// AWS's naming rule for state machines, executions, activities and aliases.
pub fn check_name(name: &str) -> ApiResult<()> {
    let bad = name.is_empty()
        || name.chars().count() > 80
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>{}[]?*\"#%\\^|~`$&,;:/".contains(c));
    if bad {
        return Err(ApiError::new(
            Code::InvalidName,
            format!("Invalid Name: '{name}'"),
        ));
    }
    Ok(())
}

/// A parsed Step Functions ARN: `arn:<partition>:states:<region>:<account>:<kind>:<rest>`.
pub(crate) struct Arn<'a> {
    pub(crate) kind: &'a str,
    pub(crate) parts: Vec<&'a str>,
}

pub(crate) fn parse_arn<'a>(arn: &'a str, kinds: &[&str]) -> ApiResult<Arn<'a>> {
    let invalid = |why: &str| ApiError::new(Code::InvalidArn, format!("Invalid Arn: '{why}'"));
    let p: Vec<&str> = arn.split(':').collect();
    if p.len() < 7 || p[0] != "arn" || p[2] != "states" {
        return Err(invalid(&format!("Invalid ARN prefix: {arn}")));
    }
    if !kinds.contains(&p[5]) {
        return Err(invalid(&format!(
            "Resource type not valid in this context: {}",
            p[5]
        )));
    }
    if p[6..].iter().any(|s| s.is_empty()) {
        return Err(invalid(&format!("Invalid ARN: {arn}")));
    }
    Ok(Arn {
        kind: p[5],
        parts: p[6..].to_vec(),
    })
}

fn invalid_arn(arn: &str) -> ApiError {
    ApiError::new(
        Code::InvalidArn,
        format!("Invalid Arn: 'Invalid ARN: {arn}'"),
    )
}

/// A page size from `maxResults` (0: AWS's default of 100).
pub(crate) fn page_size(max: u32) -> ApiResult<usize> {
    if max > 1000 {
        return Err(ApiError::new(
            Code::ValidationException,
            format!("1 validation error detected: Value '{max}' at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to 1000"),
        ));
    }
    Ok(if max == 0 { 100 } else { max as usize })
}

/// Where a page starts: the offset a `nextToken` carries (0 without one).
pub(crate) fn page_offset(next_token: &str) -> ApiResult<usize> {
    if next_token.is_empty() {
        return Ok(0);
    }
    next_token
        .parse()
        .map_err(|_| ApiError::new(Code::InvalidToken, format!("Invalid Token: '{next_token}'")))
}

/// A state machine ARN (or version, or alias) resolved to what runs.
pub(crate) struct Resolved {
    pub(crate) machine: MachineRecord,
    /// The version that runs, when one was named or an alias picked one.
    pub(crate) version: Option<String>,
    /// The alias named.
    pub(crate) alias: Option<String>,
    pub(crate) definition: String,
}

/// What a write decided from the records it read.
enum Decision<T> {
    /// Nothing to write: the answer.
    Done(T),
    /// Write `ops` if `conditions` hold, then answer.
    Write {
        conditions: Vec<Condition>,
        ops: Vec<MetaOp>,
        answer: T,
    },
}

/// The registry, over this node's meta replica.
#[derive(Clone)]
pub struct Registry {
    meta: Meta,
    /// `arn:aws:states:<region>:<account>`.
    prefix: String,
}

impl Registry {
    pub fn new(meta: Meta, region: &str, account: &str) -> Registry {
        Registry {
            meta,
            prefix: format!("arn:aws:states:{region}:{account}"),
        }
    }

    /// `arn:aws:states:<region>:<account>`.
    pub fn arn_prefix(&self) -> &str {
        &self.prefix
    }

    fn get<R: Record>(&self, key: &str) -> ApiResult<Option<R>> {
        self.meta.app.record(key).map_err(from_meta)
    }

    /// Decides a write from fresh reads and applies it as a compare-and-set; decides again
    /// when another write got in between.
    async fn write<T>(&self, mut decide: impl FnMut() -> ApiResult<Decision<T>>) -> ApiResult<T> {
        let mut retry = Backoff::new(
            std::time::Duration::from_millis(4),
            std::time::Duration::from_millis(32),
            CONFLICT_RETRIES,
        )
        .jittered();
        while retry.begin() {
            match decide()? {
                Decision::Done(answer) => return Ok(answer),
                Decision::Write {
                    conditions,
                    ops,
                    answer,
                } => match self
                    .meta
                    .write_if(conditions, ops)
                    .await
                    .map_err(from_meta)?
                {
                    Written::Applied => return Ok(answer),
                    Written::Conflict(_) => retry.pause().await,
                },
            }
        }
        Err(ApiError::new(
            Code::ConflictException,
            "the record kept changing while this request was applied; retry",
        ))
    }

    // ------------------------------------------------------------ state machines

    pub(crate) fn machine(&self, arn: &str) -> ApiResult<MachineRecord> {
        self.get::<MachineRecord>(arn)?
            .ok_or_else(|| machine_missing(arn))
    }

    /// A machine record as read, for a compare-and-set against it.
    fn read_machine(&self, arn: &str) -> ApiResult<trellis_meta::Read<MachineRecord>> {
        self.meta
            .app
            .read::<MachineRecord>(arn)
            .map_err(from_meta)?
            .ok_or_else(|| machine_missing(arn))
    }

    /// Resolves a state machine, version or alias ARN to the machine record and the
    /// definition that runs (an alias rolls its weighted version here).
    pub(crate) fn resolve(&self, arn: &str) -> ApiResult<Resolved> {
        let a = parse_arn(arn, &["stateMachine"])?;
        match a.parts.len() {
            1 => {
                let machine = self.machine(arn)?;
                Ok(Resolved {
                    definition: machine.definition.clone(),
                    machine,
                    version: None,
                    alias: None,
                })
            }
            2 => {
                let base = format!("{}:stateMachine:{}", self.prefix, a.parts[0]);
                let machine = self.machine(&base)?;
                if a.parts[1].chars().all(|c| c.is_ascii_digit()) {
                    let v = self
                        .get::<VersionRecord>(arn)?
                        .ok_or_else(|| machine_missing(arn))?;
                    Ok(Resolved {
                        machine,
                        version: Some(arn.to_string()),
                        alias: None,
                        definition: v.definition,
                    })
                } else {
                    let alias = self.alias(arn)?;
                    let version = pick_version(&alias, &mut rand::thread_rng());
                    let v = self.get::<VersionRecord>(&version)?.ok_or_else(|| {
                        internal(format!("alias {arn} routes to a missing version"))
                    })?;
                    Ok(Resolved {
                        machine,
                        version: Some(version),
                        alias: Some(arn.to_string()),
                        definition: v.definition,
                    })
                }
            }
            _ => Err(invalid_arn(arn)),
        }
    }

    fn validate_definition(definition: &str, express: bool) -> ApiResult<()> {
        let diags = trellis_asl::validate::validate(definition, trellis_asl::Options { express });
        let errors: Vec<_> = diags
            .into_iter()
            .filter(|d| d.severity == trellis_asl::Severity::Error)
            .collect();
        if errors.is_empty() {
            return Ok(());
        }
        Err(ApiError::new(
            Code::InvalidDefinition,
            format!(
                "Invalid State Machine Definition: '{}'",
                trellis_asl::validate::summary(&errors)
            ),
        ))
    }

    pub(crate) async fn create_state_machine(
        &self,
        r: pb::CreateStateMachineRequest,
    ) -> ApiResult<pb::CreateStateMachineResponse> {
        check_name(&r.name)?;
        if r.role_arn.is_empty() {
            return Err(ApiError::new(
                Code::ValidationException,
                "1 validation error detected: Value null at 'roleArn' failed to satisfy constraint: Member must not be null",
            ));
        }
        let kind = machine_type(r.r#type);
        Self::validate_definition(&r.definition, kind == MachineType::Express)?;
        let settings = r.settings.clone();
        let sharding = match settings.as_ref().and_then(|s| s.sharding.as_ref()) {
            Some(p) => sharding::from_pb(p, &r.definition)?,
            None => Default::default(),
        };
        let arn = format!("{}:stateMachine:{}", self.prefix, r.name);
        let now = now_ms();
        let revision = crate::ids::uuid();
        self.write(|| {
            if let Some(existing) = self.get::<MachineRecord>(&arn)? {
                // Idempotent when the definition and type are the same.
                if existing.definition == r.definition && existing.kind == kind {
                    return Ok(Decision::Done(pb::CreateStateMachineResponse {
                        state_machine_arn: arn.clone(),
                        creation_date: existing.creation_date,
                        state_machine_version_arn: String::new(),
                    }));
                }
                return Err(ApiError::new(
                    Code::StateMachineAlreadyExists,
                    format!("State Machine Already Exists: '{arn}'"),
                ));
            }
            let mut m = MachineRecord {
                state_machine_arn: arn.clone(),
                name: r.name.clone(),
                definition: r.definition.clone(),
                role_arn: r.role_arn.clone(),
                kind,
                creation_date: now,
                update_date: None,
                revision_id: revision.clone(),
                description: String::new(),
                versions: 0,
                max_concurrent_executions: settings
                    .as_ref()
                    .and_then(|s| s.max_concurrent_executions)
                    .unwrap_or(0),
                sharding: sharding.clone(),
                retention_seconds: settings
                    .as_ref()
                    .and_then(|s| s.retention_seconds)
                    .unwrap_or(0),
            };
            let mut conditions = vec![Condition::absent::<MachineRecord>(&arn)];
            let publish_as = r.publish.then_some(r.version_description.as_str());
            let (ops, version_arn) = store(&mut m, publish_as, now, &mut conditions)?;
            Ok(Decision::Write {
                conditions,
                ops,
                answer: pb::CreateStateMachineResponse {
                    state_machine_arn: arn.clone(),
                    creation_date: now,
                    state_machine_version_arn: version_arn,
                },
            })
        })
        .await
    }

    pub(crate) async fn update_state_machine(
        &self,
        r: pb::UpdateStateMachineRequest,
    ) -> ApiResult<pb::UpdateStateMachineResponse> {
        parse_arn(&r.state_machine_arn, &["stateMachine"])?;
        if r.definition.is_none() && r.role_arn.is_none() && r.settings.is_none() {
            return Err(ApiError::new(
                Code::MissingRequiredParameter,
                "Either the definition, the roleArn or the settings must be specified",
            ));
        }
        let now = now_ms();
        let revision = crate::ids::uuid();
        self.write(|| {
            let read = self.read_machine(&r.state_machine_arn)?;
            let mut m = read.record.clone();
            if let Some(d) = &r.definition {
                Self::validate_definition(d, m.kind == MachineType::Express)?;
                m.definition = d.clone();
                m.revision_id = revision.clone();
            }
            if let Some(role) = &r.role_arn {
                m.role_arn = role.clone();
            }
            if let Some(s) = &r.settings {
                if let Some(n) = s.max_concurrent_executions {
                    m.max_concurrent_executions = n;
                }
                if let Some(p) = &s.sharding {
                    m.sharding = sharding::from_pb(p, &m.definition)?;
                }
                if let Some(r) = s.retention_seconds {
                    m.retention_seconds = r;
                }
            }
            // A new definition keeps the policy only if the policy still fits it.
            sharding::check(&m.sharding, &m.definition)?;
            m.update_date = Some(now);
            let mut conditions = vec![read.unchanged()];
            let publish_as = r.publish.then_some(r.version_description.as_str());
            let (ops, version_arn) = store(&mut m, publish_as, now, &mut conditions)?;
            Ok(Decision::Write {
                conditions,
                ops,
                answer: pb::UpdateStateMachineResponse {
                    update_date: now,
                    revision_id: m.revision_id.clone(),
                    state_machine_version_arn: version_arn,
                },
            })
        })
        .await
    }

    pub fn describe_state_machine(&self, arn: &str) -> ApiResult<pb::StateMachine> {
        let Resolved {
            machine: m,
            version,
            definition,
            ..
        } = self.resolve(arn)?;
        Ok(pb::StateMachine {
            state_machine_arn: version.unwrap_or_else(|| m.state_machine_arn.clone()),
            name: m.name,
            status: "ACTIVE".into(),
            definition,
            role_arn: m.role_arn,
            r#type: type_enum(m.kind),
            creation_date: m.creation_date,
            revision_id: m.revision_id,
            description: m.description,
            settings: Some(pb::StateMachineSettings {
                max_concurrent_executions: Some(m.max_concurrent_executions),
                sharding: Some(sharding::to_pb(&m.sharding)),
                retention_seconds: Some(m.retention_seconds),
            }),
        })
    }

    /// One page of a table in key order; the token is the last key returned.
    fn page<R: Record>(&self, max_results: u32, next_token: &str) -> ApiResult<(Vec<R>, String)> {
        let max = page_size(max_results)?;
        let after = (!next_token.is_empty()).then_some(next_token);
        let mut rows = self
            .meta
            .app
            .records::<R>(after, max + 1)
            .map_err(from_meta)?;
        let more = rows.len() > max;
        rows.truncate(max);
        let token = match (more, rows.last()) {
            (true, Some(r)) => r.key().to_string(),
            _ => String::new(),
        };
        Ok((rows, token))
    }

    pub fn list_state_machines(
        &self,
        r: pb::ListStateMachinesRequest,
    ) -> ApiResult<pb::ListStateMachinesResponse> {
        let (items, next_token) = self.page::<MachineRecord>(r.max_results, &r.next_token)?;
        Ok(pb::ListStateMachinesResponse {
            state_machines: items
                .into_iter()
                .map(|m| pb::StateMachineListItem {
                    r#type: type_enum(m.kind),
                    state_machine_arn: m.state_machine_arn,
                    name: m.name,
                    creation_date: m.creation_date,
                })
                .collect(),
            next_token,
        })
    }

    pub(crate) async fn delete_state_machine(&self, arn: &str) -> ApiResult<()> {
        parse_arn(arn, &["stateMachine"])?;
        let prefix = format!("{arn}:");
        self.write(|| {
            let Some(read) = self
                .meta
                .app
                .read::<MachineRecord>(arn)
                .map_err(from_meta)?
            else {
                // Deleting a missing machine succeeds, as on AWS.
                return Ok(Decision::Done(()));
            };
            let mut ops = vec![MetaOp::delete::<MachineRecord>(arn)];
            for v in self
                .meta
                .app
                .records_under::<VersionRecord>(&prefix)
                .map_err(from_meta)?
            {
                ops.push(MetaOp::delete::<VersionRecord>(&v.key()));
            }
            for a in self
                .meta
                .app
                .records_under::<AliasRecord>(&prefix)
                .map_err(from_meta)?
            {
                ops.push(MetaOp::delete::<AliasRecord>(&a.key()));
            }
            Ok(Decision::Write {
                conditions: vec![read.unchanged()],
                ops,
                answer: (),
            })
        })
        .await
    }

    // ------------------------------------------------------------ versions

    pub(crate) async fn publish_version(
        &self,
        r: pb::PublishVersionRequest,
    ) -> ApiResult<pb::PublishVersionResponse> {
        parse_arn(&r.state_machine_arn, &["stateMachine"])?;
        let now = now_ms();
        self.write(|| {
            let read = self.read_machine(&r.state_machine_arn)?;
            let mut m = read.record.clone();
            if !r.revision_id.is_empty() && m.revision_id != r.revision_id {
                return Err(ApiError::new(
                    Code::ConflictException,
                    format!("Failed to publish the State Machine version for revision {}. The current State Machine revision is {}.", r.revision_id, m.revision_id),
                ));
            }
            let v = publish(&mut m, &r.description, now);
            Ok(Decision::Write {
                conditions: vec![
                    read.unchanged(),
                    Condition::absent::<VersionRecord>(&v.key()),
                ],
                ops: vec![
                    MetaOp::put(&v).map_err(from_meta)?,
                    MetaOp::put(&m).map_err(from_meta)?,
                ],
                answer: pb::PublishVersionResponse {
                    creation_date: now,
                    state_machine_version_arn: v.state_machine_version_arn.clone(),
                },
            })
        })
        .await
    }

    pub fn list_versions(&self, r: pb::ListVersionsRequest) -> ApiResult<pb::ListVersionsResponse> {
        self.machine(&r.state_machine_arn)?;
        let prefix = format!("{}:", r.state_machine_arn);
        let mut items: Vec<(u64, pb::VersionListItem)> = self
            .meta
            .app
            .records_under::<VersionRecord>(&prefix)
            .map_err(from_meta)?
            .into_iter()
            .map(|v| {
                let n = v.state_machine_version_arn[prefix.len()..]
                    .parse()
                    .unwrap_or(0);
                (
                    n,
                    pb::VersionListItem {
                        state_machine_version_arn: v.state_machine_version_arn,
                        creation_date: v.creation_date,
                    },
                )
            })
            .collect();
        items.sort_by_key(|v| std::cmp::Reverse(v.0));
        Ok(pb::ListVersionsResponse {
            state_machine_versions: items.into_iter().map(|(_, v)| v).collect(),
            next_token: String::new(),
        })
    }

    pub(crate) async fn delete_version(&self, arn: &str) -> ApiResult<()> {
        let a = parse_arn(arn, &["stateMachine"])?;
        if a.parts.len() != 2 {
            return Err(invalid_arn(arn));
        }
        let machine = format!("{}:stateMachine:{}", self.prefix, a.parts[0]);
        self.write(|| {
            let Some(read) = self.meta.app.read::<VersionRecord>(arn).map_err(from_meta)? else {
                return Ok(Decision::Done(()));
            };
            // The machine's aliases, each as read: none may route to it when it goes.
            let mut conditions = vec![read.unchanged()];
            for alias in self
                .meta
                .app
                .records_under::<AliasRecord>(&format!("{machine}:"))
                .map_err(from_meta)?
            {
                if alias
                    .routing_configuration
                    .iter()
                    .any(|r| r.state_machine_version_arn == arn)
                {
                    return Err(ApiError::new(
                        Code::ConflictException,
                        format!("Version to be deleted must not be referenced by an alias. Current list of aliases referencing this version: [{}]", alias.state_machine_alias_arn),
                    ));
                }
                if let Some(r) = self
                    .meta
                    .app
                    .read::<AliasRecord>(&alias.key())
                    .map_err(from_meta)?
                {
                    conditions.push(r.unchanged());
                }
            }
            Ok(Decision::Write {
                conditions,
                ops: vec![MetaOp::delete::<VersionRecord>(arn)],
                answer: (),
            })
        })
        .await
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn machine_missing(arn: &str) -> ApiError {
    ApiError::new(
        Code::StateMachineDoesNotExist,
        format!("State Machine Does Not Exist: '{arn}'"),
    )
}

fn machine_type(t: i32) -> MachineType {
    if t == pb::StateMachineType::Express as i32 {
        MachineType::Express
    } else {
        MachineType::Standard
    }
}

pub(crate) fn type_enum(t: MachineType) -> i32 {
    match t {
        MachineType::Express => pb::StateMachineType::Express as i32,
        MachineType::Standard => pb::StateMachineType::Standard as i32,
    }
}

/// Publishes the machine's current definition as its next version (the machine's counter
/// moves on).
fn publish(m: &mut MachineRecord, description: &str, now: i64) -> VersionRecord {
    m.versions += 1;
    VersionRecord {
        state_machine_version_arn: format!("{}:{}", m.state_machine_arn, m.versions),
        definition: m.definition.clone(),
        role_arn: m.role_arn.clone(),
        revision_id: m.revision_id.clone(),
        description: description.to_string(),
        creation_date: now,
    }
}

/// The ops that store `m` and, when `publish_as` gives a description, first its next version
/// (which must not exist yet: a condition is added). Returns them and the version's ARN
/// (empty without one).
fn store(
    m: &mut MachineRecord,
    publish_as: Option<&str>,
    now: i64,
    conditions: &mut Vec<Condition>,
) -> ApiResult<(Vec<MetaOp>, String)> {
    let mut ops = Vec::new();
    let mut version_arn = String::new();
    if let Some(description) = publish_as {
        let v = publish(m, description, now);
        conditions.push(Condition::absent::<VersionRecord>(&v.key()));
        ops.push(MetaOp::put(&v).map_err(from_meta)?);
        version_arn = v.state_machine_version_arn;
    }
    ops.push(MetaOp::put(m).map_err(from_meta)?);
    Ok((ops, version_arn))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use trellis_storage::NodeDb;

    use super::*;

    const DEF: &str = r#"{"StartAt":"P","States":{"P":{"Type":"Pass","End":true}}}"#;

    async fn registry(dir: &std::path::Path) -> Registry {
        let db = NodeDb::open(dir).unwrap();
        let meta = Meta::open_single_node(&db, 1, "local").await.unwrap();
        Registry::new(meta, "us-east-1", "000000000000")
    }

    fn create(name: &str, definition: &str) -> pb::CreateStateMachineRequest {
        pb::CreateStateMachineRequest {
            name: name.into(),
            definition: definition.into(),
            role_arn: "arn:aws:iam::000000000000:role/r".into(),
            ..Default::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_writers_never_both_win() {
        let dir = tempfile::tempdir().unwrap();
        let reg = registry(dir.path()).await;
        let arn = reg
            .create_state_machine(create("M", DEF))
            .await
            .unwrap()
            .state_machine_arn;

        // 24 publishes at once: each gets its own version number, and the counter counts
        // them all (a read-modify-write without a condition would hand out duplicates).
        let publishes = (0..24).map(|_| {
            let reg = reg.clone();
            let arn = arn.clone();
            tokio::spawn(async move {
                reg.publish_version(pb::PublishVersionRequest {
                    state_machine_arn: arn,
                    ..Default::default()
                })
                .await
                .map(|r| r.state_machine_version_arn)
            })
        });
        let mut versions = BTreeSet::new();
        for p in futures::future::join_all(publishes).await {
            assert!(versions.insert(p.unwrap().unwrap()));
        }
        assert_eq!(versions.len(), 24);
        assert_eq!(reg.machine(&arn).unwrap().versions, 24);
        let listed = reg
            .list_versions(pb::ListVersionsRequest {
                state_machine_arn: arn.clone(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(listed.state_machine_versions.len(), 24);

        // Two creates of one name with different definitions: one wins, the other is told
        // the name is taken.
        let other = r#"{"StartAt":"Q","States":{"Q":{"Type":"Succeed"}}}"#;
        let (a, b) = tokio::join!(
            reg.create_state_machine(create("N", DEF)),
            reg.create_state_machine(create("N", other))
        );
        let lost: Vec<_> = [a, b].into_iter().filter_map(Result::err).collect();
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert_eq!(lost[0].code, Code::StateMachineAlreadyExists);
    }
}
