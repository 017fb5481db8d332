//! Property tests for reference paths, ResultPath writes and payload templates.

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use trellis_asl::env::SplitMix64;
use trellis_asl::path::{Path, ValueOnly};
use trellis_asl::template::Template;

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_][a-z0-9_]{0,5}",
        "[a-z]{1,3} [a-z]{1,3}",
        "[A-Z][a-z]{0,3}-[0-9]",
        "[a-z]{1,2}'[a-z]{1,2}",
        "é[a-z]{0,2}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(|f| json!(f)),
        "[a-z $.]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// One step of a generated path, as a user could write it.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(i64),
}

fn is_ident(k: &str) -> bool {
    let mut c = k.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Renders steps as a path, with dot or bracket notation chosen per step by `style`.
fn render(steps: &[Step], style: &[bool]) -> String {
    let mut out = String::from("$");
    for (i, s) in steps.iter().enumerate() {
        let bracket = style.get(i).copied().unwrap_or(false);
        match s {
            Step::Key(k) if is_ident(k) && !bracket => {
                out.push('.');
                out.push_str(k);
            }
            Step::Key(k) => {
                out.push_str("['");
                out.push_str(&k.replace('\'', "\\'"));
                out.push_str("']");
            }
            Step::Index(n) => out.push_str(&format!("[{n}]")),
        }
    }
    out
}

/// Picks an existing node of `v`, steered by `choices`, and returns its steps and value.
fn pick(v: &Value, choices: &[(usize, bool)]) -> (Vec<Step>, Value) {
    let mut steps = Vec::new();
    let mut cur = v;
    for &(n, negative) in choices {
        match cur {
            Value::Object(m) if !m.is_empty() => {
                let (k, next) = m.iter().nth(n % m.len()).unwrap();
                steps.push(Step::Key(k.clone()));
                cur = next;
            }
            Value::Array(a) if !a.is_empty() => {
                let i = n % a.len();
                let written = if negative {
                    i as i64 - a.len() as i64
                } else {
                    i as i64
                };
                steps.push(Step::Index(written));
                cur = &a[i];
            }
            _ => break,
        }
    }
    (steps, cur.clone())
}

fn text(v: &Value) -> String {
    serde_json::to_string(v).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A reference path to an existing node finds exactly that node, in any notation, and
    /// its normalized form finds it too.
    #[test]
    fn reference_paths_find_the_node(
        v in json_value(),
        choices in prop::collection::vec((any::<usize>(), any::<bool>()), 0..6),
        style in prop::collection::vec(any::<bool>(), 6),
    ) {
        let (steps, want) = pick(&v, &choices);
        let written = render(&steps, &style);
        let path = Path::parse(&written).unwrap();
        prop_assert!(path.is_reference());
        let got = path.apply(&v).map(|c| c.into_owned());
        prop_assert_eq!(got.as_ref().map(text), Some(text(&want)));
        if !steps.iter().any(|s| matches!(s, Step::Key(k) if k.contains('\''))) {
            let again = Path::parse(&path.normalized()).unwrap();
            prop_assert_eq!(again.apply(&v).map(|c| text(&c)), Some(text(&want)));
        }
    }

    /// A path one key past a leaf finds nothing, and the failure names the path.
    #[test]
    fn missing_paths_find_nothing(
        v in json_value(),
        choices in prop::collection::vec((any::<usize>(), any::<bool>()), 0..6),
    ) {
        let (mut steps, _) = pick(&v, &choices);
        steps.push(Step::Key("\u{2603}missing".into()));
        let written = render(&steps, &[]);
        let path = Path::parse(&written).unwrap();
        prop_assert!(path.apply(&v).is_none());
        let failure = path.no_results();
        prop_assert_eq!(failure.error.as_deref(), Some("States.Runtime"));
        let cause = failure.cause.unwrap();
        prop_assert!(cause.contains(&written), "{}", cause);
    }

    /// ResultPath: writing a value and reading it back gives the value, and a failed write
    /// only happens when the path crosses something that is not an object or array.
    #[test]
    fn result_path_writes_read_back(
        target in json_value(),
        keys in prop::collection::vec(key(), 1..4),
        value in json_value(),
    ) {
        let steps: Vec<Step> = keys.iter().cloned().map(Step::Key).collect();
        let path = Path::parse(&render(&steps, &[])).unwrap();
        let mut out = target.clone();
        match path.set(&mut out, value.clone()) {
            Ok(()) => {
                prop_assert_eq!(path.apply(&out).map(|c| text(&c)), Some(text(&value)));
                // Siblings of the first key are untouched, in their order.
                if let (Value::Object(before), Value::Object(after)) = (&target, &out) {
                    for (k, v) in before.iter().filter(|(k, _)| **k != keys[0]) {
                        prop_assert_eq!(after.get(k).map(text), Some(text(v)));
                    }
                    let order_before: Vec<_> = before.keys().collect();
                    let order_after: Vec<_> =
                        after.keys().filter(|k| before.contains_key(*k)).collect();
                    prop_assert_eq!(order_before, order_after);
                }
            }
            Err(msg) => {
                // Some prefix of the path exists and is not an object.
                let mut cur = &target;
                let mut blocked = false;
                for k in &keys {
                    match cur {
                        Value::Object(m) => match m.get(k) {
                            Some(next) => cur = next,
                            None => break,
                        },
                        _ => {
                            blocked = true;
                            break;
                        }
                    }
                }
                prop_assert!(blocked, "set failed without a blocking value: {}", msg);
            }
        }
    }

    /// No text makes the path parser panic; whatever parses can be applied.
    #[test]
    fn any_text_parses_or_fails_cleanly(s in "\\$[\\PC]{0,24}", v in json_value()) {
        if let Ok(p) = Path::parse(&s) {
            let _ = p.apply(&v);
            let _ = p.normalized();
        }
    }

    /// `[*]` on an array is the array itself; on an object, its values in order.
    #[test]
    fn wildcard_lists_children(v in json_value()) {
        let wrapped = json!({"x": v.clone()});
        let got = Path::parse("$.x[*]").unwrap().apply(&wrapped).unwrap().into_owned();
        let want = match &v {
            Value::Array(a) => Value::Array(a.clone()),
            Value::Object(m) => Value::Array(m.values().cloned().collect()),
            _ => json!([]),
        };
        prop_assert_eq!(text(&got), text(&want));
    }

    /// A template without `.$` keys is its own value, key order and number form included.
    #[test]
    fn static_templates_are_literal(v in json_value()) {
        let t = Template::jsonpath(&v).unwrap();
        let got = t.eval(&ValueOnly(&json!({})), &mut SplitMix64::new(1)).unwrap();
        prop_assert_eq!(text(&got), text(&v));
    }

    /// `"k.$": path` takes the node the path finds; static fields keep their place.
    #[test]
    fn template_paths_select(
        input in json_value(),
        choices in prop::collection::vec((any::<usize>(), any::<bool>()), 0..6),
        lit in json_value(),
    ) {
        let (steps, want) = pick(&input, &choices);
        let tpl = json!({"before": lit.clone(), "picked.$": render(&steps, &[]), "after": 1});
        let t = Template::jsonpath(&tpl).unwrap();
        let got = t.eval(&ValueOnly(&input), &mut SplitMix64::new(1)).unwrap();
        let expected = json!({"before": lit, "picked": want, "after": 1});
        prop_assert_eq!(text(&got), text(&expected));
    }

    /// `States.StringToJson(States.JsonToString(x))` is `x`; `States.Array` keeps order.
    #[test]
    fn intrinsics_round_trip(a in json_value(), b in json_value()) {
        let input = json!({"a": a.clone(), "b": b.clone()});
        let tpl = json!({
            "round.$": "States.StringToJson(States.JsonToString($.a))",
            "pair.$": "States.Array($.a, $.b)",
            "len.$": "States.ArrayLength(States.Array($.a, $.b, $.a))",
        });
        let t = Template::jsonpath(&tpl).unwrap();
        let got = t.eval(&ValueOnly(&input), &mut SplitMix64::new(1)).unwrap();
        prop_assert_eq!(text(&got["round"]), text(&a));
        prop_assert_eq!(text(&got["pair"]), text(&json!([a, b])));
        prop_assert_eq!(&got["len"], &json!(3));
    }

    /// Any JSON compiles as a JSONPath template or reports errors; evaluation never panics.
    #[test]
    fn arbitrary_templates_never_panic(tpl in json_value(), input in json_value()) {
        let dynamic = rename_keys(&tpl);
        if let Ok(t) = Template::jsonpath(&dynamic) {
            let _ = t.eval(&ValueOnly(&input), &mut SplitMix64::new(7));
        }
    }
}

/// Makes every other key dynamic (`k.$`), so string values are read as paths or intrinsics.
fn rename_keys(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .enumerate()
                .map(|(i, (k, v))| {
                    if i % 2 == 0 {
                        (format!("{k}.$"), v.clone())
                    } else {
                        (k.clone(), rename_keys(v))
                    }
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(rename_keys).collect()),
        other => other.clone(),
    }
}
