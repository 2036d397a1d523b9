//! The read-only rule helpers of SPEC section 2.1, as pure functions over the
//! contact's JSON. They never fail: a missing field or a field of an
//! unexpected type reads as "no value" (`""`, `false`, `[]`, `None`).

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt::Write;
use std::ops::Range;

use crate::payload::JsonNode;

/// One question and its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuestionAnswer<'a> {
    pub question: &'a str,
    pub response: &'a str,
}

/// The questions and answers of a contact, numbered pairs first (in number
/// order), then the direct keys of `questionsAndAnswers` in received order.
///
/// Built once per contact on the first `answer()`. Why one text buffer with
/// ranges into it: a form has a few dozen questions, and a `String` per
/// question, lowered question and response made building this cost more
/// than all the rules that read it.
#[derive(Debug, Clone, Default)]
pub struct Answers {
    text: String,
    entries: Vec<Entry>,
}

/// How a question text given to `answer` found a question of the contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// The same text, ignoring case and surrounding spaces.
    Exact,
    /// The first question containing the text (ignoring case).
    Contains,
    /// No question: the answer is `""`.
    None,
}

impl Match {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Contains => "contains",
            Self::None => "none",
        }
    }
}

/// What `answer(q)` read: the response, the question matched and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerLookup<'a> {
    pub response: &'a str,
    pub question: Option<&'a str>,
    pub how: Match,
}

/// Ranges of `Answers::text`; the question pre-lowered for matching.
#[derive(Debug, Clone)]
struct Entry {
    question: Range<usize>,
    question_lower: Range<usize>,
    response: Range<usize>,
}

impl Answers {
    pub fn from_contact(contact: JsonNode<'_>) -> Self {
        let Some(qa) = contact.get("questionsAndAnswers").and_then(JsonNode::members) else {
            return Self::default();
        };
        let mut questions: Vec<(u64, JsonNode)> = Vec::with_capacity(qa.len());
        let mut responses: Vec<(u64, JsonNode)> = Vec::with_capacity(qa.len());
        let mut direct: Vec<(&str, JsonNode)> = Vec::with_capacity(qa.len());
        let count = qa.len();
        for (key, value) in qa {
            if let Some(n) = numbered_key(key, "_question") {
                questions.push((n, value));
            } else if let Some(n) = numbered_key(key, "_response") {
                // `N_question` reads exactly the key `{N}_response`: `01_response`
                // belongs to no question.
                if !key.starts_with('0') || key.starts_with("0_") {
                    responses.push((n, value));
                }
            } else {
                direct.push((key, value));
            }
        }
        questions.sort_by_key(|(n, _)| *n); // stable: equal numbers keep their order
        // Sorted too, so that each question finds its response by binary
        // search: a body with thousands of pairs stays linear-logarithmic.
        responses.sort_by_key(|(n, _)| *n);
        let mut answers = Self {
            // Question, lowered question and response of typical forms, so
            // that the buffer is allocated once.
            text: String::with_capacity(count.min(512) * 128),
            entries: Vec::with_capacity(questions.len() + direct.len()),
        };
        for (n, question) in questions {
            let question = value_text_cow(question);
            if question.trim().is_empty() {
                continue;
            }
            let first = responses.partition_point(|(m, _)| *m < n);
            let response = responses.get(first).filter(|(m, _)| *m == n).map(|&(_, v)| v);
            answers.push(&question, response);
        }
        let numbered = answers.entries.len();
        // Many numbered questions (a hostile body): their texts in a set, so
        // that checking the direct keys stays linear.
        let numbered_texts: Option<HashSet<String>> = (numbered > 32).then(|| {
            answers.entries[..numbered]
                .iter()
                .map(|e| answers.text[e.question.clone()].to_owned())
                .collect()
        });
        for (question, response) in direct {
            // iClosed sends every question twice: as a numbered pair and as a
            // direct key with the same text. A later entry whose question is
            // the same text as an earlier one is never found (lookups and
            // every reader of `entries` take the first), so it is left out.
            let repeated = match &numbered_texts {
                Some(texts) => texts.contains(question),
                None => answers.entries[..numbered]
                    .iter()
                    .any(|e| &answers.text[e.question.clone()] == question),
            };
            if !repeated {
                answers.push(question, Some(response));
            }
        }
        answers
    }

