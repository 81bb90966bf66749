//! The operator API: HTTP/JSON under `/api`, on the same listener as the charge points.
//! Every request carries `Authorization: Bearer <operator token>` (401 otherwise); every
//! body is validated before anything is done (400 with a message that says what is wrong).
//!
//! | method and path | does |
//! | --- | --- |
//! | `PUT /api/stations/{id}` `{"password": …}` | registers a charge point (or rotates its password) |
//! | `POST /api/stations/{id}/unlock` `{"connector": 1, "session": "s-42", "command_id"?: …}` | requests an unlock; answers the command id |
//! | `POST /api/stations/{id}/stop` `{"session": …, "command_id"?: …}` | ends a session |
//! | `GET /api/stations` | every station and connector the mirror knows |
//! | `GET /api/stations/{id}` | one station |
//! | `GET /api/stations/{id}/events?stream=station\|telemetry&from=0&limit=100` | a station's events |
//!
//! A command answered with 202 is durable: the outbox dispatcher sends it to the station.
//! Resubmitting the same `command_id` (32 hex digits) takes effect once; without one the
//! node picks a fresh id and returns it.

use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::api::{ApiResponse, ErrorCode};
use super::http::{Head, Response};
use super::{HubInput, Shared, StationListing, auth};
use crate::core::types::{CommandId, StreamId, StreamVersion};
use crate::domain::station::{SESSION_ID_BYTES_MAX, StationCommand};
use crate::environment::{Environment, SystemEnvironment};
use crate::store::{EventStore, ReadError};

/// Most events one events request returns.
pub const EVENTS_PAGE_MAX: usize = 1_000;

/// A JSON object body, checked field by field so that every refusal names the field.
struct Body(serde_json::Map<String, Value>);

impl Body {
    fn parse(bytes: &[u8], allowed: &[&str]) -> Result<Body, Response> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| Response::error(400, format!("the body is not JSON: {e}")))?;
        let Value::Object(fields) = value else {
            return Err(Response::error(400, "the body must be a JSON object"));
        };
        if let Some(unknown) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(Response::error(
                400,
                format!("unknown field {unknown:?}; expected {}", allowed.join(", ")),
            ));
        }
        Ok(Body(fields))
    }

    fn text(&self, name: &str) -> Result<Option<&str>, Response> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(Response::error(400, format!("{name} must be a string"))),
        }
    }

    fn required_text(&self, name: &str) -> Result<&str, Response> {
        self.text(name)?
            .ok_or_else(|| Response::error(400, format!("{name} is required")))
    }

    fn connector(&self) -> Result<u32, Response> {
        let refused = || {
            Response::error(
                400,
                format!("connector is required: an integer from 1 to {}", u32::MAX),
            )
        };
        let number = self
            .0
            .get("connector")
            .and_then(Value::as_u64)
            .ok_or_else(refused)?;
        u32::try_from(number)
            .ok()
            .filter(|c| *c >= 1)
            .ok_or_else(refused)
    }

    /// A session id: the idTag the station sees (OCPP's CiString20).
    fn session(&self) -> Result<String, Response> {
        let session = self.required_text("session")?;
        let printable = session.bytes().all(|b| b.is_ascii_graphic());
        if session.is_empty() || session.len() > SESSION_ID_BYTES_MAX || !printable {
            return Err(Response::error(
                400,
                format!(
                    "session must be 1 to {SESSION_ID_BYTES_MAX} printable ASCII characters (it is the idTag the station sees)"
                ),
            ));
        }
        Ok(session.to_owned())
    }
}

