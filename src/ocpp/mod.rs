//! OCPP 1.6-J: the frames and the message subset the CSMS and the simulated stations
//! speak. Pure: text in, typed values out, and a typed error — never a panic — for
//! anything malformed.

pub mod answers;
pub mod frame;
pub mod messages;
pub mod schema;
pub mod time;

pub use frame::{ErrorCode, Frame, FrameError};
