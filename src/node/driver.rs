//! Runs a simulated [`ChargePoint`] over a TCP connection to a CSMS node: the shell around
//! the sans-IO station. It only moves lines and timers; the station decides everything.
//! The station is shared behind a mutex so that a test or the simulator can inject
//! physical events and read the ground truth while it runs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::chargepoint::ChargePoint;
use crate::environment::{Environment, SystemEnvironment};
use crate::signal::Shutdown;

/// A charge point shared between its driver and whoever watches it.
pub type SharedChargePoint = Arc<Mutex<ChargePoint>>;

fn lock(station: &SharedChargePoint) -> MutexGuard<'_, ChargePoint> {
    station.lock().unwrap_or_else(|p| p.into_inner())
}

/// Connects, speaks, and reconnects after `reconnect_delay` until shutdown.
pub async fn run_station(
    station: SharedChargePoint,
    csms: SocketAddr,
    reconnect_delay: Duration,
    shutdown: Shutdown,
) {
    let clock = SystemEnvironment::new(0);
    loop {
        if shutdown.is_triggered() {
            return;
        }
        if let Ok(stream) = TcpStream::connect(csms).await {
            let ended = connection(&station, stream, &clock, &shutdown).await;
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

#[derive(PartialEq, Eq)]
enum Ended {
    Shutdown,
    Disconnected,
}

async fn connection(
    station: &SharedChargePoint,
    stream: TcpStream,
    clock: &SystemEnvironment,
    shutdown: &Shutdown,
) -> Ended {
    let (reader, mut writer) = tokio::io::split(stream);
    let mut lines = BufReader::new(reader).lines();
    let hello = format!("HELLO {}\n", lock(station).id());
    if writer.write_all(hello.as_bytes()).await.is_err() || writer.flush().await.is_err() {
        return Ended::Disconnected;
    }
    lock(station).handle_connected(clock.now_millis());
    tracing::info!(station = lock(station).id(), "connected to the CSMS");
    loop {
        // Send whatever the station wants to send, then wait for input or its next timer.
        let (outgoing, next_timer) = {
            let mut station = lock(station);
            let now = clock.now_millis();
            let outgoing: Vec<String> = std::iter::from_fn(|| station.poll_transmit(now)).collect();
            (outgoing, station.poll_timeout())
        };
        for text in outgoing {
            let sent = async {
                writer.write_all(text.as_bytes()).await?;
                writer.write_all(b"\n").await?;
                writer.flush().await
            };
            if sent.await.is_err() {
                return Ended::Disconnected;
            }
        }
        let wait = next_timer
            .map_or(1_000, |at| at.saturating_sub(clock.now_millis()))
            .min(1_000);
        tokio::select! {
            biased;
            _ = shutdown.wait() => return Ended::Shutdown,
            line = lines.next_line() => match line {
                Ok(Some(text)) => {
                    let mut station = lock(station);
                    let before = station.actuations().len();
                    station.handle_text(&text, clock.now_millis());
                    for actuation in &station.actuations()[before..] {
                        tracing::info!(
                            station = station.id(),
                            connector = actuation.connector,
                            id_tag = %actuation.id_tag,
                            "connector unlocked (physical)"
                        );
                    }
                }
                _ => return Ended::Disconnected,
            },
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {
                let now = clock.now_millis();
                let mut station = lock(station);
                if station.poll_timeout().is_some_and(|at| at <= now) {
                    station.handle_timeout(now);
                }
            }
        }
    }
}
