//! Outcomes (SPEC 11): what iClosed's call and outcome hooks say about the
//! contacts, and the report that judges the rules by it — which tiers,
//! reasons and tags actually sell.
//!
//! The store reads one [`ContactOutcome`] per contact (its latest scored
//! contact event and the sum of its linked hooks); everything here is a
//! pure computation over those rows.

/// One contact as the report sees it: the result stored for its latest
/// contact event (created or updated, never a rescored one) and what its
/// linked calls and outcomes say.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactOutcome {
    /// The contact id's JSON text (`payload::id_key`).
    pub contact_key: String,
    /// When its first retained event was received (unix ms).
    pub first_seen: i64,
    /// The stored score of its latest contact event.
    pub score: f64,
    pub tier: String,
    pub disqualified: bool,
    /// `(rule, reason)` of each point contribution, distinct, in order.
    pub reasons: Vec<(String, String)>,
    pub tags: Vec<String>,
    /// The rules that disqualified it, distinct.
    pub disqualified_by: Vec<String>,
    /// A call hook of kind booked or rescheduled was received for it.
    pub booked: bool,
    /// At least one outcome hook was received for it.
    pub with_outcome: bool,
    /// One of its outcomes is a sale (`SALE` or `PARTIAL_SALE`).
    pub converted: bool,
    /// The sum of its sales' values.
    pub revenue: f64,
}
