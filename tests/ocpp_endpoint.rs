//! The OCPP 1.6-J endpoint and the operator API of a running node (real tokio, 127.0.0.1,
//! in-memory store), seen from outside through a plain WebSocket client:
//! * who may connect — each refusal at the handshake, with its status;
//! * protocol hygiene — malformed and schema-violating frames get the right CALLERROR
//!   and the connection stays; a repeated message id gets the earlier answer; oversized
//!   and binary messages close the connection with the matching close code; a newer
//!   connection replaces an older one;
//! * the operator API — 401 without the token, 400 for a bad body, 404 for an unknown
//!   station, and an unlock that reaches the station;
//! * a store that goes away and comes back — the node keeps running, tells a station that
//!   boots meanwhile `Pending`, and reads on once the store is back.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use evsource::node::auth::{self, PasswordCost};
use evsource::node::client::ApiClient;
use evsource::node::{CsmsNode, NodeConfig};
use evsource::ocpp::schema::Schemas;
use evsource::store::{EventStore, MemoryStore};

const TOKEN: &str = "endpoint-operator-token";
const STATION: &str = "CP-7";
const PASSWORD: &str = "endpoint-password-07";

type Socket = WebSocketStream<TcpStream>;

fn config() -> NodeConfig {
    support::stations::node_config("node-1", TOKEN, 7)
}

async fn start() -> (CsmsNode, MemoryStore) {
    let store = MemoryStore::default();
    let hash = auth::hash_password(PASSWORD, [7; 16], PasswordCost::Minimal);
    auth::register(&store, STATION, &hash, 0).await.unwrap();
    (
        CsmsNode::start(store.clone(), config()).await.unwrap(),
        store,
    )
}

/// A node id signs leases and names a stream: an empty one, or one a stream id cannot
/// hold, is refused before the node binds or writes anything.
#[tokio::test]
async fn a_node_id_that_cannot_name_a_stream_is_refused() {
    let store = MemoryStore::default();
    for node_id in ["", "has space", "ü"] {
        let refused = CsmsNode::start(
            store.clone(),
            NodeConfig {
                node_id: node_id.into(),
                ..config()
            },
        )
        .await
        .expect_err("refused");
        assert_eq!(
            refused.kind(),
            std::io::ErrorKind::InvalidInput,
            "{node_id:?}"
        );
    }
    assert_eq!(store.event_count().await.unwrap(), 0);
}

/// Opens `/ocpp/{path_id}` offering `protocol`, with Basic credentials if given.
async fn connect(
    addr: SocketAddr,
    path_id: &str,
    credentials: Option<(&str, &str)>,
    protocol: &str,
) -> Result<Socket, WsError> {
    let mut request = format!("ws://{addr}/ocpp/{path_id}")
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(protocol).unwrap(),
    );
    if let Some((user, password)) = credentials {
        let value = auth::basic_header(user, password);
        headers.insert("Authorization", HeaderValue::from_str(&value).unwrap());
    }
    let stream = TcpStream::connect(addr).await.unwrap();
    tokio_tungstenite::client_async(request, stream)
        .await
        .map(|(ws, _)| ws)
}

async fn station(addr: SocketAddr) -> Socket {
    connect(addr, STATION, Some((STATION, PASSWORD)), "ocpp1.6")
        .await
        .expect("the registered station connects")
}

/// The next text frame, parsed (pings and pongs skipped), within 5 s.
async fn next_frame(ws: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .expect("the connection is open")
            .expect("a valid message");
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

/// Sends a CALL and returns the CSMS's answer, checked against the official schema of
/// the action's response when `EVSOURCE_OCPP_SCHEMAS` is set.
async fn call(ws: &mut Socket, frame: Value) -> Value {
    ws.send(Message::text(frame.to_string())).await.unwrap();
    let answer = next_frame(ws).await;
    if let Some(schemas) = Schemas::from_env() {
        schemas
            .check_frame(&answer.to_string(), frame[2].as_str())
            .unwrap_or_else(|e| panic!("{e}: {answer}"));
    }
    answer
}

/// The close code the CSMS ends the connection with.
async fn close_code(ws: &mut Socket) -> Option<CloseCode> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("the CSMS closes within 5 s")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
            Some(Ok(_)) => continue,
            _ => return None,
        }
    }
}

