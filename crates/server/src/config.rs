//! Node configuration, layered: defaults, then a TOML file, then `TRELLIS__SECTION__KEY`
//! environment variables, then command-line flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The `[cluster]` section belongs to the cluster crate, which reads it.
pub use trellis_cluster::ClusterConfig as ClusterSection;

/// Everything a node needs to start. See docs/operations.md for every key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node: NodeSection,
    pub cluster: ClusterSection,
    pub aws: AwsSection,
    pub connectors: ConnectorsSection,
    pub auth: AuthSection,
    pub tls: TlsSection,
    /// Lambda function name -> HTTP endpoint that plays it.
    pub functions: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    pub id: u64,
    /// Take the id from the hostname's trailing ordinal plus one (`trellis-2` -> 3), for a
    /// Kubernetes StatefulSet.
    pub id_from_hostname: bool,
    pub data_dir: PathBuf,
    /// The gRPC API for clients (`trellis.v1` only).
    pub grpc_addr: String,
    /// The AWS JSON API, `/metrics`, `/healthz`, `/readyz`.
    pub http_addr: String,
    /// The peer port: Raft, snapshots, joins and forwarded calls between nodes, nothing
    /// else.
    pub peer_addr: String,
    /// The peer address other nodes use to reach this one (default: `peer_addr`).
    pub advertise_addr: String,
    /// A connection on any port that has read and written nothing for this long is closed.
    pub idle_timeout_seconds: u64,
    /// Placement spreads a shard's replicas over distinct zones when nodes carry one.
    pub zone: String,
    /// Connections open at once on each listener; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Serve non-loopback addresses without authentication or peer mTLS (`--insecure`).
    pub insecure: bool,
    /// The store's page cache, in MiB (sled's own default, 1 GiB, is more than a small
    /// node should spend on it).
    pub cache_mib: u64,
    /// How the node logs to stderr: `text` (colours only on a terminal) or `json` (one
    /// object per line, for log shippers).
    pub log_format: LogFormat,
}

/// The node's log format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Who may call the node ([`crate::auth`]). No access key: authentication is off.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// The root principal's access key; also `TRELLIS_ROOT_ACCESS_KEY_ID`. Root may do
    /// everything (the `admin` role).
    pub root_access_key_id: String,
    /// Its secret; also `TRELLIS_ROOT_SECRET_ACCESS_KEY`.
    pub root_secret_access_key: String,
    /// Root's bearer token for the gRPC API (16 characters at least); also
    /// `TRELLIS_ROOT_TOKEN`. Needs the root keys.
    pub root_token: String,
    /// How far a signed request's date may be from the node's clock (AWS: 15 minutes).
    pub max_skew_seconds: u64,
    /// Principals, with their keys, gRPC tokens and policies (`[[auth.principals]]`).
    pub principals: Vec<PrincipalConfig>,
    /// A TOML file of more principals (`[[principals]]`, as above), read at start and again
    /// whenever it changes (a revoked key or token stops working within a couple of
    /// seconds). Empty: none. Naming a file turns authentication on.
    pub principals_file: String,
    /// Per-principal rate limits.
    pub rate: RateSection,
}

/// TLS on the node's listeners and between nodes (PEM files, read again when they change).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// The certificate chain (leaf first) and key of the client listeners (HTTP and gRPC).
    /// Both set: TLS on them.
    pub cert_file: String,
    pub key_file: String,
    /// A CA: clients of the HTTP and gRPC listeners must present a certificate it signed.
    /// On gRPC, a verified certificate's subject common name names the principal it is.
    pub client_ca_file: String,
    /// The cluster CA: mTLS on the peer port and to other nodes. Set: a node (or anyone)
    /// without a certificate of this CA cannot join, send Raft messages or forward calls.
    pub peer_ca_file: String,
    /// This node's certificate and key for peers (default: `cert_file`, `key_file`). Its
    /// names must cover the node's advertised peer address.
    pub peer_cert_file: String,
    pub peer_key_file: String,
}

