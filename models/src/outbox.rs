//! The outbox: the project's own [`Dispatcher`] reads unlock requests from the store and
//! sends RemoteStartTransaction to the project's own simulated [`ChargePoint`] over a
//! network that may lose, duplicate and reorder frames; the dispatcher may crash at any
//! step and resume from its durable checkpoint; time advances in call timeouts. The model
//! adds no protocol logic of its own: it moves frames, events and effects between the two
//! real state machines.
//!
//! Designs: `correct` (checkpoint only past requests whose outcome was read back),
//! `naive-early-checkpoint` (N4: the checkpoint passes a request as soon as it is read) and
//! `naive-side-effect` (N1: the command sends the RemoteStartTransaction itself and appends
//! the request and its answer only once the answer is back; no outbox).

use std::fmt;
use std::hash::{Hash, Hasher};

use evsource::chargepoint::{ChargePoint, ChargePointConfig};
use evsource::core::GlobalPosition;
use evsource::dispatcher::{CheckpointPolicy, DispatchEffect, Dispatcher, DispatcherConfig};
use evsource::domain::station::{SessionId, StationAnswer, StationEvent};
use evsource::mirror::UnlockEvidence;
use evsource::ocpp::Frame;
use evsource::ocpp::messages::RemoteStartStopStatus;
use stateright::{Model, Property};

const STATION: &str = "CP1";

/// Which outbox the dispatcher runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OutboxDesign {
    #[default]
    Correct,
    /// N4: the checkpoint advances before the send is confirmed.
    NaiveEarlyCheckpoint,
    /// N1: the side effect inside the command, before the append.
    NaiveSideEffect,
}

impl OutboxDesign {
    pub const ALL: [OutboxDesign; 3] = [
        OutboxDesign::Correct,
        OutboxDesign::NaiveEarlyCheckpoint,
        OutboxDesign::NaiveSideEffect,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OutboxDesign::Correct => "correct",
            OutboxDesign::NaiveEarlyCheckpoint => "naive-early-checkpoint",
            OutboxDesign::NaiveSideEffect => "naive-side-effect",
        }
    }
}

/// Bounds of one check: requests (one per connector) and fault budgets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxModel {
    pub requests: u8,
    pub crashes: u8,
    pub losses: u8,
    pub duplicates: u8,
    /// Call timeouts that may pass; enough for every retransmission the faults force.
    pub ticks: u8,
    pub design: OutboxDesign,
}

impl OutboxModel {
    pub fn new(requests: u8, crashes: u8, design: OutboxDesign) -> OutboxModel {
        OutboxModel {
            requests,
            crashes,
            losses: 1,
            duplicates: 1,
            ticks: 3,
            design,
        }
    }

    fn config(&self) -> DispatcherConfig {
        DispatcherConfig {
            call_timeout_millis: 1_000,
            retry_base_millis: 1_000,
            retry_max_millis: 1_000,
            undeliverable_after_millis: 1_000_000,
            checkpoint: match self.design {
                OutboxDesign::NaiveEarlyCheckpoint => CheckpointPolicy::OnRead,
                _ => CheckpointPolicy::AfterOutcome,
            },
            ..DispatcherConfig::default()
        }
    }
}

/// A state machine of the implementation, compared and hashed by its full `Debug` form
/// (neither the dispatcher nor the station is `Hash`, and they need not be for this).
#[derive(Clone)]
pub struct Machine<T>(pub T);

impl<T: fmt::Debug> fmt::Debug for Machine<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T: fmt::Debug> PartialEq for Machine<T> {
    fn eq(&self, other: &Self) -> bool {
        format!("{:?}", self.0) == format!("{:?}", other.0)
    }
}

impl<T: fmt::Debug> Eq for Machine<T> {}

impl<T: fmt::Debug> Hash for Machine<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        format!("{:?}", self.0).hash(state);
    }
}

