//! The node's one listener: every connection starts as HTTP/1.1. `GET /ocpp/{id}` with a
//! WebSocket upgrade becomes a charge point connection (OCPP 1.6-J, subprotocol
//! `ocpp1.6`, security profile 1); `/api/…` is the operator API ([`super::operator`]).
//!
//! The WebSocket handshake is answered here rather than by tungstenite's `accept`, so that
//! checking a station's registration (a store read) and its password (Argon2, CPU) can
//! be asynchronous and the same port can serve both. Everything after the handshake is
//! tungstenite's, over madsim's or tokio's `TcpStream`: the simulator runs this very code.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::http::{self, Head, Response};
use super::{
    CONNECTION_QUEUE_MAX, HubInput, PASSWORD_CHECK_WAIT, Shared, ToStation, WireDirection, auth,
    operator,
};
use crate::ocpp::frame::FRAME_BYTES_MAX;
use crate::signal::Shutdown;

/// The WebSocket subprotocol of OCPP 1.6-J.
pub const OCPP16: &str = "ocpp1.6";
/// The WebSocket read buffer of a connection, either end.
const READ_BUFFER_BYTES: usize = 8 * 1024;
/// Where charge points connect: `/ocpp/{chargePointId}`.
pub const OCPP_PATH_PREFIX: &str = "/ocpp/";

