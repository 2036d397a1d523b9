//! The real binary (`leadscore serve`): crash safety under SIGKILL, SIGTERM
//! and SIGHUP, configuration by flags and environment, and refusing a bad
//! configuration with exit code 2 and a message naming the setting.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use leadscore::signature::WebhookSecret;

use crate::support::{
    FORWARD_SECRET, Process, Receiver, RulesDir, TestStore, WAIT, client, contact, contact_with_id,
    eventually,
};

fn json_text(value: &Value) -> String {
    value.to_string()
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// `serve` flags for a process on `port`.
fn serve_args(port: u16, store: &TestStore, rules: &Path, forward: Option<&Receiver>) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--store".into(),
        store.url.clone(),
        "--rules".into(),
        rules.display().to_string(),
    ];
    if let Some(receiver) = forward {
        args.extend(["--forward-url".into(), receiver.url()]);
    }
    args
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_contacts_survive_sigkill() {
    let logs = TempDir::new().expect("a temporary folder");
    let receiver = Receiver::start().await;
    let rules = RulesDir::bench();
    let store = TestStore::fresh();
    let port = free_port();
    let args = serve_args(port, &store, rules.path(), Some(&receiver));
    let (acked, mut second) = load_kill_restart(args, logs.path(), port).await;
    assert_delivered_once_each(&receiver, &acked, "the receiver").await;
    second.signal("TERM");
    let status = second.wait_exit(WAIT).await;
    assert!(status.success(), "{status}:\n{}", second.log_text());
}

/// SPEC 10 with the crash test: three destinations (one selecting only
/// even contact ids); after a SIGKILL under load and a restart, every
/// acknowledged contact reaches every destination that selected it, and
/// no other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_contacts_reach_every_destination_after_sigkill() {
    let logs = TempDir::new().expect("a temporary folder");
    let (a, even, c) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    let rules = RulesDir::bench();
    let store = TestStore::fresh();
    let file = logs.path().join("destinations.toml");
    std::fs::write(
        &file,
        format!(
            "[[destination]]\nname = \"a\"\nurl = \"{}\"\n\n\
             [[destination]]\nname = \"even\"\nurl = \"{}\"\nwhen = 'contact_id % 2 == 0'\n\n\
             [[destination]]\nname = \"c\"\nurl = \"{}\"\ntemplate = \"slack\"\n",
            a.url(),
            even.url(),
            c.url()
        ),
    )
    .unwrap();
    let port = free_port();
    let mut args = serve_args(port, &store, rules.path(), None);
    args.extend(["--destinations".into(), file.display().to_string()]);
    let (acked, mut second) = load_kill_restart(args, logs.path(), port).await;
    assert_delivered_once_each(&a, &acked, "destination a").await;
    let evens: HashSet<u64> = acked.iter().copied().filter(|id| id % 2 == 0).collect();
    assert_delivered_once_each(&even, &evens, "destination even").await;
    // The Slack-shaped one: its messages carry the event id, not the contact.
    let messages = c
        .wait_until(
            "a message per acknowledged contact",
            Duration::from_secs(30),
            |r| {
                r.iter()
                    .filter(|r| r.accepted())
                    .map(|r| r.webhook_id())
                    .collect::<HashSet<_>>()
                    .len()
                    >= acked.len()
            },
        )
        .await;
    assert!(messages.iter().all(|m| m.json()["blocks"].is_array()));
    second.signal("TERM");
    let status = second.wait_exit(WAIT).await;
    assert!(status.success(), "{status}:\n{}", second.log_text());
}

const TOTAL: u64 = 300;
const CONCURRENCY: usize = 16;

