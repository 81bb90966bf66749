//! A simulated OCPP 1.6 charge point, as a sans-IO state machine.
//!
//! Inputs arrive through `handle_*` with the current time (milliseconds on the simulated
//! or real clock); outputs — OCPP-J text to send — are drained with
//! [`ChargePoint::poll_transmit`]; [`ChargePoint::poll_timeout`] says when to call
//! [`ChargePoint::handle_timeout`] next. The shell (a tokio task, the simulator, a test)
//! only moves bytes and timers.
//!
//! It behaves like a real station where it matters for the seed's race: it sends nothing
//! but BootNotification until accepted; accepts RemoteStartTransaction only for an
//! Available connector; answers a repeated message id on the same connection with its
//! original answer (until the connection ends); accepts a repeated idTag it already
//! unlocked for without unlocking again (remembered across reboots, with the transaction
//! journal); and keeps one CALL outstanding at a time.
//!
//! **Ground truth.** Every physical actuation (a connector released for an idTag) is
//! appended to [`ChargePoint::actuations`], which survives reboots: it is what really
//! happened, and the invariant checker (I1, I5) reads it.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Value, json};

use crate::ocpp::answers::AnswerMemory;
use crate::ocpp::frame::{ErrorCode, Frame};
use crate::ocpp::messages::{
    BootNotificationConf, ChargePointErrorCode, ChargePointStatus, PayloadError, Reason,
    RegistrationStatus, RemoteStartStopStatus, RemoteStartTransactionReq, StartTransactionConf,
    decode_payload,
};
use crate::ocpp::time::format_rfc3339;

/// Bounds and timings of one simulated charge point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChargePointConfig {
    pub id: String,
    pub connectors: u32,
    /// How long a connector stays Preparing after a remote start before the cable must be
    /// plugged in (OCPP's ConnectionTimeOut).
    pub connection_timeout_millis: u64,
    /// How long after a remote start the driver plugs in (the simulator varies this).
    pub plug_in_delay_millis: u64,
    /// How long the driver charges before unplugging (`None`: never unplugs by itself).
    pub charging_millis: Option<u64>,
    /// A CALL unanswered for this long is given up (and retried if it must be delivered).
    pub call_timeout_millis: u64,
    /// Interval used until the CSMS accepts the boot and names its own.
    pub boot_retry_millis: u64,
    /// Added to the clock for timestamps; without a real-time clock a rebooted station
    /// reports times near 1970 (`rtc: false`).
    pub clock_offset_millis: i64,
    pub rtc: bool,
    /// Answers remembered per connection for repeated message ids.
    pub remembered_answers_max: usize,
    /// idTags remembered (across reboots) as already unlocked for: a RemoteStart repeating
    /// one is Accepted without a second actuation (station-side deduplication).
    pub remembered_id_tags_max: usize,
    /// CALLs queued while one is outstanding.
    pub queued_calls_max: usize,
}

impl ChargePointConfig {
    pub fn new(id: impl Into<String>, connectors: u32) -> ChargePointConfig {
        ChargePointConfig {
            id: id.into(),
            connectors,
            connection_timeout_millis: 60_000,
            plug_in_delay_millis: 2_000,
            charging_millis: None,
            call_timeout_millis: 30_000,
            boot_retry_millis: 10_000,
            clock_offset_millis: 0,
            rtc: true,
            remembered_answers_max: 64,
            remembered_id_tags_max: 64,
            queued_calls_max: 256,
        }
    }
}

/// A physical event at the station: the ground truth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actuation {
    pub at_millis: u64,
    pub connector: u32,
    pub id_tag: String,
}

/// What a connector is doing, as the station itself knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connector {
    pub status: ChargePointStatus,
    pub error_code: ChargePointErrorCode,
    /// The idTag the connector was released for, while Preparing or Charging.
    pub id_tag: Option<String>,
    pub transaction_id: Option<i64>,
    /// When the driver plugs in (Preparing) or the connection times out.
    pub plug_in_at: Option<u64>,
    /// When the driver unplugs (Charging).
    pub unplug_at: Option<u64>,
    pub give_up_at: Option<u64>,
    pub meter_wh: i64,
}

