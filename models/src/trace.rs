//! Recording the real implementation in the append model's vocabulary: K real
//! `CommandHandler`s run withdrawals concurrently on the real in-memory store, each through
//! a store wrapper that yields a seed-chosen number of times before every store call (so
//! that their steps interleave) and records the calls that are steps of the model: a stream
//! read is a load, an append — accepted or refused for its version — is an append, a
//! returned command is an acknowledgement. Under plain tokio (the models' tests) and under
//! the simulator (`sims/tests/model_trace.rs`) alike, `Path::from_actions` must accept every
//! recorded trace.

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use crate::append::{Action, AppendModel};
use evsource::core::{
    AppendCondition, AppendResult, CurrentVersion, EventData, EventId, EventView, ExpectedVersion,
    GlobalPosition, Limits, Query, RecordedEvent, Snapshot, StreamId, StreamVersion,
};
use evsource::domain::account::{Account, AccountCommand, AccountEvent};
use evsource::environment::{SplitMix64, SystemEnvironment};
use evsource::handler::{CommandHandler, HandleError, HandlerConfig, Outcome, encode_events};
use evsource::store::{AppendError, EventStore, MemoryStore, ReadError, SnapshotError};
use stateright::Model;

/// The in-memory store, seen through one handler: yields before each call, and records
/// the calls that are steps of the model.
#[derive(Clone, Debug)]
pub struct Recording {
    inner: MemoryStore,
    handler: u8,
    log: Arc<Mutex<Vec<Action>>>,
    rng: Arc<Mutex<SplitMix64>>,
}

impl Recording {
    async fn interleave(&self) {
        let yields = self.rng.lock().unwrap().below(3);
        for _ in 0..yields {
            tokio::task::yield_now().await;
        }
    }

    fn record(&self, action: Action) {
        self.log.lock().unwrap().push(action);
    }
}

impl EventStore for Recording {
    async fn append_if(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: Option<&AppendCondition>,
    ) -> Result<AppendResult, AppendError> {
        self.interleave().await;
        let result = self
            .inner
            .append_if(stream, expected, events, condition)
            .await;
        if matches!(
            result,
            Ok(_) | Err(AppendError::WrongExpectedVersion { .. })
        ) {
            self.record(Action::Append(self.handler));
        }
        result
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.interleave().await;
        let result = self.inner.read_stream(stream, from, max).await;
        self.record(Action::Load(self.handler));
        result
    }

    /// A load is one atomic read of the stream (the in-memory store's visit): one `Load`.
    async fn visit_stream<F>(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        visit: F,
    ) -> Result<u64, ReadError>
    where
        F: FnMut(EventView<'_>) -> ControlFlow<()> + Send,
    {
        self.interleave().await;
        let result = self.inner.visit_stream(stream, from, visit).await;
        self.record(Action::Load(self.handler));
        result
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
        self.interleave().await;
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

/// Checks one recorded run against the model: the trace must be a path of `model` from its
/// initial state (`Path::from_actions`) that ends with the events the real store holds, id
/// for id. Returns the version conflicts the path retried; `Err` says what diverged.
pub fn check(model: &AppendModel, trace: &[Action], real_ids: &[EventId]) -> Result<u8, String> {
    let init = model.init_states().remove(0);
    let path = stateright::Path::from_actions(model, init, trace.iter())
        .ok_or_else(|| format!("the trace is not a behaviour of the model: {trace:?}"))?;
    let last = path.last_state();
    let model_ids: Vec<EventId> = last.stream.iter().map(|s| s.id).collect();
    if model_ids != real_ids {
        return Err(format!(
            "the model stored {model_ids:?}, the real store {real_ids:?}"
        ));
    }
    Ok(last.retried)
}

/// One concurrent run of `model`'s handlers and commands on the real store; returns the
/// recorded trace and the real stream's event ids, in order.
pub async fn run(model: &AppendModel, seed: u64) -> (Vec<Action>, Vec<EventId>) {
    let store = MemoryStore::new(Limits::default());
    let stream = StreamId::new("account-1").unwrap();
    // The opening deposit, with the id the model gives it (command 0, index 0).
    let opening = AccountEvent::Deposited {
        amount: model.opening,
    };
    let data = encode_events::<Account>(&[opening], evsource::core::CommandId(0), 0);
    store
        .append(&stream, ExpectedVersion::NoStream, data)
        .await
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let rng = Arc::new(Mutex::new(SplitMix64::new(seed)));
    let mut tasks = Vec::new();
    for h in 0..model.handlers {
        let recording = Recording {
            inner: store.clone(),
            handler: h,
            log: log.clone(),
            rng: rng.clone(),
        };
        let (stream, commands, amount) = (stream.clone(), model.commands, model.amount);
        tasks.push(tokio::spawn(async move {
            let handler: CommandHandler<Recording, Account> = CommandHandler::new(
                recording.clone(),
                HandlerConfig {
                    backoff_base: std::time::Duration::from_micros(1),
                    backoff_max: std::time::Duration::from_micros(10),
                    ..HandlerConfig::default()
                },
            );
            let mut env = SystemEnvironment::new(seed ^ u64::from(h));
            for c in 0..commands {
                let command = AccountCommand::Withdraw { amount };
                let result = handler
                    .handle(&mut env, &stream, AppendModel::command_id(h, c), &command)
                    .await;
                match result {
                    Ok(Outcome::Applied { .. }) => recording.record(Action::Acknowledge(h)),
                    // A refusal is decided from what was loaded; the model takes it at
                    // its append step.
                    Err(HandleError::Rejected(_)) => recording.record(Action::Append(h)),
                    other => panic!("unexpected outcome {other:?}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let ids = store
        .read_stream(&stream, StreamVersion(0), 1_000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    let trace = log.lock().unwrap().clone();
    (trace, ids)
}
