//! The demo data generator (`leadscore::demo`) and `leadscore demo`: the
//! same seed gives the same bytes, every contact scores cleanly with the
//! example rules and reaches every tier, and the command writes JSON lines
//! or fills a running engine.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use leadscore::payload::parse_body;
use leadscore::score::{Limits, RuleSet, ScoringContext};
use serde_json::Value;
use support::{Options, TestServer, run_binary};

/// `n` contacts of `seed` as the bytes `leadscore demo --batch 1` writes.
fn json_lines(seed: u64, n: usize) -> String {
    leadscore::demo::contacts(seed, n)
        .into_iter()
        .map(|c| format!("{}\n", Value::Array(vec![c])))
        .collect()
}

#[test]
fn the_same_seed_gives_the_same_bytes_and_another_seed_others() {
    let a = json_lines(7, 500);
    assert_eq!(a, json_lines(7, 500));
    assert_ne!(a, json_lines(8, 500));
    // A longer run starts with the shorter one.
    assert!(json_lines(7, 600).starts_with(&a));
}

fn example_rules() -> RuleSet {
    let limits = Limits {
        // Not a timing test: a loaded machine must not turn into rule errors.
        timeout: Duration::from_secs(60),
        ..Limits::default()
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    RuleSet::load(&dir, &limits).unwrap_or_else(|e| panic!("the example rules compile: {e:?}"))
}

/// The tier names of the example rules' tiers.toml, and its disqualified tier.
fn example_tiers() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/tiers.toml");
    let tiers: toml::Table = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut names: Vec<String> = tiers["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    names.push(
        tiers["score"]
            .get("disqualified_tier")
            .and_then(|v| v.as_str())
            .unwrap_or("disqualified")
            .to_owned(),
    );
    names
}

#[test]
fn every_contact_scores_cleanly_and_every_tier_occurs() {
    let rules = example_rules();
    let mut tiers = BTreeMap::<String, usize>::new();
    let mut tags = BTreeMap::<String, usize>::new();
    for (line_no, line) in json_lines(7, 2000).lines().enumerate() {
        let contacts =
            parse_body(line.as_bytes(), 1000).unwrap_or_else(|e| panic!("line {}: {e}\n{line}", line_no + 1));
        assert_eq!(contacts.len(), 1);
        let outcome = rules.evaluate(&contacts[0], &ScoringContext::at(std::time::SystemTime::now()));
        assert!(
            outcome.errors.is_empty(),
            "line {}: rule errors {:?}\n{line}",
            line_no + 1,
            outcome.errors
        );
        *tiers.entry(outcome.tier).or_default() += 1;
        for tag in outcome.tags {
            *tags.entry(tag).or_default() += 1;
        }
    }
    assert_eq!(tiers.values().sum::<usize>(), 2000);
    for tier in example_tiers() {
        let n = tiers.get(&tier).copied().unwrap_or(0);
        // Plausible: every tier is a real share of the leads, none all of them.
        assert!((20..1600).contains(&n), "{n} {tier} contacts of 2,000: {tiers:?}");
    }
    for tag in [
        "decision-maker",
        "big-budget",
        "urgent",
        "free-email",
        "business-email",
        "partner-referral",
        "call-booked",
        "enterprise",
    ] {
        assert!(tags.contains_key(tag), "no contact tagged {tag}: {tags:?}");
    }
}

