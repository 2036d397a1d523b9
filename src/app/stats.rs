//! `GET /stats` (SPEC 9): contacts received, duplicates, tiers and rule
//! errors per time bucket, from the store's per-minute counters.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::app::AppError;
use crate::store::{
    COUNT_DUPLICATE, COUNT_HOOK, COUNT_RECEIVED, COUNT_RESCORED, COUNT_RULE_ERROR, Counters, DeliveryCounts,
    Store,
};

/// Most buckets one answer holds.
pub const MAX_BUCKETS: u64 = 2000;
const MINUTE_MS: i64 = 60_000;
/// The narrowest bucket: the counters are kept per minute.
const MIN_BUCKET: Duration = Duration::from_secs(60);
/// The widest bucket: a year (retention is rarely longer; wider buckets
/// only ever hold everything).
const MAX_BUCKET: Duration = Duration::from_secs(366 * 86400);

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub buckets: Vec<StatsBucket>,
    pub deliveries: DeliveryCounts,
    pub rule_errors: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsBucket {
    /// RFC 3339.
    pub start: String,
    /// Contacts stored (not calls, outcomes or rescored events).
    pub received: u64,
    /// Duplicates of any kind of element.
    pub duplicates: u64,
    pub tiers: BTreeMap<String, u64>,
    /// Call, outcome and unknown hooks stored (SPEC 11 "Counting").
    pub calls: u64,
    pub outcomes: u64,
    pub unknown: u64,
    /// `contact.rescored` events stored (SPEC 12 "Counting").
    pub rescored: u64,
}

/// A validated stats window: every number in range, so the buckets can be
/// laid out without overflow and there are at most [`MAX_BUCKETS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub since_ms: i64,
    pub until_ms: i64,
    pub bucket_ms: i64,
}

impl Window {
    /// From the query parameters as sent (`since=24h&bucket=1h`, the defaults).
    pub fn from_params(since: Option<&str>, bucket: Option<&str>, now: SystemTime) -> Result<Self, AppError> {
        let since = crate::time::parse_since(since.unwrap_or("24h"), now)
            .map_err(|e| AppError::parameter("since", e))?;
        let bucket = crate::config::parse_duration(bucket.unwrap_or("1h"))
            .map_err(|e| AppError::parameter("bucket", e))?;
        if bucket < MIN_BUCKET {
            return Err(AppError::parameter("bucket", "must be at least 1m"));
        }
        if bucket > MAX_BUCKET {
            return Err(AppError::parameter("bucket", "must be at most 366d"));
        }
        let (since_ms, until_ms) = (crate::time::unix_ms(since), crate::time::unix_ms(now));
        // Both times are within 1970..9999 (parse_since, unix_ms): the span fits.
        let span_ms = until_ms.saturating_sub(since_ms).max(0) as u128;
        let buckets = span_ms / bucket.as_millis();
        if buckets > MAX_BUCKETS as u128 {
            return Err(AppError::parameter(
                "bucket",
                format!("more than {MAX_BUCKETS} buckets; choose a later since or a wider bucket"),
            ));
        }
        // At most a year and at most 2,000 of them: `start + i * bucket`
        // stays far inside i64.
        let bucket_ms = bucket.as_millis() as i64;
        Ok(Self {
            since_ms,
            until_ms,
            bucket_ms,
        })
    }
}

pub async fn stats(store: &dyn Store, window: Window) -> Result<Stats, AppError> {
    let counters = store.counters(window.since_ms).await?;
    let deliveries = store.delivery_counts().await?;
    Ok(Stats::from_counters(&counters, window, deliveries))
}