    fn push(&mut self, question: &str, response: Option<JsonNode<'_>>) {
        let text = &mut self.text;
        let question_range = append(text, |t| t.push_str(question));
        let question_lower = append(text, |t| {
            let trimmed = question.trim();
            if trimmed.is_ascii() {
                let start = t.len();
                t.push_str(trimmed);
                t[start..].make_ascii_lowercase();
            } else {
                t.push_str(&trimmed.to_lowercase());
            }
        });
        let response = append(text, |t| {
            if let Some(response) = response {
                push_value_text(t, response);
            }
        });
        self.entries.push(Entry {
            question: question_range,
            question_lower,
            response,
        });
    }

    fn question_lower(&self, entry: &Entry) -> &str {
        &self.text[entry.question_lower.clone()]
    }

    /// SPEC `answer(q)`: exact (case- and space-insensitive) question match
    /// first, then the first question containing `q`; `""` when none.
    pub fn answer(&self, query: &str) -> &str {
        self.find(query)
            .map_or("", |(e, _)| &self.text[e.response.clone()])
    }

    /// [`Answers::answer`] with the question it matched and how (a rule
    /// trace shows them: "why didn't this rule fire?").
    pub fn lookup(&self, query: &str) -> AnswerLookup<'_> {
        match self.find(query) {
            Some((e, how)) => AnswerLookup {
                response: &self.text[e.response.clone()],
                question: Some(&self.text[e.question.clone()]),
                how,
            },
            None => AnswerLookup {
                response: "",
                question: None,
                how: Match::None,
            },
        }
    }

    fn find(&self, query: &str) -> Option<(&Entry, Match)> {
        let wanted = lowercase(query.trim());
        let wanted = wanted.as_ref();
        if let Some(hit) = self.entries.iter().find(|e| self.question_lower(e) == wanted) {
            return Some((hit, Match::Exact));
        }
        if wanted.is_empty() {
            return None;
        }
        self.entries
            .iter()
            .find(|e| contains(self.question_lower(e), wanted))
            .map(|hit| (hit, Match::Contains))
    }

    /// Question text → response; the first occurrence of a question wins
    /// (a direct key repeating a numbered question's exact text is not listed).
    pub fn entries(&self) -> impl Iterator<Item = QuestionAnswer<'_>> {
        self.entries.iter().map(|e| QuestionAnswer {
            question: &self.text[e.question.clone()],
            response: &self.text[e.response.clone()],
        })
    }
}

/// Appends to `text` and returns the range written.
fn append(text: &mut String, write: impl FnOnce(&mut String)) -> Range<usize> {
    let start = text.len();
    write(text);
    start..text.len()
}

/// `haystack.contains(needle)` for short texts: `str::contains` sets up a
/// Two-Way searcher on every call, which costs more than a naive scan of a
/// question. Comparing bytes is exact: a UTF-8 needle can only match a
/// UTF-8 haystack at a character boundary.
fn contains(haystack: &str, needle: &str) -> bool {
    let (haystack, needle) = (haystack.as_bytes(), needle.as_bytes());
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    haystack.len() >= needle.len()
        && (0..=haystack.len() - needle.len())
            .any(|i| haystack[i] == first && &haystack[i + 1..i + needle.len()] == rest)
}

/// `str::to_lowercase`, without allocating when there is nothing to lower.
fn lowercase(text: &str) -> Cow<'_, str> {
    if text.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.to_lowercase())
    }
}

/// `str::to_ascii_lowercase`, without allocating when there is nothing to lower.
fn ascii_lowercase(text: &str) -> Cow<'_, str> {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(text.to_ascii_lowercase())
    } else {
        Cow::Borrowed(text)
    }
}

