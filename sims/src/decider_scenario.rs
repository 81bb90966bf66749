//! Swarm-test your own aggregate: implement [`DeciderScenario`] — the decider, a workload
//! of concurrent commands, and the invariant — and [`run`] drives it the way the
//! built-in scenarios are driven: clients on their own simulated machines race the real
//! [`CommandHandler`] over the durable log on a (possibly slow) simulated disk, a client
//! sometimes resubmits a command with the same id, and the run is judged by your invariant
//! plus the store's own (I3 well-formed log, I8 one effect per command id).
//!
//! `sims/src/seats.rs` is a complete example in one file.

use std::time::Duration;

use evsource::core::{CommandId, RecordedEvent, StreamId, hash128};
use evsource::decider::{Aggregate, Decider};
use evsource::environment::FixedEnvironment;
use evsource::handler::{CommandHandler, HandlerConfig, Outcome};
use evsource::oracles::{
    Violation, check_commands_once, check_store_shape, fingerprint, read_all_events,
};
use evsource::store::LogStore;
use madsim::rand::Rng;
use madsim::runtime::Handle;

use crate::faults::{FaultPlan, simulated_log};

/// A domain to swarm-test.
pub trait DeciderScenario {
    type Aggregate: Aggregate<
            Command: Clone + Send + Sync + 'static,
            State: Send + Sync,
            Event: Send + Sync,
            Rejection: Send,
        > + 'static;

    /// Commands run before the clients start (e.g. scheduling a show), in order.
    fn setup() -> Vec<(StreamId, CommandOf<Self>)>;

    /// The `n`-th command of client `client`, drawn from `rng` (the simulator's seed).
    fn command(
        client: u64,
        n: u64,
        rng: &mut madsim::rand::GlobalRng,
    ) -> (StreamId, CommandOf<Self>);

    /// The domain's invariant over the whole stored history, judged after the run.
    fn check(events: &[RecordedEvent]) -> Result<(), Violation>;
}

/// The command type of a scenario's aggregate.
pub type CommandOf<S> = <<S as DeciderScenario>::Aggregate as Decider>::Command;

/// How many clients race, and how much each does.
pub const CLIENTS: u64 = 6;
pub const COMMANDS_PER_CLIENT: u64 = 8;

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeciderSummary {
    pub commands: u64,
    pub applied: u64,
    pub rejected: u64,
    pub fingerprint: u128,
}

/// Runs scenario `S` inside the current simulation and judges it.
pub async fn run<S: DeciderScenario>(faults: &FaultPlan) -> Result<DeciderSummary, Violation> {
    let handle = Handle::current();
    let (_disk, store) = simulated_log(faults);
    let handler: CommandHandler<LogStore, S::Aggregate> =
        CommandHandler::new(store.clone(), HandlerConfig::default());
    for (index, (stream, command)) in S::setup().into_iter().enumerate() {
        let mut env = FixedEnvironment::new(0, index as u64);
        let id = CommandId(hash128(format!("setup/{index}").as_bytes()));
        handler
            .handle(&mut env, &stream, id, &command)
            .await
            .map_err(|_| Violation {
                invariant: "setup",
                detail: format!("setup command {index} on {stream} was refused"),
            })?;
    }
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let handler = handler.clone();
        let node = handle
            .create_node()
            .name(format!("client-{client}"))
            .build();
        tasks.push(node.spawn(async move { run_client::<S>(client, &handler).await }));
    }
    let mut summary = DeciderSummary {
        commands: CLIENTS * COMMANDS_PER_CLIENT,
        ..DeciderSummary::default()
    };
    for task in tasks {
        let (applied, rejected) = task.await.expect("client finished");
        summary.applied += applied;
        summary.rejected += rejected;
    }
    let events = read_all_events(&store)
        .await
        .expect("the simulated store reads");
    summary.fingerprint = fingerprint(&events);
    check_store_shape(&events)?;
    check_commands_once(&events)?;
    S::check(&events)?;
    Ok(summary)
}

/// One client: its commands, with random pauses; one in four is submitted again with the
/// same command id right away (a double click), which must change nothing.
async fn run_client<S: DeciderScenario>(
    client: u64,
    handler: &CommandHandler<LogStore, S::Aggregate>,
) -> (u64, u64) {
    let mut rng = madsim::rand::thread_rng();
    let mut env = FixedEnvironment::new(0, rng.r#gen());
    let (mut applied, mut rejected) = (0, 0);
    for n in 0..COMMANDS_PER_CLIENT {
        let (stream, command) = S::command(client, n, &mut rng);
        let id = CommandId(hash128(format!("client/{client}/{n}").as_bytes()));
        let submissions = if rng.gen_bool(0.25) { 2 } else { 1 };
        for _ in 0..submissions {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..30))).await;
            match handler.handle(&mut env, &stream, id, &command).await {
                Ok(Outcome::Applied { .. }) => applied += 1,
                Ok(_) => {}
                Err(_) => rejected += 1,
            }
        }
    }
    (applied, rejected)
}
