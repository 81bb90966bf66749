//! The append protocol: K command handlers, each running M commands through load → decide
//! → append against one stream — withdrawals on an account (seed 004), or unlock requests on
//! a station (seed 000). Every transition calls the project's own pure code: the deciders
//! ([`Account::decide`], [`Station::decide`] and their folds), the store's expected-version
//! rule ([`expected_version_matches`]) and its event-id derivation ([`EventId::derive`]). A handler may crash at any step (within a budget) and
//! then restarts its command with the same command id, as a retrying client would.
//!
//! Designs (DESIGN §5): `correct` appends with `Exact(loaded version)` and checks the
//! command id first; `naive-read-model` (N2) appends with `Any` after validating what it
//! loaded; `naive-version-check` (N3) compares versions itself, then appends with `Any` in a
//! separate step, and gives each attempt fresh event ids.

use std::fmt;

use evsource::core::expected_version_matches;
use evsource::core::{CommandId, CurrentVersion, EventId, ExpectedVersion, StreamVersion};
use evsource::decider::Decider;
use evsource::domain::account::{Account, AccountCommand, AccountEvent, AccountState};
use evsource::domain::station::{SessionId, Station, StationCommand, StationEvent};
use stateright::{Model, Property};

/// Which append protocol the handlers follow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AppendDesign {
    #[default]
    Correct,
    /// N2: validate against what was loaded, append without an expected version.
    NaiveReadModel,
    /// N3: a read-then-write version check outside the store, fresh ids per attempt.
    NaiveVersionCheck,
}

impl AppendDesign {
    pub const ALL: [AppendDesign; 3] = [
        AppendDesign::Correct,
        AppendDesign::NaiveReadModel,
        AppendDesign::NaiveVersionCheck,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AppendDesign::Correct => "correct",
            AppendDesign::NaiveReadModel => "naive-read-model",
            AppendDesign::NaiveVersionCheck => "naive-version-check",
        }
    }
}

/// Which aggregate the handlers command.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AppendDomain {
    /// Withdrawals of `amount` from an account opened with `opening` (I6).
    #[default]
    Account,
    /// Unlock requests on a station: handler h's command c asks for connector
    /// `1 + c % 2` for its own session (I1: never two sessions on one connector).
    Station,
}

impl AppendDomain {
    pub const ALL: [AppendDomain; 2] = [AppendDomain::Account, AppendDomain::Station];

    pub fn name(self) -> &'static str {
        match self {
            AppendDomain::Account => "account",
            AppendDomain::Station => "station",
        }
    }
}

/// The bounds and design of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendModel {
    pub handlers: u8,
    pub commands: u8,
    /// Crashes allowed in a run, over all handlers.
    pub crashes: u8,
    pub design: AppendDesign,
    pub domain: AppendDomain,
    /// The account's opening deposit and each withdrawal: chosen so that not every
    /// withdrawal fits.
    pub opening: u64,
    pub amount: u64,
}

impl AppendModel {
    /// The CI bound: 2 handlers × 2 commands, one crash.
    pub fn new(handlers: u8, commands: u8, crashes: u8, design: AppendDesign) -> AppendModel {
        AppendModel {
            handlers,
            commands,
            crashes,
            design,
            domain: AppendDomain::Account,
            opening: 100,
            amount: 60,
        }
    }

    /// The same protocol over the station aggregate.
    pub fn station(handlers: u8, commands: u8, crashes: u8, design: AppendDesign) -> AppendModel {
        AppendModel {
            domain: AppendDomain::Station,
            ..AppendModel::new(handlers, commands, crashes, design)
        }
    }

    /// The station command of `handler`'s command number `command`.
    pub fn unlock(handler: u8, command: u8) -> StationCommand {
        StationCommand::RequestUnlock {
            connector: 1 + u32::from(command % 2),
            session: format!("h{handler}c{command}"),
        }
    }

    /// Attempts per command: with this many, a handler can lose every race and still not
    /// give up, because each lost race is some other command's success.
    pub fn attempts_max(&self) -> u8 {
        self.handlers.saturating_mul(self.commands).max(1)
    }

    /// The command id of `handler`'s command number `command`.
    pub fn command_id(handler: u8, command: u8) -> CommandId {
        CommandId(1 + (u128::from(handler) << 8) + u128::from(command))
    }

