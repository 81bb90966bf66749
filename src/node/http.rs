//! The little HTTP/1.1 the node needs: request heads (parsed by `httparse`), bodies with a
//! `Content-Length`, and responses. One listener serves both the charge points'
//! WebSocket upgrades and the operator API, so this sits in front of both. Everything is
//! bounded: a head over [`HEAD_BYTES_MAX`] or a body over [`BODY_BYTES_MAX`] is refused
//! before it is read whole.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest request head (request line and headers) accepted.
pub const HEAD_BYTES_MAX: usize = 16 * 1024;
/// Longest request body accepted.
pub const BODY_BYTES_MAX: usize = 64 * 1024;
const HEADERS_MAX: usize = 64;

/// A parsed request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    pub query: Option<String>,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// HTTP/1.0, or `Connection: close`.
    pub close: bool,
}

impl Head {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header lists `token` (case-insensitively).
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The value of query parameter `name`, undecoded.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .as_deref()?
            .split('&')
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    }
}

/// Why a request could not be read. Each maps to the status it is answered with.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("request head larger than {HEAD_BYTES_MAX} bytes")]
    HeadTooLarge,
    #[error("request body larger than {BODY_BYTES_MAX} bytes")]
    BodyTooLarge,
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("a request body needs a Content-Length")]
    LengthRequired,
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl HttpError {
    /// The status to answer with, if the connection can still carry an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::HeadTooLarge => Some(431),
            HttpError::BodyTooLarge => Some(413),
            HttpError::Malformed(_) => Some(400),
            HttpError::LengthRequired => Some(411),
            HttpError::Io(_) => None,
        }
    }
}

/// Reads the next request head. `buffer` carries bytes read past the previous request
/// (pipelining) and keeps those read past this head. `Ok(None)`: the peer closed cleanly
/// between requests.
pub async fn read_head<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut Vec<u8>,
) -> Result<Option<Head>, HttpError> {
    loop {
        if !buffer.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
            let mut request = httparse::Request::new(&mut headers);
            match request.parse(buffer) {
                Ok(httparse::Status::Complete(length)) => {
                    let head = to_head(&request)?;
                    buffer.drain(..length);
                    return Ok(Some(head));
                }
                Ok(httparse::Status::Partial) => {}
                Err(error) => return Err(HttpError::Malformed(error.to_string())),
            }
            if buffer.len() >= HEAD_BYTES_MAX {
                return Err(HttpError::HeadTooLarge);
            }
        }
        let mut chunk = [0u8; 4096];
        let read = reader.read(&mut chunk).await?;
        if read == 0 {
            return if buffer.is_empty() {
                Ok(None)
            } else {
                Err(HttpError::Malformed(
                    "connection closed inside a request head".into(),
                ))
            };
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

/// Headers a request may carry once at most.
const SINGLE_HEADERS: [&str; 4] = [
    "content-length",
    "transfer-encoding",
    "authorization",
    "host",
];

fn to_head(request: &httparse::Request<'_, '_>) -> Result<Head, HttpError> {
    let method = request.method.unwrap_or_default().to_owned();
    let target = request.path.unwrap_or_default();
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
        None => (target.to_owned(), None),
    };
    let mut headers: Vec<(String, String)> = Vec::with_capacity(request.headers.len());
    for header in request.headers.iter() {
        let value = std::str::from_utf8(header.value)
            .map_err(|_| HttpError::Malformed(format!("header {} is not UTF-8", header.name)))?;
        let name = header.name.to_ascii_lowercase();
        // Framing and credentials are read from exactly one header each (RFC 9112 §6.3,
        // RFC 9110 §11.6.2): two of them would let a proxy that reads the other one see
        // a different request (smuggling) or a different caller.
        if SINGLE_HEADERS.contains(&name.as_str()) && headers.iter().any(|(n, _)| *n == name) {
            return Err(HttpError::Malformed(format!(
                "more than one {} header",
                header.name
            )));
        }
        // A credential is compared as sent: nothing is taken off it (the parser already
        // left out the whitespace around the field value, which is not part of it).
        let value = if name == "authorization" {
            value
        } else {
            value.trim()
        };
        if name == "content-length"
            && (value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(HttpError::Malformed(format!(
                "Content-Length {value:?} is not a decimal number"
            )));
        }
        headers.push((name, value.to_owned()));
    }
    let mut head = Head {
        method,
        path,
        query,
        headers,
        close: request.version == Some(0),
    };
    head.close |= head.header_has_token("connection", "close");
    Ok(head)
}

/// Reads the body announced by `head` (empty without a `Content-Length`).
pub async fn read_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    head: &Head,
    buffer: &mut Vec<u8>,
) -> Result<Vec<u8>, HttpError> {
    if head.header("transfer-encoding").is_some() {
        return Err(HttpError::LengthRequired);
    }
    let length = match head.header("content-length") {
        None => 0,
        Some(text) => text
            .parse::<usize>()
            .map_err(|_| HttpError::Malformed(format!("Content-Length {text:?}")))?,
    };
    if length > BODY_BYTES_MAX {
        return Err(HttpError::BodyTooLarge);
    }
    while buffer.len() < length {
        read_more(reader, buffer).await?;
    }
    Ok(buffer.drain(..length).collect())
}