/// `"4_question"` → `Some(4)` for the given suffix.
fn numbered_key(key: &str, suffix: &str) -> Option<u64> {
    let digits = key.strip_suffix(suffix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A JSON value as the text a rule sees: strings as they are, numbers and
/// booleans printed, null as `""`, arrays of scalars joined with `", "`
/// (multi-select answers), anything else as compact JSON.
pub fn value_text(value: JsonNode<'_>) -> String {
    value_text_cow(value).into_owned()
}

/// [`value_text`], borrowing a string value instead of copying it.
fn value_text_cow(value: JsonNode<'_>) -> Cow<'_, str> {
    match value.as_str() {
        Some(s) => Cow::Borrowed(s),
        None => {
            let mut text = String::new();
            push_value_text(&mut text, value);
            Cow::Owned(text)
        }
    }
}

/// Appends [`value_text`] of `value` to `text`.
fn push_value_text(text: &mut String, value: JsonNode<'_>) {
    let scalars = value
        .items()
        .filter(|items| items.clone().all(|v| !v.is_array() && !v.is_object()));
    if let Some(s) = value.as_str() {
        text.push_str(s);
    } else if let Some(b) = value.as_bool() {
        text.push_str(if b { "true" } else { "false" });
    } else if let Some(n) = value.as_number() {
        let _ = write!(text, "{n}");
    } else if let Some(items) = scalars {
        let mut first = true;
        for item in items {
            let before = text.len();
            if !first {
                text.push_str(", ");
            }
            let start = text.len();
            push_value_text(text, item);
            if text.len() == start {
                text.truncate(before); // empty items are left out
            } else {
                first = false;
            }
        }
    } else if !value.is_null() {
        let _ = write!(text, "{value}");
    }
}

/// Which tracking value `utm`/`first_utm` read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    Current,
    First,
}

/// SPEC `utm(name)` / `first_utm(name)`. `name` may be given with or without
/// its `utm_` (or `first_utm_`) prefix; current-touch lookups fall back to
/// the custom `utmKey_N`/`utmValue_N` pairs.
pub fn utm(contact: JsonNode<'_>, name: &str, touch: Touch) -> String {
    utm_text(contact, name, touch).into_owned()
}

/// [`utm`], borrowing from the contact: rules call it several times per
/// contact, so it allocates nothing in the usual cases.
pub fn utm_text<'a>(contact: JsonNode<'a>, name: &str, touch: Touch) -> Cow<'a, str> {
    utm_lookup(contact, name, touch).map_or(Cow::Borrowed(""), |(_, value)| value)
}

/// [`utm_text`] with the tracking key the value was read from
/// (`utm_source`, `first_utm_source` or a custom pair's `utmValue_N`);
/// `None` when the value is `""`.
pub fn utm_lookup<'a>(contact: JsonNode<'a>, name: &str, touch: Touch) -> Option<(&'a str, Cow<'a, str>)> {
    let tracking = contact.get("tracking").filter(|t| t.is_object())?;
    let lower = ascii_lowercase(name.trim());
    let lower = lower.as_ref();
    // `first_utm_` is a prefix of first-touch names only: `utm("first_utm_x")`
    // must not quietly read the current touch's `utm_x`.
    let first_touch_name = match touch {
        Touch::First => lower.strip_prefix("first_utm_"),
        Touch::Current => None,
    };
    let bare = first_touch_name
        .or_else(|| lower.strip_prefix("utm_"))
        .unwrap_or(lower);
    if bare.is_empty() {
        return None;
    }
    let prefix = match touch {
        Touch::Current => "utm_",
        Touch::First => "first_utm_",
    };
    let (found, has_custom_pairs) = get_ignore_ascii_case(tracking, prefix, bare);
    if let Some((key, value)) = found {
        let text = value_text_cow(value);
        if !text.is_empty() {
            return Some((key, text));
        }
    }
    if touch == Touch::First || !has_custom_pairs {
        return None;
    }
    custom_utm(tracking, lower, bare).filter(|(_, text)| !text.is_empty())
}

/// Looks `name` (as given, or without its `utm_` prefix) up among the
/// `utmKey_N`/`utmValue_N` pairs, lowest N first. `name` and `bare` are
/// lower-case.
fn custom_utm<'a>(tracking: JsonNode<'a>, name: &str, bare: &str) -> Option<(&'a str, Cow<'a, str>)> {
    let members = tracking.members()?;
    // The numbers N of the `utmKey_N` naming it (`utmKey_01` is N = 1, and
    // reads `utmValue_1`).
    let mut named: Vec<u64> = members
        .clone()
        .filter_map(|(k, key)| {
            let n = k.strip_prefix("utmKey_")?.parse::<u64>().ok()?;
            let key = value_text_cow(key);
            let key = key.trim();
            let names_it =
                !key.is_empty() && (key.eq_ignore_ascii_case(name) || key.eq_ignore_ascii_case(bare));
            names_it.then_some(n)
        })
        .collect();
    if named.is_empty() {
        return None;
    }
    named.sort_unstable();
    // The lowest of them that has a `utmValue_N`: one more pass, so that a
    // tracking map of many pairs costs n log n, not a lookup per pair.
    let mut found: Option<(u64, &str, JsonNode)> = None;
    for (k, value) in members {
        let Some(n) = k.strip_prefix("utmValue_").and_then(plain_number) else {
            continue;
        };
        if found.is_none_or(|(lowest, _, _)| n < lowest) && named.binary_search(&n).is_ok() {
            found = Some((n, k, value));
        }
    }
    found.map(|(_, key, value)| (key, value_text_cow(value)))
}