async fn boot(ws: &mut Socket) {
    let answer = call(
        ws,
        json!([2, "boot-1", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}]),
    )
    .await;
    assert_eq!(answer[0], 3, "{answer}");
    assert_eq!(answer[2]["status"], "Accepted", "{answer}");
}

#[tokio::test]
async fn each_refusal_happens_at_the_handshake() {
    let (node, _store) = start().await;
    let addr = node.addr;
    // (id in the path, Basic credentials, subprotocol offered, status, what is wrong)
    type Case<'a> = (&'a str, Option<(&'a str, &'a str)>, &'a str, u16, &'a str);
    let cases: [Case; 6] = [
        (
            "CP-unknown",
            Some(("CP-unknown", PASSWORD)),
            "ocpp1.6",
            401,
            "an unregistered id",
        ),
        (
            STATION,
            Some((STATION, "wrong-password-0007")),
            "ocpp1.6",
            401,
            "a wrong password",
        ),
        (
            STATION,
            Some(("CP-other", PASSWORD)),
            "ocpp1.6",
            401,
            "a user that is not the id",
        ),
        (STATION, None, "ocpp1.6", 401, "no credentials"),
        (
            STATION,
            Some((STATION, PASSWORD)),
            "ocpp2.0.1",
            400,
            "no ocpp1.6 subprotocol",
        ),
        (
            "CP%207",
            Some(("CP 7", PASSWORD)),
            "ocpp1.6",
            404,
            "an id that is not an id",
        ),
    ];
    for (path_id, credentials, protocol, status, what) in cases {
        match connect(addr, path_id, credentials, protocol).await {
            Err(WsError::Http(response)) => {
                assert_eq!(response.status().as_u16(), status, "{what}");
                if status == 401 {
                    assert!(
                        response.headers().contains_key("www-authenticate"),
                        "{what}"
                    );
                }
            }
            Err(other) => panic!("{what}: {other}"),
            Ok(_) => panic!("{what}: the handshake succeeded"),
        }
    }
    let mut ws = station(addr).await;
    boot(&mut ws).await;
    node.shutdown().await;
}

