//! A node that takes a station's dispatch lease acts only once it has read everything
//! stored before its lease (real tokio, 127.0.0.1, in-memory store).
//!
//! The interleaving: the node has read an unlock request but not yet its outcome, which
//! another node — the lease holder then — recorded as Rejected (its view lags: it was
//! paused, or its subscription is slow). Now the station connects to this node, which takes
//! the lease. Dispatching from the view it has would send the request again and unlock a
//! connector for a request already recorded Rejected (I5); the fencing token does not help,
//! since nothing stale is recorded — the harm is the send. The node must first read up to
//! its own lease event, which brings the outcome.
//!
//! The lag is made with a store wrapper whose subscription reads stop at a position until
//! the test lifts the cap; commands and appends go straight to the store.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use evsource::chargepoint::{ChargePoint, ChargePointConfig};
use evsource::core::{
    AppendCondition, AppendResult, CommandId, CurrentVersion, EventData, EventId, ExpectedVersion,
    GlobalPosition, Query, RecordedEvent, Snapshot, StreamId, StreamVersion,
};
use evsource::domain::station::{StationAnswer, StationCommand};
use evsource::environment::SystemEnvironment;
use evsource::handler::HandlerConfig;
use evsource::node::auth::{self, PasswordCost};
use evsource::node::driver::{SharedChargePoint, run_station};
use evsource::node::naive::{StationHandler, TelemetryPlacement};
use evsource::node::{CsmsNode, NodeConfig, lease};
use evsource::signal::Shutdown;
use evsource::store::{AppendError, EventStore, MemoryStore, ReadError, SnapshotError};
use support::stream;

const STATION: &str = "CP-9";
const PASSWORD: &str = "takeover-password-9";

/// A store whose position-ordered reads (the subscriptions') see only the events before
/// `visible_below`; every other call goes straight through.
#[derive(Clone, Debug)]
struct LaggingReads {
    inner: MemoryStore,
    visible_below: Arc<AtomicU64>,
}

impl LaggingReads {
    fn cap(&self) -> u64 {
        self.visible_below.load(Ordering::SeqCst)
    }
}

impl EventStore for LaggingReads {
    async fn append_if(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: Option<&AppendCondition>,
    ) -> Result<AppendResult, AppendError> {
        self.inner
            .append_if(stream, expected, events, condition)
            .await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.inner.read_stream(stream, from, max).await
    }

    async fn read_all(
        &self,
        from: GlobalPosition,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let cap = self.cap();
        let mut events = self.inner.read_all(from, max).await?;
        events.retain(|e| e.position.0 < cap);
        Ok(events)
    }

    async fn read_matching(
        &self,
        query: &Query,
        after: Option<GlobalPosition>,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.inner.read_matching(query, after, max).await
    }

    async fn find_event(&self, id: EventId) -> Result<Option<RecordedEvent>, ReadError> {
        self.inner.find_event(id).await
    }

    async fn current_version(&self, stream: &StreamId) -> Result<CurrentVersion, ReadError> {
        self.inner.current_version(stream).await
    }

    async fn event_count(&self) -> Result<u64, ReadError> {
        Ok(self.inner.event_count().await?.min(self.cap()))
    }