/// Reads one response (status and body; the body needs a `Content-Length`): the client
/// side, for the simulator's operators and the tests.
pub async fn read_response<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut Vec<u8>,
) -> Result<(u16, Vec<u8>), HttpError> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(buffer) {
            Ok(httparse::Status::Complete(length)) => {
                let status = response.code.unwrap_or_default();
                let body_length = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| {
                        std::str::from_utf8(h.value)
                            .ok()?
                            .trim()
                            .parse::<usize>()
                            .ok()
                    })
                    .ok_or(HttpError::LengthRequired)?;
                if body_length > BODY_BYTES_MAX {
                    return Err(HttpError::BodyTooLarge);
                }
                buffer.drain(..length);
                while buffer.len() < body_length {
                    read_more(reader, buffer).await?;
                }
                return Ok((status, buffer.drain(..body_length).collect()));
            }
            Ok(httparse::Status::Partial) if buffer.len() >= HEAD_BYTES_MAX => {
                return Err(HttpError::HeadTooLarge);
            }
            Ok(httparse::Status::Partial) => read_more(reader, buffer).await?,
            Err(error) => return Err(HttpError::Malformed(error.to_string())),
        }
    }
}

async fn read_more<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut Vec<u8>,
) -> Result<(), HttpError> {
    let mut chunk = [0u8; 4096];
    let read = reader.read(&mut chunk).await?;
    if read == 0 {
        return Err(HttpError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the peer closed the connection",
        )));
    }
    buffer.extend_from_slice(&chunk[..read]);
    Ok(())
}

