//! Runs a simulated [`ChargePoint`] over OCPP 1.6-J — a WebSocket to `/ocpp/{id}` with the
//! `ocpp1.6` subprotocol and Basic authentication — to a CSMS node: the shell around the
//! sans-IO station. It only moves frames and timers; the station decides everything.
//! The station is shared behind a mutex so that a test or the simulator can inject
//! physical events and read the ground truth while it runs.
//!
//! The simulator also injects faults here, between the station and its socket: frames
//! lost, duplicated and delayed past each other (F4), and a station clock that is off and
//! drifts (F5). Every such choice comes from [`LinkFaults::seed`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::chargepoint::ChargePoint;
use crate::environment::{Environment, SplitMix64, SystemEnvironment};
use crate::oracles::protocol::WireOracle;
use crate::signal::Shutdown;

/// A charge point shared between its driver and whoever watches it.
pub type SharedChargePoint = Arc<Mutex<ChargePoint>>;

fn lock(station: &SharedChargePoint) -> MutexGuard<'_, ChargePoint> {
    station.lock().unwrap_or_else(|p| p.into_inner())
}

/// Faults on one station's link (F4) and clock (F5). The default injects nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinkFaults {
    /// Probability that a frame, in either direction, is lost.
    pub loss: f64,
    /// Probability that a frame is delivered twice.
    pub duplicate: f64,
    /// Every frame is held back a random time up to this long, so frames overtake each other.
    pub delay_max_millis: u64,
    /// The station's clock runs this far ahead of the CSMS's (negative: behind).
    pub clock_offset_millis: i64,
    /// …and gains this many milliseconds per second of real time (negative: loses).
    pub clock_drift_per_mille: i64,
    /// Seeds every loss, duplication and delay.
    pub seed: u64,
}

impl LinkFaults {
    fn any_message_fault(&self) -> bool {
        self.loss > 0.0 || self.duplicate > 0.0 || self.delay_max_millis > 0
    }
}

/// What a link's faults did, for the simulator's summary, and what the wire oracle (I12)
/// saw of the CSMS.
#[derive(Debug, Default)]
pub struct LinkCounters {
    pub lost: AtomicU64,
    pub duplicated: AtomicU64,
    pub delayed: AtomicU64,
    /// Frames from the CSMS the wire oracle checked.
    pub frames_checked: AtomicU64,
    /// The wire oracle's first violations (I12), and how many there were in all.
    pub wire_violations: Mutex<(Vec<String>, u64)>,
}

