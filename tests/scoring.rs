//! The rule API of SPEC section 2 and the scored contact of section 3,
//! exercised through real Rhai rules with the library API.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use leadscore::payload::{Contact, parse_body};
use leadscore::score::{Limits, Outcome, Points, RuleSet, RuleSources, ScoringContext};
use serde_json::{Value, json};

#[path = "support/mod.rs"]
mod support;

use support::spec;

// ---------------------------------------------------------------- helpers

fn sources(files: &[(&str, &str)], tiers: Option<&str>) -> RuleSources {
    RuleSources {
        files: files
            .iter()
            .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
            .collect(),
        tiers: tiers.map(str::to_owned),
    }
}

/// Limits for tests that are not about the wall clock: a generous budget, so
/// that a slow, shared test machine never turns a result into a time-out.
fn relaxed() -> Limits {
    Limits {
        timeout: Duration::from_secs(60),
        ..Limits::default()
    }
}

fn compile_with(files: &[(&str, &str)], tiers: Option<&str>, limits: &Limits) -> RuleSet {
    match RuleSet::compile(sources(files, tiers), limits) {
        Ok(rules) => rules,
        Err(e) => panic!("rule set did not compile:\n{e}"),
    }
}

fn compile(files: &[(&str, &str)], tiers: Option<&str>) -> RuleSet {
    compile_with(files, tiers, &relaxed())
}

fn contact(value: Value) -> Contact {
    let mut contacts = parse_body(value.to_string().as_bytes(), 1000).expect("a valid contact");
    assert_eq!(contacts.len(), 1);
    contacts.remove(0)
}

/// Scoring now, with no history (a dry run).
fn at_now() -> ScoringContext {
    ScoringContext::at(SystemTime::now())
}

fn evaluate(files: &[(&str, &str)], tiers: Option<&str>, value: Value) -> Outcome {
    compile(files, tiers).evaluate(&contact(value), &at_now())
}

/// The reasons as `(rule, points, reason)`.
fn reasons(outcome: &Outcome) -> Vec<(String, Points, String)> {
    outcome
        .reasons
        .iter()
        .map(|r| (r.rule.clone(), r.points, r.reason.clone()))
        .collect()
}

fn reason_texts(outcome: &Outcome) -> Vec<&str> {
    outcome.reasons.iter().map(|r| r.reason.as_str()).collect()
}

fn errors(outcome: &Outcome) -> Vec<(&str, &str)> {
    outcome
        .errors
        .iter()
        .map(|e| (e.rule.as_str(), e.error.as_str()))
        .collect()
}

/// Evaluates each Rhai expression against `value` inside one rule and
/// returns `"<type_of>=<value as text>"` for each, e.g. `"string=google"`,
/// `"f64=201.0"`, `"()="`. Fails the test when the rule itself fails.
fn probe(value: Value, exprs: &[&str]) -> Vec<String> {
    let body: String = exprs
        .iter()
        .map(|e| format!("{{ let v = {e}; add(0, `${{type_of(v)}}=${{v}}`); }}\n"))
        .collect();
    let outcome = evaluate(&[("10-probe.rhai", &body)], None, value);
    assert!(outcome.errors.is_empty(), "probe failed: {:?}", outcome.errors);
    outcome.reasons.into_iter().map(|r| r.reason).collect()
}

fn one_probe(value: Value, expr: &str) -> String {
    probe(value, &[expr]).remove(0)
}

fn scored_json(rules: &RuleSet, value: Value) -> Value {
    let scored = rules.score(&contact(value), None, &at_now());
    serde_json::to_value(&scored).expect("a scored contact serializes")
}

const TIERS: &str = r#"
[score]
min = 0
max = 100

[[tiers]]
name = "hot"
min_score = 70

[[tiers]]
name = "warm"
min_score = 40

[[tiers]]
name = "cold"
"#;

// ---------------------------------------------------------------- answer()

#[test]
fn answer_prefers_an_exact_question_over_an_earlier_contains_match() {
    let c = json!({"id": 1, "questionsAndAnswers": {
        "1_question": "Your role in the company (optional)", "1_response": "contains-hit",
        "2_question": "Role", "2_response": "exact-hit",
        "3_question": "What is your monthly budget for this project?", "3_response": "numbered-contains",
        "Budget": "direct-exact",
    }});
    assert_eq!(
        probe(
            c,
            &[
                r#"answer("role")"#,
                r#"answer("  ROLE ")"#,
                r#"answer("company")"#,
                r#"answer("budget")"#,
                r#"answer("monthly budget")"#,
                r#"answer("nothing like it")"#,
            ]
        ),
        [
            "string=exact-hit",
            "string=exact-hit",
            "string=contains-hit",
            "string=direct-exact",
            "string=numbered-contains",
            "string=",
        ]
    );
}

#[test]
fn answer_reads_numbered_pairs_and_direct_keys_ignoring_case_and_space() {
    let c = json!({"id": 1, "questionsAndAnswers": {
        "4_question": "What is your role?", "4_response": "VP of Operations",
        "What is your role?": "direct value (numbered pair wins)",
        "2_question": "  How many employees does your company have?  ", "2_response": "201-500",
        "When do you want to get started?": "Within 30 days",
    }});
    assert_eq!(
        probe(
            c,
            &[
                r#"answer("What is your role?")"#,
                r#"answer("  what IS your ROLE?  ")"#,
                r#"answer("how many employees does your company have?")"#,
                r#"answer("WHEN do you want to get started?")"#,
                r#"answer("get started")"#,
            ]
        ),
        [
            "string=VP of Operations",
            "string=VP of Operations",
            "string=201-500",
            "string=Within 30 days",
            "string=Within 30 days",
        ]
    );
}

#[test]
fn answer_reads_numbers_booleans_and_lists_as_strings() {
    let c = json!({"id": 1, "questionsAndAnswers": {
        "1_question": "Seats", "1_response": 250,
        "2_question": "Hourly rate", "2_response": 4.5,
        "Tools": ["Salesforce", "HubSpot"],
        "Opt in": true,
        "Empty": null,
    }});
    assert_eq!(
        probe(
            c,
            &[
                r#"answer("seats")"#,
                r#"parse_number(answer("seats"))"#,
                r#"answer("hourly rate")"#,
                r#"answer("tools")"#,
                r#"answer("opt in")"#,
                r#"answer("empty")"#,
            ]
        ),
        [
            "string=250",
            "f64=250.0",
            "string=4.5",
            "string=Salesforce, HubSpot",
            "string=true",
            "string=",
        ]
    );
}

