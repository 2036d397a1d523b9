//! Backtests (SPEC 8) over a store filled with generated contacts, checked
//! against an independent computation; `GET /contacts` and `GET /stats`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// Posts contacts to the webhook in batches; all must be accepted.
pub async fn ingest(server: &TestServer, contacts: &[Value]) {
    for batch in contacts.chunks(50) {
        let reply = server
            .post_json("/webhooks/iclosed", &Value::Array(batch.to_vec()), &[])
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.json()["accepted"], batch.len(), "{}", reply.text);
    }
}

/// A server without forwarding, its store filled with `n` generated contacts.
async fn filled(n: usize, options: Options) -> (TestServer, Vec<Value>) {
    let server = TestServer::start(Options {
        forward: false,
        ..options
    })
    .await;
    let contacts = generated(n, 7);
    ingest(&server, &contacts).await;
    (server, contacts)
}

/// Every rule file of a folder as `{"name": text}`, with `change` applied.
fn rule_files(dir: &Path, change: impl Fn(&str, String) -> Option<String>) -> Value {
    let mut files = serde_json::Map::new();
    for entry in std::fs::read_dir(dir).expect("the rules folder") {
        let path = entry.expect("an entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".rhai") {
            let text = std::fs::read_to_string(&path).expect("a rule file");
            if let Some(text) = change(&name, text) {
                files.insert(name, Value::String(text));
            }
        }
    }
    Value::Object(files)
}

async fn backtest(server: &TestServer, body: Value) -> Reply {
    server.post_json("/backtest", &body, &[]).await
}

/// The bench rules' tiers (`tiers.toml`), computed here independently.
fn bench_tier(score: i64, disqualified: bool) -> &'static str {
    match score {
        _ if disqualified => "disqualified",
        s if s >= 70 => "hot",
        s if s >= 40 => "warm",
        _ => "cold",
    }
}

/// The dry-run scored contacts of the loaded rules (what ingest stored).
async fn scored(server: &TestServer, contacts: &[Value]) -> Vec<Value> {
    let mut all = Vec::new();
    for batch in contacts.chunks(200) {
        let reply = server
            .post_json("/score", &Value::Array(batch.to_vec()), &[])
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        all.extend(reply.json()["results"].as_array().unwrap().clone());
    }
    all
}

