//! The PostgreSQL backend: the path for users who outgrow one machine (DESIGN §2.1).
//!
//! Seed 000's design — one `events` table with a unique (stream_id, version) and a unique
//! event id — plus what the contract adds: idempotent retries, snapshots, the conditional
//! append across streams and **gapless, commit-ordered global positions**.
//!
//! # Positions
//!
//! A sequence hands out numbers before commit: a transaction that takes 10 and commits
//! after the one that took 11 lets a reader that already moved past 11 skip 10 forever.
//! Here every append transaction first locks the single row of `head` (`SELECT … FOR
//! UPDATE`), takes its positions from it, and holds the lock until it commits. PostgreSQL
//! makes a transaction visible before it releases its locks, so the next appender can only
//! take the following positions once every lower one is visible: positions are handed out
//! in commit order, and a rolled-back append gives its numbers back (the row update is
//! undone). A reader polling `position >= n` therefore never sees a hole that fills later.
//! The price is that appends are serialised — one commit at a time across all clients —
//! which also makes the expected-version and cross-stream checks simple and exact.
//!
//! # Failures
//!
//! A lost connection — before or during `COMMIT` — is an [`AppendError::OutcomeUnknown`]:
//! the caller retries with the same event ids, which is an idempotent success if the
//! append committed and a clean first write if it did not. A statement the server refused
//! rolled everything back ([`AppendError::Unavailable`]).
//!
//! # Waking readers
//!
//! Each append notifies the schema's channel with the new event count; a dedicated
//! connection LISTENs and raises a [`Counter`]. Readers also poll the head every
//! [`PostgresConfig::poll_interval`], so a lost notification (or listener) only delays them.
//!
//! The module depends on the real tokio and is compiled out of simulation builds.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::ControlFlow;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, NoTls, Row, Statement};

use crate::core::limits::Limits;
use crate::core::types::{
    AppendCondition, AppendResult, CommandId, CurrentVersion, EventData, EventId, EventView,
    ExpectedVersion, GlobalPosition, Metadata, Query, RecordedEvent, Snapshot, StreamId,
    StreamVersion,
};
use crate::core::{AppendPlan, expected_version_matches, repeated_event_id, retry_fits_expected};
use crate::signal::Counter;
use crate::store::{AppendError, EventStore, ReadError, SnapshotError, visit_pages};

/// How often a waiting reader polls the head when no notification arrives (the default of
/// [`PostgresConfig::poll_interval`]).
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// The schema a store uses unless its URL names another (`?schema=…`).
pub const DEFAULT_SCHEMA: &str = "evsource";

/// How to reach the database and where the store's tables live.
#[derive(Clone)]
pub struct PostgresConfig {
    /// Connection parameters, as tokio-postgres parses them (URL or `key=value` form).
    pub connection: tokio_postgres::Config,
    /// The schema holding the store's tables: lowercase letters, digits and `_`.
    pub schema: String,
    /// Connections kept for appends and reads (the listener has its own).
    pub pool_size: usize,
    /// How often a waiting reader polls when no notification arrives.
    pub poll_interval: Duration,
    pub limits: Limits,
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The connection config may hold a password: show where, not how.
        f.debug_struct("PostgresConfig")
            .field("hosts", &self.connection.get_hosts())
            .field("dbname", &self.connection.get_dbname())
            .field("user", &self.connection.get_user())
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

/// Why a PostgreSQL store did not open.
#[derive(Debug, thiserror::Error)]
pub enum PostgresOpenError {
    #[error("invalid PostgreSQL URL: {0}")]
    Url(String),
    #[error("cannot reach PostgreSQL at {target}: {source}")]
    Connect {
        target: String,
        source: tokio_postgres::Error,
    },
    #[error("opened schema {schema}, but cannot read its head: {reason}")]
    Head { schema: String, reason: String },
    #[error("cannot migrate schema {schema}: {source}")]
    Migrate {
        schema: String,
        source: tokio_postgres::Error,
    },
}

impl PostgresConfig {
    /// Parses `postgres://user@host:port/db?schema=name&pool_size=n` (or the `key=value`
    /// form). `schema` and `pool_size` are this store's own parameters; everything else
    /// goes to tokio-postgres.
    pub fn from_url(url: &str) -> Result<PostgresConfig, PostgresOpenError> {
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (url, ""),
        };
        let mut schema = DEFAULT_SCHEMA.to_owned();
        let mut pool_size = 8;
        let mut passed_on = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "schema" => schema = value.to_owned(),
                "pool_size" => {
                    pool_size = value
                        .parse()
                        .ok()
                        .filter(|&n: &usize| (1..=1024).contains(&n))
                        .ok_or_else(|| {
                            PostgresOpenError::Url(format!(
                                "pool_size must be 1..=1024, not {value:?}"
                            ))
                        })?;
                }
                _ => passed_on.push(pair),
            }
        }
        check_schema_name(&schema)?;
        let rest = if passed_on.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", passed_on.join("&"))
        };
        let connection = tokio_postgres::Config::from_str(&rest)
            .map_err(|e| PostgresOpenError::Url(format!("{e}")))?;
        Ok(PostgresConfig {
            connection,
            schema,
            pool_size,
            poll_interval: POLL_INTERVAL,
            limits: Limits::default(),
        })
    }

    fn target(&self) -> String {
        let hosts: Vec<String> = self
            .connection
            .get_hosts()
            .iter()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let ports = self.connection.get_ports();
        format!(
            "{} port {} database {}",
            hosts.join(","),
            ports.first().copied().unwrap_or(5432),
            self.connection.get_dbname().unwrap_or("(default)")
        )
    }
}

