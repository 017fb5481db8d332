//! Checks that need the whole definition rather than one field: AWS's validation warnings
//! (`NO_DOLLAR`, `NO_PATH`, `PASS_RESULT_IS_STATIC`) and the variable scoping rules.
//!
//! They run over the raw JSON after the main pass, so they see every state, also in a
//! definition with errors, and never change what the main pass built.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::{ptr, Diagnostic, Severity};

/// Does a string look like a JSONPath or an intrinsic function call?
fn looks_dynamic(s: &str) -> bool {
    looks_like_path(s) || (s.starts_with("States.") && s.contains('(') && s.ends_with(')'))
}

fn looks_like_path(s: &str) -> bool {
    s.starts_with("$.") || s.starts_with("$[") || s.starts_with("$$.") || s == "$$"
}

/// Choice comparators whose operand is a literal string: a path there is a missed `…Path`.
const STRING_OPERATORS: [&str; 10] = [
    "StringEquals",
    "StringLessThan",
    "StringGreaterThan",
    "StringLessThanEquals",
    "StringGreaterThanEquals",
    "TimestampEquals",
    "TimestampLessThan",
    "TimestampGreaterThan",
    "TimestampLessThanEquals",
    "TimestampGreaterThanEquals",
];

/// A Map's tolerated-failure fields.
const TOLERANCE: [&str; 4] = [
    "ToleratedFailureCount",
    "ToleratedFailureCountPath",
    "ToleratedFailurePercentage",
    "ToleratedFailurePercentagePath",
];

struct Lint<'a> {
    diags: &'a mut Vec<Diagnostic>,
}

