//! Which faults a run injects, drawn from the seed (swarm testing: every seed its own mix).

use std::fmt;
use std::time::Duration;

use madsim::rand::Rng;

/// The faults enabled for one run and how often they strike.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultPlan {
    /// F1: a machine fails — the store server crashes (losing unsynced writes) and
    /// restarts, a CSMS node crashes (losing its memory) and restarts, or a CSMS node
    /// stalls for longer than its stations wait (at a random moment, or as it is about to
    /// record an unlock outcome, until another node has taken the station's lease).
    pub csms_crash: bool,
    /// F1, targeted (drawn on its own, in half the plans): throughout the fault phase, a CSMS node about
    /// to record a Rejected or TimedOut outcome freezes there until another node has taken
    /// the station's lease. Those are the decisions a later attempt can overturn (an
    /// Accepted is a physical fact), so this is where a stale lease holder does harm.
    pub outcome_stalls: bool,
    /// F2: a station reboots, losing its volatile state, or one of its idle connectors
    /// faults (under-voltage) for an outage and refuses remote starts meanwhile.
    pub station_reboot: bool,
    /// F3: a station is cut off from the network, or a CSMS node from the store, for a
    /// while, then healed.
    pub partition: bool,
    /// F4: frames between stations and the CSMS are lost, duplicated and delayed past each
    /// other, at these rates, for the whole run.
    pub messages: Option<MessageFaults>,
    /// F5: each station's clock is off by up to this many milliseconds either way, and
    /// drifts by up to a twentieth.
    pub clock_skew_max_millis: Option<u64>,
    /// F6 in the running node: syncs fail for a while (the log poisons itself and the node
    /// must restart), or one read returns a flipped bit (detected by the checksum, never
    /// misread).
    pub disk_faults: bool,
    /// F6/F7: a slow disk — every sync takes this long, so a crash (F1) can land between a
    /// group's write and its sync and leave a torn tail for recovery.
    pub sync_latency_millis: Option<u64>,
    /// F9: stations heartbeat every 3 seconds, and status bursts strike during commands:
    /// as a client sends a command, the target station's connectors may start to flap
    /// for a while (idle ones Available ↔ Unavailable, charging ones Charging ↔
    /// SuspendedEV), each flap a StatusNotification, on average this many milliseconds
    /// apart.
    pub telemetry_storm: Option<u64>,
    /// F11: impostor stations try to connect throughout the fault phase (a wrong password,
    /// another station's credentials, an unknown id); every handshake must be refused.
    pub impostors: bool,
    /// F12: the production code's fault points that act in this run, and how often.
    pub points: crate::points::PointPlan,
    /// How long faults are injected before everything heals.
    pub fault_phase: Duration,
    /// Pause between two faults, drawn uniformly from this range (milliseconds).
    pub interval_millis: (u64, u64),
    /// How long a crashed node stays down or a partition lasts (milliseconds).
    pub outage_millis: (u64, u64),
}

impl FaultPlan {
    /// No faults at all.
    pub fn none() -> FaultPlan {
        FaultPlan {
            csms_crash: false,
            outcome_stalls: false,
            station_reboot: false,
            partition: false,
            messages: None,
            clock_skew_max_millis: None,
            disk_faults: false,
            sync_latency_millis: None,
            telemetry_storm: None,
            impostors: false,
            points: crate::points::PointPlan::default(),
            fault_phase: Duration::ZERO,
            interval_millis: (1, 1),
            outage_millis: (1, 1),
        }
    }

