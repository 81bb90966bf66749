//! The event store contract (DESIGN §2.1), one suite run unchanged against every backend:
//! in-memory, the durable log on a real directory, the durable log on the simulated disk,
//! the durable log served over TCP by the remote protocol (what the simulator's CSMS nodes
//! share), and PostgreSQL (a fresh schema per test on the server `EVSOURCE_POSTGRES_URL` names). Each check names the contract point it proves.

mod support;

use std::ops::ControlFlow;
use std::sync::Arc;

use evsource::core::{
    AppendCondition, CommandId, CurrentVersion, EventId, EventView, ExpectedVersion,
    GlobalPosition, LimitViolation, Limits, Metadata, Query, QueryItem, Snapshot, StreamId,
    StreamIdError, StreamVersion,
};
use evsource::storage::SimDisk;
use evsource::store::subscription::SubscriptionError;
use evsource::store::{
    AppendError, CatchUpSubscription, EventStore, LogConfig, LogStore, MemoryStore, ReadError,
    SnapshotError,
};
use support::{TempDir, event, events, stream, tagged};

/// Small segments so that the suite also crosses segment boundaries.
fn small_log_config() -> LogConfig {
    let limits = Limits {
        append_bytes_max: 16 * 1024,
        events_per_append_max: 64,
        payload_bytes_max: 4 * 1024,
        snapshot_bytes_max: 16 * 1024,
        ..Limits::default()
    };
    LogConfig {
        limits,
        segment_bytes: 64 * 1024,
        group_commit_bytes_max: 256 * 1024,
    }
}

/// Appends `count` one-event appends to `name` with ids from `first_id`.
async fn fill<S: EventStore>(store: &S, name: &str, first_id: u128, count: u128) {
    for id in first_id..first_id + count {
        store
            .append(&stream(name), ExpectedVersion::Any, vec![event(id)])
            .await
            .expect("append");
    }
}

async fn versions_are_contiguous_and_positions_gapless<S: EventStore>(store: S) {
    let a = stream("a");
    let b = stream("b");
    let first = store
        .append(&a, ExpectedVersion::NoStream, events(1..4))
        .await
        .unwrap();
    assert_eq!(first.first_version, StreamVersion(0));
    assert_eq!(first.last_version, StreamVersion(2));
    assert_eq!(first.first_position, GlobalPosition(0));
    assert!(first.written);
    let second = store
        .append(&b, ExpectedVersion::NoStream, events(4..6))
        .await
        .unwrap();
    assert_eq!(second.first_position, GlobalPosition(3));
    let third = store
        .append(&a, ExpectedVersion::Exact(StreamVersion(2)), events(6..7))
        .await
        .unwrap();
    assert_eq!(third.first_version, StreamVersion(3));
    assert_eq!(third.first_position, GlobalPosition(5));

    let all = store.read_all(GlobalPosition(0), 100).await.unwrap();
    let positions: Vec<u64> = all.iter().map(|e| e.position.0).collect();
    assert_eq!(positions, vec![0, 1, 2, 3, 4, 5]);
    let a_events = store.read_stream(&a, StreamVersion(0), 100).await.unwrap();
    let versions: Vec<u64> = a_events.iter().map(|e| e.version.0).collect();
    assert_eq!(versions, vec![0, 1, 2, 3]);
    let ids: Vec<u128> = a_events.iter().map(|e| e.id.0).collect();
    assert_eq!(ids, vec![1, 2, 3, 6]);
    assert_eq!(a_events[3], {
        let mut expected = all[5].clone();
        expected.stream = a.clone();
        expected
    });
    assert_eq!(a_events[0].payload, b"payload-1");
    assert_eq!(a_events[0].metadata.recorded_at_millis, 1_001);
    assert_eq!(store.event_count().await.unwrap(), 6);
}

