//! `leadscore test`: the rule tests of SPEC section 6 (`rules/tests/*.toml`).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;

use crate::payload::{self, Contact};
use crate::score::{CallStatus, CallSummary, Points, RuleSet, ScoredContact, ScoringContext, rfc3339};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    test: Vec<TestCase>,
}

/// One `[[test]]`: a payload and the expectations on each of its contacts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCase {
    name: String,
    payload: Option<String>,
    contact: Option<toml::Value>,
    tier: Option<String>,
    score: Option<f64>,
    min_score: Option<f64>,
    max_score: Option<f64>,
    disqualified: Option<bool>,
    #[serde(default)]
    reasons_include: Vec<String>,
    #[serde(default)]
    tags_include: Vec<String>,
    /// The scoring time (SPEC 12): an RFC 3339 time, quoted or not; the
    /// current time when absent.
    now: Option<toml::Value>,
    /// When the contact was first received; `now` when absent.
    first_seen: Option<toml::Value>,
    /// The contact's calls, newest first; none when absent.
    #[serde(default)]
    calls: Vec<TestCall>,
}

/// One call of `calls`: `{status, start_time, event_type}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCall {
    status: CallStatus,
    start_time: Option<toml::Value>,
    event_type: Option<String>,
}

/// The result of one test.
#[derive(Debug, Clone, PartialEq)]
pub struct TestOutcome {
    pub file: PathBuf,
    pub name: String,
    /// Empty when the test passed; else one line per unmet expectation.
    pub failures: Vec<String>,
}

