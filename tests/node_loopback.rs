//! End to end on real tokio over 127.0.0.1: a CSMS node on the durable log, five simulated
//! stations with two connectors each (heartbeating and reporting status throughout), and
//! four clients requesting unlocks concurrently through the operator API. Stations speak
//! OCPP 1.6-J over WebSocket with their registered passwords. Every request
//! the node accepted must get exactly one outcome event, no request may be unlocked twice
//! physically, and an outcome is Accepted exactly when the station really unlocked.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use evsource::chargepoint::{ChargePoint, ChargePointConfig};
use evsource::core::CommandId;
use evsource::dispatcher::DispatcherConfig;
use evsource::domain::board::UnlockBoard;
use evsource::environment::SplitMix64;
use evsource::node::api::{ApiCommand, ApiResponse};
use evsource::node::client::ApiClient;
use evsource::node::driver::{SharedChargePoint, run_station};
use evsource::node::{CsmsNode, NodeConfig};
use evsource::oracles::{check_unlocks_against, ground_truth};
use evsource::projection::{ProjectionRunner, rebuild};
use evsource::session::SessionConfig;
use evsource::signal::Shutdown;
use evsource::store::{LogConfig, LogStore};
use support::TempDir;
use support::stations::{self, now_millis, password};

const STATIONS: usize = 5;
const CONNECTORS: u32 = 2;
const CLIENTS: u64 = 4;
const REQUESTS_PER_CLIENT: u64 = 15;
const TOKEN: &str = "loopback-operator-token";

fn node_config() -> NodeConfig {
    NodeConfig {
        session: SessionConfig {
            heartbeat_interval_secs: 1,
            ..SessionConfig::default()
        },
        dispatcher: DispatcherConfig {
            call_timeout_millis: 2_000,
            retry_base_millis: 50,
            retry_max_millis: 500,
            ..DispatcherConfig::default()
        },
        projection_save_every_events: 50,
        ..support::stations::node_config("node-1", TOKEN, 1)
    }
}

/// One client: requests unlocks on seed-chosen connectors, one at a time.
async fn client(api: SocketAddr, client: u64) -> Vec<ApiResponse> {
    let mut connection = ApiClient::connect(api, TOKEN).await.unwrap();
    let mut rng = SplitMix64::new(client);
    let mut responses = Vec::new();
    for n in 0..REQUESTS_PER_CLIENT {
        let station = format!("CP{}", rng.below(STATIONS as u64));
        let connector = 1 + rng.below(u64::from(CONNECTORS)) as u32;
        let command = ApiCommand::RequestUnlock {
            connector,
            session: format!("c{client}n{n}"),
        };
        let command_id = CommandId(u128::from((client << 32) | n));
        responses.push(
            connection
                .send(command_id, &station, command)
                .await
                .unwrap(),
        );
        tokio::time::sleep(Duration::from_millis(rng.below(150))).await;
    }
    responses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_unlocks_over_loopback_happen_exactly_once() {
    let dir = TempDir::new("node-loopback");
    let store = LogStore::open_dir(
        dir.path(),
        LogConfig {
            segment_bytes: 8 * 1024 * 1024,
            ..LogConfig::default()
        },
    )
    .unwrap();
    stations::register(&store, STATIONS, now_millis()).await;
    let node = CsmsNode::start(store.clone(), node_config()).await.unwrap();
    let stop_stations = Shutdown::new();
    let mut stations: Vec<SharedChargePoint> = Vec::new();
    let mut drivers = Vec::new();
    for index in 0..STATIONS {
        let mut config = ChargePointConfig::new(format!("CP{index}"), CONNECTORS);
        config.plug_in_delay_millis = 100 + 50 * index as u64;
        config.connection_timeout_millis = 60_000;
        let station = Arc::new(Mutex::new(ChargePoint::new(config, now_millis())));
        drivers.push(tokio::spawn(run_station(
            station.clone(),
            vec![node.addr],
            password(index),
            Duration::from_millis(100),
            stop_stations.clone(),
        )));
        stations.push(station);
    }
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(client(node.addr, c)))
        .collect();
    let mut applied = 0;
    for task in clients {
        for response in task.await.unwrap() {
            match (response.outcome.as_deref(), response.error.as_deref()) {
                (Some("Applied"), _) => applied += 1,
                (None, Some(error)) => assert!(
                    error.contains("ConnectorBusy") || error.contains("SessionAlreadyUsed"),
                    "{error}"
                ),
                other => panic!("unexpected response {other:?}"),
            }
        }
    }
    assert!(
        applied >= 10,
        "only {applied} requests were accepted; the test would prove little"
    );

    // Wait (bounded) until every accepted request has its outcome, then judge the run.
    let events = support::wait_for_outcomes(&store, applied, 30).await;
    let requested = events
        .iter()
        .filter(|e| e.stream.as_str().starts_with("station-") && e.event_type == "UnlockRequested")
        .count();
    assert_eq!(
        requested, applied,
        "one UnlockRequested per accepted command"
    );
    let truth = ground_truth(&stations);
    let summary =
        check_unlocks_against(&events, &truth).unwrap_or_else(|violation| panic!("{violation}"));
    assert_eq!(summary.requests, applied);
    assert!(
        summary.actuations >= 5,
        "stations really unlocked: {summary:?}"
    );
    stop_stations.trigger();
    for driver in drivers {
        driver.await.unwrap();
    }
    node.shutdown().await;
    // The board projection saved its state with its checkpoint; caught up, it equals a
    // rebuild from position 0 (I7).
    let mut board: ProjectionRunner<_, UnlockBoard> =
        ProjectionRunner::load_instance(store.clone(), "node-1")
            .await
            .unwrap();
    assert!(
        board.checkpoint().is_some(),
        "the node saved the projection"
    );
    board.catch_up().await.unwrap();
    assert_eq!(
        board.state(),
        &rebuild::<_, UnlockBoard>(&store).await.unwrap()
    );
}
