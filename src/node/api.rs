//! The client command API: one JSON object per line over TCP, one answer line per request.
//!
//! ```text
//! → {"command_id":"0000000000000000000000000000002a","station":"CP1",
//!    "command":{"RequestUnlock":{"connector":1,"session":"s-42"}}}
//! ← {"command_id":"…2a","outcome":"Applied","position":17}
//! ← {"command_id":"…2a","error":"command rejected: ConnectorBusy { … }","code":"rejected"}
//! ```
//!
//! `code` classifies an error for programs; see [`ErrorCode`].
//!
//! Only client commands are accepted; outcomes are recorded by the dispatcher, never by a
//! client. Malformed lines get an error line and change nothing.

use serde::{Deserialize, Serialize};

use crate::core::types::{CommandId, StreamId};
use crate::domain::station::StationCommand;
use crate::handler::HandleError;

/// Longest request line accepted.
pub const REQUEST_LINE_BYTES_MAX: usize = 4096;

/// A client's command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiCommand {
    RequestUnlock { connector: u32, session: String },
    StopSession { session: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiRequest {
    /// 32 hex digits; resubmitting the same id takes effect at most once.
    pub command_id: String,
    pub station: String,
    pub command: ApiCommand,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiResponse {
    pub command_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
}

/// What kind of error an [`ApiResponse`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed; nothing was done.
    BadRequest,
    /// The domain refused the command (busy connector, unknown session, …).
    Rejected,
    /// Every attempt met a concurrent writer and the node gave up: the command starved.
    Contention,
    /// The store or the node could not serve it now; resubmitting the same command id is safe.
    Unavailable,
}

impl ApiResponse {
    pub fn error(
        command_id: impl Into<String>,
        code: ErrorCode,
        error: impl Into<String>,
    ) -> ApiResponse {
        ApiResponse {
            command_id: command_id.into(),
            outcome: None,
            position: None,
            error: Some(error.into()),
            code: Some(code),
        }
    }

    /// The answer to a command the handler did not apply.
    pub fn failed<R: std::fmt::Debug>(
        command_id: impl Into<String>,
        error: &HandleError<R>,
    ) -> ApiResponse {
        let code = match error {
            HandleError::Rejected(_) | HandleError::CommandIdReused { .. } => ErrorCode::Rejected,
            HandleError::Contention { .. } => ErrorCode::Contention,
            HandleError::Append(_) | HandleError::Read(_) | HandleError::Codec(_) => {
                ErrorCode::Unavailable
            }
        };
        ApiResponse::error(command_id, code, error.to_string())
    }
}

/// A validated request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedRequest {
    pub command_id: CommandId,
    pub stream: StreamId,
    pub command: StationCommand,
}

/// Parses and validates one request line.
pub fn parse_request(line: &str) -> Result<ParsedRequest, ApiResponse> {
    if line.len() > REQUEST_LINE_BYTES_MAX {
        return Err(ApiResponse::error(
            "",
            ErrorCode::BadRequest,
            format!("request longer than {REQUEST_LINE_BYTES_MAX} bytes"),
        ));
    }
    let request: ApiRequest = serde_json::from_str(line).map_err(|e| {
        ApiResponse::error("", ErrorCode::BadRequest, format!("malformed request: {e}"))
    })?;
    let command_id = parse_command_id(&request.command_id).ok_or_else(|| {
        ApiResponse::error(
            &request.command_id,
            ErrorCode::BadRequest,
            "command_id must be 32 hex digits",
        )
    })?;
    let stream = StreamId::new(&format!("station-{}", request.station)).map_err(|e| {
        ApiResponse::error(
            &request.command_id,
            ErrorCode::BadRequest,
            format!("invalid station: {e}"),
        )
    })?;
    let command = match request.command {
        ApiCommand::RequestUnlock { connector, session } => {
            StationCommand::RequestUnlock { connector, session }
        }
        ApiCommand::StopSession { session } => StationCommand::StopSession { session },
    };
    Ok(ParsedRequest {
        command_id,
        stream,
        command,
    })
}

fn parse_command_id(text: &str) -> Option<CommandId> {
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(text, 16).ok().map(CommandId)
}

#[cfg(test)]
mod tests {
    //! Request parsing: valid lines, and clear errors for everything else.
    use super::*;

    #[test]
    fn requests_parse_and_bad_ones_are_refused_clearly() {
        let ok = parse_request(
            r#"{"command_id":"0000000000000000000000000000002a","station":"CP1","command":{"RequestUnlock":{"connector":1,"session":"s"}}}"#,
        )
        .unwrap();
        assert_eq!(ok.command_id, CommandId(42));
        assert_eq!(ok.stream.as_str(), "station-CP1");
        for (line, fragment) in [
            ("not json", "malformed request"),
            (
                r#"{"command_id":"xyz","station":"CP1","command":{"StopSession":{"session":"s"}}}"#,
                "32 hex digits",
            ),
            (
                r#"{"command_id":"0000000000000000000000000000002a","station":"C P","command":{"StopSession":{"session":"s"}}}"#,
                "invalid station",
            ),
            (
                r#"{"command_id":"0000000000000000000000000000002a","station":"CP1","command":{"RecordAnswer":{}}}"#,
                "malformed request",
            ),
        ] {
            let response = parse_request(line).unwrap_err();
            assert_eq!(response.code, Some(ErrorCode::BadRequest), "{line}");
            let error = response.error.unwrap();
            assert!(error.contains(fragment), "{line}: {error}");
        }
    }

    #[test]
    fn handler_errors_map_to_codes_a_client_can_act_on() {
        use crate::store::AppendError;
        let contention: HandleError<()> = HandleError::Contention {
            attempts: 16,
            last: AppendError::OutcomeUnknown("sync failed".into()),
        };
        let cases = [
            (HandleError::Rejected(()), ErrorCode::Rejected),
            (contention, ErrorCode::Contention),
            (
                HandleError::Append(AppendError::Unavailable("closed".into())),
                ErrorCode::Unavailable,
            ),
        ];
        for (error, code) in cases {
            let response = ApiResponse::failed("2a", &error);
            assert_eq!(response.code, Some(code), "{error}");
            assert_eq!(response.error.as_deref(), Some(error.to_string().as_str()));
            let line = serde_json::to_string(&response).unwrap();
            let back: ApiResponse = serde_json::from_str(&line).unwrap();
            assert_eq!(back, response, "{line}");
        }
    }
}
