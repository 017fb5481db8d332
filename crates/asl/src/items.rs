//! A DISTRIBUTED Map's `ItemReader`: what to read ([`ReadItems`]) and how to decode it
//! ([`decode`]).
//!
//! The interpreter says what to read; the host fetches the bytes and hands them to
//! [`decode`] as a [`Read`], which yields the items one at a time: an object is streamed,
//! never held whole (a JSON array is walked element by element, JSON Lines and CSV row by
//! row). Nothing here performs I/O of its own.

use std::io::{BufRead, BufReader, Read};

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How a `s3:getObject` reader decodes its object (`ReaderConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ItemFormat {
    /// A JSON array, or the array `pointer` (`ItemsPointer`, a JSON Pointer) selects.
    Json { pointer: Option<String> },
    /// One JSON value per line.
    Jsonl,
    /// Rows become objects of strings keyed by the header.
    Csv { header: CsvHeader, delimiter: u8 },
    /// An S3 Inventory `manifest.json`: the items are the rows of the CSV files it lists.
    Manifest,
}

/// Where a CSV file's column names come from (`CSVHeaderLocation`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CsvHeader {
    FirstRow,
    /// `GIVEN`: `CSVHeaders`; every row is data.
    Given(Vec<String>),
}

/// What to read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ItemSource {
    /// `s3:getObject`.
    Object {
        bucket: String,
        key: String,
        version_id: Option<String>,
    },
    /// `s3:listObjectsV2`: one item per object under the prefix.
    Listing {
        bucket: String,
        prefix: Option<String>,
    },
}

/// The host's errand for an `ItemReader`: read the next page of items, from `cursor`, and
/// answer with a [`Page`] as JSON (`TaskSucceeded`), or fail with
/// `States.ItemReaderFailed`. A Map Run reads its items page by page as its window moves,
/// so it never holds them all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadItems {
    pub source: ItemSource,
    /// `None` for a listing.
    pub format: Option<ItemFormat>,
    /// Read at most this many items (a page); 0: all of them.
    pub max_items: u64,
    /// Where the page starts.
    #[serde(default)]
    pub cursor: ReadCursor,
}

/// Where the next page of items starts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReadCursor {
    /// Items read before this page.
    pub items: u64,
    /// JSON Lines and CSV: the byte offset of the next item in the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// CSV whose header is its first row: the header, read with the first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<Vec<String>>,
    /// A listing: the last key listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_key: Option<String>,
}

/// One page of items, the answer to [`ReadItems`]. `next` is `None` once the items end.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Page {
    pub items: Vec<Value>,
    pub next: Option<ReadCursor>,
}

/// What [`decode`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decoded {
    /// Items handed over.
    pub count: u64,
    /// Items read and dropped (`skip`).
    pub skipped: u64,
    /// The input ended (rather than `max_items` being reached).
    pub ended: bool,
    /// JSON Lines and CSV: the bytes of input up to the end of the last item handed over.
    pub consumed: Option<u64>,
    /// CSV with `FIRST_ROW`: the header read.
    pub header: Option<Vec<String>>,
}

/// The most bytes of a CSV header row, as AWS allows.
pub const MAX_CSV_HEADER_BYTES: usize = 10 * 1024;

/// Why items could not be decoded: the cause of `States.ItemReaderFailed`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReadError(pub String);

/// The callback said it has enough (`MaxItems` reached): not an error.
#[derive(Debug)]
struct Enough;

/// Decodes `input` as `format`, handing each item to `sink` in order, until the input ends
/// or `max_items` (when not 0) items were handed over. `skip` items are read and dropped
/// first (a JSON document, whose pages restart from its beginning).
pub fn decode(
    format: &ItemFormat,
    input: &mut dyn Read,
    max_items: u64,
    skip: u64,
    sink: &mut dyn FnMut(Value),
) -> Result<Decoded, ReadError> {
    let mut count = 0u64;
    let mut skipped = 0u64;
    let mut take = |v: Value| -> Result<(), Enough> {
        if skipped < skip {
            skipped += 1;
            return Ok(());
        }
        if max_items > 0 && count >= max_items {
            return Err(Enough);
        }
        sink(v);
        count += 1;
        if max_items > 0 && count >= max_items {
            return Err(Enough);
        }
        Ok(())
    };
    let mut d = match format {
        ItemFormat::Json { pointer } => json(input, pointer.as_deref(), &mut take)?,
        ItemFormat::Jsonl => jsonl(input, &mut take)?,
        ItemFormat::Csv { header, delimiter } => csv_rows(input, header, *delimiter, &mut take)?,
        ItemFormat::Manifest => {
            return Err(ReadError(
                "a MANIFEST is read file by file by the host, not decoded as one object".into(),
            ))
        }
    };
    d.count = count;
    d.skipped = skipped;
    Ok(d)
}

type Take<'a> = dyn FnMut(Value) -> Result<(), Enough> + 'a;

fn jsonl(input: &mut dyn Read, take: &mut Take<'_>) -> Result<Decoded, ReadError> {
    let mut reader = BufReader::with_capacity(64 * 1024, input);
    let (mut n, mut consumed) = (0u64, 0u64);
    let mut line = Vec::new();
    loop {
        line.clear();
        let len = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| ReadError(format!("cannot read the object: {e}")))?;
        if len == 0 {
            return Ok(Decoded {
                ended: true,
                consumed: Some(consumed),
                ..Decoded::default()
            });
        }
        n += 1;
        consumed += len as u64;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let v: Value = serde_json::from_slice(&line).map_err(|e| {
            ReadError(format!(
                "line {n} is not a JSON value: {}",
                short(&e.to_string())
            ))
        })?;
        if take(v).is_err() {
            return Ok(Decoded {
                ended: false,
                consumed: Some(consumed),
                ..Decoded::default()
            });
        }
    }
}

fn short(s: &str) -> &str {
    match s.char_indices().nth(200) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The items of a JSON document: the array at `pointer` (the whole document without one),
/// walked element by element.
fn json(
    input: &mut dyn Read,
    pointer: Option<&str>,
    take: &mut Take<'_>,
) -> Result<Decoded, ReadError> {
    let path = match pointer {
        None | Some("") => Vec::new(),
        Some(p) => match p.strip_prefix('/') {
            Some(rest) => rest
                .split('/')
                .map(|s| s.replace("~1", "/").replace("~0", "~"))
                .collect(),
            None => {
                return Err(ReadError(format!(
                    "the ItemsPointer '{p}' is not a JSON Pointer (it must start with '/')"
                )))
            }
        },
    };
    let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(64 * 1024, input));
    let walk = Walk { path: &path, take };
    match walk.deserialize(&mut de) {
        Ok(()) => {}
        Err(e) if e.to_string().starts_with(STOP) => return Ok(Decoded::default()),
        Err(e) => return Err(ReadError(describe(&e.to_string(), pointer))),
    }
    de.end()
        .map_err(|e| ReadError(format!("the object is not valid JSON: {e}")))?;
    Ok(Decoded {
        ended: true,
        ..Decoded::default()
    })
}

/// The marker error that ends the walk early once `MaxItems` items were taken.
const STOP: &str = "trellis: enough items";
const NOT_ARRAY: &str = "trellis: not an array";
const NOT_FOUND: &str = "trellis: pointer not found";

fn describe(err: &str, pointer: Option<&str>) -> String {
    if err.starts_with(NOT_ARRAY) {
        match pointer {
            Some(p) if !p.is_empty() => {
                format!("the ItemsPointer '{p}' does not select a JSON array")
            }
            _ => {
                "the object is not a JSON array (an ItemsPointer selects an array inside it)".into()
            }
        }
    } else if err.starts_with(NOT_FOUND) {
        format!(
            "the ItemsPointer '{}' selects nothing in the object",
            pointer.unwrap_or_default()
        )
    } else {
        format!("the object is not valid JSON: {err}")
    }
}

/// Goes down `path`, then hands over the elements of the array found there.
struct Walk<'p, 't, 'a> {
    path: &'p [String],
    take: &'t mut Take<'a>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array or an object holding one")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        use serde::de::Error;
        let Some((first, rest)) = self.path.split_first() else {
            while let Some(v) = seq.next_element::<Value>()? {
                if (self.take)(v).is_err() {
                    return Err(A::Error::custom(STOP));
                }
            }
            return Ok(());
        };
        let Ok(want) = first.parse::<usize>() else {
            return Err(A::Error::custom(NOT_FOUND));
        };
        for _ in 0..want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(A::Error::custom(NOT_FOUND));
            }
        }
        let inner = Walk {
            path: rest,
            take: self.take,
        };
        if seq.next_element_seed(inner)?.is_none() {
            return Err(A::Error::custom(NOT_FOUND));
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        use serde::de::Error;
        let Some((first, rest)) = self.path.split_first() else {
            return Err(A::Error::custom(NOT_ARRAY));
        };
        let mut found = false;
        let mut inner = Some(Walk {
            path: rest,
            take: self.take,
        });
        while let Some(k) = map.next_key::<String>()? {
            if !found && k == *first {
                found = true;
                if let Some(w) = inner.take() {
                    map.next_value_seed(w)?;
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        if found {
            Ok(())
        } else {
            Err(A::Error::custom(NOT_FOUND))
        }
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Err(self.scalar())
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        Err(self.scalar())
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        Err(self.scalar())
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        Err(self.scalar())
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        Err(self.scalar())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Err(self.scalar())
    }
}

impl Walk<'_, '_, '_> {
    fn scalar<E: serde::de::Error>(&self) -> E {
        if self.path.is_empty() {
            E::custom(NOT_ARRAY)
        } else {
            E::custom(NOT_FOUND)
        }
    }
}

/// Rows of a CSV file as objects of strings: short rows are padded with `""`, fields past
/// the header are dropped.
fn csv_rows(
    input: &mut dyn Read,
    header: &CsvHeader,
    delimiter: u8,
    take: &mut Take<'_>,
) -> Result<Decoded, ReadError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(input);
    let mut r = csv::ByteRecord::new();
    let read = |reader: &mut csv::Reader<&mut dyn Read>, r: &mut csv::ByteRecord| {
        reader.read_byte_record(r).map_err(csv_error)
    };
    let mut read_header = None;
    let names: Vec<String> = match header {
        CsvHeader::Given(h) => h.clone(),
        CsvHeader::FirstRow => match read(&mut reader, &mut r)? {
            false => {
                return Ok(Decoded {
                    ended: true,
                    consumed: Some(reader.position().byte()),
                    ..Decoded::default()
                })
            }
            true => {
                if r.as_slice().len() > MAX_CSV_HEADER_BYTES {
                    return Err(ReadError(format!(
                        "the CSV header is larger than {MAX_CSV_HEADER_BYTES} bytes"
                    )));
                }
                let names: Vec<String> = r.iter().map(|f| text(f, 1)).collect::<Result<_, _>>()?;
                read_header = Some(names.clone());
                names
            }
        },
    };
    let mut seen = std::collections::HashSet::new();
    for n in &names {
        if !seen.insert(n.as_str()) {
            return Err(ReadError(format!("the CSV header has '{n}' twice")));
        }
    }
    let ended = loop {
        if !read(&mut reader, &mut r)? {
            break true;
        }
        let line = r.position().map_or(0, |p| p.line());
        let mut row = Map::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let v = match r.get(i) {
                Some(f) => text(f, line)?,
                None => String::new(),
            };
            row.insert(name.clone(), Value::String(v));
        }
        if take(Value::Object(row)).is_err() {
            break false;
        }
    };
    Ok(Decoded {
        ended,
        consumed: Some(reader.position().byte()),
        header: read_header,
        ..Decoded::default()
    })
}

fn text(f: &[u8], line: u64) -> Result<String, ReadError> {
    String::from_utf8(f.to_vec())
        .map_err(|_| ReadError(format!("line {line} of the CSV file is not UTF-8")))
}

fn csv_error(e: csv::Error) -> ReadError {
    ReadError(format!("the CSV file cannot be read: {e}"))
}

/// The CSV data files an S3 Inventory `manifest.json` lists, and the column names of their
/// rows (`fileSchema`).
#[derive(Debug, Clone, PartialEq)]
pub struct Inventory {
    pub bucket: String,
    pub keys: Vec<String>,
    pub columns: Vec<String>,
}

/// Reads an S3 Inventory `manifest.json` (only the CSV format is supported).
pub fn inventory(manifest: &[u8]) -> Result<Inventory, ReadError> {
    let bad = |why: &str| {
        ReadError(format!(
            "the manifest is not an S3 Inventory manifest: {why}"
        ))
    };
    let v: Value = serde_json::from_slice(manifest).map_err(|e| bad(&e.to_string()))?;
    let format = v.get("fileFormat").and_then(Value::as_str).unwrap_or("");
    if !format.eq_ignore_ascii_case("CSV") {
        return Err(ReadError(format!(
            "the S3 Inventory format '{format}' is not supported (only CSV is)"
        )));
    }
    let bucket = v
        .get("destinationBucket")
        .and_then(Value::as_str)
        .map(|b| b.strip_prefix("arn:aws:s3:::").unwrap_or(b).to_string())
        .ok_or_else(|| bad("no 'destinationBucket'"))?;
    let columns = v
        .get("fileSchema")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no 'fileSchema'"))?
        .split(',')
        .map(|c| c.trim().to_string())
        .collect();
    let keys = v
        .get("files")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no 'files'"))?
        .iter()
        .map(|f| {
            f.get("key")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| bad("a file without a 'key'"))
        })
        .collect::<Result<_, _>>()?;
    Ok(Inventory {
        bucket,
        keys,
        columns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(format: ItemFormat, text: &str, max: u64) -> Result<Vec<Value>, ReadError> {
        let mut out = Vec::new();
        let d = decode(&format, &mut text.as_bytes(), max, 0, &mut |v| out.push(v))?;
        assert_eq!(d.count as usize, out.len());
        Ok(out)
    }

    /// Reads `text` page by page as a host does, each page from the previous one's end.
    fn pages(format: ItemFormat, text: &str, page: u64) -> Vec<Vec<Value>> {
        let mut out = Vec::new();
        let (mut offset, mut items, mut format) = (0usize, 0u64, format);
        loop {
            let mut got = Vec::new();
            let skip = if matches!(format, ItemFormat::Json { .. }) {
                items
            } else {
                0
            };
            let input = &text.as_bytes()[offset..];
            let d = decode(&format, &mut &input[..], page, skip, &mut |v| got.push(v)).unwrap();
            items += d.count;
            offset += d.consumed.unwrap_or(0) as usize;
            if let Some(h) = d.header {
                format = ItemFormat::Csv {
                    header: CsvHeader::Given(h),
                    delimiter: b',',
                };
            }
            out.push(got);
            if d.ended {
                return out;
            }
        }
    }

    #[test]
    fn pages_resume_where_the_last_ended() {
        let jsonl = "1\n\n2\n3\n4\n5";
        assert_eq!(
            pages(ItemFormat::Jsonl, jsonl, 2),
            vec![
                vec![json!(1), json!(2)],
                vec![json!(3), json!(4)],
                vec![json!(5)]
            ]
        );
        let csv = "a,b\n1,\"x\ny\"\n2,z\n3,w\n";
        let f = ItemFormat::Csv {
            header: CsvHeader::FirstRow,
            delimiter: b',',
        };
        assert_eq!(
            pages(f, csv, 2),
            vec![
                vec![json!({"a": "1", "b": "x\ny"}), json!({"a": "2", "b": "z"})],
                vec![json!({"a": "3", "b": "w"})]
            ]
        );
        assert_eq!(
            pages(json_at(Some("/x")), r#"{"x": [1, 2, 3]}"#, 2),
            vec![vec![json!(1), json!(2)], vec![json!(3)]]
        );
        // A page that ends exactly at the end: the next one is empty and ends.
        assert_eq!(
            pages(ItemFormat::Jsonl, "1\n2\n", 2),
            vec![vec![json!(1), json!(2)], vec![]]
        );
    }

    fn json_at(p: Option<&str>) -> ItemFormat {
        ItemFormat::Json {
            pointer: p.map(str::to_string),
        }
    }

    #[test]
    fn json_arrays_and_pointers() {
        let doc = r#"{"a": 1, "data": {"rows": [{"x": 1}, [2], "3", 4.0]}, "z": [9]}"#;
        assert_eq!(
            read(json_at(Some("/data/rows")), doc, 0).unwrap(),
            vec![json!({"x": 1}), json!([2]), json!("3"), json!(4.0)]
        );
        assert_eq!(read(json_at(Some("/z")), doc, 0).unwrap(), vec![json!(9)]);
        assert_eq!(
            read(json_at(None), "[1, 2, 3]", 2).unwrap(),
            vec![json!(1), json!(2)]
        );
        assert_eq!(
            read(json_at(Some("/1/0")), "[[0], [[5, 6]]]", 0).unwrap(),
            vec![json!(5), json!(6)]
        );
        // Key order and number forms are kept.
        let v = read(json_at(None), r#"[{"b": 1.50, "a": 1}]"#, 0).unwrap();
        assert_eq!(serde_json::to_string(&v[0]).unwrap(), r#"{"b":1.5,"a":1}"#);
    }

    #[test]
    fn json_errors() {
        let e = read(json_at(None), r#"{"a": [1]}"#, 0).unwrap_err();
        assert!(e.0.contains("not a JSON array"), "{e}");
        let e = read(json_at(Some("/b")), r#"{"a": [1]}"#, 0).unwrap_err();
        assert!(e.0.contains("selects nothing"), "{e}");
        let e = read(json_at(Some("/a")), r#"{"a": 3}"#, 0).unwrap_err();
        assert!(
            e.0.contains("selects nothing") || e.0.contains("does not select"),
            "{e}"
        );
        let e = read(json_at(None), "[1, 2", 0).unwrap_err();
        assert!(e.0.contains("not valid JSON"), "{e}");
        let e = read(json_at(None), "[1] [2]", 0).unwrap_err();
        assert!(e.0.contains("not valid JSON"), "{e}");
        let e = read(json_at(Some("a")), "[1]", 0).unwrap_err();
        assert!(e.0.contains("not a JSON Pointer"), "{e}");
    }

    #[test]
    fn json_lines() {
        let text = "{\"a\":1}\n\n[2]\r\n\"x\"\n";
        assert_eq!(
            read(ItemFormat::Jsonl, text, 0).unwrap(),
            vec![json!({"a": 1}), json!([2]), json!("x")]
        );
        assert_eq!(read(ItemFormat::Jsonl, text, 1).unwrap().len(), 1);
        let e = read(ItemFormat::Jsonl, "{}\n{oops\n", 0).unwrap_err();
        assert!(e.0.starts_with("line 2 "), "{e}");
    }

    #[test]
    fn csv_rows_are_objects_of_strings() {
        let f = ItemFormat::Csv {
            header: CsvHeader::FirstRow,
            delimiter: b',',
        };
        let text = "id,name,note\n1,\"Smith, J\",\"say \"\"hi\"\"\"\n2,short\n3,a,b,extra\n";
        assert_eq!(
            read(f.clone(), text, 0).unwrap(),
            vec![
                json!({"id": "1", "name": "Smith, J", "note": "say \"hi\""}),
                json!({"id": "2", "name": "short", "note": ""}),
                json!({"id": "3", "name": "a", "note": "b"}),
            ]
        );
        assert_eq!(read(f.clone(), text, 2).unwrap().len(), 2);
        assert_eq!(read(f, "", 0).unwrap(), Vec::<Value>::new());
        let given = ItemFormat::Csv {
            header: CsvHeader::Given(vec!["a".into(), "b".into()]),
            delimiter: b'|',
        };
        assert_eq!(
            read(given, "1|2\n3|4\n", 0).unwrap(),
            vec![json!({"a": "1", "b": "2"}), json!({"a": "3", "b": "4"})]
        );
    }

    #[test]
    fn csv_errors() {
        let f = ItemFormat::Csv {
            header: CsvHeader::FirstRow,
            delimiter: b',',
        };
        let e = read(f.clone(), "a,b,a\n1,2,3\n", 0).unwrap_err();
        assert!(e.0.contains("'a' twice"), "{e}");
        let long = format!("{}\n1\n", "h".repeat(MAX_CSV_HEADER_BYTES + 1));
        assert!(read(f.clone(), &long, 0).unwrap_err().0.contains("larger"));
        let bytes = b"a\n\xff\xfe\n";
        let mut out = Vec::new();
        let e = decode(&f, &mut &bytes[..], 0, 0, &mut |v| out.push(v)).unwrap_err();
        assert!(e.0.contains("not UTF-8"), "{e}");
    }

    #[test]
    fn inventory_manifests() {
        let m = br#"{"sourceBucket":"src","destinationBucket":"arn:aws:s3:::inv","fileFormat":"CSV","fileSchema":"Bucket, Key, Size","files":[{"key":"data/a.csv.gz","size":1}]}"#;
        let inv = inventory(m).unwrap();
        assert_eq!(inv.bucket, "inv");
        assert_eq!(inv.columns, vec!["Bucket", "Key", "Size"]);
        assert_eq!(inv.keys, vec!["data/a.csv.gz"]);
        assert!(inventory(br#"{"fileFormat":"ORC"}"#)
            .unwrap_err()
            .0
            .contains("ORC"));
        assert!(inventory(b"[").is_err());
    }
}
