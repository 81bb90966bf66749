//! Seed 002 as a swarm-tested scenario, in one file: the seats decider (one stream per
//! show), a workload of clients reserving and releasing overlapping seats, and the
//! invariant — no seat is ever held by two customers (I6). Everything else (clients on
//! simulated machines, the durable log, slow disks, double submissions, I3 and I8) comes
//! from [`crate::decider_scenario`].

use std::collections::BTreeMap;

use evsource::core::{RecordedEvent, StreamId};
use evsource::decider::Aggregate;
use evsource::domain::seats::{Seats, SeatsCommand, SeatsEvent};
use evsource::oracles::Violation;
use madsim::rand::Rng;

use crate::decider_scenario::{CommandOf, DeciderScenario};

const SHOWS: u64 = 2;
const SEATS_PER_SHOW: u32 = 8;

fn show(index: u64) -> StreamId {
    StreamId::new(&format!("show-{index}")).expect("valid stream id")
}

/// See the module documentation.
pub struct SeatBooking;

impl DeciderScenario for SeatBooking {
    type Aggregate = Seats;

    fn setup() -> Vec<(StreamId, CommandOf<Self>)> {
        (0..SHOWS)
            .map(|index| {
                (
                    show(index),
                    SeatsCommand::ScheduleShow {
                        show: index.to_string(),
                        seats: SEATS_PER_SHOW,
                    },
                )
            })
            .collect()
    }

    fn command(
        client: u64,
        _n: u64,
        rng: &mut madsim::rand::GlobalRng,
    ) -> (StreamId, CommandOf<Self>) {
        let first = rng.gen_range(1..=SEATS_PER_SHOW);
        let seats = if rng.gen_bool(0.5) {
            vec![first]
        } else {
            vec![first, first % SEATS_PER_SHOW + 1]
        };
        let customer = format!("customer-{client}");
        let command = if rng.gen_bool(0.7) {
            SeatsCommand::Reserve { seats, customer }
        } else {
            SeatsCommand::Release { seats, customer }
        };
        (show(rng.gen_range(0..SHOWS)), command)
    }

    /// **I6** for seats: replaying every show, a reservation never takes a held seat.
    fn check(events: &[RecordedEvent]) -> Result<(), Violation> {
        let mut holders: BTreeMap<(&str, u32), String> = BTreeMap::new();
        for event in events
            .iter()
            .filter(|e| e.stream.as_str().starts_with("show-"))
        {
            let decoded =
                Seats::decode_event(&event.event_type, &event.payload).map_err(|e| Violation {
                    invariant: "I10",
                    detail: format!("{} at {}: {e}", event.stream, event.position),
                })?;
            match decoded {
                SeatsEvent::ShowScheduled { .. } => {}
                SeatsEvent::SeatsReserved {
                    seats, customer, ..
                } => {
                    for seat in seats {
                        if let Some(holder) =
                            holders.insert((event.stream.as_str(), seat), customer.clone())
                        {
                            return Err(Violation {
                                invariant: "I6",
                                detail: format!(
                                    "{} seat {seat} booked by {customer} while {holder} held it (at {})",
                                    event.stream, event.position
                                ),
                            });
                        }
                    }
                }
                SeatsEvent::SeatsReleased { seats, .. } => {
                    for seat in seats {
                        holders.remove(&(event.stream.as_str(), seat));
                    }
                }
            }
        }
        Ok(())
    }
}
