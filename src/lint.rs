//! `leadscore lint` (SPEC 13): what makes a rule silently dead, found
//! against the rules' own text and, given a store, against the contacts
//! received in a window. Independent of HTTP and the command line (the use
//! case is `app::lint`).
//!
//! Store-free: tiers that no score within the bounds can reach. With the
//! stored contacts: question texts given to `answer`/`has_answer` that match
//! no stored question (with the closest one by edit distance), `utm` and
//! `first_utm` names never present, rule files that never had an effect.
//! Only constant arguments are checked: `answer(q)` with a computed `q` is
//! known only when it runs.
//!
//! Whether a rule has an effect is asked as of the time lint runs (a rule
//! that cools leads after a week fires on the older contacts of the
//! window), with each contact's latest receive time as its first (the
//! earliest one lint knows) and no calls: lint does not read stored calls,
//! so a rule file that reads `calls()` is never reported as without effect.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::payload::{Contact, parse_json};
use crate::score::calls::RuleCall;
use crate::score::helpers::{Answers, Touch, utm_lookup};
use crate::score::{RuleSet, ScoringContext};
use crate::store::StoredEvent;

/// One thing lint found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `question`, `utm`, `no_effect` or `unreachable_tier`.
    pub kind: &'static str,
    /// The rule file (`tiers.toml` for a tier).
    pub file: String,
    /// The line of the call, when the finding is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub message: String,
    /// The closest stored question, for a `question` finding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// The findings, and what they were checked against.
#[derive(Debug, Clone, Serialize)]
pub struct LintReport {
    /// Stored contacts read (the latest event of each); `null` without a store.
    pub contacts: Option<u64>,
    /// The window's start (RFC 3339); `null` without a store.
    pub since: Option<String>,
    pub findings: Vec<Finding>,
}

/// The checks that need no store: unreachable tiers.
pub fn store_free(rules: &RuleSet) -> Vec<Finding> {
    rules
        .tiers()
        .unreachable()
        .into_iter()
        .map(|(tier, why)| Finding {
            kind: "unreachable_tier",
            file: crate::score::TIERS_FILE.to_owned(),
            line: None,
            message: format!("tier {tier:?} cannot be reached: {why}"),
            suggestion: None,
        })
        .collect()
}

/// What the stored contacts of a window hold, folded one event at a time.
pub struct History {
    rules: Arc<RuleSet>,
    /// When lint runs: the scoring time of every contact.
    now: SystemTime,
    calls: Vec<RuleCall>,
    contacts: u64,
    /// Stored question texts by their lower-cased, trimmed form.
    questions: BTreeMap<String, String>,
    /// The `utm`/`first_utm` calls (index into `calls`) some contact answered.
    tracking_seen: BTreeSet<usize>,
    /// Rule files (by index) that had an effect on some contact.
    effective: BTreeSet<usize>,
}

impl History {
    pub fn new(rules: Arc<RuleSet>, now: SystemTime) -> Self {
        Self {
            calls: rules.calls(),
            rules,
            now,
            contacts: 0,
            questions: BTreeMap::new(),
            tracking_seen: BTreeSet::new(),
            effective: BTreeSet::new(),
        }
    }