    /// Draws a plan from the simulator's seeded generator: each fault on with
    /// probability one half, at a seed-chosen rate.
    pub fn draw() -> FaultPlan {
        let mut rng = madsim::rand::thread_rng();
        let interval_low = rng.gen_range(2_000..20_000);
        let csms_crash = rng.gen_bool(0.5);
        let points = if rng.gen_bool(0.5) {
            crate::points::PointPlan::draw()
        } else {
            crate::points::PointPlan::default()
        };
        let mut plan = FaultPlan {
            points,
            csms_crash,
            outcome_stalls: rng.gen_bool(0.5),
            station_reboot: rng.gen_bool(0.5),
            partition: rng.gen_bool(0.5),
            messages: rng.gen_bool(0.5).then(|| MessageFaults {
                loss_per_mille: rng.gen_range(0..50),
                duplicate_per_mille: rng.gen_range(0..50),
                delay_max_millis: rng.gen_range(0..3_000),
            }),
            clock_skew_max_millis: rng.gen_bool(0.5).then(|| rng.gen_range(1..600_000)),
            disk_faults: rng.gen_bool(0.5),
            sync_latency_millis: rng.gen_bool(0.5).then(|| rng.gen_range(1..50)),
            telemetry_storm: rng.gen_bool(0.5).then(|| rng.gen_range(8..60)),
            fault_phase: Duration::from_secs(rng.gen_range(60..300)),
            interval_millis: (interval_low, interval_low * 3),
            outage_millis: (500, rng.gen_range(1_000..30_000)),
            impostors: false,
        };
        // Drawn last, so that the draws before it stay what they were without it.
        plan.impostors = rng.gen_bool(0.5);
        plan
    }

    /// Fault kinds a run can switch off by name, as `--without` and the shrinker do.
    pub const KINDS: [&'static str; 10] =
        ["F1", "F2", "F3", "F4", "F5", "F6", "F7", "F9", "F11", "F12"];

    /// Whether fault kind `kind` (one of [`FaultPlan::KINDS`]) is on in this plan.
    pub fn has(&self, kind: &str) -> bool {
        match kind {
            "F1" => self.csms_crash || self.outcome_stalls,
            "F2" => self.station_reboot,
            "F3" => self.partition,
            "F4" => self.messages.is_some(),
            "F5" => self.clock_skew_max_millis.is_some(),
            "F6" => self.disk_faults,
            "F7" => self.sync_latency_millis.is_some(),
            "F9" => self.telemetry_storm.is_some(),
            "F11" => self.impostors,
            "F12" => !self.points.is_empty(),
            _ => false,
        }
    }

    /// Switches fault kind `kind` off.
    pub fn switch_off(&mut self, kind: &str) {
        match kind {
            "F1" => {
                self.csms_crash = false;
                self.outcome_stalls = false;
            }
            "F2" => self.station_reboot = false,
            "F3" => self.partition = false,
            "F4" => self.messages = None,
            "F5" => self.clock_skew_max_millis = None,
            "F6" => self.disk_faults = false,
            "F7" => self.sync_latency_millis = None,
            "F9" => self.telemetry_storm = None,
            "F11" => self.impostors = false,
            "F12" => self.points = crate::points::PointPlan::default(),
            _ => {}
        }
    }

    pub fn any(&self) -> bool {
        self.csms_crash
            || self.station_reboot
            || self.partition
            || self.disk_faults
            || !self.points.is_empty()
    }
}

impl fmt::Display for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = |enabled: bool| if enabled { "on" } else { "off" };
        write!(
            f,
            "F1 csms-crash {}{} · F2 station-reboot {} · F3 partition {} · F4 messages {} · F5 clock-skew {} · F6 disk-faults {} · F6/F7 slow-disk {} · F9 telemetry-storm {} · F11 impostors {} · F12 fault points {} · fault phase {} s, every {}–{} ms, outages {}–{} ms",
            on(self.csms_crash),
            if self.outcome_stalls {
                " (outcome stalls on)"
            } else {
                ""
            },
            on(self.station_reboot),
            on(self.partition),
            self.messages.map_or("off".to_owned(), |m| format!(
                "loss {}‰ dup {}‰ delay ≤{} ms",
                m.loss_per_mille, m.duplicate_per_mille, m.delay_max_millis
            )),
            self.clock_skew_max_millis
                .map_or("off".to_owned(), |ms| format!("±{ms} ms")),
            on(self.disk_faults),
            self.sync_latency_millis
                .map_or("off".to_owned(), |ms| format!("{ms} ms/sync")),
            self.telemetry_storm
                .map_or("off".to_owned(), |ms| format!("flaps ~{ms} ms apart")),
            on(self.impostors),
            self.points,
            self.fault_phase.as_secs(),
            self.interval_millis.0,
            self.interval_millis.1,
            self.outage_millis.0,
            self.outage_millis.1,
        )
    }
}

