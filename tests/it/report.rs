//! The outcomes report (SPEC 11): `GET /report` is an admin endpoint whose
//! parameters are checked; end to end, generated contacts and call and
//! outcome hooks through the webhook, the report and a backtest's
//! `outcomes` checked against an independent computation.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use crate::backtest::ingest;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_needs_the_admin_token() {
    let token = "adm-report-7";
    let server = TestServer::start(Options {
        admin_token: Some(token.into()),
        ..Options::plain()
    })
    .await;
    for auth in [
        "",
        "Bearer wrong",
        "Basic YWRtOnJlcG9ydA==",
        &format!("Bearer {token}0"),
    ] {
        // An explicit Authorization keeps the harness from adding the token.
        let reply = server
            .request("GET", "/report", None, &[("authorization", auth)])
            .await;
        reply.assert_error(401);
    }
    let reply = server
        .request(
            "GET",
            &format!("/report?token={token}"),
            None,
            &[("authorization", "")],
        )
        .await;
    reply.assert_error(401);
    // With the token the request gets through to the report.
    let reply = server.get("/report").await;
    assert!(
        ![401, 403, 404, 405].contains(&reply.status),
        "GET /report with the admin token: {} {}",
        reply.status,
        reply.text
    );
    server.shutdown().await;

    // Without an admin token: only this machine's Host names.
    let server = TestServer::start(Options::plain()).await;
    let reply = server
        .request("GET", "/report", None, &[("host", "evil.example")])
        .await;
    reply.assert_error(403);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_parameters_out_of_range_are_refused_by_name() {
    let server = TestServer::start(Options::plain()).await;
    for path in [
        "/report?since=10000-01-01T00:00:00Z",
        "/report?since=9999-12-31T23:00:00-05:00",
        "/report?since=99999999999999999999d",
        "/report?since=yesterday",
        "/report?since=1h&since=2h",
    ] {
        let reply = server.get(path).await;
        reply.assert_error(400);
        let message = reply.json()["error"].as_str().unwrap().to_owned();
        assert!(message.starts_with("since"), "{path}: {message}");
    }
    server.shutdown().await;
}

/// Contacts given inline have no outcomes: the report has no `outcomes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backtest_of_given_contacts_has_no_outcomes() {
    let server = TestServer::start(Options::plain()).await;
    let reply = server
        .post_json(
            "/backtest",
            &json!({"rules": {"10-a.rhai": "add(75, \"A\");"}, "contacts": [contact("qualified")]}),
            &[],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let report = reply.json();
    assert_eq!(report["contacts"], 1);
    assert!(report.get("outcomes").is_none(), "{report}");
    server.shutdown().await;
}

/// What the hooks of the end-to-end tests say about one contact.
#[derive(Debug, Default, Clone)]
struct Bought {
    booked: bool,
    with_outcome: bool,
    converted: bool,
    revenue: f64,
}

/// Call and outcome hooks for generated contacts, by index: every 4th
/// books a call (linked by email), every 6th buys (`dealValue`), every
/// 6th from the 3rd has a no-sale outcome, every 10th from the 7th a
/// partial sale whose value is only in `deal.value`.
fn hooks(contacts: &[Value]) -> (Vec<Value>, HashMap<String, Bought>) {
    let mut hooks = Vec::new();
    let mut bought = HashMap::new();
    for (i, contact) in contacts.iter().enumerate() {
        let id = contact["id"].clone();
        let email = contact["email"].as_str().expect("an email").to_owned();
        let mut b = Bought::default();
        if i % 4 == 0 {
            b.booked = true;
            hooks.push(json!({
                "hookType": "Call booked",
                "event_type": {"uuid": "812", "name": "Discovery Call"},
                "event": {"uuid": format!("call-{i}"), "utc_start_time": "2026-11-24T17:00:00+00:00"},
                "invitee": {"email": email, "name": "x"}
            }));
        }
        let outcome = |uuid: usize, outcome: &str, deal_value: Value, deal: Value| {
            json!({"hookType": "Outcome added", "uuid": uuid, "contactId": id, "email": email,
                   "callOutcome": outcome, "dealValue": deal_value, "deal": deal})
        };
        if i % 6 == 0 {
            let value = 1000.0 + i as f64 + 0.25;
            hooks.push(outcome(10_000 + i, "SALE", json!(value), Value::Null));
            (b.with_outcome, b.converted, b.revenue) = (true, true, b.revenue + value);
        } else if i % 6 == 3 {
            hooks.push(outcome(20_000 + i, "NO_SHOW", Value::Null, Value::Null));
            b.with_outcome = true;
        }
        if i % 10 == 7 {
            let deal = json!({"transactionType": "SALE", "value": 500});
            hooks.push(outcome(30_000 + i, "PARTIAL_SALE", Value::Null, deal));
            (b.with_outcome, b.converted, b.revenue) = (true, true, b.revenue + 500.0);
        }
        bought.insert(id.to_string(), b);
    }
    (hooks, bought)
}

