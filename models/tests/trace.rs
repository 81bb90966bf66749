//! Code to model, under plain tokio: every trace of real concurrent handlers recorded by
//! [`evsource_models::trace::run`] is a behaviour of the append model (stateright's
//! `Path::from_actions` accepts it) and ends with the same events, id for id; conflicts
//! really occur in some traces, so the check is not vacuous.

use evsource::core::EventId;
use evsource_models::append::{AppendDesign, AppendModel};
use evsource_models::trace::run;
use stateright::{Model, Path};

#[test]
fn real_handler_traces_are_behaviours_of_the_append_model() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let model = AppendModel::new(3, 2, 0, AppendDesign::Correct);
    let init = model.init_states().remove(0);
    let mut conflicts = 0;
    for seed in 0..200 {
        let (trace, real_ids) = runtime.block_on(run(&model, seed));
        let path = Path::from_actions(&model, init.clone(), trace.iter()).unwrap_or_else(|| {
            panic!("seed {seed}: the real trace is not a behaviour of the model: {trace:?}")
        });
        let last = path.last_state();
        let model_ids: Vec<EventId> = last.stream.iter().map(|s| s.id).collect();
        assert_eq!(
            model_ids, real_ids,
            "seed {seed}: the same events, id for id"
        );
        conflicts += usize::from(last.retried);
    }
    assert!(
        conflicts > 0,
        "no trace had a conflict: the check would be vacuous"
    );
}