#[test]
fn has_answer_is_answer_not_empty() {
    let c = json!({"id": 1, "questionsAndAnswers": {
        "1_question": "What is your role?", "1_response": "CEO",
        "2_question": "Company website", "2_response": "",
    }});
    assert_eq!(
        probe(
            c,
            &[
                r#"has_answer("role")"#,
                r#"has_answer("WHAT IS YOUR ROLE?")"#,
                r#"has_answer("website")"#,
                r#"has_answer("budget")"#,
            ]
        ),
        ["bool=true", "bool=true", "bool=false", "bool=false"]
    );
}

#[test]
fn answers_maps_question_text_to_response_with_numbered_pairs_resolved() {
    let c = json!({"id": 1, "questionsAndAnswers": {
        "1_question": "What is your role?", "1_response": "CEO",
        "2_question": "Seats", "2_response": 12,
        "Full Name": "Raya Fleming",
    }});
    assert_eq!(
        probe(
            c,
            &[
                "answers().len()",
                r#"answers()["What is your role?"]"#,
                r#"answers()["Seats"]"#,
                r#"answers()["Full Name"]"#,
                r#"answers().contains("1_question")"#,
                r#"answers().contains("1_response")"#,
                "answers().keys()",
            ]
        ),
        [
            "i64=3",
            "string=CEO",
            "string=12",
            "string=Raya Fleming",
            "bool=false",
            "bool=false",
            r#"array=["Full Name", "Seats", "What is your role?"]"#,
        ]
    );
}

// ---------------------------------------------------------------- utm()

#[test]
fn utm_reads_current_first_touch_and_custom_pairs() {
    let c = json!({"id": 1, "tracking": {
        "utm_source": "google", "utm_medium": "cpc", "utm_term": null,
        "first_utm_source": "linkedin", "first_utm_term": null,
        "utmKey_1": "gclid", "utmValue_1": "Cj0-example",
        "utmKey_2": "partner", "utmValue_2": "acme-referrals",
        "utmKey_3": "seat_count", "utmValue_3": 42,
    }});
    assert_eq!(
        probe(
            c,
            &[
                r#"utm("source")"#,
                r#"utm("utm_source")"#,
                r#"utm("source") == utm("utm_source")"#,
                r#"utm("UTM_Medium")"#,
                r#"utm("partner")"#,
                r#"utm("gclid")"#,
                r#"utm("seat_count")"#,
                r#"utm("term")"#,
                r#"utm("campaign")"#,
                r#"first_utm("source")"#,
                r#"first_utm("utm_source")"#,
                r#"first_utm("first_utm_source")"#,
                r#"utm("first_utm_source")"#,
                r#"first_utm("term")"#,
                r#"first_utm("medium")"#,
                r#"first_utm("partner")"#,
            ]
        ),
        [
            "string=google",
            "string=google",
            "bool=true",
            "string=cpc",
            "string=acme-referrals",
            "string=Cj0-example",
            "string=42",
            "string=",
            "string=",
            "string=linkedin",
            "string=linkedin",
            "string=linkedin",
            "string=",
            "string=",
            "string=",
            "string=",
        ]
    );
}

