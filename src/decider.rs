//! Aggregates as Deciders: `initial`, `decide`, `evolve`. Pure — no I/O, clock, randomness
//! or async. Replay is a fold; the version check lives in the store, not here.

use crate::core::types::StreamId;

/// The business logic of one consistency boundary.
pub trait Decider {
    type Command;
    type Event;
    type State: Clone;
    type Rejection;

    /// The state of a stream with no events.
    fn initial() -> Self::State;
    /// The events a command produces in `state`, or why it is refused. No events means
    /// the command is already satisfied (an idempotent no-op).
    fn decide(
        state: &Self::State,
        command: &Self::Command,
    ) -> Result<Vec<Self::Event>, Self::Rejection>;
    /// The state after `event`.
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;

    /// Replays `events` from `initial()`.
    fn fold<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self::State
    where
        Self::Event: 'a,
    {
        events.into_iter().fold(Self::initial(), Self::evolve)
    }
}

/// An event as bytes: how a decider's events are stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedEvent {
    pub event_type: String,
    pub tags: Vec<String>,
    pub payload: Vec<u8>,
}

/// Why stored bytes do not decode into a decider's event or state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode {what}: {reason}")]
pub struct CodecError {
    pub what: String,
    pub reason: String,
}

/// A decider the command handler can persist: how its events and snapshots are encoded.
pub trait Aggregate: Decider {
    /// The version of [`encode_state`](Self::encode_state)'s format. A snapshot with
    /// another schema is ignored and the stream replayed instead.
    const SNAPSHOT_SCHEMA: u32;

    fn encode_event(event: &Self::Event) -> EncodedEvent;
    fn decode_event(event_type: &str, payload: &[u8]) -> Result<Self::Event, CodecError>;
    fn encode_state(state: &Self::State) -> Vec<u8>;
    fn decode_state(bytes: &[u8]) -> Result<Self::State, CodecError>;
}

/// JSON encoding shared by the seed domains: the event's serde tag is its type.
pub(crate) mod json {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use super::CodecError;

    pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
        serde_json::to_vec(value).expect("domain values always serialise")
    }

    pub fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, CodecError> {
        serde_json::from_slice(bytes).map_err(|e| CodecError {
            what: what.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Decodes an event stored as `{"type": event_type, ...payload}`.
    pub fn decode_event<T: DeserializeOwned>(
        event_type: &str,
        payload: &[u8],
    ) -> Result<T, CodecError> {
        let mut value: serde_json::Value = decode(event_type, payload)?;
        match value.as_object_mut() {
            Some(object) => {
                object.insert("type".into(), serde_json::Value::String(event_type.into()));
            }
            None => {
                return Err(CodecError {
                    what: event_type.to_owned(),
                    reason: "payload is not a JSON object".into(),
                });
            }
        }
        serde_json::from_value(value).map_err(|e| CodecError {
            what: event_type.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Splits a serde-tagged event into its type and the remaining payload.
    pub fn encode_event<T: Serialize>(event: &T) -> (String, Vec<u8>) {
        let mut value = serde_json::to_value(event).expect("domain values always serialise");
        let object = value.as_object_mut().expect("events serialise as objects");
        let event_type = match object.remove("type") {
            Some(serde_json::Value::String(name)) => name,
            _ => panic!("event enums use #[serde(tag = \"type\")]"),
        };
        (event_type, encode(&value))
    }
}

/// Names the stream of an aggregate instance, e.g. `account-42`.
pub fn stream_for(prefix: &str, id: &str) -> Result<StreamId, crate::core::types::StreamIdError> {
    StreamId::new(&format!("{prefix}-{id}"))
}