impl Lint<'_> {
    fn warn(&mut self, code: &str, message: String, location: String) {
        self.diags.push(Diagnostic {
            severity: Severity::Warning,
            code: code.into(),
            message,
            location,
        });
    }

    fn error(&mut self, message: String, location: String) {
        self.diags.push(Diagnostic {
            severity: Severity::Error,
            code: "SCHEMA_VALIDATION_FAILED".into(),
            message,
            location,
        });
    }

    /// NO_DOLLAR: a static field of a payload template whose value looks dynamic.
    fn template(&mut self, v: &Value, loc: &str) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    let at = format!("{loc}/{}", ptr(k));
                    match v {
                        Value::String(s) if !k.ends_with(".$") && looks_dynamic(s) => self.warn(
                            "NO_DOLLAR",
                            format!(
                                "The value of field '{k}' looks like a JSONPath or an intrinsic \
                                 function, but the field name does not end with '.$': it is \
                                 passed as a literal string"
                            ),
                            at,
                        ),
                        Value::Object(_) | Value::Array(_) if !k.ends_with(".$") => {
                            self.template(v, &at)
                        }
                        _ => {}
                    }
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    self.template(v, &format!("{loc}/{i}"));
                }
            }
            _ => {}
        }
    }

    /// PASS_RESULT_IS_STATIC: `key.$` inside a Pass state's `Result`.
    fn pass_result(&mut self, v: &Value, loc: &str) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    let at = format!("{loc}/{}", ptr(k));
                    if k.ends_with(".$") {
                        self.warn(
                            "PASS_RESULT_IS_STATIC",
                            format!(
                                "The field '{k}' of a Pass state's Result is not evaluated: \
                                 Result is static; use Parameters to select input"
                            ),
                            at.clone(),
                        );
                    }
                    self.pass_result(v, &at);
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    self.pass_result(v, &format!("{loc}/{i}"));
                }
            }
            _ => {}
        }
    }

    /// NO_PATH in Choice rules (recursing through And/Or/Not).
    fn rule(&mut self, rule: &Map<String, Value>, loc: &str) {
        for key in ["And", "Or"] {
            if let Some(Value::Array(items)) = rule.get(key) {
                for (i, r) in items.iter().enumerate() {
                    if let Some(r) = r.as_object() {
                        self.rule(r, &format!("{loc}/{key}/{i}"));
                    }
                }
            }
        }
        if let Some(Value::Object(r)) = rule.get("Not") {
            self.rule(r, &format!("{loc}/Not"));
        }
        for op in STRING_OPERATORS {
            if let Some(Value::String(s)) = rule.get(op) {
                if looks_like_path(s) {
                    self.warn(
                        "NO_PATH",
                        format!(
                            "The value of '{op}' looks like a path, but the field name does not \
                             end with 'Path': use '{op}Path' to compare with the value at '{s}'"
                        ),
                        format!("{loc}/{op}"),
                    );
                }
            }
        }
    }

    /// Walks one `{StartAt, States}` block.
    ///
    /// `outer` holds the variable names assigned in enclosing scopes: a nested Parallel
    /// branch or inline Map iteration may read them but not assign them (nor shadow them).
    fn block(&mut self, block: &Map<String, Value>, at: &str, ql: &str, outer: &BTreeSet<String>) {
        let Some(Value::Object(states)) = block.get("States") else {
            return;
        };
        let block_ql = block
            .get("QueryLanguage")
            .and_then(Value::as_str)
            .unwrap_or(ql);
        // Names this block assigns, for its nested blocks.
        let mut scope = outer.clone();
        let mut assigned = Vec::new();
        for (name, s) in states {
            let Some(s) = s.as_object() else { continue };
            let loc = format!("{at}/States/{}", ptr(name));
            collect_assigns(s, &loc, &mut assigned);
        }
        if !outer.is_empty() {
            for (var, loc) in &assigned {
                if outer.contains(var) {
                    self.error(
                        format!(
                            "The variable '{var}' is assigned in an outer scope: a Parallel \
                             branch or Map iteration can read it but cannot assign it"
                        ),
                        loc.clone(),
                    );
                }
            }
        }
        scope.extend(assigned.into_iter().map(|(v, _)| v));

        for (name, s) in states {
            let Some(s) = s.as_object() else { continue };
            let loc = format!("{at}/States/{}", ptr(name));
            let state_ql = s
                .get("QueryLanguage")
                .and_then(Value::as_str)
                .unwrap_or(block_ql);
            if state_ql == "JSONPath" {
                self.state_warnings(s, &loc);
            }
            if let Some(Value::Array(branches)) = s.get("Branches") {
                for (i, b) in branches.iter().enumerate() {
                    if let Some(b) = b.as_object() {
                        self.block(b, &format!("{loc}/Branches/{i}"), state_ql, &scope);
                    }
                }
            }
            for key in ["ItemProcessor", "Iterator"] {
                if let Some(Value::Object(p)) = s.get(key) {
                    let distributed = p
                        .get("ProcessorConfig")
                        .and_then(|c| c.get("Mode"))
                        .and_then(Value::as_str)
                        == Some("DISTRIBUTED");
                    // AWS accepts tolerated failures on an INLINE Map, where they
                    // change nothing (an iteration's failure fails the state).
                    for t in TOLERANCE
                        .iter()
                        .filter(|t| !distributed && s.contains_key(**t))
                    {
                        self.warn(
                            "INLINE_MAP_TOLERANCE",
                            format!("The field '{t}' has no effect on an INLINE Map: any failed iteration fails the state"),
                            format!("{loc}/{t}"),
                        );
                    }
                    let rc = s
                        .get("ItemReader")
                        .and_then(|r| r.get("ReaderConfig"))
                        .filter(|_| distributed);
                    for (k, v) in [
                        ("InputType", "PARQUET"),
                        ("ManifestType", "ATHENA_DATA"),
                        ("Transformation", "LOAD_AND_FLATTEN"),
                    ] {
                        if rc.and_then(|c| c.get(k)).is_some_and(|x| x == v) {
                            self.warn(
                                "TRELLIS_UNSUPPORTED",
                                format!("The {k} {v} is not supported by Trellis: the state fails with States.ItemReaderFailed"),
                                format!("{loc}/ItemReader/ReaderConfig/{k}"),
                            );
                        }
                    }
                    // Distributed children are separate executions: they see no outer
                    // variables, so nothing can clash.
                    let inner = if distributed {
                        BTreeSet::new()
                    } else {
                        scope.clone()
                    };
                    self.block(p, &format!("{loc}/{key}"), state_ql, &inner);
                }
            }
        }
    }

    fn state_warnings(&mut self, s: &Map<String, Value>, loc: &str) {
        for key in ["Parameters", "ResultSelector", "ItemSelector", "Assign"] {
            if let Some(v) = s.get(key) {
                self.template(v, &format!("{loc}/{key}"));
            }
        }
        if let Some(Value::Object(c)) = s.get("Credentials") {
            self.template(&Value::Object(c.clone()), &format!("{loc}/Credentials"));
        }
        if s.get("Type").and_then(Value::as_str) == Some("Pass") {
            if let Some(r) = s.get("Result") {
                self.pass_result(r, &format!("{loc}/Result"));
            }
        }
        if s.get("Type").and_then(Value::as_str) == Some("Fail") {
            for key in ["Error", "Cause"] {
                if let Some(Value::String(v)) = s.get(key) {
                    if looks_dynamic(v) {
                        self.warn(
                            "NO_PATH",
                            format!(
                                "The value of '{key}' looks like a path, but the field name \
                                 does not end with 'Path': use '{key}Path' to read it"
                            ),
                            format!("{loc}/{key}"),
                        );
                    }
                }
            }
        }
        if let Some(Value::Array(choices)) = s.get("Choices") {
            for (i, c) in choices.iter().enumerate() {
                if let Some(c) = c.as_object() {
                    let at = format!("{loc}/Choices/{i}");
                    self.rule(c, &at);
                    if let Some(a) = c.get("Assign") {
                        self.template(a, &format!("{at}/Assign"));
                    }
                }
            }
        }
        if let Some(Value::Array(catchers)) = s.get("Catch") {
            for (i, c) in catchers.iter().enumerate() {
                if let Some(a) = c.get("Assign") {
                    self.template(a, &format!("{loc}/Catch/{i}/Assign"));
                }
            }
        }
    }
}

