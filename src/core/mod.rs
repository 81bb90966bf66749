//! The pure core: types, limits and the store's commit logic. No I/O, no clock, no
//! randomness, no async — every runner (production, simulator, models, benches) drives it.

pub mod hash;
pub mod index;
pub mod limits;
pub mod types;

pub use index::{
    AppendPlan, StoreIndex, expected_version_matches, repeated_event_id, retry_fits_expected,
};
pub use limits::{LimitViolation, Limits};
pub use types::*;