#[test]
fn contacts_look_like_iclosed_sends_them() {
    let contacts = leadscore::demo::contacts(11, 1000);
    let count = |f: &dyn Fn(&Value) -> bool| contacts.iter().filter(|c| f(c)).count();
    // Statuses: QUALIFIED three in five, POTENTIAL and DISQUALIFIED one each.
    let qualified = count(&|c| c["status"] == "QUALIFIED");
    let disqualified = count(&|c| c["status"] == "DISQUALIFIED");
    assert!((500..700).contains(&qualified), "{qualified} QUALIFIED");
    assert!((130..270).contains(&disqualified), "{disqualified} DISQUALIFIED");
    for c in &contacts {
        let dq = c["disqualifyingGroup"].as_array().unwrap();
        assert_eq!(c["status"] == "DISQUALIFIED", !dq.is_empty(), "{c}");
        let qa = c["questionsAndAnswers"].as_object().unwrap();
        // Numbered pairs and the same answers under their question text.
        let pairs = qa.keys().filter(|k| k.ends_with("_question")).count();
        assert!(pairs == 1 || pairs == 8, "{c}");
        for n in 1..=pairs {
            let question = qa[&format!("{n}_question")].as_str().unwrap();
            assert_eq!(qa[question], qa[&format!("{n}_response")], "{c}");
        }
        assert_eq!(qa["1_response"], c["phoneNumber"]);
        if c["latestCall"].is_object() {
            assert_eq!(c["status"], "QUALIFIED", "{c}");
        }
    }
    let free = count(&|c| {
        let email = c["email"].as_str().unwrap();
        ["gmail.com", "yahoo.com", "hotmail.com", "outlook.com"]
            .iter()
            .any(|d| email.ends_with(&format!("@{d}")))
    });
    assert!((250..450).contains(&free), "{free} free mailboxes");
    let ids: std::collections::HashSet<u64> = contacts.iter().map(|c| c["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), 1000, "ids are unique");
}

// ------------------------------------------------------------- the command

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_writes_json_lines_to_a_file_or_standard_output() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("demo.jsonl");
    let args = |out: &str| -> Vec<String> {
        [
            "demo",
            "--contacts",
            "250",
            "--seed",
            "3",
            "--batch",
            "100",
            "--out",
            out,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect()
    };
    let output = run_binary(args(&file.display().to_string())).await;
    assert!(output.status.success(), "{output:?}");
    let written = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<Value> = written
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let sizes: Vec<usize> = lines.iter().map(|l| l.as_array().unwrap().len()).collect();
    assert_eq!(sizes, [100, 100, 50], "one webhook body per line");
    let contacts: Vec<Value> = lines
        .into_iter()
        .flat_map(|l| l.as_array().unwrap().clone())
        .collect();
    assert_eq!(
        contacts,
        leadscore::demo::contacts(3, 250),
        "the library's contacts"
    );

    let to_stdout = run_binary(args("-")).await;
    assert!(to_stdout.status.success(), "{to_stdout:?}");
    assert_eq!(String::from_utf8(to_stdout.stdout).unwrap(), written);

    let refused = run_binary(vec!["demo".into(), "--contacts".into(), "0".into()]).await;
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--contacts"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_fills_a_running_engine() {
    const TOKEN: &str = "tok_demo_6Fh2Lq";
    let server = TestServer::start(Options {
        webhook_token: Some(TOKEN.into()),
        ..Options::plain()
    })
    .await;
    let url = format!("http://{}", server.addr);
    let demo = |token: Option<&str>| {
        let mut args: Vec<String> = [
            "demo",
            "--contacts",
            "120",
            "--seed",
            "5",
            "--batch",
            "50",
            "--url",
            &url,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        if let Some(token) = token {
            args.extend(["--token".into(), token.into()]);
        }
        args
    };

    let output = run_binary(demo(Some(TOKEN))).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout.contains("sent 120 contacts in 3 request(s)") && stdout.contains("120 accepted, 0 duplicates"),
        "{stdout}"
    );
    // The engine holds them: the latest contacts are the demo's last ones.
    let reply = server.get("/contacts?limit=2").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let listed: Vec<Value> = reply.json()["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["contact_id"].clone())
        .collect();
    let expected = leadscore::demo::contacts(5, 120);
    assert_eq!(listed, [expected[119]["id"].clone(), expected[118]["id"].clone()]);

    // The same seed again: every contact a duplicate, nothing new stored.
    let again = run_binary(demo(Some(TOKEN))).await;
    assert!(again.status.success(), "{again:?}");
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("0 accepted, 120 duplicates"),
        "{again:?}"
    );

    // Without the token: refused, and the message says what to do.
    let refused = run_binary(demo(None)).await;
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("401") && stderr.contains("--token"), "{stderr}");
    assert!(!stderr.contains(TOKEN), "{stderr}");
    server.stop().await;
}
