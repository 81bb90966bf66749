//! Two CSMS nodes as real processes — `evsource serve --store postgres://…` — sharing the
//! machine's PostgreSQL (a fresh schema). Simulated stations speak OCPP 1.6-J over
//! WebSocket to whichever node they pick at each connection; clients send unlocks through
//! either node's operator API, so an unlock requested on one node is often dispatched by
//! the other (the one holding the station's connection and lease). Mid-traffic one node is
//! killed with SIGKILL; its stations reconnect to the survivor, which takes their leases.
//!
//! Judged from the store and the stations' ground truth: no acknowledged event is lost,
//! every accepted request has exactly one outcome (I4), no request is unlocked twice and
//! an outcome is Accepted exactly when the station unlocked (I1, I5), and every command
//! took effect once (I8).
#![cfg(feature = "postgres")]

mod support;

use std::net::SocketAddr;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use evsource::chargepoint::{ChargePoint, ChargePointConfig};
use evsource::core::{CommandId, GlobalPosition};
use evsource::environment::SplitMix64;
use evsource::node::api::ApiCommand;
use evsource::node::client::ApiClient;
use evsource::node::driver::{
    LinkCounters, LinkFaults, SharedChargePoint, run_station_with_faults,
};
use evsource::oracles::{
    check_acknowledged, check_commands_once, check_store_shape, check_unlocks_against, ground_truth,
};
use evsource::signal::Shutdown;
use evsource::store::postgres::{PostgresConfig, PostgresStore};
use support::TempDir;
use support::postgres::{SchemaGuard, fresh_schema, url};
use support::stations::{self, now_millis, password};

const STATIONS: usize = 4;
const CONNECTORS: u32 = 2;
const CLIENTS: u64 = 3;
const REQUESTS_PER_CLIENT: u64 = 12;
const TOKEN: &str = "multi-node-operator-token";

/// One `evsource serve` process, killed (SIGKILL) when dropped if still running.
struct Node {
    child: Child,
    addr: SocketAddr,
}

impl Node {
    fn start(store_url: &str, id: &str, logs: &TempDir) -> Node {
        let log = std::fs::File::create(logs.path().join(format!("{id}.log"))).expect("log");
        let (child, addr) = support::spawn_serve(
            &[
                "serve",
                "--store",
                store_url,
                "--listen",
                "127.0.0.1:0",
                "--node-id",
                id,
                "--heartbeat-interval",
                "2",
            ],
            &[("EVSOURCE_OPERATOR_TOKEN", TOKEN), ("EVSOURCE_LOG", "info")],
            log.into(),
        );
        Node { child, addr }
    }

