//! The deterministic simulator (DESIGN §2.10): the real CSMS node, simulated stations and
//! clients, each on its own simulated machine, run by madsim from one seed, with faults
//! drawn from the seed.
//!
//! Build with `RUSTFLAGS="--cfg madsim"` in its own target directory (`cargo xtask test`
//! does). Without the cfg this crate is empty: the simulation cannot run on real tokio.

#[cfg(madsim)]
pub mod bank;
#[cfg(madsim)]
pub mod decider_scenario;
#[cfg(madsim)]
pub mod faults;
#[cfg(madsim)]
pub mod projection_catchup;
#[cfg(madsim)]
pub mod seats;
#[cfg(madsim)]
pub mod timeline;
#[cfg(madsim)]
pub mod unlock_race;

/// Runs the simulation `make` builds under `seed`, in a fresh runtime on a fresh OS
/// thread: thread-local generators (tokio's, the rand crate's) must not carry over from
/// one seed to the next, or the same seed stops giving the same run. `Err` if it panicked.
#[cfg(madsim)]
pub fn on_fresh_thread<F, Fut>(seed: u64, make: F) -> std::thread::Result<Fut::Output>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future + 'static,
    Fut::Output: Send + 'static,
{
    std::thread::spawn(move || {
        let runtime =
            madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
        runtime.block_on(make())
    })
    .join()
}

/// [`on_fresh_thread`] with `timeline` collecting every event of the run: installed on the
/// fresh thread before the runtime exists, started when the simulation starts.
#[cfg(madsim)]
pub fn on_fresh_thread_traced<F, Fut>(
    seed: u64,
    timeline: timeline::Timeline,
    make: F,
) -> std::thread::Result<Fut::Output>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future + 'static,
    Fut::Output: Send + 'static,
{
    std::thread::spawn(move || {
        let _collecting = timeline.install();
        let runtime =
            madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
        runtime.block_on(async move {
            timeline.start();
            make().await
        })
    })
    .join()
}
