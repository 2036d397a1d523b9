//! The harness: a [`TestServer`] (the library's `serve` on an ephemeral
//! port), a downstream [`Receiver`] whose answers a test switches at run
//! time, rules folders and stores in temporary folders, and waiting helpers
//! that poll for a condition (never a fixed sleep, never a timing assertion).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use leadscore::deliver::ForwardConfig;
use leadscore::ingest::auth::InboundAuth;
use leadscore::score::Limits;
use leadscore::server::{Running, ServeConfig};
use leadscore::signature::WebhookSecret;
use leadscore::store::Retention;
use serde_json::Value;
use tempfile::TempDir;
use warp::Filter;
use warp::reply::Reply as _;

/// The benchmark rule set: deterministic scores for the fixtures.
pub const BENCH_RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/bench/rules");
/// iClosed `newContactCreated` payloads.
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
/// The real binary, for the tests that run it.
pub const BIN: &str = env!("CARGO_BIN_EXE_leadscore");
/// The longest one wait for a condition may take.
pub const WAIT: Duration = Duration::from_secs(10);
/// A Standard Webhooks secret for signing forwarded requests.
pub const FORWARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Test logs (`LEADSCORE_LOG` filter, default `warn`), shown for failing tests.
pub fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_env("LEADSCORE_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

// ------------------------------------------------------------------ fixtures

/// A fixture file parsed: `qualified`, `potential`, `disqualified`,
/// `single-object`, `batch`.
pub fn fixture(name: &str) -> Value {
    let path = Path::new(FIXTURES).join(format!("contact-created-{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The (first) contact object of a fixture.
pub fn contact(name: &str) -> Value {
    match fixture(name) {
        Value::Array(mut items) => items.remove(0),
        object => object,
    }
}

/// A contact of a fixture under another id (number or string).
pub fn contact_with_id(name: &str, id: impl Into<Value>) -> Value {
    let mut c = contact(name);
    c["id"] = id.into();
    c
}

/// Milliseconds since the epoch of an RFC 3339 time as the server writes it.
pub fn rfc3339_ms(text: &str) -> i64 {
    let time = humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"));
    time.duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

pub fn unix_seconds_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

// ------------------------------------------------------------------- waiting

/// Polls `probe` until it returns `Some`, at most `timeout`; panics naming
/// `what` otherwise.
pub async fn eventually<T>(what: &str, timeout: Duration, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// -------------------------------------------------------------------- stores

/// Which store backend the suite runs against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// A SQLite file in a fresh temporary folder (the default).
    Sqlite,
    /// A PostgreSQL server (`LEADSCORE_TEST_POSTGRES_URL`).
    Postgres(String),
}

impl StoreKind {
    /// PostgreSQL when `LEADSCORE_TEST_POSTGRES_URL` is set, unless
    /// `LEADSCORE_TEST_STORE=sqlite` (the other half of CI's matrix).
    pub fn from_env() -> Self {
        let url = std::env::var("LEADSCORE_TEST_POSTGRES_URL")
            .ok()
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty());
        match (std::env::var("LEADSCORE_TEST_STORE").ok().as_deref(), url) {
            (Some("sqlite"), _) | (None, None) => Self::Sqlite,
            (Some("postgres") | None, Some(url)) => Self::Postgres(url),
            (Some(other), url) => panic!(
                "LEADSCORE_TEST_STORE={other:?}: use sqlite or postgres (postgres needs \
                 LEADSCORE_TEST_POSTGRES_URL; set: {})",
                url.is_some()
            ),
        }
    }
}

/// One isolated store: what a test (and its restarts) point the server at.
#[derive(Clone)]
pub struct TestStore {
    pub kind: StoreKind,
    pub url: String,
    _dir: Arc<TempDir>,
    /// A PostgreSQL store's schema, dropped with the last clone.
    _schema: Option<Arc<crate::pg_support::Schema>>,
}

impl TestStore {
    /// A fresh, empty store of the kind the environment selects.
    pub fn fresh() -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("a temporary folder"));
        match StoreKind::from_env() {
            StoreKind::Sqlite => Self {
                url: format!("sqlite://{}", dir.path().join("leadscore.db").display()),
                kind: StoreKind::Sqlite,
                _dir: dir,
                _schema: None,
            },
            StoreKind::Postgres(base) => {
                // Isolation per test: a schema of its own, selected through
                // the connection's search_path (the Postgres store creates
                // the schema and its tables in the first schema of the
                // search path); dropped when the test is done with it.
                let schema = crate::pg_support::Schema::new(&base, "it");
                Self {
                    url: schema.options_url(),
                    kind: StoreKind::Postgres(base),
                    _dir: dir,
                    _schema: Some(Arc::new(schema)),
                }
            }
        }
    }

    /// The database file of a SQLite store.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        match self.kind {
            StoreKind::Sqlite => self.url.strip_prefix("sqlite://").map(PathBuf::from),
            StoreKind::Postgres(_) => None,
        }
    }
}

