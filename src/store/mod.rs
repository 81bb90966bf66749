//! The event store contract and its backends.
//!
//! Every backend implements [`EventStore`] and passes the same conformance suite
//! (`tests/conformance.rs`). The commit decisions — expected version, idempotency,
//! cross-stream conditions — are made by the pure [`crate::core::StoreIndex`]; backends only
//! add durability and reads.

pub mod any;
pub mod log;
pub mod memory;
#[cfg(all(feature = "postgres", not(madsim)))]
pub mod postgres;
pub mod subscription;

use std::future::Future;

use crate::core::limits::LimitViolation;
use crate::core::types::{
    AppendCondition, AppendResult, CurrentVersion, EventData, EventId, ExpectedVersion,
    GlobalPosition, Query, RecordedEvent, Snapshot, StreamId, StreamVersion,
};

pub use any::{AnyStore, StoreUrlError};
pub use log::{LogConfig, LogStore, OpenError};
pub use memory::MemoryStore;
pub use subscription::CatchUpSubscription;

/// Why an append stored nothing (or, for [`AppendError::OutcomeUnknown`], may have).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The optimistic-concurrency check failed: the stream was not in the expected state.
    #[error("wrong expected version on {stream}: expected {expected}, actual {actual}")]
    WrongExpectedVersion {
        stream: StreamId,
        expected: ExpectedVersion,
        actual: CurrentVersion,
    },
    /// An event id is already stored (or repeated within the append) and the append is not
    /// an exact retry of the earlier one: a partial overlap, another stream, another place.
    #[error("event id {event_id} is already stored{}; the append is not an exact retry", existing.map(|p| format!(" at {p}")).unwrap_or_default())]
    DuplicateEventId {
        event_id: EventId,
        existing: Option<GlobalPosition>,
    },
    /// The cross-stream condition failed: an event matching the query was appended after
    /// the given position. `position` is the first such event.
    #[error("append condition failed: a matching event was appended at {position}")]
    ConditionFailed { position: GlobalPosition },
    /// The input breaks a bound in [`crate::core::Limits`]. Nothing was written.
    #[error("limit exceeded: {0}")]
    LimitExceeded(LimitViolation),
    /// The write may or may not be durable (e.g. a sync failed). Retrying the same events
    /// with the same ids resolves it: an idempotent success or a clean first write.
    #[error("outcome unknown: {0}; retry with the same event ids to resolve it")]
    OutcomeUnknown(String),
    /// The store refuses writes (it failed earlier and must be reopened). Nothing written.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl AppendError {
    /// True for errors the caller may resolve by reloading and retrying.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            AppendError::WrongExpectedVersion { .. }
                | AppendError::ConditionFailed { .. }
                | AppendError::OutcomeUnknown(_)
        )
    }
}

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The stream has no events.
    #[error("stream {0} not found")]
    StreamNotFound(StreamId),
    /// Stored bytes failed their checksum when read back.
    #[error("corrupt data in {file} at offset {offset}: {reason}")]
    Corrupt {
        file: String,
        offset: u64,
        reason: String,
    },
    /// The storage failed or the store was shut down.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Why a snapshot was not saved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// A snapshot must describe a version the stream has.
    #[error("cannot snapshot {stream} at {version}: the stream is at {actual}")]
    VersionNotInStream {
        stream: StreamId,
        version: StreamVersion,
        actual: CurrentVersion,
    },
    #[error("limit exceeded: {0}")]
    LimitExceeded(LimitViolation),
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// The event store contract (DESIGN §2.1). Handles are cheap to clone and share one store.
///
/// Reads see only acknowledged (for durable backends: durable) events. Read calls return at
/// most [`crate::core::Limits::read_events_max`] events; page with the last position seen.
pub trait EventStore: Clone + Send + Sync + std::fmt::Debug + 'static {
    /// Appends `events` to `stream` atomically if `expected` admits the stream's state and,
    /// when given, `condition` holds. Re-appending the same event ids at the same place is
    /// an idempotent success with `written == false`.
    fn append_if(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: Option<&AppendCondition>,
    ) -> impl Future<Output = Result<AppendResult, AppendError>> + Send;

    /// [`append_if`](Self::append_if) without a cross-stream condition.
    fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> impl Future<Output = Result<AppendResult, AppendError>> + Send {
        self.append_if(stream, expected, events, None)
    }

    /// Events of `stream` from version `from`, in version order. Unknown stream: an error.
    fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, ReadError>> + Send;

    /// Events of all streams from position `from`, in position order.
    fn read_all(
        &self,
        from: GlobalPosition,
        max: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, ReadError>> + Send;

    /// Events matching `query` after position `after`, in position order.
    fn read_matching(
        &self,
        query: &Query,
        after: Option<GlobalPosition>,
        max: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, ReadError>> + Send;

    /// The event with id `id`, if stored.
    fn find_event(
        &self,
        id: EventId,
    ) -> impl Future<Output = Result<Option<RecordedEvent>, ReadError>> + Send;

    /// The stream's current version.
    fn current_version(
        &self,
        stream: &StreamId,
    ) -> impl Future<Output = Result<CurrentVersion, ReadError>> + Send;

    /// Number of readable events in the store (the next position).
    fn event_count(&self) -> impl Future<Output = Result<u64, ReadError>> + Send;

    /// Resolves once more than `count` events are readable. The live half of a catch-up
    /// subscription waits here.
    fn wait_for_event_count_above(
        &self,
        count: u64,
    ) -> impl Future<Output = Result<(), ReadError>> + Send;

    /// Saves `snapshot` as the stream's latest, replacing any older one.
    fn save_snapshot(
        &self,
        stream: &StreamId,
        snapshot: Snapshot,
    ) -> impl Future<Output = Result<(), SnapshotError>> + Send;

    /// The stream's latest snapshot, if any. Callers check `schema_version` themselves.
    fn load_snapshot(
        &self,
        stream: &StreamId,
    ) -> impl Future<Output = Result<Option<Snapshot>, ReadError>> + Send;
}

/// A snapshot must describe a version the stream has.
pub(crate) fn check_snapshot_in_stream(
    stream: &StreamId,
    version: StreamVersion,
    actual: CurrentVersion,
) -> Result<(), SnapshotError> {
    match actual {
        CurrentVersion::Current(last) if version <= last => Ok(()),
        _ => Err(SnapshotError::VersionNotInStream {
            stream: stream.clone(),
            version,
            actual,
        }),
    }
}

/// Whether a snapshot at `candidate` may replace `existing`: an older snapshot never
/// replaces a newer one (concurrent savers may race).
pub(crate) fn snapshot_replaces(existing: Option<StreamVersion>, candidate: StreamVersion) -> bool {
    existing.is_none_or(|existing| existing <= candidate)
}
