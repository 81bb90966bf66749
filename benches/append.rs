//! Append throughput, in-memory and durable, and two floors under the durable appenders:
//! the runtime's hand-off, and group commit itself with none of the log's own work. Ids
//! follow `append/<backend>/<parameter>`; the physical floors are in `floors.rs`.
//! Events are ~250 bytes on the wire (a 200-byte payload plus id, type and framing),
//! spread over 10,000 streams. Durable appends are acknowledged only after `fdatasync`;
//! concurrent appenders share syncs through group commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

mod common;

use common::{PREALLOCATED_BYTES, preallocated_file, runtime};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use evsource::core::{EventData, EventId, ExpectedVersion, Metadata, StreamId};
use evsource::store::{EventStore, LogConfig, LogStore, MemoryStore};

/// The allocator the `evsource` binary runs with, so that the figures are the product's.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// Runs `tasks` tasks at once on `runtime`, each doing `round` `iterations` times in a row
/// — every round waits for its own answer before the next starts — and returns how long
/// they took together. Each task owns a clone of `state`, which a round takes and hands
/// back, so that a round clones nothing (a shared count bumped per round would be one more
/// cache line the cores trade).
fn closed_loop<S, F, R>(
    runtime: &tokio::runtime::Runtime,
    tasks: u64,
    iterations: u64,
    state: &S,
    round: F,
) -> std::time::Duration
where
    S: Clone + Send + 'static,
    F: Fn(S) -> R + Copy + Send + 'static,
    R: Future<Output = S> + Send + 'static,
{
    runtime.block_on(async {
        let started = std::time::Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let mut state = state.clone();
                tokio::spawn(async move {
                    for _ in 0..iterations {
                        state = round(state).await;
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await.expect("task");
        }
        started.elapsed()
    })
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
    let runtime = runtime();
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
                let state = (Arc::clone(&store), Arc::clone(&sequence));
                closed_loop(
                    &runtime,
                    appenders,
                    iterations,
                    &state,
                    |(store, sequence)| async move {
                        let n = sequence.fetch_add(1, Ordering::Relaxed);
                        store
                            .append(&stream(n), ExpectedVersion::Any, vec![event(n)])
                            .await
                            .expect("append");
                        (store, sequence)
                    },
                )
            });
        });
    }
    group.finish();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The peer a user would pick instead for an embedded store: SQLite in WAL mode with
