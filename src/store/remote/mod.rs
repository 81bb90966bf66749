//! A store reached over the network: [`serve`] puts any [`EventStore`] behind a small
//! request/response protocol ([`protocol`]), and [`RemoteStore`] is the client, itself an
//! [`EventStore`], so every component and the conformance suite run unchanged against it.
//!
//! It exists for the simulator, where PostgreSQL cannot run: several CSMS nodes share one
//! store server over the simulated network, as real nodes share PostgreSQL, and the faults
//! between them — partitions, a crashed or restarted server, answers that never come —
//! reach the nodes as they would from a database. Real deployments use PostgreSQL.
//!
//! What the client reports when the network fails:
//! * An append or snapshot whose request could not even be sent (no connection): the store
//!   is [`Unavailable`](AppendError::Unavailable); nothing was written.
//! * An append sent but not answered (timeout, connection lost, server crashed): its
//!   outcome is unknown ([`AppendError::OutcomeUnknown`]). The store may have written it;
//!   retrying the same events with the same ids settles it without a duplicate.
//! * A read that fails on a pooled connection (which the server may have closed while it
//!   was idle) is retried once on a fresh one; then it is [`ReadError::Unavailable`].

pub mod protocol;
mod server;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;

use crate::core::types::{
    AppendCondition, AppendResult, CurrentVersion, EventData, EventId, ExpectedVersion,
    GlobalPosition, Query, RecordedEvent, Snapshot, StreamId, StreamVersion,
};
use crate::store::{AppendError, EventStore, ReadError, SnapshotError};
use protocol::{Request, Response, WAIT_MILLIS_MAX};
use server::{FrameRead, read_frame, write_frame};

pub use server::serve;

/// How the client waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteConfig {
    /// Longest wait for a connection to open.
    pub connect_timeout: Duration,
    /// Longest wait for an answer once a request is sent; an append unanswered by then has
    /// an unknown outcome.
    pub request_timeout: Duration,
    /// How long the server may hold one wait for new events before the client asks again.
    pub wait_slice: Duration,
    /// Open connections kept for reuse.
    pub idle_connections_max: usize,
}

impl Default for RemoteConfig {
    fn default() -> RemoteConfig {
        RemoteConfig {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            wait_slice: Duration::from_secs(10),
            idle_connections_max: 8,
        }
    }
}

/// The client of a store [`serve`]d at an address. Clones share one connection pool.
#[derive(Clone, Debug)]
pub struct RemoteStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    address: SocketAddr,
    config: RemoteConfig,
    /// Connections with no request in flight.
    idle: Mutex<Vec<TcpStream>>,
}

/// Why a call got no answer.
#[derive(Debug)]
enum CallError {
    /// No connection could be opened: the request never left.
    NotSent(String),
    /// The request was (perhaps partly) sent, and no answer came.
    Unanswered(String),
}

impl CallError {
    fn message(&self) -> &str {
        match self {
            CallError::NotSent(message) | CallError::Unanswered(message) => message,
        }
    }
}