/// `digits` as a number when they are the way it is written (`"7"`, `"12"`;
/// not `"07"` or `"+7"`): the `N` of a key `format!("utmValue_{N}")` names.
fn plain_number(digits: &str) -> Option<u64> {
    let plain = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    plain.then(|| digits.parse().ok()).flatten()
}

/// The value of the key `prefix` + `name`: the key exactly, else the first
/// key equal to it ignoring ASCII case; with it, whether custom pairs may
/// have to be read next: false only when the whole map was scanned and no
/// key is a `utmKey_N`. One pass over the map, where a name that is not
/// there (`utm("partner")`) cost three.
fn get_ignore_ascii_case<'a>(
    map: JsonNode<'a>,
    prefix: &str,
    name: &str,
) -> (Option<(&'a str, JsonNode<'a>)>, bool) {
    let Some(members) = map.members() else {
        return (None, false);
    };
    let wanted = prefix.len() + name.len();
    let mut any_case = None;
    let mut has_custom_pairs = false;
    for (k, value) in members {
        has_custom_pairs |= k.starts_with("utmKey_");
        if k.len() != wanted {
            continue;
        }
        let (p, n) = k.as_bytes().split_at(prefix.len());
        if p == prefix.as_bytes() && n == name.as_bytes() {
            // An exact key wins. The rest is not scanned: should its value
            // be empty, the caller looks for custom pairs all the same.
            return (Some((k, value)), true);
        }
        if any_case.is_none()
            && p.eq_ignore_ascii_case(prefix.as_bytes())
            && n.eq_ignore_ascii_case(name.as_bytes())
        {
            any_case = Some((k, value));
        }
    }
    (any_case, has_custom_pairs)
}

/// SPEC `email_domain()`: the lower-cased part after the last `@` of
/// `contact.email`, `""` when there is no usable address.
pub fn email_domain(contact: JsonNode<'_>) -> String {
    let Some(email) = contact.get("email").and_then(JsonNode::as_str) else {
        return String::new();
    };
    match email.trim().rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() => domain.trim().trim_end_matches('.').to_lowercase(),
        _ => String::new(),
    }
}

/// Free mailbox providers matched by exact domain.
const FREE_EMAIL_DOMAINS: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "yahoo.com",
    "yahoo.co.uk",
    "yahoo.co.in",
    "yahoo.fr",
    "yahoo.de",
    "yahoo.es",
    "yahoo.it",
    "yahoo.com.br",
    "ymail.com",
    "rocketmail.com",
    "hotmail.com",
    "hotmail.co.uk",
    "hotmail.fr",
    "hotmail.de",
    "hotmail.it",
    "hotmail.es",
    "outlook.com",
    "outlook.fr",
    "outlook.de",
    "live.com",
    "live.co.uk",
    "live.fr",
    "msn.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "aol.com",
    "aim.com",
    "proton.me",
    "protonmail.com",
    "protonmail.ch",
    "pm.me",
    "mail.com",
    "email.com",
    "mail.ru",
    "inbox.ru",
    "list.ru",
    "bk.ru",
    "rambler.ru",
    "qq.com",
    "163.com",
    "126.com",
    "yeah.net",
    "sina.com",
    "naver.com",
    "daum.net",
    "hanmail.net",
    "web.de",
    "t-online.de",
    "freenet.de",
    "libero.it",
    "virgilio.it",
    "orange.fr",
    "free.fr",
    "laposte.net",
    "wanadoo.fr",
    "seznam.cz",
    "wp.pl",
    "o2.pl",
    "interia.pl",
    "onet.pl",
    "rediffmail.com",
    "zoho.com",
    "zohomail.com",
    "fastmail.com",
    "tutanota.com",
    "tuta.io",
    "hey.com",
    "hushmail.com",
    "btinternet.com",
    "comcast.net",
    "verizon.net",
    "att.net",
    "sbcglobal.net",
    "bellsouth.net",
    "cox.net",
    "charter.net",
    "shaw.ca",
    "rogers.com",
    "sky.com",
    "uol.com.br",
    "bol.com.br",
    "terra.com.br",
];

