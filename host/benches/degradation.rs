//! The F1 degradation logic per message: in wasm through the whole plugin
//! boundary (batch encoding, the call, result validation) against the same
//! code compiled natively. `cargo bench -p weir --bench degradation`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use weir::wasm::{BatchBuilder, ValidatedResult};

mod common;

const BATCH: usize = 256;

fn telemetry(i: usize) -> Vec<u8> {
    let t = |k: usize| 70.0 + ((i * 7 + k * 13) % 35) as f64 + 0.25;
    format!(
        r#"{{"car_id":"CAR-{}","lap":{},"seq":{i},"speed_kph":{:.1},"gear":{},"throttle":0.872,"brake":0.041,"tire_temp_fl":{:.2},"tire_temp_fr":{:.2},"tire_temp_rl":{:.2},"tire_temp_rr":{:.2},"battery_soc":{:.3},"ers_mode":"{}","track_segment":"chicane","timestamp":"2026-11-23T10:00:00.000Z","run_id":"bench"}}"#,
        1 + i % 4,
        1 + i % 60,
        90.0 + (i % 230) as f64,
        1 + i % 8,
        t(0),
        t(1),
        t(2),
        t(3),
        0.35 + (i % 60) as f64 / 100.0,
        ["deploy", "harvest", "balanced"][i % 3],
    )
    .into_bytes()
}

fn degradation(c: &mut Criterion) {
    let messages: Vec<Vec<u8>> = (0..BATCH).map(telemetry).collect();
    // The native side scores only; so does the plugin here.
    let (_runtime, mut instance) =
        common::instance(weir_test_programs::F1_DEGRADATION, r#"{"dedup_window":0}"#);
    let config = weir_f1_degradation::Config::default();

    let mut group = c.benchmark_group("f1_degradation");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_with_input(BenchmarkId::new("wasm", BATCH), &messages, |b, messages| {
        b.iter(|| {
            let mut builder = BatchBuilder::new("bench", 0, BATCH, BATCH * 400);
            for (i, m) in messages.iter().enumerate() {
                builder.push(
                    i as i64,
                    Some(1),
                    Some(b"CAR-1"),
                    Some(m),
                    std::iter::empty(),
                );
            }
            let result = instance.process(builder.batch()).unwrap();
            let validated = ValidatedResult::new(result, BATCH, 1);
            assert_eq!(validated.len(), BATCH);
            assert!(validated.outcome(BATCH - 1).is_ok());
        })
    });
    group.bench_with_input(
        BenchmarkId::new("native", BATCH),
        &messages,
        |b, messages| {
            b.iter(|| {
                for m in messages {
                    let e = weir_f1_degradation::enrich(m, &config).unwrap();
                    std::hint::black_box(e.json);
                }
            })
        },
    );
    group.finish();
}

criterion_group!(benches, degradation);
criterion_main!(benches);
