//! The endpoint under abuse, black-box: each case runs against a real `evsource serve`
//! process on 127.0.0.1 (the in-memory store), as an attacker or a careless client would
//! meet it, and asserts the answer, that the server stays responsive, and that its memory
//! stays bounded.
//!
//! * A storm of concurrent wrong-password handshakes: every one is answered (401, 429 or
//!   503, never a dropped connection), an API request during the storm is answered within
//!   [`RESPONSIVE_WITHIN`], the server's resident memory stays under [`RSS_MAX_KIB`], and the
//!   real station gets in once the guessing stops (at most a minute later: its id backs
//!   off as the guesser's address does, and the 429 says how long).
//! * HTTP/1.1 framing (RFC 9112): differing or signed `Content-Length`, two
//!   `Authorization` headers and a bearer token with anything added inside the field
//!   value are refused.
//! * OCPP-J abuse from an authenticated station: a connector id past the per-station
//!   bound, a StartTransaction for an idTag the CSMS never released, a numeric message id,
//!   and text that is not an OCPP-J frame at all.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Stdio};
use std::time::Duration;

use evsource::node::auth;
use evsource::node::client::ApiClient;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const TOKEN: &str = "abuse-suite-operator-token";
const STATION: &str = "CP-abused";
const PASSWORD: &str = "the-right-password-0001";
/// Concurrent wrong-password handshakes in the storm.
const STORM: usize = 128;
/// An API request during the storm is answered within this.
const RESPONSIVE_WITHIN: Duration = Duration::from_secs(5);
/// Resident memory after the storm. Each Argon2 check holds ~19 MiB while it runs and at
/// most 4 run at once (`PASSWORD_CHECKS_MAX`): under 100 MiB in use at the peak, plus the
/// allocator's slack and the runtime; unbounded checks reached 2.4 GB in this storm.
const RSS_MAX_KIB: u64 = 256 * 1024;

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// One `evsource serve --store memory:` process, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    async fn start() -> Server {
        let (child, addr) = support::spawn_serve(
            &["serve", "--store", "memory:", "--listen", "127.0.0.1:0"],
            &[("EVSOURCE_OPERATOR_TOKEN", TOKEN)],
            Stdio::null(),
        );
        let server = Server { child, addr };
        let mut api = ApiClient::connect(addr, TOKEN).await.expect("the API");
        let (status, body) = api
            .request(
                "PUT",
                &format!("/api/stations/{STATION}"),
                Some(&json!({"password": PASSWORD})),
            )
            .await
            .expect("registers");
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
        server
    }

    /// The server's resident memory (Linux: VmRSS in /proc).
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc is readable");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmRSS line")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An OCPP handshake from `from` (a loopback address) as `user`/`password` for `id`:
/// the open socket, or the HTTP status it was refused with.
async fn handshake(
    server: SocketAddr,
    from: Ipv4Addr,
    id: &str,
    password: &str,
) -> Result<Socket, (u16, Option<u64>)> {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::new(IpAddr::V4(from), 0))
        .expect("binds a loopback address");
    let stream = socket.connect(server).await.expect("connects");
    let mut request = format!("ws://{server}/ocpp/{id}")
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("ocpp1.6"),
    );
    headers.insert(
        "Authorization",
        HeaderValue::from_str(&auth::basic_header(id, password)).unwrap(),
    );
    match tokio_tungstenite::client_async(request, stream).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err((
            response.status().as_u16(),
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse().ok()),
        )),
        Err(other) => panic!("a handshake ended without an HTTP answer: {other}"),
    }
}

/// Sends raw bytes and returns the status of the answer (0 if the server closed first).
fn raw_status(server: SocketAddr, request: &str) -> u16 {
    let mut stream = std::net::TcpStream::connect(server).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request.as_bytes()).expect("writes");
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

async fn next_frame(ws: &mut Socket) -> Result<Value, Option<CloseCode>> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("an answer within 5 s")
        {
            Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| f.code)),
            Some(Ok(_)) => continue,
            _ => return Err(None),
        }
    }
}

/// A BootNotification, answered Accepted.
async fn boot(ws: &mut Socket) {
    let boot = call(
        ws,
        r#"[2,"b1","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]"#,
    )
    .await
    .expect("answered");
    assert_eq!(boot[2]["status"], "Accepted", "{boot}");
}

