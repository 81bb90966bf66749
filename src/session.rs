//! The CSMS side of one charge point connection, as a sans-IO state machine.
//!
//! Frames from the station go in through [`StationSession::handle_text`]; replies come out
//! of [`StationSession::poll_transmit`], and facts for the rest of the node out of
//! [`StationSession::poll_output`]: telemetry to record for the mirror, boots that are
//! accepted only once recorded, StartTransactions that need a transaction id from the
//! store, answers to the dispatcher's
//! RemoteStartTransaction. Every CALL is answered — with a CALLRESULT or the right
//! CALLERROR — never with silence, and a CALL repeated with the same message id on this
//! connection is answered with the earlier answer.

use std::collections::VecDeque;

use serde_json::{Value, json};

use crate::mirror::TelemetryEvent;
use crate::ocpp::answers::AnswerMemory;
use crate::ocpp::frame::{ErrorCode, Frame};
use crate::ocpp::messages::{
    BootNotificationConf, RegistrationStatus, RemoteStartStopStatus, RemoteStartTransactionConf,
    StartTransactionReq, StationRequest, StopTransactionReq, decode_payload,
};
use crate::ocpp::time::format_rfc3339;

/// Bounds of one session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Heartbeat interval handed to the station at boot, in seconds.
    pub heartbeat_interval_secs: u32,
    /// When a boot could not be recorded, the station is told `Pending` and to boot again
    /// after this many seconds.
    pub boot_retry_secs: u32,
    /// Answers remembered for repeated message ids.
    pub remembered_answers_max: usize,
    /// Connector ids a station may use (1..=this; 0 names the station itself where OCPP
    /// allows it). A higher one gets a PropertyConstraintViolation CALLERROR and changes
    /// nothing. From [`Limits::station_connectors_max`](crate::core::Limits).
    pub connectors_max: u32,
    /// Transactions a station may have open at once; a StartTransaction past it gets an
    /// OccurenceConstraintViolation CALLERROR and is not recorded. From
    /// [`Limits::station_open_transactions_max`](crate::core::Limits).
    pub open_transactions_max: usize,
}

impl SessionConfig {
    /// The defaults, with the per-station bounds of `limits`.
    pub fn with_limits(limits: &crate::core::Limits) -> SessionConfig {
        SessionConfig {
            connectors_max: limits.station_connectors_max,
            open_transactions_max: limits.station_open_transactions_max,
            ..SessionConfig::default()
        }
    }
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            heartbeat_interval_secs: 60,
            boot_retry_secs: 10,
            remembered_answers_max: 64,
            connectors_max: crate::core::Limits::default().station_connectors_max,
            open_transactions_max: crate::core::Limits::default().station_open_transactions_max,
        }
    }
}

/// What the rest of the node must do with what the station said.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionOutput {
    /// Record in `telemetry-<station>` (the mirror folds it).
    Telemetry(TelemetryEvent),
    /// The station booted: record `BootAccepted { vendor, model }`, then call
    /// [`StationSession::complete_boot`] saying whether the record was stored. The boot is
    /// accepted only once it is: a station accepted once does not boot again when it
    /// reconnects, so a node it reconnects to must find the acceptance in the store.
    BootNotification {
        call_id: String,
        vendor: String,
        model: String,
    },
    /// Record a TransactionStarted idempotently, then call
    /// [`StationSession::complete_start_transaction`] with the transaction id.
    StartTransaction {
        call_id: String,
        request: StartTransactionReq,
    },
    /// Record a TransactionStopped idempotently and end the business session the
    /// transaction ran for, then call [`StationSession::complete_stop_transaction`]. Left
    /// unanswered when either could not be recorded: the station keeps transaction
    /// messages until they are answered and sends this one again.
    StopTransaction {
        call_id: String,
        request: StopTransactionReq,
    },
    /// The station answered the dispatcher's CALL.
    RemoteStartAnswered {
        call_id: String,
        status: RemoteStartStopStatus,
    },
    /// The station answered the dispatcher's CALL with a CALLERROR.
    RemoteStartFailed { call_id: String },
    /// The station asks whether `id_tag` may charge (it does so before starting a remotely
    /// started transaction when AuthorizeRemoteTxRequests is on). Decide from what the
    /// CSMS issued, then call [`StationSession::complete_authorize`].
    Authorize { call_id: String, id_tag: String },
    /// The station has shown on this connection that it considers its boot accepted (it
    /// sent a CALL other than BootNotification): the dispatcher may send to it.
    Online,
}

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct StationSession {
    station: String,
    config: SessionConfig,
    accepted: bool,
    /// `Online` was emitted on this connection.
    online: bool,
    /// The dispatcher's CALL in flight: message id, connector, idTag.
    outgoing: Option<(String, u32, String)>,
    answered: AnswerMemory,
    transmit: VecDeque<String>,
    outputs: VecDeque<SessionOutput>,
    /// Set when the station sent text that is no answerable frame: the connection is to
    /// close with this WebSocket code and reason.
    close: Option<(u16, String)>,
}