/// Posts [`TOTAL`] contacts from several senders that, like iClosed, retry
/// until they get a 2xx; kills the server hard under load and starts it
/// again on the same store. Returns the acknowledged contact ids (all of
/// them, in the end) and the second process.
async fn load_kill_restart(mut args: Vec<String>, logs: &Path, port: u16) -> (HashSet<u64>, Process) {
    const TASKS: u64 = 6;
    const KILL_AFTER: usize = 100;
    args.extend([
        "--retry-schedule".into(),
        "100ms,200ms,500ms,1s".into(),
        "--forward-concurrency".into(),
        CONCURRENCY.to_string(),
    ]);
    let mut first = Process::spawn(&args, &[], addr(port), &logs.join("first.log"));
    first.wait_healthy().await;
    let acked: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = format!("http://127.0.0.1:{port}/webhooks/iclosed");
    let mut senders = Vec::new();
    for task in 0..TASKS {
        let acked = acked.clone();
        let url = url.clone();
        senders.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("a client");
            for id in (task..TOTAL).step_by(TASKS as usize) {
                let body = json!([contact_with_id("qualified", id)]);
                loop {
                    let sent = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(json_text(&body))
                        .send()
                        .await;
                    if let Ok(reply) = sent
                        && reply.status().is_success()
                    {
                        let answer: Value =
                            serde_json::from_str(&reply.text().await.expect("a body")).expect("JSON");
                        assert_eq!(answer["results"][0]["contact_id"], id, "{answer}");
                        acked.lock().unwrap().insert(id);
                        break;
                    }
                    assert!(Instant::now() < deadline, "contact {id} was never acknowledged");
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            }
        }));
    }
    let acked_ref = acked.clone();
    eventually(
        "enough acknowledged contacts to kill",
        Duration::from_secs(20),
        async || (acked_ref.lock().unwrap().len() >= KILL_AFTER).then_some(()),
    )
    .await;
    first.kill_hard();
    let at_kill = acked.lock().unwrap().len();
    let mut second = Process::spawn(&args, &[], addr(port), &logs.join("second.log"));
    second.wait_healthy().await;
    for sender in senders {
        sender.await.expect("a sender finished");
    }
    let acked: HashSet<u64> = acked.lock().unwrap().clone();
    assert_eq!(
        acked.len(),
        TOTAL as usize,
        "every contact acknowledged in the end"
    );
    assert!(
        at_kill < TOTAL as usize,
        "the kill happened under load ({at_kill} acknowledged)"
    );
    println!("acknowledged at kill: {at_kill}");
    (acked, second)
}

