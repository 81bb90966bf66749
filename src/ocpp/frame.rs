//! OCPP-J framing (OCPP 1.6 JSON over WebSocket, section 4): every message is a JSON array.
//!
//! ```text
//! CALL        [2, "<uniqueId>", "<Action>", {payload}]
//! CALLRESULT  [3, "<uniqueId>", {payload}]
//! CALLERROR   [4, "<uniqueId>", "<errorCode>", "<errorDescription>", {errorDetails}]
//! ```
//!
//! Parsing never panics: anything that is not a well-formed frame is a [`FrameError`] that
//! says which CALLERROR to answer with (when the message id could be read).

use std::fmt;

use serde_json::Value;

/// A message id is at most 36 characters (OCPP-J 4.1.4).
pub const MESSAGE_ID_BYTES_MAX: usize = 36;
/// The largest frame accepted, in bytes. Real messages of this subset are far smaller.
pub const FRAME_BYTES_MAX: usize = 64 * 1024;

const CALL: u64 = 2;
const CALLRESULT: u64 = 3;
const CALLERROR: u64 = 4;

/// The CALLERROR codes of OCPP 1.6, spelled as the specification spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorCode {
    NotImplemented,
    NotSupported,
    InternalError,
    ProtocolError,
    SecurityError,
    FormationViolation,
    PropertyConstraintViolation,
    OccurenceConstraintViolation,
    TypeConstraintViolation,
    GenericError,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::NotImplemented,
        ErrorCode::NotSupported,
        ErrorCode::InternalError,
        ErrorCode::ProtocolError,
        ErrorCode::SecurityError,
        ErrorCode::FormationViolation,
        ErrorCode::PropertyConstraintViolation,
        ErrorCode::OccurenceConstraintViolation,
        ErrorCode::TypeConstraintViolation,
        ErrorCode::GenericError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotImplemented => "NotImplemented",
            ErrorCode::NotSupported => "NotSupported",
            ErrorCode::InternalError => "InternalError",
            ErrorCode::ProtocolError => "ProtocolError",
            ErrorCode::SecurityError => "SecurityError",
            ErrorCode::FormationViolation => "FormationViolation",
            ErrorCode::PropertyConstraintViolation => "PropertyConstraintViolation",
            ErrorCode::OccurenceConstraintViolation => "OccurenceConstraintViolation",
            ErrorCode::TypeConstraintViolation => "TypeConstraintViolation",
            ErrorCode::GenericError => "GenericError",
        }
    }

    pub fn parse(text: &str) -> Option<ErrorCode> {
        ErrorCode::ALL
            .into_iter()
            .find(|code| code.as_str() == text)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One OCPP-J message.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    Call {
        id: String,
        action: String,
        payload: Value,
    },
    CallResult {
        id: String,
        payload: Value,
    },
    CallError {
        id: String,
        code: ErrorCode,
        description: String,
        details: Value,
    },
}

/// Why text is not a frame. `id` is the message id when it could be read, so that the
/// receiver can answer a broken CALL with a CALLERROR instead of silence.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {description}")]
pub struct FrameError {
    pub id: Option<String>,
    pub code: ErrorCode,
    pub description: String,
    /// The text is not JSON at all (WebSocket close code 1007, invalid payload data),
    /// rather than JSON that breaks OCPP-J's framing (1002, protocol error).
    pub not_json: bool,
}

/// WebSocket close code for a protocol error (RFC 6455 §7.4.1).
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// WebSocket close code for data inconsistent with the message type (RFC 6455 §7.4.1).
pub const CLOSE_INVALID_PAYLOAD: u16 = 1007;

impl FrameError {
    fn formation(id: Option<String>, description: impl Into<String>) -> FrameError {
        FrameError {
            id,
            code: ErrorCode::FormationViolation,
            description: description.into(),
            not_json: false,
        }
    }

    /// How to end a connection that sent this and cannot be answered ([`FrameError::reply`]
    /// is `None`): the WebSocket close code (1007 for text that is not JSON, 1002 for any
    /// other break of the framing) and a reason within the 123 bytes a close frame holds.
    pub fn close(&self) -> (u16, String) {
        let code = if self.not_json {
            CLOSE_INVALID_PAYLOAD
        } else {
            CLOSE_PROTOCOL_ERROR
        };
        let mut reason = format!("OCPP-J: {}", self.description);
        if reason.len() > 123 {
            let mut end = 120;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
            reason.push_str("...");
        }
        (code, reason)
    }

    /// The CALLERROR to send back, when the offending message had a readable id and
    /// was a CALL (a broken reply is dropped, not answered).
    pub fn reply(&self) -> Option<Frame> {
        self.id.as_ref().map(|id| Frame::CallError {
            id: id.clone(),
            code: self.code,
            description: self.description.clone(),
            details: Value::Object(Default::default()),
        })
    }
}