/// Each contact's dry-run result (what ingest stored): id → (score, tier, disqualified).
async fn scores(server: &TestServer, contacts: &[Value]) -> HashMap<String, (f64, String, bool)> {
    let reply = server
        .post_json("/score", &Value::Array(contacts.to_vec()), &[])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["contact_id"].to_string(),
                (
                    r["score"].as_f64().unwrap(),
                    r["tier"].as_str().unwrap().to_owned(),
                    r["disqualified"].as_bool().unwrap(),
                ),
            )
        })
        .collect()
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

fn rate(n: u64, d: u64) -> Value {
    if d == 0 {
        Value::Null
    } else {
        json!(round(n as f64 / d as f64, 4))
    }
}

/// A server (bench rules) holding 120 generated contacts and their hooks.
async fn with_outcomes() -> (TestServer, Vec<Value>, HashMap<String, Bought>) {
    let server = TestServer::start(Options {
        forward: false,
        ..Options::default()
    })
    .await;
    let contacts = generated(120, 11);
    ingest(&server, &contacts).await;
    let (hooks, bought) = hooks(&contacts);
    for batch in hooks.chunks(50) {
        let reply = server
            .post_json("/webhooks/iclosed", &Value::Array(batch.to_vec()), &[])
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    (server, contacts, bought)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_counts_what_the_hooks_say_per_tier_and_decile() {
    let (server, contacts, bought) = with_outcomes().await;
    let scored = scores(&server, &contacts).await;
    assert_eq!(scored.len(), contacts.len(), "one contact per id");

    let reply = server.get("/report?since=1d").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let report = reply.json();
    let count = |f: &dyn Fn(&Bought) -> bool| bought.values().filter(|b| f(b)).count() as u64;
    let sales = count(&|b| b.converted);
    let revenue: f64 = bought.values().map(|b| b.revenue).sum();
    assert_eq!(report["contacts"], 120);
    assert_eq!(report["booked"], count(&|b| b.booked));
    assert_eq!(report["with_outcome"], count(&|b| b.with_outcome));
    assert_eq!(report["open"], 120 - count(&|b| b.with_outcome));
    assert_eq!(report["sales"], sales);
    assert_eq!(report["revenue"].as_f64().unwrap(), round(revenue, 2));
    assert_eq!(report["sale_rate"], rate(sales, 120));

    // Per tier, in tiers.toml order, the disqualified tier last.
    let mut by_tier: BTreeMap<&str, (u64, u64, u64, u64, f64)> = BTreeMap::new();
    for (id, (_, tier, _)) in &scored {
        let b = &bought[id];
        let t = by_tier.entry(tier.as_str()).or_default();
        t.0 += 1;
        t.1 += u64::from(b.booked);
        t.2 += u64::from(b.with_outcome);
        t.3 += u64::from(b.converted);
        t.4 += b.revenue;
    }
    let tiers = report["tiers"].as_array().unwrap();
    let names: Vec<&str> = tiers.iter().map(|t| t["tier"].as_str().unwrap()).collect();
    assert_eq!(names, ["hot", "warm", "cold", "disqualified"]);
    for row in tiers {
        let (contacts, booked, with_outcome, tier_sales, tier_revenue) = by_tier
            .get(row["tier"].as_str().unwrap())
            .copied()
            .unwrap_or_default();
        assert_eq!(row["contacts"], contacts, "{row}");
        assert_eq!(row["booked"], booked, "{row}");
        assert_eq!(row["with_outcome"], with_outcome, "{row}");
        assert_eq!(row["sales"], tier_sales, "{row}");
        assert_eq!(row["sale_rate"], rate(tier_sales, contacts), "{row}");
        assert_eq!(row["revenue"].as_f64().unwrap(), round(tier_revenue, 2), "{row}");
        assert_eq!(row["share_of_sales"], rate(tier_sales, sales), "{row}");
    }
    let hot = by_tier.get("hot").copied().unwrap_or_default();
    assert_eq!(
        report["top_tier"],
        json!({"tier": "hot", "share_of_contacts": rate(hot.0, 120), "share_of_sales": rate(hot.3, sales)})
    );

    // Deciles: 12 contacts each, by score then id.
    let mut ordered: Vec<(f64, i64, bool)> = scored
        .iter()
        .map(|(id, (score, _, _))| (*score, id.parse().unwrap(), bought[id].converted))
        .collect();
    ordered.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let deciles = report["deciles"].as_array().unwrap();
    assert_eq!(deciles.len(), 10);
    for (decile, group) in deciles.iter().zip(ordered.chunks(12)) {
        let group_sales = group.iter().filter(|c| c.2).count() as u64;
        assert_eq!(decile["contacts"], 12, "{decile}");
        assert_eq!(decile["min_score"].as_f64().unwrap(), group[0].0, "{decile}");
        assert_eq!(decile["max_score"].as_f64().unwrap(), group[11].0, "{decile}");
        assert_eq!(decile["sales"], group_sales, "{decile}");
    }

    // The command line prints the same report from the same store.
    let out = run_binary(vec![
        "report".into(),
        "--rules".into(),
        server.rules().path().display().to_string(),
        "--store".into(),
        server.store().url.clone(),
        "--since".into(),
        "1d".into(),
        "--format".into(),
        "json".into(),
    ])
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut from_cli: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    let mut from_http = report.clone();
    for report in [&mut from_cli, &mut from_http] {
        report.as_object_mut().unwrap().remove("since");
    }
    assert_eq!(from_cli, from_http);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backtest_over_stored_contacts_compares_the_sales_of_equal_volumes() {
    let (server, contacts, bought) = with_outcomes().await;
    let scored = scores(&server, &contacts).await;
    // The candidate: the loaded rule files as they are.
    let mut files = serde_json::Map::new();
    for entry in std::fs::read_dir(server.rules().path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".rhai") {
            files.insert(name, json!(std::fs::read_to_string(&path).unwrap()));
        }
    }
    let reply = server
        .post_json("/backtest", &json!({"rules": files, "since": "1d"}), &[])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let report = reply.json();
    let outcomes = &report["outcomes"];
    // The same rules on both sides: the same rows and the same top k.
    assert_eq!(outcomes["baseline"], outcomes["candidate"], "{outcomes}");
    let hot = scored.values().filter(|s| s.1 == "hot").count();
    assert_eq!(outcomes["baseline"]["equal_volume"]["k"], hot);
    assert_eq!(outcomes["baseline"]["tiers"][0]["contacts"], hot);
    // Ranked by score, highest first, disqualified last, ties by id.
    let mut ranked: Vec<(bool, f64, i64, &Bought)> = scored
        .iter()
        .map(|(id, (score, _, disqualified))| (*disqualified, *score, id.parse().unwrap(), &bought[id]))
        .collect();
    ranked.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2)));
    let top = &ranked[..hot];
    let sales = top.iter().filter(|c| c.3.converted).count();
    let revenue: f64 = top.iter().map(|c| c.3.revenue).sum();
    assert_eq!(outcomes["baseline"]["equal_volume"]["sales"], sales);
    assert_eq!(
        outcomes["baseline"]["equal_volume"]["revenue"].as_f64().unwrap(),
        round(revenue, 2)
    );
    server.shutdown().await;
}