impl TlsSection {
    /// The certificate and key the node presents to peers, when peers use mTLS.
    pub fn peer_identity(&self) -> Option<(&str, &str)> {
        if self.peer_ca_file.is_empty() {
            return None;
        }
        if self.peer_cert_file.is_empty() {
            Some((&self.cert_file, &self.key_file))
        } else {
            Some((&self.peer_cert_file, &self.peer_key_file))
        }
    }

    fn check(&self) -> Result<()> {
        if self.cert_file.is_empty() != self.key_file.is_empty() {
            bail!("tls.cert_file and tls.key_file go together");
        }
        if self.peer_cert_file.is_empty() != self.peer_key_file.is_empty() {
            bail!("tls.peer_cert_file and tls.peer_key_file go together");
        }
        if !self.client_ca_file.is_empty() && self.cert_file.is_empty() {
            bail!("tls.client_ca_file needs tls.cert_file and tls.key_file");
        }
        if let Some((cert, _)) = self.peer_identity() {
            if cert.is_empty() {
                bail!("tls.peer_ca_file needs the node's certificate (tls.peer_cert_file or tls.cert_file)");
            }
        } else if !self.peer_cert_file.is_empty() {
            bail!("tls.peer_cert_file needs tls.peer_ca_file (the cluster CA)");
        }
        Ok(())
    }
}

/// One principal: who it is, how it proves it, what it may do.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrincipalConfig {
    pub name: String,
    /// SigV4 credentials for the AWS API (both or neither).
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Bearer tokens for the gRPC API (`authorization: Bearer <token>`), at least 16
    /// characters each.
    pub tokens: Vec<String>,
    /// Built-in roles: `read-only`, `operator`, `admin`.
    pub roles: Vec<crate::auth::policy::Role>,
    /// Statements of its own (`effect`, `actions`, `resources`).
    pub statements: Vec<crate::auth::policy::Statement>,
}

impl std::fmt::Debug for PrincipalConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrincipalConfig")
            .field("name", &self.name)
            .field("access_key_id", &self.access_key_id)
            .field("roles", &self.roles)
            .field("statements", &self.statements)
            .finish_non_exhaustive()
    }
}

/// Token buckets per principal and node: a bucket of `*_burst` calls refilled at
/// `*_per_second`; a call finding it empty is refused with `ThrottlingException`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateSection {
    /// StartExecution and StartSyncExecution (AWS's StartExecution quota in its larger
    /// regions: 1,300 and 300 per second).
    pub start_burst: u32,
    pub start_per_second: u32,
    /// Every other call.
    pub other_burst: u32,
    pub other_per_second: u32,
}

impl Default for RateSection {
    fn default() -> Self {
        RateSection {
            start_burst: 1300,
            start_per_second: 300,
            other_burst: 1000,
            other_per_second: 500,
        }
    }
}

impl AuthSection {
    /// Whether calls must be authenticated: some principal is configured, or a principals
    /// file is named.
    pub fn enabled(&self) -> bool {
        !self.root_access_key_id.is_empty()
            || !self.principals.is_empty()
            || !self.principals_file.is_empty()
    }
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            root_access_key_id: String::new(),
            root_secret_access_key: String::new(),
            root_token: String::new(),
            max_skew_seconds: 900,
            principals: Vec::new(),
            principals_file: String::new(),
            rate: RateSection::default(),
        }
    }
}

impl std::fmt::Debug for AuthSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSection")
            .field("root_access_key_id", &self.root_access_key_id)
            .field("max_skew_seconds", &self.max_skew_seconds)
            .field("principals", &self.principals)
            .field("principals_file", &self.principals_file)
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

/// The task connectors (`http:invoke`, Lambda over HTTP).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectorsSection {
    /// A PEM file of CA certificates to trust for HTTPS calls, besides the system's roots.
    /// Empty: the system's roots only.
    pub ca_file: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AwsSection {
    pub region: String,
    pub account: String,
    /// The endpoint of every AWS service Trellis calls (S3 for Distributed Map readers and
    /// writers). Empty: `AWS_ENDPOINT_URL`, else AWS's own.
    pub endpoint_url: String,
    /// S3's endpoint, over `endpoint_url`. Empty: `AWS_ENDPOINT_URL_S3`, else the above.
    pub s3_endpoint_url: String,
    /// Address buckets in the path (`host/bucket/key`), as MinIO and most S3-compatible
    /// servers want, rather than in the host name (`bucket.host/key`).
    pub s3_path_style: bool,
}

