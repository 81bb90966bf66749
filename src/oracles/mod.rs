//! The invariant checkers, in one place, apart from the system under test. Tests, the
//! loopback end-to-end run and the simulator all judge a run with these functions.
//!
//! They read only what is observable from outside: the events in the store (what the CSMS
//! recorded) and the stations' ground-truth actuation logs (what physically happened).

pub mod history;
pub mod protocol;

use std::collections::BTreeMap;
use std::fmt;

use crate::chargepoint::Actuation;
use crate::core::limits::Limits;
use crate::core::types::{GlobalPosition, RecordedEvent};
use crate::decider::Aggregate;
use crate::domain::station::{Station, StationAnswer, StationEvent};
use crate::store::{EventStore, ReadError};

/// A broken invariant, with enough context to read the failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// `I1`, `I4`, `I5`, …
    pub invariant: &'static str,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} violated: {}", self.invariant, self.detail)
    }
}

/// What a run did, when no invariant broke.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnlockSummary {
    pub requests: usize,
    pub accepted: usize,
    pub rejected: usize,
    pub timed_out: usize,
    pub actuations: usize,
}

/// One station's ground truth, labelled with its charge point id.
pub struct StationTruth<'a> {
    pub station: &'a str,
    pub actuations: &'a [Actuation],
}

/// Snapshots the ground truth of stations run by drivers (tests and the simulator).
pub fn ground_truth(
    stations: &[crate::node::driver::SharedChargePoint],
) -> Vec<(String, Vec<Actuation>)> {
    stations
        .iter()
        .map(|shared| {
            let station = shared.lock().unwrap_or_else(|p| p.into_inner());
            (station.id().to_owned(), station.actuations().to_vec())
        })
        .collect()
}

/// [`check_unlocks`] over a [`ground_truth`] snapshot.
pub fn check_unlocks_against(
    events: &[RecordedEvent],
    truth: &[(String, Vec<Actuation>)],
) -> Result<UnlockSummary, Violation> {
    let views: Vec<StationTruth<'_>> = truth
        .iter()
        .map(|(station, actuations)| StationTruth {
            station,
            actuations,
        })
        .collect();
    check_unlocks(events, &views)
}

/// **I1**, the records side: replayed from the first event, every station stream holds
/// only decisions the station decider could have made at that point — an unlock request
/// only on a free connector, an answer only to a pending request, a stop only of an active
/// session. A node that decided on state it misread (a snapshot of another build read as
/// its own, a stale cache) records events the replay refuses, whatever the stations did.
pub fn check_station_decisions(events: &[RecordedEvent]) -> Result<(), Violation> {
    use crate::domain::station::{StationAnswer, StationCommand};
    let mut states: BTreeMap<&str, <Station as crate::decider::Decider>::State> = BTreeMap::new();
    for event in events {
        if crate::domain::station::station_of(&event.stream).is_none() {
            continue;
        }
        // Noted telemetry (N5) and anything else that is not a business event is skipped.
        let Ok(decoded) = Station::decode_event(&event.event_type, &event.payload) else {
            continue;
        };
        let state = states
            .entry(event.stream.as_str())
            .or_insert_with(<Station as crate::decider::Decider>::initial);
        let (connector, session) = decoded.connector_and_session();
        let session_text = session.as_str().to_owned();
        let command = match decoded {
            StationEvent::UnlockRequested { .. } => StationCommand::RequestUnlock {
                connector,
                session: session_text,
            },
            StationEvent::UnlockAccepted { .. } => StationCommand::RecordAnswer {
                session: session_text,
                answer: StationAnswer::Accepted,
            },
            StationEvent::UnlockRejected { .. } => StationCommand::RecordAnswer {
                session: session_text,
                answer: StationAnswer::Rejected,
            },
            StationEvent::UnlockTimedOut { .. } => StationCommand::RecordAnswer {
                session: session_text,
                answer: StationAnswer::TimedOut,
            },
            StationEvent::SessionStopped { .. } => StationCommand::StopSession {
                session: session_text,
            },
        };
        match <Station as crate::decider::Decider>::decide(state, &command) {
            Ok(decided) if decided == [decoded.clone()] => {}
            other => {
                return Err(Violation {
                    invariant: "I1",
                    detail: format!(
                        "{} at {} in {} is not a decision the station could have made there (replayed from the start, the decider gives {other:?}): a node decided on state it misread",
                        event.event_type, event.position, event.stream
                    ),
                });
            }
        }
        let taken = std::mem::replace(state, <Station as crate::decider::Decider>::initial());
        *state = <Station as crate::decider::Decider>::evolve(taken, &decoded);
    }
    Ok(())
}