/// Every read — by stream, of all, by query, by id — returns each event field for field as
/// it was appended: type, tags (in order, a repeat kept), metadata and payload, with its
/// stream, version and position.
async fn every_read_returns_events_as_appended<S: EventStore>(store: S) {
    let (s, t) = (stream("fields-s"), stream("fields-t"));
    let mut appended = Vec::new();
    for (round, target) in [&s, &t, &s].into_iter().enumerate() {
        let round = round as u128;
        let batch: Vec<_> = (0..3u128)
            .map(|offset| {
                let id = 10 * round + offset + 1;
                let mut event = tagged(
                    id,
                    if offset == 1 { "Other" } else { "Fielded" },
                    &["all", &format!("round:{round}"), "all"][..(offset as usize + 1)],
                );
                event.metadata.command_id = Some(CommandId(id + 100));
                event.metadata.causation_id = (offset == 2).then_some(EventId(id - 1));
                event.metadata.correlation_id = (offset != 1).then_some(CommandId(7));
                event.metadata.recorded_at_millis = 5_000 + id as u64;
                event.payload = format!("payload of {id}").into_bytes();
                event
            })
            .collect();
        let result = store
            .append(target, ExpectedVersion::Any, batch.clone())
            .await
            .unwrap();
        for (offset, data) in batch.into_iter().enumerate() {
            appended.push((
                target.clone(),
                StreamVersion(result.first_version.0 + offset as u64),
                GlobalPosition(result.first_position.0 + offset as u64),
                data,
            ));
        }
    }
    let all = store.read_all(GlobalPosition(0), 100).await.unwrap();
    assert_eq!(all.len(), appended.len());
    for (read, (stream, version, position, data)) in all.iter().zip(&appended) {
        assert_eq!(
            (&read.stream, read.version, read.position),
            (stream, *version, *position)
        );
        assert_eq!(
            (read.id, &read.event_type, &read.tags),
            (data.id, &data.event_type, &data.tags)
        );
        assert_eq!(
            (read.metadata, &read.payload),
            (data.metadata, &data.payload)
        );
        assert_eq!(
            store.find_event(read.id).await.unwrap().as_ref(),
            Some(read)
        );
    }
    let mut by_stream = store.read_stream(&s, StreamVersion(0), 100).await.unwrap();
    by_stream.extend(store.read_stream(&t, StreamVersion(0), 100).await.unwrap());
    by_stream.sort_by_key(|e| e.position);
    assert_eq!(by_stream, all);
    let tagged_all = store
        .read_matching(&Query::tagged(["all"]), None, 100)
        .await
        .unwrap();
    assert_eq!(tagged_all, all);
    let others = store
        .read_matching(
            &Query {
                items: vec![QueryItem {
                    event_types: vec!["Other".into()],
                    tags: vec!["round:1".into()],
                }],
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert_eq!(others, vec![all[4].clone()]);
}

async fn expected_version_mismatches_are_typed_and_store_nothing<S: EventStore>(store: S) {
    let s = stream("s");
    let missing = stream("missing");
    store
        .append(&s, ExpectedVersion::NoStream, events(1..3))
        .await
        .unwrap();
    let cases = [
        (
            &s,
            ExpectedVersion::NoStream,
            CurrentVersion::Current(StreamVersion(1)),
        ),
        (
            &s,
            ExpectedVersion::Exact(StreamVersion(0)),
            CurrentVersion::Current(StreamVersion(1)),
        ),
        (
            &s,
            ExpectedVersion::Exact(StreamVersion(2)),
            CurrentVersion::Current(StreamVersion(1)),
        ),
        (
            &missing,
            ExpectedVersion::StreamExists,
            CurrentVersion::NoStream,
        ),
        (
            &missing,
            ExpectedVersion::Exact(StreamVersion(0)),
            CurrentVersion::NoStream,
        ),
    ];
    for (target, expected, actual) in cases {
        let error = store
            .append(target, expected, events(10..12))
            .await
            .unwrap_err();
        assert_eq!(
            error,
            AppendError::WrongExpectedVersion {
                stream: target.clone(),
                expected,
                actual
            }
        );
    }
    assert_eq!(
        store.event_count().await.unwrap(),
        2,
        "failed appends stored nothing"
    );
    store
        .append(&s, ExpectedVersion::StreamExists, events(10..11))
        .await
        .unwrap();
    store
        .append(&missing, ExpectedVersion::Any, events(11..12))
        .await
        .unwrap();
    assert_eq!(
        store.current_version(&s).await.unwrap(),
        CurrentVersion::Current(StreamVersion(2))
    );
    assert_eq!(
        store.current_version(&stream("never")).await.unwrap(),
        CurrentVersion::NoStream
    );
}

async fn idempotent_retry_succeeds_without_duplicates<S: EventStore>(store: S) {
    let s = stream("s");
    let first = store
        .append(&s, ExpectedVersion::NoStream, events(1..4))
        .await
        .unwrap();
    store
        .append(&s, ExpectedVersion::Exact(StreamVersion(2)), events(4..5))
        .await
        .unwrap();
    // The same ids at the same place, with the same expectation: success, nothing new.
    let retry = store
        .append(&s, ExpectedVersion::NoStream, events(1..4))
        .await
        .unwrap();
    assert_eq!(retry.first_position, first.first_position);
    assert_eq!(retry.last_version, StreamVersion(2));
    assert!(!retry.written);
    let retry_any = store
        .append(&s, ExpectedVersion::Any, events(4..5))
        .await
        .unwrap();
    assert_eq!(retry_any.first_version, StreamVersion(3));
    assert!(!retry_any.written);
    assert_eq!(store.event_count().await.unwrap(), 4);
}

async fn partial_overlaps_and_reused_ids_are_refused<S: EventStore>(store: S) {
    let s = stream("s");
    store
        .append(&s, ExpectedVersion::NoStream, events(1..4))
        .await
        .unwrap();
    // Overlaps the end of the stored append and adds a new event.
    let overlap = store
        .append(&s, ExpectedVersion::Any, events(3..5))
        .await
        .unwrap_err();
    assert!(matches!(
        overlap,
        AppendError::DuplicateEventId {
            event_id: EventId(3),
            ..
        }
    ));
    // A stored id in another stream.
    let elsewhere = store
        .append(&stream("t"), ExpectedVersion::Any, events(2..3))
        .await
        .unwrap_err();
    assert!(matches!(
        elsewhere,
        AppendError::DuplicateEventId {
            event_id: EventId(2),
            ..
        }
    ));
    // The right ids but at a place the expectation does not admit.
    let misplaced = store
        .append(&s, ExpectedVersion::Exact(StreamVersion(0)), events(1..4))
        .await
        .unwrap_err();
    assert!(matches!(misplaced, AppendError::DuplicateEventId { .. }));
    // The same id twice in one append.
    let twice = store
        .append(&stream("u"), ExpectedVersion::Any, vec![event(9), event(9)])
        .await
        .unwrap_err();
    assert!(matches!(
        twice,
        AppendError::DuplicateEventId {
            event_id: EventId(9),
            existing: None
        }
    ));
    assert_eq!(
        store.event_count().await.unwrap(),
        3,
        "refused appends stored nothing"
    );
}

async fn limits_are_enforced_before_anything_is_written<S: EventStore>(store: S, limits: Limits) {
    let s = stream("s");
    let mut oversized = event(1);
    oversized.payload = vec![0; limits.payload_bytes_max + 1];
    let error = store
        .append(&s, ExpectedVersion::Any, vec![event(2), oversized])
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        AppendError::LimitExceeded(LimitViolation::PayloadBytes { index: 1, .. })
    ));
    let too_many = events(10..10 + limits.events_per_append_max as u128 + 1);
    assert!(matches!(
        store.append(&s, ExpectedVersion::Any, too_many).await,
        Err(AppendError::LimitExceeded(
            LimitViolation::EventsPerAppend { .. }
        ))
    ));
    assert!(matches!(
        store.append(&s, ExpectedVersion::Any, Vec::new()).await,
        Err(AppendError::LimitExceeded(LimitViolation::EmptyAppend))
    ));
    let mut many_tags = event(3);
    many_tags.tags = (0..=limits.tags_per_event_max)
        .map(|i| format!("t{i}"))
        .collect();
    assert!(matches!(
        store
            .append(&s, ExpectedVersion::Any, vec![many_tags])
            .await,
        Err(AppendError::LimitExceeded(
            LimitViolation::TagsPerEvent { .. }
        ))
    ));
    // Each event within its own limit, the append as a whole over the byte limit.
    let count = (limits.append_bytes_max / limits.payload_bytes_max + 1) as u128;
    let mut big_batch = events(100..100 + count);
    for e in &mut big_batch {
        e.payload = vec![1; limits.payload_bytes_max];
    }
    assert!(matches!(
        store.append(&s, ExpectedVersion::Any, big_batch).await,
        Err(AppendError::LimitExceeded(
            LimitViolation::AppendBytes { .. }
        ))
    ));
    assert_eq!(
        StreamId::new(&"x".repeat(limits.stream_id_bytes_max + 1)),
        Err(StreamIdError::TooLong {
            length: limits.stream_id_bytes_max + 1,
            limit: limits.stream_id_bytes_max
        })
    );
    assert_eq!(StreamId::new(""), Err(StreamIdError::Empty));
    assert!(matches!(
        StreamId::new("a b"),
        Err(StreamIdError::InvalidByte {
            index: 1,
            byte: b' '
        })
    ));
    assert_eq!(store.event_count().await.unwrap(), 0, "nothing was written");
    assert_eq!(
        store.current_version(&s).await.unwrap(),
        CurrentVersion::NoStream
    );
}

