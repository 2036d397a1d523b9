//! Forwarding and duplicates (SPEC 3, 4.1 and 5): what downstream receives,
//! retries, dead deliveries and requeueing, order per contact, and
//! duplicate detection across restarts.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use leadscore::signature::WebhookSecret;
use serde_json::{Map, Value, json};

use crate::support::{
    Answer, FORWARD_SECRET, Options, TestServer, WAIT, contact, contact_with_id, eventually, ms, rfc3339_ms,
    run_binary, unix_seconds_now,
};

/// The fields of a listed delivery (SPEC 4).
/// SPEC 4 and 10 (`destination`, `default` for `--forward-url`).
const DELIVERY_FIELDS: [&str; 10] = [
    "id",
    "destination",
    "contact_id",
    "status",
    "attempts",
    "last_status",
    "last_error",
    "next_attempt_at",
    "created_at",
    "delivered_at",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_receives_the_signed_scored_contact() {
    let server = TestServer::start(Options {
        forward_secret: Some(FORWARD_SECRET.into()),
        forward_headers: vec![
            ("Authorization".into(), "Bearer crm-token-1".into()),
            ("X-Team".into(), "growth".into()),
        ],
        ..Options::default()
    })
    .await;
    let sent = contact("qualified");
    let reply = server.webhook(&json!([sent])).await;
    let event_id = reply["results"][0]["id"]
        .as_str()
        .expect("an event id")
        .to_owned();

    let forwarded = server.receiver().wait_for(1, WAIT).await;
    let request = &forwarded[0];
    assert_eq!(request.path, "/hooks/scored");
    let body = request.json();
    let keys: HashSet<&str> = body
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        crate::support::spec::SCORED_FIELDS
            .into_iter()
            .collect::<HashSet<_>>(),
        "{body}"
    );
    assert_eq!(body["type"], "contact.scored");
    assert_eq!(body["id"], event_id.as_str());
    assert_eq!(request.webhook_id(), event_id, "webhook-id is the event id");
    assert_eq!(body["contact_id"], 48213);
    assert_eq!(body["score"], 100);
    assert_eq!(body["tier"], "hot");
    assert_eq!(body["disqualified"], false);
    assert_eq!(body["reasons"].as_array().map(Vec::len), Some(8), "{body}");
    assert_eq!(
        body["reasons"][0],
        json!({"rule": "10-role.rhai", "points": 20, "reason": "Decision maker"})
    );
    assert_eq!(body["disqualifications"], json!([]));
    assert_eq!(
        body["tags"],
        json!(["decision-maker", "b2b", "partner", "call-booked"])
    );
    assert_eq!(body["errors"], json!([]));
    assert_eq!(
        body["rules_version"],
        server.rules_status().await["rules_version"]
    );
    let scored_at = body["scored_at"].as_str().expect("scored_at");
    rfc3339_ms(scored_at);
    assert!(
        scored_at.len() == 24 && scored_at.ends_with('Z'),
        "UTC with milliseconds, like 2026-11-20T15:31:02.511Z: {scored_at}"
    );
    assert_eq!(body["contact"], sent, "the contact as received");

    assert_eq!(request.header("content-type"), "application/json");
    let timestamp = request.header("webhook-timestamp");
    let seconds: u64 = timestamp.parse().expect("unix seconds");
    assert!(
        seconds.abs_diff(unix_seconds_now()) < 600,
        "webhook-timestamp {seconds} is the time of the attempt"
    );
    let secret = WebhookSecret::parse(FORWARD_SECRET).expect("the secret");
    let signature = request.header("webhook-signature");
    assert!(signature.starts_with("v1,"), "{signature}");
    assert!(
        secret.verify(&event_id, timestamp, &request.body, signature),
        "the signature verifies: {signature}"
    );
    assert!(
        !secret.verify(&event_id, timestamp, b"{}", signature),
        "and only for this body"
    );
    assert_eq!(request.header("authorization"), "Bearer crm-token-1");
    assert_eq!(request.header("x-team"), "growth");

    let delivery = server.wait_for_delivery(&event_id, "delivered").await;
    let keys: HashSet<&str> = delivery
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        DELIVERY_FIELDS.into_iter().collect::<HashSet<_>>(),
        "{delivery}"
    );
    assert_eq!(delivery["destination"], "default", "{delivery}");
    assert_eq!(delivery["contact_id"], 48213);
    assert_eq!(delivery["attempts"], 1);
    assert_eq!(delivery["last_status"], 200);
    assert_eq!(delivery["last_error"], Value::Null);
    let created = rfc3339_ms(delivery["created_at"].as_str().expect("created_at"));
    let delivered = rfc3339_ms(delivery["delivered_at"].as_str().expect("delivered_at"));
    assert!(delivered >= created, "{delivery}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_forwarding_has_no_signature_header() {
    let server = TestServer::default().await;
    server.webhook(&json!([contact("potential")])).await;
    let forwarded = server.receiver().wait_for(1, WAIT).await;
    assert!(forwarded[0].headers.get("webhook-signature").is_none());
    assert!(forwarded[0].headers.get("webhook-id").is_some());
    assert!(forwarded[0].headers.get("webhook-timestamp").is_some());
}

