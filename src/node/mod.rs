//! The CSMS node: the sans-IO parts wired on a tokio runtime. Without `--cfg madsim` it
//! runs on real tokio; with it, the very same code runs inside the deterministic simulator.
//!
//! Tasks:
//! * **listener** ([`server`]) — one port, HTTP/1.1. Charge points upgrade
//!   `/ocpp/{id}` to OCPP 1.6-J over WebSocket after Basic authentication ([`auth`]);
//!   each such connection task is a dumb pipe between its socket and the hub. Operators
//!   use the HTTP/JSON API under `/api` ([`operator`]), whose commands the command
//!   handler runs concurrently.
//! * **hub** — owns every [`StationSession`], the [`Dispatcher`], the [`StationMirror`] and
//!   one catch-up subscription; handles their inputs one at a time, so its behaviour
//!   depends only on the order of inputs.
//!
//! The node is crash-only: a task that cannot go on (the store refuses reads, a projection
//! meets an event it cannot apply) does not limp along — it raises [`CsmsNode::failed`],
//! and the owner exits the process. The next start recovers from the store.

pub mod api;
pub mod auth;
pub mod client;
pub mod driver;
pub mod http;
pub mod lease;
pub mod naive;
mod operator;
pub mod server;
pub mod throttle;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::core::types::{CommandId, EventId, ExpectedVersion, GlobalPosition, StreamId, hash128};
use crate::decider::Aggregate;
use crate::dispatcher::{DispatchEffect, Dispatcher, DispatcherConfig};
use crate::domain::board::UnlockBoard;
use crate::domain::station::{Station, StationAnswer, StationCommand, StationRejection};
use crate::environment::{Environment, SplitMix64, SystemEnvironment};
use crate::faultpoint::FaultPoint;
use crate::handler::{HandleError, HandlerConfig, Outcome};
use crate::mirror::{
    StationMirror, StationView, TelemetryEvent, UnlockEvidence, transaction_id_at,
    transaction_started, transaction_stopped,
};
use crate::ocpp::messages::ChargePointStatus;
use crate::projection::{Projection, ProjectionError, ProjectionRunner};
use crate::session::{SessionConfig, SessionOutput, StationSession};
use crate::signal::Shutdown;
use crate::store::{AppendError, CatchUpSubscription, EventStore, ReadError};
use naive::{StationHandler, TelemetryPlacement};

/// Frames queued for one connection before it is closed as too slow.
pub const CONNECTION_QUEUE_MAX: usize = 256;
/// Inputs queued for the hub.
pub const HUB_QUEUE_MAX: usize = 4096;

/// The stream of `node`'s dispatcher checkpoints: each node sharing a store has its own.
/// An error for a node id that cannot name a stream.
fn checkpoint_stream(node: &str) -> Result<StreamId, crate::core::types::StreamIdError> {
    StreamId::new(&format!("checkpoint-dispatcher-{node}"))
}

/// The id of `node`'s checkpoint at `position`: saving it again is an exact retry, and
/// two nodes (or a node under a new id, replaying history) saving the same position do
/// not collide — an id from the position alone was refused as "already stored" on every
/// such save.
pub fn checkpoint_event_id(node: &str, position: GlobalPosition) -> EventId {
    EventId(hash128(
        format!("checkpoint\u{1f}{node}\u{1f}{}", position.0).as_bytes(),
    ))
}

/// How a node is set up.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's name among the nodes sharing the store: it signs the dispatch leases
    /// the node takes ([`lease`]) and names its dispatcher checkpoint. Two nodes running
    /// at once must not share one; a restart of a node may (crash-only: the old process
    /// is gone). Printable ASCII without spaces.
    pub node_id: String,
    /// Whether what the node records for a station is fenced by its dispatch lease.
    /// Only the simulator's naive design `naive-no-fencing` turns it off.
    pub fencing: Fencing,
    /// Where charge points (`/ocpp/{id}`) and operators (`/api/…`) connect.
    pub listen: SocketAddr,
    /// The bearer token every operator API request must carry.
    pub operator_token: String,
    /// The cost of password hashes for charge points registered through the API.
    pub password_cost: auth::PasswordCost,
    pub session: SessionConfig,
    pub dispatcher: DispatcherConfig,
    pub handler: HandlerConfig,
    /// Seeds retry jitter and telemetry event ids; give every start its own seed.
    pub seed: u64,
    /// Projections save state and checkpoint after this many new events (and at shutdown).
    pub projection_save_every_events: u64,
    /// How an unlock reaches the station. Only the simulator's naive design N1 changes it.
    pub unlock_path: UnlockPath,
    /// Where station reports are recorded. Only the simulator's naive design N5 changes it.
    pub telemetry: TelemetryPlacement,
    /// Where a fault injector may hold the node. Production leaves it empty.
    pub stall: OutcomeStall,
    /// Who watches every frame on the node's station sockets (the simulator's wire oracle,
    /// I12). Production leaves it empty.
    pub wire_tap: WireTap,
    /// Which build's station aggregate the node runs. Production runs `Current`; the
    /// simulator's rolling upgrade restarts nodes into `Next`.
    pub build: StationBuild,
    /// Connections open at once, at most ([`CONNECTIONS_MAX`] unless a test needs fewer).
    pub connections_max: usize,
}

/// The build of the station aggregate a node runs (a rolling upgrade mixes them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StationBuild {
    /// Snapshot schema 1, events without a version field.
    #[default]
    Current,
    /// [`crate::domain::station::StationNext`]: snapshot schema 2, events with a version.
    Next,
}

/// Which way a frame crossed a station's socket at the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireDirection {
    /// Written by the node to the station.
    ToStation,
    /// Read by the node from the station.
    FromStation,
}

/// What a [`WireTap`] runs for each text frame: the station, the node's connection
/// number, the direction and the frame — a frame to the station when the node sends it
/// (hands it to the connection), a frame from it when read from the socket. (A send is
/// timed where the node decides it: a write held up by the network is the network's.)
pub type WireTapFn = dyn Fn(&str, u64, WireDirection, &str) + Send + Sync;

/// An observation point on the station sockets: empty in production (one branch per
/// frame); the simulator judges the CSMS's side of OCPP-J's timing rules with it.
#[derive(Clone, Default)]
pub struct WireTap(Option<Arc<WireTapFn>>);

impl WireTap {
    pub fn none() -> WireTap {
        WireTap(None)
    }

    pub fn new(tap: Arc<WireTapFn>) -> WireTap {
        WireTap(Some(tap))
    }

    fn saw(&self, station: &str, connection: u64, direction: WireDirection, text: &str) {
        if let Some(tap) = &self.0 {
            tap(station, connection, direction, text);
        }
    }
}

impl std::fmt::Debug for WireTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "WireTap(watching)"
        } else {
            "WireTap(none)"
        })
    }
}

/// A fault-injection point: the node awaits it after deciding an unlock's outcome, with its
/// view of the lease already taken, and before it appends the outcome — the moment at which
/// a process pause makes a lease holder stale and its decision dangerous. The simulator
/// holds the node there until another node has taken the station's lease (the interleaving
/// the fencing token exists for); everywhere else it is empty and costs one branch.
#[derive(Clone, Default)]
pub struct OutcomeStall(Option<Arc<OutcomeStallFn>>);

