//! The `[cluster]` configuration section, and what a node tells the cluster about itself.

use serde::{Deserialize, Serialize};

/// How this node reaches others and is reached, as recorded in the meta group.
#[derive(Debug, Clone, Default)]
pub struct Member {
    pub id: u64,
    /// The client gRPC address shown to operators.
    pub grpc_addr: String,
    /// The AWS API address shown to operators.
    pub http_addr: String,
    /// The peer address other nodes use (Raft, joins, forwarded calls).
    pub peer_addr: String,
    /// Placement spreads a shard's replicas over distinct zones when nodes carry one.
    pub zone: String,
}

/// What the cluster needs to know of the node it runs in.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub member: Member,
    pub cluster: ClusterConfig,
    /// The region and account of the ARNs executors write.
    pub region: String,
    pub account: String,
    /// mTLS to peers: the cluster CA to trust and this node's certificate to present.
    /// `None`: plaintext (a private network, or `trellis dev` on loopback).
    pub peer_tls: Option<std::sync::Arc<trellis_tls::rustls::ClientConfig>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Number of shards; fixed when the cluster is bootstrapped.
    pub shards: u32,
    /// Most commands a shard executor takes into one Raft proposal.
    pub max_batch: usize,
    /// The longest an Express execution may run before it times out (AWS: 5 minutes). Read
    /// by the API layer, which runs Express executions outside the shards.
    pub express_max_seconds: u64,
    /// Existing members to join through, comma-separated peer addresses. Empty (or only
    /// this node's own address): this node bootstraps a new cluster.
    pub join: String,
    /// The bootstrapping node places shards once this many nodes are members.
    pub bootstrap_expect: u32,
    /// Replicas per shard group (capped at the node count).
    pub replication_factor: u32,
    /// Tests only: accept `trellisctl`'s partition commands (drop traffic to chosen nodes).
    pub fault_injection: bool,
    /// Tests only, and only with `fault_injection`: break the fencing invariant on purpose
    /// (executors ignore the lease and act before their batches commit), to show that the
    /// partition test catches it.
    pub break_fencing: bool,
    /// A node that has not answered the placement driver for this long is down: its
    /// replicas are re-created on other nodes. Long enough for a rolling restart.
    pub down_after_seconds: u64,
    /// A node that has not answered for this long is gone for good: the placement driver
    /// decommissions it (DRAINING; REMOVED once its replicas live elsewhere), and its meta
    /// vote goes to another node. 0 never does. A removed node's id may join again only
    /// with a new data directory.
    pub decommission_after_seconds: u64,
    /// A shard replica snapshots its state every this many log entries.
    pub snapshot_logs: u64,
    /// The largest message the peer port accepts (and sends). A Raft entry larger than this
    /// cannot replicate.
    pub peer_max_message_bytes: usize,
    /// Backpressure: while a shard holds this many executions in its leader's memory (parked
    /// ones, waiting on timers only, do not count), it
    /// refuses child starts from other shards; they wait, durable, in their senders'
    /// outboxes and are sent again.
    pub max_live_per_shard: usize,
    /// The most children one DISTRIBUTED Map runs at once, whatever its `MaxConcurrency`
    /// (AWS runs up to 10,000): a parent's state, written at each of its steps, grows with
    /// its children in flight.
    pub map_run_max_concurrency: usize,
    /// How long closed executions (records, histories, index entries) are kept before
    /// they are deleted in the background: `"90d"` (AWS's), `"20s"`, `"1h 30m"`; `"0"` or
    /// `"forever"` keeps them. A state machine may set its own.
    #[serde(with = "retention")]
    pub retention: Option<std::time::Duration>,
    /// The most closed executions one shard deletes per second (rate limit of retention).
    pub retention_deletes_per_second: u32,
}

/// `cluster.retention`: a human-readable duration (or a number of seconds); `"0"` or
/// `"forever"`: none.
mod retention {
    use std::time::Duration;

