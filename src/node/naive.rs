//! The naive design N5 (`naive-telemetry-in-aggregate`, seed 000), on purpose: every
//! heartbeat and status report is recorded on the station's *business* stream, through
//! the aggregate, the way seed 000's `StationAggregate.receiveHeartbeat` appends
//! `StationSentHeartbeat` (the mirror reads them from there).
//!
//! The business rules are the station's own ([`Station`]); telemetry only bumps the
//! stream's version. That is the whole defect: an unlock request loads version `v`, a
//! heartbeat lands at `v + 1`, and the request's append is refused. A storm of status
//! notifications keeps the version moving faster than a command can load and append, so
//! commands give up on contention — they starve (I4).

use crate::core::types::{AppendCondition, CommandId, StreamId};
use crate::decider::{Aggregate, CodecError, Decider, EncodedEvent};
use crate::domain::station::{
    Station, StationCommand, StationEvent, StationNext, StationRejection,
};
use crate::environment::Environment;
use crate::handler::{CommandHandler, HandleError, HandlerConfig, Outcome};
use crate::mirror::TelemetryEvent;
use crate::node::StationBuild;
use crate::store::EventStore;

/// Where a node records what stations report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TelemetryPlacement {
    /// On each station's own `telemetry-…` stream, apart from the business aggregate
    /// (correct: telemetry never moves the business stream's version).
    #[default]
    OwnStream,
    /// N5: heartbeats and status reports on the business stream `station-…`, through
    /// the aggregate.
    BusinessAggregate,
}

/// The station aggregate of N5: the station's decider plus noted telemetry.
#[derive(Debug)]
pub enum ChattyStation {}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChattyCommand {
    Business(StationCommand),
    Note(TelemetryEvent),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChattyEvent {
    Business(StationEvent),
    Noted(TelemetryEvent),
}

impl Decider for ChattyStation {
    type Command = ChattyCommand;
    type Event = ChattyEvent;
    type State = <Station as Decider>::State;
    type Rejection = StationRejection;

    fn initial() -> Self::State {
        Station::initial()
    }

    fn decide(
        state: &Self::State,
        command: &ChattyCommand,
    ) -> Result<Vec<ChattyEvent>, StationRejection> {
        match command {
            ChattyCommand::Business(command) => Ok(Station::decide(state, command)?
                .into_iter()
                .map(ChattyEvent::Business)
                .collect()),
            ChattyCommand::Note(report) => Ok(vec![ChattyEvent::Noted(report.clone())]),
        }
    }

    fn evolve(state: Self::State, event: &ChattyEvent) -> Self::State {
        match event {
            ChattyEvent::Business(event) => Station::evolve(state, event),
            ChattyEvent::Noted(_) => state,
        }
    }
}

impl Aggregate for ChattyStation {
    const SNAPSHOT_SCHEMA: u32 = Station::SNAPSHOT_SCHEMA;

    fn encode_event(event: &ChattyEvent) -> EncodedEvent {
        match event {
            ChattyEvent::Business(event) => Station::encode_event(event),
            ChattyEvent::Noted(report) => {
                let (event_type, payload) = crate::decider::json::encode_event(report);
                EncodedEvent {
                    event_type,
                    tags: Vec::new(),
                    payload,
                }
            }
        }
    }

    fn decode_event(event_type: &str, payload: &[u8]) -> Result<ChattyEvent, CodecError> {
        match Station::decode_event(event_type, payload) {
            Ok(event) => Ok(ChattyEvent::Business(event)),
            Err(business) => TelemetryEvent::decode(event_type, payload)
                .map(ChattyEvent::Noted)
                .map_err(|_| business),
        }
    }

    fn encode_state(state: &Self::State) -> Vec<u8> {
        Station::encode_state(state)
    }