fn check_schema_name(schema: &str) -> Result<(), PostgresOpenError> {
    let valid = !schema.is_empty()
        && schema.len() <= 48
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.as_bytes()[0].is_ascii_digit();
    if valid {
        Ok(())
    } else {
        Err(PostgresOpenError::Url(format!(
            "schema must be 1..=48 bytes of a-z, 0-9 and _, not starting with a digit: {schema:?}"
        )))
    }
}

/// The schema's migrations, applied in order on first start; each runs once per schema.
/// `{s}` stands for the schema name.
const MIGRATIONS: &[&str] = &[
    // 1: events, the position head, snapshots.
    "CREATE TABLE {s}.head (
         singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
         next_position bigint NOT NULL
     );
     INSERT INTO {s}.head (next_position) VALUES (0);
     CREATE TABLE {s}.events (
         position bigint PRIMARY KEY,
         stream_id text NOT NULL,
         version bigint NOT NULL,
         event_id bytea NOT NULL,
         event_type text NOT NULL,
         tags text[] NOT NULL,
         command_id bytea,
         causation_id bytea,
         correlation_id bytea,
         recorded_at_millis bigint NOT NULL,
         payload bytea NOT NULL,
         CONSTRAINT events_stream_version UNIQUE (stream_id, version),
         CONSTRAINT events_event_id UNIQUE (event_id)
     );
     CREATE INDEX events_type ON {s}.events (event_type, position);
     CREATE INDEX events_tags ON {s}.events USING gin (tags);
     CREATE TABLE {s}.snapshots (
         stream_id text PRIMARY KEY,
         version bigint NOT NULL,
         schema_version integer NOT NULL,
         state bytea NOT NULL
     );",
];

const EVENT_COLUMNS: &str = "position, stream_id, version, event_id, event_type, tags, \
                             command_id, causation_id, correlation_id, recorded_at_millis, payload";

/// The fixed statements, prepared once per connection.
struct Statements {
    lock_head: Statement,
    set_head: Statement,
    read_head: Statement,
    find_ids: Statement,
    stream_version: Statement,
    insert_event: Statement,
    notify: Statement,
    read_stream: Statement,
    read_all: Statement,
    find_event: Statement,
    save_snapshot: Statement,
    load_snapshot: Statement,
}