/// Providers that register the same mailbox under many country domains
/// (`gmx.de`, `gmx.net`, `yandex.ru`, `yandex.com`, ...).
const FREE_EMAIL_FAMILIES: &[&str] = &["gmx", "yandex", "yahoo", "hotmail", "outlook", "live"];

/// SPEC `is_free_email()`.
pub fn is_free_email_domain(domain: &str) -> bool {
    if domain.is_empty() {
        return false;
    }
    if FREE_EMAIL_DOMAINS.contains(&domain) {
        return true;
    }
    match domain.split_once('.') {
        Some((family, rest)) => FREE_EMAIL_FAMILIES.contains(&family) && is_country_suffix(rest),
        None => false,
    }
}

/// `com`, `de`, `net`, `co.uk`, `com.br`: a public suffix a family registers.
fn is_country_suffix(rest: &str) -> bool {
    let labels: Vec<&str> = rest.split('.').collect();
    matches!(labels.len(), 1 | 2)
        && labels
            .iter()
            .all(|l| (2..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_lowercase()))
}

/// SPEC `parse_number(s)`: the first number in `s`; `,` followed by exactly
/// three digits is a thousands separator, `.` a decimal point, and a `k` or
/// `m` right after the number (not starting a word) multiplies it.
pub fn parse_number(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    let first_digit = bytes.iter().position(u8::is_ascii_digit)?;
    // A leading decimal point (".5", "$.5M") belongs to the number.
    let leading_point = first_digit > 0
        && bytes[first_digit - 1] == b'.'
        && (first_digit == 1 || !bytes[first_digit - 2].is_ascii_alphanumeric());
    let start = if leading_point {
        first_digit - 1
    } else {
        first_digit
    };
    let negative =
        start > 0 && bytes[start - 1] == b'-' && (start == 1 || !bytes[start - 2].is_ascii_alphanumeric());
    let mut digits = String::from(if leading_point { "0." } else { "" });
    let mut i = first_digit;
    let mut seen_point = leading_point;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_digit() {
            digits.push(b as char);
            i += 1;
        } else if b == b','
            && !seen_point
            && bytes.len() >= i + 4
            && bytes[i + 1..i + 4].iter().all(u8::is_ascii_digit)
            && bytes.get(i + 4).is_none_or(|b| !b.is_ascii_digit())
        {
            i += 1; // thousands separator
        } else if b == b'.' && !seen_point && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
            seen_point = true;
            digits.push('.');
            i += 1;
        } else {
            break;
        }
    }
    let mut number: f64 = digits.parse().ok()?;
    let suffix = bytes.get(i).map(u8::to_ascii_lowercase);
    let ends_word = bytes.get(i + 1).is_none_or(|b| !b.is_ascii_alphabetic());
    match suffix {
        Some(b'k') if ends_word => number *= 1_000.0,
        Some(b'm') if ends_word => number *= 1_000_000.0,
        _ => {}
    }
    Some(if negative { -number } else { number })
}

