//! Seed 000/001: the charging station aggregate — business only.
//!
//! It holds unlock requests and sessions per connector. Heartbeats, status notifications
//! and meter values are telemetry: they go to the station mirror, never here, so they
//! cannot bump this stream's version and starve commands. The aggregate never talks to
//! the station; the outbox dispatcher does, from persisted `UnlockRequested` events. A
//! session id doubles as the OCPP idTag of its RemoteStartTransaction, so it is limited to
//! [`SESSION_ID_BYTES_MAX`] printable ASCII bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::decider::{Aggregate, CodecError, Decider, EncodedEvent, json};

/// OCPP 1.6 idTag is a CiString20.
pub const SESSION_ID_BYTES_MAX: usize = 20;
/// Connector ids are 1..=CONNECTORS_MAX (0 addresses the whole station in OCPP).
pub const CONNECTORS_MAX: u32 = 16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StationCommand {
    /// Ask for `connector` to be unlocked for `session`.
    RequestUnlock { connector: u32, session: String },
    /// Record the station's definitive answer to the unlock request of `session`.
    RecordAnswer {
        session: String,
        answer: StationAnswer,
    },
    /// End an active session.
    StopSession { session: String },
}

/// What the station (or its silence) said about an unlock request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StationAnswer {
    Accepted,
    Rejected,
    TimedOut,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum StationEvent {
    UnlockRequested { connector: u32, session: String },
    UnlockAccepted { connector: u32, session: String },
    UnlockRejected { connector: u32, session: String },
    UnlockTimedOut { connector: u32, session: String },
    SessionStopped { connector: u32, session: String },
}

