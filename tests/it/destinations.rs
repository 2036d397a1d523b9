//! Destinations (SPEC 10) on the real server: routing by `when`, the
//! HubSpot and Slack templates, credentials kept out of answers, a failing
//! destination behind its breaker while another keeps receiving, alerts,
//! transforms that fail and are fixed, and reloads of the file.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Answer, Options, Receiver, TestServer, WAIT, contact_with_id, eventually, generated};

/// A destinations file in a folder of its own (transforms beside it).
struct DestinationsDir {
    dir: tempfile::TempDir,
}

impl DestinationsDir {
    fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        std::fs::write(dir.path().join("destinations.toml"), text).expect("write the file");
        Self { dir }
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("destinations.toml")
    }

    fn write(&self, name: &str, text: &str) {
        // Written beside and renamed over: the watcher never reads half a file.
        let temporary = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&temporary, text).expect("write");
        std::fs::rename(&temporary, self.dir.path().join(name)).expect("rename");
    }
}

async fn start(dir: &DestinationsDir, env: &[(&str, &str)]) -> TestServer {
    let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    TestServer::start(Options {
        forward: false,
        destinations: Some((dir.file(), env)),
        ..Options::default()
    })
    .await
}

fn by_id<'a>(requests: impl IntoIterator<Item = &'a Value>) -> HashSet<String> {
    requests
        .into_iter()
        .map(|v| v["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn deliveries_of(server: &TestServer, destination: &str) -> Vec<Value> {
    let reply = server
        .get(&format!("/deliveries?destination={destination}&limit=1000"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()["deliveries"].as_array().cloned().unwrap_or_default()
}

/// Every lead to the CRM as a HubSpot upsert with its bearer token (those
/// without an email skipped), hot leads to Slack, everything as the scored
/// contact to a third; secrets never in the API's answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_destination_gets_what_it_selects_in_its_own_shape() {
    let (crm, slack, all) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    let dir = DestinationsDir::new(&format!(
        r#"
[[destination]]
name = "crm"
url = "{crm}"
template = "hubspot"
auth = {{ bearer_env = "CRM_TOKEN" }}

[[destination]]
name = "hot-leads"
url = {{ env = "SLACK_URL" }}
template = "slack"
when = 'tier == "hot"'

[[destination]]
name = "everything"
url = "{all}"
"#,
        crm = crm.url(),
        all = all.url(),
    ));
    let slack_url = format!("{}/services/T000/B000/secret-path-xyz", slack.url());
    let server = start(
        &dir,
        &[("CRM_TOKEN", "crm-token-s3cr3t-0042"), ("SLACK_URL", &slack_url)],
    )
    .await;
    let mut contacts = generated(24, 11);
    // One without an email: skipped at the CRM, not dead.
    contacts[3].as_object_mut().unwrap().remove("email");
    let reply = server.webhook(&json!(contacts)).await;
    assert_eq!(reply["accepted"], 24, "{reply}");
    let results = reply["results"].as_array().unwrap();
    let hot: HashSet<String> = results
        .iter()
        .filter(|r| r["tier"] == "hot")
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        !hot.is_empty() && hot.len() < 24,
        "the generated contacts have some hot ones: {hot:?}"
    );

    // Everything, as the scored contact (SPEC 3).
    let received = all.wait_for(24, WAIT).await;
    let scored: Vec<Value> = received.iter().map(|r| r.json()).collect();
    assert_eq!(by_id(&scored).len(), 24);
    assert!(scored.iter().all(|s| s["type"] == "contact.scored"));

    // Hot ones only, as Slack messages, to the URL from the environment.
    let messages = eventually("the hot leads at Slack", WAIT, async || {
        let got = slack.accepted();
        (got.len() >= hot.len()).then_some(got)
    })
    .await;
    let slack_ids: HashSet<String> = messages.iter().map(|m| m.webhook_id()).collect();
    assert_eq!(slack_ids, hot);
    for message in &messages {
        let body = message.json();
        assert!(body["text"].as_str().unwrap().contains("hot"), "{body}");
        assert!(body["blocks"].as_array().is_some_and(|b| !b.is_empty()), "{body}");
    }

    // The CRM: a batch upsert keyed by email, with the bearer token.
    let upserts = eventually("23 upserts at the CRM", WAIT, async || {
        let got = crm.accepted();
        (got.len() >= 23).then_some(got)
    })
    .await;
    assert_eq!(upserts.len(), 23);
    for upsert in &upserts {
        assert_eq!(upsert.header("authorization"), "Bearer crm-token-s3cr3t-0042");
        let body = upsert.json();
        let input = &body["inputs"][0];
        assert_eq!(input["idProperty"], "email", "{body}");
        assert_eq!(input["id"], input["properties"]["email"], "{body}");
        let event = results
            .iter()
            .find(|r| r["id"] == upsert.webhook_id())
            .expect("an event of this webhook");
        assert_eq!(input["properties"]["leadscore_tier"], event["tier"], "{body}");
    }
    let skipped_id = results[3]["id"].as_str().unwrap();
    let crm_deliveries = eventually("the CRM's 24 deliveries done", WAIT, async || {
        let list = deliveries_of(&server, "crm").await;
        list.iter().all(|d| d["status"] != "pending").then_some(list)
    })
    .await;
    let skipped: Vec<&Value> = crm_deliveries
        .iter()
        .filter(|d| d["status"] == "skipped")
        .collect();
    assert_eq!(skipped.len(), 1, "{crm_deliveries:?}");
    assert_eq!(skipped[0]["id"], skipped_id);
    assert!(crm_deliveries.iter().all(|d| d["destination"] == "crm"));

    // The attempt log of one delivery.
    let some_id = upserts[0].webhook_id();
    let attempts = server
        .get(&format!("/deliveries/{some_id}/attempts?destination=crm"))
        .await;
    assert_eq!(attempts.status, 200, "{}", attempts.text);
    let attempts = attempts.json()["attempts"].as_array().cloned().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        (
            attempts[0]["destination"].as_str(),
            attempts[0]["status"].as_u64()
        ),
        (Some("crm"), Some(200))
    );
    let all_attempts = server
        .get(&format!("/deliveries/{some_id}/attempts"))
        .await
        .json();
    assert!(
        all_attempts["attempts"].as_array().unwrap().len() >= 2,
        "{all_attempts}"
    );

    // GET /destinations: the three, the secret URL as scheme and host only.
    let status = server.get("/destinations").await;
    assert_eq!(status.status, 200, "{}", status.text);
    let report = status.json();
    let names: Vec<&str> = report["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["crm", "hot-leads", "everything"]);
    let slack_status = &report["destinations"][1];
    assert_eq!(slack_status["url"], "http://127.0.0.1");
    assert_eq!(slack_status["template"], "slack");
    assert_eq!(slack_status["when"], "tier == \"hot\"");
    assert_eq!(slack_status["breaker"], "closed");
    assert_eq!(report["last_error"], Value::Null);
    // Secrets appear in no answer.
    for path in ["/destinations", "/deliveries?limit=1000", "/metrics"] {
        let text = server.get(path).await.text;
        for secret in ["crm-token-s3cr3t-0042", "secret-path-xyz"] {
            assert!(!text.contains(secret), "{path} shows {secret}");
        }
    }
    server.shutdown().await;
}

/// A destination answering `503` forever opens its breaker (one `failing`
/// alert, no retries used up while open) while another keeps receiving;
/// when it answers again, one `recovered` alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_destination_opens_its_breaker_alerts_and_recovers() {
    let (flaky, healthy, ops) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    flaky.answer_by_default(Answer::status(503));
    let dir = DestinationsDir::new(&format!(
        r#"
[[destination]]
name = "flaky"
url = "{flaky}"
breaker = {{ failures = 2, cooldown = "1s" }}
retry_schedule = "100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms"
alert = "ops"

[[destination]]
name = "healthy"
url = "{healthy}"

[[destination]]
name = "ops"
url = "{ops}"
when = 'type == "destination.failing"'
"#,
        flaky = flaky.url(),
        healthy = healthy.url(),
        ops = ops.url(),
    ));
    let server = start(&dir, &[]).await;
    let contacts: Vec<Value> = (0..5).map(|i| contact_with_id("qualified", 9000 + i)).collect();
    server.webhook(&json!(contacts)).await;
    healthy.wait_for(5, WAIT).await;
    let failing = eventually("a failing alert", WAIT, async || {
        ops.accepted()
            .into_iter()
            .map(|r| r.json())
            .find(|a| a["type"] == "destination.failing")
    })
    .await;
    assert_eq!(failing["destination"], "flaky");
    assert!(
        failing["reason"].as_str().unwrap().contains("breaker"),
        "{failing}"
    );
    let breaker = eventually("the breaker open", WAIT, async || {
        let report = server.get("/destinations").await.json();
        let state = report["destinations"][0]["breaker"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        (state != "closed").then_some(state)
    })
    .await;
    assert!(["open", "half-open"].contains(&breaker.as_str()), "{breaker}");
    // While open, the flaky receiver is asked at most once per cooldown.
    let before = flaky.requests().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = flaky.requests().len() - before;
    assert!(during <= 3, "{during} requests in 1.5 s with a 1 s cooldown");
    // The contacts never reached `ops` (its `when` selects none of them);
    // alerts bypass `when`.
    flaky.answer_by_default(Answer::status(200));
    eventually("the five delivered to flaky", WAIT, async || {
        let list = deliveries_of(&server, "flaky").await;
        (list.len() == 5 && list.iter().all(|d| d["status"] == "delivered")).then_some(())
    })
    .await;
    let alerts = eventually("a recovered alert", WAIT, async || {
        let alerts: Vec<Value> = ops.accepted().into_iter().map(|r| r.json()).collect();
        alerts
            .iter()
            .any(|a| a["type"] == "destination.recovered")
            .then_some(alerts)
    })
    .await;
    let kinds: Vec<&str> = alerts.iter().map(|a| a["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["destination.failing", "destination.recovered"],
        "one of each: {alerts:?}"
    );
    let flaky_deliveries = deliveries_of(&server, "flaky").await;
    assert!(
        flaky_deliveries.iter().all(|d| d["status"] == "delivered"),
        "{flaky_deliveries:?}"
    );
    server.shutdown().await;
}

/// A transform that fails makes its delivery dead with the error; the
/// fixed file reloads, the requeued delivery goes out in the new shape.
/// A broken destinations file keeps the last good set and shows where.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_transform_and_a_broken_file_reload() {
    let nurture = Receiver::start().await;
    let file = |url: &str| {
        format!(
            r#"
[[destination]]
name = "nurture"
url = "{url}"
transform = "nurture.rhai"
"#
        )
    };
    let dir = DestinationsDir::new(&file(&nurture.url()));
    dir.write("nurture.rhai", r#"throw "the list is not set up yet";"#);
    let server = start(&dir, &[]).await;
    let reply = server.webhook(&json!([contact_with_id("qualified", 7001)])).await;
    let id = reply["results"][0]["id"].as_str().unwrap().to_owned();
    let dead = server.wait_for_delivery(&id, "dead").await;
    assert!(
        dead["last_error"]
            .as_str()
            .unwrap()
            .contains("the list is not set up yet"),
        "{dead}"
    );
    let attempts = server.get(&format!("/deliveries/{id}/attempts")).await.json();
    assert_eq!(attempts["attempts"][0]["error"], "transform", "{attempts}");

    dir.write(
        "nurture.rhai",
        r#"#{ list: "nurture", email: event.contact.email, tier: event.tier }"#,
    );
    let requeued = eventually("the fixed transform in force", WAIT, async || {
        let reply = server
            .request(
                "POST",
                &format!("/deliveries/{id}/retry?destination=nurture"),
                None,
                &[],
            )
            .await;
        assert_eq!(reply.status, 202, "{}", reply.text);
        // The file is looked at twice a second: until the reload, the
        // requeued delivery dies again and is requeued again here.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let got = nurture.accepted();
        (!got.is_empty()).then_some(got)
    })
    .await;
    let body = requeued[0].json();
    assert_eq!(body["list"], "nurture", "{body}");
    assert_eq!(body["tier"], reply["results"][0]["tier"], "{body}");

    // A broken file: the last good set stays, the error shows where.
    dir.write(
        "destinations.toml",
        "[[destination]]\nname = \"nurture\"\nurl = 42\n",
    );
    let report = eventually("the broken file reported", WAIT, async || {
        let report = server.get("/destinations").await.json();
        (!report["last_error"].is_null()).then_some(report)
    })
    .await;
    let error = &report["last_error"];
    assert_eq!(
        (error["line"].as_u64(), error["column"].as_u64()),
        (Some(3), Some(7)),
        "{error}"
    );
    assert!(
        error["file"].as_str().unwrap().ends_with("destinations.toml"),
        "{error}"
    );
    assert_eq!(
        report["destinations"][0]["name"], "nurture",
        "still in force: {report}"
    );
    // A good file again: a new destination appears, the error is gone.
    let second = Receiver::start().await;
    dir.write(
        "destinations.toml",
        &format!(
            "{}\n[[destination]]\nname = \"second\"\nurl = \"{}\"\n",
            file(&nurture.url()),
            second.url()
        ),
    );
    eventually("the second destination", WAIT, async || {
        let report = server.get("/destinations").await.json();
        (report["destinations"].as_array().map_or(0, Vec::len) == 2 && report["last_error"].is_null())
            .then_some(())
    })
    .await;
    server.webhook(&json!([contact_with_id("qualified", 7002)])).await;
    second.wait_for(1, WAIT).await;
    server.shutdown().await;
}

/// SPEC 10 "Contact timeline": a contact that arrives POTENTIAL, then
/// QUALIFIED, with its events in order and each event's deliveries per
/// destination with their attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_of_a_contact_that_becomes_qualified() {
    let (crm, chat) = (Receiver::start().await, Receiver::start().await);
    let dir = DestinationsDir::new(&format!(
        "[[destination]]\nname = \"crm\"\nurl = \"{}\"\n\n[[destination]]\nname = \"chat\"\nurl = \"{}\"\n",
        crm.url(),
        chat.url()
    ));
    let server = start(&dir, &[]).await;
    let first = server.webhook(&json!([contact_with_id("potential", 555)])).await;
    let second = server.webhook(&json!([contact_with_id("qualified", 555)])).await;
    crm.wait_for(2, WAIT).await;
    chat.wait_for(2, WAIT).await;
    let timeline = eventually("both events delivered twice", WAIT, async || {
        let reply = server.get("/contacts/555").await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let timeline = reply.json();
        let delivered = timeline["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["status"] == "delivered" && d["attempts"].as_array().unwrap().len() == 1)
            .count();
        (delivered == 4).then_some(timeline)
    })
    .await;
    assert_eq!(timeline["contact_id"], 555, "{timeline}");
    let events = timeline["events"].as_array().unwrap();
    let ids: Vec<&Value> = events.iter().map(|e| &e["id"]).collect();
    assert_eq!(ids, [&first["results"][0]["id"], &second["results"][0]["id"]]);
    assert_eq!(events[0]["tier"], first["results"][0]["tier"]);
    assert_eq!(events[1]["tier"], second["results"][0]["tier"]);
    assert_eq!(events[0]["type"], "contact.scored");
    assert_eq!(timeline["first_seen"], events[0]["received_at"]);
    let deliveries: Vec<(String, String)> = timeline["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_owned(),
                d["destination"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let (a, b) = (ids[0].as_str().unwrap(), ids[1].as_str().unwrap());
    assert_eq!(
        deliveries,
        [
            (a.into(), "chat".into()),
            (a.into(), "crm".into()),
            (b.into(), "chat".into()),
            (b.into(), "crm".into())
        ]
    );
    assert_eq!(timeline["deliveries"][0]["attempts"][0]["status"], 200);
    assert_eq!(
        (timeline["calls"].clone(), timeline["outcomes"].clone()),
        (json!([]), json!([]))
    );
    // The string "555" is another contact; an unknown one is 404.
    server.get("/contacts/%22555%22").await.assert_error(404);
    server.get("/contacts/556").await.assert_error(404);
    server.shutdown().await;
}

/// SPEC 10 "Rate limit": `rate = "5/1s"` starts at most 5 requests in any
/// second, every contact is delivered, and a `429` with `Retry-After: 2`
/// pauses the whole destination for 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_destination_keeps_its_rate_and_pauses_on_429() {
    let crm = Receiver::start().await;
    crm.answer_next([Answer {
        retry_after: Some("2".into()),
        ..Answer::status(429)
    }]);
    let dir = DestinationsDir::new(&format!(
        "[[destination]]\nname = \"crm\"\nurl = \"{}\"\nrate = \"5/1s\"\nretry_schedule = \"100ms,100ms,100ms\"\n",
        crm.url()
    ));
    let server = start(&dir, &[]).await;
    let contacts: Vec<Value> = (0..12).map(|i| contact_with_id("qualified", 8000 + i)).collect();
    server.webhook(&json!(contacts)).await;
    eventually("all 12 delivered", WAIT, async || {
        let list = deliveries_of(&server, "crm").await;
        (list.len() == 12 && list.iter().all(|d| d["status"] == "delivered")).then_some(())
    })
    .await;
    let requests = crm.requests();
    let times: Vec<Duration> = {
        let first = requests[0].at;
        requests
            .iter()
            .map(|r| r.at.duration_since(first).unwrap_or_default())
            .collect()
    };
    // At most 5 in any window a little under a second (arrival, not start).
    for (i, start) in times.iter().enumerate() {
        let within = times[i..]
            .iter()
            .take_while(|t| **t - *start < Duration::from_millis(900))
            .count();
        assert!(
            within <= 5,
            "{within} requests within 900 ms from {start:?}: {times:?}"
        );
    }
    // The 429 paused the destination: nothing started in the next 2 s but
    // what was already in flight (answered within a few milliseconds).
    let paused_at = times[requests.iter().position(|r| r.answered == 429).unwrap()];
    let during = times
        .iter()
        .filter(|t| {
            **t > paused_at + Duration::from_millis(300) && **t < paused_at + Duration::from_millis(1800)
        })
        .count();
    assert_eq!(during, 0, "requests during the pause: {times:?}");
    server.shutdown().await;
}

/// An OAuth2 token endpoint on loopback: each `POST` gets a new token
/// (`tok-1`, `tok-2`, …) valid for `expires_in` seconds; it records the
/// forms it was sent.
struct TokenEndpoint {
    url: String,
    forms: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl TokenEndpoint {
    async fn start(expires_in: u64) -> Self {
        use warp::Filter as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let forms = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let seen = forms.clone();
        let filter = warp::post()
            .and(warp::body::bytes())
            .map(move |body: bytes::Bytes| {
                let mut forms = seen.lock().unwrap();
                forms.push(String::from_utf8_lossy(&body).into_owned());
                warp::reply::json(&json!({
                    "access_token": format!("tok-{}", forms.len()),
                    "token_type": "Bearer",
                    "expires_in": expires_in,
                }))
            });
        let task = tokio::spawn(warp::serve(filter).incoming(listener).run());
        Self {
            url: format!("http://{addr}/token"),
            forms,
            _task: task,
        }
    }

    fn forms(&self) -> Vec<String> {
        self.forms.lock().unwrap().clone()
    }
}

/// SPEC 10 "Credentials": the OAuth2 client-credentials grant. The token is
/// fetched once and reused; a `401` fetches a new one and tries once more;
/// the client secret never shows in an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_tokens_are_fetched_reused_and_renewed_after_a_401() {
    let tokens = TokenEndpoint::start(3600).await;
    let crm = Receiver::start().await;
    let dir = DestinationsDir::new(&format!(
        "[[destination]]\nname = \"crm\"\nurl = \"{}\"\nconcurrency = 1\n\
         auth = {{ oauth2 = {{ token_url = \"{}\", client_id = \"leadscore\", client_secret_env = \"CRM_SECRET\", scope = \"contacts\" }} }}\n",
        crm.url(),
        tokens.url
    ));
    let server = start(&dir, &[("CRM_SECRET", "client-s3cret-77")]).await;
    server.webhook(&json!([contact_with_id("qualified", 6001)])).await;
    crm.wait_for(1, WAIT).await;
    server.webhook(&json!([contact_with_id("qualified", 6002)])).await;
    crm.wait_for(2, WAIT).await;
    let forms = tokens.forms();
    assert_eq!(forms.len(), 1, "one token for both: {forms:?}");
    assert!(forms[0].contains("grant_type=client_credentials"), "{forms:?}");
    assert!(forms[0].contains("client_id=leadscore"), "{forms:?}");
    assert!(forms[0].contains("scope=contacts"), "{forms:?}");
    let sent: Vec<String> = crm
        .requests()
        .iter()
        .map(|r| r.header("authorization").to_owned())
        .collect();
    assert_eq!(sent, ["Bearer tok-1", "Bearer tok-1"]);
    // The token is refused: a new one, and the same request again with it.
    crm.answer_next([Answer::status(401)]);
    server.webhook(&json!([contact_with_id("qualified", 6003)])).await;
    crm.wait_for(4, WAIT).await;
    let requests = crm.requests();
    let last: Vec<(String, u16)> = requests[2..]
        .iter()
        .map(|r| (r.header("authorization").to_owned(), r.answered))
        .collect();
    assert_eq!(
        last,
        [("Bearer tok-1".to_owned(), 401), ("Bearer tok-2".to_owned(), 200)]
    );
    assert_eq!(
        requests[2].webhook_id(),
        requests[3].webhook_id(),
        "the same delivery"
    );
    assert_eq!(tokens.forms().len(), 2);
    for path in ["/destinations", "/deliveries?limit=1000", "/metrics"] {
        let text = server.get(path).await.text;
        assert!(
            !text.contains("client-s3cret-77") && !text.contains("tok-"),
            "{path}: {text}"
        );
    }
    server.shutdown().await;
}
