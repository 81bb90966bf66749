//! A client of the command API: one request line out, one response line back.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use super::api::{ApiCommand, ApiRequest, ApiResponse};
use crate::core::types::CommandId;

/// A connection to a node's command API.
pub struct ApiClient {
    lines: Lines<BufReader<ReadHalf<TcpStream>>>,
    writer: WriteHalf<TcpStream>,
}

impl ApiClient {
    pub async fn connect(api: SocketAddr) -> io::Result<ApiClient> {
        let stream = TcpStream::connect(api).await?;
        let (reader, writer) = tokio::io::split(stream);
        Ok(ApiClient {
            lines: BufReader::new(reader).lines(),
            writer,
        })
    }

    /// Sends one command and waits for its answer.
    pub async fn send(
        &mut self,
        command_id: CommandId,
        station: &str,
        command: ApiCommand,
    ) -> io::Result<ApiResponse> {
        let request = ApiRequest {
            command_id: format!("{command_id}"),
            station: station.to_owned(),
            command,
        };
        let mut line = serde_json::to_string(&request).map_err(io::Error::other)?;
        line.push('\n');
        self.writer.write_all(line.as_bytes()).await?;
        self.writer.flush().await?;
        let answer = self.lines.next_line().await?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the node closed the connection",
            )
        })?;
        serde_json::from_str(&answer).map_err(io::Error::other)
    }
}
