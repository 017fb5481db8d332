//! JSONata: `{% expr %}` strings, evaluated synchronously with `jsonata-core`.
//!
//! Each evaluation binds `$states` (`input`, `context`, and `result` or `errorOutput` where
//! the field allows them), the workflow variables the expression mentions, and AWS's extra
//! functions (`$partition`, `$range`, `$hash`, `$random`, `$uuid`, `$parse`). `$now()` and
//! `$millis()` read the injected clock, so evaluation stays deterministic.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use jsonata_core::ast::AstNode;
use jsonata_core::evaluator::{Context, Evaluator, EvaluatorError};
use jsonata_core::value::JValue;
use serde_json::{Map, Value};

use crate::env::{Entropy, SplitMix64};
use crate::error::Failure;
use crate::json;

/// The inner expression of a whole-string `{% expr %}`, or `None` for a plain string.
pub fn as_expression(s: &str) -> Option<&str> {
    s.strip_prefix("{%")
        .and_then(|r| r.strip_suffix("%}"))
        .filter(|_| s.len() >= 4)
}

/// A compiled JSONata expression.
#[derive(Debug, Clone)]
pub struct Expr {
    src: Arc<str>,
    ast: Arc<AstNode>,
    /// Variable names the expression mentions (`$name`), so only those are bound.
    refs: Arc<[String]>,
}

/// What an expression can see.
pub struct Bindings<'a> {
    pub input: &'a Value,
    pub result: Option<&'a Value>,
    pub error_output: Option<&'a Value>,
    pub context: &'a dyn Fn() -> Value,
    pub var: &'a dyn Fn(&str) -> Option<Value>,
    pub now_ms: i64,
    /// Seed for `$random()` and `$uuid()` in this evaluation.
    pub seed: u64,
}

const AWS_FUNCTIONS: [&str; 6] = ["partition", "range", "hash", "random", "uuid", "parse"];

impl Expr {
    /// Compiles the text between `{%` and `%}`.
    pub fn compile(src: &str) -> Result<Expr, String> {
        let trimmed = src.trim();
        if trimmed.is_empty() {
            return Err("The JSONata expression is empty".into());
        }
        if trimmed == "$" || trimmed == "$$" {
            return Err(format!(
                "The JSONata expression '{trimmed}' is not supported at the top level; use $states.input"
            ));
        }
        let ast = jsonata_core::parser::parse(src)
            .map_err(|e| format!("The JSONata expression '{}' is invalid: {e}", src.trim()))?;
        Ok(Expr {
            src: src.into(),
            ast: Arc::new(ast),
            refs: scan_refs(src).into(),
        })
    }

    pub fn source(&self) -> &str {
        self.src.trim()
    }

    /// Evaluates the expression. `field` names the field it sits in (`Output`, `Assign/x`).
    pub fn eval(&self, b: &Bindings<'_>, field: &str) -> Result<Value, Failure> {
        let mut ctx = Context::new();
        let mut states = Map::new();
        states.insert("input".into(), b.input.clone());
        if let Some(r) = b.result {
            states.insert("result".into(), r.clone());
        }
        if let Some(e) = b.error_output {
            states.insert("errorOutput".into(), e.clone());
        }
        if self.src.contains("context") {
            states.insert("context".into(), (b.context)());
        }
        ctx.bind("states".into(), JValue::from(Value::Object(states)));
        for name in self.refs.iter() {
            if let Some(v) = (b.var)(name) {
                ctx.bind(name.clone(), JValue::from(v));
            }
        }
        let mut ev = Evaluator::with_context(ctx);
        self.register(&mut ev, b);
        let input = JValue::from(b.input.clone());
        let out = ev.evaluate(&self.ast, &input).map_err(|e| {
            Failure::query(format!(
                "The JSONata expression '{}' specified for the field '{field}' threw an error during evaluation. {}",
                self.source(),
                error_text(&e)
            ))
        })?;
        if out.is_undefined() {
            return Err(Failure::query(format!(
                "The JSONata expression '{}' specified for the field '{field}' returned nothing (undefined).",
                self.source()
            )));
        }
        from_jvalue(&out).ok_or_else(|| {
            Failure::query(format!(
                "The JSONata expression '{}' specified for the field '{field}' returned a function, which is not JSON.",
                self.source()
            ))
        })
    }

