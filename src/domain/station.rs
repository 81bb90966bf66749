//! Seed 000/001: the charging station aggregate — business only.
//!
//! It holds unlock requests and sessions per connector. Heartbeats, status notifications
//! and meter values are telemetry: they go to the station mirror, never here, so they
//! cannot bump this stream's version and starve commands. The aggregate never talks to
//! the station; the outbox dispatcher does, from persisted `UnlockRequested` events. A
//! session id doubles as the OCPP idTag of its RemoteStartTransaction, so it is a
//! [`SessionId`]: at most [`SESSION_ID_BYTES_MAX`] printable ASCII bytes, kept inline.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::core::hash::FoldHash;
use crate::decider::{Aggregate, CodecError, Decider, EncodedEvent, json};

/// The prefix of a station's business stream: `station-<charge point id>`.
pub const STREAM_PREFIX: &str = "station-";

/// The business stream of the charge point `station`; an error when the id cannot be part
/// of a stream id (too long, or bytes a stream id refuses).
pub fn stream_of(
    station: &str,
) -> Result<crate::core::types::StreamId, crate::core::types::StreamIdError> {
    crate::core::types::StreamId::new(&format!("{STREAM_PREFIX}{station}"))
}

/// The charge point id whose business stream `stream` is, if it is one.
pub fn station_of(stream: &crate::core::types::StreamId) -> Option<&str> {
    stream.as_str().strip_prefix(STREAM_PREFIX)
}

/// OCPP 1.6 idTag is a CiString20.
pub const SESSION_ID_BYTES_MAX: usize = 20;
/// Connector ids are 1..=CONNECTORS_MAX (0 addresses the whole station in OCPP).
pub const CONNECTORS_MAX: u32 = crate::core::limits::STATION_CONNECTORS_MAX;

/// A session id: 1 to [`SESSION_ID_BYTES_MAX`] printable ASCII bytes without spaces (it is
/// sent to the station as an OCPP idTag). Held inline and `Copy`: replaying a station's
/// history allocates nothing per event. The bytes are zero-padded and the last byte holds
/// the length, so equality and hashing work on three whole words.
#[derive(Clone, Copy)]
pub struct SessionId {
    bytes: [u8; SESSION_ID_WORDS_BYTES],
}

const SESSION_ID_WORDS_BYTES: usize = 24;
const SESSION_ID_LEN_AT: usize = SESSION_ID_WORDS_BYTES - 1;

/// Why a string is not a [`SessionId`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid session id: {reason}")]
pub struct InvalidSessionId {
    pub reason: String,
}

impl SessionId {
    pub fn new(session: &str) -> Result<SessionId, InvalidSessionId> {
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
            let mut bytes = [0u8; SESSION_ID_WORDS_BYTES];
            bytes[..session.len()].copy_from_slice(session.as_bytes());
            bytes[SESSION_ID_LEN_AT] = session.len() as u8;
            return Ok(SessionId { bytes });
        };
        Err(InvalidSessionId { reason })
    }

    pub fn as_str(&self) -> &str {
        let len = usize::from(self.bytes[SESSION_ID_LEN_AT]);
        std::str::from_utf8(&self.bytes[..len]).expect("ASCII by construction")
    }

    /// An id from its three words (bytes little-endian, the length in the top byte).
    #[inline]
    fn from_words(words: [u64; 3]) -> SessionId {
        let mut bytes = [0u8; SESSION_ID_WORDS_BYTES];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        SessionId { bytes }
    }

    #[inline]
    fn word(&self, index: usize) -> u64 {
        let (word, _) = self.bytes[index * 8..]
            .split_first_chunk::<8>()
            .expect("three words");
        u64::from_le_bytes(*word)
    }
}

/// Compared word by word, as the words were written (see `canonical_fields`).
impl PartialEq for SessionId {
    #[inline]
    fn eq(&self, other: &SessionId) -> bool {
        self.word(0) == other.word(0)
            && self.word(1) == other.word(1)
            && self.word(2) == other.word(2)
    }
}

impl Eq for SessionId {}

/// The three words folded into one before hashing (one multiply, not three in a chain):
/// ids that fold alike only share a bucket, equality still tells them apart.
impl std::hash::Hash for SessionId {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.word(0) ^ self.word(1).rotate_left(21) ^ self.word(2).rotate_left(42));
    }
}