/// A stored station event, in a Hash-able form.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Stored {
    Requested {
        connector: u32,
        session: String,
    },
    Answered {
        connector: u32,
        session: String,
        answer: Answer,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Answer {
    Accepted,
    Rejected,
    TimedOut,
}

impl Stored {
    fn to_event(&self) -> StationEvent {
        let (connector, session, answer) = match self {
            Stored::Requested { connector, session } => (*connector, session, None),
            Stored::Answered {
                connector,
                session,
                answer,
            } => (*connector, session, Some(*answer)),
        };
        let session = SessionId::new(session).expect("the model's session ids are valid");
        match answer {
            None => StationEvent::UnlockRequested { connector, session },
            Some(Answer::Accepted) => StationEvent::UnlockAccepted { connector, session },
            Some(Answer::Rejected) => StationEvent::UnlockRejected { connector, session },
            Some(Answer::TimedOut) => StationEvent::UnlockTimedOut { connector, session },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    pub store: Vec<Stored>,
    /// The dispatcher's durable checkpoint.
    pub checkpoint: Option<u64>,
    pub dispatcher: Machine<Dispatcher>,
    /// The next store position the dispatcher reads.
    pub read: usize,
    pub station: Machine<ChargePoint>,
    /// Frames on their way, kept sorted: the network has no order.
    pub to_station: Vec<String>,
    pub to_csms: Vec<String>,
    pub now: u64,
    pub crashes_left: u8,
    pub losses_left: u8,
    pub duplicates_left: u8,
    pub ticks_left: u8,
    /// Faults that struck, for the reachability properties.
    pub crashed: bool,
    pub lost: bool,
    /// N1 only: commands not yet run, and commands whose CALL is out awaiting its answer.
    pub commands: Vec<u8>,
    pub awaiting: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// The dispatcher reads the next stored event.
    Read,
    /// N1: command `r` runs: it sends its RemoteStartTransaction before storing anything.
    Command(u8),
    DeliverToStation(String),
    DeliverToCsms(String),
    Lose(String),
    Duplicate(String),
    /// A call timeout passes.
    Tick,
    /// The dispatcher crashes and restarts from its checkpoint; frames in flight are gone.
    Crash,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Read => write!(f, "the dispatcher reads the next stored event"),
            Action::Command(r) => write!(f, "command s{r} sends its RemoteStartTransaction"),
            Action::DeliverToStation(text) => write!(f, "the station receives {text}"),
            Action::DeliverToCsms(text) => write!(f, "the CSMS receives {text}"),
            Action::Lose(text) => write!(f, "the network loses {text}"),
            Action::Duplicate(text) => write!(f, "the network duplicates {text}"),
            Action::Tick => write!(f, "a call timeout passes"),
            Action::Crash => write!(
                f,
                "the dispatcher crashes and restarts from its checkpoint; the station reconnects"
            ),
        }
    }
}

impl State {
    /// Sessions that were requested, with their recorded answers.
    pub fn answers(&self) -> Vec<(String, Vec<Answer>)> {
        self.store
            .iter()
            .filter_map(|e| match e {
                Stored::Requested { session, .. } => Some(session.clone()),
                Stored::Answered { .. } => None,
            })
            .map(|session| {
                let answers = self
                    .store
                    .iter()
                    .filter_map(|e| match e {
                        Stored::Answered {
                            session: s, answer, ..
                        } if *s == session => Some(*answer),
                        _ => None,
                    })
                    .collect();
                (session, answers)
            })
            .collect()
    }

    /// Nothing left to do: every event read, no frame in flight, no dispatcher timer.
    pub fn quiet(&self) -> bool {
        self.commands.is_empty()
            && self.awaiting.is_empty()
            && self.read == self.store.len()
            && self.to_station.is_empty()
            && self.to_csms.is_empty()
            && self.dispatcher.0.poll_timeout().is_none()
    }

    fn unlocks_of(&self, session: &str) -> usize {
        self.station
            .0
            .actuations()
            .iter()
            .filter(|a| a.id_tag == session)
            .count()
    }
}

impl OutboxModel {
    /// Runs the dispatcher's effects: frames out, outcomes stored, checkpoints saved.
    fn drain(state: &mut State) {
        while let Some(effect) = state.dispatcher.0.poll_effect() {
            match effect {
                DispatchEffect::Send {
                    call_id,
                    connector,
                    id_tag,
                    ..
                } => {
                    let frame = Frame::Call {
                        id: call_id,
                        action: "RemoteStartTransaction".into(),
                        payload: serde_json::json!({"connectorId": connector, "idTag": id_tag}),
                    };
                    state.to_station.push(frame.to_text());
                }
                DispatchEffect::RecordOutcome {
                    session, answer, ..
                } => {
                    // The command handler records one answer per request (its command id
                    // is derived from the session): a repeat takes no effect.
                    let already = state
                        .store
                        .iter()
                        .any(|e| matches!(e, Stored::Answered { session: s, .. } if *s == session));
                    let connector = state.store.iter().find_map(|e| match e {
                        Stored::Requested {
                            connector,
                            session: s,
                        } if *s == session => Some(*connector),
                        _ => None,
                    });
                    if let (false, Some(connector)) = (already, connector) {
                        state.store.push(Stored::Answered {
                            connector,
                            session,
                            answer: match answer {
                                StationAnswer::Accepted => Answer::Accepted,
                                StationAnswer::Rejected => Answer::Rejected,
                                StationAnswer::TimedOut => Answer::TimedOut,
                            },
                        });
                    }
                }
                DispatchEffect::SaveCheckpoint(position) => state.checkpoint = Some(position.0),
            }
        }
        state.to_station.sort();
    }

    fn fresh_dispatcher(&self, checkpoint: Option<u64>, now: u64) -> Dispatcher {
        let mut dispatcher = Dispatcher::new(self.config(), checkpoint.map(GlobalPosition));
        dispatcher.handle_link(STATION, true, now);
        dispatcher
    }
}

fn remove_one(frames: &mut Vec<String>, text: &str) -> bool {
    match frames.iter().position(|f| f == text) {
        Some(index) => {
            frames.remove(index);
            true
        }
        None => false,
    }
}

impl Model for OutboxModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        // A booted station: connected, BootNotification accepted, its own CALLs ignored.
        let mut station = ChargePoint::new(
            ChargePointConfig::new(STATION, u32::from(self.requests.max(1))),
            0,
        );
        station.handle_connected(0);
        while let Some(text) = station.poll_transmit(0) {
            if let Ok(Frame::Call { id, action, .. }) = Frame::parse(&text)
                && action == "BootNotification"
            {
                let accepted = Frame::CallResult {
                    id,
                    payload: serde_json::json!({"status": "Accepted", "currentTime": "1970-01-01T00:00:00Z", "interval": 3600}),
                };
                station.handle_text(&accepted.to_text(), 0);
            }
        }
        // The outbox starts from stored requests; N1's commands have stored nothing yet.
        let (store, commands) = if self.design == OutboxDesign::NaiveSideEffect {
            (Vec::new(), (1..=self.requests).collect())
        } else {
            let store = (1..=self.requests)
                .map(|r| Stored::Requested {
                    connector: u32::from(r),
                    session: format!("s{r}"),
                })
                .collect();
            (store, Vec::new())
        };
        vec![State {
            store,
            checkpoint: None,
            dispatcher: Machine(self.fresh_dispatcher(None, 0)),
            read: 0,
            station: Machine(station),
            to_station: Vec::new(),
            to_csms: Vec::new(),
            now: 0,
            crashes_left: self.crashes,
            losses_left: self.losses,
            duplicates_left: self.duplicates,
            ticks_left: self.ticks,
            crashed: false,
            lost: false,
            commands,
            awaiting: Vec::new(),
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        if self.design == OutboxDesign::NaiveSideEffect {
            actions.extend(state.commands.iter().map(|r| Action::Command(*r)));
        } else if state.read < state.store.len() {
            actions.push(Action::Read);
        }
        let mut seen = Vec::new();
        for text in &state.to_station {
            if seen.contains(text) {
                continue;
            }
            seen.push(text.clone());
            actions.push(Action::DeliverToStation(text.clone()));
            if state.losses_left > 0 {
                actions.push(Action::Lose(text.clone()));
            }
            if state.duplicates_left > 0 {
                actions.push(Action::Duplicate(text.clone()));
            }
        }
        for text in &state.to_csms {
            if seen.contains(text) {
                continue;
            }
            seen.push(text.clone());
            actions.push(Action::DeliverToCsms(text.clone()));
            if state.losses_left > 0 {
                actions.push(Action::Lose(text.clone()));
            }
            if state.duplicates_left > 0 {
                actions.push(Action::Duplicate(text.clone()));
            }
        }
        if state.ticks_left > 0 {
            actions.push(Action::Tick);
        }
        if state.crashes_left > 0 {
            actions.push(Action::Crash);
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        match action {
            Action::Read => {
                let position = state.read;
                let event = state.store.get(position)?.to_event();
                state.dispatcher.0.handle_event(
                    GlobalPosition(position as u64),
                    STATION,
                    &event,
                    state.now,
                );
                state.read += 1;
            }
            Action::Command(r) => {
                let index = state.commands.iter().position(|c| *c == r)?;
                state.commands.remove(index);
                state.awaiting.push(r);
                let frame = Frame::Call {
                    id: format!("n1-{r}"),
                    action: "RemoteStartTransaction".into(),
                    payload: serde_json::json!({"connectorId": r, "idTag": format!("s{r}")}),
                };
                state.to_station.push(frame.to_text());
                state.to_station.sort();
            }
            Action::DeliverToStation(text) => {
                if !remove_one(&mut state.to_station, &text) {
                    return None;
                }
                state.station.0.handle_text(&text, state.now);
                // Its answers go back; its own CALLs (status notifications) are not the
                // story here and are dropped by this CSMS.
                while let Some(reply) = state.station.0.poll_transmit(state.now) {
                    if matches!(Frame::parse(&reply), Ok(Frame::CallResult { .. })) {
                        state.to_csms.push(reply);
                    }
                }
                state.to_csms.sort();
            }
            Action::DeliverToCsms(text) => {
                if !remove_one(&mut state.to_csms, &text) {
                    return None;
                }
                if let Ok(Frame::CallResult { id, payload }) = Frame::parse(&text)
                    && let Some(r) = id.strip_prefix("n1-").and_then(|r| r.parse::<u8>().ok())
                {
                    // N1: the answer is back; now the command stores request and answer.
                    if let Some(index) = state.awaiting.iter().position(|a| *a == r) {
                        state.awaiting.remove(index);
                        let session = format!("s{r}");
                        let answer = match payload["status"].as_str() {
                            Some("Accepted") => Answer::Accepted,
                            _ => Answer::Rejected,
                        };
                        state.store.push(Stored::Requested {
                            connector: u32::from(r),
                            session: session.clone(),
                        });
                        state.store.push(Stored::Answered {
                            connector: u32::from(r),
                            session,
                            answer,
                        });
                        state.read = state.store.len();
                    }
                } else if let Ok(Frame::CallResult { id, payload }) = Frame::parse(&text) {
                    let status = match payload["status"].as_str() {
                        Some("Accepted") => RemoteStartStopStatus::Accepted,
                        _ => RemoteStartStopStatus::Rejected,
                    };
                    state.dispatcher.0.handle_answer(
                        STATION,
                        &id,
                        status,
                        UnlockEvidence::Unknown,
                        state.now,
                    );
                }
            }
            Action::Lose(text) => {
                if !remove_one(&mut state.to_station, &text)
                    && !remove_one(&mut state.to_csms, &text)
                {
                    return None;
                }
                state.losses_left -= 1;
                state.lost = true;
            }
            Action::Duplicate(text) => {
                if state.to_station.contains(&text) {
                    state.to_station.push(text);
                    state.to_station.sort();
                } else if state.to_csms.contains(&text) {
                    state.to_csms.push(text);
                    state.to_csms.sort();
                } else {
                    return None;
                }
                state.duplicates_left -= 1;
            }
            Action::Tick => {
                state.ticks_left -= 1;
                state.now += 1_000;
                state.dispatcher.0.handle_timeout(state.now);
                // N1: a command whose answer has not come gives up (the client is told so).
                if state.to_station.is_empty() && state.to_csms.is_empty() {
                    state.awaiting.clear();
                }
            }
            Action::Crash => {
                state.crashes_left -= 1;
                state.crashed = true;
                // N1: a command waiting for its answer dies with the node.
                state.awaiting.clear();
                state.dispatcher = Machine(self.fresh_dispatcher(state.checkpoint, state.now));
                state.read = state.checkpoint.map_or(0, |c| c as usize + 1);
                state.to_station.clear();
                state.to_csms.clear();
                // The crash closes the connection; the station reconnects. Its memory of
                // answers per message id belongs to the old connection: the restarted
                // dispatcher numbers its calls from 1 again, and only this reset keeps a
                // new "rs-1" from being answered with the old one's answer.
                state.station.0.handle_disconnected();
                state.station.0.handle_connected(state.now);
                while state.station.0.poll_transmit(state.now).is_some() {}
            }
        }
        Self::drain(&mut state);
        Some(state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("I1 no request is unlocked twice", |_, s: &State| {
                s.answers()
                    .iter()
                    .all(|(session, _)| s.unlocks_of(session) <= 1)
            }),
            // Checked when quiet: an unlock whose request is about to be stored is fine.
            Property::always(
                "I1 nothing is unlocked that no stored request asked for",
                |_, s: &State| {
                    !s.quiet()
                        || s.station.0.actuations().iter().all(|a| {
                            s.store.iter().any(|e| {
                                matches!(e, Stored::Requested { session, .. } if *session == a.id_tag)
                            })
                        })
                },
            ),
            Property::always("I5 a recorded Accepted is a real unlock", |_, s: &State| {
                s.answers().iter().all(|(session, answers)| {
                    !answers.contains(&Answer::Accepted) || s.unlocks_of(session) == 1
                })
            }),
            // I4 as a bounded response: once the system is quiet — every event read, no
            // frame in flight, no timer pending in the dispatcher — every request has
            // exactly one recorded outcome. (Faults stay possible there; they are not work.)
            Property::always("I4 every request gets one outcome", |_, s: &State| {
                !s.quiet() || s.answers().iter().all(|(_, answers)| answers.len() == 1)
            }),
            Property::sometimes("every request answered and all quiet", |_, s: &State| {
                s.quiet() && s.answers().iter().all(|(_, answers)| answers.len() == 1)
            }),
            Property::sometimes(
                "a request got its outcome after a dispatcher crash",
                |_, s: &State| {
                    s.crashed
                        && s.answers()
                            .iter()
                            .any(|(_, a)| a.contains(&Answer::Accepted))
                },
            ),
            Property::sometimes(
                "a request got its outcome after a lost frame",
                |_, s: &State| {
                    s.lost
                        && s.answers()
                            .iter()
                            .any(|(_, a)| a.contains(&Answer::Accepted))
                },
            ),
        ]
    }
}
