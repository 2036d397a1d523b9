//! The `leadscore` binary's one-shot commands (SPEC section 6): `score`,
//! `check` and `test`, run as a user runs them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

#[path = "support/mod.rs"]
mod support;

use support::spec;

const BIN: &str = env!("CARGO_BIN_EXE_leadscore");

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

/// The binary with no `LEADSCORE_*` setting inherited from the environment.
fn leadscore() -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LEADSCORE_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(repo());
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the leadscore binary runs")
}

fn run_with_stdin(cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the leadscore binary starts");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.as_bytes())
        .expect("stdin takes the input");
    child.wait_with_output().expect("the leadscore binary finishes")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("stderr is UTF-8")
}

/// Writes a rules folder: `(relative path, contents)`.
fn rules_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary folder");
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

/// Parses stdout as JSON lines, checking each is a scored contact of SPEC 3.
fn scored_lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "exit {:?}\nstderr: {}",
        out.status,
        stderr(out)
    );
    stdout(out)
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            for key in spec::SCORED_FIELDS {
                assert!(v.get(key).is_some(), "{key} missing in {line}");
            }
            assert_eq!(v["type"], "contact.scored");
            assert_eq!(v["id"], Value::Null, "a dry run has no event id");
            v
        })
        .collect()
}

#[test]
fn score_prints_one_scored_contact_per_line_for_a_fixture_file() {
    let out = run(leadscore()
        .args(["score", "--rules", "rules"])
        .arg(fixture("contact-created-batch.json")));
    let lines = scored_lines(&out);
    let summary: Vec<(Value, Value, Value, Value)> = lines
        .iter()
        .map(|v| {
            (
                v["contact_id"].clone(),
                v["score"].clone(),
                v["tier"].clone(),
                v["disqualified"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (json!(48213), json!(100), json!("hot"), json!(false)),
            (json!(48214), json!(0), json!("disqualified"), json!(true)),
            (json!(48215), json!(0), json!("cold"), json!(false)),
        ]
    );
    let input: Value =
        serde_json::from_slice(&std::fs::read(fixture("contact-created-batch.json")).unwrap()).unwrap();
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["contact"], input[i], "contact #{i} is forwarded as received");
    }
    assert_eq!(
        lines[1]["disqualifications"],
        json!([{"rule": "80-disqualify.rhai", "reason": "Disqualified in iClosed: Budget too low"}])
    );
    assert_eq!(lines[0]["reasons"][0]["rule"], "10-role.rhai");
    assert_eq!(lines[0]["rules_version"], lines[2]["rules_version"]);

    // A single-object payload works the same.
    let out = run(leadscore()
        .args(["score", "--rules", "rules"])
        .arg(fixture("contact-created-single-object.json")));
    let lines = scored_lines(&out);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["contact_id"], json!(48216));
    assert_eq!(lines[0]["tier"], "hot");
}

#[test]
fn score_reads_json_lines_from_stdin_in_input_order() {
    let input = [
        json!([{"id": 1, "email": "a@gmail.com"}, {"id": "two", "email": "b@initech.com"}]),
        json!({"id": 3, "questionsAndAnswers": {"What is your role?": "CEO"}}),
        json!([{"id": 4, "status": "DISQUALIFIED"}]),
    ]
    .iter()
    .map(Value::to_string)
    .collect::<Vec<_>>()
    .join("\n")
        + "\n\n";
    let out = run_with_stdin(leadscore().args(["score", "--rules", "rules", "-"]), &input);
    let lines = scored_lines(&out);
    let ids: Vec<Value> = lines.iter().map(|v| v["contact_id"].clone()).collect();
    assert_eq!(ids, [json!(1), json!("two"), json!(3), json!(4)]);
    let scores: Vec<Value> = lines.iter().map(|v| v["score"].clone()).collect();
    assert_eq!(scores, [json!(0), json!(6), json!(25), json!(0)]);
    let tiers: Vec<&str> = lines.iter().map(|v| v["tier"].as_str().unwrap()).collect();
    assert_eq!(tiers, ["cold", "cold", "cold", "disqualified"]);
    assert_eq!(lines[1]["tags"], json!(["business-email"]));
    assert_eq!(
        lines[2]["contact"],
        json!({"id": 3, "questionsAndAnswers": {"What is your role?": "CEO"}})
    );
}

