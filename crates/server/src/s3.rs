//! S3 for a DISTRIBUTED Map: its `ItemReader` (an object decoded as it streams in, an
//! S3 Inventory manifest's files, or a listing) and its `ResultWriter` (the export's files).
//!
//! One client crate, `object_store` with its S3 support: it signs (SigV4), retries, pages
//! listings and streams bodies. The endpoint comes from `[aws] s3_endpoint_url`, then
//! `endpoint_url`, then the SDKs' `AWS_ENDPOINT_URL_S3` and `AWS_ENDPOINT_URL`; without one
//! it is AWS's regional endpoint. Credentials come from the environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), then the shared
//! credentials file's profile (`AWS_PROFILE`, else `default`), then `object_store`'s own
//! chain (web identity, container and instance metadata).

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, PutPayload};
use serde_json::{Map, Value};
use trellis_asl::error::names;
use trellis_asl::export::{files, WriteResults};
use trellis_asl::items::{self, CsvHeader, ItemFormat, ItemSource, ReadItems};
use trellis_asl::Failure;

/// Where S3 is and how to address it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct S3Config {
    pub region: String,
    /// Empty: AWS's endpoint for the region.
    pub endpoint: String,
    /// `https://host/bucket/key` rather than `https://bucket.host/key`.
    pub path_style: bool,
}

impl S3Config {
    /// The endpoint from the configuration, else from the AWS SDKs' variables in `env`.
    pub fn resolve(
        region: &str,
        s3_endpoint: &str,
        endpoint: &str,
        path_style: bool,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> S3Config {
        let pick = [s3_endpoint.to_string(), endpoint.to_string()]
            .into_iter()
            .chain(env("AWS_ENDPOINT_URL_S3"))
            .chain(env("AWS_ENDPOINT_URL"))
            .find(|e| !e.trim().is_empty())
            .unwrap_or_default();
        S3Config {
            region: region.to_string(),
            endpoint: pick.trim().trim_end_matches('/').to_string(),
            path_style,
        }
    }
}

/// The most bytes of an S3 Inventory manifest read whole.
const MAX_MANIFEST_BYTES: usize = 16 << 20;

/// Chunks in flight between the download and the decoder.
const CHUNKS_IN_FLIGHT: usize = 8;

/// An S3 client per bucket, made on first use.
#[derive(Clone)]
pub struct S3 {
    cfg: S3Config,
    buckets: Arc<Mutex<HashMap<String, Arc<AmazonS3>>>>,
}

impl S3 {
    pub fn new(cfg: S3Config) -> S3 {
        S3 {
            cfg,
            buckets: Arc::default(),
        }
    }

    fn store(&self, bucket: &str) -> Result<Arc<AmazonS3>, String> {
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get(bucket) {
            return Ok(s.clone());
        }
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&self.cfg.region)
            .with_virtual_hosted_style_request(!self.cfg.path_style);
        if !self.cfg.endpoint.is_empty() {
            b = b
                .with_endpoint(&self.cfg.endpoint)
                .with_allow_http(self.cfg.endpoint.starts_with("http://"));
        }
        if let Some((id, secret, token)) = credentials() {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
            if let Some(t) = token {
                b = b.with_token(t);
            }
        }
        let s = Arc::new(b.build().map_err(|e| e.to_string())?);
        map.insert(bucket.to_string(), s.clone());
        Ok(s)
    }

