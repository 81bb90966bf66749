//! The reference scenario (seed 000): clients request unlocks on shared stations while the
//! stations heartbeat and report status; the outbox dispatcher turns each persisted request
//! into a RemoteStartTransaction. Judged with the shared oracles (I1, I4, I5).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use evsource::chargepoint::{ChargePoint, ChargePointConfig};
use evsource::core::CommandId;
use evsource::dispatcher::DispatcherConfig;
use evsource::handler::HandlerConfig;
use evsource::node::api::ApiCommand;
use evsource::node::client::ApiClient;
use evsource::node::driver::{SharedChargePoint, run_station};
use evsource::node::{CsmsNode, NodeConfig};
use evsource::oracles::{
    UnlockSummary, Violation, check_unlocks_against, ground_truth, read_all_events,
};
use evsource::session::SessionConfig;
use evsource::signal::Shutdown;
use evsource::storage::SimDisk;
use evsource::store::{LogConfig, LogStore};
use madsim::rand::Rng;
use madsim::runtime::Handle;

/// The shape of one run.
#[derive(Clone, Debug)]
pub struct UnlockRace {
    pub stations: usize,
    pub connectors: u32,
    pub clients: u64,
    pub requests_per_client: u64,
    /// How long the run may take (simulated) before a missing outcome is a violation.
    pub deadline: Duration,
}

impl Default for UnlockRace {
    fn default() -> UnlockRace {
        UnlockRace {
            stations: 5,
            connectors: 2,
            clients: 4,
            requests_per_client: 10,
            deadline: Duration::from_secs(600),
        }
    }
}

const CSMS_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const STATION_PORT: u16 = 4000;
const API_PORT: u16 = 4001;

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs the scenario inside the current madsim runtime and judges it.
pub async fn run(scenario: &UnlockRace) -> Result<UnlockSummary, Violation> {
    let handle = Handle::current();
    let disk = SimDisk::new();
    let log = LogConfig {
        segment_bytes: 4 * 1024 * 1024,
        ..LogConfig::default()
    };
    let store = LogStore::open(Arc::new(disk), log).expect("a fresh simulated disk opens");

    let csms = handle.create_node().name("csms").ip(CSMS_IP).build();
    let node_store = store.clone();
    csms.spawn(async move {
        let config = NodeConfig {
            station_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), STATION_PORT),
            api_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), API_PORT),
            session: SessionConfig {
                heartbeat_interval_secs: 10,
                ..SessionConfig::default()
            },
            dispatcher: DispatcherConfig {
                call_timeout_millis: 5_000,
                ..DispatcherConfig::default()
            },
            handler: HandlerConfig::default(),
            seed: madsim::rand::thread_rng().r#gen(),
            projection_save_every_events: 50,
        };
        let _node = CsmsNode::start(node_store, config)
            .await
            .expect("the node starts");
        std::future::pending::<()>().await;
    });
    let station_addr = SocketAddr::new(CSMS_IP, STATION_PORT);
    let api_addr = SocketAddr::new(CSMS_IP, API_PORT);

    let mut stations: Vec<SharedChargePoint> = Vec::new();
    for index in 0..scenario.stations {
        let mut config = ChargePointConfig::new(format!("CP{index}"), scenario.connectors);
        config.plug_in_delay_millis = madsim::rand::thread_rng().gen_range(500..60_000);
        config.charging_millis = Some(madsim::rand::thread_rng().gen_range(5_000..120_000));
        let station = Arc::new(Mutex::new(ChargePoint::new(config, now_millis())));
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 1, index as u8 + 1));
        let driven = station.clone();
        handle
            .create_node()
            .name(format!("station-{index}"))
            .ip(ip)
            .build()
            .spawn(async move {
                run_station(
                    driven,
                    station_addr,
                    Duration::from_secs(1),
                    Shutdown::new(),
                )
                .await;
            });
        stations.push(station);
    }

    let mut clients = Vec::new();
    for client in 0..scenario.clients {
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 2, client as u8 + 1));
        let scenario = scenario.clone();
        let task = handle
            .create_node()
            .name(format!("client-{client}"))
            .ip(ip)
            .build()
            .spawn(async move {
                // Give the node a moment to bind its listeners.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut connection = ApiClient::connect(api_addr).await.expect("the API is up");
                let mut applied = 0u64;
                for n in 0..scenario.requests_per_client {
                    let (station, connector, pause) = {
                        let mut rng = madsim::rand::thread_rng();
                        (
                            rng.gen_range(0..scenario.stations),
                            rng.gen_range(1..=scenario.connectors),
                            rng.gen_range(0..20_000),
                        )
                    };
                    let command = ApiCommand::RequestUnlock {
                        connector,
                        session: format!("c{client}n{n}"),
                    };
                    let command_id = CommandId(u128::from((client << 32) | n));
                    let response = connection
                        .send(command_id, &format!("CP{station}"), command)
                        .await
                        .expect("answered");
                    if response.outcome.as_deref() == Some("Applied") {
                        applied += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                applied
            });
        clients.push(task);
    }
    let mut applied = 0;
    for task in clients {
        applied += task.await.expect("client finished");
    }

    // Quiescence: every accepted request has an outcome, or the deadline passes.
    let started = tokio::time::Instant::now();
    let events = loop {
        let events = read_all_events(&store).await.expect("the store reads");
        let outcomes = events
            .iter()
            .filter(|e| {
                e.stream.as_str().starts_with("station-")
                    && e.event_type.starts_with("Unlock")
                    && e.event_type != "UnlockRequested"
            })
            .count() as u64;
        if outcomes >= applied || started.elapsed() > scenario.deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let truth = ground_truth(&stations);
    check_unlocks_against(&events, &truth)
}