/// The business state of one connector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnectorState {
    Idle,
    /// An unlock request awaits the station's answer.
    Requested {
        session: String,
    },
    /// The station accepted; the session runs.
    Active {
        session: String,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StationState {
    /// Only connectors that were ever used appear.
    pub connectors: BTreeMap<u32, ConnectorState>,
    /// Where each known session is (sessions ids are never reused on a station).
    pub sessions: BTreeMap<String, SessionRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub connector: u32,
    pub outcome: Option<StationAnswer>,
    pub stopped: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StationRejection {
    UnknownConnector {
        connector: u32,
    },
    InvalidSessionId {
        reason: String,
    },
    /// The connector is requested by or active for another session.
    ConnectorBusy {
        connector: u32,
        session: String,
    },
    /// A session id is used once per station.
    SessionAlreadyUsed {
        session: String,
    },
    UnknownSession {
        session: String,
    },
    /// The request already got a different definitive answer.
    AlreadyAnswered {
        session: String,
        answer: StationAnswer,
    },
    SessionNotActive {
        session: String,
    },
}

/// The station decider.
#[derive(Debug)]
pub struct Station;

fn validate_session(session: &str) -> Result<(), StationRejection> {
    let reason = if session.is_empty() {
        "empty".to_owned()
    } else if session.len() > SESSION_ID_BYTES_MAX {
        format!(
            "{} bytes; the limit is {SESSION_ID_BYTES_MAX}",
            session.len()
        )
    } else if !session.bytes().all(|b| b.is_ascii_graphic()) {
        "only printable ASCII without spaces is allowed".to_owned()
    } else {
        return Ok(());
    };
    Err(StationRejection::InvalidSessionId { reason })
}

impl Station {
    fn request_unlock(
        state: &StationState,
        connector: u32,
        session: &str,
    ) -> Result<Vec<StationEvent>, StationRejection> {
        if connector == 0 || connector > CONNECTORS_MAX {
            return Err(StationRejection::UnknownConnector { connector });
        }
        validate_session(session)?;
        match state.connectors.get(&connector) {
            Some(
                ConnectorState::Requested { session: current }
                | ConnectorState::Active { session: current },
            ) if current == session => {
                return Ok(Vec::new()); // already requested for this very session
            }
            Some(
                ConnectorState::Requested { session: current }
                | ConnectorState::Active { session: current },
            ) => {
                return Err(StationRejection::ConnectorBusy {
                    connector,
                    session: current.clone(),
                });
            }
            Some(ConnectorState::Idle) | None => {}
        }
        if state.sessions.contains_key(session) {
            return Err(StationRejection::SessionAlreadyUsed {
                session: session.to_owned(),
            });
        }
        Ok(vec![StationEvent::UnlockRequested {
            connector,
            session: session.to_owned(),
        }])
    }

    fn record_answer(
        state: &StationState,
        session: &str,
        answer: StationAnswer,
    ) -> Result<Vec<StationEvent>, StationRejection> {
        let record =
            state
                .sessions
                .get(session)
                .ok_or_else(|| StationRejection::UnknownSession {
                    session: session.to_owned(),
                })?;
        match record.outcome {
            Some(previous) if previous == answer => return Ok(Vec::new()),
            Some(previous) => {
                return Err(StationRejection::AlreadyAnswered {
                    session: session.to_owned(),
                    answer: previous,
                });
            }
            None => {}
        }
        let connector = record.connector;
        let session = session.to_owned();
        Ok(vec![match answer {
            StationAnswer::Accepted => StationEvent::UnlockAccepted { connector, session },
            StationAnswer::Rejected => StationEvent::UnlockRejected { connector, session },
            StationAnswer::TimedOut => StationEvent::UnlockTimedOut { connector, session },
        }])
    }

    fn stop_session(
        state: &StationState,
        session: &str,
    ) -> Result<Vec<StationEvent>, StationRejection> {
        let record =
            state
                .sessions
                .get(session)
                .ok_or_else(|| StationRejection::UnknownSession {
                    session: session.to_owned(),
                })?;
        if record.stopped {
            return Ok(Vec::new());
        }
        if record.outcome != Some(StationAnswer::Accepted) {
            return Err(StationRejection::SessionNotActive {
                session: session.to_owned(),
            });
        }
        Ok(vec![StationEvent::SessionStopped {
            connector: record.connector,
            session: session.to_owned(),
        }])
    }
}

impl Decider for Station {
    type Command = StationCommand;
    type Event = StationEvent;
    type State = StationState;
    type Rejection = StationRejection;

    fn initial() -> StationState {
        StationState::default()
    }

    fn decide(
        state: &StationState,
        command: &StationCommand,
    ) -> Result<Vec<StationEvent>, StationRejection> {
        match command {
            StationCommand::RequestUnlock { connector, session } => {
                Station::request_unlock(state, *connector, session)
            }
            StationCommand::RecordAnswer { session, answer } => {
                Station::record_answer(state, session, *answer)
            }
            StationCommand::StopSession { session } => Station::stop_session(state, session),
        }
    }

    fn evolve(mut state: StationState, event: &StationEvent) -> StationState {
        let (connector, session, connector_state, outcome, stopped) = match event {
            StationEvent::UnlockRequested { connector, session } => (
                connector,
                session,
                ConnectorState::Requested {
                    session: session.clone(),
                },
                None,
                false,
            ),
            StationEvent::UnlockAccepted { connector, session } => (
                connector,
                session,
                ConnectorState::Active {
                    session: session.clone(),
                },
                Some(StationAnswer::Accepted),
                false,
            ),
            StationEvent::UnlockRejected { connector, session } => (
                connector,
                session,
                ConnectorState::Idle,
                Some(StationAnswer::Rejected),
                false,
            ),
            StationEvent::UnlockTimedOut { connector, session } => (
                connector,
                session,
                ConnectorState::Idle,
                Some(StationAnswer::TimedOut),
                false,
            ),
            StationEvent::SessionStopped { connector, session } => (
                connector,
                session,
                ConnectorState::Idle,
                Some(StationAnswer::Accepted),
                true,
            ),
        };
        state.connectors.insert(*connector, connector_state);
        let record = SessionRecord {
            connector: *connector,
            outcome,
            stopped,
        };
        // Updated in place when known: no copy of the id, no second search.
        match state.sessions.get_mut(session) {
            Some(known) => *known = record,
            None => {
                state.sessions.insert(session.clone(), record);
            }
        }
        state
    }
}

impl Aggregate for Station {
    const SNAPSHOT_SCHEMA: u32 = 1;

    fn encode_event(event: &StationEvent) -> EncodedEvent {
        let (event_type, payload) = json::encode_event(event);
        EncodedEvent {
            event_type,
            tags: Vec::new(),
            payload,
        }
    }

    /// Every station event carries the same two fields, so the payload is parsed as one
    /// plain struct and the type picks the variant: no tag splicing and no buffering of an
    /// internally tagged enum (this is the inner loop of every station's rehydration).
    fn decode_event(event_type: &str, payload: &[u8]) -> Result<StationEvent, CodecError> {
        #[derive(Deserialize)]
        struct Fields {
            connector: u32,
            session: String,
        }
        let variant: fn(u32, String) -> StationEvent = match event_type {
            "UnlockRequested" => {
                |connector, session| StationEvent::UnlockRequested { connector, session }
            }
            "UnlockAccepted" => {
                |connector, session| StationEvent::UnlockAccepted { connector, session }
            }
            "UnlockRejected" => {
                |connector, session| StationEvent::UnlockRejected { connector, session }
            }
            "UnlockTimedOut" => {
                |connector, session| StationEvent::UnlockTimedOut { connector, session }
            }
            "SessionStopped" => {
                |connector, session| StationEvent::SessionStopped { connector, session }
            }
            _ => {
                return Err(CodecError {
                    what: event_type.to_owned(),
                    reason: "not a station event type".into(),
                });
            }
        };
        let Fields { connector, session } = json::decode(event_type, payload)?;
        Ok(variant(connector, session))
    }

    fn encode_state(state: &StationState) -> Vec<u8> {
        json::encode(state)
    }

    fn decode_state(bytes: &[u8]) -> Result<StationState, CodecError> {
        json::decode("station state", bytes)
    }
}

#[cfg(test)]
mod tests {
    //! The station's rules (seed 000's answer, points b and e), decided purely.
    use super::*;

    fn unlock(connector: u32, session: &str) -> StationCommand {
        StationCommand::RequestUnlock {
            connector,
            session: session.into(),
        }
    }

    #[test]
    fn a_repeated_request_for_the_same_session_is_a_no_op_and_another_session_is_refused() {
        let state = Station::fold(&[StationEvent::UnlockRequested {
            connector: 1,
            session: "s1".into(),
        }]);
        assert_eq!(Station::decide(&state, &unlock(1, "s1")), Ok(vec![]));
        assert_eq!(
            Station::decide(&state, &unlock(1, "s2")),
            Err(StationRejection::ConnectorBusy {
                connector: 1,
                session: "s1".into()
            })
        );
        assert!(Station::decide(&state, &unlock(2, "s2")).is_ok());
    }

    #[test]
    fn answers_are_definitive_and_idempotent() {
        let state = Station::fold(&[StationEvent::UnlockRequested {
            connector: 1,
            session: "s1".into(),
        }]);
        let accept = StationCommand::RecordAnswer {
            session: "s1".into(),
            answer: StationAnswer::Accepted,
        };
        let events = Station::decide(&state, &accept).unwrap();
        let state = events.iter().fold(state, Station::evolve);
        assert_eq!(Station::decide(&state, &accept), Ok(vec![]));
        assert_eq!(
            Station::decide(
                &state,
                &StationCommand::RecordAnswer {
                    session: "s1".into(),
                    answer: StationAnswer::Rejected
                }
            ),
            Err(StationRejection::AlreadyAnswered {
                session: "s1".into(),
                answer: StationAnswer::Accepted
            })
        );
    }

    #[test]
    fn a_rejected_request_frees_the_connector_but_not_the_session_id() {
        let state = Station::fold(&[
            StationEvent::UnlockRequested {
                connector: 1,
                session: "s1".into(),
            },
            StationEvent::UnlockRejected {
                connector: 1,
                session: "s1".into(),
            },
        ]);
        assert!(Station::decide(&state, &unlock(1, "s2")).is_ok());
        assert_eq!(
            Station::decide(&state, &unlock(1, "s1")),
            Err(StationRejection::SessionAlreadyUsed {
                session: "s1".into()
            })
        );
    }

    #[test]
    fn bad_input_is_refused() {
        let state = Station::initial();
        assert!(matches!(
            Station::decide(&state, &unlock(0, "s")),
            Err(StationRejection::UnknownConnector { connector: 0 })
        ));
        assert!(matches!(
            Station::decide(&state, &unlock(1, "this-session-id-is-too-long")),
            Err(StationRejection::InvalidSessionId { .. })
        ));
    }

    /// Every event type round-trips through the stored form, and the stored form is the
    /// one earlier versions wrote (`{"connector":…,"session":…}`, the type beside it).
    /// An unknown type or a malformed payload is a codec error, not a panic.
    #[test]
    fn events_round_trip_and_bad_bytes_are_refused() {
        let session = String::from("s1");
        let events = [
            StationEvent::UnlockRequested {
                connector: 1,
                session: session.clone(),
            },
            StationEvent::UnlockAccepted {
                connector: 2,
                session: session.clone(),
            },
            StationEvent::UnlockRejected {
                connector: 3,
                session: session.clone(),
            },
            StationEvent::UnlockTimedOut {
                connector: 4,
                session: session.clone(),
            },
            StationEvent::SessionStopped {
                connector: 5,
                session,
            },
        ];
        for event in &events {
            let encoded = Station::encode_event(event);
            let decoded = Station::decode_event(&encoded.event_type, &encoded.payload);
            assert_eq!(decoded.as_ref(), Ok(event));
        }
        let stored = br#"{"connector":7,"session":"abc"}"#;
        assert_eq!(
            Station::decode_event("UnlockAccepted", stored),
            Ok(StationEvent::UnlockAccepted {
                connector: 7,
                session: "abc".into()
            })
        );
        let unknown = Station::decode_event("UnlockExploded", stored).unwrap_err();
        assert_eq!(unknown.what, "UnlockExploded");
        for bad in [
            &b"{\"connector\":7}"[..],
            b"{\"connector\":-1,\"session\":\"a\"}",
            b"not json",
            b"",
        ] {
            assert!(
                Station::decode_event("UnlockAccepted", bad).is_err(),
                "{bad:?}"
            );
        }
    }
}
