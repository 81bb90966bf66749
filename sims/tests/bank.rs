//! Seeds 004 and 003 under the simulator: concurrent withdrawals never overdraw (I6) and a
//! double-submitted form takes effect once (I8) with the real command handler, while the
//! naive designs N2 (`naive-read-model`) and N3 (`naive-version-check`) are caught on the
//! same seeds.
#![cfg(madsim)]

use evsource_sims::bank::{BankWorkload, run};
use evsource_sims::faults::{Design, FaultPlan};

/// Runs `seeds` of `workload` under `design`, each on a fresh thread; returns the
/// violated invariant of each failing seed and the withdrawals applied in all.
fn swarm(
    workload: BankWorkload,
    design: Design,
    seeds: std::ops::RangeInclusive<u64>,
) -> (Vec<(u64, &'static str)>, u64) {
    let mut failures = Vec::new();
    let mut applied = 0;
    for seed in seeds {
        let verdict = evsource_sims::on_fresh_thread(seed, move || async move {
            run(workload, design, &FaultPlan::draw()).await
        })
        .expect("the run does not panic");
        match verdict {
            Ok(summary) => applied += summary.withdrawals_applied,
            Err(violation) => failures.push((seed, violation.invariant)),
        }
    }
    (failures, applied)
}

#[test]
fn concurrent_withdrawals_never_overdraw_but_a_lagging_read_model_does() {
    let (correct, applied) = swarm(BankWorkload::Withdraw, Design::Correct, 1..=10);
    assert!(correct.is_empty(), "the correct design failed: {correct:?}");
    assert!(applied > 20, "withdrawals really happened: {applied}");
    let (naive, _) = swarm(BankWorkload::Withdraw, Design::NaiveReadModel, 1..=10);
    assert!(
        !naive.is_empty(),
        "the swarm did not catch naive-read-model"
    );
    assert!(
        naive.iter().all(|(_, invariant)| *invariant == "I6"),
        "N2 overdraws (I6): {naive:?}"
    );
}

#[test]
fn a_double_submit_takes_effect_once_but_not_with_a_version_check_outside_the_store() {
    let (correct, _) = swarm(BankWorkload::DoubleSubmit, Design::Correct, 1..=10);
    assert!(correct.is_empty(), "the correct design failed: {correct:?}");
    let (naive, _) = swarm(
        BankWorkload::DoubleSubmit,
        Design::NaiveVersionCheck,
        1..=10,
    );
    assert!(
        !naive.is_empty(),
        "the swarm did not catch naive-version-check"
    );
    assert!(
        naive.iter().any(|(_, invariant)| *invariant == "I8"),
        "N3 applies a form twice (I8): {naive:?}"
    );
}
