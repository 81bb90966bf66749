//! The in-memory backend: the pure [`StoreIndex`] plus the events themselves.
//! Nothing survives the process; it exists for tests, models and benchmarks.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::core::index::{AppendPlan, StoreIndex};
use crate::core::limits::Limits;
use crate::core::types::{
    AppendCondition, AppendResult, CurrentVersion, EventData, EventId, EventView, ExpectedVersion,
    GlobalPosition, Query, RecordedEvent, Snapshot, StreamId, StreamVersion,
};
use crate::signal::Counter;
use crate::store::{AppendError, EventStore, ReadError, SnapshotError};

#[derive(Debug)]
struct State {
    index: StoreIndex,
    events: Vec<RecordedEvent>,
    snapshots: BTreeMap<StreamId, Snapshot>,
}

/// An [`EventStore`] held in memory. Clones share one store.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    event_count: Counter,
}

impl Default for MemoryStore {
    fn default() -> MemoryStore {
        MemoryStore::new(Limits::default())
    }
}

impl MemoryStore {
    pub fn new(limits: Limits) -> MemoryStore {
        MemoryStore {
            state: Arc::new(Mutex::new(State {
                index: StoreIndex::new(limits),
                events: Vec::new(),
                snapshots: BTreeMap::new(),
            })),
            event_count: Counter::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug; the state it guards is still consistent
        // because every mutation completes before the lock is released.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends synchronously. The async trait method is a thin wrapper; benches and models
    /// call this directly.
    pub fn append_now(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: Option<&AppendCondition>,
    ) -> Result<AppendResult, AppendError> {
        let mut state = self.lock();
        let plan = state
            .index
            .check_append(stream, expected, &events, condition)?;
        let first_position = match plan {
            AppendPlan::AlreadyWritten(result) => return Ok(result),
            AppendPlan::Write { first_position, .. } => first_position,
        };
        let result = state.index.apply_append(stream, &events, first_position);
        for (offset, event) in events.into_iter().enumerate() {
            let version = StreamVersion(result.first_version.0 + offset as u64);
            let position = GlobalPosition(result.first_position.0 + offset as u64);
            state.events.push(RecordedEvent::from_data(
                stream.clone(),
                version,
                position,
                event,
            ));
        }
        let count = state.events.len() as u64;
        drop(state);
        self.event_count.advance_to(count);
        Ok(result)
    }

    fn read_stream_now(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let state = self.lock();
        let max = max.min(state.index.limits().read_events_max);
        let positions = state
            .index
            .stream_positions(stream, from, max)
            .ok_or_else(|| ReadError::StreamNotFound(stream.clone()))?;
        Ok(positions
            .iter()
            .map(|p| state.events[p.0 as usize].clone())
            .collect())
    }
}

impl EventStore for MemoryStore {
    async fn append_if(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: Option<&AppendCondition>,
    ) -> Result<AppendResult, AppendError> {
        self.append_now(stream, expected, events, condition)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.read_stream_now(stream, from, max)
    }

    async fn visit_stream<F>(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        mut visit: F,
    ) -> Result<u64, ReadError>
    where
        F: FnMut(EventView<'_>) -> ControlFlow<()> + Send,
    {
        let state = self.lock();
        let positions = state
            .index
            .stream_positions(stream, from, usize::MAX)
            .ok_or_else(|| ReadError::StreamNotFound(stream.clone()))?;
        let mut visited = 0;
        for position in positions {
            visited += 1;
            if visit(state.events[position.0 as usize].view()).is_break() {
                break;
            }
        }
        Ok(visited)
    }

    async fn read_all(
        &self,
        from: GlobalPosition,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let state = self.lock();
        let max = max.min(state.index.limits().read_events_max);
        let start = (from.0 as usize).min(state.events.len());
        let end = start.saturating_add(max).min(state.events.len());
        Ok(state.events[start..end].to_vec())
    }

    async fn read_matching(
        &self,
        query: &Query,
        after: Option<GlobalPosition>,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let state = self.lock();
        let max = max.min(state.index.limits().read_events_max);
        Ok(state
            .index
            .matching_positions(query, after, max)
            .iter()
            .map(|p| state.events[p.0 as usize].clone())
            .collect())
    }

    async fn find_event(&self, id: EventId) -> Result<Option<RecordedEvent>, ReadError> {
        let state = self.lock();
        Ok(state
            .index
            .position_of(id)
            .map(|p| state.events[p.0 as usize].clone()))
    }

    async fn current_version(&self, stream: &StreamId) -> Result<CurrentVersion, ReadError> {
        Ok(self.lock().index.current_version(stream))
    }

    async fn event_count(&self) -> Result<u64, ReadError> {
        Ok(self.event_count.get())
    }

    async fn wait_for_event_count_above(&self, count: u64) -> Result<(), ReadError> {
        self.event_count.wait_above(count).await;
        Ok(())
    }

    async fn save_snapshot(
        &self,
        stream: &StreamId,
        snapshot: Snapshot,
    ) -> Result<(), SnapshotError> {
        let mut state = self.lock();
        state
            .index
            .limits()
            .check_snapshot(&snapshot.state)
            .map_err(SnapshotError::LimitExceeded)?;
        let actual = state.index.current_version(stream);
        crate::store::check_snapshot_in_stream(stream, snapshot.version, actual)?;
        let existing = state.snapshots.get(stream).map(|s| s.version);
        if crate::store::snapshot_replaces(existing, snapshot.version) {
            state.snapshots.insert(stream.clone(), snapshot);
        }
        Ok(())
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, ReadError> {
        Ok(self.lock().snapshots.get(stream).cloned())
    }
}
