//! `evsource`: the CSMS node as a program.
//!
//! ```text
//! evsource serve --store <url> --listen <addr> [--operator-token-file <file>]
//!                [--heartbeat-interval <seconds>] [--node-id <id>]
//! evsource register --store <url> --station <id>      (reads the password from stdin)
//! ```
//!
//! The operator token comes from `--operator-token-file` or the environment variable
//! `EVSOURCE_OPERATOR_TOKEN`, never from the command line (where `ps` would show it).
//! Logging goes to stderr; `EVSOURCE_LOG` sets the level (error, warn, info, debug, trace).

use std::io::Read;
use std::net::SocketAddr;
use std::process::ExitCode;

use evsource::dispatcher::DispatcherConfig;
use evsource::environment::{Environment, SystemEnvironment};
use evsource::handler::HandlerConfig;
use evsource::node::auth::{self, PasswordCost};
use evsource::node::naive::TelemetryPlacement;
use evsource::node::{
    CsmsNode, Fencing, NodeConfig, OutcomeStall, StationBuild, UnlockPath, WireTap,
};
use evsource::session::SessionConfig;
use evsource::store::AnyStore;

/// The allocator (feature `mimalloc`, on by default): see Cargo.toml.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage:
  evsource serve --store <url> --listen <addr> [--operator-token-file <file>]
                 [--heartbeat-interval <seconds>] [--node-id <id>]
  evsource register --store <url> --station <id>    (password on stdin)

stores: memory:  log:<directory>  postgres://user@host:port/database
the operator token: --operator-token-file, or the environment variable EVSOURCE_OPERATOR_TOKEN
charge points connect to ws://<addr>/ocpp/<id> (subprotocol ocpp1.6, HTTP Basic auth);
operators use http://<addr>/api/... with Authorization: Bearer <token>";