impl AwsSection {
    /// S3's settings, the endpoint resolved against the AWS SDKs' environment variables.
    pub fn s3(&self) -> crate::s3::S3Config {
        crate::s3::S3Config::resolve(
            &self.region,
            &self.s3_endpoint_url,
            &self.endpoint_url,
            self.s3_path_style,
            &|k| std::env::var(k).ok(),
        )
    }
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            id: 1,
            id_from_hostname: false,
            data_dir: PathBuf::from("./trellis-data"),
            grpc_addr: "127.0.0.1:7300".into(),
            http_addr: "127.0.0.1:8083".into(),
            peer_addr: "127.0.0.1:7301".into(),
            advertise_addr: String::new(),
            idle_timeout_seconds: 120,
            max_connections: 10_000,
            insecure: false,
            zone: String::new(),
            cache_mib: 256,
            log_format: LogFormat::Text,
        }
    }
}

impl Default for AwsSection {
    fn default() -> Self {
        AwsSection {
            region: "us-east-1".into(),
            account: "000000000000".into(),
            endpoint_url: String::new(),
            s3_endpoint_url: String::new(),
            s3_path_style: true,
        }
    }
}

impl Config {
    /// Defaults, then the TOML file (if any), then the environment.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config> {
        let mut value = toml::Value::try_from(Config::default())?;
        if let Some(f) = file {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read config file {}", f.display()))?;
            let file: toml::Value = toml::from_str(&text)
                .with_context(|| format!("{} is not valid TOML", f.display()))?;
            merge(&mut value, file);
        }
        for (k, v) in env {
            // The root principal, named as MinIO names its root user.
            let root = match k.as_str() {
                "TRELLIS_ROOT_ACCESS_KEY_ID" => Some("root_access_key_id"),
                "TRELLIS_ROOT_SECRET_ACCESS_KEY" => Some("root_secret_access_key"),
                "TRELLIS_ROOT_TOKEN" => Some("root_token"),
                _ => None,
            };
            if let Some(key) = root {
                set(&mut value, &["auth".to_string(), key.to_string()], &v)
                    .with_context(|| format!("environment variable {k}"))?;
                continue;
            }
            let Some(rest) = k.strip_prefix("TRELLIS__") else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
            set(&mut value, &path, &v).with_context(|| format!("environment variable {k}"))?;
        }
        let cfg: Config = value.try_into().context("invalid configuration")?;
        cfg.check()?;
        Ok(cfg)
    }

    pub fn check(&self) -> Result<()> {
        if self.cluster.shards == 0 || self.cluster.shards > 4096 {
            bail!(
                "cluster.shards must be between 1 and 4096, got {}",
                self.cluster.shards
            );
        }
        if self.node.id == 0 {
            bail!("node.id must not be 0");
        }
        if !(16..=1 << 20).contains(&self.node.cache_mib) {
            bail!(
                "node.cache_mib must be between 16 and 1048576, got {}",
                self.node.cache_mib
            );
        }
        if self.cluster.retention_deletes_per_second == 0 {
            bail!("cluster.retention_deletes_per_second must be at least 1");
        }
        if self.cluster.bootstrap_expect == 0 {
            bail!("cluster.bootstrap_expect must be at least 1");
        }
        if self.cluster.replication_factor == 0 {
            bail!("cluster.replication_factor must be at least 1");
        }
        if self.cluster.max_batch == 0 {
            bail!("cluster.max_batch must be at least 1");
        }
        if self.node.max_connections == 0 {
            bail!("node.max_connections must be at least 1");
        }
        if self.node.idle_timeout_seconds == 0 {
            bail!("node.idle_timeout_seconds must be at least 1");
        }
        if self.cluster.peer_max_message_bytes < 1 << 20 {
            bail!(
                "cluster.peer_max_message_bytes must be at least 1 MiB (1048576), got {}",
                self.cluster.peer_max_message_bytes
            );
        }
        if self.cluster.map_run_max_concurrency == 0 {
            bail!("cluster.map_run_max_concurrency must be at least 1");
        }
        if self.cluster.max_live_per_shard == 0 {
            bail!("cluster.max_live_per_shard must be at least 1");
        }
        let (key, secret) = (
            &self.auth.root_access_key_id,
            &self.auth.root_secret_access_key,
        );
        if key.is_empty() != secret.is_empty() {
            bail!(
                "the root principal needs both an access key and a secret \
                 (TRELLIS_ROOT_ACCESS_KEY_ID and TRELLIS_ROOT_SECRET_ACCESS_KEY)"
            );
        }
        if !self.auth.root_token.is_empty() && key.is_empty() {
            bail!("TRELLIS_ROOT_TOKEN (auth.root_token) needs the root principal's keys as well");
        }
        if !self.auth.root_token.is_empty() && self.auth.root_token.len() < 16 {
            bail!("TRELLIS_ROOT_TOKEN (auth.root_token) must be 16 characters at least");
        }
        crate::auth::check_principals(&self.auth.principals)?;
        self.tls.check()?;
        let r = &self.auth.rate;
        if r.start_per_second == 0 || r.other_per_second == 0 {
            bail!("auth.rate: the refill rates must be at least 1 per second");
        }
        if self.cluster.break_fencing && !self.cluster.fault_injection {
            bail!("cluster.break_fencing is for tests and needs cluster.fault_injection");
        }
        Ok(())
    }
}

