//! What a principal may do: statements over actions and resource ARNs, as IAM's
//! identity-based policies have them, and three built-in roles.
//!
//! Actions are `states:<Operation>` for the Step Functions operations (on the AWS API and
//! their gRPC twins) and `trellis:<Method>` for the cluster's Admin service. Patterns take
//! `*` (any run of characters) and `?` (one); actions match without regard to case,
//! resources exactly. A call that names no resource (a List) is checked against the resource
//! `*`, which only a statement whose resources include `*` covers, as in IAM. An explicit
//! `Deny` wins over any `Allow`; with neither, the call is denied.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    Allow,
    Deny,
}

/// One statement of a policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    pub effect: Effect,
    pub actions: Vec<String>,
    /// ARN patterns; all resources when absent.
    #[serde(default = "all_resources")]
    pub resources: Vec<String>,
}

fn all_resources() -> Vec<String> {
    vec!["*".into()]
}

/// A built-in role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Describe, list and read histories; validate definitions; read the cluster's state.
    ReadOnly,
    /// `read-only`, and run executions and activities: start, stop, redrive, pause and
    /// resume executions, answer task tokens, poll, create and delete activities, update
    /// Map Runs.
    Operator,
    /// Everything: state machines, versions, aliases, tags, the cluster and its shards.
    Admin,
}

const READ_ONLY: &[&str] = &[
    "states:Describe*",
    "states:List*",
    "states:GetExecutionHistory",
    // gRPC only: a stream of an execution's events.
    "states:WatchExecution",
    "states:ValidateStateMachineDefinition",
    "trellis:ClusterStatus",
    "trellis:ListNodes",
    "trellis:ListShards",
    "trellis:Doctor",
];

const OPERATOR: &[&str] = &[
    "states:StartExecution",
    "states:StartSyncExecution",
    "states:StopExecution",
    "states:RedriveExecution",
    "states:PauseExecution",
    "states:ResumeExecution",
    "states:SendTask*",
    "states:GetActivityTask",
    "states:CreateActivity",
    "states:DeleteActivity",
    "states:UpdateMapRun",
];

impl Role {
    pub fn statement(self) -> Statement {
        let actions: Vec<&str> = match self {
            Role::ReadOnly => READ_ONLY.to_vec(),
            Role::Operator => READ_ONLY.iter().chain(OPERATOR).copied().collect(),
            Role::Admin => vec!["*"],
        };
        Statement {
            effect: Effect::Allow,
            actions: actions.into_iter().map(String::from).collect(),
            resources: all_resources(),
        }
    }
}

/// What a policy says of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// A `Deny` statement covers it.
    ExplicitDeny,
    /// No statement allows it.
    NoAllow,
}

/// A principal's policy: its roles' statements and its own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    statements: Vec<Statement>,
}

impl Policy {
    pub fn new(roles: &[Role], statements: &[Statement]) -> Policy {
        let mut all: Vec<Statement> = roles.iter().map(|r| r.statement()).collect();
        all.extend_from_slice(statements);
        Policy { statements: all }
    }

    /// Whether `action` on `resource` (`*` for a call that names none) is allowed.
    pub fn decide(&self, action: &str, resource: &str) -> Decision {
        let covers = |s: &&Statement| {
            s.actions.iter().any(|p| glob(p, action, true))
                && s.resources.iter().any(|p| glob(p, resource, false))
        };
        let mut allowed = false;
        for s in self.statements.iter().filter(covers) {
            match s.effect {
                Effect::Deny => return Decision::ExplicitDeny,
                Effect::Allow => allowed = true,
            }
        }
        if allowed {
            Decision::Allow
        } else {
            Decision::NoAllow
        }
    }
}