/// What one connector of a station is released for, as the station itself knows it:
/// the idTag it was unlocked for while Preparing or Charging, `None` when it is free.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectorTruth {
    pub station: String,
    pub connector: u32,
    pub released_for: Option<String>,
}

/// One station's connectors as [`connector_truth`] saw them; `connectors` is `None` while
/// the station still has a transaction message (StartTransaction, StopTransaction) on its
/// way to the CSMS, so its business state cannot be judged yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StationConnectors {
    pub station: String,
    pub connectors: Option<Vec<ConnectorTruth>>,
}

/// Snapshots each station's connectors (see [`StationConnectors`]).
pub fn connector_truth(
    stations: &[crate::node::driver::SharedChargePoint],
) -> Vec<StationConnectors> {
    stations
        .iter()
        .map(|shared| {
            let station = shared.lock().unwrap_or_else(|p| p.into_inner());
            let id = station.id().to_owned();
            if station.transaction_calls_undelivered() {
                return StationConnectors {
                    station: id,
                    connectors: None,
                };
            }
            let connectors = station
                .connector_ids()
                .into_iter()
                .map(|connector| ConnectorTruth {
                    station: station.id().to_owned(),
                    connector,
                    released_for: station.connector(connector).and_then(|c| c.id_tag.clone()),
                })
                .collect();
            StationConnectors {
                station: id,
                connectors: Some(connectors),
            }
        })
        .collect()
}

/// The mark every frame of a simulated impostor station (F11) carries: in its station id,
/// its idTag, its vendor and its error texts.
pub const IMPOSTOR_MARK: &str = "impostor";

/// **I13**: nothing an unauthenticated connection sends is recorded or acted on. Fails
/// when the CSMS accepted any of the impostors' handshakes (`admitted`), or when a stored
/// event — its stream name or its payload — holds [`IMPOSTOR_MARK`], which only an
/// impostor's frames carry.
pub fn check_impostors(admitted: u64, events: &[RecordedEvent]) -> Result<(), Violation> {
    if admitted > 0 {
        return Err(Violation {
            invariant: "I13",
            detail: format!(
                "the CSMS accepted {admitted} impostor handshake(s): a wrong password, another station's credentials or an unknown id"
            ),
        });
    }
    let mark = IMPOSTOR_MARK.as_bytes();
    let marked = |bytes: &[u8]| bytes.windows(mark.len()).any(|w| w == mark);
    match events
        .iter()
        .find(|e| marked(e.stream.as_str().as_bytes()) || marked(&e.payload))
    {
        None => Ok(()),
        Some(event) => Err(Violation {
            invariant: "I13",
            detail: format!(
                "{} {} at {} holds what an impostor sent",
                event.stream.as_str(),
                event.event_type,
                event.position
            ),
        }),
    }
}

