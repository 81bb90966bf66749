//! The outbox model at the CI bound (one request; a dispatcher crash, a lost and a
//! duplicated frame, three call timeouts): the real dispatcher and the real station keep
//! I1 and I5 on every interleaving, every request ends with one outcome once the system is
//! quiet (I4 as a bounded response), and the faults really strike on paths that still
//! succeed. N4's early checkpoint loses the request; N1's side effect before the append leaves
//! an unlock that no stored request asked for. State counts are pinned.

use evsource_models::outbox::{OutboxDesign, OutboxModel};
use evsource_models::report::{Search, check};

#[test]
fn the_outbox_unlocks_once_and_answers_every_request_despite_crash_loss_and_duplicates() {
    let report = check(
        OutboxModel::new(1, 1, OutboxDesign::Correct),
        Search::Bfs,
        1,
    );
    assert!(report.all_hold(), "{report}");
    for reached in [
        "a request got its outcome after a dispatcher crash",
        "a request got its outcome after a lost frame",
        "every request answered and all quiet",
    ] {
        assert!(
            report.verdict(reached).unwrap().holds,
            "{reached}: {report}"
        );
    }
    assert_eq!(
        (report.unique_states, report.max_depth),
        // Each attempt is a new CALL with a new message id (I12), so a retransmission
        // and a late answer to the attempt before it are distinct states; a CALL whose
        // request was resolved while it was out keeps holding the connection (and a
        // station keeps a transaction message a CALLERROR refused), more states again;
        // a station's queued status report superseded by a newer one for its connector
        // makes queues that differ only in that, more again.
        (8331, 15),
        "the explored state space changed: {report}"
    );
}

#[test]
fn an_early_checkpoint_forgets_a_request_across_a_crash_n4() {
    let report = check(
        OutboxModel::new(1, 1, OutboxDesign::NaiveEarlyCheckpoint),
        Search::Bfs,
        1,
    );
    let verdict = report.verdict("I4 every request gets one outcome").unwrap();
    assert!(!verdict.holds, "N4 must lose the request: {report}");
    let path = verdict.path.as_ref().expect("a counterexample");
    assert!(path.len() <= 12, "a short counterexample: {path:?}");
    assert!(
        path.last().unwrap().contains("crashes"),
        "the request is lost by the crash: {path:?}"
    );
    assert!(
        report
            .verdict("I1 no request is unlocked twice")
            .unwrap()
            .holds,
        "N4 loses unlocks; it does not double them: {report}"
    );
}

#[test]
fn a_side_effect_before_the_append_leaves_an_unlock_nobody_recorded_n1() {
    let report = check(
        OutboxModel::new(1, 1, OutboxDesign::NaiveSideEffect),
        Search::Bfs,
        1,
    );
    let verdict = report
        .verdict("I1 nothing is unlocked that no stored request asked for")
        .unwrap();
    assert!(!verdict.holds, "N1 must leave an orphan unlock: {report}");
    let path = verdict.path.as_ref().expect("a counterexample");
    assert!(path.len() <= 12, "a short counterexample: {path:?}");
    assert!(
        path.first()
            .unwrap()
            .contains("sends its RemoteStartTransaction"),
        "the side effect goes first: {path:?}"
    );
}
