//! The reference scenario (seed 000), across machines: three CSMS nodes share one store
//! server (the durable log on a simulated disk, served over the simulated network by the
//! remote store protocol, as real nodes share PostgreSQL). Stations connect to any node and
//! reconnect to whichever they pick next; clients send unlocks to any node. Stations
//! heartbeat and report status, and — when the plan says so — nodes crash and restart or
//! stall for longer than stations wait, the store crashes and restarts from its disk,
//! stations reboot, and stations or nodes get cut off (a node from the store, too). After
//! the fault phase everything heals, and within a bounded simulated time the oracles must
//! hold: I1, I2, I3, I4, I5 and I8.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use evsource::chargepoint::{ChargePoint, ChargePointConfig};
use evsource::core::{CommandId, GlobalPosition, RecordedEvent, StreamVersion};
use evsource::dispatcher::{CheckpointPolicy, DispatcherConfig};
use evsource::domain::station::StationAnswer;
use evsource::handler::HandlerConfig;
use evsource::node::api::{ApiCommand, ErrorCode};
use evsource::node::auth::{self, PasswordCost};
use evsource::node::client::ApiClient;
use evsource::node::driver::CSMS_SILENCE_MAX;
use evsource::node::driver::{LinkCounters, SharedChargePoint, run_station_with_faults};
use evsource::node::naive::{TelemetryPlacement, is_noted_telemetry};
use evsource::node::{
    CsmsNode, Fencing, NodeConfig, OutcomeStall, StationBuild, UnlockPath, WireDirection, WireTap,
    lease,
};
use evsource::ocpp::messages::{ChargePointErrorCode, ChargePointStatus};
use evsource::oracles::history::{History, RecordingStore};
use evsource::oracles::protocol::{CallDiscipline, CallTiming};
use evsource::oracles::{
    UnlockSummary, Violation, check_acknowledged, check_commands_once, check_impostors,
    check_no_starvation, check_sessions_match_stations, check_station_decisions, check_store_shape,
    check_transactions_delivered, check_unlocks_against, connector_truth, fingerprint,
    ground_truth, read_all_events,
};
use evsource::session::SessionConfig;
use evsource::signal::Shutdown;
use evsource::storage::SimDisk;
use evsource::store::{EventStore, LogStore, RemoteConfig, RemoteStore, remote};
use madsim::net::NetSim;
use madsim::rand::Rng;
use madsim::runtime::Handle;
use tokio::sync::oneshot;

use crate::StoreHistory;
use crate::coverage::{
    CRASH_AFTER_CHECKPOINT, Coverage, IMPOSTOR_REFUSED, LEASE_TAKEN_OVER_IN_FLIGHT,
    NEW_NODE_MET_OLD_DATA, OLD_NODE_MET_NEW_DATA, note, note_store_server,
};
use crate::faults::{Design, FaultCounts, FaultPlan};
use crate::impostors::ImpostorCounters;
use crate::points::{CrashRequest, Points};

/// The shape of one run.
#[derive(Clone, Debug)]
pub struct UnlockRace {
    /// CSMS nodes sharing the store.
    pub nodes: usize,
    pub stations: usize,
    pub connectors: u32,
    pub clients: u64,
    pub requests_per_client: u64,
    /// After the faults heal, every request must have its outcome within this time.
    pub liveness_deadline: Duration,
    pub faults: FaultPlan,
    pub design: Design,
    /// A rolling upgrade: during the fault phase every CSMS node restarts, one at a time,
    /// into the next build's station aggregate (new snapshot schema, new event version)
    /// while the others still run the current one.
    pub upgrade: bool,
}

impl Default for UnlockRace {
    fn default() -> UnlockRace {
        UnlockRace {
            nodes: 3,
            stations: 5,
            connectors: 2,
            clients: 4,
            requests_per_client: 10,
            liveness_deadline: Duration::from_secs(600),
            faults: FaultPlan::none(),
            design: Design::Correct,
            upgrade: false,
        }
    }
}

impl UnlockRace {
    /// The machines of a run, as a user reads them: what talks to what.
    pub fn topology(&self) -> String {
        format!(
            "1 store server (the durable log on a simulated disk), {} CSMS node{}, {} station{} × {} connector{}, {} API client{} × {} request{}{}",
            self.nodes,
            plural(self.nodes as u64),
            self.stations,
            plural(self.stations as u64),
            self.connectors,
            plural(u64::from(self.connectors)),
            self.clients,
            plural(self.clients),
            self.requests_per_client,
            plural(self.requests_per_client),
            if self.faults.impostors {
                ", 1 impostor machine"
            } else {
                ""
            }
        )
    }
}

fn plural(count: u64) -> &'static str {
    if count == 1 { "" } else { "s" }
}

/// What one run did and how it was judged.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub verdict: Result<UnlockSummary, Violation>,
    pub faults: FaultCounts,
    /// Simulated time the run took.
    pub simulated: Duration,
    /// Hash of the stored history: the same seed must give the same (I9).
    pub fingerprint: u128,
    /// Every store call of the nodes and the operator, and what the store held at the
    /// end: judged by [`StoreHistory::judge`] once the simulation is over (I11).
    pub history: StoreHistory,
    /// The dangerous situations the run reached.
    pub coverage: Coverage,
}

/// CSMS node `index` (from 0) is at 10.0.0.`index + 1`.
fn csms_ip(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, index as u8 + 1))
}
const CSMS_PORT: u16 = 4000;
const STORE_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100));
const STORE_PORT: u16 = 5000;
/// How long a CSMS node waits for a station's answer to its CALL.
const CALL_TIMEOUT_MILLIS: u64 = 5_000;
/// The operator token of the simulated CSMS.
const OPERATOR_TOKEN: &str = "simulated-operator";

/// The simulated station `index`'s id and password (its AuthorizationKey).
fn station_credentials(index: usize) -> (String, String) {
    (format!("CP{index}"), format!("key-of-station-{index:04}"))
}

