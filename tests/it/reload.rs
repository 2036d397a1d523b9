//! Hot reload of the rules folder (SPEC 1.2, 2, 4 `GET /rules`): added,
//! changed and deleted rules and `tiers.toml` go live by themselves; a
//! broken change is reported and never replaces the last good set; a
//! reload can also be asked for (what SIGHUP does).

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Options, RulesDir, TestServer, WAIT, contact, contact_with_id, eventually, rfc3339_ms};

/// SPEC: a saved change is live within one second. Waits allow more, so
/// that a loaded machine does not fail them; nothing asserts on timing.
const RELOAD_WAIT: Duration = Duration::from_secs(5);

const BENCH_FILES: [&str; 8] = [
    "10-role.rhai",
    "20-company-size.rhai",
    "30-budget.rhai",
    "40-timeline.rhai",
    "50-email.rhai",
    "60-attribution.rhai",
    "70-call.rhai",
    "80-disqualify.rhai",
];

/// Waits until `GET /rules` satisfies `done`; returns it.
async fn wait_rules(server: &TestServer, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    eventually(what, RELOAD_WAIT, async || {
        let rules = server.rules_status().await;
        done(&rules).then_some(rules)
    })
    .await
}

/// Waits until a dry run of `contact` gives this score and tier.
async fn wait_score(server: &TestServer, contact: &Value, score: i64, tier: &str) -> Value {
    eventually(
        &format!("a dry run to score {score} {tier}"),
        RELOAD_WAIT,
        async || {
            let scored = server.dry_run(contact).await;
            (scored["score"] == score && scored["tier"] == tier).then_some(scored)
        },
    )
    .await
}

fn files(rules: &Value) -> Vec<String> {
    rules["files"]
        .as_array()
        .unwrap_or_else(|| panic!("no files: {rules}"))
        .iter()
        .map(|f| f.as_str().expect("a file name").to_owned())
        .collect()
}

