//! Rescoring (SPEC 12): a rule change, a call and time move a contact's
//! tier downstream. Each test checks what the receiver got against an
//! independent computation (a dry run of the new rules), never timing.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Options, RulesDir, TestServer, WAIT, eventually, hook_fixture};

/// Waits until the newest rescore job of `cause` is done; returns it.
async fn wait_job_done(server: &TestServer, cause: &str) -> Value {
    eventually(
        &format!("a finished rescore of cause {cause}"),
        WAIT,
        async || {
            let jobs = server.get("/rescore").await.json();
            jobs["jobs"]
                .as_array()?
                .iter()
                .find(|job| job["cause"] == cause && job["state"] == "done")
                .cloned()
        },
    )
    .await
}

/// The `contact.rescored` bodies the receiver got, by contact id text.
fn rescored(server: &TestServer) -> Vec<Value> {
    server
        .receiver()
        .requests()
        .iter()
        .map(|r| r.json())
        .filter(|body| body["type"] == "contact.rescored")
        .collect()
}

fn key(id: &Value) -> String {
    id.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_change_pushes_exactly_the_contacts_whose_score_or_tier_moved() {
    let server = TestServer::start(Options {
        rescore_on_reload: true,
        ..Options::default()
    })
    .await;
    let contacts = leadscore::demo::contacts(11, 80);
    let reply = server.webhook(&Value::Array(contacts.clone())).await;
    let before: HashMap<String, (Value, Value)> = reply["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| {
            (
                key(&line["contact_id"]),
                (line["score"].clone(), line["tier"].clone()),
            )
        })
        .collect();
    server.receiver().wait_for(80, WAIT).await;

    // Free-email leads are worth more now: some move, some stay (clamped
    // at the maximum, or disqualified).
    server.rules().write(
        "90-free-email.rhai",
        "let email = contact.email;\nif email != () && email.ends_with(\"@gmail.com\") { add(25, \"Free email, now welcome\"); }\n",
    );
    let job = wait_job_done(&server, "rules").await;

    // What the new rules give, independently: a dry run of every contact.
    let mut expected: HashMap<String, (Value, Value)> = HashMap::new();
    for contact in &contacts {
        let scored = server.dry_run(contact).await;
        let id = key(&scored["contact_id"]);
        let now = (scored["score"].clone(), scored["tier"].clone());
        if before[&id] != now {
            expected.insert(id, now);
        }
    }
    assert!(
        !expected.is_empty() && expected.len() < 80,
        "a change that moves some: {}",
        expected.len()
    );
    assert_eq!(job["scored"], 80, "{job}");
    assert_eq!(job["changed"], expected.len(), "{job}");
    assert_eq!(job["pushed"], expected.len(), "{job}");

    let pushed = eventually("every rescored contact delivered", WAIT, async || {
        let pushed = rescored(&server);
        (pushed.len() >= expected.len()).then_some(pushed)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pushed_again = rescored(&server);
    assert_eq!(pushed_again.len(), pushed.len(), "nothing more arrives");
    let mut seen = std::collections::HashSet::new();
    for body in &pushed {
        let id = key(&body["contact_id"]);
        assert!(seen.insert(id.clone()), "{id} pushed twice");
        let (score, tier) = expected
            .get(&id)
            .unwrap_or_else(|| panic!("{id} did not change: {body}"));
        assert_eq!((&body["score"], &body["tier"]), (score, tier), "{body}");
        let (old_score, old_tier) = &before[&id];
        assert_eq!(&body["previous"]["score"], old_score, "{body}");
        assert_eq!(&body["previous"]["tier"], old_tier, "{body}");
        assert!(body["previous"]["rules_version"].is_string(), "{body}");
        assert!(body["previous"]["scored_at"].is_string(), "{body}");
        assert_eq!(body["cause"], "rules", "{body}");
        assert!(body["id"].as_str().unwrap().starts_with("evt_"), "{body}");
    }
    assert_eq!(seen.len(), expected.len());

    // The contact timeline shows the rescored event with its cause.
    let some = pushed[0]["contact_id"].clone();
    let timeline = server.get(&format!("/contacts/{}", some)).await.json();
    let types: Vec<&str> = timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["contact.scored", "contact.rescored"], "{timeline}");
    assert_eq!(timeline["events"][1]["cause"], "rules", "{timeline}");
    assert_eq!(
        timeline["events"][1]["previous"]["tier"],
        before[&key(&some)].1,
        "{timeline}"
    );
    assert!(timeline["events"][0].get("cause").is_none(), "{timeline}");

    // Rescored events are not received contacts.
    let stats = server.get("/stats?since=1h").await.json();
    let received: u64 = stats["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["received"].as_u64().unwrap())
        .sum();
    assert_eq!(received, 80, "{stats}");
    let rescored: u64 = stats["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["rescored"].as_u64().unwrap())
        .sum();
    assert_eq!(rescored as usize, expected.len(), "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescore_jobs_start_once_report_progress_and_cancel() {
    let server = TestServer::default().await;
    server
        .webhook(&Value::Array(leadscore::demo::contacts(3, 20)))
        .await;
    let started = server.post_json("/rescore", &json!({"since": "1d"}), &[]).await;
    assert_eq!(started.status, 202, "{}", started.text);
    let job = started.json();
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["cause"], "manual");
    assert_eq!(job["state"], "running");
    let done = eventually("the manual rescore done", WAIT, async || {
        let job = server.get(&format!("/rescore/{id}")).await.json();
        (job["state"] == "done").then_some(job)
    })
    .await;
    // Nothing changed: the rules are the same.
    assert_eq!(
        (
            done["scored"].as_u64(),
            done["changed"].as_u64(),
            done["pushed"].as_u64()
        ),
        (Some(20), Some(0), Some(0)),
        "{done}"
    );
    assert!(done["finished_at"].is_string(), "{done}");
    for field in [
        "id",
        "state",
        "cause",
        "since",
        "scored",
        "changed",
        "pushed",
        "started_at",
        "finished_at",
    ] {
        assert!(done.get(field).is_some(), "{field} missing: {done}");
    }
    server.get("/rescore/rsc_nope").await.assert_error(404);
    server
        .post_json("/rescore", &json!({"since": "forever"}), &[])
        .await
        .assert_error(400);
    server
        .post_json("/rescore", &json!({"bogus": 1}), &[])
        .await
        .assert_error(400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_hook_rescores_its_contact_at_once() {
    let rules = RulesDir::bench();
    rules.write(
        "75-calls.rhai",
        "let booked = calls().filter(|c| c.status != \"canceled\");\nif booked.len() > 0 { add(30, \"Booked a discovery call\"); }\n",
    );
    let server = TestServer::start(Options {
        rules: Some(rules),
        ..Options::default()
    })
    .await;
    let mut contact = hook_fixture("call-booked")[0]["invitee"].clone();
    contact = json!({"id": 7001, "email": contact["email"], "status": "POTENTIAL"});
    let first = server.webhook(&json!([contact])).await;
    let before = first["results"][0].clone();
    server.receiver().wait_for(1, WAIT).await;

    server.webhook(&hook_fixture("call-booked")).await;
    let pushed = eventually("the call's rescore delivered", WAIT, async || {
        rescored(&server).into_iter().next()
    })
    .await;
    assert_eq!(pushed["contact_id"], 7001);
    assert_eq!(pushed["cause"], "call");
    assert_eq!(pushed["previous"]["score"], before["score"]);
    assert!(
        pushed["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["reason"] == "Booked a discovery call"),
        "{pushed}"
    );

    // The cancellation takes the points away again.
    server.webhook(&hook_fixture("call-canceled")).await;
    let again = eventually("the cancellation's rescore delivered", WAIT, async || {
        let all = rescored(&server);
        (all.len() >= 2).then(|| all[1].clone())
    })
    .await;
    assert_eq!(again["score"], before["score"], "{again}");
    assert_eq!(again["previous"]["score"], pushed["score"], "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decay_rule_on_a_schedule_demotes_a_lead_without_a_call_only() {
    // `first_seen()` more than a second ago and no booked call: -40.
    let rules = RulesDir::bench();
    rules.write(
        "85-decay.rhai",
        "let age = days_since(first_seen());\nlet booked = calls().filter(|c| c.status != \"canceled\").len();\nif age != () && age * 86400.0 > 1.0 && booked == 0 { add(-40, \"No call booked yet\"); }\n",
    );
    let server = TestServer::start(Options {
        rules: Some(rules),
        rescore_every: Some(Duration::from_millis(1500)),
        ..Options::default()
    })
    .await;
    let hot = |id: u64, email: &str| {
        json!({"id": id, "email": email, "status": "QUALIFIED",
               "questionsAndAnswers": {"What is your role?": "CEO",
                                       "What is your monthly budget for this project?": "$10,000+",
                                       "How many employees does your company have?": "1000+"}})
    };
    let reply = server
        .webhook(&json!([
            hot(8001, "no.call@example.com"),
            hot(8002, "raya.fleming@northwind-logistics.com")
        ]))
        .await;
    let tier = reply["results"][0]["tier"].clone();
    assert_eq!(reply["results"][1]["tier"], tier, "{reply}");
    // 8002 books a call (the fixture's invitee).
    server.webhook(&hook_fixture("call-booked")).await;

    let demoted = eventually("the schedule's rescore demotes 8001", WAIT, async || {
        rescored(&server)
            .into_iter()
            .find(|b| b["contact_id"] == 8001 && b["cause"] == "schedule")
    })
    .await;
    assert_eq!(demoted["previous"]["tier"], tier, "{demoted}");
    assert!(
        demoted["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["reason"] == "No call booked yet"),
        "{demoted}"
    );
    // A later scheduled job has run too: 8002 (booked) was never demoted.
    wait_job_done(&server, "schedule").await;
    let later = server.get("/contacts/8002").await.json();
    for event in later["events"].as_array().unwrap() {
        assert!(
            !event["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["reason"] == "No call booked yet"),
            "{later}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rescore_command_dry_runs_then_pushes_through_the_engine_on_the_same_store() {
    let server = TestServer::default().await;
    let contacts = leadscore::demo::contacts(5, 40);
    let reply = server.webhook(&Value::Array(contacts.clone())).await;
    let before: HashMap<String, (Value, Value)> = reply["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| {
            (
                key(&line["contact_id"]),
                (line["score"].clone(), line["tier"].clone()),
            )
        })
        .collect();
    server.receiver().wait_for(40, WAIT).await;

    // The new rules, in a folder of their own (the engine keeps its own).
    let changed_rules = RulesDir::copy_of(server.rules().path());
    changed_rules.write("90-everyone.rhai", "add(5, \"Everyone counts\");\n");
    let command = |extra: &[&str]| {
        let mut args: Vec<String> = vec![
            "rescore".into(),
            "--rules".into(),
            changed_rules.path().display().to_string(),
            "--store".into(),
            server.store().url.clone(),
            "--since".into(),
            "1d".into(),
            "--format".into(),
            "json".into(),
            // The engine forwards with --forward-url: its `default` destination.
            "--forward-url".into(),
            "http://127.0.0.1:9/".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    // What the new rules give, independently: the engine's own rules plus
    // the new file, in a second engine's dry run.
    let judge = TestServer::start(Options {
        rules: Some(RulesDir::copy_of(changed_rules.path())),
        forward: false,
        ..Options::default()
    })
    .await;
    let mut after: HashMap<String, (Value, Value)> = HashMap::new();
    for contact in &contacts {
        let scored = judge.dry_run(contact).await;
        after.insert(
            key(&contact["id"]),
            (scored["score"].clone(), scored["tier"].clone()),
        );
    }
    let expected = after.iter().filter(|(id, now)| before[*id] != **now).count();
    assert!(expected > 0);

    let dry = crate::support::run_binary(command(&["--dry-run"])).await;
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    let report: Value = serde_json::from_slice(&dry.stdout).expect("a backtest report");
    assert_eq!(report["contacts"], 40, "{report}");
    let moved = report["score_delta"]["max"].as_f64().unwrap();
    assert_eq!(moved, 5.0, "{report}");
    assert!(rescored(&server).is_empty(), "a dry run stores nothing");

    let run = crate::support::run_binary(command(&[])).await;
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let job: Value = serde_json::from_slice(&run.stdout).expect("the job");
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["cause"], "manual", "{job}");
    assert_eq!(job["scored"], 40, "{job}");
    assert_eq!(job["changed"], expected, "{job}");
    assert_eq!(job["pushed"], expected, "{job}");
    // The engine on the same store delivers them.
    let pushed = eventually("the rescored contacts delivered", WAIT, async || {
        let pushed = rescored(&server);
        (pushed.len() >= expected).then_some(pushed)
    })
    .await;
    assert_eq!(pushed.len(), expected);
    for body in &pushed {
        let id = key(&body["contact_id"]);
        assert_eq!(
            (&body["score"], &body["tier"]),
            (&after[&id].0, &after[&id].1),
            "{body}"
        );
        assert_eq!(body["previous"]["score"], before[&id].0, "{body}");
    }
    // The job is the store's: the engine shows it too.
    let id = job["id"].as_str().unwrap();
    assert_eq!(
        server.get(&format!("/rescore/{id}")).await.json()["state"],
        "done"
    );
}

/// SPEC 12 `calls()` at ingest: a booking that arrived before its contact
/// (waiting for a contact with its email) counts when the contact comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_that_came_first_counts_when_its_contact_is_scored() {
    let rules = RulesDir::bench();
    rules.write(
        "75-calls.rhai",
        "if calls().filter(|c| c.status != \"canceled\").len() > 0 { add(30, \"Booked a discovery call\"); }\n",
    );
    let server = TestServer::start(Options {
        rules: Some(rules),
        ..Options::default()
    })
    .await;
    let booked = server.webhook(&hook_fixture("call-booked")).await;
    assert_eq!(booked["results"][0]["contact_id"], Value::Null, "{booked}");
    let contact = json!({"id": 7100, "email": "RAYA.fleming@northwind-logistics.com", "status": "POTENTIAL"});
    let without_calls = server.dry_run(&contact).await;
    let stored = server.webhook(&json!([contact])).await;
    let line = &stored["results"][0];
    assert_eq!(
        line["score"].as_f64().unwrap(),
        without_calls["score"].as_f64().unwrap() + 30.0,
        "{line} vs {without_calls}"
    );
    let timeline = server.get("/contacts/7100").await.json();
    assert_eq!(timeline["calls"][0]["status"], "booked", "{timeline}");
}
