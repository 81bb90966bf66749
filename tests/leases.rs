//! What the dispatch lease's fencing token buys, on the interleaving it exists for: node A
//! held a station's lease and decided an outcome from what it saw, but before it recorded
//! it the station reconnected to node B, which took the lease, dispatched the request again
//! and heard the station accept. If A's stale decision reaches the store first, the
//! station aggregate (one outcome per request) then refuses B's true one — unless A's
//! append is fenced by its token, in which case A's is refused and B's recorded.
//!
//! The simulator reaches this interleaving only through its targeted F1 stall (A frozen
//! between deciding and recording until B holds the lease; ARCHITECTURE.md, "Several
//! nodes, one store"): A must record after B took the lease and before B does. Here it is
//! forced, with the very functions the node uses: `lease::taken`, `lease::fence` and the
//! station handler's conditional append.

mod support;

use evsource::core::{AppendCondition, CommandId, ExpectedVersion, StreamVersion};
use evsource::decider::Aggregate;
use evsource::domain::station::{Station, StationAnswer, StationCommand, StationEvent};
use evsource::environment::SystemEnvironment;
use evsource::handler::{HandleError, HandlerConfig};
use evsource::node::lease;
use evsource::node::naive::{StationHandler, TelemetryPlacement};
use evsource::store::{AppendError, EventStore, MemoryStore};
use support::stream;

/// The outcome events of station CP1's stream.
async fn outcomes(store: &MemoryStore) -> Vec<StationEvent> {
    store
        .read_stream(&stream("station-CP1"), StreamVersion(0), 100)
        .await
        .expect("read")
        .iter()
        .map(|e| Station::decode_event(&e.event_type, &e.payload).expect("decodes"))
        .filter(|e| !matches!(e, StationEvent::UnlockRequested { .. }))
        .collect()
}

/// Plays the interleaving; `fenced` says whether the nodes append with their tokens.
/// Returns the outcomes recorded and what A's append was told.
async fn stale_holder_records_first(fenced: bool) -> (Vec<StationEvent>, Result<(), String>) {
    let store = MemoryStore::default();
    let handler = StationHandler::new(
        store.clone(),
        HandlerConfig::default(),
        TelemetryPlacement::OwnStream,
        evsource::node::StationBuild::Current,
    );
    let mut env = SystemEnvironment::new(7);
    let station = stream("station-CP1");
    let session = "s1".to_owned();
    handler
        .handle(
            &mut env,
            &station,
            CommandId(1),
            &StationCommand::RequestUnlock {
                connector: 1,
                session: session.clone(),
            },
        )
        .await
        .expect("requested");
    let leases = lease::stream("CP1").expect("lease stream");
    let take = |node: &str| lease::taken("CP1", node, 1, 0);
    let a = store
        .append(&leases, ExpectedVersion::Any, vec![take("csms-a")])
        .await
        .expect("A takes the lease")
        .first_position;
    // A saw the connector out of service and decided Rejected. Before A records it, the
    // station reconnects to B, which takes the lease; B's RemoteStart is accepted.
    let b = store
        .append(&leases, ExpectedVersion::Any, vec![take("csms-b")])
        .await
        .expect("B takes the lease")
        .first_position;
    let fence = |token| fenced.then(|| lease::fence("CP1", token));
    let record = |answer, token, fence: Option<AppendCondition>| {
        let (handler, station, session) = (handler.clone(), station.clone(), session.clone());
        let mut env = SystemEnvironment::new(token);
        async move {
            handler
                .handle_if(
                    &mut env,
                    &station,
                    CommandId(2),
                    &StationCommand::RecordAnswer { session, answer },
                    fence.as_ref(),
                )
                .await
        }
    };
    let stale = record(StationAnswer::Rejected, 1, fence(a))
        .await
        .map(drop)
        .map_err(|error| error.to_string());
    let fresh = record(StationAnswer::Accepted, 2, fence(b)).await;
    if fenced {
        fresh.expect("B, the holder, records its outcome");
    } else {
        // One outcome per request: B's true answer comes too late.
        assert!(
            matches!(fresh, Err(HandleError::Rejected(_)) | Ok(_)),
            "{fresh:?}"
        );
    }
    (outcomes(&store).await, stale)
}

/// Fenced, the stale holder is refused by the store (ConditionFailed at B's lease event)
/// and the true outcome is the one recorded.
#[tokio::test]
async fn a_fenced_stale_holder_cannot_record() {
    let (recorded, stale) = stale_holder_records_first(true).await;
    let refusal = stale.expect_err("A no longer holds the lease");
    assert!(
        refusal.contains(
            &AppendError::ConditionFailed {
                position: evsource::core::GlobalPosition(2)
            }
            .to_string()
        ),
        "{refusal}"
    );
    assert!(
        matches!(recorded.as_slice(), [StationEvent::UnlockAccepted { .. }]),
        "{recorded:?}"
    );
}

/// Unfenced (the naive design `naive-no-fencing`), the stale decision is recorded and the
/// station's real answer is lost: the record says Rejected for a connector that unlocked —
/// the disagreement the oracle reports as I5.
#[tokio::test]
async fn an_unfenced_stale_holder_records_a_wrong_outcome() {
    let (recorded, stale) = stale_holder_records_first(false).await;
    stale.expect("nothing stops A");
    assert!(
        matches!(recorded.as_slice(), [StationEvent::UnlockRejected { .. }]),
        "{recorded:?}"
    );
}