// --------------------------------------------------------------------- rules

/// A rules folder in a temporary folder, which tests may change.
#[derive(Clone)]
pub struct RulesDir {
    dir: Arc<TempDir>,
    path: PathBuf,
}

impl RulesDir {
    /// A copy of a rules folder's `*.rhai` files and `tiers.toml`.
    pub fn copy_of(source: &Path) -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("a temporary folder"));
        let path = dir.path().join("rules");
        std::fs::create_dir(&path).expect("create the rules folder");
        for entry in std::fs::read_dir(source).unwrap_or_else(|e| panic!("{}: {e}", source.display())) {
            let entry = entry.expect("a folder entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_file() && (name.ends_with(".rhai") || name == "tiers.toml") {
                std::fs::copy(entry.path(), path.join(&name)).expect("copy a rule file");
            }
        }
        Self { dir, path }
    }

    /// A copy of the benchmark rules.
    pub fn bench() -> Self {
        Self::copy_of(Path::new(BENCH_RULES))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a file the way editors save: a new file renamed over the old.
    pub fn write(&self, name: &str, text: &str) {
        let staging = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&staging, text).expect("write a staged rule file");
        std::fs::rename(&staging, self.path.join(name)).expect("rename a rule file into place");
    }

    /// Rewrites a file in place (truncate, then write).
    pub fn write_in_place(&self, name: &str, text: &str) {
        std::fs::write(self.path.join(name), text).expect("write a rule file");
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.path.join(name)).expect("remove a rule file");
    }

    /// The same rules reached through a symbolic link beside the folder, so
    /// that a test can switch folders ([`RulesDir::repoint`]) without any
    /// file event inside the watched one.
    pub fn through_symlink(&self) -> Self {
        let link = self.dir.path().join("current");
        std::os::unix::fs::symlink(&self.path, &link).expect("create the symlink");
        Self {
            dir: self.dir.clone(),
            path: link,
        }
    }

    /// Points the symbolic link of [`RulesDir::through_symlink`] at another
    /// folder, atomically.
    pub fn repoint(&self, target: &Path) {
        let staging = self.dir.path().join(".current.tmp");
        std::os::unix::fs::symlink(target, &staging).expect("create the new symlink");
        std::fs::rename(&staging, &self.path).expect("swap the symlink");
    }
}

// ------------------------------------------------------------------ receiver

/// One request the downstream receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When it arrived.
    pub at: SystemTime,
    /// The status the receiver answered.
    pub answered: u16,
    /// Requests being answered when this one arrived, itself included.
    pub in_flight: usize,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("forwarded body is not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("forwarded request has no {name} header: {:?}", self.headers))
            .to_str()
            .expect("a text header")
    }

    pub fn webhook_id(&self) -> String {
        self.header("webhook-id").to_owned()
    }

    pub fn contact_id(&self) -> Value {
        self.json()["contact_id"].clone()
    }

    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.answered)
    }
}

/// What the receiver answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// A `Retry-After` header (seconds or an HTTP date).
    pub retry_after: Option<String>,
    /// How long to hold the request before answering.
    pub delay: Option<Duration>,
}

impl Answer {
    pub const fn status(status: u16) -> Self {
        Self {
            status,
            retry_after: None,
            delay: None,
        }
    }
}

struct ReceiverState {
    received: Mutex<Vec<Received>>,
    /// Requests being answered now, and the most there ever were.
    in_flight: Mutex<(usize, usize)>,
    /// Answers to give next, in order, then the default.
    queue: Mutex<VecDeque<Answer>>,
    default: Mutex<Answer>,
}