impl Statements {
    async fn prepare(client: &Client, s: &str) -> Result<Statements, tokio_postgres::Error> {
        Ok(Statements {
            lock_head: client
                .prepare(&format!("SELECT next_position FROM {s}.head FOR UPDATE"))
                .await?,
            set_head: client
                .prepare(&format!("UPDATE {s}.head SET next_position = $1"))
                .await?,
            read_head: client
                .prepare(&format!("SELECT next_position FROM {s}.head"))
                .await?,
            find_ids: client
                .prepare(&format!(
                    "SELECT event_id, position, stream_id, version FROM {s}.events \
                     WHERE event_id = ANY($1)"
                ))
                .await?,
            stream_version: client
                .prepare(&format!(
                    "SELECT max(version) FROM {s}.events WHERE stream_id = $1"
                ))
                .await?,
            insert_event: client
                .prepare(&format!(
                    "INSERT INTO {s}.events ({EVENT_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                ))
                .await?,
            notify: client.prepare("SELECT pg_notify($1, $2)").await?,
            read_stream: client
                .prepare(&format!(
                    "SELECT {EVENT_COLUMNS} FROM {s}.events \
                     WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3"
                ))
                .await?,
            read_all: client
                .prepare(&format!(
                    "SELECT {EVENT_COLUMNS} FROM {s}.events \
                     WHERE position >= $1 ORDER BY position LIMIT $2"
                ))
                .await?,
            find_event: client
                .prepare(&format!(
                    "SELECT {EVENT_COLUMNS} FROM {s}.events WHERE event_id = $1"
                ))
                .await?,
            save_snapshot: client
                .prepare(&format!(
                    "INSERT INTO {s}.snapshots (stream_id, version, schema_version, state) \
                     VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (stream_id) DO UPDATE \
                     SET version = EXCLUDED.version, schema_version = EXCLUDED.schema_version, \
                         state = EXCLUDED.state \
                     WHERE {s}.snapshots.version <= EXCLUDED.version"
                ))
                .await?,
            load_snapshot: client
                .prepare(&format!(
                    "SELECT version, schema_version, state FROM {s}.snapshots WHERE stream_id = $1"
                ))
                .await?,
        })
    }
}

/// One pooled connection and its prepared statements.
struct Connection {
    client: Client,
    statements: Statements,
}

/// A small fixed-size pool: at most `pool_size` connections, opened on demand, and a
/// broken one is dropped instead of returned.
struct Pool {
    config: PostgresConfig,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

struct Pooled<'a> {
    pool: &'a Pool,
    connection: Option<Connection>,
    _permit: OwnedSemaphorePermit,
}

impl Pool {
    async fn get(&self) -> Result<Pooled<'_>, tokio_postgres::Error> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("the pool's semaphore is never closed");
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            std::iter::from_fn(|| idle.pop()).find(|c| !c.client.is_closed())
        };
        let connection = match reused {
            Some(connection) => connection,
            None => {
                let client = connect(&self.config.connection).await?;
                let statements = Statements::prepare(&client, &self.config.schema).await?;
                Connection { client, statements }
            }
        };
        Ok(Pooled {
            pool: self,
            connection: Some(connection),
            _permit: permit,
        })
    }
}

impl Pooled<'_> {
    fn get(&mut self) -> &mut Connection {
        self.connection.as_mut().expect("present until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take()
            && !connection.client.is_closed()
        {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(connection);
        }
    }
}

async fn connect(config: &tokio_postgres::Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "postgres connection closed");
        }
    });
    Ok(client)
}

struct Shared {
    pool: Pool,
    schema: String,
    channel: String,
    limits: Limits,
    /// The highest event count seen (notified or polled): wakes waiting readers.
    committed: Counter,
    poll_interval: Duration,
    /// Keeps the listening connection open for the store's lifetime.
    _listener: Client,
}

/// An [`EventStore`] on PostgreSQL. Clones share one pool. See the module documentation.
#[derive(Clone)]
pub struct PostgresStore {
    shared: Arc<Shared>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("config", &self.shared.pool.config)
            .finish_non_exhaustive()
    }
}

/// How an append failed inside its transaction.
enum Failure {
    /// Refused by the contract; the transaction changed nothing.
    Refused(AppendError),
    /// The database failed; `committing` tells whether COMMIT may have reached it.
    Database {
        error: tokio_postgres::Error,
        committing: bool,
    },
}

impl From<AppendError> for Failure {
    fn from(error: AppendError) -> Failure {
        Failure::Refused(error)
    }
}

fn before_commit(error: tokio_postgres::Error) -> Failure {
    Failure::Database {
        error,
        committing: false,
    }
}

