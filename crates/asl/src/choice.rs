//! Choice rules: parsing and evaluation (checklist §1.3).

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::error::Failure;
use crate::intrinsics::json_eq;
use crate::json::{is_integer, parse_timestamp};
use crate::jsonata::{Bindings, Expr};
use crate::path::{Path, Resolver};

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    StringEquals,
    StringLessThan,
    StringGreaterThan,
    StringLessThanEquals,
    StringGreaterThanEquals,
    StringMatches,
    NumericEquals,
    NumericLessThan,
    NumericGreaterThan,
    NumericLessThanEquals,
    NumericGreaterThanEquals,
    BooleanEquals,
    TimestampEquals,
    TimestampLessThan,
    TimestampGreaterThan,
    TimestampLessThanEquals,
    TimestampGreaterThanEquals,
    IsNull,
    IsPresent,
    IsNumeric,
    IsString,
    IsBoolean,
    IsTimestamp,
}

/// The operators and whether each has a `…Path` twin.
pub const OPERATORS: [(&str, Op, bool); 23] = [
    ("StringEquals", Op::StringEquals, true),
    ("StringLessThan", Op::StringLessThan, true),
    ("StringGreaterThan", Op::StringGreaterThan, true),
    ("StringLessThanEquals", Op::StringLessThanEquals, true),
    ("StringGreaterThanEquals", Op::StringGreaterThanEquals, true),
    ("StringMatches", Op::StringMatches, false),
    ("NumericEquals", Op::NumericEquals, true),
    ("NumericLessThan", Op::NumericLessThan, true),
    ("NumericGreaterThan", Op::NumericGreaterThan, true),
    ("NumericLessThanEquals", Op::NumericLessThanEquals, true),
    (
        "NumericGreaterThanEquals",
        Op::NumericGreaterThanEquals,
        true,
    ),
    ("BooleanEquals", Op::BooleanEquals, true),
    ("TimestampEquals", Op::TimestampEquals, true),
    ("TimestampLessThan", Op::TimestampLessThan, true),
    ("TimestampGreaterThan", Op::TimestampGreaterThan, true),
    ("TimestampLessThanEquals", Op::TimestampLessThanEquals, true),
    (
        "TimestampGreaterThanEquals",
        Op::TimestampGreaterThanEquals,
        true,
    ),
    ("IsNull", Op::IsNull, false),
    ("IsPresent", Op::IsPresent, false),
    ("IsNumeric", Op::IsNumeric, false),
    ("IsString", Op::IsString, false),
    ("IsBoolean", Op::IsBoolean, false),
    ("IsTimestamp", Op::IsTimestamp, false),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    String,
    Numeric,
    Boolean,
    Timestamp,
    Type,
}

impl Op {
    fn family(self) -> Family {
        use Op::*;
        match self {
            StringEquals
            | StringLessThan
            | StringGreaterThan
            | StringLessThanEquals
            | StringGreaterThanEquals
            | StringMatches => Family::String,
            NumericEquals
            | NumericLessThan
            | NumericGreaterThan
            | NumericLessThanEquals
            | NumericGreaterThanEquals => Family::Numeric,
            BooleanEquals => Family::Boolean,
            TimestampEquals
            | TimestampLessThan
            | TimestampGreaterThan
            | TimestampLessThanEquals
            | TimestampGreaterThanEquals => Family::Timestamp,
            IsNull | IsPresent | IsNumeric | IsString | IsBoolean | IsTimestamp => Family::Type,
        }
    }

    fn accepts(self, ord: Ordering) -> bool {
        use Op::*;
        match self {
            StringEquals | NumericEquals | TimestampEquals => ord == Ordering::Equal,
            StringLessThan | NumericLessThan | TimestampLessThan => ord == Ordering::Less,
            StringGreaterThan | NumericGreaterThan | TimestampGreaterThan => {
                ord == Ordering::Greater
            }
            StringLessThanEquals | NumericLessThanEquals | TimestampLessThanEquals => {
                ord != Ordering::Greater
            }
            StringGreaterThanEquals | NumericGreaterThanEquals | TimestampGreaterThanEquals => {
                ord != Ordering::Less
            }
            _ => false,
        }
    }
}

/// The right-hand side of a comparison.
#[derive(Debug, Clone)]
pub enum Operand {
    Value(Value),
    Path(Path),
}

/// A (possibly compound) condition.
#[derive(Debug, Clone)]
pub enum Condition {
    And(Vec<Condition>),
    Or(Vec<Condition>),
    Not(Box<Condition>),
    Compare {
        variable: Path,
        op: Op,
        operand: Operand,
    },
    Jsonata(Expr),
}