#[tokio::test]
async fn broken_frames_get_the_right_callerror_and_the_connection_stays() {
    let (node, _store) = start().await;
    let mut ws = station(node.addr).await;
    // Before the boot is accepted, nothing else is.
    let early = call(&mut ws, json!([2, "early", "Heartbeat", {}])).await;
    assert_eq!(early, json!([4, "early", "SecurityError", early[3], {}]));
    boot(&mut ws).await;
    let cases = [
        (
            json!([2, "m1", "Heartbeat", "not an object"]),
            "FormationViolation",
        ),
        (json!([2, "m2", "Heartbeat"]), "FormationViolation"),
        (
            json!([2, "m3", "StatusNotification", {"connectorId": 1, "status": "Available"}]),
            "OccurenceConstraintViolation",
        ),
        (
            json!([2, "m4", "StatusNotification", {"connectorId": "one", "errorCode": "NoError", "status": "Available"}]),
            "TypeConstraintViolation",
        ),
        (
            json!([2, "m5", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Sleeping"}]),
            "PropertyConstraintViolation",
        ),
        (json!([2, "m6", "NoSuchAction", {}]), "NotImplemented"),
    ];
    for (frame, code) in cases {
        let id = frame[1].clone();
        let answer = call(&mut ws, frame.clone()).await;
        assert_eq!(answer[0], 4, "{frame} → {answer}");
        assert_eq!(answer[1], id, "{frame} → {answer}");
        assert_eq!(answer[2], code, "{frame} → {answer}");
    }
    // A CALL whose id can be read is answered, even when the id breaks OCPP-J: a number
    // is echoed as its text.
    let numeric = call(&mut ws, json!([2, 17, "Heartbeat", {}])).await;
    assert_eq!(numeric[0], 4, "{numeric}");
    assert_eq!(numeric[1], "17", "{numeric}");
    assert_eq!(numeric[2], "FormationViolation", "{numeric}");
    let heartbeat = call(&mut ws, json!([2, "h1", "Heartbeat", {}])).await;
    assert_eq!(heartbeat[0], 3, "{heartbeat}");
    // A repeated message id gets the earlier answer, not a new one.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = call(&mut ws, json!([2, "h1", "Heartbeat", {}])).await;
    assert_eq!(again, heartbeat, "the earlier answer, word for word");
    node.shutdown().await;
}

/// Text that cannot be answered — no readable message id — ends the connection with a
/// close frame that says why, never with silence: 1007 for text that is not JSON, 1002
/// for JSON that is no OCPP-J frame. The station may connect again at once.
#[tokio::test]
async fn unanswerable_text_closes_the_connection_with_1007_or_1002() {
    let (node, _store) = start().await;
    for (text, code) in [
        ("this is not json", CloseCode::Invalid),
        ("{\"not\":\"an array\"}", CloseCode::Protocol),
        ("[7,\"x\",{}]", CloseCode::Protocol),
        ("[2,{},\"Heartbeat\",{}]", CloseCode::Protocol),
        // An answer under an id past 36 characters would itself break OCPP-J.
        (
            "[2,\"iiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiii\",\"Heartbeat\",{}]",
            CloseCode::Protocol,
        ),
    ] {
        let mut ws = station(node.addr).await;
        boot(&mut ws).await;
        ws.send(Message::text(text)).await.unwrap();
        assert_eq!(close_code(&mut ws).await, Some(code), "{text}");
    }
    let mut ws = station(node.addr).await;
    boot(&mut ws).await;
    node.shutdown().await;
}

#[tokio::test]
async fn oversized_and_binary_messages_close_the_connection_with_their_codes() {
    let (node, _store) = start().await;
    let mut ws = station(node.addr).await;
    boot(&mut ws).await;
    let huge = format!(
        "[2,\"big\",\"Heartbeat\",{{\"pad\":\"{}\"}}]",
        "x".repeat(evsource::ocpp::frame::FRAME_BYTES_MAX)
    );
    ws.send(Message::text(huge)).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Size));

    let mut ws = station(node.addr).await;
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Unsupported));
    node.shutdown().await;
}

#[tokio::test]
async fn a_newer_connection_replaces_the_older_one() {
    let (node, _store) = start().await;
    let mut older = station(node.addr).await;
    boot(&mut older).await;
    let mut newer = station(node.addr).await;
    assert_eq!(close_code(&mut older).await, Some(CloseCode::Policy));
    let heartbeat = call(&mut newer, json!([2, "n1", "Heartbeat", {}])).await;
    assert_eq!(
        heartbeat[0], 3,
        "the newer connection is served: {heartbeat}"
    );
    node.shutdown().await;
}

