//! stateright models of the append protocol and the outbox (DESIGN §2.11). Their
//! transitions call the project's own pure code — deciders, the expected-version rule,
//! event-id derivation — so what the checker proves is about the code that runs.

pub mod append;
pub mod outbox;
pub mod report;
pub mod seats;
pub mod trace;