async fn call(ws: &mut Socket, frame: &str) -> Result<Value, Option<CloseCode>> {
    ws.send(Message::text(frame)).await.expect("sends");
    next_frame(ws).await
}

#[tokio::test]
async fn a_wrong_password_storm_is_answered_bounded_and_the_real_station_still_gets_in() {
    let server = Server::start().await;
    let attacker = Ipv4Addr::new(127, 0, 0, 1);
    let storm_started = tokio::time::Instant::now();
    let storm: Vec<_> = (0..STORM)
        .map(|n| {
            let addr = server.addr;
            tokio::spawn(async move {
                handshake(addr, attacker, STATION, &format!("guess-{n:04}"))
                    .await
                    .map(drop)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let asked = tokio::time::Instant::now();
    let mut api = ApiClient::connect(server.addr, TOKEN).await.unwrap();
    let (status, _) =
        tokio::time::timeout(RESPONSIVE_WITHIN, api.request("GET", "/api/stations", None))
            .await
            .expect("the API answers during the storm")
            .unwrap();
    assert_eq!(status, 200);
    let answered_in = asked.elapsed();

    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for attempt in storm {
        let (refused, _) = attempt
            .await
            .expect("the attempt ran")
            .expect_err("a guess never gets in");
        *statuses.entry(refused).or_default() += 1;
    }
    let storm_took = storm_started.elapsed();
    assert!(
        statuses.keys().all(|s| [401, 429, 503].contains(s)),
        "every guess is refused with an answer: {statuses:?}"
    );
    let rss = server.rss_kib();
    assert!(
        rss < RSS_MAX_KIB,
        "resident memory after the storm: {rss} KiB (bound {RSS_MAX_KIB})"
    );
    // The guessing has stopped: the station, from its own address, gets in — at once, or
    // after the wait its id's backoff names (at most a minute).
    let station = Ipv4Addr::new(127, 0, 0, 2);
    let mut ws = match handshake(server.addr, station, STATION, PASSWORD).await {
        Ok(ws) => ws,
        Err((429, Some(wait))) => {
            assert!(wait <= 60, "a wait of {wait} s");
            tokio::time::sleep(Duration::from_secs(wait)).await;
            handshake(server.addr, station, STATION, PASSWORD)
                .await
                .map_err(|refused| format!("{refused:?}"))
                .expect("the real station gets in after the wait")
        }
        Err(other) => panic!("the real station was refused with {other:?}"),
    };
    boot(&mut ws).await;
    eprintln!(
        "storm of {STORM}: {statuses:?} in {storm_took:?} ({:.0} refusals/s); API answered in {answered_in:?}; RSS {rss} KiB",
        STORM as f64 / storm_took.as_secs_f64()
    );
}

#[test]
fn http_framing_is_strict_and_tokens_compared_exactly() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(Server::start());
    let get = |headers: &str| format!("GET /api/stations HTTP/1.1\r\nHost: csms\r\n{headers}\r\n");
    let bearer = format!("Authorization: Bearer {TOKEN}\r\n");
    assert_eq!(
        raw_status(server.addr, &get(&bearer)),
        200,
        "the sound request"
    );
    for (case, request) in [
        (
            "two differing Content-Length",
            format!(
                "POST /api/stations/{STATION}/unlock HTTP/1.1\r\nHost: csms\r\n{bearer}Content-Length: 2\r\nContent-Length: 40\r\n\r\n{{}}"
            ),
        ),
        (
            "a signed Content-Length",
            format!(
                "POST /api/stations/{STATION}/unlock HTTP/1.1\r\nHost: csms\r\n{bearer}Content-Length: +2\r\n\r\n{{}}"
            ),
        ),
        (
            "two Authorization headers",
            get(&format!("{bearer}{bearer}")),
        ),
    ] {
        assert_eq!(raw_status(server.addr, &request), 400, "{case}");
    }
    for (case, header) in [
        (
            "a space before the token",
            format!("Authorization: Bearer  {TOKEN}\r\n"),
        ),
        (
            "more after the token",
            format!("Authorization: Bearer {TOKEN} x\r\n"),
        ),
        (
            "a prefix of the token",
            format!("Authorization: Bearer {}\r\n", &TOKEN[..10]),
        ),
    ] {
        assert_eq!(raw_status(server.addr, &get(&header)), 401, "{case}");
    }
    assert_eq!(raw_status(server.addr, &get(&bearer)), 200, "still serving");
}

#[tokio::test]
async fn ocpp_abuse_from_an_authenticated_station_is_refused_by_rule() {
    let server = Server::start().await;
    let station = Ipv4Addr::new(127, 0, 0, 1);
    let mut ws = handshake(server.addr, station, STATION, PASSWORD)
        .await
        .map_err(|refused| format!("{refused:?}"))
        .expect("connects");
    boot(&mut ws).await;
    let far = call(
        &mut ws,
        r#"[2,"s1","StatusNotification",{"connectorId":4294967295,"errorCode":"NoError","status":"Available"}]"#,
    )
    .await
    .expect("answered");
    assert_eq!(far[0], 4, "a CALLERROR: {far}");
    assert_eq!(far[2], "PropertyConstraintViolation", "{far}");
    let stranger = call(
        &mut ws,
        r#"[2,"t1","StartTransaction",{"connectorId":1,"idTag":"never-released","meterStart":0,"timestamp":"2026-12-01T00:00:00Z"}]"#,
    )
    .await
    .expect("answered");
    assert_eq!(stranger[2]["idTagInfo"]["status"], "Invalid", "{stranger}");
    let numeric = call(&mut ws, r#"[2,17,"Heartbeat",{}]"#)
        .await
        .expect("answered");
    assert_eq!(
        (&numeric[0], &numeric[1]),
        (&json!(4), &json!("17")),
        "{numeric}"
    );
    let closed = call(&mut ws, "not an OCPP-J frame").await;
    assert_eq!(closed, Err(Some(CloseCode::Invalid)), "closed with 1007");
    // The server is still there for the station's next connection.
    handshake(server.addr, station, STATION, PASSWORD)
        .await
        .map_err(|refused| format!("{refused:?}"))
        .expect("reconnects");
}

/// A burst of valid handshakes — every station of a site reconnecting at once after a
/// power cut — is never dropped: each gets in (101) or is told to come back (503 with
/// `Retry-After`) while the password checks are busy, and after that wait every station
/// is in.
#[tokio::test]
async fn a_burst_of_valid_handshakes_is_admitted_or_told_to_come_back() {
    const BURST: usize = 256;
    let server = Server::start().await;
    let mut api = ApiClient::connect(server.addr, TOKEN).await.unwrap();
    for n in 0..BURST {
        let (status, _) = api
            .request(
                "PUT",
                &format!("/api/stations/CP-burst-{n}"),
                Some(&json!({"password": format!("burst-password-{n:04}")})),
            )
            .await
            .unwrap();
        assert_eq!(status, 201);
    }
    let started = tokio::time::Instant::now();
    let burst: Vec<_> = (0..BURST)
        .map(|n| {
            let addr = server.addr;
            tokio::spawn(async move {
                let (id, password) = (format!("CP-burst-{n}"), format!("burst-password-{n:04}"));
                let from = Ipv4Addr::new(127, 0, 0, 1);
                let mut told_to_wait = false;
                for _ in 0..20 {
                    match handshake(addr, from, &id, &password).await {
                        Ok(ws) => return (told_to_wait, ws),
                        Err((503, Some(wait))) => {
                            told_to_wait = true;
                            tokio::time::sleep(Duration::from_secs(wait)).await;
                        }
                        Err(other) => panic!("{id} refused with {other:?}"),
                    }
                }
                panic!("{id} never got in");
            })
        })
        .collect();
    let mut waited = 0;
    let mut sockets = Vec::new();
    for station in burst {
        let (told_to_wait, ws) = station.await.expect("every station gets in");
        waited += usize::from(told_to_wait);
        sockets.push(ws);
    }
    let took = started.elapsed();
    assert_eq!(sockets.len(), BURST);
    eprintln!(
        "burst of {BURST} valid handshakes: all in after {took:?}; {waited} were told to come back first"
    );
}
