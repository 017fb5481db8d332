//! Payload templates: `Parameters`, `ResultSelector`, `ItemSelector`, JSONPath `Assign`
//! (keys ending in `.$`), and JSONata templates (strings of the form `{% expr %}`).
//! Templates are compiled once when the definition is loaded.

use serde_json::{Map, Value};

use crate::env::Entropy;
use crate::error::Failure;
use crate::intrinsics::{self, Call};
use crate::json;
use crate::jsonata::{Bindings, Expr};
use crate::path::{Path, Resolver};

/// A compiled template.
#[derive(Debug, Clone)]
pub enum Template {
    /// A value with nothing to evaluate.
    Literal(Value),
    /// An object with at least one dynamic field.
    Object(Vec<(String, Template)>),
    /// An array with at least one dynamic element.
    Array(Vec<Template>),
    /// A `key.$` path value; `field` is the key as written (with `.$`).
    Path { path: Path, field: String },
    /// A `key.$` intrinsic function.
    Intrinsic { call: Call, field: String },
    /// A JSONata `{% %}` string.
    Jsonata(Expr),
}

/// Where a problem was found while compiling a template: a JSON pointer suffix and a message.
pub type CompileError = (String, String);

fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

impl Template {
    /// Compiles a JSONPath payload template (keys ending in `.$` are dynamic).
    pub fn jsonpath(value: &Value) -> Result<Template, Vec<CompileError>> {
        let mut errors = Vec::new();
        let t = compile_jsonpath(value, "", &mut errors);
        if errors.is_empty() {
            Ok(t)
        } else {
            Err(errors)
        }
    }

    /// Compiles a JSONata template (every `{% %}` string is an expression).
    pub fn jsonata(value: &Value) -> Result<Template, Vec<CompileError>> {
        let mut errors = Vec::new();
        let t = compile_jsonata(value, "", &mut errors);
        if errors.is_empty() {
            Ok(t)
        } else {
            Err(errors)
        }
    }

    /// Does evaluating this template need the context object or variables?
    pub fn is_literal(&self) -> bool {
        matches!(self, Template::Literal(_))
    }

    /// Evaluates a JSONPath template.
    pub fn eval(&self, r: &dyn Resolver, entropy: &mut dyn Entropy) -> Result<Value, Failure> {
        match self {
            Template::Literal(v) => Ok(v.clone()),
            Template::Object(fields) => {
                let mut map = Map::with_capacity(fields.len());
                for (k, t) in fields {
                    map.insert(k.clone(), t.eval(r, entropy)?);
                }
                Ok(Value::Object(map))
            }
            Template::Array(items) => {
                items.iter().map(|t| t.eval(r, entropy)).collect::<Result<_, _>>().map(Value::Array)
            }
            Template::Path { path, field } => match path.resolve(r) {
                Some(v) => Ok(v.into_owned()),
                None => Err(Failure::runtime(format!(
                    "The JSONPath '{}' specified for the field '{}' could not be found in the input '{}'",
                    path.as_str(),
                    field,
                    json::to_compact(r.input())
                ))),
            },
            Template::Intrinsic { call, field } => call.eval(r, entropy, field),
            Template::Jsonata(_) => Err(Failure::runtime("JSONata expression in a JSONPath template")),
        }
    }

    /// Evaluates a JSONata template. `field` names the top-level field for error messages.
    pub fn eval_jsonata(&self, b: &Bindings<'_>, field: &str) -> Result<Value, Failure> {
        self.eval_jsonata_at(b, field)
    }

    fn eval_jsonata_at(&self, b: &Bindings<'_>, field: &str) -> Result<Value, Failure> {
        match self {
            Template::Literal(v) => Ok(v.clone()),
            Template::Object(fields) => {
                let mut map = Map::with_capacity(fields.len());
                for (k, t) in fields {
                    let f = format!("{field}/{k}");
                    map.insert(k.clone(), t.eval_jsonata_at(b, &f)?);
                }
                Ok(Value::Object(map))
            }
            Template::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, t)| t.eval_jsonata_at(b, &format!("{field}/{i}")))
                .collect::<Result<_, _>>()
                .map(Value::Array),
            Template::Jsonata(e) => e.eval(b, field),
            Template::Path { .. } | Template::Intrinsic { .. } => Err(Failure::runtime(
                "JSONPath expression in a JSONata template",
            )),
        }
    }
}

