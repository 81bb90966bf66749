//! A rolling upgrade on one station stream: handlers of the current build (snapshot
//! schema one) and of the next (`StationNext`: snapshot schema two, events with a version
//! field) take turns, each snapshotting after every command. Each reads the other's events
//! as its own and ignores the other's snapshots (it rehydrates from events instead), so
//! neither acts on state it misread: the busy connector stays busy whichever build decides.

use evsource::core::{CommandId, Limits, StreamId};
use evsource::domain::station::{
    Station, StationAnswer, StationCommand, StationNext, StationRejection,
};
use evsource::environment::FixedEnvironment;
use evsource::handler::{CommandHandler, HandleError, HandlerConfig};
use evsource::store::{EventStore, MemoryStore};

fn config() -> HandlerConfig {
    HandlerConfig {
        snapshot_every_events: 1,
        // No cached states: every command loads from the store, snapshot first.
        state_cache_streams: 0,
        ..HandlerConfig::default()
    }
}

#[tokio::test]
async fn builds_side_by_side_read_each_others_events_and_ignore_each_others_snapshots() {
    let store = MemoryStore::new(Limits::default());
    let old: CommandHandler<_, Station> = CommandHandler::new(store.clone(), config());
    let new: CommandHandler<_, StationNext> = CommandHandler::new(store.clone(), config());
    let stream = StreamId::new("station-CP1").unwrap();
    let mut env = FixedEnvironment::new(0, 1);
    let unlock = |session: &str| StationCommand::RequestUnlock {
        connector: 1,
        session: session.into(),
    };
    // The next build requests and snapshots (schema 2)…
    new.handle(&mut env, &stream, CommandId(1), &unlock("s1"))
        .await
        .expect("applied");
    let snapshot = store.load_snapshot(&stream).await.unwrap().expect("saved");
    assert_eq!(snapshot.schema_version, 2);
    // …the current build reads the versioned event, ignores the schema-2 snapshot, and
    // still sees the connector busy.
    let loaded = old.load(&stream).await.expect("loads");
    assert!(
        !loaded.from_snapshot,
        "a schema-2 snapshot is not misread by schema 1"
    );
    assert!(matches!(
        old.handle(&mut env, &stream, CommandId(2), &unlock("s2"))
            .await,
        Err(HandleError::Rejected(
            StationRejection::ConnectorBusy { .. }
        ))
    ));
    // The current build records the answer and snapshots (schema 1)…
    old.handle(
        &mut env,
        &stream,
        CommandId(3),
        &StationCommand::RecordAnswer {
            session: "s1".into(),
            answer: StationAnswer::Accepted,
        },
    )
    .await
    .expect("applied");
    assert_eq!(
        store
            .load_snapshot(&stream)
            .await
            .unwrap()
            .unwrap()
            .schema_version,
        1
    );
    // …and the next build ignores that one in turn, and agrees.
    let loaded = new.load(&stream).await.expect("loads");
    assert!(
        !loaded.from_snapshot,
        "a schema-1 snapshot is not misread by schema 2"
    );
    assert_eq!(loaded.state, old.load(&stream).await.unwrap().state);
    assert!(matches!(
        new.handle(&mut env, &stream, CommandId(4), &unlock("s3"))
            .await,
        Err(HandleError::Rejected(
            StationRejection::ConnectorBusy { .. }
        ))
    ));
}
