//! Any text as the admin API's query parameters (SPEC 4, issue 19 #3):
//! `GET /stats?since=…&bucket=…`, `GET /deliveries?status=…&limit=…`,
//! `GET /contacts?limit=…` and a backtest's `since`/`top`. Each is accepted
//! into its bounded range or refused with an error naming the parameter;
//! never a panic, an overflow or an unbounded answer.
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use leadscore::app::{contacts, deliveries, stats};
use leadscore::store::{Counters, DeliveryCounts};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Two parameters from one input: split at the first NUL.
    let (first, second) = text.split_once('\0').unwrap_or((&text, ""));
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);

    match stats::Window::from_params(Some(first), Some(second), now) {
        Ok(window) => {
            let stats = stats::Stats::from_counters(&Counters::default(), window, DeliveryCounts::default());
            assert!(stats.buckets.len() <= stats::MAX_BUCKETS as usize + 1);
        }
        Err(e) => assert!(e.to_string().starts_with("since") || e.to_string().starts_with("bucket")),
    }
    match deliveries::DeliveryQuery::from_params(Some(first), Some(second)) {
        Ok(query) => assert!((1..=deliveries::MAX_LIST).contains(&query.limit)),
        Err(e) => assert!(e.to_string().starts_with("status") || e.to_string().starts_with("limit")),
    }
    match contacts::parse_limit(Some(first)) {
        Ok(limit) => assert!((1..=contacts::MAX_LISTED).contains(&limit)),
        Err(e) => assert!(e.to_string().starts_with("limit")),
    }
    if let Ok(since) = leadscore::time::parse_since(first, SystemTime::now()) {
        let ms = leadscore::time::unix_ms(since);
        assert!((0..=leadscore::time::MAX_MS).contains(&ms));
        let _ = leadscore::time::format_ms(ms);
    }
});
