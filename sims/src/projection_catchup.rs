//! Seed 002's missed events: a read model fed from the log, on its own simulated machine,
//! crashes and restarts at random while clients keep writing. After quiescence its
//! state must equal a rebuild from position 0 (I7).
//!
//! The correct projector is the real [`ProjectionRunner`]: state and checkpoint in one
//! record. The naive one (N6, `naive-projection-checkpoint`) saves its state and its
//! checkpoint as two separate appends — a crash between them leaves a checkpoint that
//! disagrees with the state, and events are skipped or counted twice.

use std::time::Duration;

use evsource::core::{
    CommandId, CurrentVersion, EventData, EventId, ExpectedVersion, GlobalPosition, Metadata,
    StreamId, hash128,
};
use evsource::domain::board::{BoardState, UnlockBoard};
use evsource::domain::station::{Station, StationAnswer, StationCommand};
use evsource::environment::FixedEnvironment;
use evsource::handler::{CommandHandler, HandlerConfig};
use evsource::oracles::{Violation, check_store_shape, fingerprint, read_all_events};
use evsource::projection::{Projection, ProjectionRunner, rebuild};
use evsource::store::{EventStore, LogStore};
use madsim::rand::Rng;
use madsim::runtime::Handle;

use crate::faults::{Design, FaultPlan, simulated_log};

const WRITERS: u64 = 4;
const COMMANDS_PER_WRITER: u64 = 30;
/// The projector saves after this many new events.
const SAVE_EVERY: u64 = 3;

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CatchupSummary {
    pub events: u64,
    pub projector_crashes: u64,
    pub fingerprint: u128,
}

/// Runs the scenario under `design` and judges it (I3, I7).
pub async fn run(design: Design, faults: &FaultPlan) -> Result<CatchupSummary, Violation> {
    let handle = Handle::current();
    let (_disk, store) = simulated_log(faults);
    let naive = design == Design::NaiveProjectionCheckpoint;
    // The projector's process crashes; the store lives elsewhere. (Killing the whole
    // simulated machine would also kill the store's group-commit task when the projector
    // happened to start it, which is not the failure being modelled.)
    let projector_node = handle.create_node().name("projector").build();
    let start_projector = || {
        let store = store.clone();
        projector_node.spawn(async move {
            if naive {
                naive_projector(store).await;
            } else {
                projector(store).await;
            }
        })
    };
    let mut projector_task = start_projector();
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        let node = handle
            .create_node()
            .name(format!("writer-{writer}"))
            .build();
        writers.push(node.spawn(async move { write(writer, store).await }));
    }
    // Crash the projector now and then while the writers write.
    let mut crashes = 0;
    let mut writing = true;
    while writing {
        let pause = madsim::rand::thread_rng().gen_range(50..400);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        writing = !writers.iter().all(|w| w.is_finished());
        tracing::info!("fault: projector crashed and restarted");
        projector_task.abort();
        projector_task = start_projector();
        crashes += 1;
    }
    for writer in writers {
        writer.await.expect("writer finished");
    }
    // Quiescence: no more crashes; the projector catches up and saves.
    tokio::time::sleep(Duration::from_secs(5)).await;
    projector_task.abort();

    let events = read_all_events(&store)
        .await
        .expect("the simulated store reads");
    check_store_shape(&events)?;
    let live = if naive {
        load_naive(&store).await
    } else {
        load_correct(&store).await
    };
    let rebuilt = rebuild::<_, UnlockBoard>(&store)
        .await
        .expect("rebuild reads");
    if live != rebuilt {
        return Err(Violation {
            invariant: "I7",
            detail: format!(
                "the projection after catching up differs from a rebuild from position 0: {}",
                difference(&live, &rebuilt)
            ),
        });
    }
    Ok(CatchupSummary {
        events: events.len() as u64,
        projector_crashes: crashes,
        fingerprint: fingerprint(&events),
    })
}

fn difference(live: &BoardState, rebuilt: &BoardState) -> String {
    for (station, board) in rebuilt {
        match live.get(station) {
            Some(other) if other == board => {}
            Some(other) => {
                return format!(
                    "{station}: requested {} vs {} in the rebuild",
                    other.requested, board.requested
                );
            }
            None => return format!("{station} is missing"),
        }
    }
    "extra stations in the live state".to_owned()
}