impl ReceiverState {
    fn next_answer(&self) -> Answer {
        let queued = self.queue.lock().expect("lock").pop_front();
        queued.unwrap_or_else(|| self.default.lock().expect("lock").clone())
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An in-process downstream (CRM, n8n, …) on 127.0.0.1 that records every
/// request and answers what the test tells it to (`200` by default).
#[derive(Clone)]
pub struct Receiver {
    state: Arc<ReceiverState>,
    addr: SocketAddr,
    _task: Arc<AbortOnDrop>,
}

impl Receiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("the receiver's address");
        let state = Arc::new(ReceiverState {
            received: Mutex::new(Vec::new()),
            in_flight: Mutex::new((0, 0)),
            queue: Mutex::new(VecDeque::new()),
            default: Mutex::new(Answer::status(200)),
        });
        let recorder = state.clone();
        let filter = warp::any()
            .and(warp::path::full())
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .then(
                move |path: warp::path::FullPath, headers: HeaderMap, body: Bytes| {
                    let answer = recorder.next_answer();
                    let now_in_flight = {
                        let mut in_flight = recorder.in_flight.lock().expect("lock");
                        in_flight.0 += 1;
                        in_flight.1 = in_flight.1.max(in_flight.0);
                        in_flight.0
                    };
                    let done = recorder.clone();
                    recorder.received.lock().expect("lock").push(Received {
                        path: path.as_str().to_owned(),
                        headers,
                        body,
                        at: SystemTime::now(),
                        answered: answer.status,
                        in_flight: now_in_flight,
                    });
                    async move {
                        if let Some(delay) = answer.delay {
                            tokio::time::sleep(delay).await;
                        }
                        done.in_flight.lock().expect("lock").0 -= 1;
                        let status = StatusCode::from_u16(answer.status).expect("a valid status");
                        let mut response = warp::reply::with_status("", status).into_response();
                        if let Some(value) = answer.retry_after {
                            response.headers_mut().insert(
                                "retry-after",
                                HeaderValue::try_from(value).expect("a header value"),
                            );
                        }
                        response
                    }
                },
            );
        let task = tokio::spawn(warp::serve(filter).incoming(listener).run());
        Self {
            state,
            addr,
            _task: Arc::new(AbortOnDrop(task)),
        }
    }

    /// The URL to forward to.
    pub fn url(&self) -> String {
        format!("http://{}/hooks/scored", self.addr)
    }

    /// Answers these next, in order, before falling back to the default.
    pub fn answer_next(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state.queue.lock().expect("lock").extend(answers);
    }

    /// The answer once the queue is empty.
    pub fn answer_by_default(&self, answer: Answer) {
        *self.state.default.lock().expect("lock") = answer;
    }

