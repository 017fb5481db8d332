//! What a shard's Raft log carries.

use serde::{Deserialize, Serialize};
use trellis_asl::HistoryEvent;

use crate::record::ExecRecord;

/// One Raft entry of a shard: the transitions of many executions, proposed together (group
/// commit).
///
/// It travels in the compact form ([`crate::codec`]): as bytes where the format has them
/// (the Raft log on disk, CBOR), as one base64 string in JSON (openraft's messages between
/// nodes). An entry an earlier version logged as a JSON object (`{"ops": [...]}`), or as
/// base64 in JSON, still reads.
#[derive(Debug)]
pub struct ShardRequest {
    pub ops: Vec<ShardOp>,
}

impl Serialize for ShardRequest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        let bin = crate::codec::encode_ops(&self.ops).map_err(serde::ser::Error::custom)?;
        if s.is_human_readable() {
            s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bin))
        } else {
            s.serialize_bytes(&bin)
        }
    }
}

impl<'de> Deserialize<'de> for ShardRequest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Stored;
        impl<'de> serde::de::Visitor<'de> for Stored {
            type Value = ShardRequest;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a shard request: compact bytes, their base64, or {\"ops\": [...]}")
            }

            fn visit_bytes<E: serde::de::Error>(self, bin: &[u8]) -> Result<ShardRequest, E> {
                crate::codec::decode_ops(bin)
                    .map(|ops| ShardRequest { ops })
                    .map_err(E::custom)
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ShardRequest, E> {
                use base64::Engine as _;
                let bin = base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(E::custom)?;
                self.visit_bytes(&bin)
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ShardRequest, A::Error> {
                #[derive(Deserialize)]
                struct Legacy {
                    ops: Vec<ShardOp>,
                }
                let l = Legacy::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(ShardRequest { ops: l.ops })
            }
        }
        d.deserialize_any(Stored)
    }
}

/// One change. Ops carry the values to write (events, the new record), never instructions
/// to re-run, so applying one twice changes nothing.
#[derive(Debug, Serialize, Deserialize)]
pub enum ShardOp {
    /// The execution's new record and the history events written since the previous one.
    Put {
        record: Box<ExecRecord>,
        events: Vec<HistoryEvent>,
        /// The definition text, the first time an execution of it is stored on this shard.
        definition: Option<(u64, String)>,
    },
    /// Retention: deletes closed executions (record, history, index entries) whose time has
    /// come. Applying checks each again against the stored record, so an entry that a
    /// redrive made stale only loses its index entry.
    Expire { executions: Vec<Expiry> },
}

/// One closed execution to delete, by its entry in the `closed` index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expiry {
    pub key: crate::record::keys::Closed,
    pub arn: String,
}

/// What applying an entry returns. Nothing: the proposer already knows the outcome.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ShardResponse;

