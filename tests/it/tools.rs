//! Tools for rule authors (SPEC 13) through the running server: the trace
//! of `POST /score?trace=true`, `POST /lint` and `leadscore lint --store`
//! against a store filled with generated contacts, the histogram of time
//! per rule file in `GET /metrics`, and the backtest's slowest rule files.

use std::process::Command;

use serde_json::{Value, json};

use super::backtest::ingest;
use crate::support::*;

/// A server with these rules, forwarding nothing.
async fn serving(rules: RulesDir) -> TestServer {
    TestServer::start(Options {
        rules: Some(rules),
        forward: false,
        ..Options::default()
    })
    .await
}

/// A server with the example rules and one more rule file.
async fn example_rules_with(file: &str, text: &str) -> TestServer {
    let rules = RulesDir::example();
    rules.write(file, text);
    serving(rules).await
}

/// A server with these rules and `n` generated contacts stored.
async fn with_history(rules: RulesDir, n: usize) -> TestServer {
    let server = serving(rules).await;
    ingest(&server, &generated(n, 23)).await;
    server
}

/// The example rules with four silent mistakes: a misspelt question, a
/// tracking name no lead carries, a rule that cannot fire on these leads
/// and a tier beyond the score bounds.
fn rules_with_mistakes() -> Value {
    let mut files = serde_json::Map::new();
    for entry in std::fs::read_dir(RulesDir::example().path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".rhai") {
            files.insert(name, std::fs::read_to_string(&path).unwrap().into());
        }
    }
    files.insert(
        "90-mistakes.rhai".into(),
        concat!(
            "// seniority, asked the wrong way\n",
            "if answer(\"What is your roll\") == \"CEO\" { add(5, \"typo\") }\n",
            "if utm(\"gclid\") != \"\" { add(3, \"ads click\") }\n",
        )
        .into(),
    );
    files.insert(
        "95-astronaut.rhai".into(),
        "if answer(\"What is your role?\") == \"Astronaut\" { add(50, \"space\") }\n".into(),
    );
    let tiers = concat!(
        "[score]\nmin = 0\nmax = 100\n\n",
        "[[tiers]]\nname = \"legendary\"\nmin_score = 120\n\n",
        "[[tiers]]\nname = \"hot\"\nmin_score = 70\n\n",
        "[[tiers]]\nname = \"warm\"\nmin_score = 40\n\n",
        "[[tiers]]\nname = \"cold\"\n",
    );
    json!({"rules": files, "tiers": tiers})
}

