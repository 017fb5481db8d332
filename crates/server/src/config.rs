//! Node configuration, layered: defaults, then a TOML file, then `TRELLIS__SECTION__KEY`
//! environment variables, then command-line flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Everything a node needs to start. See docs/operations.md for every key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node: NodeSection,
    pub cluster: ClusterSection,
    pub aws: AwsSection,
    /// Lambda function name -> HTTP endpoint that plays it.
    pub functions: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    pub id: u64,
    pub data_dir: PathBuf,
    pub grpc_addr: String,
    pub http_addr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// Number of shards; fixed when the cluster is bootstrapped.
    pub shards: u32,
    /// Most commands a shard executor takes into one Raft proposal.
    pub max_batch: usize,
    /// The longest an Express execution may run before it times out (AWS: 5 minutes).
    pub express_max_seconds: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AwsSection {
    pub region: String,
    pub account: String,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            id: 1,
            data_dir: PathBuf::from("./trellis-data"),
            grpc_addr: "127.0.0.1:7300".into(),
            http_addr: "127.0.0.1:8083".into(),
        }
    }
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            shards: 64,
            max_batch: 512,
            express_max_seconds: 300,
        }
    }
}

impl Default for AwsSection {
    fn default() -> Self {
        AwsSection {
            region: "us-east-1".into(),
            account: "000000000000".into(),
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
        if self.cluster.max_batch == 0 {
            bail!("cluster.max_batch must be at least 1");
        }
        Ok(())
    }
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
    }
}
