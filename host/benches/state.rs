//! What an expiry costs in the keyed-state store: writes and reads of
//! 100,000 keys without a ttl and with one, side by side in one run (the
//! ratio is the result; the machines are noisy). Expired keys are not part
//! of it: a 1 h ttl keeps every key live, so the with-ttl rows pay the
//! clock reads and the once-a-second sweep over the partition.
//! `cargo bench -p weir --bench state`.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use weir::state::{MemoryState, Scope, StateStore};

const KEYS: u64 = 100_000;

fn keys() -> Vec<Vec<u8>> {
    (0..KEYS)
        .map(|i| format!("event/{i:016x}").into_bytes())
        .collect()
}

fn state(c: &mut Criterion) {
    let keys = keys();
    let scope = Scope {
        stage: "bench".into(),
        partition: 0,
    };
    let mut group = c.benchmark_group("state_store");
    group.throughput(Throughput::Elements(KEYS));
    for (name, ttl) in [("no_ttl", None), ("ttl", Some(Duration::from_secs(3600)))] {
        group.bench_with_input(BenchmarkId::new("set", name), &ttl, |b, &ttl| {
            let store = MemoryState::default();
            b.iter(|| {
                for k in &keys {
                    store.set(&scope, k, b"", ttl);
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("get", name), &ttl, |b, &ttl| {
            let store = MemoryState::default();
            for k in &keys {
                store.set(&scope, k, b"", ttl);
            }
            b.iter(|| {
                for k in &keys {
                    assert!(store.get(&scope, k).is_some());
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, state);
criterion_main!(benches);