#[tokio::test]
async fn the_operator_api_checks_token_and_bodies_and_unlocks_reach_the_station() {
    let (node, store) = start().await;
    let mut ws = station(node.addr).await;
    boot(&mut ws).await;
    // After its boot a station reports its connectors; that shows it took the boot as
    // accepted, and the dispatcher may send to it.
    let status = json!([2, "s0", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available"}]);
    assert_eq!(call(&mut ws, status).await, json!([3, "s0", {}]));
    let mut anonymous = ApiClient::connect(node.addr, "not-the-token")
        .await
        .unwrap();
    let (status, _) = anonymous
        .request("GET", "/api/stations", None)
        .await
        .unwrap();
    assert_eq!(status, 401);

    let mut api = ApiClient::connect(node.addr, TOKEN).await.unwrap();
    let unlock = format!("/api/stations/{STATION}/unlock");
    let bad_bodies = [
        (json!({"connector": 1}), "session"),
        (json!({"connector": -1, "session": "s"}), "connector"),
        (json!({"connector": 1, "session": "s", "extra": 1}), "extra"),
        (
            json!({"connector": 1, "session": "s", "command_id": "xyz"}),
            "32 hex digits",
        ),
    ];
    for (body, fragment) in bad_bodies {
        let (status, answer) = api.request("POST", &unlock, Some(&body)).await.unwrap();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        assert_eq!(status, 400, "{body} → {answer}");
        assert!(answer.contains(fragment), "{body} → {answer}");
    }
    let body = json!({"connector": 1, "session": "s-1"});
    let (status, _) = api
        .request("POST", "/api/stations/CP-nobody/unlock", Some(&body))
        .await
        .unwrap();
    assert_eq!(status, 404, "an unregistered station");
    let (status, _) = api.request("DELETE", "/api/stations", None).await.unwrap();
    assert_eq!(status, 405);
    let events_before = store.event_count().await.unwrap();

    let (status, answer) = api.request("POST", &unlock, Some(&body)).await.unwrap();
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&answer));
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    let command_id = answer["command_id"].as_str().unwrap().to_owned();
    assert_eq!(command_id.len(), 32, "{answer}");
    assert_eq!(answer["outcome"], "Applied");
    assert!(store.event_count().await.unwrap() > events_before);
    // The dispatcher sends the RemoteStartTransaction to the station.
    let remote_start = next_frame(&mut ws).await;
    if let Some(schemas) = Schemas::from_env() {
        schemas
            .check_frame(&remote_start.to_string(), None)
            .unwrap();
    }
    assert_eq!(remote_start[0], 2, "{remote_start}");
    assert_eq!(remote_start[2], "RemoteStartTransaction");
    assert_eq!(remote_start[3], json!({"connectorId": 1, "idTag": "s-1"}));
    // Resubmitting the same command id takes effect once.
    let again = json!({"connector": 1, "session": "s-1", "command_id": command_id});
    let (status, answer) = api.request("POST", &unlock, Some(&again)).await.unwrap();
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["outcome"], "AlreadyApplied", "{answer}");
    // The same command id with another body (connector or session) is a conflict, named
    // as such; nothing is recorded and the earlier request stands.
    let events_before = store.event_count().await.unwrap();
    for other in [
        json!({"connector": 2, "session": "s-1", "command_id": command_id}),
        json!({"connector": 1, "session": "s-2", "command_id": command_id}),
    ] {
        let (status, answer) = api.request("POST", &unlock, Some(&other)).await.unwrap();
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(status, 409, "{other} → {answer}");
        assert_eq!(answer["code"], "command_id_reused", "{answer}");
    }
    assert_eq!(store.event_count().await.unwrap(), events_before);
    node.shutdown().await;
}

