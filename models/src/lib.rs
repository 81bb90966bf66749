//! stateright models of the append protocol and the outbox (DESIGN §2.11).
//!
//! Not written yet: see README.md, "Status". The models will drive the same pure code as
//! the implementation — re-exported here so that the dependency is already in place.

pub use evsource::core::{StoreIndex, expected_version_matches};
