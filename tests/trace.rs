//! The trace of SPEC 13 on hand-written rules: every status, every lookup
//! kind with what it matched and how, written out from the contract; and
//! the same trace whether the native path or Rhai alone runs the rules.

use std::time::Duration;

use leadscore::payload::Contact;
use leadscore::score::{Limits, Points, RuleSet, RuleSources, RuleTrace, ScoringContext, Status};
use serde_json::{Value, json};

fn rule_set(files: &[(&str, &str)], limits: &Limits) -> RuleSet {
    let sources = RuleSources {
        files: files
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect(),
        tiers: None,
    };
    RuleSet::compile(sources, limits).expect("the rules compile")
}

fn contact(value: Value) -> Contact {
    Contact::from_value(&value).expect("a contact")
}

/// A fixed scoring time, no history.
fn at() -> ScoringContext {
    ScoringContext::at(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000))
}

fn lead() -> Contact {
    contact(json!({
        "id": 42,
        "email": "ann@acme.io",
        "questionsAndAnswers": {
            "1_question": "What is your role?", "1_response": "VP Sales",
            "2_question": "What is your monthly budget for this project?", "2_response": "$10,000+",
            "Which tools do you use today?": "HubSpot"
        },
        "tracking": {
            "utm_source": "google",
            "first_utm_source": "newsletter",
            "utmKey_1": "partner", "utmValue_1": "acme-partners"
        }
    }))
}

