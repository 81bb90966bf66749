//! **I12**, the CSMS on the wire. Two vantage points, because one cannot see it all:
//!
//! * [`WireOracle`] stands where a charge point stands, on one connection: every frame
//!   the CSMS sends is a valid OCPP-J frame (against the official schemas when they are
//!   loaded, else against the typed messages), its CALL message ids are never reused, and
//!   it answers only CALLs it was given, once per time it got them. These need no clock.
//! * [`CallDiscipline`] stands at the node's socket, where the CSMS's own times are: it
//!   never writes a CALL while its previous CALL on the connection is unanswered and
//!   its timeout has not run out. (A station cannot judge this: a partition holds two
//!   CALLs sent a timeout apart and delivers them together.)

use std::collections::BTreeMap;

use serde_json::Value;

use crate::ocpp::Frame;
use crate::ocpp::messages::{
    BootNotificationConf, EmptyConf, HeartbeatConf, RemoteStartTransactionReq,
    StartTransactionConf, StopTransactionConf, decode_payload,
};
use crate::ocpp::schema::Schemas;

/// Violations one oracle keeps (the first ones explain a run; the count says the rest).
const VIOLATIONS_KEPT_MAX: usize = 16;
/// Station CALLs remembered per connection for matching answers.
const CALLS_REMEMBERED_MAX: usize = 4096;
/// OCPP-J message ids are at most this long.
pub const MESSAGE_ID_CHARS_MAX: usize = 36;

/// The CSMS's own timing rule, as [`CallDiscipline`] judges it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallTiming {
    /// The CSMS's timeout for its own CALLs: after it, the next CALL is allowed.
    pub call_timeout_millis: u64,
    /// Slack between the node deciding to send and the frame crossing its socket.
    pub slack_millis: u64,
}

#[derive(Clone, Debug)]
struct Outstanding {
    id: String,
    action: String,
    written_at_millis: u64,
}

/// The CSMS's side of one connection: one CALL outstanding at a time (I12).
#[derive(Debug)]
pub struct CallDiscipline {
    timing: CallTiming,
    outstanding: Option<Outstanding>,
}

impl CallDiscipline {
    pub fn new(timing: CallTiming) -> CallDiscipline {
        CallDiscipline {
            timing,
            outstanding: None,
        }
    }

    /// The node wrote `text` to the station at `now_millis` (its clock). A violation,
    /// described, if it is a CALL written while another was outstanding.
    pub fn written(&mut self, text: &str, now_millis: u64) -> Option<String> {
        let Ok(Frame::Call { id, action, .. }) = Frame::parse(text) else {
            return None;
        };
        let broken = self.outstanding.take().and_then(|previous| {
            let waited = now_millis.saturating_sub(previous.written_at_millis);
            (waited + self.timing.slack_millis < self.timing.call_timeout_millis).then(|| {
                format!(
                    "the CSMS wrote CALL '{id}' ({action}) while its CALL '{}' ({}) was outstanding: unanswered, {waited} ms into its {} ms timeout",
                    previous.id, previous.action, self.timing.call_timeout_millis
                )
            })
        });
        self.outstanding = Some(Outstanding {
            id,
            action,
            written_at_millis: now_millis,
        });
        broken
    }

    /// The node read `text` from the station: an answer ends its CALL's wait.
    pub fn read(&mut self, text: &str) {
        if let Ok(Frame::CallResult { id, .. } | Frame::CallError { id, .. }) = Frame::parse(text)
            && self.outstanding.as_ref().is_some_and(|o| o.id == id)
        {
            self.outstanding = None;
        }
    }
}

/// One station's view of I12, over all its connections.
#[derive(Debug)]
pub struct WireOracle {
    station: String,
    connection: u64,
    /// CALL ids the CSMS used on this connection, with a digest of the frame.
    csms_call_ids: BTreeMap<String, String>,
    /// Station CALLs handed to the CSMS on this connection: action, deliveries, answers.
    delivered: BTreeMap<String, (String, u32, u32)>,
    violations: Vec<String>,
    violation_count: u64,
    frames_checked: u64,
}

impl WireOracle {
    pub fn new(station: &str) -> WireOracle {
        WireOracle {
            station: station.to_owned(),
            connection: 0,
            csms_call_ids: BTreeMap::new(),
            delivered: BTreeMap::new(),
            violations: Vec::new(),
            violation_count: 0,
            frames_checked: 0,
        }
    }

    /// A new connection: message ids and outstanding calls start afresh.
    pub fn connected(&mut self) {
        self.connection += 1;
        self.csms_call_ids.clear();
        self.delivered.clear();
    }

    fn violate(&mut self, what: String) {
        self.violation_count += 1;
        if self.violations.len() < VIOLATIONS_KEPT_MAX {
            self.violations.push(format!(
                "{} (connection {}): {what}",
                self.station, self.connection
            ));
        }
    }