impl Frame {
    pub fn id(&self) -> &str {
        match self {
            Frame::Call { id, .. } | Frame::CallResult { id, .. } | Frame::CallError { id, .. } => {
                id
            }
        }
    }

    /// Parses one frame. Oversized, non-JSON, or misshapen input is an error.
    pub fn parse(text: &str) -> Result<Frame, FrameError> {
        if text.len() > FRAME_BYTES_MAX {
            return Err(FrameError::formation(
                None,
                format!(
                    "frame of {} bytes exceeds the limit of {FRAME_BYTES_MAX}",
                    text.len()
                ),
            ));
        }
        let value: Value = serde_json::from_str(text).map_err(|e| FrameError {
            not_json: true,
            ..FrameError::formation(None, format!("not JSON: {e}"))
        })?;
        let Value::Array(items) = value else {
            return Err(FrameError::formation(None, "a frame is a JSON array"));
        };
        let kind = items.first().and_then(Value::as_u64);
        // Only a CALL is answered with a CALLERROR (a broken reply has no one to answer),
        // and only when its id can be read into a valid one: a string, or a number
        // written as one (then echoed as its text), of 1..=36 characters — an answer
        // under a longer id would itself break OCPP-J.
        let readable_id = match items.get(1) {
            Some(Value::String(id)) => Some(id.clone()),
            Some(Value::Number(id)) => Some(id.to_string()),
            _ => None,
        }
        .filter(|id| !id.is_empty() && id.len() <= MESSAGE_ID_BYTES_MAX);
        let answerable = if kind == Some(CALL) {
            readable_id.clone()
        } else {
            None
        };
        let Some(id) = items.get(1).and_then(Value::as_str).map(str::to_owned) else {
            return Err(FrameError::formation(
                answerable,
                "the second element must be the message id, a string",
            ));
        };
        if id.is_empty() || id.len() > MESSAGE_ID_BYTES_MAX {
            return Err(FrameError::formation(
                answerable,
                format!("message id must be 1..={MESSAGE_ID_BYTES_MAX} characters"),
            ));
        }
        match (kind, items.len()) {
            (Some(CALL), 4) => {
                let Some(action) = items[2].as_str() else {
                    return Err(FrameError::formation(
                        answerable,
                        "the action must be a string",
                    ));
                };
                if !items[3].is_object() {
                    return Err(FrameError::formation(
                        answerable,
                        "the payload must be a JSON object",
                    ));
                }
                Ok(Frame::Call {
                    id,
                    action: action.to_owned(),
                    payload: items[3].clone(),
                })
            }
            (Some(CALLRESULT), 3) => {
                if !items[2].is_object() {
                    return Err(FrameError::formation(
                        None,
                        "the payload must be a JSON object",
                    ));
                }
                Ok(Frame::CallResult {
                    id,
                    payload: items[2].clone(),
                })
            }
            (Some(CALLERROR), 5) => {
                let code = items[2]
                    .as_str()
                    .and_then(ErrorCode::parse)
                    .ok_or_else(|| FrameError::formation(None, "unknown CALLERROR code"))?;
                let description = items[3].as_str().ok_or_else(|| {
                    FrameError::formation(None, "the error description must be a string")
                })?;
                if !items[4].is_object() {
                    return Err(FrameError::formation(
                        None,
                        "the error details must be a JSON object",
                    ));
                }
                Ok(Frame::CallError {
                    id,
                    code,
                    description: description.to_owned(),
                    details: items[4].clone(),
                })
            }
            (Some(CALL | CALLRESULT | CALLERROR), count) => Err(FrameError::formation(
                answerable,
                format!(
                    "wrong number of elements ({count}) for message type {}",
                    kind.unwrap_or(0)
                ),
            )),
            _ => Err(FrameError::formation(None, "unknown message type")),
        }
    }

