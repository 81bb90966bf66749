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

    /// [`evolve`](Self::evolve) applied in place: the same step, without moving the state
    /// in and out (replay runs it once per event). Deciders whose state is costly to move
    /// implement this and let `evolve` call it.
    fn evolve_in_place(state: &mut Self::State, event: &Self::Event) {
        let current = std::mem::replace(state, Self::initial());
        *state = Self::evolve(current, event);
    }

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

    /// Decodes an event stored as `{"type": event_type, ...payload}`. The type is spliced
    /// in front of the payload's fields and the result parsed once, straight into `T` —
    /// no intermediate JSON tree (this is the hot loop of every rehydration).
    pub fn decode_event<T: DeserializeOwned>(
        event_type: &str,
        payload: &[u8],
    ) -> Result<T, CodecError> {
        let failed = |reason: String| CodecError {
            what: event_type.to_owned(),
            reason,
        };
        let Some(fields) = payload.trim_ascii_start().strip_prefix(b"{") else {
            return Err(failed("payload is not a JSON object".into()));
        };
        let mut tagged = Vec::with_capacity(payload.len() + event_type.len() + 12);
        tagged.extend_from_slice(b"{\"type\":");
        serde_json::to_writer(&mut tagged, event_type).expect("a string always serialises");
        if !fields.trim_ascii_start().starts_with(b"}") {
            tagged.push(b',');
        }
        tagged.extend_from_slice(fields);
        serde_json::from_slice(&tagged).map_err(|e| failed(e.to_string()))
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

#[cfg(test)]
mod tests {
    //! The event codec: the stored type always decides the variant, and malformed payloads
    //! are refused with the event type named.
    use serde::{Deserialize, Serialize};

    use super::json;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type")]
    enum Event {
        Opened,
        Moved { to: u32, note: String },
    }

    #[test]
    fn events_round_trip_through_type_and_payload() {
        for event in [
            Event::Opened,
            Event::Moved {
                to: 7,
                note: "a \"quoted\" } brace".into(),
            },
        ] {
            let (event_type, payload) = json::encode_event(&event);
            assert_eq!(
                json::decode_event::<Event>(&event_type, &payload),
                Ok(event)
            );
        }
        assert_eq!(
            json::decode_event::<Event>("Moved", b" { \"to\" : 1 , \"note\": \"\" } "),
            Ok(Event::Moved {
                to: 1,
                note: String::new()
            })
        );
        assert_eq!(
            json::decode_event::<Event>("Opened", b"{ }"),
            Ok(Event::Opened)
        );
    }

    /// Encoding moves the tag out of the payload; a payload that carries one anyway is
    /// refused rather than decoded as whichever variant it names.
    #[test]
    fn a_payload_with_its_own_type_field_is_refused() {
        let error = json::decode_event::<Event>("Opened", b"{\"type\":\"Moved\",\"to\":1}")
            .expect_err("two tags");
        assert!(error.reason.contains("duplicate field"), "{error}");
    }

    #[test]
    fn malformed_payloads_are_refused_naming_the_type() {
        for (event_type, payload) in [
            ("Moved", &b"[1, 2]"[..]),
            ("Moved", b""),
            ("Moved", b"{\"to\": 1"),
            ("Moved", b"{\"to\": 1} trailing"),
            ("Moved", b"{\"to\": \"x\", \"note\": \"\"}"),
            ("Nope", b"{}"),
            ("Opened\",\"x", b"{}"),
        ] {
            let error = json::decode_event::<Event>(event_type, payload)
                .expect_err("malformed payload must be refused");
            assert_eq!(error.what, event_type);
        }
    }
}
