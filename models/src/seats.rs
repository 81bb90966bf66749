//! Seats across streams (the dynamic consistency boundary): customers reserve overlapping
//! sets of seats of one show, each reservation in its own stream, each append carrying the
//! condition "no event touching my seats after the position I read". Every transition calls
//! the project's own code: the seats decider, its event encoding and tags, the boundary
//! query, and the store's commit rule ([`StoreIndex::check_append`] and
//! [`StoreIndex::matching_positions`]), rebuilt from the stored events at each step.
//!
//! Designs: `correct` appends with the condition; `naive-no-condition` appends to its own
//! stream without it — each stream is consistent on its own, and seats are booked twice.

use std::fmt;

use evsource::core::{
    AppendCondition, AppendPlan, CommandId, EventData, ExpectedVersion, GlobalPosition, Limits,
    StoreIndex, StreamId,
};
use evsource::decider::{Aggregate, Decider};
use evsource::domain::seats::{Seats, SeatsCommand, SeatsEvent, SeatsState, reservation_boundary};
use evsource::handler::encode_events;
use evsource::store::AppendError;
use stateright::{Model, Property};

use crate::outbox::Machine;

const SHOW: &str = "show-1";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SeatsDesign {
    #[default]
    Correct,
    /// Each reservation consistent in its own stream only: no cross-stream condition.
    NaiveNoCondition,
}

impl SeatsDesign {
    pub const ALL: [SeatsDesign; 2] = [SeatsDesign::Correct, SeatsDesign::NaiveNoCondition];

    pub fn name(self) -> &'static str {
        match self {
            SeatsDesign::Correct => "correct",
            SeatsDesign::NaiveNoCondition => "naive-no-condition",
        }
    }
}

/// Customers and the seats each asks for; the default overlaps two of them on one seat
/// and leaves the third disjoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeatsModel {
    pub requests: Vec<Vec<u32>>,
    pub capacity: u32,
    pub design: SeatsDesign,
}

impl SeatsModel {
    pub fn new(design: SeatsDesign) -> SeatsModel {
        SeatsModel {
            requests: vec![vec![1, 2], vec![2, 3], vec![4]],
            capacity: 4,
            design,
        }
    }

    fn attempts_max(&self) -> u8 {
        self.requests.len() as u8 + 1
    }

    fn command(customer: usize) -> CommandId {
        CommandId(100 + customer as u128)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    Ready {
        attempt: u8,
    },
    /// Read the boundary up to `last_seen` and folded it into `state`.
    Read {
        attempt: u8,
        last_seen: Option<u64>,
        state: Machine<SeatsState>,
    },
    Done(Outcome),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Reserved,
    Refused,
    GaveUp,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    /// Every stored event with its stream, in position order.
    pub events: Vec<(String, Machine<EventData>)>,
    pub customers: Vec<Step>,
    pub retried: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Read(u8),
    Append(u8),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Read(c) => write!(f, "customer {c} reads the events touching its seats"),
            Action::Append(c) => write!(f, "customer {c} decides and appends its reservation"),
        }
    }
}

impl State {
    /// The real store's index over the stored events.
    fn index(&self) -> StoreIndex {
        let mut index = StoreIndex::new(Limits::default());
        for (stream, data) in &self.events {
            let stream = StreamId::new(stream).expect("valid stream");
            let batch = std::slice::from_ref(&data.0);
            match index.check_append(&stream, ExpectedVersion::Any, batch, None) {
                Ok(AppendPlan::Write { first_position, .. }) => {
                    index.apply_append(&stream, batch, first_position);
                }
                other => panic!("a stored event replays: {other:?}"),
            }
        }
        index
    }

    /// Seat → customers holding it, from the whole history (without the decider, which
    /// refuses to fold a double booking).
    pub fn holders(&self) -> Vec<(u32, Vec<String>)> {
        let mut holders: std::collections::BTreeMap<u32, Vec<String>> = Default::default();
        for (_, data) in &self.events {
            match Seats::decode_event(&data.0.event_type, &data.0.payload) {
                Ok(SeatsEvent::SeatsReserved {
                    seats, customer, ..
                }) => {
                    for seat in seats {
                        holders.entry(seat).or_default().push(customer.clone());
                    }
                }
                Ok(SeatsEvent::SeatsReleased {
                    seats, customer, ..
                }) => {
                    for seat in seats {
                        holders.entry(seat).or_default().retain(|c| *c != customer);
                    }
                }
                _ => {}
            }
        }
        holders.into_iter().collect()
    }

    fn double_booked(&self) -> bool {
        self.holders().iter().any(|(_, who)| who.len() > 1)
    }
}