impl PartialOrd for SessionId {
    fn partial_cmp(&self, other: &SessionId) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The order of the strings, so ordered collections of ids sort as their text does.
impl Ord for SessionId {
    fn cmp(&self, other: &SessionId) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for SessionId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<SessionId, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SessionId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a session id")
            }
            fn visit_str<E: serde::de::Error>(self, session: &str) -> Result<SessionId, E> {
                SessionId::new(session).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

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

impl StationCommand {
    /// Whether `first` — the first event a command id produced — is what this command
    /// records: the same request sent again, not another one under a reused id.
    pub fn is_recorded_as(&self, first: &StationEvent) -> bool {
        match (self, first) {
            (
                StationCommand::RequestUnlock { connector, session },
                StationEvent::UnlockRequested {
                    connector: recorded,
                    session: recorded_session,
                },
            ) => connector == recorded && session == recorded_session.as_str(),
            (StationCommand::RecordAnswer { session, answer }, event) => {
                let (_, recorded_session) = event.connector_and_session();
                let recorded_answer = match event {
                    StationEvent::UnlockAccepted { .. } => StationAnswer::Accepted,
                    StationEvent::UnlockRejected { .. } => StationAnswer::Rejected,
                    StationEvent::UnlockTimedOut { .. } => StationAnswer::TimedOut,
                    _ => return false,
                };
                *answer == recorded_answer && session == recorded_session.as_str()
            }
            (
                StationCommand::StopSession { session },
                StationEvent::SessionStopped {
                    session: recorded, ..
                },
            ) => session == recorded.as_str(),
            _ => false,
        }
    }
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
    UnlockRequested { connector: u32, session: SessionId },
    UnlockAccepted { connector: u32, session: SessionId },
    UnlockRejected { connector: u32, session: SessionId },
    UnlockTimedOut { connector: u32, session: SessionId },
    SessionStopped { connector: u32, session: SessionId },
}

impl StationEvent {
    /// The connector and session every station event names.
    pub fn connector_and_session(&self) -> (u32, SessionId) {
        match *self {
            StationEvent::UnlockRequested { connector, session }
            | StationEvent::UnlockAccepted { connector, session }
            | StationEvent::UnlockRejected { connector, session }
            | StationEvent::UnlockTimedOut { connector, session }
            | StationEvent::SessionStopped { connector, session } => (connector, session),
        }
    }
}

/// The business state of one connector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnectorState {
    Idle,
    /// An unlock request awaits the station's answer.
    Requested {
        session: SessionId,
    },
    /// The station accepted; the session runs.
    Active {
        session: SessionId,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StationState {
    /// Only connectors that were ever used appear.
    pub connectors: Connectors,
    /// Where each known session is (sessions ids are never reused on a station). Looked
    /// up once per replayed event, so a hash table; it is never iterated except to
    /// serialise, which sorts (snapshots are the same bytes for the same state).
    #[serde(serialize_with = "sorted")]
    pub sessions: HashMap<SessionId, SessionRecord, FoldHash>,
}

/// The state of each connector that was ever used, by connector id (1..=[`CONNECTORS_MAX`]):
/// a table indexed by id, as a replay updates it once per event. Serialised as a map
/// from id to state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Connectors(Box<[Option<ConnectorState>; CONNECTORS_MAX as usize]>);

impl Connectors {
    fn slot(connector: u32) -> Option<usize> {
        (1..=CONNECTORS_MAX)
            .contains(&connector)
            .then(|| connector as usize - 1)
    }

    pub fn get(&self, connector: u32) -> Option<&ConnectorState> {
        self.0[Connectors::slot(connector)?].as_ref()
    }

    /// Connector ids come from the decider or the decoder, both of which refuse ids out
    /// of range: another one here is a bug.
    #[inline]
    fn set(&mut self, connector: u32, state: ConnectorState) {
        let slot = Connectors::slot(connector).expect("connector ids are checked before evolve");
        self.0[slot] = Some(state);
    }

    /// The used connectors in id order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &ConnectorState)> {
        (1..=CONNECTORS_MAX)
            .zip(self.0.iter())
            .filter_map(|(connector, state)| Some((connector, state.as_ref()?)))
    }
}

impl Serialize for Connectors {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Connectors {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Connectors, D::Error> {
        let map = BTreeMap::<u32, ConnectorState>::deserialize(deserializer)?;
        let mut connectors = Connectors::default();
        for (connector, state) in map {
            let slot = Connectors::slot(connector).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "connector {connector} is outside 1..={CONNECTORS_MAX}"
                ))
            })?;
            connectors.0[slot] = Some(state);
        }
        Ok(connectors)
    }
}