/// A webhook of one contact; returns its result line.
async fn ingest_one(server: &TestServer, contact: Value) -> Value {
    let mut reply = server.webhook(&json!([contact])).await;
    assert_eq!(reply["accepted"], 1, "{reply}");
    reply["results"][0].take()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_status_lists_the_loaded_set() {
    let server = TestServer::default().await;
    let rules = server.rules_status().await;
    assert_eq!(files(&rules), BENCH_FILES, "{rules}");
    assert_eq!(rules["last_error"], Value::Null, "{rules}");
    let version = rules["rules_version"].as_str().expect("rules_version");
    assert!(
        !version.is_empty() && version.chars().all(|c| c.is_ascii_hexdigit()),
        "a hex digest: {version}"
    );
    rfc3339_ms(rules["loaded_at"].as_str().expect("loaded_at"));
    // The same folder gives the same version.
    let other = TestServer::default().await;
    assert_eq!(other.rules_status().await["rules_version"], version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_rule_file_is_loaded() {
    let server = TestServer::default().await;
    let before = server.rules_status().await;
    assert_eq!(
        ingest_one(&server, contact_with_id("potential", 1)).await["score"],
        0
    );

    server
        .rules()
        .write("85-extra.rhai", "add(7, \"Extra signal\");\n");
    let after = wait_rules(&server, "85-extra.rhai to be listed", |r| {
        files(r).contains(&"85-extra.rhai".to_owned())
    })
    .await;
    assert_ne!(after["rules_version"], before["rules_version"]);
    assert_eq!(after["last_error"], Value::Null);
    assert!(
        rfc3339_ms(after["loaded_at"].as_str().unwrap()) >= rfc3339_ms(before["loaded_at"].as_str().unwrap())
    );

    let line = ingest_one(&server, contact_with_id("potential", 2)).await;
    assert_eq!(line["score"], 7, "{line}");
    assert_eq!(line["tier"], "cold", "{line}");
    let forwarded = server
        .receiver()
        .wait_until("the second contact forwarded", WAIT, |r| {
            r.iter().any(|r| r.contact_id() == 2)
        })
        .await;
    let body = forwarded.iter().find(|r| r.contact_id() == 2).unwrap().json();
    assert_eq!(
        body["reasons"],
        json!([{"rule": "85-extra.rhai", "points": 7, "reason": "Extra signal"}])
    );
    assert_eq!(body["rules_version"], after["rules_version"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_rule_is_reloaded() {
    let server = TestServer::default().await;
    let potential = contact("potential");
    assert_eq!(server.dry_run(&potential).await["score"], 0);
    // Saved in place (truncate, then write), as some editors do.
    server
        .rules()
        .write_in_place("10-role.rhai", "add(45, \"Everyone counts\");\n");
    let scored = wait_score(&server, &potential, 45, "warm").await;
    assert_eq!(
        scored["reasons"],
        json!([{"rule": "10-role.rhai", "points": 45, "reason": "Everyone counts"}])
    );
    let line = ingest_one(&server, contact_with_id("potential", 3)).await;
    assert_eq!(
        (line["score"].clone(), line["tier"].clone()),
        (json!(45), json!("warm"))
    );

    // Saved by rename, as most editors do.
    server
        .rules()
        .write("10-role.rhai", "add(75, \"Everyone is hot\");\n");
    wait_score(&server, &potential, 75, "hot").await;
    let line = ingest_one(&server, contact_with_id("potential", 4)).await;
    assert_eq!(
        (line["score"].clone(), line["tier"].clone()),
        (json!(75), json!("hot"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_rule_is_unloaded() {
    let rules = RulesDir::bench();
    rules.write("85-extra.rhai", "add(7, \"Extra signal\");\n");
    let server = TestServer::start(Options {
        rules: Some(rules),
        ..Options::default()
    })
    .await;
    assert_eq!(
        ingest_one(&server, contact_with_id("potential", 1)).await["score"],
        7
    );
    server.rules().remove("85-extra.rhai");
    let after = wait_rules(&server, "85-extra.rhai to be gone", |r| {
        !files(r).contains(&"85-extra.rhai".to_owned())
    })
    .await;
    assert_eq!(files(&after), BENCH_FILES);
    let line = ingest_one(&server, contact_with_id("potential", 2)).await;
    assert_eq!(line["score"], 0, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_change_is_reloaded() {
    let server = TestServer::default().await;
    let potential = contact("potential");
    let disqualified = contact("disqualified");
    let qualified = contact("qualified");
    server.rules().write(
        "tiers.toml",
        "disqualified_tier = \"out\"\n\n[score]\nmin = 0\nmax = 100\n\n\
         [[tiers]]\nname = \"ice\"\n\n[[tiers]]\nname = \"fire\"\nmin_score = 90\n",
    );
    wait_score(&server, &potential, 0, "ice").await;
    let line = ingest_one(&server, disqualified.clone()).await;
    assert_eq!(line["tier"], "out", "{line}");
    assert_eq!(line["disqualified"], true, "{line}");
    let line = ingest_one(&server, qualified.clone()).await;
    assert_eq!(
        (line["score"].clone(), line["tier"].clone()),
        (json!(100), json!("fire"))
    );

    // Without tiers.toml: no clamping, one tier "scored".
    server.rules().remove("tiers.toml");
    // 20 + 20 + 30 + 15 + 5 + 10 + 12 + 15 for the qualified fixture.
    wait_score(&server, &qualified, 127, "scored").await;
    let line = ingest_one(&server, contact_with_id("qualified", 5)).await;
    assert_eq!(
        (line["score"].clone(), line["tier"].clone()),
        (json!(127), json!("scored"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_rule_keeps_the_previous_set_until_fixed() {
    let server = TestServer::default().await;
    let before = server.rules_status().await;
    let qualified = contact("qualified");

    // A new file with a syntax error on line 3.
    server
        .rules()
        .write("99-broken.rhai", "let x = 1;\nadd(5, \"ok\");\nlet y = ;\n");
    let failed = wait_rules(&server, "last_error to be set", |r| !r["last_error"].is_null()).await;
    let error = &failed["last_error"];
    assert_eq!(error["file"], "99-broken.rhai", "{failed}");
    assert_eq!(error["line"], 3, "{failed}");
    assert!(error["column"].as_u64().is_some_and(|c| c >= 1), "{failed}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{failed}"
    );
    rfc3339_ms(error["at"].as_str().expect("at"));
    assert_eq!(
        failed["rules_version"], before["rules_version"],
        "the old set stays"
    );
    assert_eq!(files(&failed), BENCH_FILES, "{failed}");
    // Scoring still uses the old set.
    let scored = server.dry_run(&contact("potential")).await;
    assert_eq!(scored["score"], 0, "{scored}");
    assert_eq!(scored["errors"], json!([]), "{scored}");
    assert_eq!(scored["rules_version"], before["rules_version"]);
    let line = ingest_one(&server, contact_with_id("potential", 6)).await;
    assert_eq!(line["score"], 0, "{line}");

    // A broken change to a loaded rule does not unload that rule either.
    server
        .rules()
        .write("10-role.rhai", "let role = answer(\"role\");\nlet = 5;\n");
    wait_rules(&server, "the error to name 10-role.rhai", |r| {
        r["last_error"]["file"] == "10-role.rhai"
    })
    .await;
    let scored = server.dry_run(&qualified).await;
    assert_eq!(scored["reasons"][0]["reason"], "Decision maker", "{scored}");
    assert_eq!(scored["rules_version"], before["rules_version"]);

    // Fixing both clears the error and loads the new set.
    server
        .rules()
        .write("10-role.rhai", "add(20, \"Decision maker\");\n");
    server.rules().write("99-broken.rhai", "add(5, \"Fixed\");\n");
    let fixed = wait_rules(&server, "last_error to clear", |r| {
        r["last_error"].is_null() && files(r).contains(&"99-broken.rhai".to_owned())
    })
    .await;
    assert_ne!(fixed["rules_version"], before["rules_version"]);
    let line = ingest_one(&server, contact_with_id("potential", 7)).await;
    assert_eq!(line["score"], 25, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_tiers_file_keeps_the_previous_set() {
    let server = TestServer::default().await;
    let before = server.rules_status().await;
    server.rules().write("tiers.toml", "[[tiers]\nname = \"hot\"\n");
    let failed = wait_rules(&server, "last_error to be set", |r| !r["last_error"].is_null()).await;
    assert_eq!(failed["last_error"]["file"], "tiers.toml", "{failed}");
    assert!(
        failed["last_error"]["line"].as_u64().is_some_and(|l| l >= 1),
        "{failed}"
    );
    assert_eq!(failed["rules_version"], before["rules_version"]);
    let line = ingest_one(&server, contact("qualified")).await;
    assert_eq!(
        (line["score"].clone(), line["tier"].clone()),
        (json!(100), json!("hot"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_can_be_asked_for() {
    // The server reads its rules through a symbolic link; switching the
    // link changes no file in the watched folder, so only an explicit
    // reload (SIGHUP's path) picks the new folder up.
    let first = RulesDir::bench();
    let second = RulesDir::bench();
    second.write("85-extra.rhai", "add(7, \"Extra signal\");\n");
    let link = first.through_symlink();
    let server = TestServer::start(Options {
        rules: Some(link.clone()),
        ..Options::default()
    })
    .await;
    let before = server.rules_status().await;
    assert_eq!(files(&before), BENCH_FILES);

    link.repoint(second.path());
    server.running().reload_rules();
    let after = wait_rules(&server, "the reload to load the new folder", |r| {
        files(r).contains(&"85-extra.rhai".to_owned())
    })
    .await;
    assert_ne!(after["rules_version"], before["rules_version"]);
    let line = ingest_one(&server, contact("potential")).await;
    assert_eq!(line["score"], 7, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_files_in_the_folder_are_ignored() {
    let server = TestServer::default().await;
    let dir = server.rules().path().to_path_buf();
    std::fs::write(dir.join(".10-role.rhai.swp"), b"\x00\x01 not a rule").expect("write");
    std::fs::write(dir.join("notes.txt"), "let = ;").expect("write");
    std::fs::write(dir.join("10-role.rhai~"), "let = ;").expect("write");
    std::fs::create_dir(dir.join("tests")).expect("mkdir");
    std::fs::write(dir.join("tests/role.toml"), "[[test]]\nname = \"x\"\n").expect("write");
    // A real change after them: once it is loaded, they were read too.
    server
        .rules()
        .write("85-extra.rhai", "add(7, \"Extra signal\");\n");
    let rules = wait_rules(&server, "85-extra.rhai to be listed", |r| {
        files(r).contains(&"85-extra.rhai".to_owned())
    })
    .await;
    assert_eq!(rules["last_error"], Value::Null, "{rules}");
    let mut expected: Vec<&str> = BENCH_FILES.to_vec();
    expected.push("85-extra.rhai");
    expected.sort();
    assert_eq!(files(&rules), expected);
}
