//! JSON helpers: compact serialization in document order, byte sizes, and the small
//! conversions every module needs.

use serde_json::{Map, Value};

/// Compact serialization, keys in document order (serde_json `preserve_order`).
pub fn to_compact(value: &Value) -> String {
    // Serializing a `Value` cannot fail: its map keys are always strings.
    serde_json::to_string(value).unwrap_or_default()
}

struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Size in bytes of the compact UTF-8 serialization, without allocating it.
pub fn byte_len(value: &Value) -> usize {
    let mut c = Counter(0);
    let _ = serde_json::to_writer(&mut c, value);
    c.0
}

/// The JSON type name used in AWS error messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `true` for a JSON number that holds an integer (`3`, not `3.0`).
pub fn is_integer(n: &serde_json::Number) -> bool {
    n.is_i64() || n.is_u64()
}

/// Builds a JSON number from an `f64`, keeping integral values as integers the way Jackson
/// prints results of integer arithmetic.
pub fn number_from_f64(f: f64) -> Value {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 {
        Value::from(f as i64)
    } else {
        serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// An empty JSON object.
pub fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// Formats epoch milliseconds as ISO-8601 with millisecond precision (`2024-01-01T00:00:00.000Z`).
pub fn iso_millis(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => String::new(),
    }
}

/// Parses an RFC 3339 timestamp as ASL accepts it (uppercase `T` and `Z`, optional fraction,
/// numeric offsets) and returns epoch nanoseconds.
pub fn parse_timestamp(s: &str) -> Option<i128> {
    let bytes = s.as_bytes();
    // AWS requires an uppercase T separator and an uppercase Z when a zone letter is used.
    if bytes.len() < 20 || bytes.get(10) != Some(&b'T') || s.contains('z') || s.contains('t') {
        return None;
    }
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    let secs = t.timestamp() as i128;
    Some(secs * 1_000_000_000 + t.timestamp_subsec_nanos() as i128)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_survive_a_round_trip() {
        // Found by proptest: without serde_json's `float_roundtrip`, this parsed one ULP off.
        for text in [
            "977474397.9767593",
            "0.1",
            "1.7976931348623157e308",
            "5e-324",
            "1.0",
        ] {
            let v: Value = serde_json::from_str(text).unwrap();
            let again: Value = serde_json::from_str(&to_compact(&v)).unwrap();
            assert_eq!(v, again, "{text}");
        }
        let v: Value = serde_json::from_str("977474397.9767593").unwrap();
        assert_eq!(v.as_f64(), Some(977_474_397.976_759_3));
    }

    #[test]
    fn compact_keeps_order() {
        let v: Value = serde_json::from_str(r#"{"b":1,"a":[1.5,2]}"#).unwrap();
        assert_eq!(to_compact(&v), r#"{"b":1,"a":[1.5,2]}"#);
        assert_eq!(byte_len(&v), to_compact(&v).len());
    }

    #[test]
    fn timestamps() {
        assert!(parse_timestamp("2016-03-14T01:59:00Z").is_some());
        assert!(parse_timestamp("2016-03-14T01:59:00.123456789+02:00").is_some());
        assert!(parse_timestamp("2016-03-14t01:59:00Z").is_none());
        assert!(parse_timestamp("2016-03-14T01:59:00z").is_none());
        assert!(parse_timestamp("2016-03-14").is_none());
        assert_eq!(
            parse_timestamp("1970-01-01T00:00:01.5Z"),
            parse_timestamp("1970-01-01T01:00:01.500+01:00")
        );
        assert_eq!(iso_millis(1_500), "1970-01-01T00:00:01.500Z");
        assert_eq!(number_from_f64(3.0), json!(3));
        assert_eq!(number_from_f64(3.5), json!(3.5));
    }
}