/// What an [`OutcomeStall`] runs: given the station and the outcome about to be recorded, a
/// future the node awaits before appending.
pub type OutcomeStallFn = dyn Fn(&str, StationAnswer) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
    + Send
    + Sync;

impl OutcomeStall {
    /// No stall: what production runs.
    pub fn none() -> OutcomeStall {
        OutcomeStall(None)
    }

    /// A stall point that awaits `stall(station, answer)` before each outcome is appended.
    pub fn new(stall: Arc<OutcomeStallFn>) -> OutcomeStall {
        OutcomeStall(Some(stall))
    }

    async fn before_recording(&self, station: &str, answer: StationAnswer) {
        if let Some(stall) = &self.0 {
            stall(station, answer).await;
        }
    }
}

impl std::fmt::Debug for OutcomeStall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "OutcomeStall(set)"
        } else {
            "OutcomeStall(none)"
        })
    }
}

/// Whether a node's records for a station are fenced by the station's dispatch lease.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fencing {
    /// Every outcome is appended with [`lease::fence`]: refused once another node took
    /// the lease (correct).
    #[default]
    Fenced,
    /// The naive design `naive-no-fencing`: the node keeps leases and acts only for the
    /// stations it believes it holds, but appends without the token, so a node that lost
    /// its lease without knowing it (paused, partitioned) still records what it decided.
    Unfenced,
}

/// How a requested unlock reaches the station.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnlockPath {
    /// The request is appended; the outbox dispatcher sends it once it is durable (correct).
    #[default]
    Outbox,
    /// The naive design N1 (`naive-side-effect`, seed 000): the API sends the
    /// RemoteStartTransaction inside the command, before anything is appended, then appends
    /// the request and the answer. A crash or a lost answer in between leaves an unlock
    /// nobody recorded, or a request with no outcome.
    SideEffectFirst,
}

/// A running node.
#[derive(Debug)]
pub struct CsmsNode {
    /// The address bound (with the port chosen when `listen` asked for port 0).
    pub addr: SocketAddr,
    shutdown: Shutdown,
    failed: Shutdown,
    tasks: Vec<JoinHandle<()>>,
}