/// `synchronous=FULL` (every commit durable), the same events, a unique
/// (stream_id, version) constraint and a unique event id. An append is `BEGIN IMMEDIATE`,
/// read the stream's next version, insert, commit — the expected-version check a careful
/// SQLite event store makes. Appenders share one connection behind a mutex: SQLite has one
/// writer at a time anyway, and a connection per appender is far slower (waiting writers
/// sleep in SQLite's busy handler: 175 events/s at 16 appenders in a trial run).
fn append_sqlite(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("evsource-bench-sqlite-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench directory");
    let path = dir.join("events.sqlite");
    let open = || {
        let connection = rusqlite::Connection::open(&path).expect("open sqlite");
        connection
            .execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=60000;",
            )
            .expect("pragmas");
        connection
    };
    open()
        .execute_batch(
            "CREATE TABLE events (
                position INTEGER PRIMARY KEY AUTOINCREMENT,
                stream_id TEXT NOT NULL,
                version INTEGER NOT NULL,
                event_id BLOB NOT NULL UNIQUE,
                event_type TEXT NOT NULL,
                payload BLOB NOT NULL,
                UNIQUE (stream_id, version)
            );",
        )
        .expect("schema");
    let connection = Arc::new(std::sync::Mutex::new(open()));
    let mut group = c.benchmark_group("append/sqlite");
    let sequence = Arc::new(AtomicU64::new(1 << 40));
    for appenders in [1u64, 16] {
        group.throughput(Throughput::Elements(appenders));
        group.bench_function(format!("appenders={appenders}"), |b| {
            b.iter_custom(|iterations| {
                let started = std::time::Instant::now();
                let threads: Vec<_> = (0..appenders)
                    .map(|_| {
                        let (sequence, connection) = (sequence.clone(), connection.clone());
                        std::thread::spawn(move || {
                            for _ in 0..iterations {
                                let n = sequence.fetch_add(1, Ordering::Relaxed);
                                let mut connection = connection.lock().expect("connection");
                                sqlite_append(&mut connection, &stream(n), &event(n));
                            }
                        })
                    })
                    .collect();
                for thread in threads {
                    thread.join().expect("appender");
                }
                started.elapsed()
            });
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn sqlite_append(connection: &mut rusqlite::Connection, stream: &StreamId, event: &EventData) {
    let transaction = connection
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .expect("begin");
    let next: i64 = transaction
        .query_row(
            "SELECT COALESCE(MAX(version) + 1, 0) FROM events WHERE stream_id = ?1",
            [stream.as_str()],
            |row| row.get(0),
        )
        .expect("next version");
    transaction
        .execute(
            "INSERT INTO events (stream_id, version, event_id, event_type, payload)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![
                stream.as_str(),
                next,
                event.id.0.to_be_bytes().as_slice(),
                event.event_type,
                event.payload
            ],
        )
        .expect("insert");
    transaction.commit().expect("commit");
}

/// Where the PostgreSQL peer runs: `EVSOURCE_POSTGRES_URL`, a libpq-style connection
/// string (`cargo xtask bench` sets it to the local server unless it is set already).
#[cfg(feature = "postgres")]
const POSTGRES_URL_VAR: &str = "EVSOURCE_POSTGRES_URL";
#[cfg(feature = "postgres")]
const POSTGRES_TABLE: &str = "evsource_bench_events";

/// The peer a user would pick instead for a server store: seed 000's design on PostgreSQL —
/// one table with a unique (stream_id, version) constraint and a unique event id. An
/// append is one transaction: read the stream's next version, insert, commit (the
/// constraint refuses a concurrent writer of the same version). Default durability
/// (`synchronous_commit=on`: the commit waits for the WAL flush). One connection per
/// appender, as a pool would hand out. Skipped, saying so, when no server is configured
/// or reachable.
#[cfg(feature = "postgres")]
fn append_postgres(c: &mut Criterion) {
    let Ok(url) = std::env::var(POSTGRES_URL_VAR) else {
        eprintln!(
            "append/postgres: skipped — {POSTGRES_URL_VAR} is not set (e.g. \"postgres://postgres@127.0.0.1:5432/test\")"
        );
        return;
    };
    let runtime = runtime();
    let connect = || async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok::<_, tokio_postgres::Error>(client)
    };
    let setup = runtime.block_on(async {
        let client = connect().await?;
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {POSTGRES_TABLE};
                 CREATE TABLE {POSTGRES_TABLE} (
                     position BIGSERIAL PRIMARY KEY,
                     stream_id TEXT NOT NULL,
                     version BIGINT NOT NULL,
                     event_id BYTEA NOT NULL UNIQUE,
                     event_type TEXT NOT NULL,
                     payload BYTEA NOT NULL,
                     UNIQUE (stream_id, version)
                 );"
            ))
            .await?;
        let mut clients = Vec::new();
        for _ in 0..16 {
            clients.push(Arc::new(tokio::sync::Mutex::new(connect().await?)));
        }
        Ok::<_, tokio_postgres::Error>((client, clients))
    });
    let (admin, clients) = match setup {
        Ok(setup) => setup,
        Err(error) => {
            eprintln!("append/postgres: skipped — cannot use the server at {url:?}: {error}");
            return;
        }
    };
    let mut group = c.benchmark_group("append/postgres");
    let sequence = Arc::new(AtomicU64::new(1 << 40));
    for appenders in [1u64, 16] {
        group.throughput(Throughput::Elements(appenders));
        group.bench_function(format!("appenders={appenders}"), |b| {
            b.iter_custom(|iterations| {
                runtime.block_on(async {
                    let started = std::time::Instant::now();
                    let tasks: Vec<_> = clients[..appenders as usize]
                        .iter()
                        .map(|client| {
                            let (client, sequence) = (client.clone(), sequence.clone());
                            tokio::spawn(async move {
                                let mut client = client.lock().await;
                                for _ in 0..iterations {
                                    let n = sequence.fetch_add(1, Ordering::Relaxed);
                                    postgres_append(&mut client, &stream(n), &event(n)).await;
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
    let _ = runtime.block_on(admin.batch_execute(&format!("DROP TABLE {POSTGRES_TABLE}")));
}

#[cfg(feature = "postgres")]
async fn postgres_append(
    client: &mut tokio_postgres::Client,
    stream: &StreamId,
    event: &EventData,
) {
    loop {
        let transaction = client.transaction().await.expect("begin");
        let next: i64 = transaction
            .query_one(
                &format!(
                    "SELECT COALESCE(MAX(version) + 1, 0) FROM {POSTGRES_TABLE} WHERE stream_id = $1"
                ),
                &[&stream.as_str()],
            )
            .await
            .expect("next version")
            .get(0);
        let inserted = transaction
            .execute(
                &format!(
                    "INSERT INTO {POSTGRES_TABLE} (stream_id, version, event_id, event_type, payload)
                     VALUES ($1, $2, $3, $4, $5)"
                ),
                &[
                    &stream.as_str(),
                    &next,
                    &event.id.0.to_be_bytes().as_slice(),
                    &event.event_type,
                    &event.payload,
                ],
            )
            .await;
        match inserted {
            Ok(_) => {
                transaction.commit().await.expect("commit");
                return;
            }
            // A concurrent writer took this version: read again, as the design does.
            Err(error)
                if error.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) =>
            {
                continue;
            }
            Err(error) => panic!("insert: {error}"),
        }
    }
}

#[cfg(not(feature = "postgres"))]
fn append_postgres(_: &mut Criterion) {
    eprintln!("append/postgres: skipped — built without the `postgres` feature");
}

/// The floor `append/log/appenders=N` sits on before any storage work: the same runtime
/// (two tokio workers), the same N tasks each waiting for its own answer, and the same
/// hand-off — each task queues a reply channel under a mutex and starts a flusher on the
/// blocking pool if none runs; the flusher takes the queue and answers everyone, until it
/// finds the queue empty. No index, no encoding, no write, no sync: what is left is the
/// cost of waking tasks across threads on this machine.
fn handoff_floor(c: &mut Criterion) {
    use std::sync::Mutex;
    use tokio::sync::oneshot;

    #[derive(Default)]
    struct Queue {
        waiting: Vec<oneshot::Sender<u64>>,
        flushing: bool,
    }

    fn flush(queue: &Mutex<Queue>) {
        loop {
            let answers = {
                let mut queue = queue.lock().expect("queue");
                if queue.waiting.is_empty() {
                    queue.flushing = false;
                    return;
                }
                std::mem::take(&mut queue.waiting)
            };
            for (n, answer) in answers.into_iter().enumerate() {
                let _ = answer.send(n as u64);
            }
        }
    }

    let runtime = runtime();
    let queue = Arc::new(Mutex::new(Queue::default()));
    let mut group = c.benchmark_group("handoff/tokio");
    for tasks in [1u64, 16, 256] {
        group.throughput(Throughput::Elements(tasks));
        group.bench_function(format!("tasks={tasks}"), |b| {
            b.iter_custom(|iterations| {
                closed_loop(&runtime, tasks, iterations, &queue, |queue| async move {
                    let (sender, receiver) = oneshot::channel();
                    let start_flusher = {
                        let mut state = queue.lock().expect("queue");
                        state.waiting.push(sender);
                        !std::mem::replace(&mut state.flushing, true)
                    };
                    if start_flusher {
                        let queue = Arc::clone(&queue);
                        tokio::task::spawn_blocking(move || flush(&queue));
                    }
                    receiver.await.expect("answered");
                    queue
                })
            });
        });
    }
    group.finish();
}

/// The floor of durable group commit itself, for `append/log/appenders=N`: the same
/// runtime and N tasks each waiting for its own acknowledgement, and a flusher that does
/// what the log's does with none of the log's own work — no index, no encoding, no
/// checksum. Each task queues a 256-byte event; the flusher lingers as the log's does
/// (until three quarters of the writers it answered are back, at most half a sync, asleep
/// on a condition variable), writes the group with one positioned write into a
/// preallocated, zero-filled file (padded to a page), calls `fdatasync`, and answers the
/// group as the log does (more than two from a runtime task). The gap between this and
/// the log is what the log's own work costs; the gap between this and
/// `fsync/preallocated` is what waiting for each acknowledgement costs.
fn group_commit_floor(c: &mut Criterion) {
    use std::os::unix::fs::FileExt;
    use std::sync::{Condvar, Mutex};
    use std::time::{Duration, Instant};
    use tokio::sync::oneshot;

    const EVENT_BYTES: usize = 256;
    const PAGE: u64 = 4096;

    #[derive(Default)]
    struct Queue {
        events: Vec<u8>,
        waiting: Vec<oneshot::Sender<()>>,
        flushing: bool,
        linger_until: usize,
    }

    struct Log {
        queue: Mutex<Queue>,
        returned: Condvar,
        file: std::fs::File,
    }

    fn flush(log: &Log) {
        let (mut offset, mut answered, mut sync_time) = (0u64, 0usize, Duration::ZERO);
        loop {
            let mut queue = log.queue.lock().expect("queue");
            let target = (answered * 3).div_ceil(4);
            if answered >= 2 && queue.waiting.len() < target {
                queue.linger_until = target;
                queue = log
                    .returned
                    .wait_timeout_while(queue, sync_time / 2, |q| q.waiting.len() < target)
                    .expect("queue")
                    .0;
                queue.linger_until = 0;
            }
            if queue.waiting.is_empty() {
                queue.flushing = false;
                return;
            }
            let mut events = std::mem::take(&mut queue.events);
            let waiting = std::mem::take(&mut queue.waiting);
            drop(queue);
            let started = Instant::now();
            let padded = (events.len() as u64).next_multiple_of(PAGE);
            events.resize(padded as usize, 0);
            if offset + padded > PREALLOCATED_BYTES {
                offset = 0;
            }
            log.file.write_all_at(&events, offset).expect("write");
            log.file.sync_data().expect("fdatasync");
            offset += padded;
            sync_time = started.elapsed();
            answered = waiting.len();
            let answer = move || {
                for answer in waiting {
                    let _ = answer.send(());
                }
            };
            // As the log does: a pair at once, more from a runtime task.
            if answered <= 2 {
                answer();
            } else {
                tokio::spawn(async move { answer() });
            }
        }
    }

    let (dir, file) = preallocated_file("floor");
    let log = Arc::new(Log {
        queue: Mutex::new(Queue::default()),
        returned: Condvar::new(),
        file,
    });
    let runtime = runtime();
    let mut group = c.benchmark_group("groupcommit/floor");
    for appenders in [1u64, 16, 256] {
        group.throughput(Throughput::Elements(appenders));
        group.bench_function(format!("appenders={appenders}"), |b| {
            b.iter_custom(|iterations| {
                closed_loop(&runtime, appenders, iterations, &log, |log| async move {
                    let (sender, receiver) = oneshot::channel();
                    let start_flusher = {
                        let mut queue = log.queue.lock().expect("queue");
                        queue.events.extend_from_slice(&[0xab; EVENT_BYTES]);
                        queue.waiting.push(sender);
                        if queue.linger_until != 0 && queue.waiting.len() >= queue.linger_until {
                            queue.linger_until = 0;
                            log.returned.notify_one();
                        }
                        !std::mem::replace(&mut queue.flushing, true)
                    };
                    if start_flusher {
                        let log = Arc::clone(&log);
                        tokio::task::spawn_blocking(move || flush(&log));
                    }
                    receiver.await.expect("answered");
                    log
                })
            });
        });
    }
    group.finish();
    drop(runtime);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(
    benches,
    group_commit_floor,
    handoff_floor,
    append_memory,
    append_log,
    append_sqlite,
    append_postgres
);
criterion_main!(benches);
