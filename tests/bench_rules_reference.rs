//! The benchmark rule set (`benches/rules`) scored by the engine must
//! agree, contact for contact, with an independent Rust reimplementation of
//! its 8 rules written straight from SPEC section 2 — over thousands of
//! realistic contacts from the demo generator (`leadscore::demo`) and the
//! 1,000 committed payloads of `benches/data`.
//!
//! Nothing here calls the library's helpers: the reference reads the JSON
//! itself, so a bug in `answer`, `utm`, `parse_number`, ... shows up as a
//! mismatch.

use std::path::Path;
use std::time::Duration;

use leadscore::payload::parse_body;
use leadscore::score::{Limits, Points, RuleSet, ScoringContext};
use serde_json::Value;

const BENCH_RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/rules");
/// The benchmark mix: payloads of the project's first generator, kept in the repository.
const BENCH_MIX: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/benches/data/contacts-1000-seed7.jsonl"
);
const CONTACTS_PER_SEED: usize = 3000;
const SEEDS: [u64; 3] = [7, 1, 2026];

// ------------------------------------------------ SPEC 2.1, reimplemented

/// A JSON value as the text a rule reads: strings as they are, numbers
/// printed, null as "".
fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `answer(q)`: exact (case- and space-insensitive) question match over the
/// numbered pairs and the direct keys, else the first question containing q.
fn answer(contact: &Value, q: &str) -> String {
    let Some(qa) = contact.get("questionsAndAnswers").and_then(Value::as_object) else {
        return String::new();
    };
    let mut numbered: Vec<(u64, String, String)> = Vec::new();
    let mut direct: Vec<(String, String)> = Vec::new();
    for (key, value) in qa {
        let number = |suffix: &str| -> Option<u64> {
            let n = key.strip_suffix(suffix)?;
            (!n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
                .then(|| n.parse().ok())
                .flatten()
        };
        if let Some(n) = number("_question") {
            let response = qa.get(&format!("{n}_response")).map(text).unwrap_or_default();
            numbered.push((n, text(value), response));
        } else if number("_response").is_none() {
            direct.push((key.clone(), text(value)));
        }
    }
    numbered.sort_by_key(|e| e.0);
    let all: Vec<(String, String)> = numbered
        .into_iter()
        .map(|(_, q, r)| (q, r))
        .chain(direct)
        .collect();
    let wanted = q.trim().to_lowercase();
    if let Some((_, r)) = all.iter().find(|(q, _)| q.trim().to_lowercase() == wanted) {
        return r.clone();
    }
    all.iter()
        .find(|(q, _)| q.to_lowercase().contains(&wanted))
        .map(|(_, r)| r.clone())
        .unwrap_or_default()
}

/// `parse_number(s)`: the first number, `,` + 3 digits as a thousands
/// separator, a `.` decimal part, a `k`/`m` suffix.
fn parse_number(s: &str) -> Option<f64> {
    let chars: Vec<char> = s.chars().collect();
    let start = chars.iter().position(char::is_ascii_digit)?;
    let mut i = start;
    let mut number = String::new();
    while i < chars.len() {
        let c = chars[i];
        let next3_digits = chars.len() >= i + 4 && chars[i + 1..i + 4].iter().all(char::is_ascii_digit);
        if c.is_ascii_digit() {
            number.push(c);
        } else if c == ',' && !number.contains('.') && next3_digits {
            // thousands separator
        } else if c == '.' && !number.contains('.') && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
            number.push('.');
        } else {
            break;
        }
        i += 1;
    }
    let mut n: f64 = number.parse().ok()?;
    let word_continues = chars.get(i + 1).is_some_and(|c| c.is_alphabetic());
    match chars.get(i).map(char::to_ascii_lowercase) {
        Some('k') if !word_continues => n *= 1e3,
        Some('m') if !word_continues => n *= 1e6,
        _ => {}
    }
    if start > 0 && chars[start - 1] == '-' && (start == 1 || !chars[start - 2].is_alphanumeric()) {
        n = -n;
    }
    Some(n)
}

/// `utm(name)` (current touch) and `first_utm(name)`.
fn utm(contact: &Value, name: &str, first: bool) -> String {
    let Some(tracking) = contact.get("tracking").and_then(Value::as_object) else {
        return String::new();
    };
    let name = name.trim().to_lowercase();
    let bare = name.strip_prefix("utm_").unwrap_or(&name).to_owned();
    let key = if first {
        format!("first_utm_{bare}")
    } else {
        format!("utm_{bare}")
    };
    let direct = tracking.get(&key).map(text).unwrap_or_default();
    if !direct.is_empty() || first {
        return direct;
    }
    for n in 1..=100 {
        if let Some(k) = tracking.get(&format!("utmKey_{n}"))
            && text(k).trim().to_lowercase() == bare
        {
            return tracking
                .get(&format!("utmValue_{n}"))
                .map(text)
                .unwrap_or_default();
        }
    }
    String::new()
}