/// The same JSON object with its keys in reverse order.
fn reversed_keys(value: &Value) -> Value {
    let object = value.as_object().expect("an object");
    let mut reversed = Map::new();
    for (key, value) in object.iter().rev() {
        reversed.insert(key.clone(), value.clone());
    }
    Value::Object(reversed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_body_is_answered_with_the_first_event() {
    let server = TestServer::default().await;
    let body = json!([contact("qualified")]);
    let first = server.webhook(&body).await;
    assert_eq!(first["accepted"], 1, "{first}");
    let first_line = first["results"][0].clone();

    let second = server.webhook(&body).await;
    assert_eq!(second["accepted"], 0, "{second}");
    assert_eq!(second["duplicates"], 1, "{second}");
    let line = &second["results"][0];
    assert_eq!(line["duplicate"], true, "{second}");
    for field in ["contact_id", "id", "score", "tier", "disqualified"] {
        assert_eq!(line[field], first_line[field], "{field}: {second}");
    }

    // Layout and key order do not make a new event; a single object neither.
    let reordered = reversed_keys(&body[0]);
    let pretty = serde_json::to_vec_pretty(&json!([reordered])).expect("JSON");
    let reply = server
        .request(
            "POST",
            "/webhooks/iclosed",
            Some(pretty),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["results"][0]["duplicate"], true, "{}", reply.text);
    assert_eq!(reply.json()["results"][0]["id"], first_line["id"]);
    let single = server.webhook(&body[0]).await;
    assert_eq!(single["results"][0]["duplicate"], true, "{single}");

    // Exactly one delivery: delivered once, and nothing else queued.
    let id = first_line["id"].as_str().expect("id");
    server.wait_for_delivery(id, "delivered").await;
    let all = server.deliveries(None).await;
    assert_eq!(all.len(), 1, "{all:?}");
    let forwarded = server.receiver().requests();
    assert_eq!(forwarded.len(), 1);
    assert_eq!(forwarded[0].webhook_id(), id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_in_one_body_are_answered_in_input_order() {
    let server = TestServer::default().await;
    let c = contact("potential");
    let reply = server.webhook(&json!([c, contact("qualified"), c])).await;
    assert_eq!(reply["accepted"], 2, "{reply}");
    assert_eq!(reply["duplicates"], 1, "{reply}");
    let results = reply["results"].as_array().expect("results");
    assert_eq!(results[0]["duplicate"], false);
    assert_eq!(results[1]["duplicate"], false);
    assert_eq!(results[2]["duplicate"], true);
    assert_eq!(results[2]["id"], results[0]["id"]);
    assert_eq!(server.deliveries(None).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_id_headers_identify_retried_deliveries() {
    let server = TestServer::default().await;
    let mut events = HashSet::new();
    for (n, header) in ["webhook-id", "Idempotency-Key", "X-Webhook-Id"]
        .into_iter()
        .enumerate()
    {
        let body = json!([contact_with_id("potential", 100 + n)]);
        let message = format!("msg_{n}");
        let first = server.webhook_with(&body, &[(header, &message)]).await;
        assert_eq!(first["accepted"], 1, "{header}: {first}");
        let id = first["results"][0]["id"].clone();

        let retried = server.webhook_with(&body, &[(header, &message)]).await;
        assert_eq!(retried["duplicates"], 1, "{header}: {retried}");
        assert_eq!(retried["results"][0]["duplicate"], true, "{header}: {retried}");
        assert_eq!(retried["results"][0]["id"], id, "{header}: {retried}");

        // The sender's delivery id decides, not the content.
        let mut changed = body.clone();
        changed[0]["updatedAt"] = json!("2026-11-21T10:00:00.000Z");
        let retried = server.webhook_with(&changed, &[(header, &message)]).await;
        assert_eq!(retried["results"][0]["duplicate"], true, "{header}: {retried}");
        assert_eq!(retried["results"][0]["id"], id, "{header}: {retried}");

        // The same body under another delivery id is a new event.
        let other = server
            .webhook_with(&body, &[(header, &format!("msg_{n}_b"))])
            .await;
        assert_eq!(other["accepted"], 1, "{header}: {other}");
        assert_eq!(other["results"][0]["duplicate"], false, "{header}: {other}");
        assert_ne!(other["results"][0]["id"], id, "{header}: {other}");
        events.insert(id.as_str().unwrap().to_owned());
        events.insert(other["results"][0]["id"].as_str().unwrap().to_owned());
    }
    // An empty delivery-id header counts as absent: the next header decides.
    let body = json!([contact_with_id("potential", 150)]);
    let with_empty = [("webhook-id", ""), ("Idempotency-Key", "msg_after_empty")];
    let first = server.webhook_with(&body, &with_empty).await;
    assert_eq!(first["accepted"], 1, "{first}");
    let mut changed = body.clone();
    changed[0]["updatedAt"] = json!("2026-11-21T11:00:00.000Z");
    let retried = server.webhook_with(&changed, &with_empty).await;
    assert_eq!(retried["results"][0]["duplicate"], true, "{retried}");
    assert_eq!(
        retried["results"][0]["id"], first["results"][0]["id"],
        "{retried}"
    );
    events.insert(first["results"][0]["id"].as_str().unwrap().to_owned());

    // One delivery id for a batch: each contact is its own event.
    let batch = json!([
        contact_with_id("potential", 201),
        contact_with_id("potential", 202)
    ]);
    let reply = server.webhook_with(&batch, &[("webhook-id", "msg_batch")]).await;
    assert_eq!(reply["accepted"], 2, "{reply}");
    let again = server.webhook_with(&batch, &[("webhook-id", "msg_batch")]).await;
    assert_eq!(again["duplicates"], 2, "{again}");
    for line in reply["results"].as_array().unwrap() {
        events.insert(line["id"].as_str().unwrap().to_owned());
    }

    let forwarded = server
        .receiver()
        .wait_until("every event delivered", WAIT, |r| {
            r.iter().map(|r| r.webhook_id()).collect::<HashSet<_>>() == events
        })
        .await;
    assert_eq!(forwarded.len(), events.len(), "each event forwarded once");
    assert_eq!(server.deliveries(None).await.len(), events.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_detection_survives_a_restart() {
    let server = TestServer::default().await;
    let body = json!([contact_with_id("potential", 77)]);
    let first = server.webhook(&body).await;
    let line = first["results"][0].clone();
    assert_eq!(line["score"], 0);
    assert_eq!(line["tier"], "cold");
    let id = line["id"].as_str().expect("id").to_owned();
    server.wait_for_delivery(&id, "delivered").await;

    // The rules change while the server is down: a duplicate still answers
    // the values of the event stored first.
    server.rules().write("95-bonus.rhai", "add(50, \"Bonus\");\n");
    let server = server.restart().await;
    let again = server.webhook(&body).await;
    assert_eq!(again["duplicates"], 1, "{again}");
    let dup = &again["results"][0];
    assert_eq!(dup["duplicate"], true);
    for field in ["contact_id", "id", "score", "tier", "disqualified"] {
        assert_eq!(dup[field], line[field], "{field}: {again}");
    }
    // New contacts get the new rules.
    let fresh = server.webhook(&json!([contact_with_id("potential", 78)])).await;
    assert_eq!(fresh["results"][0]["score"], 50, "{fresh}");
    assert_eq!(fresh["results"][0]["tier"], "warm", "{fresh}");

    let fresh_id = fresh["results"][0]["id"].as_str().unwrap().to_owned();
    server.wait_for_delivery(&fresh_id, "delivered").await;
    assert_eq!(server.deliveries(None).await.len(), 2);
    let forwarded = server.receiver().requests();
    let ids: Vec<String> = forwarded.iter().map(|r| r.webhook_id()).collect();
    assert_eq!(ids.iter().filter(|i| **i == id).count(), 1, "{ids:?}");
    assert_eq!(forwarded.len(), 2, "{ids:?}");
}

/// The `status` field of the contact inside forwarded requests, in arrival order.
fn statuses(requests: &[crate::support::Received]) -> Vec<(String, u16)> {
    requests
        .iter()
        .map(|r| {
            (
                r.json()["contact"]["status"].as_str().unwrap_or("?").to_owned(),
                r.answered,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_one_contact_are_forwarded_in_order() {
    let server = TestServer::default().await;
    // Two requests: iClosed's POTENTIAL hook, then its QUALIFIED hook.
    let potential = server.webhook(&json!([contact_with_id("potential", 9001)])).await;
    let qualified = server.webhook(&json!([contact_with_id("qualified", 9001)])).await;
    assert_eq!(potential["accepted"], 1);
    assert_eq!(
        qualified["accepted"], 1,
        "new content is not a duplicate: {qualified}"
    );
    // And both in one body.
    let both = server
        .webhook(&json!([
            contact_with_id("potential", 9002),
            contact_with_id("qualified", 9002)
        ]))
        .await;
    assert_eq!(both["accepted"], 2, "{both}");

    let forwarded = server.receiver().wait_for(4, WAIT).await;
    for id in [9001, 9002] {
        let of_contact: Vec<_> = forwarded
            .iter()
            .filter(|r| r.contact_id() == id)
            .cloned()
            .collect();
        assert_eq!(
            statuses(&of_contact),
            vec![("POTENTIAL".to_owned(), 200), ("QUALIFIED".to_owned(), 200)],
            "contact {id}"
        );
    }
    let first_ids: Vec<String> = forwarded
        .iter()
        .filter(|r| r.contact_id() == 9001)
        .map(|r| r.webhook_id())
        .collect();
    assert_eq!(
        first_ids,
        vec![
            potential["results"][0]["id"].as_str().unwrap().to_owned(),
            qualified["results"][0]["id"].as_str().unwrap().to_owned()
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_event_waits_until_the_earlier_one_is_delivered() {
    let server = TestServer::default().await;
    server.receiver().answer_next([Answer::status(503)]);
    server.webhook(&json!([contact_with_id("potential", 9100)])).await;
    server.webhook(&json!([contact_with_id("qualified", 9100)])).await;
    let forwarded = server
        .receiver()
        .wait_until("both events accepted", WAIT, |r| {
            r.iter().filter(|r| r.accepted()).count() >= 2
        })
        .await;
    assert_eq!(
        statuses(&forwarded),
        vec![
            ("POTENTIAL".to_owned(), 503),
            ("POTENTIAL".to_owned(), 200),
            ("QUALIFIED".to_owned(), 200)
        ]
    );
    assert_eq!(
        forwarded[0].webhook_id(),
        forwarded[1].webhook_id(),
        "a retry keeps its id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_event_goes_once_the_earlier_one_is_dead() {
    let server = TestServer::default().await;
    server.receiver().answer_next([Answer::status(422)]);
    let first = server.webhook(&json!([contact_with_id("potential", 9200)])).await;
    server.webhook(&json!([contact_with_id("qualified", 9200)])).await;
    let forwarded = server
        .receiver()
        .wait_until("the later event accepted", WAIT, |r| {
            r.iter().any(|r| r.accepted())
        })
        .await;
    assert_eq!(
        statuses(&forwarded),
        vec![("POTENTIAL".to_owned(), 422), ("QUALIFIED".to_owned(), 200)]
    );
    let id = first["results"][0]["id"].as_str().unwrap();
    server.wait_for_delivery(id, "dead").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_delivery_is_retried_until_accepted() {
    let server = TestServer::default().await;
    server.receiver().answer_next([Answer::status(503)]);
    let reply = server.webhook(&json!([contact("qualified")])).await;
    let id = reply["results"][0]["id"].as_str().expect("id").to_owned();

    let delivery = server.wait_for_delivery(&id, "delivered").await;
    assert_eq!(delivery["attempts"], 2, "{delivery}");
    assert_eq!(delivery["last_status"], 200, "{delivery}");
    assert_eq!(delivery["last_error"], Value::Null, "{delivery}");
    assert_eq!(delivery["next_attempt_at"], Value::Null, "{delivery}");

    let forwarded = server.receiver().requests();
    assert_eq!(forwarded.len(), 2);
    assert_eq!(
        forwarded.iter().map(|r| r.answered).collect::<Vec<_>>(),
        vec![503, 200]
    );
    assert_eq!(forwarded[0].webhook_id(), id);
    assert_eq!(forwarded[1].webhook_id(), id);
    assert_eq!(
        forwarded[0].body, forwarded[1].body,
        "the same body on every attempt"
    );
    assert_eq!(server.deliveries(Some("delivered")).await.len(), 1);
    assert!(server.deliveries(Some("pending")).await.is_empty());
    assert!(server.deliveries(Some("dead")).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let server = TestServer::default().await;
    server.receiver().answer_next([Answer {
        retry_after: Some("2".into()),
        ..Answer::status(429)
    }]);
    let reply = server.webhook(&json!([contact("potential")])).await;
    let id = reply["results"][0]["id"].as_str().expect("id").to_owned();
    let first = server.receiver().wait_for(1, WAIT).await.remove(0);
    // While it waits, the delivery is pending with the receiver's delay
    // (not the schedule's 100ms).
    let pending = eventually("the first attempt to be recorded", WAIT, async || {
        server
            .deliveries(Some("pending"))
            .await
            .into_iter()
            .find(|d| d["id"] == id.as_str() && d["attempts"] == 1)
    })
    .await;
    assert_eq!(pending["last_status"], 429, "{pending}");
    let next = rfc3339_ms(pending["next_attempt_at"].as_str().expect("next_attempt_at"));
    let attempted = first
        .at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        next - attempted >= 1900,
        "next attempt {}ms after the first, Retry-After asked for 2s",
        next - attempted
    );
    let delivery = server.wait_for_delivery(&id, "delivered").await;
    assert_eq!(delivery["attempts"], 2, "{delivery}");
}

/// Issue 19 #2 (SPEC 5): `Retry-After` lengthens a wait, never shortens
/// it. A receiver answering `429` with `Retry-After: 1` to every attempt
/// cannot use up a schedule of 1.5 s waits in 1 s steps: the delivery goes
/// dead only after the schedule's own delays (each at least 80 % of its
/// entry, the jitter's lower bound). Lower bounds only: a slow machine can
/// only lengthen the gaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_retry_after_does_not_shorten_the_schedule() {
    let server = TestServer::start(Options {
        retry_schedule: ms(&[1500, 1500]),
        ..Options::default()
    })
    .await;
    server.receiver().answer_by_default(Answer {
        retry_after: Some("1".into()),
        ..Answer::status(429)
    });
    let reply = server.webhook(&json!([contact("qualified")])).await;
    let id = reply["results"][0]["id"].as_str().expect("id").to_owned();
    let dead = eventually("the delivery to be dead", Duration::from_secs(30), async || {
        server
            .deliveries(Some("dead"))
            .await
            .into_iter()
            .find(|d| d["id"] == id.as_str())
    })
    .await;
    assert_eq!(dead["attempts"], 3, "the first attempt and two retries: {dead}");
    let attempts = server.receiver().requests();
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    for pair in attempts.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at).unwrap_or_default();
        assert!(
            gap >= Duration::from_millis(1200),
            "a retry {gap:?} after the previous attempt; the schedule says 1.5 s ± 20 %"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_answer_makes_the_delivery_dead_until_requeued() {
    let server = TestServer::default().await;
    server.receiver().answer_by_default(Answer::status(422));
    let reply = server.webhook(&json!([contact("qualified")])).await;
    let id = reply["results"][0]["id"].as_str().expect("id").to_owned();

    let dead = server.wait_for_delivery(&id, "dead").await;
    assert_eq!(dead["attempts"], 1, "a 422 is not retried: {dead}");
    assert_eq!(dead["last_status"], 422, "{dead}");
    assert!(
        dead["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{dead}"
    );
    assert_eq!(dead["delivered_at"], Value::Null, "{dead}");
    assert_eq!(dead["contact_id"], 48213, "{dead}");
    assert_eq!(server.receiver().requests().len(), 1);

    let unknown = server
        .request("POST", "/deliveries/evt_0000000000000000/retry", None, &[])
        .await;
    unknown.assert_error(404);

    server.receiver().answer_by_default(Answer::status(200));
    let requeued = server
        .request(
            "POST",
            &format!("/deliveries/{id}/retry"),
            Some(b"ignored".to_vec()),
            &[],
        )
        .await;
    assert_eq!(requeued.status, 202, "{}", requeued.text);
    assert_eq!(requeued.json(), json!({"requeued": 1}));

    let delivered = server.wait_for_delivery(&id, "delivered").await;
    assert_eq!(delivered["last_status"], 200, "{delivered}");
    let forwarded = server.receiver().requests();
    assert_eq!(forwarded.len(), 2);
    assert_eq!(forwarded[1].webhook_id(), id);
    assert_eq!(forwarded[1].answered, 200);

    // A delivery that is not dead is not requeued.
    let again = server
        .request("POST", &format!("/deliveries/{id}/retry"), None, &[])
        .await;
    assert_eq!(again.status, 202, "{}", again.text);
    assert_eq!(again.json(), json!({"requeued": 0}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_dead_requeues_every_dead_delivery() {
    let server = TestServer::default().await;
    server.receiver().answer_by_default(Answer::status(410));
    let reply = server
        .webhook(&json!([
            contact_with_id("potential", 1),
            contact_with_id("qualified", 2)
        ]))
        .await;
    let ids: Vec<String> = reply["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    for id in &ids {
        server.wait_for_delivery(id, "dead").await;
    }
    server.receiver().answer_by_default(Answer::status(204));
    let requeued = server
        .request(
            "POST",
            "/deliveries/retry-dead",
            Some(b"{\"whatever\": true}".to_vec()),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(requeued.status, 202, "{}", requeued.text);
    assert_eq!(requeued.json(), json!({"requeued": 2}));
    for id in &ids {
        let delivered = server.wait_for_delivery(id, "delivered").await;
        assert_eq!(delivered["last_status"], 204, "{delivered}");
    }
    let none = server.request("POST", "/deliveries/retry-dead", None, &[]).await;
    assert_eq!(none.status, 202, "{}", none.text);
    assert_eq!(none.json(), json!({"requeued": 0}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retry_schedule_makes_the_delivery_dead() {
    let server = TestServer::start(Options {
        retry_schedule: ms(&[50, 50]),
        ..Options::default()
    })
    .await;
    server.receiver().answer_by_default(Answer::status(500));
    let reply = server.webhook(&json!([contact("potential")])).await;
    let id = reply["results"][0]["id"].as_str().expect("id").to_owned();
    let dead = server.wait_for_delivery(&id, "dead").await;
    assert_eq!(dead["attempts"], 3, "the first attempt and two retries: {dead}");
    assert_eq!(dead["last_status"], 500, "{dead}");
    assert!(dead["last_error"].is_string(), "{dead}");
    let forwarded = server.receiver().requests();
    assert_eq!(forwarded.len(), 3);
    assert!(forwarded.iter().all(|r| r.webhook_id() == id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_errors_are_retried_then_dead() {
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_addr = closed.local_addr().expect("addr");
    drop(closed);
    let server = TestServer::start(Options {
        forward_url: Some(format!("http://{closed_addr}/hook")),
        retry_schedule: ms(&[50, 50]),
        ..Options::default()
    })
    .await;
    let reply = server.webhook(&json!([contact("potential")])).await;
    let id = reply["results"][0]["id"].as_str().expect("id").to_owned();
    let dead = server.wait_for_delivery(&id, "dead").await;
    assert_eq!(dead["attempts"], 3, "{dead}");
    assert_eq!(dead["last_status"], Value::Null, "no HTTP answer: {dead}");
    assert!(
        dead["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{dead}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_list_filters_orders_and_limits() {
    let server = TestServer::default().await;
    server.receiver().answer_by_default(Answer::status(400));
    let mut ids = Vec::new();
    for n in 0..3 {
        let reply = server
            .webhook(&json!([contact_with_id("potential", 300 + n)]))
            .await;
        ids.push(reply["results"][0]["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        server.wait_for_delivery(id, "dead").await;
    }
    let reply = server.get("/deliveries?status=dead&limit=2").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let listed: Vec<String> = reply.json()["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        listed,
        vec![ids[2].clone(), ids[1].clone()],
        "newest first, limited"
    );
    assert!(server.deliveries(Some("delivered")).await.is_empty());
    assert_eq!(server.deliveries(None).await.len(), 3);
    server.get("/deliveries?status=bogus").await.assert_error(400);
    server.get("/deliveries?limit=0").await.assert_error(400);
    server.get("/deliveries?limit=many").await.assert_error(400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_cli_lists_and_requeues_dead_deliveries() {
    let server = TestServer::default().await;
    server.receiver().answer_by_default(Answer::status(422));
    let reply = server
        .webhook(&json!([
            contact_with_id("potential", 401),
            contact_with_id("qualified", 402)
        ]))
        .await;
    let ids: Vec<String> = reply["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    for id in &ids {
        server.wait_for_delivery(id, "dead").await;
    }
    let store = server.store().url.clone();

    let out = run_binary(vec![
        "deliveries".into(),
        "list".into(),
        "--store".into(),
        store.clone(),
        "--status".into(),
        "dead".into(),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    for id in &ids {
        let line = stdout
            .lines()
            .find(|l| l.contains(id.as_str()))
            .unwrap_or_else(|| panic!("{id} not listed:\n{stdout}"));
        assert!(line.contains("dead") && line.contains("422"), "{line}");
    }

    let out = run_binary(vec![
        "deliveries".into(),
        "list".into(),
        "--store".into(),
        store.clone(),
        "--status".into(),
        "dead".into(),
        "--json".into(),
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|d| d["status"] == "dead" && d["last_status"] == 422)
    );
    assert_eq!(lines[0]["contact_id"], 402, "newest first");
    assert_eq!(lines[1]["contact_id"], 401);

    let out = run_binary(vec![
        "deliveries".into(),
        "retry".into(),
        "--store".into(),
        store.clone(),
        "evt_doesnotexist".into(),
    ])
    .await;
    assert!(!out.status.success(), "an unknown id fails: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("evt_doesnotexist"),
        "{out:?}"
    );

    server.receiver().answer_by_default(Answer::status(200));
    let out = run_binary(vec![
        "deliveries".into(),
        "retry".into(),
        "--store".into(),
        store.clone(),
        "--all-dead".into(),
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("requeued 2"),
        "{out:?}"
    );
    // The running server picks them up without being told.
    for id in &ids {
        server.wait_for_delivery(id, "delivered").await;
    }
    let accepted: HashSet<String> = server
        .receiver()
        .accepted()
        .iter()
        .map(|r| r.webhook_id())
        .collect();
    assert_eq!(accepted, ids.iter().cloned().collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_forward_url_contacts_are_stored_not_forwarded() {
    let server = TestServer::start(Options {
        forward: false,
        ..Options::default()
    })
    .await;
    let body = json!([contact("qualified")]);
    let reply = server.webhook(&body).await;
    assert_eq!(reply["accepted"], 1, "{reply}");
    assert_eq!(reply["results"][0]["tier"], "hot", "{reply}");
    assert!(server.deliveries(None).await.is_empty());
    let again = server.webhook(&body).await;
    assert_eq!(again["results"][0]["duplicate"], true, "stored: {again}");
    assert_eq!(again["results"][0]["id"], reply["results"][0]["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_copies_of_a_body_make_one_event() {
    let server = TestServer::default().await;
    let body = json!([contact("qualified")]);
    let replies = futures_util::future::join_all((0..8).map(|_| server.webhook(&body))).await;
    let accepted: u64 = replies.iter().map(|r| r["accepted"].as_u64().unwrap()).sum();
    let duplicates: u64 = replies.iter().map(|r| r["duplicates"].as_u64().unwrap()).sum();
    assert_eq!((accepted, duplicates), (1, 7), "{replies:?}");
    let ids: HashSet<&str> = replies
        .iter()
        .map(|r| r["results"][0]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "every copy answers the same event: {ids:?}");
    let id = ids.into_iter().next().unwrap().to_owned();
    server.wait_for_delivery(&id, "delivered").await;
    assert_eq!(server.deliveries(None).await.len(), 1);
    assert_eq!(server.receiver().requests().len(), 1);
}

/// `leadscore deliveries` opens the store beside a running server: it must
/// not free the server's claims, or the delivery in flight is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_delivery_is_not_repeated_when_the_cli_reads_the_store() {
    let server = TestServer::default().await;
    // The receiver holds the first attempt for 4 s before answering 200.
    server.receiver().answer_next([Answer {
        status: 200,
        retry_after: None,
        delay: Some(Duration::from_secs(4)),
    }]);
    let reply = server.webhook(&json!([contact_with_id("qualified", 451)])).await;
    let id = reply["results"][0]["id"].as_str().unwrap().to_owned();
    eventually(
        "the first attempt is in flight",
        Duration::from_secs(10),
        async || (!server.receiver().requests().is_empty()).then_some(()),
    )
    .await;
    for _ in 0..2 {
        let out = run_binary(vec![
            "deliveries".into(),
            "list".into(),
            "--store".into(),
            server.store().url.clone(),
        ])
        .await;
        assert!(out.status.success(), "{out:?}");
    }
    // The worker polls every 200 ms: a freed claim would be re-sent by now.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        server.receiver().requests().len(),
        1,
        "the delivery in flight was sent again"
    );
    server.wait_for_delivery(&id, "delivered").await;
    assert_eq!(server.deliveries(None).await.len(), 1);
    assert_eq!(server.receiver().requests().len(), 1);
}

/// A key older than the dedupe window no longer marks a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_after_the_dedupe_window_is_a_new_event() {
    let server = TestServer::start(Options {
        dedupe_window: Duration::from_millis(300),
        ..Options::default()
    })
    .await;
    let body = json!([contact_with_id("qualified", 461)]);
    let first = server.webhook(&body).await;
    let again = server.webhook(&body).await;
    assert_eq!(again["results"][0]["duplicate"], true, "{again}");
    assert_eq!(again["results"][0]["id"], first["results"][0]["id"]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let later = server.webhook(&body).await;
    assert_eq!(later["results"][0]["duplicate"], false, "{later}");
    assert_ne!(later["results"][0]["id"], first["results"][0]["id"]);
    server.receiver().wait_for(2, WAIT).await;
}

/// SPEC 5: 408, 425, 429, 5xx are retried; other 4xx are final. A 3xx
/// is not a 2xx, so it is retried too (SPEC 1: retries until a 2xx).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_and_final_statuses() {
    let retried = [408u16, 425, 429, 500, 502, 503, 504, 301, 302, 307];
    let final_ = [400u16, 401, 403, 404, 409, 410, 422];
    let server = TestServer::start(Options {
        retry_schedule: ms(&[50]),
        ..Options::default()
    })
    .await;
    let mut expected = Vec::new();
    for (i, status) in retried.iter().chain(&final_).enumerate() {
        server.receiver().answer_next([Answer::status(*status)]);
        let id = 470 + i as i64;
        let reply = server.webhook(&json!([contact_with_id("qualified", id)])).await;
        let event = reply["results"][0]["id"].as_str().unwrap().to_owned();
        let retryable = retried.contains(status);
        // A retried one is delivered by its second attempt (the default answer is 200).
        let delivery = server
            .wait_for_delivery(&event, if retryable { "delivered" } else { "dead" })
            .await;
        let attempts = if retryable { 2 } else { 1 };
        assert_eq!(delivery["attempts"], attempts, "{status}: {delivery}");
        let last = if retryable { 200 } else { *status };
        assert_eq!(delivery["last_status"], last, "{status}: {delivery}");
        expected.push((*status, attempts));
    }
    assert_eq!(
        server.receiver().requests().len(),
        retried.len() * 2 + final_.len(),
        "{expected:?}"
    );
}

/// Each retry waits its scheduled delay, give or take 20 %.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_wait_the_scheduled_delay_with_jitter() {
    let server = TestServer::start(Options {
        retry_schedule: ms(&[1500]),
        ..Options::default()
    })
    .await;
    server.receiver().answer_next([Answer::status(503)]);
    server.webhook(&json!([contact_with_id("qualified", 490)])).await;
    let requests = server.receiver().wait_for(2, WAIT).await;
    let gap = requests[1].at.duration_since(requests[0].at).unwrap();
    // At least the delay minus 20 %; the upper bound leaves room for a slow
    // machine (the worker polls every 200 ms).
    assert!(gap >= Duration::from_millis(1200), "retried after {gap:?}");
    assert!(gap <= Duration::from_millis(1800 + 1500), "retried after {gap:?}");
}

/// A receiver slower than --forward-timeout is a failed attempt, retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_times_out_and_is_retried() {
    let server = TestServer::start(Options {
        forward_timeout: Duration::from_millis(300),
        retry_schedule: ms(&[50, 50]),
        ..Options::default()
    })
    .await;
    server.receiver().answer_next([Answer {
        status: 200,
        retry_after: None,
        delay: Some(Duration::from_secs(2)),
    }]);
    let reply = server.webhook(&json!([contact_with_id("qualified", 491)])).await;
    let id = reply["results"][0]["id"].as_str().unwrap().to_owned();
    let delivery = server.wait_for_delivery(&id, "delivered").await;
    assert_eq!(delivery["attempts"], 2, "{delivery}");
}

/// No more than --forward-concurrency deliveries are in flight at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_concurrency_bounds_the_requests_in_flight() {
    let server = TestServer::start(Options {
        forward_concurrency: 3,
        ..Options::default()
    })
    .await;
    server.receiver().answer_by_default(Answer {
        status: 200,
        retry_after: None,
        delay: Some(Duration::from_millis(300)),
    });
    let body: Vec<Value> = (0..12).map(|i| contact_with_id("qualified", 500 + i)).collect();
    server.webhook(&Value::Array(body)).await;
    server.receiver().wait_for(12, WAIT).await;
    let most = server.receiver().max_in_flight();
    assert!((2..=3).contains(&most), "{most} requests were in flight at once");
}

/// A backlog drains with every slot busy: each delivery finished (and
/// recorded) frees its slot for the next at once, not one slot per claim or
/// per poll. Asserts on the concurrency the receiver sees, never on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_backlog_keeps_the_slots_busy() {
    let server = TestServer::start(Options {
        forward_concurrency: 8,
        ..Options::default()
    })
    .await;
    server.receiver().answer_by_default(Answer {
        status: 200,
        retry_after: None,
        delay: Some(Duration::from_millis(200)),
    });
    let body: Vec<Value> = (0..40).map(|i| contact_with_id("qualified", 600 + i)).collect();
    server.webhook(&Value::Array(body)).await;
    let forwarded = server.receiver().wait_for(40, WAIT).await;
    let ids: HashSet<String> = forwarded.iter().map(|r| r.webhook_id()).collect();
    assert_eq!(ids.len(), 40, "each delivery sent once");
    let most = server.receiver().max_in_flight();
    assert!(most <= 8, "{most} requests were in flight at once");
    // Not only the first claim: the slots freed by each wave are taken again.
    let seen: Vec<usize> = forwarded.iter().map(|r| r.in_flight).collect();
    assert!(
        seen[8..].iter().any(|&n| n >= 6),
        "after the first 8, the receiver never saw 6 requests at once: {seen:?}"
    );
    for d in server.deliveries(Some("delivered")).await {
        assert_eq!(d["attempts"], 1, "{d}");
    }
}

/// Shutting down lets the deliveries in flight finish and records them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_deliveries_in_flight() {
    let server = TestServer::default().await;
    server.receiver().answer_next([Answer {
        status: 200,
        retry_after: None,
        delay: Some(Duration::from_secs(1)),
    }]);
    let reply = server.webhook(&json!([contact_with_id("qualified", 520)])).await;
    let id = reply["results"][0]["id"].as_str().unwrap().to_owned();
    eventually("the delivery is in flight", WAIT, async || {
        (!server.receiver().requests().is_empty()).then_some(())
    })
    .await;
    let receiver = server.receiver().clone();
    let restarted = server.restart().await;
    // Recorded as delivered before the stop: not sent again after the restart.
    let delivery = restarted.wait_for_delivery(&id, "delivered").await;
    assert_eq!(delivery["attempts"], 1, "{delivery}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.requests().len(), 1);
}