    /// Reads the items an `ItemReader` names, as a JSON array.
    pub async fn read(&self, r: &ReadItems) -> Result<Value, Failure> {
        let fail = |m: String| Failure::new(names::ITEM_READER_FAILED, m);
        match (&r.source, &r.format) {
            (ItemSource::Listing { bucket, prefix }, _) => self
                .list(bucket, prefix.as_deref().unwrap_or(""), r.max_items)
                .await
                .map_err(fail),
            (
                ItemSource::Object {
                    bucket,
                    key,
                    version_id,
                },
                Some(ItemFormat::Manifest),
            ) => {
                let text = self
                    .whole(bucket, key, version_id.as_deref(), MAX_MANIFEST_BYTES)
                    .await
                    .map_err(fail)?;
                let inv = items::inventory(&text).map_err(|e| fail(e.0))?;
                let mut out = Vec::new();
                for file in &inv.keys {
                    let left = match r.max_items {
                        0 => 0,
                        n if out.len() as u64 >= n => break,
                        n => n - out.len() as u64,
                    };
                    let format = ItemFormat::Csv {
                        header: CsvHeader::Given(inv.columns.clone()),
                        delimiter: b',',
                    };
                    let gz = file.ends_with(".gz");
                    let got = self
                        .decode(&inv.bucket, file, None, format, left, gz)
                        .await
                        .map_err(fail)?;
                    out.extend(got);
                }
                Ok(Value::Array(out))
            }
            (
                ItemSource::Object {
                    bucket,
                    key,
                    version_id,
                },
                Some(format),
            ) => self
                .decode(
                    bucket,
                    key,
                    version_id.as_deref(),
                    format.clone(),
                    r.max_items,
                    false,
                )
                .await
                .map(Value::Array)
                .map_err(fail),
            (ItemSource::Object { .. }, None) => {
                Err(fail("the ItemReader has no InputType".into()))
            }
        }
    }

    /// Streams an object through the decoder: the body is never held whole.
    async fn decode(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        format: ItemFormat,
        max_items: u64,
        gzip: bool,
    ) -> Result<Vec<Value>, String> {
        let store = self.store(bucket)?;
        let opts = GetOptions {
            version: version.map(str::to_string),
            ..Default::default()
        };
        let got = store
            .get_opts(&Path::from(key), opts)
            .await
            .map_err(|e| object_error(e, bucket, key))?;
        let mut stream = got.into_stream();
        let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
        let decoder = tokio::task::spawn_blocking(move || {
            let mut body = Chunks {
                rx,
                current: bytes::Bytes::new(),
            };
            let mut out = Vec::new();
            let r = if gzip {
                let mut gz = flate2::read::MultiGzDecoder::new(&mut body);
                items::decode(&format, &mut gz, max_items, &mut |v| out.push(v))
            } else {
                items::decode(&format, &mut body, max_items, &mut |v| out.push(v))
            };
            r.map(|_| out).map_err(|e| e.0)
        });
        // Feed the decoder until the body ends or it stops reading (MaxItems, an error).
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("reading s3://{bucket}/{key}: {e}"));
            let stop = chunk.is_err();
            if tx.send(chunk).await.is_err() || stop {
                break;
            }
        }
        drop(tx);
        decoder
            .await
            .map_err(|e| format!("the decoder stopped: {e}"))?
    }

    /// A small object, whole.
    async fn whole(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        limit: usize,
    ) -> Result<Vec<u8>, String> {
        let store = self.store(bucket)?;
        let opts = GetOptions {
            version: version.map(str::to_string),
            ..Default::default()
        };
        let got = store
            .get_opts(&Path::from(key), opts)
            .await
            .map_err(|e| object_error(e, bucket, key))?;
        if got.meta.size as usize > limit {
            return Err(format!("s3://{bucket}/{key} is larger than {limit} bytes"));
        }
        got.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| format!("reading s3://{bucket}/{key}: {e}"))
    }

    /// `s3:listObjectsV2`: one item per object whose key starts with `prefix`.
    async fn list(&self, bucket: &str, prefix: &str, max_items: u64) -> Result<Value, String> {
        let store = self.store(bucket)?;
        // object_store lists by whole path segments; S3 prefixes are plain string prefixes:
        // list from the prefix's folder and keep the keys that start with it.
        let folder = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let base = (!folder.is_empty()).then(|| Path::from(folder));
        let mut listing = store.list(base.as_ref());
        let mut out = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| match e {
                object_store::Error::NotFound { .. } => {
                    format!("The specified bucket does not exist: {bucket}")
                }
                e => format!("listing s3://{bucket}/{prefix}: {e}"),
            })?;
            let key = meta.location.to_string();
            if !key.starts_with(prefix) {
                continue;
            }
            let mut item = Map::new();
            if let Some(e) = meta.e_tag {
                item.insert("Etag".into(), Value::String(e));
            }
            item.insert("Key".into(), Value::String(key));
            item.insert(
                "LastModified".into(),
                Value::from(meta.last_modified.timestamp()),
            );
            item.insert("Size".into(), Value::from(meta.size));
            item.insert("StorageClass".into(), Value::String("STANDARD".into()));
            out.push(Value::Object(item));
            if max_items > 0 && out.len() as u64 >= max_items {
                break;
            }
        }
        // S3 lists in key order (UTF-8 binary); so do we, whatever the store's paging did.
        out.sort_by(|a, b| a["Key"].as_str().cmp(&b["Key"].as_str()));
        Ok(Value::Array(out))
    }

    /// Puts an export's files, `manifest.json` last.
    pub async fn write(&self, w: &WriteResults) -> Result<Value, Failure> {
        let fail = |m: String| Failure::new(names::RESULT_WRITER_FAILED, m);
        let store = self.store(&w.bucket).map_err(fail)?;
        for (key, body) in files(w) {
            store
                .put(&Path::from(key.as_str()), PutPayload::from(body))
                .await
                .map_err(|e| fail(object_error(e, &w.bucket, &key)))?;
        }
        Ok(w.state_output())
    }
}