impl PostgresStore {
    /// Connects, applies pending migrations and starts listening for new events.
    pub async fn open(config: PostgresConfig) -> Result<PostgresStore, PostgresOpenError> {
        let connect_error = |source| PostgresOpenError::Connect {
            target: config.target(),
            source,
        };
        let mut client = connect(&config.connection).await.map_err(connect_error)?;
        migrate(&mut client, &config.schema)
            .await
            .map_err(|source| PostgresOpenError::Migrate {
                schema: config.schema.clone(),
                source,
            })?;
        drop(client);

        let channel = format!("{}_events", config.schema);
        let committed = Counter::new(0);
        let (listener, mut connection) = config
            .connection
            .connect(NoTls)
            .await
            .map_err(connect_error)?;
        let notified = committed.clone();
        let listened = channel.clone();
        tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(note))) => {
                        if let Ok(count) = note.payload().parse::<u64>() {
                            notified.advance_to(count);
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => {
                        tracing::warn!(%error, channel = %listened, "listener lost; readers poll");
                        return;
                    }
                    None => return,
                }
            }
        });
        listener
            .batch_execute(&format!("LISTEN {channel}"))
            .await
            .map_err(connect_error)?;

        let store = PostgresStore {
            shared: Arc::new(Shared {
                pool: Pool {
                    permits: Arc::new(Semaphore::new(config.pool_size)),
                    idle: Mutex::new(Vec::new()),
                    config: config.clone(),
                },
                schema: config.schema.clone(),
                channel,
                limits: config.limits.clone(),
                committed,
                poll_interval: config.poll_interval,
                _listener: listener,
            }),
        };
        // The count at open, so that waiters start from the truth.
        store
            .event_count()
            .await
            .map_err(|e| PostgresOpenError::Head {
                schema: config.schema.clone(),
                reason: e.to_string(),
            })?;
        Ok(store)
    }

    /// Opens the store named by a `postgres://` URL.
    pub async fn open_url(url: &str) -> Result<PostgresStore, PostgresOpenError> {
        PostgresStore::open(PostgresConfig::from_url(url)?).await
    }

    pub fn schema(&self) -> &str {
        &self.shared.schema
    }

    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    fn table(&self) -> String {
        format!("{}.events", self.shared.schema)
    }

    async fn connection(&self) -> Result<Pooled<'_>, String> {
        self.shared
            .pool
            .get()
            .await
            .map_err(|e| format!("{}: {e}", self.shared.pool.config.target()))
    }

    /// The append transaction. See the module documentation for the protocol.
    async fn append_in(
        &self,
        connection: &mut Connection,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[EventData],
        condition: Option<&AppendCondition>,
    ) -> Result<AppendResult, Failure> {
        let statements = &connection.statements;
        let transaction = connection
            .client
            .transaction()
            .await
            .map_err(before_commit)?;
        // The global lock, held to commit: positions in commit order, without holes.
        let head: i64 = transaction
            .query_one(&statements.lock_head, &[])
            .await
            .map_err(before_commit)?
            .get(0);
        let ids: Vec<Vec<u8>> = events.iter().map(|e| id_bytes(e.id.0)).collect();
        let found = transaction
            .query(&statements.find_ids, &[&ids])
            .await
            .map_err(before_commit)?;
        let actual = match transaction
            .query_one(&statements.stream_version, &[&stream.as_str()])
            .await
            .map_err(before_commit)?
            .get::<_, Option<i64>>(0)
        {
            None => CurrentVersion::NoStream,
            Some(version) => CurrentVersion::Current(StreamVersion(version as u64)),
        };
        let plan = plan_append(stream, expected, events, actual, &found, head as u64)?;
        let first_version = match plan {
            AppendPlan::AlreadyWritten(result) => {
                // Nothing to write: end the transaction (releasing the lock) and report.
                let _ = transaction.rollback().await;
                return Ok(result);
            }
            AppendPlan::Write { first_version, .. } => first_version,
        };
        if let Some(condition) = condition
            && let Some(position) =
                first_match(&transaction, &self.shared.schema, condition).await?
        {
            return Err(AppendError::ConditionFailed { position }.into());
        }
        for (offset, (event, id)) in events.iter().zip(&ids).enumerate() {
            let position = head + offset as i64;
            let version = (first_version.0 + offset as u64) as i64;
            let command_id = event.metadata.command_id.map(|c| id_bytes(c.0));
            let causation_id = event.metadata.causation_id.map(|c| id_bytes(c.0));
            let correlation_id = event.metadata.correlation_id.map(|c| id_bytes(c.0));
            let recorded_at = event.metadata.recorded_at_millis as i64;
            let params: [&(dyn ToSql + Sync); 11] = [
                &position,
                &stream.as_str(),
                &version,
                id,
                &event.event_type,
                &event.tags,
                &command_id,
                &causation_id,
                &correlation_id,
                &recorded_at,
                &event.payload,
            ];
            if let Err(error) = transaction.execute(&statements.insert_event, &params).await {
                // Under the head lock no protocol-following writer can collide: a unique
                // violation means someone wrote the table directly. Nothing is committed.
                if error.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                    return Err(AppendError::Unavailable(format!(
                        "{} was written outside the store's protocol: {error}",
                        self.table()
                    ))
                    .into());
                }
                return Err(before_commit(error));
            }
        }
        let next = head + events.len() as i64;
        transaction
            .execute(&statements.set_head, &[&next])
            .await
            .map_err(before_commit)?;
        transaction
            .query_one(
                &statements.notify,
                &[&self.shared.channel, &next.to_string()],
            )
            .await
            .map_err(before_commit)?;
        transaction
            .commit()
            .await
            .map_err(|error| Failure::Database {
                error,
                committing: true,
            })?;
        self.shared.committed.advance_to(next as u64);
        Ok(AppendResult {
            first_version,
            last_version: StreamVersion(first_version.0 + events.len() as u64 - 1),
            first_position: GlobalPosition(head as u64),
            written: true,
        })
    }

    fn decode_rows(&self, rows: Vec<Row>) -> Result<Vec<RecordedEvent>, ReadError> {
        rows.into_iter().map(|row| self.decode_row(row)).collect()
    }

    fn decode_row(&self, row: Row) -> Result<RecordedEvent, ReadError> {
        let position: i64 = row.get(0);
        let corrupt = |reason: String| ReadError::Corrupt {
            file: format!("table {}", self.table()),
            offset: position as u64,
            reason,
        };
        let stream_name: &str = row.get(1);
        let stream = StreamId::with_limits(stream_name, &self.shared.limits)
            .map_err(|e| corrupt(format!("stream id {stream_name:?}: {e}")))?;
        let id = |column: usize| -> Result<Option<u128>, ReadError> {
            match row.get::<_, Option<&[u8]>>(column) {
                None => Ok(None),
                Some(bytes) => <[u8; 16]>::try_from(bytes)
                    .map(|b| Some(u128::from_be_bytes(b)))
                    .map_err(|_| {
                        corrupt(format!(
                            "column {column} holds {} bytes, not 16",
                            bytes.len()
                        ))
                    }),
            }
        };
        Ok(RecordedEvent {
            stream,
            version: StreamVersion(row.get::<_, i64>(2) as u64),
            position: GlobalPosition(position as u64),
            id: EventId(id(3)?.ok_or_else(|| corrupt("no event id".into()))?),
            event_type: row.get(4),
            tags: row.get(5),
            metadata: Metadata {
                command_id: id(6)?.map(CommandId),
                causation_id: id(7)?.map(EventId),
                correlation_id: id(8)?.map(CommandId),
                recorded_at_millis: row.get::<_, i64>(9) as u64,
            },
            payload: row.get(10),
        })
    }

    /// Runs one of the prepared reads on a pooled connection.
    async fn rows(
        &self,
        statement: fn(&Statements) -> &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, ReadError> {
        let mut pooled = self.connection().await.map_err(ReadError::Unavailable)?;
        let connection = pooled.get();
        connection
            .client
            .query(statement(&connection.statements), params)
            .await
            .map_err(unavailable)
    }

    fn read_max(&self, max: usize) -> i64 {
        max.min(self.shared.limits.read_events_max) as i64
    }
}

