//! [`TestServer`]: the library's `serve` on `127.0.0.1:0`, in process.
//!
//! Its configuration goes through the same path as a user's: [`Options`]
//! become `leadscore serve` flags, parsed by clap into
//! `leadscore::cli::ServeArgs` and checked by `to_config()`. Every setting
//! is given as a flag (an empty value for an unset one), so `LEADSCORE_*`
//! variables in the environment of `cargo test` cannot change a test; the
//! one switch, `--allow-rule-edits`, is checked after parsing instead.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser as _;
use http::HeaderMap;
use leadscore::cli::{Cli, Command};
use leadscore::server::{Running, ServeConfig};
use serde_json::Value;

use super::{Receiver, RulesDir, TestStore, WAIT, client, eventually, init_logs};

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
    /// `--webhook-token`.
    pub webhook_token: Option<String>,
    /// `--webhook-hmac-header` and `--webhook-hmac-secret`.
    pub webhook_hmac: Option<(String, String)>,
    /// `--webhook-secret` (`whsec_…`).
    pub webhook_secret: Option<String>,
    pub max_body: usize,
    pub max_contacts: usize,
    /// `--rule-timeout`.
    pub rule_timeout: Duration,
    /// `--rule-max-operations`.
    pub rule_max_operations: u64,
    pub dedupe_window: Duration,
    pub allow_rule_edits: bool,
    pub backtest_max_contacts: usize,
    /// Connections one peer may hold (not a flag: `serve` uses
    /// `leadscore::server::MAX_CONNECTIONS_PER_PEER`).
    pub max_connections_per_peer: usize,
    /// `--destinations FILE` (then `forward` must be false), with the
    /// environment its `{ env = … }` values are read from (instead of the
    /// process's: tests run side by side).
    pub destinations: Option<(std::path::PathBuf, std::collections::HashMap<String, String>)>,
    /// `--rescore-on-reload`.
    pub rescore_on_reload: bool,
    /// `--rescore-every`.
    pub rescore_every: Option<Duration>,
    /// `--rescore-window`.
    pub rescore_window: String,
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
            webhook_token: None,
            webhook_hmac: None,
            webhook_secret: None,
            max_body: 1 << 20,
            max_contacts: 1000,
            dedupe_window: Duration::from_secs(7 * 86400),
            allow_rule_edits: false,
            backtest_max_contacts: 500_000,
            // Not about the wall clock: a generous budget, so that a slow,
            // shared machine never turns a score into a rule time-out.
            rule_timeout: Duration::from_secs(10),
            rule_max_operations: 1_000_000,
            max_connections_per_peer: leadscore::server::MAX_CONNECTIONS_PER_PEER,
            destinations: None,
            rescore_on_reload: false,
            rescore_every: None,
            rescore_window: "30d".into(),
        }
    }
}

/// Durations from milliseconds.
pub fn ms(list: &[u64]) -> Vec<Duration> {
    list.iter().map(|&m| Duration::from_millis(m)).collect()
}

impl Options {
    /// A server as `serve` starts by default, for suites about HTTP rather
    /// than delivery: a copy of the example rules (`rules/`), a fresh SQLite
    /// store, no forwarding, the default rule limits.
    pub fn plain() -> Self {
        Self {
            rules: Some(RulesDir::example()),
            store: Some(TestStore::sqlite()),
            forward: false,
            rule_timeout: Duration::from_millis(100),
            ..Self::default()
        }
    }

