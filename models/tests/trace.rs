//! Code to model, under plain tokio: every trace of real concurrent handlers recorded by
//! [`evsource_models::trace::run`] is a behaviour of the append model (stateright's
//! `Path::from_actions` accepts it) and ends with the same events, id for id; conflicts
//! really occur in some traces, so the check is not vacuous.

use evsource_models::append::{AppendDesign, AppendModel};
use evsource_models::trace::{check, run};

#[test]
fn real_handler_traces_are_behaviours_of_the_append_model() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let model = AppendModel::new(3, 2, 0, AppendDesign::Correct);
    let mut conflicts = 0;
    for seed in 0..200 {
        let (trace, real_ids) = runtime.block_on(run(&model, seed));
        let retried =
            check(&model, &trace, &real_ids).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        conflicts += usize::from(retried);
    }
    assert!(
        conflicts > 0,
        "no trace had a conflict: the check would be vacuous"
    );
}
