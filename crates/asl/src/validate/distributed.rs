//! A DISTRIBUTED Map's S3 fields: `ItemReader` and `ResultWriter`, parsed into their
//! typed forms.

use serde_json::{Map, Value};

use super::{as_u64, Parser};
use crate::definition::{QueryLanguage, Reader, Writer};

impl Parser {
    /// `ItemReader`: an S3 object decoded as `ReaderConfig` says, or an S3 listing.
    pub(super) fn reader(&mut self, r: &Value, ql: QueryLanguage, loc: &str) -> Option<Reader> {
        use crate::items::{CsvHeader, ItemFormat};
        let Some(ro) = r.as_object() else {
            self.schema("The field 'ItemReader' must be an object", loc);
            return None;
        };
        for k in ro.keys() {
            if !["Resource", "Parameters", "Arguments", "ReaderConfig"].contains(&k.as_str()) {
                self.schema(
                    &format!("The field '{k}' is not supported by Step Functions"),
                    loc,
                );
            }
        }
        let listing = match ro.get("Resource").and_then(Value::as_str) {
            Some("arn:aws:states:::s3:getObject") => false,
            Some("arn:aws:states:::s3:listObjectsV2") => true,
            _ => {
                self.schema("The ItemReader 'Resource' must be arn:aws:states:::s3:getObject or arn:aws:states:::s3:listObjectsV2", &format!("{loc}/Resource"));
                return None;
            }
        };
        let (akey, other) = match ql {
            QueryLanguage::JsonPath => ("Parameters", "Arguments"),
            QueryLanguage::Jsonata => ("Arguments", "Parameters"),
        };
        if ro.contains_key(other) {
            self.schema(
                &format!(
                    "The field '{other}' is not supported in this query language; use '{akey}'"
                ),
                &format!("{loc}/{other}"),
            );
        }
        let arguments = match ro.get(akey) {
            Some(v) => Some(self.template(v, ql, &format!("{loc}/{akey}"))?),
            None => {
                self.schema(&format!("These fields are required: [{akey}]"), loc);
                None
            }
        };
        let empty = Map::new();
        let rc = match ro.get("ReaderConfig") {
            Some(Value::Object(m)) => m,
            Some(_) => {
                self.schema(
                    "The field 'ReaderConfig' must be an object",
                    &format!("{loc}/ReaderConfig"),
                );
                &empty
            }
            None => &empty,
        };
        let rloc = format!("{loc}/ReaderConfig");
        let known = [
            "InputType",
            "CSVHeaderLocation",
            "CSVHeaders",
            "CSVDelimiter",
            "MaxItems",
            "MaxItemsPath",
            "ItemsPointer",
            "ManifestType",
            "Transformation",
        ];
        for k in rc.keys() {
            if !known.contains(&k.as_str()) {
                self.schema(
                    &format!("The field '{k}' is not supported by Step Functions"),
                    &rloc,
                );
            }
        }
        let text = |k: &str| rc.get(k).and_then(Value::as_str);
        let max_items = self.dynamic(
            rc,
            "MaxItems",
            ql,
            &rloc,
            |v| as_u64(v).is_some_and(|n| n <= 100_000_000),
            "an integer between 0 and 100000000",
        );
        let mut unsupported = None;
        let format = match (listing, text("InputType")) {
            (true, None) => None,
            (true, Some(_)) => {
                self.schema(
                    "The field 'InputType' is not supported with s3:listObjectsV2",
                    &format!("{rloc}/InputType"),
                );
                None
            }
            (false, None) => {
                self.schema("These fields are required: [InputType]", &rloc);
                None
            }
            (false, Some("JSON")) => Some(ItemFormat::Json { pointer: None }),
            (false, Some("JSONL")) => Some(ItemFormat::Jsonl),
            (false, Some("CSV")) => {
                let delimiter = match text("CSVDelimiter") {
                    None | Some("COMMA") => b',',
                    Some("PIPE") => b'|',
                    Some("SEMICOLON") => b';',
                    Some("SPACE") => b' ',
                    Some("TAB") => b'\t',
                    Some(_) => {
                        self.schema(
                            "The field 'CSVDelimiter' must be COMMA, PIPE, SEMICOLON, SPACE or TAB",
                            &format!("{rloc}/CSVDelimiter"),
                        );
                        b','
                    }
                };
                let header = match text("CSVHeaderLocation") {
                    None | Some("FIRST_ROW") => CsvHeader::FirstRow,
                    Some("GIVEN") => match rc.get("CSVHeaders").and_then(Value::as_array) {
                        Some(h) if !h.is_empty() && h.iter().all(Value::is_string) => {
                            CsvHeader::Given(
                                h.iter()
                                    .filter_map(Value::as_str)
                                    .map(str::to_string)
                                    .collect(),
                            )
                        }
                        _ => {
                            self.schema("With CSVHeaderLocation GIVEN, 'CSVHeaders' must be a non-empty array of strings", &rloc);
                            CsvHeader::Given(Vec::new())
                        }
                    },
                    Some(_) => {
                        self.schema(
                            "The field 'CSVHeaderLocation' must be FIRST_ROW or GIVEN",
                            &format!("{rloc}/CSVHeaderLocation"),
                        );
                        CsvHeader::FirstRow
                    }
                };
                Some(ItemFormat::Csv { header, delimiter })
            }
            (false, Some("MANIFEST")) => {
                match text("ManifestType") {
                    None | Some("S3_INVENTORY") => {}
                    Some("ATHENA_DATA") => {
                        unsupported = Some(
                            "The ManifestType ATHENA_DATA is not supported by Trellis".to_string(),
                        )
                    }
                    Some(_) => self.schema(
                        "The field 'ManifestType' must be S3_INVENTORY or ATHENA_DATA",
                        &format!("{rloc}/ManifestType"),
                    ),
                }
                Some(ItemFormat::Manifest)
            }
            (false, Some("PARQUET")) => {
                unsupported = Some("The InputType PARQUET is not supported by Trellis".to_string());
                None
            }
            (false, Some(_)) => {
                self.schema(
                    "The field 'InputType' must be CSV, JSON, JSONL, PARQUET or MANIFEST",
                    &format!("{rloc}/InputType"),
                );
                None
            }
        };
        let format = match (format, text("ItemsPointer")) {
            (Some(ItemFormat::Json { .. }), Some(p)) if p.is_empty() || p.starts_with('/') => {
                Some(ItemFormat::Json {
                    pointer: Some(p.to_string()),
                })
            }
            (f, Some(_)) if matches!(f, Some(ItemFormat::Json { .. })) => {
                self.schema(
                    "The field 'ItemsPointer' must be a JSON Pointer (starting with '/')",
                    &format!("{rloc}/ItemsPointer"),
                );
                f
            }
            (f, Some(_)) => {
                self.schema(
                    "The field 'ItemsPointer' is only supported with the InputType JSON",
                    &format!("{rloc}/ItemsPointer"),
                );
                f
            }
            (f, None) => f,
        };
        match text("Transformation") {
            None | Some("NONE") => {}
            Some("LOAD_AND_FLATTEN") => {
                unsupported = Some(
                    "The ReaderConfig Transformation LOAD_AND_FLATTEN is not supported by Trellis"
                        .to_string(),
                )
            }
            Some(_) => self.schema(
                "The field 'Transformation' must be NONE or LOAD_AND_FLATTEN",
                &format!("{rloc}/Transformation"),
            ),
        }
        Some(Reader {
            listing,
            arguments,
            format,
            max_items,
            unsupported,
        })
    }