/// Registers every station the first time the node starts on this disk (later starts
/// find them registered). Each hash is salted from the seed, so runs stay reproducible.
async fn register_stations<S: EventStore>(store: &S, registrations: &[(String, String)]) {
    for (station, hash) in registrations {
        loop {
            match auth::registered_hash(store, station).await {
                Ok(Some(current)) if current == *hash => break,
                Ok(_) => {
                    if let Err(error) = auth::register(store, station, hash, now_millis()).await {
                        tracing::warn!(%station, %error, "registering the station failed; retrying");
                    } else {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%station, %error, "reading the registry failed; retrying")
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the checker and the supervisor see of a machine's current incarnation: the store
/// server's open log, a CSMS node's failure signal. Emptied whenever it goes down.
type Slot<T> = Arc<Mutex<Option<T>>>;

fn lock_slot<T>(slot: &Mutex<Option<T>>) -> std::sync::MutexGuard<'_, Option<T>> {
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

fn current<T: Clone>(slot: &Slot<T>) -> Option<T> {
    lock_slot(slot).clone()
}

/// The machines of one run, for the fault injector and the supervisor.
struct Machines {
    /// Held by whoever crashes or restarts a machine, for the whole crash: two crashes of
    /// one machine must not interleave (a restart landing inside another crash's outage
    /// would leave two incarnations racing for the machine's port).
    crashing: tokio::sync::Mutex<()>,
    store: madsim::task::NodeId,
    store_slot: Slot<LogStore>,
    nodes: Vec<madsim::task::NodeId>,
    node_slots: Vec<Slot<Shutdown>>,
    stalls: Arc<OutcomeStalls>,
}

/// A node's arrival at its outcome stall point: which node, the station, the outcome it
/// is about to record, and the sender that lets it go on.
type StallReached = (usize, String, StationAnswer, oneshot::Sender<()>);

/// The targeted F1 stall ([`stall_outcomes`]). While armed, the first node about to record
/// a Rejected or TimedOut outcome reports it and waits to be let go.
#[derive(Default)]
struct OutcomeStalls {
    armed: Mutex<Option<oneshot::Sender<StallReached>>>,
    /// While a stalled node waits: the next *other* node about to record an outcome for
    /// the same station reports here and waits too (the new lease holder, whose outcome
    /// the stale one must race).
    overtaker: Mutex<Option<(String, usize, oneshot::Sender<StallReached>)>>,
}

impl OutcomeStalls {
    /// The stall point of CSMS node `index`.
    fn hook(self: &Arc<Self>, index: usize) -> OutcomeStall {
        let stalls = self.clone();
        OutcomeStall::new(Arc::new(move |station: &str, answer: StationAnswer| {
            let overtaking = {
                let mut overtaker = lock_slot(&stalls.overtaker);
                match overtaker.as_ref() {
                    Some((stalled, stale, _)) if stalled == station && *stale != index => {
                        overtaker.take().map(|(_, _, reached)| reached)
                    }
                    _ => None,
                }
            };
            let reached = overtaking.or_else(|| match answer {
                StationAnswer::Accepted => None,
                StationAnswer::Rejected | StationAnswer::TimedOut => {
                    lock_slot(&stalls.armed).take()
                }
            });
            let station = station.to_owned();
            Box::pin(async move {
                let Some(reached) = reached else { return };
                let (release, released) = oneshot::channel();
                if reached.send((index, station, answer, release)).is_ok() {
                    // Let go, or the injector gave up on this stall: either way, go on.
                    let _ = released.await;
                }
            })
        }))
    }

    /// Arms the stall point; resolves when a node reaches it.
    fn arm(&self) -> oneshot::Receiver<StallReached> {
        let (reached, arrival) = oneshot::channel();
        *lock_slot(&self.armed) = Some(reached);
        arrival
    }

    fn disarm(&self) {
        lock_slot(&self.armed).take();
        lock_slot(&self.overtaker).take();
    }

    /// Arms the overtaker point for `station`, for any node but `stale`.
    fn arm_overtaker(&self, station: &str, stale: usize) -> oneshot::Receiver<StallReached> {
        let (reached, arrival) = oneshot::channel();
        *lock_slot(&self.overtaker) = Some((station.to_owned(), stale, reached));
        arrival
    }
}

/// The node named in `station`'s latest dispatch lease, as the store holds it now.
async fn lease_holder(store: &LogStore, station: &str) -> Option<String> {
    let stream = lease::stream(station).ok()?;
    let events = store
        .read_stream(&stream, StreamVersion(0), 100_000)
        .await
        .ok()?;
    events.iter().rev().find_map(lease::read).map(|l| l.node)
}

/// Runs the scenario inside the current madsim runtime and judges it.
pub async fn run(scenario: &UnlockRace) -> RunReport {
    let handle = Handle::current();
    let (points, crash_requests) = Points::install(scenario.faults.points.clone());
    let torn_tails = Arc::new(AtomicU64::new(0));
    let started = tokio::time::Instant::now();
    let disk = crate::faults::simulated_disk(&scenario.faults);
    let heartbeat_interval_secs = if scenario.faults.telemetry_storm.is_some() {
        3
    } else {
        10
    };
    let checkpoint = match scenario.design {
        Design::NaiveEarlyCheckpoint => CheckpointPolicy::OnRead,
        _ => CheckpointPolicy::AfterOutcome,
    };
    let unlock_path = match scenario.design {
        Design::NaiveSideEffect => UnlockPath::SideEffectFirst,
        _ => UnlockPath::Outbox,
    };
    let telemetry = match scenario.design {
        Design::NaiveTelemetry => TelemetryPlacement::BusinessAggregate,
        _ => TelemetryPlacement::OwnStream,
    };
    let fencing = match scenario.design {
        Design::NaiveNoFencing => Fencing::Unfenced,
        _ => Fencing::Fenced,
    };

    let registrations: Vec<(String, String)> = (0..scenario.stations)
        .map(|index| {
            let (id, password) = station_credentials(index);
            let salt: [u8; 16] = madsim::rand::thread_rng().r#gen();
            let hash = auth::hash_password(&password, salt, PasswordCost::Minimal);
            (id, hash)
        })
        .collect();
    // Every store call of the nodes and of the operator's registration, as they saw it
    // (I11), across every restart.
    let history = History::new();
    points.watch_appends(history.clone());
    // The shared database: the durable log on its disk, served over the network.
    let store_slot: Slot<LogStore> = Arc::new(Mutex::new(None));
    let store = {
        let (disk, slot) = (disk.clone(), store_slot.clone());
        let history = history.clone();
        let torn_tails = torn_tails.clone();
        let registrations = Arc::new(registrations);
        handle
            .create_node()
            .name("store")
            .ip(STORE_IP)
            .init(move || {
                let (disk, slot) = (disk.clone(), slot.clone());
                let registrations = registrations.clone();
                let history = history.clone();
                let torn_tails = torn_tails.clone();
                async move {
                    // Every (re)start recovers the log from what the disk really holds.
                    let store = crate::faults::open_log_retrying(&disk, &torn_tails).await;
                    // The operator registered every station once, before the run.
                    let operator = RecordingStore::new(store.clone(), history, "operator");
                    register_stations(&operator, &registrations).await;
                    let listener = crate::faults::bind_retrying(STORE_PORT).await;
                    *lock_slot(&slot) = Some(store.clone());
                    let served = remote::serve(store, listener, Shutdown::new()).await;
                    tracing::error!(?served, "the store server stopped");
                }
            })
            .build()
    };
    let store_addr = SocketAddr::new(STORE_IP, STORE_PORT);

    let node_slots: Vec<Slot<Shutdown>> = (0..scenario.nodes)
        .map(|_| Arc::new(Mutex::new(None)))
        .collect();
    let mut csms_nodes = Vec::new();
    let stalls = Arc::new(OutcomeStalls::default());
    let watch = Arc::new(CallWatch::default());
    // Which build each node runs when it (re)starts: set by the upgrader.
    let builds: Arc<Vec<AtomicBool>> = Arc::new(
        (0..scenario.nodes)
            .map(|_| AtomicBool::new(false))
            .collect(),
    );
    let snapshot_every_events = if scenario.upgrade {
        // Snapshots of both schemas on every busy station stream.
        3
    } else {
        HandlerConfig::default().snapshot_every_events
    };
    for (index, slot) in node_slots.iter().enumerate() {
        let slot = slot.clone();
        let stalls = stalls.clone();
        let history = history.clone();
        let watch = watch.clone();
        let builds = builds.clone();
        let node = handle
            .create_node()
            .name(format!("csms-{}", index + 1))
            .ip(csms_ip(index))
            .init(move || {
                let (slot, stalls) = (slot.clone(), stalls.clone());
                let history = history.clone();
                let watch = watch.clone();
                let build = if builds[index].load(Ordering::Relaxed) {
                    StationBuild::Next
                } else {
                    StationBuild::Current
                };
                async move {
                    let remote = RemoteStore::new(
                        store_addr,
                        RemoteConfig {
                            connect_timeout: Duration::from_secs(2),
                            request_timeout: Duration::from_secs(5),
                            wait_slice: Duration::from_secs(10),
                            idle_connections_max: 8,
                        },
                    );
                    let store =
                        RecordingStore::new(remote, history, &format!("csms-{}", index + 1));
                    let config = NodeConfig {
                        node_id: format!("csms-{}", index + 1),
                        fencing,
                        listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), CSMS_PORT),
                        operator_token: OPERATOR_TOKEN.to_owned(),
                        password_cost: PasswordCost::Minimal,
                        session: SessionConfig {
                            heartbeat_interval_secs,
                            ..SessionConfig::default()
                        },
                        dispatcher: DispatcherConfig {
                            call_timeout_millis: CALL_TIMEOUT_MILLIS,
                            checkpoint,
                            ..DispatcherConfig::default()
                        },
                        handler: HandlerConfig {
                            snapshot_every_events,
                            ..HandlerConfig::default()
                        },
                        seed: madsim::rand::thread_rng().r#gen(),
                        projection_save_every_events: 50,
                        unlock_path,
                        telemetry,
                        stall: stalls.hook(index),
                        wire_tap: watch.tap(index),
                        build,
                        connections_max: evsource::node::CONNECTIONS_MAX,
                    };
                    // Starting reads the store; while it is out of reach, try again.
                    let node = loop {
                        match CsmsNode::start(store.clone(), config.clone()).await {
                            Ok(node) => break node,
                            Err(error) => {
                                tracing::warn!(%error, "the node did not start; retrying");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    };
                    *lock_slot(&slot) = Some(node.failed());
                    std::future::pending::<()>().await;
                }
            })
            .build();
        csms_nodes.push(node.id());
    }
    let csms_addrs: Vec<SocketAddr> = (0..scenario.nodes)
        .map(|index| SocketAddr::new(csms_ip(index), CSMS_PORT))
        .collect();
    let machines = Machines {
        crashing: tokio::sync::Mutex::new(()),
        store: store.id(),
        store_slot: store_slot.clone(),
        nodes: csms_nodes,
        node_slots,
        stalls,
    };

    let mut stations: Vec<SharedChargePoint> = Vec::new();
    let mut station_nodes = Vec::new();
    let link_counters = Arc::new(LinkCounters::default());
    for index in 0..scenario.stations {
        let (id, password) = station_credentials(index);
        let mut config = ChargePointConfig::new(id, scenario.connectors);
        {
            let mut rng = madsim::rand::thread_rng();
            config.plug_in_delay_millis = rng.gen_range(500..60_000);
            config.charging_millis = Some(rng.gen_range(5_000..120_000));
        }
        let link = scenario.faults.draw_link();
        if scenario.faults.messages.is_some() || scenario.faults.clock_skew_max_millis.is_some() {
            tracing::info!(station = %config.id, link = ?link, "link and clock faults");
        }
        let station = Arc::new(Mutex::new(ChargePoint::new(config, now_millis())));
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 1, index as u8 + 1));
        let driven = station.clone();
        let counters = link_counters.clone();
        let csms = csms_addrs.clone();
        let node = handle
            .create_node()
            .name(format!("station-{index}"))
            .ip(ip)
            .init(move || {
                run_station_with_faults(
                    driven.clone(),
                    csms.clone(),
                    password.clone(),
                    Duration::from_secs(1),
                    link.clone(),
                    counters.clone(),
                    Shutdown::new(),
                )
            })
            .build();
        station_nodes.push(node.id());
        stations.push(station);
    }

    // F11: impostors on a machine of their own, for the fault phase.
    let impostors = Arc::new(ImpostorCounters::default());
    if scenario.faults.impostors {
        let credentials: Vec<(String, String)> =
            (0..scenario.stations).map(station_credentials).collect();
        let node = handle
            .create_node()
            .name("impostor")
            .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 3, 1)))
            .build();
        node.spawn(crate::impostors::run(
            csms_addrs.clone(),
            credentials,
            scenario.faults.fault_phase,
            impostors.clone(),
        ));
    }

    let mut clients = Vec::new();
    let status_bursts = Arc::new(Bursts::default());
    for client in 0..scenario.clients {
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 2, client as u8 + 1));
        let scenario = scenario.clone();
        let node = handle
            .create_node()
            .name(format!("client-{client}"))
            .ip(ip)
            .build();
        clients.push(node.spawn(run_client(
            client,
            scenario,
            csms_addrs.clone(),
            stations.clone(),
            status_bursts.clone(),
        )));
    }

    let finished = Shutdown::new();
    let machines = Arc::new(machines);
    let supervisor = tokio::spawn(supervise(
        handle.clone(),
        machines.clone(),
        finished.clone(),
    ));
    let crashes = tokio::spawn(serve_crash_requests(
        crash_requests,
        handle.clone(),
        machines.clone(),
        disk.clone(),
        scenario.faults.outage_millis,
    ));
    let upgrader = tokio::spawn(upgrade_nodes(
        scenario.upgrade.then_some(scenario.faults.fault_phase),
        handle.clone(),
        machines.clone(),
        builds.clone(),
    ));
    let (mut injected, outcome_stalls) = tokio::join!(
        inject_faults(
            &scenario.faults,
            &handle,
            &machines,
            &disk,
            &stations,
            &station_nodes,
        ),
        stall_outcomes(&scenario.faults, &handle, &machines),
    );
    injected.outcome_stalls = outcome_stalls;
    // The fault phase is over: the fault points stop acting, and the crashes they asked
    // for are all carried out (every machine is up again) before anything is judged.
    points.disarm();
    let crashed_at_points = crashes.await.expect("the crash server ends");
    let upgraded = upgrader.await.expect("the upgrader ends");
    injected.store_crashes += crashed_at_points.store;
    injected.csms_crashes += crashed_at_points.csms;
    let mut acknowledged = Vec::new();
    let mut starved = Vec::new();
    let mut applied = 0u64;
    for task in clients {
        for (command, answer) in task.await.expect("client finished") {
            match answer {
                ClientAnswer::Acknowledged(position) => {
                    acknowledged.push((command, position));
                    applied += 1;
                }
                ClientAnswer::Starved { station, error } => starved.push((station, error)),
                ClientAnswer::Refused => {}
            }
        }
    }

    // Liveness: everything healed; every accepted request must get its outcome in time.
    let healed = tokio::time::Instant::now();
    // Only a read of the whole store counts: a store that is down (or a read that fails)
    // is waited for, never taken for an empty store — an empty store passes every oracle.
    let mut last_read: Option<Vec<RecordedEvent>> = None;
    // The stations' connectors as they were just before the last read: a stop the
    // station saw answered is then in what was read (it is answered only once recorded).
    let mut connectors = connector_truth(&stations);
    loop {
        let before_read = connector_truth(&stations);
        if let Some(store) = current(&store_slot)
            && let Ok(events) = read_all_events(&store).await
        {
            connectors = before_read;
            let requested = count(&events, &["UnlockRequested"]);
            let answered = count(
                &events,
                &["UnlockAccepted", "UnlockRejected", "UnlockTimedOut"],
            );
            // A stopped session is recorded a moment after its StopTransaction is
            // answered: polled, like the outcomes, until it is or the deadline passes.
            let done = requested >= applied
                && answered >= requested
                && check_transactions_delivered(&connectors).is_ok()
                && check_sessions_match_stations(&events, &connectors).is_ok();
            last_read = Some(events);
            if done {
                break;
            }
        }
        if healed.elapsed() > scenario.liveness_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let store_came_back = last_read.is_some();
    let events = last_read.unwrap_or_default();
    finished.trigger();
    injected.node_failures = supervisor.await.expect("the supervisor ends");
    injected.status_bursts = status_bursts.started.load(Ordering::Relaxed);
    injected.frames_lost = link_counters.lost.load(Ordering::Relaxed);
    injected.frames_duplicated = link_counters.duplicated.load(Ordering::Relaxed);
    injected.frames_delayed = link_counters.delayed.load(Ordering::Relaxed);
    injected.impostors_refused = impostors.refused.load(Ordering::Relaxed);
    let truth = ground_truth(&stations);
    let verdict = store_back(store_came_back, scenario.liveness_deadline)
        .and_then(|()| check_wire(&link_counters, &watch))
        .and_then(|()| check_no_starvation(&starved))
        .and_then(|()| judge(&events, &acknowledged, &truth, telemetry))
        .and_then(|summary| check_transactions_delivered(&connectors).map(|()| summary))
        .and_then(|summary| check_sessions_match_stations(&events, &connectors).map(|()| summary));
    // Quiescence for the history: no writer left. Every CSMS node goes down (calls in
    // flight stay unanswered: outcome unknown), then the store's final contents are read.
    for node in &machines.nodes {
        handle.kill(*node);
    }
    let stored = final_contents(&store_slot).await;
    let verdict = verdict.and_then(|summary| {
        store_back(stored.is_some(), Duration::from_secs(600)).map(|()| summary)
    });
    let stored = stored.unwrap_or_default();
    let verdict = verdict.and_then(|summary| {
        check_impostors(impostors.admitted.load(Ordering::Relaxed), &stored).map(|()| summary)
    });
    let mut coverage = Coverage::new();
    note_store_server(
        &mut coverage,
        &points.counts(),
        crashed_at_points.store,
        torn_tails.load(Ordering::Relaxed),
        &disk,
    );
    note(
        &mut coverage,
        CRASH_AFTER_CHECKPOINT,
        crashed_at_points.csms,
    );
    if upgraded > 0 {
        let (old_met_new, new_met_old) = builds_interleaved(&stored);
        note(&mut coverage, OLD_NODE_MET_NEW_DATA, old_met_new);
        note(&mut coverage, NEW_NODE_MET_OLD_DATA, new_met_old);
    }
    note(&mut coverage, IMPOSTOR_REFUSED, injected.impostors_refused);
    note(
        &mut coverage,
        LEASE_TAKEN_OVER_IN_FLIGHT,
        leases_taken_over_in_flight(&stored),
    );
    RunReport {
        verdict,
        faults: injected,
        simulated: started.elapsed(),
        fingerprint: fingerprint(&events),
        history: StoreHistory::new(&history, stored, true),
        coverage,
    }
}