/// **I4**, the stations' side: after healing, no station still holds a transaction message
/// the CSMS never answered. Without it, a CSMS that never answers StopTransaction would
/// leave every such station unjudged by [`check_sessions_match_stations`].
pub fn check_transactions_delivered(stations: &[StationConnectors]) -> Result<(), Violation> {
    match stations.iter().find(|s| s.connectors.is_none()) {
        None => Ok(()),
        Some(pending) => Err(Violation {
            invariant: "I4",
            detail: format!(
                "{} still holds a transaction message (StartTransaction or StopTransaction) the CSMS never answered after the faults healed",
                pending.station
            ),
        }),
    }
}

/// **I5**, the business state: after quiescence, a session the CSMS's station aggregate
/// still holds active, whose transaction the record shows started, runs on the station —
/// the connector is released for that session's idTag. A session whose transaction the
/// station ended must have been stopped in the record: otherwise the connector stays busy
/// for the CSMS for ever and every later request for it is refused. (A session that never
/// started a transaction is not judged: the CSMS learns of a driver who never plugged in
/// only from a status report, which a lossy link may drop.) Stations with a transaction
/// message still on its way are skipped here, as the record may yet catch up;
/// [`check_transactions_delivered`] fails a run in which one never arrives.
pub fn check_sessions_match_stations(
    events: &[RecordedEvent],
    stations: &[StationConnectors],
) -> Result<(), Violation> {
    use crate::domain::station::ConnectorState;
    let mut states: BTreeMap<&str, <Station as crate::decider::Decider>::State> = BTreeMap::new();
    let mut started: std::collections::BTreeSet<(&str, String)> = Default::default();
    for event in events {
        if let Some(station) = event.stream.as_str().strip_prefix("telemetry-")
            && let Ok(crate::mirror::TelemetryEvent::TransactionStarted { id_tag, .. }) =
                crate::mirror::TelemetryEvent::decode(&event.event_type, &event.payload)
        {
            started.insert((station, id_tag));
            continue;
        }
        let Some(station) = crate::domain::station::station_of(&event.stream) else {
            continue;
        };
        // Noted telemetry (N5) is not business.
        let Ok(decoded) = Station::decode_event(&event.event_type, &event.payload) else {
            continue;
        };
        let state = states
            .entry(station)
            .or_insert_with(<Station as crate::decider::Decider>::initial);
        let taken = std::mem::replace(state, <Station as crate::decider::Decider>::initial());
        *state = <Station as crate::decider::Decider>::evolve(taken, &decoded);
    }
    for truth in stations
        .iter()
        .filter_map(|s| s.connectors.as_ref())
        .flatten()
    {
        let Some(state) = states.get(truth.station.as_str()) else {
            continue;
        };
        if let Some(ConnectorState::Active { session }) = state.connectors.get(truth.connector)
            && truth.released_for.as_deref() != Some(session.as_str())
            && started.contains(&(truth.station.as_str(), session.as_str().to_owned()))
        {
            return Err(Violation {
                invariant: "I5",
                detail: format!(
                    "the CSMS holds session {session} active on {} connector {}, whose transaction the record shows started, but the station has the connector released for {:?}: the session's end was never recorded",
                    truth.station, truth.connector, truth.released_for
                ),
            });
        }
    }
    Ok(())
}

/// Every event in `store`, read page by page.
pub async fn read_all_events<S: EventStore>(store: &S) -> Result<Vec<RecordedEvent>, ReadError> {
    let mut all: Vec<RecordedEvent> = Vec::new();
    loop {
        let page = store
            .read_all(
                GlobalPosition(all.len() as u64),
                Limits::default().read_events_max,
            )
            .await?;
        if page.is_empty() {
            return Ok(all);
        }
        all.extend(page);
    }
}

/// **I4**, the command side: no client's command starved. A command refused because every
/// attempt met a concurrent writer never got persisted, so it can never get an outcome;
/// `starved` lists such commands as (station, what the node answered).
pub fn check_no_starvation(starved: &[(String, String)]) -> Result<(), Violation> {
    match starved.first() {
        None => Ok(()),
        Some((station, answer)) => Err(Violation {
            invariant: "I4",
            detail: format!(
                "{} command(s) starved; the first, on {station}, was refused: {answer}",
                starved.len()
            ),
        }),
    }
}

