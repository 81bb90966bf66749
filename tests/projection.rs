//! Projections save their changed records and then the checkpoint that makes them count:
//! across random interleavings of appends, catch-ups, saves and crashes (a runner dropped
//! without saving), a reloaded projection's state is exactly the fold up to its
//! checkpoint, and after catching up it equals a rebuild from position 0 (I7). Records of
//! a save cut short are ignored; a board of 100,000 stations saves and later saves write
//! only what changed; loads start at the latest base. Two runners saving the same
//! projection cannot silently overwrite each other.

use evsource::core::{CommandId, StreamId};
use evsource::domain::board::UnlockBoard;
use evsource::domain::station::{Station, StationAnswer, StationCommand};
use evsource::environment::{FixedEnvironment, SplitMix64};
use evsource::handler::{CommandHandler, HandlerConfig};
use evsource::projection::{ProjectionError, ProjectionRunner, rebuild};
use evsource::store::{AppendError, MemoryStore};

async fn random_station_command(
    stations: &CommandHandler<MemoryStore, Station>,
    env: &mut FixedEnvironment,
    rng: &mut SplitMix64,
    n: u64,
) {
    let station = StreamId::new(&format!("station-CP{}", rng.below(3))).unwrap();
    let session = format!("s{}", rng.below(n + 1));
    let command = match rng.below(4) {
        0 | 1 => StationCommand::RequestUnlock {
            connector: 1 + rng.below(2) as u32,
            session,
        },
        2 => StationCommand::RecordAnswer {
            session,
            answer: [
                StationAnswer::Accepted,
                StationAnswer::Rejected,
                StationAnswer::TimedOut,
            ][rng.below(3) as usize],
        },
        _ => StationCommand::StopSession { session },
    };
    // Rejections are part of the workload; only applied commands add events.
    let _ = stations
        .handle(env, &station, CommandId(u128::from(n) + 1), &command)
        .await;
}

#[tokio::test]
async fn state_and_checkpoint_survive_crashes_together_and_equal_a_rebuild() {
    for seed in 0..20 {
        let store = MemoryStore::default();
        let stations: CommandHandler<_, Station> =
            CommandHandler::new(store.clone(), HandlerConfig::default());
        let mut env = FixedEnvironment::new(0, seed);
        let mut rng = SplitMix64::new(seed);
        let mut runner: ProjectionRunner<_, UnlockBoard> =
            ProjectionRunner::load(store.clone()).await.unwrap();
        for n in 0..200 {
            match rng.below(10) {
                0..=5 => random_station_command(&stations, &mut env, &mut rng, n).await,
                6 | 7 => {
                    runner.catch_up().await.unwrap();
                }
                8 => runner.save(n).await.unwrap(),
                _ => {
                    // Crash: whatever was applied but not saved is lost; reload the save.
                    runner = ProjectionRunner::load(store.clone()).await.unwrap();
                    let checkpoint = runner.checkpoint();
                    let mut upto = ProjectionRunner::<_, UnlockBoard>::load(MemoryStore::default())
                        .await
                        .unwrap();
                    let events = evsource::store::EventStore::read_all(
                        &store,
                        evsource::core::GlobalPosition(0),
                        usize::MAX,
                    )
                    .await
                    .unwrap();
                    for event in events
                        .iter()
                        .filter(|e| checkpoint.is_some_and(|c| e.position <= c))
                    {
                        upto.apply(event);
                    }
                    assert_eq!(
                        runner.state(),
                        upto.state(),
                        "seed {seed}: saved state is the fold up to its checkpoint"
                    );
                }
            }
        }
        runner.catch_up().await.unwrap();
        let rebuilt = rebuild::<_, UnlockBoard>(&store).await.unwrap();
        assert_eq!(runner.state(), &rebuilt, "seed {seed}");
        assert!(
            rebuilt.values().map(|s| s.requested).sum::<u64>() > 0,
            "seed {seed}: vacuous run"
        );
    }
}

#[tokio::test]
async fn two_runners_cannot_overwrite_each_others_save() {
    let store = MemoryStore::default();
    let mut first: ProjectionRunner<_, UnlockBoard> =
        ProjectionRunner::load(store.clone()).await.unwrap();
    let mut second: ProjectionRunner<_, UnlockBoard> =
        ProjectionRunner::load(store.clone()).await.unwrap();
    first.save(1).await.unwrap();
    // The second runner has seen an event the first has not: its state differs.
    let stations: CommandHandler<_, Station> =
        CommandHandler::new(store.clone(), HandlerConfig::default());
    let command = StationCommand::RequestUnlock {
        connector: 1,
        session: "s".into(),
    };
    let stream = StreamId::new("station-CP1").unwrap();
    stations
        .handle(
            &mut FixedEnvironment::new(0, 1),
            &stream,
            CommandId(9),
            &command,
        )
        .await
        .unwrap();
    second.catch_up().await.unwrap();
    let conflict = second.save(2).await.unwrap_err();
    assert!(
        matches!(
            conflict,
            ProjectionError::Append(AppendError::WrongExpectedVersion { .. })
        ),
        "{conflict:?}"
    );
}