impl Stats {
    /// Buckets from the window's start to its end (every bucket present,
    /// empty ones with zeros), filled from per-minute counters.
    pub fn from_counters(counters: &Counters, window: Window, deliveries: DeliveryCounts) -> Self {
        let Window {
            since_ms,
            until_ms,
            bucket_ms,
        } = window;
        let bucket_ms = bucket_ms.max(MINUTE_MS);
        let start = since_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
        let count = ((until_ms - start).max(0) / bucket_ms + 1) as usize;
        let mut buckets: Vec<StatsBucket> = (0..count)
            .map(|i| StatsBucket {
                start: crate::time::format_ms(start + i as i64 * bucket_ms),
                received: 0,
                duplicates: 0,
                tiers: Default::default(),
                calls: 0,
                outcomes: 0,
                unknown: 0,
                rescored: 0,
            })
            .collect();
        let mut rule_errors = BTreeMap::new();
        for (minute, what, name, n) in &counters.rows {
            if *minute < start || *minute > until_ms {
                continue;
            }
            let bucket = &mut buckets[(((minute - start) / bucket_ms) as usize).min(count - 1)];
            match what.as_str() {
                COUNT_RECEIVED => {
                    bucket.received += n;
                    *bucket.tiers.entry(name.clone()).or_default() += n;
                }
                COUNT_DUPLICATE => bucket.duplicates += n,
                COUNT_HOOK => match name.as_str() {
                    "call" => bucket.calls += n,
                    "outcome" => bucket.outcomes += n,
                    _ => bucket.unknown += n,
                },
                COUNT_RESCORED => bucket.rescored += n,
                COUNT_RULE_ERROR => *rule_errors.entry(name.clone()).or_default() += n,
                _ => {}
            }
        }
        Self {
            buckets,
            deliveries,
            rule_errors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(100 * 86400)
    }

    /// issue 19 #3: huge, overflowing or dividing-by-zero parameters are
    /// refused with the parameter's name, never wrapped or panicking.
    #[test]
    fn out_of_range_parameters_are_refused_by_name() {
        for (since, bucket, named) in [
            (None, Some("9223372036854776s"), "bucket"),
            (None, Some("2305843009213693952s"), "bucket"),
            (None, Some("367d"), "bucket"),
            (Some("10000-01-01T00:00:00Z"), None, "since"),
            (Some("1970-01-01T00:00:00Z"), Some("1m"), "bucket"),
            (Some("99999999999999999999d"), None, "since"),
            (None, Some("1s"), "bucket"),
            (None, Some("soon"), "bucket"),
        ] {
            let message = Window::from_params(since, bucket, now())
                .expect_err("out of range")
                .to_string();
            assert!(message.starts_with(named), "{since:?} {bucket:?}: {message}");
        }
        // A bucket wider than the window is one bucket.
        let window = Window::from_params(Some("1h"), Some("366d"), now()).unwrap();
        let stats = Stats::from_counters(&Counters::default(), window, DeliveryCounts::default());
        assert_eq!(stats.buckets.len(), 1);
    }

    #[test]
    fn buckets_cover_the_window() {
        let window = Window::from_params(Some("3h"), Some("1h"), now()).unwrap();
        let counters = Counters {
            rows: vec![
                (
                    window.until_ms - 90 * MINUTE_MS,
                    COUNT_RECEIVED.into(),
                    "hot".into(),
                    2,
                ),
                (
                    window.until_ms - 10 * MINUTE_MS,
                    COUNT_DUPLICATE.into(),
                    String::new(),
                    1,
                ),
                (
                    window.until_ms - 10 * MINUTE_MS,
                    COUNT_RULE_ERROR.into(),
                    "10-a.rhai".into(),
                    3,
                ),
            ],
        };
        let stats = Stats::from_counters(&counters, window, DeliveryCounts::default());
        assert_eq!(stats.buckets.len(), 4);
        assert_eq!(stats.buckets[1].received, 2);
        assert_eq!(stats.buckets[1].tiers["hot"], 2);
        assert_eq!(stats.buckets[2].duplicates, 1);
        assert_eq!(stats.rule_errors["10-a.rhai"], 3);
    }
}
