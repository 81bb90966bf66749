//! The history checker (I11) accepts what a correct store does under concurrency and
//! refuses each way a broken store can lie: a lost acknowledged write, a read of bytes
//! that were never appended, a dirty read (an event later gone), a stale read, a refusal
//! naming a version the stream never had, a refused append that was stored anyway, and a
//! commit order that contradicts real time. Each broken store wraps the real in-memory
//! store and breaks one promise, so every refusal below comes from a run, not a fixture.

use std::ops::ControlFlow;

use evsource::core::{
    AppendCondition, AppendResult, CurrentVersion, EventData, EventId, EventView, ExpectedVersion,
    GlobalPosition, Limits, Metadata, Query, RecordedEvent, Snapshot, StreamId, StreamVersion,
};
use evsource::oracles::history::{History, HistoryCheck, RecordingStore, check_history};
use evsource::oracles::read_all_events;
use evsource::store::{AppendError, EventStore, MemoryStore, ReadError, SnapshotError};

fn event(id: u128, tag: &str) -> EventData {
    EventData {
        id: EventId(id),
        event_type: "Noted".into(),
        tags: vec![tag.to_owned()],
        metadata: Metadata::default(),
        payload: id.to_le_bytes().to_vec(),
    }
}

fn stream(name: &str) -> StreamId {
    StreamId::new(name).expect("valid")
}

const CHECK: HistoryCheck = HistoryCheck {
    all_writers_recorded: true,
    read_events_max: 10_000,
};

/// How a broken store breaks its promise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lie {
    /// Reads return a flipped payload byte.
    FlipPayload,
    /// An acknowledged append is forgotten: the final store does not hold it.
    ForgetLastAppend,
    /// Reads of a stream stop one event short (a stale answer).
    StaleRead,
    /// A refusal names a version one below the real one.
    WrongActual,
    /// An append answered as refused was stored.
    StoredDespiteRefusal,
    /// A fresh append refused as a duplicate of its own, never stored, first event.
    FalseDuplicate,
    /// A failed condition names a position where no matching event is.
    ConditionNamesNothing,
}

#[derive(Clone, Debug)]
struct Broken {
    inner: MemoryStore,
    lie: Lie,
}

impl EventStore for Broken {
    async fn append_if(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: Option<&AppendCondition>,
    ) -> Result<AppendResult, AppendError> {
        if self.lie == Lie::FalseDuplicate
            && events[0].id.0.is_multiple_of(4)
            && self.inner.find_event(events[0].id).await == Ok(None)
        {
            return Err(AppendError::DuplicateEventId {
                event_id: events[0].id,
                existing: None,
            });
        }
        let result = self
            .inner
            .append_if(stream, expected, events.clone(), condition)
            .await;
        match (self.lie, result) {
            (Lie::ConditionNamesNothing, Err(AppendError::ConditionFailed { position })) => {
                Err(AppendError::ConditionFailed {
                    position: GlobalPosition(position.0 + 1_000),
                })
            }
            (
                Lie::WrongActual,
                Err(AppendError::WrongExpectedVersion {
                    stream,
                    expected,
                    actual: CurrentVersion::Current(v),
                }),
            ) if v.0 > 0 => Err(AppendError::WrongExpectedVersion {
                stream,
                expected,
                actual: CurrentVersion::Current(StreamVersion(v.0 - 1)),
            }),
            (Lie::StoredDespiteRefusal, Ok(_)) if events[0].id.0.is_multiple_of(5) => {
                Err(AppendError::Unavailable("pretended".into()))
            }
            (_, result) => result,
        }
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let mut events = self.inner.read_stream(stream, from, max).await?;
        match self.lie {
            Lie::FlipPayload => {
                if let Some(first) = events.first_mut() {
                    first.payload[0] ^= 1;
                }
            }
            Lie::StaleRead => {
                events.pop();
            }
            _ => {}
        }
        Ok(events)
    }