#[test]
fn utm_is_empty_when_tracking_is_missing_null_or_not_a_map() {
    for tracking in [
        None,
        Some(json!(null)),
        Some(json!("utm_source=google")),
        Some(json!(["google"])),
    ] {
        let mut c = json!({"id": 1});
        if let Some(t) = &tracking {
            c["tracking"] = t.clone();
        }
        assert_eq!(
            probe(
                c,
                &[r#"utm("source")"#, r#"first_utm("source")"#, r#"utm("partner")"#]
            ),
            ["string=", "string=", "string="],
            "tracking = {tracking:?}"
        );
    }
}

// ---------------------------------------------------------------- email

#[test]
fn email_domain_is_lower_cased() {
    assert_eq!(
        one_probe(
            json!({"id": 1, "email": "Raya.Fleming@NorthWind-Logistics.COM"}),
            "email_domain()"
        ),
        "string=northwind-logistics.com"
    );
    assert_eq!(one_probe(json!({"id": 1}), "email_domain()"), "string=");
    assert_eq!(
        one_probe(json!({"id": 1, "email": null}), "email_domain()"),
        "string="
    );
    assert_eq!(
        one_probe(json!({"id": 1, "email": "not an address"}), "email_domain()"),
        "string="
    );
}

#[test]
fn is_free_email_knows_free_mailbox_providers() {
    for (email, free) in [
        ("tom@gmail.com", true),
        ("Tom@GMAIL.com", true),
        ("anna@gmx.de", true),
        ("ivan@yandex.ru", true),
        ("x@outlook.com", true),
        ("x@proton.me", true),
        ("raya@northwind-logistics.com", false),
        ("li.wei@contoso-freight.cn", false),
    ] {
        assert_eq!(
            one_probe(json!({"id": 1, "email": email}), "is_free_email()"),
            format!("bool={free}"),
            "{email}"
        );
    }
    assert_eq!(one_probe(json!({"id": 1}), "is_free_email()"), "bool=false");
}

// ---------------------------------------------------------------- parse_number()

#[test]
fn parse_number_reads_the_first_number_or_returns_unit() {
    assert_eq!(
        probe(
            json!({"id": 1}),
            &[
                r#"parse_number("$10,000+")"#,
                r#"parse_number("201-500")"#,
                r#"parse_number("$5k")"#,
                r#"parse_number("Just me")"#,
                r#"parse_number("")"#,
                r#"parse_number("$2.5M")"#,
                r#"parse_number("Less than $500")"#,
                r#"parse_number("Just me") == ()"#,
                r#"parse_number("Just me") >= 200.0"#,
            ]
        ),
        [
            "f64=10000.0",
            "f64=201.0",
            "f64=5000.0",
            "()=",
            "()=",
            "f64=2500000.0",
            "f64=500.0",
            "bool=true",
            "bool=false",
        ]
    );
}

// ---------------------------------------------------------------- iClosed disqualification

#[test]
fn iclosed_disqualified_by_status_in_any_case_or_by_a_non_empty_group() {
    for (fields, expected) in [
        (json!({"status": "DISQUALIFIED"}), true),
        (json!({"status": "Disqualified"}), true),
        (json!({"status": "disqualified", "disqualifyingGroup": []}), true),
        (
            json!({"status": "QUALIFIED", "disqualifyingGroup": [{"id": 31, "name": "Budget too low"}]}),
            true,
        ),
        (json!({"status": "QUALIFIED", "disqualifyingGroup": []}), false),
        (json!({"status": "POTENTIAL", "disqualifyingGroup": null}), false),
        (json!({"status": "QUALIFIED"}), false),
        (json!({}), false),
    ] {
        let mut c = fields.clone();
        c["id"] = json!(7);
        assert_eq!(
            one_probe(c, "iclosed_disqualified()"),
            format!("bool={expected}"),
            "{fields}"
        );
    }
}

#[test]
fn disqualifying_groups_as_received_or_empty() {
    let groups = json!([{"id": 31, "name": "Budget too low"}, {"id": 32, "name": "Wrong country"}]);
    assert_eq!(
        probe(
            json!({"id": 1, "disqualifyingGroup": groups}),
            &[
                "disqualifying_groups().len()",
                "disqualifying_groups()[0].name",
                "disqualifying_groups()[1].id",
                "disqualifying_groups().map(|g| g.name)",
            ]
        ),
        [
            "i64=2",
            "string=Budget too low",
            "i64=32",
            r#"array=["Budget too low", "Wrong country"]"#,
        ]
    );
    for c in [json!({"id": 1}), json!({"id": 1, "disqualifyingGroup": null})] {
        assert_eq!(one_probe(c, "disqualifying_groups()"), "array=[]");
    }
}

// ---------------------------------------------------------------- wrong types, missing fields

#[test]
fn helpers_return_their_documented_types_for_wrong_typed_fields() {
    let c = json!({
        "id": "c-9",
        "questionsAndAnswers": [{"question": "What is your role?", "response": "CEO"}],
        "tracking": "utm_source=google",
        "email": 12345,
        "status": 3,
        "disqualifyingGroup": "Budget too low",
        "latestCall": "tomorrow",
    });
    assert_eq!(
        probe(
            c,
            &[
                r#"answer("role")"#,
                r#"has_answer("role")"#,
                "answers()",
                r#"utm("source")"#,
                r#"first_utm("source")"#,
                "email_domain()",
                "is_free_email()",
                "iclosed_disqualified()",
                "disqualifying_groups()",
                "contact.email",
                "contact.latestCall",
            ]
        ),
        [
            "string=",
            "bool=false",
            "map=#{}",
            "string=",
            "string=",
            "string=",
            "bool=false",
            "bool=false",
            "array=[]",
            "i64=12345",
            "string=tomorrow",
        ]
    );
}

#[test]
fn reading_a_missing_field_is_unit_but_a_property_of_unit_is_an_error_of_that_rule() {
    let rules = [
        (
            "10-missing.rhai",
            r#"
            let v = contact.nope;
            if v == () { add(1, "nope is ()"); }
            if contact.latestCall == () { add(1, "latestCall is ()"); }
            if contact.latestCall?.dateTime == () { add(1, "?. yields ()"); }
            "#,
        ),
        (
            "20-property-of-unit.rhai",
            r#"
            add(100, "never counted");
            let when = contact.latestCall.dateTime;
            "#,
        ),
        ("30-after.rhai", r#"add(2, "next rule still runs");"#),
    ];
    let outcome = evaluate(&rules, None, json!({"id": 1, "latestCall": null}));
    assert_eq!(
        reason_texts(&outcome),
        [
            "nope is ()",
            "latestCall is ()",
            "?. yields ()",
            "next rule still runs"
        ]
    );
    assert_eq!(outcome.score, Points::Int(5));
    let errs = errors(&outcome);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].0, "20-property-of-unit.rhai");
    assert!(errs[0].1.contains("dateTime"), "{}", errs[0].1);
    assert!(errs[0].1.contains("line 3"), "{}", errs[0].1);

    // With the field absent altogether the behaviour is the same.
    let outcome = evaluate(&rules, None, json!({"id": 1}));
    assert_eq!(outcome.score, Points::Int(5));
    assert_eq!(errors(&outcome).len(), 1);
}

// ---------------------------------------------------------------- add(), score, tiers