    /// The most requests that were ever being answered at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.in_flight.lock().expect("lock").1
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.state.received.lock().expect("lock").clone()
    }

    /// The requests answered with a 2xx.
    pub fn accepted(&self) -> Vec<Received> {
        self.requests().into_iter().filter(Received::accepted).collect()
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        self.wait_until(&format!("{n} forwarded request(s)"), timeout, |r| r.len() >= n)
            .await
    }

    /// Waits until the requests so far satisfy `done`.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let requests = self.requests();
            if done(&requests) {
                return requests;
            }
            if Instant::now() >= deadline {
                let summary: Vec<String> = requests
                    .iter()
                    .map(|r| {
                        format!(
                            "{} contact {} answered {}",
                            r.headers
                                .get("webhook-id")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("?"),
                            serde_json::from_slice::<Value>(&r.body)
                                .map(|b| b["contact_id"].to_string())
                                .unwrap_or_default(),
                            r.answered
                        )
                    })
                    .collect();
                panic!("timed out after {timeout:?} waiting for {what}; received so far: {summary:#?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

// -------------------------------------------------------------------- server

/// How to start a [`TestServer`]; `Options::default()` is a server with a
/// copy of the bench rules, a fresh store and forwarding to a new receiver.
#[derive(Clone)]
pub struct Options {
    /// `None`: a fresh copy of the bench rules.
    pub rules: Option<RulesDir>,
    /// `None`: a fresh store.
    pub store: Option<TestStore>,
    /// Forward to `receiver` (a new one when `None`).
    pub forward: bool,
    pub receiver: Option<Receiver>,
    /// Forward here instead of to the receiver.
    pub forward_url: Option<String>,
    pub forward_secret: Option<String>,
    pub forward_headers: Vec<(String, String)>,
    pub retry_schedule: Vec<Duration>,
    pub forward_concurrency: usize,
    pub forward_timeout: Duration,
    pub admin_token: Option<String>,
    pub auth: InboundAuth,
    pub max_body: usize,
    pub max_contacts: usize,
    pub limits: Limits,
    pub dedupe_window: Duration,
    pub allow_rule_edits: bool,
    pub backtest_max_contacts: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            rules: None,
            store: None,
            forward: true,
            receiver: None,
            forward_url: None,
            forward_secret: None,
            forward_headers: Vec::new(),
            retry_schedule: ms(&[100, 200, 300]),
            forward_concurrency: 16,
            forward_timeout: Duration::from_secs(5),
            admin_token: None,
            auth: InboundAuth::default(),
            max_body: 1 << 20,
            max_contacts: 1000,
            dedupe_window: Duration::from_secs(7 * 86400),
            allow_rule_edits: false,
            backtest_max_contacts: 500_000,
            // Not about the wall clock: a generous budget, so that a slow,
            // shared machine never turns a score into a rule time-out.
            limits: Limits {
                timeout: Duration::from_secs(10),
                ..Limits::default()
            },
        }
    }
}

/// Durations from milliseconds.
pub fn ms(list: &[u64]) -> Vec<Duration> {
    list.iter().map(|&m| Duration::from_millis(m)).collect()
}

impl Options {
    fn serve_config(&self) -> ServeConfig {
        let rules = self.rules.as_ref().expect("resolved");
        let store = self.store.as_ref().expect("resolved");
        let forward = self.forward.then(|| {
            let receiver = self.receiver.as_ref().expect("resolved");
            let mut headers = HeaderMap::new();
            for (name, value) in &self.forward_headers {
                headers.append(
                    HeaderName::try_from(name.as_str()).expect("a header name"),
                    HeaderValue::try_from(value.as_str()).expect("a header value"),
                );
            }
            ForwardConfig {
                url: self
                    .forward_url
                    .clone()
                    .unwrap_or_else(|| receiver.url())
                    .parse()
                    .expect("a forward URL"),
                secret: self
                    .forward_secret
                    .as_deref()
                    .map(|s| WebhookSecret::parse(s).expect("a whsec_ secret")),
                headers,
                concurrency: self.forward_concurrency,
                timeout: self.forward_timeout,
                retry_schedule: self.retry_schedule.clone(),
                lease: Duration::from_secs(30),
            }
        });
        ServeConfig {
            rules_dir: rules.path().to_path_buf(),
            limits: self.limits.clone(),
            store_url: store.url.clone(),
            forward,
            auth: self.auth.clone(),
            admin_token: self.admin_token.clone(),
            allowed_hosts: Vec::new(),
            retention: Retention {
                dedupe_window: self.dedupe_window,
                retention: Duration::from_secs(90 * 86400),
            },
            max_body: self.max_body,
            max_contacts: self.max_contacts,
            allow_rule_edits: self.allow_rule_edits,
            backtest_max_contacts: self.backtest_max_contacts,
            max_connections_per_peer: leadscore::server::MAX_CONNECTIONS_PER_PEER,
        }
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("answer {} is not JSON ({e}): {:?}", self.status, self.text))
    }

    /// Checks a refusal: this status and a `{"error": "…"}` body; returns the message.
    #[track_caller]
    pub fn assert_error(&self, status: u16) -> String {
        assert_eq!(
            self.status, status,
            "expected {status}, got {}: {}",
            self.status, self.text
        );
        let body = self.json();
        let object = body
            .as_object()
            .unwrap_or_else(|| panic!("error body is not an object: {body}"));
        let message = object
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("error body has no \"error\" string: {body}"));
        assert!(!message.is_empty(), "empty error message");
        let content_type = self
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            content_type.starts_with("application/json"),
            "an error is sent as JSON, not {content_type:?}"
        );
        message.to_owned()
    }
}