/// A readable message for a failed object call.
fn object_error(e: object_store::Error, bucket: &str, key: &str) -> String {
    match e {
        object_store::Error::NotFound { .. } => {
            format!("The specified key does not exist: s3://{bucket}/{key}")
        }
        e => format!("s3://{bucket}/{key}: {e}"),
    }
}

/// The body as a [`Read`]: chunks arrive from the download task.
struct Chunks {
    rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, String>>,
    current: bytes::Bytes,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// Credentials from the environment, else from the shared credentials file.
fn credentials() -> Option<(String, String, Option<String>)> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let (Some(id), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        return Some((id, secret, var("AWS_SESSION_TOKEN")));
    }
    let file = var("AWS_SHARED_CREDENTIALS_FILE")
        .or_else(|| var("HOME").map(|h| format!("{h}/.aws/credentials")))?;
    let text = std::fs::read_to_string(file).ok()?;
    profile(
        &text,
        &var("AWS_PROFILE").unwrap_or_else(|| "default".into()),
    )
}

/// The keys of one profile in a credentials file (INI).
fn profile(text: &str, name: &str) -> Option<(String, String, Option<String>)> {
    let mut inside = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = section.trim() == name;
            continue;
        }
        if !inside {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_string();
            match k.trim() {
                "aws_access_key_id" => id = Some(v),
                "aws_secret_access_key" => secret = Some(v),
                "aws_session_token" => token = Some(v),
                _ => {}
            }
        }
    }
    Some((id?, secret?, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_resolve_in_order() {
        let env = |k: &str| match k {
            "AWS_ENDPOINT_URL" => Some("http://general:1".to_string()),
            "AWS_ENDPOINT_URL_S3" => Some("http://s3:2/".to_string()),
            _ => None,
        };
        let none = |_: &str| None;
        let r = |s3: &str, all: &str, env: &dyn Fn(&str) -> Option<String>| {
            S3Config::resolve("eu-west-1", s3, all, true, env).endpoint
        };
        assert_eq!(r("http://cfg-s3", "http://cfg", &env), "http://cfg-s3");
        assert_eq!(r("", "http://cfg", &env), "http://cfg");
        assert_eq!(r("", "", &env), "http://s3:2");
        assert_eq!(r("", "", &none), "");
    }

    #[test]
    fn credentials_files() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key=S\n\n[ci]\n# c\naws_access_key_id=B\naws_secret_access_key=T\naws_session_token=X\n[half]\naws_access_key_id=C\n";
        assert_eq!(
            profile(text, "default"),
            Some(("A".into(), "S".into(), None))
        );
        assert_eq!(
            profile(text, "ci"),
            Some(("B".into(), "T".into(), Some("X".into())))
        );
        assert_eq!(profile(text, "half"), None);
        assert_eq!(profile(text, "nope"), None);
    }
}