fn findings_of_kind<'a>(report: &'a Value, kind: &str) -> Vec<&'a Value> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["kind"] == kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lint_finds_each_silent_mistake_against_stored_contacts() {
    let server = with_history(RulesDir::example(), 300).await;
    let reply = server.post_json("/lint", &rules_with_mistakes(), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let report = reply.json();
    assert_eq!(report["contacts"], 300, "{report}");

    let questions = findings_of_kind(&report, "question");
    assert_eq!(questions.len(), 1, "{report}");
    assert_eq!(questions[0]["file"], "90-mistakes.rhai");
    assert_eq!(questions[0]["line"], 2);
    assert_eq!(questions[0]["suggestion"], "What is your role?");
    let message = questions[0]["message"].as_str().unwrap();
    assert!(message.contains("\"What is your roll\""), "{message}");

    let utms = findings_of_kind(&report, "utm");
    assert_eq!(utms.len(), 1, "{report}");
    assert_eq!(
        (&utms[0]["file"], &utms[0]["line"]),
        (&json!("90-mistakes.rhai"), &json!(3))
    );
    assert!(utms[0]["message"].as_str().unwrap().contains("utm(\"gclid\")"));

    let no_effect: Vec<&Value> = findings_of_kind(&report, "no_effect")
        .into_iter()
        .map(|f| &f["file"])
        .collect();
    assert_eq!(
        no_effect,
        [&json!("90-mistakes.rhai"), &json!("95-astronaut.rhai")],
        "{report}"
    );

    let tiers = findings_of_kind(&report, "unreachable_tier");
    assert_eq!(tiers.len(), 1, "{report}");
    assert!(tiers[0]["message"].as_str().unwrap().contains("\"legendary\""));
    assert_eq!(report["findings"].as_array().unwrap().len(), 5, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lint_finds_nothing_on_the_example_rules() {
    let server = with_history(RulesDir::example(), 300).await;
    // No body: the loaded rules (the example rules).
    let reply = server.request("POST", "/lint", None, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let report = reply.json();
    assert_eq!(report["contacts"], 300);
    assert_eq!(report["findings"], json!([]), "{report}");
    assert!(report["since"].is_string());
    // A bad window is the caller's mistake, named.
    let reply = server.post_json("/lint", &json!({"since": "soon"}), &[]).await;
    assert!(reply.assert_error(400).starts_with("since"), "{}", reply.text);
    // Rules that do not compile are listed with their place, as for a backtest.
    let reply = server
        .post_json("/lint", &json!({"rules": {"10-broken.rhai": "add(1,"}}), &[])
        .await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    assert_eq!(
        reply.json()["errors"][0]["file"],
        "10-broken.rhai",
        "{}",
        reply.text
    );
    let reply = server.post_json("/lint", &json!({"rulez": {}}), &[]).await;
    assert_eq!(reply.status, 400, "unknown fields are refused: {}", reply.text);
}

/// The command line runs the same checks against the same store; it exits
/// 1 when it finds anything and 0 when it finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lint_on_the_command_line_reads_the_store() {
    let server = with_history(RulesDir::example(), 200).await;
    let candidate = RulesDir::example();
    candidate.write(
        "90-mistakes.rhai",
        "if answer(\"What is your roll\") == \"CEO\" { add(5, \"typo\") }\n",
    );
    let lint = |rules: &std::path::Path| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_leadscore"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("LEADSCORE_") {
                command.env_remove(key);
            }
        }
        command
            .args(["lint", "--since", "1d", "--store", &server.store().url, "--rules"])
            .arg(rules)
            .output()
            .expect("the binary runs")
    };
    let out = lint(candidate.path());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mistakes = candidate.path().join("90-mistakes.rhai");
    assert!(
        text.contains(&format!(
            "{}:1: answer(\"What is your roll\") matches no question of the 200 stored contact(s) in the window; the closest stored question is \"What is your role?\"",
            mistakes.display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("{}: never added points", mistakes.display())),
        "{text}"
    );
    assert!(
        text.lines()
            .last()
            .unwrap()
            .starts_with("2 finding(s); checked against 200 stored contact(s)"),
        "{text}"
    );

    let out = lint(RulesDir::example().path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_with_trace_explains_a_rule_that_did_not_fire() {
    let server = example_rules_with(
        "90-typo.rhai",
        "if answer(\"What is your roll\") == \"CEO\" { add(5, \"typo\") }\n",
    )
    .await;
    let contacts = generated(3, 5);
    let reply = server.post_json("/score?trace=true", &json!(contacts), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let results = reply.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 3);
    let files = server.rules_status().await["files"].clone();
    for result in &results {
        let trace = result["trace"].as_array().expect("a trace per result");
        let names: Vec<&Value> = trace.iter().map(|t| &t["rule"]).collect();
        assert_eq!(Value::from(names.into_iter().cloned().collect::<Vec<_>>()), files);
        let typo = trace.last().unwrap();
        assert_eq!(typo["status"], "no effect");
        assert_eq!(
            typo["lookups"],
            json!([{"fn": "answer", "arg": "What is your roll", "result": "", "matched": null, "how": "none"}])
        );
        // The trace's points are the result's reasons, rule by rule.
        for entry in trace {
            let from_reasons: f64 = result["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["rule"] == entry["rule"])
                .map(|r| r["points"].as_f64().unwrap())
                .sum();
            assert_eq!(entry["points"].as_f64(), Some(from_reasons), "{entry}");
        }
    }
    let plain = server.post_json("/score", &json!(contacts), &[]).await.json();
    assert!(plain["results"][0].get("trace").is_none());
    let reply = server.post_json("/score?trace=yes", &json!(contacts), &[]).await;
    assert!(reply.assert_error(400).starts_with("trace"), "{}", reply.text);
}

/// SPEC 13: time per rule file is a Prometheus histogram with a bucket
/// series per rule file, fine enough for microseconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_have_a_time_histogram_per_rule_file() {
    let server = example_rules_with(
        "97-histogram-probe.rhai",
        "if answer(\"What is your role?\") == \"CEO\" { tag(\"ceo\") }\n",
    )
    .await;
    // One body: one scoring thread, which times its first contact and one in 16.
    let reply = server
        .post_json("/webhooks/iclosed", &json!(generated(40, 11)), &[])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let text = server.get("/metrics").await.text;
    let series = |rule: &str| -> Vec<(String, f64)> {
        let prefix = format!("leadscore_rule_duration_seconds_bucket{{rule=\"{rule}\",le=\"");
        text.lines()
            .filter_map(|line| line.strip_prefix(&prefix))
            .map(|rest| {
                let (le, count) = rest.split_once("\"} ").expect("a bucket line");
                (le.to_owned(), count.parse().expect("a count"))
            })
            .collect()
    };
    let probe = series("97-histogram-probe.rhai");
    let les: Vec<&str> = probe.iter().map(|(le, _)| le.as_str()).collect();
    assert_eq!(les.len(), 14, "13 buckets and +Inf: {text}");
    assert_eq!(les.last(), Some(&"+Inf"));
    let first: f64 = les[0].parse().unwrap();
    assert!(
        (first - 0.000_001).abs() < 1e-12,
        "the first bucket is 1 µs: {les:?}"
    );
    let counts: Vec<f64> = probe.iter().map(|(_, n)| *n).collect();
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "cumulative: {counts:?}");
    assert!(counts[13] >= 3.0, "contacts 1, 17 and 33 are timed: {counts:?}");
    for file in server.rules_status().await["files"].as_array().unwrap() {
        assert_eq!(series(file.as_str().unwrap()).len(), 14, "{file}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backtest_lists_the_slowest_rule_files() {
    let server = with_history(RulesDir::example(), 60).await;
    let mut candidate = rules_with_mistakes();
    candidate["rules"]["96-slow.rhai"] =
        "let i = 0; let s = 0; while i < 20000 { s += i; i += 1; } if s < 0 { add(1, \"never\") }\n".into();
    candidate.as_object_mut().unwrap().remove("tiers");
    let reply = server.post_json("/backtest", &candidate, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let report = reply.json();
    let slowest = report["slowest_rules"].as_array().expect("slowest_rules");
    assert_eq!(slowest.len(), 5, "{report}");
    assert_eq!(slowest[0]["rule"], "96-slow.rhai", "{report}");
    assert!(slowest[0]["mean_micros"].as_f64().unwrap() > slowest[1]["mean_micros"].as_f64().unwrap());
    assert!(slowest[0]["share_percent"].as_f64().unwrap() > 50.0, "{report}");
}

/// SPEC 12: the scoring time of each path. `POST /score` and the
/// playground's given contacts score now, with no calls and first seen
/// now; ingest scores as of the receive time (the stored `scored_at`); a
/// backtest of stored events scores each as of its receive time, so the
/// same rules give exactly the stored results, time-based points included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_see_the_scoring_time_of_each_path() {
    const TIME_RULE: &str = concat!(
        "add(days_since(\"2020-01-01T00:00:00Z\"), \"age\");\n",
        "add(0, now());\n",
        "tag(first_seen());\n",
        "add(calls().len(), \"calls\");\n",
    );
    let folder = tempfile::tempdir().expect("a temporary folder");
    std::fs::write(folder.path().join("10-time.rhai"), TIME_RULE).unwrap();
    let server = serving(RulesDir::copy_of(folder.path())).await;
    // `days_since` from 2020 to a result's `scored_at`, as the rule computes it.
    let age = |scored_at: &Value| {
        let at = leadscore::score::rfc3339::parse_nanos(scored_at.as_str().unwrap()).unwrap();
        let since = leadscore::score::rfc3339::parse_nanos("2020-01-01T00:00:00Z").unwrap();
        (at - since) as f64 / 86_400_000_000_000.0
    };
    let check = |result: &Value| {
        let scored_at = &result["scored_at"];
        // serde_json's default float reader (no `float_roundtrip`) may land
        // one unit in the last place off the written value: compare to 1e-12.
        let points = result["reasons"][0]["points"].as_f64().unwrap();
        let expected = age(scored_at);
        assert!(
            (points - expected).abs() <= expected.abs() * 1e-12,
            "{points} vs {expected}: {result}"
        );
        assert_eq!(
            &result["reasons"][1]["reason"], scored_at,
            "now() is scored_at: {result}"
        );
        assert_eq!(result["tags"], json!([scored_at]), "first seen now: {result}");
        assert_eq!(result["reasons"][2]["points"], 0, "no calls: {result}");
    };
    let contacts = generated(3, 5);
    let reply = server.post_json("/score", &json!(contacts), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()["results"].as_array().unwrap().iter().for_each(check);

    let rules = json!({ "10-time.rhai": TIME_RULE });
    let reply = server
        .post_json("/backtest", &json!({ "rules": rules, "contacts": contacts }), &[])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    for pair in reply.json()["results"].as_array().unwrap() {
        check(&pair["baseline"]);
        check(&pair["candidate"]);
    }

    ingest(&server, &contacts).await;
    let reply = server
        .post_json("/backtest", &json!({ "rules": rules, "against": "stored" }), &[])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let report = reply.json();
    assert_eq!(report["contacts"], 3, "{report}");
    assert_eq!(report["changed"], json!([]), "{report}");
    assert_eq!(
        report["score_delta"],
        json!({"mean": 0, "p50": 0, "p90": 0, "min": 0, "max": 0}),
        "scored as of each event's receive time: {report}"
    );
    server.shutdown().await;
}