impl LinkCounters {
    /// The first violations of I12 any station saw, and their number.
    pub fn wire_violations(&self) -> (Vec<String>, u64) {
        self.wire_violations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Violations of I12 the shared counters keep, over all stations.
const WIRE_VIOLATIONS_KEPT_MAX: usize = 16;

/// How often the station pings the CSMS over its WebSocket (OCPP-J's
/// WebSocketPingInterval), so that a CSMS that stopped answering is noticed even when the
/// station has nothing to say.
pub const PING_INTERVAL: Duration = Duration::from_secs(20);
/// A CSMS silent for this long — no frame, not even a pong — is presumed gone: the station
/// closes the connection and connects again, to whichever node it picks.
pub const CSMS_SILENCE_MAX: Duration = Duration::from_secs(60);
/// A CSMS that has not completed the TCP connect and the WebSocket handshake within this
/// long (a frozen process accepts nothing) is given up on: the station picks a node again.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects, speaks, and reconnects after `reconnect_delay` until shutdown. `csms` lists
/// the nodes that serve it (a load balancer's pool): each connection goes to one of them,
/// picked afresh every time from the link's seed. `password` is the station's
/// AuthorizationKey, registered with the CSMS.
pub async fn run_station(
    station: SharedChargePoint,
    csms: Vec<SocketAddr>,
    password: String,
    reconnect_delay: Duration,
    shutdown: Shutdown,
) {
    // Nobody reads this link's counters: a violation of I12 stops the run loudly.
    let mut link = Link::new(LinkFaults::default(), Arc::default());
    link.panic_on_wire_violation = true;
    run_station_over(station, csms, password, reconnect_delay, link, shutdown).await;
}

/// [`run_station`] with faults injected on the link and the clock; what the wire oracle
/// sees goes to `counters`.
pub async fn run_station_with_faults(
    station: SharedChargePoint,
    csms: Vec<SocketAddr>,
    password: String,
    reconnect_delay: Duration,
    faults: LinkFaults,
    counters: Arc<LinkCounters>,
    shutdown: Shutdown,
) {
    let link = Link::new(faults, counters);
    run_station_over(station, csms, password, reconnect_delay, link, shutdown).await;
}

async fn run_station_over(
    station: SharedChargePoint,
    csms: Vec<SocketAddr>,
    password: String,
    reconnect_delay: Duration,
    mut link: Link,
    shutdown: Shutdown,
) {
    loop {
        if shutdown.is_triggered() {
            return;
        }
        let id = lock(&station).id().to_owned();
        assert!(!csms.is_empty(), "a station needs a CSMS to connect to");
        let csms = match csms.len() {
            1 => csms[0],
            nodes => csms[(link.rng.next_u64() % nodes as u64) as usize],
        };
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let stream = TcpStream::connect(csms).await.ok()?;
            handshake(stream, csms, &id, &password).await
        })
        .await;
        if let Ok(Some(ws)) = connected {
            let ended = connection(&station, ws, &mut link, &shutdown).await;
            lock(&station).handle_disconnected();
            if ended == Ended::Shutdown {
                return;
            }
        }
        tokio::select! {
            biased;
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(reconnect_delay) => {}
        }
    }
}

/// The station's clock and the frames held back on its link.
struct Link {
    faults: LinkFaults,
    counters: Arc<LinkCounters>,
    rng: SplitMix64,
    system: SystemEnvironment,
    started_millis: u64,
    /// Frames on their way, keyed by (delivery time, sequence number).
    to_csms: BTreeMap<(u64, u64), String>,
    to_station: BTreeMap<(u64, u64), String>,
    sequence: u64,
    /// I12, judged at the station's socket.
    wire: Option<WireOracle>,
    /// Violations already passed to the counters.
    wire_reported: u64,
    panic_on_wire_violation: bool,
}

impl Link {
    fn new(faults: LinkFaults, counters: Arc<LinkCounters>) -> Link {
        let system = SystemEnvironment::new(0);
        Link {
            rng: SplitMix64::new(faults.seed),
            started_millis: system.now_millis(),
            system,
            faults,
            counters,
            to_csms: BTreeMap::new(),
            to_station: BTreeMap::new(),
            sequence: 0,
            wire: None,
            wire_reported: 0,
            panic_on_wire_violation: false,
        }
    }

    /// The wire oracle of `station`, made on first use.
    fn wire(&mut self, station: &str) -> &mut WireOracle {
        self.wire.get_or_insert_with(|| WireOracle::new(station))
    }

    fn wire_connected(&mut self, station: &str) {
        self.wire(station).connected();
    }

    /// A frame the CSMS sent, as it arrived at the station's socket.
    fn wire_from_csms(&mut self, station: &str, text: &str) {
        self.wire(station).from_csms(text);
        self.counters.frames_checked.fetch_add(1, Ordering::Relaxed);
        let reported = self.wire_reported;
        let (violations, count) = self.wire(station).violations();
        if count == reported {
            return;
        }
        let fresh: Vec<String> = violations.iter().skip(reported as usize).cloned().collect();
        let new_count = count - reported;
        self.wire_reported = count;
        if self.panic_on_wire_violation {
            panic!(
                "I12: the CSMS broke OCPP-J on the wire: {}",
                fresh.join("; ")
            );
        }
        let mut shared = self
            .counters
            .wire_violations
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        shared.1 += new_count;
        for violation in fresh {
            if shared.0.len() < WIRE_VIOLATIONS_KEPT_MAX {
                shared.0.push(violation);
            }
        }
    }