/// Copies of one projection on several nodes (`load_instance`) save to streams of their
/// own: each keeps saving, none refuses another's, and each reloads its own state and
/// checkpoint. An instance name a stream id cannot hold is refused.
#[tokio::test]
async fn instances_on_several_nodes_save_apart() {
    let store = MemoryStore::default();
    let mut a: ProjectionRunner<_, UnlockBoard> =
        ProjectionRunner::load_instance(store.clone(), "node-a")
            .await
            .unwrap();
    let mut b: ProjectionRunner<_, UnlockBoard> =
        ProjectionRunner::load_instance(store.clone(), "node-b")
            .await
            .unwrap();
    a.save(1).await.unwrap();
    let stations: CommandHandler<_, Station> =
        CommandHandler::new(store.clone(), HandlerConfig::default());
    stations
        .handle(
            &mut FixedEnvironment::new(0, 1),
            &StreamId::new("station-CP1").unwrap(),
            CommandId(9),
            &StationCommand::RequestUnlock {
                connector: 1,
                session: "s".into(),
            },
        )
        .await
        .unwrap();
    b.catch_up().await.unwrap();
    b.save(2).await.expect("b saves beside a");
    a.catch_up().await.unwrap();
    a.save(3).await.expect("a saves again");
    for (instance, live) in [("node-a", &a), ("node-b", &b)] {
        let reloaded: ProjectionRunner<_, UnlockBoard> =
            ProjectionRunner::load_instance(store.clone(), instance)
                .await
                .unwrap();
        assert_eq!(reloaded.checkpoint(), live.checkpoint(), "{instance}");
        assert_eq!(reloaded.state(), live.state(), "{instance}");
    }
    assert_ne!(
        a.checkpoint(),
        b.checkpoint(),
        "the copies saved at different points"
    );
    let refused = ProjectionRunner::<_, UnlockBoard>::load_instance(store, "has space").await;
    assert!(
        matches!(refused, Err(ProjectionError::InstanceName { .. })),
        "{refused:?}"
    );
}

/// A reader that has caught up reads once per wake, not an empty page and then another:
/// on a remote store every read is a round trip, and readers (one subscription and one
/// projection per node) outnumbered writers' appends 6 to 1 in the reference swarm.
#[tokio::test]
async fn caught_up_readers_read_once_per_wake() {
    use evsource::core::{EventData, EventId, ExpectedVersion, GlobalPosition, Limits, Metadata};
    use evsource::oracles::history::{Call, History, RecordingStore};
    use evsource::store::{CatchUpSubscription, EventStore};

    let reads_so_far = |history: &History| {
        history
            .operations()
            .iter()
            .filter(|op| matches!(op.call, Call::ReadAll { .. }))
            .count()
    };
    let event = |id: u128| EventData {
        id: EventId(id),
        event_type: "Noted".into(),
        tags: Vec::new(),
        metadata: Metadata::default(),
        payload: b"{}".to_vec(),
    };
    let store = MemoryStore::default();
    let history = History::new();
    let reader = RecordingStore::new(store.clone(), history.clone(), "reader");
    let stream = StreamId::new("s").unwrap();
    store
        .append(&stream, ExpectedVersion::Any, vec![event(1)])
        .await
        .unwrap();

    let mut subscription =
        CatchUpSubscription::new(reader.clone(), None, 16, &Limits::default()).unwrap();
    assert_eq!(
        subscription.next().await.unwrap().position,
        GlobalPosition(0)
    );
    let before = reads_so_far(&history);
    store
        .append(&stream, ExpectedVersion::Any, vec![event(2)])
        .await
        .unwrap();
    assert_eq!(
        subscription.next().await.unwrap().position,
        GlobalPosition(1)
    );
    assert_eq!(
        reads_so_far(&history) - before,
        1,
        "one read for one wake of a caught-up subscription"
    );

    let mut runner: ProjectionRunner<_, UnlockBoard> =
        ProjectionRunner::load(reader.clone()).await.unwrap();
    let before = reads_so_far(&history);
    assert_eq!(runner.catch_up().await.unwrap(), 2);
    assert_eq!(
        reads_so_far(&history) - before,
        1,
        "a catch-up whose first page is short stops there"
    );
    assert_eq!(runner.checkpoint(), Some(GlobalPosition(1)));
}