#[test]
fn score_reports_a_bad_line_and_still_scores_the_others() {
    let out = run_with_stdin(
        leadscore().args(["score", "--rules", "rules", "-"]),
        "{\"id\": 1}\n{\"name\": \"no id\"}\n{\"id\": 3}\n",
    );
    assert!(!out.status.success());
    let ids: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["contact_id"].clone())
        .collect();
    assert_eq!(ids, [json!(1), json!(3)]);
    assert!(stderr(&out).contains("stdin:2"), "{}", stderr(&out));
}

#[test]
fn check_reports_file_line_and_column_and_fails() {
    let dir = rules_dir(&[
        ("10-good.rhai", "add(1, \"good\");\n"),
        ("20-bad.rhai", "// budget\nlet b = (2 + ;\n"),
        ("tiers.toml", "[[tiers]]\nname = \"cold\"\n"),
    ]);
    let out = run(leadscore().arg("check").arg("--rules").arg(dir.path()));
    assert!(!out.status.success(), "a broken rule set must fail the check");
    let text = format!("{}{}", stdout(&out), stderr(&out));
    let expected = format!("{}:2:14:", dir.path().join("20-bad.rhai").display());
    assert!(text.contains(&expected), "expected {expected:?} in:\n{text}");
    assert!(!text.contains("10-good.rhai"), "{text}");
}

#[test]
fn check_reports_bytes_that_are_not_utf8_at_their_line_and_column() {
    let dir = rules_dir(&[("10-good.rhai", "add(1, \"good\");\n")]);
    std::fs::write(
        dir.path().join("20-latin1.rhai"),
        b"add(1, \"ok\");\nadd(2, \"caf\xe9\");\n",
    )
    .unwrap();
    let out = run(leadscore().arg("check").arg("--rules").arg(dir.path()));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    let expected = format!(
        "{}:2:12: not valid UTF-8",
        dir.path().join("20-latin1.rhai").display()
    );
    assert!(text.contains(&expected), "expected {expected:?} in:\n{text}");
}

