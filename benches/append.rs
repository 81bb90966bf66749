//! Append throughput, in-memory and durable. Ids follow `append/<backend>/<parameter>`.
//! Events are ~250 bytes on the wire (a 200-byte payload plus id, type and framing),
//! spread over 10,000 streams. Durable appends are acknowledged only after `fdatasync`;
//! concurrent appenders share syncs through group commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
    let sequence = Arc::new(AtomicU64::new(1 << 40));
    for appenders in [1u64, 16, 256] {
        group.throughput(Throughput::Elements(appenders));
        // One iteration: every appender appends one event; all run concurrently and each
        // waits for its own acknowledgement before its next append.
        group.bench_function(format!("appenders={appenders}"), |b| {
            b.iter_custom(|iterations| {
                runtime.block_on(async {
                    let started = std::time::Instant::now();
                    let tasks: Vec<_> = (0..appenders)
                        .map(|_| {
                            let (store, sequence) = (store.clone(), sequence.clone());
                            tokio::spawn(async move {
                                for _ in 0..iterations {
                                    let n = sequence.fetch_add(1, Ordering::Relaxed);
                                    store
                                        .append(&stream(n), ExpectedVersion::Any, vec![event(n)])
                                        .await
                                        .expect("append");
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.expect("appender");
                    }
                    started.elapsed()
                })
            });
        });
    }
    group.finish();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, append_memory, append_log);
criterion_main!(benches);