fn counts(report: &Value, side: &str) -> BTreeMap<String, u64> {
    report["tiers"][side]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

fn transitions(report: &Value) -> BTreeMap<(String, String), u64> {
    report["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                (
                    t["from"].as_str().unwrap().to_owned(),
                    t["to"].as_str().unwrap().to_owned(),
                ),
                t["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_identical_candidate_reports_no_change() {
    let (server, contacts) = filled(120, Options::default()).await;
    let rules = rule_files(server.rules().path(), |_, text| Some(text));
    let reply = backtest(&server, json!({ "rules": rules, "since": "1d" })).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let report = reply.json();
    assert_eq!(report["contacts"], contacts.len());
    assert_eq!(
        report["baseline"]["rules_version"],
        report["candidate"]["rules_version"]
    );
    assert_eq!(counts(&report, "baseline"), counts(&report, "candidate"));
    assert_eq!(
        counts(&report, "baseline").values().sum::<u64>(),
        contacts.len() as u64
    );
    assert_eq!(report["transitions"], json!([]));
    assert_eq!(report["changed"], json!([]));
    assert_eq!(
        report["score_delta"],
        json!({"mean": 0, "p50": 0, "p90": 0, "min": 0, "max": 0})
    );
    assert_eq!(report["errors"], json!([]));
    assert_eq!(
        report["distribution"]["baseline"],
        report["distribution"]["candidate"]
    );
    assert!(report["since"].as_str().unwrap().ends_with('Z'), "{report}");
    assert!(report["duration_ms"].is_u64());
    assert!(report.get("results").is_none());

    // Against the stored scores: the same rules, so the same answer.
    let reply = backtest(&server, json!({ "rules": rules, "against": "stored" })).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let stored = reply.json();
    assert_eq!(stored["contacts"], contacts.len());
    assert_eq!(stored["transitions"], json!([]));
    assert_eq!(stored["changed"], json!([]));
    assert_eq!(
        stored["baseline"]["rules_version"],
        report["baseline"]["rules_version"]
    );
    server.shutdown().await;
}

/// A candidate without `tiers` takes the loaded set's tiers, not the
/// folder's `tiers.toml` when a change to it failed to load.
#[tokio::test]
async fn a_candidate_without_tiers_uses_the_loaded_tiers() {
    let (server, contacts) = filled(40, Options::default()).await;
    server.rules().write("tiers.toml", "[[tiers]]\nname = 5\n");
    eventually(
        "the broken tiers.toml to be refused",
        Duration::from_secs(10),
        async || {
            let rules = server.rules_status().await;
            (rules["last_error"]["file"] == "tiers.toml").then_some(())
        },
    )
    .await;
    let rules = rule_files(server.rules().path(), |_, text| Some(text));
    let reply = backtest(&server, json!({ "rules": rules })).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let report = reply.json();
    assert_eq!(report["contacts"], contacts.len());
    assert_eq!(
        report["candidate"]["rules_version"], report["baseline"]["rules_version"],
        "the same rule files and the loaded tiers: the loaded set"
    );
    assert_eq!(report["transitions"], json!([]));
    server.shutdown().await;
}

#[tokio::test]
async fn ten_more_points_for_one_answer_move_exactly_the_contacts_it_should() {
    let (server, contacts) = filled(300, Options::default()).await;
    // The candidate: decision makers (the role question) get 30 points instead of 20.
    let candidate = rule_files(server.rules().path(), |name, text| {
        Some(if name == "10-role.rhai" {
            assert!(
                text.contains("add(20, \"Decision maker\")"),
                "the bench rule changed"
            );
            text.replace("add(20, \"Decision maker\")", "add(30, \"Decision maker\")")
        } else {
            text
        })
    });

    // The independent computation, from the baseline's reasons.
    let baseline = scored(&server, &contacts).await;
    let mut expected_tiers: BTreeMap<String, u64> = BTreeMap::new();
    let mut expected_transitions: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut deltas: Vec<i64> = Vec::new();
    let mut expected_changed: Vec<(Value, i64)> = Vec::new();
    for scored in &baseline {
        let reasons = scored["reasons"].as_array().unwrap();
        let raw: i64 = reasons.iter().map(|r| r["points"].as_i64().unwrap()).sum();
        let decision_maker = reasons.iter().any(|r| r["reason"] == "Decision maker");
        let disqualified = scored["disqualified"].as_bool().unwrap();
        let before = raw.clamp(0, 100);
        assert_eq!(scored["score"], before, "{scored}");
        let after = (raw + if decision_maker { 10 } else { 0 }).clamp(0, 100);
        let (from, to) = (bench_tier(before, disqualified), bench_tier(after, disqualified));
        assert_eq!(scored["tier"], from);
        *expected_tiers.entry(to.to_owned()).or_default() += 1;
        if from != to {
            *expected_transitions
                .entry((from.to_owned(), to.to_owned()))
                .or_default() += 1;
        }
        deltas.push(after - before);
        if after != before || from != to {
            expected_changed.push((scored["contact_id"].clone(), after - before));
        }
    }
    assert!(
        !expected_transitions.is_empty(),
        "the generated contacts must include some that change tier"
    );

    for against in ["rules", "stored"] {
        let reply = backtest(
            &server,
            json!({ "rules": candidate, "since": "1d", "top": 1000, "against": against }),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let report = reply.json();
        assert_eq!(report["contacts"], contacts.len(), "{against}");
        for (tier, n) in &expected_tiers {
            assert_eq!(counts(&report, "candidate")[tier], *n, "{against}: tier {tier}");
        }
        assert_eq!(
            counts(&report, "candidate").values().sum::<u64>(),
            contacts.len() as u64
        );
        assert_eq!(transitions(&report), expected_transitions, "{against}");
        deltas.sort();
        let n = deltas.len();
        let rank = |q: f64| deltas[((q * n as f64).ceil() as usize).max(1) - 1];
        let mean = deltas.iter().sum::<i64>() as f64 / n as f64;
        let delta = &report["score_delta"];
        assert!(
            (delta["mean"].as_f64().unwrap() - mean).abs() < 0.001,
            "{delta} vs {mean}"
        );
        assert_eq!(delta["p50"], rank(0.5));
        assert_eq!(delta["p90"], rank(0.9));
        assert_eq!(delta["min"], deltas[0]);
        assert_eq!(delta["max"], deltas[n - 1]);
        // Every changed contact is listed (top 1000), tier changes first.
        let changed = report["changed"].as_array().unwrap();
        assert_eq!(changed.len(), expected_changed.len(), "{against}");
        let tier_changes: usize = expected_transitions.values().sum::<u64>() as usize;
        for (i, c) in changed.iter().enumerate() {
            let moved = c["baseline"]["tier"] != c["candidate"]["tier"];
            assert_eq!(moved, i < tier_changes, "tier changes come first: {c}");
            let want = expected_changed
                .iter()
                .find(|(id, _)| *id == c["contact_id"])
                .unwrap_or_else(|| panic!("{c} is not expected to change"));
            assert_eq!(
                c["candidate"]["score"].as_i64().unwrap() - c["baseline"]["score"].as_i64().unwrap(),
                want.1
            );
            assert_eq!(c["reasons_added"], json!(["Decision maker"]), "{c}");
            assert_eq!(c["reasons_removed"], json!(["Decision maker"]), "{c}");
        }
        // Top 3: the three largest changes among the tier changes.
        let reply = backtest(
            &server,
            json!({ "rules": candidate, "top": 3, "against": against }),
        )
        .await;
        let top = reply.json()["changed"].as_array().unwrap().clone();
        assert_eq!(top.len(), 3.min(expected_changed.len()));
        assert_eq!(top[..], changed[..top.len()]);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_candidate_that_does_not_compile_is_422_with_file_line_and_column() {
    let (server, _) = filled(5, Options::default()).await;
    let rules = rule_files(server.rules().path(), |name, text| {
        Some(if name == "30-budget.rhai" {
            text.replacen('\n', "\nlet broken = ;\n", 1)
        } else {
            text
        })
    });
    let reply = backtest(&server, json!({ "rules": rules })).await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    let body = reply.json();
    assert!(
        body["error"].as_str().unwrap().contains("30-budget.rhai"),
        "{body}"
    );
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["file"], "30-budget.rhai");
    assert_eq!(errors[0]["line"], 2);
    assert!(errors[0]["column"].as_u64().unwrap() > 0);
    assert!(!errors[0]["message"].as_str().unwrap().is_empty());

    let reply = backtest(
        &server,
        json!({ "rules": rules, "tiers": "[[tiers]]\nname = 5\n" }),
    )
    .await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    let files: Vec<Value> = reply.json()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["file"].clone())
        .collect();
    assert!(files.contains(&json!("tiers.toml")), "{files:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_contact_seen_twice_counts_once_with_its_latest_event() {
    let server = TestServer::start(Options {
        forward: false,
        ..Options::default()
    })
    .await;
    let mut potential = contact_with_id("potential", 777);
    potential["questionsAndAnswers"] = json!({"What is your role?": "Student"});
    let mut qualified = potential.clone();
    qualified["status"] = json!("QUALIFIED");
    qualified["questionsAndAnswers"] = json!({"What is your role?": "CEO"});
    ingest(&server, &[potential]).await;
    ingest(&server, &[qualified]).await;
    let rules = rule_files(server.rules().path(), |_, text| Some(text));

    let latest = backtest(&server, json!({ "rules": rules, "against": "stored" }))
        .await
        .json();
    assert_eq!(latest["contacts"], 1, "{latest}");
    let given = backtest(&server, json!({"rules": rules, "contacts": [{"id": 777, "questionsAndAnswers": {"What is your role?": "CEO"}}]}))
        .await
        .json();
    assert_eq!(
        latest["distribution"]["candidate"], given["distribution"]["candidate"],
        "the latest event (QUALIFIED, CEO) is the one scored"
    );

    let every = backtest(&server, json!({ "rules": rules, "all_events": true }))
        .await
        .json();
    assert_eq!(every["contacts"], 2, "{every}");
    server.shutdown().await;
}

#[tokio::test]
async fn given_contacts_are_scored_both_ways_in_input_order() {
    let server = TestServer::start(Options {
        forward: false,
        ..Options::default()
    })
    .await;
    let contacts = generated(6, 11);
    let candidate = rule_files(server.rules().path(), |name, text| {
        (name != "50-email.rhai").then_some(text)
    });
    let reply = backtest(&server, json!({ "rules": candidate, "contacts": contacts })).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let report = reply.json();
    assert_eq!(report["contacts"], 6);
    assert_eq!(report["since"], Value::Null);
    let results = report["results"].as_array().unwrap();
    let baseline = scored(&server, &contacts).await;
    assert_eq!(results.len(), 6);
    for ((result, contact), loaded) in results.iter().zip(&contacts).zip(&baseline) {
        assert_eq!(result["baseline"]["contact_id"], contact["id"]);
        assert_eq!(result["candidate"]["contact_id"], contact["id"]);
        assert_eq!(result["baseline"]["score"], loaded["score"]);
        assert_eq!(result["baseline"]["reasons"], loaded["reasons"]);
        assert_eq!(result["baseline"]["id"], Value::Null);
        let without_email: Vec<&Value> = loaded["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["rule"] != "50-email.rhai")
            .collect();
        assert_eq!(result["candidate"]["reasons"], json!(without_email));
        assert_eq!(result["candidate"]["contact"], *contact);
    }
    // Given contacts cannot be compared with stored scores.
    let reply = backtest(
        &server,
        json!({ "rules": candidate, "contacts": contacts, "against": "stored" }),
    )
    .await;
    assert!(reply.assert_error(400).contains("stored"));
    let reply = backtest(&server, json!({ "rules": candidate, "contacts": [{"no": "id"}] })).await;
    assert!(reply.assert_error(400).contains("id"));
    server.shutdown().await;
}

#[tokio::test]
async fn bounded_requests_are_refused_clearly() {
    let (server, _) = filled(
        12,
        Options {
            backtest_max_contacts: 10,
            admin_token: Some("admin-secret".into()),
            ..Options::default()
        },
    )
    .await;
    let rules = rule_files(server.rules().path(), |_, text| Some(text));
    let reply = backtest(&server, json!({ "rules": rules })).await;
    let error = reply.assert_error(400);
    assert!(error.contains("12") && error.contains("10"), "{error}");
    for (body, needle) in [
        (json!({ "rules": rules, "against": "yesterday" }), "against"),
        (json!({ "rules": rules, "since": "a while" }), "since"),
        (json!({ "rules": rules, "top": 5000 }), "top"),
        (json!({ "rules": rules, "rulez": {} }), "rulez"),
        (json!({ "since": "1d" }), "rules"),
    ] {
        let reply = backtest(&server, body).await;
        assert!(
            reply.assert_error(400).contains(needle),
            "{needle}: {}",
            reply.text
        );
    }
    let reply = server
        .request(
            "POST",
            "/backtest",
            Some(json!({ "rules": rules }).to_string().into_bytes()),
            &[("authorization", "Bearer wrong")],
        )
        .await;
    reply.assert_error(401);
    server.shutdown().await;
}

#[tokio::test]
async fn one_backtest_over_history_at_a_time() {
    let (server, _) = filled(
        8,
        Options {
            rule_max_operations: 10_000_000,
            rule_timeout: Duration::from_secs(10),
            ..Options::default()
        },
    )
    .await;
    // A candidate that spends 10 million operations on every contact: still
    // running when the second request comes.
    let slow = rule_files(server.rules().path(), |name, text| {
        Some(if name == "10-role.rhai" {
            format!("loop {{}}\n{text}")
        } else {
            text
        })
    });
    let start_slow = || {
        let client = server.client.clone();
        let url = server.url("/backtest");
        let body = json!({ "rules": slow }).to_string();
        tokio::spawn(async move {
            client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("the slow backtest")
                .status()
                .as_u16()
        })
    };
    let mut first = start_slow();
    let rules = rule_files(server.rules().path(), |_, text| Some(text));
    // Until the slow one holds the slot, a second backtest runs (200) — and
    // may itself hold the slot when the slow one arrives, which is then
    // refused (429) and sent again. Once the slow one runs, a second is
    // refused. Should the slow one end otherwise, say how.
    let second = eventually(
        "a second backtest is refused",
        Duration::from_secs(60),
        async || {
            if first.is_finished() {
                match (&mut first).await.unwrap() {
                    429 => first = start_slow(),
                    status => return Some(Err(status)),
                }
            }
            let reply = backtest(&server, json!({ "rules": rules })).await;
            (reply.status == 429).then_some(Ok(reply))
        },
    )
    .await;
    let second = second.unwrap_or_else(|status| {
        panic!("the slow backtest ended (status {status}) before a second one was refused")
    });
    let error = second.assert_error(429);
    assert!(error.contains("running"), "{error}");
    let retry_after: u64 = second.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    // The playground's given contacts are not held up by it.
    let reply = backtest(&server, json!({ "rules": rules, "contacts": [{"id": 1}] })).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(first.await.unwrap(), 200);
    let reply = backtest(&server, json!({ "rules": rules })).await;
    assert_eq!(reply.status, 200, "the slot is free again: {}", reply.text);
    server.shutdown().await;
}

#[tokio::test]
async fn contacts_lists_the_newest_stored_contacts() {
    let (server, contacts) = filled(8, Options::default()).await;
    let reply = server.get("/contacts?limit=3").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let listed = reply.json()["contacts"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 3);
    for (entry, contact) in listed.iter().zip(contacts.iter().rev()) {
        assert_eq!(entry["contact_id"], contact["id"]);
        assert_eq!(entry["contact"], *contact);
        assert!(entry["id"].as_str().unwrap().starts_with("evt_"));
        assert!(entry["tier"].is_string() && entry["score"].is_number());
        assert!(entry["received_at"].as_str().unwrap().ends_with('Z'));
    }
    server.get("/contacts?limit=0").await.assert_error(400);
    server.get("/contacts?limit=5000").await.assert_error(400);
    server.shutdown().await;
}

#[tokio::test]
async fn stats_count_contacts_duplicates_tiers_and_rule_errors() {
    let rules = RulesDir::bench();
    rules.write(
        "95-fails.rhai",
        "if answer(\"What is your role?\") == \"CEO\" { throw \"boom\"; }",
    );
    let (server, contacts) = filled(
        40,
        Options {
            rules: Some(rules),
            ..Options::default()
        },
    )
    .await;
    // Duplicates: the first ten again.
    let reply = server
        .post_json("/webhooks/iclosed", &Value::Array(contacts[..10].to_vec()), &[])
        .await;
    assert_eq!(reply.json()["duplicates"], 10);
    let scored = scored(&server, &contacts).await;
    let mut tiers: BTreeMap<String, u64> = BTreeMap::new();
    let mut failed = 0;
    for s in &scored {
        *tiers.entry(s["tier"].as_str().unwrap().to_owned()).or_default() += 1;
        failed += s["errors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["rule"] == "95-fails.rhai")
            .count() as u64;
    }
    assert!(failed > 0, "some generated contacts are CEOs");

    let reply = server.get("/stats?since=2h&bucket=1h").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let stats = reply.json();
    let buckets = stats["buckets"].as_array().unwrap();
    assert!((2..=3).contains(&buckets.len()), "{stats}");
    let sum = |field: &str| buckets.iter().map(|b| b[field].as_u64().unwrap()).sum::<u64>();
    assert_eq!(sum("received"), 40);
    assert_eq!(sum("duplicates"), 10);
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for bucket in buckets {
        assert!(bucket["start"].as_str().unwrap().ends_with('Z'));
        for (tier, n) in bucket["tiers"].as_object().unwrap() {
            *seen.entry(tier.clone()).or_default() += n.as_u64().unwrap();
        }
    }
    assert_eq!(seen, tiers);
    assert_eq!(stats["rule_errors"], json!({ "95-fails.rhai": failed }));
    assert_eq!(
        stats["deliveries"],
        json!({"pending": 0, "dead": 0, "delivered": 0})
    );
    server.get("/stats?bucket=1s").await.assert_error(400);
    server.get("/stats?since=400d&bucket=1m").await.assert_error(400);
    server.shutdown().await;
}

#[tokio::test]
async fn the_command_line_backtest_matches_the_endpoint_while_serve_runs() {
    let (server, contacts) = filled(60, Options::default()).await;
    let candidate = RulesDir::bench();
    let role = std::fs::read_to_string(candidate.path().join("10-role.rhai")).unwrap();
    candidate.write(
        "10-role.rhai",
        &role.replace("add(20, \"Decision maker\")", "add(30, \"Decision maker\")"),
    );
    let csv = tempfile::tempdir().unwrap();
    let csv_path = csv.path().join("contacts.csv");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = vec![
            "backtest".into(),
            "--rules".into(),
            server.rules().path().display().to_string(),
            "--candidate".into(),
            candidate.path().display().to_string(),
            "--store".into(),
            server.store().url.clone(),
            "--since".into(),
            "1d".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };

    let out = run_binary(args(&["--format", "json", "--csv", csv_path.to_str().unwrap()])).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut from_cli: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    let reply = backtest(
        &server,
        json!({ "rules": rule_files(candidate.path(), |_, t| Some(t)), "since": "1d" }),
    )
    .await;
    let mut from_http = reply.json();
    // Times differ from run to run: the slowest rule files are compared by
    // how many are listed and that each is a candidate rule file.
    let files = rule_files(candidate.path(), |_, t| Some(t));
    for report in [&mut from_cli, &mut from_http] {
        let slowest = report["slowest_rules"].as_array().expect("slowest_rules");
        assert_eq!(slowest.len(), 5, "{slowest:?}");
        assert!(
            slowest
                .iter()
                .all(|r| files.get(r["rule"].as_str().unwrap()).is_some())
        );
        report.as_object_mut().unwrap().remove("slowest_rules");
        report.as_object_mut().unwrap().remove("duration_ms");
        report.as_object_mut().unwrap().remove("since");
    }
    assert_eq!(from_cli, from_http);
    assert_eq!(from_cli["contacts"], contacts.len());

    // One CSV row per contact, in the store's order.
    let text = std::fs::read_to_string(&csv_path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "contact_id,baseline_score,baseline_tier,candidate_score,candidate_tier"
    );
    assert_eq!(lines.len(), contacts.len() + 1);
    for (line, contact) in lines[1..].iter().zip(&contacts) {
        assert!(line.starts_with(&format!("{},", contact["id"])), "{line}");
    }
    let first_changed = &from_cli["changed"][0];
    let row = format!(
        "{},{},{},{},{}",
        first_changed["contact_id"],
        first_changed["baseline"]["score"],
        first_changed["baseline"]["tier"].as_str().unwrap(),
        first_changed["candidate"]["score"],
        first_changed["candidate"]["tier"].as_str().unwrap()
    );
    assert!(lines.contains(&row.as_str()), "{row} in\n{text}");

    // The table: tiers, the matrix, the top changes.
    let out = run_binary(args(&[])).await;
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains(&format!("Backtest of {} contacts", contacts.len())),
        "{table}"
    );
    for heading in ["TIER", "TRANSITIONS", "SCORE CHANGE", "TOP CHANGES"] {
        assert!(table.contains(heading), "{heading} in\n{table}");
    }

    // A broken candidate: exit 2 with file:line:column.
    candidate.write("10-role.rhai", "let x = ;\n");
    let out = run_binary(args(&[])).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("10-role.rhai:1:"), "{stderr}");
    server.shutdown().await;
}

/// issue 19 (10): a numeric contact id is one contact per JSON number value
/// (`1` and `1.0` are one contact) and keeps every digit past 64 bits
/// (`18446744073709551616` and `…617` are two, even with the same content),
/// on both stores: the backtest counts contacts by their latest event.
#[tokio::test]
async fn numeric_contact_ids_are_one_contact_per_value_with_every_digit() {
    let server = TestServer::start(Options {
        forward: false,
        ..Options::default()
    })
    .await;
    let rules = rule_files(server.rules().path(), |_, text| Some(text));
    let post = async |body: &str| {
        let reply = server
            .request(
                "POST",
                "/webhooks/iclosed",
                Some(body.as_bytes().to_vec()),
                &[("content-type", "application/json")],
            )
            .await;
        assert_eq!(reply.status, 200, "{body}: {}", reply.text);
        reply.json()
    };
    let contacts = async || -> Value {
        let reply = backtest(&server, json!({ "rules": rules, "since": "1d" })).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json()["contacts"].clone()
    };
    post(r#"[{"id": 1, "email": "one@example.com"}]"#).await;
    post(r#"[{"id": 1.0, "email": "one-again@example.com"}]"#).await;
    assert_eq!(contacts().await, 1, "1 and 1.0 are one contact");
    post(r#"[{"id": 18446744073709551616, "email": "big@example.com"}]"#).await;
    let second = post(r#"[{"id": 18446744073709551617, "email": "big@example.com"}]"#).await;
    assert_eq!(second["results"][0]["duplicate"], false, "{second}");
    assert_eq!(contacts().await, 3, "two ids past 64 bits are two contacts");
    server.shutdown().await;
}
