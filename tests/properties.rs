//! Property tests: arbitrary JSON in every field of a contact, and arbitrary
//! bodies. `parse_body` never panics and refuses only what SPEC 4 names;
//! scoring with the example rules, and with a rule set that calls every
//! helper of SPEC 2.1, never panics; and every helper returns the type SPEC
//! 2.1 documents, whatever the contact holds.

use std::path::Path;
use std::sync::OnceLock;
use std::time::SystemTime;

use leadscore::payload::{self, Contact, MAX_DEPTH, PayloadError};
use leadscore::score::helpers::{self, Answers, Touch};
use leadscore::score::rfc3339;
use leadscore::score::{
    CallStatus, CallSummary, Limits, Points, RuleSet, RuleSources, ScoredContact, ScoringContext,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

// ----------------------------------------------------------------- strategies

/// Text a contact may hold: any Unicode, and strings the helpers look for.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => ".{0,16}",
        2 => "[ -~]{0,16}",
        2 => "[0-9.,kKmM$+ -]{0,12}",
        1 => "[a-zA-Z0-9._+-]{0,6}@[a-zA-Z0-9.-]{0,12}",
        2 => prop::sample::select(vec![
            "", " ", "What is your role?", "  what IS your ROLE?  ", "budget", "$10,000+", "201-500",
            "$5k", "Just me", "1,5", ".5", "-.25", "1e400", "99999999999999999999999999",
            "a@gmail.com", "B@GMX.DE", "x@yandex.ru", "@", "a@", "@@", "DISQUALIFIED", "disqualified ",
            "QUALIFIED", "google", "partner", "utm_source", "first_utm_source", "İstanbul", "ß", "\u{0}",
            "\u{202e}", "𝄞", "CANCELED",
        ])
        .prop_map(str::to_owned),
    ]
}

/// Object keys: arbitrary text, and the keys iClosed sends.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => text(),
        2 => "[0-9]{1,3}_(question|response)",
        1 => "0[0-9]_(question|response)",
        1 => "(utmKey|utmValue)_[0-9]{1,2}",
        2 => prop::sample::select(vec![
            "id", "name", "dateTime", "status", "utm_source", "utm_medium", "UTM_SOURCE", "first_utm_source",
            "What is your role?", "What is your monthly budget?", "1_question", "1_response",
        ])
        .prop_map(str::to_owned),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("a finite number", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        (-1000i64..1000).prop_map(Value::from),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ]
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn object_of(values: impl Strategy<Value = Value>) -> impl Strategy<Value = Value> {
    prop::collection::vec((key(), values), 0..8)
        .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>()))
}

/// A field: usually a plausible shape, often anything at all.
fn field(plausible: impl Strategy<Value = Value> + 'static) -> impl Strategy<Value = Option<Value>> {
    prop::option::weighted(0.8, prop_oneof![plausible, json_value()])
}

fn valid_id() -> impl Strategy<Value = Value> {
    prop_oneof![number(), text().prop_map(Value::String)]
}

fn invalid_id() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        any::<bool>().prop_map(|b| Some(Value::Bool(b))),
        prop::collection::vec(leaf(), 0..3).prop_map(|v| Some(Value::Array(v))),
        object_of(leaf()).prop_map(Some),
    ]
}

/// A contact with every known field in a plausible or arbitrary shape, and
/// arbitrary extra fields.
fn contact_with(id: impl Strategy<Value = Option<Value>>) -> impl Strategy<Value = Value> {
    (
        id,
        field(object_of(
            prop_oneof![3 => text().prop_map(Value::String), 1 => json_value()],
        )),
        field(object_of(
            prop_oneof![3 => text().prop_map(Value::String), 1 => json_value()],
        )),
        field(text().prop_map(Value::String)),
        field(
            prop::sample::select(vec!["POTENTIAL", "QUALIFIED", "DISQUALIFIED", "disqualified"])
                .prop_map(Value::from),
        ),
        field(prop::collection::vec(object_of(leaf()), 0..3).prop_map(Value::Array)),
        field(object_of(prop_oneof![text().prop_map(Value::String), leaf()])),
        prop::collection::vec((key(), json_value()), 0..4),
    )
        .prop_map(|(id, qa, tracking, email, status, groups, call, extra)| {
            let mut map = Map::new();
            for (k, v) in extra {
                map.insert(k, v);
            }
            let fields = [
                ("questionsAndAnswers", qa),
                ("tracking", tracking),
                ("email", email),
                ("status", status),
                ("disqualifyingGroup", groups),
                ("latestCall", call),
            ];
            for (name, value) in fields {
                match value {
                    Some(value) => map.insert(name.to_owned(), value),
                    None => map.remove(name),
                };
            }
            match id {
                Some(id) => map.insert("id".to_owned(), id),
                None => map.remove("id"),
            };
            Value::Object(map)
        })
}