/// The library's `serve` on 127.0.0.1:0.
pub struct TestServer {
    running: Option<Running>,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    /// With the rules, store and receiver resolved.
    pub options: Options,
}

impl TestServer {
    pub async fn start(mut options: Options) -> Self {
        init_logs();
        if options.rules.is_none() {
            options.rules = Some(RulesDir::bench());
        }
        if options.store.is_none() {
            options.store = Some(TestStore::fresh());
        }
        if options.forward && options.receiver.is_none() {
            options.receiver = Some(Receiver::start().await);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the server");
        let running = leadscore::server::start(options.serve_config(), listener)
            .await
            .unwrap_or_else(|e| panic!("the server did not start: {e:#}"));
        Self {
            addr: running.local_addr(),
            running: Some(running),
            client: client(),
            options,
        }
    }

    /// Starts a server with default options.
    pub async fn default() -> Self {
        Self::start(Options::default()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn rules(&self) -> &RulesDir {
        self.options.rules.as_ref().expect("resolved")
    }

    pub fn store(&self) -> &TestStore {
        self.options.store.as_ref().expect("resolved")
    }

    pub fn receiver(&self) -> &Receiver {
        self.options.receiver.as_ref().expect("this server forwards")
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    /// Stops the server and starts it again on the same store, rules and receiver.
    pub async fn restart(self) -> Self {
        let options = self.options.clone();
        self.shutdown().await;
        Self::start(options).await
    }

    pub async fn shutdown(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }

    /// A request with these headers; adds the admin token when one is
    /// configured and no `Authorization` is given.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut request = self.client.request(method, self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(token) = &self.options.admin_token
            && !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: request failed: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("an answer body");
        Reply {
            status,
            headers,
            text,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None, &[]).await
    }

    /// POSTs a JSON value as `application/json`.
    pub async fn post_json(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.request("POST", path, Some(body.to_string().into_bytes()), &all)
            .await
    }

    /// POSTs a webhook and expects `200`; returns the answer's JSON.
    pub async fn webhook(&self, body: &Value) -> Value {
        self.webhook_with(body, &[]).await
    }

    pub async fn webhook_with(&self, body: &Value, headers: &[(&str, &str)]) -> Value {
        let reply = self.post_json("/webhooks/iclosed", body, headers).await;
        assert_eq!(
            reply.status, 200,
            "webhook answered {}: {}",
            reply.status, reply.text
        );
        reply.json()
    }

    /// `GET /deliveries?status=…` (all when `None`).
    pub async fn deliveries(&self, status: Option<&str>) -> Vec<Value> {
        let path = match status {
            Some(s) => format!("/deliveries?status={s}&limit=1000"),
            None => "/deliveries?limit=1000".to_owned(),
        };
        let reply = self.get(&path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        reply.json()["deliveries"]
            .as_array()
            .unwrap_or_else(|| panic!("{path}: no deliveries array: {}", reply.text))
            .clone()
    }

    /// Waits until the delivery of event `id` has `status`; returns it.
    pub async fn wait_for_delivery(&self, id: &str, status: &str) -> Value {
        eventually(&format!("delivery {id} to be {status}"), WAIT, async || {
            self.deliveries(Some(status))
                .await
                .into_iter()
                .find(|d| d["id"] == id)
        })
        .await
    }

    /// `GET /rules`.
    pub async fn rules_status(&self) -> Value {
        let reply = self.get("/rules").await;
        assert_eq!(reply.status, 200, "/rules: {}", reply.text);
        reply.json()
    }

    /// `POST /score` of one contact; returns its scored contact.
    pub async fn dry_run(&self, contact: &Value) -> Value {
        let reply = self.post_json("/score", contact, &[]).await;
        assert_eq!(reply.status, 200, "/score: {}", reply.text);
        let mut results = reply.json()["results"].take();
        results[0].take()
    }
}

/// An HTTP client for loopback only (no proxy), with a bound on every request.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("an HTTP client")
}

/// The binary with no `LEADSCORE_*` setting inherited from the environment.
pub fn leadscore() -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LEADSCORE_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

/// Runs a one-shot command of the binary off the async threads.
pub async fn run_binary(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || leadscore().args(&args).output().expect("the binary runs"))
        .await
        .expect("the command finished")
}
