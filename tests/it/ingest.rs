//! `POST /webhooks/iclosed`, `POST /score` and the service endpoints (SPEC
//! 1, 3 and 4): answers, refusals with their statuses, admin token, metrics
//! and readiness.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{
    Options, RulesDir, TestServer, TestStore, WAIT, contact, contact_with_id, eventually, fixture,
};

/// Checks one line of an ingest answer.
#[track_caller]
fn assert_result(
    line: &Value,
    contact_id: Value,
    score: i64,
    tier: &str,
    disqualified: bool,
    duplicate: bool,
) {
    assert_eq!(line["contact_id"], contact_id, "{line}");
    let id = line["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no event id: {line}"));
    assert!(id.starts_with("evt_") && id.len() > 4, "event id {id:?}");
    assert_eq!(line["score"], json!(score), "{line}");
    assert_eq!(line["tier"], tier, "{line}");
    assert_eq!(line["disqualified"], disqualified, "{line}");
    assert_eq!(line["duplicate"], duplicate, "{line}");
    let keys: Vec<&str> = line
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys.len(),
        6,
        "a result has contact_id, id, score, tier, disqualified, duplicate: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn array_body_is_scored_in_input_order() {
    let server = TestServer::default().await;
    let body = fixture("batch");
    let reply = server.webhook(&body).await;
    assert_eq!(reply["accepted"], 3, "{reply}");
    assert_eq!(reply["duplicates"], 0, "{reply}");
    let results = reply["results"].as_array().expect("results");
    assert_eq!(results.len(), 3, "{reply}");
    // Qualified (clamped to the tiers' max of 100), disqualified, potential.
    assert_result(&results[0], json!(48213), 100, "hot", false, false);
    assert_result(&results[1], json!(48214), 0, "disqualified", true, false);
    assert_result(&results[2], json!(48215), 0, "cold", false, false);
    let ids: std::collections::HashSet<&str> = results.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "every contact is its own event: {reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_object_body_is_accepted() {
    let server = TestServer::default().await;
    let body = fixture("single-object");
    assert!(body.is_object(), "the fixture is a single object");
    let reply = server.webhook(&body).await;
    assert_eq!(reply["accepted"], 1, "{reply}");
    assert_eq!(reply["duplicates"], 0, "{reply}");
    assert_eq!(reply["results"].as_array().map(Vec::len), Some(1), "{reply}");
    assert_result(&reply["results"][0], json!(48216), 100, "hot", false, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_ids_keep_their_json_type() {
    let server = TestServer::default().await;
    let body = json!([
        contact_with_id("potential", "crm-48215"),
        contact_with_id("qualified", 7),
        contact_with_id("disqualified", "0042"),
    ]);
    let reply = server.webhook(&body).await;
    assert_eq!(reply["accepted"], 3, "{reply}");
    let results = reply["results"].as_array().expect("results");
    assert_result(&results[0], json!("crm-48215"), 0, "cold", false, false);
    assert_result(&results[1], json!(7), 100, "hot", false, false);
    assert_result(&results[2], json!("0042"), 0, "disqualified", true, false);

    // Downstream and the deliveries list keep the type too.
    let forwarded = server.receiver().wait_for(3, WAIT).await;
    let mut ids: Vec<Value> = forwarded.iter().map(|r| r.contact_id()).collect();
    ids.sort_by_key(|v| v.to_string());
    assert_eq!(ids, vec![json!("0042"), json!("crm-48215"), json!(7)]);
    let listed: Vec<Value> = server
        .deliveries(None)
        .await
        .into_iter()
        .map(|d| d["contact_id"].clone())
        .collect();
    assert!(
        listed.contains(&json!("crm-48215")) && listed.contains(&json!(7)),
        "{listed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_array_accepts_nothing() {
    let server = TestServer::default().await;
    let reply = server.webhook(&json!([])).await;
    assert_eq!(reply, json!({"accepted": 0, "duplicates": 0, "results": []}));
    assert!(server.deliveries(None).await.is_empty());
}

/// Request headers of a test case.
type Headers = Vec<(&'static str, &'static str)>;

/// A contact whose body nests arrays and objects `depth` levels deep in all.
fn nested_contact(depth: usize) -> String {
    // The contact object is level 1; each `[` adds one.
    format!(
        r#"{{"id": 1, "deep": {}{}}}"#,
        "[".repeat(depth - 1),
        "]".repeat(depth - 1)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_bodies_answer_json_errors_and_store_nothing() {
    let server = TestServer::start(Options {
        max_body: 4096,
        max_contacts: 3,
        ..Options::default()
    })
    .await;
    let json_type = ("content-type", "application/json");
    let small = contact("potential").to_string();
    let cases: Vec<(&str, u16, Vec<u8>, Headers)> = vec![
        ("invalid JSON", 400, br#"[{"id": 1,"#.to_vec(), vec![json_type]),
        (
            "trailing garbage",
            400,
            br#"{"id": 1} x"#.to_vec(),
            vec![json_type],
        ),
        (
            "invalid UTF-8",
            400,
            b"[{\"id\": 1, \"name\": \"\xff\xfe\"}]".to_vec(),
            vec![json_type],
        ),
        ("a number", 400, b"42".to_vec(), vec![json_type]),
        ("a string", 400, br#""hello""#.to_vec(), vec![json_type]),
        ("null", 400, b"null".to_vec(), vec![json_type]),
        ("an array of numbers", 400, b"[1, 2]".to_vec(), vec![json_type]),
        (
            "an array with one non-object",
            400,
            br#"[{"id": 1}, "x"]"#.to_vec(),
            vec![json_type],
        ),
        (
            "no id",
            400,
            br#"[{"email": "a@example.com"}]"#.to_vec(),
            vec![json_type],
        ),
        ("id null", 400, br#"{"id": null}"#.to_vec(), vec![json_type]),
        ("id true", 400, br#"{"id": true}"#.to_vec(), vec![json_type]),
        (
            "id an object",
            400,
            br#"{"id": {"n": 1}}"#.to_vec(),
            vec![json_type],
        ),
        ("id an array", 400, br#"{"id": [1]}"#.to_vec(), vec![json_type]),
        (
            "a good contact then one without id",
            400,
            br#"[{"id": 1}, {"name": "x"}]"#.to_vec(),
            vec![json_type],
        ),
        (
            "nesting 129 levels",
            400,
            nested_contact(129).into_bytes(),
            vec![json_type],
        ),
        (
            "body over --max-body",
            413,
            json!([{"id": 1, "notes": "x".repeat(5000)}])
                .to_string()
                .into_bytes(),
            vec![json_type],
        ),
        (
            "more than --max-contacts contacts",
            413,
            json!([{"id": 1}, {"id": 2}, {"id": 3}, {"id": 4}])
                .to_string()
                .into_bytes(),
            vec![json_type],
        ),
        (
            "text/plain",
            415,
            small.clone().into_bytes(),
            vec![("content-type", "text/plain")],
        ),
        (
            "a form",
            415,
            small.clone().into_bytes(),
            vec![("content-type", "application/x-www-form-urlencoded")],
        ),
        (
            "gzip encoding",
            415,
            small.clone().into_bytes(),
            vec![json_type, ("content-encoding", "gzip")],
        ),
    ];
    for (what, status, body, headers) in cases {
        let reply = server
            .request("POST", "/webhooks/iclosed", Some(body), &headers)
            .await;
        assert_eq!(reply.status, status, "{what}: {}", reply.text);
        let message = reply.assert_error(status);
        println!("{what}: {status} {message}");
    }
    // The same checks guard the dry run.
    server
        .request("POST", "/score", Some(br#"{"id": null}"#.to_vec()), &[json_type])
        .await
        .assert_error(400);
    server
        .request(
            "POST",
            "/score",
            Some(small.into_bytes()),
            &[("content-type", "text/plain")],
        )
        .await
        .assert_error(415);
    // Nothing of the refused bodies was stored or forwarded.
    assert!(server.deliveries(None).await.is_empty());
    assert!(server.receiver().requests().is_empty());
    // At the limits: accepted.
    let reply = server
        .webhook(&json!([{"id": "a"}, {"id": "b"}, {"id": "c"}]))
        .await;
    assert_eq!(reply["accepted"], 3, "--max-contacts 3 takes 3: {reply}");
    // A contact of a refused batch is new when it comes again.
    let reply = server.webhook(&json!([{"id": 1}])).await;
    assert_eq!(reply["accepted"], 1, "{reply}");
    assert_eq!(reply["results"][0]["duplicate"], false, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nesting_of_128_levels_is_accepted() {
    let server = TestServer::default().await;
    let reply = server
        .request(
            "POST",
            "/webhooks/iclosed",
            Some(nested_contact(128).into_bytes()),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["accepted"], 1, "{}", reply.text);
    // Inside an array, the array is one more level.
    let in_array = format!("[{}]", nested_contact(128));
    let reply = server
        .request(
            "POST",
            "/webhooks/iclosed",
            Some(in_array.into_bytes()),
            &[("content-type", "application/json")],
        )
        .await;
    reply.assert_error(400);
}

/// Sends a raw HTTP/1.1 request and returns the status and body of the answer.
async fn raw_http(addr: std::net::SocketAddr, request: Vec<u8>) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The server may answer (and close) before it read everything.
    let _ = stream.write_all(&request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_max_body_is_refused() {
    let server = TestServer::start(Options {
        max_body: 4096,
        ..Options::default()
    })
    .await;
    // No Content-Length: the limit must hold while the body streams in.
    let chunk = format!(r#"[{{"id": 1, "notes": "{}"}}]"#, "y".repeat(6000));
    let mut request = format!(
        "POST /webhooks/iclosed HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        server.addr
    )
    .into_bytes();
    request.extend_from_slice(format!("{:x}\r\n{chunk}\r\n0\r\n\r\n", chunk.len()).as_bytes());
    let (status, body) = raw_http(server.addr, request).await;
    assert_eq!(status, 413, "{body}");
    let body: Value = serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    assert!(body["error"].is_string(), "{body}");
    assert!(server.deliveries(None).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_content_types_and_missing_content_type_are_accepted() {
    let server = TestServer::default().await;
    let cases: Vec<(i64, Vec<(&str, &str)>)> = vec![
        (1, vec![]),
        (2, vec![("content-type", "application/json; charset=utf-8")]),
        (3, vec![("content-type", "application/vnd.x+json; charset=utf-8")]),
        (4, vec![("content-type", "Application/JSON")]),
        (
            5,
            vec![
                ("content-type", "application/json"),
                ("content-encoding", "identity"),
            ],
        ),
    ];
    for (id, headers) in cases {
        let body = json!([{"id": id}]).to_string().into_bytes();
        let reply = server
            .request("POST", "/webhooks/iclosed", Some(body), &headers)
            .await;
        assert_eq!(reply.status, 200, "{headers:?}: {}", reply.text);
        assert_eq!(reply.json()["accepted"], 1, "{headers:?}: {}", reply.text);
        assert_eq!(reply.json()["results"][0]["contact_id"], id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_methods_answer_json_errors() {
    let server = TestServer::default().await;
    server.get("/nope").await.assert_error(404);
    server
        .request("POST", "/webhooks/other", Some(b"{}".to_vec()), &[])
        .await
        .assert_error(404);
    let reply = server.get("/webhooks/iclosed").await;
    assert!(
        reply.status == 405 || reply.status == 404,
        "GET on the webhook: {} {}",
        reply.status,
        reply.text
    );
    reply.assert_error(reply.status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_scores_without_storing_or_forwarding() {
    let server = TestServer::default().await;
    let body = fixture("batch");
    let reply = server.post_json("/score", &body, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let answer = reply.json();
    assert_eq!(
        answer.as_object().map(|o| o.len()),
        Some(1),
        "only results: {answer}"
    );
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    let expected = [
        (48213, 100, "hot", false),
        (48214, 0, "disqualified", true),
        (48215, 0, "cold", false),
    ];
    let rules_version = server.rules_status().await["rules_version"].clone();
    for ((scored, (id, score, tier, disqualified)), sent) in
        results.iter().zip(expected).zip(body.as_array().unwrap())
    {
        assert_eq!(scored["type"], "contact.scored", "{scored}");
        assert_eq!(scored["id"], Value::Null, "a dry run has no event id: {scored}");
        assert_eq!(scored["contact_id"], id);
        assert_eq!(scored["score"], score);
        assert_eq!(scored["tier"], tier);
        assert_eq!(scored["disqualified"], disqualified);
        assert_eq!(scored["rules_version"], rules_version);
        assert_eq!(&scored["contact"], sent, "the contact as received");
        for field in ["reasons", "disqualifications", "tags", "errors"] {
            assert!(scored[field].is_array(), "{field}: {scored}");
        }
        assert!(scored["scored_at"].is_string(), "{scored}");
    }
    assert_eq!(
        results[0]["reasons"][2],
        json!({"rule": "30-budget.rhai", "points": 30, "reason": "Budget $10k+/month"})
    );
    assert_eq!(
        results[0]["tags"],
        json!(["decision-maker", "b2b", "partner", "call-booked"])
    );
    assert_eq!(
        results[1]["disqualifications"],
        json!([{"rule": "80-disqualify.rhai", "reason": "Disqualified in iClosed: Budget too low"}])
    );
    // Nothing stored: no delivery, and the same body is new to ingest.
    assert!(server.deliveries(None).await.is_empty());
    let reply = server.webhook(&body).await;
    assert_eq!(reply["accepted"], 3, "{reply}");
    assert_eq!(reply["duplicates"], 0, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_rule_is_cut_off_and_the_rest_still_scores() {
    let rules = RulesDir::bench();
    rules.write("96-loop.rhai", "loop { }\n");
    let server = TestServer::start(Options {
        rules: Some(rules),
        // SPEC defaults: 1,000,000 operations per rule, 100ms per contact.
        rule_max_operations: 1_000_000,
        rule_timeout: Duration::from_millis(100),
        ..Options::default()
    })
    .await;
    let qualified = contact("qualified");
    let (scored, health) = tokio::join!(server.dry_run(&qualified), server.get("/healthz"));
    assert_eq!(health.status, 200, "other requests are answered meanwhile");
    let errors = scored["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{scored}");
    assert_eq!(errors[0]["rule"], "96-loop.rhai", "{scored}");
    assert!(
        errors[0]["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{scored}"
    );
    // The rules before it still count.
    assert_eq!(scored["score"], 100, "{scored}");
    assert_eq!(scored["tier"], "hot", "{scored}");
    assert_eq!(scored["reasons"].as_array().map(Vec::len), Some(8), "{scored}");

    // Ingest stores and forwards it, errors included.
    let reply = server.webhook(&json!([qualified])).await;
    assert_eq!(reply["accepted"], 1, "{reply}");
    assert_eq!(reply["results"][0]["tier"], "hot", "{reply}");
    let forwarded = server.receiver().wait_for(1, WAIT).await;
    assert_eq!(forwarded[0].json()["errors"][0]["rule"], "96-loop.rhai");
    assert_eq!(server.get("/healthz").await.status, 200);
}

/// A clean stop empties SQLite's write-ahead log into the database file, so
/// that the file alone, copied without its log, holds every acknowledged
/// contact (the checkpointer copies the log only once a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_leaves_every_contact_in_the_database_file() {
    let server = TestServer::start(Options {
        store: Some(TestStore::sqlite()),
        ..Options::default()
    })
    .await;
    // Held past the stop: the server's copy of it removes the folder.
    let store = server.store().clone();
    let path = store.sqlite_path().expect("a SQLite store");
    let log = path.with_extension("db-wal");
    let body: Vec<Value> = (0..50).map(|i| contact_with_id("qualified", 7000 + i)).collect();
    let reply = server.webhook(&json!(body)).await;
    assert_eq!(reply["accepted"], 50, "{reply}");
    let log_size = || std::fs::metadata(&log).map_or(0, |m| m.len());
    assert!(log_size() > 0, "the commit went to the log");
    server.shutdown().await;
    assert!(path.exists(), "the store outlives the server");
    assert_eq!(log_size(), 0, "the log is emptied into the file at the stop");
    let copy = tempfile::tempdir().expect("a temporary folder");
    let alone = copy.path().join("alone.db");
    std::fs::copy(&path, &alone).expect("copy the database file alone");
    let conn = rusqlite::Connection::open(&alone).expect("open the copy");
    let events: i64 = conn
        .query_row("SELECT COUNT(*) FROM events", [], |row| row.get(0))
        .expect("count the events of the copy");
    assert_eq!(events, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_that_cannot_take_the_write_answers_503() {
    let server = TestServer::default().await;
    let Some(path) = server.store().sqlite_path() else {
        eprintln!("skipped: locking the store from outside is only done for SQLite");
        return;
    };
    assert_eq!(server.get("/readyz").await.status, 200);
    let body = json!([contact_with_id("qualified", 503)]);

    // Another connection holds SQLite's write lock: the server's writes
    // wait for its busy timeout, then fail.
    let blocker = rusqlite::Connection::open(&path).expect("open the store file");
    blocker
        .busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    blocker
        .execute_batch("BEGIN EXCLUSIVE")
        .expect("take the write lock");
    let (webhook, ready) = tokio::join!(
        server.post_json("/webhooks/iclosed", &body, &[]),
        server.get("/readyz")
    );
    let message = webhook.assert_error(503);
    println!("webhook while locked: {message}");
    ready.assert_error(503);
    blocker.execute_batch("ROLLBACK").expect("release the lock");
    drop(blocker);

    eventually("readyz to answer 200 again", WAIT, async || {
        (server.get("/readyz").await.status == 200).then_some(())
    })
    .await;
    // Nothing was half-accepted: the same body is new now.
    assert!(server.deliveries(None).await.is_empty());
    let reply = server.webhook(&body).await;
    assert_eq!(reply["accepted"], 1, "{reply}");
    assert_eq!(reply["results"][0]["duplicate"], false, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    let server = TestServer::default().await;
    let health = server.get("/healthz").await;
    assert_eq!(health.status, 200, "{}", health.text);
    let ready = server.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    let openapi = server.get("/openapi.json").await;
    assert_eq!(openapi.status, 200, "{}", openapi.text);
    assert!(
        openapi.json()["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with('3')),
        "an OpenAPI 3 document"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_need_the_admin_token() {
    let token = "adm-9f2c";
    let server = TestServer::start(Options {
        admin_token: Some(token.into()),
        ..Options::default()
    })
    .await;
    let bearer = format!("Bearer {token}");
    let body = contact("potential").to_string().into_bytes();
    let guarded: [(&str, &str); 6] = [
        ("GET", "/rules"),
        ("GET", "/deliveries"),
        ("GET", "/deliveries?status=dead"),
        ("POST", "/score"),
        ("POST", "/deliveries/retry-dead"),
        ("POST", "/deliveries/evt_unknown/retry"),
    ];
    for (method, path) in guarded {
        for auth in ["", "Bearer wrong", "Basic YWRtOjlmMmM=", token] {
            let mut headers = vec![("content-type", "application/json")];
            // An explicit (possibly empty) Authorization keeps the harness
            // from adding the right one.
            headers.push(("authorization", auth));
            let reply = server.request(method, path, Some(body.clone()), &headers).await;
            reply.assert_error(401);
        }
        let reply = server
            .request(
                method,
                path,
                Some(body.clone()),
                &[("content-type", "application/json"), ("authorization", &bearer)],
            )
            .await;
        assert_ne!(
            reply.status, 401,
            "{method} {path} with the token: {}",
            reply.text
        );
        assert!(
            reply.status < 500,
            "{method} {path}: {} {}",
            reply.status,
            reply.text
        );
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        let reply = server.request("GET", path, None, &[("authorization", "")]).await;
        assert_eq!(reply.status, 200, "{path} stays open: {}", reply.text);
    }
    // The webhook is not an admin endpoint (no webhook secret: open).
    let reply = server
        .request(
            "POST",
            "/webhooks/iclosed",
            Some(body),
            &[("content-type", "application/json"), ("authorization", "")],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_token_is_required_when_configured() {
    let server = TestServer::start(Options {
        webhook_token: Some("tok-123".into()),
        ..Options::default()
    })
    .await;
    let body = json!([contact_with_id("potential", 1)]);
    server
        .post_json("/webhooks/iclosed", &body, &[])
        .await
        .assert_error(401);
    server
        .post_json("/webhooks/iclosed", &body, &[("authorization", "Bearer nope")])
        .await
        .assert_error(401);
    server
        .post_json("/webhooks/iclosed?token=nope", &body, &[])
        .await
        .assert_error(401);
    assert!(
        server.deliveries(None).await.is_empty(),
        "nothing stored for a refused sender"
    );
    let accepted = [
        ("/webhooks/iclosed", ("authorization", "Bearer tok-123")),
        ("/webhooks/iclosed", ("x-webhook-token", "tok-123")),
        ("/webhooks/iclosed?token=tok-123", ("x-unrelated", "1")),
    ];
    for (n, (path, header)) in accepted.into_iter().enumerate() {
        let body = json!([contact_with_id("potential", 10 + n)]);
        let reply = server.post_json(path, &body, &[header]).await;
        assert_eq!(reply.status, 200, "{path} {header:?}: {}", reply.text);
        assert_eq!(reply.json()["accepted"], 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_and_contacts() {
    let server = TestServer::default().await;
    server.webhook(&fixture("batch")).await;
    let text = eventually("the ingest to show in /metrics", WAIT, async || {
        let reply = server.get("/metrics").await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        (reply.text.contains("leadscore_http_requests_total")
            && reply.text.contains("leadscore_contacts_received_total"))
        .then_some(reply.text)
    })
    .await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("leadscore_http_requests_total")
                && l.contains(r#"route="/webhooks/iclosed""#)
                && l.contains(r#"status="200""#)),
        "{text}"
    );
    let received: f64 = text
        .lines()
        .find(|l| l.starts_with("leadscore_contacts_received_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no contacts counter: {text}"));
    assert!(received >= 3.0, "{received}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn float_scores_stay_floats() {
    let rules = RulesDir::bench();
    rules.write(
        "85-half.rhai",
        "if contact.status == \"POTENTIAL\" { add(2.5, \"Half\"); add(0.5, \"Half again\"); }\n",
    );
    let server = TestServer::start(Options {
        rules: Some(rules),
        ..Options::default()
    })
    .await;
    let body = json!([contact("potential"), contact("qualified")]);
    let reply = server.webhook(&body).await;
    let results = &reply["results"];
    // 2.5 + 0.5: a float contribution makes the score a float, 3.0.
    assert!(results[0]["score"].is_f64(), "{reply}");
    assert_eq!(results[0]["score"], json!(3.0), "{reply}");
    assert!(
        results[1]["score"].is_i64() || results[1]["score"].is_u64(),
        "{reply}"
    );
    assert_eq!(results[1]["score"], 100, "{reply}");
    // The first event's values, as stored, answer a duplicate.
    let again = server.webhook(&body).await;
    assert_eq!(again["results"][0]["duplicate"], true, "{again}");
    assert!(again["results"][0]["score"].is_f64(), "{again}");
    assert_eq!(again["results"][0]["score"], json!(3.0), "{again}");
    assert!(again["results"][1]["score"].is_u64() || again["results"][1]["score"].is_i64());
    let forwarded = server.receiver().wait_for(2, WAIT).await;
    let potential = forwarded
        .iter()
        .find(|r| r.contact_id() == 48215)
        .expect("the potential contact")
        .json();
    assert!(potential["score"].is_f64(), "{potential}");
    assert_eq!(potential["reasons"][0]["points"], json!(2.5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_time_budget_stops_a_rule_the_operation_limit_does_not() {
    let rules = RulesDir::bench();
    rules.write("96-loop.rhai", "let n = 0;\nloop { n += 1; }\n");
    let server = TestServer::start(Options {
        rules: Some(rules),
        rule_max_operations: u64::MAX,
        rule_timeout: Duration::from_millis(100),
        ..Options::default()
    })
    .await;
    let scored = server.dry_run(&contact("qualified")).await;
    let errors = scored["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{scored}");
    assert_eq!(errors[0]["rule"], "96-loop.rhai", "{scored}");
    assert_eq!(scored["score"], 100, "{scored}");
    assert_eq!(scored["tier"], "hot", "{scored}");
}
