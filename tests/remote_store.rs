//! The remote store's failure semantics (the conformance suite covers its contract): what a
//! client is told when the network or the server fails, and that the idempotent retry
//! settles an unknown outcome without a duplicate.

mod support;

use std::time::Duration;

use evsource::core::{ExpectedVersion, GlobalPosition, StreamVersion};
use evsource::store::remote::protocol::{self, Response};
use evsource::store::{AppendError, EventStore, MemoryStore, ReadError, RemoteConfig, RemoteStore};
use support::{event, events, stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn quick() -> RemoteConfig {
    RemoteConfig {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(500),
        wait_slice: Duration::from_millis(200),
        idle_connections_max: 4,
    }
}

/// Forwards every byte a client sends to `upstream` and drops every answer: the requests
/// take effect, and the client never learns it.
async fn answer_swallowing_proxy(upstream: std::net::SocketAddr) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut server = TcpStream::connect(upstream).await.expect("upstream");
                let (mut server_read, mut server_write) = tokio::io::split(&mut server);
                let mut discard = vec![0u8; 64 * 1024];
                let forward = tokio::io::copy(&mut client, &mut server_write);
                let drop_answers =
                    async { while server_read.read(&mut discard).await.is_ok_and(|n| n > 0) {} };
                let (_forwarded, ()) = tokio::join!(forward, drop_answers);
            });
        }
    });
    address
}

/// An append whose answer is lost is `OutcomeUnknown`, not a failure: the server stored it.
/// The retry with the same event ids is an idempotent success, and the stream holds the
/// events once.
#[tokio::test]
async fn a_lost_answer_is_an_unknown_outcome_that_the_retry_settles() {
    let inner = MemoryStore::default();
    let (served, direct) = support::remote::serve(inner.clone(), (), quick()).await;
    let proxy = answer_swallowing_proxy(served.address).await;
    let blind = RemoteStore::new(proxy, quick());
    let s = stream("unknown");
    let appended = events(1..4);
    let outcome = blind
        .append(&s, ExpectedVersion::NoStream, appended.clone())
        .await;
    assert!(
        matches!(outcome, Err(AppendError::OutcomeUnknown(_))),
        "{outcome:?}"
    );
    // The append did happen (wait for the server to apply it) ...
    tokio::time::timeout(Duration::from_secs(5), inner.wait_for_event_count_above(2))
        .await
        .expect("the server applied the append")
        .expect("wait");
    // ... and retrying it is an idempotent success that writes nothing new.
    let retried = direct
        .append(&s, ExpectedVersion::NoStream, appended)
        .await
        .expect("the retry settles the outcome");
    assert!(!retried.written);
    assert_eq!(retried.first_position, GlobalPosition(0));
    assert_eq!(direct.event_count().await.expect("count"), 3);
}

/// With no server listening nothing can have been sent: an append is `Unavailable` (not
/// unknown) and a read is `Unavailable`.
#[tokio::test]
async fn no_server_means_unavailable_and_nothing_sent() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    let client = RemoteStore::new(address, quick());
    let appended = client
        .append(&stream("s"), ExpectedVersion::Any, vec![event(1)])
        .await;
    assert!(
        matches!(appended, Err(AppendError::Unavailable(_))),
        "{appended:?}"
    );
    let read = client.event_count().await;
    assert!(matches!(read, Err(ReadError::Unavailable(_))), "{read:?}");
}

/// A server that restarts closes the client's pooled connections; the next read notices
/// and retries once on a fresh connection, so callers see no error.
#[tokio::test]
async fn reads_survive_a_server_restart() {
    let inner = MemoryStore::default();
    let (served, client) = support::remote::serve(inner.clone(), (), quick()).await;
    let address = served.address;
    client
        .append(&stream("s"), ExpectedVersion::Any, vec![event(1)])
        .await
        .expect("append");
    drop(served);
    // The old server's connection tasks are gone; a new one takes the same address.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let listener = TcpListener::bind(address).await.expect("rebind");
    let shutdown = evsource::signal::Shutdown::new();
    tokio::spawn(evsource::store::remote::serve(
        inner,
        listener,
        shutdown.clone(),
    ));
    assert_eq!(client.event_count().await.expect("count after restart"), 1);
    let events = client
        .read_stream(&stream("s"), StreamVersion(0), 10)
        .await
        .expect("read");
    assert_eq!(events.len(), 1);
    shutdown.trigger();
}

/// A long poll ends as soon as an event arrives, and a poll that sees none within its slice
/// is asked again rather than reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_wake_on_new_events_across_slices() {
    let (_served, client) = support::remote::serve(MemoryStore::default(), (), quick()).await;
    let waiter = {
        let client = client.clone();
        tokio::spawn(async move { client.wait_for_event_count_above(0).await })
    };
    // Several wait slices pass with nothing to report.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!waiter.is_finished());
    client
        .append(&stream("s"), ExpectedVersion::Any, vec![event(1)])
        .await
        .expect("append");
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the wait ends once an event is readable")
        .expect("task")
        .expect("wait");
}

/// Bytes that are not a frame are answered `Malformed` and the connection closed; the store
/// is unchanged and keeps serving other connections.
#[tokio::test]
async fn a_malformed_frame_is_refused_and_changes_nothing() {
    let inner = MemoryStore::default();
    let (served, client) = support::remote::serve(inner.clone(), (), quick()).await;
    for garbage in [
        protocol::encode(&"not a request"),
        (protocol::FRAME_BYTES_MAX as u32 + 1)
            .to_le_bytes()
            .to_vec(),
    ] {
        let mut raw = TcpStream::connect(served.address).await.expect("connect");
        raw.write_all(&garbage).await.expect("write");
        raw.flush().await.expect("flush");
        let mut header = [0u8; 4];
        raw.read_exact(&mut header).await.expect("answer header");
        let mut body = vec![0u8; protocol::body_length(header).expect("length")];
        raw.read_exact(&mut body).await.expect("answer body");
        let answer: Response = protocol::decode(&body).expect("a response");
        assert!(matches!(answer, Response::Malformed(_)), "{answer:?}");
        let mut rest = Vec::new();
        raw.read_to_end(&mut rest).await.expect("closed");
        assert!(
            rest.is_empty(),
            "the connection is closed after the refusal"
        );
    }
    assert_eq!(inner.event_count().await.expect("count"), 0);
    assert_eq!(client.event_count().await.expect("still serving"), 0);
}