/// Whether a listen address is reachable only from this host: a loopback IP or `localhost`.
/// A host name other than `localhost`, or an unspecified address (`0.0.0.0`), is not.
pub fn is_loopback(addr: &str) -> bool {
    if let Ok(a) = addr.parse::<std::net::SocketAddr>() {
        return a.ip().is_loopback();
    }
    addr.rsplit_once(':')
        .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost"))
}

impl Config {
    /// What the node would expose unprotected: client ports off loopback without
    /// authentication, a peer port off loopback without mTLS.
    pub fn exposure(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.auth.enabled() {
            for (key, addr) in [
                ("gRPC", &self.node.grpc_addr),
                ("the AWS API", &self.node.http_addr),
            ] {
                if !is_loopback(addr) {
                    out.push(format!("{key} on {addr} without authentication"));
                }
            }
        }
        if self.tls.peer_ca_file.is_empty() && !is_loopback(&self.node.peer_addr) {
            out.push(format!(
                "the peer port on {} without mTLS",
                self.node.peer_addr
            ));
        }
        out
    }
}

impl NodeSection {
    /// The peer address other nodes use for this node (Raft, joins, forwarded calls).
    pub fn advertised(&self) -> &str {
        if self.advertise_addr.is_empty() {
            &self.peer_addr
        } else {
            &self.advertise_addr
        }
    }

    /// The AWS API address shown to operators (see [`NodeSection::advertised_client`]).
    pub fn advertised_http(&self) -> String {
        self.advertised_client(&self.http_addr)
    }

    /// The client gRPC address shown to operators.
    pub fn advertised_grpc(&self) -> String {
        self.advertised_client(&self.grpc_addr)
    }

    /// A client address with the advertised host in place of a wildcard one
    /// (`0.0.0.0:8083` on `trellis-0.trellis` is `trellis-0.trellis:8083`).
    fn advertised_client(&self, addr: &str) -> String {
        let Some((host, port)) = addr.rsplit_once(':') else {
            return addr.to_string();
        };
        let wildcard = matches!(host, "0.0.0.0" | "[::]" | "::" | "");
        match self.advertise_addr.rsplit_once(':') {
            Some((adv, _)) if wildcard => format!("{adv}:{port}"),
            _ => addr.to_string(),
        }
    }
}