fn contact() -> impl Strategy<Value = Value> {
    contact_with(valid_id().prop_map(Some))
}

fn bad_contact() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => contact_with(invalid_id()),
        1 => leaf(),
        1 => prop::collection::vec(leaf(), 0..3).prop_map(Value::Array),
    ]
}

/// Serialised compactly or pretty-printed (contacts on several lines).
fn serialise(value: &Value, pretty: bool) -> String {
    if pretty {
        serde_json::to_string_pretty(value).expect("serialise")
    } else {
        serde_json::to_string(value).expect("serialise")
    }
}

/// A JSON value parsed by the same parser the service uses.
fn reparse(text: &str) -> Value {
    payload::parse_json(text).expect("valid JSON")
}

fn is_valid_id(id: Option<&Value>) -> bool {
    matches!(id, Some(Value::Number(_) | Value::String(_)))
}

/// What SPEC 4 says of a JSON body: the contacts' count, or the refusal.
fn oracle(body: &Value, max: usize) -> Result<usize, PayloadError> {
    let check = |index: usize, item: &Value| match item {
        Value::Object(map) if is_valid_id(map.get("id")) => Ok(()),
        _ => Err(PayloadError::InvalidContact {
            index,
            problem: String::new(),
        }),
    };
    match body {
        // A single object is one contact, counted like an array's.
        Value::Object(_) if max == 0 => Err(PayloadError::TooManyContacts { count: 1, max }),
        Value::Object(_) => check(1, body).map(|()| 1),
        Value::Array(items) => {
            if items.len() > max {
                return Err(PayloadError::TooManyContacts {
                    count: items.len(),
                    max,
                });
            }
            for (i, item) in items.iter().enumerate() {
                check(i + 1, item)?;
            }
            Ok(items.len())
        }
        Value::Null => Err(PayloadError::NotObjectOrArray("null")),
        Value::Bool(_) => Err(PayloadError::NotObjectOrArray("boolean")),
        Value::Number(_) => Err(PayloadError::NotObjectOrArray("number")),
        Value::String(_) => Err(PayloadError::NotObjectOrArray("string")),
    }
}

/// Compares refusals by kind (and contact index), not by message.
fn same_outcome(got: &Result<Vec<Contact>, PayloadError>, expected: &Result<usize, PayloadError>) -> bool {
    match (got, expected) {
        (Ok(contacts), Ok(n)) => contacts.len() == *n,
        (
            Err(PayloadError::InvalidContact { index: a, .. }),
            Err(PayloadError::InvalidContact { index: b, .. }),
        ) => a == b,
        (Err(a), Err(b)) => a == b,
        _ => false,
    }
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        max_shrink_iters: 2048,
        ..ProptestConfig::default()
    }
}

// ----------------------------------------------------------------- parsing

