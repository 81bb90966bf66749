//! The unlock board: a read model of every station's connectors and request outcomes, as
//! an operator's dashboard would show them. Built from the station streams only; one
//! record per station, so a save writes only the stations that changed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::types::RecordedEvent;
use crate::decider::Aggregate;
use crate::domain::station::{SessionId, Station, StationEvent};
use crate::projection::Projection;

/// Per station: who holds each connector, and how requests ended.
pub type BoardState = BTreeMap<String, StationBoard>;

/// One station's record on the board.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StationBoard {
    /// Connector → session currently holding it (requested or active).
    pub connectors: BTreeMap<u32, SessionId>,
    pub requested: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub timed_out: u64,
    pub stopped: u64,
}

/// See the module documentation.
#[derive(Debug)]
pub struct UnlockBoard;

impl Projection for UnlockBoard {
    type Key = String;
    type Value = StationBoard;
    const NAME: &'static str = "unlock-board";
    /// 2: one record per station (1 saved the whole board as one record).
    const SCHEMA: u32 = 2;

    fn key(event: &RecordedEvent) -> Option<String> {
        let station = crate::domain::station::station_of(&event.stream)?;
        Station::decode_event(&event.event_type, &event.payload).ok()?;
        Some(station.to_owned())
    }

    fn apply(record: &mut Option<StationBoard>, event: &RecordedEvent) {
        let Ok(decoded) = Station::decode_event(&event.event_type, &event.payload) else {
            return;
        };
        let board = record.get_or_insert_default();
        match decoded {
            StationEvent::UnlockRequested { connector, session } => {
                board.requested += 1;
                board.connectors.insert(connector, session);
            }
            StationEvent::UnlockAccepted { .. } => board.accepted += 1,
            StationEvent::UnlockRejected { connector, .. } => {
                board.rejected += 1;
                board.connectors.remove(&connector);
            }
            StationEvent::UnlockTimedOut { connector, .. } => {
                board.timed_out += 1;
                board.connectors.remove(&connector);
            }
            StationEvent::SessionStopped { connector, .. } => {
                board.stopped += 1;
                board.connectors.remove(&connector);
            }
        }
    }
}