/// The node id of a StatefulSet pod: its hostname's trailing number plus one.
pub fn id_from_hostname(host: &str) -> Result<u64> {
    let digits: String = host
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if digits.is_empty() {
        bail!("node.id_from_hostname: hostname '{host}' does not end in an ordinal");
    }
    Ok(digits
        .parse::<u64>()
        .with_context(|| format!("hostname ordinal '{digits}'"))?
        + 1)
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Sets `path` in a TOML table from an environment string, keeping the type of the
/// existing value (numbers stay numbers).
fn set(root: &mut toml::Value, path: &[String], raw: &str) -> Result<()> {
    let Some((last, parents)) = path.split_last() else {
        bail!("empty key");
    };
    let mut cur = root;
    for p in parents {
        let toml::Value::Table(t) = cur else {
            bail!("'{p}' is not a section");
        };
        cur = t
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    let toml::Value::Table(t) = cur else {
        bail!("not a section");
    };
    let v = match t.get(last) {
        Some(toml::Value::Integer(_)) => toml::Value::Integer(
            raw.parse()
                .with_context(|| format!("'{raw}' is not an integer"))?,
        ),
        Some(toml::Value::Boolean(_)) => toml::Value::Boolean(
            raw.parse()
                .with_context(|| format!("'{raw}' is not true or false"))?,
        ),
        _ => toml::Value::String(raw.to_string()),
    };
    t.insert(last.clone(), v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.toml");
        std::fs::write(
            &f,
            "[node]\nid = 3\ngrpc_addr = \"0.0.0.0:7300\"\n[cluster]\nshards = 16\n[functions]\nf = \"http://x\"\n",
        )
        .unwrap();
        let env = [
            ("TRELLIS__CLUSTER__SHARDS".to_string(), "8".to_string()),
            ("TRELLIS__AWS__REGION".to_string(), "eu-west-1".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let c = Config::load(Some(&f), env).unwrap();
        assert_eq!(c.node.id, 3);
        assert_eq!(c.node.grpc_addr, "0.0.0.0:7300");
        assert_eq!(c.node.http_addr, "127.0.0.1:8083");
        assert_eq!(c.cluster.shards, 8);
        assert_eq!(c.aws.region, "eu-west-1");
        assert_eq!(c.functions["f"], "http://x");
    }

    #[test]
    fn retention_comes_from_the_environment_as_a_duration() {
        let var = |v: &str| [("TRELLIS__CLUSTER__RETENTION".to_string(), v.to_string())];
        let c = Config::load(None, var("20s")).unwrap();
        assert_eq!(
            c.cluster.retention,
            Some(std::time::Duration::from_secs(20))
        );
        let c = Config::load(None, []).unwrap();
        assert_eq!(
            c.cluster.retention,
            Some(std::time::Duration::from_secs(90 * 86_400))
        );
        let c = Config::load(None, var("forever")).unwrap();
        assert_eq!(c.cluster.retention, None);
        let e = Config::load(None, var("soon")).unwrap_err();
        assert!(
            format!("{e:#}").contains("'soon' is not a retention period"),
            "{e:#}"
        );
    }

    #[test]
    fn statefulset_ordinals_become_ids() {
        assert_eq!(id_from_hostname("trellis-0").unwrap(), 1);
        assert_eq!(id_from_hostname("trellis-12").unwrap(), 13);
        assert!(id_from_hostname("trellis").is_err());
    }

    #[test]
    fn join_list_skips_this_node() {
        let c = ClusterSection {
            join: "a:1, b:2,,c:3".into(),
            ..Default::default()
        };
        assert_eq!(c.join_addrs("b:2"), vec!["a:1", "c:3"]);
    }

    #[test]
    fn a_wildcard_http_address_is_shown_with_the_advertised_host() {
        let mut n = NodeSection {
            http_addr: "0.0.0.0:8083".into(),
            grpc_addr: "0.0.0.0:7300".into(),
            peer_addr: "0.0.0.0:7301".into(),
            advertise_addr: "trellis-0.trellis:7301".into(),
            ..Default::default()
        };
        assert_eq!(n.advertised_http(), "trellis-0.trellis:8083");
        assert_eq!(n.advertised_grpc(), "trellis-0.trellis:7300");
        assert_eq!(n.advertised(), "trellis-0.trellis:7301");
        n.http_addr = "10.0.0.5:8083".into();
        assert_eq!(n.advertised_http(), "10.0.0.5:8083");
        n.http_addr = "0.0.0.0:8083".into();
        n.advertise_addr.clear();
        assert_eq!(n.advertised_http(), "0.0.0.0:8083");
        // Without an advertised address, peers use the peer port.
        assert_eq!(n.advertised(), "0.0.0.0:7301");
    }

    #[test]
    fn exposure_needs_protection_off_loopback() {
        assert!(
            is_loopback("127.0.0.1:7300")
                && is_loopback("[::1]:1")
                && is_loopback("localhost:8083")
        );
        assert!(
            !is_loopback("0.0.0.0:7300")
                && !is_loopback("10.0.0.5:1")
                && !is_loopback("trellis-0:7301")
        );
        let mut c = Config::default();
        assert!(c.exposure().is_empty(), "the defaults are loopback");
        c.node.grpc_addr = "0.0.0.0:7300".into();
        c.node.peer_addr = "0.0.0.0:7301".into();
        let e = c.exposure();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].contains("gRPC on 0.0.0.0:7300") && e[1].contains("peer port"),
            "{e:?}"
        );
        c.auth.root_access_key_id = "AK".into();
        c.auth.root_secret_access_key = "s".into();
        assert_eq!(c.exposure().len(), 1);
        c.tls.peer_ca_file = "ca.pem".into();
        assert!(c.exposure().is_empty());
    }

    #[test]
    fn bad_values_are_named() {
        let env = [("TRELLIS__CLUSTER__SHARDS".to_string(), "many".to_string())];
        let e = Config::load(None, env).unwrap_err();
        assert!(
            format!("{e:#}").contains("TRELLIS__CLUSTER__SHARDS"),
            "{e:#}"
        );
        let env = [("TRELLIS__CLUSTER__SHARDS".to_string(), "0".to_string())];
        assert!(Config::load(None, env).is_err());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.toml");
        std::fs::write(&f, "[node]\nidd = 3\n").unwrap();
        assert!(Config::load(Some(&f), []).is_err());
        // Breaking fencing on purpose needs the test-only switch as well.
        let env = [(
            "TRELLIS__CLUSTER__BREAK_FENCING".to_string(),
            "true".to_string(),
        )];
        let e = Config::load(None, env).unwrap_err();
        assert!(format!("{e:#}").contains("fault_injection"), "{e:#}");
    }

    #[test]
    fn the_root_principal_comes_from_its_environment_variables() {
        let var = |k: &str, v: &str| (k.to_string(), v.to_string());
        let cfg = Config::load(
            None,
            [
                var("TRELLIS_ROOT_ACCESS_KEY_ID", "AKROOT"),
                var("TRELLIS_ROOT_SECRET_ACCESS_KEY", "s3cr3t"),
                var("TRELLIS__AUTH__MAX_SKEW_SECONDS", "60"),
            ],
        )
        .unwrap();
        assert_eq!(cfg.auth.root_access_key_id, "AKROOT");
        assert_eq!(cfg.auth.root_secret_access_key, "s3cr3t");
        assert_eq!(cfg.auth.max_skew_seconds, 60);
        // The secret never shows in a debug print of the configuration.
        assert!(!format!("{cfg:?}").contains("s3cr3t"));
        // No principal: authentication off.
        assert!(crate::auth::Principals::from_config(&Config::default().auth).is_none());
        // A key without its secret is refused.
        let e = Config::load(None, [var("TRELLIS_ROOT_ACCESS_KEY_ID", "AKROOT")]).unwrap_err();
        assert!(
            format!("{e:#}").contains("TRELLIS_ROOT_SECRET_ACCESS_KEY"),
            "{e:#}"
        );
    }
}
