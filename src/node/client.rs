//! A client of the operator API over one kept-alive HTTP/1.1 connection: what the
//! simulator's operators and the tests use to send commands.

use std::io;
use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::api::{ApiCommand, ApiResponse};
use super::http;
use crate::core::types::CommandId;

/// A connection to a node's operator API.
pub struct ApiClient {
    stream: TcpStream,
    buffer: Vec<u8>,
    token: String,
}

impl ApiClient {
    pub async fn connect(addr: SocketAddr, token: &str) -> io::Result<ApiClient> {
        Ok(ApiClient {
            stream: TcpStream::connect(addr).await?,
            buffer: Vec::new(),
            token: token.to_owned(),
        })
    }

    /// Sends one request and returns the status and the body.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> io::Result<(u16, Vec<u8>)> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: csms\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.token,
            body.len()
        );
        self.stream.write_all(request.as_bytes()).await?;
        self.stream.flush().await?;
        http::read_response(&mut self.stream, &mut self.buffer)
            .await
            .map_err(|error| match error {
                http::HttpError::Io(error) => error,
                other => io::Error::new(io::ErrorKind::InvalidData, other),
            })
    }

    /// Sends one command and waits for its answer.
    pub async fn send(
        &mut self,
        command_id: CommandId,
        station: &str,
        command: ApiCommand,
    ) -> io::Result<ApiResponse> {
        let command_id = format!("{command_id}");
        let (path, body) = match command {
            ApiCommand::RequestUnlock { connector, session } => (
                "unlock",
                serde_json::json!({ "connector": connector, "session": session, "command_id": command_id }),
            ),
            ApiCommand::StopSession { session } => (
                "stop",
                serde_json::json!({ "session": session, "command_id": command_id }),
            ),
        };
        let path = format!("/api/stations/{station}/{path}");
        let (status, body) = self.request("POST", &path, Some(&body)).await?;
        match serde_json::from_slice::<ApiResponse>(&body) {
            Ok(response) => Ok(response),
            // Errors found before the command ran (a bad body, an unknown station) carry
            // only a message.
            Err(_) => {
                let message = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("HTTP {status}"));
                let code = match status {
                    400 | 404 => super::api::ErrorCode::BadRequest,
                    _ => super::api::ErrorCode::Unavailable,
                };
                Ok(ApiResponse::error(command_id, code, message))
            }
        }
    }
}
