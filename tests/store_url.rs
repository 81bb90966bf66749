//! Choosing a backend by URL (`memory:`, `log:<dir>`, `postgres://…`): each form opens a
//! working store, and a bad or unreachable URL is a clear error naming what to write.

mod support;

use evsource::core::{ExpectedVersion, StreamVersion};
use evsource::store::{AnyStore, EventStore, StoreUrlError};
use support::{TempDir, event, stream};

async fn append_and_read_back(store: &AnyStore) {
    store
        .append(
            &stream("by-url"),
            ExpectedVersion::NoStream,
            vec![event(42)],
        )
        .await
        .expect("append");
    let events = store
        .read_stream(&stream("by-url"), StreamVersion(0), 10)
        .await
        .expect("read");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].id.0, 42);
}

#[tokio::test]
async fn memory_and_log_urls_open_working_stores() {
    let memory = AnyStore::open("memory:").await.expect("memory:");
    assert!(matches!(memory, AnyStore::Memory(_)));
    append_and_read_back(&memory).await;

    let dir = TempDir::new("store-url");
    let url = format!("log:{}", dir.path().display());
    let log = AnyStore::open(&url).await.expect("log:");
    assert!(matches!(log, AnyStore::Log(_)));
    append_and_read_back(&log).await;
    drop(log);
    // The log is durable: the same URL opens the same events.
    let reopened = AnyStore::open(&url).await.expect("log: again");
    assert_eq!(reopened.event_count().await.expect("count"), 1);
}

#[tokio::test]
async fn bad_urls_are_refused_with_the_forms_to_use() {
    for url in ["", "mysql://x", "memory", "file:data/x"] {
        let error = AnyStore::open(url).await.expect_err(url);
        assert!(
            matches!(error, StoreUrlError::UnknownScheme { .. }),
            "{url}: {error}"
        );
        assert!(error.to_string().contains("log:<directory>"), "{error}");
    }
    let error = AnyStore::open("log:").await.expect_err("empty log dir");
    assert!(error.to_string().contains("needs a directory"), "{error}");
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_urls_open_the_server_or_say_why_not() {
    use support::postgres::{SchemaGuard, fresh_schema, url};
    let guard = SchemaGuard {
        schema: fresh_schema("url"),
    };
    let base = url();
    let separator = if base.contains('?') { '&' } else { '?' };
    let store = AnyStore::open(&format!("{base}{separator}schema={}", guard.schema))
        .await
        .expect("postgres URL");
    assert!(matches!(store, AnyStore::Postgres(_)));
    append_and_read_back(&store).await;

    // Nothing listens on port 1: the error names the target.
    let error = AnyStore::open("postgres://postgres@127.0.0.1:1/test?connect_timeout=2")
        .await
        .expect_err("unreachable");
    let message = error.to_string();
    assert!(
        message.contains("cannot reach PostgreSQL at 127.0.0.1 port 1"),
        "{message}"
    );
    let error = AnyStore::open("postgres://h/db?schema=Bad-Name")
        .await
        .expect_err("bad schema");
    assert!(error.to_string().contains("schema"), "{error}");
}
