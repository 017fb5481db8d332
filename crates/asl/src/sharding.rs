//! Where an inline Map's iterations and a Parallel's branches run: inside the execution
//! (its own shard), or spread as child executions that hash to shards of their own.
//!
//! The policy belongs to a state machine and is set per state; the definition itself stays
//! what AWS accepts. A DISTRIBUTED Map always spreads and takes no policy. An execution
//! keeps the policy it started with (a change applies to executions started after it).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::definition::{Kind, MapMode, StateMachine};

/// How one state's children run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Placement {
    /// Inside the execution, in its shard (AWS's behaviour, and the default).
    #[default]
    Local,
    /// Every child is a child execution on the shard its ARN hashes to.
    Spread,
    /// Spread when the state has at least this many children (items or branches) when it
    /// starts, local otherwise.
    Auto { min_children: u32 },
}

impl Placement {
    /// Whether a state with `children` children spreads them.
    pub fn spreads(self, children: usize) -> bool {
        match self {
            Placement::Local => false,
            Placement::Spread => true,
            Placement::Auto { min_children } => children >= min_children as usize,
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placement::Local => f.write_str("local"),
            Placement::Spread => f.write_str("spread"),
            Placement::Auto { min_children } => write!(f, "auto:{min_children}"),
        }
    }
}

impl FromStr for Placement {
    type Err = String;

    /// `local`, `spread`, or `auto:N` (spread from N children up, N at least 1).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(Placement::Local),
            "spread" => Ok(Placement::Spread),
            _ => {
                let n = s.strip_prefix("auto:").ok_or_else(|| {
                    format!("'{s}' is not a placement: use local, spread or auto:N")
                })?;
                match n.parse::<u32>() {
                    Ok(n) if n >= 1 => Ok(Placement::Auto { min_children: n }),
                    _ => Err(format!(
                        "'{s}': the threshold of auto:N must be a whole number from 1 to {}",
                        u32::MAX
                    )),
                }
            }
        }
    }
}

/// A state machine's sharding policy: a placement for its inline Map and Parallel states,
/// by name, and one for the states it does not name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Sharding {
    #[serde(default)]
    pub default: Placement,
    #[serde(default)]
    pub states: BTreeMap<String, Placement>,
}

impl Sharding {
    /// Everything runs inside the execution.
    pub fn is_local(&self) -> bool {
        self.default == Placement::Local && self.states.values().all(|p| *p == Placement::Local)
    }

    /// The placement of a state.
    pub fn placement(&self, state: &str) -> Placement {
        self.states.get(state).copied().unwrap_or(self.default)
    }

    /// Whether a state with `children` children spreads them.
    pub fn spreads(&self, state: &str, children: usize) -> bool {
        self.placement(state).spreads(children)
    }

    /// Checks the policy against a definition: every state it names is an inline Map or a
    /// Parallel state of it. The error says which is not, and why.
    pub fn check(&self, sm: &StateMachine) -> Result<(), String> {
        for name in self.states.keys() {
            let state = sm
                .blocks
                .iter()
                .flat_map(|b| b.by_name.get(name).map(|id| &b.states[*id]))
                .next()
                .ok_or_else(|| format!("the state machine has no state named '{name}'"))?;
            match &state.kind {
                Kind::Parallel { .. } => {}
                Kind::Map { mode, .. } if *mode == MapMode::Inline => {}
                Kind::Map { .. } => {
                    return Err(format!(
                        "'{name}' is a DISTRIBUTED Map, whose children always spread: it takes no placement"
                    ))
                }
                _ => {
                    return Err(format!(
                        "'{name}' is a {} state: only inline Map and Parallel states spread",
                        state.type_name
                    ))
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placements_read_and_print_the_same() {
        for s in ["local", "spread", "auto:1", "auto:250"] {
            let p: Placement = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
        }
        for bad in [
            "",
            "Spread",
            "auto",
            "auto:0",
            "auto:-1",
            "auto:x",
            "auto:99999999999",
        ] {
            assert!(bad.parse::<Placement>().is_err(), "{bad}");
        }
    }

    #[test]
    fn auto_spreads_from_its_threshold_up() {
        let p = Placement::Auto { min_children: 3 };
        assert!(!p.spreads(2));
        assert!(p.spreads(3));
        assert!(Placement::Spread.spreads(0));
        assert!(!Placement::Local.spreads(1_000_000));
    }

    #[test]
    fn a_named_state_overrides_the_default() {
        let s = Sharding {
            default: Placement::Auto { min_children: 10 },
            states: [("A".to_string(), Placement::Local)].into(),
        };
        assert!(!s.spreads("A", 100));
        assert!(s.spreads("B", 10));
        assert!(!s.spreads("B", 9));
        assert!(!s.is_local());
        assert!(Sharding::default().is_local());
    }

    #[test]
    fn a_policy_names_only_inline_map_and_parallel_states() {
        let def = r#"{"StartAt":"P","States":{
            "P":{"Type":"Parallel","Branches":[{"StartAt":"M","States":{"M":{"Type":"Map","ItemProcessor":{"StartAt":"X","States":{"X":{"Type":"Pass","End":true}}},"End":true}}}],"Next":"D"},
            "D":{"Type":"Map","ItemProcessor":{"ProcessorConfig":{"Mode":"DISTRIBUTED","ExecutionType":"STANDARD"},"StartAt":"Y","States":{"Y":{"Type":"Pass","End":true}}},"End":true}}}"#;
        let sm = crate::parse(def, Default::default()).unwrap();
        let with = |name: &str| Sharding {
            default: Placement::Local,
            states: [(name.to_string(), Placement::Spread)].into(),
        };
        assert!(with("P").check(&sm).is_ok());
        // A state inside a branch is named as well.
        assert!(with("M").check(&sm).is_ok());
        assert!(with("D").check(&sm).unwrap_err().contains("DISTRIBUTED"));
        assert!(with("X").check(&sm).unwrap_err().contains("Pass state"));
        assert!(with("Nope")
            .check(&sm)
            .unwrap_err()
            .contains("no state named"));
    }
}
