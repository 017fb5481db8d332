//! A state machine's sharding policy between its gRPC form and the interpreter's
//! ([`trellis_asl::Sharding`]), checked against the definition it applies to.

use trellis_asl::{Placement, Sharding};
use trellis_proto::v1 as pb;
use trellis_proto::{ApiError, Code};

use crate::node::ApiResult;

fn invalid(msg: String) -> ApiError {
    ApiError::new(Code::ValidationException, msg)
}

fn placement(p: Option<&pb::StatePlacement>, what: &str) -> ApiResult<Placement> {
    let Some(p) = p else {
        return Ok(Placement::Local);
    };
    let mode = pb::SpreadMode::try_from(p.mode)
        .map_err(|_| invalid(format!("{what}: {} is not a spread mode", p.mode)))?;
    match mode {
        pb::SpreadMode::Local | pb::SpreadMode::Spread if p.min_children != 0 => {
            Err(invalid(format!("{what}: minChildren applies to AUTO only")))
        }
        pb::SpreadMode::Local => Ok(Placement::Local),
        pb::SpreadMode::Spread => Ok(Placement::Spread),
        pb::SpreadMode::Auto if p.min_children == 0 => Err(invalid(format!(
            "{what}: AUTO needs minChildren of at least 1"
        ))),
        pb::SpreadMode::Auto => Ok(Placement::Auto {
            min_children: p.min_children,
        }),
    }
}

/// The policy a request asks for, checked against the definition (every state it names is
/// an inline Map or a Parallel state of it).
pub(crate) fn from_pb(s: &pb::Sharding, definition: &str) -> ApiResult<Sharding> {
    let out = read(s)?;
    check(&out, definition)?;
    Ok(out)
}

/// The policy in a start forwarded between nodes (checked when it was set).
pub(crate) fn read(s: &pb::Sharding) -> ApiResult<Sharding> {
    let mut out = Sharding {
        default: placement(s.default_placement.as_ref(), "the default placement")?,
        states: Default::default(),
    };
    for (name, p) in &s.states {
        out.states.insert(
            name.clone(),
            placement(Some(p), &format!("state '{name}'"))?,
        );
    }
    Ok(out)
}

/// Checks a policy against a definition (a valid one: it was checked before).
pub(crate) fn check(s: &Sharding, definition: &str) -> ApiResult<()> {
    if s.states.is_empty() {
        return Ok(());
    }
    let sm = trellis_asl::parse(definition, Default::default())
        .map_err(|e| invalid(format!("The definition does not parse: {e}")))?;
    s.check(&sm)
        .map_err(|e| invalid(format!("Invalid sharding policy: {e}")))
}

fn placement_pb(p: Placement) -> pb::StatePlacement {
    let (mode, min_children) = match p {
        Placement::Local => (pb::SpreadMode::Local, 0),
        Placement::Spread => (pb::SpreadMode::Spread, 0),
        Placement::Auto { min_children } => (pb::SpreadMode::Auto, min_children),
    };
    pb::StatePlacement {
        mode: mode as i32,
        min_children,
    }
}

pub(crate) fn to_pb(s: &Sharding) -> pb::Sharding {
    pb::Sharding {
        default_placement: Some(placement_pb(s.default)),
        states: s
            .states
            .iter()
            .map(|(k, v)| (k.clone(), placement_pb(*v)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEF: &str = r#"{"StartAt":"P","States":{"P":{"Type":"Parallel","Branches":[{"StartAt":"X","States":{"X":{"Type":"Pass","End":true}}}],"End":true}}}"#;

    fn at(mode: pb::SpreadMode, min_children: u32) -> pb::StatePlacement {
        pb::StatePlacement {
            mode: mode as i32,
            min_children,
        }
    }

    #[test]
    fn a_policy_round_trips_through_its_grpc_form() {
        let req = pb::Sharding {
            default_placement: Some(at(pb::SpreadMode::Auto, 50)),
            states: [("P".to_string(), at(pb::SpreadMode::Spread, 0))].into(),
        };
        let s = from_pb(&req, DEF).unwrap();
        assert_eq!(s.default, Placement::Auto { min_children: 50 });
        assert_eq!(s.placement("P"), Placement::Spread);
        assert_eq!(to_pb(&s), req);
    }

    #[test]
    fn bad_policies_are_validation_errors() {
        let cases = [
            (at(pb::SpreadMode::Auto, 0), "AUTO needs minChildren"),
            (at(pb::SpreadMode::Spread, 3), "AUTO only"),
            (
                pb::StatePlacement {
                    mode: 9,
                    min_children: 0,
                },
                "not a spread mode",
            ),
        ];
        for (p, msg) in cases {
            let req = pb::Sharding {
                default_placement: Some(p),
                states: Default::default(),
            };
            let e = from_pb(&req, DEF).unwrap_err();
            assert_eq!(e.code, Code::ValidationException);
            assert!(e.message.contains(msg), "{}", e.message);
        }
        let req = pb::Sharding {
            default_placement: None,
            states: [("X".to_string(), at(pb::SpreadMode::Spread, 0))].into(),
        };
        let e = from_pb(&req, DEF).unwrap_err();
        assert!(e.message.contains("'X' is a Pass state"), "{}", e.message);
    }
}