/// A top-level rule of a Choice state.
#[derive(Debug, Clone)]
pub struct Rule {
    pub condition: Condition,
    /// Index of the target state in the enclosing block (resolved after parsing).
    pub next: usize,
    pub next_name: String,
    pub assign: Option<crate::template::Template>,
    pub output: Option<crate::template::Template>,
}

/// Parses one JSONPath condition object; problems are `(pointer, message)` pairs.
pub fn parse_condition(
    obj: &Map<String, Value>,
    at: &str,
    top: bool,
    errors: &mut Vec<(String, String)>,
) -> Option<Condition> {
    let mut allowed: Vec<&str> = vec!["Comment"];
    if top {
        allowed.extend(["Next", "Assign"]);
    }
    if let Some(v) = obj.get("And").or_else(|| obj.get("Or")) {
        let is_and = obj.contains_key("And");
        allowed.push(if is_and { "And" } else { "Or" });
        check_fields(obj, &allowed, at, errors);
        let key = if is_and { "And" } else { "Or" };
        let Some(items) = v.as_array().filter(|a| !a.is_empty()) else {
            errors.push((
                format!("{at}/{key}"),
                format!("The field '{key}' must be a non-empty array of rules"),
            ));
            return None;
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let loc = format!("{at}/{key}/{i}");
            match item.as_object() {
                Some(o) => out.extend(parse_condition(o, &loc, false, errors)),
                None => errors.push((loc, "A rule must be an object".into())),
            }
        }
        return Some(if is_and {
            Condition::And(out)
        } else {
            Condition::Or(out)
        });
    }
    if let Some(v) = obj.get("Not") {
        allowed.push("Not");
        check_fields(obj, &allowed, at, errors);
        let Some(o) = v.as_object() else {
            errors.push((
                format!("{at}/Not"),
                "The field 'Not' must be a single rule object".into(),
            ));
            return None;
        };
        return parse_condition(o, &format!("{at}/Not"), false, errors)
            .map(|c| Condition::Not(Box::new(c)));
    }
    let variable = match obj.get("Variable") {
        Some(Value::String(s)) => match Path::parse(s) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push((format!("{at}/Variable"), e));
                None
            }
        },
        Some(_) => {
            errors.push((
                format!("{at}/Variable"),
                "The field 'Variable' must be a string".into(),
            ));
            None
        }
        None => {
            errors.push((
                at.to_string(),
                "These fields are required: [Variable]".into(),
            ));
            None
        }
    };
    allowed.push("Variable");
    let mut found: Vec<(Op, Operand, &str)> = Vec::new();
    for (name, op, has_path) in OPERATORS {
        if let Some(v) = obj.get(name) {
            allowed.push(name);
            if let Some(operand) = check_operand(op, v, &format!("{at}/{name}"), errors) {
                found.push((op, operand, name));
            }
        }
        if has_path {
            let pname = format!("{name}Path");
            if let Some(v) = obj.get(&pname) {
                let loc = format!("{at}/{pname}");
                match v.as_str().map(Path::parse) {
                    Some(Ok(p)) => found.push((op, Operand::Path(p), name)),
                    Some(Err(e)) => errors.push((loc, e)),
                    None => {
                        errors.push((loc, format!("The field '{pname}' must be a path string")))
                    }
                }
            }
        }
    }
    let extra: Vec<String> = obj
        .keys()
        .filter(|k| {
            k.ends_with("Path")
                && OPERATORS
                    .iter()
                    .any(|(n, _, p)| *p && format!("{n}Path") == **k)
        })
        .cloned()
        .collect();
    let allowed_owned: Vec<String> = allowed.iter().map(|s| s.to_string()).chain(extra).collect();
    let allowed_refs: Vec<&str> = allowed_owned.iter().map(String::as_str).collect();
    check_fields(obj, &allowed_refs, at, errors);
    if found.len() != 1 {
        // An operator whose value was invalid is already reported; say nothing more then.
        let invalid_operand = found.is_empty()
            && obj
                .keys()
                .any(|k| OPERATORS.iter().any(|(n, _, _)| k.starts_with(n)));
        if !invalid_operand {
            errors.push((
                at.to_string(),
                "A rule must have exactly one comparison operator".into(),
            ));
        }
        return None;
    }
    let (op, operand, _) = found.pop()?;
    Some(Condition::Compare {
        variable: variable?,
        op,
        operand,
    })
}

fn check_fields(
    obj: &Map<String, Value>,
    allowed: &[&str],
    at: &str,
    errors: &mut Vec<(String, String)>,
) {
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            errors.push((
                at.to_string(),
                format!("The field '{k}' is not supported by Step Functions"),
            ));
        }
    }
}