impl StationSession {
    pub fn new(station: impl Into<String>, config: SessionConfig) -> StationSession {
        let answered = AnswerMemory::new(config.remembered_answers_max);
        StationSession {
            station: station.into(),
            config,
            accepted: false,
            online: false,
            outgoing: None,
            answered,
            transmit: VecDeque::new(),
            outputs: VecDeque::new(),
            close: None,
        }
    }

    /// A new connection of a station accepted before (the mirror knows): stations do not
    /// repeat BootNotification on a reconnect, only after a reboot, so the session accepts
    /// its CALLs at once. It goes `Online` only when the station proves it considers itself
    /// accepted, by sending a CALL other than BootNotification: a station that rebooted
    /// answers every request with a refusal until its new boot is accepted, and a refused
    /// RemoteStart must never be mistaken for the station's verdict on the request.
    pub fn resume_accepted(station: impl Into<String>, config: SessionConfig) -> StationSession {
        let mut session = StationSession::new(station, config);
        session.accepted = true;
        session
    }

    /// The station's boot turns out to be accepted (recorded before, learned late): its
    /// CALLs are accepted from now on, as [`StationSession::resume_accepted`] would have.
    pub fn resume(&mut self) {
        self.accepted = true;
    }

    pub fn station(&self) -> &str {
        &self.station
    }

    pub fn is_accepted(&self) -> bool {
        self.accepted
    }

    /// One frame from the station; `now` is the CSMS's clock.
    pub fn handle_text(&mut self, text: &str, now_millis: u64) {
        match Frame::parse(text) {
            Ok(Frame::Call {
                id,
                action,
                payload,
            }) => self.handle_call(id, &action, &payload, now_millis),
            Ok(Frame::CallResult { id, payload }) => self.handle_result(&id, &payload),
            Ok(Frame::CallError { id, .. }) => {
                if self
                    .outgoing
                    .as_ref()
                    .is_some_and(|(call, _, _)| *call == id)
                {
                    self.outgoing = None;
                    self.outputs
                        .push_back(SessionOutput::RemoteStartFailed { call_id: id });
                }
            }
            // A broken CALL whose id can be read gets a CALLERROR; anything else cannot
            // be answered, and the connection closes (1007 for text that is not JSON,
            // 1002 otherwise) rather than leave the station waiting on silence.
            Err(error) => match error.reply() {
                Some(reply) => self.transmit.push_back(reply.to_text()),
                None => {
                    if self.close.is_none() {
                        self.close = Some(error.close());
                    }
                }
            },
        }
    }