/// Applies the store's commit rule to what the transaction found: the same decisions, in
/// the same order, as [`crate::core::StoreIndex::check_append`] (the conformance suite
/// holds both to it).
fn plan_append(
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[EventData],
    actual: CurrentVersion,
    found: &[Row],
    head: u64,
) -> Result<AppendPlan, AppendError> {
    // Stored ids of this append: event id → (position, stream, version).
    let stored: BTreeMap<u128, (u64, &str, u64)> = found
        .iter()
        .map(|row| {
            let id: &[u8] = row.get(0);
            let id = u128::from_be_bytes(id.try_into().unwrap_or([0; 16]));
            let position: i64 = row.get(1);
            let version: i64 = row.get(3);
            (id, (position as u64, row.get::<_, &str>(2), version as u64))
        })
        .collect();
    if let Some(&(first_position, first_stream, first_version)) = stored.get(&events[0].id.0) {
        let contiguous = events.iter().enumerate().all(|(offset, event)| {
            stored.get(&event.id.0).is_some_and(|&(_, s, v)| {
                s == stream.as_str() && v == first_version + offset as u64
            })
        }) && first_stream == stream.as_str();
        if !(contiguous && retry_fits_expected(expected, StreamVersion(first_version))) {
            return Err(AppendError::DuplicateEventId {
                event_id: events[0].id,
                existing: Some(GlobalPosition(first_position)),
            });
        }
        return Ok(AppendPlan::AlreadyWritten(AppendResult {
            first_version: StreamVersion(first_version),
            last_version: StreamVersion(first_version + events.len() as u64 - 1),
            first_position: GlobalPosition(first_position),
            written: false,
        }));
    }
    if let Some((event, &(position, _, _))) = events
        .iter()
        .find_map(|e| stored.get(&e.id.0).map(|found| (e, found)))
    {
        return Err(AppendError::DuplicateEventId {
            event_id: event.id,
            existing: Some(GlobalPosition(position)),
        });
    }
    if !expected_version_matches(expected, actual) {
        return Err(AppendError::WrongExpectedVersion {
            stream: stream.clone(),
            expected,
            actual,
        });
    }
    Ok(AppendPlan::Write {
        first_version: actual.next_version(),
        first_position: GlobalPosition(head),
    })
}