/// One rule file per status, in file-name order.
const STATUS_RULES: &[(&str, &str)] = &[
    ("10-error.rhai", r#"add(5, "lost"); let x = "a" - 1;"#),
    (
        "20-disqualify.rhai",
        r#"add(3, "some"); tag("t"); disqualify("competitor");"#,
    ),
    ("30-added.rhai", r#"add(10, "VP"); add(2.5, "half"); tag("vp");"#),
    ("40-tagged.rhai", r#"tag("newsletter");"#),
    (
        "50-no-effect.rhai",
        r#"if answer("What is your roll") == "CEO" { add(25, "CEO") }"#,
    ),
];

fn without_times(mut trace: Vec<RuleTrace>) -> Vec<RuleTrace> {
    for entry in &mut trace {
        entry.micros = 0.0;
    }
    trace
}

#[test]
fn each_status_is_the_rules_strongest_effect() {
    let rules = rule_set(STATUS_RULES, &Limits::default());
    let (outcome, trace) = rules.evaluate_traced(&lead(), &at());
    let statuses: Vec<(&str, Status, Points)> = trace
        .iter()
        .map(|t| (t.rule.as_str(), t.status, t.points))
        .collect();
    assert_eq!(
        statuses,
        [
            ("10-error.rhai", Status::Error, Points::Int(0)),
            ("20-disqualify.rhai", Status::Disqualified, Points::Int(3)),
            ("30-added.rhai", Status::Added, Points::Float(12.5)),
            ("40-tagged.rhai", Status::Tagged, Points::Int(0)),
            ("50-no-effect.rhai", Status::NoEffect, Points::Int(0)),
        ]
    );
    // The trace agrees with the result it explains.
    assert_eq!(outcome.errors.len(), 1);
    assert_eq!(outcome.score, Points::Float(15.5));
    let json = serde_json::to_value(&trace).unwrap();
    assert_eq!(json[0]["status"], "error");
    assert_eq!(json[4]["status"], "no effect");
    assert_eq!(
        json[0].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["rule", "status", "points", "micros", "lookups"]
    );
    assert!(trace.iter().all(|t| t.micros > 0.0), "{trace:?}");
}

#[test]
fn rules_after_the_budget_ran_out_are_not_run() {
    let limits = Limits {
        timeout: Duration::from_millis(20),
        max_operations: u64::MAX,
        ..Limits::default()
    };
    let rules = rule_set(
        &[
            ("10-spin.rhai", "loop { }"),
            ("20-after.rhai", r#"add(2, "after");"#),
        ],
        &limits,
    );
    let (_, trace) = rules.evaluate_traced(&lead(), &at());
    let statuses: Vec<Status> = trace.iter().map(|t| t.status).collect();
    assert_eq!(statuses, [Status::Error, Status::NotRun]);
    assert_eq!(serde_json::to_value(trace[1].status).unwrap(), "not run");
    assert_eq!(trace[1].micros, 0.0);
}

const LOOKUP_RULE: &str = r#"
let role = answer("What is your role?");
let budget = answer("budget");
let typo = answer("What is your roll");
if has_answer("tools") { tag("tools") }
let source = utm("source");
let partner = utm("partner");
let first = first_utm("utm_source");
let missing = utm("campaign");
if role == "VP Sales" { add(1, "vp") }
"#;

#[test]
fn each_lookup_shows_what_it_matched_and_how() {
    let rules = rule_set(&[("10-lookups.rhai", LOOKUP_RULE)], &Limits::default());
    let (_, trace) = rules.evaluate_traced(&lead(), &at());
    let lookups = serde_json::to_value(&trace[0].lookups).unwrap();
    assert_eq!(
        lookups,
        json!([
            {"fn": "answer", "arg": "What is your role?", "result": "VP Sales",
             "matched": "What is your role?", "how": "exact"},
            {"fn": "answer", "arg": "budget", "result": "$10,000+",
             "matched": "What is your monthly budget for this project?", "how": "contains"},
            {"fn": "answer", "arg": "What is your roll", "result": "", "matched": null, "how": "none"},
            {"fn": "has_answer", "arg": "tools", "result": true,
             "matched": "Which tools do you use today?", "how": "contains"},
            {"fn": "utm", "arg": "source", "result": "google", "matched": "utm_source", "how": "key"},
            {"fn": "utm", "arg": "partner", "result": "acme-partners", "matched": "utmValue_1", "how": "custom"},
            {"fn": "first_utm", "arg": "utm_source", "result": "newsletter",
             "matched": "first_utm_source", "how": "key"},
            {"fn": "utm", "arg": "campaign", "result": "", "matched": null, "how": "none"},
        ])
    );
    assert_eq!(trace[0].status, Status::Added);
}

/// The native path and Rhai alone record the same trace (times aside), on
/// contacts where every lookup kind hits and misses.
#[test]
fn both_evaluation_paths_give_the_same_trace() {
    let mut files = STATUS_RULES.to_vec();
    files.push(("60-lookups.rhai", LOOKUP_RULE));
    let limits = Limits::default();
    let native = rule_set(&files, &limits);
    let rhai = rule_set(&files, &limits).interpreted_only();
    assert!(
        native.native_rule_count() >= 4,
        "the native path must run most of these"
    );
    let others = [
        lead(),
        contact(json!({"id": 1})),
        contact(json!({"id": 2, "questionsAndAnswers": {"What is your role?": "CEO"}, "tracking": "x"})),
    ];
    for contact in &others {
        let (native_outcome, native_trace) = native.evaluate_traced(contact, &at());
        let (rhai_outcome, rhai_trace) = rhai.evaluate_traced(contact, &at());
        assert_eq!(native_outcome, rhai_outcome, "{}", contact.root());
        assert_eq!(
            without_times(native_trace),
            without_times(rhai_trace.clone()),
            "{}",
            contact.root()
        );
    }
    // Where the native path finishes alone (no Rhai fallback), its own
    // trace is the same as Rhai's.
    let lookups_only = rule_set(&[("60-lookups.rhai", LOOKUP_RULE)], &limits);
    let (_, native_alone) = lookups_only
        .evaluate_native_only_traced(&lead(), &at())
        .expect("the lookup rule runs natively");
    let (_, rhai_trace) = rule_set(&[("60-lookups.rhai", LOOKUP_RULE)], &limits)
        .interpreted_only()
        .evaluate_traced(&lead(), &at());
    assert_eq!(without_times(native_alone), without_times(rhai_trace));
}

#[test]
fn tracing_changes_nothing_in_the_result() {
    let rules = rule_set(STATUS_RULES, &Limits::default());
    let contact = lead();
    assert_eq!(
        rules.evaluate_traced(&contact, &at()).0,
        rules.evaluate(&contact, &at())
    );
    let plain = serde_json::to_value(rules.score(&contact, None, &at())).unwrap();
    assert!(plain.get("trace").is_none(), "no trace unless asked for");
    let traced = serde_json::to_value(rules.score_traced(&contact, &at())).unwrap();
    assert_eq!(traced["trace"].as_array().unwrap().len(), STATUS_RULES.len());
    let mut without = traced.clone();
    without.as_object_mut().unwrap().remove("trace");
    assert_eq!(without, plain);
}

/// SPEC 12's functions in a trace: the rule's status and points follow the
/// scoring context, both paths record the same, and the lookups are what
/// the rule asked of the contact (the time and calls are not lookups).
#[test]
fn a_time_rule_traces_alike_both_ways() {
    const DECAY: &str = r#"if has_answer("budget") && days_since(first_seen()) > 7.0 && calls().len() == 0 { add(-30, "cooling") }"#;
    let files = [("90-decay.rhai", DECAY)];
    let native = rule_set(&files, &Limits::default());
    let rhai = rule_set(&files, &Limits::default()).interpreted_only();
    let week_old = ScoringContext {
        first_seen: Some(at().now - Duration::from_secs(8 * 86_400)),
        ..at()
    };
    for (context, status, points) in [(at(), Status::NoEffect, 0), (week_old, Status::Added, -30)] {
        let (_, native_trace) = native
            .evaluate_native_only_traced(&lead(), &context)
            .expect("the rule runs natively");
        let (_, rhai_trace) = rhai.evaluate_traced(&lead(), &context);
        assert_eq!(without_times(native_trace.clone()), without_times(rhai_trace));
        assert_eq!(
            (native_trace[0].status, native_trace[0].points),
            (status, Points::Int(points))
        );
        assert_eq!(
            serde_json::to_value(&native_trace[0].lookups).unwrap(),
            json!([{"fn": "has_answer", "arg": "budget", "result": true,
                    "matched": "What is your monthly budget for this project?", "how": "contains"}])
        );
    }
}
