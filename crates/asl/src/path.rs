//! JSONPath as ASL uses it.
//!
//! Every path names a root: `$` (the state's input or result), `$$` (the context object) or
//! `$name` (a variable). Definite paths (`$.a.b`, `$['a b'][0]`) are walked directly, which is
//! the hot path; anything else (wildcards, filters, slices, unions, deep scans) is handed to
//! `serde_json_path`, and — as in Jayway JsonPath, which AWS uses — yields an array of matches.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde_json::{Map, Value};

/// Where a path starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// `$`: the value the path is applied to (state input, result ...).
    Input,
    /// `$$`: the context object.
    Context,
    /// `$name`: a workflow variable.
    Var(String),
}

/// One step of a definite path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(i64),
}

#[derive(Debug, Clone)]
enum Kind {
    Definite(Vec<Seg>),
    Query(Box<serde_json_path::JsonPath>),
}

/// A Jayway function at the end of a path (`$.items.length()`), applied to what the rest of
/// the path selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    /// `length()` / `size()`: elements of an array, keys of an object, characters of a string.
    Length,
    Min,
    Max,
    Avg,
    Stddev,
    Sum,
    First,
    Last,
    Keys,
}

const FUNCS: [(&str, Func); 10] = [
    (".length()", Func::Length),
    (".size()", Func::Length),
    (".min()", Func::Min),
    (".max()", Func::Max),
    (".avg()", Func::Avg),
    (".stddev()", Func::Stddev),
    (".sum()", Func::Sum),
    (".first()", Func::First),
    (".last()", Func::Last),
    (".keys()", Func::Keys),
];

impl Func {
    /// Applies the function; `None` when it does not apply (as Jayway, which then reports no
    /// result): a wrong type, or an aggregate over no numbers.
    fn apply(self, v: &Value) -> Option<Value> {
        let float = |f: f64| serde_json::Number::from_f64(f).map(Value::Number);
        match self {
            Func::Length => match v {
                Value::Array(a) => Some(a.len().into()),
                Value::Object(m) => Some(m.len().into()),
                Value::String(s) => Some(s.chars().count().into()),
                _ => None,
            },
            Func::First => v.as_array()?.first().cloned(),
            Func::Last => v.as_array()?.last().cloned(),
            Func::Keys => Some(Value::Array(
                v.as_object()?.keys().cloned().map(Value::String).collect(),
            )),
            Func::Min | Func::Max | Func::Avg | Func::Stddev | Func::Sum => {
                let nums: Vec<f64> = v.as_array()?.iter().filter_map(Value::as_f64).collect();
                if nums.is_empty() {
                    return None;
                }
                let n = nums.len() as f64;
                let sum: f64 = nums.iter().sum();
                // Jayway computes in doubles, so results are floats (`6.0`), as AWS prints them.
                float(match self {
                    Func::Min => nums.iter().copied().fold(f64::INFINITY, f64::min),
                    Func::Max => nums.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    Func::Sum => sum,
                    Func::Avg => sum / n,
                    _ => {
                        let sq: f64 = nums.iter().map(|x| x * x).sum();
                        (sq / n - (sum / n) * (sum / n)).max(0.0).sqrt()
                    }
                })
            }
        }
    }
}

/// A parsed path.
#[derive(Debug, Clone)]
pub struct Path {
    text: String,
    root: Root,
    kind: Kind,
    func: Option<Func>,
}

/// What a path is resolved against.
pub trait Resolver {
    /// The value `$` stands for.
    fn input(&self) -> &Value;
    /// The context object `$$`.
    fn context(&self) -> Cow<'_, Value>;
    /// A variable, if it is defined.
    fn var(&self, name: &str) -> Option<&Value>;
    /// One top-level field of the context object (`Execution`, `State` ...). Resolvers that
    /// build the context on demand override this to build only that part.
    fn context_field(&self, key: &str) -> Option<Value> {
        self.context().get(key).cloned()
    }
}

/// A resolver over a single value with no context and no variables.
pub struct ValueOnly<'a>(pub &'a Value);