    /// A frame the CSMS sent on this connection, as it arrived.
    pub fn from_csms(&mut self, text: &str) {
        self.frames_checked += 1;
        let frame = match Frame::parse(text) {
            Ok(frame) => frame,
            Err(error) => {
                self.violate(format!("the CSMS sent a malformed frame ({error}): {text}"));
                return;
            }
        };
        if frame.id().chars().count() > MESSAGE_ID_CHARS_MAX || frame.id().is_empty() {
            self.violate(format!(
                "the CSMS used message id '{}', not 1–{MESSAGE_ID_CHARS_MAX} characters",
                frame.id()
            ));
        }
        match &frame {
            Frame::Call {
                id,
                action,
                payload,
            } => {
                if let Some(earlier) = self.csms_call_ids.get(id) {
                    let same = if earlier == text {
                        "the same CALL"
                    } else {
                        "another CALL"
                    };
                    self.violate(format!(
                        "the CSMS reused message id '{id}' for {same} ({action}); ids are unique within a connection"
                    ));
                }
                if self.csms_call_ids.len() < CALLS_REMEMBERED_MAX {
                    self.csms_call_ids.insert(id.clone(), text.to_owned());
                }
                self.check_call_payload(action, payload);
            }
            Frame::CallResult { id, payload } => {
                let Some(action) = self.answered(id) else {
                    return;
                };
                self.check_result_payload(&action, payload);
            }
            Frame::CallError { id, .. } => {
                self.answered(id);
            }
        }
    }

    /// The CSMS answers `id`: it must be a CALL handed to it, answered at most once per
    /// time it was handed over. Returns the CALL's action.
    fn answered(&mut self, id: &str) -> Option<String> {
        match self.delivered.get_mut(id) {
            Some((action, deliveries, answers)) => {
                *answers += 1;
                let (action, over) = (action.clone(), *answers > *deliveries);
                if over {
                    self.violate(format!(
                        "the CSMS answered the station's CALL '{id}' ({action}) more often than it received it"
                    ));
                }
                Some(action)
            }
            None => {
                self.violate(format!(
                    "the CSMS answered message id '{id}', which the station never sent it on this connection"
                ));
                None
            }
        }
    }

    /// A frame handed to the CSMS on this connection (after the link's faults).
    pub fn to_csms(&mut self, text: &str) {
        let Ok(frame) = Frame::parse(text) else {
            return;
        };
        match frame {
            Frame::Call { id, action, .. } => {
                if self.delivered.len() < CALLS_REMEMBERED_MAX || self.delivered.contains_key(&id) {
                    let entry = self.delivered.entry(id).or_insert((action, 0, 0));
                    entry.1 += 1;
                }
            }
            Frame::CallResult { .. } | Frame::CallError { .. } => {}
        }
    }

    fn check_call_payload(&mut self, action: &str, payload: &Value) {
        if let Some(schemas) = Schemas::from_env() {
            if let Err(error) = schemas.check(action, payload) {
                self.violate(format!(
                    "the CSMS's {action} CALL breaks its schema: {error}"
                ));
            }
            return;
        }
        let decoded = match action {
            "RemoteStartTransaction" => {
                decode_payload::<RemoteStartTransactionReq>(action, payload).map(drop)
            }
            // Other CSMS-initiated actions are checked against the official schemas only.
            _ => Ok(()),
        };
        if let Err(error) = decoded {
            self.violate(format!(
                "the CSMS's {action} CALL does not decode: {}",
                error.description
            ));
        }
    }

    fn check_result_payload(&mut self, action: &str, payload: &Value) {
        if let Some(schemas) = Schemas::from_env() {
            if let Err(error) = schemas.check(&format!("{action}Response"), payload) {
                self.violate(format!(
                    "the CSMS's answer to {action} breaks its schema: {error}"
                ));
            }
            return;
        }
        let decoded = match action {
            "BootNotification" => decode_payload::<BootNotificationConf>(action, payload).map(drop),
            "Heartbeat" => decode_payload::<HeartbeatConf>(action, payload).map(drop),
            "StartTransaction" => decode_payload::<StartTransactionConf>(action, payload).map(drop),
            "StopTransaction" => decode_payload::<StopTransactionConf>(action, payload).map(drop),
            "StatusNotification" | "MeterValues" => {
                decode_payload::<EmptyConf>(action, payload).map(drop)
            }
            _ => Ok(()),
        };
        if let Err(error) = decoded {
            self.violate(format!(
                "the CSMS's answer to {action} does not decode: {}",
                error.description
            ));
        }
    }

    /// The first violations seen (at most a few), and how many there were in all.
    pub fn violations(&self) -> (&[String], u64) {
        (&self.violations, self.violation_count)
    }

    /// Frames from the CSMS checked so far.
    pub fn frames_checked(&self) -> u64 {
        self.frames_checked
    }
}
