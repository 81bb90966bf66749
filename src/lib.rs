//! evsource: an event-sourced EV charging station management system (CSMS) and the
//! harness that verifies it — deterministic simulation, model checking and benchmarks
//! over one pure core. See ARCHITECTURE.md for the map.

pub mod chargepoint;
pub mod core;
pub mod decider;
pub mod dispatcher;
pub mod domain;
pub mod environment;
pub mod faultpoint;
pub mod handler;
pub mod mirror;
pub mod node;
pub mod ocpp;
pub mod oracles;
pub mod projection;
pub mod session;
pub mod signal;
pub mod storage;
pub mod store;
