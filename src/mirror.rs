//! The station mirror: the CSMS's best knowledge of each physical connector.
//!
//! Telemetry (boots, heartbeats, status notifications, remote-start answers, transactions)
//! is recorded as [`TelemetryEvent`]s in a per-station stream `telemetry-<station>` with
//! `ExpectedVersion::Any` — never in the business aggregate, whose version it would bump
//! (seed 000's heartbeat race). The mirror is a pure fold over those events and, for the
//! releases of connectors, the business record's unlock outcomes and session ends (so a
//! release whose telemetry was lost is still known), so a rebuild from position 0 equals
//! live processing (I7). Times are the CSMS's own recorded times;
//! the station's timestamps are kept as data only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::types::{
    CommandId, EventData, EventId, GlobalPosition, Metadata, StreamId, StreamIdError,
};
use crate::decider::{CodecError, json};
use crate::ocpp::messages::{
    ChargePointErrorCode, ChargePointStatus, Reason, RemoteStartStopStatus,
};
use crate::ocpp::messages::{StartTransactionReq, StopTransactionReq};

/// One fact the CSMS learned from or about a station.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum TelemetryEvent {
    BootAccepted {
        vendor: String,
        model: String,
    },
    HeartbeatReceived,
    StatusReported {
        connector: u32,
        status: ChargePointStatus,
        error_code: ChargePointErrorCode,
        station_timestamp: Option<String>,
    },
    RemoteStartAnswered {
        connector: u32,
        id_tag: String,
        status: RemoteStartStopStatus,
    },
    /// The transaction id is this event's global position + 1 (unique, stable on replay).
    TransactionStarted {
        connector: u32,
        id_tag: String,
        meter_start: i64,
        station_timestamp: String,
        /// The answer's idTagInfo: `true` (Accepted) when the CSMS had released this
        /// connector for the idTag, `false` (Invalid) otherwise. Earlier records, made
        /// before the check, were all answered Accepted.
        #[serde(default = "accepted_before_the_check")]
        id_tag_accepted: bool,
    },
    TransactionStopped {
        transaction_id: i64,
        meter_stop: i64,
        reason: Option<Reason>,
        station_timestamp: String,
    },
    Disconnected,
}

impl TelemetryEvent {
    pub fn stream(station: &str) -> Result<StreamId, StreamIdError> {
        StreamId::new(&format!("telemetry-{station}"))
    }

    /// The stored form. `id` decides idempotency: see [`transaction_started_id`].
    pub fn to_data(&self, id: EventId, recorded_at_millis: u64) -> EventData {
        let (event_type, payload) = json::encode_event(self);
        EventData {
            id,
            event_type,
            tags: Vec::new(),
            metadata: Metadata {
                recorded_at_millis,
                ..Metadata::default()
            },
            payload,
        }
    }

    pub fn decode(event_type: &str, payload: &[u8]) -> Result<TelemetryEvent, CodecError> {
        json::decode_event(event_type, payload)
    }
}

/// The transaction id of a `TransactionStarted` stored at `position`.
pub fn transaction_id_at(position: GlobalPosition) -> i64 {
    i64::try_from(position.0 + 1).expect("positions fit in i64")
}

/// The event id of a StartTransaction, from the business key a station resends it with
/// (station, connector, idTag, timestamp, meterStart): a resent request maps to the same
/// event, which the store stores once, so the same transaction id is returned.
pub fn transaction_started_id(
    station: &str,
    connector: u32,
    id_tag: &str,
    station_timestamp: &str,
    meter_start: i64,
) -> EventId {
    let key = format!(
        "StartTransaction\u{1f}{station}\u{1f}{connector}\u{1f}{id_tag}\u{1f}{station_timestamp}\u{1f}{meter_start}"
    );
    EventId::derive(CommandId(crate::core::types::hash128(key.as_bytes())), 0)
}

/// The telemetry event recording a StartTransaction, with the id that makes a resent one
/// idempotent (see [`transaction_started_id`]) and the idTag's verdict.
fn accepted_before_the_check() -> bool {
    true
}

pub fn transaction_started(
    station: &str,
    request: StartTransactionReq,
    id_tag_accepted: bool,
) -> (EventId, TelemetryEvent) {
    let id = transaction_started_id(
        station,
        request.connector_id,
        &request.id_tag,
        &request.timestamp,
        request.meter_start,
    );
    let event = TelemetryEvent::TransactionStarted {
        connector: request.connector_id,
        id_tag: request.id_tag,
        meter_start: request.meter_start,
        station_timestamp: request.timestamp,
        id_tag_accepted,
    };
    (id, event)
}

