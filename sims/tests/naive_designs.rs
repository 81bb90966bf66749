//! The harness catches the naive designs N1, N4, N5, N6 and `naive-no-fencing` (DESIGN §5): a bounded swarm of seeds under a
//! fault plan that can expose the mistake finds the predicted violation for the naive
//! design, and the correct design passes exactly the same seeds and plans.
#![cfg(madsim)]

use std::time::Duration;

use evsource::faultpoint::FaultPoint;
use evsource_sims::faults::{Design, FaultPlan};
use evsource_sims::points::PointPlan;
use evsource_sims::unlock_race::{UnlockRace, run};

/// Runs `seeds` for `design`, each on a fresh thread; returns the violated invariant per
/// failing seed.
fn swarm(
    design: Design,
    faults: fn() -> FaultPlan,
    seeds: std::ops::RangeInclusive<u64>,
) -> Vec<(u64, &'static str)> {
    let mut failures = Vec::new();
    for seed in seeds {
        let verdict = evsource_sims::on_fresh_thread(seed, move || async move {
            let scenario = UnlockRace {
                faults: faults(),
                design,
                ..UnlockRace::default()
            };
            run(&scenario).await.verdict
        })
        .expect("the run does not panic");
        if let Err(violation) = verdict {
            failures.push((seed, violation.invariant));
        }
    }
    failures
}

/// Asserts that a swarm of `seeds` under `faults` catches `design`, every failure being
/// one of `invariants`, and that the correct design passes the same seeds and plans.
fn caught(
    design: Design,
    faults: fn() -> FaultPlan,
    seeds: std::ops::RangeInclusive<u64>,
    invariants: &[&str],
) {
    let naive = swarm(design, faults, seeds.clone());
    assert!(
        !naive.is_empty(),
        "the swarm did not catch {} on seeds {seeds:?}",
        design.name()
    );
    assert!(
        naive
            .iter()
            .all(|(_, invariant)| invariants.contains(invariant)),
        "{} must break only {invariants:?}: {naive:?}",
        design.name()
    );
    let correct = swarm(Design::Correct, faults, seeds);
    assert!(correct.is_empty(), "the correct design failed: {correct:?}");
}

/// N4: the dispatcher checkpoints a request before its send is confirmed, so a node that
/// restarts while the request is in flight forgets it — an unlock request never answered
/// (I4). With three nodes the others still hold the request in memory and dispatch it once
/// they hold the station's lease, and nodes ride out an unavailable store without
/// restarting, so the bug shows only when a restart, the station's return to that node and
/// the request in flight line up: about one seed in a hundred of the swarm's own plans
/// (`FaultPlan::draw`), so this takes 200 of them.
#[test]
fn naive_early_checkpoint_loses_unlocks_and_the_correct_design_does_not() {
    caught(
        Design::NaiveEarlyCheckpoint,
        FaultPlan::draw,
        1..=200,
        &["I4"],
    );
}

/// N1 (seed 000's design): the RemoteStartTransaction goes out inside the command, before
/// the append — from the API task, beside the dispatcher, so it may also put a second CALL
/// on a station's connection while one is outstanding (I12). Concurrent clients on shared connectors (F8) are enough, with no other
/// fault: a command whose append then loses the race leaves a physical unlock that no
/// recorded request asked for (I1). The outbox design passes the same seeds. With three
/// nodes the command can send only when the client's node holds the station's connection,
/// so it races less often than on one node: hence more seeds.
#[test]
fn naive_side_effect_unlocks_what_nobody_recorded_and_the_outbox_does_not() {
    // N1 gives double, orphan or unrecorded unlocks.
    caught(
        Design::NaiveSideEffect,
        FaultPlan::none,
        1..=24,
        &["I1", "I4", "I5", "I12"],
    );
}

/// A telemetry storm on a slow disk: every station heartbeats every 3 s, status bursts
/// (a flap every ~10 ms) strike as commands go out, and each sync takes 45 ms — a station
/// reports faster than one stream can be made durable — and, at the F12 point
/// `command-decided`, a quarter of the commands are victims held until another writer of
/// their stream lands.
fn storm_on_a_slow_disk() -> FaultPlan {
    FaultPlan {
        points: PointPlan {
            fire_per_mille: [(FaultPoint::CommandDecided, 250)].into_iter().collect(),
        },
        telemetry_storm: Some(10),
        sync_latency_millis: Some(45),
        fault_phase: Duration::from_secs(200),
        ..FaultPlan::none()
    }
}

/// N5 (seed 000's aggregate): heartbeats and status reports appended to the business
/// stream keep moving its version, so an unlock request loses every optimistic append
/// during a storm and the client is refused for contention (I4). With telemetry on its
/// own stream the same seeds and storms pass.
#[test]
fn telemetry_in_the_business_aggregate_starves_commands_and_its_own_stream_does_not() {
    caught(
        Design::NaiveTelemetry,
        storm_on_a_slow_disk,
        1..=16,
        &["I4"],
    );
}

/// Status bursts (so that stations sometimes refuse an unlock: a Rejected outcome) and the
/// targeted F1 stall: a node about to record a Rejected or TimedOut outcome freezes until
/// its station has reconnected to another node and that node holds the lease.
fn stalls_in_a_storm() -> FaultPlan {
    FaultPlan {
        outcome_stalls: true,
        telemetry_storm: Some(20),
        fault_phase: Duration::from_secs(200),
        ..FaultPlan::none()
    }
}

/// `naive-no-fencing`: a node that lost the station's lease while frozen goes on and
/// appends the Rejected it decided before; unfenced, it lands while the new holder's
/// retry is unlocking the connector, and the aggregate's one-outcome rule then refuses the
/// true Accepted — a physical unlock recorded Rejected (I5). Fenced, the stale append is
/// refused and the same seeds pass.
#[test]
fn naive_no_fencing_records_a_stale_outcome_and_the_fenced_design_does_not() {
    caught(Design::NaiveNoFencing, stalls_in_a_storm, 1..=20, &["I5"]);
}

/// Runs `seeds` of the projection catch-up scenario under `design`.
fn projection_swarm(
    design: Design,
    seeds: std::ops::RangeInclusive<u64>,
) -> Vec<(u64, &'static str)> {
    let mut failures = Vec::new();
    for seed in seeds {
        let verdict = evsource_sims::on_fresh_thread(seed, move || async move {
            evsource_sims::projection_catchup::run(design, &FaultPlan::draw()).await
        })
        .expect("the run does not panic");
        if let Err(violation) = verdict {
            failures.push((seed, violation.invariant));
        }
    }
    failures
}

#[test]
fn a_checkpoint_kept_apart_from_its_state_skips_or_doubles_events_and_the_correct_projection_does_not()
 {
    let naive = projection_swarm(Design::NaiveProjectionCheckpoint, 1..=12);
    assert!(
        !naive.is_empty(),
        "the swarm did not catch naive-projection-checkpoint"
    );
    assert!(
        naive.iter().all(|(_, invariant)| *invariant == "I7"),
        "N6 breaks I7: {naive:?}"
    );
    let correct = projection_swarm(Design::Correct, 1..=12);
    assert!(
        correct.is_empty(),
        "the correct projection failed: {correct:?}"
    );
}
