//! The read side of the hot path, on the durable log: rehydrating the station aggregate
//! (from the start, and from its latest snapshot plus the tail), a catch-up subscription
//! reading everything, and one command's load → decide → append round trip. Ids follow
//! `<group>/<subject>/<parameter>` so results compare over time.
//!
//! `EVSOURCE_BENCH_QUICK=1` (what `cargo xtask bench --quick` sets) shrinks the large
//! streams from a million events to 100,000 and says so in the id.

use std::sync::atomic::{AtomicU64, Ordering};

mod common;

use common::runtime;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use evsource::core::{CommandId, EventData, ExpectedVersion, Limits, Snapshot, StreamId};
use evsource::decider::{Aggregate, Decider};
use evsource::domain::station::{SessionId, Station, StationCommand, StationEvent};
use evsource::environment::SystemEnvironment;
use evsource::handler::{CommandHandler, HandlerConfig, encode_events};
use evsource::store::{CatchUpSubscription, EventStore, LogConfig, LogStore};

/// The allocator the `evsource` binary runs with, so that the figures are the product's.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Events appended per write while building a stream.
const BUILD_BATCH: usize = 1_000;
/// Snapshot cadence of the snapshot bench: the latest snapshot is at most this far back.
const SNAPSHOT_EVERY: u64 = 1_000;

fn quick() -> bool {
    std::env::var_os("EVSOURCE_BENCH_QUICK").is_some()
}

fn large() -> u64 {
    if quick() { 100_000 } else { 1_000_000 }
}

/// A log in a fresh temporary directory, removed when dropped.
struct TempLog {
    store: LogStore,
    dir: std::path::PathBuf,
}

