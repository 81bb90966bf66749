//! The remote store's wire protocol: one request, one response, each a frame of a 4-byte
//! little-endian length and a JSON body. Pure: encoding and decoding only; the client and
//! the server move the frames.
//!
//! A connection carries one request at a time (the client keeps a pool of connections for
//! concurrency), so a response needs no id: it answers the request before it. Every
//! request kind has one response kind; anything else is a protocol error.

use serde::{Deserialize, Serialize};

use crate::core::types::{
    AppendCondition, AppendResult, CurrentVersion, EventData, EventId, ExpectedVersion,
    GlobalPosition, Query, RecordedEvent, Snapshot, StreamId, StreamVersion,
};
use crate::store::{AppendError, ReadError, SnapshotError};

/// The largest frame either side sends or accepts. A read's answer is cut to fit
/// ([`RESPONSE_EVENT_BYTES_MAX`]); an append or a snapshot within the store's default
/// limits encodes well below it.
pub const FRAME_BYTES_MAX: usize = 32 * 1024 * 1024;

/// A read answer holds events of at most about this many encoded bytes (and always at
/// least one, if any matched): the reader pages on from the last one, as every read
/// contract allows.
pub const RESPONSE_EVENT_BYTES_MAX: usize = 8 * 1024 * 1024;

/// The longest a server holds a [`Request::WaitForEventCountAbove`] before answering with
/// the count as it is; the client then asks again.
pub const WAIT_MILLIS_MAX: u64 = 60_000;

/// One call of the [`crate::store::EventStore`] trait.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Append {
        stream: StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: Option<AppendCondition>,
    },
    ReadStream {
        stream: StreamId,
        from: StreamVersion,
        max: usize,
    },
    ReadAll {
        from: GlobalPosition,
        max: usize,
    },
    ReadMatching {
        query: Query,
        after: Option<GlobalPosition>,
        max: usize,
    },
    FindEvent {
        id: EventId,
    },
    CurrentVersion {
        stream: StreamId,
    },
    EventCount,
    /// Answered with [`Response::Count`] once more than `count` events are readable, or
    /// after `wait_millis` (at most [`WAIT_MILLIS_MAX`]) with the count as it is then.
    WaitForEventCountAbove {
        count: u64,
        wait_millis: u64,
    },
    SaveSnapshot {
        stream: StreamId,
        snapshot: Snapshot,
    },
    LoadSnapshot {
        stream: StreamId,
    },
}

/// The answer to one [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Appended(Result<AppendResult, AppendError>),
    Events(Result<Vec<RecordedEvent>, ReadError>),
    Event(Result<Option<RecordedEvent>, ReadError>),
    Version(Result<CurrentVersion, ReadError>),
    Count(Result<u64, ReadError>),
    SnapshotSaved(Result<(), SnapshotError>),
    SnapshotLoaded(Result<Option<Snapshot>, ReadError>),
    /// The request frame could not be read; the server closes the connection after it.
    Malformed(String),
}

/// Why bytes are not a frame of this protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {length} bytes exceeds the {limit}-byte limit")]
    TooLong { length: usize, limit: usize },
    #[error("frame body is not valid: {0}")]
    Body(String),
}

/// The frame of `message`: length, then body.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut frame = vec![0u8; 4];
    serde_json::to_writer(&mut frame, message).expect("protocol types always serialise");
    let length = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&length.to_le_bytes());
    frame
}

/// The body length a frame header announces, checked against [`FRAME_BYTES_MAX`].
pub fn body_length(header: [u8; 4]) -> Result<usize, FrameError> {
    let length = u32::from_le_bytes(header) as usize;
    if length > FRAME_BYTES_MAX {
        return Err(FrameError::TooLong {
            length,
            limit: FRAME_BYTES_MAX,
        });
    }
    Ok(length)
}

/// Decodes a frame body.
pub fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, FrameError> {
    serde_json::from_slice(body).map_err(|error| FrameError::Body(error.to_string()))
}