    async fn wait_for_event_count_above(&self, count: u64) -> Result<(), ReadError> {
        while self.event_count().await? <= count {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    async fn save_snapshot(
        &self,
        stream: &StreamId,
        snapshot: Snapshot,
    ) -> Result<(), SnapshotError> {
        self.inner.save_snapshot(stream, snapshot).await
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, ReadError> {
        self.inner.load_snapshot(stream).await
    }
}

fn config() -> NodeConfig {
    support::stations::node_config("node-a", "takeover-operator-token", 9)
}

/// The idTags the station has unlocked a connector for.
fn unlocked(station: &SharedChargePoint) -> Vec<String> {
    let station = station.lock().unwrap_or_else(|p| p.into_inner());
    station
        .actuations()
        .iter()
        .map(|a| a.id_tag.clone())
        .collect()
}

fn accepted(station: &SharedChargePoint) -> bool {
    station
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .is_accepted()
}

/// Polls `done` every 10 ms for up to `within`; true once it holds.
async fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = tokio::time::Instant::now();
    while started.elapsed() < within {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

/// The request recorded Rejected under the previous holder's lease is not sent again by
/// the node that takes the lease with a view from before that outcome; a request still
/// undecided is (so the station does hear this node: the silence is not vacuous).
#[tokio::test]
async fn a_new_lease_holder_does_not_dispatch_from_a_view_older_than_its_lease() {
    let store = MemoryStore::default();
    let hash = auth::hash_password(PASSWORD, [9; 16], PasswordCost::Minimal);
    auth::register(&store, STATION, &hash, 0).await.unwrap();
    let handler = StationHandler::new(
        store.clone(),
        HandlerConfig::default(),
        TelemetryPlacement::OwnStream,
        evsource::node::StationBuild::Current,
    );
    let mut env = SystemEnvironment::new(9);
    let station_stream = stream(&format!("station-{STATION}"));
    let command = |session: &str, connector| StationCommand::RequestUnlock {
        connector,
        session: session.to_owned(),
    };
    handler
        .handle(
            &mut env,
            &station_stream,
            CommandId(1),
            &command("stale", 1),
        )
        .await
        .expect("requested");
    // The node will see everything so far, and nothing after: node B's lease and the
    // outcome B recorded under it.
    let cap = store.event_count().await.unwrap();
    let lagging = LaggingReads {
        inner: store.clone(),
        visible_below: Arc::new(AtomicU64::new(cap)),
    };
    let lease_stream = lease::stream(STATION).unwrap();
    let b = store
        .append(
            &lease_stream,
            ExpectedVersion::Any,
            vec![lease::taken(STATION, "node-b", 1, 0)],
        )
        .await
        .expect("B takes the lease")
        .first_position;
    handler
        .handle_if(
            &mut env,
            &station_stream,
            CommandId(2),
            &StationCommand::RecordAnswer {
                session: "stale".into(),
                answer: StationAnswer::Rejected,
            },
            Some(&lease::fence(STATION, b)),
        )
        .await
        .expect("B records Rejected");

    let node = CsmsNode::start(lagging.clone(), config()).await.unwrap();
    let station: SharedChargePoint = Arc::new(Mutex::new(ChargePoint::new(
        ChargePointConfig::new(STATION, 2),
        support::stations::now_millis(),
    )));
    let shutdown = Shutdown::new();
    let driver = tokio::spawn(run_station(
        station.clone(),
        vec![node.addr],
        PASSWORD.into(),
        Duration::from_millis(100),
        shutdown.clone(),
    ));
    assert!(
        eventually(Duration::from_secs(10), || accepted(&station)).await,
        "the station's boot is accepted by the node"
    );
    let holders: Vec<String> = store
        .read_stream(&lease_stream, StreamVersion(0), 10)
        .await
        .unwrap()
        .iter()
        .filter_map(lease::read)
        .map(|l| l.node)
        .collect();
    assert_eq!(
        holders,
        ["node-b", "node-a"],
        "the node took the lease after B"
    );
    // The node has the connection and the lease, but has not read past its old view.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(unlocked(&station), Vec::<String>::new());

    // The view catches up: the outcome, then the node's own lease. A new request goes out.
    lagging.visible_below.store(u64::MAX, Ordering::SeqCst);
    handler
        .handle(
            &mut env,
            &station_stream,
            CommandId(3),
            &command("fresh", 2),
        )
        .await
        .expect("requested");
    assert!(
        eventually(Duration::from_secs(10), || !unlocked(&station).is_empty()).await,
        "the undecided request reaches the station"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(unlocked(&station), ["fresh"]);

    shutdown.trigger();
    node.shutdown().await;
    let _ = driver.await;
}
