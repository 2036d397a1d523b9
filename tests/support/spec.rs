//! Names the product contract (`../shared/SPEC.md`) fixes, written out once
//! for the test targets that check them (`support::spec`). Kept apart from the
//! library's own definitions on purpose: a test that took its expectations
//! from the code under test could not fail.

/// The fields of a scored contact (SPEC 3), all always present, in order.
pub const SCORED_FIELDS: [&str; 13] = [
    "type",
    "id",
    "contact_id",
    "score",
    "tier",
    "disqualified",
    "reasons",
    "disqualifications",
    "tags",
    "errors",
    "rules_version",
    "scored_at",
    "contact",
];
