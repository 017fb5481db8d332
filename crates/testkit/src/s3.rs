//! moto's S3 server on 127.0.0.1 for tests and benchmarks of Distributed Map readers and
//! writers: started on a free port, a `bench` bucket made, stopped (by PID) when dropped.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};

use crate::{Error, Result};

/// The bucket every `Moto` starts with.
pub const BUCKET: &str = "bench";

/// Where `moto_server` is: `MOTO_SERVER`, else the workspace's `.venv` (which `.ci/run`
/// makes from `tests/compat/requirements.txt`).
pub fn moto_server() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("MOTO_SERVER") {
        return Ok(PathBuf::from(p));
    }
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../.venv/bin/moto_server"
    ));
    if p.exists() {
        Ok(p)
    } else {
        Err(Error::Node(format!(
            "no moto_server at {} (python3 -m venv .venv && .venv/bin/pip install -r tests/compat/requirements.txt), and MOTO_SERVER is not set",
            p.display()
        )))
    }
}

/// One moto server.
pub struct Moto {
    child: std::process::Child,
    pub url: String,
}

impl Moto {
    /// Starts `bin` and makes the [`BUCKET`] bucket.
    pub async fn start(bin: &std::path::Path) -> Result<Moto> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())?
            .port();
        let child = std::process::Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| Error::Node(format!("cannot start {}: {e}", bin.display())))?;
        let m = Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        // Ready once it answers; the bucket through a PUT (moto takes unsigned ones).
        let t0 = Instant::now();
        let http = reqwest::Client::new();
        loop {
            let put = http.put(format!("{}/{BUCKET}", m.url)).send().await;
            if put.as_ref().is_ok_and(|r| r.status().is_success()) {
                return Ok(m);
            }
            if t0.elapsed() > Duration::from_secs(60) {
                return Err(Error::Timeout(format!(
                    "moto_server did not start: {put:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What a node needs to reach it (any credentials do).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL_S3".into(), self.url.clone()),
            ("AWS_ACCESS_KEY_ID".into(), "test".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
        ]
    }

    fn store(&self) -> Result<AmazonS3> {
        AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_endpoint(&self.url)
            .with_allow_http(true)
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .map_err(|e| Error::Node(e.to_string()))
    }

    pub async fn put(&self, key: &str, body: Vec<u8>) -> Result<()> {
        self.store()?
            .put(&Path::from(key), PutPayload::from(body))
            .await
            .map(drop)
            .map_err(|e| Error::Node(format!("put {key}: {e}")))
    }

    pub async fn get(&self, key: &str) -> Result<Vec<u8>> {
        let got = self
            .store()?
            .get(&Path::from(key))
            .await
            .map_err(|e| Error::Node(format!("get {key}: {e}")))?;
        got.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| Error::Node(format!("get {key}: {e}")))
    }

    /// The lines of every SUCCEEDED file the manifest of a Map state's `output`
    /// (`{"ResultWriterDetails": {"Key": …}}`) lists, and how many files there were.
    pub async fn exported_lines(&self, output: &str) -> Result<(Vec<String>, usize)> {
        let bad = |why: &str| Error::Node(format!("{why}: {output}"));
        let out: serde_json::Value = serde_json::from_str(output).map_err(|_| bad("not JSON"))?;
        let key = out["ResultWriterDetails"]["Key"]
            .as_str()
            .ok_or_else(|| bad("no manifest key"))?;
        let manifest: serde_json::Value = serde_json::from_slice(&self.get(key).await?)
            .map_err(|_| bad("the manifest is not JSON"))?;
        let files = manifest["ResultFiles"]["SUCCEEDED"]
            .as_array()
            .ok_or_else(|| bad("no SUCCEEDED files"))?;
        let mut lines = Vec::new();
        for f in files {
            let k = f["Key"]
                .as_str()
                .ok_or_else(|| bad("a file without a key"))?;
            let body = String::from_utf8(self.get(k).await?).map_err(|_| bad("not UTF-8"))?;
            lines.extend(body.lines().map(str::to_string));
        }
        Ok((lines, files.len()))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
