//! Seed 002: seat booking, never overbooked (I6) — in two shapes over one decider.
//!
//! * **One stream per show** (`show-<id>`): the classic aggregate; every reservation of the
//!   show is serialised by the stream's expected version.
//! * **Across streams** ([`reserve_across_streams`]): each reservation is its own stream
//!   (`reservation-<command>`); the consistency boundary is drawn per request by a query for
//!   the requested seats' tags, and the append carries the condition "no event matching that
//!   query after the position I read". Reservations of disjoint seats never conflict; two
//!   reservations of one seat cannot both succeed. (The Dynamic Consistency Boundary idea.)
//!
//! Both shapes run the same `decide` and `evolve`, fed with different event sets.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::core::types::{
    AppendCondition, AppendResult, CommandId, ExpectedVersion, Query, QueryItem, StreamId,
};
use crate::decider::{Aggregate, CodecError, Decider, EncodedEvent, json};
use crate::handler::encode_events;
use crate::store::{AppendError, EventStore, ReadError};

/// Seats in one show, at most.
pub const SEATS_PER_SHOW_MAX: u32 = 10_000;
/// Seats in one reservation, at most.
pub const SEATS_PER_RESERVATION_MAX: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeatsCommand {
    ScheduleShow { show: String, seats: u32 },
    Reserve { seats: Vec<u32>, customer: String },
    Release { seats: Vec<u32>, customer: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum SeatsEvent {
    ShowScheduled {
        show: String,
        seats: u32,
    },
    SeatsReserved {
        show: String,
        seats: Vec<u32>,
        customer: String,
    },
    SeatsReleased {
        show: String,
        seats: Vec<u32>,
        customer: String,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatsState {
    /// `None` until the show is scheduled.
    pub show: Option<String>,
    pub capacity: u32,
    /// Seat → customer holding it.
    pub holders: BTreeMap<u32, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeatsRejection {
    NotScheduled,
    AlreadyScheduled,
    InvalidCapacity { seats: u32 },
    EmptyRequest,
    TooManySeats { requested: usize, limit: usize },
    DuplicateSeat { seat: u32 },
    NoSuchSeat { seat: u32 },
    SeatTaken { seat: u32 },
    NotHolder { seat: u32 },
}

/// The seats decider.
#[derive(Debug)]
pub struct Seats;

pub fn show_tag(show: &str) -> String {
    format!("show:{show}")
}

pub fn seat_tag(show: &str, seat: u32) -> String {
    format!("seat:{show}:{seat}")
}

fn check_request(state: &SeatsState, seats: &[u32]) -> Result<(), SeatsRejection> {
    if state.show.is_none() {
        return Err(SeatsRejection::NotScheduled);
    }
    if seats.is_empty() {
        return Err(SeatsRejection::EmptyRequest);
    }
    if seats.len() > SEATS_PER_RESERVATION_MAX {
        return Err(SeatsRejection::TooManySeats {
            requested: seats.len(),
            limit: SEATS_PER_RESERVATION_MAX,
        });
    }
    let mut seen = BTreeSet::new();
    for &seat in seats {
        if !seen.insert(seat) {
            return Err(SeatsRejection::DuplicateSeat { seat });
        }
        if seat == 0 || seat > state.capacity {
            return Err(SeatsRejection::NoSuchSeat { seat });
        }
    }
    Ok(())
}

impl Decider for Seats {
    type Command = SeatsCommand;
    type Event = SeatsEvent;
    type State = SeatsState;
    type Rejection = SeatsRejection;

    fn initial() -> SeatsState {
        SeatsState::default()
    }

    fn decide(
        state: &SeatsState,
        command: &SeatsCommand,
    ) -> Result<Vec<SeatsEvent>, SeatsRejection> {
        match command {
            SeatsCommand::ScheduleShow { show, seats } => {
                if state.show.is_some() {
                    return Err(SeatsRejection::AlreadyScheduled);
                }
                if *seats == 0 || *seats > SEATS_PER_SHOW_MAX {
                    return Err(SeatsRejection::InvalidCapacity { seats: *seats });
                }
                Ok(vec![SeatsEvent::ShowScheduled {
                    show: show.clone(),
                    seats: *seats,
                }])
            }
            SeatsCommand::Reserve { seats, customer } => {
                check_request(state, seats)?;
                if seats.iter().all(|s| state.holders.get(s) == Some(customer)) {
                    return Ok(Vec::new()); // already theirs
                }
                if let Some(&seat) = seats.iter().find(|s| state.holders.contains_key(s)) {
                    return Err(SeatsRejection::SeatTaken { seat });
                }
                Ok(vec![SeatsEvent::SeatsReserved {
                    show: state.show.clone().expect("checked"),
                    seats: seats.clone(),
                    customer: customer.clone(),
                }])
            }
            SeatsCommand::Release { seats, customer } => {
                check_request(state, seats)?;
                if let Some(&seat) = seats
                    .iter()
                    .find(|s| state.holders.get(s) != Some(customer))
                {
                    return Err(SeatsRejection::NotHolder { seat });
                }
                Ok(vec![SeatsEvent::SeatsReleased {
                    show: state.show.clone().expect("checked"),
                    seats: seats.clone(),
                    customer: customer.clone(),
                }])
            }
        }
    }

    fn evolve(mut state: SeatsState, event: &SeatsEvent) -> SeatsState {
        match event {
            SeatsEvent::ShowScheduled { show, seats } => {
                state.show = Some(show.clone());
                state.capacity = *seats;
            }
            SeatsEvent::SeatsReserved {
                seats, customer, ..
            } => {
                for seat in seats {
                    let previous = state.holders.insert(*seat, customer.clone());
                    assert!(previous.is_none(), "seat {seat} booked twice (I6)");
                }
            }
            SeatsEvent::SeatsReleased { seats, .. } => {
                for seat in seats {
                    state.holders.remove(seat);
                }
            }
        }
        state
    }
}

impl Aggregate for Seats {
    const SNAPSHOT_SCHEMA: u32 = 1;

    fn encode_event(event: &SeatsEvent) -> EncodedEvent {
        let (event_type, payload) = json::encode_event(event);
        let tags = match event {
            SeatsEvent::ShowScheduled { show, .. } => vec![show_tag(show)],
            SeatsEvent::SeatsReserved { show, seats, .. }
            | SeatsEvent::SeatsReleased { show, seats, .. } => std::iter::once(show_tag(show))
                .chain(seats.iter().map(|&seat| seat_tag(show, seat)))
                .collect(),
        };
        EncodedEvent {
            event_type,
            tags,
            payload,
        }
    }

    fn decode_event(event_type: &str, payload: &[u8]) -> Result<SeatsEvent, CodecError> {
        json::decode_event(event_type, payload)
    }

    fn encode_state(state: &SeatsState) -> Vec<u8> {
        json::encode(state)
    }

    fn decode_state(bytes: &[u8]) -> Result<SeatsState, CodecError> {
        json::decode("seats state", bytes)
    }
}

/// Why a cross-stream reservation did not take effect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrossStreamError {
    #[error("reservation rejected: {0:?}")]
    Rejected(SeatsRejection),
    /// Someone touched one of the requested seats after we read them; reread and retry.
    #[error(transparent)]
    Append(AppendError),
    #[error(transparent)]
    Read(ReadError),
    #[error(transparent)]
    Codec(CodecError),
    #[error("invalid stream id: {0}")]
    StreamId(String),
}

/// The query that draws a reservation's consistency boundary: the show's schedule and
/// every event touching one of `seats`.
pub fn reservation_boundary(show: &str, seats: &[u32]) -> Query {
    let mut items = vec![QueryItem {
        event_types: vec!["ShowScheduled".into()],
        tags: vec![show_tag(show)],
    }];
    items.extend(seats.iter().map(|&seat| QueryItem {
        event_types: Vec::new(),
        tags: vec![seat_tag(show, seat)],
    }));
    Query { items }
}

/// One attempt at reserving `seats` of `show` for `customer` without a per-show stream:
/// read the boundary, decide, append to `reservation-<command>` under the condition that
/// nothing in the boundary changed. `Ok(None)`: the customer already holds every seat.
/// A [`CrossStreamError::Append`] with [`AppendError::ConditionFailed`] means "retry".
pub async fn reserve_across_streams<S: EventStore>(
    store: &S,
    show: &str,
    seats: &[u32],
    customer: &str,
    command_id: CommandId,
    recorded_at_millis: u64,
) -> Result<Option<AppendResult>, CrossStreamError> {
    let boundary = reservation_boundary(show, seats);
    let mut state = Seats::initial();
    let mut last_seen = None;
    loop {
        let page = store
            .read_matching(&boundary, last_seen, usize::MAX)
            .await
            .map_err(CrossStreamError::Read)?;
        let Some(last) = page.last() else { break };
        last_seen = Some(last.position);
        for recorded in &page {
            let event = Seats::decode_event(&recorded.event_type, &recorded.payload)
                .map_err(CrossStreamError::Codec)?;
            state = Seats::evolve(state, &event);
        }
    }
    let command = SeatsCommand::Reserve {
        seats: seats.to_vec(),
        customer: customer.to_owned(),
    };
    let events = Seats::decide(&state, &command).map_err(CrossStreamError::Rejected)?;
    if events.is_empty() {
        return Ok(None);
    }
    let stream = StreamId::new(&format!("reservation-{command_id}"))
        .map_err(|e| CrossStreamError::StreamId(e.to_string()))?;
    let condition = AppendCondition {
        query: boundary,
        after: last_seen,
    };
    let data = encode_events::<Seats>(&events, command_id, recorded_at_millis);
    store
        .append_if(&stream, ExpectedVersion::NoStream, data, Some(&condition))
        .await
        .map(Some)
        .map_err(CrossStreamError::Append)
}