impl Resolver for ValueOnly<'_> {
    fn input(&self) -> &Value {
        self.0
    }
    fn context(&self) -> Cow<'_, Value> {
        Cow::Owned(Value::Null)
    }
    fn var(&self, _name: &str) -> Option<&Value> {
        None
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl Path {
    /// Parses a path. The error is a human-readable reason.
    pub fn parse(text: &str) -> Result<Path, String> {
        let (root, rest) = if let Some(rest) = text.strip_prefix("$$") {
            (Root::Context, rest)
        } else if let Some(rest) = text.strip_prefix('$') {
            match rest.chars().next() {
                Some(c) if is_ident_start(c) => {
                    let end = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
                    (Root::Var(rest[..end].to_string()), &rest[end..])
                }
                _ => (Root::Input, rest),
            }
        } else {
            return Err(format!(
                "'{text}' is not a valid path: it must start with '$'"
            ));
        };
        let (rest, func) = FUNCS
            .iter()
            .find_map(|(suffix, f)| rest.strip_suffix(suffix).map(|r| (r, Some(*f))))
            .unwrap_or((rest, None));
        let kind = match parse_definite(rest) {
            Some(segs) => Kind::Definite(segs),
            None => {
                check_nesting(rest).map_err(|e| format!("'{text}' is not a valid path: {e}"))?;
                let q = format!("${rest}");
                let jp = serde_json_path::JsonPath::parse(&q)
                    .map_err(|e| format!("'{text}' is not a valid path: {e}"))?;
                Kind::Query(Box::new(jp))
            }
        };
        Ok(Path {
            text: text.to_string(),
            root,
            kind,
            func,
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn root(&self) -> &Root {
        &self.root
    }

    /// A reference path names exactly one node (no wildcards, filters or slices).
    pub fn is_reference(&self) -> bool {
        matches!(self.kind, Kind::Definite(_)) && self.func.is_none()
    }

    /// `$` alone.
    pub fn is_root_only(&self) -> bool {
        self.root == Root::Input
            && self.func.is_none()
            && matches!(&self.kind, Kind::Definite(s) if s.is_empty())
    }

    /// A plain path into the input (`$.a.b[2]`) as a JSON Pointer (`/a/b/2`); `None` for
    /// any other path.
    pub fn as_pointer(&self) -> Option<String> {
        let (Root::Input, Kind::Definite(segs), None) = (&self.root, &self.kind, self.func) else {
            return None;
        };
        let mut out = String::new();
        for s in segs {
            match s {
                Seg::Key(k) => {
                    let _ = write!(out, "/{}", k.replace('~', "~0").replace('/', "~1"));
                }
                Seg::Index(i) if *i >= 0 => {
                    let _ = write!(out, "/{i}");
                }
                Seg::Index(_) => return None,
            }
        }
        Some(out)
    }

    /// The path in Jayway's normalized bracket notation (`$['a'][0]`), used in AWS messages.
    pub fn normalized(&self) -> String {
        let mut out = String::from("$");
        if let (Kind::Definite(segs), None) = (&self.kind, self.func) {
            for s in segs {
                match s {
                    Seg::Key(k) => {
                        let _ = write!(out, "['{k}']");
                    }
                    Seg::Index(i) => {
                        let _ = write!(out, "[{i}]");
                    }
                }
            }
            out
        } else {
            self.text.clone()
        }
    }

    /// AWS's `States.Runtime` failure for a path that matched nothing.
    pub fn no_results(&self) -> crate::error::Failure {
        crate::error::Failure::runtime(format!(
            "Invalid path '{}' : No results for path: {}",
            self.text,
            self.normalized()
        ))
    }

    /// Resolves the path. `None` when a definite path does not exist. An indefinite path
    /// always resolves, to the array of its matches.
    pub fn resolve<'a>(&self, r: &'a dyn Resolver) -> Option<Cow<'a, Value>> {
        let v = self.resolve_base(r)?;
        self.finish(v)
    }

    fn finish<'a>(&self, v: Cow<'a, Value>) -> Option<Cow<'a, Value>> {
        match self.func {
            None => Some(v),
            Some(f) => f.apply(&v).map(Cow::Owned),
        }
    }

    fn resolve_base<'a>(&self, r: &'a dyn Resolver) -> Option<Cow<'a, Value>> {
        match &self.root {
            Root::Input => self.apply_base(r.input()),
            Root::Var(name) => self.apply_base(r.var(name)?),
            Root::Context => match &self.kind {
                Kind::Definite(segs) if !segs.is_empty() => {
                    let Seg::Key(first) = &segs[0] else {
                        return None;
                    };
                    let part = r.context_field(first)?;
                    walk(&part, &segs[1..]).map(|v| Cow::Owned(v.clone()))
                }
                _ => {
                    let ctx = r.context();
                    self.apply_base(&ctx).map(|v| Cow::Owned(v.into_owned()))
                }
            },
        }
    }

    /// Applies the path's segments (and function) to `root`, ignoring which root it names.
    pub fn apply<'a>(&self, root: &'a Value) -> Option<Cow<'a, Value>> {
        let v = self.apply_base(root)?;
        self.finish(v)
    }

    fn apply_base<'a>(&self, root: &'a Value) -> Option<Cow<'a, Value>> {
        match &self.kind {
            Kind::Definite(segs) => walk(root, segs).map(Cow::Borrowed),
            Kind::Query(q) => {
                let nodes = q.query(root).all();
                Some(Cow::Owned(Value::Array(
                    nodes.into_iter().cloned().collect(),
                )))
            }
        }
    }

    /// Writes `value` at this path inside `target` (ResultPath semantics): missing objects on
    /// the way are created, and `$` replaces the whole target. Fails when the path crosses a
    /// value that is not an object.
    pub fn set(&self, target: &mut Value, value: Value) -> Result<(), String> {
        let segs = match &self.kind {
            Kind::Definite(s) if self.root == Root::Input && self.func.is_none() => s,
            _ => return Err(format!("'{}' is not a reference path", self.text)),
        };
        let Some((last, parents)) = segs.split_last() else {
            *target = value;
            return Ok(());
        };
        let mut cur = target;
        for seg in parents {
            cur = match (seg, cur) {
                (Seg::Key(k), Value::Object(map)) => map
                    .entry(k.clone())
                    .or_insert_with(|| Value::Object(Map::new())),
                (Seg::Index(i), Value::Array(arr)) => match index(arr.len(), *i) {
                    Some(i) => &mut arr[i],
                    None => return Err(self.mismatch()),
                },
                _ => return Err(self.mismatch()),
            };
        }
        match (last, cur) {
            (Seg::Key(k), Value::Object(map)) => {
                map.insert(k.clone(), value);
                Ok(())
            }
            (Seg::Index(i), Value::Array(arr)) => match index(arr.len(), *i) {
                Some(i) => {
                    arr[i] = value;
                    Ok(())
                }
                None => Err(self.mismatch()),
            },
            _ => Err(self.mismatch()),
        }
    }

    fn mismatch(&self) -> String {
        format!("Unable to apply ResultPath '{}' to input", self.text)
    }
}

