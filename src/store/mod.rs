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
pub mod remote;
pub mod subscription;

use std::future::Future;
use std::ops::ControlFlow;

use crate::core::limits::LimitViolation;
use crate::core::types::{
    AppendCondition, AppendResult, CurrentVersion, EventData, EventId, EventView, ExpectedVersion,
    GlobalPosition, Query, RecordedEvent, Snapshot, StreamId, StreamVersion,
};

pub use any::{AnyStore, StoreUrlError};
pub use log::{LogConfig, LogStore, OpenError};
pub use memory::MemoryStore;
pub use remote::{RemoteConfig, RemoteStore};
pub use subscription::CatchUpSubscription;

/// Why an append stored nothing (or, for [`AppendError::OutcomeUnknown`], may have).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
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

    /// Visits the events of `stream` from version `from`, in version order, borrowed from
    /// the store's own buffers: the replay path, which allocates nothing per event where
    /// the backend can avoid it. Visits at least every event readable when the call
    /// starts (events appended meanwhile may be visited too), unless `visit` breaks.
    /// Returns the number of events visited. Unknown stream: an error. `visit` runs while
    /// the backend may hold a lock: it must not call back into the store.
    ///
    /// The default pages through [`read_stream`](Self::read_stream) until a page comes
    /// back empty (it cannot know the backend's page limit).
    fn visit_stream<F>(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        visit: F,
    ) -> impl Future<Output = Result<u64, ReadError>> + Send
    where
        F: FnMut(EventView<'_>) -> ControlFlow<()> + Send,
    {
        visit_pages(self, stream, from, VISIT_PAGE_EVENTS, false, visit)
    }

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

/// Events per page of [`EventStore::visit_stream`]'s default, paged implementation.
const VISIT_PAGE_EVENTS: usize = 1024;

/// [`EventStore::visit_stream`] through pages of `read_stream(…, page)`. The visit ends at
/// an empty page — or, for a backend known to fill every page but the last
/// (`short_page_ends`), at the first page shorter than `page`, saving the empty read.
pub(crate) async fn visit_pages<S: EventStore, F>(
    store: &S,
    stream: &StreamId,
    from: StreamVersion,
    page: usize,
    short_page_ends: bool,
    mut visit: F,
) -> Result<u64, ReadError>
where
    F: FnMut(EventView<'_>) -> ControlFlow<()> + Send,
{
    let mut next = from;
    let mut visited = 0;
    loop {
        let events = store.read_stream(stream, next, page).await?;
        let Some(last) = events.last() else {
            return Ok(visited);
        };
        next = last.version.next();
        for event in &events {
            visited += 1;
            if visit(event.view()).is_break() {
                return Ok(visited);
            }
        }
        if short_page_ends && events.len() < page {
            return Ok(visited);
        }
    }
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

#[cfg(test)]
mod tests {
    //! The paged visit behind `visit_stream`'s default and the PostgreSQL backend: whatever
    //! the page and the backend's own cap, it sees every event once, in order.
    use super::*;
    use crate::core::types::Metadata;
    use crate::core::{Limits, StreamId};
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn paged_visits_see_every_event_once_whatever_the_page() {
        // A backend that returns at most 4 events per read, whatever is asked.
        let store = MemoryStore::new(Limits {
            read_events_max: 4,
            ..Limits::default()
        });
        let stream = StreamId::new("s").expect("valid");
        for id in 1..=23u128 {
            let event = EventData {
                id: EventId(id),
                event_type: "T".into(),
                tags: Vec::new(),
                metadata: Metadata::default(),
                payload: id.to_le_bytes().to_vec(),
            };
            store
                .append(&stream, ExpectedVersion::Any, vec![event])
                .await
                .expect("append");
        }
        // Ending at a short page is only for pages the backend fills: at most its cap.
        for (from, page, short_page_ends) in [
            (0, 7, false),
            (0, 4, true),
            (5, 3, true),
            (22, 3, false),
            (23, 3, true),
        ] {
            let mut versions = Vec::new();
            let visited = visit_pages(
                &store,
                &stream,
                StreamVersion(from),
                page,
                short_page_ends,
                |e| {
                    versions.push(e.version.0);
                    ControlFlow::Continue(())
                },
            )
            .await
            .expect("visit");
            assert_eq!(
                versions,
                (from..23).collect::<Vec<_>>(),
                "from {from}, page {page}"
            );
            assert_eq!(visited, 23 - from);
        }
    }
}
