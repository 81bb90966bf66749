//! The seats model: reservations in separate streams guarded by the cross-stream append
//! condition never book a seat twice, the overlapping pair really conflicts and retries,
//! and the disjoint one succeeds beside them; without the condition a seat is booked
//! twice. All through the real decider, tags, boundary query and commit rule.

use evsource_models::report::{Search, check};
use evsource_models::seats::{SeatsDesign, SeatsModel};

#[test]
fn the_cross_stream_condition_never_books_a_seat_twice() {
    let report = check(SeatsModel::new(SeatsDesign::Correct), Search::Bfs, 1);
    assert!(report.all_hold(), "{report}");
    assert_eq!(
        (report.unique_states, report.max_depth),
        (68, 9),
        "the explored state space changed: {report}"
    );
}

#[test]
fn without_the_condition_a_seat_is_booked_twice() {
    let report = check(
        SeatsModel::new(SeatsDesign::NaiveNoCondition),
        Search::Bfs,
        1,
    );
    let verdict = report.verdict("I6 no seat is booked twice").unwrap();
    assert!(!verdict.holds, "{report}");
    let path = verdict.path.as_ref().expect("a counterexample");
    assert!(path.len() <= 12, "{path:?}");
}