/// How many of `events` (a prefix, at least one) fit in one response.
pub fn events_that_fit(events: &[RecordedEvent]) -> usize {
    let mut bytes = 0usize;
    for (index, event) in events.iter().enumerate() {
        // Base64 grows the payload by a third; the rest is ids, names and JSON.
        bytes += event.payload.len() * 4 / 3
            + event.event_type.len()
            + event.stream.as_str().len()
            + event.tags.iter().map(|t| t.len() + 3).sum::<usize>()
            + 256;
        if bytes > RESPONSE_EVENT_BYTES_MAX && index > 0 {
            return index;
        }
    }
    events.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::LimitViolation;
    use crate::core::types::{CommandId, Metadata, QueryItem};

    fn roundtrip<T: Serialize + for<'a> Deserialize<'a> + PartialEq + std::fmt::Debug>(value: T) {
        let frame = encode(&value);
        let length = body_length(frame[..4].try_into().expect("header")).expect("length");
        assert_eq!(length, frame.len() - 4);
        assert_eq!(decode::<T>(&frame[4..]).expect("decode"), value);
    }

    /// Every request and response kind, with the values that stress the encoding (ids at
    /// 128 bits, empty and binary payloads, nested errors), decodes to itself.
    #[test]
    fn every_message_round_trips() {
        let stream = StreamId::new("station-CP1").expect("stream");
        let event = EventData {
            id: EventId(u128::MAX),
            event_type: "UnlockRequested".into(),
            tags: vec!["a".into(), "b \"quoted\"".into()],
            metadata: Metadata {
                command_id: Some(CommandId(u128::MAX - 1)),
                causation_id: None,
                correlation_id: Some(CommandId(7)),
                recorded_at_millis: u64::MAX,
            },
            payload: (0..=255u8).collect(),
        };
        roundtrip(Request::Append {
            stream: stream.clone(),
            expected: ExpectedVersion::Exact(StreamVersion(3)),
            events: vec![
                event.clone(),
                EventData {
                    payload: Vec::new(),
                    ..event.clone()
                },
            ],
            condition: Some(AppendCondition {
                query: Query {
                    items: vec![QueryItem {
                        event_types: vec!["LeaseTaken".into()],
                        tags: vec!["lease:CP1".into()],
                    }],
                },
                after: Some(GlobalPosition(9)),
            }),
        });
        roundtrip(Request::WaitForEventCountAbove {
            count: 5,
            wait_millis: 100,
        });
        roundtrip(Response::Appended(Err(AppendError::LimitExceeded(
            LimitViolation::EventsPerAppend {
                count: 2000,
                limit: 1024,
            },
        ))));
        roundtrip(Response::Appended(Err(AppendError::WrongExpectedVersion {
            stream: stream.clone(),
            expected: ExpectedVersion::NoStream,
            actual: CurrentVersion::Current(StreamVersion(0)),
        })));
        roundtrip(Response::Events(Ok(vec![RecordedEvent::from_data(
            stream.clone(),
            StreamVersion(0),
            GlobalPosition(0),
            event,
        )])));
        roundtrip(Response::Events(Err(ReadError::Corrupt {
            file: "0000000000.evlog".into(),
            offset: 4096,
            reason: "checksum".into(),
        })));
        roundtrip(Response::SnapshotLoaded(Ok(Some(Snapshot {
            version: StreamVersion(999),
            schema_version: 2,
            state: vec![0, 1, 2],
        }))));
    }

    /// A frame that announces more than the limit is refused before its body is read, and
    /// a body that is not a message — or names an invalid stream — is a typed error.
    #[test]
    fn bad_frames_are_typed_errors() {
        let too_long = (FRAME_BYTES_MAX as u32 + 1).to_le_bytes();
        assert!(matches!(
            body_length(too_long),
            Err(FrameError::TooLong { .. })
        ));
        assert!(matches!(
            decode::<Request>(b"{\"Nope\":1}"),
            Err(FrameError::Body(_))
        ));
        assert!(matches!(
            decode::<Request>(b"{\"CurrentVersion\":{\"stream\":\"has space\"}}"),
            Err(FrameError::Body(_))
        ));
    }
}