/// Appends one `UnlockRequested` for each of `stations` (station streams `station-CP<n>`).
async fn request_on(store: &MemoryStore, stations: impl Iterator<Item = u64>, session: &str) {
    use evsource::core::{EventData, EventId, ExpectedVersion, Metadata};
    use evsource::decider::Aggregate;
    use evsource::domain::station::{SessionId, StationEvent};
    use evsource::store::EventStore;
    for n in stations {
        let encoded = Station::encode_event(&StationEvent::UnlockRequested {
            connector: 1,
            session: SessionId::new(session).unwrap(),
        });
        let data = EventData {
            id: EventId(evsource::core::hash128(format!("{n}/{session}").as_bytes())),
            event_type: encoded.event_type,
            tags: encoded.tags,
            metadata: Metadata::default(),
            payload: encoded.payload,
        };
        let stream = StreamId::new(&format!("station-CP{n}")).unwrap();
        store
            .append(&stream, ExpectedVersion::Any, vec![data])
            .await
            .unwrap();
    }
}

async fn save_stream_len(store: &MemoryStore) -> u64 {
    use evsource::core::CurrentVersion;
    use evsource::store::EventStore;
    let stream = StreamId::new("projection-unlock-board").unwrap();
    match store.current_version(&stream).await.unwrap() {
        CurrentVersion::NoStream => 0,
        CurrentVersion::Current(last) => last.0 + 1,
    }
}

/// A read model of any size: a board of 100,000 stations saves (as records chunked to the
/// store's limits, no event near the payload limit), reloads equal to a rebuild (I7), and
/// a later save writes only the stations that changed since.
#[tokio::test]
async fn a_board_of_100000_stations_saves_only_what_changed() {
    const STATIONS: u64 = 100_000;
    let store = MemoryStore::default();
    request_on(&store, 0..STATIONS, "s-1").await;
    let mut runner: ProjectionRunner<_, UnlockBoard> =
        ProjectionRunner::load(store.clone()).await.unwrap();
    runner.catch_up().await.unwrap();
    assert_eq!(runner.state().len() as u64, STATIONS);
    runner
        .save(1)
        .await
        .expect("a board of 100,000 stations saves");
    assert_eq!(
        save_stream_len(&store).await,
        STATIONS + 1,
        "one record per station, then the checkpoint"
    );
    let reloaded: ProjectionRunner<_, UnlockBoard> =
        ProjectionRunner::load(store.clone()).await.unwrap();
    let rebuilt = rebuild::<_, UnlockBoard>(&store).await.unwrap();
    assert_eq!(reloaded.state(), &rebuilt, "the reload equals a rebuild");
    assert_eq!(reloaded.checkpoint(), runner.checkpoint());

    // Ten stations change: the next save writes ten records and a checkpoint.
    let mut runner = reloaded;
    request_on(&store, (0..10).map(|n| n * 7), "s-22").await;
    runner.catch_up().await.unwrap();
    assert_eq!(runner.unsaved_records(), 10);
    runner.save(2).await.unwrap();
    assert_eq!(save_stream_len(&store).await, STATIONS + 1 + 11);
    let reloaded: ProjectionRunner<_, UnlockBoard> =
        ProjectionRunner::load(store.clone()).await.unwrap();
    assert_eq!(
        reloaded.state(),
        &rebuild::<_, UnlockBoard>(&store).await.unwrap()
    );
    // Nothing new: nothing written.
    let mut runner = reloaded;
    runner.save(3).await.unwrap();
    assert_eq!(save_stream_len(&store).await, STATIONS + 12);
}

