//! Intrinsic functions (`States.Format(...)` and the other 17), parsed once when the
//! definition is loaded and evaluated against a [`Resolver`].

use std::fmt::Write as _;

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::env::Entropy;
use crate::error::Failure;
use crate::json::{self, type_name};
use crate::path::{Path, Resolver};

/// Maximum nesting depth of intrinsic calls.
pub const MAX_DEPTH: usize = 10;
const MAX_STRING: usize = 10_000;
const MAX_RANGE: usize = 1_000;

/// The 18 intrinsic functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Format,
    StringToJson,
    JsonToString,
    Array,
    ArrayPartition,
    ArrayContains,
    ArrayRange,
    ArrayGetItem,
    ArrayLength,
    ArrayUnique,
    Base64Encode,
    Base64Decode,
    Hash,
    JsonMerge,
    MathRandom,
    MathAdd,
    StringSplit,
    Uuid,
}

impl Func {
    fn from_name(name: &str) -> Option<Func> {
        Some(match name {
            "Format" => Func::Format,
            "StringToJson" => Func::StringToJson,
            "JsonToString" => Func::JsonToString,
            "Array" => Func::Array,
            "ArrayPartition" => Func::ArrayPartition,
            "ArrayContains" => Func::ArrayContains,
            "ArrayRange" => Func::ArrayRange,
            "ArrayGetItem" => Func::ArrayGetItem,
            "ArrayLength" => Func::ArrayLength,
            "ArrayUnique" => Func::ArrayUnique,
            "Base64Encode" => Func::Base64Encode,
            "Base64Decode" => Func::Base64Decode,
            "Hash" => Func::Hash,
            "JsonMerge" => Func::JsonMerge,
            "MathRandom" => Func::MathRandom,
            "MathAdd" => Func::MathAdd,
            "StringSplit" => Func::StringSplit,
            "UUID" => Func::Uuid,
            _ => return None,
        })
    }

    /// Allowed argument counts (min, max).
    fn arity(self) -> (usize, usize) {
        match self {
            Func::Format => (1, usize::MAX),
            Func::Array => (0, usize::MAX),
            Func::StringToJson
            | Func::JsonToString
            | Func::ArrayLength
            | Func::ArrayUnique
            | Func::Base64Encode
            | Func::Base64Decode => (1, 1),
            Func::ArrayPartition
            | Func::ArrayContains
            | Func::ArrayGetItem
            | Func::Hash
            | Func::MathAdd
            | Func::StringSplit => (2, 2),
            Func::ArrayRange | Func::JsonMerge => (3, 3),
            Func::MathRandom => (2, 3),
            Func::Uuid => (0, 0),
        }
    }
}

/// One argument of a call.
#[derive(Debug, Clone)]
pub enum Arg {
    /// A string literal: its decoded text and the raw text (Format needs escapes).
    Str {
        text: String,
        raw: String,
    },
    /// A number, boolean or null literal.
    Lit(Value),
    Path(Path),
    Call(Box<Call>),
}

/// A parsed intrinsic call.
#[derive(Debug, Clone)]
pub struct Call {
    pub name: String,
    pub func: Func,
    pub args: Vec<Arg>,
}

/// `true` when a `.$` value should be parsed as an intrinsic call.
pub fn looks_like_call(s: &str) -> bool {
    s.starts_with("States.")
}

impl Call {
    /// Parses `States.X(...)`. The error is a human-readable reason.
    pub fn parse(text: &str) -> Result<Call, String> {
        let mut p = Parser {
            s: text,
            pos: 0,
            depth: 0,
        };
        let call = p.call()?;
        p.ws();
        if p.pos != text.len() {
            return Err(format!(
                "unexpected '{}' after the intrinsic function",
                &text[p.pos..]
            ));
        }
        Ok(call)
    }