impl Model for SeatsModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let scheduled = Seats::decide(
            &Seats::initial(),
            &SeatsCommand::ScheduleShow {
                show: SHOW.into(),
                seats: self.capacity,
            },
        )
        .expect("a show can be scheduled");
        let data = encode_events::<Seats>(&scheduled, CommandId(1), 0);
        vec![State {
            events: data
                .into_iter()
                .map(|d| (SHOW.to_owned(), Machine(d)))
                .collect(),
            customers: vec![Step::Ready { attempt: 0 }; self.requests.len()],
            retried: 0,
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        for (index, step) in state.customers.iter().enumerate() {
            match step {
                Step::Ready { .. } => actions.push(Action::Read(index as u8)),
                Step::Read { .. } => actions.push(Action::Append(index as u8)),
                Step::Done(_) => {}
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        match action {
            Action::Read(c) => {
                let Step::Ready { attempt } = state.customers[c as usize] else {
                    return None;
                };
                let boundary = reservation_boundary(SHOW, &self.requests[c as usize]);
                let positions = state
                    .index()
                    .matching_positions(&boundary, None, usize::MAX);
                // A history the naive design double-booked cannot be folded (the decider
                // refuses); that state already breaks I6, so any fold will do there.
                let folded = if state.double_booked() {
                    SeatsState::default()
                } else {
                    positions.iter().fold(Seats::initial(), |folded, position| {
                        let data = &state.events[position.0 as usize].1.0;
                        let event = Seats::decode_event(&data.event_type, &data.payload)
                            .expect("stored events decode");
                        Seats::evolve(folded, &event)
                    })
                };
                state.customers[c as usize] = Step::Read {
                    attempt,
                    last_seen: positions.last().map(|p| p.0),
                    state: Machine(folded),
                };
            }
            Action::Append(c) => {
                let Step::Read {
                    attempt,
                    last_seen,
                    state: folded,
                } = state.customers[c as usize].clone()
                else {
                    return None;
                };
                let seats = self.requests[c as usize].clone();
                let command = SeatsCommand::Reserve {
                    seats: seats.clone(),
                    customer: format!("customer-{c}"),
                };
                let events = match Seats::decide(&folded.0, &command) {
                    Ok(events) => events,
                    Err(_) => {
                        state.customers[c as usize] = Step::Done(Outcome::Refused);
                        return Some(state);
                    }
                };
                let data = encode_events::<Seats>(&events, SeatsModel::command(c as usize), 0);
                let stream_name = format!("reservation-{c}");
                let stream = StreamId::new(&stream_name).expect("valid");
                let condition = AppendCondition {
                    query: reservation_boundary(SHOW, &seats),
                    after: last_seen.map(GlobalPosition),
                };
                let condition = match self.design {
                    SeatsDesign::Correct => Some(&condition),
                    SeatsDesign::NaiveNoCondition => None,
                };
                match state.index().check_append(
                    &stream,
                    ExpectedVersion::NoStream,
                    &data,
                    condition,
                ) {
                    Ok(AppendPlan::Write { .. }) => {
                        state
                            .events
                            .extend(data.into_iter().map(|d| (stream_name.clone(), Machine(d))));
                        state.customers[c as usize] = Step::Done(Outcome::Reserved);
                    }
                    Ok(AppendPlan::AlreadyWritten(_)) => {
                        state.customers[c as usize] = Step::Done(Outcome::Reserved);
                    }
                    Err(AppendError::ConditionFailed { .. })
                        if attempt + 1 < self.attempts_max() =>
                    {
                        state.retried = state.retried.saturating_add(1);
                        state.customers[c as usize] = Step::Ready {
                            attempt: attempt + 1,
                        };
                    }
                    Err(AppendError::ConditionFailed { .. }) => {
                        state.customers[c as usize] = Step::Done(Outcome::GaveUp);
                    }
                    Err(other) => panic!("unexpected store answer: {other}"),
                }
            }
        }
        Some(state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("I6 no seat is booked twice", |_, s: &State| {
                !s.double_booked()
            }),
            Property::always(
                "every reservation is decided without giving up",
                |_, s: &State| {
                    s.customers.iter().any(|c| !matches!(c, Step::Done(_)))
                        || s.customers
                            .iter()
                            .all(|c| !matches!(c, Step::Done(Outcome::GaveUp)))
                },
            ),
            Property::sometimes(
                "a condition failed and the reservation was retried",
                |_, s: &State| s.retried > 0,
            ),
            Property::sometimes("an overlapping reservation was refused", |_, s: &State| {
                s.customers.contains(&Step::Done(Outcome::Refused))
            }),
            Property::sometimes(
                "the disjoint reservation succeeded beside another",
                |_, s: &State| {
                    s.customers
                        .iter()
                        .filter(|c| **c == Step::Done(Outcome::Reserved))
                        .count()
                        >= 2
                },
            ),
        ]
    }
}
