//! Seed 002 through the generic decider scenario: clients race reservations and releases of
//! overlapping seats (with double submissions) against the real command handler; no seat
//! is ever held twice (I6), the log is well formed (I3), no command acts twice (I8).
#![cfg(madsim)]

use evsource_sims::decider_scenario::run;
use evsource_sims::faults::FaultPlan;
use evsource_sims::seats::SeatBooking;

#[test]
fn seat_booking_is_never_overbooked_across_seeds() {
    let mut applied = 0;
    let mut rejected = 0;
    for seed in 1..=10 {
        let summary = evsource_sims::on_fresh_thread(seed, move || async move {
            run::<SeatBooking>(&FaultPlan::draw()).await
        })
        .expect("the run does not panic")
        .unwrap_or_else(|violation| panic!("seed {seed}: {violation}"));
        applied += summary.applied;
        rejected += summary.rejected;
    }
    assert!(
        applied > 50,
        "reservations and releases really happened: {applied}"
    );
    assert!(
        rejected > 10,
        "contention really happened (taken seats refused): {rejected}"
    );
}