async fn reads_page_and_unknown_streams_are_errors<S: EventStore>(store: S) {
    fill(&store, "s", 1, 10).await;
    fill(&store, "t", 100, 5).await;
    let page = store
        .read_stream(&stream("s"), StreamVersion(4), 3)
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|e| e.version.0).collect::<Vec<_>>(),
        vec![4, 5, 6]
    );
    let tail = store
        .read_stream(&stream("s"), StreamVersion(8), 100)
        .await
        .unwrap();
    assert_eq!(tail.len(), 2);
    let beyond = store
        .read_stream(&stream("s"), StreamVersion(50), 10)
        .await
        .unwrap();
    assert!(beyond.is_empty());
    assert_eq!(
        store
            .read_stream(&stream("nope"), StreamVersion(0), 10)
            .await,
        Err(ReadError::StreamNotFound(stream("nope")))
    );
    let all = store.read_all(GlobalPosition(12), 100).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.position.0).collect::<Vec<_>>(),
        vec![12, 13, 14]
    );
    assert!(
        store
            .read_all(GlobalPosition(15), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let found = store
        .find_event(EventId(102))
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(
        (found.stream.as_str(), found.version, found.position),
        ("t", StreamVersion(2), GlobalPosition(12))
    );
    assert_eq!(store.find_event(EventId(999)).await.unwrap(), None);
}

/// An owned copy of what a visit sees, to compare with the owned reads.
fn visited(
    view: EventView<'_>,
) -> (
    StreamVersion,
    GlobalPosition,
    EventId,
    String,
    Vec<u8>,
    Metadata,
) {
    (
        view.version,
        view.position,
        view.id,
        view.event_type.to_owned(),
        view.payload.to_vec(),
        view.metadata(),
    )
}

/// `visit_stream` (the replay path) sees exactly what `read_stream` returns: every event of
/// the stream from the given version, in order, with its metadata — across appends of
/// many events, appends to another stream in between, segment boundaries and the default
/// implementation's pages; it stops when the visitor breaks, and an unknown stream is an
/// error.
async fn visits_see_what_reads_return<S: EventStore>(store: S) {
    let v = stream("v");
    let mut next_id = 1u128;
    let mut appended = 0u64;
    for round in 0..120u128 {
        let count = 1 + round % 20;
        let mut batch = events(next_id..next_id + count);
        for (offset, event) in batch.iter_mut().enumerate() {
            event.metadata.command_id = Some(CommandId(round + 1));
            event.metadata.correlation_id = (offset % 2 == 0).then_some(CommandId(7));
            event.metadata.causation_id = (offset % 3 == 0).then_some(EventId(round));
        }
        next_id += count;
        appended += count as u64;
        store.append(&v, ExpectedVersion::Any, batch).await.unwrap();
        store
            .append(
                &stream("w"),
                ExpectedVersion::Any,
                vec![event(1_000_000 + round)],
            )
            .await
            .unwrap();
    }
    assert!(appended > 1024, "more than one page of the default visit");
    let mut owned = Vec::new();
    loop {
        let from = StreamVersion(owned.len() as u64);
        let page = store.read_stream(&v, from, 100).await.unwrap();
        if page.is_empty() {
            break;
        }
        owned.extend(page.iter().map(|event| visited(event.view())));
    }
    assert_eq!(owned.len() as u64, appended);
    for from in [0, 1, 517, appended - 1, appended, appended + 5] {
        let mut seen = Vec::new();
        let count = store
            .visit_stream(&v, StreamVersion(from), |view| {
                seen.push(visited(view));
                ControlFlow::Continue(())
            })
            .await
            .unwrap();
        let expected = &owned[(from.min(appended) as usize)..];
        assert_eq!(count, expected.len() as u64, "visited from {from}");
        assert!(
            seen == expected,
            "the visit from {from} differs from the reads"
        );
    }
    let mut seen = 0;
    let count = store
        .visit_stream(&v, StreamVersion(3), |view| {
            assert_eq!(view.version, StreamVersion(3 + seen));
            seen += 1;
            if seen == 10 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await
        .unwrap();
    assert_eq!((count, seen), (10, 10), "a break stops the visit at once");
    assert_eq!(
        store
            .visit_stream(
                &stream("nope"),
                StreamVersion(0),
                |_| ControlFlow::Continue(())
            )
            .await,
        Err(ReadError::StreamNotFound(stream("nope")))
    );
}

async fn catch_up_subscription_delivers_history_then_live<S: EventStore>(store: S, limits: Limits) {
    fill(&store, "s", 1, 7).await;
    let mut subscription = CatchUpSubscription::new(store.clone(), None, 3, &limits).unwrap();
    for expected in 0..7 {
        assert_eq!(
            subscription.next().await.unwrap().position,
            GlobalPosition(expected)
        );
    }
    assert_eq!(subscription.try_next().await.unwrap(), None, "caught up");
    let writer = store.clone();
    let live = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        fill(&writer, "t", 50, 2).await;
    });
    assert_eq!(subscription.next().await.unwrap().id, EventId(50));
    assert_eq!(subscription.next().await.unwrap().id, EventId(51));
    live.await.unwrap();
    // Resuming after a checkpoint skips exactly what was processed.
    let mut resumed =
        CatchUpSubscription::new(store.clone(), Some(GlobalPosition(5)), 2, &limits).unwrap();
    let ids: Vec<u128> = [
        resumed.next().await.unwrap(),
        resumed.next().await.unwrap(),
        resumed.next().await.unwrap(),
    ]
    .iter()
    .map(|e| e.id.0)
    .collect();
    assert_eq!(ids, vec![7, 50, 51]);
    assert_eq!(
        CatchUpSubscription::new(
            store.clone(),
            None,
            limits.subscription_buffer_events_max + 1,
            &limits
        )
        .unwrap_err(),
        SubscriptionError::BufferSize {
            requested: limits.subscription_buffer_events_max + 1,
            limit: limits.subscription_buffer_events_max
        }
    );
}

async fn snapshots_round_trip_and_never_regress<S: EventStore>(store: S) {
    let s = stream("s");
    fill(&store, "s", 1, 5).await;
    assert_eq!(store.load_snapshot(&s).await.unwrap(), None);
    let at_three = Snapshot {
        version: StreamVersion(3),
        schema_version: 7,
        state: b"three".to_vec(),
    };
    store.save_snapshot(&s, at_three.clone()).await.unwrap();
    assert_eq!(
        store.load_snapshot(&s).await.unwrap(),
        Some(at_three.clone())
    );
    let older = Snapshot {
        version: StreamVersion(1),
        schema_version: 7,
        state: b"one".to_vec(),
    };
    store.save_snapshot(&s, older).await.unwrap();
    assert_eq!(
        store.load_snapshot(&s).await.unwrap(),
        Some(at_three),
        "an older snapshot never replaces a newer one"
    );
    let beyond = Snapshot {
        version: StreamVersion(5),
        schema_version: 7,
        state: Vec::new(),
    };
    assert_eq!(
        store.save_snapshot(&s, beyond).await,
        Err(SnapshotError::VersionNotInStream {
            stream: s.clone(),
            version: StreamVersion(5),
            actual: CurrentVersion::Current(StreamVersion(4))
        })
    );
    let unknown = Snapshot {
        version: StreamVersion(0),
        schema_version: 1,
        state: Vec::new(),
    };
    assert!(matches!(
        store.save_snapshot(&stream("none"), unknown).await,
        Err(SnapshotError::VersionNotInStream {
            actual: CurrentVersion::NoStream,
            ..
        })
    ));
    let newest = Snapshot {
        version: StreamVersion(4),
        schema_version: 8,
        state: b"four".to_vec(),
    };
    store.save_snapshot(&s, newest.clone()).await.unwrap();
    assert_eq!(store.load_snapshot(&s).await.unwrap(), Some(newest));
    assert_eq!(
        store.event_count().await.unwrap(),
        5,
        "snapshots take no positions"
    );
}

async fn conditional_append_fails_on_a_matching_later_event<S: EventStore>(store: S) {
    let seat_a1 = Query::tagged(["seat:1:A1"]);
    store
        .append(
            &stream("show-1"),
            ExpectedVersion::Any,
            vec![tagged(1, "ShowScheduled", &["show:1"])],
        )
        .await
        .unwrap();
    // Nothing matches yet: the condition holds.
    let condition = AppendCondition {
        query: seat_a1.clone(),
        after: None,
    };
    store
        .append_if(
            &stream("r-1"),
            ExpectedVersion::NoStream,
            vec![tagged(2, "SeatsReserved", &["show:1", "seat:1:A1"])],
            Some(&condition),
        )
        .await
        .unwrap();
    // A second writer that read before position 1 must fail.
    let stale = AppendCondition {
        query: seat_a1.clone(),
        after: Some(GlobalPosition(0)),
    };
    assert_eq!(
        store
            .append_if(
                &stream("r-2"),
                ExpectedVersion::NoStream,
                vec![tagged(3, "SeatsReserved", &["show:1", "seat:1:A1"])],
                Some(&stale)
            )
            .await,
        Err(AppendError::ConditionFailed {
            position: GlobalPosition(1)
        })
    );
    // One that read up to position 1 succeeds; an unrelated seat never conflicts.
    let fresh = AppendCondition {
        query: seat_a1.clone(),
        after: Some(GlobalPosition(1)),
    };
    store
        .append_if(
            &stream("r-3"),
            ExpectedVersion::NoStream,
            vec![tagged(4, "SeatsReleased", &["show:1", "seat:1:A1"])],
            Some(&fresh),
        )
        .await
        .unwrap();
    let other_seat = AppendCondition {
        query: Query::tagged(["seat:1:B7"]),
        after: None,
    };
    store
        .append_if(
            &stream("r-4"),
            ExpectedVersion::NoStream,
            vec![tagged(5, "SeatsReserved", &["show:1", "seat:1:B7"])],
            Some(&other_seat),
        )
        .await
        .unwrap();
    // Type-only and type-and-tag queries.
    let by_type = Query {
        items: vec![QueryItem {
            event_types: vec!["SeatsReleased".into()],
            tags: vec![],
        }],
    };
    assert_eq!(
        store
            .append_if(
                &stream("r-5"),
                ExpectedVersion::Any,
                vec![tagged(6, "X", &[])],
                Some(&AppendCondition {
                    query: by_type.clone(),
                    after: Some(GlobalPosition(1))
                })
            )
            .await,
        Err(AppendError::ConditionFailed {
            position: GlobalPosition(2)
        })
    );
    let matching = store.read_matching(&seat_a1, None, 10).await.unwrap();
    assert_eq!(
        matching.iter().map(|e| e.position.0).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let after_one = store
        .read_matching(&seat_a1, Some(GlobalPosition(1)), 10)
        .await
        .unwrap();
    assert_eq!(after_one.len(), 1);
    let typed_and_tagged = Query {
        items: vec![QueryItem {
            event_types: vec!["SeatsReserved".into()],
            tags: vec!["show:1".into()],
        }],
    };
    let reserved = store
        .read_matching(&typed_and_tagged, None, 10)
        .await
        .unwrap();
    assert_eq!(
        reserved.iter().map(|e| e.id.0).collect::<Vec<_>>(),
        vec![2, 5]
    );
    assert_eq!(store.event_count().await.unwrap(), 4);
}

macro_rules! conformance {
    ($backend:ident, $limits:expr, $make:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn versions_are_contiguous_and_positions_gapless() {
                let (_guard, store) = $make;
                super::versions_are_contiguous_and_positions_gapless(store).await;
            }

            #[tokio::test]
            async fn every_read_returns_events_as_appended() {
                let (_guard, store) = $make;
                super::every_read_returns_events_as_appended(store).await;
            }

            #[tokio::test]
            async fn expected_version_mismatches_are_typed_and_store_nothing() {
                let (_guard, store) = $make;
                super::expected_version_mismatches_are_typed_and_store_nothing(store).await;
            }

            #[tokio::test]
            async fn idempotent_retry_succeeds_without_duplicates() {
                let (_guard, store) = $make;
                super::idempotent_retry_succeeds_without_duplicates(store).await;
            }

            #[tokio::test]
            async fn partial_overlaps_and_reused_ids_are_refused() {
                let (_guard, store) = $make;
                super::partial_overlaps_and_reused_ids_are_refused(store).await;
            }

            #[tokio::test]
            async fn limits_are_enforced_before_anything_is_written() {
                let (_guard, store) = $make;
                super::limits_are_enforced_before_anything_is_written(store, $limits).await;
            }

            #[tokio::test]
            async fn reads_page_and_unknown_streams_are_errors() {
                let (_guard, store) = $make;
                super::reads_page_and_unknown_streams_are_errors(store).await;
            }

            #[tokio::test]
            async fn visits_see_what_reads_return() {
                let (_guard, store) = $make;
                super::visits_see_what_reads_return(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn catch_up_subscription_delivers_history_then_live() {
                let (_guard, store) = $make;
                super::catch_up_subscription_delivers_history_then_live(store, $limits).await;
            }

            #[tokio::test]
            async fn snapshots_round_trip_and_never_regress() {
                let (_guard, store) = $make;
                super::snapshots_round_trip_and_never_regress(store).await;
            }

            #[tokio::test]
            async fn conditional_append_fails_on_a_matching_later_event() {
                let (_guard, store) = $make;
                super::conditional_append_fails_on_a_matching_later_event(store).await;
            }
        }
    };
}

conformance!(memory, Limits::default(), ((), MemoryStore::default()));
conformance!(log_dir, small_log_config().limits, {
    let dir = TempDir::new("conformance");
    let store = LogStore::open_dir(dir.path(), small_log_config()).expect("open");
    (dir, store)
});
conformance!(log_simdisk, small_log_config().limits, {
    let disk = SimDisk::new();
    let store = LogStore::open(Arc::new(disk.clone()), small_log_config()).expect("open");
    (disk, store)
});
conformance!(remote, small_log_config().limits, {
    let dir = TempDir::new("conformance-remote");
    let store = LogStore::open_dir(dir.path(), small_log_config()).expect("open");
    support::remote::serve(store, dir, evsource::store::RemoteConfig::default()).await
});
#[cfg(feature = "postgres")]
conformance!(
    postgres,
    small_log_config().limits,
    support::postgres::fresh_store("conformance", small_log_config().limits).await
);