/// How long a connection may take to send a request head or body (or stay idle between
/// requests) before it is closed.
pub const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Accepts connections until shutdown.
pub(super) async fn accept<S: crate::store::EventStore>(
    listener: TcpListener,
    shared: Arc<Shared<S>>,
) {
    let mut next_connection = 1u64;
    loop {
        // At most CONNECTIONS_MAX at once: past it, the next waits in the backlog.
        let permit = tokio::select! {
            biased;
            _ = shared.shutdown.wait() => return,
            permit = shared.connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        tokio::select! {
            biased;
            _ = shared.shutdown.wait() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let connection = next_connection;
                    next_connection += 1;
                    tracing::debug!(%peer, connection, "connection accepted");
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        serve(stream, peer.ip(), connection, shared).await;
                        drop(permit);
                    });
                }
                Err(error) => {
                    // Out of descriptors, say: the next attempt can wait a moment
                    // rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// One connection: HTTP requests until it upgrades, closes, or breaks the protocol.
async fn serve<S: crate::store::EventStore>(
    mut stream: TcpStream,
    peer: std::net::IpAddr,
    connection: u64,
    shared: Arc<Shared<S>>,
) {
    let mut buffer = Vec::new();
    loop {
        let head = tokio::select! {
            biased;
            _ = shared.shutdown.wait() => return,
            head = tokio::time::timeout(HEAD_TIMEOUT, http::read_head(&mut stream, &mut buffer)) => head,
        };
        let head = match head {
            Ok(Ok(Some(head))) => head,
            // Closed between requests, or idle (or trickling a head) for too long.
            Ok(Ok(None)) | Err(_) => return,
            Ok(Err(error)) => return refuse(&mut stream, &error).await,
        };
        if let Some(station) = head.path.strip_prefix(OCPP_PATH_PREFIX) {
            let station = station.to_owned();
            match admit(&head, &station, peer, &shared).await {
                Ok(accept_key) => {
                    let ws = upgrade(stream, accept_key, buffer).await;
                    if let Some(ws) = ws {
                        station_connection(ws, station, connection, &shared).await;
                    }
                }
                Err(response) => {
                    let _ = http::write_response(&mut stream, &response, true).await;
                }
            }
            return;
        }
        let body = tokio::time::timeout(
            HEAD_TIMEOUT,
            http::read_body(&mut stream, &head, &mut buffer),
        );
        let response = match body.await {
            Err(_) => return,
            Ok(Ok(body)) => operator::handle(&shared, &head, peer, &body).await,
            Ok(Err(error)) => return refuse(&mut stream, &error).await,
        };
        if http::write_response(&mut stream, &response, head.close)
            .await
            .is_err()
            || head.close
        {
            return;
        }
    }
}

/// Answers a request that could not be read with its status, if the connection can still
/// carry one; the caller then closes the connection.
async fn refuse(stream: &mut TcpStream, error: &http::HttpError) {
    if let Some(status) = error.status() {
        let response = Response::error(status, error.to_string());
        let _ = http::write_response(stream, &response, true).await;
    }
}

/// Decides a charge point's upgrade request: a well-formed WebSocket upgrade offering
/// `ocpp1.6`, for a registered id, with that id's password. Returns the
/// `Sec-WebSocket-Accept` value, or the refusal to send. Refusals never say whether the
/// id or the password was wrong, and the password is never logged.
async fn admit<S: crate::store::EventStore>(
    head: &Head,
    station: &str,
    peer: std::net::IpAddr,
    shared: &Shared<S>,
) -> Result<String, Response> {
    if head.method != "GET" {
        return Err(Response::error(405, "charge points connect with GET"));
    }
    let key = head.header("sec-websocket-key");
    let upgrade = head.header_has_token("upgrade", "websocket")
        && head.header_has_token("connection", "upgrade")
        && head.header("sec-websocket-version") == Some("13");
    let Some(key) = key.filter(|_| upgrade) else {
        return Err(
            Response::error(426, "a WebSocket upgrade (version 13) is required")
                .with_header("Sec-WebSocket-Version", "13"),
        );
    };
    if !head.header_has_token("sec-websocket-protocol", OCPP16) {
        return Err(Response::error(
            400,
            format!("the WebSocket subprotocol {OCPP16} must be offered"),
        ));
    }
    if auth::check_station_id(station).is_err() {
        return Err(Response::error(404, "no such charge point"));
    }
    let unauthorized = || {
        Response::error(401, "charge point credentials refused")
            .with_header("WWW-Authenticate", "Basic realm=\"evsource\"")
    };
    // Failed handshakes back off per client address and per charge point id
    // (`throttle`); one that must wait is refused before any password work.
    let address_key = format!("ocpp-address:{peer}");
    let station_key = format!("ocpp-station:{station}");
    let keys = [address_key.as_str(), station_key.as_str()];
    if let Err(wait_millis) = lock(&shared.failures).check(&keys, shared.now_millis()) {
        tracing::info!(%station, %peer, wait_millis, "connection refused: too many failed handshakes");
        return Err(too_many(wait_millis));
    }
    let failed = |shared: &Shared<S>| lock(&shared.failures).failed(&keys, shared.now_millis());
    let Some((user, password)) = head.header("authorization").and_then(auth::parse_basic) else {
        tracing::info!(%station, "connection refused: no Basic credentials");
        failed(shared);
        return Err(unauthorized());
    };
    if user != station {
        tracing::info!(%station, "connection refused: the user is not the charge point id");
        failed(shared);
        return Err(unauthorized());
    }
    let registered = match auth::registered_hash(&shared.store, station).await {
        Ok(registered) => registered,
        Err(error) => {
            tracing::warn!(%station, %error, "reading the registration failed");
            return Err(Response::error(503, "the registry is unavailable"));
        }
    };
    // An unknown id is checked against a fixed hash of the same cost: it takes as long
    // as a wrong password, so the answer's timing does not tell which ids exist.
    let known = registered.is_some();
    let hash = registered.unwrap_or_else(|| shared.dummy_hash.clone());
    // At most PASSWORD_CHECKS_MAX checks at once; a handshake that cannot get one in
    // time is told to come back (503 + Retry-After), never dropped without an answer.
    let Ok(Ok(permit)) =
        tokio::time::timeout(PASSWORD_CHECK_WAIT, shared.password_checks.acquire()).await
    else {
        tracing::info!(%station, "connection refused: every password check is busy");
        return Err(
            Response::error(503, "password checks are busy; try again shortly")
                .with_header("Retry-After", "1"),
        );
    };
    let verified = off_the_runtime(move || auth::verify_password(&hash, &password)).await;
    drop(permit);
    if !known || verified != Some(true) {
        tracing::info!(%station, known, "connection refused: unknown charge point or wrong password");
        failed(shared);
        return Err(unauthorized());
    }
    lock(&shared.failures).succeeded(&keys);
    Ok(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()))
}

/// 429 with the seconds to wait (rounded up).
pub(super) fn too_many(wait_millis: u64) -> Response {
    Response::error(429, "too many failed attempts; wait before trying again")
        .with_header("Retry-After", wait_millis.div_ceil(1000).max(1).to_string())
}

pub(super) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs CPU-heavy work — Argon2 takes tens of milliseconds by design — on the blocking
/// pool of the real runtime, so a boot storm or a burst of registrations does not stall
/// the hub and the other connections. The simulator has no threads to spare and runs it
/// in place. `None`: the runtime is shutting down.
pub(super) async fn off_the_runtime<R: Send + 'static>(
    work: impl FnOnce() -> R + Send + 'static,
) -> Option<R> {
    #[cfg(not(madsim))]
    {
        tokio::task::spawn_blocking(work).await.ok()
    }
    #[cfg(madsim)]
    {
        Some(work())
    }
}

