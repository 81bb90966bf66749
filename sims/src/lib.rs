//! The deterministic simulator (DESIGN §2.10), built with `--cfg madsim`.
//!
//! Not written yet: see README.md, "Status". The storage test double it will use to inject
//! disk faults already exists: [`evsource::storage::SimDisk`].

pub use evsource::storage::SimDisk;