/// The telemetry event recording a StopTransaction, with an id from what a station
/// resends it with (station, transaction id, timestamp, meterStop): a resent stop is
/// stored once.
pub fn transaction_stopped(
    station: &str,
    request: &StopTransactionReq,
) -> (EventId, TelemetryEvent) {
    let key = format!(
        "StopTransaction\u{1f}{station}\u{1f}{}\u{1f}{}\u{1f}{}",
        request.transaction_id, request.timestamp, request.meter_stop
    );
    let id = EventId::derive(CommandId(crate::core::types::hash128(key.as_bytes())), 0);
    let event = TelemetryEvent::TransactionStopped {
        transaction_id: request.transaction_id,
        meter_stop: request.meter_stop,
        reason: request.reason,
        station_timestamp: request.timestamp.clone(),
    };
    (id, event)
}

/// What the mirror knows of one connector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorView {
    pub status: ChargePointStatus,
    pub error_code: ChargePointErrorCode,
    pub station_timestamp: Option<String>,
    pub updated_at_millis: u64,
    /// The idTag the connector was last released for (remote start accepted or a
    /// transaction started), until it is Available again.
    pub id_tag: Option<String>,
    pub transaction_id: Option<i64>,
}

/// What the mirror knows of one station.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StationView {
    pub boot_accepted: bool,
    pub connected: bool,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub last_seen_millis: u64,
    pub connectors: BTreeMap<u32, ConnectorView>,
    /// Open transactions by id.
    pub open_transactions: BTreeMap<i64, u32>,
}

/// The mirror's answer to "did the station unlock this connector for this request?"
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnlockEvidence {
    /// The connector is Preparing/Charging for this very idTag: the unlock happened.
    ForThisRequest,
    /// The connector is busy with another idTag.
    ForAnother { id_tag: String },
    /// The connector is busy (Preparing, Charging, …) but for whom is not known yet.
    BusyUnknown,
    /// The connector is known and not released for anyone.
    Free,
    /// Nothing known about this connector.
    Unknown,
}

/// The read model. See the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StationMirror {
    stations: BTreeMap<String, StationView>,
}

impl StationMirror {
    pub fn new() -> StationMirror {
        StationMirror::default()
    }

    pub fn station(&self, station: &str) -> Option<&StationView> {
        self.stations.get(station)
    }

    pub fn stations(&self) -> impl Iterator<Item = (&String, &StationView)> {
        self.stations.iter()
    }

    /// Milliseconds since the station was last heard from.
    pub fn staleness_millis(&self, station: &str, now_millis: u64) -> Option<u64> {
        self.stations
            .get(station)
            .map(|view| now_millis.saturating_sub(view.last_seen_millis))
    }

    /// Whether a connector of `station` is released for `id_tag`: the answer to the
    /// station's Authorize for an idTag the CSMS issued.
    pub fn id_tag_in_use(&self, station: &str, id_tag: &str) -> bool {
        self.stations.get(station).is_some_and(|view| {
            view.connectors
                .values()
                .any(|c| c.id_tag.as_deref() == Some(id_tag))
        })
    }

    /// Whether the CSMS released `connector` of `station` for `id_tag` (a remote start
    /// the station accepted, or a transaction already started for it): the answer to a
    /// StartTransaction's idTag.
    pub fn released_for(&self, station: &str, connector: u32, id_tag: &str) -> bool {
        self.stations
            .get(station)
            .and_then(|view| view.connectors.get(&connector))
            .is_some_and(|c| c.id_tag.as_deref() == Some(id_tag))
    }

    /// Evidence for deciding an ambiguous remote start (a lost or refused answer).
    pub fn unlock_evidence(&self, station: &str, connector: u32, id_tag: &str) -> UnlockEvidence {
        let Some(view) = self
            .stations
            .get(station)
            .and_then(|s| s.connectors.get(&connector))
        else {
            return UnlockEvidence::Unknown;
        };
        match &view.id_tag {
            Some(current) if current == id_tag => UnlockEvidence::ForThisRequest,
            Some(current) => UnlockEvidence::ForAnother {
                id_tag: current.clone(),
            },
            None => UnlockEvidence::Free,
        }
    }