/// Ids are stored big-endian, so that byte order is numeric order.
fn id_bytes(id: u128) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

/// `WHERE` clause and parameters selecting the events matching `query` after `after`.
/// An item matches when its types are empty or hold the event's type, and the event
/// carries all its tags (`@>`); the query matches when any item does.
fn matching_clause(
    query: &Query,
    after: Option<GlobalPosition>,
) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> =
        vec![Box::new(after.map_or(-1, |p| p.0 as i64))];
    let mut items = Vec::new();
    for item in &query.items {
        params.push(Box::new(item.event_types.clone()));
        let types = params.len();
        params.push(Box::new(item.tags.clone()));
        let tags = params.len();
        items.push(format!(
            "((cardinality(${types}::text[]) = 0 OR event_type = ANY(${types}::text[])) \
             AND tags @> ${tags}::text[])"
        ));
    }
    let items = if items.is_empty() {
        "false".to_owned()
    } else {
        items.join(" OR ")
    };
    (format!("position > $1 AND ({items})"), params)
}

async fn first_match(
    transaction: &tokio_postgres::Transaction<'_>,
    schema: &str,
    condition: &AppendCondition,
) -> Result<Option<GlobalPosition>, Failure> {
    let (clause, params) = matching_clause(&condition.query, condition.after);
    let sql =
        format!("SELECT position FROM {schema}.events WHERE {clause} ORDER BY position LIMIT 1");
    let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p as _).collect();
    let row = transaction
        .query_opt(&sql, &params)
        .await
        .map_err(before_commit)?;
    Ok(row.map(|row| GlobalPosition(row.get::<_, i64>(0) as u64)))
}

/// Creates the schema and applies the migrations it lacks, under an advisory lock so that
/// nodes starting together migrate once.
async fn migrate(client: &mut Client, schema: &str) -> Result<(), tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    transaction
        .execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            &[&format!("evsource.migrate.{schema}")],
        )
        .await?;
    transaction
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {schema}.migrations (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );"
        ))
        .await?;
    let applied: i32 = transaction
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {schema}.migrations"),
            &[],
        )
        .await?
        .get(0);
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        transaction
            .batch_execute(&migration.replace("{s}", schema))
            .await?;
        transaction
            .execute(
                &format!("INSERT INTO {schema}.migrations (version) VALUES ($1)"),
                &[&(index as i32 + 1)],
            )
            .await?;
    }
    transaction.commit().await
}