proptest! {
    #![proptest_config(config(256))]

    /// Valid contacts, alone or in an array, compact or pretty: always
    /// accepted, each kept as received (on one line) with its id.
    #[test]
    fn valid_bodies_are_accepted(
        contacts in prop::collection::vec(contact(), 0..5),
        single in any::<bool>(),
        pretty in any::<bool>(),
    ) {
        let body = if single && !contacts.is_empty() { contacts[0].clone() } else { Value::Array(contacts.clone()) };
        let text = serialise(&body, pretty);
        let parsed = payload::parse_body(text.as_bytes(), 1000);
        let parsed = parsed.unwrap_or_else(|e| panic!("refused ({e}): {text}"));
        let expected: Vec<Value> = match reparse(&text) {
            Value::Array(items) => items,
            object => vec![object],
        };
        prop_assert_eq!(parsed.len(), expected.len());
        for (contact, expected) in parsed.iter().zip(&expected) {
            prop_assert_eq!(&contact.to_value(), expected);
            prop_assert_eq!(&contact.id, &expected["id"]);
            prop_assert!(!contact.raw.get().contains('\n'), "kept on one line: {}", contact.raw.get());
            prop_assert_eq!(&reparse(contact.raw.get()), expected);
        }
    }

    /// One contact without a valid id (or not an object) anywhere in an
    /// array: refused, naming that contact.
    #[test]
    fn a_bad_contact_is_refused_by_its_position(
        mut contacts in prop::collection::vec(contact(), 0..4),
        bad in bad_contact(),
        at in any::<prop::sample::Index>(),
        pretty in any::<bool>(),
    ) {
        let position = at.index(contacts.len() + 1);
        contacts.insert(position, bad);
        let text = serialise(&Value::Array(contacts), pretty);
        match payload::parse_body(text.as_bytes(), 1000) {
            Err(PayloadError::InvalidContact { index, .. }) => prop_assert_eq!(index, position + 1),
            other => prop_assert!(false, "{:?} for {}", other.map(|c| c.len()), text),
        }
    }

    /// Any JSON value as the body: the outcome SPEC 4 names.
    #[test]
    fn any_json_body_gets_the_outcome_spec_names(body in json_value(), max in 0usize..6, pretty in any::<bool>()) {
        let text = serialise(&body, pretty);
        let body = reparse(&text);
        let got = payload::parse_body(text.as_bytes(), max);
        let expected = oracle(&body, max);
        prop_assert!(same_outcome(&got, &expected), "{:?} but SPEC says {:?} for {}", got.map(|c| c.len()), expected, text);
    }

    /// Arbitrary bytes never panic; anything accepted is contacts with ids,
    /// and invalid UTF-8 is always refused as such.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_any_bytes(&bytes)?;
    }

    /// Valid bodies broken by truncation or a changed byte.
    #[test]
    fn damaged_bodies_never_panic(
        contacts in prop::collection::vec(contact(), 1..3),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let text = serialise(&Value::Array(contacts), false).into_bytes();
        let mut changed = text.clone();
        let at = flip.index(changed.len());
        changed[at] = byte;
        check_any_bytes(&changed)?;
        check_any_bytes(&text[..cut.index(text.len())])?;
    }

    /// Exactly 128 levels of nesting are accepted, 129 refused, whatever
    /// mix of arrays and objects makes them up and whatever brackets hide in
    /// strings.
    #[test]
    fn the_depth_limit_is_exactly_128(
        levels in prop::collection::vec(any::<bool>(), 1..200),
        noise in "[\\[\\]{}\"\\\\a]{0,8}",
    ) {
        // The contact is level 1; each entry of `levels` adds one.
        let mut text = format!(r#"{{"id":1,"s":{},"x":"#, Value::String(noise));
        for &array in &levels {
            text.push_str(if array { "[" } else { r#"{"k":"# });
        }
        text.push_str("null");
        for &array in levels.iter().rev() {
            text.push(if array { ']' } else { '}' });
        }
        text.push('}');
        let depth = levels.len() + 1;
        let got = payload::parse_body(text.as_bytes(), 10);
        if depth <= MAX_DEPTH {
            prop_assert!(got.is_ok(), "depth {} refused: {:?}", depth, got.err());
        } else {
            prop_assert_eq!(got.err(), Some(PayloadError::TooDeep));
        }
    }
}

fn check_any_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    let got = payload::parse_body(bytes, 1000);
    if std::str::from_utf8(bytes).is_err() {
        prop_assert!(
            matches!(got, Err(PayloadError::InvalidUtf8(_))),
            "{:?}",
            got.map(|c| c.len())
        );
        return Ok(());
    }
    match &got {
        Ok(contacts) => {
            for contact in contacts {
                prop_assert!(contact.root().is_object());
                prop_assert!(is_valid_id(Some(&contact.id)));
            }
        }
        Err(PayloadError::InvalidUtf8(_)) => prop_assert!(false, "valid UTF-8 refused as invalid"),
        Err(_) => {}
    }
    // When the text is JSON, the outcome is the one SPEC names.
    let text = std::str::from_utf8(bytes).expect("checked above");
    if let Ok(body) = payload::parse_json::<Value>(text)
        && payload::nesting_depth(text) <= MAX_DEPTH
    {
        let expected = oracle(&body, 1000);
        prop_assert!(
            same_outcome(&got, &expected),
            "{:?} but SPEC says {:?} for {:?}",
            got.map(|c| c.len()),
            expected,
            text
        );
    }
    Ok(())
}

// ----------------------------------------------------------------- scoring

fn example_rules() -> &'static RuleSet {
    static RULES: OnceLock<RuleSet> = OnceLock::new();
    RULES.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        RuleSet::load(&dir, &generous_limits()).expect("the example rules load")
    })
}