/// The project's own generator (`leadscore::demo`): contacts and the call
/// and outcome hooks its buying model draws for them. Sales and revenue
/// per contact, read from the hooks here (not from the model).
/// Whether each contact (by id text) bought, and its revenue.
type Sold = HashMap<String, (bool, f64)>;

fn demo_data(seed: u64, n: usize) -> (Vec<Value>, Vec<Value>, Sold) {
    let contacts = leadscore::demo::contacts(seed, n);
    let mut hooks = Vec::new();
    let mut sold: Sold = HashMap::new();
    let by_email: HashMap<String, String> = contacts
        .iter()
        .filter_map(|c| Some((c["email"].as_str()?.trim().to_lowercase(), c["id"].to_string())))
        .collect();
    for contact in &contacts {
        for hook in leadscore::demo::hooks(seed, contact) {
            if hook["hookType"] == "Outcome added"
                && matches!(hook["callOutcome"].as_str(), Some("SALE" | "PARTIAL_SALE"))
            {
                let id = match &hook["contactId"] {
                    Value::Null => by_email[&hook["email"].as_str().unwrap().to_lowercase()].clone(),
                    id => id.to_string(),
                };
                let value = hook["dealValue"]
                    .as_f64()
                    .or_else(|| hook["deal"]["value"].as_f64())
                    .unwrap_or(0.0);
                let entry = sold.entry(id).or_default();
                entry.0 = true;
                entry.1 += value;
            }
            hooks.push(hook);
        }
    }
    (contacts, hooks, sold)
}