    /// The expected version this design appends with, after loading `version`.
    pub fn expected(&self, version: Option<u64>) -> ExpectedVersion {
        match self.design {
            AppendDesign::Correct => version.map_or(ExpectedVersion::NoStream, |v| {
                ExpectedVersion::Exact(StreamVersion(v))
            }),
            AppendDesign::NaiveReadModel | AppendDesign::NaiveVersionCheck => ExpectedVersion::Any,
        }
    }

    /// The ids of `count` events decided for `handler`'s command `next` in `state`: derived
    /// from the command (correct, N2), or fresh ones (N3's writer knows no command ids).
    pub fn event_ids(&self, state: &State, handler: u8, next: u8, count: usize) -> Vec<EventId> {
        let command = Self::command_id(handler, next);
        self.id_indices(state, count)
            .into_iter()
            .map(|index| EventId::derive(command, index))
            .collect()
    }

    /// The derivation indices of [`event_ids`](Self::event_ids).
    fn id_indices(&self, state: &State, count: usize) -> Vec<u32> {
        let fresh = state.stream.len() as u32;
        (0..count as u32)
            .map(|index| match self.design {
                AppendDesign::NaiveVersionCheck => 1_000 + fresh + index,
                _ => index,
            })
            .collect()
    }
}

/// One stored event: the account event, its id, and which command decided it (or `None`
/// for the opening deposit).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Stored {
    pub event: Entry,
    pub id: EventId,
    /// The index `id` was derived with from its command's id (for the opening deposit,
    /// from command 0): lets a handler permutation re-derive the ids.
    pub id_index: u32,
    pub command: Option<(u8, u8)>,
}

/// The events the model stores (a Hash-able mirror of [`AccountEvent`] and of the
/// [`StationEvent`]s the model's commands decide).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Entry {
    Deposited(u64),
    Withdrawn(u64),
    /// `UnlockRequested` for the session of (handler, command).
    UnlockRequested {
        connector: u32,
        by: (u8, u8),
    },
}

impl Entry {
    fn account_event(self) -> Option<AccountEvent> {
        match self {
            Entry::Deposited(amount) => Some(AccountEvent::Deposited { amount }),
            Entry::Withdrawn(amount) => Some(AccountEvent::Withdrawn { amount }),
            Entry::UnlockRequested { .. } => None,
        }
    }

    fn station_event(self) -> Option<StationEvent> {
        match self {
            Entry::UnlockRequested { connector, by } => Some(StationEvent::UnlockRequested {
                connector,
                session: SessionId::new(&format!("h{}c{}", by.0, by.1))
                    .expect("the model's session ids are valid"),
            }),
            _ => None,
        }
    }

    fn from_account(event: &AccountEvent) -> Entry {
        match *event {
            AccountEvent::Deposited { amount } => Entry::Deposited(amount),
            AccountEvent::Withdrawn { amount } => Entry::Withdrawn(amount),
        }
    }

    fn from_station(event: &StationEvent, by: (u8, u8)) -> Entry {
        match event {
            StationEvent::UnlockRequested { connector, .. } => Entry::UnlockRequested {
                connector: *connector,
                by,
            },
            other => unreachable!("the model's commands decide only requests, not {other:?}"),
        }
    }
}

/// Where a handler is in its current command.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// About to load for command `next` (all done when `next == commands`).
    Ready { next: u8, attempt: u8 },
    /// Loaded the stream at `version` with the folded `balance`.
    Loaded {
        next: u8,
        attempt: u8,
        version: Option<u64>,
        balance: u64,
    },
    /// N3 only: its own version check passed; the append (with `Any`) is still to come.
    /// `loaded` is the version it loaded (station domain only: the decider folds that
    /// prefix; the account keeps just the balance).
    Checked {
        next: u8,
        attempt: u8,
        balance: u64,
        loaded: Option<u64>,
    },
    /// Appended; the command's acknowledgement is still to come (a crash here retries).
    Appended { next: u8 },
}

/// How each command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Applied,
    AlreadyApplied,
    Rejected,
    GaveUp,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    pub stream: Vec<Stored>,
    pub handlers: Vec<Step>,
    pub outcomes: Vec<Vec<Outcome>>,
    pub crashes_left: u8,
    /// Appends refused for a version conflict and then retried.
    pub retried: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Load(u8),
    CheckVersion(u8),
    Append(u8),
    Acknowledge(u8),
    Crash(u8),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Load(h) => write!(f, "handler {h} loads the stream"),
            Action::CheckVersion(h) => write!(f, "handler {h} compares versions itself"),
            Action::Append(h) => write!(f, "handler {h} decides and appends"),
            Action::Acknowledge(h) => write!(f, "handler {h} acknowledges its command"),
            Action::Crash(h) => write!(f, "handler {h} crashes and restarts its command"),
        }
    }
}

