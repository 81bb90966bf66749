//! A run's timeline attributes every event to the simulated machine it happened on, in
//! simulated time, can be filtered to one request, and exports as Chrome Trace Event JSON
//! with one track per node.
#![cfg(madsim)]

use evsource_sims::timeline::Timeline;
use evsource_sims::unlock_race::{UnlockRace, run};

#[test]
fn a_run_timeline_names_nodes_orders_time_and_exports_a_trace() {
    let timeline = evsource_sims::on_fresh_thread(3, move || async move {
        let timeline = Timeline::default();
        let _collecting = timeline.install();
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
    for node in ["csms", "station-0", "client-0"] {
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