    use serde::de::{Deserializer, Error, Visitor};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::format_retention(*d)),
            None => s.serialize_str("forever"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Option<Duration>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration such as \"90d\" or \"20s\", or \"forever\"")
            }
            fn visit_u64<E: Error>(self, n: u64) -> Result<Self::Value, E> {
                Ok((n > 0).then(|| Duration::from_secs(n)))
            }
            fn visit_i64<E: Error>(self, n: i64) -> Result<Self::Value, E> {
                u64::try_from(n)
                    .map_err(|_| E::custom("a retention cannot be negative"))
                    .and_then(|n| self.visit_u64(n))
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
                super::parse_retention(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A retention period as [`parse_retention`] reads it, in its largest whole unit (`90d`).
pub fn format_retention(d: std::time::Duration) -> String {
    if d.subsec_nanos() != 0 {
        return humantime::format_duration(d).to_string();
    }
    let s = d.as_secs();
    match s {
        0 => "forever".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Parses a retention period: a human-readable duration (`"90d"`, `"20s"`, `"1h 30m"`),
/// a number of seconds, or `"0"`/`"forever"` for none.
pub fn parse_retention(v: &str) -> Result<Option<std::time::Duration>, String> {
    let v = v.trim();
    if v == "forever" || v == "0" {
        return Ok(None);
    }
    if let Ok(n) = v.parse::<u64>() {
        return Ok(Some(std::time::Duration::from_secs(n)));
    }
    match humantime::parse_duration(v) {
        Ok(d) if d.is_zero() => Ok(None),
        Ok(d) => Ok(Some(d)),
        Err(e) => Err(format!(
            "'{v}' is not a retention period ({e}): use a duration such as \"90d\", \"12h\" or \"20s\", or \"forever\""
        )),
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            shards: 64,
            max_batch: 512,
            express_max_seconds: 300,
            join: String::new(),
            bootstrap_expect: 1,
            replication_factor: 3,
            fault_injection: false,
            break_fencing: false,
            down_after_seconds: 30,
            decommission_after_seconds: 3_600,
            snapshot_logs: 5_000,
            peer_max_message_bytes: 256 << 20,
            max_live_per_shard: 5_000,
            map_run_max_concurrency: 1_000,
            retention: Some(trellis_shard::executor::AWS_RETENTION),
            retention_deletes_per_second: 500,
        }
    }
}

impl ClusterConfig {
    /// What shard executors do about retention.
    pub fn retention(&self) -> trellis_shard::executor::RetentionConfig {
        trellis_shard::executor::RetentionConfig {
            keep: self.retention,
            per_second: self.retention_deletes_per_second.max(1),
            ..Default::default()
        }
    }

    /// Whether the fencing invariant is broken on purpose (tests only).
    pub fn breaks_fencing(&self) -> bool {
        self.fault_injection && self.break_fencing
    }

    /// The join addresses, without this node's own.
    pub fn join_addrs(&self, own: &str) -> Vec<String> {
        self.join
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty() && *a != own)
            .map(str::to_string)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn retention_reads_durations_seconds_and_forever() {
        assert_eq!(
            parse_retention("90d"),
            Ok(Some(Duration::from_secs(90 * 86_400)))
        );
        assert_eq!(parse_retention("20s"), Ok(Some(Duration::from_secs(20))));
        assert_eq!(
            parse_retention("1h 30m"),
            Ok(Some(Duration::from_secs(5_400)))
        );
        assert_eq!(
            parse_retention("3600"),
            Ok(Some(Duration::from_secs(3_600)))
        );
        assert_eq!(parse_retention("forever"), Ok(None));
        assert_eq!(parse_retention("0"), Ok(None));
        let e = parse_retention("ninety days").unwrap_err();
        assert!(e.contains("'ninety days' is not a retention period"), "{e}");
        // As TOML reads it, and back.
        #[derive(serde::Deserialize, serde::Serialize)]
        struct T {
            #[serde(with = "retention")]
            r: Option<Duration>,
        }
        let t: T = serde_json::from_str(r#"{"r": 30}"#).unwrap();
        assert_eq!(t.r, Some(Duration::from_secs(30)));
        let t: T = serde_json::from_str(r#"{"r": "2d"}"#).unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"r":"2d"}"#);
        assert_eq!(format_retention(Duration::from_secs(90 * 86_400)), "90d");
        assert_eq!(format_retention(Duration::from_secs(5_400)), "90m");
        assert_eq!(format_retention(Duration::from_secs(61)), "61s");
        assert!(serde_json::from_str::<T>(r#"{"r": -1}"#).is_err());
    }
}