/// Points add up whatever their order, also past the 64-bit range: the
/// exact sum, as an integer while it fits, else as the nearest float.
#[test]
fn huge_integer_points_add_up_in_any_order() {
    let max = i64::MAX;
    let files = [
        ("10-a.rhai", format!(r#"add({max}, "max");"#)),
        ("20-b.rhai", format!(r#"add({max}, "max again");"#)),
        ("30-c.rhai", format!(r#"add(-{max}, "minus max");"#)),
    ];
    let refs = |picked: &[usize]| -> Vec<(&str, &str)> {
        picked
            .iter()
            .map(|&i| (files[i].0, files[i].1.as_str()))
            .collect()
    };
    // Back in range after passing beyond it: the exact integer.
    let all = scored_json(&compile(&refs(&[0, 1, 2]), None), json!({"id": 1}));
    assert_eq!(all["score"], json!(max), "{}", all["score"]);
    // Beyond it: the float nearest the true sum (2^64 - 2), not a saturated integer.
    let two = scored_json(&compile(&refs(&[0, 1]), None), json!({"id": 1}));
    assert!(two["score"].is_f64(), "{}", two["score"]);
    assert_eq!(two["score"].as_f64(), Some(2.0 * max as f64));
    // The order of the rules does not change the sum.
    let reordered = [
        ("10-a.rhai", files[2].1.as_str()),
        ("20-b.rhai", files[0].1.as_str()),
        ("30-c.rhai", files[1].1.as_str()),
    ];
    let other = scored_json(&compile(&reordered, None), json!({"id": 1}));
    assert_eq!(other["score"], json!(max), "{}", other["score"]);
}

#[test]
fn integer_points_give_an_integer_score_and_one_float_makes_it_a_float() {
    let ints = compile(
        &[("10-a.rhai", r#"add(30, "a"); add(-5, "b"); add(12, "c");"#)],
        None,
    );
    let json = scored_json(&ints, json!({"id": 1}));
    assert!(json["score"].is_i64(), "{}", json["score"]);
    assert_eq!(json["score"], json!(37));
    assert!(json["reasons"][1]["points"].is_i64());
    assert_eq!(json["reasons"][1]["points"], json!(-5));

    let mixed = compile(
        &[
            ("10-a.rhai", r#"add(30, "a");"#),
            ("20-b.rhai", r#"add(2.5, "b"); add(-0.25, "c");"#),
        ],
        None,
    );
    let json = scored_json(&mixed, json!({"id": 1}));
    assert!(json["score"].is_f64(), "{}", json["score"]);
    assert_eq!(json["score"].as_f64(), Some(32.25));
    assert!(json["reasons"][0]["points"].is_i64());
    assert!(json["reasons"][1]["points"].is_f64());

    // A whole float is still a float.
    let whole = compile(&[("10-a.rhai", r#"add(1, "a"); add(2.0, "b");"#)], None);
    let json = scored_json(&whole, json!({"id": 1}));
    assert!(json["score"].is_f64(), "{}", json["score"]);
    assert_eq!(json["score"].as_f64(), Some(3.0));
}

#[test]
fn the_score_is_clamped_to_min_and_max() {
    let tiers = Some(TIERS);
    let high = evaluate(
        &[("10-a.rhai", r#"add(90, "a"); add(60, "b");"#)],
        tiers,
        json!({"id": 1}),
    );
    assert_eq!(high.score, Points::Int(100));
    assert_eq!(high.tier, "hot");
    // The reasons keep the real contributions.
    assert_eq!(
        high.reasons.iter().map(|r| r.points).collect::<Vec<_>>(),
        [Points::Int(90), Points::Int(60)]
    );

    let low = evaluate(&[("10-a.rhai", r#"add(-30, "a");"#)], tiers, json!({"id": 1}));
    assert_eq!(low.score, Points::Int(0));
    assert_eq!(low.tier, "cold");

    let float = evaluate(&[("10-a.rhai", r#"add(100.5, "a");"#)], tiers, json!({"id": 1}));
    assert_eq!(float.score, Points::Float(100.0));
}

#[test]
fn the_highest_reached_threshold_wins_whatever_the_order_in_tiers_toml() {
    let shuffled = r#"
[score]
min = 0
max = 100

[[tiers]]
name = "cold"

[[tiers]]
name = "warm"
min_score = 40

[[tiers]]
name = "hot"
min_score = 70
"#;
    for (points, tier) in [
        (100, "hot"),
        (70, "hot"),
        (69, "warm"),
        (40, "warm"),
        (39, "cold"),
        (0, "cold"),
    ] {
        let rule = format!(r#"add({points}, "p");"#);
        for tiers in [TIERS, shuffled] {
            let outcome = evaluate(&[("10-a.rhai", &rule)], Some(tiers), json!({"id": 1}));
            assert_eq!(outcome.tier, tier, "{points} points with\n{tiers}");
        }
    }
    let float = evaluate(
        &[("10-a.rhai", r#"add(69.99, "p");"#)],
        Some(TIERS),
        json!({"id": 1}),
    );
    assert_eq!(float.tier, "warm");
}

#[test]
fn a_tier_without_min_score_catches_every_lower_score() {
    let tiers = "[[tiers]]\nname = \"good\"\nmin_score = 10\n\n[[tiers]]\nname = \"rest\"\n";
    let low = evaluate(
        &[("10-a.rhai", r#"add(-500, "p");"#)],
        Some(tiers),
        json!({"id": 1}),
    );
    assert_eq!(low.tier, "rest");
    assert_eq!(low.score, Points::Int(-500), "no [score] bounds, no clamping");
    let high = evaluate(
        &[("10-a.rhai", r#"add(10, "p");"#)],
        Some(tiers),
        json!({"id": 1}),
    );
    assert_eq!(high.tier, "good");

    // Without a catch-all tier, a score below every threshold gets "none".
    let no_catch_all = "[[tiers]]\nname = \"good\"\nmin_score = 10\n";
    let below = evaluate(
        &[("10-a.rhai", r#"add(3, "p");"#)],
        Some(no_catch_all),
        json!({"id": 1}),
    );
    assert_eq!(below.tier, "none");
}

#[test]
fn without_tiers_toml_every_contact_is_scored_and_nothing_is_clamped() {
    let rules = compile(&[("10-a.rhai", r#"add(contact.points, "p");"#)], None);
    for points in [500, -20, 0] {
        let outcome = rules.evaluate(&contact(json!({"id": 1, "points": points})), &at_now());
        assert_eq!(outcome.score, Points::Int(points));
        assert_eq!(outcome.tier, "scored");
    }
    assert_eq!(rules.tiers().names(), ["scored", "disqualified"]);
}

// ---------------------------------------------------------------- disqualify(), tag()

#[test]
fn disqualify_moves_the_contact_to_the_disqualified_tier_and_lists_the_rule() {
    let files = [
        ("10-points.rhai", r#"add(95, "Great fit");"#),
        (
            "50-dq.rhai",
            r#"if contact.country == "XX" { disqualify("Unsupported country"); disqualify("Second reason"); }"#,
        ),
    ];
    let rules = compile(&files, Some(TIERS));
    let json = scored_json(&rules, json!({"id": 1, "country": "XX"}));
    assert_eq!(json["tier"], "disqualified");
    assert_eq!(json["disqualified"], true);
    assert_eq!(json["score"], 95, "the score is still computed");
    assert_eq!(
        json["disqualifications"],
        json!([
            {"rule": "50-dq.rhai", "reason": "Unsupported country"},
            {"rule": "50-dq.rhai", "reason": "Second reason"},
        ])
    );
    let json = scored_json(&rules, json!({"id": 2, "country": "US"}));
    assert_eq!(json["tier"], "hot");
    assert_eq!(json["disqualified"], false);
    assert_eq!(json["disqualifications"], json!([]));
}

#[test]
fn a_custom_disqualified_tier_is_used() {
    let in_score = format!(
        "{}\n",
        TIERS.replace("max = 100\n", "max = 100\ndisqualified_tier = \"junk\"\n")
    );
    let top_level = format!("disqualified_tier = \"not-a-fit\"\n{TIERS}");
    for (tiers, name) in [(in_score.as_str(), "junk"), (top_level.as_str(), "not-a-fit")] {
        let outcome = evaluate(
            &[("10-a.rhai", r#"disqualify("no");"#)],
            Some(tiers),
            json!({"id": 1}),
        );
        assert_eq!(outcome.tier, name, "{tiers}");
        assert!(outcome.disqualified);
    }
}

#[test]
fn tags_are_kept_once_in_first_seen_order() {
    let outcome = evaluate(
        &[
            ("10-a.rhai", r#"tag("b2b"); tag("decision-maker"); tag("b2b");"#),
            (
                "20-b.rhai",
                r#"tag("urgent"); tag("decision-maker"); tag("b2b");"#,
            ),
        ],
        None,
        json!({"id": 1}),
    );
    assert_eq!(outcome.tags, ["b2b", "decision-maker", "urgent"]);
}

// ---------------------------------------------------------------- evaluation order and isolation

#[test]
fn rules_run_in_file_name_order_whatever_order_they_are_given_in() {
    let outcome = evaluate(
        &[
            ("30-c.rhai", r#"add(3, "third");"#),
            ("10-a.rhai", r#"add(1, "first"); add(11, "first again");"#),
            ("2-b.rhai", r#"add(2, "byte order puts 2-b after 10-a");"#),
        ],
        None,
        json!({"id": 1}),
    );
    assert_eq!(
        reasons(&outcome),
        [
            ("10-a.rhai".to_owned(), Points::Int(1), "first".to_owned()),
            ("10-a.rhai".to_owned(), Points::Int(11), "first again".to_owned()),
            (
                "2-b.rhai".to_owned(),
                Points::Int(2),
                "byte order puts 2-b after 10-a".to_owned()
            ),
            ("30-c.rhai".to_owned(), Points::Int(3), "third".to_owned()),
        ]
    );
}

#[test]
fn each_rule_gets_a_fresh_scope() {
    // A variable of another file does not exist: the set reports exactly the
    // file that uses it.
    let err = RuleSet::compile(
        sources(
            &[
                ("10-a.rhai", "let owners = 5; add(owners, \"a\");"),
                ("20-b.rhai", "add(owners, \"b\");"),
                ("30-c.rhai", "add(1, \"c\");"),
            ],
            None,
        ),
        &relaxed(),
    )
    .unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert_eq!(err.0[0].file, "20-b.rhai");
    assert_eq!((err.0[0].line, err.0[0].column), (1, 5));
    assert!(err.0[0].message.contains("owners"), "{}", err.0[0].message);

    // Shadowing `contact` in one rule does not change what the next one sees,
    // nor do variables of the same name collide.
    let outcome = evaluate(
        &[
            (
                "10-a.rhai",
                "let contact = #{id: 0}; let x = 1; add(contact.id, \"shadowed\");",
            ),
            ("20-b.rhai", "let x = 2; add(contact.id + x, \"original\");"),
        ],
        None,
        json!({"id": 40}),
    );
    assert_eq!(reasons(&outcome)[0].1, Points::Int(0));
    assert_eq!(reasons(&outcome)[1].1, Points::Int(42));
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
}

#[test]
fn a_rule_that_mutates_the_contact_fails_alone_and_the_contact_stays_intact() {
    let rules = compile(
        &[
            (
                "10-assign.rhai",
                r#"add(50, "before"); contact.email = "changed@example.com";"#,
            ),
            ("20-remove.rhai", r#"contact.remove("email"); add(50, "never");"#),
            (
                "30-nested.rhai",
                r#"contact.questionsAndAnswers.Role = "hacked";"#,
            ),
            (
                "40-copy.rhai",
                r#"let copy = contact; copy.email = "copy@example.com"; add(1, "copy " + copy.email);"#,
            ),
            (
                "50-read.rhai",
                r#"add(2, contact.email); add(3, answer("role"));"#,
            ),
        ],
        None,
    );
    let input = json!({"id": 1, "email": "raya@northwind.com", "questionsAndAnswers": {"Role": "CEO"}});
    let outcome = rules.evaluate(&contact(input.clone()), &at_now());
    assert_eq!(
        reason_texts(&outcome),
        ["copy copy@example.com", "raya@northwind.com", "CEO"]
    );
    assert_eq!(outcome.score, Points::Int(6));
    let failed: Vec<&str> = outcome.errors.iter().map(|e| e.rule.as_str()).collect();
    assert_eq!(failed, ["10-assign.rhai", "20-remove.rhai", "30-nested.rhai"]);
    assert!(
        outcome.errors[0].error.contains("constant"),
        "{}",
        outcome.errors[0].error
    );

    let json = scored_json(&rules, input.clone());
    assert_eq!(json["contact"], input);
}

// ---------------------------------------------------------------- run-time errors and limits

#[test]
fn a_run_time_error_drops_that_rules_effects_and_is_listed() {
    let outcome = evaluate(
        &[
            ("10-ok.rhai", r#"add(10, "ok"); tag("ok");"#),
            (
                "20-type.rhai",
                r#"add(100, "lost"); tag("lost"); disqualify("lost"); let x = "a" - 1;"#,
            ),
            ("30-unknown.rhai", r#"add(100, "lost"); no_such_helper(1);"#),
            (
                "40-throw.rhai",
                r#"add(100, "lost"); throw "budget question missing";"#,
            ),
            ("50-bad-points.rhai", r#"add("5", "points must be numbers");"#),
            ("60-ok.rhai", r#"add(5, "still counted"); tag("after");"#),
        ],
        Some(TIERS),
        json!({"id": 1}),
    );
    assert_eq!(reason_texts(&outcome), ["ok", "still counted"]);
    assert_eq!(outcome.score, Points::Int(15));
    assert_eq!(outcome.tags, ["ok", "after"]);
    assert!(!outcome.disqualified);
    assert!(outcome.disqualifications.is_empty());
    assert_eq!(outcome.tier, "cold");
    let errs = errors(&outcome);
    let rules: Vec<&str> = errs.iter().map(|e| e.0).collect();
    assert_eq!(
        rules,
        [
            "20-type.rhai",
            "30-unknown.rhai",
            "40-throw.rhai",
            "50-bad-points.rhai"
        ]
    );
    assert!(errs[0].1.contains("line 1"), "{}", errs[0].1);
    assert!(errs[1].1.contains("no_such_helper"), "{}", errs[1].1);
    assert!(errs[2].1.contains("budget question missing"), "{}", errs[2].1);
    assert!(errs[3].1.contains("add"), "{}", errs[3].1);

    // As serialized: {"rule", "error"} objects.
    let rules = compile(&[("96-loop.rhai", "throw \"x\";")], None);
    let json = scored_json(&rules, json!({"id": 1}));
    let error = &json["errors"][0];
    assert_eq!(error["rule"], "96-loop.rhai");
    assert!(error["error"].as_str().is_some_and(|e| e.contains('x')));
    assert_eq!(error.as_object().map(|o| o.len()), Some(2));
}

#[test]
fn an_endless_loop_hits_the_operations_limit_and_only_its_rule_fails() {
    let outcome = evaluate(
        &[
            ("10-before.rhai", r#"add(7, "before");"#),
            ("50-loop.rhai", r#"add(100, "lost"); loop { }"#),
            ("90-after.rhai", r#"add(3, "after");"#),
        ],
        None,
        json!({"id": 1}),
    );
    assert_eq!(reason_texts(&outcome), ["before", "after"]);
    assert_eq!(outcome.score, Points::Int(10));
    let errs = errors(&outcome);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].0, "50-loop.rhai");
    assert!(errs[0].1.contains("operations"), "{}", errs[0].1);

    // Also from inside a function the rule declares.
    let outcome = evaluate(
        &[("10-fn.rhai", "fn spin() { while true {} }\nspin();")],
        None,
        json!({"id": 1}),
    );
    assert!(
        outcome.errors[0].error.contains("operations"),
        "{:?}",
        outcome.errors
    );
}

#[test]
fn the_wall_clock_budget_stops_a_long_rule_and_the_rules_after_it() {
    let limits = Limits {
        timeout: Duration::from_millis(50),
        max_operations: u64::MAX,
        ..Limits::default()
    };
    let rules = compile_with(
        &[
            ("10-before.rhai", r#"add(7, "before");"#),
            ("50-long.rhai", r#"add(100, "lost"); let i = 0; loop { i += 1; }"#),
            ("90-after.rhai", r#"add(3, "after");"#),
        ],
        None,
        &limits,
    );
    let outcome = rules.evaluate(&contact(json!({"id": 1})), &at_now());
    let errs = errors(&outcome);
    // The long rule is stopped by the clock (no operations limit here) and the
    // rules after it are not run. (A machine stalled for the whole budget
    // before the first rule could even report that one as not run, so its
    // points are only checked when it ran.)
    let long = errs
        .iter()
        .find(|e| e.0 == "50-long.rhai")
        .expect("the long rule fails");
    assert!(
        long.1.contains("time budget") && long.1.contains("50ms"),
        "{}",
        long.1
    );
    let after = errs
        .iter()
        .find(|e| e.0 == "90-after.rhai")
        .expect("the next rule is not run");
    assert!(
        after.1.contains("not run") && after.1.contains("time budget"),
        "{}",
        after.1
    );
    assert!(!reason_texts(&outcome).contains(&"lost"));
    assert!(!reason_texts(&outcome).contains(&"after"));
    if !errs.iter().any(|e| e.0 == "10-before.rhai") {
        assert_eq!(reason_texts(&outcome), ["before"]);
        assert_eq!(outcome.score, Points::Int(7));
    }
}

#[test]
fn size_and_depth_limits_are_errors_not_panics() {
    let limits = Limits {
        max_array_size: 100,
        max_map_size: 100,
        ..relaxed()
    };
    let rules = compile_with(
        &[
            ("10-string.rhai", "let s = \"x\"; loop { s += s; }"),
            ("20-array.rhai", "let a = []; loop { a.push(1); }"),
            // Rhai checks a map's size when the map goes through a function or
            // method (here `len()`); a bare `m[k] = v` is bounded by the
            // operations limit only.
            ("30-map.rhai", "let m = #{}; loop { m[`k${m.len()}`] = 1; }"),
            ("40-recursion.rhai", "fn down(n) { down(n + 1) }\ndown(0);"),
            ("50-ok.rhai", r#"add(1, "survived");"#),
        ],
        None,
        &limits,
    );
    let outcome = rules.evaluate(&contact(json!({"id": 1})), &at_now());
    assert_eq!(reason_texts(&outcome), ["survived"]);
    let errs = errors(&outcome);
    assert_eq!(
        errs.iter().map(|e| e.0).collect::<Vec<_>>(),
        [
            "10-string.rhai",
            "20-array.rhai",
            "30-map.rhai",
            "40-recursion.rhai"
        ]
    );
    assert!(errs[0].1.to_lowercase().contains("string"), "{}", errs[0].1);
    assert!(errs[1].1.to_lowercase().contains("array"), "{}", errs[1].1);
    assert!(errs[2].1.to_lowercase().contains("map"), "{}", errs[2].1);
    assert!(
        errs[3].1.to_lowercase().contains("stack overflow"),
        "{}",
        errs[3].1
    );

    // The default string limit holds too (doubling reaches it quickly).
    let outcome = evaluate(
        &[("10-string.rhai", "let s = \"x\"; loop { s += s; }")],
        None,
        json!({"id": 1}),
    );
    assert!(
        outcome.errors[0].error.to_lowercase().contains("string"),
        "{:?}",
        outcome.errors
    );

    // An absurdly deep expression is refused when the set compiles.
    let deep = format!("let x = {}1{};", "(".repeat(500), ")".repeat(500));
    let err = RuleSet::compile(sources(&[("10-deep.rhai", &deep)], None), &relaxed()).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert_eq!(err.0[0].file, "10-deep.rhai");
}

#[test]
fn print_and_debug_do_not_change_the_result() {
    let outcome = evaluate(
        &[(
            "10-log.rhai",
            r#"print("hello " + contact.id); debug(#{a: 1}); debug(answers()); add(1, "logged");"#,
        )],
        None,
        json!({"id": 1}),
    );
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(reason_texts(&outcome), ["logged"]);
}

// ---------------------------------------------------------------- loading

#[test]
fn compile_errors_report_file_line_and_column_for_every_broken_file() {
    let err = RuleSet::compile(
        sources(
            &[
                ("10-good.rhai", "add(1, \"fine\");"),
                ("20-syntax.rhai", "let a = 1;\nlet b = (2 + ;\n"),
                (
                    "30-unclosed.rhai",
                    "// comment\n\nif true {\n    add(1, \"x\");\n",
                ),
            ],
            Some(TIERS),
        ),
        &relaxed(),
    )
    .unwrap_err();
    let found: Vec<(&str, usize, usize)> = err
        .0
        .iter()
        .map(|e| (e.file.as_str(), e.line, e.column))
        .collect();
    assert_eq!(found.len(), 2, "{err}");
    assert_eq!(found[0], ("20-syntax.rhai", 2, 14));
    // An unclosed block is reported where the file ends.
    assert_eq!(found[1], ("30-unclosed.rhai", 5, 1));
    assert!(err.0[0].message.contains(';'), "{}", err.0[0].message);
    assert!(err.to_string().contains("20-syntax.rhai:2:14: "), "{err}");
}

#[test]
fn a_broken_tiers_toml_is_reported_with_its_line() {
    let err = RuleSet::compile(
        sources(
            &[("10-a.rhai", "add(1, \"a\");")],
            Some("[score]\nmin = 0\nmax = \"lots\"\n"),
        ),
        &relaxed(),
    )
    .unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert_eq!(
        (err.0[0].file.as_str(), err.0[0].line, err.0[0].column),
        ("tiers.toml", 3, 7)
    );

    // Alongside broken rules, every problem is listed.
    let err = RuleSet::compile(
        sources(
            &[("10-a.rhai", "add(1, ")],
            Some("[[tiers]]\nname = \"a\"\nmin_scroe = 3\n"),
        ),
        &relaxed(),
    )
    .unwrap_err();
    let files: Vec<&str> = err.0.iter().map(|e| e.file.as_str()).collect();
    assert_eq!(files, ["10-a.rhai", "tiers.toml"]);
    assert_eq!(err.0[1].line, 3);
}

#[test]
fn rules_version_is_stable_for_the_same_sources_and_changes_with_them() {
    let a = [("10-a.rhai", "add(1, \"a\");"), ("20-b.rhai", "add(2, \"b\");")];
    let reordered = [a[1], a[0]];
    let v1 = compile(&a, Some(TIERS)).version().to_owned();
    assert_eq!(v1.len(), 64);
    assert!(v1.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(compile(&a, Some(TIERS)).version(), v1);
    assert_eq!(compile(&reordered, Some(TIERS)).version(), v1);

    let edited = [("10-a.rhai", "add(1, \"a\"); "), a[1]];
    assert_ne!(compile(&edited, Some(TIERS)).version(), v1);
    let renamed = [("11-a.rhai", a[0].1), a[1]];
    assert_ne!(compile(&renamed, Some(TIERS)).version(), v1);
    assert_ne!(compile(&a, None).version(), v1);
    assert_ne!(compile(&a, Some(&TIERS.replace("70", "75"))).version(), v1);

    let json = scored_json(&compile(&a, Some(TIERS)), json!({"id": 1}));
    assert_eq!(json["rules_version"], v1.as_str());
}

#[test]
fn the_shipped_example_rules_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let rules = RuleSet::load(&dir, &Limits::default()).expect("rules/ compiles");
    assert_eq!(
        rules.file_names(),
        [
            "10-role.rhai",
            "20-company-size.rhai",
            "30-budget.rhai",
            "40-timeline.rhai",
            "50-email.rhai",
            "60-attribution.rhai",
            "70-booked-call.rhai",
            "80-disqualify.rhai",
        ]
    );
    assert_eq!(rules.tiers().names(), ["hot", "warm", "cold", "disqualified"]);
}

// ---------------------------------------------------------------- the scored contact

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn example_rules() -> RuleSet {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    RuleSet::load(&dir, &relaxed()).expect("rules/ compiles")
}

#[test]
fn the_scored_contact_has_every_field_and_the_contact_as_received() {
    let rules = example_rules();
    let body = fixture("contact-created-qualified.json");
    let input: Value = serde_json::from_slice(&body).unwrap();
    let contacts = parse_body(&body, 1000).unwrap();
    let scored = rules.score(
        &contacts[0],
        Some("evt_123".into()),
        &ScoringContext::at(SystemTime::UNIX_EPOCH),
    );
    let text = serde_json::to_string(&scored).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();

    let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
    for key in spec::SCORED_FIELDS {
        assert!(keys.contains(&key), "missing {key} in {keys:?}");
    }
    assert_eq!(json["type"], "contact.scored");
    assert_eq!(json["id"], "evt_123");
    assert_eq!(json["contact_id"], json!(48213));
    assert_eq!(json["score"], json!(100));
    assert_eq!(json["tier"], "hot");
    assert_eq!(json["disqualified"], false);
    assert_eq!(
        json["reasons"][0],
        json!({"rule": "10-role.rhai", "points": 20, "reason": "VP, head of or director"})
    );
    assert_eq!(json["disqualifications"], json!([]));
    assert_eq!(json["errors"], json!([]));
    assert_eq!(json["rules_version"], rules.version());
    assert_eq!(json["scored_at"], "1970-01-01T00:00:00.000Z");
    assert_eq!(json["contact"], input[0], "the contact exactly as received");

    // A dry run has a null id; a string id keeps its type.
    let scored = rules.score(
        &contact(json!({"id": "lead-7", "extra": {"kept": [1, 2.5, null]}})),
        None,
        &at_now(),
    );
    let json = serde_json::to_value(&scored).unwrap();
    assert_eq!(json["id"], Value::Null);
    assert_eq!(json["contact_id"], json!("lead-7"));
    assert_eq!(
        json["contact"],
        json!({"id": "lead-7", "extra": {"kept": [1, 2.5, null]}})
    );
}

#[test]
fn the_fixtures_score_as_expected_with_the_example_rules() {
    let rules = example_rules();
    let contacts = parse_body(&fixture("contact-created-batch.json"), 1000).unwrap();
    let got: Vec<(Value, Points, String, bool)> = contacts
        .iter()
        .map(|c| {
            let o = rules.evaluate(c, &at_now());
            assert!(o.errors.is_empty(), "{:?}", o.errors);
            (c.id.clone(), o.score, o.tier, o.disqualified)
        })
        .collect();
    assert_eq!(
        got,
        [
            (json!(48213), Points::Int(100), "hot".to_owned(), false),
            (json!(48214), Points::Int(0), "disqualified".to_owned(), true),
            (json!(48215), Points::Int(0), "cold".to_owned(), false),
        ]
    );
    let dq = rules.evaluate(&contacts[1], &at_now());
    assert_eq!(dq.disqualifications.len(), 1);
    assert_eq!(dq.disqualifications[0].rule, "80-disqualify.rhai");
    assert_eq!(
        dq.disqualifications[0].reason,
        "Disqualified in iClosed: Budget too low"
    );

    let single = parse_body(&fixture("contact-created-single-object.json"), 1000).unwrap();
    assert_eq!(single.len(), 1);
    assert_eq!(rules.evaluate(&single[0], &at_now()).tier, "hot");
}

#[test]
fn concurrent_scoring_matches_sequential_scoring() {
    let rules = Arc::new(example_rules());
    let roles = [
        "CEO",
        "Head of Sales",
        "Marketing Manager",
        "Student",
        "Consultant",
    ];
    let sizes = ["Just me", "2-10", "51-200", "1000+"];
    let budgets = ["Less than $500", "$2,000 - $5,000", "$10,000+"];
    let timelines = ["Within 30 days", "3-6 months", "Just researching"];
    let emails = ["a@gmail.com", "b@initech.com", "c@rivalcloses.com"];
    let mut contacts: Vec<Contact> = Vec::new();
    for i in 0..240usize {
        contacts.push(contact(json!({
            "id": i,
            "email": emails[i % emails.len()],
            "status": if i % 11 == 0 { "DISQUALIFIED" } else { "QUALIFIED" },
            "questionsAndAnswers": {
                "1_question": "What is your role?", "1_response": roles[i % roles.len()],
                "2_question": "How many employees does your company have?", "2_response": sizes[i % sizes.len()],
                "3_question": "What is your monthly budget for this project?", "3_response": budgets[i % budgets.len()],
                "When do you want to get started?": timelines[i % timelines.len()],
            },
            "tracking": {"utm_source": if i % 2 == 0 { "google" } else { "linkedin" }, "utm_medium": "cpc",
                         "utmKey_1": "partner", "utmValue_1": if i % 3 == 0 { "acme" } else { "" }},
            "latestCall": if i % 4 == 0 { json!({"dateTime": "2026-11-24T17:00:00.000Z"}) } else { Value::Null },
        })));
    }
    contacts.extend(parse_body(&fixture("contact-created-batch.json"), 1000).unwrap());
    let contacts = Arc::new(contacts);
    let at = Arc::new(at_now());

    let sequential: Vec<Outcome> = contacts.iter().map(|c| rules.evaluate(c, &at)).collect();
    assert!(sequential.iter().all(|o| o.errors.is_empty()));
    let tiers: std::collections::BTreeSet<&str> = sequential.iter().map(|o| o.tier.as_str()).collect();
    assert!(
        tiers.len() >= 3,
        "the contacts should spread over tiers: {tiers:?}"
    );

    let threads: Vec<_> = (0..8)
        .map(|t| {
            let rules = Arc::clone(&rules);
            let contacts = Arc::clone(&contacts);
            let at = Arc::clone(&at);
            std::thread::spawn(move || {
                // Each thread walks the contacts from a different start.
                let n = contacts.len();
                (0..n)
                    .map(|k| {
                        let i = (k + t * 31) % n;
                        (i, rules.evaluate(&contacts[i], &at))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for handle in threads {
        for (i, outcome) in handle.join().expect("no scoring thread panics") {
            assert_eq!(outcome, sequential[i], "contact #{i}");
        }
    }
}

// ---------------------------------------------------- native evaluation

/// The rules the native path runs (src/score/native.rs) give exactly what
/// Rhai alone gives, on the example rules and the benchmark rules, for 1,000
/// generated contacts and for the same contacts with every string field
/// turned into a number and every map into an array (the shapes rules must
/// survive). And the native path really runs: the bench rules finish
/// natively for nearly every contact.
#[test]
fn native_evaluation_agrees_with_rhai_on_generated_contacts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let at = at_now();
    let text = std::fs::read_to_string(root.join("benches/data/contacts-1000-seed7.jsonl")).unwrap();
    let mut contacts: Vec<Contact> = text
        .lines()
        .flat_map(|line| parse_body(line.as_bytes(), usize::MAX).unwrap())
        .collect();
    assert_eq!(contacts.len(), 1000);
    fn odd(value: &Value, depth: usize) -> Value {
        match value {
            Value::String(s) => json!(s.len()),
            Value::Object(map) if depth > 0 => {
                Value::Array(map.values().map(|v| odd(v, depth + 1)).collect())
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), if k == "id" { v.clone() } else { odd(v, 1) }))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    let odd_contacts: Vec<Contact> = contacts
        .iter()
        .take(200)
        .map(|c| contact(odd(&c.to_value(), 0)))
        .collect();
    contacts.extend(odd_contacts);
    let bench_rules = root.join("benches/rules");
    for folder in [root.join("rules"), bench_rules.clone()] {
        let native = RuleSet::load(&folder, &relaxed()).unwrap();
        let rhai = RuleSet::load(&folder, &relaxed()).unwrap().interpreted_only();
        assert!(native.native_rule_count() > 0);
        let mut native_alone = 0;
        for (i, contact) in contacts.iter().enumerate() {
            let expected = rhai.evaluate(contact, &at);
            assert_eq!(
                native.evaluate(contact, &at),
                expected,
                "{} on {}",
                folder.display(),
                contact.root()
            );
            if let Some(outcome) = native.evaluate_native_only(contact, &at) {
                assert_eq!(outcome, expected, "{} on {}", folder.display(), contact.root());
                native_alone += usize::from(i < 1000);
            }
        }
        println!(
            "{}: {native_alone} of 1000 generated contacts natively",
            folder.display()
        );
        if folder == bench_rules {
            // Only 80-disqualify.rhai's loop over the groups of contacts
            // disqualified in iClosed is Rhai's: every other contact runs natively.
            let qualified = contacts[..1000]
                .iter()
                .filter(|c| !leadscore::score::helpers::iclosed_disqualified(c.root()))
                .count();
            assert_eq!(native_alone, qualified);
        }
    }
}