/// Drops a schema and everything in it (tests clean up with it).
pub async fn drop_schema(url: &str, schema: &str) -> Result<(), PostgresOpenError> {
    check_schema_name(schema)?;
    let config = PostgresConfig::from_url(url)?;
    let client =
        connect(&config.connection)
            .await
            .map_err(|source| PostgresOpenError::Connect {
                target: config.target(),
                source,
            })?;
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .map_err(|source| PostgresOpenError::Migrate {
            schema: schema.to_owned(),
            source,
        })
}

/// What a database failure means for an append. A lost connection is reported as
/// [`AppendError::OutcomeUnknown`] — retryable, and the caller's retry with the same event
/// ids settles it — even when COMMIT was never sent (then nothing committed, and the retry
/// is a clean first write); the message says which. An error the server reported for a
/// statement before COMMIT rolled the transaction back: [`AppendError::Unavailable`].
fn classify(error: tokio_postgres::Error, committing: bool) -> AppendError {
    let server_refused = error.as_db_error().is_some_and(|db| {
        // The server ending the session (pg_terminate_backend, shutdown) is a lost
        // connection, not a refusal of the statement.
        !matches!(
            *db.code(),
            SqlState::ADMIN_SHUTDOWN | SqlState::CRASH_SHUTDOWN | SqlState::CANNOT_CONNECT_NOW
        )
    });
    match (committing, server_refused) {
        (false, true) => AppendError::Unavailable(format!(
            "the append was rolled back, nothing written: {error}"
        )),
        (false, false) => AppendError::OutcomeUnknown(format!(
            "the connection was lost before COMMIT, so nothing committed: {error}"
        )),
        (true, _) => {
            AppendError::OutcomeUnknown(format!("the connection failed while committing: {error}"))
        }
    }
}

fn unavailable(error: impl fmt::Display) -> ReadError {
    ReadError::Unavailable(error.to_string())
}

impl EventStore for PostgresStore {
    async fn append_if(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: Option<&AppendCondition>,
    ) -> Result<AppendResult, AppendError> {
        self.shared
            .limits
            .check_append(&events)
            .map_err(AppendError::LimitExceeded)?;
        if let Some(event_id) = repeated_event_id(&events) {
            return Err(AppendError::DuplicateEventId {
                event_id,
                existing: None,
            });
        }
        let mut pooled = self.connection().await.map_err(AppendError::Unavailable)?;
        match self
            .append_in(pooled.get(), stream, expected, &events, condition)
            .await
        {
            Ok(result) => Ok(result),
            Err(Failure::Refused(error)) => Err(error),
            Err(Failure::Database { error, committing }) => Err(classify(error, committing)),
        }
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let rows = self
            .rows(
                |s| &s.read_stream,
                &[&stream.as_str(), &(from.0 as i64), &self.read_max(max)],
            )
            .await?;
        if rows.is_empty() && self.current_version(stream).await? == CurrentVersion::NoStream {
            return Err(ReadError::StreamNotFound(stream.clone()));
        }
        self.decode_rows(rows)
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
        // Pages of its own read limit are full but for the last: one query per page.
        let page = self.shared.limits.read_events_max;
        visit_pages(self, stream, from, page, true, visit).await
    }

    async fn read_all(
        &self,
        from: GlobalPosition,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let rows = self
            .rows(|s| &s.read_all, &[&(from.0 as i64), &self.read_max(max)])
            .await?;
        self.decode_rows(rows)
    }