    /// A frame handed to the CSMS (after the link's faults).
    fn wire_to_csms(&mut self, station: &str, text: &str) {
        self.wire(station).to_csms(text);
    }

    /// The CSMS's time: what the link's delays are measured in.
    fn real_now(&self) -> u64 {
        self.system.now_millis()
    }

    /// The station's own clock: offset and drifting (F5).
    fn station_now(&self) -> u64 {
        let real = self.real_now();
        let elapsed = real.saturating_sub(self.started_millis) as i64;
        let skew =
            self.faults.clock_offset_millis + elapsed * self.faults.clock_drift_per_mille / 1_000;
        real.saturating_add_signed(skew)
    }

    fn chance(&mut self, probability: f64) -> bool {
        probability > 0.0 && (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= probability
    }

    /// Puts `text` on its way (F4: maybe lost, duplicated, delayed).
    fn send(&mut self, text: String, to_csms: bool) {
        if !self.faults.any_message_fault() {
            let now = self.real_now();
            self.enqueue(text, now, to_csms);
            return;
        }
        if self.chance(self.faults.loss) {
            self.counters.lost.fetch_add(1, Ordering::Relaxed);
            tracing::info!(to_csms, frame = %text, "fault: frame lost");
            return;
        }
        let copies = if self.chance(self.faults.duplicate) {
            self.counters.duplicated.fetch_add(1, Ordering::Relaxed);
            tracing::info!(to_csms, frame = %text, "fault: frame duplicated");
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = match self.faults.delay_max_millis {
                0 => 0,
                max => self.rng.below(max + 1),
            };
            if delay > 0 {
                self.counters.delayed.fetch_add(1, Ordering::Relaxed);
            }
            let at = self.real_now() + delay;
            self.enqueue(text.clone(), at, to_csms);
        }
    }

    fn queue(&mut self, to_csms: bool) -> &mut BTreeMap<(u64, u64), String> {
        if to_csms {
            &mut self.to_csms
        } else {
            &mut self.to_station
        }
    }

    fn enqueue(&mut self, text: String, at: u64, to_csms: bool) {
        self.sequence += 1;
        let sequence = self.sequence;
        self.queue(to_csms).insert((at, sequence), text);
    }

    /// Frames due by now, in delivery order.
    fn due(&mut self, to_csms: bool) -> Vec<String> {
        let now = self.real_now();
        let queue = self.queue(to_csms);
        let later = queue.split_off(&(now + 1, 0));
        std::mem::replace(queue, later).into_values().collect()
    }

    fn next_delivery(&self) -> Option<u64> {
        let first = |queue: &BTreeMap<(u64, u64), String>| queue.keys().next().map(|k| k.0);
        [first(&self.to_csms), first(&self.to_station)]
            .into_iter()
            .flatten()
            .min()
    }

    /// A dropped connection loses whatever was still on its way.
    fn disconnect(&mut self) {
        self.to_csms.clear();
        self.to_station.clear();
    }
}

/// The station's WebSocket to the CSMS.
pub type StationSocket = tokio_tungstenite::WebSocketStream<TcpStream>;

/// Opens the OCPP 1.6-J WebSocket over an existing stream (`client_async`: a handshake
/// that opened its own socket would escape the simulator). A refusal is logged and
/// ends this attempt.
pub async fn handshake(
    stream: TcpStream,
    csms: SocketAddr,
    id: &str,
    password: &str,
) -> Option<StationSocket> {
    handshake_as(stream, csms, id, id, password).await
}

/// [`handshake`] for the station `id` with the Basic credentials of `user` — another
/// station's, when an impostor (F11) tries them.
pub async fn handshake_as(
    stream: TcpStream,
    csms: SocketAddr,
    id: &str,
    user: &str,
    password: &str,
) -> Option<StationSocket> {
    let url = format!("ws://{csms}{}{id}", super::server::OCPP_PATH_PREFIX);
    let mut request = url.into_client_request().ok()?;
    let headers = request.headers_mut();
    headers.insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(super::server::OCPP16),
    );
    headers.insert(
        "Authorization",
        HeaderValue::from_str(&super::auth::basic_header(user, password)).ok()?,
    );
    let config = Some(super::server::websocket_config());
    match tokio_tungstenite::client_async_with_config(request, stream, config).await {
        Ok((ws, _)) => Some(ws),
        Err(error) => {
            tracing::info!(station = id, %error, "the CSMS refused the connection");
            None
        }
    }
}