/// F4 rates: per mille of frames lost and duplicated, and the longest delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageFaults {
    pub loss_per_mille: u32,
    pub duplicate_per_mille: u32,
    pub delay_max_millis: u64,
}

impl FaultPlan {
    /// The faults of one station's link and clock, drawn from the simulator's generator.
    pub fn draw_link(&self) -> evsource::node::driver::LinkFaults {
        let mut rng = madsim::rand::thread_rng();
        let mut link = evsource::node::driver::LinkFaults {
            seed: rng.r#gen(),
            ..evsource::node::driver::LinkFaults::default()
        };
        if let Some(messages) = self.messages {
            link.loss = f64::from(messages.loss_per_mille) / 1_000.0;
            link.duplicate = f64::from(messages.duplicate_per_mille) / 1_000.0;
            link.delay_max_millis = messages.delay_max_millis;
        }
        if let Some(max) = self.clock_skew_max_millis {
            let max = max as i64;
            link.clock_offset_millis = rng.gen_range(-max..=max);
            link.clock_drift_per_mille = rng.gen_range(-50..=50);
        }
        link
    }
}

/// How many faults of each kind a run injected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub csms_crashes: u64,
    pub station_reboots: u64,
    pub partitions: u64,
    pub frames_lost: u64,
    pub frames_duplicated: u64,
    pub frames_delayed: u64,
    pub failed_syncs: u64,
    pub read_flips: u64,
    /// F9 status bursts.
    pub status_bursts: u64,
    /// Restarts of a node that stopped itself (poisoned log, failed task).
    pub node_failures: u64,
    /// F1 on the store server: crashed (its disk too) and restarted.
    pub store_crashes: u64,
    /// F1 as a stall: a CSMS node paused for longer than stations wait.
    pub node_pauses: u64,
    /// F1 as a targeted stall: a CSMS node frozen as it was about to record an unlock
    /// outcome, until another node had taken the station's lease.
    pub outcome_stalls: u64,
    /// F3 between a CSMS node and the store.
    pub store_partitions: u64,
    /// F10: segments damaged at rest, then reopened.
    pub damage_at_rest: u64,
    /// F11: impostor handshakes the CSMS refused.
    pub impostors_refused: u64,
    /// F2: idle connectors faulted (under-voltage) for an outage, refusing remote starts.
    pub connector_faults: u64,
}

impl FaultCounts {
    pub fn add(&mut self, other: &FaultCounts) {
        self.csms_crashes += other.csms_crashes;
        self.station_reboots += other.station_reboots;
        self.partitions += other.partitions;
        self.frames_lost += other.frames_lost;
        self.frames_duplicated += other.frames_duplicated;
        self.frames_delayed += other.frames_delayed;
        self.failed_syncs += other.failed_syncs;
        self.read_flips += other.read_flips;
        self.status_bursts += other.status_bursts;
        self.node_failures += other.node_failures;
        self.store_crashes += other.store_crashes;
        self.node_pauses += other.node_pauses;
        self.outcome_stalls += other.outcome_stalls;
        self.store_partitions += other.store_partitions;
        self.damage_at_rest += other.damage_at_rest;
        self.impostors_refused += other.impostors_refused;
        self.connector_faults += other.connector_faults;
    }
}