/// A writer: requests unlocks on a few stations and settles each one (accepted and
/// stopped, or rejected), so connectors keep turning over.
async fn write(writer: u64, store: LogStore) {
    let handler: CommandHandler<LogStore, Station> =
        CommandHandler::new(store, HandlerConfig::default());
    let mut rng = madsim::rand::thread_rng();
    let mut env = FixedEnvironment::new(0, rng.r#gen());
    for n in 0..COMMANDS_PER_WRITER {
        let station = StreamId::new(&format!("station-CP{}", rng.gen_range(0..3))).expect("valid");
        let session = format!("w{writer}n{n}");
        let mut steps = vec![StationCommand::RequestUnlock {
            connector: rng.gen_range(1..=2),
            session: session.clone(),
        }];
        if rng.gen_bool(0.5) {
            steps.push(StationCommand::RecordAnswer {
                session: session.clone(),
                answer: StationAnswer::Accepted,
            });
            steps.push(StationCommand::StopSession { session });
        } else {
            steps.push(StationCommand::RecordAnswer {
                session,
                answer: StationAnswer::Rejected,
            });
        }
        for (step, command) in steps.iter().enumerate() {
            let id = CommandId(hash128(format!("writer/{writer}/{n}/{step}").as_bytes()));
            if handler
                .handle(&mut env, &station, id, command)
                .await
                .is_err()
            {
                break; // the connector was busy: nothing to settle
            }
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..20))).await;
        }
    }
}

/// The correct projector: the real runner, saving state and checkpoint together.
async fn projector(store: LogStore) {
    let Ok(mut runner) = ProjectionRunner::<_, UnlockBoard>::load(store.clone()).await else {
        return;
    };
    let mut unsaved = 0;
    loop {
        if let Ok(applied) = runner.catch_up().await {
            unsaved += applied;
        }
        if unsaved >= SAVE_EVERY && runner.save(0).await.is_ok() {
            unsaved = 0;
        }
        let seen = runner.checkpoint().map_or(0, |c| c.0 + 1);
        let _ = tokio::time::timeout(
            Duration::from_millis(200),
            store.wait_for_event_count_above(seen),
        )
        .await;
    }
}

async fn load_correct(store: &LogStore) -> BoardState {
    let mut runner = ProjectionRunner::<_, UnlockBoard>::load(store.clone())
        .await
        .expect("loads");
    runner.catch_up().await.expect("catches up");
    runner.state().clone()
}

const NAIVE_STATE: &str = "naive-board-state";
const NAIVE_CHECKPOINT: &str = "naive-board-checkpoint";

/// N6: state and checkpoint saved by two separate appends (state first).
async fn naive_projector(store: LogStore) {
    let (mut state, mut checkpoint) = naive_load(&store).await;
    let mut unsaved = 0;
    let mut saves = 0u64;
    loop {
        let from = checkpoint.map_or(GlobalPosition(0), GlobalPosition::next);
        let page = store.read_all(from, 256).await.unwrap_or_default();
        for event in &page {
            UnlockBoard::fold(&mut state, event);
            checkpoint = Some(event.position);
            unsaved += 1;
        }
        if unsaved >= SAVE_EVERY {
            saves += 1;
            let state_bytes = serde_json::to_vec(&state).expect("serialises");
            let position = checkpoint.map_or(u64::MAX, |c| c.0).to_le_bytes().to_vec();
            // Two writes, two moments: a crash in between splits state from checkpoint.
            let _ = append_blob(&store, NAIVE_STATE, saves, state_bytes).await;
            let _ = append_blob(&store, NAIVE_CHECKPOINT, saves, position).await;
            unsaved = 0;
        }
        let seen = checkpoint.map_or(0, |c| c.0 + 1);
        let _ = tokio::time::timeout(
            Duration::from_millis(200),
            store.wait_for_event_count_above(seen),
        )
        .await;
    }
}

async fn append_blob(store: &LogStore, stream: &str, save: u64, payload: Vec<u8>) -> bool {
    let stream = StreamId::new(stream).expect("valid");
    let data = EventData {
        id: EventId(hash128(
            format!(
                "{stream}/{save}/{}",
                madsim::rand::thread_rng().r#gen::<u64>()
            )
            .as_bytes(),
        )),
        event_type: "Saved".into(),
        tags: Vec::new(),
        metadata: Metadata::default(),
        payload,
    };
    store
        .append(&stream, ExpectedVersion::Any, vec![data])
        .await
        .is_ok()
}

async fn last_blob(store: &LogStore, stream: &str) -> Option<Vec<u8>> {
    let stream = StreamId::new(stream).expect("valid");
    let CurrentVersion::Current(last) = store.current_version(&stream).await.ok()? else {
        return None;
    };
    store
        .read_stream(&stream, last, 1)
        .await
        .ok()?
        .pop()
        .map(|e| e.payload)
}

async fn naive_load(store: &LogStore) -> (BoardState, Option<GlobalPosition>) {
    let state = match last_blob(store, NAIVE_STATE).await {
        Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
        None => BoardState::default(),
    };
    let checkpoint = last_blob(store, NAIVE_CHECKPOINT)
        .await
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
        .map(|bytes| GlobalPosition(u64::from_le_bytes(bytes)));
    (state, checkpoint)
}

async fn load_naive(store: &LogStore) -> BoardState {
    let (mut state, checkpoint) = naive_load(store).await;
    let from = checkpoint.map_or(GlobalPosition(0), GlobalPosition::next);
    for event in read_all_events(store)
        .await
        .expect("reads")
        .iter()
        .filter(|e| e.position >= from)
    {
        UnlockBoard::fold(&mut state, event);
    }
    state
}
