//! The seed documents' domains as deciders: EV charging station (000/001), bank account
//! (004) and seat booking (002), the last both as one stream per show and across streams.

pub mod account;
pub mod board;
pub mod seats;
pub mod station;