    fn register(&self, ev: &mut Evaluator, b: &Bindings<'_>) {
        let now = b.now_ms;
        let rng = Rc::new(RefCell::new(SplitMix64::new(b.seed)));
        // Registration only fails on a name clash with a built-in, which these names avoid
        // (or, for the impure built-ins, override on purpose).
        let _ = ev.register_fn_override("now", move |_: &[JValue]| {
            Ok(JValue::from(json::iso_millis(now)))
        });
        let _ = ev.register_fn_override("millis", move |_: &[JValue]| {
            Ok(JValue::from_f64(now as f64))
        });
        let r = rng.clone();
        let _ = ev.register_fn_override("random", move |args: &[JValue]| {
            let f = match args.first().and_then(|a| a.as_f64()) {
                Some(seed) => SplitMix64::new(seed.to_bits()).next_f64(),
                None => r.borrow_mut().next_f64(),
            };
            Ok(JValue::from_f64(f))
        });
        // Step Functions does not offer `$eval`; `$parse` takes its place.
        let _ = ev.register_fn_override("eval", |_: &[JValue]| {
            Err(fail(
                "The function $eval is not supported by Step Functions; use $parse",
            ))
        });
        let r = rng;
        let _ = ev.register_fn("uuid", move |_: &[JValue]| {
            Ok(JValue::from(crate::env::uuid_v4(&mut *r.borrow_mut())))
        });
        let _ = ev.register_fn("partition", |args: &[JValue]| {
            let arr = arg_json(args, 0, "partition")?;
            let size = arg_json(args, 1, "partition")?;
            let (Value::Array(a), Some(n)) = (&arr, size.as_f64()) else {
                return Err(fail("$partition expects an array and a chunk size"));
            };
            if n < 1.0 || n.fract() != 0.0 {
                return Err(fail("$partition chunk size must be a positive integer"));
            }
            Ok(JValue::from(Value::Array(
                a.chunks(n as usize)
                    .map(|c| Value::Array(c.to_vec()))
                    .collect(),
            )))
        });
        let _ = ev.register_fn("range", |args: &[JValue]| {
            let n = |i: usize| args.get(i).and_then(|a| a.as_f64());
            let (Some(s), Some(e), Some(step)) = (n(0), n(1), n(2)) else {
                return Err(fail("$range expects start, end and step numbers"));
            };
            if step == 0.0 {
                return Err(fail("$range step must not be 0"));
            }
            let mut out = Vec::new();
            let mut i = s;
            while (step > 0.0 && i <= e) || (step < 0.0 && i >= e) {
                if out.len() >= 1000 {
                    return Err(fail("$range would return more than 1000 items"));
                }
                out.push(json::number_from_f64(i));
                i += step;
            }
            Ok(JValue::from(Value::Array(out)))
        });
        let _ = ev.register_fn("hash", |args: &[JValue]| {
            let data = arg_json(args, 0, "hash")?;
            let alg = args
                .get(1)
                .and_then(|a| a.as_str())
                .unwrap_or("SHA-256")
                .to_string();
            let call =
                crate::intrinsics::Call::parse("States.Hash($.d, $.a)").map_err(|e| fail(&e))?;
            let input = serde_json::json!({"d": data, "a": alg});
            call.eval(
                &crate::path::ValueOnly(&input),
                &mut SplitMix64::new(0),
                "hash",
            )
            .map(JValue::from)
            .map_err(|f| fail(f.cause.as_deref().unwrap_or("hash failed")))
        });
        let _ = ev.register_fn("parse", |args: &[JValue]| {
            let Some(s) = args.first().and_then(|a| a.as_str()) else {
                return Err(fail("$parse expects a string"));
            };
            serde_json::from_str::<Value>(s)
                .map(JValue::from)
                .map_err(|e| fail(&format!("$parse: invalid JSON: {e}")))
        });
    }
}

fn fail(msg: &str) -> EvaluatorError {
    EvaluatorError::EvaluationError(msg.to_string())
}

fn arg_json(args: &[JValue], i: usize, f: &str) -> Result<Value, EvaluatorError> {
    args.get(i)
        .and_then(from_jvalue)
        .ok_or_else(|| fail(&format!("${f}: argument {} is missing", i + 1)))
}

fn error_text(e: &EvaluatorError) -> String {
    e.to_string()
}

/// Names after `$` in the source (identifiers), excluding `states` and AWS functions.
fn scan_refs(src: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let b = src.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < b.len() {
        let c = b[i];
        if let Some(q) = quote {
            if c == b'\\' {
                i += 1;
            } else if c == q {
                quote = None;
            }
        } else if c == b'"' || c == b'\'' {
            quote = Some(c);
        } else if c == b'$' {
            let start = i + 1;
            let mut end = start;
            while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
                end += 1;
            }
            if end > start {
                let name = &src[start..end];
                if name != "states"
                    && !AWS_FUNCTIONS.contains(&name)
                    && !out.iter().any(|n| n == name)
                {
                    out.push(name.to_string());
                }
            }
            i = end.max(i + 1);
            continue;
        }
        i += 1;
    }
    out
}

