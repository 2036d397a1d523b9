//! Outcomes (SPEC 11): what iClosed's call and outcome hooks say about the
//! contacts, and the report that judges the rules by it — which tiers,
//! reasons and tags actually sell.
//!
//! The store reads one [`ContactOutcome`] per contact (its latest scored
//! contact event and the sum of its linked hooks); everything here is a
//! pure computation over those rows: [`report`] (`GET /report`,
//! `leadscore report`) and [`against_outcomes`] (the `outcomes` part of a
//! backtest over stored contacts). The tables for people are in
//! [`table`].
//!
//! Numbers in the JSON: counts are integers; rates and shares are
//! fractions rounded to [`RATE_DECIMALS`] decimals, `null` when their
//! denominator is 0; lifts are computed from the unrounded rates and rounded
//! to [`LIFT_DECIMALS`] decimals, `null` when a rate is `null` or the rate
//! they divide by is 0; revenue is rounded to cents and scores are printed
//! as they were stored, both as JSON integers when whole.

mod table;

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::score::Tiers;
use crate::score::tiers::NO_TIER;

pub use table::{format_against, format_table};

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

/// Decimals of every rate and share (`0.0317`).
pub const RATE_DECIMALS: i32 = 4;
/// Decimals of every lift (`4.04`).
pub const LIFT_DECIMALS: i32 = 2;
/// Groups smaller than this are flagged in the tables: their rate is noise.
pub const SMALL_GROUP: u64 = 30;
/// How many score groups the calibration curve has at most.
pub const DECILES: usize = 10;

/// The report of SPEC 11.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutcomeReport {
    /// The start of the window (RFC 3339): contacts first seen since then.
    pub since: String,
    pub contacts: u64,
    pub booked: u64,
    pub with_outcome: u64,
    /// Contacts without any outcome.
    pub open: u64,
    /// Converted contacts.
    pub sales: u64,
    #[serde(serialize_with = "money")]
    pub revenue: f64,
    pub sale_rate: Option<f64>,
    pub tiers: Vec<TierRow>,
    pub reasons: Vec<ReasonRow>,
    pub tags: Vec<TagRow>,
    pub disqualifications: Vec<DisqualificationRow>,
    pub deciles: Vec<Decile>,
    pub top_tier: TopTier,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TierRow {
    pub tier: String,
    pub contacts: u64,
    pub booked: u64,
    pub with_outcome: u64,
    pub sales: u64,
    pub sale_rate: Option<f64>,
    #[serde(serialize_with = "money")]
    pub revenue: f64,
    /// This tier's sales over all sales.
    pub share_of_sales: Option<f64>,
    /// This tier's sale rate over the overall sale rate.
    pub lift: Option<f64>,
}

/// Contacts with a reason, tag or disqualification against those without.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Split {
    /// Contacts with it.
    pub contacts: u64,
    /// Converted contacts with it.
    pub sales: u64,
    pub sale_rate_with: Option<f64>,
    pub sale_rate_without: Option<f64>,
    /// `sale_rate_with` over `sale_rate_without`.
    pub lift: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReasonRow {
    pub rule: String,
    pub reason: String,
    #[serde(flatten)]
    pub split: Split,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TagRow {
    pub tag: String,
    #[serde(flatten)]
    pub split: Split,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DisqualificationRow {
    pub rule: String,
    #[serde(flatten)]
    pub split: Split,
}

/// One group of the calibration curve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decile {
    #[serde(serialize_with = "whole")]
    pub min_score: f64,
    #[serde(serialize_with = "whole")]
    pub max_score: f64,
    pub contacts: u64,
    pub sales: u64,
    pub sale_rate: Option<f64>,
}

/// The highest tier's share of the contacts and of the sales.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopTier {
    pub tier: String,
    pub share_of_contacts: Option<f64>,
    pub share_of_sales: Option<f64>,
}

