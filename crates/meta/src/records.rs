//! The records of the registry tables, typed. Their JSON keeps the field names records had
//! when they were untyped, so data directories from then read back unchanged.

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Table;

/// A record of one table, stored under its ARN.
pub trait Record: Serialize + DeserializeOwned {
    const TABLE: Table;
    /// The key it is stored under.
    fn key(&self) -> Cow<'_, str>;
}

/// STANDARD or EXPRESS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MachineType {
    #[default]
    Standard,
    Express,
}

impl MachineType {
    pub fn as_str(self) -> &'static str {
        match self {
            MachineType::Standard => "STANDARD",
            MachineType::Express => "EXPRESS",
        }
    }
}

/// A state machine (table `Machines`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineRecord {
    pub state_machine_arn: String,
    pub name: String,
    pub definition: String,
    pub role_arn: String,
    #[serde(rename = "type")]
    pub kind: MachineType,
    /// Epoch milliseconds.
    pub creation_date: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_date: Option<i64>,
    pub revision_id: String,
    #[serde(default)]
    pub description: String,
    /// Versions published so far: the next one is `versions + 1`.
    #[serde(default)]
    pub versions: u64,
    /// 0: no cap.
    #[serde(default)]
    pub max_concurrent_executions: u32,
    /// Which inline Map and Parallel states spread their children.
    #[serde(default, skip_serializing_if = "trellis_asl::Sharding::is_local")]
    pub sharding: trellis_asl::Sharding,
    /// How long its closed executions are kept, in seconds; 0: the cluster's retention.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retention_seconds: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Record for MachineRecord {
    const TABLE: Table = Table::Machines;
    fn key(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.state_machine_arn)
    }
}

/// A published version (table `Versions`), keyed `<machine ARN>:<n>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionRecord {
    pub state_machine_version_arn: String,
    pub definition: String,
    pub role_arn: String,
    pub revision_id: String,
    #[serde(default)]
    pub description: String,
    pub creation_date: i64,
}

impl Record for VersionRecord {
    const TABLE: Table = Table::Versions;
    fn key(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.state_machine_version_arn)
    }
}

/// One route of an alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub state_machine_version_arn: String,
    /// Percent, the routes of an alias summing to 100.
    pub weight: u32,
}

/// An alias (table `Aliases`), keyed `<machine ARN>:<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AliasRecord {
    pub state_machine_alias_arn: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub routing_configuration: Vec<Route>,
    pub creation_date: i64,
    pub update_date: i64,
}

impl Record for AliasRecord {
    const TABLE: Table = Table::Aliases;
    fn key(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.state_machine_alias_arn)
    }
}

/// An activity (table `Activities`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivityRecord {
    pub activity_arn: String,
    pub name: String,
    pub creation_date: i64,
}

impl Record for ActivityRecord {
    const TABLE: Table = Table::Activities;
    fn key(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.activity_arn)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn records_read_the_json_written_before_they_were_typed() {
        let m: MachineRecord = serde_json::from_value(json!({
            "stateMachineArn": "arn:aws:states:us-east-1:0:stateMachine:M", "name": "M",
            "definition": "{}", "roleArn": "r", "type": "EXPRESS", "creationDate": 5,
            "revisionId": "x", "description": "", "versions": 2, "maxConcurrentExecutions": 3,
        }))
        .unwrap();
        assert_eq!(m.kind, MachineType::Express);
        assert_eq!((m.versions, m.max_concurrent_executions), (2, 3));
        assert_eq!(m.update_date, None);
        let back = serde_json::to_value(&m).unwrap();
        assert_eq!(back["type"], "EXPRESS");
        assert_eq!(back["stateMachineArn"], m.state_machine_arn);
        let a: AliasRecord = serde_json::from_value(json!({
            "stateMachineAliasArn": "a", "name": "live", "description": "",
            "routingConfiguration": [{"stateMachineVersionArn": "v1", "weight": 100}],
            "creationDate": 1, "updateDate": 2,
        }))
        .unwrap();
        assert_eq!(a.routing_configuration[0].weight, 100);
    }
}