    /// Evaluates the call. `field` names the template field, for error messages.
    pub fn eval(
        &self,
        r: &dyn Resolver,
        entropy: &mut dyn Entropy,
        field: &str,
    ) -> Result<Value, Failure> {
        let mut args = Vec::with_capacity(self.args.len());
        for a in &self.args {
            args.push(match a {
                Arg::Str { text, .. } => Value::String(text.clone()),
                Arg::Lit(v) => v.clone(),
                Arg::Path(p) => match p.resolve(r) {
                    Some(v) => v.into_owned(),
                    None => {
                        return Err(Failure::runtime(format!(
                            "The JSONPath '{}' specified for the field '{}' could not be found in the input '{}'",
                            p.as_str(),
                            field,
                            json::to_compact(r.input())
                        )))
                    }
                },
                Arg::Call(c) => c.eval(r, entropy, field)?,
            });
        }
        self.apply(args, entropy)
    }

    fn fail(&self, msg: impl std::fmt::Display) -> Failure {
        Failure::intrinsic(format!("Invalid arguments in States.{}: {msg}", self.name))
    }

    fn apply(&self, mut args: Vec<Value>, entropy: &mut dyn Entropy) -> Result<Value, Failure> {
        match self.func {
            Func::Format => {
                let raw = match &self.args[0] {
                    Arg::Str { raw, .. } => raw.clone(),
                    _ => match &args[0] {
                        Value::String(s) => s.clone(),
                        v => {
                            return Err(self.fail(format!("expected string, got {}", type_name(v))))
                        }
                    },
                };
                format(&raw, &args[1..])
                    .map(Value::String)
                    .map_err(|m| self.fail(m))
            }
            Func::StringToJson => {
                let s = self.string(&args[0])?;
                if s.trim().is_empty() {
                    return Ok(Value::Null);
                }
                serde_json::from_str(s).map_err(|e| self.fail(format!("invalid JSON string: {e}")))
            }
            Func::JsonToString => Ok(Value::String(json::to_compact(&args[0]))),
            Func::Array => Ok(Value::Array(args)),
            Func::ArrayPartition => {
                let size = self.int(&args[1])?;
                if size <= 0 {
                    return Err(self.fail("chunk size must be greater than 0"));
                }
                let arr = self.array(&args[0])?;
                Ok(Value::Array(
                    arr.chunks(size as usize)
                        .map(|c| Value::Array(c.to_vec()))
                        .collect(),
                ))
            }
            Func::ArrayContains => {
                let arr = self.array(&args[0])?;
                Ok(Value::Bool(arr.iter().any(|v| json_eq(v, &args[1]))))
            }
            Func::ArrayRange => {
                let (start, end, step) = (
                    self.int(&args[0])?,
                    self.int(&args[1])?,
                    self.int(&args[2])?,
                );
                if step == 0 {
                    return Err(self.fail("step must not be 0"));
                }
                let mut out = Vec::new();
                let mut i = start;
                while (step > 0 && i <= end) || (step < 0 && i >= end) {
                    if out.len() >= MAX_RANGE {
                        return Err(
                            self.fail(format!("the array would have more than {MAX_RANGE} items"))
                        );
                    }
                    out.push(Value::from(i));
                    i += step;
                }
                Ok(Value::Array(out))
            }
            Func::ArrayGetItem => {
                let idx = self.int(&args[1])?;
                let arr = self.array(&args[0])?;
                if idx < 0 || idx as usize >= arr.len() {
                    return Err(self.fail(format!("index {idx} is out of bounds")));
                }
                Ok(arr[idx as usize].clone())
            }
            Func::ArrayLength => Ok(Value::from(self.array(&args[0])?.len())),
            Func::ArrayUnique => {
                let arr = self.array(&args[0])?;
                let mut out: Vec<Value> = Vec::with_capacity(arr.len());
                for v in arr {
                    if !out.iter().any(|o| json_eq(o, v)) {
                        out.push(v.clone());
                    }
                }
                Ok(Value::Array(out))
            }
            Func::Base64Encode => {
                let s = self.bounded_string(&args[0])?;
                Ok(Value::String(
                    base64::engine::general_purpose::STANDARD.encode(s),
                ))
            }
            Func::Base64Decode => {
                let s = self.bounded_string(&args[0])?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|e| self.fail(format!("invalid base64 data: {e}")))?;
                String::from_utf8(bytes)
                    .map(Value::String)
                    .map_err(|_| self.fail("decoded data is not UTF-8"))
            }
            Func::Hash => {
                let data = match &args[0] {
                    Value::String(s) => s.clone(),
                    v => json::to_compact(v),
                };
                if data.chars().count() > MAX_STRING {
                    return Err(self.fail(format!("data is longer than {MAX_STRING} characters")));
                }
                let alg = self.string(&args[1])?;
                hash(alg, data.as_bytes()).map(Value::String).ok_or_else(|| {
                    self.fail(format!(
                        "unsupported hash algorithm '{alg}'; use MD5, SHA-1, SHA-256, SHA-384 or SHA-512"
                    ))
                })
            }
            Func::JsonMerge => {
                match &args[2] {
                    Value::Bool(false) => {}
                    Value::Bool(true) => {
                        return Err(self
                            .fail("deep merge is not supported; the third argument must be false"))
                    }
                    v => return Err(self.fail(format!("expected boolean, got {}", type_name(v)))),
                }
                let b = args.swap_remove(1);
                let a = args.swap_remove(0);
                match (a, b) {
                    (Value::Object(mut a), Value::Object(b)) => {
                        for (k, v) in b {
                            a.insert(k, v);
                        }
                        Ok(Value::Object(a))
                    }
                    (a, b) => Err(self.fail(format!(
                        "expected two objects, got {} and {}",
                        type_name(&a),
                        type_name(&b)
                    ))),
                }
            }
            Func::MathRandom => {
                let (start, end) = (self.int(&args[0])?, self.int(&args[1])?);
                if start > end {
                    return Err(self.fail("start must not be greater than end"));
                }
                let r = match args.get(2) {
                    Some(seed) => {
                        let mut rng = crate::env::SplitMix64::new(self.int(seed)? as u64);
                        rng.next_u64()
                    }
                    None => entropy.next_u64(),
                };
                let span = (end - start) as u128 + 1;
                Ok(Value::from(start + (r as u128 % span) as i64))
            }
            Func::MathAdd => {
                let a = self.round_half_up(&args[0])?;
                let b = self.round_half_up(&args[1])?;
                a.checked_add(b)
                    .map(Value::from)
                    .ok_or_else(|| self.fail("integer overflow"))
            }
            Func::StringSplit => {
                let s = self.string(&args[0])?;
                let d = self.string(&args[1])?;
                Ok(Value::Array(
                    s.split(|c| d.contains(c))
                        .filter(|p| !p.is_empty())
                        .map(|p| Value::String(p.to_string()))
                        .collect(),
                ))
            }
            Func::Uuid => Ok(Value::String(crate::env::uuid_v4(entropy))),
        }
    }

    fn string<'v>(&self, v: &'v Value) -> Result<&'v str, Failure> {
        v.as_str()
            .ok_or_else(|| self.fail(format!("expected string, got {}", type_name(v))))
    }

    fn bounded_string<'v>(&self, v: &'v Value) -> Result<&'v str, Failure> {
        let s = self.string(v)?;
        if s.chars().count() > MAX_STRING {
            return Err(self.fail(format!("the string is longer than {MAX_STRING} characters")));
        }
        Ok(s)
    }

    fn array<'v>(&self, v: &'v Value) -> Result<&'v Vec<Value>, Failure> {
        v.as_array()
            .ok_or_else(|| self.fail(format!("expected array, got {}", type_name(v))))
    }

    fn int(&self, v: &Value) -> Result<i64, Failure> {
        match v {
            Value::Number(n) if n.is_i64() => Ok(n.as_i64().unwrap_or_default()),
            Value::Number(n)
                if n.as_f64()
                    .is_some_and(|f| f.fract() == 0.0 && f.abs() < 9e15) =>
            {
                Ok(n.as_f64().unwrap_or_default() as i64)
            }
            v => Err(self.fail(format!("expected integer, got {}", json::to_compact(v)))),
        }
    }

    fn round_half_up(&self, v: &Value) -> Result<i64, Failure> {
        match v {
            Value::Number(n) if n.is_i64() => Ok(n.as_i64().unwrap_or_default()),
            Value::Number(n) => {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if !f.is_finite() || f.abs() > 9e15 {
                    return Err(self.fail(format!("number out of range: {n}")));
                }
                Ok((f + 0.5).floor() as i64)
            }
            v => Err(self.fail(format!("expected number, got {}", type_name(v)))),
        }
    }
}