/// A wall-clock budget that a loaded test machine cannot run out of (a
/// timeout would be reported as a rule error, not a panic, anyway).
fn generous_limits() -> Limits {
    Limits {
        timeout: std::time::Duration::from_secs(10),
        ..Limits::default()
    }
}

/// Calls every helper of SPEC 2.1 with the contact's own keys and values and
/// known questions, and throws when a helper returns another type than
/// documented or two helpers disagree.
const HELPER_TYPES_RULE: &str = r#"
fn check(what, value, expected) {
    let t = type_of(value);
    if !expected.contains(t) {
        throw `${what} returned ${t}, not ${expected}`;
    }
}

check("contact", contact, ["map"]);
let probes = ["", " ", "role", "What is your role?", "budget", "source", "utm_source", "medium",
              "partner", "first_utm_source", "gclid", "x"];
let all = answers();
check("answers()", all, ["map"]);
for q in all.keys() {
    probes.push(q);
    check("a value of answers()", all[q], ["string"]);
}
for k in contact.keys() {
    probes.push(k);
}
for name in ["questionsAndAnswers", "tracking", "latestCall"] {
    let m = contact[name];
    if type_of(m) == "map" {
        for k in m.keys() {
            probes.push(k);
            if type_of(m[k]) == "string" {
                probes.push(m[k]);
            }
        }
    }
}
for q in probes {
    let a = answer(q);
    check("answer", a, ["string"]);
    check("has_answer", has_answer(q), ["bool"]);
    if has_answer(q) != (a != "") {
        throw "has_answer and answer disagree for " + q;
    }
    check("utm", utm(q), ["string"]);
    check("first_utm", first_utm(q), ["string"]);
    check("parse_number of a probe", parse_number(q), ["f64", "()"]);
    check("parse_number of an answer", parse_number(a), ["f64", "()"]);
    check("parse_number of a utm", parse_number(utm(q)), ["f64", "()"]);
}
check("parse_number of the id", parse_number(contact.id), ["f64", "()"]);
check("parse_number(())", parse_number(()), ["()"]);
let domain = email_domain();
check("email_domain", domain, ["string"]);
check("is_free_email", is_free_email(), ["bool"]);
if domain == "" && is_free_email() {
    throw "is_free_email() without an email domain";
}
check("iclosed_disqualified", iclosed_disqualified(), ["bool"]);
check("now", now(), ["string"]);
check("first_seen", first_seen(), ["string", "()"]);
check("days_since(now())", days_since(now()), ["f64"]);
if days_since(now()) != 0.0 {
    throw "days_since(now()) is not 0";
}
check("calls", calls(), ["array"]);
if calls().len() != 2 {
    throw "calls() are not the two given";
}
for c in calls() {
    check("a call", c, ["map"]);
    check("a call's status", c.status, ["string"]);
    check("a call's start time", c.start_time, ["string", "()"]);
    check("a call's event type", c.event_type, ["string", "()"]);
}
for q in probes {
    check("days_since of a probe", days_since(q), ["f64", "()"]);
}
let groups = disqualifying_groups();
check("disqualifying_groups", groups, ["array"]);
if groups.len() > 0 && !iclosed_disqualified() {
    throw "disqualifying groups but not iclosed_disqualified()";
}
add(1, "helper types hold");
"#;

fn helper_rules() -> &'static RuleSet {
    static RULES: OnceLock<RuleSet> = OnceLock::new();
    RULES.get_or_init(|| {
        let sources = RuleSources {
            files: vec![("types.rhai".to_owned(), HELPER_TYPES_RULE.to_owned())],
            tiers: None,
        };
        RuleSet::compile(sources, &generous_limits())
            .unwrap_or_else(|e| panic!("the helper rule compiles: {e}"))
    })
}

