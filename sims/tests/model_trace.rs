//! Code to model, recorded by the simulator: real command handlers run concurrently on the
//! real in-memory store inside madsim, which picks the interleaving from the seed; every
//! recorded trace must be a behaviour of the append model (stateright's
//! `Path::from_actions`) ending with the same events, and some traces must contain a
//! version conflict, so the check is not vacuous.
#![cfg(madsim)]

use evsource_models::append::{AppendDesign, AppendModel};
use evsource_models::trace::{check, run};

#[test]
fn simulator_recorded_handler_traces_are_behaviours_of_the_append_model() {
    let model = AppendModel::new(3, 2, 0, AppendDesign::Correct);
    let mut conflicts = 0;
    for seed in 1..=100 {
        let simulated = model.clone();
        let (trace, real_ids) =
            evsource_sims::on_fresh_thread(
                seed,
                move || async move { run(&simulated, seed).await },
            )
            .expect("the run does not panic");
        let retried =
            check(&model, &trace, &real_ids).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        conflicts += usize::from(retried);
    }
    assert!(conflicts > 0, "no simulated trace had a conflict");
}