impl State {
    /// The balance the stored history adds up to; negative if the history is impossible.
    pub fn signed_balance(&self) -> i128 {
        self.stream
            .iter()
            .map(|s| match s.event {
                Entry::Deposited(a) => i128::from(a),
                Entry::Withdrawn(a) => -i128::from(a),
                Entry::UnlockRequested { .. } => 0,
            })
            .sum()
    }

    fn version(&self) -> CurrentVersion {
        match self.stream.len() {
            0 => CurrentVersion::NoStream,
            n => CurrentVersion::Current(StreamVersion(n as u64 - 1)),
        }
    }

    fn has_event(&self, id: EventId) -> bool {
        self.stream.iter().any(|s| s.id == id)
    }

    /// Connectors with more than one requested session (I1; the model records no outcome,
    /// so a connector, once requested, stays held).
    pub fn doubly_requested_connectors(&self) -> Vec<u32> {
        let mut connectors: Vec<u32> = self
            .stream
            .iter()
            .filter_map(|s| match s.event {
                Entry::UnlockRequested { connector, .. } => Some(connector),
                _ => None,
            })
            .collect();
        connectors.sort_unstable();
        let mut doubled: Vec<u32> = connectors
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| w[0])
            .collect();
        doubled.dedup();
        doubled
    }
}

/// Handlers are interchangeable: every handler runs the same commands, told apart only by
/// its index in command ids, sessions and event ids. The representative orders handlers by
/// (step, outcomes) and renames them everywhere, re-deriving each stored event's id. Ties
/// keep their order, so two equivalent states may still have two representatives: the
/// reduction is partial, never unsound.
impl stateright::Representative for State {
    fn representative(&self) -> State {
        let mut order: Vec<usize> = (0..self.handlers.len()).collect();
        order.sort_by(|&a, &b| {
            (&self.handlers[a], &self.outcomes[a]).cmp(&(&self.handlers[b], &self.outcomes[b]))
        });
        // `order[new] = old`; `rename[old] = new`.
        let mut rename = vec![0u8; order.len()];
        for (new, &old) in order.iter().enumerate() {
            rename[old] = new as u8;
        }
        let stream = self
            .stream
            .iter()
            .map(|stored| {
                let Some((h, c)) = stored.command else {
                    return stored.clone();
                };
                let h = rename[h as usize];
                let event = match stored.event {
                    Entry::UnlockRequested { connector, .. } => Entry::UnlockRequested {
                        connector,
                        by: (h, c),
                    },
                    other => other,
                };
                Stored {
                    event,
                    id: EventId::derive(AppendModel::command_id(h, c), stored.id_index),
                    id_index: stored.id_index,
                    command: Some((h, c)),
                }
            })
            .collect();
        State {
            stream,
            handlers: order
                .iter()
                .map(|&old| self.handlers[old].clone())
                .collect(),
            outcomes: order
                .iter()
                .map(|&old| self.outcomes[old].clone())
                .collect(),
            crashes_left: self.crashes_left,
            retried: self.retried,
        }
    }
}

impl AppendModel {
    /// Runs the domain's decider on what handler `h` loaded: the account's balance, or the
    /// station folded from the stream up to version `loaded`. `None`: the command is
    /// refused.
    fn decide(
        &self,
        state: &State,
        h: u8,
        next: u8,
        balance: u64,
        loaded: Option<u64>,
    ) -> Option<Vec<Entry>> {
        match self.domain {
            AppendDomain::Account => {
                let command = AccountCommand::Withdraw {
                    amount: self.amount,
                };
                let events = Account::decide(&AccountState { balance }, &command).ok()?;
                Some(events.iter().map(Entry::from_account).collect())
            }
            AppendDomain::Station => {
                let seen = loaded.map_or(0, |v| v as usize + 1);
                let events: Vec<StationEvent> = state.stream[..seen]
                    .iter()
                    .filter_map(|s| s.event.station_event())
                    .collect();
                let station = Station::fold(events.iter());
                let decided = Station::decide(&station, &Self::unlock(h, next)).ok()?;
                Some(
                    decided
                        .iter()
                        .map(|event| Entry::from_station(event, (h, next)))
                        .collect(),
                )
            }
        }
    }

