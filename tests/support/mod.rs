//! Helpers shared by the integration tests: temporary directories and event builders.
#![allow(dead_code)] // each test crate uses a different subset

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use evsource::core::{EventData, EventId, Metadata, StreamId};

/// A directory removed when dropped.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "evsource-test-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub fn stream(name: &str) -> StreamId {
    StreamId::new(name).expect("valid stream id")
}

/// An event with id `id`, type `Type<id % 3>` and a payload derived from the id.
pub fn event(id: u128) -> EventData {
    EventData {
        id: EventId(id),
        event_type: format!("Type{}", id % 3),
        tags: Vec::new(),
        metadata: Metadata {
            recorded_at_millis: 1_000 + id as u64,
            ..Metadata::default()
        },
        payload: format!("payload-{id}").into_bytes(),
    }
}

pub fn tagged(id: u128, event_type: &str, tags: &[&str]) -> EventData {
    EventData {
        event_type: event_type.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ..event(id)
    }
}

pub fn events(ids: std::ops::Range<u128>) -> Vec<EventData> {
    ids.map(event).collect()
}

/// A fresh PostgreSQL store in a schema of its own, dropped with the guard.
#[cfg(feature = "postgres")]
pub mod postgres {
    use std::sync::atomic::{AtomicU64, Ordering};

    use evsource::core::Limits;
    use evsource::store::postgres::{PostgresConfig, PostgresStore, drop_schema};

    /// Where the tests find PostgreSQL: `EVSOURCE_POSTGRES_URL`, else the local server.
    /// There is no silent skip: build without the `postgres` feature to leave these out.
    pub fn url() -> String {
        std::env::var("EVSOURCE_POSTGRES_URL")
            .ok()
            .filter(|url| !url.is_empty())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned())
    }

    /// Drops the store's schema when the test ends, on a thread of its own (the test's
    /// runtime may be gone by then).
    pub struct SchemaGuard {
        pub schema: String,
    }

    impl Drop for SchemaGuard {
        fn drop(&mut self) {
            let schema = self.schema.clone();
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async { drop_schema(&url(), &schema).await })
            })
            .join();
        }
    }

    /// A unique schema name for this process.
    pub fn fresh_schema(label: &str) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        format!(
            "evsource_test_{label}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Opens a store in a fresh schema with `limits`; panics, naming the URL and the way
    /// out, when PostgreSQL cannot be reached.
    pub async fn fresh_store(label: &str, limits: Limits) -> (SchemaGuard, PostgresStore) {
        let schema = fresh_schema(label);
        let url = url();
        let mut config = PostgresConfig::from_url(&url).expect("EVSOURCE_POSTGRES_URL parses");
        config.schema = schema.clone();
        config.limits = limits;
        let guard = SchemaGuard { schema };
        let store = PostgresStore::open(config).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL tests need a server: {e}. Start one (README: PostgreSQL), point \
                 EVSOURCE_POSTGRES_URL at it, or build with --no-default-features to leave \
                 the backend out"
            )
        });
        (guard, store)
    }
}