/// A save a crash cut short — records appended, its checkpoint not — is ignored when
/// loading: the state is the last complete save's, and the next save (written after the
/// orphaned records) is read without them.
#[tokio::test]
async fn records_of_a_save_cut_short_are_ignored() {
    use evsource::core::{EventData, EventId, ExpectedVersion, Metadata};
    use evsource::store::EventStore;
    let store = MemoryStore::default();
    request_on(&store, 0..3, "s-1").await;
    let mut runner: ProjectionRunner<_, UnlockBoard> =
        ProjectionRunner::load(store.clone()).await.unwrap();
    runner.catch_up().await.unwrap();
    runner.save(1).await.unwrap();
    let saved = runner.state().clone();
    // The orphan: a record removing CP1, with no checkpoint after it.
    let orphan = EventData {
        id: EventId(0xdead),
        event_type: "ProjectionRecord".into(),
        tags: Vec::new(),
        metadata: Metadata::default(),
        payload: br#"{"key":"CP1","value":null}"#.to_vec(),
    };
    let stream = StreamId::new("projection-unlock-board").unwrap();
    store
        .append(&stream, ExpectedVersion::Any, vec![orphan])
        .await
        .unwrap();
    let mut reloaded: ProjectionRunner<_, UnlockBoard> =
        ProjectionRunner::load(store.clone()).await.unwrap();
    assert_eq!(
        reloaded.state(),
        &saved,
        "the orphaned record is not applied"
    );
    request_on(&store, 2..4, "s-2").await;
    reloaded.catch_up().await.unwrap();
    reloaded.save(2).await.unwrap();
    let again: ProjectionRunner<_, UnlockBoard> =
        ProjectionRunner::load(store.clone()).await.unwrap();
    let rebuilt = rebuild::<_, UnlockBoard>(&store).await.unwrap();
    assert_eq!(again.state(), &rebuilt);
    assert!(again.state().contains_key("CP1"));
}

/// Loading reads from the latest base: once the records saved since it pass twice the
/// live records, a save writes every record again, and later loads start there.
#[tokio::test]
async fn many_small_saves_write_a_new_base_and_loads_start_there() {
    let store = MemoryStore::default();
    let mut runner: ProjectionRunner<_, UnlockBoard> =
        ProjectionRunner::load(store.clone()).await.unwrap();
    // Two stations, changed and saved 1,500 times: past BASE_RECORDS_MIN records.
    for round in 0..1_500u64 {
        request_on(&store, [round % 2].into_iter(), &format!("s-{round}")).await;
        runner.catch_up().await.unwrap();
        runner.save(round).await.unwrap();
    }
    let total = save_stream_len(&store).await;
    let reloaded: ProjectionRunner<_, UnlockBoard> =
        ProjectionRunner::load(store.clone()).await.unwrap();
    assert_eq!(
        reloaded.state(),
        &rebuild::<_, UnlockBoard>(&store).await.unwrap()
    );
    let base = reloaded.base_version().expect("a base was saved");
    assert!(base > 0, "a new base after the first save's");
    assert!(
        total - base < 2 * 1_024 + 100,
        "a load reads from the latest base: {} of {total} save events",
        total - base
    );
}

/// A save stream written by the earlier format (one `ProjectionSaved` event per save) is
/// not read back as records, nor read through: the look back for a checkpoint stops at
/// the first old save. The runner starts from scratch, appends its saves after the old
/// ones, and reloads them.
#[tokio::test]
async fn saves_of_the_earlier_format_are_left_behind() {
    use evsource::core::{EventData, EventId, ExpectedVersion, Metadata};
    use evsource::store::EventStore;
    let store = MemoryStore::default();
    let stream = StreamId::new("projection-unlock-board").unwrap();
    let old = (0..1_000u128)
        .map(|n| EventData {
            id: EventId(0xa11 + n),
            event_type: "ProjectionSaved".into(),
            tags: Vec::new(),
            metadata: Metadata::default(),
            payload: br#"{"schema":1,"checkpoint":0,"state":{"stations":{}}}"#.to_vec(),
        })
        .collect();
    store
        .append(&stream, ExpectedVersion::Any, old)
        .await
        .unwrap();
    request_on(&store, 0..2, "s-1").await;
    let history = evsource::oracles::history::History::new();
    let recording =
        evsource::oracles::history::RecordingStore::new(store.clone(), history.clone(), "load");
    ProjectionRunner::<_, UnlockBoard>::load(recording)
        .await
        .unwrap();
    let read: usize = history
        .operations()
        .iter()
        .filter_map(|op| match &op.returned {
            Some((_, _, evsource::oracles::history::Answer::Events(Ok(events)))) => {
                Some(events.len())
            }
            _ => None,
        })
        .sum();
    assert!(read <= 256, "the load read {read} of 1,000 old saves");
    let mut runner: ProjectionRunner<_, UnlockBoard> =
        ProjectionRunner::load(store.clone()).await.unwrap();
    assert!(
        runner.state().is_empty(),
        "nothing loaded from the old format"
    );
    assert_eq!(runner.checkpoint(), None);
    runner.catch_up().await.unwrap();
    runner.save(1).await.unwrap();
    let reloaded: ProjectionRunner<_, UnlockBoard> =
        ProjectionRunner::load(store.clone()).await.unwrap();
    assert_eq!(
        reloaded.state(),
        &rebuild::<_, UnlockBoard>(&store).await.unwrap()
    );
    assert_eq!(reloaded.state().len(), 2);
}
