//! Times as the engine keeps and shows them: milliseconds since the Unix
//! epoch inside (stores, counters, schedules), RFC 3339 with milliseconds in
//! UTC outside (API answers, logs). Every conversion is written once here,
//! and every one is total: a time a client sends can be out of range, but it
//! is refused with a message, never an overflow or a panic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The last instant RFC 3339 can write with a four-digit year
/// (9999-12-31T23:59:59.999Z), in unix ms.
pub const MAX_MS: i64 = 253_402_300_799_999;

/// Milliseconds since the Unix epoch of `time`; 0 before the epoch,
/// [`MAX_MS`] after year 9999.
pub fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(MAX_MS as u128) as i64)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

/// The instant `ms` after the epoch (clamped to 1970…9999).
pub fn from_unix_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.clamp(0, MAX_MS) as u64)
}

/// RFC 3339 with milliseconds, UTC. Clamped to years 1970–9999, the range
/// RFC 3339 and every stored time fit in.
pub fn format_ms(ms: i64) -> String {
    humantime::format_rfc3339_millis(from_unix_ms(ms)).to_string()
}

/// RFC 3339 with milliseconds of a `SystemTime`.
pub fn format_time(time: SystemTime) -> String {
    format_ms(unix_ms(time))
}

/// A point in time given as a duration back from `now` (`30d`, `12h`) or
/// as an RFC 3339 time with any offset. Refused when it falls outside the
/// years 1970–9999 once converted to UTC (SPEC 4).
pub fn parse_since(text: &str, now: SystemTime) -> Result<SystemTime, String> {
    let text = text.trim();
    let time = if let Some(time) = parse_rfc3339(text) {
        time
    } else {
        let back = crate::config::parse_duration(text)
            .map_err(|_| format!("{text:?} is neither a duration (30d, 12h) nor an RFC 3339 time"))?;
        now.checked_sub(back)
            .ok_or_else(|| format!("{text:?} reaches back before 1970"))?
    };
    match time.duration_since(UNIX_EPOCH) {
        Err(_) => Err(format!("{text:?} is before 1970")),
        Ok(d) if d.as_millis() > MAX_MS as u128 => Err(format!("{text:?} is after the year 9999")),
        Ok(_) => Ok(time),
    }
}

/// An RFC 3339 time with any offset (`Z`, `+01:00`, `-05:00`; `T` and `Z`
/// in either case). humantime reads UTC times only, so an offset is taken
/// off first and applied after.
fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let upper = text.to_ascii_uppercase();
    let offset_at = upper.len().checked_sub(6).filter(|&i| upper.is_char_boundary(i));
    let (utc_text, offset_secs) = match offset_at.map(|i| upper.split_at(i)) {
        Some((local, offset))
            if local.contains('T') && matches!(offset.as_bytes(), [b'+' | b'-', _, _, b':', _, _]) =>
        {
            let hours: u64 = offset[1..3].parse().ok()?;
            let minutes: u64 = offset[4..6].parse().ok()?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let secs = hours * 3600 + minutes * 60;
            (
                format!("{local}Z"),
                if offset.starts_with('-') {
                    -(secs as i64)
                } else {
                    secs as i64
                },
            )
        }
        _ => (upper, 0),
    };
    let local = humantime::parse_rfc3339_weak(&utc_text).ok()?;
    // The text is local time at the offset: UTC is that minus the offset.
    match offset_secs {
        ahead if ahead >= 0 => local.checked_sub(Duration::from_secs(ahead as u64)),
        behind => local.checked_add(Duration::from_secs(behind.unsigned_abs())),
    }
}

/// The start of a window of stored history: `since`, but never before the
/// retention period (SPEC 8: history reaches back `--retention`; events
/// that outlived it, such as never-pruned dead deliveries, are not history).
pub fn window_start_ms(since: SystemTime, retention: Duration, now: SystemTime) -> i64 {
    unix_ms(since).max(unix_ms(now.checked_sub(retention).unwrap_or(UNIX_EPOCH)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_formatted_and_clamped() {
        assert_eq!(format_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(format_ms(-5), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(unix_ms(UNIX_EPOCH + Duration::from_secs(u64::MAX / 4)), MAX_MS);
    }

    #[test]
    fn since_takes_durations_and_times() {
        let now = UNIX_EPOCH + Duration::from_secs(100 * 86400);
        assert_eq!(
            parse_since("30d", now).unwrap(),
            UNIX_EPOCH + Duration::from_secs(70 * 86400)
        );
        assert_eq!(
            parse_since("1970-01-02T00:00:00Z", now).unwrap(),
            UNIX_EPOCH + Duration::from_secs(86400)
        );
        assert!(parse_since("last tuesday", now).unwrap_err().contains("neither"));
        // Any offset, and T/Z in either case: all the same instant.
        let instant = UNIX_EPOCH + Duration::from_secs(86400 + 3600);
        for text in [
            "1970-01-02T01:00:00Z",
            "1970-01-02T02:00:00+01:00",
            "1970-01-01T20:00:00-05:00",
            "1970-01-02t01:00:00z",
            "1970-01-02T01:00:00+00:00",
            "1970-01-02T06:30:00+05:30",
        ] {
            assert_eq!(parse_since(text, now).unwrap(), instant, "{text}");
        }
        assert_eq!(
            parse_since("1970-01-02T01:00:00.250+01:00", now).unwrap(),
            instant - Duration::from_secs(3600) + Duration::from_millis(250)
        );
        for bad in [
            "1970-01-02T01:00:00+24:00",
            "1970-01-02T01:00:00+1:000",
            "1970-01-02+01:00",
            "é1970-01-02T01:00:00+01:00",
        ] {
            assert!(parse_since(bad, now).is_err(), "{bad}");
        }
    }

    /// SPEC 4: a date outside 1970–9999 once in UTC is refused, never a panic.
    #[test]
    fn since_outside_the_years_1970_to_9999_is_refused() {
        let now = UNIX_EPOCH + Duration::from_secs(100 * 86400);
        assert!(parse_since("101d", now).unwrap_err().contains("before 1970"));
        assert!(
            parse_since("1970-01-01T00:30:00+01:00", now)
                .unwrap_err()
                .contains("before 1970")
        );
        assert!(
            parse_since("9999-12-31T23:00:00-05:00", now)
                .unwrap_err()
                .contains("9999")
        );
        assert!(parse_since("10000-01-01T00:00:00Z", now).is_err());
        assert!(parse_since("99999999999999999999d", now).is_err());
        assert!(parse_since("9999-12-31T23:59:59Z", now).is_ok());
    }

    #[test]
    fn the_window_starts_no_earlier_than_the_retention() {
        let now = UNIX_EPOCH + Duration::from_secs(100 * 86400);
        let day_ms = 86_400_000;
        let ninety_days = Duration::from_secs(90 * 86400);
        let since = parse_since("99d", now).unwrap();
        assert_eq!(window_start_ms(since, ninety_days, now), 10 * day_ms);
        let since = parse_since("30d", now).unwrap();
        assert_eq!(window_start_ms(since, ninety_days, now), 70 * day_ms);
    }
}