    fn decode_state(bytes: &[u8]) -> Result<Self::State, CodecError> {
        Station::decode_state(bytes)
    }
}

/// Whether a stored event on a station stream is noted telemetry (N5), not business.
pub fn is_noted_telemetry(event_type: &str, payload: &[u8]) -> bool {
    Station::decode_event(event_type, payload).is_err()
        && TelemetryEvent::decode(event_type, payload).is_ok()
}

/// The command handler of station streams, as the node's telemetry placement needs it.
#[derive(Debug)]
pub enum StationHandler<S> {
    Lean(CommandHandler<S, Station>),
    Chatty(CommandHandler<S, ChattyStation>),
    /// The next build's station aggregate (a rolling upgrade in the simulator).
    Next(CommandHandler<S, StationNext>),
}

impl<S: Clone> Clone for StationHandler<S> {
    fn clone(&self) -> Self {
        match self {
            StationHandler::Lean(handler) => StationHandler::Lean(handler.clone()),
            StationHandler::Chatty(handler) => StationHandler::Chatty(handler.clone()),
            StationHandler::Next(handler) => StationHandler::Next(handler.clone()),
        }
    }
}

impl<S: EventStore> StationHandler<S> {
    pub fn new(
        store: S,
        config: HandlerConfig,
        placement: TelemetryPlacement,
        build: StationBuild,
    ) -> Self {
        match (placement, build) {
            (TelemetryPlacement::BusinessAggregate, _) => {
                StationHandler::Chatty(CommandHandler::new(store, config))
            }
            (TelemetryPlacement::OwnStream, StationBuild::Current) => {
                StationHandler::Lean(CommandHandler::new(store, config))
            }
            (TelemetryPlacement::OwnStream, StationBuild::Next) => {
                StationHandler::Next(CommandHandler::new(store, config))
            }
        }
    }

    pub async fn handle<E: Environment>(
        &self,
        env: &mut E,
        stream: &StreamId,
        command_id: CommandId,
        command: &StationCommand,
    ) -> Result<Outcome, HandleError<StationRejection>> {
        self.handle_if(env, stream, command_id, command, None).await
    }

    /// [`CommandHandler::handle_if`] for either station aggregate.
    pub async fn handle_if<E: Environment>(
        &self,
        env: &mut E,
        stream: &StreamId,
        command_id: CommandId,
        command: &StationCommand,
        condition: Option<&AppendCondition>,
    ) -> Result<Outcome, HandleError<StationRejection>> {
        match self {
            StationHandler::Lean(handler) => {
                handler
                    .handle_if(env, stream, command_id, command, condition)
                    .await
            }
            StationHandler::Chatty(handler) => {
                let command = ChattyCommand::Business(command.clone());
                handler
                    .handle_if(env, stream, command_id, &command, condition)
                    .await
            }
            StationHandler::Next(handler) => {
                handler
                    .handle_if(env, stream, command_id, command, condition)
                    .await
            }
        }
    }

    /// Whether station reports go to the business stream (N5).
    pub fn notes_telemetry(&self) -> bool {
        matches!(self, StationHandler::Chatty(_))
    }

    /// N5 only: records `report` on the business stream, as a command of its own.
    /// Does nothing when telemetry has its own stream.
    pub async fn note<E: Environment>(
        &self,
        env: &mut E,
        stream: &StreamId,
        command_id: CommandId,
        report: &TelemetryEvent,
    ) -> Result<(), HandleError<StationRejection>> {
        match self {
            StationHandler::Lean(_) | StationHandler::Next(_) => Ok(()),
            StationHandler::Chatty(handler) => {
                let command = ChattyCommand::Note(report.clone());
                handler
                    .handle(env, stream, command_id, &command)
                    .await
                    .map(drop)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! N5's aggregate keeps the station's rules and only adds noted telemetry.
    use super::*;

    #[test]
    fn noted_telemetry_round_trips_and_leaves_the_business_state_alone() {
        let noted = ChattyEvent::Noted(TelemetryEvent::HeartbeatReceived);
        let encoded = ChattyStation::encode_event(&noted);
        assert_eq!(encoded.event_type, "HeartbeatReceived");
        let decoded = ChattyStation::decode_event(&encoded.event_type, &encoded.payload)
            .expect("noted telemetry decodes");
        assert_eq!(decoded, noted);
        assert!(is_noted_telemetry(&encoded.event_type, &encoded.payload));
        assert_eq!(
            ChattyStation::evolve(ChattyStation::initial(), &decoded),
            Station::initial()
        );
    }

    #[test]
    fn business_events_decode_as_the_stations_own() {
        let event = StationEvent::UnlockRequested {
            connector: 1,
            session: crate::domain::station::SessionId::new("s").unwrap(),
        };
        let encoded = Station::encode_event(&event);
        assert!(!is_noted_telemetry(&encoded.event_type, &encoded.payload));
        assert_eq!(
            ChattyStation::decode_event(&encoded.event_type, &encoded.payload),
            Ok(ChattyEvent::Business(event))
        );
        assert!(ChattyStation::decode_event("Nonsense", b"{}").is_err());
    }
}