impl TestOutcome {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The `*.toml` files of a rules folder's `tests/` folder, in name order.
pub fn test_files(rules_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let dir = rules_dir.join("tests");
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Which rule files the tests exercised and which effect calls they reached
/// (`leadscore test --coverage`, SPEC 13).
#[derive(Debug)]
pub struct Coverage {
    /// Per rule file, in order: its name and the tests in which it added
    /// points, disqualified or tagged.
    pub rules: Vec<(String, Vec<String>)>,
    /// Every `add`/`disqualify`/`tag` call: rule file, line, function.
    calls: Vec<(String, usize, &'static str)>,
    /// `(rule file, line)` of the effect calls some test ran.
    reached: BTreeSet<(String, usize)>,
}

impl Coverage {
    pub fn new(rules: &RuleSet) -> Self {
        Self {
            rules: rules
                .file_names()
                .into_iter()
                .map(|name| (name, Vec::new()))
                .collect(),
            calls: rules
                .calls()
                .into_iter()
                .filter(|call| crate::score::calls::EFFECT_FUNCTIONS.contains(&call.function))
                .map(|call| (call.rule, call.line, call.function))
                .collect(),
            reached: BTreeSet::new(),
        }
    }

    fn record(&mut self, test: &str, per_rule: &[(crate::score::Status, Vec<usize>)]) {
        for ((rule, tests), (status, lines)) in self.rules.iter_mut().zip(per_rule) {
            if status.had_effect() && !tests.iter().any(|t| t == test) {
                tests.push(test.to_owned());
            }
            self.reached
                .extend(lines.iter().map(|line| (rule.clone(), *line)));
        }
    }

    /// Rule files no test saw add points, disqualify or tag.
    pub fn untested_rules(&self) -> Vec<&str> {
        self.rules
            .iter()
            .filter(|(_, tests)| tests.is_empty())
            .map(|(rule, _)| rule.as_str())
            .collect()
    }

    /// The effect calls no test ran: rule file, line, function.
    pub fn unreached_calls(&self) -> Vec<(&str, usize, &'static str)> {
        self.calls
            .iter()
            .filter(|(rule, line, _)| !self.reached.contains(&(rule.clone(), *line)))
            .map(|(rule, line, function)| (rule.as_str(), *line, *function))
            .collect()
    }

    /// The report `leadscore test --coverage` prints; paths under `dir`.
    pub fn report(&self, dir: &Path) -> String {
        let mut out =
            String::from("coverage (tests in which each rule file added points, disqualified or tagged):\n");
        for (rule, tests) in &self.rules {
            match tests.len() {
                0 => {
                    let _ = writeln!(out, "  {rule}: no test");
                }
                n => {
                    let _ = writeln!(out, "  {rule}: {n} test(s)");
                    for test in tests {
                        let _ = writeln!(out, "    {test}");
                    }
                }
            }
        }
        let untested = self.untested_rules();
        let unreached = self.unreached_calls();
        if untested.is_empty() && unreached.is_empty() {
            out.push_str("every rule file and every add/disqualify/tag call was reached by a test\n");
            return out;
        }
        for rule in untested {
            let _ = writeln!(out, "untested rule file: {}", dir.join(rule).display());
        }
        for (rule, line, function) in unreached {
            let _ = writeln!(
                out,
                "not reached by any test: {}:{line}: {function}(…)",
                dir.join(rule).display()
            );
        }
        out
    }
}

/// Runs every test of one file. A file that cannot be read or parsed is
/// one failed test named after the file.
pub fn run_file(rules: &RuleSet, file: &Path) -> Vec<TestOutcome> {
    run_file_covered(rules, file, None)
}

/// [`run_file`], recording coverage. Lines are recorded only where Rhai
/// runs a rule: give a rule set made with `RuleSet::interpreted_only`.
pub fn run_file_covered(
    rules: &RuleSet,
    file: &Path,
    mut coverage: Option<&mut Coverage>,
) -> Vec<TestOutcome> {
    let broken = |message: String| {
        vec![TestOutcome {
            file: file.to_path_buf(),
            name: "(test file)".into(),
            failures: vec![message],
        }]
    };
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => return broken(format!("cannot read: {e}")),
    };
    let parsed: TestFile = match toml::from_str(&text) {
        Ok(parsed) => parsed,
        Err(e) => {
            let (line, column) = e
                .span()
                .map(|s| crate::score::tiers::line_column(&text, s.start))
                .unwrap_or((1, 1));
            return broken(format!("{}:{line}:{column}: {}", file.display(), e.message()));
        }
    };
    let base = file.parent().unwrap_or(Path::new("."));
    parsed
        .test
        .iter()
        .map(|case| TestOutcome {
            file: file.to_path_buf(),
            name: case.name.clone(),
            failures: run_case(
                rules,
                base,
                case,
                &file.display().to_string(),
                coverage.as_deref_mut(),
            ),
        })
        .collect()
}

fn run_case(
    rules: &RuleSet,
    base: &Path,
    case: &TestCase,
    file: &str,
    mut coverage: Option<&mut Coverage>,
) -> Vec<String> {
    let contacts = match load_contacts(base, case) {
        Ok(contacts) => contacts,
        Err(e) => return vec![e],
    };
    let at = match scoring_context(case) {
        Ok(at) => at,
        Err(e) => return vec![e],
    };
    let mut failures = Vec::new();
    for contact in &contacts {
        let result = match coverage.as_deref_mut() {
            None => rules.score(contact, None, &at),
            Some(coverage) => {
                let (outcome, per_rule) = rules.evaluate_covered(contact, &at);
                coverage.record(&format!("{file} › {}", case.name), &per_rule);
                rules.scored_contact(contact, outcome, None, &at)
            }
        };
        let label = if contacts.len() > 1 {
            format!("contact {}: ", contact.id_text())
        } else {
            String::new()
        };
        for failure in check(case, &result) {
            failures.push(format!("{label}{failure}"));
        }
    }
    failures
}

/// The time and history a test scores its contacts against (SPEC 12):
/// `now` (else the current time), `first_seen` (else `now`) and `calls`.
fn scoring_context(case: &TestCase) -> Result<ScoringContext, String> {
    let now = match &case.now {
        Some(value) => test_time("now", value)?,
        None => SystemTime::now(),
    };
    let first_seen = match &case.first_seen {
        Some(value) => test_time("first_seen", value)?,
        None => now,
    };
    let calls = case
        .calls
        .iter()
        .enumerate()
        .map(|(i, call)| {
            let start_time = match &call.start_time {
                None => None,
                Some(value) => Some(
                    time_text(value)
                        .ok_or_else(|| format!("calls[{i}].start_time: give the time as text"))?,
                ),
            };
            Ok(CallSummary {
                status: call.status,
                start_time,
                event_type: call.event_type.clone(),
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(ScoringContext {
        now,
        first_seen: Some(first_seen),
        calls,
    })
}

/// A time of a test: RFC 3339 with an offset, as a TOML date-time or text.
fn test_time(key: &str, value: &toml::Value) -> Result<SystemTime, String> {
    let text = time_text(value).unwrap_or_else(|| value.to_string());
    rfc3339::parse_time(&text).ok_or_else(|| {
        format!("{key}: {text:?} is not an RFC 3339 time with an offset, such as 2026-11-20T15:28:40Z")
    })
}

/// The text of a TOML string or date-time (written as it is in the file).
fn time_text(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(text) => Some(text.clone()),
        toml::Value::Datetime(at) => Some(at.to_string()),
        _ => None,
    }
}

fn load_contacts(base: &Path, case: &TestCase) -> Result<Vec<Contact>, String> {
    match (&case.payload, &case.contact) {
        (Some(path), None) => {
            let path = base.join(path);
            let body = std::fs::read(&path).map_err(|e| format!("payload {}: {e}", path.display()))?;
            let contacts = payload::parse_body(&body, usize::MAX)
                .map_err(|e| format!("payload {}: {e}", path.display()))?;
            if contacts.is_empty() {
                return Err(format!("payload {} has no contacts", path.display()));
            }
            Ok(contacts)
        }
        (None, Some(contact)) => {
            let value = inline_contact_json(contact)?;
            Contact::from_value(&value)
                .map(|c| vec![c])
                .map_err(|e| format!("contact {e}"))
        }
        (Some(_), Some(_)) => Err("give either `payload` or `contact`, not both".into()),
        (None, None) => Err("give a `payload` file or an inline `contact`".into()),
    }
}

/// An inline TOML contact as the JSON iClosed would send. A TOML date or
/// time (`createdAt = 2026-11-20T15:28:40Z`, unquoted) is the string it is
/// written as, as in a JSON payload, not serde's internal wrapper map.
fn inline_contact_json(value: &toml::Value) -> Result<serde_json::Value, String> {
    Ok(match value {
        toml::Value::Datetime(at) => serde_json::Value::String(at.to_string()),
        toml::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(inline_contact_json).collect::<Result<_, _>>()?)
        }
        toml::Value::Table(table) => serde_json::Value::Object(
            table
                .iter()
                .map(|(k, v)| Ok((k.clone(), inline_contact_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => serde_json::to_value(other).map_err(|e| format!("contact: {e}"))?,
    })
}

/// Every unmet expectation, as "what: expected X, got Y".
fn check(case: &TestCase, result: &ScoredContact) -> Vec<String> {
    let mut failures = Vec::new();
    let score = result.score.as_f64();
    if let Some(tier) = &case.tier
        && &result.tier != tier
    {
        failures.push(format!("tier: expected {tier:?}, got {:?}", result.tier));
    }
    if let Some(expected) = case.score
        && !same_score(expected, score)
    {
        failures.push(format!(
            "score: expected {}, got {}",
            show(expected),
            show_points(result.score)
        ));
    }
    if let Some(min) = case.min_score
        && score < min
        && !same_score(min, score)
    {
        failures.push(format!(
            "score: expected at least {}, got {}",
            show(min),
            show_points(result.score)
        ));
    }
    if let Some(max) = case.max_score
        && score > max
        && !same_score(max, score)
    {
        failures.push(format!(
            "score: expected at most {}, got {}",
            show(max),
            show_points(result.score)
        ));
    }
    if let Some(disqualified) = case.disqualified
        && disqualified != result.disqualified
    {
        failures.push(format!(
            "disqualified: expected {disqualified}, got {}",
            result.disqualified
        ));
    }
    let reasons: Vec<&str> = result.reasons.iter().map(|r| r.reason.as_str()).collect();
    for wanted in &case.reasons_include {
        if !reasons.contains(&wanted.as_str()) {
            failures.push(format!(
                "reasons: expected to include {wanted:?}, got {reasons:?}"
            ));
        }
    }
    for wanted in &case.tags_include {
        if !result.tags.contains(wanted) {
            failures.push(format!(
                "tags: expected to include {wanted:?}, got {:?}",
                result.tags
            ));
        }
    }
    if !failures.is_empty() && !result.errors.is_empty() {
        let mut note = String::from("rule errors:");
        for e in &result.errors {
            let _ = write!(note, " {}: {};", e.rule, e.error);
        }
        failures.push(note);
    }
    failures
}

/// Score equality up to float rounding, so that `score = 0.3` accepts the
/// sum of `add(0.1, …)` and `add(0.2, …)` (0.30000000000000004).
fn same_score(expected: f64, actual: f64) -> bool {
    (expected - actual).abs() <= 1e-9 * expected.abs().max(1.0)
}

fn show(n: f64) -> String {
    if n.fract() == 0.0 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

fn show_points(p: Points) -> String {
    match p {
        Points::Int(i) => i.to_string(),
        Points::Float(f) => f.to_string(),
    }
}