    /// `ResultWriter`: where the results are exported (`s3:putObject`) and how they are
    /// shaped (`WriterConfig`).
    pub(super) fn writer(&mut self, w: &Value, ql: QueryLanguage, loc: &str) -> Option<Writer> {
        use crate::export::{OutputType, Transformation, WriterConfig};
        let wo = match w.as_object() {
            Some(wo) if !wo.is_empty() => wo,
            _ => {
                self.schema("The field 'ResultWriter' must be a non-empty object", loc);
                return None;
            }
        };
        for k in wo.keys() {
            if !["Resource", "Parameters", "Arguments", "WriterConfig"].contains(&k.as_str()) {
                self.schema(
                    &format!("The field '{k}' is not supported by Step Functions"),
                    loc,
                );
            }
        }
        let akey = match ql {
            QueryLanguage::JsonPath => "Parameters",
            QueryLanguage::Jsonata => "Arguments",
        };
        let to_s3 = match wo.get("Resource") {
            None => false,
            Some(r) if r == "arn:aws:states:::s3:putObject" => true,
            Some(_) => {
                self.schema(
                    "The ResultWriter 'Resource' must be arn:aws:states:::s3:putObject",
                    &format!("{loc}/Resource"),
                );
                return None;
            }
        };
        let arguments = match wo.get(akey) {
            Some(v) => Some(self.template(v, ql, &format!("{loc}/{akey}"))?),
            None => None,
        };
        if to_s3 != arguments.is_some() {
            self.schema(
                &format!("The ResultWriter needs both 'Resource' and '{akey}', or neither"),
                loc,
            );
        }
        if !to_s3 && !wo.contains_key("WriterConfig") {
            self.schema("These fields are required: [WriterConfig]", loc);
        }
        let mut config = WriterConfig::default();
        if let Some(wc) = wo.get("WriterConfig") {
            let wloc = format!("{loc}/WriterConfig");
            let Some(wc) = wc.as_object() else {
                self.schema("The field 'WriterConfig' must be an object", &wloc);
                return None;
            };
            config.transformation = match wc.get("Transformation").and_then(Value::as_str) {
                None => None,
                Some("NONE") => Some(Transformation::None),
                Some("COMPACT") => Some(Transformation::Compact),
                Some("FLATTEN") => Some(Transformation::Flatten),
                Some(_) => {
                    self.schema(
                        "The field 'Transformation' must be NONE, COMPACT or FLATTEN",
                        &format!("{wloc}/Transformation"),
                    );
                    None
                }
            };
            config.output_type = match wc.get("OutputType").and_then(Value::as_str) {
                None | Some("JSON") => OutputType::Json,
                Some("JSONL") => OutputType::Jsonl,
                Some(_) => {
                    self.schema(
                        "The field 'OutputType' must be JSON or JSONL",
                        &format!("{wloc}/OutputType"),
                    );
                    OutputType::Json
                }
            };
        }
        Some(Writer {
            to_s3,
            arguments,
            config,
        })
    }
}