/// Shortest operator token accepted: a guessable token guards nothing.
const TOKEN_BYTES_MIN: usize = 16;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let level = std::env::var("EVSOURCE_LOG")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();
    let result = match args.first().map(String::as_str) {
        Some("serve") => Options::parse(
            &args[1..],
            &[
                "--store",
                "--listen",
                "--operator-token-file",
                "--heartbeat-interval",
                "--node-id",
            ],
        )
        .and_then(serve),
        Some("register") => {
            Options::parse(&args[1..], &["--store", "--station"]).and_then(register)
        }
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => Err(Failure::Usage("a command is required".into())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("evsource: {message}\n\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Run(message)) => {
            eprintln!("evsource: {message}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    /// The command line is wrong: exit 2 with the usage.
    Usage(String),
    /// The command could not do its work: exit 1.
    Run(String),
}

/// `--name value` pairs, each known and given at most once.
struct Options(Vec<(String, String)>);

impl Options {
    fn parse(args: &[String], known: &[&str]) -> Result<Options, Failure> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut rest = args.iter();
        while let Some(name) = rest.next() {
            if !known.contains(&name.as_str()) {
                return Err(Failure::Usage(format!("unknown option {name:?}")));
            }
            let Some(value) = rest.next() else {
                return Err(Failure::Usage(format!("{name} needs a value")));
            };
            if pairs.iter().any(|(n, _)| n == name) {
                return Err(Failure::Usage(format!("{name} given twice")));
            }
            pairs.push((name.clone(), value.clone()));
        }
        Ok(Options(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn required(&self, name: &str) -> Result<&str, Failure> {
        self.get(name)
            .ok_or_else(|| Failure::Usage(format!("{name} is required")))
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Run(format!("cannot start the runtime: {e}")))
}

/// A seed from the operating system's entropy: the edge where randomness enters.
fn os_seed() -> u64 {
    let mut bytes = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    }
}

fn operator_token(options: &Options) -> Result<String, Failure> {
    let token = match options.get("--operator-token-file") {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| Failure::Run(format!("cannot read the operator token file {path}: {e}")))?
            .trim()
            .to_owned(),
        None => std::env::var("EVSOURCE_OPERATOR_TOKEN").map_err(|_| {
            Failure::Usage(
                "an operator token is required: --operator-token-file <file> or EVSOURCE_OPERATOR_TOKEN"
                    .into(),
            )
        })?,
    };
    let usable = token.len() >= TOKEN_BYTES_MIN && token.bytes().all(|b| b.is_ascii_graphic());
    if !usable {
        return Err(Failure::Usage(format!(
            "the operator token must be at least {TOKEN_BYTES_MIN} printable ASCII characters"
        )));
    }
    Ok(token)
}

fn serve(options: Options) -> Result<(), Failure> {
    let url = options.required("--store")?.to_owned();
    let listen: SocketAddr = options
        .required("--listen")?
        .parse()
        .map_err(|e| Failure::Usage(format!("--listen: {e} (e.g. 127.0.0.1:8180)")))?;
    let heartbeat_interval_secs = match options.get("--heartbeat-interval") {
        None => SessionConfig::default().heartbeat_interval_secs,
        Some(text) => text.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
            Failure::Usage("--heartbeat-interval: a positive number of seconds".into())
        })?,
    };
    let operator_token = operator_token(&options)?;
    // Nodes sharing a store need distinct ids. The listen address is one per machine and
    // survives a restart (so a restarted node finds its own checkpoint); a port the
    // system picks (0) is neither, so the process id stands in for it.
    let node_id = match options.get("--node-id") {
        Some(id) => id.to_owned(),
        None if listen.port() == 0 => format!("node-{}-pid{}", listen.ip(), std::process::id()),
        None => format!("node-{listen}"),
    };
    let config = NodeConfig {
        node_id,
        fencing: Fencing::Fenced,
        listen,
        operator_token,
        password_cost: PasswordCost::Standard,
        session: SessionConfig {
            heartbeat_interval_secs,
            ..SessionConfig::default()
        },
        dispatcher: DispatcherConfig::default(),
        handler: HandlerConfig::default(),
        seed: os_seed(),
        projection_save_every_events: 1_000,
        unlock_path: UnlockPath::Outbox,
        telemetry: TelemetryPlacement::OwnStream,
        stall: OutcomeStall::none(),
        wire_tap: WireTap::none(),
        build: StationBuild::Current,
        connections_max: evsource::node::CONNECTIONS_MAX,
    };
    runtime()?.block_on(async move {
        let store = AnyStore::open(&url)
            .await
            .map_err(|e| Failure::Run(e.to_string()))?;
        let node = CsmsNode::start(store, config)
            .await
            .map_err(|e| Failure::Run(format!("cannot listen on {listen}: {e}")))?;
        // Tests and scripts read the bound address (port 0 picks one) from this line.
        println!("listening on {}", node.addr);
        let failed = node.failed();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("interrupted: shutting down");
                node.shutdown().await;
                Ok(())
            }
            _ = failed.wait() => {
                // Crash-only: stop here; the next start recovers from the store.
                Err(Failure::Run("a task of the node failed; restart to recover".into()))
            }
        }
    })
}

fn register(options: Options) -> Result<(), Failure> {
    let url = options.required("--store")?.to_owned();
    let station = options.required("--station")?.to_owned();
    auth::check_station_id(&station).map_err(|e| Failure::Usage(e.to_string()))?;
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .map_err(|e| Failure::Run(format!("cannot read the password from stdin: {e}")))?;
    let password = password.trim_end_matches(['\r', '\n']);
    auth::check_password(password).map_err(|e| Failure::Usage(e.to_string()))?;
    let mut env = SystemEnvironment::new(os_seed());
    let hash = auth::hash_password(password, auth::salt_from(&mut env), PasswordCost::Standard);
    runtime()?.block_on(async move {
        let store = AnyStore::open(&url)
            .await
            .map_err(|e| Failure::Run(e.to_string()))?;
        auth::register(&store, &station, &hash, env.now_millis())
            .await
            .map_err(|e| Failure::Run(e.to_string()))?;
        println!("registered {station}");
        Ok(())
    })
}
