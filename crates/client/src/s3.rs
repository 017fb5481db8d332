//! S3, as the node (a DISTRIBUTED Map's readers and writers, `trellis restore`) and
//! `trellisctl backup` reach it: one client crate, `object_store` with its S3 support (it
//! signs with SigV4, retries, pages listings and streams bodies). The endpoint comes from
//! the node's `[aws]` settings, then the SDKs' `AWS_ENDPOINT_URL_S3` and `AWS_ENDPOINT_URL`;
//! without one it is AWS's regional endpoint.

use object_store::aws::{AmazonS3, AmazonS3Builder};

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

    /// An S3 client of `bucket`: credentials from the environment (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), else the shared credentials file's
    /// profile (`AWS_PROFILE`, else `default`), else `object_store`'s own chain (web
    /// identity, container and instance metadata).
    pub fn store(&self, bucket: &str) -> Result<AmazonS3, String> {
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&self.region)
            .with_virtual_hosted_style_request(!self.path_style);
        if !self.endpoint.is_empty() {
            b = b
                .with_endpoint(&self.endpoint)
                .with_allow_http(self.endpoint.starts_with("http://"));
        }
        if let Some((id, secret, token)) = credentials() {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
            if let Some(t) = token {
                b = b.with_token(t);
            }
        }
        b.build().map_err(|e| e.to_string())
    }

    /// From the AWS SDKs' variables alone (for a tool without a configuration file): the
    /// region from `AWS_REGION` or `AWS_DEFAULT_REGION` (else `us-east-1`), the endpoint from
    /// `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`, addressed by path when one is given
    /// (LocalStack, moto, MinIO), by bucket host name otherwise (AWS).
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> S3Config {
        let region = env("AWS_REGION")
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(|| "us-east-1".into());
        let mut cfg = S3Config::resolve(&region, "", "", false, env);
        cfg.path_style = !cfg.endpoint.is_empty();
        cfg
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