/// SPEC `disqualifying_groups()`: `disqualifyingGroup` as received; a single
/// group sent as an object reads as a one-element array, anything else as `[]`.
pub fn disqualifying_groups(contact: JsonNode<'_>) -> Vec<JsonNode<'_>> {
    let Some(groups) = contact.get("disqualifyingGroup") else {
        return Vec::new();
    };
    match (groups.items(), groups.members()) {
        (Some(items), _) => items.collect(),
        (_, Some(members)) if members.len() > 0 => vec![groups],
        _ => Vec::new(),
    }
}

/// SPEC `iclosed_disqualified()`.
pub fn iclosed_disqualified(contact: JsonNode<'_>) -> bool {
    let status = contact
        .get("status")
        .and_then(JsonNode::as_str)
        .is_some_and(|s| s.trim().eq_ignore_ascii_case("DISQUALIFIED"));
    let groups = contact.get("disqualifyingGroup");
    status
        || groups
            .and_then(JsonNode::items)
            .is_some_and(|items| items.len() > 0)
        || groups
            .and_then(JsonNode::members)
            .is_some_and(|members| members.len() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    use shims::{answers_of, disqualifying_groups, email_domain, iclosed_disqualified, utm};

    /// The helpers over a `serde_json::Value`, as the tests write contacts.
    mod shims {
        use super::super::{self as helpers, Answers, Touch};
        use crate::payload::JsonTree;
        use serde_json::Value;

        pub fn answers_of(contact: &Value) -> Answers {
            Answers::from_contact(JsonTree::from_value(contact).root())
        }

        pub fn utm(contact: &Value, name: &str, touch: Touch) -> String {
            helpers::utm(JsonTree::from_value(contact).root(), name, touch)
        }

        pub fn email_domain(contact: &Value) -> String {
            helpers::email_domain(JsonTree::from_value(contact).root())
        }

        pub fn iclosed_disqualified(contact: &Value) -> bool {
            helpers::iclosed_disqualified(JsonTree::from_value(contact).root())
        }

        pub fn disqualifying_groups(contact: &Value) -> Vec<Value> {
            let tree = JsonTree::from_value(contact);
            helpers::disqualifying_groups(tree.root())
                .into_iter()
                .map(|group| group.to_value())
                .collect()
        }
    }

    fn qa_contact() -> Value {
        json!({"id": 1, "questionsAndAnswers": {
            "2_question": "How many employees does your company have?",
            "2_response": "201-500",
            "1_question": "What is your role?",
            "1_response": "VP of Operations",
            "10_question": "Seats",
            "10_response": 42,
            "What is your monthly budget?": "$10,000+",
            "what is your role?": "ignored: numbered pair wins",
        }})
    }

    /// iClosed's shape: each question as a numbered pair and again as a
    /// direct key of the same text. The repeat is listed once; a direct key
    /// that differs (even in case only) is still listed, after the pairs.
    #[test]
    fn a_direct_key_repeating_a_numbered_question_is_listed_once() {
        let answers = answers_of(&json!({"questionsAndAnswers": {
            "1_question": "Phone Number", "1_response": "+1555",
            "2_question": "Budget", "2_response": "$5,000",
            "Phone Number": "+1555", "Budget": "a different text", "budget": "lower case", "Extra": "x"}}));
        let all: Vec<_> = answers.entries().map(|e| (e.question, e.response)).collect();
        assert_eq!(
            all,
            [
                ("Phone Number", "+1555"),
                ("Budget", "$5,000"),
                ("budget", "lower case"),
                ("Extra", "x")
            ]
        );
        assert_eq!(answers.answer("budget"), "$5,000");
        assert_eq!(answers.answer("extra"), "x");
    }

    #[test]
    fn with_many_numbered_questions_repeats_are_left_out_the_same_way() {
        // Past 32 numbered questions the check goes through a set: the same list.
        let mut qa = serde_json::Map::new();
        for n in 1..=40 {
            qa.insert(format!("{n}_question"), json!(format!("Question {n}")));
            qa.insert(format!("{n}_response"), json!(format!("r{n}")));
            qa.insert(format!("Question {n}"), json!("direct"));
        }
        qa.insert("question 1".into(), json!("other case"));
        qa.insert("Extra".into(), json!("x"));
        let answers = answers_of(&json!({ "questionsAndAnswers": qa }));
        let all: Vec<_> = answers
            .entries()
            .map(|e| (e.question.to_owned(), e.response.to_owned()))
            .collect();
        let mut expected: Vec<_> = (1..=40)
            .map(|n| (format!("Question {n}"), format!("r{n}")))
            .collect();
        expected.push(("question 1".into(), "other case".into()));
        expected.push(("Extra".into(), "x".into()));
        assert_eq!(all, expected);
    }

    #[test]
    fn answer_prefers_exact_match_over_contains() {
        let answers = answers_of(&json!({"questionsAndAnswers": {
            "1_question": "Role in the company (if any)", "1_response": "contains-hit",
            "2_question": "  Role  ", "2_response": "exact-hit"}}));
        assert_eq!(answers.answer("role"), "exact-hit");
        assert_eq!(answers.answer("ROLE "), "exact-hit");
        assert_eq!(answers.answer("company"), "contains-hit");
    }

    #[test]
    fn answer_reads_numbered_pairs_in_number_order_then_direct_keys() {
        let answers = answers_of(&qa_contact());
        assert_eq!(answers.answer("what is your role?"), "VP of Operations");
        assert_eq!(answers.answer("employees"), "201-500");
        assert_eq!(answers.answer("monthly budget"), "$10,000+");
        assert_eq!(answers.answer("seats"), "42", "numeric response read as text");
        assert_eq!(answers.answer("favourite colour"), "");
        let order: Vec<_> = answers.entries().map(|e| e.question).collect();
        assert_eq!(
            order[..3],
            [
                "What is your role?",
                "How many employees does your company have?",
                "Seats"
            ]
        );
    }

    #[test]
    fn answer_pairs_numbers_exactly_and_lowers_any_script() {
        let answers = answers_of(&json!({"questionsAndAnswers": {
            "1_question": "  ÉTAPE Suivante ", "01_response": "not paired", "1_response": "paired",
            "0_question": 7, "0_response": ["a", null, "", 3, true],
            "2_question": "   ", "2_response": "blank question: left out",
            "3_question": "No response"}}));
        assert_eq!(answers.answer("étape suivante"), "paired");
        assert_eq!(answers.answer("ÉTAPE"), "paired");
        assert_eq!(answers.answer("7"), "a, 3, true");
        assert_eq!(answers.answer("no response"), "");
        assert_eq!(answers.answer("  "), "");
        let all: Vec<_> = answers.entries().map(|e| (e.question, e.response)).collect();
        assert_eq!(
            all,
            [
                ("7", "a, 3, true"),
                ("  ÉTAPE Suivante ", "paired"),
                ("No response", "")
            ]
        );
    }

    #[test]
    fn byte_search_agrees_with_str_contains() {
        let texts = [
            "",
            "a",
            "ab",
            "étape suivante",
            "what is your monthly budget?",
            "ééé",
            "aaab",
        ];
        for haystack in texts {
            for needle in texts.iter().chain(&["é", "\u{e9}t", "budget", "aab", "ab?"]) {
                assert_eq!(
                    contains(haystack, needle),
                    haystack.contains(needle),
                    "{haystack:?} {needle:?}"
                );
            }
        }
    }

    #[test]
    fn answer_survives_wrong_types() {
        for contact in [
            json!({}),
            json!({"questionsAndAnswers": null}),
            json!({"questionsAndAnswers": [1, 2]}),
            json!({"questionsAndAnswers": "x"}),
            json!({"questionsAndAnswers": {"1_question": 5, "1_response": null}}),
        ] {
            let answers = answers_of(&contact);
            assert_eq!(answers.answer("anything"), "");
        }
        let answers = answers_of(&json!({"questionsAndAnswers": {"Tools": ["CRM", "Sheets"], "Flag": true}}));
        assert_eq!(answers.answer("tools"), "CRM, Sheets");
        assert_eq!(answers.answer("flag"), "true");
    }

    #[test]
    fn utm_reads_current_first_and_custom_pairs() {
        let c = json!({"tracking": {"utm_source": "google", "utm_medium": null, "first_utm_source": "linkedin",
            "utmKey_2": "partner", "utmValue_2": "acme", "utmKey_1": "gclid", "utmValue_1": 123}});
        assert_eq!(utm(&c, "source", Touch::Current), "google");
        assert_eq!(utm(&c, "utm_source", Touch::Current), "google");
        assert_eq!(utm(&c, "medium", Touch::Current), "");
        assert_eq!(utm(&c, "partner", Touch::Current), "acme");
        assert_eq!(utm(&c, "utm_partner", Touch::Current), "acme");
        assert_eq!(utm(&c, "gclid", Touch::Current), "123");
        // The lowest N whose `utmValue_N` exists; `utmKey_01` reads `utmValue_1`,
        // and only that key: `utmValue_01` is no pair's value.
        let pairs = json!({"tracking": {"utmKey_5": "Partner", "utmValue_5": "five", "utmKey_3": "partner",
            "utmKey_01": "partner", "utmValue_01": "zero-one", "utmValue_1": "one", "utmKey_2": "other", "utmValue_2": "two"}});
        assert_eq!(utm(&pairs, "partner", Touch::Current), "one");
        let pairs = json!({"tracking": {"utmKey_5": "partner", "utmValue_5": "five", "utmKey_3": "partner"}});
        assert_eq!(utm(&pairs, "partner", Touch::Current), "five");
        // Many pairs in falling order, only the last-read N with a value: two
        // passes, not a lookup per pair (that took seconds at this size).
        let mut many = serde_json::Map::new();
        for n in (0..40_000).rev() {
            many.insert(format!("utmKey_{n}"), json!("partner"));
        }
        many.insert("utmValue_39999".into(), json!("last"));
        assert_eq!(utm(&json!({"tracking": many}), "partner", Touch::Current), "last");
        assert_eq!(utm(&c, "source", Touch::First), "linkedin");
        assert_eq!(utm(&c, "first_utm_source", Touch::First), "linkedin");
        assert_eq!(utm(&c, "partner", Touch::First), "");
        assert_eq!(
            utm(&c, "first_utm_source", Touch::Current),
            "",
            "not the current touch"
        );
        assert_eq!(utm(&c, "", Touch::Current), "");
        for bad in [
            json!({}),
            json!({"tracking": null}),
            json!({"tracking": [1]}),
            json!({"tracking": "utm"}),
        ] {
            assert_eq!(utm(&bad, "source", Touch::Current), "");
        }
    }

    #[test]
    fn email_domain_and_free_providers() {
        assert_eq!(
            email_domain(&json!({"email": " Raya@NorthWind.COM "})),
            "northwind.com"
        );
        assert_eq!(email_domain(&json!({"email": null})), "");
        assert_eq!(email_domain(&json!({"email": 5})), "");
        assert_eq!(email_domain(&json!({"email": "no-at-sign"})), "");
        assert_eq!(email_domain(&json!({})), "");
        for free in [
            "gmail.com",
            "yahoo.com",
            "hotmail.com",
            "outlook.com",
            "icloud.com",
            "aol.com",
            "proton.me",
            "gmx.de",
            "gmx.net",
            "mail.ru",
            "yandex.ru",
            "yandex.com",
            "qq.com",
        ] {
            assert!(is_free_email_domain(free), "{free}");
        }
        for business in [
            "northwind-logistics.com",
            "gmx-consulting.com",
            "mygmail.com",
            "",
            "gmx.example.com",
        ] {
            assert!(!is_free_email_domain(business), "{business}");
        }
    }

    #[test]
    fn parse_number_examples_from_the_spec() {
        assert_eq!(parse_number("$10,000+"), Some(10000.0));
        assert_eq!(parse_number("201-500"), Some(201.0));
        assert_eq!(parse_number("$5k"), Some(5000.0));
        assert_eq!(parse_number("Just me"), None);
        assert_eq!(parse_number("1000+"), Some(1000.0));
        assert_eq!(parse_number("$2.5M per year"), Some(2_500_000.0));
        assert_eq!(parse_number("Less than $500"), Some(500.0));
        assert_eq!(parse_number("$500 - $2,000"), Some(500.0));
        assert_eq!(parse_number("3 months"), Some(3.0));
        assert_eq!(parse_number("5min"), Some(5.0));
        assert_eq!(parse_number("-15 points"), Some(-15.0));
        assert_eq!(parse_number("1,5"), Some(1.0));
        assert_eq!(parse_number("1,234,567.89"), Some(1_234_567.89));
        assert_eq!(parse_number(""), None);
        assert_eq!(parse_number(".5 FTE"), Some(0.5));
        assert_eq!(parse_number("$.5M"), Some(500_000.0));
        assert_eq!(parse_number("-.25"), Some(-0.25));
        assert_eq!(parse_number("v.2"), Some(2.0));
    }

    #[test]
    fn disqualification_helpers() {
        assert!(iclosed_disqualified(&json!({"status": "disqualified"})));
        assert!(iclosed_disqualified(
            &json!({"status": "QUALIFIED", "disqualifyingGroup": [{"name": "x"}]})
        ));
        assert!(!iclosed_disqualified(
            &json!({"status": "QUALIFIED", "disqualifyingGroup": []})
        ));
        assert!(!iclosed_disqualified(
            &json!({"status": 3, "disqualifyingGroup": "x"})
        ));
        assert_eq!(
            disqualifying_groups(&json!({"disqualifyingGroup": null})),
            Vec::<Value>::new().as_slice()
        );
        assert_eq!(
            disqualifying_groups(&json!({"disqualifyingGroup": {"name": "a"}})),
            [json!({"name": "a"})]
        );
        assert_eq!(
            disqualifying_groups(&json!({"disqualifyingGroup": [1, "x"]})),
            [json!(1), json!("x")]
        );
    }
}
