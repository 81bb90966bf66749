//! The outbox dispatcher, as a sans-IO state machine (DESIGN §2.6).
//!
//! It reads persisted station events in position order (`handle_event`), sends a
//! RemoteStartTransaction for every `UnlockRequested` whose outcome is not yet recorded,
//! and emits the outcome to record as a command (`DispatchEffect::RecordOutcome`). The
//! shell moves frames, runs the commands, persists checkpoints and feeds back answers,
//! connection changes and the time.
//!
//! Rules that make the unlock happen once physically:
//! * The idempotency key is the request's own idTag (its session id, ≤ 20 characters).
//! * One CALL in flight per station. An unanswered CALL is sent again as a new CALL with a
//!   new message id — OCPP-J never lets a sender reuse a CALL's id on a connection (I12) —
//!   and a late answer to an earlier attempt is dropped; the station's memory of idTags
//!   plus the mirror's evidence settle the ambiguity, on this connection or the next.
//! * A `Rejected` answer is checked against the mirror: a connector already released for
//!   this very idTag means our earlier attempt worked (Accepted); busy with an unknown idTag
//!   means "not yet known" (retry later); otherwise the rejection is definitive.
//! * The checkpoint never passes a request whose outcome event has not been read back from
//!   the store: a crash at any point re-sends, never forgets (I4). Retries back off
//!   exponentially up to a bound; a request never sent within `undeliverable_after` of
//!   being read is recorded `TimedOut`.

use std::collections::{BTreeMap, VecDeque};

use crate::core::types::GlobalPosition;
use crate::domain::station::{SessionId, StationAnswer, StationEvent};
use crate::mirror::UnlockEvidence;
use crate::ocpp::messages::RemoteStartStopStatus;

/// Bounds and timings of the dispatcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DispatcherConfig {
    /// How long to wait for a CALLRESULT before retransmitting.
    pub call_timeout_millis: u64,
    pub retry_base_millis: u64,
    pub retry_max_millis: u64,
    /// A request that could not be sent at all for this long is recorded as TimedOut.
    pub undeliverable_after_millis: u64,
    /// When the checkpoint may pass a request. Only the simulator's naive design N4
    /// changes it.
    pub checkpoint: CheckpointPolicy,
    /// Whether a station must be owned ([`Dispatcher::handle_ownership`]) before its
    /// requests are sent or timed out. Nodes sharing a store set it: each dispatches only
    /// for the stations whose dispatch lease it holds. Alone, a dispatcher owns them all.
    pub requires_ownership: bool,
}

/// When the dispatcher's checkpoint may pass an unlock request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CheckpointPolicy {
    /// Only once the request's outcome event has been read back (correct).
    #[default]
    AfterOutcome,
    /// As soon as the request has been read — before the send is even confirmed. The
    /// naive design N4 (`naive-early-checkpoint`): a crash forgets requests in flight.
    OnRead,
}

