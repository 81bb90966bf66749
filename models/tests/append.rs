//! The append model at the CI bound: the correct protocol keeps I3, I6 and I8 and completes
//! every command on every interleaving with a crash, and its interesting behaviours are
//! reachable (so the pass is not vacuous); each naive design's violation is found with a
//! short counterexample. The explored state counts are pinned: a change that shrinks the
//! state space by accident fails here.

use evsource_models::append::{AppendDesign, AppendModel};
use evsource_models::report::{Report, Search, check, check_symmetric};

fn run(design: AppendDesign) -> Report {
    check(AppendModel::new(2, 2, 1, design), Search::Bfs, 1)
}

/// Every property holds, every interesting state is reached (`refused` names the domain's
/// refusal), and the explored (states, unique states, depth) are exactly `counts`.
fn holds_and_reaches(report: &Report, refused: &str, counts: (usize, usize, usize)) {
    assert!(report.all_hold(), "{report}");
    for reached in [
        "a conflict happened and was retried",
        refused,
        "a crashed command was recognised as applied",
    ] {
        assert!(
            report.verdict(reached).unwrap().holds,
            "{reached}: {report}"
        );
    }
    assert_eq!(
        (report.states, report.unique_states, report.max_depth),
        counts,
        "the explored state space changed: {report}"
    );
}

#[test]
fn the_correct_protocol_holds_everything_and_reaches_every_interesting_state() {
    let report = run(AppendDesign::Correct);
    holds_and_reaches(
        &report,
        "a withdrawal was refused for lack of funds",
        (547, 288, 14),
    );
}

#[test]
fn validating_a_read_model_and_appending_with_any_overdraws_n2() {
    let report = run(AppendDesign::NaiveReadModel);
    let verdict = report
        .verdict("I6 the balance never goes negative")
        .unwrap();
    assert!(!verdict.holds, "N2 must overdraw: {report}");
    let path = verdict.path.as_ref().expect("a counterexample");
    assert!(path.len() <= 12, "a short counterexample: {path:?}");
    assert_eq!(
        path,
        &[
            "handler 0 loads the stream",
            "handler 1 loads the stream",
            "handler 1 decides and appends",
            "handler 0 decides and appends",
        ],
        "the two-reader race, step by step"
    );
}

#[test]
fn a_version_check_outside_the_store_overdraws_n3() {
    let report = run(AppendDesign::NaiveVersionCheck);
    let verdict = report
        .verdict("I6 the balance never goes negative")
        .unwrap();
    assert!(!verdict.holds, "N3 must overdraw: {report}");
    let path = verdict.path.as_ref().expect("a counterexample");
    assert!(path.len() <= 12, "a short counterexample: {path:?}");
    assert!(
        path.iter()
            .filter(|s| s.contains("compares versions"))
            .count()
            >= 2,
        "both handlers passed their own check before either appended: {path:?}"
    );
}

/// The larger bound of the README: 3 handlers × 3 commands with a crash, exhaustively.
#[test]
fn three_handlers_with_three_commands_and_a_crash_hold_everything() {
    let report = check(
        AppendModel::new(3, 3, 1, AppendDesign::Correct),
        Search::Bfs,
        2,
    );
    assert!(report.all_hold(), "{report}");
    assert_eq!(report.unique_states, 11_464, "{report}");
}

/// Seed 000's race in the append model: handlers request unlocks on one station through
/// the real station decider. The correct protocol never puts two sessions on a connector,
/// and its interesting states (a retried conflict, a busy refusal, a recognised retry)
/// are reachable; the state counts are pinned.
#[test]
fn on_the_station_the_correct_protocol_never_requests_a_connector_twice() {
    let report = check(
        AppendModel::station(2, 2, 1, AppendDesign::Correct),
        Search::Bfs,
        1,
    );
    holds_and_reaches(
        &report,
        "an unlock was refused: the connector is busy",
        (1367, 770, 17),
    );
}

/// N2 and N3 on the station: both let two sessions request one connector (I1), found
/// with a short counterexample.
#[test]
fn on_the_station_the_naive_designs_request_a_connector_twice() {
    for design in [
        AppendDesign::NaiveReadModel,
        AppendDesign::NaiveVersionCheck,
    ] {
        let report = check(AppendModel::station(2, 2, 1, design), Search::Bfs, 1);
        let verdict = report
            .verdict("I1 never two sessions on one connector")
            .unwrap();
        assert!(!verdict.holds, "{} must break I1: {report}", design.name());
        let path = verdict.path.as_ref().expect("a counterexample");
        assert!(path.len() <= 12, "a short counterexample: {path:?}");
        assert!(
            path.iter()
                .filter(|s| s.contains("loads the stream"))
                .count()
                >= 2,
            "both handlers loaded before the second append: {path:?}"
        );
    }
}

/// Symmetry reduction (handlers are interchangeable) on the larger bound: the same verdicts
/// as the full search, every interesting state still reached, on a fraction of the states;
/// and a naive design's violation is still found. Counts pinned.
#[test]
fn symmetry_reduction_keeps_every_verdict_on_a_fraction_of_the_states() {
    for (model, full, reduced) in [
        (
            AppendModel::new(3, 3, 1, AppendDesign::Correct),
            11_464,
            2_102,
        ),
        (
            AppendModel::station(3, 3, 1, AppendDesign::Correct),
            71_755,
            12_335,
        ),
    ] {
        let report = check_symmetric(model.clone(), 1);
        assert!(report.all_hold(), "{report}");
        assert_eq!(report.unique_states, reduced, "{report}");
        assert!(
            reduced * 5 < full,
            "at least a fivefold reduction: {report}"
        );
    }
    let naive = check_symmetric(
        AppendModel::station(2, 2, 1, AppendDesign::NaiveReadModel),
        1,
    );
    assert!(
        !naive
            .verdict("I1 never two sessions on one connector")
            .unwrap()
            .holds,
        "{naive}"
    );
}
