//! Parsing and validation of definitions (checklist §1, §1.5).
//!
//! One pass over the JSON builds the [`StateMachine`] and collects *every* problem as a
//! [`Diagnostic`] with AWS's codes and a JSON-pointer location. Nothing in here panics on any
//! input: every field access is checked.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::choice::{self, Condition, Rule};
use crate::definition::*;
use crate::error::{Error, Result};
use crate::intrinsics::{self, Call};
use crate::jsonata::{self, Expr};
use crate::path::{Path, Root};
use crate::template::Template;

mod distributed;
mod lint;

/// Diagnostic severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem, in the shape of AWS's `ValidateStateMachineDefinitionDiagnostic`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: String,
    pub message: String,
    pub location: String,
}

/// Options that change what is valid.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Validate for an EXPRESS state machine (no activities, `.sync` or `.waitForTaskToken`).
    pub express: bool,
}

/// Maximum definition size in characters.
pub const MAX_DEFINITION_CHARS: usize = 1_048_576;
/// Maximum state name length.
pub const MAX_NAME_LEN: usize = 80;

/// The text AWS puts inside `Invalid State Machine Definition: '…'`.
pub fn summary(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| format!("{}: {} at {}", d.code, d.message, d.location))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses and validates a definition given as text.
pub fn parse(text: &str, opts: Options) -> Result<Arc<StateMachine>> {
    let (sm, diags) = check(text, opts);
    match sm {
        Some(sm) if !diags.iter().any(|d| d.severity == Severity::Error) => Ok(Arc::new(sm)),
        _ => Err(Error::InvalidDefinition(diags)),
    }
}

/// Validates a definition and returns every diagnostic (empty when it is valid).
pub fn validate(text: &str, opts: Options) -> Vec<Diagnostic> {
    check(text, opts).1
}

fn check(text: &str, opts: Options) -> (Option<StateMachine>, Vec<Diagnostic>) {
    let mut p = Parser {
        diags: Vec::new(),
        blocks: Vec::new(),
        top_ql: QueryLanguage::JsonPath,
        names: HashSet::new(),
        opts,
    };
    if text.trim().is_empty() {
        p.err("MISSING_DESCRIPTION", "The definition is empty", "/");
        return (None, p.diags);
    }
    if text.chars().count() > MAX_DEFINITION_CHARS {
        p.err(
            "SCHEMA_VALIDATION_FAILED",
            &format!("The definition is longer than {MAX_DEFINITION_CHARS} characters"),
            "/",
        );
        return (None, p.diags);
    }
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            p.err(
                "INVALID_JSON_DESCRIPTION",
                &format!("The definition is not valid JSON: {e}"),
                "/",
            );
            return (None, p.diags);
        }
    };
    let sm = p.machine(&value);
    lint::lint(&value, &mut p.diags);
    (sm, p.diags)
}

struct Parser {
    diags: Vec<Diagnostic>,
    blocks: Vec<Block>,
    top_ql: QueryLanguage,
    names: HashSet<String>,
    opts: Options,
}

const TYPES: [&str; 8] = [
    "Pass", "Task", "Choice", "Wait", "Succeed", "Fail", "Parallel", "Map",
];

const JSONPATH_ONLY: [&str; 17] = [
    "InputPath",
    "OutputPath",
    "Parameters",
    "ResultSelector",
    "ResultPath",
    "Result",
    "TimeoutSecondsPath",
    "HeartbeatSecondsPath",
    "SecondsPath",
    "TimestampPath",
    "ErrorPath",
    "CausePath",
    "ItemsPath",
    "MaxConcurrencyPath",
    "ToleratedFailureCountPath",
    "ToleratedFailurePercentagePath",
    "Iterator",
];
const JSONATA_ONLY: [&str; 3] = ["Arguments", "Output", "Items"];

fn fields_of(ty: &str) -> &'static [&'static str] {
    match ty {
        "Pass" => &[
            "Next",
            "End",
            "InputPath",
            "OutputPath",
            "Parameters",
            "ResultPath",
            "Result",
            "Output",
            "Assign",
        ],
        "Task" => &[
            "Next",
            "End",
            "InputPath",
            "OutputPath",
            "Parameters",
            "ResultSelector",
            "ResultPath",
            "Arguments",
            "Output",
            "Assign",
            "Retry",
            "Catch",
            "Resource",
            "TimeoutSeconds",
            "TimeoutSecondsPath",
            "HeartbeatSeconds",
            "HeartbeatSecondsPath",
            "Credentials",
        ],
        "Choice" => &[
            "InputPath",
            "OutputPath",
            "Output",
            "Assign",
            "Choices",
            "Default",
        ],
        "Wait" => &[
            "Next",
            "End",
            "InputPath",
            "OutputPath",
            "Output",
            "Assign",
            "Seconds",
            "Timestamp",
            "SecondsPath",
            "TimestampPath",
        ],
        "Succeed" => &["InputPath", "OutputPath", "Output"],
        "Fail" => &["Error", "Cause", "ErrorPath", "CausePath"],
        "Parallel" => &[
            "Next",
            "End",
            "InputPath",
            "OutputPath",
            "Parameters",
            "ResultSelector",
            "ResultPath",
            "Arguments",
            "Output",
            "Assign",
            "Retry",
            "Catch",
            "Branches",
        ],
        "Map" => &[
            "Next",
            "End",
            "InputPath",
            "OutputPath",
            "Parameters",
            "ResultSelector",
            "ResultPath",
            "Output",
            "Assign",
            "Retry",
            "Catch",
            "ItemProcessor",
            "Iterator",
            "ItemsPath",
            "Items",
            "ItemSelector",
            "MaxConcurrency",
            "MaxConcurrencyPath",
            "ItemReader",
            "ItemBatcher",
            "ResultWriter",
            "ToleratedFailureCount",
            "ToleratedFailureCountPath",
            "ToleratedFailurePercentage",
            "ToleratedFailurePercentagePath",
            "Label",
        ],
        _ => &[],
    }
}

fn ptr(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// A valid variable name: a letter or `_`, then letters, digits or `_`; at most 80 characters.
pub fn is_valid_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_NAME_LEN
        && name != "states"
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f < 1.8e19)
                .map(|f| f as u64)
        }),
        _ => None,
    }
}

impl Parser {
    fn err(&mut self, code: &str, message: &str, location: &str) {
        self.diags.push(Diagnostic {
            severity: Severity::Error,
            code: code.to_string(),
            message: message.to_string(),
            location: if location.is_empty() {
                "/".into()
            } else {
                location.to_string()
            },
        });
    }

