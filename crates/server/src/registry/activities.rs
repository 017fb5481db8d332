//! Activities.

use trellis_meta::records::ActivityRecord;
use trellis_meta::{Condition, MetaOp};
use trellis_proto::v1 as pb;
use trellis_proto::{ApiError, Code};

use super::{check_name, now_ms, parse_arn, Decision, Registry};
use crate::node::ApiResult;
use trellis_cluster::from_meta;

impl Registry {
    pub(crate) async fn create_activity(
        &self,
        name: &str,
    ) -> ApiResult<pb::CreateActivityResponse> {
        check_name(name)?;
        let arn = format!("{}:activity:{name}", self.prefix);
        let now = now_ms();
        self.write(|| {
            if let Some(a) = self.get::<ActivityRecord>(&arn)? {
                // CreateActivity is idempotent.
                return Ok(Decision::Done(pb::CreateActivityResponse {
                    activity_arn: arn.clone(),
                    creation_date: a.creation_date,
                }));
            }
            let a = ActivityRecord {
                activity_arn: arn.clone(),
                name: name.to_string(),
                creation_date: now,
            };
            Ok(Decision::Write {
                conditions: vec![Condition::absent::<ActivityRecord>(&arn)],
                ops: vec![MetaOp::put(&a).map_err(from_meta)?],
                answer: pb::CreateActivityResponse {
                    activity_arn: arn.clone(),
                    creation_date: now,
                },
            })
        })
        .await
    }

    /// An activity record, or AWS's `ActivityDoesNotExist`.
    pub(crate) fn activity(&self, arn: &str) -> ApiResult<ActivityRecord> {
        parse_arn(arn, &["activity"])?;
        self.get::<ActivityRecord>(arn)?.ok_or_else(|| {
            ApiError::new(
                Code::ActivityDoesNotExist,
                format!("Activity Does Not Exist: '{arn}'"),
            )
        })
    }

    pub fn describe_activity(&self, arn: &str) -> ApiResult<pb::Activity> {
        let a = self.activity(arn)?;
        Ok(pb::Activity {
            activity_arn: a.activity_arn,
            name: a.name,
            creation_date: a.creation_date,
        })
    }

    pub fn list_activities(
        &self,
        r: pb::ListActivitiesRequest,
    ) -> ApiResult<pb::ListActivitiesResponse> {
        let (rows, next_token) = self.page::<ActivityRecord>(r.max_results, &r.next_token)?;
        Ok(pb::ListActivitiesResponse {
            activities: rows
                .into_iter()
                .map(|a| pb::Activity {
                    activity_arn: a.activity_arn,
                    name: a.name,
                    creation_date: a.creation_date,
                })
                .collect(),
            next_token,
        })
    }

    pub(crate) async fn delete_activity(&self, arn: &str) -> ApiResult<()> {
        parse_arn(arn, &["activity"])?;
        self.meta
            .write(vec![MetaOp::delete::<ActivityRecord>(arn)])
            .await
            .map_err(from_meta)
    }
}
