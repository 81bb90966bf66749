//! Serves any [`EventStore`] over the remote protocol: one task per connection, one request
//! at a time on each. The simulator runs it on the store's own machine, so that CSMS nodes
//! reach their shared store over the simulated network as real nodes reach PostgreSQL.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::protocol::{self, Request, Response, WAIT_MILLIS_MAX};
use crate::signal::Shutdown;
use crate::store::EventStore;

/// Accepts connections on `listener` and answers their requests from `store` until
/// `shutdown` is triggered. A connection that sends a malformed frame is answered
/// [`Response::Malformed`] and closed; the store is not touched.
pub async fn serve<S: EventStore>(
    store: S,
    listener: TcpListener,
    shutdown: Shutdown,
) -> io::Result<()> {
    loop {
        tokio::select! {
            biased;
            () = shutdown.wait() => return Ok(()),
            accepted = listener.accept() => {
                let (stream, peer) = accepted?;
                let store = store.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        biased;
                        () = shutdown.wait() => {}
                        result = serve_connection(&store, stream) => {
                            if let Err(error) = result {
                                tracing::debug!(%peer, %error, "store connection ended");
                            }
                        }
                    }
                });
            }
        }
    }
}

async fn serve_connection<S: EventStore>(store: &S, mut stream: TcpStream) -> io::Result<()> {
    loop {
        let request = match read_frame::<Request, _>(&mut stream).await {
            Ok(Some(request)) => request,
            Ok(None) => return Ok(()),
            Err(FrameRead::Io(error)) => return Err(error),
            Err(FrameRead::Malformed(reason)) => {
                write_frame(&mut stream, &Response::Malformed(reason.clone())).await?;
                return Err(io::Error::new(io::ErrorKind::InvalidData, reason));
            }
        };
        let response = answer(store, request).await;
        write_frame(&mut stream, &response).await?;
    }
}

/// What the store says to `request`.
async fn answer<S: EventStore>(store: &S, request: Request) -> Response {
    let fit = |mut events: Vec<_>| {
        events.truncate(protocol::events_that_fit(&events));
        events
    };
    match request {
        Request::Append {
            stream,
            expected,
            events,
            condition,
        } => Response::Appended(
            store
                .append_if(&stream, expected, events, condition.as_ref())
                .await,
        ),
        Request::ReadStream { stream, from, max } => {
            Response::Events(store.read_stream(&stream, from, max).await.map(fit))
        }
        Request::ReadAll { from, max } => {
            Response::Events(store.read_all(from, max).await.map(fit))
        }
        Request::ReadMatching { query, after, max } => {
            Response::Events(store.read_matching(&query, after, max).await.map(fit))
        }
        Request::FindEvent { id } => Response::Event(store.find_event(id).await),
        Request::CurrentVersion { stream } => {
            Response::Version(store.current_version(&stream).await)
        }
        Request::EventCount => Response::Count(store.event_count().await),
        Request::WaitForEventCountAbove { count, wait_millis } => {
            let wait = Duration::from_millis(wait_millis.min(WAIT_MILLIS_MAX));
            match tokio::time::timeout(wait, store.wait_for_event_count_above(count)).await {
                Ok(Err(error)) => Response::Count(Err(error)),
                Ok(Ok(())) | Err(_) => Response::Count(store.event_count().await),
            }
        }
        Request::SaveSnapshot { stream, snapshot } => {
            Response::SnapshotSaved(store.save_snapshot(&stream, snapshot).await)
        }
        Request::LoadSnapshot { stream } => {
            Response::SnapshotLoaded(store.load_snapshot(&stream).await)
        }
    }
}

/// Why a frame was not read.
pub(crate) enum FrameRead {
    Io(io::Error),
    /// The bytes arrived but are not a frame of this protocol.
    Malformed(String),
}

/// Reads one frame; `None` at a clean end of stream before a frame begins.
pub(crate) async fn read_frame<T, R>(reader: &mut R) -> Result<Option<T>, FrameRead>
where
    T: for<'a> serde::Deserialize<'a>,
    R: AsyncRead + Unpin,
{
    let mut header = [0u8; 4];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(FrameRead::Io(error)),
    }
    let length =
        protocol::body_length(header).map_err(|error| FrameRead::Malformed(error.to_string()))?;
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await.map_err(FrameRead::Io)?;
    protocol::decode(&body)
        .map(Some)
        .map_err(|error| FrameRead::Malformed(error.to_string()))
}

/// Writes one frame and flushes it (the simulator's streams deliver nothing unflushed).
pub(crate) async fn write_frame<T, W>(writer: &mut W, message: &T) -> io::Result<()>
where
    T: serde::Serialize,
    W: AsyncWrite + Unpin,
{
    writer.write_all(&protocol::encode(message)).await?;
    writer.flush().await
}
