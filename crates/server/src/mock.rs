//! Step Functions Local's MockConfigFile format: `StateMachines.<name>.TestCases.<case>` maps
//! state names to entries of `MockedResponses`, whose keys are invocation numbers (`"0"`) or
//! inclusive ranges (`"1-3"`) and whose values are `{"Return": …}` or `{"Throw": {Error, Cause}}`.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::Value;

/// One mocked answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Mocked {
    Return(Value),
    Throw {
        error: Option<String>,
        cause: Option<String>,
    },
}

/// The responses of one test case, by state name.
#[derive(Debug, Default)]
pub struct MockCase {
    states: HashMap<String, Vec<(u64, u64, Mocked)>>,
    calls: HashMap<String, u64>,
}

impl MockCase {
    /// Loads `case` from a MockConfigFile document.
    pub fn load(doc: &Value, case: &str, machine: Option<&str>) -> Result<MockCase> {
        let machines = doc
            .get("StateMachines")
            .and_then(Value::as_object)
            .ok_or_else(|| anyhow!("mock config has no 'StateMachines' object"))?;
        let responses = doc
            .get("MockedResponses")
            .and_then(Value::as_object)
            .ok_or_else(|| anyhow!("mock config has no 'MockedResponses' object"))?;
        let mut found = None;
        for (name, m) in machines {
            if machine.is_some_and(|want| want != name) {
                continue;
            }
            if let Some(tc) = m.get("TestCases").and_then(|t| t.get(case)) {
                found = Some(tc);
                break;
            }
        }
        let tc = found
            .and_then(Value::as_object)
            .ok_or_else(|| anyhow!("test case '{case}' is not in the mock config"))?;
        let mut states = HashMap::new();
        for (state, resp) in tc {
            let resp_name = resp.as_str().ok_or_else(|| {
                anyhow!("test case '{case}': the response for state '{state}' must be a name")
            })?;
            let entries = responses
                .get(resp_name)
                .and_then(Value::as_object)
                .ok_or_else(|| anyhow!("mocked response '{resp_name}' is not defined"))?;
            let mut list = Vec::new();
            for (key, v) in entries {
                let (lo, hi) =
                    parse_range(key).with_context(|| format!("mocked response '{resp_name}'"))?;
                let m = if let Some(r) = v.get("Return") {
                    Mocked::Return(r.clone())
                } else if let Some(t) = v.get("Throw") {
                    Mocked::Throw {
                        error: t.get("Error").and_then(Value::as_str).map(str::to_string),
                        cause: t.get("Cause").and_then(Value::as_str).map(str::to_string),
                    }
                } else {
                    bail!("mocked response '{resp_name}' entry '{key}' needs 'Return' or 'Throw'");
                };
                list.push((lo, hi, m));
            }
            list.sort_by_key(|(lo, _, _)| *lo);
            states.insert(state.clone(), list);
        }
        Ok(MockCase {
            states,
            calls: HashMap::new(),
        })
    }

    /// The answer for the next invocation of `state`, if it is mocked. Past the last key the
    /// last response repeats.
    pub fn next(&mut self, state: &str) -> Option<Mocked> {
        let list = self.states.get(state)?;
        let n = self.calls.entry(state.to_string()).or_insert(0);
        let call = *n;
        *n += 1;
        list.iter()
            .find(|(lo, hi, _)| (*lo..=*hi).contains(&call))
            .or_else(|| list.last())
            .map(|(_, _, m)| m.clone())
    }
}

fn parse_range(key: &str) -> Result<(u64, u64)> {
    let bad =
        || anyhow!("invocation key '{key}' must be a number like \"0\" or a range like \"1-3\"");
    match key.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (
                a.trim().parse().map_err(|_| bad())?,
                b.trim().parse().map_err(|_| bad())?,
            );
            if a > b {
                return Err(bad());
            }
            Ok((a, b))
        }
        None => {
            let n = key.trim().parse().map_err(|_| bad())?;
            Ok((n, n))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cycles_through_keys() {
        let doc = json!({
            "StateMachines": {"M": {"TestCases": {"Happy": {"T": "R"}}}},
            "MockedResponses": {"R": {
                "0": {"Throw": {"Error": "E", "Cause": "c"}},
                "1-2": {"Return": {"ok": 1}},
                "3": {"Return": {"ok": 2}}
            }}
        });
        let mut m = MockCase::load(&doc, "Happy", None).unwrap();
        assert_eq!(
            m.next("T"),
            Some(Mocked::Throw {
                error: Some("E".into()),
                cause: Some("c".into())
            })
        );
        assert_eq!(m.next("T"), Some(Mocked::Return(json!({"ok": 1}))));
        assert_eq!(m.next("T"), Some(Mocked::Return(json!({"ok": 1}))));
        assert_eq!(m.next("T"), Some(Mocked::Return(json!({"ok": 2}))));
        assert_eq!(m.next("T"), Some(Mocked::Return(json!({"ok": 2}))));
        assert_eq!(m.next("Other"), None);
        assert!(MockCase::load(&doc, "Nope", None).is_err());
        assert!(parse_range("3-1").is_err());
    }
}
