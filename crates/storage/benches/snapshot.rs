//! Snapshot streaming: a group's trees written to a snapshot file, and read back into
//! empty trees, the work behind building and installing a snapshot.
//!
//! `cargo bench -p trellis-storage --bench snapshot`

use std::io::{BufReader, BufWriter};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use trellis_storage::{export_trees, import_trees, NodeDb};

const ENTRIES: u32 = 50_000;
const VALUE: usize = 1_000;

fn snapshot(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let db = NodeDb::open(dir.path().join("db")).unwrap();
    let trees = db.group(1).unwrap();
    let tree = trees.sm_tree("executions").unwrap();
    for i in 0..ENTRIES {
        tree.insert(i.to_be_bytes(), vec![b'x'; VALUE]).unwrap();
    }
    let file = dir.path().join("snap");
    let bytes = u64::from(ENTRIES) * (VALUE as u64 + 4 + 17);
    let mut g = c.benchmark_group("snapshot");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function(format!("export {ENTRIES}x{VALUE}B"), |b| {
        b.iter(|| {
            let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&file).unwrap());
            export_trees([("executions", &tree)], &mut out).unwrap();
            out.into_inner().unwrap().sync_all().unwrap();
        })
    });
    let into = db.group(2).unwrap().sm_tree("executions").unwrap();
    g.bench_function(format!("import {ENTRIES}x{VALUE}B"), |b| {
        b.iter(|| {
            let mut input = BufReader::with_capacity(1 << 20, std::fs::File::open(&file).unwrap());
            import_trees(&mut input, [("executions", &into)]).unwrap();
        })
    });
    g.finish();
    assert_eq!(into.len(), ENTRIES as usize);
}

criterion_group!(benches, snapshot);
criterion_main!(benches);