    fn schema(&mut self, message: &str, location: &str) {
        self.err("SCHEMA_VALIDATION_FAILED", message, location);
    }

    fn machine(&mut self, v: &Value) -> Option<StateMachine> {
        let Some(obj) = v.as_object() else {
            self.schema("The definition must be a JSON object", "/");
            return None;
        };
        for k in obj.keys() {
            if ![
                "StartAt",
                "States",
                "Comment",
                "TimeoutSeconds",
                "Version",
                "QueryLanguage",
            ]
            .contains(&k.as_str())
            {
                self.schema(
                    &format!("The field '{k}' is not supported by Step Functions"),
                    "/",
                );
            }
        }
        self.top_ql = match obj.get("QueryLanguage") {
            None => QueryLanguage::JsonPath,
            Some(Value::String(s)) if s == "JSONPath" => QueryLanguage::JsonPath,
            Some(Value::String(s)) if s == "JSONata" => QueryLanguage::Jsonata,
            Some(_) => {
                self.schema(
                    "The field 'QueryLanguage' must be 'JSONPath' or 'JSONata'",
                    "/QueryLanguage",
                );
                QueryLanguage::JsonPath
            }
        };
        match obj.get("Version") {
            None => {}
            Some(Value::String(s)) if s == "1.0" => {}
            Some(_) => self.schema("The field 'Version' must be \"1.0\"", "/Version"),
        }
        let comment = match obj.get("Comment") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.schema("The field 'Comment' must be a string", "/Comment");
                None
            }
        };
        let timeout_seconds = match obj.get("TimeoutSeconds") {
            None => None,
            Some(v) => match as_u64(v).filter(|n| *n > 0) {
                Some(n) => Some(n),
                None => {
                    self.schema(
                        "The field 'TimeoutSeconds' must be a positive integer",
                        "/TimeoutSeconds",
                    );
                    None
                }
            },
        };
        let mut missing = Vec::new();
        for f in ["StartAt", "States"] {
            if !obj.contains_key(f) {
                missing.push(f);
            }
        }
        if !missing.is_empty() {
            self.schema(
                &format!("These fields are required: [{}]", missing.join(", ")),
                "/",
            );
            return None;
        }
        self.block(obj, "")?;
        Some(StateMachine {
            comment,
            query_language: self.top_ql,
            timeout_seconds,
            blocks: std::mem::take(&mut self.blocks),
        })
    }

    /// Parses a `{StartAt, States}` object; returns its block id.
    fn block(&mut self, obj: &Map<String, Value>, at: &str) -> Option<BlockId> {
        let id = self.blocks.len();
        self.blocks.push(Block {
            start_at: 0,
            states: Vec::new(),
            by_name: HashMap::new(),
            source: None,
        });
        let states = match obj.get("States") {
            Some(Value::Object(m)) if !m.is_empty() => m,
            Some(Value::Object(_)) => {
                self.schema(
                    "The field 'States' must have at least one state",
                    &format!("{at}/States"),
                );
                return None;
            }
            Some(_) => {
                self.schema(
                    "The field 'States' must be an object",
                    &format!("{at}/States"),
                );
                return None;
            }
            None => {
                self.schema(
                    "These fields are required: [States]",
                    if at.is_empty() { "/" } else { at },
                );
                return None;
            }
        };
        let mut by_name = HashMap::new();
        for (i, name) in states.keys().enumerate() {
            let loc = format!("{at}/States/{}", ptr(name));
            if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
                self.err(
                    "INVALID_STATE_NAME",
                    &format!("State name '{name}' must be 1 to {MAX_NAME_LEN} characters long"),
                    &loc,
                );
            } else if name.chars().any(|c| c.is_control()) {
                self.err(
                    "INVALID_STATE_NAME",
                    &format!("State name '{name}' contains control characters"),
                    &loc,
                );
            }
            if !self.names.insert(name.clone()) {
                self.err(
                    "DUPLICATE_STATE_NAME",
                    &format!("Duplicate State name: {name}"),
                    &loc,
                );
            }
            by_name.insert(name.clone(), i);
        }
        let start_at = match obj.get("StartAt") {
            Some(Value::String(s)) => match by_name.get(s) {
                Some(i) => Some(*i),
                None => {
                    self.err(
                        "MISSING_TRANSITION_TARGET",
                        &format!("Missing 'Next' target: {s}"),
                        &format!("{at}/StartAt"),
                    );
                    None
                }
            },
            Some(_) => {
                self.schema(
                    "The field 'StartAt' must be a string",
                    &format!("{at}/StartAt"),
                );
                None
            }
            None => {
                self.schema(
                    "These fields are required: [StartAt]",
                    if at.is_empty() { "/" } else { at },
                );
                None
            }
        };
        let mut parsed = Vec::with_capacity(states.len());
        let mut ok = true;
        for (name, v) in states {
            let loc = format!("{at}/States/{}", ptr(name));
            match self.state(name, v, &loc, &by_name) {
                Some(s) => parsed.push(s),
                None => ok = false,
            }
        }
        let start_at = start_at?;
        if !ok {
            return None;
        }
        self.check_graph(&parsed, start_at, at);
        let b = &mut self.blocks[id];
        b.start_at = start_at;
        b.states = parsed;
        b.by_name = by_name;
        Some(id)
    }

    fn check_graph(&mut self, states: &[State], start: StateId, at: &str) {
        let mut seen = vec![false; states.len()];
        let mut queue = VecDeque::from([start]);
        seen[start] = true;
        let mut terminal = false;
        while let Some(i) = queue.pop_front() {
            let s = &states[i];
            let mut next: Vec<StateId> = Vec::new();
            match &s.transition {
                Some(Transition::Next(n)) => next.push(*n),
                Some(Transition::End) => terminal = true,
                None => {}
            }
            match &s.kind {
                Kind::Succeed | Kind::Fail { .. } => terminal = true,
                Kind::Choice { rules, default } => {
                    next.extend(rules.iter().map(|r| r.next));
                    next.extend(default.iter().copied());
                }
                _ => {}
            }
            next.extend(s.catch.iter().map(|c| c.next));
            for n in next {
                if !seen[n] {
                    seen[n] = true;
                    queue.push_back(n);
                }
            }
        }
        for (i, s) in states.iter().enumerate() {
            if !seen[i] {
                self.err(
                    "UNREACHABLE_STATE",
                    &format!("State '{}' is not reachable", s.name),
                    &format!("{at}/States/{}", ptr(&s.name)),
                );
            }
        }
        if !terminal {
            self.err(
                "MISSING_END_STATE",
                "Workflow has no terminal state",
                if at.is_empty() { "/" } else { at },
            );
        }
    }

    fn target(
        &mut self,
        v: &Value,
        by_name: &HashMap<String, StateId>,
        loc: &str,
    ) -> Option<StateId> {
        match v {
            Value::String(s) => match by_name.get(s) {
                Some(i) => Some(*i),
                None => {
                    self.err(
                        "MISSING_TRANSITION_TARGET",
                        &format!("Missing 'Next' target: {s}"),
                        loc,
                    );
                    None
                }
            },
            _ => {
                self.schema("The field 'Next' must be a string", loc);
                None
            }
        }
    }

    fn path_field(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        at: &str,
        reference: bool,
    ) -> PathField {
        match obj.get(key) {
            None => PathField::Default,
            Some(Value::Null) => PathField::Null,
            Some(Value::String(s)) => {
                match Path::parse(s) {
                    Ok(p) if reference && (*p.root() != Root::Input || !p.is_reference()) => {
                        self.schema(&format!("The value for the field '{key}' must be a valid reference path: '{s}'"), &format!("{at}/{key}"));
                        PathField::Default
                    }
                    Ok(p) => PathField::Path(p),
                    Err(e) => {
                        self.schema(
                            &format!(
                                "The value for the field '{key}' must be a valid JSONPath: {e}"
                            ),
                            &format!("{at}/{key}"),
                        );
                        PathField::Default
                    }
                }
            }
            Some(_) => {
                self.schema(
                    &format!("The field '{key}' must be a string or null"),
                    &format!("{at}/{key}"),
                );
                PathField::Default
            }
        }
    }

    fn simple_path(&mut self, v: &Value, key: &str, loc: &str) -> Option<Path> {
        match v.as_str().map(Path::parse) {
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => {
                self.schema(
                    &format!("The value for the field '{key}' must be a valid JSONPath: {e}"),
                    loc,
                );
                None
            }
            None => {
                self.schema(&format!("The field '{key}' must be a string"), loc);
                None
            }
        }
    }

    fn template(&mut self, v: &Value, ql: QueryLanguage, loc: &str) -> Option<Template> {
        let r = match ql {
            QueryLanguage::JsonPath => Template::jsonpath(v),
            QueryLanguage::Jsonata => Template::jsonata(v),
        };
        match r {
            Ok(t) => Some(t),
            Err(errs) => {
                for (sub, msg) in errs {
                    self.schema(&msg, &format!("{loc}{sub}"));
                }
                None
            }
        }
    }

    fn expr(&mut self, v: &Value, key: &str, loc: &str) -> Option<Template> {
        match v.as_str().and_then(jsonata::as_expression) {
            Some(src) => match Expr::compile(src) {
                Ok(e) => Some(Template::Jsonata(e)),
                Err(msg) => {
                    self.schema(&msg, loc);
                    None
                }
            },
            None => {
                self.schema(
                    &format!("The field '{key}' must be a JSONata expression '{{% ... %}}'"),
                    loc,
                );
                None
            }
        }
    }

    /// A number field that may also be given as `…Path` (JSONPath) or `{% %}` (JSONata).
    #[allow(clippy::too_many_arguments)]
    fn dynamic(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        ql: QueryLanguage,
        at: &str,
        valid: fn(&Value) -> bool,
        want: &str,
    ) -> Option<Dynamic> {
        let pkey = format!("{key}Path");
        let (fixed, path) = (obj.get(key), obj.get(&pkey));
        if fixed.is_some() && path.is_some() {
            self.schema(
                &format!("The fields '{key}' and '{pkey}' are mutually exclusive"),
                at,
            );
            return None;
        }
        if let Some(p) = path {
            return self
                .simple_path(p, &pkey, &format!("{at}/{pkey}"))
                .map(Dynamic::Path);
        }
        let v = fixed?;
        let loc = format!("{at}/{key}");
        if ql == QueryLanguage::Jsonata && v.as_str().and_then(jsonata::as_expression).is_some() {
            return self.expr(v, key, &loc).map(Dynamic::Expr);
        }
        if valid(v) {
            Some(Dynamic::Fixed(v.clone()))
        } else {
            self.schema(&format!("The field '{key}' must be {want}"), &loc);
            None
        }
    }

    fn assign(&mut self, v: &Value, ql: QueryLanguage, loc: &str) -> Option<Template> {
        let Some(obj) = v.as_object() else {
            self.schema("The field 'Assign' must be an object", loc);
            return None;
        };
        for k in obj.keys() {
            let name = k.strip_suffix(".$").unwrap_or(k);
            if !is_valid_variable_name(name) {
                self.schema(&format!("The variable name '{name}' is not valid: use a letter or '_' followed by letters, digits or '_', at most {MAX_NAME_LEN} characters, and not 'states'"), &format!("{loc}/{}", ptr(k)));
            }
        }
        self.template(v, ql, loc)
    }

    fn error_equals(&mut self, obj: &Map<String, Value>, loc: &str) -> Vec<String> {
        let Some(arr) = obj
            .get("ErrorEquals")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
        else {
            self.schema(
                "The field 'ErrorEquals' must be a non-empty array of strings",
                &format!("{loc}/ErrorEquals"),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, e) in arr.iter().enumerate() {
            match e.as_str() {
                Some(s)
                    if s.starts_with("States.")
                        && !crate::error::names::PREDEFINED.contains(&s) =>
                {
                    self.schema(
                        &format!("Error names starting with 'States.' are reserved: '{s}' is not a predefined error"),
                        &format!("{loc}/ErrorEquals/{i}"),
                    );
                }
                Some(s) => out.push(s.to_string()),
                None => self.schema(
                    "Error names must be strings",
                    &format!("{loc}/ErrorEquals/{i}"),
                ),
            }
        }
        if out.iter().any(|e| e == crate::error::names::ALL) && out.len() > 1 {
            self.schema(
                "States.ALL must appear alone in ErrorEquals",
                &format!("{loc}/ErrorEquals"),
            );
        }
        out
    }

    fn retriers(&mut self, v: &Value, loc: &str) -> Vec<Retrier> {
        let Some(arr) = v.as_array() else {
            self.schema("The field 'Retry' must be an array", loc);
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, r) in arr.iter().enumerate() {
            let at = format!("{loc}/{i}");
            let Some(obj) = r.as_object() else {
                self.schema("A retrier must be an object", &at);
                continue;
            };
            for k in obj.keys() {
                if ![
                    "ErrorEquals",
                    "IntervalSeconds",
                    "MaxAttempts",
                    "BackoffRate",
                    "MaxDelaySeconds",
                    "JitterStrategy",
                    "Comment",
                ]
                .contains(&k.as_str())
                {
                    self.schema(
                        &format!("The field '{k}' is not supported by Step Functions"),
                        &at,
                    );
                }
            }
            let error_equals = self.error_equals(obj, &at);
            if error_equals.iter().any(|e| e == crate::error::names::ALL) && i + 1 != arr.len() {
                self.schema(
                    "A retrier with States.ALL must be the last retrier",
                    &format!("{at}/ErrorEquals"),
                );
            }
            let num =
                |p: &mut Parser, key: &str, min: f64, max: f64, int: bool, default: f64| -> f64 {
                    match obj.get(key) {
                        None => default,
                        Some(Value::Number(n)) => {
                            let f = n.as_f64().unwrap_or(f64::NAN);
                            if f < min || f > max || (int && f.fract() != 0.0) {
                                p.schema(
                                    &format!(
                                        "The field '{key}' must be {} between {min} and {max}",
                                        if int { "an integer" } else { "a number" }
                                    ),
                                    &format!("{at}/{key}"),
                                );
                                default
                            } else {
                                f
                            }
                        }
                        Some(_) => {
                            p.schema(
                                &format!("The field '{key}' must be a number"),
                                &format!("{at}/{key}"),
                            );
                            default
                        }
                    }
                };
            let interval_seconds = num(self, "IntervalSeconds", 1.0, 99_999_999.0, true, 1.0);
            let max_attempts = num(self, "MaxAttempts", 0.0, 99_999_999.0, true, 3.0) as u64;
            let backoff_rate = num(self, "BackoffRate", 1.0, f64::MAX, false, 2.0);
            let max_delay_seconds = obj.contains_key("MaxDelaySeconds").then(|| {
                num(
                    self,
                    "MaxDelaySeconds",
                    1.0,
                    31_622_401.0,
                    true,
                    31_622_401.0,
                )
            });
            let jitter_full = match obj.get("JitterStrategy") {
                None => false,
                Some(Value::String(s)) if s == "FULL" => true,
                Some(Value::String(s)) if s == "NONE" => false,
                Some(_) => {
                    self.schema(
                        "The field 'JitterStrategy' must be FULL or NONE",
                        &format!("{at}/JitterStrategy"),
                    );
                    false
                }
            };
            out.push(Retrier {
                error_equals,
                interval_seconds,
                max_attempts,
                backoff_rate,
                max_delay_seconds,
                jitter_full,
            });
        }
        out
    }

    fn catchers(
        &mut self,
        v: &Value,
        ql: QueryLanguage,
        loc: &str,
        by_name: &HashMap<String, StateId>,
    ) -> Vec<Catcher> {
        let Some(arr) = v.as_array() else {
            self.schema("The field 'Catch' must be an array", loc);
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, c) in arr.iter().enumerate() {
            let at = format!("{loc}/{i}");
            let Some(obj) = c.as_object() else {
                self.schema("A catcher must be an object", &at);
                continue;
            };
            let allowed: &[&str] = match ql {
                QueryLanguage::JsonPath => {
                    &["ErrorEquals", "Next", "ResultPath", "Assign", "Comment"]
                }
                QueryLanguage::Jsonata => &["ErrorEquals", "Next", "Output", "Assign", "Comment"],
            };
            for k in obj.keys() {
                if !allowed.contains(&k.as_str()) {
                    self.schema(
                        &format!("The field '{k}' is not supported by Step Functions"),
                        &at,
                    );
                }
            }
            let error_equals = self.error_equals(obj, &at);
            if error_equals.iter().any(|e| e == crate::error::names::ALL) && i + 1 != arr.len() {
                self.schema(
                    "A catcher with States.ALL must be the last catcher",
                    &format!("{at}/ErrorEquals"),
                );
            }
            let next = match obj.get("Next") {
                Some(n) => self.target(n, by_name, &format!("{at}/Next")),
                None => {
                    self.schema("These fields are required: [Next]", &at);
                    None
                }
            };
            let result_path = self.path_field(obj, "ResultPath", &at, true);
            let output = obj
                .get("Output")
                .and_then(|v| self.template(v, ql, &format!("{at}/Output")));
            let assign = obj
                .get("Assign")
                .and_then(|v| self.assign(v, ql, &format!("{at}/Assign")));
            if let Some(next) = next {
                out.push(Catcher {
                    error_equals,
                    next,
                    result_path,
                    output,
                    assign,
                });
            }
        }
        out
    }

    fn text(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        ql: QueryLanguage,
        at: &str,
    ) -> Option<Text> {
        let pkey = format!("{key}Path");
        match (obj.get(key), obj.get(&pkey)) {
            (Some(_), Some(_)) => {
                self.schema(
                    &format!("The fields '{key}' and '{pkey}' are mutually exclusive"),
                    at,
                );
                None
            }
            (Some(Value::String(s)), None) => {
                if ql == QueryLanguage::Jsonata && jsonata::as_expression(s).is_some() {
                    self.expr(&Value::String(s.clone()), key, &format!("{at}/{key}"))
                        .map(Text::Expr)
                } else {
                    Some(Text::Fixed(s.clone()))
                }
            }
            (Some(_), None) => {
                self.schema(
                    &format!("The field '{key}' must be a string"),
                    &format!("{at}/{key}"),
                );
                None
            }
            (None, Some(Value::String(s))) => {
                let loc = format!("{at}/{pkey}");
                if intrinsics::looks_like_call(s) {
                    match Call::parse(s) {
                        Ok(c) => Some(Text::Intrinsic(c)),
                        Err(e) => {
                            self.schema(&e, &loc);
                            None
                        }
                    }
                } else {
                    self.simple_path(&Value::String(s.clone()), &pkey, &loc)
                        .map(Text::Path)
                }
            }
            (None, Some(_)) => {
                self.schema(
                    &format!("The field '{pkey}' must be a string"),
                    &format!("{at}/{pkey}"),
                );
                None
            }
            (None, None) => None,
        }
    }

    fn state(
        &mut self,
        name: &str,
        v: &Value,
        at: &str,
        by_name: &HashMap<String, StateId>,
    ) -> Option<State> {
        let Some(obj) = v.as_object() else {
            self.schema("A state must be an object", at);
            return None;
        };
        let ty = match obj.get("Type") {
            Some(Value::String(t)) if TYPES.contains(&t.as_str()) => t.as_str(),
            Some(Value::String(t)) => {
                self.schema(
                    &format!("The field 'Type' has an unknown value '{t}'"),
                    &format!("{at}/Type"),
                );
                return None;
            }
            Some(_) => {
                self.schema("The field 'Type' must be a string", &format!("{at}/Type"));
                return None;
            }
            None => {
                self.schema("These fields are required: [Type]", at);
                return None;
            }
        };
        let type_name: &'static str = TYPES.iter().find(|t| **t == ty).copied().unwrap_or("Pass");
        let ql = match obj.get("QueryLanguage") {
            None => self.top_ql,
            Some(Value::String(s)) if s == "JSONata" => QueryLanguage::Jsonata,
            Some(Value::String(s)) if s == "JSONPath" => {
                if self.top_ql == QueryLanguage::Jsonata {
                    self.schema(
                        "A JSONata state machine cannot contain JSONPath states",
                        &format!("{at}/QueryLanguage"),
                    );
                }
                QueryLanguage::JsonPath
            }
            Some(_) => {
                self.schema(
                    "The field 'QueryLanguage' must be 'JSONPath' or 'JSONata'",
                    &format!("{at}/QueryLanguage"),
                );
                self.top_ql
            }
        };
        let allowed = fields_of(ty);
        let errors_before = self.diags.len();
        for k in obj.keys() {
            let k = k.as_str();
            if ["Type", "Comment", "QueryLanguage"].contains(&k) {
                continue;
            }
            if !allowed.contains(&k) {
                self.schema(
                    &format!("The field '{k}' is not supported by Step Functions for {ty} states"),
                    at,
                );
            } else if ql == QueryLanguage::Jsonata && JSONPATH_ONLY.contains(&k) {
                self.schema(&format!("The field '{k}' is not supported in JSONata states; use Arguments, Output and Assign"), &format!("{at}/{}", ptr(k)));
            } else if ql == QueryLanguage::JsonPath && JSONATA_ONLY.contains(&k) {
                self.schema(
                    &format!("The field '{k}' is only supported in JSONata states"),
                    &format!("{at}/{}", ptr(k)),
                );
            }
        }
        if let Some(c) = obj.get("Comment") {
            if !c.is_string() {
                self.schema(
                    "The field 'Comment' must be a string",
                    &format!("{at}/Comment"),
                );
            }
        }

        // Transition.
        let transition = if ["Choice", "Succeed", "Fail"].contains(&ty) {
            None
        } else {
            match (obj.get("Next"), obj.get("End")) {
                (Some(_), Some(_)) => {
                    self.schema("The fields 'Next' and 'End' are mutually exclusive", at);
                    None
                }
                (Some(n), None) => self
                    .target(n, by_name, &format!("{at}/Next"))
                    .map(Transition::Next),
                (None, Some(Value::Bool(true))) => Some(Transition::End),
                (None, Some(_)) => {
                    self.schema("The field 'End' must be true", &format!("{at}/End"));
                    None
                }
                (None, None) => {
                    self.schema("Exactly one of these fields is required: [Next, End]", at);
                    None
                }
            }
        };

        let jp = ql == QueryLanguage::JsonPath;
        let input_path = if jp {
            self.path_field(obj, "InputPath", at, false)
        } else {
            PathField::Default
        };
        let output_path = if jp {
            self.path_field(obj, "OutputPath", at, false)
        } else {
            PathField::Default
        };
        let result_path = if jp {
            self.path_field(obj, "ResultPath", at, true)
        } else {
            PathField::Default
        };
        let parameters = match (jp, ty) {
            (_, "Map") => None,
            (true, _) => obj
                .get("Parameters")
                .and_then(|v| self.template(v, ql, &format!("{at}/Parameters"))),
            (false, _) => match obj.get("Arguments") {
                Some(v @ Value::Object(_)) => self.template(v, ql, &format!("{at}/Arguments")),
                Some(v @ Value::String(s)) if jsonata::as_expression(s).is_some() => {
                    self.template(v, ql, &format!("{at}/Arguments"))
                }
                Some(_) => {
                    self.schema(
                        "The field 'Arguments' must be an object or a JSONata expression",
                        &format!("{at}/Arguments"),
                    );
                    None
                }
                None => None,
            },
        };
        let result_selector = match obj.get("ResultSelector") {
            Some(v @ Value::Object(_)) if jp => {
                self.template(v, ql, &format!("{at}/ResultSelector"))
            }
            Some(_) if jp => {
                self.schema(
                    "The field 'ResultSelector' must be an object",
                    &format!("{at}/ResultSelector"),
                );
                None
            }
            _ => None,
        };
        let output = if jp {
            None
        } else {
            obj.get("Output")
                .and_then(|v| self.template(v, ql, &format!("{at}/Output")))
        };
        let assign = obj
            .get("Assign")
            .and_then(|v| self.assign(v, ql, &format!("{at}/Assign")));
        let retry = obj
            .get("Retry")
            .map(|v| self.retriers(v, &format!("{at}/Retry")))
            .unwrap_or_default();
        let catch = obj
            .get("Catch")
            .map(|v| self.catchers(v, ql, &format!("{at}/Catch"), by_name))
            .unwrap_or_default();

        let kind = self.kind(ty, obj, ql, at, by_name);
        if self.diags[errors_before..]
            .iter()
            .any(|d| d.severity == Severity::Error)
        {
            return None;
        }
        Some(State {
            name: name.to_string(),
            type_name,
            query_language: ql,
            transition,
            input_path,
            output_path,
            parameters,
            result_selector,
            result_path,
            output,
            assign,
            retry,
            catch,
            kind: kind?,
        })
    }

    fn kind(
        &mut self,
        ty: &str,
        obj: &Map<String, Value>,
        ql: QueryLanguage,
        at: &str,
        by_name: &HashMap<String, StateId>,
    ) -> Option<Kind> {
        let jp = ql == QueryLanguage::JsonPath;
        Some(match ty {
            "Pass" => Kind::Pass {
                result: obj.get("Result").cloned(),
            },
            "Succeed" => Kind::Succeed,
            "Fail" => Kind::Fail {
                error: self.text(obj, "Error", ql, at),
                cause: self.text(obj, "Cause", ql, at),
            },
            "Task" => {
                let arn = match obj.get("Resource") {
                    Some(Value::String(s)) => s.clone(),
                    Some(_) => {
                        self.schema(
                            "The field 'Resource' must be a string",
                            &format!("{at}/Resource"),
                        );
                        return None;
                    }
                    None => {
                        self.schema("These fields are required: [Resource]", at);
                        return None;
                    }
                };
                let resource = match Resource::parse(&arn) {
                    Ok(r) => r,
                    Err(e) => {
                        self.err("INVALID_RESOURCE", &e, &format!("{at}/Resource"));
                        return None;
                    }
                };
                if self.opts.express {
                    let bad = match &resource {
                        Resource::Activity { .. } => Some("activities"),
                        Resource::Service {
                            pattern: Pattern::Sync | Pattern::Sync2,
                            ..
                        } => Some("the '.sync' integration pattern"),
                        Resource::Service {
                            pattern: Pattern::WaitForTaskToken,
                            ..
                        } => Some("the '.waitForTaskToken' integration pattern"),
                        _ => None,
                    };
                    if let Some(what) = bad {
                        self.schema(
                            &format!("Express state machines do not support {what}"),
                            &format!("{at}/Resource"),
                        );
                    }
                }
                let positive = |v: &Value| as_u64(v).is_some_and(|n| (1..=99_999_999).contains(&n));
                let timeout_seconds = self.dynamic(
                    obj,
                    "TimeoutSeconds",
                    ql,
                    at,
                    positive,
                    "a positive integer",
                );
                let heartbeat_seconds = self.dynamic(
                    obj,
                    "HeartbeatSeconds",
                    ql,
                    at,
                    positive,
                    "a positive integer",
                );
                if let (Some(Dynamic::Fixed(t)), Some(Dynamic::Fixed(h))) =
                    (&timeout_seconds, &heartbeat_seconds)
                {
                    if as_u64(h) >= as_u64(t) {
                        self.schema(
                            "The field 'HeartbeatSeconds' must be smaller than 'TimeoutSeconds'",
                            &format!("{at}/HeartbeatSeconds"),
                        );
                    }
                }
                let credentials = match obj.get("Credentials") {
                    Some(v @ Value::Object(m))
                        if m.contains_key("RoleArn") || m.contains_key("RoleArn.$") =>
                    {
                        self.template(v, ql, &format!("{at}/Credentials"))
                    }
                    Some(_) => {
                        self.schema(
                            "The field 'Credentials' must be an object with 'RoleArn'",
                            &format!("{at}/Credentials"),
                        );
                        None
                    }
                    None => None,
                };
                Kind::Task {
                    resource,
                    resource_arn: arn,
                    timeout_seconds,
                    heartbeat_seconds,
                    credentials,
                }
            }
            "Choice" => {
                let Some(arr) = obj
                    .get("Choices")
                    .and_then(Value::as_array)
                    .filter(|a| !a.is_empty())
                else {
                    self.schema(
                        "The field 'Choices' must be a non-empty array",
                        &format!("{at}/Choices"),
                    );
                    return None;
                };
                let mut rules = Vec::new();
                for (i, r) in arr.iter().enumerate() {
                    let loc = format!("{at}/Choices/{i}");
                    let Some(ro) = r.as_object() else {
                        self.schema("A choice rule must be an object", &loc);
                        continue;
                    };
                    let next_name = ro
                        .get("Next")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    let next = match ro.get("Next") {
                        Some(n) => self.target(n, by_name, &format!("{loc}/Next")),
                        None => {
                            self.schema("These fields are required: [Next]", &loc);
                            None
                        }
                    };
                    let assign = ro
                        .get("Assign")
                        .and_then(|v| self.assign(v, ql, &format!("{loc}/Assign")));
                    let condition = if jp {
                        let mut errs = Vec::new();
                        let c = choice::parse_condition(ro, &loc, true, &mut errs);
                        for (l, m) in errs {
                            self.schema(&m, &l);
                        }
                        c
                    } else {
                        for k in ro.keys() {
                            if !["Condition", "Next", "Assign", "Output", "Comment"]
                                .contains(&k.as_str())
                            {
                                self.schema(
                                    &format!("The field '{k}' is not supported by Step Functions"),
                                    &loc,
                                );
                            }
                        }
                        match ro.get("Condition") {
                            Some(Value::Bool(b)) => {
                                Expr::compile(if *b { "true" } else { "false" })
                                    .ok()
                                    .map(Condition::Jsonata)
                            }
                            Some(v) => match self.expr(v, "Condition", &format!("{loc}/Condition"))
                            {
                                Some(Template::Jsonata(e)) => Some(Condition::Jsonata(e)),
                                _ => None,
                            },
                            None => {
                                self.schema("These fields are required: [Condition]", &loc);
                                None
                            }
                        }
                    };
                    let output = if jp {
                        None
                    } else {
                        ro.get("Output")
                            .and_then(|v| self.template(v, ql, &format!("{loc}/Output")))
                    };
                    if let (Some(condition), Some(next)) = (condition, next) {
                        rules.push(Rule {
                            condition,
                            next,
                            next_name,
                            assign,
                            output,
                        });
                    }
                }
                let default = obj
                    .get("Default")
                    .and_then(|d| self.target(d, by_name, &format!("{at}/Default")));
                Kind::Choice { rules, default }
            }
            "Wait" => {
                let present: Vec<&str> = ["Seconds", "Timestamp", "SecondsPath", "TimestampPath"]
                    .into_iter()
                    .filter(|k| obj.contains_key(*k))
                    .collect();
                if present.len() != 1 {
                    self.schema("Exactly one of these fields is required: [Seconds, Timestamp, SecondsPath, TimestampPath]", at);
                    return None;
                }
                let non_negative = |v: &Value| as_u64(v).is_some_and(|n| n <= 99_999_999);
                let timestamp =
                    |v: &Value| v.as_str().and_then(crate::json::parse_timestamp).is_some();
                if obj.contains_key("Seconds") || obj.contains_key("SecondsPath") {
                    Kind::Wait {
                        wait: Wait::Seconds(self.dynamic(
                            obj,
                            "Seconds",
                            ql,
                            at,
                            non_negative,
                            "a non-negative integer",
                        )?),
                    }
                } else {
                    Kind::Wait {
                        wait: Wait::Timestamp(self.dynamic(
                            obj,
                            "Timestamp",
                            ql,
                            at,
                            timestamp,
                            "an RFC 3339 timestamp",
                        )?),
                    }
                }
            }
            "Parallel" => {
                let Some(arr) = obj
                    .get("Branches")
                    .and_then(Value::as_array)
                    .filter(|a| !a.is_empty())
                else {
                    self.schema(
                        "The field 'Branches' must be a non-empty array",
                        &format!("{at}/Branches"),
                    );
                    return None;
                };
                let mut branches = Vec::new();
                for (i, b) in arr.iter().enumerate() {
                    let loc = format!("{at}/Branches/{i}");
                    match b.as_object() {
                        Some(bo) => {
                            for k in bo.keys() {
                                if !["StartAt", "States", "Comment", "QueryLanguage"]
                                    .contains(&k.as_str())
                                {
                                    self.schema(
                                        &format!(
                                            "The field '{k}' is not supported by Step Functions"
                                        ),
                                        &loc,
                                    );
                                }
                            }
                            let b = self.block(bo, &loc)?;
                            self.blocks[b].source = Some(sub_definition(ql, bo));
                            branches.push(b);
                        }
                        None => {
                            self.schema("A branch must be an object", &loc);
                            return None;
                        }
                    }
                }
                Kind::Parallel { branches }
            }
            "Map" => self.map(obj, ql, at)?,
            _ => return None,
        })
    }

    fn map(&mut self, obj: &Map<String, Value>, ql: QueryLanguage, at: &str) -> Option<Kind> {
        let jp = ql == QueryLanguage::JsonPath;
        let (key, proc) = match (obj.get("ItemProcessor"), obj.get("Iterator")) {
            (Some(_), Some(_)) => {
                self.schema(
                    "The fields 'ItemProcessor' and 'Iterator' are mutually exclusive",
                    at,
                );
                return None;
            }
            (Some(p), None) => ("ItemProcessor", p),
            (None, Some(p)) => ("Iterator", p),
            (None, None) => {
                self.schema("These fields are required: [ItemProcessor]", at);
                return None;
            }
        };
        let loc = format!("{at}/{key}");
        let Some(po) = proc.as_object() else {
            self.schema(&format!("The field '{key}' must be an object"), &loc);
            return None;
        };
        let mut mode = MapMode::Inline;
        let mut distributed = Distributed::default();
        for k in po.keys() {
            if !["StartAt", "States", "Comment", "ProcessorConfig"].contains(&k.as_str())
                || (key == "Iterator" && k == "ProcessorConfig")
            {
                self.schema(
                    &format!("The field '{k}' is not supported by Step Functions"),
                    &loc,
                );
            }
        }
        if let Some(pc) = po.get("ProcessorConfig") {
            let pcl = format!("{loc}/ProcessorConfig");
            match pc.as_object() {
                Some(pco) => {
                    for k in pco.keys() {
                        if !["Mode", "ExecutionType"].contains(&k.as_str()) {
                            self.schema(
                                &format!("The field '{k}' is not supported by Step Functions"),
                                &pcl,
                            );
                        }
                    }
                    match pco.get("Mode").map(|m| m.as_str()) {
                        None | Some(Some("INLINE")) => {}
                        Some(Some("DISTRIBUTED")) => mode = MapMode::Distributed,
                        _ => self.schema(
                            "The field 'Mode' must be INLINE or DISTRIBUTED",
                            &format!("{pcl}/Mode"),
                        ),
                    }
                    match pco.get("ExecutionType").map(|m| m.as_str()) {
                        None => {}
                        Some(Some(t @ ("STANDARD" | "EXPRESS"))) => {
                            distributed.execution_type = Some(t.to_string())
                        }
                        _ => self.schema(
                            "The field 'ExecutionType' must be STANDARD or EXPRESS",
                            &format!("{pcl}/ExecutionType"),
                        ),
                    }
                    if mode == MapMode::Distributed && distributed.execution_type.is_none() {
                        self.schema("These fields are required: [ExecutionType]", &pcl);
                    }
                    if mode == MapMode::Inline && distributed.execution_type.is_some() {
                        self.schema(
                            "The field 'ExecutionType' is only supported in DISTRIBUTED mode",
                            &format!("{pcl}/ExecutionType"),
                        );
                    }
                }
                None => self.schema("The field 'ProcessorConfig' must be an object", &pcl),
            }
        }
        let processor = self.block(po, &loc)?;
        self.blocks[processor].source = Some(sub_definition(ql, po));
        let items_path = if jp {
            obj.get("ItemsPath")
                .and_then(|v| self.simple_path(v, "ItemsPath", &format!("{at}/ItemsPath")))
        } else {
            None
        };
        let items = match obj.get("Items") {
            Some(v @ (Value::Array(_) | Value::Object(_))) if !jp => {
                self.template(v, ql, &format!("{at}/Items"))
            }
            Some(v @ Value::String(s)) if !jp && jsonata::as_expression(s).is_some() => {
                self.template(v, ql, &format!("{at}/Items"))
            }
            Some(_) if !jp => {
                self.schema(
                    "The field 'Items' must be an array or a JSONata expression",
                    &format!("{at}/Items"),
                );
                None
            }
            _ => None,
        };
        let item_selector = match (obj.get("ItemSelector"), obj.get("Parameters")) {
            (Some(_), Some(_)) => {
                self.schema(
                    "The fields 'ItemSelector' and 'Parameters' are mutually exclusive",
                    at,
                );
                None
            }
            (Some(v), None) => self.template(v, ql, &format!("{at}/ItemSelector")),
            (None, Some(v)) => self.template(v, ql, &format!("{at}/Parameters")),
            (None, None) => None,
        };
        let non_negative = |v: &Value| as_u64(v).is_some();
        let max_concurrency = self
            .dynamic(
                obj,
                "MaxConcurrency",
                ql,
                at,
                non_negative,
                "a non-negative integer",
            )
            .unwrap_or(Dynamic::Fixed(Value::from(0)));
        let percentage = |v: &Value| v.as_f64().is_some_and(|f| (0.0..=100.0).contains(&f));
        distributed.tolerated_failure_count = self.dynamic(
            obj,
            "ToleratedFailureCount",
            ql,
            at,
            non_negative,
            "a non-negative integer",
        );
        distributed.tolerated_failure_percentage = self.dynamic(
            obj,
            "ToleratedFailurePercentage",
            ql,
            at,
            percentage,
            "a number between 0 and 100",
        );
        if mode == MapMode::Distributed {
            distributed.item_reader = obj
                .get("ItemReader")
                .and_then(|r| self.reader(r, ql, &format!("{at}/ItemReader")));
            distributed.result_writer = obj
                .get("ResultWriter")
                .and_then(|w| self.writer(w, ql, &format!("{at}/ResultWriter")));
            distributed.item_batcher = obj
                .get("ItemBatcher")
                .and_then(|b| self.batcher(b, ql, &format!("{at}/ItemBatcher")));
        }
        if let Some(l) = obj.get("Label") {
            match l.as_str() {
                Some(s) if !s.is_empty() && s.chars().count() <= 40 && !s.contains(|c: char| c.is_whitespace() || "<>{}[]?*\"#%\\^|~`$&,;:/".contains(c)) => distributed.label = Some(s.to_string()),
                _ => self.schema("The field 'Label' must be 1 to 40 characters without whitespace or special characters", &format!("{at}/Label")),
            }
        }
        if mode == MapMode::Inline {
            for k in ["ItemReader", "ItemBatcher", "ResultWriter", "Label"] {
                if obj.contains_key(k) {
                    self.schema(
                        &format!(
                            "The field '{k}' is only supported by Map states in DISTRIBUTED mode"
                        ),
                        &format!("{at}/{k}"),
                    );
                }
            }
        }
        Some(Kind::Map {
            processor,
            mode,
            items_path,
            items,
            item_selector,
            max_concurrency,
            distributed,
        })
    }

    /// `ItemBatcher`: its maxima (each fixed, a path, or JSONata) and `BatchInput`.
    fn batcher(&mut self, b: &Value, ql: QueryLanguage, loc: &str) -> Option<Batcher> {
        let Some(bo) = b.as_object() else {
            self.schema("The field 'ItemBatcher' must be an object", loc);
            return None;
        };
        for k in bo.keys() {
            let known = [
                "MaxItemsPerBatch",
                "MaxItemsPerBatchPath",
                "MaxInputBytesPerBatch",
                "MaxInputBytesPerBatchPath",
                "BatchInput",
            ];
            if !known.contains(&k.as_str()) {
                self.schema(
                    &format!("The field '{k}' is not supported by Step Functions"),
                    loc,
                );
            }
        }
        let positive = |v: &Value| as_u64(v).is_some_and(|n| n > 0);
        let max_items = self.dynamic(
            bo,
            "MaxItemsPerBatch",
            ql,
            loc,
            positive,
            "a positive integer",
        );
        let bytes = |v: &Value| as_u64(v).is_some_and(|n| (1..=MAX_BATCH_BYTES).contains(&n));
        let max_bytes = self.dynamic(
            bo,
            "MaxInputBytesPerBatch",
            ql,
            loc,
            bytes,
            "an integer from 1 to 262144",
        );
        let batch_input = match bo.get("BatchInput") {
            Some(v @ Value::Object(_)) => self.template(v, ql, &format!("{loc}/BatchInput")),
            Some(v @ Value::String(s))
                if ql == QueryLanguage::Jsonata && jsonata::as_expression(s).is_some() =>
            {
                self.template(v, ql, &format!("{loc}/BatchInput"))
            }
            Some(_) => {
                self.schema(
                    "The field 'BatchInput' must be an object",
                    &format!("{loc}/BatchInput"),
                );
                None
            }
            None => None,
        };
        Some(Batcher {
            max_items,
            max_bytes,
            batch_input,
        })
    }
}