/// A store that goes away and comes back costs a node a pause, not its life. While the
/// store (served over the remote protocol) is gone, the node does not stop: its reads
/// back off, and a station that boots is told `Pending`, since the acceptance could not
/// be recorded (a station told `Accepted` would never boot again, and no node it
/// reconnects to would find it accepted). Once the store is back, the station's next boot
/// is accepted, and the node's subscription — not the node's memory of its own answer —
/// shows the acceptance in the operator API.
#[tokio::test]
async fn a_node_rides_out_a_store_restart() {
    use evsource::signal::Shutdown;
    use evsource::store::{RemoteConfig, RemoteStore, remote};

    let inner = MemoryStore::default();
    let hash = auth::hash_password(PASSWORD, [7; 16], PasswordCost::Minimal);
    auth::register(&inner, STATION, &hash, 0).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let first_server = Shutdown::new();
    tokio::spawn(remote::serve(inner.clone(), listener, first_server.clone()));
    let client = RemoteStore::new(
        address,
        RemoteConfig {
            connect_timeout: Duration::from_millis(300),
            request_timeout: Duration::from_millis(500),
            wait_slice: Duration::from_millis(200),
            idle_connections_max: 4,
        },
    );
    let node = CsmsNode::start(client, config()).await.unwrap();
    let mut ws = station(node.addr).await;

    first_server.trigger();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pending = call(
        &mut ws,
        json!([2, "boot-1", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}]),
    )
    .await;
    assert_eq!(pending[2]["status"], "Pending", "{pending}");
    assert_eq!(pending[2]["interval"], 10, "{pending}");
    let refused = call(&mut ws, json!([2, "hb-1", "Heartbeat", {}])).await;
    assert_eq!(
        refused[0], 4,
        "not served before an accepted boot: {refused}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!node.failed().is_triggered(), "the node kept running");

    let listener = tokio::net::TcpListener::bind(address).await.unwrap();
    let second_server = Shutdown::new();
    tokio::spawn(remote::serve(
        inner.clone(),
        listener,
        second_server.clone(),
    ));
    let accepted = call(
        &mut ws,
        json!([2, "boot-2", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}]),
    )
    .await;
    assert_eq!(accepted[2]["status"], "Accepted", "{accepted}");
    let mut api = ApiClient::connect(node.addr, TOKEN).await.unwrap();
    let mut listed = Value::Null;
    for _ in 0..100 {
        let (status, body) = api.request("GET", "/api/stations", None).await.unwrap();
        assert_eq!(status, 200);
        listed = serde_json::from_slice(&body).unwrap();
        if listed.to_string().contains("\"boot_accepted\":true") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        listed.to_string().contains("\"boot_accepted\":true"),
        "the subscription read the recorded boot: {listed}"
    );
    assert!(!node.failed().is_triggered(), "the node kept running");
    second_server.trigger();
}