/// Deep JSON equality where `1` and `1.0` are equal.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn hash(alg: &str, data: &[u8]) -> Option<String> {
    use sha2::Digest;
    fn hex(bytes: &[u8]) -> String {
        let mut s = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
    Some(match alg {
        "MD5" => hex(&md5::Md5::digest(data)),
        "SHA-1" => hex(&sha1::Sha1::digest(data)),
        "SHA-256" => hex(&sha2::Sha256::digest(data)),
        "SHA-384" => hex(&sha2::Sha384::digest(data)),
        "SHA-512" => hex(&sha2::Sha512::digest(data)),
        _ => return None,
    })
}

/// Renders a value the way `States.Format` shows it: strings bare, collections Java-style.
fn format_arg(v: &Value, out: &mut String, nested: bool) {
    match v {
        Value::String(s) => out.push_str(s),
        Value::Null if nested => out.push_str("null"),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                format_arg(x, out, true);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(k);
                out.push('=');
                format_arg(x, out, true);
            }
            out.push('}');
        }
        other => out.push_str(&json::to_compact(other)),
    }
}

fn format(template: &str, args: &[Value]) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut next = 0;
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => out.push(n),
                None => out.push('\\'),
            },
            '{' if chars.peek() == Some(&'}') => {
                chars.next();
                let Some(arg) = args.get(next) else {
                    return Err(format!(
                        "the template has more placeholders than the {} arguments given",
                        args.len()
                    ));
                };
                format_arg(arg, &mut out, false);
                next += 1;
            }
            c => out.push(c),
        }
    }
    if next != args.len() {
        return Err(format!(
            "the template has {next} placeholders but {} arguments were given",
            args.len()
        ));
    }
    Ok(out)
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.s.len() - trimmed.len();
    }

    fn eat(&mut self, c: char) -> bool {
        if self.rest().starts_with(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn call(&mut self) -> Result<Call, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!(
                "intrinsic functions are nested more than {MAX_DEPTH} deep"
            ));
        }
        let rest = self.rest();
        let Some(after) = rest.strip_prefix("States.") else {
            return Err(format!("expected an intrinsic function at '{rest}'"));
        };
        let end = after
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(after.len());
        let name = &after[..end];
        let func = Func::from_name(name)
            .ok_or_else(|| format!("unknown intrinsic function 'States.{name}'"))?;
        self.pos += "States.".len() + end;
        self.ws();
        if !self.eat('(') {
            return Err(format!("expected '(' after 'States.{name}'"));
        }
        let mut args = Vec::new();
        self.ws();
        if !self.eat(')') {
            loop {
                self.ws();
                args.push(self.arg()?);
                self.ws();
                if self.eat(')') {
                    break;
                }
                if !self.eat(',') {
                    return Err(format!("expected ',' or ')' in 'States.{name}' arguments"));
                }
            }
        }
        let (min, max) = func.arity();
        if args.len() < min || args.len() > max {
            let want = if min == max {
                format!("{min}")
            } else if max == usize::MAX {
                format!("at least {min}")
            } else {
                format!("{min} to {max}")
            };
            return Err(format!(
                "States.{name} takes {want} arguments but {} were given",
                args.len()
            ));
        }
        if func == Func::Format && !matches!(args[0], Arg::Str { .. } | Arg::Path(_)) {
            return Err("the first argument of States.Format must be a string".into());
        }
        self.depth -= 1;
        Ok(Call {
            name: name.to_string(),
            func,
            args,
        })
    }

    fn arg(&mut self) -> Result<Arg, String> {
        let rest = self.rest();
        if rest.starts_with('\'') {
            return self.string();
        }
        if rest.starts_with("States.") {
            return Ok(Arg::Call(Box::new(self.call()?)));
        }
        if rest.starts_with('$') {
            // A path runs to the next ',' or ')' outside brackets and quotes.
            let (mut depth, mut quote) = (0usize, None::<char>);
            let mut end = rest.len();
            for (i, c) in rest.char_indices() {
                match (quote, c) {
                    (Some(q), c) if c == q => quote = None,
                    (Some(_), _) => {}
                    (None, '\'' | '"') => quote = Some(c),
                    (None, '[' | '(') => depth += 1,
                    (None, ']') => depth = depth.saturating_sub(1),
                    (None, ')') if depth > 0 => depth -= 1,
                    (None, ',' | ')') if depth == 0 => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
            }
            let text = rest[..end].trim_end();
            let path = Path::parse(text)?;
            self.pos += end;
            return Ok(Arg::Path(path));
        }
        for (word, v) in [
            ("true", Value::Bool(true)),
            ("false", Value::Bool(false)),
            ("null", Value::Null),
        ] {
            if rest.starts_with(word)
                && !rest[word.len()..].starts_with(|c: char| c.is_ascii_alphanumeric())
            {
                self.pos += word.len();
                return Ok(Arg::Lit(v));
            }
        }
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E')))
            .unwrap_or(rest.len());
        if end > 0 {
            if let Ok(n) = serde_json::from_str::<serde_json::Number>(&rest[..end]) {
                self.pos += end;
                return Ok(Arg::Lit(Value::Number(n)));
            }
        }
        Err(format!("unexpected argument at '{rest}'"))
    }

    fn string(&mut self) -> Result<Arg, String> {
        let rest = &self.s[self.pos + 1..];
        let mut text = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, n @ ('\'' | '{' | '}' | '\\'))) => text.push(n),
                    Some((_, n)) => {
                        return Err(format!("invalid escape '\\{n}' in string literal"))
                    }
                    None => break,
                },
                '\'' => {
                    let raw = rest[..i].to_string();
                    self.pos += 1 + i + 1;
                    return Ok(Arg::Str { text, raw });
                }
                c => text.push(c),
            }
        }
        Err("unterminated string literal".into())
    }
}