    fn handle_call(&mut self, id: String, action: &str, payload: &Value, now_millis: u64) {
        if let Some(answer) = self.answered.answer_for(&id) {
            self.transmit.push_back(answer.to_owned());
            return;
        }
        let request = match StationRequest::decode(action, payload) {
            Ok(request) => request,
            Err(error) => {
                let reply = call_error(&id, error.code, &error.description);
                return self.answer(id, reply);
            }
        };
        if !self.accepted && !matches!(request, StationRequest::BootNotification(_)) {
            let reply = call_error(
                &id,
                ErrorCode::SecurityError,
                "BootNotification must be accepted first",
            );
            return self.answer(id, reply);
        }
        if let Some(connector) = match &request {
            StationRequest::StatusNotification(status) => Some(status.connector_id),
            StationRequest::MeterValues(values) => Some(values.connector_id),
            StationRequest::StartTransaction(start) if start.connector_id == 0 => {
                Some(u32::MAX) // a transaction runs on a connector, never on the station
            }
            StationRequest::StartTransaction(start) => Some(start.connector_id),
            _ => None,
        } && connector > self.config.connectors_max
        {
            let reply = call_error(
                &id,
                ErrorCode::PropertyConstraintViolation,
                &format!(
                    "connectorId must be within 1..={} (0: the whole station, not for a transaction)",
                    self.config.connectors_max
                ),
            );
            return self.answer(id, reply);
        }
        if !self.online && !matches!(request, StationRequest::BootNotification(_)) {
            self.online = true;
            self.outputs.push_back(SessionOutput::Online);
        }
        let current_time = format_rfc3339(now_millis);
        let result = match request {
            StationRequest::BootNotification(boot) => {
                // Answered once the boot is recorded (or could not be).
                self.outputs.push_back(SessionOutput::BootNotification {
                    call_id: id,
                    vendor: boot.charge_point_vendor,
                    model: boot.charge_point_model,
                });
                return;
            }
            StationRequest::Heartbeat(_) => {
                self.outputs
                    .push_back(SessionOutput::Telemetry(TelemetryEvent::HeartbeatReceived));
                json!({ "currentTime": current_time })
            }
            StationRequest::StatusNotification(status) => {
                self.outputs
                    .push_back(SessionOutput::Telemetry(TelemetryEvent::StatusReported {
                        connector: status.connector_id,
                        status: status.status,
                        error_code: status.error_code,
                        station_timestamp: status.timestamp,
                    }));
                json!({})
            }
            StationRequest::StartTransaction(request) => {
                // Answered once the store has given the transaction its id.
                self.outputs.push_back(SessionOutput::StartTransaction {
                    call_id: id,
                    request,
                });
                return;
            }
            StationRequest::Authorize(request) => {
                // Answered once the node has looked the idTag up.
                self.outputs.push_back(SessionOutput::Authorize {
                    call_id: id,
                    id_tag: request.id_tag,
                });
                return;
            }
            StationRequest::MeterValues(_) => json!({}),
            StationRequest::DataTransfer(_) => json!({ "status": "UnknownVendorId" }),
            StationRequest::StopTransaction(request) => {
                // Answered once the stop and the session's end are recorded.
                self.outputs.push_back(SessionOutput::StopTransaction {
                    call_id: id,
                    request,
                });
                return;
            }
        };
        let reply = Frame::CallResult {
            id: id.clone(),
            payload: result,
        };
        self.answer(id, reply);
    }

    /// Answers a BootNotification: `Accepted` (with the heartbeat interval) when its record
    /// is stored, and from then on the station is served; otherwise `Pending`, with
    /// [`SessionConfig::boot_retry_secs`] as the time to boot again, and nothing but a boot
    /// is served meanwhile.
    pub fn complete_boot(&mut self, call_id: String, recorded: bool, now_millis: u64) {
        let (status, interval) = if recorded {
            self.accepted = true;
            (
                RegistrationStatus::Accepted,
                self.config.heartbeat_interval_secs,
            )
        } else {
            (RegistrationStatus::Pending, self.config.boot_retry_secs)
        };
        let conf = BootNotificationConf {
            status,
            current_time: format_rfc3339(now_millis),
            interval,
        };
        let reply = Frame::CallResult {
            id: call_id.clone(),
            payload: serde_json::to_value(conf).expect("serialises"),
        };
        self.answer(call_id, reply);
    }

    /// Answers a StartTransaction with the transaction id the store assigned, and whether
    /// its idTag may charge there (`Accepted`: the CSMS released that connector for it;
    /// `Invalid` otherwise — the station is to stop the transaction).
    pub fn complete_start_transaction(
        &mut self,
        call_id: String,
        transaction_id: i64,
        authorized: bool,
    ) {
        let status = if authorized { "Accepted" } else { "Invalid" };
        let reply = Frame::CallResult {
            id: call_id.clone(),
            payload: json!({ "idTagInfo": { "status": status }, "transactionId": transaction_id }),
        };
        self.answer(call_id, reply);
    }