    /// Serialises the frame as OCPP-J text.
    pub fn to_text(&self) -> String {
        let value = match self {
            Frame::Call {
                id,
                action,
                payload,
            } => Value::Array(vec![
                CALL.into(),
                id.as_str().into(),
                action.as_str().into(),
                payload.clone(),
            ]),
            Frame::CallResult { id, payload } => {
                Value::Array(vec![CALLRESULT.into(), id.as_str().into(), payload.clone()])
            }
            Frame::CallError {
                id,
                code,
                description,
                details,
            } => Value::Array(vec![
                CALLERROR.into(),
                id.as_str().into(),
                code.as_str().into(),
                description.as_str().into(),
                details.clone(),
            ]),
        };
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    //! Golden frames: literal OCPP-J text in, typed frames out, and back.
    use serde_json::json;

    use super::*;

    #[test]
    fn golden_frames_round_trip() {
        let cases = [
            (
                r#"[2,"19223201","BootNotification",{"chargePointModel":"SingleSocketCharger","chargePointVendor":"VendorX"}]"#,
                Frame::Call {
                    id: "19223201".into(),
                    action: "BootNotification".into(),
                    payload: json!({"chargePointVendor": "VendorX", "chargePointModel": "SingleSocketCharger"}),
                },
            ),
            (
                r#"[3,"19223201",{"currentTime":"2013-02-01T20:53:32.486Z","interval":300,"status":"Accepted"}]"#,
                Frame::CallResult {
                    id: "19223201".into(),
                    payload: json!({"status": "Accepted", "currentTime": "2013-02-01T20:53:32.486Z", "interval": 300}),
                },
            ),
            (
                r#"[4,"162376037","NotImplemented","Unknown action DataTransfer2",{}]"#,
                Frame::CallError {
                    id: "162376037".into(),
                    code: ErrorCode::NotImplemented,
                    description: "Unknown action DataTransfer2".into(),
                    details: json!({}),
                },
            ),
        ];
        for (text, frame) in cases {
            assert_eq!(Frame::parse(text).unwrap(), frame, "{text}");
            assert_eq!(Frame::parse(&frame.to_text()).unwrap(), frame);
        }
    }

    #[test]
    fn malformed_frames_are_typed_errors_and_answerable_calls_get_a_callerror() {
        let broken_call = Frame::parse(r#"[2,"id-7","Heartbeat","not an object"]"#).unwrap_err();
        assert_eq!(broken_call.code, ErrorCode::FormationViolation);
        assert_eq!(
            broken_call.reply().map(|f| f.id().to_owned()),
            Some("id-7".into())
        );
        let short_call = Frame::parse(r#"[2,"id-8","Heartbeat"]"#).unwrap_err();
        assert_eq!(short_call.id.as_deref(), Some("id-8"));
        // A numeric id can be read: it is echoed as its text.
        let numeric = Frame::parse(r#"[2,17,"Heartbeat",{}]"#).unwrap_err();
        assert_eq!(
            numeric.reply().map(|f| f.id().to_owned()),
            Some("17".into())
        );
        // An id past 36 characters cannot be echoed in a valid answer.
        let long_call = format!("[2,\"{}\",\"Heartbeat\",{{}}]", "x".repeat(37));
        // What cannot be answered closes the connection: 1007 for text that is not JSON,
        // 1002 for JSON that is no OCPP-J frame or a broken reply, with a short reason.
        for (text, code) in [
            ("this is not json", CLOSE_INVALID_PAYLOAD),
            ("{}", CLOSE_PROTOCOL_ERROR),
            ("[9,\"x\",{}]", CLOSE_PROTOCOL_ERROR),
            ("[2,\"\",\"Heartbeat\",{}]", CLOSE_PROTOCOL_ERROR),
            (long_call.as_str(), CLOSE_PROTOCOL_ERROR),
            ("[3,\"x\",[]]", CLOSE_PROTOCOL_ERROR),
        ] {
            let error = Frame::parse(text).unwrap_err();
            assert!(error.reply().is_none(), "{text}");
            let (closed_with, reason) = error.close();
            assert_eq!(closed_with, code, "{text}");
            assert!(
                reason.len() <= 123 && reason.starts_with("OCPP-J: "),
                "{reason}"
            );
        }
        for text in [
            "",
            "{}",
            "[]",
            "[9,\"x\",{}]",
            "[2]",
            "[2,17,\"Heartbeat\",{}]",
            "[3,\"x\",[]]",
            "[4,\"x\",\"NoSuchCode\",\"\",{}]",
            &format!("[2,\"{}\",\"Heartbeat\",{{}}]", "x".repeat(37)),
            "[2,\"x\",\"Heartbeat\",{}",
        ] {
            let error = Frame::parse(text).unwrap_err();
            assert_eq!(error.code, ErrorCode::FormationViolation, "{text}");
        }
        let huge = format!(
            "[2,\"x\",\"Heartbeat\",{{\"pad\":\"{}\"}}]",
            "y".repeat(FRAME_BYTES_MAX)
        );
        assert!(
            Frame::parse(&huge)
                .unwrap_err()
                .description
                .contains("exceeds")
        );
    }

    #[test]
    fn every_error_code_round_trips_by_its_spelling() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(
            ErrorCode::OccurenceConstraintViolation.as_str(),
            "OccurenceConstraintViolation"
        );
    }
}