    fn finish(&self, state: &mut State, handler: u8, next: u8, outcome: Outcome) {
        state.outcomes[handler as usize].push(outcome);
        state.handlers[handler as usize] = Step::Ready {
            next: next + 1,
            attempt: 0,
        };
    }

    /// A lost race: retry from a fresh load, or give up once the attempts are spent.
    fn conflict(&self, state: &mut State, handler: u8, next: u8, attempt: u8) {
        if attempt + 1 < self.attempts_max() {
            state.retried = state.retried.saturating_add(1);
            state.handlers[handler as usize] = Step::Ready {
                next,
                attempt: attempt + 1,
            };
        } else {
            self.finish(state, handler, next, Outcome::GaveUp);
        }
    }

    /// Appends the decided events, with ids derived from the command (correct, N2) or
    /// fresh ones (N3's writer knows nothing of command ids). As in the real store, an
    /// append of ids already stored is an idempotent success that writes nothing.
    fn write(&self, state: &mut State, handler: u8, next: u8, entries: &[Entry]) {
        let ids = self.event_ids(state, handler, next, entries.len());
        let indices = self.id_indices(state, entries.len());
        if !ids.iter().any(|id| state.has_event(*id)) {
            for ((event, id), id_index) in entries.iter().zip(ids).zip(indices) {
                state.stream.push(Stored {
                    event: *event,
                    id,
                    id_index,
                    command: Some((handler, next)),
                });
            }
        }
        state.handlers[handler as usize] = Step::Appended { next };
    }
}

