//! A run's timeline attributes every event to the simulated machine it happened on, in
//! simulated time, can be filtered to one request, and exports as Chrome Trace Event JSON
//! with one track per node.
#![cfg(madsim)]

use evsource_sims::timeline::Timeline;
use evsource_sims::unlock_race::{UnlockRace, run};

#[test]
fn a_run_timeline_names_nodes_orders_time_and_exports_a_trace() {
    let timeline = Timeline::default();
    let collected = timeline.clone();
    let timeline = evsource_sims::on_fresh_thread_traced(3, collected, move || async move {
        let report = run(&UnlockRace {
            requests_per_client: 3,
            ..UnlockRace::default()
        })
        .await;
        report
            .verdict
            .expect("a fault-free run holds the invariants");
        timeline
    })
    .expect("the run does not panic");
    let entries = timeline.entries();
    let nodes: std::collections::BTreeSet<&str> = entries.iter().map(|e| e.node.as_str()).collect();
    for node in ["store", "csms-1", "csms-3", "station-0", "client-0"] {
        assert!(nodes.contains(node), "events from {node}: {nodes:?}");
    }
    assert!(
        entries.windows(2).all(|w| w[0].at <= w[1].at),
        "events in simulated-time order"
    );
    let first_request = timeline.explaining(&["c0n0".to_owned()]);
    assert!(
        first_request
            .iter()
            .any(|e| e.node == "client-0" && e.message.starts_with("RequestUnlock answered")),
        "{first_request:?}"
    );
    let trace: serde_json::Value =
        serde_json::from_str(&timeline.chrome_trace()).expect("valid JSON");
    let events = trace["traceEvents"].as_array().expect("an event array");
    let tracks = events.iter().filter(|e| e["ph"] == "M").count();
    assert_eq!(tracks, nodes.len(), "one named track per node");
    assert_eq!(events.len() - tracks, entries.len());
}

/// Traced runs one after another in one process (as `sim shrink` does): a span the
/// simulator made under no subscriber once broke every later run; each run now collects
/// its own complete timeline.
#[test]
fn traced_runs_follow_each_other_in_one_process() {
    let mut lengths = Vec::new();
    for _ in 0..3 {
        let timeline = Timeline::default();
        let collected = timeline.clone();
        evsource_sims::on_fresh_thread_traced(5, collected, || async {
            run(&UnlockRace {
                requests_per_client: 2,
                ..UnlockRace::default()
            })
            .await
            .verdict
            .expect("a fault-free run holds the invariants");
        })
        .expect("no run panics");
        lengths.push(timeline.entries().len());
    }
    assert!(lengths[0] > 0, "events were collected: {lengths:?}");
    assert!(
        lengths.windows(2).all(|w| w[0] == w[1]),
        "the same seed gives the same timeline every time: {lengths:?}"
    );
}
