//! Any bytes as a webhook body: `parse_body` must refuse or split them
//! without panicking, and every contact it accepts must score with the
//! example rules (`rules/`) without panicking, into a result of the
//! documented shape.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use leadscore::payload::{self, PayloadError};
use leadscore::score::{Limits, RuleSet, ScoringContext};
use libfuzzer_sys::fuzz_target;

/// The default `--max-contacts`.
const MAX_CONTACTS: usize = 1000;

fn rules() -> &'static RuleSet {
    static RULES: OnceLock<RuleSet> = OnceLock::new();
    RULES.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
        // A generous wall-clock budget: a slow machine must not turn into
        // "not run" errors; libFuzzer's own -timeout catches slow inputs.
        let limits = Limits {
            timeout: Duration::from_secs(5),
            ..Limits::default()
        };
        RuleSet::load(&dir, &limits).expect("the example rules load")
    })
}

fuzz_target!(|data: &[u8]| {
    let rules = rules();
    match payload::parse_body(data, MAX_CONTACTS) {
        Ok(contacts) => {
            assert!(contacts.len() <= MAX_CONTACTS);
            for contact in &contacts {
                assert!(matches!(
                    contact.id,
                    serde_json::Value::Number(_) | serde_json::Value::String(_)
                ));
                let scored = rules.score(contact, None, &ScoringContext::at(SystemTime::now()));
                assert_eq!(scored.contact_id, contact.id);
                assert!(
                    rules.tiers().names().iter().any(|t| *t == scored.tier)
                        || scored.tier == rules.tiers().disqualified_tier,
                    "unknown tier {:?}",
                    scored.tier
                );
                // The scored contact always serialises, and its `contact` is
                // the received JSON.
                let text = serde_json::to_string(&scored).expect("a scored contact serialises");
                let back: serde_json::Value = payload::parse_json(&text).expect("and parses back");
                assert!(back["score"].is_number());
            }
        }
        Err(
            PayloadError::InvalidUtf8(_)
            | PayloadError::InvalidJson(_)
            | PayloadError::TooDeep
            | PayloadError::NotObjectOrArray(_)
            | PayloadError::InvalidContact { .. }
            | PayloadError::TooManyContacts { .. },
        ) => {}
    }
});