/// How deep brackets and parentheses may nest in a query path. The query parser backtracks
/// exponentially in the nesting depth, so deeper paths are refused before it sees them.
pub const MAX_NESTING: usize = 10;

/// Checks that brackets and parentheses outside quotes balance and nest at most
/// [`MAX_NESTING`] deep, in one linear pass.
fn check_nesting(q: &str) -> Result<(), String> {
    let mut stack = Vec::new();
    let mut quote = None;
    let mut chars = q.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(_), '\\') => {
                chars.next();
            }
            (Some(open), c) if c == open => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[' | '(') => {
                stack.push(c);
                if stack.len() > MAX_NESTING {
                    return Err(format!("brackets nest deeper than {MAX_NESTING} levels"));
                }
            }
            (None, ']' | ')') => {
                let want = if c == ']' { '[' } else { '(' };
                if stack.pop() != Some(want) {
                    return Err(format!("unbalanced '{c}'"));
                }
            }
            _ => {}
        }
    }
    if quote.is_some() {
        return Err("unterminated quoted name".into());
    }
    if let Some(open) = stack.last() {
        return Err(format!("unclosed '{open}'"));
    }
    Ok(())
}

fn index(len: usize, i: i64) -> Option<usize> {
    let i = if i < 0 { len as i64 + i } else { i };
    (i >= 0 && (i as usize) < len).then_some(i as usize)
}

