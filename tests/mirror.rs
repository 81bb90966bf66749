//! The station mirror: folds telemetry into per-connector knowledge, answers the
//! dispatcher's "was this unlocked for this request?" question, gives a resent
//! StartTransaction the same transaction id through the store's idempotency, and a rebuild
//! from position 0 equals the live fold (I7).

mod support;

use evsource::core::{ExpectedVersion, GlobalPosition};
use evsource::mirror::{
    StationMirror, TelemetryEvent, UnlockEvidence, transaction_id_at, transaction_started_id,
};
use evsource::ocpp::messages::{ChargePointErrorCode, ChargePointStatus, RemoteStartStopStatus};
use evsource::store::{EventStore, MemoryStore};

fn status(
    connector: u32,
    status: ChargePointStatus,
    error_code: ChargePointErrorCode,
) -> TelemetryEvent {
    TelemetryEvent::StatusReported {
        connector,
        status,
        error_code,
        station_timestamp: Some("1970-01-01T00:00:01.000Z".into()),
    }
}

/// Records `events` of `station` in the store, folding each into `mirror` as it goes.
async fn record(
    store: &MemoryStore,
    mirror: &mut StationMirror,
    station: &str,
    events: &[TelemetryEvent],
    first_id: u128,
) {
    for (offset, event) in events.iter().enumerate() {
        let id = match event {
            TelemetryEvent::TransactionStarted {
                connector,
                id_tag,
                meter_start,
                station_timestamp,
                ..
            } => {
                transaction_started_id(station, *connector, id_tag, station_timestamp, *meter_start)
            }
            _ => evsource::core::EventId(first_id + offset as u128),
        };
        let result = store
            .append(
                &TelemetryEvent::stream(station).unwrap(),
                ExpectedVersion::Any,
                vec![event.to_data(id, 1_000 + offset as u64)],
            )
            .await
            .unwrap();
        if result.written {
            mirror.apply(station, event, result.first_position, 1_000 + offset as u64);
        }
    }
}

#[tokio::test]
async fn the_mirror_tracks_connectors_and_evidence_for_unlocks() {
    let store = MemoryStore::default();
    let mut mirror = StationMirror::new();
    let started = TelemetryEvent::TransactionStarted {
        connector: 1,
        id_tag: "req-1".into(),
        meter_start: 10,
        station_timestamp: "t1".into(),
        id_tag_accepted: true,
    };
    record(
        &store,
        &mut mirror,
        "CP1",
        &[
            TelemetryEvent::BootAccepted {
                vendor: "v".into(),
                model: "m".into(),
            },
            status(
                1,
                ChargePointStatus::Available,
                ChargePointErrorCode::NoError,
            ),
            status(
                2,
                ChargePointStatus::Faulted,
                ChargePointErrorCode::UnderVoltage,
            ),
            TelemetryEvent::RemoteStartAnswered {
                connector: 1,
                id_tag: "req-1".into(),
                status: RemoteStartStopStatus::Accepted,
            },
            status(
                1,
                ChargePointStatus::Preparing,
                ChargePointErrorCode::NoError,
            ),
        ],
        1,
    )
    .await;
    assert_eq!(
        mirror.unlock_evidence("CP1", 1, "req-1"),
        UnlockEvidence::ForThisRequest
    );
    assert_eq!(
        mirror.unlock_evidence("CP1", 1, "req-2"),
        UnlockEvidence::ForAnother {
            id_tag: "req-1".into()
        }
    );
    assert_eq!(
        mirror.unlock_evidence("CP1", 2, "req-2"),
        UnlockEvidence::Free
    );
    assert_eq!(
        mirror.unlock_evidence("CP1", 3, "req-2"),
        UnlockEvidence::Unknown
    );
    assert_eq!(
        mirror.station("CP1").unwrap().connectors[&2].error_code,
        ChargePointErrorCode::UnderVoltage
    );
    // The station resends StartTransaction after a reconnect: same event, same id.
    record(
        &store,
        &mut mirror,
        "CP1",
        &[started.clone(), HEARTBEAT, started.clone()],
        100,
    )
    .await;
    let view = mirror.station("CP1").unwrap();
    let transaction = view.connectors[&1]
        .transaction_id
        .expect("open transaction");
    assert_eq!(view.open_transactions.len(), 1);
    let stored = store.read_all(GlobalPosition(0), 100).await.unwrap();
    let starts: Vec<_> = stored
        .iter()
        .filter(|e| e.event_type == "TransactionStarted")
        .collect();
    assert_eq!(starts.len(), 1, "a resent StartTransaction is stored once");
    assert_eq!(transaction, transaction_id_at(starts[0].position));
    assert_eq!(mirror.staleness_millis("CP1", 5_000), Some(5_000 - 1_004));
    // Rebuild from position 0 equals the live fold.
    let mut rebuilt = StationMirror::new();
    for event in &stored {
        let station = event.stream.as_str().strip_prefix("telemetry-").unwrap();
        rebuilt.apply(
            station,
            &TelemetryEvent::decode(&event.event_type, &event.payload).unwrap(),
            event.position,
            event.metadata.recorded_at_millis,
        );
    }
    assert_eq!(rebuilt, mirror);
    // Available again: the connector is free.
    record(
        &store,
        &mut mirror,
        "CP1",
        &[status(
            1,
            ChargePointStatus::Available,
            ChargePointErrorCode::NoError,
        )],
        200,
    )
    .await;
    assert_eq!(
        mirror.unlock_evidence("CP1", 1, "req-1"),
        UnlockEvidence::Free
    );
}

const HEARTBEAT: TelemetryEvent = TelemetryEvent::HeartbeatReceived;

/// The business record backs the mirror up: an unlock recorded Accepted releases its
/// connector even when the station's answer (telemetry) was lost to a store outage, so a
/// later report of the connector back to Available can still end the session; a session
/// recorded stopped ends the release; a connector with a transaction is left alone.
#[test]
fn an_accepted_unlock_in_the_record_releases_the_connector_without_its_telemetry() {
    use evsource::domain::station::{SessionId, StationEvent};
    let mut mirror = StationMirror::default();
    let accepted = |connector, session: &str| StationEvent::UnlockAccepted {
        connector,
        session: SessionId::new(session).unwrap(),
    };
    mirror.apply_business("CP1", &accepted(1, "s-1"), 10);
    assert!(
        mirror.released_for("CP1", 1, "s-1"),
        "released by the record alone"
    );
    assert_eq!(
        mirror.unlock_evidence("CP1", 1, "s-1"),
        UnlockEvidence::ForThisRequest
    );
    mirror.apply_business(
        "CP1",
        &StationEvent::SessionStopped {
            connector: 1,
            session: SessionId::new("s-1").unwrap(),
        },
        11,
    );
    assert!(
        !mirror.released_for("CP1", 1, "s-1"),
        "the stop ends the release"
    );
    // A connector already released for another idTag keeps it.
    mirror.apply(
        "CP1",
        &TelemetryEvent::RemoteStartAnswered {
            connector: 2,
            id_tag: "s-2".into(),
            status: RemoteStartStopStatus::Accepted,
        },
        GlobalPosition(5),
        12,
    );
    mirror.apply_business("CP1", &accepted(2, "s-3"), 13);
    assert!(mirror.released_for("CP1", 2, "s-2"));
    assert!(!mirror.released_for("CP1", 2, "s-3"));
}
