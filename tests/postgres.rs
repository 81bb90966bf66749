//! The PostgreSQL backend against a real server (`EVSOURCE_POSTGRES_URL`, else the local
//! one): what the shared conformance suite cannot show with one client — positions that a
//! polling reader never skips while many writers race, one winner per version among many
//! connections, a connection killed mid-append and settled by the idempotent retry, and
//! readers woken by NOTIFY from another store handle.
#![cfg(feature = "postgres")]

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use evsource::core::{ExpectedVersion, GlobalPosition, Limits, StreamVersion};
use evsource::store::postgres::{PostgresConfig, PostgresStore};
use evsource::store::{AppendError, EventStore};
use support::postgres::{SchemaGuard, fresh_schema, fresh_store, url};
use support::{event, stream};

/// A second handle on the same schema, as another node would open it.
async fn open_schema(schema: &str, configure: impl FnOnce(&mut PostgresConfig)) -> PostgresStore {
    let mut config = PostgresConfig::from_url(&url()).expect("url");
    config.schema = schema.to_owned();
    configure(&mut config);
    PostgresStore::open(config).await.expect("open")
}

/// Eight writers on their own connections append 600 events while a reader polls
/// `read_all` from the last position it saw. Positions are taken in commit order, so the
/// reader must see every event exactly once, in order, with no gap — a sequence-based
/// design fails this when a lower number commits late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_reader_sees_every_event_once_in_order_while_writers_race() {
    const WRITERS: u128 = 8;
    const PER_WRITER: u128 = 75;
    let (guard, store) = fresh_store("race", Limits::default()).await;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..PER_WRITER {
                    let id = 1 + w * PER_WRITER + i;
                    let name = format!("writer-{w}-{}", i % 5);
                    store
                        .append(&stream(&name), ExpectedVersion::Any, vec![event(id)])
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    let reader = open_schema(&guard.schema, |_| {}).await;
    let total = (WRITERS * PER_WRITER) as u64;
    let mut next = GlobalPosition(0);
    let mut seen = BTreeSet::new();
    let mut polls = 0u64;
    while next.0 < total {
        polls += 1;
        for recorded in reader.read_all(next, 37).await.expect("read") {
            assert_eq!(
                recorded.position, next,
                "the reader skipped or repeated a position"
            );
            assert!(seen.insert(recorded.id), "event {} seen twice", recorded.id);
            next = next.next();
        }
        assert!(
            polls < 1_000_000,
            "the reader stopped making progress at {next}"
        );
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    assert_eq!(seen.len() as u64, total);
    assert!(
        polls > 10,
        "the reader must have polled while writers were still appending ({polls} polls)"
    );
    assert!(reader.read_all(next, 10).await.expect("read").is_empty());
}

/// Sixteen handles — sixteen real connections — race `Exact` appends for the same versions
/// of one stream, round after round. Exactly one wins each version; every loser is told
/// the version moved (`WrongExpectedVersion`), and the stream ends contiguous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_exact_appends_have_exactly_one_winner_per_version() {
    const RACERS: u64 = 16;
    const VERSIONS: u64 = 12;
    let (guard, store) = fresh_store("winners", Limits::default()).await;
    let target = stream("contested");
    store
        .append(&target, ExpectedVersion::NoStream, vec![event(1)])
        .await
        .expect("first event");
    let mut racers = Vec::new();
    for _ in 0..RACERS {
        racers.push(open_schema(&guard.schema, |c| c.pool_size = 1).await);
    }
    let next_id = Arc::new(AtomicU64::new(1_000));
    for version in 0..VERSIONS {
        let tasks: Vec<_> = racers
            .iter()
            .map(|racer| {
                let (racer, target) = (racer.clone(), target.clone());
                let id = u128::from(next_id.fetch_add(1, Ordering::Relaxed));
                tokio::spawn(async move {
                    racer
                        .append(
                            &target,
                            ExpectedVersion::Exact(StreamVersion(version)),
                            vec![event(id)],
                        )
                        .await
                })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            match task.await.expect("racer") {
                Ok(result) => {
                    winners += 1;
                    assert_eq!(result.first_version, StreamVersion(version + 1));
                }
                Err(AppendError::WrongExpectedVersion { actual, .. }) => {
                    assert_eq!(
                        actual,
                        evsource::core::CurrentVersion::Current(StreamVersion(version + 1))
                    );
                }
                Err(other) => panic!("unexpected error: {other}"),
            }
        }
        assert_eq!(winners, 1, "version {} had {winners} winners", version + 1);
    }
    let events = store
        .read_stream(&target, StreamVersion(0), 100)
        .await
        .expect("read");
    let versions: Vec<u64> = events.iter().map(|e| e.version.0).collect();
    assert_eq!(versions, (0..=VERSIONS).collect::<Vec<_>>());
}

/// A killer terminates the store's server processes (`pg_terminate_backend`) every few
/// dozen milliseconds while appends go on (at least 60, and until five were cut). Each failed append must say its outcome is
/// unknown; retried with the same event id it settles, and at the end every event is
/// stored exactly once at gapless positions — whether the failed attempt had committed
/// or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_mid_append_is_settled_by_the_idempotent_retry() {
    const APPENDS: u128 = 60;
    let schema = fresh_schema("killed");
    let guard = SchemaGuard {
        schema: schema.clone(),
    };
    let application = format!("evsource_{schema}");
    let store = open_schema(&guard.schema, |c| {
        c.connection.application_name(&application);
        c.pool_size = 2;
        c.poll_interval = Duration::from_millis(50);
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicU64::new(0));
    let killer = {
        let (stop, killed, application) = (stop.clone(), killed.clone(), application.clone());
        tokio::spawn(async move {
            let (admin, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
                .await
                .expect("admin connection");
            tokio::spawn(connection);
            while !stop.load(Ordering::Relaxed) {
                let rows = admin
                    .query(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE application_name = $1",
                        &[&application],
                    )
                    .await
                    .expect("terminate");
                killed.fetch_add(rows.len() as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };
    // At least 60 appends, and on until five of them were cut.
    let mut failures = 0u64;
    let mut appended = 0u128;
    while appended < APPENDS || failures < 5 {
        appended += 1;
        assert!(appended < 20_000, "the killer never cut an append");
        let id = appended;
        let target = stream(&format!("victim-{}", id % 7));
        let mut attempts = 0;
        loop {
            attempts += 1;
            match store
                .append(&target, ExpectedVersion::Any, vec![event(id)])
                .await
            {
                Ok(_) => break,
                Err(AppendError::OutcomeUnknown(message)) => {
                    failures += 1;
                    assert!(message.contains("connection"), "{message}");
                }
                // Connecting again while the killer strikes: nothing was attempted.
                Err(AppendError::Unavailable(_)) => failures += 1,
                Err(other) => panic!("append {id}: unexpected error {other}"),
            }
            assert!(attempts < 1_000, "append {id} never settled");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    killer.await.expect("killer");
    assert!(
        killed.load(Ordering::Relaxed) > 0 && failures > 0,
        "the killer must really have cut appends ({failures} failures)"
    );
    let all = store
        .read_all(GlobalPosition(0), 10_000)
        .await
        .expect("read after the storm");
    let ids: Vec<u128> = all.iter().map(|e| e.id.0).collect();
    let unique: BTreeSet<u128> = ids.iter().copied().collect();
    assert_eq!(ids.len() as u128, appended, "duplicates or losses: {ids:?}");
    assert_eq!(unique, (1..=appended).collect());
    let positions: Vec<u64> = all.iter().map(|e| e.position.0).collect();
    assert_eq!(positions, (0..appended as u64).collect::<Vec<_>>());
}

/// A reader on one handle is woken by NOTIFY when another handle appends: its polling is
/// set to a minute, so only the notification can wake it within the test's deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_wakes_a_reader_on_another_connection() {
    let (guard, writer) = fresh_store("notify", Limits::default()).await;
    let reader = open_schema(&guard.schema, |c| c.poll_interval = Duration::from_secs(60)).await;
    let waiting = tokio::spawn({
        let reader = reader.clone();
        async move { reader.wait_for_event_count_above(0).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "nothing was appended yet");
    writer
        .append(&stream("n"), ExpectedVersion::Any, vec![event(1)])
        .await
        .expect("append");
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the notification woke the reader well before its poll")
        .expect("task")
        .expect("wait");
}

/// Migrations run once per schema: a second open finds the tables and the events there.
#[tokio::test]
async fn reopening_a_schema_keeps_its_events() {
    let (guard, store) = fresh_store("reopen", Limits::default()).await;
    store
        .append(&stream("kept"), ExpectedVersion::NoStream, vec![event(7)])
        .await
        .expect("append");
    drop(store);
    let again = open_schema(&guard.schema, |_| {}).await;
    let events = again
        .read_stream(&stream("kept"), StreamVersion(0), 10)
        .await
        .expect("read");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].id.0, 7);
    assert_eq!(again.event_count().await.expect("count"), 1);
}