/// The report of the contacts first seen since `since` (SPEC 11), their
/// tiers laid out in the order of `tiers`.
pub fn report(rows: &[ContactOutcome], tiers: &Tiers, since: String) -> OutcomeReport {
    let mut total = Tally::default();
    rows.iter().for_each(|row| total.add(row));
    let tier_rows = tier_rows(rows.iter().map(|row| (row.tier.as_str(), row)), tiers);
    let top_tier = match tier_rows.first() {
        Some(top) => TopTier {
            tier: top.tier.clone(),
            share_of_contacts: rate(top.contacts, total.contacts),
            share_of_sales: top.share_of_sales,
        },
        None => TopTier {
            tier: String::new(),
            share_of_contacts: None,
            share_of_sales: None,
        },
    };
    let reasons = splits(rows, &total, |row| {
        row.reasons
            .iter()
            .map(|(rule, reason)| (rule.as_str(), reason.as_str()))
            .collect()
    })
    .into_iter()
    .map(|((rule, reason), split)| ReasonRow {
        rule: rule.to_owned(),
        reason: reason.to_owned(),
        split,
    })
    .collect();
    let tags = splits(rows, &total, |row| row.tags.iter().map(String::as_str).collect())
        .into_iter()
        .map(|(tag, split)| TagRow {
            tag: tag.to_owned(),
            split,
        })
        .collect();
    let disqualifications = splits(rows, &total, |row| {
        row.disqualified_by.iter().map(String::as_str).collect()
    })
    .into_iter()
    .map(|(rule, split)| DisqualificationRow {
        rule: rule.to_owned(),
        split,
    })
    .collect();
    OutcomeReport {
        since,
        contacts: total.contacts,
        booked: total.booked,
        with_outcome: total.with_outcome,
        open: total.contacts - total.with_outcome,
        sales: total.sales,
        revenue: cents(total.revenue),
        sale_rate: rate(total.sales, total.contacts),
        tiers: tier_rows,
        reasons,
        tags,
        disqualifications,
        deciles: deciles(rows),
        top_tier,
    }
}

/// What a group of contacts adds up to.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    contacts: u64,
    booked: u64,
    with_outcome: u64,
    sales: u64,
    revenue: f64,
}

impl Tally {
    fn add(&mut self, row: &ContactOutcome) {
        self.contacts += 1;
        self.booked += u64::from(row.booked);
        self.with_outcome += u64::from(row.with_outcome);
        self.sales += u64::from(row.converted);
        self.revenue += row.revenue;
    }
}

/// One row per tier: the configured tiers highest first, then tiers the
/// rows have that are no longer configured (by name), the disqualified
/// tier last. An empty `none` row (scores below every threshold of a
/// `tiers.toml` without a catch-all tier) is left out.
fn tier_rows<'a>(
    contacts: impl Iterator<Item = (&'a str, &'a ContactOutcome)>,
    tiers: &Tiers,
) -> Vec<TierRow> {
    let mut total = Tally::default();
    let mut by_tier: HashMap<&str, Tally> = HashMap::new();
    for (tier, row) in contacts {
        total.add(row);
        by_tier.entry(tier).or_default().add(row);
    }
    let disqualified = tiers.disqualified_tier.as_str();
    let mut order: Vec<String> = Vec::new();
    for name in tiers.names() {
        if name != disqualified && !order.contains(&name) {
            order.push(name);
        }
    }
    let mut unknown: Vec<&str> = by_tier
        .keys()
        .copied()
        .filter(|t| *t != disqualified && !order.iter().any(|o| o == t))
        .collect();
    unknown.sort_unstable();
    order.extend(unknown.into_iter().map(str::to_owned));
    order.push(disqualified.to_owned());
    let overall = fraction(total.sales, total.contacts);
    order
        .into_iter()
        .filter_map(|tier| {
            let tally = by_tier.get(tier.as_str()).copied().unwrap_or_default();
            if tier == NO_TIER && tally.contacts == 0 {
                return None;
            }
            Some(TierRow {
                contacts: tally.contacts,
                booked: tally.booked,
                with_outcome: tally.with_outcome,
                sales: tally.sales,
                sale_rate: rate(tally.sales, tally.contacts),
                revenue: cents(tally.revenue),
                share_of_sales: rate(tally.sales, total.sales),
                lift: lift(fraction(tally.sales, tally.contacts), overall),
                tier,
            })
        })
        .collect()
}

/// The groups of contacts that share a key (a reason, a tag, a rule), each
/// contact counted once per key, ranked by lift, then contacts, then key.
fn splits<'a, K: Ord + Copy>(
    rows: &'a [ContactOutcome],
    total: &Tally,
    keys_of: impl Fn(&'a ContactOutcome) -> Vec<K>,
) -> Vec<(K, Split)> {
    let mut groups: BTreeMap<K, (u64, u64)> = BTreeMap::new();
    for row in rows {
        let mut keys = keys_of(row);
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            let group = groups.entry(key).or_default();
            group.0 += 1;
            group.1 += u64::from(row.converted);
        }
    }
    let mut found: Vec<(K, Split)> = groups
        .into_iter()
        .map(|(key, (contacts, sales))| (key, split(contacts, sales, total)))
        .collect();
    found.sort_by(|a, b| by_lift(&a.1, &b.1).then_with(|| a.0.cmp(&b.0)));
    found
}