/// Answers one API request.
pub(super) async fn handle<S: EventStore>(
    shared: &Shared<S>,
    head: &Head,
    peer: std::net::IpAddr,
    body: &[u8],
) -> Response {
    let Some(rest) = head.path.strip_prefix("/api/") else {
        return Response::error(404, format!("no such resource: {}", head.path));
    };
    let presented = head
        .header("authorization")
        .and_then(|value| value.strip_prefix("Bearer "));
    // Failed tokens back off per client address, as failed handshakes do.
    let address_key = format!("api-address:{peer}");
    let keys = [address_key.as_str()];
    if let Err(wait_millis) =
        super::server::lock(&shared.failures).check(&keys, shared.now_millis())
    {
        return super::server::too_many(wait_millis);
    }
    if !presented.is_some_and(|token| {
        auth::secrets_equal(token.as_bytes(), shared.operator_token.as_bytes())
    }) {
        super::server::lock(&shared.failures).failed(&keys, shared.now_millis());
        return Response::error(
            401,
            "an operator token is required: Authorization: Bearer <token>",
        )
        .with_header("WWW-Authenticate", "Bearer realm=\"evsource\"");
    }
    let segments: Vec<&str> = rest.split('/').collect();
    match (head.method.as_str(), segments.as_slice()) {
        ("GET", ["stations"]) => list_stations(shared, None).await,
        ("GET", ["stations", id]) => list_stations(shared, Some(id)).await,
        ("PUT", ["stations", id]) => register(shared, id, body).await,
        ("POST", ["stations", id, "unlock"]) => {
            let fields = ["connector", "session", "command_id"];
            station_command(shared, id, body, &fields, |b| {
                Ok(StationCommand::RequestUnlock {
                    connector: b.connector()?,
                    session: b.session()?,
                })
            })
            .await
        }
        ("POST", ["stations", id, "stop"]) => {
            station_command(shared, id, body, &["session", "command_id"], |b| {
                Ok(StationCommand::StopSession {
                    session: b.session()?,
                })
            })
            .await
        }
        ("GET", ["stations", id, "events"]) => events(shared, id, head).await,
        (_, ["stations"] | ["stations", _] | ["stations", _, "unlock" | "stop" | "events"]) => {
            Response::error(
                405,
                format!("{} is not allowed on {}", head.method, head.path),
            )
        }
        _ => Response::error(404, format!("no such resource: {}", head.path)),
    }
}

async fn list_stations<S: EventStore>(shared: &Shared<S>, only: Option<&str>) -> Response {
    let (reply, listing) = oneshot::channel();
    let only = only.map(str::to_owned);
    let asked = HubInput::Stations {
        only: only.clone(),
        reply,
    };
    if shared.hub.send(asked).await.is_err() {
        return Response::error(503, "the node is stopping");
    }
    let Ok(stations) = listing.await else {
        return Response::error(503, "the node is stopping");
    };
    match only {
        Some(id) => match stations.into_iter().next() {
            Some(station) => Response::json(200, &listing_json(station)),
            None => Response::error(404, format!("the mirror knows no station {id}")),
        },
        None => {
            let all: Vec<Value> = stations.into_iter().map(listing_json).collect();
            Response::json(200, &json!({ "stations": all }))
        }
    }
}

fn listing_json(listing: StationListing) -> Value {
    let mut view = serde_json::to_value(&listing.view).expect("views serialise");
    view["id"] = json!(listing.id);
    view["online"] = json!(listing.online);
    view
}

async fn register<S: EventStore>(shared: &Shared<S>, station: &str, body: &[u8]) -> Response {
    if let Err(error) = auth::check_station_id(station) {
        return Response::error(400, error.to_string());
    }
    let password = match Body::parse(body, &["password"])
        .and_then(|b| Ok(b.required_text("password")?.to_owned()))
    {
        Ok(password) => password,
        Err(response) => return response,
    };
    if let Err(error) = auth::check_password(&password) {
        return Response::error(400, error.to_string());
    }
    let mut env = shared.environment();
    let salt = auth::salt_from(&mut env);
    let cost = shared.password_cost;
    let hashed = super::server::off_the_runtime(move || auth::hash_password(&password, salt, cost));
    let Some(hash) = hashed.await else {
        return Response::error(503, "the node is stopping");
    };
    match auth::register(&shared.store, station, &hash, env.now_millis()).await {
        Ok(()) => {
            tracing::info!(%station, "charge point registered");
            Response::json(201, &json!({ "id": station, "registered": true }))
        }
        Err(error) => Response::error(503, error.to_string()),
    }
}

/// Reads a command body (`fields`, `command` builds the command from it), then runs it.
async fn station_command<S: EventStore>(
    shared: &Shared<S>,
    station: &str,
    body: &[u8],
    fields: &[&str],
    command: impl FnOnce(&Body) -> Result<StationCommand, Response>,
) -> Response {
    let parsed = Body::parse(body, fields)
        .and_then(|b| Ok((command(&b)?, b.text("command_id")?.map(str::to_owned))));
    match parsed {
        Ok((command, command_id)) => command_response(shared, station, command_id, command).await,
        Err(response) => response,
    }
}