/// Whether `text` matches `pattern` (`*` any run, `?` one character). Iterative, with one
/// point to come back to: linear in practice, never exponential.
pub fn glob(pattern: &str, text: &str, ignore_case: bool) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let eq = |a: char, b: char| {
        if ignore_case {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut i, mut j) = (0, 0);
    let mut back: Option<(usize, usize)> = None;
    while j < t.len() {
        if i < p.len() && p[i] == '*' {
            back = Some((i, j));
            i += 1;
        } else if i < p.len() && (p[i] == '?' || eq(p[i], t[j])) {
            i += 1;
            j += 1;
        } else if let Some((bi, bj)) = back {
            i = bi + 1;
            j = bj + 1;
            back = Some((bi, bj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "arn:aws:states:us-east-1:000000000000:stateMachine:orders";

    #[test]
    fn globs() {
        assert!(glob("*", "", false));
        assert!(glob("*", "*", false));
        assert!(glob("states:*", "states:StartExecution", false));
        assert!(glob("states:start*", "states:StartExecution", true));
        assert!(!glob("states:start*", "states:StartExecution", false));
        assert!(glob("a?c", "abc", false) && !glob("a?c", "abbc", false));
        assert!(glob("*:stateMachine:ord*", M, false));
        assert!(!glob("*:stateMachine:ord*", "*", false));
        assert!(glob("a*b*c", "aXXbYYbZc", false));
        assert!(!glob("a*b*c", "aXXbYYbZ", false));
        // A pathological pattern ends quickly.
        let long = "a".repeat(5000);
        assert!(!glob(
            &"*a".repeat(100).to_string().replace("a", "a*b"),
            &long,
            false
        ));
    }

    #[test]
    fn roles_cover_what_they_say() {
        let ro = Policy::new(&[Role::ReadOnly], &[]);
        assert_eq!(ro.decide("states:DescribeExecution", M), Decision::Allow);
        assert_eq!(ro.decide("states:ListStateMachines", "*"), Decision::Allow);
        assert_eq!(ro.decide("states:StartExecution", M), Decision::NoAllow);
        assert_eq!(ro.decide("trellis:DrainNode", "*"), Decision::NoAllow);
        let op = Policy::new(&[Role::Operator], &[]);
        assert_eq!(op.decide("states:StartExecution", M), Decision::Allow);
        assert_eq!(op.decide("states:SendTaskSuccess", "*"), Decision::Allow);
        assert_eq!(op.decide("states:CreateStateMachine", M), Decision::NoAllow);
        assert_eq!(op.decide("trellis:MoveShard", "*"), Decision::NoAllow);
        let admin = Policy::new(&[Role::Admin], &[]);
        assert_eq!(admin.decide("trellis:MoveShard", "*"), Decision::Allow);
        assert_eq!(
            Policy::default().decide("states:ListActivities", "*"),
            Decision::NoAllow
        );
    }

    #[test]
    fn resources_narrow_and_deny_wins() {
        let s: Vec<Statement> = toml::from_str::<Wrap>(
            r#"
            [[s]]
            effect = "Allow"
            actions = ["states:StartExecution", "states:Describe*"]
            resources = ["arn:aws:states:*:*:stateMachine:ord*", "arn:aws:states:*:*:execution:ord*:*"]
            [[s]]
            effect = "Deny"
            actions = ["states:DescribeExecution"]
            resources = ["arn:aws:states:*:*:execution:orders:secret*"]
            "#,
        )
        .unwrap()
        .s;
        let p = Policy::new(&[], &s);
        assert_eq!(p.decide("states:StartExecution", M), Decision::Allow);
        let other = M.replace("orders", "billing");
        assert_eq!(p.decide("states:StartExecution", &other), Decision::NoAllow);
        let e = "arn:aws:states:us-east-1:000000000000:execution:orders:e1";
        assert_eq!(p.decide("states:DescribeExecution", e), Decision::Allow);
        let secret = "arn:aws:states:us-east-1:000000000000:execution:orders:secret-1";
        assert_eq!(
            p.decide("states:DescribeExecution", secret),
            Decision::ExplicitDeny
        );
        // A List names no resource: only `*` covers it.
        assert_eq!(
            p.decide("states:DescribeStateMachine", "*"),
            Decision::NoAllow
        );
        // A role and a deny together: the deny wins.
        let p = Policy::new(&[Role::Admin], &s);
        assert_eq!(
            p.decide("states:DescribeExecution", secret),
            Decision::ExplicitDeny
        );
        assert_eq!(p.decide("states:DeleteStateMachine", M), Decision::Allow);
    }

    #[derive(Deserialize)]
    struct Wrap {
        s: Vec<Statement>,
    }
}
