//! Code to model, recorded by the simulator: real command handlers run concurrently on the
//! real in-memory store inside madsim, which picks the interleaving from the seed; every
//! recorded trace must be a behaviour of the append model (stateright's
//! `Path::from_actions`) ending with the same events, and some traces must contain a
//! version conflict, so the check is not vacuous.
#![cfg(madsim)]

use evsource::core::EventId;
use evsource_models::append::{AppendDesign, AppendModel};
use evsource_models::trace::run;
use stateright::{Model, Path};

#[test]
fn simulator_recorded_handler_traces_are_behaviours_of_the_append_model() {
    let model = AppendModel::new(3, 2, 0, AppendDesign::Correct);
    let init = model.init_states().remove(0);
    let mut conflicts = 0;
    for seed in 1..=100 {
        let simulated = model.clone();
        let (trace, real_ids) =
            evsource_sims::on_fresh_thread(
                seed,
                move || async move { run(&simulated, seed).await },
            )
            .expect("the run does not panic");
        let path = Path::from_actions(&model, init.clone(), trace.iter()).unwrap_or_else(|| {
            panic!("seed {seed}: the simulated trace is not a behaviour of the model: {trace:?}")
        });
        let last = path.last_state();
        let model_ids: Vec<EventId> = last.stream.iter().map(|s| s.id).collect();
        assert_eq!(
            model_ids, real_ids,
            "seed {seed}: the same events, id for id"
        );
        conflicts += usize::from(last.retried);
    }
    assert!(conflicts > 0, "no simulated trace had a conflict");
}