/// The contacts with something (`contacts`, `sales`) against all the others.
fn split(contacts: u64, sales: u64, total: &Tally) -> Split {
    let (with, without) = (
        fraction(sales, contacts),
        fraction(total.sales - sales, total.contacts - contacts),
    );
    Split {
        contacts,
        sales,
        sale_rate_with: round(with, RATE_DECIMALS),
        sale_rate_without: round(without, RATE_DECIMALS),
        lift: lift(with, without),
    }
}

/// Highest lift first, `null` last, then the most contacts.
fn by_lift(a: &Split, b: &Split) -> Ordering {
    match (a.lift, b.lift) {
        (Some(x), Some(y)) => y.total_cmp(&x),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
    .then_with(|| b.contacts.cmp(&a.contacts))
}

/// The calibration curve: contacts by score (then contact id), cut into
/// [`DECILES`] groups of equal size, the first groups one larger when the
/// count does not divide; fewer groups, none empty, for fewer contacts.
fn deciles(rows: &[ContactOutcome]) -> Vec<Decile> {
    let mut ordered: Vec<(f64, ContactId<'_>, &ContactOutcome)> = rows
        .iter()
        .map(|row| (row.score, ContactId::of(&row.contact_key), row))
        .collect();
    ordered.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let groups = ordered.len().min(DECILES);
    let mut rest = ordered.as_slice();
    (0..groups)
        .map(|i| {
            let size = ordered.len() / groups + usize::from(i < ordered.len() % groups);
            let (group, after) = rest.split_at(size);
            rest = after;
            let sales = group.iter().filter(|(_, _, row)| row.converted).count() as u64;
            Decile {
                min_score: group[0].0,
                max_score: group[size - 1].0,
                contacts: size as u64,
                sales,
                sale_rate: rate(sales, size as u64),
            }
        })
        .collect()
}

/// A contact id ordered by value: numbers (numerically) before strings;
/// the key's text breaks what value leaves equal (`1` and `1.0`).
#[derive(Debug, Clone, PartialEq)]
pub struct ContactId<'a> {
    key: &'a str,
    value: IdValue,
}

#[derive(Debug, Clone, PartialEq)]
enum IdValue {
    Number { integer: Option<i128>, value: f64 },
    Text(String),
}

impl<'a> ContactId<'a> {
    /// From a contact key (`payload::id_key`: the id's JSON text).
    pub fn of(key: &'a str) -> Self {
        let value = if key.starts_with('"') {
            IdValue::Text(serde_json::from_str(key).unwrap_or_else(|_| key.to_owned()))
        } else if let Ok(integer) = key.parse::<i128>() {
            IdValue::Number {
                integer: Some(integer),
                value: integer as f64,
            }
        } else {
            match key.parse::<f64>() {
                Ok(value) if value.is_finite() => IdValue::Number { integer: None, value },
                _ => IdValue::Text(key.to_owned()),
            }
        };
        Self { key, value }
    }
}

impl Eq for ContactId<'_> {}

impl PartialOrd for ContactId<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ContactId<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        use IdValue::{Number, Text};
        match (&self.value, &other.value) {
            (Number { integer: Some(a), .. }, Number { integer: Some(b), .. }) => a.cmp(b),
            (Number { value: a, .. }, Number { value: b, .. }) => a.total_cmp(b),
            (Number { .. }, Text(_)) => Ordering::Less,
            (Text(_), Number { .. }) => Ordering::Greater,
            (Text(a), Text(b)) => a.cmp(b),
        }
        .then_with(|| self.key.cmp(other.key))
    }
}

// ------------------------------------------------- backtest against outcomes

/// One side's result for a contact in a backtest.
#[derive(Debug, Clone, PartialEq)]
pub struct SideScore {
    pub score: f64,
    pub tier: String,
    pub disqualified: bool,
}

/// A contact of a backtest: its key and both results.
#[derive(Debug, Clone, PartialEq)]
pub struct BacktestContact {
    pub contact_key: String,
    pub baseline: SideScore,
    pub candidate: SideScore,
}