fn email_domain(contact: &Value) -> String {
    match contact.get("email").and_then(Value::as_str) {
        Some(email) => match email.rsplit_once('@') {
            Some((local, domain)) if !local.is_empty() => domain.trim().to_lowercase(),
            _ => String::new(),
        },
        None => String::new(),
    }
}

fn is_free_email(domain: &str) -> bool {
    const FREE: &[&str] = &[
        "gmail.com",
        "googlemail.com",
        "yahoo.com",
        "hotmail.com",
        "outlook.com",
        "live.com",
        "icloud.com",
        "aol.com",
        "proton.me",
        "protonmail.com",
        "mail.ru",
        "qq.com",
    ];
    FREE.contains(&domain)
        || ["gmx.", "yandex."].iter().any(|family| {
            domain
                .strip_prefix(family)
                .is_some_and(|tld| !tld.contains('.') && tld.len() <= 3)
        })
}

fn iclosed_disqualified(contact: &Value) -> bool {
    let status = contact.get("status").and_then(Value::as_str).unwrap_or("");
    status.eq_ignore_ascii_case("disqualified")
        || contact
            .get("disqualifyingGroup")
            .and_then(Value::as_array)
            .is_some_and(|groups| !groups.is_empty())
}

fn disqualifying_groups(contact: &Value) -> Vec<Value> {
    contact
        .get("disqualifyingGroup")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

// ------------------------------------------------ the 8 bench rules, in Rust

#[derive(Debug, Default, PartialEq)]
struct Expected {
    score: i64,
    tier: String,
    disqualified: bool,
    /// `(rule, points, reason)` in evaluation order.
    reasons: Vec<(String, i64, String)>,
    tags: Vec<String>,
    disqualifications: Vec<String>,
}

struct Run<'a> {
    rule: &'a str,
    out: Expected,
}

impl Run<'_> {
    fn add(&mut self, points: i64, reason: impl Into<String>) {
        self.out
            .reasons
            .push((self.rule.to_owned(), points, reason.into()));
    }

    fn tag(&mut self, label: &str) {
        if !self.out.tags.iter().any(|t| t == label) {
            self.out.tags.push(label.to_owned());
        }
    }
}

fn reference(c: &Value) -> Expected {
    let mut run = Run {
        rule: "",
        out: Expected::default(),
    };

    run.rule = "10-role.rhai";
    let role = answer(c, "What is your role?").to_lowercase();
    if role.is_empty() {
    } else if ["ceo", "founder", "cto", "owner"].contains(&role.as_str())
        || role.starts_with("vp")
        || role.starts_with("head of")
    {
        run.add(20, "Decision maker");
        run.tag("decision-maker");
    } else if role.contains("manager") || role.contains("director") {
        run.add(10, "Manager");
    } else if role == "student" {
        run.add(-20, "Student");
    }

    run.rule = "20-company-size.rhai";
    let size = answer(c, "employees");
    match parse_number(&size) {
        None => {
            if size.to_lowercase() == "just me" {
                run.add(-10, "Solo operator");
            }
        }
        Some(n) if n >= 200.0 => run.add(20, "Company 200+ employees"),
        Some(n) if n >= 50.0 => run.add(15, "Company 50-199 employees"),
        Some(n) if n >= 11.0 => run.add(8, "Company 11-49 employees"),
        Some(_) => {}
    }

    run.rule = "30-budget.rhai";
    let budget = answer(c, "monthly budget");
    if let Some(n) = parse_number(&budget) {
        if budget.to_lowercase().starts_with("less than") {
            run.add(-15, format!("Budget under ${}", n.trunc() as i64));
        } else if n >= 10000.0 {
            run.add(30, "Budget $10k+/month");
        } else if n >= 5000.0 {
            run.add(20, "Budget $5k-$10k/month");
        } else if n >= 2000.0 {
            run.add(10, "Budget $2k-$5k/month");
        }
    }

    run.rule = "40-timeline.rhai";
    let when = answer(c, "get started").to_lowercase();
    if when.contains("30 days") {
        run.add(15, "Starting within 30 days");
    } else if when.contains("1-3 months") {
        run.add(8, "Starting in 1-3 months");
    } else if when.contains("researching") {
        run.add(-5, "Just researching");
    }

    run.rule = "50-email.rhai";
    let domain = email_domain(c);
    if domain.is_empty() {
    } else if is_free_email(&domain) {
        run.add(-10, "Free email domain");
    } else {
        run.add(5, "Business email");
        run.tag("b2b");
    }

    run.rule = "60-attribution.rhai";
    let source = utm(c, "source", false);
    if source == "google" && utm(c, "medium", false) == "cpc" {
        run.add(10, "Paid search");
    } else if source == "linkedin" {
        run.add(8, "LinkedIn");
    }
    let partner = utm(c, "partner", false);
    if !partner.is_empty() {
        run.add(12, format!("Partner referral: {partner}"));
        run.tag("partner");
    }
    if utm(c, "source", true) == "newsletter" {
        run.add(4, "First touch: newsletter");
    }

    run.rule = "70-call.rhai";
    if let Some(call) = c.get("latestCall").filter(|v| !v.is_null())
        && call.get("dateTime").is_some_and(|d| !d.is_null())
    {
        run.add(15, "Call booked");
        run.tag("call-booked");
    }

    run.rule = "80-disqualify.rhai";
    if iclosed_disqualified(c) {
        let names: Vec<String> = disqualifying_groups(c)
            .iter()
            .filter_map(|g| g.get("name").filter(|n| !n.is_null()).map(text))
            .collect();
        run.out.disqualifications.push(if names.is_empty() {
            "Disqualified in iClosed".to_owned()
        } else {
            format!("Disqualified in iClosed: {}", names.join(", "))
        });
    }

    // tiers.toml: clamp to [0, 100]; hot 70, warm 40, cold below.
    let mut out = run.out;
    let sum: i64 = out.reasons.iter().map(|r| r.1).sum();
    out.score = sum.clamp(0, 100);
    out.disqualified = !out.disqualifications.is_empty();
    out.tier = if out.disqualified {
        "disqualified"
    } else if out.score >= 70 {
        "hot"
    } else if out.score >= 40 {
        "warm"
    } else {
        "cold"
    }
    .to_owned();
    out
}