impl Default for DispatcherConfig {
    fn default() -> DispatcherConfig {
        DispatcherConfig {
            call_timeout_millis: 10_000,
            retry_base_millis: 500,
            retry_max_millis: 30_000,
            undeliverable_after_millis: 300_000,
            checkpoint: CheckpointPolicy::AfterOutcome,
            requires_ownership: false,
        }
    }
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DispatchEffect {
    /// Send `[2, call_id, "RemoteStartTransaction", {"connectorId", "idTag"}]` to `station`.
    Send {
        station: String,
        call_id: String,
        connector: u32,
        id_tag: String,
    },
    /// Record the definitive answer on the station stream (`StationCommand::RecordAnswer`).
    RecordOutcome {
        station: String,
        session: String,
        answer: StationAnswer,
    },
    /// Persist this checkpoint: every request at or before it has a recorded outcome.
    SaveCheckpoint(GlobalPosition),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Tracked {
    station: String,
    connector: u32,
    session: SessionId,
    read_at_millis: u64,
    attempts: u32,
    next_attempt_at: u64,
    /// The current CALL's id and the connection generation it was sent on.
    call: Option<(String, u64)>,
    /// Ever sent at all, by this dispatcher or — for all it knows — by an earlier owner
    /// of the station (only never-sent requests may time out).
    sent: bool,
    /// Decided and handed to the shell; waiting to read the outcome event back.
    decided: Option<StationAnswer>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Link {
    /// This dispatcher may act for the station (see [`DispatcherConfig::requires_ownership`]).
    owned: bool,
    online: bool,
    generation: u64,
    /// The request whose CALL is in flight, and the CALL's deadline.
    in_flight: Option<(GlobalPosition, u64)>,
    /// A CALL given up while it was in flight (ownership changed, or another writer recorded
    /// its request's outcome): its id and
    /// deadline. The connection still has it outstanding, so no new CALL goes out on it
    /// until it is answered or its deadline passes (one CALL outstanding, I12).
    abandoned: Option<(String, u64)>,
}

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct Dispatcher {
    config: DispatcherConfig,
    /// Requests without a recorded outcome, by the position of their `UnlockRequested`.
    /// Bounded by the business rules, not by a setting: a station aggregate holds at most
    /// one pending request per connector, so this holds at most one per connector of the
    /// fleet. (A cap that stopped the dispatcher reading would deadlock it: a request
    /// leaves this table only when its outcome is read.)
    tracked: BTreeMap<GlobalPosition, Tracked>,
    links: BTreeMap<String, Link>,
    last_read: Option<GlobalPosition>,
    saved_checkpoint: Option<GlobalPosition>,
    next_call_number: u64,
    effects: VecDeque<DispatchEffect>,
    /// See [`Dispatcher::possibly_sent_before`].
    possibly_sent_before: Option<GlobalPosition>,
}

impl Dispatcher {
    /// A dispatcher resuming after `checkpoint` (read the store from just after it).
    pub fn new(config: DispatcherConfig, checkpoint: Option<GlobalPosition>) -> Dispatcher {
        Dispatcher {
            config,
            tracked: BTreeMap::new(),
            links: BTreeMap::new(),
            last_read: checkpoint,
            saved_checkpoint: checkpoint,
            next_call_number: 1,
            effects: VecDeque::new(),
            possibly_sent_before: None,
        }
    }

    pub fn tracked_requests(&self) -> usize {
        self.tracked.len()
    }

    /// One persisted event of `station`'s business stream, in position order.
    pub fn handle_event(
        &mut self,
        position: GlobalPosition,
        station: &str,
        event: &StationEvent,
        now: u64,
    ) {
        assert!(
            self.last_read.is_none_or(|last| position > last),
            "events arrive in position order"
        );
        self.last_read = Some(position);
        match event {
            StationEvent::UnlockRequested { connector, session } => {
                // Read while another node (or an earlier incarnation of this one) may
                // have owned the station: it may have sent the request already, so it
                // is never given up as undeliverable — only a station's answer settles it.
                let sent = !self.acts_for(station)
                    || self.possibly_sent_before.is_some_and(|end| position < end);
                self.tracked.insert(
                    position,
                    Tracked {
                        station: station.to_owned(),
                        connector: *connector,
                        session: *session,
                        read_at_millis: now,
                        attempts: 0,
                        next_attempt_at: now,
                        call: None,
                        sent,
                        decided: None,
                    },
                );
            }
            StationEvent::UnlockAccepted { session, .. }
            | StationEvent::UnlockRejected { session, .. }
            | StationEvent::UnlockTimedOut { session, .. } => {
                let resolved: Vec<GlobalPosition> = self
                    .tracked
                    .iter()
                    .filter(|(_, t)| t.station == station && t.session == *session)
                    .map(|(p, _)| *p)
                    .collect();
                for request in resolved {
                    let tracked = self.tracked.remove(&request);
                    if let Some(link) = self.links.get_mut(station)
                        && let Some((_, deadline)) = link.in_flight.take_if(|(p, _)| *p == request)
                    {
                        // Resolved by another writer while our CALL is out: the connection
                        // still has it outstanding, so nothing else goes out on it until
                        // it is answered or its deadline passes (I12), as after a change
                        // of ownership.
                        link.abandoned = tracked
                            .and_then(|t| t.call)
                            .map(|(call_id, _)| (call_id, deadline));
                    }
                }
            }
            StationEvent::SessionStopped { .. } => {}
        }
        self.advance_checkpoint();
        self.pump(now);
    }

    /// The station's connection came up (boot accepted) or went down.
    pub fn handle_link(&mut self, station: &str, online: bool, now: u64) {
        let link = self.links.entry(station.to_owned()).or_default();
        if link.online != online {
            link.online = online;
            link.generation += 1;
            link.abandoned = None; // gone with its connection
            // A CALL in flight is lost with its connection; its request will be retried.
            if let Some((request, _)) = link.in_flight.take()
                && let Some(tracked) = self.tracked.get_mut(&request)
            {
                tracked.next_attempt_at = now;
            }
        }
        self.pump(now);
    }

    /// This dispatcher gained or lost the right to act for `station` (its dispatch lease).
    ///
    /// Lost: a CALL in flight is abandoned and undecided requests stay tracked, so their
    /// outcomes — recorded by the new owner — still resolve them; a decision not yet
    /// recorded is forgotten (its fenced append fails) and made again if ownership
    /// returns. Requests read while someone else may have owned the station count as sent
    /// (the other owner may have sent them): they are never given up as undeliverable.
    pub fn handle_ownership(&mut self, station: &str, owned: bool, now: u64) {
        let link = self.links.entry(station.to_owned()).or_default();
        if link.owned == owned {
            return;
        }
        link.owned = owned;
        link.generation += 1;
        if let Some((request, deadline)) = link.in_flight.take()
            && let Some((call_id, _)) = self.tracked.get(&request).and_then(|t| t.call.clone())
        {
            link.abandoned = Some((call_id, deadline));
        }
        for tracked in self.tracked.values_mut().filter(|t| t.station == station) {
            tracked.call = None;
            tracked.next_attempt_at = now;
            if owned {
                if !tracked.sent {
                    tracked.read_at_millis = now;
                }
            } else {
                tracked.decided = None;
            }
        }
        self.pump(now);
    }

    /// May this dispatcher act for `station`?
    fn acts_for(&self, station: &str) -> bool {
        !self.config.requires_ownership || self.links.get(station).is_some_and(|l| l.owned)
    }

    /// The station answered CALL `call_id`. `evidence` is the mirror's view of the
    /// connector for this request's idTag, consulted on a rejection.
    pub fn handle_answer(
        &mut self,
        station: &str,
        call_id: &str,
        status: RemoteStartStopStatus,
        evidence: UnlockEvidence,
        now: u64,
    ) {
        let Some(request) = self.in_flight_request(station, call_id) else {
            // Late or unknown: dropped, never matched to another call.
            self.abandoned_answered(station, call_id, now);
            return;
        };
        self.links.get_mut(station).expect("in flight").in_flight = None;
        let tracked = self.tracked.get_mut(&request).expect("tracked");
        let answer = match (status, evidence) {
            (RemoteStartStopStatus::Accepted, _) => Some(StationAnswer::Accepted),
            (RemoteStartStopStatus::Rejected, UnlockEvidence::ForThisRequest) => {
                Some(StationAnswer::Accepted)
            }
            (RemoteStartStopStatus::Rejected, UnlockEvidence::BusyUnknown) => None,
            (RemoteStartStopStatus::Rejected, _) => Some(StationAnswer::Rejected),
        };
        match answer {
            Some(answer) => self.decide(request, answer),
            None => {
                tracked.call = None;
                tracked.next_attempt_at = now + backoff(&self.config, tracked.attempts);
            }
        }
        self.pump(now);
    }

    /// The station answered CALL `call_id` with a CALLERROR: not delivered, retry later.
    pub fn handle_call_error(&mut self, station: &str, call_id: &str, now: u64) {
        let Some(request) = self.in_flight_request(station, call_id) else {
            self.abandoned_answered(station, call_id, now);
            return;
        };
        self.links.get_mut(station).expect("in flight").in_flight = None;
        let tracked = self.tracked.get_mut(&request).expect("tracked");
        tracked.call = None;
        tracked.next_attempt_at = now + backoff(&self.config, tracked.attempts);
        self.pump(now);
    }

    /// Timers: CALL deadlines and retry times.
    /// The shell sent CALL `call_id` at `now`: its timeout runs from here. (The shell may
    /// send later than the dispatcher decided; a timeout counted from the decision would
    /// let the next CALL out while this one is still outstanding on the wire.)
    pub fn handle_sent(&mut self, station: &str, call_id: &str, now: u64) {
        let deadline = now + self.config.call_timeout_millis;
        // Abandoned before it went out (ownership changed while the shell was busy): it
        // still holds the connection, for its whole timeout from now.
        if let Some(link) = self.links.get_mut(station)
            && let Some((abandoned, old_deadline)) = &mut link.abandoned
            && abandoned == call_id
        {
            *old_deadline = (*old_deadline).max(deadline);
            return;
        }
        let Some(request) = self.in_flight_request(station, call_id) else {
            return;
        };
        if let Some(link) = self.links.get_mut(station)
            && let Some((in_flight, old_deadline)) = &mut link.in_flight
            && *in_flight == request
        {
            *old_deadline = (*old_deadline).max(deadline);
        }
    }

    /// Requests stored before `end` may have been sent by an earlier incarnation of this
    /// dispatcher's node (a restart re-reads them from the checkpoint): like those read
    /// while another node owned the station, they are never given up as undeliverable.
    pub fn possibly_sent_before(&mut self, end: GlobalPosition) {
        self.possibly_sent_before = Some(end);
    }

    /// An answer to an abandoned CALL frees its connection for the next one.
    fn abandoned_answered(&mut self, station: &str, call_id: &str, now: u64) {
        if let Some(link) = self.links.get_mut(station)
            && link.abandoned.as_ref().is_some_and(|(id, _)| id == call_id)
        {
            link.abandoned = None;
            self.pump(now);
        }
    }

    pub fn handle_timeout(&mut self, now: u64) {
        for link in self.links.values_mut() {
            if link
                .abandoned
                .as_ref()
                .is_some_and(|(_, deadline)| *deadline <= now)
            {
                link.abandoned = None;
            }
            if let Some((request, deadline)) = link.in_flight
                && deadline <= now
            {
                link.in_flight = None;
                if let Some(tracked) = self.tracked.get_mut(&request) {
                    tracked.next_attempt_at = now + backoff(&self.config, tracked.attempts);
                }
            }
        }
        let expired: Vec<GlobalPosition> = self
            .tracked
            .iter()
            .filter(|(_, t)| {
                !t.sent
                    && t.decided.is_none()
                    && now >= t.read_at_millis + self.config.undeliverable_after_millis
                    && self.acts_for(&t.station)
            })
            .map(|(p, _)| *p)
            .collect();
        for request in expired {
            self.decide(request, StationAnswer::TimedOut);
        }
        self.pump(now);
    }

    pub fn poll_effect(&mut self) -> Option<DispatchEffect> {
        self.effects.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should run next.
    pub fn poll_timeout(&self) -> Option<u64> {
        let deadlines = self.links.values().filter_map(|l| {
            l.in_flight
                .map(|(_, d)| d)
                .or(l.abandoned.as_ref().map(|(_, d)| *d))
        });
        let retries =
            self.tracked
                .values()
                .filter(|t| {
                    t.decided.is_none()
                        && self.acts_for(&t.station)
                        && self.links.get(&t.station).is_some_and(|l| {
                            l.online && l.in_flight.is_none() && l.abandoned.is_none()
                        })
                })
                .map(|t| t.next_attempt_at);
        let expiries = self
            .tracked
            .values()
            .filter(|t| !t.sent && t.decided.is_none() && self.acts_for(&t.station))
            .map(|t| t.read_at_millis + self.config.undeliverable_after_millis);
        deadlines.chain(retries).chain(expiries).min()
    }

    fn in_flight_request(&self, station: &str, call_id: &str) -> Option<GlobalPosition> {
        let (request, _) = self.links.get(station)?.in_flight?;
        let tracked = self.tracked.get(&request)?;
        (tracked.call.as_ref().map(|(id, _)| id.as_str()) == Some(call_id)).then_some(request)
    }

    fn decide(&mut self, request: GlobalPosition, answer: StationAnswer) {
        let tracked = self.tracked.get_mut(&request).expect("tracked");
        if tracked.decided.is_some() {
            return;
        }
        tracked.decided = Some(answer);
        self.effects.push_back(DispatchEffect::RecordOutcome {
            station: tracked.station.clone(),
            session: tracked.session.to_string(),
            answer,
        });
    }

    /// Sends the oldest due request of every idle, online station.
    fn pump(&mut self, now: u64) {
        let stations: Vec<String> = self
            .links
            .iter()
            .filter(|(s, l)| {
                l.online && l.in_flight.is_none() && l.abandoned.is_none() && self.acts_for(s)
            })
            .map(|(s, _)| s.clone())
            .collect();
        for station in stations {
            let due = self
                .tracked
                .iter()
                .find(|(_, t)| t.station == station && t.decided.is_none())
                .filter(|(_, t)| t.next_attempt_at <= now)
                .map(|(p, _)| *p);
            let Some(request) = due else { continue };
            let generation = self.links[&station].generation;
            let tracked = self.tracked.get_mut(&request).expect("tracked");
            // Every attempt is a new CALL with a new message id, also on the same
            // connection: OCPP-J never lets a sender reuse a CALL's id on a connection
            // (I12). The attempt is idempotent by its idTag, which the station remembers;
            // an answer to an earlier attempt's id is no longer awaited and is dropped.
            let call_id = format!("rs-{}", self.next_call_number);
            self.next_call_number += 1;
            tracked.call = Some((call_id.clone(), generation));
            tracked.attempts += 1;
            tracked.sent = true;
            self.effects.push_back(DispatchEffect::Send {
                station: station.clone(),
                call_id,
                connector: tracked.connector,
                id_tag: tracked.session.to_string(),
            });
            let link = self.links.get_mut(&station).expect("online station");
            link.in_flight = Some((request, now + self.config.call_timeout_millis));
        }
    }

    fn advance_checkpoint(&mut self) {
        let candidate = match self.tracked.keys().next() {
            _ if self.config.checkpoint == CheckpointPolicy::OnRead => self.last_read,
            // Everything before the oldest unresolved request is done.
            Some(oldest) => oldest.0.checked_sub(1).map(GlobalPosition),
            None => self.last_read,
        };
        if candidate > self.saved_checkpoint {
            self.saved_checkpoint = candidate;
            self.effects.push_back(DispatchEffect::SaveCheckpoint(
                candidate.expect("greater than something"),
            ));
        }
    }
}

fn backoff(config: &DispatcherConfig, attempts: u32) -> u64 {
    let doubling = 1u64 << attempts.min(20);
    config
        .retry_base_millis
        .saturating_mul(doubling)
        .min(config.retry_max_millis)
}