    /// Refuses a CALL the session handed out (a StartTransaction past a station's bound)
    /// with a CALLERROR.
    pub fn refuse(&mut self, call_id: String, code: ErrorCode, description: &str) {
        let reply = call_error(&call_id, code, description);
        self.answer(call_id, reply);
    }

    /// Answers a StopTransaction whose stop is recorded.
    ///
    /// `id_tag_accepted` is the verdict on the idTag the stop carried: `None` when it
    /// carried none (the answer then has no idTagInfo: OCPP 1.6 makes it optional for
    /// exactly that case), else whether it is the idTag the transaction ran for.
    pub fn complete_stop_transaction(&mut self, call_id: String, id_tag_accepted: Option<bool>) {
        let payload = match id_tag_accepted {
            None => json!({}),
            Some(accepted) => {
                let status = if accepted { "Accepted" } else { "Invalid" };
                json!({ "idTagInfo": { "status": status } })
            }
        };
        let reply = Frame::CallResult {
            id: call_id.clone(),
            payload,
        };
        self.answer(call_id, reply);
    }

    /// Answers an Authorize: `Accepted` for an idTag the CSMS issued to this station and
    /// that is still in use, `Invalid` otherwise.
    pub fn complete_authorize(&mut self, call_id: String, accepted: bool) {
        let status = if accepted { "Accepted" } else { "Invalid" };
        let reply = Frame::CallResult {
            id: call_id.clone(),
            payload: json!({ "idTagInfo": { "status": status } }),
        };
        self.answer(call_id, reply);
    }

    fn handle_result(&mut self, id: &str, payload: &Value) {
        let Some((call_id, connector, id_tag)) = self.outgoing.take_if(|(call, _, _)| call == id)
        else {
            return; // a late or unknown reply is dropped
        };
        let output =
            match decode_payload::<RemoteStartTransactionConf>("RemoteStartTransaction", payload) {
                Ok(conf) => {
                    self.outputs.push_back(SessionOutput::Telemetry(
                        TelemetryEvent::RemoteStartAnswered {
                            connector,
                            id_tag,
                            status: conf.status,
                        },
                    ));
                    SessionOutput::RemoteStartAnswered {
                        call_id,
                        status: conf.status,
                    }
                }
                Err(_) => SessionOutput::RemoteStartFailed { call_id },
            };
        self.outputs.push_back(output);
    }

    /// Sends the dispatcher's RemoteStartTransaction. The dispatcher decides what is in
    /// flight (one CALL per station, given up after its timeout), so a new CALL replaces a
    /// given-up one, whose late reply is then dropped. Returns false (and sends nothing)
    /// if the boot is not accepted.
    pub fn send_remote_start(&mut self, call_id: &str, connector: u32, id_tag: &str) -> bool {
        if !self.accepted {
            return false;
        }
        let frame = Frame::Call {
            id: call_id.to_owned(),
            action: "RemoteStartTransaction".into(),
            payload: json!({ "connectorId": connector, "idTag": id_tag }),
        };
        self.outgoing = Some((call_id.to_owned(), connector, id_tag.to_owned()));
        self.transmit.push_back(frame.to_text());
        true
    }

    pub fn poll_transmit(&mut self) -> Option<String> {
        self.transmit.pop_front()
    }

    /// The WebSocket close code and reason to end the connection with, once the station
    /// sent text that could not be answered (see [`crate::ocpp::FrameError::close`]).
    pub fn poll_close(&mut self) -> Option<(u16, String)> {
        self.close.take()
    }

    pub fn poll_output(&mut self) -> Option<SessionOutput> {
        self.outputs.pop_front()
    }

    fn answer(&mut self, id: String, reply: Frame) {
        let text = reply.to_text();
        self.answered.remember(id, text.clone());
        self.transmit.push_back(text);
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