impl Connector {
    /// Ends whatever the connector was released for.
    fn release(&mut self) {
        self.id_tag = None;
        self.plug_in_at = None;
        self.unplug_at = None;
        self.give_up_at = None;
    }

    fn available() -> Connector {
        Connector {
            status: ChargePointStatus::Available,
            error_code: ChargePointErrorCode::NoError,
            id_tag: None,
            transaction_id: None,
            plug_in_at: None,
            unplug_at: None,
            give_up_at: None,
            meter_wh: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Boot {
    /// BootNotification due at this time.
    Due(u64),
    /// BootNotification sent, awaiting the answer.
    Sent,
    Accepted,
}

/// A CALL waiting to be sent or answered.
#[derive(Clone, Debug, PartialEq)]
struct OutgoingCall {
    action: &'static str,
    payload: Value,
    /// Must reach the CSMS (transactions): retried after a timeout with a new id.
    must_deliver: bool,
    /// For StartTransaction: which connector awaits its transaction id; `None` once a
    /// reboot ended the transaction before its id was known — the station then stops it
    /// (reason Reboot) as soon as the answer tells it the id.
    connector: Option<u32>,
}

#[derive(Clone, Debug, PartialEq)]
struct InFlight {
    id: String,
    call: OutgoingCall,
    deadline: u64,
}

/// A simulated charge point. See the module documentation.
#[derive(Clone, Debug)]
pub struct ChargePoint {
    config: ChargePointConfig,
    connected: bool,
    boot: Boot,
    heartbeat_interval_millis: u64,
    next_heartbeat_at: Option<u64>,
    connectors: BTreeMap<u32, Connector>,
    queued: VecDeque<OutgoingCall>,
    in_flight: Option<InFlight>,
    transmit: VecDeque<String>,
    /// Answers already given on this connection, by the CSMS's message id.
    answered: AnswerMemory,
    /// idTags recently unlocked for. Journaled in non-volatile memory with the transaction
    /// queue, as stations do so that nothing is lost across a reboot: without it, an
    /// answer lost on the wire followed by a reboot would make a second unlock unavoidable.
    unlocked_id_tags: VecDeque<String>,
    next_message_id: u64,
    /// Boots since creation; part of message ids is not needed, but reboots are counted.
    pub boots: u64,
    clock_started_at: u64,
    actuations: Vec<Actuation>,
}

impl ChargePoint {
    /// A station that has just been powered on at `now` (not yet connected).
    pub fn new(config: ChargePointConfig, now: u64) -> ChargePoint {
        let answered = AnswerMemory::new(config.remembered_answers_max);
        let connectors = (1..=config.connectors)
            .map(|c| (c, Connector::available()))
            .collect();
        ChargePoint {
            heartbeat_interval_millis: config.boot_retry_millis,
            config,
            connected: false,
            boot: Boot::Due(now),
            next_heartbeat_at: None,
            connectors,
            queued: VecDeque::new(),
            in_flight: None,
            transmit: VecDeque::new(),
            answered,
            unlocked_id_tags: VecDeque::new(),
            next_message_id: 1,
            boots: 1,
            clock_started_at: now,
            actuations: Vec::new(),
        }
    }

    pub fn id(&self) -> &str {
        &self.config.id
    }

    pub fn actuations(&self) -> &[Actuation] {
        &self.actuations
    }

    /// Whether a transaction message (StartTransaction, StopTransaction) is still queued
    /// or unanswered: the CSMS's record of the station's sessions may yet change.
    pub fn transaction_calls_undelivered(&self) -> bool {
        self.queued.iter().any(|call| call.must_deliver)
            || self.in_flight.as_ref().is_some_and(|f| f.call.must_deliver)
    }

    /// The station's connector ids, ascending.
    pub fn connector_ids(&self) -> Vec<u32> {
        self.connectors.keys().copied().collect()
    }

    pub fn connector(&self, connector: u32) -> Option<&Connector> {
        self.connectors.get(&connector)
    }

    pub fn is_accepted(&self) -> bool {
        self.boot == Boot::Accepted
    }

    /// The station's own idea of the time, as it would stamp it.
    fn timestamp(&self, now: u64) -> String {
        let local = if self.config.rtc {
            now.saturating_add_signed(self.config.clock_offset_millis)
        } else {
            now - self.clock_started_at
        };
        format_rfc3339(local)
    }

    // ----- inputs -----------------------------------------------------------------------

    /// The transport connected (or reconnected). Per-connection memory starts afresh.
    pub fn handle_connected(&mut self, now: u64) {
        self.connected = true;
        self.answered.clear();
        if self.boot != Boot::Accepted {
            self.boot = Boot::Due(now);
        }
        // An unanswered CALL is lost with the old connection; deliver it again if needed.
        if let Some(in_flight) = self.in_flight.take()
            && in_flight.call.must_deliver
        {
            self.queued.push_front(in_flight.call);
        }
    }

    pub fn handle_disconnected(&mut self) {
        self.connected = false;
    }

    /// Power cycle: volatile state is lost, the ground-truth log is not. A running
    /// transaction is stopped (reason Reboot) and reported once the CSMS accepts the boot.
    pub fn handle_reboot(&mut self, now: u64) {
        let mut stops = Vec::new();
        for connector in self.connectors.values() {
            if let Some(transaction_id) = connector.transaction_id {
                stops.push(self.stop_call(transaction_id, connector.meter_wh, Reason::Reboot, now));
            }
        }
        let transactions: Vec<OutgoingCall> = self
            .queued
            .drain(..)
            .chain(self.in_flight.take().map(|f| f.call))
            .filter(|call| call.must_deliver)
            .map(|mut call| {
                // Its connector starts over as Available: no connector awaits the id.
                call.connector = None;
                call
            })
            .collect();
        let connectors = (1..=self.config.connectors)
            .map(|c| (c, Connector::available()))
            .collect();
        *self = ChargePoint {
            config: self.config.clone(),
            connected: self.connected,
            boot: Boot::Due(now),
            heartbeat_interval_millis: self.config.boot_retry_millis,
            next_heartbeat_at: None,
            connectors,
            queued: transactions.into_iter().chain(stops).collect(),
            in_flight: None,
            transmit: VecDeque::new(),
            answered: AnswerMemory::new(self.config.remembered_answers_max),
            // Journaled like the transaction queue: survives the reboot.
            unlocked_id_tags: std::mem::take(&mut self.unlocked_id_tags),
            next_message_id: 1, // ids repeat after a reboot, as on real stations
            boots: self.boots + 1,
            clock_started_at: now,
            actuations: std::mem::take(&mut self.actuations),
        };
    }

    /// A power fault on `connector` (e.g. UnderVoltage): the connector is Faulted.
    pub fn handle_fault(&mut self, connector: u32, error_code: ChargePointErrorCode, now: u64) {
        self.set_status(connector, ChargePointStatus::Faulted, error_code, now);
    }

    /// The fault cleared: the connector is Available again.
    pub fn handle_fault_cleared(&mut self, connector: u32, now: u64) {
        if let Some(state) = self.connectors.get_mut(&connector) {
            state.release();
        }
        self.set_status(
            connector,
            ChargePointStatus::Available,
            ChargePointErrorCode::NoError,
            now,
        );
    }

    /// The EV pauses charging (Charging → SuspendedEV) or resumes it (SuspendedEV →
    /// Charging), as a car's battery management does; the transaction goes on. Other
    /// connectors are left alone.
    pub fn handle_ev_pause(&mut self, connector: u32, paused: bool, now: u64) {
        let Some(state) = self.connectors.get(&connector) else {
            return;
        };
        let status = match (state.status, paused) {
            (ChargePointStatus::Charging, true) => ChargePointStatus::SuspendedEV,
            (ChargePointStatus::SuspendedEV, false) => ChargePointStatus::Charging,
            _ => return,
        };
        self.set_status(connector, status, ChargePointErrorCode::NoError, now);
    }

    /// The operator takes a connector out of service (Unavailable) or back (Available).
    /// An idle connector changes at once; a busy one is left alone, as stations do.
    pub fn handle_availability(&mut self, connector: u32, in_service: bool, now: u64) {
        let Some(state) = self.connectors.get(&connector) else {
            return;
        };
        let idle = matches!(
            state.status,
            ChargePointStatus::Available | ChargePointStatus::Unavailable
        );
        if !idle {
            return;
        }
        let status = if in_service {
            ChargePointStatus::Available
        } else {
            ChargePointStatus::Unavailable
        };
        self.set_status(connector, status, ChargePointErrorCode::NoError, now);
    }

    /// The driver unplugs: a running transaction stops.
    pub fn handle_unplug(&mut self, connector: u32, now: u64) {
        let Some(state) = self.connectors.get(&connector) else {
            return;
        };
        if let Some(transaction_id) = state.transaction_id {
            let call = self.stop_call(transaction_id, state.meter_wh, Reason::EVDisconnected, now);
            self.enqueue(call);
            self.set_status(
                connector,
                ChargePointStatus::Finishing,
                ChargePointErrorCode::NoError,
                now,
            );
            if let Some(state) = self.connectors.get_mut(&connector) {
                state.transaction_id = None;
                state.release();
            }
            self.set_status(
                connector,
                ChargePointStatus::Available,
                ChargePointErrorCode::NoError,
                now,
            );
        }
    }

    /// One frame of text from the CSMS.
    pub fn handle_text(&mut self, text: &str, now: u64) {
        match Frame::parse(text) {
            Ok(Frame::Call {
                id,
                action,
                payload,
            }) => self.handle_call(id, &action, &payload, now),
            Ok(Frame::CallResult { id, payload }) => self.handle_result(&id, &payload, now),
            Ok(Frame::CallError { id, .. }) => self.handle_call_error(&id, now),
            Err(error) => {
                if let Some(reply) = error.reply() {
                    self.transmit.push_back(reply.to_text());
                }
            }
        }
    }

    fn handle_call(&mut self, id: String, action: &str, payload: &Value, now: u64) {
        if let Some(answer) = self.answered.answer_for(&id) {
            self.transmit.push_back(answer.to_owned()); // a retransmission: same answer
            return;
        }
        let reply = match action {
            "RemoteStartTransaction" => {
                match decode_payload::<RemoteStartTransactionReq>(action, payload) {
                    Ok(request) => {
                        let status = self.remote_start(&request, now);
                        Frame::CallResult {
                            id: id.clone(),
                            payload: json!({ "status": status }),
                        }
                    }
                    Err(PayloadError { code, description }) => call_error(&id, code, &description),
                }
            }
            other => call_error(
                &id,
                ErrorCode::NotImplemented,
                &format!("{other} is not implemented by this station"),
            ),
        };
        let text = reply.to_text();
        self.answered.remember(id, text.clone());
        self.transmit.push_back(text);
    }

    fn remote_start(
        &mut self,
        request: &RemoteStartTransactionReq,
        now: u64,
    ) -> RemoteStartStopStatus {
        if self.boot != Boot::Accepted {
            return RemoteStartStopStatus::Rejected;
        }
        if self.unlocked_id_tags.contains(&request.id_tag) {
            return RemoteStartStopStatus::Accepted; // already done for this idTag
        }
        let connector = match request.connector_id {
            Some(connector) => connector,
            None => match self
                .connectors
                .iter()
                .find(|(_, c)| c.status == ChargePointStatus::Available)
            {
                Some((&connector, _)) => connector,
                None => return RemoteStartStopStatus::Rejected,
            },
        };
        let Some(state) = self.connectors.get_mut(&connector) else {
            return RemoteStartStopStatus::Rejected;
        };
        if state.status != ChargePointStatus::Available {
            return RemoteStartStopStatus::Rejected;
        }
        state.id_tag = Some(request.id_tag.clone());
        state.plug_in_at = Some(now + self.config.plug_in_delay_millis);
        state.give_up_at = Some(now + self.config.connection_timeout_millis);
        self.actuations.push(Actuation {
            at_millis: now,
            connector,
            id_tag: request.id_tag.clone(),
        });
        self.unlocked_id_tags.push_back(request.id_tag.clone());
        if self.unlocked_id_tags.len() > self.config.remembered_id_tags_max {
            self.unlocked_id_tags.pop_front();
        }
        self.set_status(
            connector,
            ChargePointStatus::Preparing,
            ChargePointErrorCode::NoError,
            now,
        );
        RemoteStartStopStatus::Accepted
    }

    fn handle_result(&mut self, id: &str, payload: &Value, now: u64) {
        let Some(in_flight) = self.in_flight.take_if(|f| f.id == id) else {
            return; // late or unknown: dropped, never matched to another call
        };
        match in_flight.call.action {
            "BootNotification" => {
                match decode_payload::<BootNotificationConf>("BootNotification", payload) {
                    Ok(conf) if conf.status == RegistrationStatus::Accepted => {
                        self.boot = Boot::Accepted;
                        self.heartbeat_interval_millis = u64::from(conf.interval.max(1)) * 1000;
                        self.next_heartbeat_at = Some(now + self.heartbeat_interval_millis);
                        self.announce_all_statuses(now);
                    }
                    Ok(conf) => {
                        self.boot = Boot::Due(now + u64::from(conf.interval.max(1)) * 1000);
                    }
                    Err(_) => self.boot = Boot::Due(now + self.config.boot_retry_millis),
                }
            }
            "StartTransaction" => {
                let Ok(conf) = decode_payload::<StartTransactionConf>("StartTransaction", payload)
                else {
                    return;
                };
                match in_flight.call.connector {
                    Some(connector) => {
                        if let Some(state) = self.connectors.get_mut(&connector) {
                            state.transaction_id = Some(conf.transaction_id);
                        }
                    }
                    None => {
                        let meter_start =
                            in_flight.call.payload["meterStart"].as_i64().unwrap_or(0);
                        let stop =
                            self.stop_call(conf.transaction_id, meter_start, Reason::Reboot, now);
                        self.enqueue(stop);
                    }
                }
            }
            _ => {}
        }
    }

    fn handle_call_error(&mut self, id: &str, now: u64) {
        let Some(in_flight) = self.in_flight.take_if(|f| f.id == id) else {
            return;
        };
        if in_flight.call.action == "BootNotification" {
            self.boot = Boot::Due(now + self.config.boot_retry_millis);
        } else if in_flight.call.must_deliver {
            // A transaction message refused with a CALLERROR is sent again later (OCPP 1.6
            // §4.10, TransactionMessageRetryInterval), never dropped: it waits out a call
            // timeout as if unanswered, then goes back to the head of the queue.
            self.in_flight = Some(InFlight {
                deadline: now + self.config.call_timeout_millis,
                ..in_flight
            });
        }
    }

    /// Timers: boot retries, heartbeats, plug-in, connection timeouts, call timeouts.
    pub fn handle_timeout(&mut self, now: u64) {
        if let Some(in_flight) = self.in_flight.take_if(|f| f.deadline <= now) {
            if in_flight.call.action == "BootNotification" {
                self.boot = Boot::Due(now);
            } else if in_flight.call.must_deliver {
                self.queued.push_front(in_flight.call);
            }
        }
        if self.boot == Boot::Accepted && self.next_heartbeat_at.is_some_and(|at| at <= now) {
            self.next_heartbeat_at = Some(now + self.heartbeat_interval_millis);
            // A heartbeat only says "still here": one waiting in the queue is enough.
            if !self.queued.iter().any(|c| c.action == "Heartbeat") {
                self.enqueue(OutgoingCall {
                    action: "Heartbeat",
                    payload: json!({}),
                    must_deliver: false,
                    connector: None,
                });
            }
        }
        let connectors: Vec<u32> = self.connectors.keys().copied().collect();
        for connector in connectors {
            self.connector_timers(connector, now);
        }
    }

    fn connector_timers(&mut self, connector: u32, now: u64) {
        let state = &self.connectors[&connector];
        // The EV leaves only once the transaction is known: a StopTransaction needs its id.
        if matches!(
            state.status,
            ChargePointStatus::Charging | ChargePointStatus::SuspendedEV
        ) && state.transaction_id.is_some()
            && state.unplug_at.is_some_and(|at| at <= now)
        {
            self.handle_unplug(connector, now);
            return;
        }
        if state.status != ChargePointStatus::Preparing {
            return;
        }
        let (plug_in_at, give_up_at) = (state.plug_in_at, state.give_up_at);
        if plug_in_at.is_some_and(|at| at <= now) {
            let id_tag = state.id_tag.clone().unwrap_or_default();
            let meter_start = state.meter_wh;
            let unplug_at = self.config.charging_millis.map(|charging| now + charging);
            if let Some(state) = self.connectors.get_mut(&connector) {
                state.plug_in_at = None;
                state.give_up_at = None;
                state.unplug_at = unplug_at;
            }
            let timestamp = self.timestamp(now);
            self.enqueue(OutgoingCall {
                action: "StartTransaction",
                payload: json!({"connectorId": connector, "idTag": id_tag, "meterStart": meter_start, "timestamp": timestamp}),
                must_deliver: true,
                connector: Some(connector),
            });
            self.set_status(
                connector,
                ChargePointStatus::Charging,
                ChargePointErrorCode::NoError,
                now,
            );
        } else if give_up_at.is_some_and(|at| at <= now) {
            if let Some(state) = self.connectors.get_mut(&connector) {
                state.release();
            }
            self.set_status(
                connector,
                ChargePointStatus::Available,
                ChargePointErrorCode::NoError,
                now,
            );
        }
    }

    // ----- outputs ----------------------------------------------------------------------

    /// The next frame to send, if any. Sends only while connected; one CALL at a time.
    pub fn poll_transmit(&mut self, now: u64) -> Option<String> {
        if !self.connected {
            return None;
        }
        if let Some(text) = self.transmit.pop_front() {
            return Some(text);
        }
        if self.in_flight.is_some() {
            return None;
        }
        let call = match self.boot {
            Boot::Due(at) if at <= now => {
                self.boot = Boot::Sent;
                OutgoingCall {
                    action: "BootNotification",
                    payload: json!({"chargePointVendor": "evsource", "chargePointModel": "SimulatedCP"}),
                    must_deliver: false,
                    connector: None,
                }
            }
            Boot::Accepted => self.queued.pop_front()?,
            Boot::Due(_) | Boot::Sent => return None,
        };
        let id = format!("{}", self.next_message_id);
        self.next_message_id += 1;
        let text = Frame::Call {
            id: id.clone(),
            action: call.action.to_owned(),
            payload: call.payload.clone(),
        }
        .to_text();
        self.in_flight = Some(InFlight {
            id,
            call,
            deadline: now + self.config.call_timeout_millis,
        });
        Some(text)
    }

    /// When [`handle_timeout`](Self::handle_timeout) should run next.
    pub fn poll_timeout(&self) -> Option<u64> {
        let boot = match self.boot {
            Boot::Due(at) if self.connected => Some(at),
            _ => None,
        };
        let heartbeat = if self.boot == Boot::Accepted {
            self.next_heartbeat_at
        } else {
            None
        };
        let call = self.in_flight.as_ref().map(|f| f.deadline);
        let connectors = self
            .connectors
            .values()
            .flat_map(|c| match c.status {
                ChargePointStatus::Preparing => [c.plug_in_at, c.give_up_at],
                ChargePointStatus::Charging | ChargePointStatus::SuspendedEV
                    if c.transaction_id.is_some() =>
                {
                    [c.unplug_at, None]
                }
                _ => [None, None],
            })
            .flatten();
        [boot, heartbeat, call]
            .into_iter()
            .flatten()
            .chain(connectors)
            .min()
    }

    // ----- helpers ----------------------------------------------------------------------

    fn enqueue(&mut self, call: OutgoingCall) {
        if self.queued.len() >= self.config.queued_calls_max {
            // Telemetry is shed first; transaction messages are never dropped silently.
            if let Some(index) = self.queued.iter().position(|c| !c.must_deliver) {
                self.queued.remove(index);
            } else if !call.must_deliver {
                return;
            }
        }
        self.queued.push_back(call);
    }

    fn set_status(
        &mut self,
        connector: u32,
        status: ChargePointStatus,
        error_code: ChargePointErrorCode,
        now: u64,
    ) {
        let Some(state) = self.connectors.get_mut(&connector) else {
            return;
        };
        if state.status == status && state.error_code == error_code {
            return;
        }
        state.status = status;
        state.error_code = error_code;
        if self.boot == Boot::Accepted {
            // A report still waiting in the queue is superseded by this newer one for the
            // same connector (as the MinimumStatusDuration key of OCPP 1.6 §9.1 allows): the
            // CSMS needs the connector's present state, and a backlog of stale reports
            // behind a lossy link would hold the transaction messages queued among them
            // back for minutes. The newer report goes to the back, after any transaction
            // message it follows.
            self.queued.retain(|queued| {
                queued.action != "StatusNotification" || queued.payload["connectorId"] != connector
            });
            let call = self.status_call(connector, status, error_code, now);
            self.enqueue(call);
        }
    }

    fn status_call(
        &self,
        connector: u32,
        status: ChargePointStatus,
        error_code: ChargePointErrorCode,
        now: u64,
    ) -> OutgoingCall {
        OutgoingCall {
            action: "StatusNotification",
            payload: json!({"connectorId": connector, "errorCode": error_code, "status": status, "timestamp": self.timestamp(now)}),
            must_deliver: false,
            connector: None,
        }
    }

    fn announce_all_statuses(&mut self, now: u64) {
        let station = self.status_call(
            0,
            ChargePointStatus::Available,
            ChargePointErrorCode::NoError,
            now,
        );
        self.enqueue(station);
        let statuses: Vec<(u32, ChargePointStatus, ChargePointErrorCode)> = self
            .connectors
            .iter()
            .map(|(&c, s)| (c, s.status, s.error_code))
            .collect();
        for (connector, status, error_code) in statuses {
            let call = self.status_call(connector, status, error_code, now);
            self.enqueue(call);
        }
    }

    fn stop_call(
        &self,
        transaction_id: i64,
        meter_stop: i64,
        reason: Reason,
        now: u64,
    ) -> OutgoingCall {
        OutgoingCall {
            action: "StopTransaction",
            payload: json!({"meterStop": meter_stop, "timestamp": self.timestamp(now), "transactionId": transaction_id, "reason": reason}),
            must_deliver: true,
            connector: None,
        }
    }
}

fn call_error(id: &str, code: ErrorCode, description: &str) -> Frame {
    Frame::CallError {
        id: id.to_owned(),
        code,
        description: description.to_owned(),
        details: json!({}),
    }
}