/// Converts a JSONata value to JSON; integral numbers become JSON integers. `None` for a
/// function value.
pub fn from_jvalue(v: &JValue) -> Option<Value> {
    Some(match v {
        JValue::Null | JValue::Undefined => Value::Null,
        JValue::Bool(b) => Value::Bool(*b),
        JValue::Number(n) => json::number_from_f64(*n),
        JValue::String(s) => Value::String(s.to_string()),
        JValue::Lambda(_) | JValue::Builtin { .. } | JValue::Regex { .. } => return None,
        other => normalize(serde_json::to_value(other).ok()?),
    })
}

fn normalize(v: Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => json::number_from_f64(n.as_f64().unwrap_or_default()),
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, normalize(v))).collect()),
        v => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(src: &str, input: Value) -> Result<Value, Failure> {
        let e = Expr::compile(src).map_err(Failure::query)?;
        let vars = json!({"x": 41, "list": [1, 2, 3]});
        let ctx = || json!({"Execution": {"Name": "exec-1"}});
        let var = |n: &str| vars.get(n).cloned();
        let b = Bindings {
            input: &input,
            result: Some(&json!({"r": true})),
            error_output: None,
            context: &ctx,
            var: &var,
            now_ms: 1_700_000_000_000,
            seed: 9,
        };
        e.eval(&b, "Output")
    }

    #[test]
    fn eval_is_not_offered() {
        let f = eval("$eval('1 + 1')", json!({})).unwrap_err();
        assert_eq!(f.error.as_deref(), Some("States.QueryEvaluationError"));
        assert!(f.cause.unwrap().contains("$eval is not supported"));
        assert_eq!(eval("$parse('[1, 2]')", json!({})).unwrap(), json!([1, 2]));
    }

    #[test]
    fn expressions() {
        assert_eq!(as_expression("{% 1 %}"), Some(" 1 "));
        assert_eq!(as_expression(" {% 1 %}"), None);
        assert_eq!(as_expression("{%%}"), Some(""));
        assert_eq!(
            eval("$states.input.a + 1", json!({"a": 2})).unwrap(),
            json!(3)
        );
        assert_eq!(eval("$x + 1", json!({})).unwrap(), json!(42));
        assert_eq!(eval("$sum($list)", json!({})).unwrap(), json!(6));
        assert_eq!(eval("$states.result.r", json!({})).unwrap(), json!(true));
        assert_eq!(
            eval("$states.context.Execution.Name", json!({})).unwrap(),
            json!("exec-1")
        );
        assert_eq!(
            eval("{'b': 1, 'a': 2.5}", json!({})).unwrap().to_string(),
            r#"{"b":1,"a":2.5}"#
        );
        assert_eq!(
            eval("$now()", json!({})).unwrap(),
            json!("2023-11-14T22:13:20.000Z")
        );
    }

    #[test]
    fn aws_functions() {
        assert_eq!(
            eval("$partition([1,2,3,4,5], 2)", json!({})).unwrap(),
            json!([[1, 2], [3, 4], [5]])
        );
        assert_eq!(
            eval("$range(0, 10, 5)", json!({})).unwrap(),
            json!([0, 5, 10])
        );
        assert_eq!(
            eval("$hash('input data', 'SHA-1')", json!({})).unwrap(),
            json!("aaff4a450a104cd177d28d18d74485e8cae074b7")
        );
        assert_eq!(
            eval("$parse('{\"a\": [1]}')", json!({})).unwrap(),
            json!({"a": [1]})
        );
        let r = eval("$random()", json!({})).unwrap().as_f64().unwrap();
        assert!((0.0..1.0).contains(&r));
        assert_eq!(
            eval("$random(7)", json!({})).unwrap(),
            eval("$random(7)", json!({})).unwrap()
        );
        assert_eq!(
            eval("$uuid()", json!({})).unwrap().as_str().unwrap().len(),
            36
        );
    }

    #[test]
    fn failures() {
        let f = eval("$states.input.nope", json!({})).unwrap_err();
        assert_eq!(f.error.as_deref(), Some("States.QueryEvaluationError"));
        assert!(f.cause.unwrap().ends_with("returned nothing (undefined)."));
        let f = eval("$number('x') + {}", json!({})).unwrap_err();
        assert!(f
            .cause
            .unwrap()
            .contains("threw an error during evaluation"));
        assert!(Expr::compile("1 +").is_err());
        assert!(Expr::compile("$").is_err());
        assert_eq!(
            scan_refs("$a + $states.input.b + $sum($c) + '$d'"),
            ["a", "sum", "c"]
        );
    }
}