    async fn read_matching(
        &self,
        query: &Query,
        after: Option<GlobalPosition>,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let (clause, mut params) = matching_clause(query, after);
        params.push(Box::new(self.read_max(max)));
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM {}.events WHERE {clause} ORDER BY position LIMIT ${}",
            self.shared.schema,
            params.len()
        );
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p as _).collect();
        let mut pooled = self.connection().await.map_err(ReadError::Unavailable)?;
        let rows = pooled
            .get()
            .client
            .query(&sql, &params)
            .await
            .map_err(unavailable)?;
        self.decode_rows(rows)
    }

    async fn find_event(&self, id: EventId) -> Result<Option<RecordedEvent>, ReadError> {
        let rows = self.rows(|s| &s.find_event, &[&id_bytes(id.0)]).await?;
        rows.into_iter()
            .next()
            .map(|row| self.decode_row(row))
            .transpose()
    }

    async fn current_version(&self, stream: &StreamId) -> Result<CurrentVersion, ReadError> {
        let rows = self
            .rows(|s| &s.stream_version, &[&stream.as_str()])
            .await?;
        Ok(
            match rows.first().and_then(|row| row.get::<_, Option<i64>>(0)) {
                None => CurrentVersion::NoStream,
                Some(version) => CurrentVersion::Current(StreamVersion(version as u64)),
            },
        )
    }

    async fn event_count(&self) -> Result<u64, ReadError> {
        let rows = self.rows(|s| &s.read_head, &[]).await?;
        let count = rows
            .first()
            .map(|row| row.get::<_, i64>(0) as u64)
            .ok_or_else(|| {
                ReadError::Unavailable(format!("{}.head is empty", self.shared.schema))
            })?;
        self.shared.committed.advance_to(count);
        Ok(count)
    }

    async fn wait_for_event_count_above(&self, count: u64) -> Result<(), ReadError> {
        loop {
            let woken = tokio::time::timeout(
                self.shared.poll_interval,
                self.shared.committed.wait_above(count),
            )
            .await;
            if woken.is_ok() || self.event_count().await? > count {
                return Ok(());
            }
        }
    }

    async fn save_snapshot(
        &self,
        stream: &StreamId,
        snapshot: Snapshot,
    ) -> Result<(), SnapshotError> {
        self.shared
            .limits
            .check_snapshot(&snapshot.state)
            .map_err(SnapshotError::LimitExceeded)?;
        let actual = self
            .current_version(stream)
            .await
            .map_err(|e| SnapshotError::Unavailable(e.to_string()))?;
        crate::store::check_snapshot_in_stream(stream, snapshot.version, actual)?;
        let mut pooled = self
            .connection()
            .await
            .map_err(SnapshotError::Unavailable)?;
        let connection = pooled.get();
        connection
            .client
            .execute(
                &connection.statements.save_snapshot,
                &[
                    &stream.as_str(),
                    &(snapshot.version.0 as i64),
                    &(snapshot.schema_version as i32),
                    &snapshot.state,
                ],
            )
            .await
            .map_err(|e| SnapshotError::Unavailable(e.to_string()))?;
        Ok(())
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, ReadError> {
        let rows = self.rows(|s| &s.load_snapshot, &[&stream.as_str()]).await?;
        Ok(rows.into_iter().next().map(|row| Snapshot {
            version: StreamVersion(row.get::<_, i64>(0) as u64),
            schema_version: row.get::<_, i32>(1) as u32,
            state: row.get(2),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store's own URL parameters are taken out, the rest reaches tokio-postgres, and
    /// bad values are refused with a message naming them.
    #[test]
    fn urls_are_parsed_and_bad_ones_refused() {
        let config = PostgresConfig::from_url(
            "postgres://postgres@127.0.0.1:5432/test?schema=fleet_a&pool_size=3&connect_timeout=5",
        )
        .expect("valid");
        assert_eq!(config.schema, "fleet_a");
        assert_eq!(config.pool_size, 3);
        assert_eq!(config.connection.get_dbname(), Some("test"));
        assert_eq!(
            config.connection.get_connect_timeout(),
            Some(&Duration::from_secs(5))
        );
        let default =
            PostgresConfig::from_url("host=127.0.0.1 user=postgres dbname=test").expect("valid");
        assert_eq!(default.schema, DEFAULT_SCHEMA);
        for (url, complaint) in [
            ("postgres://h/db?schema=Robert'); DROP", "schema"),
            ("postgres://h/db?schema=", "schema"),
            ("postgres://h/db?schema=1abc", "schema"),
            ("postgres://h/db?pool_size=0", "pool_size"),
            ("postgres://h:notaport/db", "invalid"),
        ] {
            let error = PostgresConfig::from_url(url).expect_err(url).to_string();
            assert!(error.contains(complaint), "{url}: {error}");
        }
    }
}