    /// Reads one stored event; an event that cannot be read is skipped.
    pub fn add(&mut self, event: &StoredEvent) {
        #[derive(Deserialize)]
        struct Stored<'a> {
            #[serde(borrow)]
            contact: &'a RawValue,
        }
        let Ok(stored) = parse_json::<Stored>(&event.body) else {
            return;
        };
        let Ok(contact) = Contact::from_raw(stored.contact) else {
            return;
        };
        let received = crate::time::from_unix_ms(event.received_at);
        self.add_contact(&contact, Some(received));
    }

    /// Reads one contact, first received at `first_seen` (when known).
    pub fn add_contact(&mut self, contact: &Contact, first_seen: Option<SystemTime>) {
        self.contacts += 1;
        for entry in Answers::from_contact(contact.root()).entries() {
            self.questions
                .entry(entry.question.trim().to_lowercase())
                .or_insert_with(|| entry.question.trim().to_owned());
        }
        for (index, call) in self.calls.iter().enumerate() {
            let touch = match call.function {
                "utm" => Touch::Current,
                "first_utm" => Touch::First,
                _ => continue,
            };
            if let Some(name) = &call.text
                && !self.tracking_seen.contains(&index)
                && utm_lookup(contact.root(), name, touch).is_some()
            {
                self.tracking_seen.insert(index);
            }
        }
        let at = ScoringContext {
            first_seen,
            ..ScoringContext::at(self.now)
        };
        let (_, statuses) = self.rules.evaluate_covered(contact, &at);
        for (index, (status, _)) in statuses.iter().enumerate() {
            if status.had_effect() {
                self.effective.insert(index);
            }
        }
    }

    pub fn contacts(&self) -> u64 {
        self.contacts
    }

    /// The findings against this history (none when it holds no contact:
    /// there is nothing to hold the rules against).
    pub fn findings(&self) -> Vec<Finding> {
        let mut findings = Vec::new();
        if self.contacts == 0 {
            return findings;
        }
        for (index, call) in self.calls.iter().enumerate() {
            let Some(text) = &call.text else { continue };
            match call.function {
                "answer" | "has_answer" if !self.question_matches(text) => {
                    let suggestion = self.closest_question(text);
                    let closest = suggestion.as_ref().map_or(String::new(), |q| {
                        format!("; the closest stored question is {q:?}")
                    });
                    findings.push(Finding {
                        kind: "question",
                        file: call.rule.clone(),
                        line: Some(call.line),
                        message: format!(
                            "{}({text:?}) matches no question of the {} stored contact(s) in the window{closest}",
                            call.function, self.contacts
                        ),
                        suggestion,
                    });
                }
                "utm" | "first_utm" if !self.tracking_seen.contains(&index) => findings.push(Finding {
                    kind: "utm",
                    file: call.rule.clone(),
                    line: Some(call.line),
                    message: format!(
                        "{}({text:?}) has no value in any of the {} stored contact(s) in the window",
                        call.function, self.contacts
                    ),
                    suggestion: None,
                }),
                _ => {}
            }
        }
        for (index, (name, history)) in self.rules.history_use_by_rule().into_iter().enumerate() {
            // Without the stored calls, a rule reading them may only seem dead.
            if !self.effective.contains(&index) && !history.calls {
                findings.push(Finding {
                    kind: "no_effect",
                    file: name.to_owned(),
                    line: None,
                    message: format!(
                        "never added points, disqualified or tagged any of the {} stored contact(s) in the window",
                        self.contacts
                    ),
                    suggestion: None,
                });
            }
        }
        findings
    }

    /// As `answer` matches: the same text or a question containing it.
    fn question_matches(&self, text: &str) -> bool {
        let wanted = text.trim().to_lowercase();
        wanted.is_empty() || self.questions.keys().any(|q| q.contains(&wanted))
    }

    fn closest_question(&self, text: &str) -> Option<String> {
        let wanted = text.trim().to_lowercase();
        self.questions
            .iter()
            .min_by_key(|(lower, _)| edit_distance(lower, &wanted))
            .map(|(_, question)| question.clone())
    }
}

/// Levenshtein distance in characters: the fewest insertions, deletions
/// and substitutions that turn `a` into `b`.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::score::{Limits, RuleSources};

    #[test]
    fn time_rules_are_judged_as_of_now_and_call_rules_not_at_all() {
        let sources = RuleSources {
            files: [
                (
                    "10-decay.rhai",
                    r#"if days_since(first_seen()) > 7.0 { add(-30, "cooling") }"#,
                ),
                ("20-booked.rhai", r#"if calls().len() > 0 { add(20, "booked") }"#),
                ("30-never.rhai", r#"if now() == "" { add(1, "never") }"#),
            ]
            .map(|(name, text)| (name.to_owned(), text.to_owned()))
            .to_vec(),
            tiers: None,
        };
        let rules = Arc::new(RuleSet::compile(sources, &Limits::default()).unwrap());
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut history = History::new(rules, now);
        let contact = Contact::from_value(&serde_json::json!({"id": 1})).unwrap();
        history.add_contact(&contact, Some(now - Duration::from_secs(10 * 86_400)));
        let no_effect: Vec<String> = history
            .findings()
            .into_iter()
            .filter(|f| f.kind == "no_effect")
            .map(|f| f.file)
            .collect();
        assert_eq!(no_effect, ["30-never.rhai"]);
    }

    #[test]
    fn edit_distance_counts_single_character_edits() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("what is your roll", "what is your role?"), 2);
        assert_eq!(edit_distance("straße", "strasse"), 2);
    }
}