/// A contact first seen three days ago, with a booked and a canceled call.
fn with_history() -> ScoringContext {
    let now = SystemTime::now();
    ScoringContext {
        now,
        first_seen: Some(now - std::time::Duration::from_secs(3 * 86_400)),
        calls: vec![
            CallSummary {
                status: CallStatus::Booked,
                start_time: Some("2026-11-12T15:00:00.000Z".into()),
                event_type: Some("Discovery call".into()),
            },
            CallSummary {
                status: CallStatus::Canceled,
                start_time: None,
                event_type: None,
            },
        ],
    }
}

fn parsed(contact: &Value) -> Contact {
    let text = serde_json::to_string(contact).expect("serialise");
    payload::parse_body(text.as_bytes(), 10)
        .expect("a valid contact")
        .remove(0)
}

/// What SPEC 3 promises of every scored contact.
fn check_scored(rules: &RuleSet, contact: &Contact, scored: &ScoredContact) -> Result<(), TestCaseError> {
    prop_assert_eq!(&scored.contact_id, &contact.id);
    prop_assert_eq!(scored.kind.as_str(), "contact.scored");
    prop_assert!(scored.id.is_none());
    if let Points::Float(f) = scored.score {
        prop_assert!(f.is_finite());
    }
    let mut tiers = rules.tiers().names();
    tiers.push(rules.tiers().disqualified_tier.clone());
    prop_assert!(tiers.contains(&scored.tier), "unknown tier {}", scored.tier);
    prop_assert_eq!(scored.disqualified, !scored.disqualifications.is_empty());
    if scored.disqualified {
        prop_assert_eq!(&scored.tier, &rules.tiers().disqualified_tier);
    }
    let files = rules.file_names();
    for error in &scored.errors {
        prop_assert!(files.contains(&error.rule), "{:?}", error);
    }
    let text = serde_json::to_string(scored).expect("a scored contact serialises");
    let back = reparse(&text);
    prop_assert_eq!(&back["contact"], &reparse(contact.raw.get()));
    Ok(())
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn example_rules_score_any_contact(contact in contact()) {
        let contact = parsed(&contact);
        let rules = example_rules();
        let scored = rules.score(&contact, None, &ScoringContext::at(SystemTime::now()));
        check_scored(rules, &contact, &scored)?;
    }

    #[test]
    fn every_helper_returns_its_documented_type(contact in contact()) {
        let contact = parsed(&contact);
        let rules = helper_rules();
        let scored = rules.score(&contact, None, &with_history());
        check_scored(rules, &contact, &scored)?;
        prop_assert!(scored.errors.is_empty(), "{:?}\ncontact: {}", scored.errors, contact.raw.get());
        prop_assert_eq!(scored.reasons.len(), 1);
    }

    /// The helpers as library functions, with any JSON in any field.
    #[test]
    fn helpers_never_panic_on_any_value(contact in contact(), query in text()) {
        let tree = payload::JsonTree::from_value(&contact);
        let contact = tree.root();
        let answers = Answers::from_contact(contact);
        let answer = answers.answer(&query);
        if !answer.is_empty() {
            prop_assert!(answers.entries().any(|e| e.response == answer));
        }
        for entry in answers.entries() {
            // Every question listed finds a response by its own text.
            prop_assert!(answers.entries().any(|e| e.response == answers.answer(entry.question)));
        }
        for touch in [Touch::Current, Touch::First] {
            let _ = helpers::utm(contact, &query, touch);
        }
        let domain = helpers::email_domain(contact);
        prop_assert_eq!(domain.to_lowercase(), domain.clone());
        if domain.is_empty() {
            prop_assert!(!helpers::is_free_email_domain(&domain));
        }
        let groups = helpers::disqualifying_groups(contact);
        if !groups.is_empty() {
            prop_assert!(helpers::iclosed_disqualified(contact));
        }
    }

    #[test]
    fn parse_number_reads_the_first_number(text in text(), n in 0u64..1_000_000_000) {
        let _ = helpers::parse_number(&text);
        prop_assert_eq!(helpers::parse_number(&format!("about {n} people")), Some(n as f64));
    }

    /// Times as rules read and write them (SPEC 12): any text is read
    /// without a panic, and every time written (years 0000-9999) reads
    /// back as itself.
    #[test]
    fn times_read_back_as_written(text in text(), ms in -62_167_219_200_000i64..=253_402_300_799_999) {
        let _ = rfc3339::parse_nanos(&text);
        let written = rfc3339::format_millis(ms);
        prop_assert_eq!(rfc3339::parse_nanos(&written), Some(i128::from(ms) * 1_000_000), "{}", written);
    }
}
