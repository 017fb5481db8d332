//! What a pod can learn about its StatefulSet from the Kubernetes API, with its own service
//! account: for `nodes leave --if-beyond-replicas`, whether this pod goes away for good (its
//! ordinal is at or above the replica count) or only restarts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// Where Kubernetes mounts a pod's service account: `token`, `ca.crt`, `namespace`.
const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A StatefulSet pod's place: `trellis-3` is ordinal 3 of StatefulSet `trellis`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pod {
    pub(crate) statefulset: String,
    pub(crate) ordinal: u32,
}

impl Pod {
    /// From a StatefulSet pod's name (`<statefulset>-<ordinal>`).
    pub(crate) fn from_name(name: &str) -> Result<Pod> {
        let (set, ordinal) = name
            .rsplit_once('-')
            .ok_or_else(|| anyhow!("pod name {name:?} is not <statefulset>-<ordinal>"))?;
        let ordinal = ordinal
            .parse()
            .map_err(|_| anyhow!("pod name {name:?} does not end in an ordinal"))?;
        if set.is_empty() {
            bail!("pod name {name:?} has no StatefulSet name");
        }
        Ok(Pod {
            statefulset: set.into(),
            ordinal,
        })
    }

    /// This pod: `POD_NAME` (the downward API), else the host name (a StatefulSet pod's
    /// host name is its name).
    pub(crate) fn this() -> Result<Pod> {
        let name = std::env::var("POD_NAME")
            .ok()
            .filter(|n| !n.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|n| !n.is_empty()))
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .ok_or_else(|| anyhow!("cannot tell this pod's name (set POD_NAME)"))?;
        Pod::from_name(&name)
    }
}

/// The Kubernetes API as a pod reaches it (in-cluster configuration).
pub(crate) struct InCluster {
    base: String,
    token: String,
    namespace: String,
    ca: PathBuf,
}

impl InCluster {
    /// From `KUBERNETES_SERVICE_HOST`/`_PORT` and the mounted service account.
    pub(crate) fn from_env() -> Result<InCluster> {
        InCluster::from(
            std::env::var("KUBERNETES_SERVICE_HOST").ok(),
            std::env::var("KUBERNETES_SERVICE_PORT").ok(),
            Path::new(SERVICE_ACCOUNT),
        )
    }

    fn from(host: Option<String>, port: Option<String>, sa: &Path) -> Result<InCluster> {
        let host = host.filter(|h| !h.is_empty()).ok_or_else(|| {
            anyhow!("not in a Kubernetes pod: KUBERNETES_SERVICE_HOST is not set")
        })?;
        let port = port.unwrap_or_else(|| "443".into());
        let read = |f: &str| {
            std::fs::read_to_string(sa.join(f))
                .map(|s| s.trim().to_string())
                .with_context(|| format!("reading the service account's {}", sa.join(f).display()))
        };
        // An IPv6 address goes in brackets in a URL.
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        Ok(InCluster {
            base: format!("https://{host}:{port}"),
            token: read("token")?,
            namespace: read("namespace")?,
            ca: sa.join("ca.crt"),
        })
    }

    /// `spec.replicas` of a StatefulSet in this pod's namespace.
    pub(crate) async fn statefulset_replicas(&self, name: &str) -> Result<u32> {
        let ca = std::fs::read(&self.ca)
            .with_context(|| format!("reading the cluster CA {}", self.ca.display()))?;
        let ca = reqwest::Certificate::from_pem(&ca).context("the cluster CA")?;
        let http = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(10))
            .build()
            .context("an HTTPS client")?;
        let url = format!(
            "{}/apis/apps/v1/namespaces/{}/statefulsets/{name}",
            self.base, self.namespace
        );
        let resp = http
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        let body = resp.bytes().await.with_context(|| format!("GET {url}"))?;
        if !status.is_success() {
            // The API's Status object says why (a missing Role: "forbidden").
            let why = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            bail!("GET {url}: {status}: {why}");
        }
        replicas_of(&body).with_context(|| format!("GET {url}"))
    }
}

/// `spec.replicas` of a StatefulSet object (Kubernetes' default, 1, when it is unset).
fn replicas_of(body: &[u8]) -> Result<u32> {
    let v: serde_json::Value = serde_json::from_slice(body).context("not JSON")?;
    if v["kind"].as_str() != Some("StatefulSet") {
        bail!("not a StatefulSet");
    }
    match &v["spec"]["replicas"] {
        serde_json::Value::Null => Ok(1),
        r => r
            .as_u64()
            .and_then(|r| u32::try_from(r).ok())
            .ok_or_else(|| anyhow!("spec.replicas is {r}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names_give_the_statefulset_and_ordinal() {
        assert_eq!(
            Pod::from_name("trellis-12").unwrap(),
            Pod {
                statefulset: "trellis".into(),
                ordinal: 12
            }
        );
        assert_eq!(
            Pod::from_name("my-trellis-0").unwrap().statefulset,
            "my-trellis"
        );
        for bad in ["trellis", "trellis-x", "-3", "trellis-"] {
            assert!(Pod::from_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn replicas_come_from_the_spec() {
        let sts = br#"{"kind":"StatefulSet","spec":{"replicas":5},"status":{"replicas":3}}"#;
        assert_eq!(replicas_of(sts).unwrap(), 5);
        assert_eq!(
            replicas_of(br#"{"kind":"StatefulSet","spec":{}}"#).unwrap(),
            1
        );
        assert!(replicas_of(br#"{"kind":"Status","message":"forbidden"}"#).is_err());
        assert!(replicas_of(br#"{"kind":"StatefulSet","spec":{"replicas":-1}}"#).is_err());
        assert!(replicas_of(b"<html>").is_err());
    }

    #[test]
    fn in_cluster_needs_the_service_host_and_account() {
        let dir = tempfile::tempdir().unwrap();
        let err = InCluster::from(None, None, dir.path()).err().unwrap();
        assert!(err.to_string().contains("KUBERNETES_SERVICE_HOST"), "{err}");
        let err = InCluster::from(Some("10.0.0.1".into()), None, dir.path())
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("token"), "{err:#}");
        std::fs::write(dir.path().join("token"), "abc\n").unwrap();
        std::fs::write(dir.path().join("namespace"), "prod").unwrap();
        let k = InCluster::from(Some("fd00::1".into()), Some("6443".into()), dir.path()).unwrap();
        assert_eq!(k.base, "https://[fd00::1]:6443");
        assert_eq!((k.token.as_str(), k.namespace.as_str()), ("abc", "prod"));
    }
}