impl RemoteStore {
    /// A client of the store served at `address`. Connects lazily, on the first call.
    pub fn new(address: SocketAddr, config: RemoteConfig) -> RemoteStore {
        RemoteStore {
            shared: Arc::new(Shared {
                address,
                config,
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<TcpStream>> {
        self.shared.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn connect(&self) -> Result<TcpStream, CallError> {
        let address = self.shared.address;
        match tokio::time::timeout(
            self.shared.config.connect_timeout,
            TcpStream::connect(address),
        )
        .await
        {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(error)) => Err(CallError::NotSent(format!(
                "cannot connect to the store at {address}: {error}"
            ))),
            Err(_) => Err(CallError::NotSent(format!(
                "no connection to the store at {address} within {:?}",
                self.shared.config.connect_timeout
            ))),
        }
    }

    /// Sends `request` and waits up to `timeout` for its answer. `retry_stale`: a failure
    /// on a pooled connection is retried once on a fresh one (only for requests that
    /// change nothing).
    async fn call(
        &self,
        request: &Request,
        timeout: Duration,
        retry_stale: bool,
    ) -> Result<Response, CallError> {
        let pooled = self.idle().pop();
        let reused = pooled.is_some();
        let stream = match pooled {
            Some(stream) => stream,
            None => self.connect().await?,
        };
        match self.exchange(stream, request, timeout).await {
            Err(CallError::Unanswered(_)) if reused && retry_stale => {
                let stream = self.connect().await?;
                self.exchange(stream, request, timeout).await
            }
            result => result,
        }
    }

    async fn exchange(
        &self,
        mut stream: TcpStream,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let address = self.shared.address;
        let exchange = async {
            write_frame(&mut stream, request)
                .await
                .map_err(FrameRead::Io)?;
            read_frame::<Response, _>(&mut stream).await
        };
        let response = match tokio::time::timeout(timeout, exchange).await {
            Err(_) => {
                return Err(CallError::Unanswered(format!(
                    "no answer from the store at {address} within {timeout:?}"
                )));
            }
            Ok(Err(FrameRead::Io(error))) => {
                return Err(CallError::Unanswered(format!(
                    "connection to the store at {address} failed: {error}"
                )));
            }
            Ok(Err(FrameRead::Malformed(reason))) => {
                return Err(CallError::Unanswered(format!(
                    "the store at {address} sent a malformed answer: {reason}"
                )));
            }
            Ok(Ok(None)) => {
                return Err(CallError::Unanswered(format!(
                    "the store at {address} closed the connection"
                )));
            }
            Ok(Ok(Some(Response::Malformed(reason)))) => {
                return Err(CallError::Unanswered(format!(
                    "the store at {address} could not read the request: {reason}"
                )));
            }
            Ok(Ok(Some(response))) => response,
        };
        let mut idle = self.idle();
        if idle.len() < self.shared.config.idle_connections_max {
            idle.push(stream);
        }
        Ok(response)
    }

    /// A read: `Unavailable` when the network fails, a protocol error when the answer is
    /// of the wrong kind.
    async fn read<T>(
        &self,
        request: Request,
        timeout: Duration,
        unpack: impl FnOnce(Response) -> Option<Result<T, ReadError>>,
    ) -> Result<T, ReadError> {
        let response = self
            .call(&request, timeout, true)
            .await
            .map_err(|error| ReadError::Unavailable(error.message().to_owned()))?;
        unpack(response).unwrap_or_else(|| Err(ReadError::Unavailable(mismatch(&request))))
    }

    async fn read_events(&self, request: Request) -> Result<Vec<RecordedEvent>, ReadError> {
        self.read(
            request,
            self.shared.config.request_timeout,
            |response| match response {
                Response::Events(result) => Some(result),
                _ => None,
            },
        )
        .await
    }
}

fn mismatch(request: &Request) -> String {
    let kind = format!("{request:?}");
    let kind = kind.split([' ', '{', '(']).next().unwrap_or("request");
    format!("the store answered a {kind} request with the wrong kind of response")
}

impl EventStore for RemoteStore {
    async fn append_if(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: Option<&AppendCondition>,
    ) -> Result<AppendResult, AppendError> {
        let request = Request::Append {
            stream: stream.clone(),
            expected,
            events,
            condition: condition.cloned(),
        };
        match self
            .call(&request, self.shared.config.request_timeout, false)
            .await
        {
            Ok(Response::Appended(result)) => result,
            Ok(_) => Err(AppendError::OutcomeUnknown(mismatch(&request))),
            Err(CallError::NotSent(message)) => Err(AppendError::Unavailable(message)),
            Err(CallError::Unanswered(message)) => Err(AppendError::OutcomeUnknown(message)),
        }
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.read_events(Request::ReadStream {
            stream: stream.clone(),
            from,
            max,
        })
        .await
    }

    async fn read_all(
        &self,
        from: GlobalPosition,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.read_events(Request::ReadAll { from, max }).await
    }

    async fn read_matching(
        &self,
        query: &Query,
        after: Option<GlobalPosition>,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.read_events(Request::ReadMatching {
            query: query.clone(),
            after,
            max,
        })
        .await
    }

    async fn find_event(&self, id: EventId) -> Result<Option<RecordedEvent>, ReadError> {
        let timeout = self.shared.config.request_timeout;
        self.read(
            Request::FindEvent { id },
            timeout,
            |response| match response {
                Response::Event(result) => Some(result),
                _ => None,
            },
        )
        .await
    }

    async fn current_version(&self, stream: &StreamId) -> Result<CurrentVersion, ReadError> {
        let timeout = self.shared.config.request_timeout;
        let request = Request::CurrentVersion {
            stream: stream.clone(),
        };
        self.read(request, timeout, |response| match response {
            Response::Version(result) => Some(result),
            _ => None,
        })
        .await
    }

    async fn event_count(&self) -> Result<u64, ReadError> {
        let timeout = self.shared.config.request_timeout;
        self.read(Request::EventCount, timeout, count_of).await
    }

    /// Waits in slices: the server holds each request up to
    /// [`RemoteConfig::wait_slice`] and answers with the count it has, and the client asks
    /// again until the count is above `count` — the long poll standing in for
    /// PostgreSQL's LISTEN/NOTIFY.
    async fn wait_for_event_count_above(&self, count: u64) -> Result<(), ReadError> {
        let slice = self.shared.config.wait_slice;
        let wait_millis = (slice.as_millis() as u64).min(WAIT_MILLIS_MAX);
        let timeout = Duration::from_millis(wait_millis) + self.shared.config.request_timeout;
        loop {
            let request = Request::WaitForEventCountAbove { count, wait_millis };
            if self.read(request, timeout, count_of).await? > count {
                return Ok(());
            }
        }
    }

    async fn save_snapshot(
        &self,
        stream: &StreamId,
        snapshot: Snapshot,
    ) -> Result<(), SnapshotError> {
        let request = Request::SaveSnapshot {
            stream: stream.clone(),
            snapshot,
        };
        // A snapshot is a cache of what the stream already says: saving it again is
        // harmless, so a lost answer is simply "unavailable".
        match self
            .call(&request, self.shared.config.request_timeout, false)
            .await
        {
            Ok(Response::SnapshotSaved(result)) => result,
            Ok(_) => Err(SnapshotError::Unavailable(mismatch(&request))),
            Err(error) => Err(SnapshotError::Unavailable(error.message().to_owned())),
        }
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, ReadError> {
        let timeout = self.shared.config.request_timeout;
        let request = Request::LoadSnapshot {
            stream: stream.clone(),
        };
        self.read(request, timeout, |response| match response {
            Response::SnapshotLoaded(result) => Some(result),
            _ => None,
        })
        .await
    }
}

fn count_of(response: Response) -> Option<Result<u64, ReadError>> {
    match response {
        Response::Count(result) => Some(result),
        _ => None,
    }
}