/// A Parallel branch or Map ItemProcessor as a state machine of its own: its `StartAt` and
/// `States`, with the query language its state runs in.
fn sub_definition(ql: QueryLanguage, block: &Map<String, Value>) -> std::sync::Arc<str> {
    let mut def = Map::new();
    if ql == QueryLanguage::Jsonata {
        def.insert("QueryLanguage".into(), Value::from("JSONata"));
    }
    for k in ["StartAt", "States"] {
        if let Some(v) = block.get(k) {
            def.insert(k.into(), v.clone());
        }
    }
    Value::Object(def).to_string().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn diags(def: Value) -> Vec<Diagnostic> {
        validate(&def.to_string(), Options::default())
    }

    fn codes(def: Value) -> Vec<(String, String)> {
        diags(def)
            .into_iter()
            .map(|d| (d.code, d.location))
            .collect()
    }

    #[test]
    fn valid_machine() {
        let d = json!({"StartAt": "A", "States": {
            "A": {"Type": "Pass", "Next": "B"},
            "B": {"Type": "Choice", "Choices": [{"Variable": "$.x", "IsPresent": true, "Next": "C"}], "Default": "D"},
            "C": {"Type": "Succeed"},
            "D": {"Type": "Fail", "Error": "E"}
        }});
        assert_eq!(diags(d), vec![]);
    }

    #[test]
    fn required_fields() {
        assert_eq!(
            codes(json!({"StartAt": "A"})),
            [("SCHEMA_VALIDATION_FAILED".into(), "/".into())]
        );
        let d = diags(json!({"StartAt": "A"}));
        assert_eq!(
            summary(&d),
            "SCHEMA_VALIDATION_FAILED: These fields are required: [States] at /"
        );
    }

    #[test]
    fn reports_every_problem() {
        let d = codes(json!({"StartAt": "A", "States": {
            "A": {"Type": "Pass", "Next": "Nope", "Bogus": 1},
            "B": {"Type": "Task", "Resource": "bad", "End": true},
            "C": {"Type": "Wait", "End": true}
        }}));
        let got: Vec<&str> = d.iter().map(|(c, _)| c.as_str()).collect();
        assert!(got.contains(&"MISSING_TRANSITION_TARGET"), "{d:?}");
        assert!(got.contains(&"INVALID_RESOURCE"), "{d:?}");
        assert!(
            got.iter()
                .filter(|c| **c == "SCHEMA_VALIDATION_FAILED")
                .count()
                >= 2,
            "{d:?}"
        );
        assert!(d.iter().any(|(_, l)| l == "/States/A/Next"));
    }

    #[test]
    fn unreachable_and_terminal() {
        let d = codes(json!({"StartAt": "A", "States": {
            "A": {"Type": "Pass", "Next": "A"},
            "B": {"Type": "Succeed"}
        }}));
        assert!(
            d.contains(&("UNREACHABLE_STATE".into(), "/States/B".into())),
            "{d:?}"
        );
    }

    #[test]
    fn query_language_rules() {
        let d = codes(
            json!({"QueryLanguage": "JSONata", "StartAt": "A", "States": {
                "A": {"Type": "Pass", "InputPath": "$.x", "End": true}
            }}),
        );
        assert_eq!(
            d,
            [(
                "SCHEMA_VALIDATION_FAILED".into(),
                "/States/A/InputPath".into()
            )]
        );
        let d = codes(json!({"StartAt": "A", "States": {
            "A": {"Type": "Pass", "QueryLanguage": "JSONata", "Output": "{% $states.input %}", "End": true}
        }}));
        assert_eq!(d, []);
        let d = codes(json!({"StartAt": "A", "States": {
            "A": {"Type": "Pass", "Output": "{% 1 %}", "End": true}
        }}));
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn express_restrictions() {
        let def = json!({"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken", "End": true}}}).to_string();
        assert!(validate(&def, Options::default()).is_empty());
        assert_eq!(validate(&def, Options { express: true }).len(), 1);
    }

    #[test]
    fn never_panics_on_odd_input() {
        for text in ["", "null", "[]", "{\"States\": 1, \"StartAt\": 2}", "{\"StartAt\":\"A\",\"States\":{\"A\":null}}", "{\"StartAt\":\"A\",\"States\":{\"A\":{\"Type\":\"Map\",\"End\":true,\"ItemProcessor\":{}}}}"] {
            assert!(!validate(text, Options::default()).is_empty(), "{text}");
        }
    }
}