// ------------------------------------------------ the comparison

/// The contacts of `seed` as JSON lines, one contact per line.
fn generate(seed: u64) -> String {
    let mut lines = String::new();
    for contact in leadscore::demo::contacts(seed, CONTACTS_PER_SEED) {
        lines.push_str(&serde_json::Value::Array(vec![contact]).to_string());
        lines.push('\n');
    }
    lines
}

fn points(p: Points) -> i64 {
    match p {
        Points::Int(i) => i,
        Points::Float(f) => panic!("the bench rules only add integer points, got {f}"),
    }
}

#[test]
fn the_engine_agrees_with_a_reference_implementation_of_the_bench_rules() {
    let limits = Limits {
        // Not a timing test: a loaded machine must not turn into mismatches.
        timeout: Duration::from_secs(60),
        ..Limits::default()
    };
    let rules = RuleSet::load(Path::new(BENCH_RULES), &limits).expect("the bench rules compile");
    assert_eq!(rules.file_names().len(), 8);

    let mut seen_tiers = std::collections::BTreeMap::<String, usize>::new();
    let mut seen_reasons = std::collections::BTreeSet::<String>::new();
    let sources = SEEDS
        .into_iter()
        .map(|seed| (format!("seed {seed}"), generate(seed), CONTACTS_PER_SEED))
        .chain([(
            "benches/data".to_owned(),
            std::fs::read_to_string(BENCH_MIX).expect("the benchmark mix"),
            1000,
        )]);
    for (source, lines, expected_count) in sources {
        let mut scored = 0usize;
        for (line_no, line) in lines.lines().enumerate() {
            let contacts = parse_body(line.as_bytes(), 1000)
                .unwrap_or_else(|e| panic!("{source} line {}: {e}", line_no + 1));
            for contact in contacts {
                let expected = reference(&contact.to_value());
                let got = rules.evaluate(&contact, &ScoringContext::at(std::time::SystemTime::now()));
                assert!(
                    got.errors.is_empty(),
                    "{source} contact {}: rule errors {:?}",
                    contact.id,
                    got.errors
                );
                let actual = Expected {
                    score: points(got.score),
                    tier: got.tier.clone(),
                    disqualified: got.disqualified,
                    reasons: got
                        .reasons
                        .iter()
                        .map(|r| (r.rule.clone(), points(r.points), r.reason.clone()))
                        .collect(),
                    tags: got.tags.clone(),
                    disqualifications: got.disqualifications.iter().map(|d| d.reason.clone()).collect(),
                };
                assert_eq!(
                    actual,
                    expected,
                    "{source} contact {} differs (left: engine, right: reference)\n{}",
                    contact.id,
                    contact.root()
                );
                *seen_tiers.entry(actual.tier).or_default() += 1;
                seen_reasons.extend(actual.reasons.into_iter().map(|r| r.2));
                scored += 1;
            }
        }
        assert_eq!(scored, expected_count, "{source}");
    }
    // The data must actually exercise the rules.
    for tier in ["hot", "warm", "cold", "disqualified"] {
        assert!(
            seen_tiers.get(tier).copied().unwrap_or(0) > 0,
            "no {tier} contact: {seen_tiers:?}"
        );
    }
    for reason in [
        "Decision maker",
        "Manager",
        "Student",
        "Solo operator",
        "Company 200+ employees",
        "Budget under $500",
        "Budget $10k+/month",
        "Starting within 30 days",
        "Free email domain",
        "Business email",
        "Paid search",
        "LinkedIn",
        "First touch: newsletter",
        "Call booked",
    ] {
        assert!(seen_reasons.contains(reason), "no contact got {reason:?}");
    }
    assert!(
        seen_reasons
            .iter()
            .any(|r| r.starts_with("Partner referral: partner-"))
    );
    println!(
        "compared {} contacts: {seen_tiers:?}",
        SEEDS.len() * CONTACTS_PER_SEED + 1000
    );
}