impl CsmsNode {
    /// Binds the listener and starts every task.
    pub async fn start<S: EventStore>(store: S, config: NodeConfig) -> io::Result<CsmsNode> {
        if config.node_id.is_empty() || checkpoint_stream(&config.node_id).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "node id {:?} is not printable ASCII without spaces",
                    config.node_id
                ),
            ));
        }
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let shutdown = Shutdown::new();
        let failed = Shutdown::new();
        let (hub_inputs, hub_receiver) = mpsc::channel(HUB_QUEUE_MAX);
        let checkpoint = load_checkpoint(&store, &config.node_id).await?;
        // Everything stored before this start may have been dispatched by an earlier
        // incarnation of this node (or by another): such requests never time out.
        let history_end = store
            .event_count()
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        let mut hub = Hub::new(store.clone(), &config, checkpoint, failed.clone());
        hub.dispatcher
            .possibly_sent_before(GlobalPosition(history_end));
        // Every node keeps its own copy of the board, saved to its own stream.
        let board: ProjectionRunner<S, UnlockBoard> =
            ProjectionRunner::load_instance(store.clone(), &config.node_id)
                .await
                .map_err(io::Error::other)?;
        let tasks = vec![
            tokio::spawn(hub.run(hub_receiver, shutdown.clone())),
            tokio::spawn(run_projection(
                board,
                config.projection_save_every_events,
                shutdown.clone(),
                failed.clone(),
            )),
            tokio::spawn(server::accept(
                listener,
                Arc::new(Shared {
                    handler: StationHandler::new(
                        store.clone(),
                        config.handler.clone(),
                        config.telemetry,
                        config.build,
                    ),
                    store,
                    hub: hub_inputs,
                    operator_token: config.operator_token.clone(),
                    password_cost: config.password_cost,
                    seeds: Mutex::new(SplitMix64::new(config.seed.rotate_left(29))),
                    naive_call_timeout_millis: (config.unlock_path == UnlockPath::SideEffectFirst)
                        .then_some(config.dispatcher.call_timeout_millis),
                    wire_tap: config.wire_tap.clone(),
                    shutdown: shutdown.clone(),
                    password_checks: tokio::sync::Semaphore::new(PASSWORD_CHECKS_MAX),
                    dummy_hash: auth::hash_password(
                        "no charge point has this password",
                        [0x5a; 16],
                        config.password_cost,
                    ),
                    failures: Mutex::new(throttle::FailureBackoff::new(FAILURE_KEYS_MAX)),
                    started: tokio::time::Instant::now(),
                    connections: Arc::new(tokio::sync::Semaphore::new(
                        config.connections_max.max(1),
                    )),
                }),
            )),
        ];
        tracing::info!(%addr, "csms node started");
        Ok(CsmsNode {
            addr,
            shutdown,
            failed,
            tasks,
        })
    }

    /// Raised when a task of the node stopped on an error it cannot recover from. The
    /// owner should then exit (or, in the simulator, crash the node): a restart recovers.
    pub fn failed(&self) -> Shutdown {
        self.failed.clone()
    }

    /// Stops accepting, closes connections and waits for every task to end.
    pub async fn shutdown(self) {
        self.shutdown.trigger();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn load_checkpoint<S: EventStore>(
    store: &S,
    node: &str,
) -> io::Result<Option<GlobalPosition>> {
    let stream = checkpoint_stream(node).map_err(io::Error::other)?;
    let version = store
        .current_version(&stream)
        .await
        .map_err(io::Error::other)?;
    let crate::core::types::CurrentVersion::Current(last) = version else {
        return Ok(None);
    };
    let events = store
        .read_stream(&stream, last, 1)
        .await
        .map_err(io::Error::other)?;
    let position = events
        .first()
        .and_then(|e| <[u8; 8]>::try_from(e.payload.as_slice()).ok())
        .map(|bytes| GlobalPosition(u64::from_le_bytes(bytes)));
    Ok(position)
}

/// How often a node that holds a station's connection but not its lease tries to take it.
const LEASE_RETRY_MILLIS: u64 = 5_000;

/// What every connection task shares.
struct Shared<S> {
    store: S,
    hub: mpsc::Sender<HubInput>,
    handler: StationHandler<S>,
    operator_token: String,
    password_cost: auth::PasswordCost,
    /// Seeds each API request's generator (command ids, salts, retry jitter).
    seeds: Mutex<SplitMix64>,
    /// Set only for the naive design N1: unlocks are sent from the API task itself.
    naive_call_timeout_millis: Option<u64>,
    wire_tap: WireTap,
    shutdown: Shutdown,
    /// Password checks running at once (each Argon2 check holds ~19 MiB at the standard
    /// cost): at most [`PASSWORD_CHECKS_MAX`].
    password_checks: tokio::sync::Semaphore,
    /// Checked against when the charge point id is unknown, so that an unknown id costs
    /// what a wrong password does and timing tells nothing.
    dummy_hash: String,
    /// Failed credentials, by client address and by charge point id.
    failures: Mutex<throttle::FailureBackoff>,
    /// The clock of the backoff.
    started: tokio::time::Instant,
    /// Connections open at once (stations, API clients, handshakes in progress): at most
    /// [`CONNECTIONS_MAX`]; the accept loop waits for a free one before it accepts.
    connections: Arc<tokio::sync::Semaphore>,
}

/// Password checks a node runs at once. At the standard cost each holds 19 MiB, so 4 keep
/// a handshake storm under ~80 MiB of Argon2 memory and leave the CPU to the rest of the
/// node; more checks would not finish sooner on the cores a node has.
pub const PASSWORD_CHECKS_MAX: usize = 4;
/// How long a handshake waits for a password check before it is refused with 503.
pub const PASSWORD_CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// How long before an abandoned session's end, not recorded, is tried again.
const STOP_RETRY_MILLIS: u64 = 2_000;
/// Keys the failure backoff remembers at most.
pub const FAILURE_KEYS_MAX: usize = 10_000;
/// Connections a node holds open at once. Each costs a task, a socket and its buffers
/// (a station's up to 64 KiB frames, its outbox of [`CONNECTION_QUEUE_MAX`] frames), so
/// the bound keeps a flood of idle connections from exhausting memory or descriptors;
/// past it, new connections wait in the kernel's backlog. Idle ones are closed after
/// `server::HEAD_TIMEOUT`, and a node is sized for thousands of stations.
pub const CONNECTIONS_MAX: usize = 16_384;

impl<S> Shared<S> {
    fn now_millis(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

/// One station as the operator API lists it.
#[derive(Debug)]
struct StationListing {
    id: String,
    online: bool,
    view: StationView,
}

/// What connection tasks tell the hub.
#[derive(Debug)]
enum HubInput {
    /// The operator API asks what the mirror knows (of one station, or of all).
    Stations {
        only: Option<String>,
        reply: tokio::sync::oneshot::Sender<Vec<StationListing>>,
    },
    Connected {
        connection: u64,
        station: String,
        outbox: mpsc::Sender<ToStation>,
    },
    Frame {
        connection: u64,
        text: String,
    },
    Closed {
        connection: u64,
    },
    /// N1 only: send a RemoteStartTransaction now and report the station's answer.
    SendDirect {
        station: String,
        connector: u32,
        id_tag: String,
        answer: tokio::sync::oneshot::Sender<crate::ocpp::messages::RemoteStartStopStatus>,
    },
}

/// What the hub hands a station's connection task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToStation {
    /// An OCPP-J frame to send.
    Frame(String),
    /// Close the connection with this WebSocket code and reason.
    Close { code: u16, reason: String },
}

#[derive(Debug)]
struct Connection {
    id: u64,
    session: StationSession,
    outbox: mpsc::Sender<ToStation>,
    /// When the node, holding this connection but not the station's lease, may try to
    /// take the lease again (see `LEASE_RETRY_MILLIS`).
    lease_retry_at: u64,
}

struct Hub<S> {
    store: S,
    node_id: String,
    fencing: Fencing,
    stall: OutcomeStall,
    /// The latest dispatch lease of each station, as far as this node has read or taken
    /// it: the holder and its fencing token.
    leases: BTreeMap<String, (String, GlobalPosition)>,
    lease_takes: u64,
    /// Watches frames to and from stations (the simulator's wire oracle).
    wire_tap: WireTap,
    stations: StationHandler<S>,
    env: SystemEnvironment,
    session_config: SessionConfig,
    dispatcher: Dispatcher,
    mirror: StationMirror,
    connections: BTreeMap<String, Connection>,
    checkpoint: Option<GlobalPosition>,
    telemetry_nonce: u64,
    telemetry_count: u64,
    /// Connector and idTag of each CALL in flight, for the mirror's evidence.
    calls: BTreeMap<(String, String), (u32, String)>,
    /// Raised when the hub cannot go on (crash-only: the owner restarts the node).
    failed: Shutdown,
    unlock_path: UnlockPath,
    /// N1 only: API tasks waiting for the answer to a CALL sent directly.
    direct: BTreeMap<
        (String, String),
        tokio::sync::oneshot::Sender<crate::ocpp::messages::RemoteStartStopStatus>,
    >,
    direct_calls: u64,
    /// Abandoned sessions (a connector back to Available with no transaction) whose end
    /// could not be recorded yet, by (station, session): when to try again.
    pending_stops: BTreeMap<(String, String), u64>,
}

impl<S: EventStore> Hub<S> {
    fn new(
        store: S,
        config: &NodeConfig,
        checkpoint: Option<GlobalPosition>,
        failed: Shutdown,
    ) -> Hub<S> {
        let mut env = SystemEnvironment::new(config.seed);
        let telemetry_nonce = env.random_u64();
        let dispatcher = DispatcherConfig {
            // Nodes share the store: each acts only for the stations whose lease it holds.
            requires_ownership: true,
            ..config.dispatcher.clone()
        };
        Hub {
            stations: StationHandler::new(
                store.clone(),
                config.handler.clone(),
                config.telemetry,
                config.build,
            ),
            store,
            node_id: config.node_id.clone(),
            fencing: config.fencing,
            stall: config.stall.clone(),
            wire_tap: config.wire_tap.clone(),
            leases: BTreeMap::new(),
            lease_takes: 0,
            env,
            session_config: config.session.clone(),
            dispatcher: Dispatcher::new(dispatcher, checkpoint),
            mirror: StationMirror::new(),
            connections: BTreeMap::new(),
            checkpoint,
            telemetry_nonce,
            telemetry_count: 0,
            calls: BTreeMap::new(),
            failed,
            unlock_path: config.unlock_path,
            direct: BTreeMap::new(),
            direct_calls: 0,
            pending_stops: BTreeMap::new(),
        }
    }

    async fn run(mut self, mut inputs: mpsc::Receiver<HubInput>, shutdown: Shutdown) {
        let limits = crate::core::Limits::default();
        let mut subscription = CatchUpSubscription::new(self.store.clone(), None, 256, &limits)
            .expect("buffer within limits");
        let mut reads = ReadRetry::default();
        loop {
            let now = self.env.now_millis();
            let wait = self
                .dispatcher
                .poll_timeout()
                .into_iter()
                .chain(self.pending_stops.values().copied())
                .min()
                .map_or(60_000, |at| at.saturating_sub(now));
            tokio::select! {
            biased;
                _ = shutdown.wait() => break,
                Some(input) = inputs.recv() => self.handle_input(input).await,
                event = subscription.next(), if reads.ready() => match event {
                    Ok(event) => {
                        reads.succeeded();
                        self.handle_event(&event);
                    }
                    // The store is out of reach (restarting, partitioned): the subscription
                    // has not moved, so reading again later skips nothing.
                    Err(ReadError::Unavailable(error)) => {
                        let delay = reads.failed();
                        tracing::warn!(%error, delay_ms = delay.as_millis() as u64, "hub subscription: the store is unavailable; reading again later");
                    }
                    Err(error) => {
                        tracing::error!(%error, "hub subscription failed");
                        self.failed.trigger();
                        break;
                    }
                },
                () = reads.backed_off(), if !reads.ready() => reads.resume(),
                // Only a wake-up: what is due runs below, after whichever branch won, so
                // a steady stream of inputs (always first) cannot starve the timers.
                _ = tokio::time::sleep(std::time::Duration::from_millis(wait)) => {}
            }
            let now = self.env.now_millis();
            if self.dispatcher.poll_timeout().is_some_and(|at| at <= now) {
                self.dispatcher.handle_timeout(now);
            }
            if self.pending_stops.values().any(|at| *at <= now) {
                self.retry_stops().await;
            }
            self.settle(&mut subscription).await;
        }
        tracing::info!("hub stopped");
    }

    async fn handle_input(&mut self, input: HubInput) {
        let now = self.env.now_millis();
        match input {
            HubInput::Stations { only, reply } => {
                let listed = |id: &str, view: &StationView| StationListing {
                    id: id.to_owned(),
                    online: self.connections.contains_key(id),
                    view: view.clone(),
                };
                let listing = match only {
                    Some(id) => self
                        .mirror
                        .station(&id)
                        .map(|v| listed(&id, v))
                        .into_iter()
                        .collect(),
                    None => self
                        .mirror
                        .stations()
                        .map(|(id, v)| listed(id, v))
                        .collect(),
                };
                let _ = reply.send(listing);
            }
            HubInput::Connected {
                connection,
                station,
                outbox,
            } => {
                let accepted_before = self
                    .mirror
                    .station(&station)
                    .is_some_and(|v| v.boot_accepted);
                let session = if accepted_before {
                    StationSession::resume_accepted(station.clone(), self.session_config.clone())
                } else {
                    StationSession::new(station.clone(), self.session_config.clone())
                };
                tracing::info!(%station, connection, "station connected");
                // A new connection replaces the old one, which closes when its outbox drops.
                if self
                    .connections
                    .insert(
                        station.clone(),
                        Connection {
                            id: connection,
                            session,
                            outbox,
                            // The lease is taken just below.
                            lease_retry_at: now + LEASE_RETRY_MILLIS,
                        },
                    )
                    .is_some()
                {
                    self.dispatcher.handle_link(&station, false, now);
                }
                self.take_lease(&station).await;
            }
            HubInput::Frame { connection, text } => {
                if let Some(current) = self.connections.values_mut().find(|c| c.id == connection) {
                    current.session.handle_text(&text, now);
                    if let Some((code, reason)) = current.session.poll_close() {
                        tracing::info!(station = %current.session.station(), connection, code, %reason, "closing a connection that broke OCPP-J");
                        let _ = current.outbox.try_send(ToStation::Close { code, reason });
                    }
                }
            }
            HubInput::Closed { connection } => {
                let closed: Vec<String> = self
                    .connections
                    .iter()
                    .filter(|(_, c)| c.id == connection)
                    .map(|(s, _)| s.clone())
                    .collect();
                for station in closed {
                    tracing::info!(%station, connection, "station disconnected");
                    self.connections.remove(&station);
                    self.dispatcher.handle_link(&station, false, now);
                    self.record_telemetry(&station, TelemetryEvent::Disconnected)
                        .await;
                }
            }
            HubInput::SendDirect {
                station,
                connector,
                id_tag,
                answer,
            } => {
                self.direct_calls += 1;
                let call_id = format!("n1-{}", self.direct_calls);
                if let Some(connection) = self.connections.get_mut(&station)
                    && connection
                        .session
                        .send_remote_start(&call_id, connector, &id_tag)
                {
                    tracing::info!(%station, %call_id, connector, %id_tag, "RemoteStartTransaction sent inside the command (N1)");
                    self.direct.insert((station, call_id), answer);
                }
                // Otherwise the sender is dropped: the API task hears "not sent".
            }
        }
    }

    /// Feeds one stored event to the leases, the mirror or the dispatcher.
    fn handle_event(&mut self, event: &crate::core::types::RecordedEvent) {
        let now = self.env.now_millis();
        if let Some(taken) = lease::read(event) {
            self.lease_seen(taken.station, taken.node, taken.token, true);
            return;
        }
        let station_telemetry = event
            .stream
            .as_str()
            .strip_prefix("telemetry-")
            .or_else(|| {
                // N5 records heartbeats and status reports on the business stream instead.
                crate::domain::station::station_of(&event.stream)
                    .filter(|_| self.stations.notes_telemetry())
                    .filter(|_| naive::is_noted_telemetry(&event.event_type, &event.payload))
            });
        if let Some(station) = station_telemetry {
            if let Ok(decoded) = TelemetryEvent::decode(&event.event_type, &event.payload) {
                self.mirror.apply(
                    station,
                    &decoded,
                    event.position,
                    event.metadata.recorded_at_millis,
                );
                // A station that connected before this node's mirror had caught up with
                // its accepted boot (after a store outage, say) was not resumed then; it
                // does not boot again on its own, so resume it now that the boot is known.
                if matches!(decoded, TelemetryEvent::BootAccepted { .. })
                    && let Some(connection) = self.connections.get_mut(station)
                    && !connection.session.is_accepted()
                {
                    tracing::info!(%station, "the station's accepted boot caught up: resuming its session");
                    connection.session.resume();
                }
            }
        } else if let Some(station) = crate::domain::station::station_of(&event.stream)
            && let Ok(decoded) = Station::decode_event(&event.event_type, &event.payload)
        {
            self.mirror
                .apply_business(station, &decoded, event.metadata.recorded_at_millis);
            if self
                .checkpoint
                .is_none_or(|checkpoint| event.position > checkpoint)
                && self.unlock_path == UnlockPath::Outbox
            {
                self.dispatcher
                    .handle_event(event.position, station, &decoded, now);
            }
        }
    }

    /// Runs session outputs and dispatcher effects until nothing is left, then flushes
    /// every session's frames to its connection.
    async fn settle(&mut self, subscription: &mut CatchUpSubscription<S>) {
        loop {
            let mut progressed = false;
            let stations: Vec<String> = self.connections.keys().cloned().collect();
            for station in stations {
                while let Some(output) = self
                    .connections
                    .get_mut(&station)
                    .and_then(|c| c.session.poll_output())
                {
                    progressed = true;
                    self.handle_output(&station, output, subscription).await;
                }
            }
            while let Some(effect) = self.dispatcher.poll_effect() {
                progressed = true;
                self.handle_effect(effect).await;
            }
            if !progressed {
                break;
            }
        }
        let mut slow = Vec::new();
        let now = self.env.now_millis();
        for (station, connection) in &mut self.connections {
            while let Some(text) = connection.session.poll_transmit() {
                self.wire_tap
                    .saw(station, connection.id, WireDirection::ToStation, &text);
                // A RemoteStart goes out only now: its timeout runs from here, however
                // long the hub was busy since it decided to send it.
                if text.starts_with("[2,")
                    && let Ok(crate::ocpp::Frame::Call { id, .. }) =
                        crate::ocpp::Frame::parse(&text)
                    && self.calls.contains_key(&(station.clone(), id.clone()))
                {
                    self.dispatcher.handle_sent(station, &id, now);
                }
                if connection.outbox.try_send(ToStation::Frame(text)).is_err() {
                    slow.push(station.clone());
                    break;
                }
            }
        }
        for station in slow {
            tracing::warn!(%station, "connection too slow; closing it");
            self.connections.remove(&station);
            self.dispatcher.handle_link(&station, false, now);
        }
    }

    async fn handle_output(
        &mut self,
        station: &str,
        output: SessionOutput,
        subscription: &mut CatchUpSubscription<S>,
    ) {
        let now = self.env.now_millis();
        // The node has the station's connection but not its lease: taking it at connect
        // and at boot both failed (the store was unreachable). Take it again now, at
        // most every LEASE_RETRY_MILLIS, or nobody would dispatch for the station.
        let holds_lease = self.holds_lease(station);
        if let Some(connection) = self.connections.get_mut(station)
            && !holds_lease
            && now >= connection.lease_retry_at
        {
            connection.lease_retry_at = now + LEASE_RETRY_MILLIS;
            self.take_lease(station).await;
        }
        match output {
            SessionOutput::Telemetry(event) => {
                // A connector back to Available that was released for a session and has
                // no transaction open: the driver never plugged in (the station gave up,
                // or rebooted while Preparing). No StopTransaction will come, so the
                // session ends here, or the connector stays busy for the CSMS for ever.
                let abandoned = match &event {
                    TelemetryEvent::StatusReported {
                        connector,
                        status: ChargePointStatus::Available,
                        ..
                    } => {
                        self.catch_up(subscription).await;
                        self.mirror
                            .station(station)
                            .and_then(|view| view.connectors.get(connector))
                            .filter(|view| view.transaction_id.is_none())
                            .and_then(|view| view.id_tag.clone())
                    }
                    _ => None,
                };
                self.record_telemetry(station, event).await;
                if let Some(session) = abandoned
                    && !self.stop_session(station, session.clone()).await
                {
                    // Not ended now (the store is out of reach, or the unlock's answer is
                    // still being recorded): no report will ask again, so keep trying.
                    let retry_at = self.env.now_millis() + STOP_RETRY_MILLIS;
                    self.pending_stops
                        .insert((station.to_owned(), session), retry_at);
                }
            }
            SessionOutput::StopTransaction { call_id, request } => {
                // Answered only once both records are in: a stop answered and then lost
                // would leave the connector busy for the CSMS for ever.
                let transaction_id = request.transaction_id;
                let (id, event) = transaction_stopped(station, &request);
                if self.append_telemetry(station, &event, id).await.is_none() {
                    return;
                }
                let (ended, ran_for) = match self
                    .session_of_transaction(station, transaction_id)
                    .await
                {
                    Ok(Some((session, accepted))) => (
                        self.stop_session(station, session.clone()).await,
                        accepted.then_some(session),
                    ),
                    Ok(None) => {
                        tracing::info!(%station, transaction_id, "the stopped transaction was not started by this station's record: no session to end");
                        (true, None)
                    }
                    Err(error) => {
                        tracing::warn!(%station, transaction_id, %error, "the stopped transaction's start could not be read; the station sends the stop again");
                        (false, None)
                    }
                };
                // The stop's idTag (if any) is Accepted only as the one the transaction
                // ran for, and only if that one was (a session's id is the idTag it
                // released the connector to).
                let id_tag_accepted = request
                    .id_tag
                    .as_deref()
                    .map(|id_tag| ran_for.as_deref() == Some(id_tag));
                if ended && let Some(connection) = self.connections.get_mut(station) {
                    tracing::info!(%station, transaction_id, "StopTransaction answered");
                    connection
                        .session
                        .complete_stop_transaction(call_id, id_tag_accepted);
                }
            }
            SessionOutput::BootNotification {
                call_id,
                vendor,
                model,
            } => {
                let id = self.next_telemetry_id();
                let event = TelemetryEvent::BootAccepted { vendor, model };
                let recorded = self.append_telemetry(station, &event, id).await.is_some();
                if !recorded {
                    tracing::warn!(%station, "boot not recorded: answered Pending, the station boots again later");
                }
                if let Some(connection) = self.connections.get_mut(station) {
                    connection
                        .session
                        .complete_boot(call_id, recorded, self.env.now_millis());
                }
            }
            SessionOutput::StartTransaction { call_id, request } => {
                // Decided from everything recorded so far: whether the CSMS released this
                // connector for this idTag, and how many transactions the station has open.
                self.catch_up(subscription).await;
                let view = self.mirror.station(station);
                let open = view.map_or(0, |v| v.open_transactions.len());
                let resent = view.is_some_and(|v| {
                    v.connectors.get(&request.connector_id).is_some_and(|c| {
                        c.transaction_id.is_some() && c.id_tag.as_deref() == Some(&request.id_tag)
                    })
                });
                if open >= self.session_config.open_transactions_max && !resent {
                    if let Some(connection) = self.connections.get_mut(station) {
                        tracing::warn!(%station, open, "StartTransaction refused: too many open transactions");
                        connection.session.refuse(
                            call_id,
                            crate::ocpp::ErrorCode::OccurenceConstraintViolation,
                            "the station has as many open transactions as the CSMS keeps",
                        );
                    }
                    return;
                }
                let accepted =
                    self.mirror
                        .released_for(station, request.connector_id, &request.id_tag);
                let (id, event) = transaction_started(station, request, accepted);
                if let Some(position) = self.append_telemetry(station, &event, id).await
                    && let Some(connection) = self.connections.get_mut(station)
                {
                    tracing::info!(%station, transaction = transaction_id_at(position), accepted, "StartTransaction answered");
                    connection.session.complete_start_transaction(
                        call_id,
                        transaction_id_at(position),
                        accepted,
                    );
                }
            }
            SessionOutput::RemoteStartAnswered { call_id, status }
                if self
                    .direct
                    .contains_key(&(station.to_owned(), call_id.clone())) =>
            {
                if let Some(waiting) = self.direct.remove(&(station.to_owned(), call_id)) {
                    let _ = waiting.send(status);
                }
            }
            SessionOutput::RemoteStartAnswered { call_id, status } => {
                // Evidence must include everything recorded so far.
                self.catch_up(subscription).await;
                let evidence = match self.calls.remove(&(station.to_owned(), call_id.clone())) {
                    Some((connector, id_tag)) => {
                        self.mirror.unlock_evidence(station, connector, &id_tag)
                    }
                    None => UnlockEvidence::Unknown,
                };
                tracing::info!(%station, %call_id, ?status, ?evidence, "RemoteStartTransaction answered");
                self.dispatcher
                    .handle_answer(station, &call_id, status, evidence, now);
            }
            SessionOutput::RemoteStartFailed { call_id }
                if self
                    .direct
                    .contains_key(&(station.to_owned(), call_id.clone())) =>
            {
                self.direct.remove(&(station.to_owned(), call_id));
            }
            SessionOutput::RemoteStartFailed { call_id } => {
                tracing::info!(%station, %call_id, "RemoteStartTransaction refused with a CALLERROR");
                self.calls.remove(&(station.to_owned(), call_id.clone()));
                self.dispatcher.handle_call_error(station, &call_id, now);
            }
            SessionOutput::Authorize { call_id, id_tag } => {
                self.catch_up(subscription).await;
                let issued = self.mirror.id_tag_in_use(station, &id_tag);
                tracing::info!(%station, %id_tag, issued, "Authorize answered");
                if let Some(connection) = self.connections.get_mut(station) {
                    connection.session.complete_authorize(call_id, issued);
                }
            }
            SessionOutput::Online => {
                tracing::info!(%station, "station online: its boot is accepted");
                if !self.holds_lease(station) {
                    // Taking it when the station connected failed (the store was
                    // unreachable, or another node took it since): this node has the
                    // connection, so it takes the lease again.
                    self.take_lease(station).await;
                }
                self.dispatcher.handle_link(station, true, now);
            }
        }
    }

    async fn handle_effect(&mut self, effect: DispatchEffect) {
        match effect {
            DispatchEffect::Send {
                station,
                call_id,
                connector,
                id_tag,
            } => {
                if let Some(connection) = self.connections.get_mut(&station)
                    && connection
                        .session
                        .send_remote_start(&call_id, connector, &id_tag)
                {
                    tracing::info!(%station, %call_id, connector, %id_tag, "RemoteStartTransaction sent");
                    self.calls.insert((station, call_id), (connector, id_tag));
                }
            }
            DispatchEffect::RecordOutcome {
                station,
                session,
                answer,
            } => {
                let Ok(stream) = crate::domain::station::stream_of(&station) else {
                    return;
                };
                let command_id = outcome_command_id(&station, &session);
                let fence = match (self.fencing, self.leases.get(&station)) {
                    (Fencing::Unfenced, _) => None,
                    (Fencing::Fenced, Some((holder, token))) if *holder == self.node_id => {
                        Some(lease::fence(&station, *token))
                    }
                    (Fencing::Fenced, _) => {
                        tracing::warn!(%station, %session, "outcome not recorded: this node does not hold the station's lease");
                        return;
                    }
                };
                self.stall.before_recording(&station, answer).await;
                crate::faultpoint::reach(FaultPoint::OutcomeDecided, &station).await;
                tracing::info!(%station, %session, ?answer, "recording the unlock outcome");
                let command = StationCommand::RecordAnswer { session, answer };
                match self
                    .stations
                    .handle_if(&mut self.env, &stream, command_id, &command, fence.as_ref())
                    .await
                {
                    Ok(_) => {}
                    // Another node took the lease: what this node decided is not its to
                    // record. The new holder dispatches the request itself.
                    Err(HandleError::Append(AppendError::ConditionFailed { position })) => {
                        tracing::warn!(%station, %position, "outcome fenced off: another node holds the station's lease");
                        self.lease_lost(&station);
                    }
                    // Definitive answers: the outcome is already there, or cannot be.
                    Err(
                        error @ (HandleError::Rejected(_) | HandleError::CommandIdReused { .. }),
                    ) => {
                        tracing::warn!(%station, %error, "unlock outcome not recorded");
                    }
                    // The outcome is not durably known, and this incarnation would never
                    // retry it: stop, so that a restart re-dispatches from the checkpoint.
                    Err(error) => {
                        tracing::error!(%station, %error, "recording an unlock outcome failed; the node stops");
                        self.failed.trigger();
                    }
                }
            }
            DispatchEffect::SaveCheckpoint(position) => {
                let stream = checkpoint_stream(&self.node_id)
                    .expect("the node id was checked when the node started");
                let id = checkpoint_event_id(&self.node_id, position);
                let data = crate::core::types::EventData {
                    id,
                    event_type: "CheckpointSaved".into(),
                    tags: Vec::new(),
                    metadata: crate::core::types::Metadata {
                        recorded_at_millis: self.env.now_millis(),
                        ..Default::default()
                    },
                    payload: position.0.to_le_bytes().to_vec(),
                };
                match self
                    .store
                    .append(&stream, ExpectedVersion::Any, vec![data])
                    .await
                {
                    Ok(_) => {
                        self.checkpoint = Some(position);
                        crate::faultpoint::reach(FaultPoint::CheckpointSaved, &self.node_id).await;
                    }
                    Err(error) => tracing::warn!(%error, "saving the dispatcher checkpoint failed"),
                }
            }
        }
    }

    fn holds_lease(&self, station: &str) -> bool {
        self.leases
            .get(station)
            .is_some_and(|(holder, _)| *holder == self.node_id)
    }

    /// Takes `station`'s dispatch lease: this node now has its connection.
    async fn take_lease(&mut self, station: &str) {
        let Ok(stream) = lease::stream(station) else {
            return;
        };
        self.lease_takes += 1;
        let take = self.lease_takes ^ self.telemetry_nonce;
        let data = lease::taken(station, &self.node_id, take, self.env.now_millis());
        // The latest lease event wins, so no expected version: a take after another node's
        // simply supersedes it. An unknown outcome is settled by the same append again.
        for _attempt in 0..3 {
            match self
                .store
                .append(&stream, ExpectedVersion::Any, vec![data.clone()])
                .await
            {
                Ok(result) => {
                    tracing::info!(%station, token = %result.first_position, "dispatch lease taken");
                    crate::faultpoint::reach(FaultPoint::LeaseTaken, station).await;
                    self.lease_seen(
                        station.to_owned(),
                        self.node_id.clone(),
                        result.first_position,
                        false,
                    );
                    return;
                }
                Err(AppendError::OutcomeUnknown(error)) => {
                    tracing::warn!(%station, %error, "taking the dispatch lease: outcome unknown; again");
                }
                Err(error) => {
                    tracing::warn!(%station, %error, "the dispatch lease was not taken");
                    return;
                }
            }
        }
    }

    /// A lease event for `station`, read back in order (`read_back`) or just appended.
    /// Older news than what the node knows is ignored; otherwise it decides whether the
    /// dispatcher acts for the station, and a node that lost the lease closes its
    /// connection to the station (the station has connected elsewhere since).
    ///
    /// A lease of this node's own is acted on only once the subscription reads it back:
    /// the node then has read everything stored before it, so every outcome recorded under
    /// an earlier lease — by the holders it fenced off — is known before anything is sent.
    /// Acting on the take alone would dispatch from whatever view the node had, however
    /// stale (after a pause, say), and unlock for a request already recorded Rejected.
    /// Until then the token is known (what the node records is fenced by it) but nothing
    /// is dispatched.
    fn lease_seen(
        &mut self,
        station: String,
        holder: String,
        token: GlobalPosition,
        read_back: bool,
    ) {
        let now = self.env.now_millis();
        let mine = holder == self.node_id;
        match self.leases.get(&station) {
            Some((_, known)) if *known > token => return,
            Some((known_holder, known)) if *known == token => {
                // This node's take, read back; unless a fenced append was refused since
                // (which clears the holder: a newer lease exists).
                if mine && read_back && *known_holder == self.node_id {
                    self.dispatcher.handle_ownership(&station, true, now);
                }
                return;
            }
            _ => {}
        }
        self.leases.insert(station.clone(), (holder, token));
        self.dispatcher
            .handle_ownership(&station, mine && read_back, now);
        if !mine && self.connections.remove(&station).is_some() {
            tracing::info!(%station, "another node took the dispatch lease; closing this connection");
            self.dispatcher.handle_link(&station, false, now);
        }
    }

    /// An append fenced by `station`'s lease was refused: a newer lease exists, which the
    /// subscription will bring. Until then the node acts for the station no more.
    fn lease_lost(&mut self, station: &str) {
        if let Some((holder, _)) = self.leases.get_mut(station) {
            // Holder unknown, token kept: only the newer lease event applies now.
            holder.clear();
        }
        let now = self.env.now_millis();
        self.dispatcher.handle_ownership(station, false, now);
    }

    /// Feeds every event already stored to the mirror and the dispatcher.
    async fn catch_up(&mut self, subscription: &mut CatchUpSubscription<S>) {
        while let Ok(Some(event)) = subscription.try_next().await {
            self.handle_event(&event);
        }
    }

    /// The session (idTag) a station's transaction belongs to, as the mirror knows it.
    /// The session (idTag) a transaction of `station` was started for, read from its
    /// TransactionStarted, which sits at the position the transaction id names (see
    /// [`transaction_id_at`]): a stop sent again after its first handling finds it as
    /// surely as the first did. `None` for an id that names no start of this station.
    async fn session_of_transaction(
        &self,
        station: &str,
        transaction_id: i64,
    ) -> Result<Option<(String, bool)>, ReadError> {
        let Some(position) = u64::try_from(transaction_id)
            .ok()
            .and_then(|id| id.checked_sub(1))
        else {
            return Ok(None);
        };
        let Ok(stream) = TelemetryEvent::stream(station) else {
            return Ok(None);
        };
        Ok(event_at(&self.store, GlobalPosition(position))
            .await?
            .filter(|event| event.stream == stream)
            .and_then(|event| TelemetryEvent::decode(&event.event_type, &event.payload).ok())
            .and_then(|event| match event {
                TelemetryEvent::TransactionStarted {
                    id_tag,
                    id_tag_accepted,
                    ..
                } => Some((id_tag, id_tag_accepted)),
                _ => None,
            }))
    }

    /// Ends the abandoned sessions whose end is due for another try (see
    /// `pending_stops`).
    async fn retry_stops(&mut self) {
        let now = self.env.now_millis();
        let due: Vec<(String, String)> = self
            .pending_stops
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for (station, session) in due {
            if self.stop_session(&station, session.clone()).await {
                self.pending_stops.remove(&(station, session));
            } else {
                let retry_at = self.env.now_millis() + STOP_RETRY_MILLIS;
                self.pending_stops.insert((station, session), retry_at);
            }
        }
    }

    /// The driver unplugged (or never plugged in): end the business session. A
    /// process-manager reaction with a command id derived from (station, session), so a
    /// resent StopTransaction has one effect; a session the aggregate does not hold as
    /// active is left alone. False when the end could not be recorded yet.
    async fn stop_session(&mut self, station: &str, session: String) -> bool {
        tracing::info!(%station, %session, "ending the session");
        let Ok(stream) = crate::domain::station::stream_of(station) else {
            return true;
        };
        let command_id = CommandId(hash128(
            format!("stop\u{1f}{station}\u{1f}{session}").as_bytes(),
        ));
        let command = StationCommand::StopSession { session };
        match self
            .stations
            .handle(&mut self.env, &stream, command_id, &command)
            .await
        {
            Ok(_) => true,
            // The stop overtook the unlock's answer, which is still being recorded: the
            // session is ended once it is (the station sends its stop again).
            Err(HandleError::Rejected(StationRejection::AnswerPending { .. })) => {
                tracing::info!(%station, "the session's unlock answer is not recorded yet; ending it later");
                false
            }
            // The aggregate holds no such active session (a start it never issued, an
            // unlock recorded Rejected): there is nothing to end.
            Err(HandleError::Rejected(rejection)) => {
                tracing::debug!(%station, ?rejection, "no session to stop");
                true
            }
            Err(error) => {
                tracing::warn!(%station, %error, "session not stopped; the station sends the stop again");
                false
            }
        }
    }

    /// A fresh id for a telemetry event of this node incarnation.
    fn next_telemetry_id(&mut self) -> EventId {
        self.telemetry_count += 1;
        let key = format!(
            "telemetry\u{1f}{}\u{1f}{}",
            self.telemetry_nonce, self.telemetry_count
        );
        EventId(hash128(key.as_bytes()))
    }

    async fn record_telemetry(&mut self, station: &str, event: TelemetryEvent) {
        let id = self.next_telemetry_id();
        let chatty = self.stations.notes_telemetry()
            && matches!(
                event,
                TelemetryEvent::HeartbeatReceived | TelemetryEvent::StatusReported { .. }
            );
        if !chatty {
            self.append_telemetry(station, &event, id).await;
            return;
        }
        let Ok(stream) = crate::domain::station::stream_of(station) else {
            return;
        };
        // Each report is handled on its own, as a request handler per message would:
        // it loads the aggregate, decides and appends, racing everything else on the
        // stream (seed 000: "in both threads, they would load the StationAggregate").
        let handler = self.stations.clone();
        let mut env = SystemEnvironment::new(self.env.random_u64());
        let station = station.to_owned();
        tokio::spawn(async move {
            if let Err(error) = handler
                .note(&mut env, &stream, CommandId(id.0), &event)
                .await
            {
                tracing::warn!(%station, %error, "N5: telemetry not recorded on the station");
            }
        });
    }

    async fn append_telemetry(
        &mut self,
        station: &str,
        event: &TelemetryEvent,
        id: EventId,
    ) -> Option<GlobalPosition> {
        let stream = TelemetryEvent::stream(station).ok()?;
        let data = event.to_data(id, self.env.now_millis());
        match self
            .store
            .append(&stream, ExpectedVersion::Any, vec![data])
            .await
        {
            Ok(result) => Some(result.first_position),
            Err(error) => {
                tracing::warn!(%station, %error, "recording telemetry failed");
                None
            }
        }
    }
}

/// Reading again after the store was unavailable: the first retry after
/// [`READ_RETRY_MIN`], each next one twice as late, up to [`READ_RETRY_MAX`]. A store that
/// restarts or a partition that heals costs the node a pause, not a restart and a replay
/// of everything it had read.
#[derive(Debug)]
struct ReadRetry {
    delay: std::time::Duration,
    resume_at: Option<tokio::time::Instant>,
}

const READ_RETRY_MIN: std::time::Duration = std::time::Duration::from_millis(100);
const READ_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

impl Default for ReadRetry {
    fn default() -> ReadRetry {
        ReadRetry {
            delay: READ_RETRY_MIN,
            resume_at: None,
        }
    }
}

impl ReadRetry {
    /// Whether reading may go on now.
    fn ready(&self) -> bool {
        self.resume_at.is_none()
    }

    fn succeeded(&mut self) {
        self.delay = READ_RETRY_MIN;
    }

    /// A read found the store unavailable: returns how long to wait before the next.
    fn failed(&mut self) -> std::time::Duration {
        let delay = self.delay;
        self.resume_at = Some(tokio::time::Instant::now() + delay);
        self.delay = (delay * 2).min(READ_RETRY_MAX);
        delay
    }

    /// Resolves when the wait after a failed read is over (at once if there is none).
    async fn backed_off(&self) {
        if let Some(at) = self.resume_at {
            tokio::time::sleep_until(at).await;
        }
    }

    fn resume(&mut self) {
        self.resume_at = None;
    }
}

/// Keeps a projection caught up with the store, saving state and checkpoint together
/// every `save_every` events and once more at shutdown. A store that is unavailable is
/// read again later ([`ReadRetry`]); any other failure stops the node.
async fn run_projection<S: EventStore, P: Projection>(
    mut runner: ProjectionRunner<S, P>,
    save_every: u64,
    shutdown: Shutdown,
    failed: Shutdown,
) {
    let clock = SystemEnvironment::new(0);
    let mut unsaved = 0u64;
    let mut reads = ReadRetry::default();
    loop {
        match runner.catch_up().await {
            Ok(applied) => {
                reads.succeeded();
                unsaved += applied;
            }
            Err(ProjectionError::Read(ReadError::Unavailable(error))) => {
                let delay = reads.failed();
                tracing::warn!(projection = P::NAME, %error, delay_ms = delay.as_millis() as u64, "projection: the store is unavailable; reading again later");
                tokio::select! {
                    biased;
                    _ = shutdown.wait() => break,
                    () = reads.backed_off() => reads.resume(),
                }
                continue;
            }
            Err(error) => {
                tracing::error!(projection = P::NAME, %error, "projection stopped");
                failed.trigger();
                return;
            }
        }
        if unsaved >= save_every.max(1) {
            match runner.save(clock.now_millis()).await {
                Ok(()) => unsaved = 0,
                Err(error) => {
                    tracing::warn!(projection = P::NAME, %error, "saving the projection failed")
                }
            }
        }
        let seen = runner.checkpoint().map_or(0, |c| c.0 + 1);
        tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            _ = runner_wait(&runner, seen) => {}
        }
    }
    if unsaved > 0 && runner.catch_up().await.is_ok() {
        let _ = runner.save(clock.now_millis()).await;
    }
}

async fn runner_wait<S: EventStore, P: Projection>(runner: &ProjectionRunner<S, P>, seen: u64) {
    let _ = runner.store().wait_for_event_count_above(seen).await;
}

/// Runs one client command: through the handler (correct), or for the naive design N1
/// through [`side_effect_first`].
async fn run_command<S: EventStore>(
    shared: &Shared<S>,
    env: &mut SystemEnvironment,
    stream: StreamId,
    command_id: CommandId,
    command: StationCommand,
) -> api::ApiResponse {
    let request = api::ParsedRequest {
        command_id,
        stream,
        command,
    };
    if let Some(timeout) = shared.naive_call_timeout_millis {
        return side_effect_first(&shared.handler, env, &shared.hub, timeout, request).await;
    }
    let id = format!("{command_id}");
    match shared
        .handler
        .handle(env, &request.stream, command_id, &request.command)
        .await
    {
        Ok(Outcome::AlreadyApplied { position }) => {
            // The same command id again: the earlier answer only if it is the same
            // request; another body under a used id is a conflict, never silently dropped.
            match recorded_request(&shared.store, position).await {
                Ok(Some(event)) if !request.command.is_recorded_as(&event) => {
                    api::ApiResponse::error(
                        id,
                        api::ErrorCode::CommandIdReused,
                        format!(
                            "command id already used for a different request, recorded at position {}: {event:?}",
                            position.0
                        ),
                    )
                }
                Ok(_) => outcome_response(id, &Outcome::AlreadyApplied { position }),
                Err(error) => {
                    api::ApiResponse::failed(id, &HandleError::<StationRejection>::Read(error))
                }
            }
        }
        Ok(outcome) => outcome_response(id, &outcome),
        Err(error) => api::ApiResponse::failed(id, &error),
    }
}

/// The station event recorded at `position`, if it is one.
async fn recorded_request<S: EventStore>(
    store: &S,
    position: GlobalPosition,
) -> Result<Option<crate::domain::station::StationEvent>, ReadError> {
    Ok(event_at(store, position)
        .await?
        .and_then(|event| Station::decode_event(&event.event_type, &event.payload).ok()))
}

/// The event stored at `position`, if there is one.
async fn event_at<S: EventStore>(
    store: &S,
    position: GlobalPosition,
) -> Result<Option<crate::core::types::RecordedEvent>, ReadError> {
    let page = store.read_all(position, 1).await?;
    Ok(page
        .into_iter()
        .next()
        .filter(|event| event.position == position))
}

/// The naive design N1, on purpose: the side effect first, inside the command, and only
/// then the append of the request and its answer. Retries repeat the side effect; a crash
/// or a lost answer in between leaves what the store does not know.
async fn side_effect_first<S: EventStore>(
    handler: &StationHandler<S>,
    env: &mut SystemEnvironment,
    hub: &mpsc::Sender<HubInput>,
    timeout_millis: u64,
    request: api::ParsedRequest,
) -> api::ApiResponse {
    let command_id = format!("{}", request.command_id);
    let StationCommand::RequestUnlock { connector, session } = &request.command else {
        return api::ApiResponse::error(
            command_id,
            api::ErrorCode::BadRequest,
            "only unlocks are served",
        );
    };
    let station = crate::domain::station::station_of(&request.stream)
        .unwrap_or_default()
        .to_owned();
    let (answer, heard) = tokio::sync::oneshot::channel();
    let input = HubInput::SendDirect {
        station: station.clone(),
        connector: *connector,
        id_tag: session.clone(),
        answer,
    };
    if hub.send(input).await.is_err() {
        return api::ApiResponse::error(command_id, api::ErrorCode::Unavailable, "node stopping");
    }
    let status =
        match tokio::time::timeout(std::time::Duration::from_millis(timeout_millis), heard).await {
            Ok(Ok(status)) => status,
            _ => {
                return api::ApiResponse::error(
                    command_id,
                    api::ErrorCode::Unavailable,
                    "the station did not answer",
                );
            }
        };
    let outcome = match handler
        .handle(env, &request.stream, request.command_id, &request.command)
        .await
    {
        Ok(outcome) => outcome,
        Err(error) => return api::ApiResponse::failed(command_id, &error),
    };
    let answer = match status {
        crate::ocpp::messages::RemoteStartStopStatus::Accepted => StationAnswer::Accepted,
        crate::ocpp::messages::RemoteStartStopStatus::Rejected => StationAnswer::Rejected,
    };
    let record = StationCommand::RecordAnswer {
        session: session.clone(),
        answer,
    };
    let record_id = outcome_command_id(&station, session);
    if let Err(error) = handler
        .handle(env, &request.stream, record_id, &record)
        .await
    {
        tracing::warn!(%station, %error, "N1: the answer was not recorded");
    }
    outcome_response(command_id, &outcome)
}

/// The command id under which the answer to `session`'s unlock is recorded: one per
/// request, so recording it twice takes effect once.
fn outcome_command_id(station: &str, session: &str) -> CommandId {
    CommandId(hash128(
        format!("outcome\u{1f}{station}\u{1f}{session}").as_bytes(),
    ))
}

fn outcome_response(command_id: String, outcome: &Outcome) -> api::ApiResponse {
    let (name, position) = match outcome {
        Outcome::Applied { result, .. } => ("Applied", Some(result.first_position.0)),
        Outcome::AlreadyApplied { position } => ("AlreadyApplied", Some(position.0)),
        Outcome::Unchanged { .. } => ("Unchanged", None),
    };
    api::ApiResponse {
        command_id,
        outcome: Some(name.to_owned()),
        position,
        error: None,
        code: None,
    }
}