/// Sends `frames` one by one over an open station socket, waiting up to `answer_wait`
/// for something back after each, then closes it. For callers that only speak a script
/// (an impostor, F11); stations proper go through [`run_station`].
pub async fn say_and_close(mut ws: StationSocket, frames: &[String], answer_wait: Duration) {
    for frame in frames {
        if ws.send(Message::text(frame.as_str())).await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(answer_wait, ws.next()).await;
    }
    let _ = ws.close(None).await;
}

#[derive(PartialEq, Eq)]
enum Ended {
    Shutdown,
    Disconnected,
}

async fn connection(
    station: &SharedChargePoint,
    stream: StationSocket,
    link: &mut Link,
    shutdown: &Shutdown,
) -> Ended {
    let ended = speak(station, stream, link, shutdown).await;
    link.disconnect();
    ended
}

async fn speak(
    station: &SharedChargePoint,
    mut ws: StationSocket,
    link: &mut Link,
    shutdown: &Shutdown,
) -> Ended {
    lock(station).handle_connected(link.station_now());
    let station_id = lock(station).id().to_owned();
    tracing::info!(station = %station_id, "connected to the CSMS");
    link.wire_connected(&station_id);
    let mut heard = tokio::time::Instant::now();
    let mut pinged = heard;
    loop {
        // Deliver what arrived, let the station speak, then send what is due.
        let (next_timer, id) = {
            let mut station = lock(station);
            for text in link.due(false) {
                deliver(&mut station, &text, link.station_now());
            }
            let now = link.station_now();
            let outgoing: Vec<String> = std::iter::from_fn(|| station.poll_transmit(now)).collect();
            for text in outgoing {
                link.send(text, true);
            }
            (station.poll_timeout(), station.id().to_owned())
        };
        for text in link.due(true) {
            link.wire_to_csms(&station_id, &text);
            if ws.send(Message::text(text)).await.is_err() {
                return Ended::Disconnected;
            }
        }
        if heard.elapsed() >= CSMS_SILENCE_MAX {
            tracing::info!(station = %id, "the CSMS has been silent too long; reconnecting");
            return Ended::Disconnected;
        }
        if pinged.elapsed() >= PING_INTERVAL {
            pinged = tokio::time::Instant::now();
            if ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                return Ended::Disconnected;
            }
        }
        let timer_wait = next_timer.map_or(1_000, |at| at.saturating_sub(link.station_now()));
        let delivery_wait = link
            .next_delivery()
            .map_or(1_000, |at| at.saturating_sub(link.real_now()));
        let wait = timer_wait.min(delivery_wait).min(1_000);
        tokio::select! {
            biased;
            _ = shutdown.wait() => return Ended::Shutdown,
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    heard = tokio::time::Instant::now();
                    link.wire_from_csms(&station_id, text.as_str());
                    link.send(text.as_str().to_owned(), false);
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                    heard = tokio::time::Instant::now();
                }
                _ => {
                    tracing::info!(station = %id, "connection to the CSMS closed");
                    return Ended::Disconnected;
                }
            },
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {
                let now = link.station_now();
                let mut station = lock(station);
                if station.poll_timeout().is_some_and(|at| at <= now) {
                    station.handle_timeout(now);
                }
            }
        }
    }
}

/// Hands one frame to the station and logs any unlock it caused.
fn deliver(station: &mut ChargePoint, text: &str, now: u64) {
    let before = station.actuations().len();
    station.handle_text(text, now);
    for actuation in &station.actuations()[before..] {
        tracing::info!(
            station = station.id(),
            connector = actuation.connector,
            id_tag = %actuation.id_tag,
            "connector unlocked (physical)"
        );
    }
}