/// Checks, after quiescence:
/// * **I4** — every `UnlockRequested` has exactly one outcome event;
/// * **I1** — no request was physically unlocked more than once, and nothing was unlocked
///   that no request asked for (two sessions at once on one connector are excluded by the
///   station itself, which unlocks only an Available connector);
/// * **I5** — an outcome is `UnlockAccepted` exactly when the station really unlocked.
pub fn check_unlocks(
    events: &[RecordedEvent],
    stations: &[StationTruth<'_>],
) -> Result<UnlockSummary, Violation> {
    let mut requests: BTreeMap<(String, String), u32> = BTreeMap::new();
    let mut outcomes: BTreeMap<(String, String), Vec<StationAnswer>> = BTreeMap::new();
    for event in events {
        let Some(station) = crate::domain::station::station_of(&event.stream) else {
            continue;
        };
        let decoded =
            Station::decode_event(&event.event_type, &event.payload).map_err(|e| Violation {
                invariant: "I10",
                detail: format!("stored event at {} does not decode: {e}", event.position),
            })?;
        let (session, answer) = match decoded {
            StationEvent::UnlockRequested { connector, session } => {
                requests.insert((station.to_owned(), session.to_string()), connector);
                continue;
            }
            StationEvent::UnlockAccepted { session, .. } => (session, StationAnswer::Accepted),
            StationEvent::UnlockRejected { session, .. } => (session, StationAnswer::Rejected),
            StationEvent::UnlockTimedOut { session, .. } => (session, StationAnswer::TimedOut),
            StationEvent::SessionStopped { .. } => continue,
        };
        outcomes
            .entry((station.to_owned(), session.to_string()))
            .or_default()
            .push(answer);
    }
    let mut unlocked: BTreeMap<(String, String), Vec<&Actuation>> = BTreeMap::new();
    for truth in stations {
        for actuation in truth.actuations {
            unlocked
                .entry((truth.station.to_owned(), actuation.id_tag.clone()))
                .or_default()
                .push(actuation);
        }
    }
    let mut summary = UnlockSummary {
        requests: requests.len(),
        actuations: stations.iter().map(|s| s.actuations.len()).sum(),
        ..UnlockSummary::default()
    };
    for ((station, session), connector) in &requests {
        let key = (station.clone(), session.clone());
        let answers = outcomes.get(&key).map(Vec::as_slice).unwrap_or_default();
        let [answer] = answers else {
            return Err(Violation {
                invariant: "I4",
                detail: format!(
                    "request {session} on {station} connector {connector} has {} outcome(s): {answers:?}",
                    answers.len()
                ),
            });
        };
        let physical = unlocked.get(&key).map(Vec::as_slice).unwrap_or_default();
        if physical.len() > 1 {
            return Err(Violation {
                invariant: "I1",
                detail: format!(
                    "request {session} on {station} was physically unlocked {} times: {physical:?}",
                    physical.len()
                ),
            });
        }
        if (*answer == StationAnswer::Accepted) != (physical.len() == 1) {
            return Err(Violation {
                invariant: "I5",
                detail: format!(
                    "request {session} on {station}: the CSMS recorded {answer:?} but the station unlocked {} time(s)",
                    physical.len()
                ),
            });
        }
        match answer {
            StationAnswer::Accepted => summary.accepted += 1,
            StationAnswer::Rejected => summary.rejected += 1,
            StationAnswer::TimedOut => summary.timed_out += 1,
        }
    }
    for ((station, id_tag), physical) in &unlocked {
        if !requests.contains_key(&(station.clone(), id_tag.clone())) {
            return Err(Violation {
                invariant: "I1",
                detail: format!(
                    "{station} unlocked for {id_tag}, which no request asked for: {physical:?}"
                ),
            });
        }
    }
    Ok(summary)
}

/// **I3** — every stream's versions are contiguous from 0, global positions are gapless
/// and increasing, and no event id appears twice.
pub fn check_store_shape(events: &[RecordedEvent]) -> Result<(), Violation> {
    let mut next_version: BTreeMap<&str, u64> = BTreeMap::new();
    let mut ids = std::collections::BTreeSet::new();
    for (index, event) in events.iter().enumerate() {
        if event.position.0 != index as u64 {
            return Err(Violation {
                invariant: "I3",
                detail: format!("event {index} of the log has position {}", event.position),
            });
        }
        let expected = next_version.entry(event.stream.as_str()).or_default();
        if event.version.0 != *expected {
            return Err(Violation {
                invariant: "I3",
                detail: format!(
                    "{} has {} at {} where {} was due",
                    event.stream, event.version, event.position, *expected
                ),
            });
        }
        *expected += 1;
        if !ids.insert(event.id) {
            return Err(Violation {
                invariant: "I3",
                detail: format!(
                    "event id {} stored twice (again at {})",
                    event.id, event.position
                ),
            });
        }
    }
    Ok(())
}

/// **I8** — a command id took effect at most once. One decision's events carry ids
/// `EventId::derive(command, 0..n)`, so every event that is the first of a decision
/// (index 0) — or carries an id not derived from its command at all, as a naive writer's
/// would — counts as one application; a command may have at most one.
pub fn check_commands_once(events: &[RecordedEvent]) -> Result<(), Violation> {
    const EVENTS_PER_DECISION_MAX: u32 = 1024;
    let mut applications: BTreeMap<crate::core::types::CommandId, Vec<GlobalPosition>> =
        BTreeMap::new();
    for event in events {
        let Some(command) = event.metadata.command_id else {
            continue;
        };
        let first_of_decision = event.id == crate::core::types::EventId::derive(command, 0);
        let derived = first_of_decision
            || (1..EVENTS_PER_DECISION_MAX)
                .any(|index| event.id == crate::core::types::EventId::derive(command, index));
        if first_of_decision || !derived {
            let positions = applications.entry(command).or_default();
            positions.push(event.position);
            if positions.len() > 1 {
                return Err(Violation {
                    invariant: "I8",
                    detail: format!(
                        "command {command} took effect more than once: at {positions:?}"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// **I2** — every append acknowledged to a client is in the store: the event at the
/// acknowledged position carries the acknowledged command id.
pub fn check_acknowledged(
    events: &[RecordedEvent],
    acknowledged: &[(crate::core::types::CommandId, GlobalPosition)],
) -> Result<(), Violation> {
    for (command, position) in acknowledged {
        let found = events
            .get(position.0 as usize)
            .and_then(|e| e.metadata.command_id);
        if found != Some(*command) {
            return Err(Violation {
                invariant: "I2",
                detail: format!(
                    "command {command} was acknowledged at {position}, but the store holds {found:?} there"
                ),
            });
        }
    }
    Ok(())
}

/// A fingerprint of a run's stored history (every event's stream, version, position, id,
/// type, recorded time and payload). Two runs of one seed must have the same (I9).
pub fn fingerprint(events: &[RecordedEvent]) -> u128 {
    let mut bytes = Vec::new();
    for event in events {
        bytes.extend_from_slice(event.stream.as_str().as_bytes());
        bytes.extend_from_slice(&event.version.0.to_le_bytes());
        bytes.extend_from_slice(&event.position.0.to_le_bytes());
        bytes.extend_from_slice(&event.id.0.to_le_bytes());
        bytes.extend_from_slice(event.event_type.as_bytes());
        bytes.extend_from_slice(&event.metadata.recorded_at_millis.to_le_bytes());
        bytes.extend_from_slice(&event.payload);
    }
    crate::core::types::hash128(&bytes)
}
