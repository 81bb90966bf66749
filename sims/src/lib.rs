//! The deterministic simulator (DESIGN §2.10): the real CSMS node, simulated stations and
//! clients, each on its own simulated machine, run by madsim from one seed, with faults
//! drawn from the seed.
//!
//! Build with `RUSTFLAGS="--cfg madsim"` in its own target directory (`cargo xtask test`
//! does). Without the cfg this crate is empty: the simulation cannot run on real tokio.

#[cfg(madsim)]
pub mod bank;
#[cfg(madsim)]
pub mod canary;
#[cfg(madsim)]
pub mod coverage;
#[cfg(madsim)]
pub mod decider_scenario;
#[cfg(madsim)]
pub mod faults;
#[cfg(madsim)]
pub mod impostors;
#[cfg(madsim)]
pub mod points;
#[cfg(madsim)]
pub mod projection_catchup;
#[cfg(madsim)]
pub mod seats;
#[cfg(madsim)]
pub mod store_fuzz;
#[cfg(madsim)]
pub mod timeline;
#[cfg(madsim)]
pub mod unlock_race;

/// A run's store history (I11) and the store's contents after quiescence, kept for
/// judging after the simulation: the check then runs on real time, so the swarm can
/// report what it costs.
#[cfg(madsim)]
#[derive(Clone, Debug, Default)]
pub struct StoreHistory {
    pub operations: Vec<evsource::oracles::history::Operation>,
    pub stored: Vec<evsource::core::RecordedEvent>,
    pub all_writers_recorded: bool,
    pub unrecorded: u64,
}

#[cfg(madsim)]
impl StoreHistory {
    /// Takes `history`'s operations, to be judged against `stored`.
    pub fn new(
        history: &evsource::oracles::history::History,
        stored: Vec<evsource::core::RecordedEvent>,
        all_writers_recorded: bool,
    ) -> StoreHistory {
        StoreHistory {
            operations: history.operations(),
            stored,
            all_writers_recorded,
            unrecorded: history.unrecorded(),
        }
    }

    /// Checks the history (see [`evsource::oracles::history::check_history`]); the
    /// statistics carry the check's own wall time.
    pub fn judge(
        &self,
    ) -> Result<evsource::oracles::history::HistoryStats, evsource::oracles::Violation> {
        let started = std::time::Instant::now();
        let check = evsource::oracles::history::HistoryCheck {
            // Calls past the history's bound went unrecorded: their events are no phantoms.
            all_writers_recorded: self.all_writers_recorded && self.unrecorded == 0,
            read_events_max: evsource::core::Limits::default().read_events_max,
        };
        let mut stats =
            evsource::oracles::history::check_history(&self.operations, &self.stored, check)?;
        stats.unrecorded = self.unrecorded;
        stats.checked_in = started.elapsed();
        Ok(stats)
    }
}

#[cfg(madsim)]
/// A panic inside a seed (I14): the code under test, a scenario or the runtime itself
/// (madsim panics when every task is blocked forever) panicked. The seed fails with it;
/// a swarm goes on with its other seeds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Panicked {
    /// The panic's message (its payload when that is a string).
    pub message: String,
    /// `file:line:column` where it panicked, when known.
    pub location: Option<String>,
    /// More panics followed the first (a panic while unwinding, a caught one and another).
    pub later: u32,
}

#[cfg(madsim)]
impl std::fmt::Display for Panicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "panicked: {}", self.message)?;
        if let Some(location) = &self.location {
            write!(f, " (at {location})")?;
        }
        if self.later > 0 {
            write!(f, "; {} more panic(s) after it", self.later)?;
        }
        Ok(())
    }
}

#[cfg(madsim)]
std::thread_local! {
    /// On a seed's thread: every panic of that thread so far (`None` on other threads).
    static SEED_PANICS: std::cell::RefCell<Option<Vec<Panicked>>> =
        const { std::cell::RefCell::new(None) };
}

#[cfg(madsim)]
/// Installs, once per process, a panic hook that records every panic on a seed's thread
/// — also one the code under test catches and swallows, so "a panic anywhere in a seed"
/// fails the seed even when no one unwinds to the runner. Panics on other threads go to
/// the hook that was there before.
fn record_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let recorded = SEED_PANICS.with(|panics| {
                let mut panics = panics.borrow_mut();
                let Some(panics) = panics.as_mut() else {
                    return false;
                };
                let payload = info.payload();
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "a panic with a non-string payload".to_owned());
                panics.push(Panicked {
                    message,
                    location: info.location().map(ToString::to_string),
                    later: 0,
                });
                true
            });
            if !recorded {
                previous(info);
            }
        }));
    });
}

#[cfg(madsim)]
/// The first panic of a seed's thread and how many followed it.
fn first_panic(mut panics: Vec<Panicked>) -> Option<Panicked> {
    let later = panics.len().saturating_sub(1) as u32;
    if panics.is_empty() {
        return None;
    }
    let mut first = panics.swap_remove(0);
    first.later = later;
    Some(first)
}

/// Runs `run` on a fresh OS thread that records its panics; `Err` with the first one if
/// any happened — whether it unwound out of `run` or was caught inside it.
#[cfg(madsim)]
fn on_seed_thread<T, R>(run: R) -> Result<T, Panicked>
where
    T: Send + 'static,
    R: FnOnce() -> T + Send + 'static,
{
    record_panics();
    let joined = std::thread::spawn(move || {
        SEED_PANICS.with(|panics| *panics.borrow_mut() = Some(Vec::new()));
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run));
        let panics = SEED_PANICS.with(|panics| panics.borrow_mut().take().unwrap_or_default());
        (outcome, panics)
    })
    .join();
    match joined {
        Ok((Ok(value), panics)) => match first_panic(panics) {
            None => Ok(value),
            Some(panicked) => Err(panicked),
        },
        Ok((Err(_), panics)) => Err(first_panic(panics).unwrap_or_else(|| Panicked {
            message: "the seed unwound without a recorded panic".to_owned(),
            location: None,
            later: 0,
        })),
        // Only a panic in the recording itself gets here.
        Err(_) => Err(Panicked {
            message: "the seed's thread died".to_owned(),
            location: None,
            later: 0,
        }),
    }
}

/// Runs the simulation `make` builds under `seed`, in a fresh runtime on a fresh OS
/// thread: thread-local generators (tokio's, the rand crate's) must not carry over from
/// one seed to the next, or the same seed stops giving the same run. `Err` if anything
/// in the seed panicked (I14), even a panic the code under test caught.
#[cfg(madsim)]
pub fn on_fresh_thread<F, Fut>(seed: u64, make: F) -> Result<Fut::Output, Panicked>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future + 'static,
    Fut::Output: Send + 'static,
{
    on_seed_thread(move || {
        let runtime =
            madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
        runtime.block_on(make())
    })
}

/// [`on_fresh_thread`] with `timeline` collecting every event of the run: installed on the
/// fresh thread before the runtime exists, started when the simulation starts.
#[cfg(madsim)]
pub fn on_fresh_thread_traced<F, Fut>(
    seed: u64,
    timeline: timeline::Timeline,
    make: F,
) -> Result<Fut::Output, Panicked>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future + 'static,
    Fut::Output: Send + 'static,
{
    on_seed_thread(move || {
        let _collecting = timeline.install();
        let runtime =
            madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
        runtime.block_on(async move {
            timeline.start();
            make().await
        })
    })
}