/// Which design of the CSMS a run exercises (DESIGN §5). The correct design is the
/// default; each naive one reproduces a seed document's mistake on purpose, and the swarm
/// must find its violation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Design {
    #[default]
    Correct,
    /// N1: the unlock is sent inside the command, before the append.
    NaiveSideEffect,
    /// N4: the dispatcher advances its checkpoint before the send is confirmed.
    NaiveEarlyCheckpoint,
    /// N2: validate against a lagging read model, append without an expected version.
    NaiveReadModel,
    /// N3: a read-then-write version check outside the store.
    NaiveVersionCheck,
    /// N5: heartbeats and status reports are also appended to the business aggregate.
    NaiveTelemetry,
    /// N6: a projection's checkpoint stored apart from its state.
    NaiveProjectionCheckpoint,
    /// Dispatch leases without a fencing token: a node acts for the stations it believes
    /// it holds and records outcomes unconditioned, so a node that lost a lease while
    /// stalled still records what it decided before.
    NaiveNoFencing,
}

impl Design {
    pub const ALL: [Design; 8] = [
        Design::Correct,
        Design::NaiveSideEffect,
        Design::NaiveEarlyCheckpoint,
        Design::NaiveReadModel,
        Design::NaiveVersionCheck,
        Design::NaiveTelemetry,
        Design::NaiveProjectionCheckpoint,
        Design::NaiveNoFencing,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Design::Correct => "correct",
            Design::NaiveSideEffect => "naive-side-effect",
            Design::NaiveEarlyCheckpoint => "naive-early-checkpoint",
            Design::NaiveReadModel => "naive-read-model",
            Design::NaiveVersionCheck => "naive-version-check",
            Design::NaiveTelemetry => "naive-telemetry-in-aggregate",
            Design::NaiveProjectionCheckpoint => "naive-projection-checkpoint",
            Design::NaiveNoFencing => "naive-no-fencing",
        }
    }

    pub fn parse(name: &str) -> Option<Design> {
        Design::ALL.into_iter().find(|design| design.name() == name)
    }
}

/// A fresh simulated disk, slowed down as `plan` says (F7).
pub fn simulated_disk(plan: &FaultPlan) -> evsource::storage::SimDisk {
    let disk = evsource::storage::SimDisk::new();
    if let Some(latency) = plan.sync_latency_millis {
        disk.set_faults(evsource::storage::SimDiskFaults {
            sync_latency: Duration::from_millis(latency),
            ..evsource::storage::SimDiskFaults::default()
        });
    }
    disk
}

/// A durable log on a fresh simulated disk, slowed down as `plan` says (F7).
pub fn simulated_log(plan: &FaultPlan) -> (evsource::storage::SimDisk, evsource::store::LogStore) {
    let disk = simulated_disk(plan);
    let store = evsource::store::LogStore::open(std::sync::Arc::new(disk.clone()), log_config())
        .expect("a fresh simulated disk opens");
    (disk, store)
}

/// The log layout every simulated store uses.
pub fn log_config() -> evsource::store::LogConfig {
    evsource::store::LogConfig {
        segment_bytes: 4 * 1024 * 1024,
        ..evsource::store::LogConfig::default()
    }
}

/// Binds `port` on every address of this machine. A machine restarted twice in quick
/// succession may find its previous incarnation's listener not yet gone: like a process
/// supervisor, it tries again shortly rather than giving up.
pub async fn bind_retrying(port: u16) -> tokio::net::TcpListener {
    let address =
        std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), port);
    loop {
        match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => return listener,
            Err(error) => {
                tracing::warn!(%error, port, "binding failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Opens the log on `disk` as a restarted store server does: from what the disk really
/// holds, counting a torn tail cut into `torn_tails`. An open refused for a transient read
/// fault is retried, as a process supervisor would; damage that stays keeps the store
/// down, and the liveness check reports it.
pub async fn open_log_retrying(
    disk: &evsource::storage::SimDisk,
    torn_tails: &std::sync::atomic::AtomicU64,
) -> evsource::store::LogStore {
    loop {
        match evsource::store::LogStore::open(std::sync::Arc::new(disk.clone()), log_config()) {
            Ok(store) => {
                if store.cut_torn_tail() {
                    torn_tails.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                return store;
            }
            Err(error) => {
                tracing::warn!(%error, "the log did not open; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
