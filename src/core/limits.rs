//! Every bound the store enforces, in one place. Exceeding one is a typed error returned
//! before anything is written ([`crate::store::AppendError::LimitExceeded`]).

use std::fmt;

use crate::core::types::EventData;

/// The store's bounds. The defaults suit the seed domains with room to spare; a backend
/// is opened with one `Limits` and enforces it for its whole life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes in a stream id.
    pub stream_id_bytes_max: usize,
    /// Bytes in an event type name.
    pub event_type_bytes_max: usize,
    /// Tags on one event.
    pub tags_per_event_max: usize,
    /// Bytes in one tag.
    pub tag_bytes_max: usize,
    /// Bytes in one event's payload.
    pub payload_bytes_max: usize,
    /// Events in one append (an append is one atomic record in the log).
    pub events_per_append_max: usize,
    /// Bytes of payloads, types and tags in one append, all events together.
    pub append_bytes_max: usize,
    /// Bytes in one snapshot's state.
    pub snapshot_bytes_max: usize,
    /// Events a catch-up subscription holds in memory at once (its page size).
    pub subscription_buffer_events_max: usize,
    /// Events returned by one read call.
    pub read_events_max: usize,
    /// Connector ids one charge point may use (1..=this). A higher one is refused with a
    /// CALLERROR before anything is recorded, so no station can grow the node's state by
    /// inventing connectors.
    pub station_connectors_max: u32,
    /// Transactions one charge point may have open at once; a StartTransaction past it is
    /// refused with a CALLERROR and not recorded.
    pub station_open_transactions_max: usize,
}

/// The default of [`Limits::station_connectors_max`], also the size of a station
/// aggregate's connector table.
pub const STATION_CONNECTORS_MAX: u32 = 16;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            stream_id_bytes_max: 128,
            event_type_bytes_max: 128,
            tags_per_event_max: 16,
            tag_bytes_max: 128,
            payload_bytes_max: 64 * 1024,
            events_per_append_max: 1024,
            append_bytes_max: 1024 * 1024,
            snapshot_bytes_max: 1024 * 1024,
            subscription_buffer_events_max: 1024,
            read_events_max: 4096,
            station_connectors_max: STATION_CONNECTORS_MAX,
            // Room for transactions whose stop a station never delivered, above one per
            // connector.
            station_open_transactions_max: 4 * STATION_CONNECTORS_MAX as usize,
        }
    }
}

/// Which bound an input broke, with the offending size and the limit.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LimitViolation {
    EmptyAppend,
    EventsPerAppend {
        count: usize,
        limit: usize,
    },
    AppendBytes {
        length: usize,
        limit: usize,
    },
    EventTypeBytes {
        index: usize,
        length: usize,
        limit: usize,
    },
    EmptyEventType {
        index: usize,
    },
    TagsPerEvent {
        index: usize,
        count: usize,
        limit: usize,
    },
    TagBytes {
        index: usize,
        length: usize,
        limit: usize,
    },
    PayloadBytes {
        index: usize,
        length: usize,
        limit: usize,
    },
    SnapshotBytes {
        length: usize,
        limit: usize,
    },
}

impl fmt::Display for LimitViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitViolation::EmptyAppend => f.write_str("an append needs at least one event"),
            LimitViolation::EventsPerAppend { count, limit } => {
                write!(f, "{count} events in one append; the limit is {limit}")
            }
            LimitViolation::AppendBytes { length, limit } => write!(
                f,
                "one append carries {length} bytes of payloads, types and tags; the limit is {limit}"
            ),
            LimitViolation::EventTypeBytes {
                index,
                length,
                limit,
            } => write!(
                f,
                "event {index}: type is {length} bytes; the limit is {limit}"
            ),
            LimitViolation::EmptyEventType { index } => write!(f, "event {index}: type is empty"),
            LimitViolation::TagsPerEvent {
                index,
                count,
                limit,
            } => {
                write!(f, "event {index}: {count} tags; the limit is {limit}")
            }
            LimitViolation::TagBytes {
                index,
                length,
                limit,
            } => write!(
                f,
                "event {index}: a tag is {length} bytes; the limit is {limit}"
            ),
            LimitViolation::PayloadBytes {
                index,
                length,
                limit,
            } => write!(
                f,
                "event {index}: payload is {length} bytes; the limit is {limit}"
            ),
            LimitViolation::SnapshotBytes { length, limit } => {
                write!(f, "snapshot state is {length} bytes; the limit is {limit}")
            }
        }
    }
}

impl Limits {
    /// Checks an append's events against every per-event and per-append bound.
    pub fn check_append(&self, events: &[EventData]) -> Result<(), LimitViolation> {
        if events.is_empty() {
            return Err(LimitViolation::EmptyAppend);
        }
        if events.len() > self.events_per_append_max {
            return Err(LimitViolation::EventsPerAppend {
                count: events.len(),
                limit: self.events_per_append_max,
            });
        }
        for (index, event) in events.iter().enumerate() {
            self.check_event(index, event)?;
        }
        let length: usize = events
            .iter()
            .map(|e| {
                e.payload.len() + e.event_type.len() + e.tags.iter().map(String::len).sum::<usize>()
            })
            .sum();
        if length > self.append_bytes_max {
            return Err(LimitViolation::AppendBytes {
                length,
                limit: self.append_bytes_max,
            });
        }
        Ok(())
    }

    fn check_event(&self, index: usize, event: &EventData) -> Result<(), LimitViolation> {
        if event.event_type.is_empty() {
            return Err(LimitViolation::EmptyEventType { index });
        }
        if event.event_type.len() > self.event_type_bytes_max {
            return Err(LimitViolation::EventTypeBytes {
                index,
                length: event.event_type.len(),
                limit: self.event_type_bytes_max,
            });
        }
        if event.tags.len() > self.tags_per_event_max {
            return Err(LimitViolation::TagsPerEvent {
                index,
                count: event.tags.len(),
                limit: self.tags_per_event_max,
            });
        }
        if let Some(tag) = event.tags.iter().find(|t| t.len() > self.tag_bytes_max) {
            return Err(LimitViolation::TagBytes {
                index,
                length: tag.len(),
                limit: self.tag_bytes_max,
            });
        }
        if event.payload.len() > self.payload_bytes_max {
            return Err(LimitViolation::PayloadBytes {
                index,
                length: event.payload.len(),
                limit: self.payload_bytes_max,
            });
        }
        Ok(())
    }

    pub fn check_snapshot(&self, state: &[u8]) -> Result<(), LimitViolation> {
        if state.len() > self.snapshot_bytes_max {
            return Err(LimitViolation::SnapshotBytes {
                length: state.len(),
                limit: self.snapshot_bytes_max,
            });
        }
        Ok(())
    }
}
