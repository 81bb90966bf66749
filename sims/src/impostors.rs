//! F11: impostor stations. Throughout the fault phase, a machine of its own tries to open
//! OCPP connections as stations it is not — a registered id with a wrong password, with
//! another station's password, with another station's whole credentials, or an id nobody
//! registered — against a seed-chosen CSMS node. The CSMS must refuse every handshake
//! (I13); should one get through, the impostor speaks as a station would, every frame
//! marked with [`IMPOSTOR_MARK`], so that anything of it the CSMS recorded shows in the
//! store and [`evsource::oracles::check_impostors`] names it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use madsim::rand::Rng;
use tokio::net::TcpStream;

use evsource::node::driver::{handshake_as, say_and_close};
pub use evsource::oracles::IMPOSTOR_MARK;

/// How an impostor presents itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Disguise {
    /// A registered id, a password that is nobody's.
    WrongPassword,
    /// A registered id with another registered station's password.
    AnotherStationsPassword,
    /// A registered id with another station's id and password as the Basic credentials.
    AnotherStationsCredentials,
    /// An id nobody registered.
    UnknownId,
}

const DISGUISES: [Disguise; 4] = [
    Disguise::WrongPassword,
    Disguise::AnotherStationsPassword,
    Disguise::AnotherStationsCredentials,
    Disguise::UnknownId,
];

/// What the impostors did in a run.
#[derive(Debug, Default)]
pub struct ImpostorCounters {
    /// Handshakes tried.
    pub attempts: AtomicU64,
    /// Handshakes the CSMS accepted (each one an I13 violation).
    pub admitted: AtomicU64,
    /// Handshakes the CSMS answered with a refusal.
    pub refused: AtomicU64,
}

/// Tries impostor handshakes against `nodes` every 0.5–5 s for `phase`. `credentials`
/// are the registered stations' (id, password); at least two are needed for the
/// disguises that borrow another station's.
pub async fn run(
    nodes: Vec<SocketAddr>,
    credentials: Vec<(String, String)>,
    phase: Duration,
    counters: Arc<ImpostorCounters>,
) {
    let started = tokio::time::Instant::now();
    while started.elapsed() < phase {
        let (node, id, user, password, wait) = {
            let mut rng = madsim::rand::thread_rng();
            let node = nodes[rng.gen_range(0..nodes.len())];
            let target = rng.gen_range(0..credentials.len());
            let other = (target + rng.gen_range(1..credentials.len().max(2))) % credentials.len();
            let (id, _) = &credentials[target];
            let (other_id, other_password) = &credentials[other];
            let (id, user, password) = match DISGUISES[rng.gen_range(0..DISGUISES.len())] {
                Disguise::WrongPassword => {
                    (id.clone(), id.clone(), format!("{IMPOSTOR_MARK}-guess"))
                }
                Disguise::AnotherStationsPassword => {
                    (id.clone(), id.clone(), other_password.clone())
                }
                Disguise::AnotherStationsCredentials => {
                    (id.clone(), other_id.clone(), other_password.clone())
                }
                Disguise::UnknownId => {
                    let id = format!("{IMPOSTOR_MARK}-{}", rng.gen_range(0..1_000));
                    (id.clone(), id, other_password.clone())
                }
            };
            (node, id, user, password, rng.gen_range(500..5_000))
        };
        counters.attempts.fetch_add(1, Ordering::Relaxed);
        let attempt = tokio::time::timeout(Duration::from_secs(10), async {
            let stream = TcpStream::connect(node).await.ok()?;
            Some(handshake_as(stream, node, &id, &user, &password).await)
        })
        .await;
        match attempt {
            Ok(Some(Some(ws))) => {
                counters.admitted.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(station = %id, %user, "an impostor was admitted");
                speak(ws).await;
            }
            Ok(Some(None)) => {
                counters.refused.fetch_add(1, Ordering::Relaxed);
            }
            // No connection (the node is down) or no answer in time: nothing learned.
            Ok(None) | Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}

/// What an admitted impostor says: a station's opening, every frame carrying the mark.
async fn speak(ws: evsource::node::driver::StationSocket) {
    let frames = [
        format!(
            r#"[2,"i1","BootNotification",{{"chargePointVendor":"{IMPOSTOR_MARK}","chargePointModel":"{IMPOSTOR_MARK}"}}]"#
        ),
        format!(
            r#"[2,"i2","StatusNotification",{{"connectorId":1,"errorCode":"OtherError","status":"Faulted","info":"{IMPOSTOR_MARK}","vendorErrorCode":"{IMPOSTOR_MARK}"}}]"#
        ),
        format!(r#"[2,"i3","Authorize",{{"idTag":"{IMPOSTOR_MARK}"}}]"#),
        format!(
            r#"[2,"i4","StartTransaction",{{"connectorId":1,"idTag":"{IMPOSTOR_MARK}","meterStart":0,"timestamp":"2020-01-01T00:00:00Z"}}]"#
        ),
    ];
    say_and_close(ws, &frames, Duration::from_secs(2)).await;
}
