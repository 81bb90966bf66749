//! The unlock board: a read model of every station's connectors and request outcomes, as
//! an operator's dashboard would show them. Built from the station streams only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::types::RecordedEvent;
use crate::decider::Aggregate;
use crate::domain::station::{SessionId, Station, StationEvent};
use crate::projection::Projection;

/// Per station: who holds each connector, and how requests ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardState {
    pub stations: BTreeMap<String, StationBoard>,
}

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
    type State = BoardState;
    const NAME: &'static str = "unlock-board";
    const SCHEMA: u32 = 1;

    fn initial() -> BoardState {
        BoardState::default()
    }

    fn apply(state: &mut BoardState, event: &RecordedEvent) {
        let Some(station) = event.stream.as_str().strip_prefix("station-") else {
            return;
        };
        let Ok(decoded) = Station::decode_event(&event.event_type, &event.payload) else {
            return;
        };
        let board = state.stations.entry(station.to_owned()).or_default();
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
