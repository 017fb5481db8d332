//! `trellisctl sm`: state machines, versions and aliases.

use anyhow::{anyhow, Result};
use serde_json::{json, Value};
use trellis_client::{v1 as pb, Client};

use crate::args::*;
use crate::output::*;

pub(crate) async fn sm(c: &mut Client, j: bool, cmd: Sm) -> Result<()> {
    match cmd {
        Sm::Create {
            name,
            definition,
            r#type,
            role,
            publish,
            max_concurrent,
            retention,
        } => {
            let retention = retention.as_deref().map(retention_seconds).transpose()?;
            let ty = match r#type.to_ascii_uppercase().as_str() {
                "STANDARD" => pb::StateMachineType::Standard,
                "EXPRESS" => pb::StateMachineType::Express,
                other => return Err(anyhow!("--type must be STANDARD or EXPRESS, got '{other}'")),
            };
            let r = c
                .state_machines
                .create_state_machine(pb::CreateStateMachineRequest {
                    name,
                    definition: read(&definition)?,
                    role_arn: role,
                    r#type: ty as i32,
                    publish,
                    version_description: String::new(),
                    settings: Some(pb::StateMachineSettings {
                        max_concurrent_executions: Some(max_concurrent),
                        sharding: None,
                        retention_seconds: retention,
                    }),
                })
                .await
                .map_err(api)?
                .into_inner();
            if j {
                out!(
                    "{}",
                    json!({"stateMachineArn": r.state_machine_arn, "creationDate": r.creation_date, "stateMachineVersionArn": r.state_machine_version_arn})
                );
            } else {
                out!("{}", r.state_machine_arn);
            }
        }
        Sm::Update {
            arn,
            definition,
            publish,
        } => {
            let arn = machine_arn(c, &arn).await?;
            let definition = definition.map(|d| read(&d)).transpose()?;
            let r = c
                .state_machines
                .update_state_machine(pb::UpdateStateMachineRequest {
                    state_machine_arn: arn,
                    definition,
                    role_arn: None,
                    publish,
                    version_description: String::new(),
                    settings: None,
                })
                .await
                .map_err(api)?
                .into_inner();
            if j {
                out!(
                    "{}",
                    json!({"revisionId": r.revision_id, "updateDate": r.update_date, "stateMachineVersionArn": r.state_machine_version_arn})
                );
            } else {
                out!("revision {}", r.revision_id);
            }
        }
        Sm::List => {
            let all = all_machines(c).await?;
            if j {
                out!("{}", Value::Array(all.iter().map(|m| json!({"stateMachineArn": m.state_machine_arn, "name": m.name, "type": type_name(m.r#type), "creationDate": m.creation_date})).collect()));
            } else {
                table(
                    &["NAME", "TYPE", "CREATED", "ARN"],
                    all.iter()
                        .map(|m| {
                            vec![
                                m.name.clone(),
                                type_name(m.r#type).into(),
                                ms(m.creation_date),
                                m.state_machine_arn.clone(),
                            ]
                        })
                        .collect(),
                );
            }
        }
        Sm::Describe { arn } => {
            let arn = machine_arn(c, &arn).await?;
            let m = c
                .state_machines
                .describe_state_machine(pb::DescribeStateMachineRequest {
                    state_machine_arn: arn,
                })
                .await
                .map_err(api)?
                .into_inner();
            let def: Value =
                serde_json::from_str(&m.definition).unwrap_or(Value::String(m.definition.clone()));
            let v = json!({"stateMachineArn": m.state_machine_arn, "name": m.name, "status": m.status, "type": type_name(m.r#type),
                "roleArn": m.role_arn, "creationDate": m.creation_date, "revisionId": m.revision_id,
                "maxConcurrentExecutions": m.settings.as_ref().and_then(|s| s.max_concurrent_executions).unwrap_or(0),
                "sharding": sharding_json(m.settings.as_ref().and_then(|s| s.sharding.as_ref())), "definition": def});
            if j {
                out!("{v}");
            } else {
                let settings = m.settings.as_ref();
                let cap = settings
                    .and_then(|s| s.max_concurrent_executions)
                    .unwrap_or(0);
                let retention = match settings.and_then(|s| s.retention_seconds).unwrap_or(0) {
                    0 => "the cluster's".to_string(),
                    s => humantime::format_duration(std::time::Duration::from_secs(s)).to_string(),
                };
                for line in fields(&[
                    ("name", m.name.clone()),
                    ("arn", m.state_machine_arn.clone()),
                    ("type", type_name(m.r#type).to_string()),
                    ("status", m.status.clone()),
                    ("created", ms(m.creation_date)),
                    ("revision", m.revision_id.clone()),
                    ("role", m.role_arn.clone()),
                    (
                        "concurrency",
                        if cap == 0 {
                            "no cap".into()
                        } else {
                            format!("at most {cap} running")
                        },
                    ),
                    ("retention", retention),
                    ("sharding", v["sharding"].to_string()),
                ]) {
                    out!("{line}");
                }
                out!("definition");
                out!("{}", serde_json::to_string_pretty(&v["definition"])?);
            }
        }
        Sm::Sharding {
            arn,
            default,
            states,
            unset,
            clear,
        } => {
            let arn = machine_arn(c, &arn).await?;
            let m = c
                .state_machines
                .describe_state_machine(pb::DescribeStateMachineRequest {
                    state_machine_arn: arn.clone(),
                })
                .await
                .map_err(api)?
                .into_inner();
            let mut policy = m.settings.and_then(|s| s.sharding).unwrap_or_default();
            let change = default.is_some() || !states.is_empty() || !unset.is_empty() || clear;
            if clear {
                policy = pb::Sharding::default();
            }
            if let Some(d) = default {
                policy.default_placement = Some(placement(&d)?);
            }
            for s in &states {
                let (name, p) = s
                    .rsplit_once('=')
                    .ok_or_else(|| anyhow!("--state takes NAME=PLACEMENT, got '{s}'"))?;
                policy.states.insert(name.to_string(), placement(p)?);
            }
            for name in &unset {
                policy.states.remove(name);
            }
            if change {
                let settings = pb::StateMachineSettings {
                    sharding: Some(policy.clone()),
                    ..Default::default()
                };
                update_settings(c, arn, settings).await?;
            }
            if j {
                out!("{}", sharding_json(Some(&policy)));
            } else {
                let mut rows = vec![vec![
                    "(default)".to_string(),
                    placement_name(policy.default_placement.as_ref()),
                ]];
                let mut named: Vec<_> = policy.states.iter().collect();
                named.sort_by_key(|(k, _)| *k);
                rows.extend(
                    named
                        .into_iter()
                        .map(|(k, v)| vec![k.clone(), placement_name(Some(v))]),
                );
                table(&["STATE", "PLACEMENT"], rows);
            }
        }
        Sm::Retention { arn, period } => {
            let arn = machine_arn(c, &arn).await?;
            let seconds = match period.as_deref() {
                Some(p) => {
                    let s = retention_seconds(p)?;
                    let settings = pb::StateMachineSettings {
                        retention_seconds: Some(s),
                        ..Default::default()
                    };
                    update_settings(c, arn.clone(), settings).await?;
                    s
                }
                None => c
                    .state_machines
                    .describe_state_machine(pb::DescribeStateMachineRequest {
                        state_machine_arn: arn.clone(),
                    })
                    .await
                    .map_err(api)?
                    .into_inner()
                    .settings
                    .and_then(|s| s.retention_seconds)
                    .unwrap_or(0),
            };
            if j {
                out!(
                    "{}",
                    json!({"stateMachineArn": arn, "retentionSeconds": seconds})
                );
            } else if seconds == 0 {
                out!("{arn}: the cluster's retention (cluster.retention)");
            } else {
                let period = humantime::format_duration(std::time::Duration::from_secs(seconds));
                out!("{arn}: {period}");
            }
        }
        Sm::Delete { arn } => {
            let arn = machine_arn(c, &arn).await?;
            c.state_machines
                .delete_state_machine(pb::DeleteStateMachineRequest {
                    state_machine_arn: arn.clone(),
                })
                .await
                .map_err(api)?;
            if !j {
                out!("deleted {arn}");
            }
        }
        Sm::Validate {
            definition,
            express,
        } => {
            let ty = if express {
                pb::StateMachineType::Express
            } else {
                pb::StateMachineType::Standard
            };
            let r = c
                .state_machines
                .validate_state_machine_definition(pb::ValidateRequest {
                    definition: read(&definition)?,
                    r#type: ty as i32,
                    // An operator sees warnings too.
                    severity: "WARNING".into(),
                    max_results: 0,
                })
                .await
                .map_err(api)?
                .into_inner();
            if j {
                out!(
                    "{}",
                    json!({"result": r.result, "diagnostics": r.diagnostics.iter().map(|d| json!({"severity": d.severity, "code": d.code, "message": d.message, "location": d.location})).collect::<Vec<_>>()})
                );
            } else {
                out!("{}", r.result);
                table(
                    &["SEVERITY", "CODE", "LOCATION", "MESSAGE"],
                    r.diagnostics
                        .iter()
                        .map(|d| {
                            vec![
                                d.severity.clone(),
                                d.code.clone(),
                                d.location.clone(),
                                d.message.clone(),
                            ]
                        })
                        .collect(),
                );
            }
            if r.result != "OK" {
                return Err(anyhow!("the definition is not valid"));
            }
        }
    }
    Ok(())
}

/// `local`, `spread` or `auto:N` (N from 1 up), the words `placement_name` prints. The
/// node checks the policy again, against the definition.
fn placement(s: &str) -> Result<pb::StatePlacement> {
    let (mode, min_children) = match s {
        "local" => (pb::SpreadMode::Local, 0),
        "spread" => (pb::SpreadMode::Spread, 0),
        _ => {
            let n = s
                .strip_prefix("auto:")
                .ok_or_else(|| anyhow!("'{s}' is not a placement: use local, spread or auto:N"))?;
            match n.parse::<u32>() {
                Ok(n) if n >= 1 => (pb::SpreadMode::Auto, n),
                _ => {
                    return Err(anyhow!(
                        "'{s}': the threshold of auto:N must be a whole number from 1 to {}",
                        u32::MAX
                    ))
                }
            }
        }
    };
    Ok(pb::StatePlacement {
        mode: mode as i32,
        min_children,
    })
}

fn placement_name(p: Option<&pb::StatePlacement>) -> String {
    match p.map(|p| (pb::SpreadMode::try_from(p.mode), p.min_children)) {
        None | Some((Ok(pb::SpreadMode::Local), _)) => "local".into(),
        Some((Ok(pb::SpreadMode::Spread), _)) => "spread".into(),
        Some((Ok(pb::SpreadMode::Auto), n)) => format!("auto:{n}"),
        Some((Err(_), _)) => "unknown".into(),
    }
}

fn sharding_json(s: Option<&pb::Sharding>) -> Value {
    let Some(s) = s else {
        return json!({"default": "local", "states": {}});
    };
    let mut states: Vec<_> = s.states.iter().collect();
    states.sort_by_key(|(k, _)| *k);
    json!({
        "default": placement_name(s.default_placement.as_ref()),
        "states": states
            .into_iter()
            .map(|(k, v)| (k.clone(), Value::String(placement_name(Some(v)))))
            .collect::<serde_json::Map<_, _>>(),
    })
}

/// Changes the settings given (only those) of a machine.
async fn update_settings(
    c: &mut Client,
    arn: String,
    settings: pb::StateMachineSettings,
) -> Result<()> {
    c.state_machines
        .update_state_machine(pb::UpdateStateMachineRequest {
            state_machine_arn: arn,
            settings: Some(settings),
            ..Default::default()
        })
        .await
        .map_err(api)?;
    Ok(())
}

/// A machine's retention from the command line, in seconds: a period of at least a second,
/// or `default` (0: the cluster's).
fn retention_seconds(p: &str) -> Result<u64> {
    if p == "default" {
        return Ok(0);
    }
    let d = humantime::parse_duration(p).map_err(|e| {
        anyhow!(
            "'{p}' is not a retention period ({e}): give one such as 30d, 12h or 20s, or `default`"
        )
    })?;
    if d.as_secs() == 0 {
        return Err(anyhow!(
            "a retention period is at least 1s; `default` takes the cluster's"
        ));
    }
    Ok(d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placements_read_as_the_node_reads_them_and_print_back() {
        for s in ["local", "spread", "auto:1", "auto:250"] {
            assert_eq!(placement_name(Some(&placement(s).unwrap())), s);
        }
        for bad in ["", "Spread", "auto", "auto:0", "auto:x", "auto:99999999999"] {
            assert!(placement(bad).is_err(), "{bad}");
        }
    }
}