fn walk<'a>(mut v: &'a Value, segs: &[Seg]) -> Option<&'a Value> {
    for s in segs {
        v = match (s, v) {
            (Seg::Key(k), Value::Object(m)) => m.get(k)?,
            (Seg::Index(i), Value::Array(a)) => &a[index(a.len(), *i)?],
            _ => return None,
        };
    }
    Some(v)
}

/// Parses the part after the root as a definite path, or `None` when it needs the full
/// JSONPath engine.
fn parse_definite(mut s: &str) -> Option<Vec<Seg>> {
    let mut segs = Vec::new();
    while !s.is_empty() {
        if let Some(rest) = s.strip_prefix('.') {
            if rest.starts_with('.') {
                return None; // deep scan
            }
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            let key = &rest[..end];
            if key.is_empty()
                || key == "*"
                || key.contains(['(', ')', '*', '?', '@', ',', '\'', '"', ']'])
            {
                return None;
            }
            segs.push(Seg::Key(key.to_string()));
            s = &rest[end..];
        } else if let Some(rest) = s.strip_prefix('[') {
            let q = rest.chars().next()?;
            if q == '\'' || q == '"' {
                // quoted key; backslash escapes the quote
                let mut key = String::new();
                let mut chars = rest[1..].char_indices();
                let mut close = None;
                while let Some((i, c)) = chars.next() {
                    if c == '\\' {
                        let (_, n) = chars.next()?;
                        key.push(n);
                    } else if c == q {
                        close = Some(i);
                        break;
                    } else {
                        key.push(c);
                    }
                }
                let after = &rest[1 + close? + 1..];
                let after = after.strip_prefix(']')?;
                segs.push(Seg::Key(key));
                s = after;
            } else {
                let end = rest.find(']')?;
                let n: i64 = rest[..end].trim().parse().ok()?;
                segs.push(Seg::Index(n));
                s = &rest[end + 1..];
            }
        } else {
            return None;
        }
    }
    Some(segs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn get(path: &str, v: &Value) -> Option<Value> {
        Path::parse(path).unwrap().apply(v).map(|c| c.into_owned())
    }

    #[test]
    fn definite_paths() {
        let v = json!({"a": {"b c": [1, 2, {"d": true}]}, "x": null});
        assert_eq!(get("$", &v), Some(v.clone()));
        assert_eq!(get("$.a['b c'][2].d", &v), Some(json!(true)));
        assert_eq!(get("$.a[\"b c\"][-1]", &v), Some(json!({"d": true})));
        assert_eq!(get("$.x", &v), Some(Value::Null));
        assert_eq!(get("$.missing", &v), None);
        assert_eq!(get("$.a.b", &v), None);
        assert!(Path::parse("$.a.b").unwrap().is_reference());
        assert_eq!(
            Path::parse("$.a['b'][0]").unwrap().normalized(),
            "$['a']['b'][0]"
        );
    }

    #[test]
    fn deep_or_unbalanced_queries_are_refused_quickly() {
        let deep = format!("$.a{}{}", "[?(@.b".repeat(12), " > 1)]".repeat(12));
        let e = Path::parse(&deep).unwrap_err();
        assert!(e.contains("deeper than 10"), "{e}");
        let e = Path::parse("$.a[?(@.b > 1]").unwrap_err();
        assert!(e.contains("unbalanced"), "{e}");
        let e = Path::parse("$.a[?(@.b == 'x)]").unwrap_err();
        assert!(e.contains("unterminated"), "{e}");
        // Brackets inside quotes do not count.
        let p = Path::parse("$.a[?(@.b == '[((')]").unwrap();
        let v = json!({"a": [{"b": "[(("}, {"b": 1}]});
        assert_eq!(p.apply(&v).unwrap().into_owned(), json!([{"b": "[(("}]));
        // Five nested filters are still fine.
        let ok = format!("$.a{}{}", "[?(@.b".repeat(5), " > 1)]".repeat(5));
        assert!(Path::parse(&ok).is_ok() || Path::parse(&ok).unwrap_err().contains("parser"));
    }

    #[test]
    fn jayway_functions() {
        let v = json!({"items": [{"p": 1}, {"p": 5}, {"p": 12}], "nums": [3, 1, 2],
                       "o": {"b": 1, "a": 2}, "s": "héllo", "e": []});
        assert_eq!(get("$.items.length()", &v), Some(json!(3)));
        assert_eq!(get("$.o.size()", &v), Some(json!(2)));
        assert_eq!(get("$.s.length()", &v), Some(json!(5)));
        assert_eq!(get("$.items[*].p.sum()", &v), Some(json!(18.0)));
        assert_eq!(get("$.nums.min()", &v), Some(json!(1.0)));
        assert_eq!(get("$.nums.max()", &v), Some(json!(3.0)));
        assert_eq!(get("$.nums.avg()", &v), Some(json!(2.0)));
        assert_eq!(get("$.nums.first()", &v), Some(json!(3)));
        assert_eq!(get("$.nums.last()", &v), Some(json!(2)));
        assert_eq!(get("$.o.keys()", &v), Some(json!(["b", "a"])));
        let sd = get("$.nums.stddev()", &v).unwrap().as_f64().unwrap();
        assert!((sd - (2.0f64 / 3.0).sqrt()).abs() < 1e-12);
        // Aggregates over nothing, or the wrong type, find nothing (States.Runtime).
        assert_eq!(get("$.e.sum()", &v), None);
        assert_eq!(get("$.s.sum()", &v), None);
        let p = Path::parse("$.items.length()").unwrap();
        assert!(!p.is_reference());
        assert!(p.set(&mut v.clone(), json!(1)).is_err());
    }

    #[test]
    fn queries_return_arrays() {
        let v = json!({"items": [{"p": 1}, {"p": 5}, {"p": 10}]});
        assert_eq!(get("$.items[*].p", &v), Some(json!([1, 5, 10])));
        assert_eq!(get("$.items[?(@.p > 2)].p", &v), Some(json!([5, 10])));
        assert_eq!(get("$..p", &v), Some(json!([1, 5, 10])));
        assert_eq!(get("$.items[0:2].p", &v), Some(json!([1, 5])));
        assert!(!Path::parse("$.items[*]").unwrap().is_reference());
    }

    #[test]
    fn roots() {
        assert_eq!(
            Path::parse("$$.Execution.Id").unwrap().root(),
            &Root::Context
        );
        assert_eq!(
            Path::parse("$foo.bar").unwrap().root(),
            &Root::Var("foo".into())
        );
        assert_eq!(Path::parse("$.foo").unwrap().root(), &Root::Input);
        assert!(Path::parse("foo").is_err());
        assert!(Path::parse("$[").is_err());
    }

    #[test]
    fn set_creates_and_replaces() {
        let mut v = json!({"a": 1});
        Path::parse("$.b.c").unwrap().set(&mut v, json!(2)).unwrap();
        assert_eq!(v, json!({"a": 1, "b": {"c": 2}}));
        Path::parse("$.a").unwrap().set(&mut v, json!("x")).unwrap();
        assert_eq!(v, json!({"a": "x", "b": {"c": 2}}));
        assert!(Path::parse("$.a.z").unwrap().set(&mut v, json!(1)).is_err());
        Path::parse("$").unwrap().set(&mut v, json!([1])).unwrap();
        assert_eq!(v, json!([1]));
        let mut s = json!("str");
        assert!(Path::parse("$.a").unwrap().set(&mut s, json!(1)).is_err());
    }
}