/// The variables a state assigns, with where: its own `Assign`, its Choice rules' and its
/// catchers'. (A catcher of a Parallel or Map state belongs to the enclosing scope, like the
/// state itself.)
fn collect_assigns(s: &Map<String, Value>, loc: &str, out: &mut Vec<(String, String)>) {
    let mut add = |assign: Option<&Value>, at: String| {
        if let Some(Value::Object(m)) = assign {
            for k in m.keys() {
                let name = k.strip_suffix(".$").unwrap_or(k);
                out.push((name.to_string(), format!("{at}/{}", ptr(k))));
            }
        }
    };
    add(s.get("Assign"), format!("{loc}/Assign"));
    for list in ["Choices", "Catch"] {
        if let Some(Value::Array(items)) = s.get(list) {
            for (i, item) in items.iter().enumerate() {
                add(item.get("Assign"), format!("{loc}/{list}/{i}/Assign"));
            }
        }
    }
}

/// Runs every whole-definition check over a parsed JSON definition.
pub(super) fn lint(def: &Value, diags: &mut Vec<Diagnostic>) {
    let Some(top) = def.as_object() else { return };
    let ql = top
        .get("QueryLanguage")
        .and_then(Value::as_str)
        .unwrap_or("JSONPath");
    Lint { diags }.block(top, "", ql, &BTreeSet::new());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(def: Value) -> Vec<(Severity, String, String)> {
        let mut d = Vec::new();
        lint(&def, &mut d);
        d.into_iter()
            .map(|d| (d.severity, d.code, d.location))
            .collect()
    }

    #[test]
    fn no_dollar_in_templates() {
        let got = run(json!({"StartAt": "P", "States": {"P": {"Type": "Pass",
            "Parameters": {"a": "$.x", "b.$": "$.y", "c": {"d": "States.Format('{}', $.z)"},
                           "e": "cost in $", "f": [{"g": "$$.Execution.Id"}, "$.not-a-field"]},
            "End": true}}}));
        assert_eq!(
            got,
            vec![
                (
                    Severity::Warning,
                    "NO_DOLLAR".into(),
                    "/States/P/Parameters/a".into()
                ),
                (
                    Severity::Warning,
                    "NO_DOLLAR".into(),
                    "/States/P/Parameters/c/d".into()
                ),
                (
                    Severity::Warning,
                    "NO_DOLLAR".into(),
                    "/States/P/Parameters/f/0/g".into()
                ),
            ]
        );
    }

    #[test]
    fn jsonata_states_are_not_linted_for_paths() {
        let got = run(
            json!({"QueryLanguage": "JSONata", "StartAt": "P", "States": {
            "P": {"Type": "Pass", "Output": {"a": "$.x"}, "End": true}}}),
        );
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn no_path_and_static_result() {
        let got = run(json!({"StartAt": "C", "States": {
            "C": {"Type": "Choice", "Choices": [
                {"Not": {"Variable": "$.a", "StringEquals": "$.b"}, "Next": "P"}],
                "Default": "F"},
            "P": {"Type": "Pass", "Result": {"x": {"y.$": "$.z"}}, "End": true},
            "F": {"Type": "Fail", "Error": "$.err"}}}));
        assert_eq!(
            got,
            vec![
                (
                    Severity::Warning,
                    "NO_PATH".into(),
                    "/States/C/Choices/0/Not/StringEquals".into()
                ),
                (
                    Severity::Warning,
                    "PASS_RESULT_IS_STATIC".into(),
                    "/States/P/Result/x/y.$".into()
                ),
                (
                    Severity::Warning,
                    "NO_PATH".into(),
                    "/States/F/Error".into()
                ),
            ]
        );
    }

    #[test]
    fn inner_scopes_cannot_assign_outer_variables() {
        let got = run(json!({"StartAt": "A", "States": {
            "A": {"Type": "Pass", "Assign": {"count": 1}, "Next": "P"},
            "P": {"Type": "Parallel", "Branches": [
                {"StartAt": "B", "States": {"B": {"Type": "Pass",
                    "Assign": {"count.$": "$.n", "local": 2}, "End": true}}},
                {"StartAt": "M", "States": {"M": {"Type": "Map", "ItemProcessor": {
                    "StartAt": "I", "States": {"I": {"Type": "Pass", "Assign": {"local": 3},
                    "End": true}}}, "End": true}}}],
              "Catch": [{"ErrorEquals": ["States.ALL"], "Assign": {"count": 0}, "Next": "D"}],
              "Next": "D"},
            "D": {"Type": "Succeed"}}}));
        // `local` in two sibling branches is fine; `count` inside a branch is not; the
        // Parallel's own catcher assigns the outer scope and is fine.
        assert_eq!(
            got,
            vec![(
                Severity::Error,
                "SCHEMA_VALIDATION_FAILED".into(),
                "/States/P/Branches/0/States/B/Assign/count.$".into()
            )]
        );
    }

    #[test]
    fn distributed_children_have_their_own_scope() {
        let got = run(json!({"StartAt": "A", "States": {
            "A": {"Type": "Pass", "Assign": {"x": 1}, "Next": "M"},
            "M": {"Type": "Map", "ItemProcessor": {
                "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                "StartAt": "I", "States": {"I": {"Type": "Pass", "Assign": {"x": 2}, "End": true}}},
              "End": true}}}));
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn warnings_do_not_reject_a_definition() {
        let def = json!({"StartAt": "P", "States": {"P": {"Type": "Pass",
            "Parameters": {"a": "$.x"}, "Result": {"b.$": "$"}, "End": true}}});
        let diags = crate::validate::validate(&def.to_string(), Default::default());
        assert_eq!(diags.len(), 2, "{diags:?}");
        assert!(diags.iter().all(|d| d.severity == Severity::Warning));
        assert!(crate::parse(&def.to_string(), Default::default()).is_ok());
    }
}