    /// Folds one telemetry event of `station`, recorded at `position` at `recorded_at`.
    /// Folds what the business record says about a connector's release: an unlock
    /// recorded Accepted releases it for its session (also when the station's answer,
    /// telemetry, was lost to a store outage), and a session recorded stopped ends the
    /// release unless a transaction runs. Only on a connector with no transaction.
    pub fn apply_business(
        &mut self,
        station: &str,
        event: &crate::domain::station::StationEvent,
        recorded_at_millis: u64,
    ) {
        use crate::domain::station::StationEvent;
        match event {
            StationEvent::UnlockAccepted { connector, session } => {
                let view = self.stations.entry(station.to_owned()).or_default();
                let entry = connector_entry(view, *connector, recorded_at_millis);
                if entry.transaction_id.is_none() && entry.id_tag.is_none() {
                    entry.id_tag = Some(session.as_str().to_owned());
                }
            }
            StationEvent::SessionStopped { connector, session } => {
                if let Some(entry) = self
                    .stations
                    .get_mut(station)
                    .and_then(|view| view.connectors.get_mut(connector))
                    && entry.transaction_id.is_none()
                    && entry.id_tag.as_deref() == Some(session.as_str())
                {
                    entry.id_tag = None;
                }
            }
            _ => {}
        }
    }

    pub fn apply(
        &mut self,
        station: &str,
        event: &TelemetryEvent,
        position: GlobalPosition,
        recorded_at_millis: u64,
    ) {
        let view = self.stations.entry(station.to_owned()).or_default();
        view.last_seen_millis = view.last_seen_millis.max(recorded_at_millis);
        match event {
            TelemetryEvent::BootAccepted { vendor, model } => {
                view.boot_accepted = true;
                view.connected = true;
                view.vendor = Some(vendor.clone());
                view.model = Some(model.clone());
            }
            TelemetryEvent::HeartbeatReceived => view.connected = true,
            // Acceptance is the station's state and survives a reconnect; only a new
            // BootNotification (after a reboot) is asked for again.
            TelemetryEvent::Disconnected => view.connected = false,
            TelemetryEvent::StatusReported {
                connector,
                status,
                error_code,
                station_timestamp,
            } => {
                let entry = connector_entry(view, *connector, recorded_at_millis);
                entry.status = *status;
                entry.error_code = *error_code;
                entry.station_timestamp = station_timestamp.clone();
                entry.updated_at_millis = recorded_at_millis;
                if matches!(
                    status,
                    ChargePointStatus::Available
                        | ChargePointStatus::Faulted
                        | ChargePointStatus::Unavailable
                ) {
                    entry.id_tag = None;
                    entry.transaction_id = None;
                }
            }
            TelemetryEvent::RemoteStartAnswered {
                connector,
                id_tag,
                status,
            } => {
                if *status == RemoteStartStopStatus::Accepted {
                    let entry = connector_entry(view, *connector, recorded_at_millis);
                    entry.id_tag = Some(id_tag.clone());
                    entry.updated_at_millis = recorded_at_millis;
                }
            }
            TelemetryEvent::TransactionStarted {
                connector,
                id_tag,
                id_tag_accepted,
                ..
            } => {
                let transaction_id = transaction_id_at(position);
                view.open_transactions.insert(transaction_id, *connector);
                let entry = connector_entry(view, *connector, recorded_at_millis);
                // An idTag answered Invalid is not one the CSMS released the connector
                // for: it must not pass a later Authorize or StartTransaction.
                if *id_tag_accepted {
                    entry.id_tag = Some(id_tag.clone());
                }
                entry.transaction_id = Some(transaction_id);
                entry.updated_at_millis = recorded_at_millis;
            }
            TelemetryEvent::TransactionStopped { transaction_id, .. } => {
                if let Some(connector) = view.open_transactions.remove(transaction_id)
                    && let Some(entry) = view.connectors.get_mut(&connector)
                    && entry.transaction_id == Some(*transaction_id)
                {
                    entry.transaction_id = None;
                }
            }
        }
    }
}

fn connector_entry(view: &mut StationView, connector: u32, now: u64) -> &mut ConnectorView {
    view.connectors
        .entry(connector)
        .or_insert_with(|| ConnectorView {
            status: ChargePointStatus::Available,
            error_code: ChargePointErrorCode::NoError,
            station_timestamp: None,
            updated_at_millis: now,
            id_tag: None,
            transaction_id: None,
        })
}