/// The WebSocket settings of both ends: messages over [`FRAME_BYTES_MAX`] are refused
/// before they are buffered whole. OCPP frames are small; tungstenite zero-fills its read
/// buffer up to `read_buffer_size` on every read, and with its 128 KiB default that fill
/// was 41 % of the simulator's CPU time (8 KiB took the reference swarm from 10.2 to 17.0
/// seeds/s; README, Speed).
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(FRAME_BYTES_MAX))
        .max_frame_size(Some(FRAME_BYTES_MAX))
}

async fn upgrade<T: AsyncRead + AsyncWrite + Unpin>(
    mut stream: T,
    accept_key: String,
    read_ahead: Vec<u8>,
) -> Option<WebSocketStream<T>> {
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept_key}\r\nSec-WebSocket-Protocol: {OCPP16}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await.ok()?;
    stream.flush().await.ok()?;
    Some(
        WebSocketStream::from_partially_read(
            stream,
            read_ahead,
            Role::Server,
            Some(websocket_config()),
        )
        .await,
    )
}

/// An admitted charge point: frames both ways between its WebSocket and the hub, until
/// either side closes, the hub replaces the connection, or the node shuts down.
async fn station_connection<S: crate::store::EventStore>(
    mut ws: WebSocketStream<TcpStream>,
    station: String,
    connection: u64,
    shared: &Shared<S>,
) {
    let (outbox, mut frames_out) = mpsc::channel::<ToStation>(CONNECTION_QUEUE_MAX);
    let hub = &shared.hub;
    let connected = HubInput::Connected {
        connection,
        station: station.clone(),
        outbox,
    };
    if hub.send(connected).await.is_err() {
        return;
    }
    let tap = |direction, text: &str| shared.wire_tap.saw(&station, connection, direction, text);
    let close = run_link(
        &mut ws,
        connection,
        hub,
        &mut frames_out,
        &shared.shutdown,
        tap,
    )
    .await;
    if let Some((code, reason)) = close {
        tracing::info!(%station, connection, ?code, %reason, "closing the charge point's connection");
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = ws.close(Some(frame)).await;
    }
    let _ = hub.send(HubInput::Closed { connection }).await;
}

/// Moves frames until the link ends; returns the close frame to send, if any.
async fn run_link(
    ws: &mut WebSocketStream<TcpStream>,
    connection: u64,
    hub: &mpsc::Sender<HubInput>,
    frames_out: &mut mpsc::Receiver<ToStation>,
    shutdown: &Shutdown,
    tap: impl Fn(WireDirection, &str),
) -> Option<(CloseCode, String)> {
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait() => return Some((CloseCode::Away, "the CSMS is shutting down".into())),
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let text = text.as_str().to_owned();
                    tap(WireDirection::FromStation, &text);
                    if hub.send(HubInput::Frame { connection, text }).await.is_err() {
                        return Some((CloseCode::Away, "the CSMS is shutting down".into()));
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    return Some((CloseCode::Unsupported, "OCPP-J frames are text messages".into()));
                }
                Some(Ok(Message::Close(_))) | None => return None,
                Some(Ok(_)) => {} // ping (answered by tungstenite), pong
                Some(Err(WsError::Capacity(error))) => {
                    tracing::info!(connection, %error, "oversized message from a charge point");
                    return Some((CloseCode::Size, "message larger than the CSMS accepts".into()));
                }
                Some(Err(WsError::Utf8(_))) => {
                    return Some((CloseCode::Invalid, "OCPP-J: a text frame that is not UTF-8".into()));
                }
                Some(Err(WsError::Protocol(error))) => {
                    tracing::info!(connection, %error, "WebSocket protocol error from a charge point");
                    return Some((CloseCode::Protocol, "WebSocket protocol error".into()));
                }
                Some(Err(error)) => {
                    tracing::info!(connection, %error, "charge point connection failed");
                    return None;
                }
            },
            frame = frames_out.recv() => match frame {
                Some(ToStation::Frame(text)) => {
                    if ws.send(Message::text(text)).await.is_err() {
                        return None;
                    }
                }
                Some(ToStation::Close { code, reason }) => {
                    return Some((CloseCode::from(code), reason));
                }
                // Replaced by a newer connection of the same station, or too slow.
                None => return Some((CloseCode::Policy, "replaced by a newer connection, or too slow".into())),
            },
        }
    }
}
