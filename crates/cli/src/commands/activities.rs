//! `trellisctl activity`.

use anyhow::{anyhow, Result};
use serde_json::{json, Value};
use trellis_client::{v1 as pb, Client};

use crate::args::*;
use crate::output::*;

pub(crate) async fn activity(c: &mut Client, j: bool, cmd: Activity) -> Result<()> {
    match cmd {
        Activity::Create { name } => {
            let r = c
                .activities
                .create_activity(pb::CreateActivityRequest { name })
                .await
                .map_err(api)?
                .into_inner();
            if j {
                out!(
                    "{}",
                    json!({"activityArn": r.activity_arn, "creationDate": r.creation_date})
                );
            } else {
                out!("{}", r.activity_arn);
            }
        }
        Activity::List => {
            let r = c
                .activities
                .list_activities(pb::ListActivitiesRequest {
                    max_results: 1000,
                    next_token: String::new(),
                })
                .await
                .map_err(api)?
                .into_inner();
            if j {
                out!("{}", Value::Array(r.activities.iter().map(|a| json!({"activityArn": a.activity_arn, "name": a.name, "creationDate": a.creation_date})).collect()));
            } else {
                table(
                    &["NAME", "CREATED", "ARN"],
                    r.activities
                        .iter()
                        .map(|a| vec![a.name.clone(), ms(a.creation_date), a.activity_arn.clone()])
                        .collect(),
                );
            }
        }
        Activity::Poll { arn, worker } => {
            let t = c
                .activities
                .get_activity_task(pb::GetActivityTaskRequest {
                    activity_arn: arn,
                    worker_name: worker,
                })
                .await
                .map_err(api)?
                .into_inner();
            if t.task_token.is_empty() {
                return Err(anyhow!("no task arrived within 60 s"));
            }
            out!("{}", json!({"taskToken": t.task_token, "input": t.input}));
        }
    }
    Ok(())
}