#[test]
fn a_bad_log_filter_is_refused_naming_leadscore_log() {
    let out = run_with_stdin(
        leadscore().env("LEADSCORE_LOG", "[[bad").args(["score", "-"]),
        "{\"id\": 1}\n",
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("LEADSCORE_LOG"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "nothing scored: {}", stdout(&out));
}

#[test]
fn check_passes_a_good_rules_folder() {
    let dir = rules_dir(&[
        ("10-good.rhai", "add(1, \"good\");\n"),
        ("tiers.toml", "[[tiers]]\nname = \"cold\"\n"),
    ]);
    let out = run(leadscore().arg("check").arg("--rules").arg(dir.path()));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    let out = run(leadscore().arg("check"));
    assert!(
        out.status.success(),
        "the shipped rules check: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

fn last_line(out: &Output) -> String {
    stdout(out).lines().last().unwrap_or_default().to_owned()
}

/// `"N passed, M failed"` → `(N, M)`.
fn counts(line: &str) -> (usize, usize) {
    let parsed = line
        .strip_suffix(" failed")
        .and_then(|rest| rest.split_once(" passed, "))
        .and_then(|(p, f)| Some((p.parse().ok()?, f.parse().ok()?)));
    parsed.unwrap_or_else(|| panic!("not a summary line: {line:?}"))
}

#[test]
fn test_passes_on_the_shipped_rules() {
    // Run from the project root with the default `--rules ./rules`.
    let out = run(leadscore().arg("test"));
    let last = last_line(&out);
    let (passed, failed) = counts(&last);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(failed, 0, "{}", stdout(&out));
    assert!(passed >= 40, "{last}");
    let ok_lines = stdout(&out).lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(ok_lines, passed);
}

#[test]
fn test_prints_expected_and_actual_for_a_failing_expectation() {
    let dir = rules_dir(&[
        (
            "10-role.rhai",
            "if answer(\"role\") == \"CEO\" { add(25, \"CEO\"); tag(\"boss\"); }\n",
        ),
        (
            "20-float.rhai",
            "if answer(\"role\") == \"Intern\" { add(0.1, \"a\"); add(0.2, \"b\"); }\n",
        ),
        (
            "tiers.toml",
            "[[tiers]]\nname = \"hot\"\nmin_score = 70\n\n[[tiers]]\nname = \"cold\"\n",
        ),
        (
            "tests/role.toml",
            r#"
[[test]]
name = "ceo scores 25"
score = 25
tags_include = ["boss"]
[test.contact]
id = 1
[test.contact.questionsAndAnswers]
"What is your role?" = "CEO"

[[test]]
name = "float sums compare without rounding noise"
score = 0.3
max_score = 0.3
[test.contact]
id = 3
[test.contact.questionsAndAnswers]
"What is your role?" = "Intern"

[[test]]
name = "ceo is hot (wrong)"
tier = "hot"
score = 90
reasons_include = ["Founder"]
[test.contact]
id = 2
[test.contact.questionsAndAnswers]
"What is your role?" = "CEO"
"#,
        ),
    ]);
    let out = run(leadscore().arg("test").arg("--rules").arg(dir.path()));
    assert!(!out.status.success());
    let text = stdout(&out);
    assert_eq!(counts(&last_line(&out)), (2, 1), "{text}");
    assert!(text.contains("ceo is hot (wrong)"), "{text}");
    assert!(text.contains(r#"tier: expected "hot", got "cold""#), "{text}");
    assert!(text.contains("score: expected 90, got 25"), "{text}");
    assert!(text.contains(r#"expected to include "Founder""#), "{text}");
}
#[test]
fn a_store_that_does_not_exist_is_an_error_not_a_new_database() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let missing = dir.path().join("typo").join("leadscore.db");
    let url = format!("sqlite://{}", missing.display());
    let out = run(leadscore().args(["backtest", "--candidate", "rules", "--store", &url]));
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("there is no store at"), "{}", stderr(&out));
    let out = run(leadscore().args(["deliveries", "list", "--store", &url]));
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stderr(&out).contains("there is no store at"), "{}", stderr(&out));
    assert!(!dir.path().join("typo").exists(), "nothing was created");
}

#[test]
fn an_unquoted_toml_date_in_an_inline_contact_is_its_text() {
    let dir = rules_dir(&[
        (
            "10-date.rhai",
            "if contact.createdAt == \"2026-11-20T15:28:40Z\" { add(5, \"dated\"); }\n",
        ),
        (
            "tests/date.toml",
            "[[test]]\nname = \"date as text\"\nscore = 5\ncontact = { id = 1, createdAt = 2026-11-20T15:28:40Z }\n",
        ),
    ]);
    let out = run(leadscore().arg("test").arg("--rules").arg(dir.path()));
    assert_eq!(
        counts(&last_line(&out)),
        (1, 0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(out.status.success());
}

/// SPEC 12: rule tests may set the scoring time and the contact's history
/// (`tests/fixtures/rules-time`: a hot lead without a booked call cools to
/// warm after a week).
#[test]
fn rule_tests_set_the_scoring_time_first_seen_and_calls() {
    let out = run(leadscore()
        .args(["test", "--coverage", "--rules"])
        .arg(fixture("rules-time")));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(counts(&last_line(&out)), (7, 0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("every rule file and every add/disqualify/tag call was reached by a test"),
        "{}",
        stdout(&out)
    );
}

/// SPEC 12: `leadscore score` scores at the current time, with no calls and
/// first seen now.
#[test]
fn score_scores_now_with_no_history() {
    let dir = rules_dir(&[(
        "10-time.rhai",
        "add(0, now()); tag(first_seen()); add(calls().len(), \"calls\");\n",
    )]);
    let out = run_with_stdin(
        leadscore().args(["score", "--rules"]).arg(dir.path()).arg("-"),
        "{\"id\": 1}\n",
    );
    let scored = scored_lines(&out).remove(0);
    let scored_at = &scored["scored_at"];
    assert!(scored_at.as_str().unwrap().ends_with('Z'), "{scored}");
    assert_eq!(&scored["reasons"][0]["reason"], scored_at, "{scored}");
    assert_eq!(scored["tags"], json!([scored_at]), "{scored}");
    assert_eq!(scored["reasons"][1]["points"], 0, "{scored}");
}

#[test]
fn a_rule_test_time_that_is_not_one_fails_the_test_saying_so() {
    let contact = "contact = { id = 1 }\n";
    let dir = rules_dir(&[
        ("10-now.rhai", "add(1, now()); tag(first_seen());\n"),
        (
            "tests/a.toml",
            &[
                "[[test]]\nname = \"pinned\"\nnow = 2026-11-20T16:00:00.5+01:00\n",
                "first_seen = \"2026-11-01T00:00:00Z\"\n",
                "reasons_include = [\"2026-11-20T15:00:00.500Z\"]\ntags_include = [\"2026-11-01T00:00:00.000Z\"]\n",
                contact,
                "[[test]]\nname = \"a date alone\"\nnow = 2026-11-20\n",
                contact,
                "[[test]]\nname = \"no offset\"\nnow = \"2026-11-20T15:00:00\"\n",
                contact,
                "[[test]]\nname = \"a number\"\nfirst_seen = 5\n",
                contact,
            ]
            .concat(),
        ),
        (
            "tests/b.toml",
            "[[test]]\nname = \"misspelt\"\ncalls = [{ status = \"cancelled\" }]\ncontact = { id = 1 }\n",
        ),
    ]);
    let out = run(leadscore().arg("test").arg("--rules").arg(dir.path()));
    let text = stdout(&out);
    assert!(!out.status.success(), "{text}");
    assert_eq!(counts(&last_line(&out)), (1, 4), "{text}");
    for expected in [
        r#"now: "2026-11-20" is not an RFC 3339 time with an offset, such as 2026-11-20T15:28:40Z"#,
        r#"now: "2026-11-20T15:00:00" is not an RFC 3339 time"#,
        r#"first_seen: "5" is not an RFC 3339 time"#,
        "unknown variant `cancelled`, expected one of `booked`, `rescheduled`, `canceled`",
    ] {
        assert!(text.contains(expected), "{expected}\n{text}");
    }
}

#[test]
fn the_rules_folder_comes_from_leadscore_rules_unless_the_flag_says_otherwise() {
    let from_env = rules_dir(&[("10-a.rhai", "add(42, \"from LEADSCORE_RULES\");\n")]);
    let from_flag = rules_dir(&[("10-a.rhai", "add(7, \"from --rules\");\n")]);
    let input = "{\"id\": 1}\n";

    let out = run_with_stdin(
        leadscore()
            .env("LEADSCORE_RULES", from_env.path())
            .args(["score", "-"]),
        input,
    );
    let lines = scored_lines(&out);
    assert_eq!(lines[0]["score"], 42);
    assert_eq!(lines[0]["reasons"][0]["reason"], "from LEADSCORE_RULES");
    assert_eq!(lines[0]["tier"], "scored", "no tiers.toml");

    let out = run_with_stdin(
        leadscore()
            .env("LEADSCORE_RULES", from_env.path())
            .args(["score", "--rules"])
            .arg(from_flag.path())
            .arg("-"),
        input,
    );
    let lines = scored_lines(&out);
    assert_eq!(lines[0]["score"], 7);
    assert_eq!(lines[0]["reasons"][0]["reason"], "from --rules");

    // `check` honours it too: a broken folder in the variable fails.
    let broken = rules_dir(&[("10-a.rhai", "add(1,\n")]);
    let out = run(leadscore().env("LEADSCORE_RULES", broken.path()).arg("check"));
    assert!(!out.status.success());
    let out = run(leadscore()
        .env("LEADSCORE_RULES", broken.path())
        .arg("check")
        .arg("--rules")
        .arg(from_flag.path()));
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Issue 19 #10: logs written to a pipe (or a file) carry no ANSI colour
/// codes; only a terminal gets colours. Covers the server's log and a
/// one-shot command's.
#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    use std::io::{BufRead, BufReader};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = format!("sqlite://{}", dir.path().join("ls.db").display());
    let mut child = leadscore()
        .env_remove("NO_COLOR")
        .env("LEADSCORE_LOG", "debug")
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--rules",
            "rules",
            "--store",
            &store,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the leadscore binary starts");
    let pipe = child.stderr.take().expect("stderr is piped");
    let (lines_tx, lines_rx) = mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut pipe = BufReader::new(pipe);
        let mut line = Vec::new();
        while pipe.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            if lines_tx.send(std::mem::take(&mut line)).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&log).contains("listening") && Instant::now() < deadline {
        if let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(200)) {
            log.extend(line);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    reader.join().expect("the reader thread");
    log.extend(lines_rx.try_iter().flatten());
    let text = String::from_utf8_lossy(&log);
    assert!(text.contains("listening"), "the server logged its start:\n{text}");
    assert!(!log.contains(&0x1b), "ESC in the server's log:\n{text:?}");

    // A one-shot command's log (a rule's print() at debug level).
    let rules = rules_dir(&[("10-a.rhai", "print(\"hello from the rule\"); add(1, \"x\");\n")]);
    let out = run_with_stdin(
        leadscore()
            .env_remove("NO_COLOR")
            .env("LEADSCORE_LOG", "debug")
            .args(["score", "--rules"])
            .arg(rules.path())
            .arg("-"),
        "{\"id\": 1}\n",
    );
    let log = stderr(&out);
    assert!(log.contains("hello from the rule"), "{log}");
    assert!(!log.contains('\u{1b}'), "ESC in the command's log: {log:?}");
}

/// SPEC 10 `leadscore destinations check`: the example file with its
/// variables set loads; a missing variable and a bad setting are named
/// with file, line and column (exit 2).
#[test]
fn destinations_check_names_every_problem() {
    let example = repo().join("destinations.example.toml");
    let env = [
        ("HUBSPOT_TOKEN", "pat-test-token-9f8e7d"),
        (
            "SLACK_WEBHOOK_URL",
            "https://hooks.slack.com/services/T0/B0/xyzzy-secret",
        ),
        ("NURTURE_API_KEY", "nurture-key-1234"),
        ("NURTURE_SIGNING_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    ];
    let out = run(leadscore()
        .args(["destinations", "check", "--destinations"])
        .arg(&example)
        .envs(env));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("crm: hubspot to https://api.hubapi.com"), "{text}");
    assert!(
        text.contains("ops-slack: slack to https://hooks.slack.com ("),
        "{text}"
    );
    assert!(text.contains("destination(s), OK"), "{text}");
    for (_, secret) in env {
        assert!(
            !text.contains(secret) && !stderr(&out).contains(secret),
            "{secret} shown"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("destinations.toml");
    std::fs::write(
        &broken,
        "[[destination]]\nname = \"crm\"\nurl = \"https://crm.example/hook\"\nrate = \"0/10s\"\n\n\
         [[destination]]\nname = \"chat\"\nurl = { env = \"CHAT_URL_NOT_SET_ANYWHERE\" }\n",
    )
    .unwrap();
    let out = run(leadscore()
        .args(["destinations", "check", "--destinations"])
        .arg(&broken));
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let errors = stderr(&out);
    let path = broken.display().to_string();
    assert!(errors.contains(&format!("{path}:4:")), "{errors}");
    assert!(errors.contains("destination \"crm\": rate"), "{errors}");
    assert!(errors.contains(&format!("{path}:8:")), "{errors}");
    assert!(
        errors.contains("CHAT_URL_NOT_SET_ANYWHERE is not set"),
        "{errors}"
    );
}

/// SPEC 10 `leadscore destinations preview`: the request a destination
/// would get for a scored fixture, the token masked, nothing sent.
#[test]
fn destinations_preview_shows_the_request_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("destinations.toml");
    std::fs::write(
        &file,
        "[[destination]]\nname = \"crm\"\nurl = \"http://127.0.0.1:9/never-called\"\ntemplate = \"hubspot\"\n\
         auth = { bearer_env = \"PREVIEW_TOKEN\" }\n",
    )
    .unwrap();
    let out = run(leadscore()
        .args(["destinations", "preview", "--rules"])
        .arg(repo().join("rules"))
        .arg("--destinations")
        .arg(&file)
        .args(["--json", "crm"])
        .arg(fixture("contact-created-qualified.json"))
        .env("PREVIEW_TOKEN", "tok-preview-5678"));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains("tok-preview-5678"), "{text}");
    let request: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(request["destination"], "crm");
    assert_eq!(request["method"], "POST");
    assert_eq!(request["url"], "http://127.0.0.1:9/never-called");
    let headers: Vec<(String, String)> = serde_json::from_value(request["headers"].clone()).unwrap();
    assert!(
        headers.contains(&("authorization".into(), "Bearer ***".into())),
        "{headers:?}"
    );
    let input = &request["body"]["json"]["inputs"][0];
    assert_eq!(input["idProperty"], "email", "{request}");
    assert!(input["properties"]["leadscore_tier"].is_string(), "{request}");
}

/// `--forward-url` and a destinations file together are refused at start.
#[test]
fn forward_url_and_a_destinations_file_are_refused_together() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("destinations.toml");
    std::fs::write(
        &file,
        "[[destination]]\nname = \"crm\"\nurl = \"http://127.0.0.1:9/\"\n",
    )
    .unwrap();
    let out = run(leadscore()
        .args([
            "config",
            "--forward-url",
            "http://127.0.0.1:9/x",
            "--destinations",
        ])
        .arg(&file));
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("--forward-url and the destinations file"),
        "{}",
        stderr(&out)
    );
}

/// SPEC 13: `score --trace` adds one trace entry per rule file, in order,
/// with the question a rule looked for and that nothing matched.
#[test]
fn score_trace_shows_each_rule_and_what_it_looked_up() {
    let dir = rules_dir(&[
        (
            "10-role.rhai",
            "if answer(\"What is your roll\") == \"CEO\" { add(25, \"CEO\") }\n",
        ),
        (
            "20-source.rhai",
            "if utm(\"source\") == \"google\" { add(5, \"search\") }\n",
        ),
    ]);
    let contact = r#"{"id": 9, "questionsAndAnswers": {"What is your role?": "CEO"}, "tracking": {"utm_source": "google"}}"#;
    let out = run_with_stdin(
        leadscore()
            .args(["score", "--trace", "--rules"])
            .arg(dir.path())
            .arg("-"),
        contact,
    );
    let lines = scored_lines(&out);
    let trace = lines[0]["trace"].as_array().expect("a trace");
    assert_eq!(trace.len(), 2);
    assert_eq!(trace[0]["rule"], "10-role.rhai");
    assert_eq!(trace[0]["status"], "no effect");
    assert_eq!(
        trace[0]["lookups"],
        json!([{"fn": "answer", "arg": "What is your roll", "result": "", "matched": null, "how": "none"}])
    );
    assert_eq!(trace[1]["status"], "added");
    assert_eq!(trace[1]["points"], 5);
    assert_eq!(trace[1]["lookups"][0]["matched"], "utm_source");
    // Without the flag, no trace.
    let out = run_with_stdin(
        leadscore().args(["score", "--rules"]).arg(dir.path()).arg("-"),
        contact,
    );
    assert!(scored_lines(&out)[0].get("trace").is_none());
}

/// SPEC 13: `test --coverage` names the rule file no test exercised and
/// the effect call no test reached, by file and line; the summary line and
/// the exit code stay those of `test`.
#[test]
fn test_coverage_names_an_untested_rule_and_an_unreached_line() {
    let dir = rules_dir(&[
        (
            "10-role.rhai",
            "if answer(\"role\") == \"CEO\" {\n    add(25, \"CEO\");\n} else if answer(\"role\") == \"Intern\" {\n    disqualify(\"intern\");\n}\n",
        ),
        (
            "20-seats.rhai",
            "if answer(\"seats\") != \"\" {\n    tag(\"seats\");\n}\n",
        ),
        (
            "tests/role.toml",
            r#"
[[test]]
name = "ceo scores 25"
score = 25
[test.contact]
id = 1
[test.contact.questionsAndAnswers]
"What is your role?" = "CEO"
"#,
        ),
    ]);
    let out = run(leadscore()
        .args(["test", "--coverage", "--rules"])
        .arg(dir.path()));
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert_eq!(last_line(&out), "1 passed, 0 failed");
    assert!(
        text.contains("  10-role.rhai: 1 test(s)\n    ") && text.contains("role.toml › ceo scores 25"),
        "{text}"
    );
    assert!(text.contains("  20-seats.rhai: no test\n"), "{text}");
    let rules = dir.path();
    assert!(
        text.contains(&format!(
            "untested rule file: {}\n",
            rules.join("20-seats.rhai").display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "not reached by any test: {}:4: disqualify(…)\n",
            rules.join("10-role.rhai").display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "not reached by any test: {}:2: tag(…)\n",
            rules.join("20-seats.rhai").display()
        )),
        "{text}"
    );
    assert!(!text.contains("10-role.rhai:2:"), "line 2 was reached: {text}");
    // A failing test still fails the run with coverage on.
    std::fs::write(
        dir.path().join("tests/role.toml"),
        "[[test]]\nname = \"wrong\"\nscore = 1\n[test.contact]\nid = 1\n",
    )
    .unwrap();
    let out = run(leadscore()
        .args(["test", "--coverage", "--rules"])
        .arg(dir.path()));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(last_line(&out), "0 passed, 1 failed");
}

/// SPEC 13: without a store, `lint` runs the checks that need none: a tier
/// no score within the bounds reaches is found (exit 1); the example rules
/// have none (exit 0).
#[test]
fn lint_without_a_store_finds_an_unreachable_tier() {
    let dir = rules_dir(&[
        ("10-a.rhai", "add(1, \"one\");\n"),
        (
            "tiers.toml",
            "[score]\nmin = 0\nmax = 100\n\n[[tiers]]\nname = \"legendary\"\nmin_score = 150\n\n[[tiers]]\nname = \"hot\"\nmin_score = 70\n\n[[tiers]]\nname = \"cold\"\n",
        ),
    ]);
    let out = run(leadscore().args(["lint", "--rules"]).arg(dir.path()));
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}\n{}", stderr(&out));
    assert!(
        text.contains("tiers.toml: tier \"legendary\" cannot be reached: its min_score 150 is above the score bounds [0, 100]"),
        "{text}"
    );
    assert!(!text.contains("\"hot\"") && !text.contains("\"cold\""), "{text}");
    assert!(
        last_line(&out).starts_with("1 finding(s); checked against no store"),
        "{text}"
    );

    let out = run(leadscore().args(["lint", "--rules", "rules"]));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(last_line(&out).starts_with("0 finding(s)"), "{}", stdout(&out));

    // Lint that cannot run says why and exits 2: a store that does not exist,
    // a window that is not one.
    let missing = dir.path().join("no-such.db");
    let out = run(leadscore()
        .args(["lint", "--rules", "rules", "--store"])
        .arg(format!("sqlite://{}", missing.display())));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
    let out = run(leadscore().args(["lint", "--rules", "rules", "--since", "soon"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).starts_with("error: --since"), "{}", stderr(&out));
}

/// SPEC 11: `report` refuses what it cannot run on before it opens the
/// store, and exits 2 naming the problem: a window that is not one, a
/// `tiers.toml` that does not parse, a rules folder that does not exist;
/// a store that does not exist is an error, not a new empty store.
#[test]
fn report_names_what_keeps_it_from_running() {
    let out = run(leadscore().args(["report", "--since", "soon"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).starts_with("error: --since"), "{}", stderr(&out));

    let dir = rules_dir(&[("tiers.toml", "[score]\nmin = 0\nmax = \"lots\"\n")]);
    let out = run(leadscore().args(["report", "--rules"]).arg(dir.path()));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("tiers.toml:3:"), "{}", stderr(&out));

    let out = run(leadscore()
        .args(["report", "--rules"])
        .arg(dir.path().join("nope")));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));

    let missing = dir.path().join("typo").join("leadscore.db");
    let out = run(leadscore()
        .args(["report", "--store"])
        .arg(format!("sqlite://{}", missing.display())));
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("there is no store at"), "{}", stderr(&out));
    assert!(!dir.path().join("typo").exists(), "nothing was created");
}

/// SPEC 11: the report of a store without contacts, to the letter: every
/// tier of `rules/tiers.toml` with zeros, every rate `null`.
#[test]
fn report_of_an_empty_store_lists_every_tier_with_null_rates() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let url = format!("sqlite://{}", dir.path().join("leadscore.db").display());
    let retention = leadscore::store::Retention {
        dedupe_window: std::time::Duration::from_secs(7 * 86400),
        retention: std::time::Duration::from_secs(90 * 86400),
    };
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(leadscore::store::open(&url, retention))
        .expect("a new store");
    let out = run(leadscore().args(["report", "--format", "json", "--store", &url]));
    assert!(out.status.success(), "{}", stderr(&out));
    let mut report: Value = serde_json::from_str(&stdout(&out)).expect("a JSON report");
    let since = report.as_object_mut().unwrap().remove("since").unwrap();
    assert!(since.as_str().unwrap().ends_with('Z'), "{since}");
    let tier = |name: &str| {
        json!({"tier": name, "contacts": 0, "booked": 0, "with_outcome": 0, "sales": 0,
               "sale_rate": null, "revenue": 0, "share_of_sales": null, "lift": null})
    };
    assert_eq!(
        report,
        json!({"contacts": 0, "booked": 0, "with_outcome": 0, "open": 0, "sales": 0, "revenue": 0,
               "sale_rate": null,
               "tiers": [tier("hot"), tier("warm"), tier("cold"), tier("disqualified")],
               "reasons": [], "tags": [], "disqualifications": [], "deciles": [],
               "top_tier": {"tier": "hot", "share_of_contacts": null, "share_of_sales": null}})
    );
    let out = run(leadscore().args(["report", "--store", &url]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("Outcomes of 0 contacts first seen since "),
        "{}",
        stdout(&out)
    );
}