fn check_operand(
    op: Op,
    v: &Value,
    at: &str,
    errors: &mut Vec<(String, String)>,
) -> Option<Operand> {
    let ok = match op.family() {
        Family::String => v.is_string(),
        Family::Numeric => v.is_number(),
        Family::Boolean | Family::Type => v.is_boolean(),
        Family::Timestamp => v.as_str().and_then(parse_timestamp).is_some(),
    };
    if !ok {
        let want = match op.family() {
            Family::String => "a string",
            Family::Numeric => "a number",
            Family::Boolean | Family::Type => "a boolean",
            Family::Timestamp => "an RFC 3339 timestamp string",
        };
        errors.push((
            at.to_string(),
            format!("The value of this comparison must be {want}"),
        ));
        return None;
    }
    Some(Operand::Value(v.clone()))
}

/// Java `String.compareTo`: UTF-16 code unit order.
pub fn java_compare(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

fn numeric_cmp(a: &serde_json::Number, b: &serde_json::Number) -> Option<Ordering> {
    if is_integer(a) && is_integer(b) {
        if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
            return Some(x.cmp(&y));
        }
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

/// `StringMatches`: `*` matches any run of characters; `\*` and `\\` are literals.
pub fn string_matches(s: &str, pattern: &str) -> bool {
    // Tokens: Some(c) literal, None wildcard.
    let mut toks: Vec<Option<char>> = Vec::new();
    let mut it = pattern.chars();
    while let Some(c) = it.next() {
        match c {
            '\\' => toks.push(Some(it.next().unwrap_or('\\'))),
            '*' => toks.push(None),
            c => toks.push(Some(c)),
        }
    }
    let chars: Vec<char> = s.chars().collect();
    // Classic greedy wildcard match with backtracking to the last star.
    let (mut si, mut pi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < chars.len() {
        match toks.get(pi) {
            Some(Some(c)) if *c == chars[si] => {
                si += 1;
                pi += 1;
            }
            Some(None) => {
                star = Some((pi, si));
                pi += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    toks[pi..].iter().all(Option::is_none)
}

fn invalid_path(p: &Path) -> Failure {
    Failure::runtime(format!(
        "Invalid path '{}': The choice state's condition path references an invalid value.",
        p.as_str()
    ))
}

impl Condition {
    /// Evaluates a JSONPath condition.
    pub fn eval(&self, r: &dyn Resolver) -> Result<bool, Failure> {
        match self {
            Condition::And(cs) => {
                for c in cs {
                    if !c.eval(r)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Condition::Or(cs) => {
                for c in cs {
                    if c.eval(r)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Condition::Not(c) => Ok(!c.eval(r)?),
            Condition::Compare {
                variable,
                op,
                operand,
            } => {
                let value = variable.resolve(r);
                if *op == Op::IsPresent {
                    let want = matches!(operand, Operand::Value(Value::Bool(true)));
                    return Ok(value.is_some() == want);
                }
                let Some(value) = value else {
                    return Err(invalid_path(variable));
                };
                let rhs = match operand {
                    Operand::Value(v) => std::borrow::Cow::Borrowed(v),
                    Operand::Path(p) => p.resolve(r).ok_or_else(|| invalid_path(p))?,
                };
                Ok(compare(&value, *op, &rhs))
            }
            Condition::Jsonata(_) => Err(Failure::runtime("JSONata condition in a JSONPath rule")),
        }
    }

    /// Evaluates a JSONata `Condition`.
    pub fn eval_jsonata(&self, b: &Bindings<'_>) -> Result<bool, Failure> {
        match self {
            Condition::Jsonata(e) => match e.eval(b, "Condition")? {
                Value::Bool(v) => Ok(v),
                other => Err(Failure::query(format!(
                    "The JSONata expression '{}' specified for the field 'Condition' returned an unexpected result type. Expected 'boolean', but was '{}' for value: {}",
                    e.source(),
                    crate::json::type_name(&other),
                    crate::json::to_compact(&other)
                ))),
            },
            _ => Err(Failure::runtime("JSONPath condition in a JSONata rule")),
        }
    }
}

fn compare(v: &Value, op: Op, rhs: &Value) -> bool {
    let want = || rhs.as_bool().unwrap_or(false);
    match op {
        Op::IsNull => v.is_null() == want(),
        Op::IsNumeric => v.is_number() == want(),
        Op::IsString => v.is_string() == want(),
        Op::IsBoolean => v.is_boolean() == want(),
        Op::IsTimestamp => v.as_str().and_then(parse_timestamp).is_some() == want(),
        Op::IsPresent => true,
        Op::BooleanEquals => matches!((v, rhs), (Value::Bool(a), Value::Bool(b)) if a == b),
        Op::StringMatches => match (v, rhs) {
            (Value::String(s), Value::String(p)) => string_matches(s, p),
            _ => false,
        },
        _ => match op.family() {
            Family::String => match (v, rhs) {
                (Value::String(a), Value::String(b)) => op.accepts(java_compare(a, b)),
                _ => false,
            },
            Family::Numeric => match (v, rhs) {
                (Value::Number(a), Value::Number(b)) => {
                    numeric_cmp(a, b).is_some_and(|o| op.accepts(o))
                }
                _ => false,
            },
            Family::Timestamp => {
                match (
                    v.as_str().and_then(parse_timestamp),
                    rhs.as_str().and_then(parse_timestamp),
                ) {
                    (Some(a), Some(b)) => op.accepts(a.cmp(&b)),
                    _ => false,
                }
            }
            _ => json_eq(v, rhs),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::ValueOnly;
    use serde_json::json;

    fn cond(rule: Value) -> Condition {
        let mut errs = Vec::new();
        let c = parse_condition(rule.as_object().unwrap(), "", false, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        c.unwrap()
    }

    fn check(rule: Value, input: Value) -> Result<bool, Failure> {
        cond(rule).eval(&ValueOnly(&input))
    }

    #[test]
    fn comparisons() {
        let i = json!({"s": "b", "n": 10, "f": 2.5, "t": "2024-01-01T00:00:00Z", "b": true, "z": null, "m": "log-2024.txt"});
        assert!(check(json!({"Variable": "$.s", "StringEquals": "b"}), i.clone()).unwrap());
        assert!(check(
            json!({"Variable": "$.s", "StringGreaterThan": "a"}),
            i.clone()
        )
        .unwrap());
        assert!(check(json!({"Variable": "$.n", "NumericEquals": 10.0}), i.clone()).unwrap());
        assert!(check(
            json!({"Variable": "$.f", "NumericLessThanEquals": 2.5}),
            i.clone()
        )
        .unwrap());
        assert!(!check(json!({"Variable": "$.s", "NumericEquals": 1}), i.clone()).unwrap());
        assert!(check(
            json!({"Variable": "$.t", "TimestampLessThan": "2024-01-01T01:00:00+00:30"}),
            i.clone()
        )
        .unwrap());
        assert!(check(json!({"Variable": "$.b", "BooleanEquals": true}), i.clone()).unwrap());
        assert!(check(json!({"Variable": "$.z", "IsNull": true}), i.clone()).unwrap());
        assert!(check(json!({"Variable": "$.nope", "IsPresent": false}), i.clone()).unwrap());
        assert!(check(json!({"Variable": "$.t", "IsTimestamp": true}), i.clone()).unwrap());
        assert!(check(
            json!({"Variable": "$.m", "StringMatches": "log-*.txt"}),
            i.clone()
        )
        .unwrap());
        assert!(check(
            json!({"Variable": "$.n", "NumericGreaterThanPath": "$.f"}),
            i.clone()
        )
        .unwrap());
        assert!(check(json!({"And": [{"Variable": "$.b", "BooleanEquals": true}, {"Not": {"Variable": "$.s", "StringEquals": "x"}}]}), i.clone()).unwrap());
        let f = check(json!({"Variable": "$.nope", "StringEquals": "x"}), i).unwrap_err();
        assert_eq!(f.error.as_deref(), Some("States.Runtime"));
    }

    #[test]
    fn wildcards() {
        assert!(string_matches("abc", "*"));
        assert!(string_matches("", "*"));
        assert!(string_matches("a*c", r"a\*c"));
        assert!(!string_matches("abc", r"a\*c"));
        assert!(string_matches("a\\b", r"a\\b"));
        assert!(string_matches("aXbYc", "a*b*c"));
        assert!(!string_matches("aXbY", "a*b*c"));
    }

    #[test]
    fn java_order() {
        // U+FF61 sorts after U+1F600 in code points but before it in UTF-16.
        assert_eq!(java_compare("\u{FF61}", "\u{1F600}"), Ordering::Greater);
        assert_eq!(java_compare("a", "b"), Ordering::Less);
    }

    #[test]
    fn invalid_rules() {
        let mut errs = Vec::new();
        parse_condition(
            json!({"Variable": "$.a", "StringEquals": 1})
                .as_object()
                .unwrap(),
            "/r",
            false,
            &mut errs,
        );
        parse_condition(
            json!({"Variable": "$.a"}).as_object().unwrap(),
            "/r",
            false,
            &mut errs,
        );
        parse_condition(
            json!({"And": []}).as_object().unwrap(),
            "/r",
            false,
            &mut errs,
        );
        parse_condition(
            json!({"Variable": "$.a", "IsNull": true, "Bogus": 1})
                .as_object()
                .unwrap(),
            "/r",
            false,
            &mut errs,
        );
        assert_eq!(errs.len(), 4, "{errs:?}");
    }
}
