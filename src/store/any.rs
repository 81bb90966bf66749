//! Choosing a backend by URL: `memory:`, `log:<dir>` or `postgres://…` (also
//! `postgresql://…`). [`AnyStore`] is the chosen backend behind the one [`EventStore`]
//! contract, so whatever takes a store takes any of them.

use std::ops::ControlFlow;

use crate::core::types::{
    AppendCondition, AppendResult, CurrentVersion, EventData, EventId, EventView, ExpectedVersion,
    GlobalPosition, Query, RecordedEvent, Snapshot, StreamId, StreamVersion,
};
use crate::store::{
    AppendError, EventStore, LogConfig, LogStore, MemoryStore, ReadError, SnapshotError,
};

/// One of the backends, chosen at run time.
#[derive(Clone, Debug)]
pub enum AnyStore {
    Memory(MemoryStore),
    Log(LogStore),
    #[cfg(all(feature = "postgres", not(madsim)))]
    Postgres(crate::store::postgres::PostgresStore),
}

/// Why a store URL did not open a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreUrlError {
    #[error(
        "unknown store URL {url:?}: use memory:, log:<directory> or postgres://user@host:port/database"
    )]
    UnknownScheme { url: String },
    #[error("store URL {url:?}: {reason}")]
    Invalid { url: String, reason: String },
    #[error("cannot open the log named by {url:?}: {source}")]
    Log {
        url: String,
        source: crate::store::OpenError,
    },
    #[cfg(all(feature = "postgres", not(madsim)))]
    #[error("cannot open the PostgreSQL store: {0}")]
    Postgres(#[from] crate::store::postgres::PostgresOpenError),
}

impl AnyStore {
    /// Opens the store `url` names. See the module documentation for the forms.
    pub async fn open(url: &str) -> Result<AnyStore, StoreUrlError> {
        if url == "memory:" {
            return Ok(AnyStore::Memory(MemoryStore::default()));
        }
        if let Some(dir) = url.strip_prefix("log:") {
            if dir.is_empty() {
                return Err(StoreUrlError::Invalid {
                    url: url.to_owned(),
                    reason: "log: needs a directory, e.g. log:./data".into(),
                });
            }
            return LogStore::open_dir(dir, LogConfig::default())
                .map(AnyStore::Log)
                .map_err(|source| StoreUrlError::Log {
                    url: url.to_owned(),
                    source,
                });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            #[cfg(all(feature = "postgres", not(madsim)))]
            return Ok(AnyStore::Postgres(
                crate::store::postgres::PostgresStore::open_url(url).await?,
            ));
            #[cfg(not(all(feature = "postgres", not(madsim))))]
            return Err(StoreUrlError::Invalid {
                url: url.to_owned(),
                reason: "this build has no PostgreSQL backend (feature `postgres`)".into(),
            });
        }
        Err(StoreUrlError::UnknownScheme {
            url: url.to_owned(),
        })
    }
}

/// Calls the same method on whichever backend `self` holds.
macro_rules! each_backend {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Memory($store) => $call,
            AnyStore::Log($store) => $call,
            #[cfg(all(feature = "postgres", not(madsim)))]
            AnyStore::Postgres($store) => $call,
        }
    };
}

impl EventStore for AnyStore {
    async fn append_if(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: Option<&AppendCondition>,
    ) -> Result<AppendResult, AppendError> {
        each_backend!(self, store => store.append_if(stream, expected, events, condition).await)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        each_backend!(self, store => store.read_stream(stream, from, max).await)
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
        each_backend!(self, store => store.visit_stream(stream, from, visit).await)
    }

    async fn read_all(
        &self,
        from: GlobalPosition,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        each_backend!(self, store => store.read_all(from, max).await)
    }

    async fn read_matching(
        &self,
        query: &Query,
        after: Option<GlobalPosition>,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        each_backend!(self, store => store.read_matching(query, after, max).await)
    }

    async fn find_event(&self, id: EventId) -> Result<Option<RecordedEvent>, ReadError> {
        each_backend!(self, store => store.find_event(id).await)
    }

    async fn current_version(&self, stream: &StreamId) -> Result<CurrentVersion, ReadError> {
        each_backend!(self, store => store.current_version(stream).await)
    }

    async fn event_count(&self) -> Result<u64, ReadError> {
        each_backend!(self, store => store.event_count().await)
    }

    async fn wait_for_event_count_above(&self, count: u64) -> Result<(), ReadError> {
        each_backend!(self, store => store.wait_for_event_count_above(count).await)
    }

    async fn save_snapshot(
        &self,
        stream: &StreamId,
        snapshot: Snapshot,
    ) -> Result<(), SnapshotError> {
        each_backend!(self, store => store.save_snapshot(stream, snapshot).await)
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, ReadError> {
        each_backend!(self, store => store.load_snapshot(stream).await)
    }
}
