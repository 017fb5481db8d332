//! The sled log's append + flush path, the floor under every Raft proposal.
//!
//! `cargo bench -p trellis-storage --bench log`

use std::io::Cursor;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use openraft::{Entry, EntryPayload, LogId};
use serde::{Deserialize, Serialize};
use trellis_storage::{LogStore, NodeDb};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Blob(String);

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Done;

openraft::declare_raft_types!(
    pub Bench:
        D = Blob,
        R = Done,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<Bench>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

fn entries(from: u64, n: u64, size: usize) -> Vec<Entry<Bench>> {
    (from..from + n)
        .map(|i| Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 0), i),
            payload: EntryPayload::Normal(Blob("x".repeat(size))),
        })
        .collect()
}

fn append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = NodeDb::open(dir.path()).unwrap();
    let log = LogStore::<Bench>::new(db.group(1).unwrap());
    let mut g = c.benchmark_group("log_append_flush");
    for (batch, size) in [(1u64, 512usize), (64, 512), (64, 4096)] {
        g.throughput(Throughput::Elements(batch));
        let mut next = 1;
        g.bench_function(format!("{batch}x{size}B"), |b| {
            b.iter_batched(
                || {
                    let e = entries(next, batch, size);
                    next += batch;
                    e
                },
                |e| rt.block_on(log.append_durably(e)).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