/// A response to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, body: &serde_json::Value) -> Response {
        let mut text = body.to_string().into_bytes();
        text.push(b'\n');
        Response {
            status,
            headers: vec![("Content-Type", "application/json".into())],
            body: text,
        }
    }

    /// `{"error": message}` with `status`.
    pub fn error(status: u16, message: impl Into<String>) -> Response {
        Response::json(status, &serde_json::json!({ "error": message.into() }))
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Writes `response` and flushes (the simulator's streams deliver nothing unflushed).
pub async fn write_response<W: AsyncWrite + Unpin>(
    writer: &mut W,
    response: &Response,
    close: bool,
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\n",
        response.status,
        reason(response.status),
        response.body.len()
    );
    for (name, value) in &response.headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    writer.write_all(head.as_bytes()).await?;
    writer.write_all(&response.body).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn pipelined_requests_are_read_one_by_one_with_their_bodies() {
        let wire = b"POST /api/x?a=1&b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}\
GET /y HTTP/1.0\r\n\r\n";
        let (head, body, second) = block_on(async {
            let mut reader = &wire[..];
            let mut buffer = Vec::new();
            let head = read_head(&mut reader, &mut buffer).await.unwrap().unwrap();
            let body = read_body(&mut reader, &head, &mut buffer).await.unwrap();
            let second = read_head(&mut reader, &mut buffer).await.unwrap().unwrap();
            assert!(read_head(&mut reader, &mut buffer).await.unwrap().is_none());
            (head, body, second)
        });
        assert_eq!(head.method, "POST");
        assert_eq!(head.path, "/api/x");
        assert_eq!(head.query_param("a"), Some("1"));
        assert_eq!(head.query_param("b"), Some(""));
        assert_eq!(head.query_param("c"), None);
        assert_eq!(head.header("host"), Some("h"));
        assert!(!head.close);
        assert_eq!(body, b"{}");
        assert_eq!(second.path, "/y");
        assert!(second.close, "HTTP/1.0 closes after the answer");
    }

    #[test]
    fn oversized_and_malformed_requests_are_typed_errors() {
        let huge = format!(
            "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(HEAD_BYTES_MAX)
        );
        let big_body = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            BODY_BYTES_MAX + 1
        );
        let chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        block_on(async {
            let mut buffer = Vec::new();
            let error = read_head(&mut huge.as_bytes(), &mut buffer)
                .await
                .unwrap_err();
            assert_eq!(error.status(), Some(431));
            let mut buffer = Vec::new();
            let error = read_head(&mut &b"GET\x01 / HTTP/1.1\r\n\r\n"[..], &mut buffer)
                .await
                .unwrap_err();
            assert_eq!(error.status(), Some(400));
            for (wire, status) in [(big_body.as_str(), 413), (chunked, 411)] {
                let mut reader = wire.as_bytes();
                let mut buffer = Vec::new();
                let head = read_head(&mut reader, &mut buffer).await.unwrap().unwrap();
                let error = read_body(&mut reader, &head, &mut buffer)
                    .await
                    .unwrap_err();
                assert_eq!(error.status(), Some(status), "{wire}");
            }
        });
    }

    /// RFC 9112 framing, strictly: a Content-Length that is not plain digits, or given
    /// twice (even with one value), and a second Authorization, Host or Transfer-Encoding
    /// are refused with 400 — two readings of one request are how requests are smuggled
    /// past a proxy. Nothing inside a credential is trimmed: it is compared as sent.
    #[test]
    fn ambiguous_framing_and_repeated_credentials_are_refused() {
        for wire in [
            "POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +32\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 0x20\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3 2\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            "GET / HTTP/1.1\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ] {
            let error = block_on(async {
                let mut buffer = Vec::new();
                read_head(&mut wire.as_bytes(), &mut buffer)
                    .await
                    .unwrap_err()
            });
            assert_eq!(error.status(), Some(400), "{wire:?}: {error}");
        }
        // Whitespace around a field value is not part of it (RFC 9110 §5.5; the parser
        // drops it); whitespace inside a credential is kept.
        let head = block_on(async {
            let wire = "GET / HTTP/1.1\r\nAuthorization: Bearer  tok\r\nX:  y \r\n\r\n";
            let mut buffer = Vec::new();
            read_head(&mut wire.as_bytes(), &mut buffer)
                .await
                .unwrap()
                .unwrap()
        });
        assert_eq!(head.header("x"), Some("y"));
        assert_eq!(head.header("authorization"), Some("Bearer  tok"));
    }

    #[test]
    fn responses_carry_length_and_close() {
        let response = Response::error(404, "no such station").with_header("X-A", "b");
        let mut out = Vec::new();
        block_on(write_response(&mut out, &response, true)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(text.contains("Content-Length: 28\r\n"), "{text}");
        assert!(
            text.contains("X-A: b\r\nConnection: close\r\n\r\n{\"error\""),
            "{text}"
        );
    }
}
