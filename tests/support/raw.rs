//! A raw HTTP/1.1 client that sends exactly the bytes a test gives it, so
//! that malformed requests reach the server unchanged (the security and
//! hostile-input suites), and the health check every hostile case must
//! leave intact.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::contact as fixture_contact;

/// The longest a single request may take in these tests.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn assert_healthy(addr: SocketAddr) {
    let health = get(addr, "/healthz", &[]).await;
    assert_eq!(health.status, 200, "/healthz after the hostile case: {health:?}");
    let mut contact = fixture_contact("qualified");
    contact["id"] = Value::from(format!("healthy-{}", uuid::Uuid::now_v7().simple()));
    let body = serde_json::to_vec(&Value::Array(vec![contact])).expect("serialise");
    let reply = post(
        addr,
        "/webhooks/iclosed",
        &[("Content-Type", "application/json")],
        &body,
    )
    .await;
    assert_eq!(
        reply.status, 200,
        "a normal ingest after the hostile case: {reply:?}"
    );
    assert_eq!(reply.json()["accepted"], 1, "{reply:?}");
}

// -------------------------------------------------------------------- client

/// An HTTP answer as read off the wire.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = String::from_utf8_lossy(&self.body);
        let body: String = body.chars().take(600).collect();
        write!(f, "{} {:?} {body}", self.status, self.headers)
    }
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (without serde_json's recursion limit: a scored
    /// contact may nest 128 levels inside the answer).
    pub fn json(&self) -> Value {
        let text = std::str::from_utf8(&self.body)
            .unwrap_or_else(|e| panic!("the body is not UTF-8 ({e}): {self:?}"));
        leadscore::payload::parse_json(text)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {self:?}"))
    }

    /// SPEC 4: every error body is a JSON object `{"error": "…"}`.
    pub fn assert_error(&self, status: u16) {
        assert_eq!(self.status, status, "{self:?}");
        assert!(
            self.header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "an error is JSON: {self:?}"
        );
        let body = self.json();
        assert!(
            body["error"].is_string(),
            "an error body is {{\"error\": …}}: {self:?}"
        );
    }
}

/// Sends `request` as is on a new connection and reads the answer until the
/// server closes it (requests built here say `Connection: close`).
pub async fn send_raw(addr: SocketAddr, request: &[u8]) -> std::io::Result<Reply> {
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut stream = TcpStream::connect(addr).await?;
        // The server may answer (413, 431) and close before the whole
        // request is written: a failed write still leaves an answer to read.
        let _ = stream.write_all(request).await;
        read_reply(&mut stream).await
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"))?
}

/// Reads one answer: up to the end of the body (Content-Length or chunked)
/// or until the connection closes.
pub async fn read_reply(stream: &mut TcpStream) -> std::io::Result<Reply> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            Err(e) if buf.is_empty() => return Err(e),
            Err(_) => 0,
        };
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed before an answer: {:?}",
                    String::from_utf8_lossy(&buf)
                ),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut rest = buf[head_end + 4..].to_vec();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let chunked = header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let length: Option<usize> = header("content-length").and_then(|v| v.parse().ok());
    loop {
        if let Some(length) = length
            && rest.len() >= length
        {
            rest.truncate(length);
            break;
        }
        if chunked && let Some(body) = dechunk(&rest) {
            rest = body;
            break;
        }
        let n = stream.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            if chunked {
                rest = dechunk(&rest).unwrap_or(rest);
            }
            break;
        }
        rest.extend_from_slice(&chunk[..n]);
    }
    Ok(Reply {
        status,
        headers,
        body: rest,
    })
}

/// The body of a complete chunked message, `None` while incomplete.
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = find(data, b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        if data.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A request with `Host`, `Content-Length` (when there is a body) and
/// `Connection: close`, plus the given headers.
pub fn build_request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let bytes = build_request(method, path, headers, body);
    send_raw(addr, &bytes)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    request(addr, "GET", path, headers, b"").await
}

pub async fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    request(addr, "POST", path, headers, body).await
}

/// `POST /webhooks/iclosed` with `Content-Type: application/json`.
pub async fn ingest(addr: SocketAddr, body: &[u8]) -> Reply {
    post(
        addr,
        "/webhooks/iclosed",
        &[("Content-Type", "application/json")],
        body,
    )
    .await
}

/// A JSON body of the qualified fixture's contact under `id`.
pub fn contact_body(id: Value) -> Vec<u8> {
    let mut contact = fixture_contact("qualified");
    contact["id"] = id;
    serde_json::to_vec(&Value::Array(vec![contact])).expect("serialise")
}