/// StartTransaction is answered from what the CSMS knows: `Invalid` for an idTag it never
/// released that connector for (the record says so too), `Accepted` once a remote start
/// for that idTag on that connector was accepted; a connector the station cannot have is a
/// CALLERROR.
#[tokio::test]
async fn start_transaction_is_accepted_only_for_an_idtag_the_csms_released() {
    let (node, store) = start().await;
    let mut ws = station(node.addr).await;
    boot(&mut ws).await;
    let start = |id: &str, connector: u32, id_tag: &str| json!([2, id, "StartTransaction", {"connectorId": connector, "idTag": id_tag, "meterStart": 0, "timestamp": "2026-11-23T10:00:00Z"}]);
    let stranger = call(&mut ws, start("t1", 1, "stranger")).await;
    assert_eq!(stranger[0], 3, "{stranger}");
    assert_eq!(stranger[2]["idTagInfo"]["status"], "Invalid", "{stranger}");
    let far = call(&mut ws, start("t2", 999, "stranger")).await;
    assert_eq!(
        (&far[0], &far[2]),
        (&json!(4), &json!("PropertyConstraintViolation")),
        "{far}"
    );

    // The operator asks for an unlock; the station accepts the remote start.
    let mut api = ApiClient::connect(node.addr, TOKEN).await.unwrap();
    let body = json!({"connector": 1, "session": "s-9"});
    let (status, _) = api
        .request(
            "POST",
            &format!("/api/stations/{STATION}/unlock"),
            Some(&body),
        )
        .await
        .unwrap();
    assert_eq!(status, 202);
    let remote_start = next_frame(&mut ws).await;
    assert_eq!(remote_start[2], "RemoteStartTransaction", "{remote_start}");
    ws.send(Message::text(
        json!([3, remote_start[1], {"status": "Accepted"}]).to_string(),
    ))
    .await
    .unwrap();
    let mut accepted = Value::Null;
    for attempt in 0..50 {
        accepted = call(&mut ws, start(&format!("t3-{attempt}"), 1, "s-9")).await;
        if accepted[2]["idTagInfo"]["status"] == "Accepted" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(accepted[2]["idTagInfo"]["status"], "Accepted", "{accepted}");

    let telemetry = store
        .read_stream(
            &evsource::mirror::TelemetryEvent::stream(STATION).unwrap(),
            evsource::core::StreamVersion(0),
            1_000,
        )
        .await
        .unwrap();
    let verdicts: Vec<(String, bool)> = telemetry
        .iter()
        .filter_map(
            |e| match evsource::mirror::TelemetryEvent::decode(&e.event_type, &e.payload) {
                Ok(evsource::mirror::TelemetryEvent::TransactionStarted {
                    id_tag,
                    id_tag_accepted,
                    ..
                }) => Some((id_tag, id_tag_accepted)),
                _ => None,
            },
        )
        .collect();
    assert_eq!(verdicts.first(), Some(&("stranger".to_owned(), false)));
    assert_eq!(verdicts.last(), Some(&("s-9".to_owned(), true)));

    // A stop's idTag is Accepted only as the one its transaction ran for.
    let stop = |id: &str, transaction: &Value, id_tag: &str| json!([2, id, "StopTransaction", {"transactionId": transaction, "idTag": id_tag, "meterStop": 10, "timestamp": "2026-11-23T11:00:00Z"}]);
    let wrong = call(
        &mut ws,
        stop("p1", &stranger[2]["transactionId"], "stranger"),
    )
    .await;
    assert_eq!(wrong[2]["idTagInfo"]["status"], "Invalid", "{wrong}");
    let right = call(&mut ws, stop("p2", &accepted[2]["transactionId"], "s-9")).await;
    assert_eq!(right[2]["idTagInfo"]["status"], "Accepted", "{right}");
    node.shutdown().await;
}

/// Guessing backs off: after five failed handshakes from one address (wrong passwords and
/// unknown ids alike) the next is refused with 429 and a Retry-After before any password
/// is checked; the charge point's own id is held back the same way, and a success clears
/// what it failed. Failed operator tokens back off per address too.
#[tokio::test]
async fn failed_handshakes_and_tokens_back_off() {
    let (node, _store) = start().await;
    let status = |result: Result<Socket, WsError>| match result {
        Err(WsError::Http(response)) => (
            response.status().as_u16(),
            response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned()),
        ),
        Err(other) => panic!("{other}"),
        Ok(_) => (101, None),
    };
    for n in 0..5 {
        let (user, password) = if n % 2 == 0 {
            (STATION, "wrong-password-0000")
        } else {
            ("CP-unknown", PASSWORD)
        };
        let refused = status(connect(node.addr, user, Some((user, password)), "ocpp1.6").await);
        assert_eq!(refused, (401, None), "failure {n}");
    }
    let held = status(connect(node.addr, STATION, Some((STATION, PASSWORD)), "ocpp1.6").await);
    assert_eq!(
        held.0, 429,
        "the sixth attempt waits, even with the right password"
    );
    let wait: u64 = held.1.expect("a Retry-After").parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let mut ws = station(node.addr).await;
    boot(&mut ws).await;

    let mut api = ApiClient::connect(node.addr, "not-the-token")
        .await
        .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (status, _) = api.request("GET", "/api/stations", None).await.unwrap();
        statuses.push(status);
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429]);
    node.shutdown().await;
}

/// The node holds at most `connections_max` connections: past it, a new one waits in the
/// kernel's backlog, unanswered, until one of the open ones ends — a flood of idle
/// connections cannot make the node spawn without bound.
#[tokio::test]
async fn connections_past_the_bound_wait_until_one_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let store = MemoryStore::default();
    let node = CsmsNode::start(
        store,
        NodeConfig {
            connections_max: 2,
            ..config()
        },
    )
    .await
    .unwrap();
    let first = TcpStream::connect(node.addr).await.unwrap();
    let _second = TcpStream::connect(node.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(node.addr).await.unwrap();
    let request = format!(
        "GET /api/stations HTTP/1.1\r\nHost: csms\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    );
    third.write_all(request.as_bytes()).await.unwrap();
    let mut answer = [0u8; 12];
    let waited =
        tokio::time::timeout(Duration::from_millis(500), third.read_exact(&mut answer)).await;
    assert!(waited.is_err(), "no answer while two connections are open");
    drop(first);
    tokio::time::timeout(Duration::from_secs(5), third.read_exact(&mut answer))
        .await
        .expect("answered once a connection closed")
        .unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    node.shutdown().await;
}
