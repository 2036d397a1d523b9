//! Calls, outcomes and unknown hooks at the webhook (SPEC 11 "Kinds",
//! "Ingest", "Linking", "Counting"): classified, stored, linked to their
//! contact (also when they arrive first, or carry only an email), never
//! scored or forwarded.

use serde_json::{Value, json};

use crate::support::{TestServer, WAIT, contact, hook_fixture};

/// The one element of a hook fixture.
fn hook(name: &str) -> Value {
    hook_fixture(name)[0].clone()
}

/// Checks a hook's line of an ingest answer.
#[track_caller]
fn assert_hook_line(line: &Value, kind: &str, contact_id: Value, duplicate: bool) -> String {
    assert_eq!(line["kind"], kind, "{line}");
    assert_eq!(line["contact_id"], contact_id, "{line}");
    assert_eq!(line["duplicate"], duplicate, "{line}");
    let keys: Vec<&str> = line.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys.len(),
        4,
        "a hook's line has kind, contact_id, id, duplicate: {line}"
    );
    let id = line["id"].as_str().unwrap_or_else(|| panic!("no id: {line}"));
    assert!(id.starts_with("hook_") && id.len() > 5, "{id}");
    id.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_is_classified_by_hook_type_or_shape() {
    let server = TestServer::default().await;
    let mut shape_only_call = hook("call-booked");
    shape_only_call.as_object_mut().unwrap().remove("hookType");
    let mut shape_only_outcome = hook("outcome-added-no-sale");
    shape_only_outcome.as_object_mut().unwrap().remove("hookType");
    let body = json!([
        hook("call-booked"),
        hook("call-rescheduled"),
        hook("call-canceled"),
        hook("outcome-added-sale"),
        hook("outcome-added-no-sale"),
        hook("contact-updated"),
        {"hookType": "Invoice paid", "amount": 12},
        shape_only_call,
        shape_only_outcome,
    ]);
    let reply = server.webhook(&body).await;
    assert_eq!(reply["accepted"], 9, "{reply}");
    assert_eq!(reply["duplicates"], 0, "{reply}");
    let lines = reply["results"].as_array().unwrap();
    // The contact (48213) comes sixth; a body's contacts are stored before
    // its hooks, so the calls (by email) and the sale (by id) link at once,
    // on both stores. The no-sale is another person's.
    for (i, kind) in ["call", "call", "call", "outcome"].iter().enumerate() {
        assert_hook_line(&lines[i], kind, json!(48213), false);
    }
    assert_hook_line(&lines[4], "outcome", Value::Null, false);
    assert_eq!(lines[5]["contact_id"], 48213, "{}", lines[5]);
    assert!(lines[5]["score"].is_number(), "a contact is scored: {}", lines[5]);
    assert!(
        lines[5].get("kind").is_none(),
        "a contact's line keeps SPEC 4's fields: {}",
        lines[5]
    );
    assert_hook_line(&lines[6], "unknown", Value::Null, false);
    // After the contact: the call links by its invitee's email (another case).
    assert_hook_line(&lines[7], "call", json!(48213), false);
    assert_hook_line(&lines[8], "outcome", Value::Null, false);

    // Counted apart from contacts, and never forwarded.
    let stats = server.get("/stats?since=1h").await.json();
    let total = |field: &str| -> u64 {
        stats["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b[field].as_u64().unwrap())
            .sum()
    };
    assert_eq!(total("received"), 1, "{stats}");
    assert_eq!(total("calls"), 4, "{stats}");
    assert_eq!(total("outcomes"), 3, "{stats}");
    assert_eq!(total("unknown"), 1, "{stats}");
    let metrics = server.get("/metrics").await.text;
    assert!(
        metrics.contains("leadscore_hooks_received_total{kind=\"unknown\"} 1"),
        "{metrics}"
    );
    server.receiver().wait_for(1, WAIT).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let forwarded: Vec<Value> = server.receiver().requests().iter().map(|r| r.json()).collect();
    assert_eq!(forwarded.len(), 1, "only the contact is forwarded: {forwarded:?}");
    assert_eq!(forwarded[0]["contact_id"], 48213);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_that_arrives_first_links_when_its_contact_arrives() {
    let server = TestServer::default().await;
    let reply = server.webhook(&hook_fixture("outcome-added-sale")).await;
    let outcome_id = assert_hook_line(&reply["results"][0], "outcome", Value::Null, false);
    let call = server.webhook(&hook_fixture("call-booked")).await;
    assert_hook_line(&call["results"][0], "call", Value::Null, false);

    // The contact arrives: both link (the sale by contactId, the call by
    // email), and the links never move again.
    server.webhook(&json!([contact("qualified")])).await;
    let timeline = server.get("/contacts/48213").await.json();
    let outcomes = timeline["outcomes"].as_array().unwrap();
    assert_eq!(outcomes.len(), 1, "{timeline}");
    assert_eq!(outcomes[0]["id"], outcome_id);
    assert_eq!(outcomes[0]["call_outcome"], "SALE");
    assert_eq!(outcomes[0]["sale"], true);
    assert_eq!(outcomes[0]["revenue"], 24000.0);
    let calls = timeline["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{timeline}");
    assert_eq!(calls[0]["status"], "booked");
    assert_eq!(calls[0]["call_id"], "99120");
    assert_eq!(calls[0]["start_time"], "2026-11-24T17:00:00+00:00");
    assert_eq!(calls[0]["event_type"], "Discovery Call - Logistics Automation");

    // A later hook of the same contact links at once.
    let canceled = server.webhook(&hook_fixture("call-canceled")).await;
    assert_hook_line(&canceled["results"][0], "call", json!(48213), false);
    let timeline = server.get("/contacts/48213").await.json();
    let statuses: Vec<&str> = timeline["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["booked", "canceled"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_with_only_an_email_links_whatever_its_letter_case() {
    let server = TestServer::default().await;
    let mut sam = contact("qualified");
    sam["id"] = json!("c-sam");
    sam["email"] = json!("  Sam.Ortiz@GMAIL.com ");
    server.webhook(&json!([sam])).await;
    // No contactId; the email in lower case.
    let reply = server.webhook(&hook_fixture("outcome-added-no-sale")).await;
    assert_hook_line(&reply["results"][0], "outcome", json!("c-sam"), false);
    let timeline = server.get("/contacts/c-sam").await.json();
    assert_eq!(
        timeline["outcomes"][0]["call_outcome"], "PRICE_OBJECTION",
        "{timeline}"
    );
    assert_eq!(timeline["outcomes"][0]["sale"], false);
    assert_eq!(timeline["outcomes"][0]["revenue"], 0.0);

    // GET /contacts?email= finds the contact the same way.
    let found = server.get("/contacts?email=SAM.ortiz%40gmail.com").await.json();
    let ids: Vec<&Value> = found["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["contact_id"])
        .collect();
    assert_eq!(ids, [&json!("c-sam")], "{found}");
    let none = server.get("/contacts?email=nobody%40example.com").await.json();
    assert_eq!(none["contacts"], json!([]));
    server.get("/contacts?email=").await.assert_error(400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_id_sent_as_a_string_links_by_value() {
    let server = TestServer::default().await;
    server.webhook(&json!([contact("qualified")])).await;
    let mut outcome = hook("outcome-added-sale");
    outcome["contactId"] = json!("48213");
    outcome["email"] = json!("someone-else@example.com");
    let reply = server.webhook(&json!([outcome])).await;
    assert_hook_line(&reply["results"][0], "outcome", json!(48213), false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_outcome_is_stored_once() {
    let server = TestServer::default().await;
    server.webhook(&json!([contact("qualified")])).await;
    let first = server.webhook(&hook_fixture("outcome-added-sale")).await;
    let id = assert_hook_line(&first["results"][0], "outcome", json!(48213), false);
    // Resent as is (no delivery id): the same content is a duplicate.
    let again = server.webhook(&hook_fixture("outcome-added-sale")).await;
    assert_eq!(again["accepted"], 0, "{again}");
    assert_eq!(again["duplicates"], 1, "{again}");
    assert_eq!(
        assert_hook_line(&again["results"][0], "outcome", json!(48213), true),
        id
    );
    // With a delivery id: its retry is a duplicate even with other content.
    let headers = [("webhook-id", "msg_outcome_1")];
    let sent = server
        .webhook_with(&hook_fixture("outcome-added-no-sale"), &headers)
        .await;
    let no_sale_id = assert_hook_line(&sent["results"][0], "outcome", Value::Null, false);
    let mut changed = hook("outcome-added-no-sale");
    changed["notes"] = json!("retried with a note");
    let retried = server.webhook_with(&json!([changed]), &headers).await;
    assert_eq!(
        assert_hook_line(&retried["results"][0], "outcome", Value::Null, true),
        no_sale_id
    );
    let timeline = server.get("/contacts/48213").await.json();
    assert_eq!(timeline["outcomes"].as_array().unwrap().len(), 1, "{timeline}");
}