openraft::declare_raft_types!(
    /// The openraft type configuration of shard groups.
    pub ShardConfig:
        D = ShardRequest,
        R = ShardResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<ShardConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Splits a batch's ops into entries of at most `max` bytes each (an op larger than `max`
/// alone), each with its size in bytes as sent to peers (the compact form in base64, in
/// openraft's JSON messages; the log on disk stores the bytes themselves). A batch under
/// the bound, the common case, stays one entry. Ops are measured by encoding them (about
/// 1 µs for an op of a 1 KB record and three events: `cargo bench -p trellis-shard --bench
/// split`); an op that cannot be encoded fails the proposal itself, which encodes it again.
pub fn split_by_bytes(ops: Vec<ShardOp>, max: usize) -> Vec<(Vec<ShardOp>, usize)> {
    let mut entries = Vec::new();
    let mut entry = Vec::new();
    let mut bytes = 0usize;
    for op in ops {
        let n = crate::codec::op_len(&op).unwrap_or(0).saturating_mul(4) / 3;
        if !entry.is_empty() && bytes.saturating_add(n) > max {
            entries.push((std::mem::take(&mut entry), bytes));
            bytes = 0;
        }
        bytes = bytes.saturating_add(n);
        entry.push(op);
    }
    if !entry.is_empty() {
        entries.push((entry, bytes));
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: u64, input_bytes: usize) -> ShardOp {
        let rec = ExecRecord::new(
            id,
            format!("arn:e:{id}"),
            id.to_string(),
            "arn:m".into(),
            1,
            "x".repeat(input_bytes),
            0,
        );
        ShardOp::Put {
            record: Box::new(rec),
            events: Vec::new(),
            definition: None,
        }
    }

    /// An op's share of a logged entry.
    fn logged(op: &ShardOp) -> usize {
        crate::codec::op_len(op).unwrap() * 4 / 3
    }

    #[test]
    fn an_entry_is_logged_compactly_and_an_earlier_versions_still_reads() {
        let req = ShardRequest {
            ops: vec![op(1, 10), op(2, 10)],
        };
        let text = serde_json::to_string(&req).unwrap();
        assert!(text.starts_with('"'), "{text}");
        let back: ShardRequest = serde_json::from_str(&text).unwrap();
        assert_eq!(ids(&[(back.ops, 0)]), [vec![1, 2]]);
        // Written by an earlier version: the ops as JSON.
        let legacy = format!(
            "{{\"ops\":[{}]}}",
            serde_json::to_string(&req.ops[0]).unwrap()
        );
        let back: ShardRequest = serde_json::from_str(&legacy).unwrap();
        assert_eq!(ids(&[(back.ops, 0)]), [vec![1]]);
        assert!(serde_json::from_str::<ShardRequest>("\"AQ==\"").is_err());
        // In a binary format (the log on disk): the compact bytes themselves, no base64.
        let mut cbor = Vec::new();
        ciborium::into_writer(&req, &mut cbor).unwrap();
        let compact = crate::codec::encode_ops(&req.ops).unwrap();
        assert!(
            cbor.len() < compact.len() + 8,
            "{} bytes for {}",
            cbor.len(),
            compact.len()
        );
        let back: ShardRequest = ciborium::from_reader(&cbor[..]).unwrap();
        assert_eq!(ids(&[(back.ops, 0)]), [vec![1, 2]]);
        assert!(ciborium::from_reader::<ShardRequest, _>(&[0x41u8, 0x01][..]).is_err());
    }

    fn ids(entries: &[(Vec<ShardOp>, usize)]) -> Vec<Vec<u64>> {
        entries
            .iter()
            .map(|(e, _)| {
                e.iter()
                    .map(|op| match op {
                        ShardOp::Put { record, .. } => record.id,
                        ShardOp::Expire { .. } => u64::MAX,
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_batch_under_the_bound_is_one_entry() {
        let entries = split_by_bytes((0..100).map(|i| op(i, 100)).collect(), 1 << 20);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].0.len(), 100);
        let each = logged(&op(0, 100));
        assert!(entries[0].1.abs_diff(100 * each) < 500, "{}", entries[0].1);
    }

    #[test]
    fn a_large_batch_splits_into_entries_of_whole_executions_within_the_bound() {
        let one = logged(&op(0, 3_000));
        let max = 3 * one + one / 2;
        let ops: Vec<ShardOp> = (0..10).map(|i| op(i, 3_000)).collect();
        let entries = split_by_bytes(ops, max);
        // Three fit under the bound, a fourth does not.
        assert_eq!(
            ids(&entries),
            [vec![0, 1, 2], vec![3, 4, 5], vec![6, 7, 8], vec![9]]
        );
        for (e, counted) in entries {
            let ops: usize = e.iter().map(logged).sum();
            assert_eq!(counted, ops);
            let bytes = serde_json::to_vec(&ShardRequest { ops: e }).unwrap().len();
            assert!(bytes <= max + 64, "{bytes} bytes");
        }
        // One execution larger than the bound goes alone, in order.
        let entries = split_by_bytes(vec![op(0, 10), op(1, 5 * max), op(2, 10)], max);
        assert_eq!(ids(&entries), [vec![0], vec![1], vec![2]]);
    }
}