/// The rolling upgrade: every CSMS node, in a seed-drawn order and at seed-drawn moments
/// within the fault phase, restarts into the next build (a planned restart: memory lost,
/// nothing else). Returns how many nodes were upgraded.
async fn upgrade_nodes(
    phase: Option<Duration>,
    handle: Handle,
    machines: Arc<Machines>,
    builds: Arc<Vec<AtomicBool>>,
) -> u64 {
    let Some(phase) = phase else { return 0 };
    let mut order: Vec<usize> = (0..machines.nodes.len()).collect();
    let step = phase.as_millis() as u64 / (order.len() as u64 + 1);
    let mut upgraded = 0;
    {
        let mut rng = madsim::rand::thread_rng();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.gen_range(0..=i));
        }
    }
    for index in order {
        let wait = madsim::rand::thread_rng().gen_range(step / 2..=step.max(1));
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let _crashing = machines.crashing.lock().await;
        tracing::info!(node = %format!("csms-{}", index + 1), "upgrade: the node restarts into the next build");
        builds[index].store(true, Ordering::Relaxed);
        *lock_slot(&machines.node_slots[index]) = None;
        handle.kill(machines.nodes[index]);
        handle.restart(machines.nodes[index]);
        upgraded += 1;
    }
    upgraded
}

