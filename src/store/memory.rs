//! The in-memory backend: the pure [`StoreIndex`] plus the events themselves.
//! Nothing survives the process; it exists for tests, models and benchmarks.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::core::index::{AppendPlan, IndexedEvent, StoreIndex};
use crate::core::limits::Limits;
use crate::core::types::{
    AppendCondition, AppendResult, CompactMetadata, CurrentVersion, EventData, EventId, EventView,
    ExpectedVersion, GlobalPosition, Query, RecordedEvent, Snapshot, StreamId, StreamVersion,
};
use crate::signal::Counter;
use crate::store::{AppendError, EventStore, ReadError, SnapshotError};

/// What the store keeps of an event beyond what its index knows: 24 bytes, the payload
/// moved in as the writer allocated it, the metadata compact in a shared arena. Stream,
/// version, id, type and tags are the index's, never copied per event.
#[derive(Debug)]
struct Body {
    payload: Box<[u8]>,
    /// Where the event's [`CompactMetadata`] starts in [`State::metadata`].
    metadata: usize,
}

#[derive(Debug)]
struct State {
    index: StoreIndex,
    /// Indexed by global position.
    bodies: Vec<Body>,
    /// Every event's compact metadata, back to back.
    metadata: Vec<u8>,
    snapshots: BTreeMap<StreamId, Snapshot>,
}

impl State {
    fn view(&self, position: GlobalPosition) -> EventView<'_> {
        let event = self.indexed(position);
        let body = &self.bodies[position.0 as usize];
        EventView::new(
            event.version,
            position,
            event.id,
            event.event_type,
            &body.payload,
            self.metadata_of(body),
        )
    }

    fn recorded(&self, position: GlobalPosition) -> RecordedEvent {
        let event = self.indexed(position);
        let body = &self.bodies[position.0 as usize];
        RecordedEvent {
            stream: event.stream.clone(),
            version: event.version,
            position,
            id: event.id,
            event_type: event.event_type.to_owned(),
            tags: event.tags().map(str::to_owned).collect(),
            metadata: self.metadata_of(body).decode(),
            payload: body.payload.to_vec(),
        }
    }

    fn indexed(&self, position: GlobalPosition) -> IndexedEvent<'_> {
        self.index
            .event(position)
            .expect("every stored body has its index entry")
    }

    fn metadata_of(&self, body: &Body) -> CompactMetadata<'_> {
        CompactMetadata::split(&self.metadata[body.metadata..])
            .expect("the arena holds what encode_compact wrote")
            .0
    }
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
                bodies: Vec::new(),
                metadata: Vec::new(),
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
        let mut guard = self.lock();
        let state = &mut *guard;
        let plan = state
            .index
            .check_append(stream, expected, &events, condition)?;
        let first_position = match plan {
            AppendPlan::AlreadyWritten(result) => return Ok(result),
            AppendPlan::Write { first_position, .. } => first_position,
        };
        let result = state.index.apply_append(stream, &events, first_position);
        state.bodies.reserve(events.len());
        for event in events {
            let metadata = state.metadata.len();
            event.metadata.encode_compact(&mut state.metadata);
            state.bodies.push(Body {
                payload: event.payload.into_boxed_slice(),
                metadata,
            });
        }
        let count = state.bodies.len() as u64;
        drop(guard);
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
        Ok(positions.iter().map(|&p| state.recorded(p)).collect())
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
        for &position in positions {
            visited += 1;
            if visit(state.view(position)).is_break() {
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
        let count = state.bodies.len() as u64;
        let start = from.0.min(count);
        let end = start.saturating_add(max as u64).min(count);
        Ok((start..end)
            .map(|p| state.recorded(GlobalPosition(p)))
            .collect())
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
            .map(|&p| state.recorded(p))
            .collect())
    }

    async fn find_event(&self, id: EventId) -> Result<Option<RecordedEvent>, ReadError> {
        let state = self.lock();
        Ok(state.index.position_of(id).map(|p| state.recorded(p)))
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