    /// The `leadscore serve` command line of these options (rules, store and
    /// receiver resolved).
    pub fn command_line(&self) -> Vec<String> {
        let rules = self.rules.as_ref().expect("resolved");
        let store = self.store.as_ref().expect("resolved");
        let millis = |d: Duration| format!("{}ms", d.as_millis());
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let mut args: Vec<String> = vec!["leadscore".into(), "serve".into()];
        let mut flag = |name: &str, value: String| {
            args.push(format!("--{name}"));
            args.push(value);
        };
        flag("listen", "127.0.0.1:0".into());
        flag("rules", rules.path().display().to_string());
        flag("rule-timeout", millis(self.rule_timeout));
        flag("rule-max-operations", self.rule_max_operations.to_string());
        flag("store", store.url.clone());
        flag("dedupe-window", millis(self.dedupe_window));
        flag("retention", "90d".into());
        flag("webhook-token", text(&self.webhook_token));
        let (hmac_header, hmac_secret) = self.webhook_hmac.clone().unwrap_or_default();
        flag("webhook-hmac-header", hmac_header);
        flag("webhook-hmac-secret", hmac_secret);
        flag("webhook-secret", text(&self.webhook_secret));
        flag("admin-token", text(&self.admin_token));
        flag("max-body", self.max_body.to_string());
        flag("max-contacts", self.max_contacts.to_string());
        flag("backtest-max-contacts", self.backtest_max_contacts.to_string());
        let forward_url = self.forward.then(|| {
            self.forward_url
                .clone()
                .unwrap_or_else(|| self.receiver.as_ref().expect("resolved").url())
        });
        flag("forward-url", forward_url.unwrap_or_default());
        flag("forward-secret", text(&self.forward_secret));
        if self.forward_headers.is_empty() {
            flag("forward-header", String::new());
        }
        for (name, value) in &self.forward_headers {
            flag("forward-header", format!("{name}: {value}"));
        }
        let schedule: Vec<String> = self.retry_schedule.iter().map(|d| millis(*d)).collect();
        flag("retry-schedule", schedule.join(","));
        flag("forward-concurrency", self.forward_concurrency.to_string());
        flag("forward-timeout", millis(self.forward_timeout));
        flag("delivery-lease", "30s".into());
        flag("rescore-window", self.rescore_window.clone());
        if let Some(every) = self.rescore_every {
            flag("rescore-every", millis(every));
        }
        if self.rescore_on_reload {
            args.push("--rescore-on-reload".into());
        }

        if self.allow_rule_edits {
            args.push("--allow-rule-edits".into());
        }
        args
    }

    /// The configuration `serve` would run with: the command line parsed
    /// and checked as the binary does it.
    pub fn serve_config(&self) -> ServeConfig {
        let args = self.command_line();
        // A destinations file is read below, with the test's environment.
        let serve = match Cli::try_parse_from(&args) {
            Ok(Cli {
                command: Some(Command::Serve(serve)),
                ..
            }) => serve,
            Ok(other) => panic!("{args:?} parsed as {other:?}"),
            Err(e) => panic!("the test's serve flags do not parse: {e}\n{args:?}"),
        };
        let mut config = serve
            .to_config()
            .unwrap_or_else(|e| panic!("the test's serve flags are refused: {e}"));
        config.max_connections_per_peer = self.max_connections_per_peer;
        if let Some((path, env)) = &self.destinations {
            use leadscore::deliver::manager::{DestinationsSource, Environment};
            let defaults = serve.destination_defaults();
            let env = Environment::Fixed(std::sync::Arc::new(env.clone()));
            let destinations =
                leadscore::destinations::Destinations::load(path, &defaults, &|name: &str| env.get(name))
                    .unwrap_or_else(|e| panic!("the test's destinations file is refused: {e}"));
            config.deliveries = Some(leadscore::server::DeliveryConfig {
                destinations,
                source: DestinationsSource::File {
                    path: path.clone(),
                    defaults,
                    env,
                },
                lease: Duration::from_secs(30),
            });
        }
        assert_eq!(
            config.allow_rule_edits, self.allow_rule_edits,
            "LEADSCORE_ALLOW_RULE_EDITS in the environment changes this test; unset it"
        );
        config
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

    /// Stops the server, bounded: idle connections a test left open must
    /// not keep it waiting.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), running.shutdown()).await;
        }
    }

    /// `/healthz` answers 200 and a normal ingest is accepted: what every
    /// hostile case must leave behind.
    pub async fn assert_healthy(&self) {
        super::raw::assert_healthy(self.addr).await;
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