/// On the station streams, how often an event of the current build follows one of the
/// next build (an old node met the new build's data) and the other way round. The next
/// build's events carry `"version":2`.
fn builds_interleaved(events: &[RecordedEvent]) -> (u64, u64) {
    let mut last: std::collections::BTreeMap<&str, bool> = Default::default();
    let (mut old_met_new, mut new_met_old) = (0, 0);
    for event in events {
        let stream = event.stream.as_str();
        if !stream.starts_with(evsource::domain::station::STREAM_PREFIX) {
            continue;
        }
        let next = event.payload.ends_with(br#","version":2}"#);
        match last.insert(stream, next) {
            Some(true) if !next => old_met_new += 1,
            Some(false) if next => new_met_old += 1,
            _ => {}
        }
    }
    (old_met_new, new_met_old)
}

/// Crashes asked for by fault points, carried out: a store server's crash loses its
/// unsynced writes (the last one torn at a seed-chosen byte), a CSMS node's its memory;
/// each machine restarts after an outage. Ends once the points are disarmed.
async fn serve_crash_requests(
    mut requests: tokio::sync::mpsc::UnboundedReceiver<CrashRequest>,
    handle: Handle,
    machines: Arc<Machines>,
    disk: SimDisk,
    outage_millis: (u64, u64),
) -> CrashedAtPoints {
    let mut crashed = CrashedAtPoints::default();
    while let Some((node, point)) = requests.recv().await {
        let _crashing = machines.crashing.lock().await;
        let (outage, kept) = {
            let mut rng = madsim::rand::thread_rng();
            (
                rng.gen_range(outage_millis.0..=outage_millis.1.max(outage_millis.0)),
                rng.gen_range(0..512u64), // most of the group in flight lost, the last write torn
            )
        };
        if node == machines.store {
            tracing::info!(%point, kept_unsynced_bytes = kept, "fault: the store crashed at a fault point");
            *lock_slot(&machines.store_slot) = None;
            handle.kill(node);
            disk.crash(kept);
            tokio::time::sleep(Duration::from_millis(outage)).await;
            handle.restart(node);
            crashed.store += 1;
        } else if let Some(index) = machines.nodes.iter().position(|n| *n == node) {
            tracing::info!(%point, node = index + 1, "fault: a CSMS node crashed at a fault point");
            *lock_slot(&machines.node_slots[index]) = None;
            handle.kill(node);
            tokio::time::sleep(Duration::from_millis(outage)).await;
            handle.restart(node);
            crashed.csms += 1;
        } else {
            // Not a machine this scenario crashes: let it go on after a pause.
            handle.kill(node);
            handle.restart(node);
        }
    }
    crashed
}

/// Crashes carried out at fault points.
#[derive(Default)]
struct CrashedAtPoints {
    store: u64,
    csms: u64,
}

/// How often a station's dispatch lease went to another node while one of its unlock
/// requests was stored and still without an outcome (read in position order).
fn leases_taken_over_in_flight(events: &[RecordedEvent]) -> u64 {
    let mut pending: std::collections::BTreeMap<String, i64> = Default::default();
    let mut holders: std::collections::BTreeMap<String, String> = Default::default();
    let mut taken_over = 0;
    for event in events {
        if let Some(lease) = lease::read(event) {
            let previous = holders.insert(lease.station.clone(), lease.node.clone());
            if previous.is_some_and(|p| p != lease.node)
                && pending.get(&lease.station).is_some_and(|&n| n > 0)
            {
                taken_over += 1;
            }
            continue;
        }
        let Some(station) = evsource::domain::station::station_of(&event.stream) else {
            continue;
        };
        let delta = match event.event_type.as_str() {
            "UnlockRequested" => 1,
            "UnlockAccepted" | "UnlockRejected" | "UnlockTimedOut" => -1,
            _ => 0,
        };
        *pending.entry(station.to_owned()).or_default() += delta;
    }
    taken_over
}

/// The store must answer a whole read within the liveness deadline after healing; the
/// oracles judge nothing else (I2/I4 cannot hold of a store nobody can read).
fn store_back(came_back: bool, deadline: Duration) -> Result<(), Violation> {
    if came_back {
        return Ok(());
    }
    Err(Violation {
        invariant: "I4",
        detail: format!(
            "the store could not be read within {} s after every fault healed",
            deadline.as_secs()
        ),
    })
}

/// The node side of I12: every station socket of every node incarnation, its CALLs
/// judged on the node's own clock ([`CallDiscipline`]).
#[derive(Default)]
struct CallWatch {
    incarnations: AtomicU64,
    /// Per (node, incarnation, connection).
    connections: Mutex<std::collections::BTreeMap<(usize, u64, u64), CallDiscipline>>,
    violations: Mutex<(Vec<String>, u64)>,
}

impl CallWatch {
    /// The tap of a new incarnation of CSMS node `index`.
    fn tap(self: &Arc<Self>, index: usize) -> WireTap {
        let watch = self.clone();
        let incarnation = self.incarnations.fetch_add(1, Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        WireTap::new(Arc::new(
            move |station: &str, connection, direction, text: &str| {
                let now = started.elapsed().as_millis() as u64;
                let mut connections = lock_slot_of(&watch.connections);
                let discipline = connections
                    .entry((index, incarnation, connection))
                    .or_insert_with(|| {
                        CallDiscipline::new(CallTiming {
                            call_timeout_millis: CALL_TIMEOUT_MILLIS,
                            slack_millis: 50,
                        })
                    });
                let broken = match direction {
                    WireDirection::ToStation => discipline.written(text, now),
                    WireDirection::FromStation => {
                        discipline.read(text);
                        None
                    }
                };
                if let Some(broken) = broken {
                    let mut violations = lock_slot_of(&watch.violations);
                    violations.1 += 1;
                    if violations.0.len() < 16 {
                        violations.0.push(format!(
                            "csms-{} to {station} (connection {connection}): {broken}",
                            index + 1
                        ));
                    }
                }
            },
        ))
    }
}

fn lock_slot_of<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// I12: what the stations' wire oracles saw of the CSMS nodes, and what the nodes' own
/// sockets saw of their CALLs.
fn check_wire(counters: &LinkCounters, watch: &CallWatch) -> Result<(), Violation> {
    let (mut violations, mut count) = counters.wire_violations();
    let (written, written_count) = lock_slot_of(&watch.violations).clone();
    violations.extend(written);
    count += written_count;
    match violations.first() {
        None => Ok(()),
        Some(first) => Err(Violation {
            invariant: "I12",
            detail: format!(
                "{count} OCPP-J violation(s) by the CSMS over {} frames checked; the first: {first}",
                counters.frames_checked.load(Ordering::Relaxed)
            ),
        }),
    }
}

/// Everything the store server holds, once it answers (it may be recovering); `None` if
/// it never does.
async fn final_contents(store_slot: &Slot<LogStore>) -> Option<Vec<RecordedEvent>> {
    for _ in 0..600 {
        if let Some(store) = current(store_slot)
            && let Ok(events) = read_all_events(&store).await
        {
            return Some(events);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    None
}

fn judge(
    events: &[RecordedEvent],
    acknowledged: &[(CommandId, GlobalPosition)],
    truth: &[(String, Vec<evsource::chargepoint::Actuation>)],
    telemetry: TelemetryPlacement,
) -> Result<UnlockSummary, Violation> {
    check_store_shape(events)?;
    check_acknowledged(events, acknowledged)?;
    check_commands_once(events)?;
    check_station_decisions(events)?;
    if telemetry == TelemetryPlacement::BusinessAggregate {
        // N5's station streams also hold noted telemetry, which is not business.
        let business: Vec<RecordedEvent> = events
            .iter()
            .filter(|e| {
                !(evsource::domain::station::station_of(&e.stream).is_some()
                    && is_noted_telemetry(&e.event_type, &e.payload))
            })
            .cloned()
            .collect();
        return check_unlocks_against(&business, truth);
    }
    check_unlocks_against(events, truth)
}

fn count(events: &[RecordedEvent], types: &[&str]) -> u64 {
    events
        .iter()
        .filter(|e| {
            evsource::domain::station::station_of(&e.stream).is_some()
                && types.contains(&e.event_type.as_str())
        })
        .count() as u64
}

/// F9 status bursts: one at a time, so a storm stays a burst rather than saturating the
/// node's telemetry path for the whole run (which would also slow every seed down).
#[derive(Debug, Default)]
struct Bursts {
    started: AtomicU64,
    active: std::sync::atomic::AtomicBool,
}

/// What became of one client command.
enum ClientAnswer {
    /// Applied (now or earlier) at this position.
    Acknowledged(GlobalPosition),
    /// Refused because every attempt met a concurrent writer: the command starved (I4).
    Starved { station: String, error: String },
    /// Refused by the domain, or never answered.
    Refused,
}

/// One client: requests unlocks on seed-chosen connectors. A failed send is retried with
/// the same command id (after reconnecting) until answered, so a command acknowledged
/// twice must still take effect once (I8). Returns each command with what became of it.
async fn run_client(
    client: u64,
    scenario: UnlockRace,
    nodes: Vec<SocketAddr>,
    stations: Vec<SharedChargePoint>,
    status_bursts: Arc<Bursts>,
) -> Vec<(CommandId, ClientAnswer)> {
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut connection: Option<ApiClient> = None;
    let mut results = Vec::new();
    for n in 0..scenario.requests_per_client {
        let (station, connector, pause) = {
            let mut rng = madsim::rand::thread_rng();
            (
                rng.gen_range(0..scenario.stations),
                rng.gen_range(1..=scenario.connectors),
                rng.gen_range(0..20_000),
            )
        };
        let command_id = CommandId(u128::from((client << 32) | n));
        if let Some(flap_millis) = scenario.faults.telemetry_storm {
            let burst = {
                let mut rng = madsim::rand::thread_rng();
                // The command goes out while the burst rages: up to halfway through it.
                rng.gen_bool(0.1).then(|| {
                    let burst_millis = rng.gen_range(500..3_000);
                    (burst_millis, rng.gen_range(0..burst_millis / 2))
                })
            };
            if let Some((burst_millis, lead_millis)) = burst
                && !status_bursts.active.swap(true, Ordering::Relaxed)
            {
                status_bursts.started.fetch_add(1, Ordering::Relaxed);
                let bursts = status_bursts.clone();
                let station = stations[station].clone();
                tokio::spawn(async move {
                    status_burst(station, burst_millis, flap_millis).await;
                    bursts.active.store(false, Ordering::Relaxed);
                });
                tokio::time::sleep(Duration::from_millis(lead_millis)).await;
            }
        }
        let mut answer = ClientAnswer::Refused;
        for _attempt in 0..600 {
            if connection.is_none() {
                // Behind a load balancer: any node serves the API.
                let node = nodes[madsim::rand::thread_rng().gen_range(0..nodes.len())];
                connection = ApiClient::connect(node, OPERATOR_TOKEN).await.ok();
            }
            let Some(open) = connection.as_mut() else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            let command = ApiCommand::RequestUnlock {
                connector,
                session: format!("c{client}n{n}"),
            };
            match open
                .send(command_id, &format!("CP{station}"), command)
                .await
            {
                Ok(response) => {
                    tracing::info!(
                        station = %format!("CP{station}"),
                        session = %format!("c{client}n{n}"),
                        connector,
                        outcome = ?response.outcome,
                        error = ?response.error,
                        "RequestUnlock answered"
                    );
                    if let (Some("Applied" | "AlreadyApplied"), Some(position)) =
                        (response.outcome.as_deref(), response.position)
                    {
                        answer = ClientAnswer::Acknowledged(GlobalPosition(position));
                    } else if response.code == Some(ErrorCode::Contention) {
                        answer = ClientAnswer::Starved {
                            station: format!("CP{station}"),
                            error: response.error.unwrap_or_default(),
                        };
                    }
                    break;
                }
                Err(_) => {
                    connection = None;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        results.push((command_id, answer));
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    results
}

/// Injects the plan's faults one at a time until the fault phase ends; leaves everything
/// healed (every machine up and running, no partition).
///
/// F1 strikes a machine: the store server crashes (its disk loses unsynced writes or tears
/// them) and restarts, or a CSMS node crashes and restarts, or a CSMS node stalls — a
/// process pause, every task frozen — for longer than stations wait for it, so that its
/// stations reconnect to other nodes and take their dispatch leases away from it while it
/// still believes it holds them (a targeted stall runs beside this: [`stall_outcomes`]).
/// F3 cuts a station off, or a CSMS node from the store.
async fn inject_faults(
    plan: &FaultPlan,
    handle: &Handle,
    machines: &Machines,
    disk: &SimDisk,
    stations: &[SharedChargePoint],
    station_nodes: &[madsim::task::NodeId],
) -> FaultCounts {
    let mut counts = FaultCounts::default();
    if !plan.any() {
        return counts;
    }
    let started = tokio::time::Instant::now();
    let enabled: Vec<u8> = [
        (plan.csms_crash, 1u8),
        (plan.station_reboot, 2),
        (plan.partition, 3),
        (plan.disk_faults, 4),
    ]
    .into_iter()
    .filter_map(|(on, kind)| on.then_some(kind))
    .collect();
    if enabled.is_empty() {
        // Only the fault points act: they do so for the fault phase.
        tokio::time::sleep(plan.fault_phase).await;
        return counts;
    }
    while started.elapsed() < plan.fault_phase {
        let (pause, kind, station, node, outage, kept_unsynced, flip, variant, stall) = {
            let mut rng = madsim::rand::thread_rng();
            (
                rng.gen_range(plan.interval_millis.0..=plan.interval_millis.1),
                enabled[rng.gen_range(0..enabled.len())],
                rng.gen_range(0..stations.len()),
                rng.gen_range(0..machines.nodes.len()),
                rng.gen_range(plan.outage_millis.0..=plan.outage_millis.1),
                rng.gen_range(0..4096u64),
                rng.gen_bool(0.5).then(|| rng.r#gen::<u64>()),
                rng.gen_range(0..4u8),
                // Longer than a station waits for a silent CSMS before it reconnects.
                rng.gen_range(
                    CSMS_SILENCE_MAX.as_millis() as u64..3 * CSMS_SILENCE_MAX.as_millis() as u64,
                ),
            )
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let csms = machines.nodes[node];
        let name = format!("csms-{}", node + 1);
        match (kind, variant) {
            (1, 0) => {
                let _crashing = machines.crashing.lock().await;
                tracing::info!(
                    outage_ms = outage,
                    kept_unsynced_bytes = kept_unsynced,
                    "fault: the store crashed"
                );
                *lock_slot(&machines.store_slot) = None;
                handle.kill(machines.store);
                disk.crash(kept_unsynced);
                tokio::time::sleep(Duration::from_millis(outage)).await;
                tracing::info!("fault: the store restarted");
                handle.restart(machines.store);
                counts.store_crashes += 1;
            }
            (1, 1) => {
                tracing::info!(node = %name, stall_ms = stall, "fault: CSMS node stalled");
                handle.pause(csms);
                tokio::time::sleep(Duration::from_millis(stall)).await;
                tracing::info!(node = %name, "fault: CSMS node resumed");
                handle.resume(csms);
                counts.node_pauses += 1;
            }
            (1, _) => {
                let _crashing = machines.crashing.lock().await;
                tracing::info!(node = %name, outage_ms = outage, "fault: CSMS node crashed");
                *lock_slot(&machines.node_slots[node]) = None;
                handle.kill(csms);
                tokio::time::sleep(Duration::from_millis(outage)).await;
                tracing::info!(node = %name, "fault: CSMS node restarted");
                handle.restart(csms);
                counts.csms_crashes += 1;
            }
            (2, 2 | 3) => {
                // A power fault on an idle connector, cleared after the outage: the
                // station refuses remote starts there meanwhile (so outcomes are
                // Rejected, the decisions a stale lease holder can get wrong).
                let shared = stations[station].clone();
                let faulted = {
                    let mut cp = shared.lock().unwrap_or_else(|p| p.into_inner());
                    let connectors = cp.connector_ids();
                    let connector = connectors[(kept_unsynced as usize) % connectors.len()];
                    let idle = cp
                        .connector(connector)
                        .is_some_and(|c| c.status == ChargePointStatus::Available);
                    if idle {
                        cp.handle_fault(
                            connector,
                            ChargePointErrorCode::UnderVoltage,
                            now_millis(),
                        );
                    }
                    idle.then_some(connector)
                };
                if let Some(connector) = faulted {
                    tracing::info!(station = %format!("CP{station}"), connector, outage_ms = outage, "fault: connector faulted (under-voltage)");
                    counts.connector_faults += 1;
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(outage)).await;
                        let mut cp = shared.lock().unwrap_or_else(|p| p.into_inner());
                        if cp
                            .connector(connector)
                            .is_some_and(|c| c.status == ChargePointStatus::Faulted)
                        {
                            cp.handle_fault_cleared(connector, now_millis());
                        }
                    });
                }
            }
            (2, _) => {
                tracing::info!(station = %format!("CP{station}"), "fault: station rebooted");
                stations[station]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .handle_reboot(now_millis());
                handle.restart(station_nodes[station]);
                counts.station_reboots += 1;
            }
            (4, _) => {
                let mut faults = disk.faults();
                match flip.and_then(|draw| flip_target(disk, draw)) {
                    // Armed until a read strikes it (or the fault phase ends).
                    Some((file, offset)) => {
                        tracing::info!(%file, offset, "fault: the next read of a byte flips a bit");
                        faults.flip_next_read = Some((file, offset));
                        disk.set_faults(faults);
                        counts.read_flips += 1;
                    }
                    None => {
                        tracing::info!(outage_ms = outage / 10, "fault: syncs fail");
                        faults.fail_syncs = true;
                        disk.set_faults(faults);
                        counts.failed_syncs += 1;
                        tokio::time::sleep(Duration::from_millis(outage / 10)).await;
                        let mut faults = disk.faults();
                        faults.fail_syncs = false;
                        disk.set_faults(faults);
                        tracing::info!("fault: syncs work again");
                    }
                }
            }
            (_, 0) => {
                let net = NetSim::current();
                tracing::info!(node = %name, outage_ms = outage, "fault: CSMS node cut off from the store");
                net.clog_link(csms, machines.store);
                net.clog_link(machines.store, csms);
                tokio::time::sleep(Duration::from_millis(outage)).await;
                tracing::info!(node = %name, "fault: the node reaches the store again");
                net.unclog_link(csms, machines.store);
                net.unclog_link(machines.store, csms);
                counts.store_partitions += 1;
            }
            _ => {
                let net = NetSim::current();
                tracing::info!(station = %format!("CP{station}"), outage_ms = outage, "fault: station partitioned");
                net.clog_node(station_nodes[station]);
                tokio::time::sleep(Duration::from_millis(outage)).await;
                tracing::info!(station = %format!("CP{station}"), "fault: partition healed");
                net.unclog_node(station_nodes[station]);
                counts.partitions += 1;
            }
        }
    }
    let mut faults = disk.faults();
    faults.flip_next_read = None;
    disk.set_faults(faults);
    counts
}

/// F1, targeted (`outcome_stalls`): throughout the fault phase, the first node about to
/// record a Rejected or TimedOut outcome freezes — a process pause, every task stopped —
/// with its decision and its view of the lease in hand. Its station, hearing nothing,
/// reconnects to another node, which takes the lease and dispatches the request again.
/// Once the store shows the new holder (or after three station silences, if none comes),
/// and a seed-chosen moment later, the node goes on and appends what it decided: the
/// interleaving the fencing token exists for. Then the point is armed again.
async fn stall_outcomes(plan: &FaultPlan, handle: &Handle, machines: &Machines) -> u64 {
    let mut stalls = 0;
    if !plan.outcome_stalls {
        return stalls;
    }
    let started = tokio::time::Instant::now();
    while let Some(left) = plan.fault_phase.checked_sub(started.elapsed()) {
        let arrival = machines.stalls.arm();
        let Ok(Ok((node, station, answer, go_on))) = tokio::time::timeout(left, arrival).await
        else {
            machines.stalls.disarm();
            break;
        };
        let (csms, name) = (machines.nodes[node], format!("csms-{}", node + 1));
        handle.pause(csms);
        tracing::info!(node = %name, %station, ?answer, "fault: CSMS node stalled as it was about to record an outcome");
        let held = tokio::time::Instant::now();
        let mut overtaker = None;
        while held.elapsed() < 3 * CSMS_SILENCE_MAX {
            let holder = match current(&machines.store_slot) {
                Some(store) => lease_holder(&store, &station).await,
                None => None,
            };
            if holder.is_some_and(|holder| holder != name) {
                // The lease moved. The stale node goes on at the worst moment: once the
                // new holder is about to record its own outcome for the station (held
                // there until the stale record has had its chance), or, if it never
                // gets there, 0–200 ms later.
                let arrival = machines.stalls.arm_overtaker(&station, node);
                let patience = Duration::from_secs(20);
                if let Ok(Ok(reached)) = tokio::time::timeout(patience, arrival).await {
                    tracing::info!(node = %name, %station, overtaker = reached.0 + 1, "fault: the new lease holder is about to record; the stale node goes first");
                    overtaker = Some(reached.3);
                } else {
                    lock_slot(&machines.stalls.overtaker).take();
                    let after = madsim::rand::thread_rng().gen_range(0..200);
                    tracing::info!(node = %name, %station, resume_after_ms = after, "fault: another node holds the stalled node's lease");
                    tokio::time::sleep(Duration::from_millis(after)).await;
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!(node = %name, "fault: CSMS node resumed");
        handle.resume(csms);
        let _ = go_on.send(());
        if let Some(overtaker) = overtaker {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = overtaker.send(());
        }
        stalls += 1;
    }
    stalls
}

/// F9: for `millis`, the station's connectors flap every few milliseconds — a status
/// burst: idle ones between Available and Unavailable, charging ones between Charging and
/// SuspendedEV (the EV pausing), on average `flap_millis` apart — then all are put back
/// in service and charging.
async fn status_burst(station: SharedChargePoint, millis: u64, flap_millis: u64) {
    fn lock(station: &SharedChargePoint) -> std::sync::MutexGuard<'_, ChargePoint> {
        station.lock().unwrap_or_else(|p| p.into_inner())
    }
    let (id, connectors) = {
        let station = lock(&station);
        (station.id().to_owned(), station.connector_ids())
    };
    tracing::info!(station = %id, burst_ms = millis, "fault: status burst");
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_millis(millis) {
        let (connector, gap) = {
            let mut rng = madsim::rand::thread_rng();
            (
                connectors[rng.gen_range(0..connectors.len())],
                rng.gen_range(flap_millis / 2..=flap_millis * 3 / 2),
            )
        };
        {
            let mut station = lock(&station);
            match station.connector(connector).map(|c| c.status) {
                Some(ChargePointStatus::Unavailable) => {
                    station.handle_availability(connector, true, now_millis())
                }
                Some(ChargePointStatus::Charging) => {
                    station.handle_ev_pause(connector, true, now_millis())
                }
                Some(ChargePointStatus::SuspendedEV) => {
                    station.handle_ev_pause(connector, false, now_millis())
                }
                _ => station.handle_availability(connector, false, now_millis()),
            }
        }
        tokio::time::sleep(Duration::from_millis(gap)).await;
    }
    let mut station = lock(&station);
    for connector in connectors {
        station.handle_availability(connector, true, now_millis());
        station.handle_ev_pause(connector, false, now_millis());
    }
    tracing::info!(station = %id, "fault: status burst over");
}

/// A byte among the newest 16 KiB of written data — what readers are about to read — of
/// the newest segment, chosen by `draw`.
fn flip_target(disk: &SimDisk, draw: u64) -> Option<(String, u64)> {
    let file = disk
        .file_names()
        .into_iter()
        .rfind(|name| name.ends_with(".evlog"))?;
    let written = disk.written_len(&file)?;
    let window = written.min(16 * 1024);
    Some((file, written - 1 - draw % window))
}

/// The process supervisor: a machine that stopped itself — the store's log poisoned by a
/// failed sync, or a CSMS node whose task failed — is crashed and restarted (its page cache
/// survives: no power loss). Returns how many times that happened.
async fn supervise(handle: Handle, machines: Arc<Machines>, finished: Shutdown) -> u64 {
    let mut restarts = 0;
    while !finished.is_triggered() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let _crashing = machines.crashing.lock().await;
        let poisoned = current(&machines.store_slot).and_then(|store| store.failure());
        if let Some(reason) = poisoned {
            tracing::info!(%reason, "the store stopped itself; restarting it");
            *lock_slot(&machines.store_slot) = None;
            handle.kill(machines.store);
            handle.restart(machines.store);
            restarts += 1;
        }
        for (index, slot) in machines.node_slots.iter().enumerate() {
            if current(slot).is_some_and(|failed| failed.is_triggered()) {
                tracing::info!(node = %format!("csms-{}", index + 1), "a CSMS node stopped itself; restarting it");
                *lock_slot(slot) = None;
                handle.kill(machines.nodes[index]);
                handle.restart(machines.nodes[index]);
                restarts += 1;
            }
        }
    }
    restarts
}
