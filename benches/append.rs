//! Append throughput, in-memory and durable. Ids follow `append/<backend>/<parameter>`.
//! The full suite with peers (SQLite, PostgreSQL) and the raw fsync ceiling comes later.

use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use evsource::core::{EventData, EventId, ExpectedVersion, Metadata, StreamId};
use evsource::store::{EventStore, LogConfig, LogStore, MemoryStore};

const PAYLOAD_BYTES: usize = 200;
const STREAMS: u64 = 10_000;

fn event(sequence: u64) -> EventData {
    EventData {
        id: EventId(u128::from(sequence) + 1),
        event_type: "BenchEvent".into(),
        tags: Vec::new(),
        metadata: Metadata::default(),
        payload: vec![0xab; PAYLOAD_BYTES],
    }
}

fn stream(sequence: u64) -> StreamId {
    StreamId::new(&format!("bench-{}", sequence % STREAMS)).expect("valid id")
}

fn append_memory(c: &mut Criterion) {
    let mut group = c.benchmark_group("append/memory");
    for batch in [1u64, 100] {
        group.throughput(Throughput::Elements(batch));
        group.bench_function(format!("batch={batch}"), |b| {
            let store = MemoryStore::default();
            let mut sequence = 0u64;
            b.iter_batched(
                || {
                    let events: Vec<EventData> = (0..batch).map(|i| event(sequence + i)).collect();
                    let target = stream(sequence);
                    sequence += batch;
                    (target, events)
                },
                |(target, events)| {
                    store
                        .append_now(&target, ExpectedVersion::Any, events, None)
                        .expect("append")
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn append_log(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("evsource-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = LogStore::open_dir(&dir, LogConfig::default()).expect("open log");
    let store = Arc::new(store);
    let mut group = c.benchmark_group("append/log");
    group.throughput(Throughput::Elements(1));
    let mut sequence = 1u64 << 40;
    group.bench_function("appenders=1", |b| {
        b.iter(|| {
            sequence += 1;
            runtime
                .block_on(store.append(
                    &stream(sequence),
                    ExpectedVersion::Any,
                    vec![event(sequence)],
                ))
                .expect("append")
        });
    });
    group.finish();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, append_memory, append_log);
criterion_main!(benches);