/// Waits until `receiver` got every contact of `expected` (and no other):
/// one event per contact; a delivery repeats only if it was in flight at
/// the kill.
async fn assert_delivered_once_each(receiver: &Receiver, expected: &HashSet<u64>, what: &str) {
    let forwarded = receiver
        .wait_until(
            &format!("every acknowledged contact delivered to {what}"),
            Duration::from_secs(30),
            |r| {
                let arrived: HashSet<u64> = r
                    .iter()
                    .filter(|r| r.accepted())
                    .filter_map(|r| r.contact_id().as_u64())
                    .collect();
                expected.is_subset(&arrived)
            },
        )
        .await;
    let mut events: HashMap<u64, HashSet<String>> = HashMap::new();
    for request in &forwarded {
        let id = request.contact_id().as_u64().expect("a numeric contact id");
        events.entry(id).or_default().insert(request.webhook_id());
    }
    assert_eq!(
        events.keys().copied().collect::<HashSet<u64>>(),
        *expected,
        "{what} got exactly the contacts it selected"
    );
    for (id, ids) in &events {
        assert_eq!(
            ids.len(),
            1,
            "contact {id} became several events at {what}: {ids:?}"
        );
    }
    let repeats = forwarded.len() - events.len();
    assert!(
        repeats <= CONCURRENCY,
        "{repeats} repeated deliveries to {what}; at most the {CONCURRENCY} in flight may repeat"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_gracefully() {
    let logs = TempDir::new().expect("a temporary folder");
    let receiver = Receiver::start().await;
    let rules = RulesDir::bench();
    let store = TestStore::fresh();
    let port = free_port();
    let mut args = serve_args(port, &store, rules.path(), Some(&receiver));
    args.extend([
        "--forward-secret".into(),
        FORWARD_SECRET.into(),
        "--forward-header".into(),
        "Authorization: Bearer crm-1".into(),
        "--forward-header".into(),
        "X-Tenant: acme".into(),
    ]);
    let mut process = Process::spawn(&args, &[], addr(port), &logs.path().join("serve.log"));
    process.wait_healthy().await;
    let reply = client()
        .post(process.url("/webhooks/iclosed"))
        .header("content-type", "application/json")
        .body(json_text(&json!([contact("qualified")])))
        .send()
        .await
        .expect("the webhook answers");
    assert_eq!(reply.status(), 200);
    let answer: Value = serde_json::from_str(&reply.text().await.expect("an answer")).expect("a JSON answer");
    let event_id = answer["results"][0]["id"]
        .as_str()
        .expect("an event id")
        .to_owned();
    let forwarded = receiver.wait_for(1, WAIT).await;
    let request = &forwarded[0];
    assert_eq!(request.header("authorization"), "Bearer crm-1");
    assert_eq!(request.header("x-tenant"), "acme");
    let secret = WebhookSecret::parse(FORWARD_SECRET).expect("the secret");
    assert!(secret.verify(
        &request.webhook_id(),
        request.header("webhook-timestamp"),
        &request.body,
        request.header("webhook-signature")
    ));

    process.signal("TERM");
    let status = process.wait_exit(WAIT).await;
    let log = process.log_text();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("stopped"), "the log says it stopped:\n{log}");
    // Written by the log thread, every contact's line among them.
    assert!(
        log.lines()
            .any(|line| line.contains("contact scored and stored") && line.contains(&event_id)),
        "the contact's line is in the log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_rules_and_keeps_serving() {
    let logs = TempDir::new().expect("a temporary folder");
    let first = RulesDir::bench();
    let second = RulesDir::bench();
    second.write("85-extra.rhai", "add(7, \"Extra signal\");\n");
    // Through a symbolic link, so that no file event in the watched folder
    // can trigger the reload: only the signal does.
    let link = first.through_symlink();
    let store = TestStore::fresh();
    let port = free_port();
    let args = serve_args(port, &store, link.path(), None);
    let mut process = Process::spawn(&args, &[], addr(port), &logs.path().join("serve.log"));
    process.wait_healthy().await;
    let client = client();
    let rules_files = async |client: &reqwest::Client| -> Vec<Value> {
        let reply = client
            .get(process.url("/rules"))
            .send()
            .await
            .expect("/rules answers");
        assert_eq!(reply.status(), 200);
        let body: Value = serde_json::from_str(&reply.text().await.expect("a body")).expect("JSON");
        body["files"].as_array().expect("files").clone()
    };
    assert_eq!(rules_files(&client).await.len(), 8);

    link.repoint(second.path());
    process.signal("HUP");
    eventually(
        "SIGHUP to load the new folder",
        Duration::from_secs(5),
        async || {
            let files = rules_files(&client).await;
            files.contains(&json!("85-extra.rhai")).then_some(())
        },
    )
    .await;
    assert!(process.is_running(), "SIGHUP does not stop the server");
    let answer: Value = client
        .post(process.url("/webhooks/iclosed"))
        .header("content-type", "application/json")
        .body(json_text(&json!([contact("potential")])))
        .send()
        .await
        .expect("the webhook answers")
        .text()
        .await
        .map(|t| serde_json::from_str(&t).expect("JSON"))
        .expect("a body");
    assert_eq!(answer["results"][0]["score"], 7, "{answer}");

    process.signal("TERM");
    assert!(process.wait_exit(WAIT).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_configures_and_flags_win() {
    let logs = TempDir::new().expect("a temporary folder");
    let receiver = Receiver::start().await;
    let rules = RulesDir::bench();
    let store = TestStore::fresh();
    let port = free_port();
    // The flag's forward URL wins over the variable's.
    let args = serve_args(port, &store, rules.path(), Some(&receiver));
    let env = [
        ("LEADSCORE_FORWARD_URL", "not-a-url"),
        ("LEADSCORE_FORWARD_HEADERS", "X-Crm-Key: k1;X-Source: leadscore"),
        ("LEADSCORE_ADMIN_TOKEN", "env-admin"),
        ("LEADSCORE_MAX_CONTACTS", "2"),
        ("LEADSCORE_MAX_BODY", "4KiB"),
    ];
    let mut process = Process::spawn(&args, &env, addr(port), &logs.path().join("serve.log"));
    process.wait_healthy().await;
    let client = client();

    let reply = client
        .post(process.url("/webhooks/iclosed"))
        .header("content-type", "application/json")
        .body(json_text(&json!([{"id": 1}, {"id": 2}, {"id": 3}])))
        .send()
        .await
        .expect("answer");
    assert_eq!(reply.status(), 413, "LEADSCORE_MAX_CONTACTS=2");
    let reply = client
        .post(process.url("/webhooks/iclosed"))
        .header("content-type", "application/json")
        .body(json_text(&json!([{"id": 1, "notes": "n".repeat(5000)}])))
        .send()
        .await
        .expect("answer");
    assert_eq!(reply.status(), 413, "LEADSCORE_MAX_BODY=4KiB");
    let reply = client
        .post(process.url("/webhooks/iclosed"))
        .header("content-type", "application/json")
        .body(json_text(&json!([contact("potential")])))
        .send()
        .await
        .expect("answer");
    assert_eq!(reply.status(), 200);
    let forwarded = receiver.wait_for(1, WAIT).await;
    assert_eq!(forwarded[0].header("x-crm-key"), "k1");
    assert_eq!(forwarded[0].header("x-source"), "leadscore");

    let reply = client.get(process.url("/rules")).send().await.expect("answer");
    assert_eq!(reply.status(), 401, "LEADSCORE_ADMIN_TOKEN guards /rules");
    let reply = client
        .get(process.url("/rules"))
        .bearer_auth("env-admin")
        .send()
        .await
        .expect("answer");
    assert_eq!(reply.status(), 200);

    process.signal("TERM");
    assert!(process.wait_exit(WAIT).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_subcommand_is_serve() {
    let logs = TempDir::new().expect("a temporary folder");
    let rules = RulesDir::bench();
    let store = TestStore::fresh();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let rules_path = rules.path().display().to_string();
    let env = [
        ("LEADSCORE_LISTEN", listen.as_str()),
        ("LEADSCORE_RULES", rules_path.as_str()),
        ("LEADSCORE_STORE", store.url.as_str()),
    ];
    let mut process = Process::spawn(&[], &env, addr(port), &logs.path().join("serve.log"));
    process.wait_healthy().await;
    process.signal("TERM");
    assert!(process.wait_exit(WAIT).await.success());

    // Flags without the subcommand are serve's flags.
    let port = free_port();
    let mut args = serve_args(port, &store, rules.path(), None);
    assert_eq!(args.remove(0), "serve");
    let mut process = Process::spawn(&args, &[], addr(port), &logs.path().join("flags.log"));
    process.wait_healthy().await;
    process.signal("TERM");
    assert!(process.wait_exit(WAIT).await.success(), "{}", process.log_text());
}

/// Environment variables of a test case.
type Env = Vec<(&'static str, &'static str)>;

/// Runs `serve` with a configuration that must be refused; returns stderr.
async fn refused(extra: &[&str], env: &[(&str, &str)]) -> String {
    let logs = TempDir::new().expect("a temporary folder");
    let rules = RulesDir::bench();
    let store = TestStore::fresh();
    let mut args = serve_args(0, &store, rules.path(), None);
    if extra.contains(&"--store") {
        let at = args.iter().position(|a| a == "--store").expect("--store");
        args.drain(at..at + 2);
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let mut process = Process::spawn(&args, env, addr(0), &logs.path().join("serve.log"));
    let status = process.wait_exit(WAIT).await;
    let log = process.log_text();
    assert_eq!(status.code(), Some(2), "{extra:?} {env:?}: {status}\n{log}");
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_exits_2_naming_the_setting() {
    let cases: Vec<(Vec<&str>, Env, &str)> = vec![
        (vec!["--forward-url", "not-a-url"], vec![], "--forward-url"),
        (
            vec!["--forward-url", "ftp://example.com/x"],
            vec![],
            "--forward-url",
        ),
        (vec!["--retry-schedule", "soon"], vec![], "--retry-schedule"),
        (vec!["--allow-rule-edits"], vec![], "--allow-rule-edits"),
        (
            vec![
                "--forward-url",
                "http://127.0.0.1:9/",
                "--forward-secret",
                "whsec_***",
            ],
            vec![],
            "--forward-secret",
        ),
        (
            vec!["--webhook-hmac-header", "X-Signature"],
            vec![],
            "--webhook-hmac",
        ),
        (vec!["--max-body", "lots"], vec![], "--max-body"),
        (vec!["--dedupe-window", "0s"], vec![], "--dedupe-window"),
        (
            vec![],
            vec![("LEADSCORE_FORWARD_URL", "not-a-url")],
            "--forward-url",
        ),
        (
            vec![],
            vec![("LEADSCORE_RETRY_SCHEDULE", "soon")],
            "--retry-schedule",
        ),
        (vec!["--store", "mysql://db/leads"], vec![], "mysql://db/leads"),
        (vec![], vec![("LEADSCORE_LOG", "[[bad")], "LEADSCORE_LOG"),
        // `1` is read as true (the variable takes 1/0, yes/no, on/off too),
        // so what is refused is rule edits without an admin token.
        (
            vec![],
            vec![("LEADSCORE_ALLOW_RULE_EDITS", "1")],
            "--allow-rule-edits needs --admin-token",
        ),
    ];
    for (extra, env, named) in cases {
        let log = refused(&extra, &env).await;
        assert!(
            log.contains(named),
            "{extra:?} {env:?}: the message names {named}:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_rules_exit_2_naming_file_and_line() {
    let logs = TempDir::new().expect("a temporary folder");
    let rules = RulesDir::bench();
    rules.write("99-broken.rhai", "let a = 1;\nlet = 2;\n");
    let store = TestStore::fresh();
    let args = serve_args(0, &store, rules.path(), None);
    let mut process = Process::spawn(&args, &[], addr(0), &logs.path().join("serve.log"));
    let status = process.wait_exit(WAIT).await;
    let log = process.log_text();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("99-broken.rhai:2:"), "file:line named:\n{log}");

    // A rules folder that does not exist.
    let missing = logs.path().join("no-such-rules");
    let args = serve_args(0, &store, &missing, None);
    let mut process = Process::spawn(&args, &[], addr(0), &logs.path().join("missing.log"));
    let status = process.wait_exit(WAIT).await;
    let log = process.log_text();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("no-such-rules"), "the folder is named:\n{log}");
}

/// SPEC 10 "Credentials": the real binary with a destinations file whose
/// secrets come from its environment (a bearer token, a URL that is its
/// own secret, a signing secret) never writes them to its log, even at
/// debug level, while it delivers and while a destination fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_secrets_never_reach_the_log() {
    let (crm, chat) = (
        crate::support::Receiver::start().await,
        crate::support::Receiver::start().await,
    );
    chat.answer_by_default(crate::support::Answer::status(500));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("destinations.toml");
    std::fs::write(
        &file,
        format!(
            "[[destination]]\nname = \"crm\"\nurl = \"{}\"\ntemplate = \"hubspot\"\n\
             auth = {{ bearer_env = \"LS_TEST_CRM_TOKEN\" }}\nsigning_secret = {{ env = \"LS_TEST_SIGNING\" }}\n\n\
             [[destination]]\nname = \"chat\"\nurl = {{ env = \"LS_TEST_CHAT_URL\" }}\ntemplate = \"slack\"\n\
             retry_schedule = \"50ms\"\n\n\
             [[destination]]\nname = \"down\"\nurl = {{ env = \"LS_TEST_DOWN_URL\" }}\nretry_schedule = \"50ms\"\n",
            crm.url()
        ),
    )
    .unwrap();
    let chat_url = format!("{}/services/T1/B2/chat-url-s3cret", chat.url());
    // Nothing listens there: its errors are connection errors, whose text
    // must not carry the URL.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let down_url = format!("http://{closed}/hooks/down-url-s3cret");
    let secrets = [
        ("LS_TEST_CRM_TOKEN", "crm-bearer-s3cret-31337"),
        ("LS_TEST_SIGNING", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ("LS_TEST_CHAT_URL", chat_url.as_str()),
        ("LS_TEST_DOWN_URL", down_url.as_str()),
        ("LEADSCORE_LOG", "debug"),
    ];
    let mut server = Process::serve(&["--destinations", file.to_str().unwrap()], &secrets);
    server.wait_ready(WAIT).await;
    let reply = reqwest::Client::new()
        .post(server.url("/webhooks/iclosed"))
        .header("content-type", "application/json")
        .body(json!([contact_with_id("qualified", 4242)]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    crm.wait_for(1, WAIT).await;
    chat.wait_for(2, WAIT).await;
    // The unreachable destination's delivery is dead after its one retry;
    // its last error, in the API and the log, says what failed, not where.
    let client = reqwest::Client::new();
    let down = eventually("the unreachable destination's delivery dead", WAIT, async || {
        let text = client
            .get(server.url("/deliveries?destination=down"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.contains("\"dead\"").then_some(text)
    })
    .await;
    assert!(down.contains("could not connect"), "{down}");
    for path in ["/deliveries", "/destinations"] {
        let text = client
            .get(server.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for secret in ["down-url-s3cret", "chat-url-s3cret", "crm-bearer-s3cret-31337"] {
            assert!(!text.contains(secret), "{path} shows {secret}: {text}");
        }
    }
    server.signal("TERM");
    server.wait_exit(WAIT).await;
    let log = server.log_text();
    assert!(log.contains("crm"), "the log is the server's: {log}");
    for secret in [
        "crm-bearer-s3cret-31337",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "chat-url-s3cret",
        "down-url-s3cret",
    ] {
        assert!(!log.contains(secret), "the log shows {secret}:\n{log}");
    }
}

/// SPEC 12: a rescore job killed midway (SIGKILL) goes on from its cursor
/// after a restart and pushes each changed contact; a contact is pushed
/// twice only when its delivery was in flight at the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rescore_killed_midway_resumes_and_pushes_each_changed_contact() {
    const CONTACTS: usize = 3000;
    let logs = TempDir::new().expect("a temporary folder");
    let receiver = Receiver::start().await;
    let rules = RulesDir::bench();
    let store = TestStore::fresh();
    let port = free_port();
    let mut args = serve_args(port, &store, rules.path(), Some(&receiver));
    args.extend(["--forward-concurrency".into(), CONCURRENCY.to_string()]);
    let mut first = Process::spawn(&args, &[], addr(port), &logs.path().join("first.log"));
    first.wait_healthy().await;
    let http = client();
    let contacts = leadscore::demo::contacts(21, CONTACTS);
    let mut before: HashMap<String, (Value, Value)> = HashMap::new();
    for batch in contacts.chunks(500) {
        let reply = post_json(
            &http,
            &first.url("/webhooks/iclosed"),
            &Value::Array(batch.to_vec()),
        )
        .await
        .expect("stored");
        for line in reply["results"].as_array().unwrap() {
            before.insert(
                line["contact_id"].to_string(),
                (line["score"].clone(), line["tier"].clone()),
            );
        }
    }

    // A rule that moves most scores and takes a while per contact (so that
    // the kill lands inside the job), put in force by SIGHUP.
    let slow = "let n = 0; for i in 0..4000 { n += i; }\nif n > 0 { add(1, \"Everyone counts\"); }\n";
    rules.write("90-everyone.rhai", slow);
    first.signal("HUP");
    let expected: HashSet<String> = {
        let judge_rules = RulesDir::copy_of(rules.path());
        let judge = crate::support::TestServer::start(crate::support::Options {
            rules: Some(judge_rules),
            forward: false,
            ..crate::support::Options::default()
        })
        .await;
        let mut changed = HashSet::new();
        for batch in contacts.chunks(300) {
            let reply = judge
                .post_json("/score", &Value::Array(batch.to_vec()), &[])
                .await
                .json();
            for scored in reply["results"].as_array().unwrap() {
                let id = scored["contact_id"].to_string();
                if before[&id] != (scored["score"].clone(), scored["tier"].clone()) {
                    changed.insert(id);
                }
            }
        }
        changed
    };
    eventually("the new rule in force", WAIT, async || {
        let rules = get_json(&http, &first.url("/rules")).await?;
        rules["files"]
            .as_array()?
            .iter()
            .any(|f| f == "90-everyone.rhai")
            .then_some(())
    })
    .await;
    let job = post_json(&http, &first.url("/rescore"), &json!({"since": "1d"}))
        .await
        .expect("a job");
    let id = job["id"].as_str().expect("a job id").to_owned();
    // The job scores at nice 19 (as rescores do) with a deliberately slow
    // rule: beside the rest of the suite on two cores its first page of 500
    // can take longer than WAIT (it did once in CI), hence the longer wait.
    // It returns as soon as a page is done, so the kill still lands early.
    let under_way = eventually("the job under way", Duration::from_secs(60), async || {
        let job = get_json(&http, &first.url(&format!("/rescore/{id}"))).await?;
        (job["scored"].as_u64()? >= 500).then_some(job)
    })
    .await;
    first.kill_hard();
    assert_eq!(
        under_way["state"], "running",
        "the kill lands inside the job: {under_way}"
    );
    assert!(
        under_way["scored"].as_u64().unwrap() < CONTACTS as u64,
        "{under_way}"
    );
    let mut second = Process::spawn(&args, &[], addr(port), &logs.path().join("second.log"));
    second.wait_healthy().await;
    let done = eventually(
        "the job taken over and done",
        Duration::from_secs(90),
        async || {
            let job = get_json(&http, &second.url(&format!("/rescore/{id}"))).await?;
            (job["state"] == "done").then_some(job)
        },
    )
    .await;
    assert_eq!(done["scored"].as_u64().unwrap() as usize, CONTACTS, "{done}");

    let pushed = receiver
        .wait_until(
            "every changed contact pushed",
            Duration::from_secs(60),
            |requests| {
                let ids: HashSet<String> = requests
                    .iter()
                    .filter(|r| r.accepted())
                    .map(|r| r.json())
                    .filter(|b| b["type"] == "contact.rescored")
                    .map(|b| b["contact_id"].to_string())
                    .collect();
                ids.len() >= expected.len()
            },
        )
        .await;
    let rescored: Vec<Value> = pushed
        .iter()
        .filter(|r| r.accepted())
        .map(|r| r.json())
        .filter(|b| b["type"] == "contact.rescored")
        .collect();
    let ids: HashSet<String> = rescored.iter().map(|b| b["contact_id"].to_string()).collect();
    assert_eq!(ids, expected, "exactly the changed contacts");
    let events: HashSet<&str> = rescored.iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(
        events.len(),
        ids.len(),
        "one rescored event per contact, whatever was sent twice"
    );
    let repeats = rescored.len() - ids.len();
    assert!(
        repeats <= 2 * CONCURRENCY,
        "{repeats} repeats: more than the deliveries in flight"
    );
    second.signal("TERM");
    let status = second.wait_exit(WAIT).await;
    assert!(status.success(), "{status}:\n{}", second.log_text());
}

async fn get_json(http: &reqwest::Client, url: &str) -> Option<Value> {
    let text = http.get(url).send().await.ok()?.text().await.ok()?;
    serde_json::from_str(&text).ok()
}

async fn post_json(http: &reqwest::Client, url: &str, body: &Value) -> Option<Value> {
    let reply = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .ok()?;
    serde_json::from_str(&reply.text().await.ok()?).ok()
}