impl TempLog {
    fn open(name: &str) -> TempLog {
        let dir =
            std::env::temp_dir().join(format!("evsource-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = LogStore::open_dir(&dir, LogConfig::default()).expect("open log");
        TempLog { store, dir }
    }
}

impl Drop for TempLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static NEXT_COMMAND: AtomicU64 = AtomicU64::new(1);

/// Session ids the history cycles through.
const SESSIONS: u64 = 1_000;

/// The station's history, cycling through a connector's life: requested, accepted,
/// stopped — each a real `StationEvent`, encoded as the handler stores it. Session ids
/// cycle through [`SESSIONS`] values so the state (and its snapshot) stays the size of a
/// station's working set: the station keeps every session it has seen, so a million
/// events of distinct sessions would outgrow the 1 MiB snapshot limit (the decider would
/// refuse a reused id; replay does not check it, and its cost per event is the same).
fn station_history(count: u64) -> impl Iterator<Item = StationEvent> {
    (0..count).map(|n| {
        let session = SessionId::new(&format!("s{}", n / 3 % SESSIONS)).expect("valid");
        let connector = 1 + (n / 3 % 4) as u32;
        match n % 3 {
            0 => StationEvent::UnlockRequested { connector, session },
            1 => StationEvent::UnlockAccepted { connector, session },
            _ => StationEvent::SessionStopped { connector, session },
        }
    })
}

/// Appends `count` station events to `stream`, saving a snapshot every
/// `snapshot_every` events when given. Returns the stream's final state.
async fn build_station(
    store: &LogStore,
    stream: &StreamId,
    count: u64,
    snapshot_every: Option<u64>,
) -> <Station as Decider>::State {
    let mut state = Station::initial();
    let mut batch = Vec::with_capacity(BUILD_BATCH);
    let mut written = 0u64;
    let mut history = station_history(count).peekable();
    while history.peek().is_some() {
        batch.clear();
        batch.extend(history.by_ref().take(BUILD_BATCH));
        // Every batch its own command, across every stream built in this process.
        let command = CommandId(u128::from(NEXT_COMMAND.fetch_add(1, Ordering::Relaxed)));
        let data: Vec<EventData> = encode_events::<Station>(&batch, command, 0);
        store
            .append(stream, ExpectedVersion::Any, data)
            .await
            .expect("append while building");
        for event in &batch {
            state = Station::evolve(state, event);
        }
        let before = written;
        written += batch.len() as u64;
        if let Some(every) = snapshot_every
            && before / every != written / every
        {
            let snapshot = Snapshot {
                version: evsource::core::StreamVersion(written - 1),
                schema_version: Station::SNAPSHOT_SCHEMA,
                state: Station::encode_state(&state),
            };
            store
                .save_snapshot(stream, snapshot)
                .await
                .expect("snapshot while building");
        }
    }
    state
}

fn handler(store: LogStore, snapshot_every_events: u64) -> CommandHandler<LogStore, Station> {
    CommandHandler::new(
        store,
        HandlerConfig {
            snapshot_every_events,
            ..HandlerConfig::default()
        },
    )
}

fn rehydrate(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("rehydrate/station");
    group.sample_size(10);
    for events in [1_000, large()] {
        let log = TempLog::open(&format!("rehydrate-{events}"));
        let stream = StreamId::new("station-bench").expect("valid");
        let expected = runtime.block_on(build_station(&log.store, &stream, events, None));
        let loader = handler(log.store.clone(), 0);
        group.throughput(Throughput::Elements(events));
        group.bench_function(format!("events={events}"), |b| {
            b.iter(|| {
                let loaded = runtime.block_on(loader.load(&stream)).expect("load");
                assert_eq!(loaded.replayed_events, events);
                loaded
            })
        });
        let loaded = runtime.block_on(loader.load(&stream)).expect("load");
        assert_eq!(loaded.state, expected, "replay reaches the built state");
    }
    group.finish();
}

fn snapshot(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("snapshot/station");
    group.sample_size(10);
    let events = large();
    let log = TempLog::open("snapshot");
    let stream = StreamId::new("station-bench").expect("valid");
    let expected = runtime.block_on(build_station(
        &log.store,
        &stream,
        events,
        Some(SNAPSHOT_EVERY),
    ));
    let loader = handler(log.store.clone(), SNAPSHOT_EVERY);
    group.throughput(Throughput::Elements(events));
    group.bench_function(format!("events={events}"), |b| {
        b.iter(|| {
            let loaded = runtime.block_on(loader.load(&stream)).expect("load");
            assert!(loaded.from_snapshot && loaded.replayed_events < SNAPSHOT_EVERY);
            loaded
        })
    });
    let loaded = runtime.block_on(loader.load(&stream)).expect("load");
    assert_eq!(
        loaded.state, expected,
        "snapshot + tail reach the built state"
    );
    group.finish();
}

fn read_all(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("read_all");
    group.sample_size(10);
    let events = large() / 10;
    let log = TempLog::open("read-all");
    for station in 0..10 {
        let stream = StreamId::new(&format!("station-{station}")).expect("valid");
        runtime.block_on(build_station(&log.store, &stream, events / 10, None));
    }
    group.throughput(Throughput::Elements(events));
    group.bench_function("log", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut subscription =
                    CatchUpSubscription::new(log.store.clone(), None, 1024, &Limits::default())
                        .expect("subscription");
                let mut seen = 0u64;
                while let Some(event) = subscription.try_next().await.expect("read") {
                    seen += 1;
                    std::hint::black_box(&event);
                }
                assert_eq!(seen, events);
            })
        })
    });
    group.finish();
}

fn command(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("command");
    let log = TempLog::open("command");
    let stream = StreamId::new("station-bench").expect("valid");
    runtime.block_on(build_station(
        &log.store,
        &stream,
        3 * SNAPSHOT_EVERY,
        Some(SNAPSHOT_EVERY),
    ));
    let commands = handler(log.store.clone(), SNAPSHOT_EVERY);
    let mut env = SystemEnvironment::new(7);
    let mut sequence = 0u64;
    group.throughput(Throughput::Elements(1));
    group.bench_function("station", |b| {
        b.iter(|| {
            sequence += 1;
            // Request, then stop, alternating, so the connector is always free again.
            let session = format!("bench{}", (sequence - 1) / 2);
            let command = if sequence % 2 == 1 {
                StationCommand::RequestUnlock {
                    connector: 16,
                    session,
                }
            } else {
                StationCommand::RecordAnswer {
                    session,
                    answer: evsource::domain::station::StationAnswer::Rejected,
                }
            };
            runtime
                .block_on(commands.handle(
                    &mut env,
                    &stream,
                    CommandId((1 << 64) + u128::from(sequence)),
                    &command,
                ))
                .expect("command")
        })
    });
    group.finish();
}

criterion_group!(benches, rehydrate, snapshot, read_all, command);
criterion_main!(benches);
