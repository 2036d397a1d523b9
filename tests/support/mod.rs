//! Shared by the security, hostile-input and property suites: a server on
//! `127.0.0.1:0` (the library's `serve`, or the real binary) with a fresh
//! SQLite store, and a raw HTTP/1.1 client that sends exactly the bytes a
//! test gives it, so that malformed requests reach the server unchanged.

#![allow(dead_code)] // each test binary uses a part of this module

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use leadscore::ingest::auth::InboundAuth;
use leadscore::score::Limits;
use leadscore::server::{Running, ServeConfig};
use leadscore::store::Retention;
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The example rules of the repository.
pub const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
/// iClosed payloads.
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
/// The real binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_leadscore");
/// The longest a single request may take in these tests.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The contact of a fixture (`qualified`, `potential`, ...).
pub fn fixture_contact(name: &str) -> Value {
    let path = Path::new(FIXTURES).join(format!("contact-created-{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
        Value::Array(mut items) => items.remove(0),
        object => object,
    }
}

// -------------------------------------------------------------------- server

/// What a test server is started with; the defaults are `serve`'s.
#[derive(Clone)]
pub struct Options {
    pub auth: InboundAuth,
    pub admin_token: Option<String>,
    pub max_body: usize,
    pub max_contacts: usize,
    pub rules: PathBuf,
    pub max_connections_per_peer: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            auth: InboundAuth::default(),
            admin_token: None,
            max_body: 1024 * 1024,
            max_contacts: 1000,
            rules: PathBuf::from(RULES),
            max_connections_per_peer: leadscore::server::MAX_CONNECTIONS_PER_PEER,
        }
    }
}

/// The library's server on an ephemeral loopback port.
pub struct Server {
    running: Option<Running>,
    pub addr: SocketAddr,
    _store: TempDir,
}

impl Server {
    pub async fn start(options: Options) -> Self {
        let store = tempfile::tempdir().expect("a temporary folder");
        let config = ServeConfig {
            rules_dir: options.rules,
            limits: Limits::default(),
            store_url: format!("sqlite://{}", store.path().join("leadscore.db").display()),
            forward: None,
            auth: options.auth,
            admin_token: options.admin_token,
            allowed_hosts: Vec::new(),
            retention: Retention {
                dedupe_window: Duration::from_secs(7 * 86_400),
                retention: Duration::from_secs(90 * 86_400),
            },
            max_body: options.max_body,
            max_contacts: options.max_contacts,
            allow_rule_edits: false,
            backtest_max_contacts: 500_000,
            max_connections_per_peer: options.max_connections_per_peer,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let running = leadscore::server::start(config, listener)
            .await
            .expect("the server starts");
        Self {
            addr: running.local_addr(),
            running: Some(running),
            _store: store,
        }
    }

    pub async fn default() -> Self {
        Self::start(Options::default()).await
    }

    /// Stops the server (bounded: idle connections a test left open must
    /// not keep it waiting).
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), running.shutdown()).await;
        }
    }

    /// `/healthz` answers 200 and a normal ingest is accepted: what every
    /// hostile case must leave behind.
    pub async fn assert_healthy(&self) {
        assert_healthy(self.addr).await;
    }
}

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

/// The real binary, `leadscore serve` on an ephemeral port, its log (stderr
/// and stdout) in a file.
pub struct Process {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
    _dir: TempDir,
}

impl Process {
    /// Starts `leadscore serve --listen 127.0.0.1:0 <args>` with a fresh
    /// store and waits for the address it logs.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let log = dir.path().join("leadscore.log");
        let out = std::fs::File::create(&log).expect("create the log file");
        let err = out.try_clone().expect("clone the log file");
        let store = format!("sqlite://{}", dir.path().join("leadscore.db").display());
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--rules",
                RULES,
                "--store",
                &store,
            ])
            .args(args)
            .env_remove("LEADSCORE_LOG")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("the binary starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(addr) = listening_addr(&text) {
                break addr;
            }
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!("leadscore exited with {status} before listening:\n{text}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("leadscore did not log its address within 20 s:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Self {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address of the "listening; point iClosed's webhook at http://…" line.
fn listening_addr(log: &str) -> Option<SocketAddr> {
    let reader = BufReader::new(log.as_bytes());
    reader.lines().map_while(Result::ok).find_map(|line| {
        let rest = &line[line.find("webhook at http://")? + "webhook at http://".len()..];
        rest[..rest.find('/')?].parse().ok()
    })
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
