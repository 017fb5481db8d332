//! S3 for a DISTRIBUTED Map: its `ItemReader` (an object decoded as it streams in, an
//! S3 Inventory manifest's files, or a listing) and its `ResultWriter` (the export's files).
//!
//! S3 is reached as [`trellis_client::s3`] says (`object_store`; the endpoint from
//! `[aws] s3_endpoint_url`, then `endpoint_url`, then the SDKs' variables; credentials from
//! the environment, the shared credentials file, then `object_store`'s chain).

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, PutPayload};
use serde_json::{Map, Value};
use trellis_asl::error::names;
use trellis_asl::export::{files, WriteResults};
use trellis_asl::items::{self, CsvHeader, ItemFormat, ItemSource, Page, ReadCursor, ReadItems};
use trellis_asl::Failure;

pub use trellis_client::s3::S3Config;

/// The most bytes of an S3 Inventory manifest read whole.
const MAX_MANIFEST_BYTES: usize = 16 << 20;

/// Chunks in flight between the download and the decoder.
const CHUNKS_IN_FLIGHT: usize = 8;

/// How [`S3::decode`] reads one object.
#[derive(Debug, Clone, Copy)]
struct Decode {
    max_items: u64,
    /// Items to read and drop first.
    skip: u64,
    gzip: bool,
    /// Where in the object to start.
    offset: u64,
}

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
        let s = Arc::new(self.cfg.store(bucket)?);
        map.insert(bucket.to_string(), s.clone());
        Ok(s)
    }

    /// Reads the page of items an `ItemReader` asks for, as a [`Page`] in JSON.
    pub async fn read(&self, r: &ReadItems) -> Result<Value, Failure> {
        let page = self
            .page(r)
            .await
            .map_err(|m| Failure::new(names::ITEM_READER_FAILED, m))?;
        serde_json::to_value(page)
            .map_err(|e| Failure::new(names::ITEM_READER_FAILED, e.to_string()))
    }

    async fn page(&self, r: &ReadItems) -> Result<Page, String> {
        let cursor = &r.cursor;
        let (bucket, key, version) = match &r.source {
            ItemSource::Listing { bucket, prefix } => {
                return self
                    .list(bucket, prefix.as_deref().unwrap_or(""), r.max_items, cursor)
                    .await
            }
            ItemSource::Object {
                bucket,
                key,
                version_id,
            } => (bucket, key, version_id.as_deref()),
        };
        let format = r.format.clone().ok_or("the ItemReader has no InputType")?;
        let mut next = cursor.clone();
        let (items, ended) = match format {
            ItemFormat::Manifest => {
                let text = self.whole(bucket, key, version, MAX_MANIFEST_BYTES).await?;
                let inv = items::inventory(&text).map_err(|e| e.0)?;
                // Pages re-read the files from the first, skipping what was read.
                let (mut out, mut skip) = (Vec::new(), cursor.items);
                let mut ended = true;
                for file in &inv.keys {
                    let left = match r.max_items {
                        0 => 0,
                        n => n - out.len() as u64,
                    };
                    let format = ItemFormat::Csv {
                        header: CsvHeader::Given(inv.columns.clone()),
                        delimiter: b',',
                    };
                    let opts = Decode {
                        max_items: left,
                        skip,
                        gzip: file.ends_with(".gz"),
                        offset: 0,
                    };
                    let (got, d) = self.decode(&inv.bucket, file, None, format, opts).await?;
                    skip -= d.skipped.min(skip);
                    let full = r.max_items > 0 && (out.len() + got.len()) as u64 >= r.max_items;
                    out.extend(got);
                    if full {
                        ended = false;
                        break;
                    }
                }
                (out, ended)
            }
            ItemFormat::Json { .. } => {
                let opts = Decode {
                    max_items: r.max_items,
                    skip: cursor.items,
                    gzip: false,
                    offset: 0,
                };
                let (got, d) = self.decode(bucket, key, version, format, opts).await?;
                (got, d.ended)
            }
            ItemFormat::Jsonl | ItemFormat::Csv { .. } => {
                let offset = cursor.offset.unwrap_or(0);
                let format = match (&format, &cursor.header) {
                    (ItemFormat::Csv { delimiter, .. }, Some(h)) => ItemFormat::Csv {
                        header: CsvHeader::Given(h.clone()),
                        delimiter: *delimiter,
                    },
                    _ => format,
                };
                let opts = Decode {
                    max_items: r.max_items,
                    skip: 0,
                    gzip: false,
                    offset,
                };
                let (got, d) = self.decode(bucket, key, version, format, opts).await?;
                next.offset = Some(offset + d.consumed.unwrap_or(0));
                if d.header.is_some() {
                    next.header = d.header;
                }
                (got, d.ended)
            }
        };
        next.items += items.len() as u64;
        Ok(Page {
            items,
            next: (!ended).then_some(next),
        })
    }

    /// Streams an object (from `offset`) through the decoder: the body is never held whole.
    async fn decode(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        format: ItemFormat,
        o: Decode,
    ) -> Result<(Vec<Value>, items::Decoded), String> {
        let store = self.store(bucket)?;
        let opts = GetOptions {
            version: version.map(str::to_string),
            range: (o.offset > 0).then_some(object_store::GetRange::Offset(o.offset)),
            ..Default::default()
        };
        let got = match store.get_opts(&Path::from(key), opts).await {
            Ok(g) => g,
            // Past the end: a page that ended exactly at the object's end.
            Err(object_store::Error::Generic { source, .. })
                if o.offset > 0 && source.to_string().contains("416") =>
            {
                let d = items::Decoded {
                    ended: true,
                    consumed: Some(0),
                    ..Default::default()
                };
                return Ok((Vec::new(), d));
            }
            Err(e) => return Err(object_error(e, bucket, key)),
        };
        let size = got.meta.size;
        let mut stream = got.into_stream();
        let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
        let decoder = tokio::task::spawn_blocking(move || {
            let mut body = Chunks {
                rx,
                current: bytes::Bytes::new(),
            };
            let mut out = Vec::new();
            let r = if o.gzip {
                let mut gz = flate2::read::MultiGzDecoder::new(&mut body);
                items::decode(&format, &mut gz, o.max_items, o.skip, &mut |v| out.push(v))
            } else {
                items::decode(&format, &mut body, o.max_items, o.skip, &mut |v| {
                    out.push(v)
                })
            };
            r.map(|d| (out, d)).map_err(|e| e.0)
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
        let (out, mut d) = decoder
            .await
            .map_err(|e| format!("the decoder stopped: {e}"))??;
        // A page that ends exactly at the object's end: nothing more to read.
        if let Some(c) = d.consumed {
            if o.offset + c >= size {
                d.ended = true;
            }
        }
        Ok((out, d))
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
    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        max_items: u64,
        cursor: &ReadCursor,
    ) -> Result<Page, String> {
        let store = self.store(bucket)?;
        // object_store lists by whole path segments; S3 prefixes are plain string prefixes:
        // list from the prefix's folder and keep the keys that start with it.
        let folder = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let base = (!folder.is_empty()).then(|| Path::from(folder));
        let mut listing = match &cursor.after_key {
            Some(after) => store.list_with_offset(base.as_ref(), &Path::from(after.as_str())),
            None => store.list(base.as_ref()),
        };
        let (mut out, mut full) = (Vec::new(), false);
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
                full = true;
                break;
            }
        }
        // S3 lists in key order (UTF-8 binary); so do we, whatever the store's paging did.
        out.sort_by(|a, b| a["Key"].as_str().cmp(&b["Key"].as_str()));
        let next = full.then(|| ReadCursor {
            items: cursor.items + out.len() as u64,
            after_key: out
                .last()
                .and_then(|i| i["Key"].as_str())
                .map(str::to_string),
            ..ReadCursor::default()
        });
        Ok(Page { items: out, next })
    }

    /// Puts an export's files, `manifest.json` last.
    pub async fn write(&self, w: &WriteResults) -> Result<Value, Failure> {
        let fail = |m: String| Failure::new(names::RESULT_WRITER_FAILED, m);
        let store = self.store(&w.bucket).map_err(fail)?;
        let (objects, written) = files(w);
        for (key, body) in objects {
            store
                .put(&Path::from(key.as_str()), PutPayload::from(body))
                .await
                .map_err(|e| fail(object_error(e, &w.bucket, &key)))?;
        }
        serde_json::to_value(written).map_err(|e| fail(e.to_string()))
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