    async fn visit_stream<F>(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        visit: F,
    ) -> Result<u64, ReadError>
    where
        F: FnMut(EventView<'_>) -> ControlFlow<()> + Send,
    {
        self.inner.visit_stream(stream, from, visit).await
    }

    async fn read_all(
        &self,
        from: GlobalPosition,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.inner.read_all(from, max).await
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
        self.inner.event_count().await
    }

    async fn wait_for_event_count_above(&self, count: u64) -> Result<(), ReadError> {
        self.inner.wait_for_event_count_above(count).await
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

/// Three writers race on two streams with exact expectations, conditions and retries,
/// while a reader reads; returns the history and the final store.
async fn workload<S: EventStore>(store: S, history: &History) -> Vec<RecordedEvent> {
    let mut tasks = Vec::new();
    for writer in 0..3u128 {
        let store = RecordingStore::new(store.clone(), history.clone(), &format!("w{writer}"));
        tasks.push(tokio::spawn(async move {
            for round in 0..20u128 {
                let id = 1 + writer * 1000 + round;
                let target = stream(if round % 2 == 0 { "a" } else { "b" });
                let expected = match store.current_version(&target).await {
                    Ok(CurrentVersion::Current(v)) if round % 3 != 0 => ExpectedVersion::Exact(v),
                    Ok(CurrentVersion::Current(_)) => ExpectedVersion::Exact(StreamVersion(0)),
                    _ => ExpectedVersion::Any,
                };
                let condition = (round % 4 == 1).then(|| AppendCondition {
                    query: Query::tagged([format!("t{}", round % 3)]),
                    after: Some(GlobalPosition(round as u64)),
                });
                let data = vec![event(id, &format!("t{}", round % 3))];
                let _ = store
                    .append_if(&target, expected, data.clone(), condition.as_ref())
                    .await;
                // An exact retry of an append, answered idempotently or refused.
                let _ = store.append(&target, expected, data).await;
                let _ = store.read_stream(&target, StreamVersion(0), 100).await;
                tokio::task::yield_now().await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    let reader = RecordingStore::new(store.clone(), history.clone(), "reader");
    let _ = reader
        .read_stream(&stream("a"), StreamVersion(0), 100)
        .await;
    let _ = reader.read_all(GlobalPosition(0), 100).await;
    read_all_events(&store).await.expect("final read")
}

#[tokio::test]
async fn a_correct_store_passes_with_every_kind_of_answer_checked() {
    let history = History::new();
    let stored = workload(MemoryStore::new(Limits::default()), &history).await;
    let stats = check_history(&history.operations(), &stored, CHECK)
        .unwrap_or_else(|v| panic!("a correct store passes: {v}"));
    assert!(stats.appends_acknowledged > 10, "{stats}");
    assert!(stats.appends_refused > 0, "conflicts were refused: {stats}");
    assert!(stats.reads_checked > 50, "{stats}");
    assert!(stats.events_compared > 100, "{stats}");
    assert_eq!(stats.streams, 2, "{stats}");
}

async fn caught(lie: Lie) -> String {
    let history = History::new();
    let inner = MemoryStore::new(Limits::default());
    let mut stored = workload(
        Broken {
            inner: inner.clone(),
            lie,
        },
        &history,
    )
    .await;
    if lie == Lie::ForgetLastAppend {
        stored.pop();
    }
    match check_history(&history.operations(), &stored, CHECK) {
        Ok(stats) => panic!("{lie:?} went unseen: {stats}"),
        Err(violation) => violation.to_string(),
    }
}

#[tokio::test]
async fn each_broken_promise_is_caught() {
    let flipped = caught(Lie::FlipPayload).await;
    assert!(flipped.contains("I11"), "{flipped}");
    assert!(flipped.contains("where the store holds"), "{flipped}");
    let lost = caught(Lie::ForgetLastAppend).await;
    assert!(lost.contains("I2"), "{lost}");
    let stale = caught(Lie::StaleRead).await;
    assert!(stale.contains("stale"), "{stale}");
    let wrong = caught(Lie::WrongActual).await;
    assert!(wrong.contains("I11"), "{wrong}");
    let refused = caught(Lie::StoredDespiteRefusal).await;
    assert!(refused.contains("was refused"), "{refused}");
    let duplicate = caught(Lie::FalseDuplicate).await;
    assert!(duplicate.contains("refused as a duplicate"), "{duplicate}");
    let condition = caught(Lie::ConditionNamesNothing).await;
    assert!(
        condition.contains("refused for a matching event"),
        "{condition}"
    );
}

/// A reader given an event that a crash later took away: the final store lacks it.
#[tokio::test]
async fn a_dirty_read_across_a_crash_is_caught() {
    let history = History::new();
    let store = MemoryStore::new(Limits::default());
    let recording = RecordingStore::new(store.clone(), history.clone(), "w");
    for id in 1..=3 {
        recording
            .append(&stream("a"), ExpectedVersion::Any, vec![event(id, "t")])
            .await
            .expect("append");
    }
    recording
        .read_stream(&stream("a"), StreamVersion(0), 10)
        .await
        .expect("read");
    let mut after_crash = read_all_events(&store).await.expect("read");
    after_crash.truncate(2);
    // The third append's answer never came (its writer crashed with the store), so its
    // loss breaks no promise to the writer — but a reader was given the event.
    let mut operations = history.operations();
    operations[2].returned = None;
    let detail = check_history(&operations, &after_crash, CHECK)
        .expect_err("the vanished event is seen")
        .to_string();
    assert!(detail.contains("dirty read"), "{detail}");
}

/// The store's order contradicts real time: event 1 was acknowledged before event 2's
/// append was invoked, yet the store holds event 2 first.
#[tokio::test]
async fn a_commit_order_against_real_time_is_caught() {
    let history = History::new();
    let store = MemoryStore::new(Limits::default());
    let recording = RecordingStore::new(store.clone(), history.clone(), "w");
    for (id, name) in [(1, "a"), (2, "b")] {
        recording
            .append(&stream(name), ExpectedVersion::Any, vec![event(id, "t")])
            .await
            .expect("append");
    }
    let mut reordered = read_all_events(&store).await.expect("read");
    reordered.swap(0, 1);
    reordered[0].position = GlobalPosition(0);
    reordered[1].position = GlobalPosition(1);
    // Event 2's answer never came, so its position pins nothing: only the order tells.
    let mut operations = history.operations();
    operations[1].returned = None;
    let detail = check_history(&operations, &reordered, CHECK)
        .expect_err("the inversion is seen")
        .to_string();
    assert!(detail.contains("contradicts real time"), "{detail}");
}

/// What the simulator's `command-decided` victims wait on: `written_to` counts only the
/// appends that wrote (not a refused one, not an exact retry that stored nothing), and
/// `overtaken` returns once another writer's append to that stream lands — not at one to
/// another stream — or when its patience runs out.
#[tokio::test]
async fn overtaken_waits_for_a_write_to_the_same_stream_only() {
    use std::time::Duration;
    let history = History::new();
    let store = RecordingStore::new(MemoryStore::new(Limits::default()), history.clone(), "w");
    let (a, b) = (stream("a"), stream("b"));
    store
        .append(&a, ExpectedVersion::Any, vec![event(1, "t")])
        .await
        .expect("appended");
    let refused = store
        .append(&a, ExpectedVersion::NoStream, vec![event(2, "t")])
        .await;
    assert!(refused.is_err(), "the stream exists");
    let retried = store
        .append(&a, ExpectedVersion::Any, vec![event(1, "t")])
        .await
        .expect("an exact retry is answered");
    assert!(!retried.written, "the retry stored nothing");
    assert_eq!(history.written_to(&a), 1);
    assert_eq!(history.written_to(&b), 0);

    // Patience runs out when nobody writes.
    let started = tokio::time::Instant::now();
    history.overtaken(&a, Duration::from_millis(300)).await;
    assert!(started.elapsed() >= Duration::from_millis(300));

    // A write to another stream does not release it; one to the same stream does.
    let waiter = {
        let history = history.clone();
        let a = a.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            history.overtaken(&a, Duration::from_secs(60)).await;
            started.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    store
        .append(&b, ExpectedVersion::Any, vec![event(3, "t")])
        .await
        .expect("appended");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "a write elsewhere does not overtake");
    store
        .append(&a, ExpectedVersion::Any, vec![event(4, "t")])
        .await
        .expect("appended");
    let waited = waiter.await.expect("the waiter ends");
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(30),
        "released by the write to its stream, not by patience: {waited:?}"
    );
}