    /// SIGKILL: no shutdown, no flush, sockets reset by the kernel.
    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one client request came to.
struct Sent {
    command: CommandId,
    /// The position the API acknowledged, if it accepted the request.
    acknowledged: Option<GlobalPosition>,
}

/// Sends unlocks one at a time, each through a node picked at random; a request that gets
/// no answer (its node died) is sent again, same command id, through the other node.
async fn client(nodes: Vec<SocketAddr>, client: u64) -> Vec<Sent> {
    let mut rng = SplitMix64::new(0xc11e_0000 + client);
    let mut sent = Vec::new();
    for n in 0..REQUESTS_PER_CLIENT {
        let station = format!("CP{}", rng.below(STATIONS as u64));
        let connector = 1 + rng.below(u64::from(CONNECTORS)) as u32;
        let command = CommandId(u128::from((client << 32) | n));
        let mut node = rng.below(nodes.len() as u64) as usize;
        let mut acknowledged = None;
        for _attempt in 0..50 {
            let answer = async {
                let mut api = ApiClient::connect(nodes[node], TOKEN).await?;
                let unlock = ApiCommand::RequestUnlock {
                    connector,
                    session: format!("c{client}n{n}"),
                };
                api.send(command, &station, unlock).await
            };
            match tokio::time::timeout(Duration::from_secs(10), answer).await {
                Ok(Ok(response)) => {
                    if let (Some("Applied" | "AlreadyApplied"), Some(position)) =
                        (response.outcome.as_deref(), response.position)
                    {
                        acknowledged = Some(GlobalPosition(position));
                    }
                    break;
                }
                _ => {
                    node = (node + 1) % nodes.len();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        sent.push(Sent {
            command,
            acknowledged,
        });
        tokio::time::sleep(Duration::from_millis(50 + rng.below(250))).await;
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_traffic_loses_nothing_and_unlocks_nothing_twice() {
    let schema = fresh_schema("multinode");
    let _guard = SchemaGuard {
        schema: schema.clone(),
    };
    let mut config = PostgresConfig::from_url(&url()).expect("EVSOURCE_POSTGRES_URL parses");
    config.schema = schema.clone();
    let store = PostgresStore::open(config)
        .await
        .unwrap_or_else(|e| panic!("this test needs PostgreSQL ({}): {e}", url()));
    stations::register(&store, STATIONS, 0).await;
    let separator = if url().contains('?') { '&' } else { '?' };
    let store_url = format!("{}{separator}schema={schema}", url());
    let logs = TempDir::new("multi-node-logs");
    let mut doomed = Node::start(&store_url, "node-a", &logs);
    let survivor = Node::start(&store_url, "node-b", &logs);
    let nodes = vec![doomed.addr, survivor.addr];

    let stop_stations = Shutdown::new();
    let mut stations: Vec<SharedChargePoint> = Vec::new();
    let mut drivers = Vec::new();
    // What the stations' wire oracles see of the nodes (I12), checked at the end.
    let wire = Arc::new(LinkCounters::default());
    for index in 0..STATIONS {
        let mut config = ChargePointConfig::new(format!("CP{index}"), CONNECTORS);
        config.plug_in_delay_millis = 100 + 50 * index as u64;
        config.charging_millis = Some(300 + 100 * index as u64);
        let station = Arc::new(Mutex::new(ChargePoint::new(config, now_millis())));
        drivers.push(tokio::spawn(run_station_with_faults(
            station.clone(),
            nodes.clone(),
            password(index),
            Duration::from_millis(100),
            // No faults: the seed only picks which node each connection goes to.
            LinkFaults {
                seed: 0x57a7_0000 + index as u64,
                ..LinkFaults::default()
            },
            wire.clone(),
            stop_stations.clone(),
        )));
        stations.push(station);
    }
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(client(nodes.clone(), c)))
        .collect();
    // Mid-traffic: a third of the way through the clients' requests.
    tokio::time::sleep(Duration::from_millis(REQUESTS_PER_CLIENT * 200 / 3)).await;
    doomed.kill();

    let mut acknowledged = Vec::new();
    let mut commands = 0;
    for task in clients {
        for sent in task.await.expect("client") {
            commands += 1;
            if let Some(position) = sent.acknowledged {
                acknowledged.push((sent.command, position));
            }
        }
    }
    assert_eq!(commands, CLIENTS * REQUESTS_PER_CLIENT);
    assert!(
        acknowledged.len() >= 8,
        "only {} requests were accepted; the test would prove little",
        acknowledged.len()
    );
    let events = support::wait_for_outcomes(&store, acknowledged.len(), 60).await;
    stop_stations.trigger();
    for driver in drivers {
        driver.await.expect("driver");
    }
    check_store_shape(&events).unwrap_or_else(|v| panic!("{v}"));
    check_acknowledged(&events, &acknowledged).unwrap_or_else(|v| panic!("{v}"));
    check_commands_once(&events).unwrap_or_else(|v| panic!("{v}"));
    let truth = ground_truth(&stations);
    let summary = check_unlocks_against(&events, &truth).unwrap_or_else(|v| panic!("{v}"));
    assert_eq!(summary.requests, acknowledged.len());
    assert!(
        summary.actuations >= 4,
        "stations really unlocked: {summary:?}"
    );
    // The survivor took over a lease the killed node had held: a station of node-a's
    // reconnected to node-b, which took its lease.
    let taken_over = (0..STATIONS).filter(|index| {
        let holders: Vec<String> = events
            .iter()
            .filter_map(evsource::node::lease::read)
            .filter(|lease| lease.station == format!("CP{index}"))
            .map(|lease| lease.node)
            .collect();
        holders
            .iter()
            .position(|node| node == "node-a")
            .is_some_and(|a| holders[a..].iter().any(|node| node == "node-b"))
    });
    assert!(
        taken_over.count() >= 1,
        "no lease moved from node-a to node-b"
    );
    // I12: neither node broke OCPP-J on any station's wire, the kill included.
    let (violations, count) = wire.wire_violations();
    assert_eq!(count, 0, "OCPP-J violations: {violations:?}");
    assert!(
        wire.frames_checked
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    eprintln!(
        "{} commands, {} accepted; {summary:?}",
        commands,
        acknowledged.len()
    );
    drop(survivor);
}