/// 404 unless `station` is registered; 503 if the registry cannot be read.
async fn require_registered<S: EventStore>(
    shared: &Shared<S>,
    station: &str,
) -> Result<(), Response> {
    match auth::registered_hash(&shared.store, station).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(Response::error(
            404,
            format!("no registered charge point {station}"),
        )),
        Err(error) => Err(Response::error(503, error.to_string())),
    }
}

/// Runs a station command; 404 for a charge point that is not registered.
async fn command_response<S: EventStore>(
    shared: &Shared<S>,
    station: &str,
    command_id: Option<String>,
    command: StationCommand,
) -> Response {
    let mut env = shared.environment();
    let command_id = match command_id {
        Some(text) => match super::api::parse_command_id(&text) {
            Some(id) => id,
            None => return Response::error(400, "command_id must be 32 hex digits"),
        },
        None => CommandId(u128::from(env.random_u64()) << 64 | u128::from(env.random_u64())),
    };
    if let Err(response) = require_registered(shared, station).await {
        return response;
    }
    let stream =
        crate::domain::station::stream_of(station).expect("a registered id makes a stream id");
    let answer = super::run_command(shared, &mut env, stream, command_id, command).await;
    api_response(answer)
}

fn api_response(answer: ApiResponse) -> Response {
    let status = match (&answer.code, answer.outcome.as_deref()) {
        (None, Some("Unchanged")) => 200,
        (None, _) => 202,
        (Some(ErrorCode::BadRequest), _) => 400,
        (Some(ErrorCode::Rejected | ErrorCode::CommandIdReused), _) => 409,
        (Some(ErrorCode::Contention | ErrorCode::Unavailable), _) => 503,
    };
    let body = serde_json::to_value(&answer).expect("answers serialise");
    let response = Response::json(status, &body);
    if status == 503 {
        response.with_header("Retry-After", "1")
    } else {
        response
    }
}

async fn events<S: EventStore>(shared: &Shared<S>, station: &str, head: &Head) -> Response {
    let kind = head.query_param("stream").unwrap_or("station");
    if !matches!(kind, "station" | "telemetry") {
        return Response::error(400, "stream must be station or telemetry");
    }
    let number = |name: &str, default: u64| match head.query_param(name) {
        None => Ok(default),
        Some(text) => text
            .parse::<u64>()
            .map_err(|_| Response::error(400, format!("{name} must be a non-negative integer"))),
    };
    let (from, limit) = match (number("from", 0), number("limit", 100)) {
        (Ok(from), Ok(limit)) if (1..=EVENTS_PAGE_MAX as u64).contains(&limit) => (from, limit),
        (Err(response), _) | (_, Err(response)) => return response,
        _ => return Response::error(400, format!("limit must be 1 to {EVENTS_PAGE_MAX}")),
    };
    if let Err(response) = require_registered(shared, station).await {
        return response;
    }
    let stream =
        StreamId::new(&format!("{kind}-{station}")).expect("a registered id makes a stream id");
    let events = match shared
        .store
        .read_stream(&stream, StreamVersion(from), limit as usize)
        .await
    {
        Ok(events) => events,
        Err(ReadError::StreamNotFound(_)) => Vec::new(),
        Err(error) => return Response::error(503, error.to_string()),
    };
    let next = events.last().map_or(from, |e| e.version.0 + 1);
    let events: Vec<Value> = events
        .into_iter()
        .map(|event| {
            let data = serde_json::from_slice::<Value>(&event.payload).unwrap_or(Value::Null);
            json!({
                "version": event.version.0,
                "position": event.position.0,
                "type": event.event_type,
                "recorded_at_millis": event.metadata.recorded_at_millis,
                "data": data,
            })
        })
        .collect();
    Response::json(
        200,
        &json!({ "stream": stream.as_str(), "events": events, "next": next }),
    )
}

impl<S> Shared<S> {
    /// A generator for one request, split off the node's seeded one.
    fn environment(&self) -> SystemEnvironment {
        let mut seeds = self.seeds.lock().unwrap_or_else(|p| p.into_inner());
        SystemEnvironment::new(seeds.next_u64())
    }
}