/// SPEC 11 "Backtest against outcomes": the report's `outcomes`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BacktestOutcomes {
    pub baseline: SideOutcomes,
    pub candidate: SideOutcomes,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SideOutcomes {
    /// The report's per-tier rows, by this side's tiers.
    pub tiers: Vec<TierRow>,
    pub equal_volume: EqualVolume,
}

/// What the first `k` contacts of a side's ranking bought.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EqualVolume {
    /// The number of contacts in the baseline's top tier.
    pub k: u64,
    pub sales: u64,
    #[serde(serialize_with = "money")]
    pub revenue: f64,
}

/// Which side's top `k` holds more sales.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Better,
    Worse,
    Same,
}

impl BacktestOutcomes {
    /// The candidate against the baseline, by sales in the top `k`.
    pub fn verdict(&self) -> Verdict {
        match self
            .candidate
            .equal_volume
            .sales
            .cmp(&self.baseline.equal_volume.sales)
        {
            Ordering::Greater => Verdict::Better,
            Ordering::Less => Verdict::Worse,
            Ordering::Equal => Verdict::Same,
        }
    }
}

/// The backtest's contacts judged by what they bought: per-tier rows for
/// each side (by that side's tiers), and the equal-volume comparison —
/// each side ranks every contact by its score, highest first, disqualified
/// contacts last, ties by contact id ascending; `k` is the number of
/// contacts in the baseline's top tier, and each side's first `k` contacts
/// are counted. Only the contacts with a row in `outcomes` count: one
/// without (first seen before the window) may have bought, and counting it
/// as one that did not would bias both sides.
pub fn against_outcomes(
    contacts: &[BacktestContact],
    outcomes: &[ContactOutcome],
    baseline_tiers: &Tiers,
    candidate_tiers: &Tiers,
) -> BacktestOutcomes {
    let by_key: HashMap<&str, &ContactOutcome> = outcomes
        .iter()
        .map(|row| (row.contact_key.as_str(), row))
        .collect();
    let joined: Vec<(&BacktestContact, &ContactOutcome)> = contacts
        .iter()
        .filter_map(|c| Some((c, *by_key.get(c.contact_key.as_str())?)))
        .collect();
    let side_tiers = |side: fn(&BacktestContact) -> &SideScore, tiers: &Tiers| {
        tier_rows(joined.iter().map(|(c, row)| (side(c).tier.as_str(), *row)), tiers)
    };
    let baseline = side_tiers(|c| &c.baseline, baseline_tiers);
    let candidate = side_tiers(|c| &c.candidate, candidate_tiers);
    let k = baseline.first().map_or(0, |top| top.contacts);
    let equal_volume = |side: fn(&BacktestContact) -> &SideScore| {
        let mut ranked: Vec<(&SideScore, ContactId<'_>, &ContactOutcome)> = joined
            .iter()
            .map(|(c, row)| (side(c), ContactId::of(&c.contact_key), *row))
            .collect();
        ranked.sort_by(|a, b| {
            a.0.disqualified
                .cmp(&b.0.disqualified)
                .then_with(|| b.0.score.total_cmp(&a.0.score))
                .then_with(|| a.1.cmp(&b.1))
        });
        let mut top = Tally::default();
        ranked
            .iter()
            .take(k as usize)
            .for_each(|(_, _, row)| top.add(row));
        EqualVolume {
            k,
            sales: top.sales,
            revenue: cents(top.revenue),
        }
    };
    BacktestOutcomes {
        baseline: SideOutcomes {
            equal_volume: equal_volume(|c| &c.baseline),
            tiers: baseline,
        },
        candidate: SideOutcomes {
            equal_volume: equal_volume(|c| &c.candidate),
            tiers: candidate,
        },
    }
}

// ------------------------------------------------------------------ numbers

/// `n / d`, unrounded; `None` when `d` is 0.
fn fraction(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

/// `n / d` rounded to [`RATE_DECIMALS`]; `None` when `d` is 0.
fn rate(n: u64, d: u64) -> Option<f64> {
    round(fraction(n, d), RATE_DECIMALS)
}

/// `with / without` rounded to [`LIFT_DECIMALS`]; `None` when either is
/// `None` or `without` is 0.
fn lift(with: Option<f64>, without: Option<f64>) -> Option<f64> {
    match (with, without) {
        (Some(with), Some(without)) if without > 0.0 => round(Some(with / without), LIFT_DECIMALS),
        _ => None,
    }
}

fn round(value: Option<f64>, decimals: i32) -> Option<f64> {
    let scale = 10f64.powi(decimals);
    value.map(|v| (v * scale).round() / scale)
}

/// Money: rounded to cents, so that summing fractions leaves no `…0004`.
fn cents(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// A JSON number: an integer when the value is whole.
pub fn number(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        Value::from(value as i64)
    } else {
        serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
    }
}

fn whole<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    number(*value).serialize(serializer)
}

fn money<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    number(cents(*value)).serialize(serializer)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const TIERS: &str = r#"
disqualified_tier = "disqualified"
[[tiers]]
name = "warm"
min_score = 40
[[tiers]]
name = "hot"
min_score = 70
[[tiers]]
name = "cold"
"#;

    fn tiers() -> Tiers {
        Tiers::parse(TIERS).unwrap()
    }

    /// A contact with id `id`, its score, tier and what it bought.
    fn row(id: u64, score: f64, tier: &str) -> ContactOutcome {
        ContactOutcome {
            contact_key: id.to_string(),
            first_seen: 0,
            score,
            tier: tier.to_owned(),
            disqualified: tier == "disqualified",
            reasons: Vec::new(),
            tags: Vec::new(),
            disqualified_by: Vec::new(),
            booked: false,
            with_outcome: false,
            converted: false,
            revenue: 0.0,
        }
    }

    fn sold(mut row: ContactOutcome, revenue: f64) -> ContactOutcome {
        row.booked = true;
        row.with_outcome = true;
        row.converted = true;
        row.revenue = revenue;
        row
    }

    fn lost(mut row: ContactOutcome) -> ContactOutcome {
        row.booked = true;
        row.with_outcome = true;
        row
    }

    #[test]
    fn an_empty_window_has_every_tier_and_null_rates() {
        let report = report(&[], &tiers(), "2026-01-01T00:00:00.000Z".into());
        let empty_tiers = ["hot", "warm", "cold", "disqualified"].map(|tier| {
            json!({"tier": tier, "contacts": 0, "booked": 0, "with_outcome": 0, "sales": 0,
                   "sale_rate": null, "revenue": 0, "share_of_sales": null, "lift": null})
        });
        assert_eq!(
            serde_json::to_value(&report).unwrap(),
            json!({
                "since": "2026-01-01T00:00:00.000Z", "contacts": 0, "booked": 0,
                "with_outcome": 0, "open": 0, "sales": 0, "revenue": 0, "sale_rate": null,
                "tiers": empty_tiers,
                "reasons": [], "tags": [], "disqualifications": [], "deciles": [],
                "top_tier": {"tier": "hot", "share_of_contacts": null, "share_of_sales": null}
            })
        );
    }

    /// 10 contacts: 4 hot (2 sales: 1000 and 500.5), 3 warm (1 sale: 250),
    /// 2 cold (no outcome), 1 disqualified (a lost call). Overall 3/10.
    fn ten() -> Vec<ContactOutcome> {
        vec![
            sold(row(1, 90.0, "hot"), 1000.0),
            sold(row(2, 80.0, "hot"), 500.5),
            lost(row(3, 75.0, "hot")),
            row(4, 70.0, "hot"),
            sold(row(5, 60.0, "warm"), 250.0),
            lost(row(6, 50.0, "warm")),
            row(7, 45.0, "warm"),
            row(8, 10.0, "cold"),
            row(9, 5.5, "cold"),
            lost(row(10, 0.0, "disqualified")),
        ]
    }

    #[test]
    fn tiers_totals_and_lift_by_hand() {
        let report = report(&ten(), &tiers(), "s".into());
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            (
                report.contacts,
                report.booked,
                report.with_outcome,
                report.open,
                report.sales
            ),
            (10, 6, 6, 4, 3)
        );
        assert_eq!(json["revenue"], json!(1750.5));
        assert_eq!(report.sale_rate, Some(0.3));
        assert_eq!(
            json["tiers"][0],
            json!({"tier": "hot", "contacts": 4, "booked": 3, "with_outcome": 3, "sales": 2,
                   // 2/4 = 0.5; 2 of 3 sales; 0.5 / 0.3 = 1.666… → 1.67
                   "sale_rate": 0.5, "revenue": 1500.5, "share_of_sales": 0.6667, "lift": 1.67})
        );
        assert_eq!(
            json["tiers"][1],
            json!({"tier": "warm", "contacts": 3, "booked": 2, "with_outcome": 2, "sales": 1,
                   // 1/3 → 0.3333; the lift from the unrounded rates: (1/3) / 0.3 = 1.11
                   "sale_rate": 0.3333, "revenue": 250, "share_of_sales": 0.3333, "lift": 1.11})
        );
        assert_eq!(json["tiers"][2]["sale_rate"], json!(0.0));
        assert_eq!(json["tiers"][2]["lift"], json!(0.0));
        assert_eq!(json["tiers"][3]["tier"], "disqualified");
        assert_eq!(json["tiers"][3]["with_outcome"], 1);
        assert_eq!(
            json["top_tier"],
            json!({"tier": "hot", "share_of_contacts": 0.4, "share_of_sales": 0.6667})
        );
    }

    #[test]
    fn without_sales_every_lift_is_null() {
        let rows: Vec<ContactOutcome> = ten()
            .into_iter()
            .map(|mut r| {
                r.converted = false;
                r.revenue = 0.0;
                r.tags = vec!["t".into()];
                r
            })
            .collect();
        let report = report(&rows, &tiers(), "s".into());
        assert_eq!(report.sale_rate, Some(0.0));
        assert!(
            report
                .tiers
                .iter()
                .all(|t| t.lift.is_none() && t.share_of_sales.is_none())
        );
        // Every contact has the tag: nobody is without it.
        let tag = &report.tags[0].split;
        assert_eq!(
            (tag.contacts, tag.sale_rate_with, tag.sale_rate_without),
            (10, Some(0.0), None)
        );
        assert_eq!(tag.lift, None);
        assert_eq!(report.top_tier.share_of_sales, None);
    }

    #[test]
    fn tiers_follow_the_configuration_and_keep_unconfigured_ones_before_disqualified() {
        let rows = vec![
            row(1, 10.0, "disqualified"),
            row(2, 99.0, "platinum"),
            row(3, 50.0, "warm"),
            row(4, 98.0, "gold"),
        ];
        let report = report(&rows, &tiers(), "s".into());
        let names: Vec<&str> = report.tiers.iter().map(|t| t.tier.as_str()).collect();
        assert_eq!(names, ["hot", "warm", "cold", "gold", "platinum", "disqualified"]);
        assert_eq!(report.tiers.iter().map(|t| t.contacts).sum::<u64>(), 4);
        // Without tiers.toml: one tier "scored", then disqualified.
        let report = super::report(&rows[..1], &Tiers::default(), "s".into());
        let names: Vec<&str> = report.tiers.iter().map(|t| t.tier.as_str()).collect();
        assert_eq!(names, ["scored", "disqualified"]);
        assert_eq!(report.top_tier.tier, "scored");
        // No catch-all tier: an empty "none" row is left out, a full one kept.
        let thresholds = Tiers::parse("[[tiers]]\nname = \"hot\"\nmin_score = 70\n").unwrap();
        let names = |rows: &[ContactOutcome]| -> Vec<String> {
            super::report(rows, &thresholds, "s".into())
                .tiers
                .into_iter()
                .map(|t| t.tier)
                .collect()
        };
        assert_eq!(names(&[]), ["hot", "disqualified"]);
        assert_eq!(names(&[row(1, 3.0, "none")]), ["hot", "none", "disqualified"]);
    }

    #[test]
    fn reasons_count_once_per_contact_and_rank_by_lift() {
        let with = |mut r: ContactOutcome, reasons: &[(&str, &str)], tags: &[&str], by: &[&str]| {
            r.reasons = reasons
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            r.tags = tags.iter().map(|t| t.to_string()).collect();
            r.disqualified_by = by.iter().map(|t| t.to_string()).collect();
            r
        };
        let dm = ("10-role.rhai", "Decision maker");
        let budget = ("30-budget.rhai", "Budget");
        let rows = vec![
            // The reason twice on one contact counts once.
            with(sold(row(1, 90.0, "hot"), 10.0), &[dm, dm, budget], &["vip"], &[]),
            with(row(2, 80.0, "hot"), &[dm], &["vip"], &[]),
            with(sold(row(3, 50.0, "warm"), 10.0), &[budget], &[], &[]),
            with(row(4, 40.0, "warm"), &[budget], &[], &[]),
            with(row(5, 0.0, "disqualified"), &[], &[], &["80-disqualify.rhai"]),
        ];
        let report = report(&rows, &tiers(), "s".into());
        let json = serde_json::to_value(&report).unwrap();
        // Decision maker: 1 of 2 with, 1 of 3 without: lift 0.5 / 0.3333 = 1.5.
        // Budget: 2 of 3 with, 0 of 2 without: lift null (divides by 0), last.
        assert_eq!(
            json["reasons"],
            json!([
                {"rule": "10-role.rhai", "reason": "Decision maker", "contacts": 2, "sales": 1,
                 "sale_rate_with": 0.5, "sale_rate_without": 0.3333, "lift": 1.5},
                {"rule": "30-budget.rhai", "reason": "Budget", "contacts": 3, "sales": 2,
                 "sale_rate_with": 0.6667, "sale_rate_without": 0.0, "lift": null}
            ])
        );
        assert_eq!(
            json["tags"],
            json!([{"tag": "vip", "contacts": 2, "sales": 1, "sale_rate_with": 0.5,
                    "sale_rate_without": 0.3333, "lift": 1.5}])
        );
        assert_eq!(
            json["disqualifications"],
            json!([{"rule": "80-disqualify.rhai", "contacts": 1, "sales": 0, "sale_rate_with": 0.0,
                    "sale_rate_without": 0.5, "lift": 0.0}])
        );
    }

    #[test]
    fn equal_lifts_rank_by_contacts_then_name() {
        let a = Split {
            contacts: 5,
            sales: 1,
            sale_rate_with: None,
            sale_rate_without: None,
            lift: Some(2.0),
        };
        let b = Split {
            contacts: 9,
            ..a.clone()
        };
        let none = Split {
            lift: None,
            ..b.clone()
        };
        let higher = Split {
            lift: Some(2.5),
            contacts: 1,
            ..a.clone()
        };
        let mut list = [&none, &a, &b, &higher];
        list.sort_by(|x, y| by_lift(x, y));
        assert_eq!(list, [&higher, &b, &a, &none]);
    }

    #[test]
    fn deciles_of_23_contacts_are_3_3_3_then_2() {
        // Scores 0..=22 given in reverse: the groups follow the score.
        let rows: Vec<ContactOutcome> = (0..23u64)
            .rev()
            .map(|i| {
                let r = row(100 + i, i as f64, "cold");
                if i == 0 || i == 22 { sold(r, 1.0) } else { r }
            })
            .collect();
        let deciles = deciles(&rows);
        let sizes: Vec<u64> = deciles.iter().map(|d| d.contacts).collect();
        assert_eq!(sizes, [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]);
        let bounds: Vec<(f64, f64)> = deciles.iter().map(|d| (d.min_score, d.max_score)).collect();
        assert_eq!(bounds[0], (0.0, 2.0));
        assert_eq!(bounds[2], (6.0, 8.0));
        assert_eq!(bounds[3], (9.0, 10.0));
        assert_eq!(bounds[9], (21.0, 22.0));
        assert_eq!(
            serde_json::to_value(&deciles[0]).unwrap(),
            json!({"min_score": 0, "max_score": 2, "contacts": 3, "sales": 1, "sale_rate": 0.3333})
        );
        assert_eq!(deciles[9].sale_rate, Some(0.5));
        // Fewer than 10 contacts: one group each; none: no group.
        assert_eq!(super::deciles(&rows[..4]).len(), 4);
        assert!(super::deciles(&[]).is_empty());
    }

    #[test]
    fn equal_scores_are_split_by_contact_id_by_value() {
        // Ids 10 and 9 as numbers: 9 first (not "10" < "9" as text); then
        // the string ids after every number.
        let mut rows = vec![
            row(10, 50.0, "warm"),
            sold(row(9, 50.0, "warm"), 1.0),
            row(11, 50.0, "warm"),
        ];
        let mut text_id = row(0, 50.0, "warm");
        text_id.contact_key = "\"abc\"".into();
        rows.push(text_id);
        // 4 contacts, 4 groups of one: the order is visible in the sales.
        let sales: Vec<u64> = deciles(&rows).iter().map(|d| d.sales).collect();
        assert_eq!(sales, [1, 0, 0, 0]);
        let mut ids = ["\"b\"", "10", "9", "\"a\"", "1.5", "-2", "1e3"].map(ContactId::of);
        ids.sort();
        let keys: Vec<&str> = ids.iter().map(|id| id.key).collect();
        assert_eq!(keys, ["-2", "1.5", "9", "10", "1e3", "\"a\"", "\"b\""]);
    }

    #[test]
    fn revenue_and_scores_print_as_integers_when_whole() {
        assert_eq!(number(1562500.0), json!(1562500));
        assert_eq!(number(12.5), json!(12.5));
        let rows = [sold(row(1, 70.5, "hot"), 0.1), sold(row(2, 71.0, "hot"), 0.2)];
        let json = serde_json::to_value(report(&rows, &tiers(), "s".into())).unwrap();
        assert_eq!(json["revenue"], json!(0.3), "rounded to cents");
        assert_eq!(json["deciles"][0]["min_score"], json!(70.5));
        assert_eq!(json["deciles"][1]["max_score"], json!(71));
    }

    fn ranked(score: f64, tier: &str) -> SideScore {
        SideScore {
            score,
            tier: tier.to_owned(),
            disqualified: tier == "disqualified",
        }
    }

    fn pair(id: u64, baseline: (f64, &str), candidate: (f64, &str)) -> BacktestContact {
        BacktestContact {
            contact_key: id.to_string(),
            baseline: ranked(baseline.0, baseline.1),
            candidate: ranked(candidate.0, candidate.1),
        }
    }

    #[test]
    fn equal_volume_compares_the_first_k_of_each_ranking() {
        // Baseline: 2 hot (1, 2). The candidate demotes 1 and promotes 3;
        // 4 is disqualified by the candidate despite its score; 3 and 5
        // tie at 75, 3 comes first by id. Sales: 3 (300) and 4 (400).
        let contacts = [
            pair(1, (90.0, "hot"), (45.0, "warm")),
            pair(2, (80.0, "hot"), (70.0, "hot")),
            pair(3, (60.0, "warm"), (75.0, "hot")),
            pair(4, (50.0, "warm"), (99.0, "disqualified")),
            pair(5, (10.0, "cold"), (75.0, "hot")),
            pair(6, (0.0, "cold"), (0.0, "cold")),
            // First seen before the window (no row): left out, though
            // both sides rank it first.
            pair(7, (100.0, "hot"), (100.0, "hot")),
        ];
        let outcomes = [
            sold(row(3, 0.0, "warm"), 300.0),
            sold(row(4, 0.0, "warm"), 400.0),
            lost(row(1, 0.0, "hot")),
            row(2, 0.0, "hot"),
            row(5, 0.0, "cold"),
            row(6, 0.0, "cold"),
            // Not in the backtest: ignored.
            sold(row(99, 0.0, "hot"), 1e6),
        ];
        let result = against_outcomes(&contacts, &outcomes, &tiers(), &tiers());
        // Baseline ranking: 1, 2, 3, 4 …: no sale in the first 2.
        assert_eq!(
            result.baseline.equal_volume,
            EqualVolume {
                k: 2,
                sales: 0,
                revenue: 0.0
            }
        );
        // Candidate ranking: 3 (75), 5 (75), 2 (70), … 4 last: 1 sale.
        assert_eq!(
            result.candidate.equal_volume,
            EqualVolume {
                k: 2,
                sales: 1,
                revenue: 300.0
            }
        );
        assert_eq!(result.verdict(), Verdict::Better);
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(
            json["candidate"]["tiers"][0],
            json!({"tier": "hot", "contacts": 3, "booked": 1, "with_outcome": 1, "sales": 1,
                   "sale_rate": 0.3333, "revenue": 300, "share_of_sales": 0.5, "lift": 1.0})
        );
        assert_eq!(json["baseline"]["tiers"][0]["sales"], 0);
        assert_eq!(json["baseline"]["tiers"][1]["sales"], 2);
        assert_eq!(json["candidate"]["tiers"][3]["tier"], "disqualified");
        assert_eq!(json["candidate"]["tiers"][3]["sales"], 1);
        assert_eq!(
            json["baseline"]["equal_volume"],
            json!({"k": 2, "sales": 0, "revenue": 0})
        );
    }

    #[test]
    fn no_contacts_no_volume() {
        let result = against_outcomes(&[], &[], &tiers(), &tiers());
        assert_eq!(result.baseline.equal_volume.k, 0);
        assert_eq!(result.verdict(), Verdict::Same);
        assert_eq!(result.candidate.tiers.len(), 4);
    }
}