/// Every event of `store`, once `requests` unlock requests have their outcome events —
/// polled every 100 ms, for at most `seconds`.
pub async fn wait_for_outcomes<S: evsource::store::EventStore>(
    store: &S,
    requests: usize,
    seconds: u64,
) -> Vec<evsource::core::RecordedEvent> {
    for _ in 0..seconds * 10 {
        let events = evsource::oracles::read_all_events(store)
            .await
            .expect("the store reads");
        let answered = events
            .iter()
            .filter(|e| {
                e.stream.as_str().starts_with("station-")
                    && ["UnlockAccepted", "UnlockRejected", "UnlockTimedOut"]
                        .contains(&e.event_type.as_str())
            })
            .count();
        if answered >= requests {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("not every accepted request got an outcome within {seconds} s");
}

/// A store served over loopback TCP by the remote protocol, and what keeps it served: the
/// server stops (and its directory goes) when the guard is dropped.
pub mod remote {
    use evsource::signal::Shutdown;
    use evsource::store::{EventStore, RemoteConfig, RemoteStore, remote};

    pub struct Served<G> {
        shutdown: Shutdown,
        pub address: std::net::SocketAddr,
        _inner: G,
    }

    impl<G> Drop for Served<G> {
        fn drop(&mut self) {
            self.shutdown.trigger();
        }
    }

    /// Serves `store` on 127.0.0.1 and returns a client of it; `inner` (a directory, say)
    /// lives as long as the guard.
    pub async fn serve<S: EventStore, G>(
        store: S,
        inner: G,
        config: RemoteConfig,
    ) -> (Served<G>, RemoteStore) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let shutdown = Shutdown::new();
        tokio::spawn(remote::serve(store, listener, shutdown.clone()));
        let client = RemoteStore::new(address, config);
        (
            Served {
                shutdown,
                address,
                _inner: inner,
            },
            client,
        )
    }
}

/// The tests that run a whole node: its configuration, and charge points `CP0`, `CP1`, …
/// each registered with a password of its own.
pub mod stations {
    use evsource::dispatcher::DispatcherConfig;
    use evsource::handler::HandlerConfig;
    use evsource::node::auth::{self, PasswordCost};
    use evsource::node::naive::TelemetryPlacement;
    use evsource::node::{Fencing, NodeConfig, OutcomeStall, StationBuild, UnlockPath, WireTap};
    use evsource::session::SessionConfig;
    use evsource::store::EventStore;

    /// The password of station `CP{index}`.
    pub fn password(index: usize) -> String {
        format!("password-of-station-{index}")
    }

    /// Registers `CP0` … `CP{count - 1}` with their passwords, at `now_millis`.
    pub async fn register<S: EventStore>(store: &S, count: usize, now_millis: u64) {
        for index in 0..count {
            let hash =
                auth::hash_password(&password(index), [index as u8; 16], PasswordCost::Minimal);
            auth::register(store, &format!("CP{index}"), &hash, now_millis)
                .await
                .expect("registered");
        }
    }

    /// A node for the tests that run one in process: on 127.0.0.1 at a port of its own,
    /// fenced, unlocks through the outbox, cheap password hashes, CALLs given up after 2 s,
    /// no stall point. Tests change what they need with `..node_config(…)`.
    pub fn node_config(node_id: &str, operator_token: &str, seed: u64) -> NodeConfig {
        NodeConfig {
            node_id: node_id.into(),
            fencing: Fencing::Fenced,
            listen: "127.0.0.1:0".parse().expect("address"),
            operator_token: operator_token.into(),
            password_cost: PasswordCost::Minimal,
            session: SessionConfig::default(),
            dispatcher: DispatcherConfig {
                call_timeout_millis: 2_000,
                ..DispatcherConfig::default()
            },
            handler: HandlerConfig::default(),
            seed,
            projection_save_every_events: 100,
            unlock_path: UnlockPath::Outbox,
            telemetry: TelemetryPlacement::OwnStream,
            stall: OutcomeStall::none(),
            wire_tap: WireTap::none(),
            build: StationBuild::Current,
            connections_max: evsource::node::CONNECTIONS_MAX,
        }
    }

    /// The wall clock in milliseconds, for charge points driven in real time.
    pub fn now_millis() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as u64
    }
}

/// Starts the `evsource` binary with `args` (a `serve` listening on port 0) and `env`;
/// returns the process and the address it says it listens on (its first line of output).
pub fn spawn_serve(
    args: &[&str],
    env: &[(&str, &str)],
    stderr: std::process::Stdio,
) -> (std::process::Child, std::net::SocketAddr) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_evsource"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("the evsource binary starts");
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut first)
        .expect("reads stdout");
    let addr = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("evsource {args:?} did not start: {first:?}"))
        .parse()
        .expect("an address");
    (child, addr)
}