impl Model for AppendModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        // The account opens with a deposit; the station starts with no stream at all.
        let stream = match self.domain {
            AppendDomain::Account => vec![Stored {
                event: Entry::Deposited(self.opening),
                id: EventId::derive(CommandId(0), 0),
                id_index: 0,
                command: None,
            }],
            AppendDomain::Station => Vec::new(),
        };
        vec![State {
            stream,
            handlers: vec![
                Step::Ready {
                    next: 0,
                    attempt: 0
                };
                self.handlers as usize
            ],
            outcomes: vec![Vec::new(); self.handlers as usize],
            crashes_left: self.crashes,
            retried: 0,
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        for (index, step) in state.handlers.iter().enumerate() {
            let h = index as u8;
            let busy = match step {
                Step::Ready { next, .. } => {
                    if *next < self.commands {
                        actions.push(Action::Load(h));
                    }
                    *next < self.commands
                }
                Step::Loaded { .. } => {
                    actions.push(match self.design {
                        AppendDesign::NaiveVersionCheck => Action::CheckVersion(h),
                        _ => Action::Append(h),
                    });
                    true
                }
                Step::Checked { .. } => {
                    actions.push(Action::Append(h));
                    true
                }
                Step::Appended { .. } => {
                    actions.push(Action::Acknowledge(h));
                    true
                }
            };
            if busy && state.crashes_left > 0 && !matches!(step, Step::Ready { .. }) {
                actions.push(Action::Crash(h));
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        match action {
            Action::Load(h) => {
                let Step::Ready { next, attempt } = state.handlers[h as usize] else {
                    return None;
                };
                // The correct handler first asks whether this command took effect already.
                let first_id = EventId::derive(Self::command_id(h, next), 0);
                if self.design == AppendDesign::Correct && state.has_event(first_id) {
                    self.finish(&mut state, h, next, Outcome::AlreadyApplied);
                    return Some(state);
                }
                // A history a naive design made impossible (overdrawn) cannot be folded —
                // the decider refuses to evolve past it; such a state already violates I6.
                let folded = if state.signed_balance() < 0 {
                    AccountState { balance: 0 }
                } else {
                    let events: Vec<AccountEvent> = state
                        .stream
                        .iter()
                        .filter_map(|s| s.event.account_event())
                        .collect();
                    Account::fold(events.iter())
                };
                let version = match state.version() {
                    CurrentVersion::Current(v) => Some(v.0),
                    CurrentVersion::NoStream => None,
                };
                state.handlers[h as usize] = Step::Loaded {
                    next,
                    attempt,
                    version,
                    balance: folded.balance,
                };
            }
            Action::CheckVersion(h) => {
                let Step::Loaded {
                    next,
                    attempt,
                    version,
                    balance,
                } = state.handlers[h as usize]
                else {
                    return None;
                };
                let expected = version.map_or(ExpectedVersion::NoStream, |v| {
                    ExpectedVersion::Exact(StreamVersion(v))
                });
                if expected_version_matches(expected, state.version()) {
                    state.handlers[h as usize] = Step::Checked {
                        next,
                        attempt,
                        balance,
                        loaded: match self.domain {
                            AppendDomain::Account => None,
                            AppendDomain::Station => version,
                        },
                    };
                } else {
                    self.conflict(&mut state, h, next, attempt);
                }
            }
            Action::Append(h) => {
                let (next, attempt, version, balance, loaded) = match state.handlers[h as usize] {
                    Step::Loaded {
                        next,
                        attempt,
                        version,
                        balance,
                    } => (next, attempt, version, balance, version),
                    Step::Checked {
                        next,
                        attempt,
                        balance,
                        loaded,
                    } => (next, attempt, None, balance, loaded),
                    _ => return None,
                };
                let Some(entries) = self.decide(&state, h, next, balance, loaded) else {
                    self.finish(&mut state, h, next, Outcome::Rejected);
                    return Some(state);
                };
                let expected = self.expected(version);
                if expected_version_matches(expected, state.version()) {
                    self.write(&mut state, h, next, &entries);
                } else {
                    self.conflict(&mut state, h, next, attempt);
                }
            }
            Action::Acknowledge(h) => {
                let Step::Appended { next } = state.handlers[h as usize] else {
                    return None;
                };
                self.finish(&mut state, h, next, Outcome::Applied);
            }
            Action::Crash(h) => {
                let next = match state.handlers[h as usize] {
                    Step::Loaded { next, .. }
                    | Step::Checked { next, .. }
                    | Step::Appended { next } => next,
                    Step::Ready { .. } => return None,
                };
                state.crashes_left -= 1;
                state.handlers[h as usize] = Step::Ready { next, attempt: 0 };
            }
        }
        Some(state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut properties = match self.domain {
            AppendDomain::Account => vec![Property::always(
                "I6 the balance never goes negative",
                |_, s: &State| s.signed_balance() >= 0,
            )],
            AppendDomain::Station => vec![Property::always(
                "I1 never two sessions on one connector",
                |_, s: &State| s.doubly_requested_connectors().is_empty(),
            )],
        };
        properties.extend([
            Property::always(
                "I8 a command takes effect at most once",
                |m: &AppendModel, s: &State| {
                    (0..m.handlers).all(|h| {
                        (0..m.commands).all(|c| {
                            s.stream
                                .iter()
                                .filter(|e| e.command == Some((h, c)))
                                .count()
                                <= 1
                        })
                    })
                },
            ),
            Property::always("I3 no event id is stored twice", |_, s: &State| {
                let mut ids: Vec<u128> = s.stream.iter().map(|e| e.id.0).collect();
                ids.sort_unstable();
                ids.windows(2).all(|w| w[0] != w[1])
            }),
            // Liveness as a bounded response: every path ends (attempts and crashes are
            // bounded), and where it ends, every command has an outcome and none gave up.
            Property::always(
                "every command completes without giving up",
                |m: &AppendModel, s: &State| {
                    let mut next = Vec::new();
                    m.actions(s, &mut next);
                    !next.is_empty()
                        || s.outcomes.iter().all(|o| {
                            o.len() == m.commands as usize && !o.contains(&Outcome::GaveUp)
                        })
                },
            ),
            Property::sometimes("a conflict happened and was retried", |_, s: &State| {
                s.retried > 0
            }),
            Property::sometimes(
                match self.domain {
                    AppendDomain::Account => "a withdrawal was refused for lack of funds",
                    AppendDomain::Station => "an unlock was refused: the connector is busy",
                },
                |_, s: &State| s.outcomes.iter().flatten().any(|o| *o == Outcome::Rejected),
            ),
            Property::sometimes(
                "a crashed command was recognised as applied",
                |_, s: &State| {
                    s.outcomes
                        .iter()
                        .flatten()
                        .any(|o| *o == Outcome::AlreadyApplied)
                },
            ),
        ]);
        properties
    }
}
