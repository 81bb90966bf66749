//! `store-fuzz`: concurrent clients drive the store contract directly, under faults, and
//! the history checker (I11) judges every answer they got.
//!
//! A store server — the durable log on a simulated disk, or the in-memory store — serves
//! clients on their own machines over the remote store protocol. Each client draws its
//! calls from the seed: appends to a few contended streams with every kind of expectation
//! (right, stale, off by one), conditional appends racing group commits, exact retries of
//! an earlier append, partial overlaps and reused ids, retries of an unknown outcome with
//! the same ids, reads of streams and of the log from random places, query reads, event
//! lookups, version and count probes, snapshots of several schema versions and
//! catch-up subscriptions from random checkpoints. Meanwhile the plan's faults strike the
//! store: F1 crashes (unsynced writes lost, the last one torn), F3 partitions from
//! clients, F6 failed syncs and read-back flips, F7 a slow disk.
//!
//! After quiescence the history is judged against the store's contents. Then F10: the
//! store stops, bytes of a segment are damaged at rest at a seed-chosen place, and it
//! reopens. It must refuse — naming the damaged file and an offset at or before the
//! damage — or serve exactly what it held before; never other bytes, never fewer events.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use evsource::core::{
    AppendCondition, CurrentVersion, EventData, EventId, ExpectedVersion, GlobalPosition, Limits,
    Metadata, Query, RecordedEvent, Snapshot, StreamId, StreamVersion,
};
use evsource::oracles::history::{History, RecordingStore};
use evsource::oracles::{Violation, check_store_shape, fingerprint, read_all_events};
use evsource::signal::Shutdown;
use evsource::storage::SimDisk;
use evsource::store::{
    AppendError, CatchUpSubscription, EventStore, LogStore, MemoryStore, OpenError, ReadError,
    RemoteConfig, RemoteStore, remote,
};
use madsim::net::NetSim;
use madsim::rand::Rng;
use madsim::runtime::Handle;

use crate::StoreHistory;
use crate::coverage::{Coverage, DAMAGE_REFUSED, OLDER_SNAPSHOT, note, note_store_server};
use crate::faults::{FaultCounts, FaultPlan, log_config, open_log_retrying, simulated_disk};
use crate::points::Points;

const STORE_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100));
const STORE_PORT: u16 = 5000;
/// Snapshot schemas the clients write: a reader of one must never be handed another's.
const SCHEMAS: [u32; 3] = [1, 2, 3];

/// The backend behind the store server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The durable log on a simulated disk: every fault applies.
    Log,
    /// The in-memory store: no disk, so no crash or disk faults; partitions still apply.
    Memory,
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct FuzzSummary {
    pub backend: &'static str,
    pub calls: u64,
    pub events: u64,
    /// How the F10 damage was met: refused, served intact, or not injected.
    pub damage: String,
}

/// What one run hands back: its verdict, faults, history for I11 and fingerprint.
pub struct FuzzReport {
    pub verdict: Result<FuzzSummary, Violation>,
    pub faults: FaultCounts,
    pub history: StoreHistory,
    pub fingerprint: u128,
    /// The dangerous situations the run reached.
    pub coverage: Coverage,
    /// The machines of the run, in words.
    pub topology: String,
}

type Slot<T> = Arc<Mutex<Option<T>>>;