fn sorted<S: serde::Serializer>(
    sessions: &HashMap<SessionId, SessionRecord, FoldHash>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let ordered: BTreeMap<&SessionId, &SessionRecord> = sessions.iter().collect();
    ordered.serialize(serializer)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The session's unlock was answered other than Accepted: it never ran.
    SessionNotActive {
        session: String,
    },
    /// The session's unlock awaits its answer: it cannot be stopped before it is known
    /// to have started (a stop that overtook the answer is to be tried again).
    AnswerPending {
        session: String,
    },
}

/// The station decider.
#[derive(Debug)]
pub struct Station;

/// A session id of an incoming command: an invalid one is a rejection.
fn valid_session(session: &str) -> Result<SessionId, StationRejection> {
    SessionId::new(session).map_err(|e| StationRejection::InvalidSessionId { reason: e.reason })
}

/// The record of a session a command names; a session id that cannot exist is unknown too.
fn known_session<'a>(
    state: &'a StationState,
    session: &str,
) -> Result<(SessionId, &'a SessionRecord), StationRejection> {
    SessionId::new(session)
        .ok()
        .and_then(|id| Some((id, state.sessions.get(&id)?)))
        .ok_or_else(|| StationRejection::UnknownSession {
            session: session.to_owned(),
        })
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
        let session = valid_session(session)?;
        match state.connectors.get(connector) {
            Some(
                ConnectorState::Requested { session: current }
                | ConnectorState::Active { session: current },
            ) if *current == session => {
                return Ok(Vec::new()); // already requested for this very session
            }
            Some(
                ConnectorState::Requested { session: current }
                | ConnectorState::Active { session: current },
            ) => {
                return Err(StationRejection::ConnectorBusy {
                    connector,
                    session: current.to_string(),
                });
            }
            Some(ConnectorState::Idle) | None => {}
        }
        if state.sessions.contains_key(&session) {
            return Err(StationRejection::SessionAlreadyUsed {
                session: session.to_string(),
            });
        }
        Ok(vec![StationEvent::UnlockRequested { connector, session }])
    }

    fn record_answer(
        state: &StationState,
        session: &str,
        answer: StationAnswer,
    ) -> Result<Vec<StationEvent>, StationRejection> {
        let (session, record) = known_session(state, session)?;
        match record.outcome {
            Some(previous) if previous == answer => return Ok(Vec::new()),
            Some(previous) => {
                return Err(StationRejection::AlreadyAnswered {
                    session: session.to_string(),
                    answer: previous,
                });
            }
            None => {}
        }
        let connector = record.connector;
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
        let (session, record) = known_session(state, session)?;
        if record.stopped {
            return Ok(Vec::new());
        }
        if record.outcome.is_none() {
            return Err(StationRejection::AnswerPending {
                session: session.to_string(),
            });
        }
        if record.outcome != Some(StationAnswer::Accepted) {
            return Err(StationRejection::SessionNotActive {
                session: session.to_string(),
            });
        }
        Ok(vec![StationEvent::SessionStopped {
            connector: record.connector,
            session,
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
        Station::evolve_in_place(&mut state, event);
        state
    }

    #[inline]
    fn evolve_in_place(state: &mut StationState, event: &StationEvent) {
        let (connector, session) = event.connector_and_session();
        let (connector_state, outcome, stopped) = match event {
            StationEvent::UnlockRequested { .. } => {
                (ConnectorState::Requested { session }, None, false)
            }
            StationEvent::UnlockAccepted { .. } => (
                ConnectorState::Active { session },
                Some(StationAnswer::Accepted),
                false,
            ),
            StationEvent::UnlockRejected { .. } => {
                (ConnectorState::Idle, Some(StationAnswer::Rejected), false)
            }
            StationEvent::UnlockTimedOut { .. } => {
                (ConnectorState::Idle, Some(StationAnswer::TimedOut), false)
            }
            StationEvent::SessionStopped { .. } => {
                (ConnectorState::Idle, Some(StationAnswer::Accepted), true)
            }
        };
        let record = SessionRecord {
            connector,
            outcome,
            stopped,
        };
        state.connectors.set(connector, connector_state);
        // Updated in place when known (the common case in a replay): one lookup.
        match state.sessions.get_mut(&session) {
            Some(known) => *known = record,
            None => {
                state.sessions.insert(session, record);
            }
        }
    }
}

/// Which [`StationEvent`] a stored type names.
#[derive(Clone, Copy)]
enum Variant {
    UnlockRequested,
    UnlockAccepted,
    UnlockRejected,
    UnlockTimedOut,
    SessionStopped,
}

impl Variant {
    /// The variant a stored type names. Names are compared as fixed-size arrays (a few
    /// word compares, no call): this runs once per replayed event.
    #[inline]
    fn named(event_type: &str) -> Option<Variant> {
        let bytes = event_type.as_bytes();
        if let Ok(name) = <&[u8; 15]>::try_from(bytes) {
            return (name == b"UnlockRequested").then_some(Variant::UnlockRequested);
        }
        match <&[u8; 14]>::try_from(bytes).ok()? {
            b"UnlockAccepted" => Some(Variant::UnlockAccepted),
            b"UnlockRejected" => Some(Variant::UnlockRejected),
            b"UnlockTimedOut" => Some(Variant::UnlockTimedOut),
            b"SessionStopped" => Some(Variant::SessionStopped),
            _ => None,
        }
    }

    #[inline]
    fn with(self, connector: u32, session: SessionId) -> StationEvent {
        match self {
            Variant::UnlockRequested => StationEvent::UnlockRequested { connector, session },
            Variant::UnlockAccepted => StationEvent::UnlockAccepted { connector, session },
            Variant::UnlockRejected => StationEvent::UnlockRejected { connector, session },
            Variant::UnlockTimedOut => StationEvent::UnlockTimedOut { connector, session },
            Variant::SessionStopped => StationEvent::SessionStopped { connector, session },
        }
    }
}

/// The connector and session of a payload in exactly the form serde_json writes for a
/// station event — `{"connector":<u32>,"session":"<id>"}`, no whitespace, no escapes, a
/// valid [`SessionId`] — or `None` for anything else, which the caller hands to
/// serde_json. Where this returns `Some`, serde_json reads the same values (a property
/// test checks both on arbitrary payloads).
#[inline]
fn canonical_fields(payload: &[u8]) -> Option<(u32, SessionId)> {
    let (head, mut rest) = payload.split_first_chunk::<13>()?;
    if head != b"{\"connector\":" {
        return None;
    }
    let first_digit = *rest.first()?;
    let mut connector = 0u32;
    let mut digits = 0;
    while let Some((&byte, tail)) = rest.split_first()
        && byte.is_ascii_digit()
    {
        connector = connector
            .checked_mul(10)?
            .checked_add(u32::from(byte - b'0'))?;
        digits += 1;
        rest = tail;
    }
    // JSON forbids leading zeros.
    if digits == 0 || (digits > 1 && first_digit == b'0') {
        return None;
    }
    let (head, rest) = rest.split_first_chunk::<12>()?;
    if head != b",\"session\":\"" {
        return None;
    }
    // The id runs to the closing `"}`; a quote or backslash inside it would be JSON
    // structure or an escape: not canonical.
    let session = rest.strip_suffix(b"\"}")?;
    if session.is_empty()
        || session.len() > SESSION_ID_BYTES_MAX
        || !session
            .iter()
            .all(|&byte| byte.is_ascii_graphic() && byte != b'"' && byte != b'\\')
    {
        return None;
    }
    // Gathered into whole words in registers: the hash and the comparison read the id as
    // words, and a word read right after byte-wise writes of the same memory stalls.
    let word_of = |chunk: &[u8]| {
        chunk
            .iter()
            .rev()
            .fold(0u64, |word, &byte| (word << 8) | u64::from(byte))
    };
    let mut chunks = session.chunks(8);
    let mut next_word = || chunks.next().map_or(0, word_of);
    let words = [
        next_word(),
        next_word(),
        next_word() | ((session.len() as u64) << 56),
    ];
    Some((connector, SessionId::from_words(words)))
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
    /// plain struct and the type picks the variant. This is the inner loop of every
    /// station's rehydration: payloads in the exact form [`encode_event`](Self::encode_event)
    /// writes (`{"connector":7,"session":"abc"}`) are read by [`canonical_fields`]
    /// without a general JSON parser; anything else (whitespace, other key order,
    /// escapes, errors) goes through serde_json, which gives the same values.
    #[inline(always)]
    fn decode_event(event_type: &str, payload: &[u8]) -> Result<StationEvent, CodecError> {
        #[derive(Deserialize)]
        struct Fields {
            connector: u32,
            session: SessionId,
        }
        let Some(variant) = Variant::named(event_type) else {
            return Err(CodecError {
                what: event_type.to_owned(),
                reason: "not a station event type".into(),
            });
        };
        let (connector, session) = match canonical_fields(payload) {
            Some(fields) => fields,
            None => {
                let Fields { connector, session } = json::decode(event_type, payload)?;
                (connector, session)
            }
        };
        if Connectors::slot(connector).is_none() {
            return Err(CodecError {
                what: event_type.to_owned(),
                reason: format!("connector {connector} is outside 1..={CONNECTORS_MAX}"),
            });
        }
        Ok(variant.with(connector, session))
    }

    fn encode_state(state: &StationState) -> Vec<u8> {
        json::encode(state)
    }

    fn decode_state(bytes: &[u8]) -> Result<StationState, CodecError> {
        json::decode("station state", bytes)
    }
}

/// The station aggregate of the next build, for rolling upgrades: the same rules, a new
/// snapshot schema (2: the state behind a `v2:` prefix, which schema 1's decoder would
/// refuse) and a new event version (every event carries `"version":2` beside its fields,
/// which the current build reads as it reads its own: an additive change). Nodes of both
/// builds share one store while a fleet upgrades; each ignores the other's snapshots (a
/// stale or unknown schema is rehydrated from events, never misread).
#[derive(Debug)]
pub enum StationNext {}

/// What the next build's snapshots start with.
const NEXT_STATE_PREFIX: &[u8] = b"v2:";

impl Decider for StationNext {
    type Command = StationCommand;
    type Event = StationEvent;
    type State = StationState;
    type Rejection = StationRejection;

    fn initial() -> StationState {
        Station::initial()
    }

    fn decide(
        state: &StationState,
        command: &StationCommand,
    ) -> Result<Vec<StationEvent>, StationRejection> {
        Station::decide(state, command)
    }

    fn evolve(state: StationState, event: &StationEvent) -> StationState {
        Station::evolve(state, event)
    }
}

impl Aggregate for StationNext {
    const SNAPSHOT_SCHEMA: u32 = 2;

    fn encode_event(event: &StationEvent) -> EncodedEvent {
        let mut encoded = Station::encode_event(event);
        // `{"connector":…,"session":…}` → `{"connector":…,"session":…,"version":2}`
        assert_eq!(encoded.payload.pop(), Some(b'}'), "a JSON object");
        encoded.payload.extend_from_slice(br#","version":2}"#);
        encoded
    }

    fn decode_event(event_type: &str, payload: &[u8]) -> Result<StationEvent, CodecError> {
        Station::decode_event(event_type, payload)
    }

    fn encode_state(state: &StationState) -> Vec<u8> {
        let mut bytes = NEXT_STATE_PREFIX.to_vec();
        bytes.extend_from_slice(&Station::encode_state(state));
        bytes
    }

    fn decode_state(bytes: &[u8]) -> Result<StationState, CodecError> {
        let rest = bytes
            .strip_prefix(NEXT_STATE_PREFIX)
            .ok_or_else(|| CodecError {
                what: "station state".into(),
                reason: "not a schema-2 snapshot".into(),
            })?;
        Station::decode_state(rest)
    }
}

#[cfg(test)]
mod tests {
    //! The station's rules (seed 000's answer, points b and e), decided purely, and the
    //! stored form of its events.
    use super::*;
    use proptest::prelude::{Strategy, any};
    use proptest::strategy::ValueTree;

    fn sid(session: &str) -> SessionId {
        SessionId::new(session).expect("a valid session id")
    }

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
            session: sid("s1"),
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
            session: sid("s1"),
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
                session: sid("s1"),
            },
            StationEvent::UnlockRejected {
                connector: 1,
                session: sid("s1"),
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

    /// Payloads near the canonical form: digits and ids drawn both valid and with the
    /// characters that matter (leading zeros, overflow, quotes, backslashes, spaces,
    /// non-ASCII, too long), then sometimes one byte changed.
    fn near_canonical_payloads() -> impl Strategy<Value = Vec<u8>> {
        (
            proptest::prop_oneof!["0|[1-9][0-9]{0,8}", "[0-9]{0,11}"],
            proptest::prop_oneof!["[!#-\\[\\]-~]{1,20}", "[ -~é]{0,23}"],
            proptest::option::weighted(0.3, any::<(usize, u8)>()),
        )
            .prop_map(|(digits, session, change)| {
                let mut payload =
                    format!("{{\"connector\":{digits},\"session\":\"{session}\"}}").into_bytes();
                if let Some((at, byte)) = change {
                    let at = at % payload.len();
                    payload[at] = byte;
                }
                payload
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2048, ..Default::default() })]

        /// Where the fast path reads a payload, serde_json reads the same connector and
        /// session from it (an object of exactly those two fields); so replay gives the
        /// same events whichever path a payload takes.
        #[test]
        fn the_fast_path_reads_what_serde_json_reads(
            payload in proptest::prop_oneof![
                near_canonical_payloads(),
                proptest::collection::vec(any::<u8>(), 0..48),
            ]
        ) {
            if let Some((connector, session)) = canonical_fields(&payload) {
                let parsed: serde_json::Value = serde_json::from_slice(&payload)
                    .expect("a payload the fast path reads is JSON");
                proptest::prop_assert_eq!(
                    parsed,
                    serde_json::json!({ "connector": connector, "session": session.as_str() })
                );
            }
        }
    }

    /// Both paths are exercised by the generator above: without this, a fast path that
    /// never answered would pass it.
    #[test]
    fn the_generator_reaches_both_paths() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut fast, mut slow) = (0, 0);
        for _ in 0..512 {
            let payload = near_canonical_payloads()
                .new_tree(&mut runner)
                .expect("a payload")
                .current();
            match canonical_fields(&payload) {
                Some(_) => fast += 1,
                None => slow += 1,
            }
        }
        assert!(fast > 50 && slow > 50, "fast {fast}, slow {slow}");
    }

    /// The encoder writes exactly the form the fast decoding path reads, for every event
    /// type, connector and kind of id: replay never falls back to the general parser for
    /// events this code stored.
    #[test]
    fn encoded_events_take_the_fast_decoding_path() {
        for (connector, session) in [
            (1, "s1"),
            (16, "A-very-long-id-0020"),
            (7, "x!#$%&'()*+,-./:;<"),
        ] {
            let session = sid(session);
            for event in [
                StationEvent::UnlockRequested { connector, session },
                StationEvent::UnlockAccepted { connector, session },
                StationEvent::UnlockRejected { connector, session },
                StationEvent::UnlockTimedOut { connector, session },
                StationEvent::SessionStopped { connector, session },
            ] {
                let encoded = Station::encode_event(&event);
                assert_eq!(
                    canonical_fields(&encoded.payload),
                    Some((connector, session)),
                    "{}",
                    String::from_utf8_lossy(&encoded.payload)
                );
                assert!(Variant::named(&encoded.event_type).is_some());
            }
        }
    }

    /// Every event type round-trips through the stored form, and the stored form is the
    /// one earlier versions wrote (`{"connector":…,"session":…}`, the type beside it).
    /// An unknown type or a malformed payload is a codec error, not a panic.
    #[test]
    fn events_round_trip_and_bad_bytes_are_refused() {
        let session = sid("s1");
        let events = [
            StationEvent::UnlockRequested {
                connector: 1,
                session,
            },
            StationEvent::UnlockAccepted {
                connector: 2,
                session,
            },
            StationEvent::UnlockRejected {
                connector: 3,
                session,
            },
            StationEvent::UnlockTimedOut {
                connector: 4,
                session,
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
                session: sid("abc")
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
