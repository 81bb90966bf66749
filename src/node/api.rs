//! The answers of the operator API's commands ([`super::operator`]) and the commands a
//! client ([`super::client`]) sends:
//!
//! ```text
//! POST /api/stations/CP1/unlock {"connector":1,"session":"s-42","command_id":"…2a"}
//! ← 202 {"command_id":"…2a","outcome":"Applied","position":17}
//! ← 409 {"command_id":"…2a","error":"command rejected: ConnectorBusy { … }","code":"rejected"}
//! ```
//!
//! `code` classifies an error for programs; see [`ErrorCode`]. Only client commands are
//! accepted; outcomes are recorded by the dispatcher, never by a client.

use serde::{Deserialize, Serialize};

use crate::core::types::{CommandId, StreamId};
use crate::domain::station::StationCommand;
use crate::handler::HandleError;

/// A client's command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiCommand {
    RequestUnlock { connector: u32, session: String },
    StopSession { session: String },
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
    /// The command id was used before for a different request (another connector, session
    /// or stream): nothing was done, and the earlier request stands.
    CommandIdReused,
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
            HandleError::Rejected(_) => ErrorCode::Rejected,
            HandleError::CommandIdReused { .. } => ErrorCode::CommandIdReused,
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

/// A command id as clients write it: 32 hex digits.
pub(crate) fn parse_command_id(text: &str) -> Option<CommandId> {
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(text, 16).ok().map(CommandId)
}

#[cfg(test)]
mod tests {
    //! Command ids and error codes as clients see them.
    use super::*;

    #[test]
    fn command_ids_are_32_hex_digits() {
        assert_eq!(
            parse_command_id("0000000000000000000000000000002a"),
            Some(CommandId(42))
        );
        assert_eq!(
            parse_command_id(&format!("{}", CommandId(u128::MAX))),
            Some(CommandId(u128::MAX))
        );
        for bad in [
            "",
            "2a",
            "xyz",
            &"0".repeat(33),
            &format!("{}g", "0".repeat(31)),
        ] {
            assert_eq!(parse_command_id(bad), None, "{bad}");
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