fn current<T: Clone>(slot: &Slot<T>) -> Option<T> {
    slot.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn set<T>(slot: &Slot<T>, value: Option<T>) {
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = value;
}

/// Runs the scenario inside the current madsim runtime.
pub async fn run(plan: &FaultPlan) -> FuzzReport {
    let handle = Handle::current();
    let (points, mut crash_requests) = Points::install(plan.points.clone());
    let torn_tails = Arc::new(AtomicU64::new(0));
    let older_snapshots = Arc::new(AtomicU64::new(0));
    let (backend, clients, calls_per_client, streams) = {
        let mut rng = madsim::rand::thread_rng();
        let backend = if rng.gen_bool(0.75) {
            Backend::Log
        } else {
            Backend::Memory
        };
        (
            backend,
            rng.gen_range(2..6usize),
            rng.gen_range(20..80u64),
            rng.gen_range(1..5usize),
        )
    };
    let topology = format!(
        "1 store server ({} backend), {clients} client machines calling it directly, {calls_per_client} calls each on {streams} stream{}",
        match backend {
            Backend::Log => "durable log",
            Backend::Memory => "in-memory",
        },
        if streams == 1 { "" } else { "s" }
    );
    let disk = simulated_disk(plan);
    let log_slot: Slot<LogStore> = Arc::new(Mutex::new(None));
    let memory = MemoryStore::new(Limits::default());
    let server = {
        let (disk, slot, memory) = (disk.clone(), log_slot.clone(), memory.clone());
        let torn_tails = torn_tails.clone();
        handle
            .create_node()
            .name("store")
            .ip(STORE_IP)
            .init(move || {
                let (disk, slot, memory) = (disk.clone(), slot.clone(), memory.clone());
                let torn_tails = torn_tails.clone();
                async move {
                    let listener = crate::faults::bind_retrying(STORE_PORT).await;
                    match backend {
                        Backend::Memory => {
                            let _ = remote::serve(memory, listener, Shutdown::new()).await;
                        }
                        Backend::Log => {
                            let store = open_log_retrying(&disk, &torn_tails).await;
                            set(&slot, Some(store.clone()));
                            let _ = remote::serve(store, listener, Shutdown::new()).await;
                        }
                    }
                }
            })
            .build()
            .id()
    };
    let history = History::new();
    points.watch_appends(history.clone());
    let mut tasks = Vec::new();
    let mut client_nodes = Vec::new();
    for client in 0..clients {
        let node = handle
            .create_node()
            .name(format!("client-{client}"))
            .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 2, client as u8 + 1)))
            .build();
        client_nodes.push(node.id());
        let store = RecordingStore::new(
            RemoteStore::new(
                SocketAddr::new(STORE_IP, STORE_PORT),
                RemoteConfig {
                    connect_timeout: Duration::from_secs(2),
                    request_timeout: Duration::from_secs(3),
                    wait_slice: Duration::from_secs(2),
                    idle_connections_max: 4,
                },
            ),
            history.clone(),
            &format!("client-{client}"),
        );
        tasks.push(node.spawn(drive(
            client as u32,
            store,
            calls_per_client,
            streams,
            older_snapshots.clone(),
        )));
    }
    let done = Shutdown::new();
    // Held for the whole of a crash of the store, so that two never interleave.
    let crashing = Arc::new(tokio::sync::Mutex::new(()));
    let injector = {
        let crashing = crashing.clone();
        let (plan, handle, disk, done) = (plan.clone(), handle.clone(), disk.clone(), done.clone());
        let (slot, nodes) = (log_slot.clone(), client_nodes.clone());
        tokio::spawn(async move {
            inject(
                &plan, backend, &handle, server, &slot, &disk, &nodes, &done, &crashing,
            )
            .await
        })
    };
    // Crashes asked for by fault points: the store server crashes right there.
    let crasher = {
        let (handle, disk, slot) = (handle.clone(), disk.clone(), log_slot.clone());
        let crashing = crashing.clone();
        tokio::spawn(async move {
            let mut crashed = 0u64;
            while let Some((node, point)) = crash_requests.recv().await {
                let _crashing = crashing.lock().await;
                // A crash inside a group commit: most of the group's unsynced bytes are
                // lost, the last one kept torn.
                let kept = madsim::rand::thread_rng().gen_range(0..512u64);
                if node == server {
                    tracing::info!(%point, kept_unsynced_bytes = kept, "fault: the store crashed at a fault point");
                    set(&slot, None);
                    handle.kill(server);
                    disk.crash(kept);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    crashed += 1;
                }
                handle.restart(node);
            }
            crashed
        })
    };
    let mut calls = 0;
    for task in tasks {
        calls += task.await.unwrap_or(0);
    }
    done.trigger();
    points.disarm();
    let mut faults = injector.await.expect("the injector ends");
    let crashed_at_points = crasher.await.expect("the crash server ends");
    faults.store_crashes += crashed_at_points;

    // Quiescence: every client is done; the store is up and its log healthy.
    for node in &client_nodes {
        handle.kill(*node);
    }
    // Never judge a store that could not be read as an empty one: that passes everything.
    let stored = match backend {
        Backend::Memory => read_all_events(&memory).await.ok(),
        Backend::Log => settled_log(&handle, server, &log_slot).await,
    };
    let Some(stored) = stored else {
        return FuzzReport {
            verdict: Err(Violation {
                invariant: "I4",
                detail: "the store could not be read after every fault healed".into(),
            }),
            faults,
            history: StoreHistory::default(),
            fingerprint: 0,
            coverage: Coverage::new(),
            topology,
        };
    };
    let store_history = StoreHistory::new(&history, stored.clone(), true);
    let mut coverage = Coverage::new();
    note_store_server(
        &mut coverage,
        &points.counts(),
        crashed_at_points,
        torn_tails.load(Ordering::Relaxed),
        &disk,
    );
    note(
        &mut coverage,
        OLDER_SNAPSHOT,
        older_snapshots.load(Ordering::Relaxed),
    );
    let shape = check_store_shape(&stored);
    let damage = match (backend, shape) {
        (_, Err(violation)) => Err(violation),
        (Backend::Memory, Ok(())) => Ok("no disk".to_owned()),
        (Backend::Log, Ok(())) => {
            handle.kill(server);
            set(&log_slot, None);
            let judged = damage_at_rest(&disk, &stored).await;
            faults.damage_at_rest += 1;
            if judged.as_ref().is_ok_and(|how| how.starts_with("refused")) {
                note(&mut coverage, DAMAGE_REFUSED, 1);
            }
            judged
        }
    };
    FuzzReport {
        verdict: damage.map(|damage| FuzzSummary {
            backend: match backend {
                Backend::Log => "log",
                Backend::Memory => "memory",
            },
            calls,
            events: stored.len() as u64,
            damage,
        }),
        faults,
        history: store_history,
        fingerprint: fingerprint(&stored),
        coverage,
        topology,
    }
}