/// Builds an object from pairs; used by tests and templates.
pub fn object(pairs: impl IntoIterator<Item = (String, Value)>) -> Value {
    Value::Object(pairs.into_iter().collect::<Map<_, _>>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::SplitMix64;
    use crate::path::ValueOnly;
    use serde_json::json;

    fn run(expr: &str, input: Value) -> Result<Value, Failure> {
        let call = Call::parse(expr).map_err(Failure::intrinsic)?;
        call.eval(&ValueOnly(&input), &mut SplitMix64::new(7), "f.$")
    }

    fn ok(expr: &str, input: Value) -> Value {
        run(expr, input).unwrap_or_else(|f| panic!("{expr}: {f}"))
    }

    fn err(expr: &str, input: Value) -> String {
        run(expr, input).unwrap_err().error.unwrap_or_default()
    }

    #[test]
    fn format() {
        assert_eq!(
            ok("States.Format('Hello, {}!', $.n)", json!({"n": "Ann"})),
            json!("Hello, Ann!")
        );
        assert_eq!(
            ok("States.Format('{} {} {}', 1, true, null)", json!({})),
            json!("1 true null")
        );
        assert_eq!(
            ok(r"States.Format('\{\} {}', 'x')", json!({})),
            json!("{} x")
        );
        assert_eq!(
            ok(
                r"States.Format('it\'s {}', $.o)",
                json!({"o": {"a": 1, "b": [1, "x"]}})
            ),
            json!("it's {a=1, b=[1, x]}")
        );
        assert_eq!(
            err("States.Format('{}', 1, 2)", json!({})),
            "States.IntrinsicFailure"
        );
    }

    #[test]
    fn json_and_arrays() {
        assert_eq!(
            ok("States.StringToJson($.s)", json!({"s": "{\"a\":[1]}"})),
            json!({"a": [1]})
        );
        assert_eq!(
            ok("States.JsonToString($.o)", json!({"o": {"b": 1, "a": 2}})),
            json!("{\"b\":1,\"a\":2}")
        );
        assert_eq!(
            ok("States.Array(1, 'a', $.x)", json!({"x": [2]})),
            json!([1, "a", [2]])
        );
        assert_eq!(
            ok("States.ArrayPartition($.a, 2)", json!({"a": [1, 2, 3]})),
            json!([[1, 2], [3]])
        );
        assert_eq!(
            ok(
                "States.ArrayContains($.a, $.v)",
                json!({"a": [{"x": 1}], "v": {"x": 1.0}})
            ),
            json!(true)
        );
        assert_eq!(
            ok("States.ArrayRange(1, 9, 2)", json!({})),
            json!([1, 3, 5, 7, 9])
        );
        assert_eq!(
            ok("States.ArrayRange(5, 1, -2)", json!({})),
            json!([5, 3, 1])
        );
        assert_eq!(
            err("States.ArrayRange(1, 5000, 1)", json!({})),
            "States.IntrinsicFailure"
        );
        assert_eq!(
            ok("States.ArrayGetItem($.a, 1)", json!({"a": [1, 2]})),
            json!(2)
        );
        assert_eq!(
            err("States.ArrayGetItem($.a, 2)", json!({"a": [1, 2]})),
            "States.IntrinsicFailure"
        );
        assert_eq!(
            ok("States.ArrayLength($.a)", json!({"a": [1, 2]})),
            json!(2)
        );
        assert_eq!(
            ok("States.ArrayUnique($.a)", json!({"a": [1, 2, 1, "1"]})),
            json!([1, 2, "1"])
        );
    }

    #[test]
    fn encoding_hash_math() {
        assert_eq!(
            ok("States.Base64Encode('Data to encode')", json!({})),
            json!("RGF0YSB0byBlbmNvZGU=")
        );
        assert_eq!(
            ok("States.Base64Decode('RGF0YSB0byBlbmNvZGU=')", json!({})),
            json!("Data to encode")
        );
        assert_eq!(
            ok("States.Hash('input data', 'SHA-1')", json!({})),
            json!("aaff4a450a104cd177d28d18d74485e8cae074b7")
        );
        assert_eq!(
            ok("States.Hash('', 'MD5')", json!({})),
            json!("d41d8cd98f00b204e9800998ecf8427e")
        );
        assert_eq!(
            err("States.Hash('x', 'SHA-3')", json!({})),
            "States.IntrinsicFailure"
        );
        assert_eq!(ok("States.MathAdd(111, -1)", json!({})), json!(110));
        assert_eq!(ok("States.MathAdd(1.5, 1)", json!({})), json!(3));
        let r = ok("States.MathRandom(1, 10)", json!({})).as_i64().unwrap();
        assert!((1..=10).contains(&r));
        assert_eq!(
            ok("States.MathRandom(1, 1000, 42)", json!({})),
            ok("States.MathRandom(1, 1000, 42)", json!({}))
        );
        assert_eq!(
            ok("States.StringSplit('a,b;;c', ',;')", json!({})),
            json!(["a", "b", "c"])
        );
        assert_eq!(
            ok(
                "States.JsonMerge($.a, $.b, false)",
                json!({"a": {"x": 1, "y": 1}, "b": {"y": 2}})
            ),
            json!({"x": 1, "y": 2})
        );
        assert_eq!(
            err(
                "States.JsonMerge($.a, $.b, true)",
                json!({"a": {}, "b": {}})
            ),
            "States.IntrinsicFailure"
        );
        let u = ok("States.UUID()", json!({}));
        assert_eq!(u.as_str().unwrap().len(), 36);
        assert_eq!(&u.as_str().unwrap()[14..15], "4");
    }

    #[test]
    fn nested_and_parse_errors() {
        assert_eq!(
            ok(
                "States.ArrayLength(States.Array(1, States.Array(2, 3)))",
                json!({})
            ),
            json!(2)
        );
        assert!(Call::parse("States.Nope(1)").is_err());
        assert!(Call::parse("States.ArrayLength(1, 2)").is_err());
        assert!(Call::parse("States.Format('x'").is_err());
        assert!(Call::parse("States.UUID() x").is_err());
        let deep = "States.Array(".repeat(11) + &")".repeat(11);
        assert!(Call::parse(&deep).is_err());
        assert_eq!(
            err("States.ArrayLength($.missing)", json!({})),
            "States.Runtime"
        );
    }
}