fn compile_jsonpath(value: &Value, at: &str, errors: &mut Vec<CompileError>) -> Template {
    match value {
        Value::Object(map) => {
            let mut fields = Vec::with_capacity(map.len());
            let mut dynamic = false;
            for (k, v) in map {
                let loc = format!("{at}/{}", escape_pointer(k));
                if let Some(name) = k.strip_suffix(".$") {
                    dynamic = true;
                    let Some(s) = v.as_str() else {
                        errors.push((
                            loc,
                            format!("The value for the field '{k}' must be a STRING that contains a JSONPath but was an {}", json::type_name(v).to_uppercase()),
                        ));
                        continue;
                    };
                    let t = if intrinsics::looks_like_call(s) {
                        match Call::parse(s) {
                            Ok(call) => Template::Intrinsic {
                                call,
                                field: k.clone(),
                            },
                            Err(e) => {
                                errors.push((loc, format!("The value for the field '{k}' must be a valid JSONPath or a valid intrinsic function call: {e}")));
                                continue;
                            }
                        }
                    } else {
                        match Path::parse(s) {
                            Ok(path) => Template::Path {
                                path,
                                field: k.clone(),
                            },
                            Err(e) => {
                                errors.push((loc, format!("The value for the field '{k}' must be a valid JSONPath or a valid intrinsic function call: {e}")));
                                continue;
                            }
                        }
                    };
                    fields.push((name.to_string(), t));
                } else {
                    let t = compile_jsonpath(v, &loc, errors);
                    dynamic |= !t.is_literal();
                    fields.push((k.clone(), t));
                }
            }
            if dynamic {
                Template::Object(fields)
            } else {
                Template::Literal(value.clone())
            }
        }
        Value::Array(items) => {
            let ts: Vec<Template> = items
                .iter()
                .enumerate()
                .map(|(i, v)| compile_jsonpath(v, &format!("{at}/{i}"), errors))
                .collect();
            if ts.iter().all(Template::is_literal) {
                Template::Literal(value.clone())
            } else {
                Template::Array(ts)
            }
        }
        v => Template::Literal(v.clone()),
    }
}

fn compile_jsonata(value: &Value, at: &str, errors: &mut Vec<CompileError>) -> Template {
    match value {
        Value::String(s) => match crate::jsonata::as_expression(s) {
            Some(src) => match Expr::compile(src) {
                Ok(e) => Template::Jsonata(e),
                Err(msg) => {
                    errors.push((at.to_string(), msg));
                    Template::Literal(Value::Null)
                }
            },
            None => Template::Literal(value.clone()),
        },
        Value::Object(map) => {
            let fields: Vec<(String, Template)> = map
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        compile_jsonata(v, &format!("{at}/{}", escape_pointer(k)), errors),
                    )
                })
                .collect();
            if fields.iter().all(|(_, t)| t.is_literal()) {
                Template::Literal(value.clone())
            } else {
                Template::Object(fields)
            }
        }
        Value::Array(items) => {
            let ts: Vec<Template> = items
                .iter()
                .enumerate()
                .map(|(i, v)| compile_jsonata(v, &format!("{at}/{i}"), errors))
                .collect();
            if ts.iter().all(Template::is_literal) {
                Template::Literal(value.clone())
            } else {
                Template::Array(ts)
            }
        }
        v => Template::Literal(v.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::SplitMix64;
    use crate::path::ValueOnly;
    use serde_json::json;

    fn eval(t: Value, input: Value) -> Result<Value, Failure> {
        Template::jsonpath(&t)
            .unwrap()
            .eval(&ValueOnly(&input), &mut SplitMix64::new(1))
    }

    #[test]
    fn paths_and_literals() {
        let out = eval(
            json!({"a.$": "$.x", "b": {"c.$": "$.y[1]", "d": [1, {"e.$": "$"}]}, "f": "$.x"}),
            json!({"x": 1, "y": [2, 3]}),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"a": 1, "b": {"c": 3, "d": [1, {"e": {"x": 1, "y": [2, 3]}}]}, "f": "$.x"})
        );
        assert_eq!(json::to_compact(&out).find("\"a\""), Some(1));
    }

    #[test]
    fn missing_path_is_runtime_error() {
        let f = eval(json!({"a.$": "$.nope"}), json!({"x": 1})).unwrap_err();
        assert_eq!(f.error.as_deref(), Some("States.Runtime"));
        assert_eq!(
            f.cause.as_deref(),
            Some("The JSONPath '$.nope' specified for the field 'a.$' could not be found in the input '{\"x\":1}'")
        );
    }

    #[test]
    fn compile_errors_are_all_reported() {
        let errs =
            Template::jsonpath(&json!({"a.$": 1, "b": {"c.$": "States.Nope()"}, "d.$": "x"}))
                .unwrap_err();
        let locs: Vec<_> = errs.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(locs, ["/a.$", "/b/c.$", "/d.$"]);
    }
}
