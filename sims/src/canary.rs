//! The harness's self-test for I14 (no green on a panic): a scenario whose only job is to
//! panic, in one of the ways code under test can, at a seed-chosen moment. It is never in
//! the `all` mix; `--scenario panic-canary` runs it, and a swarm of it must fail every
//! seed, name the panic and go on with the other seeds.

use std::time::Duration;

use madsim::rand::Rng;
use madsim::runtime::Handle;

/// How a seed of the canary panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PanicSite {
    /// In the scenario's own task, as a failed assertion in a checker would.
    Scenario,
    /// In a task on another simulated machine, as a node's assertion would.
    OtherMachine,
    /// Inside code that catches the unwind and carries on, as a supervisor loop might:
    /// the panic never reaches the runner, and must fail the seed all the same.
    Swallowed,
}

/// Runs the canary: a few quiet tasks, then the seed-chosen panic. Returns only if the
/// panic was swallowed (and the runner must still fail the seed).
pub async fn run() -> PanicSite {
    let (site, delay) = {
        let mut rng = madsim::rand::thread_rng();
        let site = match rng.gen_range(0..3) {
            0 => PanicSite::Scenario,
            1 => PanicSite::OtherMachine,
            _ => PanicSite::Swallowed,
        };
        (site, Duration::from_millis(rng.gen_range(1..5_000)))
    };
    match site {
        PanicSite::Scenario => {
            tokio::time::sleep(delay).await;
            panic!("canary: a stored withdrawal exceeds the balance (deliberate)");
        }
        PanicSite::OtherMachine => {
            let node = Handle::current().create_node().name("canary").build();
            let task = node.spawn(async move {
                tokio::time::sleep(delay).await;
                panic!("canary: events arrived out of position order (deliberate)");
            });
            let _ = task.await;
            // madsim unwinds the whole run from the panicking task; never reached.
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        PanicSite::Swallowed => {
            tokio::time::sleep(delay).await;
            let caught = std::panic::catch_unwind(|| {
                panic!("canary: an index entry points past the log's end (deliberate, caught)")
            });
            assert!(caught.is_err(), "the closure panics");
        }
    }
    site
}
