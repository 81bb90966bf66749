//! Projections keep their checkpoint in the same record as their state: across random
//! interleavings of appends, catch-ups, saves and crashes (a runner dropped without
//! saving), a reloaded projection's state is exactly the fold up to its checkpoint, and
//! after catching up it equals a rebuild from position 0 (I7). Two runners saving the same
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
            rebuilt.stations.values().map(|s| s.requested).sum::<u64>() > 0,
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