/// A candidate that rewards what the generator's buyers have in common
/// (SPEC 11 "a candidate is then better or worse"): in the top k, it must
/// capture more sales than the bench rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_rewarding_the_planted_signal_captures_more_sales_at_equal_volume() {
    let server = TestServer::start(Options {
        forward: false,
        ..Options::default()
    })
    .await;
    let (contacts, hooks, sold) = demo_data(7, 1500);
    let mut tiers: HashMap<String, String> = HashMap::new();
    for batch in contacts.chunks(500) {
        let reply = server.webhook(&Value::Array(batch.to_vec())).await;
        for line in reply["results"].as_array().unwrap() {
            tiers.insert(
                line["contact_id"].to_string(),
                line["tier"].as_str().unwrap().to_owned(),
            );
        }
    }
    for batch in hooks.chunks(200) {
        let reply = server.webhook(&Value::Array(batch.to_vec())).await;
        assert_eq!(reply["duplicates"], 0, "{reply}");
    }

    // The report against the hooks, counted here.
    let report = server.get("/report?since=1d").await.json();
    let sales = sold.values().filter(|s| s.0).count() as u64;
    assert!(sales > 20, "the generator sells: {sales}");
    assert_eq!(report["contacts"], 1500);
    assert_eq!(report["sales"], sales);
    let revenue: f64 = sold.values().map(|s| s.1).sum();
    assert_eq!(report["revenue"].as_f64().unwrap(), round(revenue, 2));
    for row in report["tiers"].as_array().unwrap() {
        let tier = row["tier"].as_str().unwrap();
        let members: Vec<&String> = tiers
            .iter()
            .filter(|(_, t)| *t == tier)
            .map(|(id, _)| id)
            .collect();
        let tier_sales = members
            .iter()
            .filter(|id| sold.get(**id).is_some_and(|s| s.0))
            .count() as u64;
        assert_eq!(row["contacts"], members.len(), "{row}");
        assert_eq!(row["sales"], tier_sales, "{row}");
        assert_eq!(row["sale_rate"], rate(tier_sales, members.len() as u64), "{row}");
    }

    let signal = r#"
let qa = contact.questionsAndAnswers;
let role = if qa == () { "" } else { qa["What is your role?"] ?? "" };
let budget = if qa == () { "" } else { qa["What is your monthly budget for this project?"] ?? "" };
let role = role.to_lower();
if role == "ceo" || role == "founder" || role == "cto" || role == "vp of operations" { add(30, "Buyer role"); }
if budget == "$10,000+" { add(30, "Top budget"); } else if budget == "$5,000 - $10,000" { add(20, "High budget"); }
if contact.tracking?.utm_source == "linkedin" { add(20, "LinkedIn"); }
let email = contact.email ?? "";
if email.ends_with("@gmail.com") || email.ends_with("@yahoo.com") || email.ends_with("@hotmail.com") || email.ends_with("@outlook.com") { add(-20, "Free email"); }
if contact.status == "DISQUALIFIED" { disqualify("Disqualified by iClosed"); }
"#;
    let reply = server
        .post_json(
            "/backtest",
            &json!({"rules": {"10-signal.rhai": signal}, "since": "1d"}),
            &[],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let outcomes = &reply.json()["outcomes"];
    let (baseline, candidate) = (
        &outcomes["baseline"]["equal_volume"],
        &outcomes["candidate"]["equal_volume"],
    );
    assert_eq!(baseline["k"], candidate["k"], "{outcomes}");
    let k = baseline["k"].as_u64().unwrap();
    assert!(k > 0, "{outcomes}");
    assert!(
        candidate["sales"].as_u64().unwrap() > baseline["sales"].as_u64().unwrap(),
        "the candidate reads the buyers' signal and captures more sales in the top {k}: {outcomes}"
    );
    server.shutdown().await;
}
