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
