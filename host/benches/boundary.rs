//! The per-message cost of the plugin boundary: encoding a batch, the call
//! into the passthrough component, and validating its result, for several
//! batch sizes. `cargo bench -p weir --bench boundary`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use weir::wasm::{BatchBuilder, ValidatedResult};

mod common;

fn boundary(c: &mut Criterion) {
    let (_runtime, mut instance) = common::instance(weir_test_programs::PASSTHROUGH, "{}");
    let value = vec![b'x'; 200];

    let mut group = c.benchmark_group("passthrough_boundary");
    for size in [1usize, 16, 64, 256] {
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            b.iter(|| {
                let mut builder = BatchBuilder::new("bench", 0, size, size * 220);
                for i in 0..size {
                    builder.push(
                        i as i64,
                        Some(1),
                        Some(b"CAR-1"),
                        Some(&value),
                        std::iter::empty(),
                    );
                }
                let result = instance.process(builder.batch()).unwrap();
                let validated = ValidatedResult::new(result, size, 1);
                assert_eq!(validated.len(), size);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, boundary);
criterion_main!(benches);