/// The log's contents once it is open and healthy (restarted if it poisoned itself);
/// `None` if it never was within two minutes.
async fn settled_log(
    handle: &Handle,
    server: madsim::task::NodeId,
    slot: &Slot<LogStore>,
) -> Option<Vec<RecordedEvent>> {
    for _ in 0..120 {
        if let Some(store) = current(slot) {
            if store.failure().is_some() {
                set(slot, None);
                handle.kill(server);
                handle.restart(server);
            } else if let Ok(events) = read_all_events(&store).await {
                return Some(events);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    None
}

/// One client's calls. Returns how many it made.
async fn drive<S: EventStore>(
    client: u32,
    store: S,
    calls: u64,
    streams: usize,
    older_snapshots: Arc<AtomicU64>,
) -> u64 {
    let stream_names: Vec<StreamId> = (0..streams)
        .map(|s| StreamId::new(&format!("fuzz-{s}")).expect("valid"))
        .collect();
    let tags = ["red", "green", "blue"];
    let mut next_id = 0u64;
    let mut fresh = |count: usize, rng: &mut madsim::rand::GlobalRng| -> Vec<EventData> {
        (0..count)
            .map(|_| {
                next_id += 1;
                let tag = tags[rng.gen_range(0..tags.len())];
                let payload_len = rng.gen_range(0..64);
                EventData {
                    id: EventId(((client as u128 + 1) << 64) | next_id as u128),
                    event_type: format!("Fuzzed{}", rng.gen_range(0..3)),
                    tags: vec![tag.to_owned()],
                    metadata: Metadata {
                        recorded_at_millis: next_id,
                        ..Metadata::default()
                    },
                    payload: (0..payload_len).map(|_| rng.r#gen::<u8>()).collect(),
                }
            })
            .collect()
    };
    // Earlier appends: (stream, expectation, events), for retries and overlaps.
    let mut earlier: Vec<(StreamId, ExpectedVersion, Vec<EventData>)> = Vec::new();
    // Versions and positions this client has seen, stale by the time it uses them.
    let mut seen_versions: Vec<(StreamId, CurrentVersion)> = Vec::new();
    let mut seen_position: Option<GlobalPosition> = None;
    let mut made = 0u64;
    for _ in 0..calls {
        let (kind, stream, pause) = {
            let mut rng = madsim::rand::thread_rng();
            (
                rng.gen_range(0..100u32),
                stream_names[rng.gen_range(0..stream_names.len())].clone(),
                rng.gen_range(0..40u64),
            )
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
        made += 1;
        match kind {
            // Appends with every kind of expectation.
            0..=34 => {
                let (expected, events, condition) = {
                    let mut rng = madsim::rand::thread_rng();
                    let known = seen_versions
                        .iter()
                        .rev()
                        .find(|(s, _)| *s == stream)
                        .map(|(_, v)| *v);
                    let expected = match (rng.gen_range(0..6), known) {
                        (0, _) => ExpectedVersion::Any,
                        (1, _) => ExpectedVersion::NoStream,
                        (2, _) => ExpectedVersion::StreamExists,
                        (3, Some(CurrentVersion::Current(v))) => {
                            ExpectedVersion::Exact(StreamVersion(v.0 + 1))
                        }
                        (_, Some(CurrentVersion::Current(v))) => ExpectedVersion::Exact(v),
                        (_, _) => ExpectedVersion::NoStream,
                    };
                    let count = rng.gen_range(1..4);
                    let events = fresh(count, &mut rng);
                    let condition = rng.gen_bool(0.3).then(|| AppendCondition {
                        query: Query::tagged([tags[rng.gen_range(0..tags.len())]]),
                        after: seen_position,
                    });
                    (expected, events, condition)
                };
                let answer =
                    append_settling(&store, &stream, expected, events.clone(), condition).await;
                if let Ok(appended) = answer {
                    seen_versions.push((
                        stream.clone(),
                        CurrentVersion::Current(appended.last_version),
                    ));
                }
                earlier.push((stream, expected, events));
            }
            // An exact retry of an earlier append: idempotent where it landed.
            35..=44 => {
                let pick = madsim::rand::thread_rng().gen_range(0..earlier.len().max(1));
                if let Some((stream, expected, events)) = earlier.get(pick).cloned() {
                    let _ = store.append(&stream, expected, events).await;
                }
            }
            // A partial overlap, or a reused id on another stream: refused.
            45..=49 => {
                let pick = madsim::rand::thread_rng().gen_range(0..earlier.len().max(1));
                if let Some((own, _, events)) = earlier.get(pick).cloned() {
                    let mut mixed = vec![events[0].clone()];
                    mixed.extend(fresh(1, &mut madsim::rand::thread_rng()));
                    let target = if madsim::rand::thread_rng().gen_bool(0.5) {
                        own
                    } else {
                        stream
                    };
                    let _ = store.append(&target, ExpectedVersion::Any, mixed).await;
                }
            }
            50..=64 => {
                let (from, max) = {
                    let mut rng = madsim::rand::thread_rng();
                    (rng.gen_range(0..8u64), rng.gen_range(1..20usize))
                };
                if let Ok(events) = store.read_stream(&stream, StreamVersion(from), max).await
                    && let Some(last) = events.last()
                {
                    seen_versions.push((stream, CurrentVersion::Current(last.version)));
                    seen_position = Some(last.position);
                }
            }
            65..=72 => {
                let (from, max) = {
                    let mut rng = madsim::rand::thread_rng();
                    (rng.gen_range(0..64u64), rng.gen_range(1..50usize))
                };
                if let Ok(events) = store.read_all(GlobalPosition(from), max).await
                    && let Some(last) = events.last()
                {
                    seen_position = Some(last.position);
                }
            }
            73..=76 => {
                let tag = tags[madsim::rand::thread_rng().gen_range(0..tags.len())];
                let _ = store
                    .read_matching(&Query::tagged([tag]), seen_position, 20)
                    .await;
            }
            77..=79 => {
                let pick = madsim::rand::thread_rng().gen_range(0..earlier.len().max(1));
                if let Some((_, _, events)) = earlier.get(pick) {
                    let _ = store.find_event(events[0].id).await;
                }
            }
            80..=85 => {
                if let Ok(version) = store.current_version(&stream).await {
                    seen_versions.push((stream, version));
                }
                let _ = store.event_count().await;
            }
            86..=91 => {
                let schema = SCHEMAS[madsim::rand::thread_rng().gen_range(0..SCHEMAS.len())];
                if let Some((_, CurrentVersion::Current(version))) = seen_versions
                    .iter()
                    .rev()
                    .find(|(s, _)| *s == stream)
                    .cloned()
                {
                    let snapshot = Snapshot {
                        version,
                        schema_version: schema,
                        state: format!("client {client} schema {schema} at {version}").into_bytes(),
                    };
                    let _ = store.save_snapshot(&stream, snapshot).await;
                }
                // A reader of the newest schema meets the older ones: it must see each
                // snapshot as saved, schema and all (the history checker compares).
                if let Ok(Some(loaded)) = store.load_snapshot(&stream).await
                    && loaded.schema_version < SCHEMAS[SCHEMAS.len() - 1]
                {
                    older_snapshots.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {
                let (checkpoint, take) = {
                    let mut rng = madsim::rand::thread_rng();
                    (
                        rng.gen_bool(0.7)
                            .then(|| GlobalPosition(rng.gen_range(0..40))),
                        rng.gen_range(1..30),
                    )
                };
                catch_up(&store, checkpoint, take).await;
            }
        }
    }
    made
}

/// Appends; an unknown outcome is retried with the same ids until it settles (or the
/// retries run out): the contract's way to resolve it.
async fn append_settling<S: EventStore>(
    store: &S,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<EventData>,
    condition: Option<AppendCondition>,
) -> Result<evsource::core::AppendResult, AppendError> {
    let mut answer = store
        .append_if(stream, expected, events.clone(), condition.as_ref())
        .await;
    for _ in 0..5 {
        if !matches!(
            answer,
            Err(AppendError::OutcomeUnknown(_) | AppendError::Unavailable(_))
        ) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        answer = store
            .append_if(stream, expected, events.clone(), condition.as_ref())
            .await;
    }
    answer
}

/// Follows a catch-up subscription from `checkpoint` for up to `take` events that are
/// already readable. Its reads are recorded like any other.
async fn catch_up<S: EventStore>(store: &S, checkpoint: Option<GlobalPosition>, take: usize) {
    let limits = Limits::default();
    let Ok(mut subscription) = CatchUpSubscription::new(store.clone(), checkpoint, 16, &limits)
    else {
        return;
    };
    let mut expected = checkpoint.map_or(0, |c| c.0 + 1);
    for _ in 0..take {
        match subscription.try_next().await {
            Ok(Some(event)) => {
                assert_eq!(
                    event.position.0, expected,
                    "a catch-up subscription delivers every position once, in order"
                );
                expected += 1;
            }
            Ok(None) | Err(_) => return,
        }
    }
}

/// Injects the plan's store faults until `done`; leaves the store up and healed.
#[allow(clippy::too_many_arguments)]
async fn inject(
    plan: &FaultPlan,
    backend: Backend,
    handle: &Handle,
    server: madsim::task::NodeId,
    slot: &Slot<LogStore>,
    disk: &SimDisk,
    clients: &[madsim::task::NodeId],
    done: &Shutdown,
    crashing: &tokio::sync::Mutex<()>,
) -> FaultCounts {
    let mut counts = FaultCounts::default();
    let disk_faults = backend == Backend::Log;
    let mut kinds: Vec<u8> = Vec::new();
    if plan.csms_crash && disk_faults {
        kinds.push(1);
    }
    if plan.partition {
        kinds.push(3);
    }
    if plan.disk_faults && disk_faults {
        kinds.push(6);
    }
    while !done.is_triggered() {
        // A poisoned log stops itself; its supervisor restarts the process.
        let crash = crashing.lock().await;
        if let Some(store) = current(slot)
            && let Some(reason) = store.failure()
        {
            tracing::info!(%reason, "the store stopped itself; restarting it");
            set(slot, None);
            handle.kill(server);
            handle.restart(server);
            counts.node_failures += 1;
        }
        drop(crash);
        if kinds.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let (pause, kind, outage, kept, client, flip) = {
            let mut rng = madsim::rand::thread_rng();
            (
                rng.gen_range(100..2_000u64),
                kinds[rng.gen_range(0..kinds.len())],
                rng.gen_range(100..3_000u64),
                rng.gen_range(0..8192u64),
                rng.gen_range(0..clients.len()),
                rng.gen_bool(0.5).then(|| rng.r#gen::<u64>()),
            )
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if done.is_triggered() {
            break;
        }
        match kind {
            1 => {
                let _crashing = crashing.lock().await;
                tracing::info!(kept_unsynced_bytes = kept, "fault: the store crashed");
                set(slot, None);
                handle.kill(server);
                disk.crash(kept);
                tokio::time::sleep(Duration::from_millis(outage)).await;
                handle.restart(server);
                counts.store_crashes += 1;
            }
            3 => {
                let net = NetSim::current();
                tracing::info!(client, "fault: a client is cut off from the store");
                net.clog_link(clients[client], server);
                net.clog_link(server, clients[client]);
                tokio::time::sleep(Duration::from_millis(outage)).await;
                net.unclog_link(clients[client], server);
                net.unclog_link(server, clients[client]);
                counts.store_partitions += 1;
            }
            _ => {
                let mut faults = disk.faults();
                match flip.and_then(|draw| near_tail(disk, draw)) {
                    Some((file, offset)) => {
                        tracing::info!(%file, offset, "fault: the next read of a byte flips a bit");
                        faults.flip_next_read = Some((file, offset));
                        disk.set_faults(faults);
                        counts.read_flips += 1;
                    }
                    None => {
                        tracing::info!("fault: syncs fail");
                        faults.fail_syncs = true;
                        disk.set_faults(faults);
                        tokio::time::sleep(Duration::from_millis(outage / 4)).await;
                        let mut faults = disk.faults();
                        faults.fail_syncs = false;
                        disk.set_faults(faults);
                        counts.failed_syncs += 1;
                    }
                }
            }
        }
    }
    let mut faults = disk.faults();
    faults.flip_next_read = None;
    faults.fail_syncs = false;
    disk.set_faults(faults);
    counts
}

/// A byte within the last 16 KiB written to the newest segment.
fn near_tail(disk: &SimDisk, draw: u64) -> Option<(String, u64)> {
    let file = disk
        .file_names()
        .into_iter()
        .rfind(|name| name.ends_with(".evlog"))?;
    let written = disk.written_len(&file)?;
    let window = written.min(16 * 1024);
    Some((file, written - 1 - draw % window))
}

/// F10: damages bytes of a segment at rest, at a seed-chosen place anywhere in what was
/// written, and reopens the log. The log must refuse, naming the file and an offset at
/// or before the damage — or serve exactly `before`: every event, every byte.
async fn damage_at_rest(disk: &SimDisk, before: &[RecordedEvent]) -> Result<String, Violation> {
    let segments: Vec<String> = disk
        .file_names()
        .into_iter()
        .filter(|name| name.ends_with(".evlog"))
        .collect();
    let draws = {
        let mut rng = madsim::rand::thread_rng();
        (
            rng.gen_range(0..segments.len().max(1)),
            rng.r#gen::<u64>(),
            rng.gen_range(1..=255u8),
            rng.gen_range(0..4u8),
        )
    };
    let Some(file) = segments.get(draws.0) else {
        return Ok("no segment to damage".to_owned());
    };
    let Some(written) = disk.written_len(file) else {
        return Ok("an empty segment".to_owned());
    };
    let mut bytes = disk.file_bytes(file).expect("listed");
    let offset = draws.1 % written;
    // One byte changed, or (one time in four) a whole 512-byte sector garbled.
    let end = if draws.3 == 0 {
        (offset + 512).min(bytes.len() as u64)
    } else {
        offset + 1
    };
    for (i, byte) in bytes[offset as usize..end as usize].iter_mut().enumerate() {
        *byte ^= draws.2.rotate_left(i as u32);
    }
    disk.set_file_bytes(file, bytes);
    tracing::info!(%file, offset, bytes = end - offset, "fault: bytes damaged at rest");
    let named = |reported: &str| reported.ends_with(file.as_str());
    match LogStore::open(Arc::new(disk.clone()), log_config()) {
        Err(OpenError::Corrupt {
            file: reported,
            offset: at,
            reason,
        }) => {
            if named(&reported) && at <= end {
                Ok(format!("refused: {reported} at {at}"))
            } else {
                Err(Violation {
                    invariant: "I10",
                    detail: format!(
                        "bytes {offset}..{end} of {file} were damaged; the log refused naming {reported} at {at} ({reason})"
                    ),
                })
            }
        }
        Err(error) => Err(Violation {
            invariant: "I10",
            detail: format!(
                "bytes {offset}..{end} of {file} were damaged; the log failed to open without naming the damage: {error}"
            ),
        }),
        Ok(store) => {
            let after = match read_all_events(&store).await {
                Ok(after) => after,
                Err(ReadError::Corrupt { file: reported, .. }) if named(&reported) => {
                    return Ok(format!("refused on read: {reported}"));
                }
                Err(error) => {
                    return Err(Violation {
                        invariant: "I10",
                        detail: format!(
                            "bytes {offset}..{end} of {file} were damaged; reading failed without naming the damage: {error}"
                        ),
                    });
                }
            };
            if after.as_slice() == before {
                return Ok("served intact".to_owned());
            }
            let lost = before.len().saturating_sub(after.len());
            let differing = before
                .iter()
                .zip(&after)
                .find(|(b, a)| b != a)
                .map(|(b, _)| format!("; the event at {} differs", b.position))
                .unwrap_or_default();
            Err(Violation {
                invariant: "I2",
                detail: format!(
                    "bytes {offset}..{end} of {file} were damaged at rest and the log opened anyway: it holds {} event(s) where it held {} ({lost} silently dropped){differing}",
                    after.len(),
                    before.len()
                ),
            })
        }
    }
}
