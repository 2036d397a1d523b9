//! RFC 3339 times as rules read and write them (SPEC 12): `now()` and
//! `first_seen()` write one, `days_since(t)` reads one.
//!
//! Written: UTC, milliseconds, `Z` (`2026-11-02T18:07:00.000Z`), the form of
//! `scored_at`, for years 0000–9999 (a time outside them is written as the
//! nearest one inside). Read: `YYYY-MM-DD`, `T` (or `t`, or a space),
//! `hh:mm:ss`, an optional fraction of any length (nanoseconds kept), and
//! `Z`, `z` or an offset `±hh:mm`; surrounding spaces are ignored. A leap
//! second (`:60`) counts as the first second of the next minute. Anything
//! else — a date alone, a missing offset, a 31st of April — is not a time.
//!
//! Why not `humantime` or `crate::time`: humantime reads UTC times only and
//! panics formatting a time before 1970, and `score/` imports nothing but
//! `payload`. The calendar arithmetic is Howard Hinnant's `days_from_civil`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 0000-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z, in unix ms.
const MIN_MS: i64 = -62_167_219_200_000;
const MAX_MS: i64 = 253_402_300_799_999;

const NANOS_PER_DAY: f64 = 86_400_000_000_000.0;

/// Milliseconds since the Unix epoch of `time` (rounded down, so a time
/// before the epoch is negative).
pub fn unix_millis(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(e) => {
            let before = e.duration();
            let partial = u128::from(!before.as_nanos().is_multiple_of(1_000_000));
            i64::try_from(before.as_millis() + partial).map_or(i64::MIN, |ms| -ms)
        }
    }
}

/// `ms` since the epoch as RFC 3339 text: UTC, milliseconds, `Z`.
pub fn format_millis(ms: i64) -> String {
    let ms = ms.clamp(MIN_MS, MAX_MS);
    let (days, in_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    let (seconds, millis) = (in_day / 1000, in_day % 1000);
    // Digit by digit into a fixed layout: every scored contact carries one,
    // and `format!` cost three times as much (BENCHMARKS.md, session 12).
    // The clamp keeps the year within 0..=9999.
    let mut text = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut n: i64| {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, seconds / 3600);
    put(14, 2, seconds / 60 % 60);
    put(17, 2, seconds % 60);
    put(20, 3, millis);
    text.iter().map(|&b| char::from(b)).collect()
}

/// Nanoseconds since the Unix epoch of an RFC 3339 time; `None` when the
/// text is not one.
pub fn parse_nanos(text: &str) -> Option<i128> {
    let b = text.trim().as_bytes();
    let number = |at: usize, len: usize| -> Option<i64> {
        let digits = b.get(at..at + len)?;
        digits.iter().try_fold(0i64, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    let at = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt ") && at(13, b":") && at(16, b":")) {
        return None;
    }
    let (year, month, day) = (number(0, 4)?, number(5, 2)?, number(8, 2)?);
    let (hour, minute, second) = (number(11, 2)?, number(14, 2)?, number(17, 2)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: i128 = 0;
    if at(i, b".") {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        for place in 0..9 {
            let digit = if place < digits {
                b[i + 1 + place] - b'0'
            } else {
                0
            };
            nanos = nanos * 10 + i128::from(digit);
        }
        i += 1 + digits;
    }
    let offset_minutes = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (hours, minutes) = (number(i + 1, 2)?, number(i + 4, 2)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let minutes = hours * 60 + minutes;
            if *sign == b'-' { -minutes } else { minutes }
        }
        _ => return None,
    };
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(i128::from(seconds) * 1_000_000_000 + nanos)
}

/// The instant of an RFC 3339 time; `None` when the text is not one.
pub fn parse_time(text: &str) -> Option<SystemTime> {
    let nanos = parse_nanos(text)?;
    let magnitude = Duration::new(
        u64::try_from(nanos.unsigned_abs() / 1_000_000_000).ok()?,
        (nanos.unsigned_abs() % 1_000_000_000) as u32,
    );
    match nanos >= 0 {
        true => UNIX_EPOCH.checked_add(magnitude),
        false => UNIX_EPOCH.checked_sub(magnitude),
    }
}

/// Days (a float) from the time `nanos` to the instant `now_ms`; negative
/// when `nanos` is later.
pub fn days_between(nanos: i128, now_ms: i64) -> f64 {
    (i128::from(now_ms) * 1_000_000 - nanos) as f64 / NANOS_PER_DAY
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a date of the proleptic Gregorian calendar.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS_2023: i64 = 1_700_000_000_123; // 2023-11-14T22:13:20.123Z

    #[test]
    fn times_are_written_as_scored_at_is() {
        assert_eq!(format_millis(MS_2023), "2023-11-14T22:13:20.123Z");
        assert_eq!(format_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_millis(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_millis(MIN_MS), "0000-01-01T00:00:00.000Z");
        assert_eq!(format_millis(i64::MIN), "0000-01-01T00:00:00.000Z");
        assert_eq!(format_millis(i64::MAX), "9999-12-31T23:59:59.999Z");
        let time = UNIX_EPOCH + Duration::from_millis(MS_2023 as u64);
        assert_eq!(
            format_millis(unix_millis(time)),
            humantime::format_rfc3339_millis(time).to_string()
        );
    }

    #[test]
    fn system_times_become_milliseconds_rounded_down() {
        assert_eq!(unix_millis(UNIX_EPOCH + Duration::from_nanos(1_999_999)), 1);
        assert_eq!(unix_millis(UNIX_EPOCH - Duration::from_nanos(1)), -1);
        assert_eq!(unix_millis(UNIX_EPOCH - Duration::from_millis(5)), -5);
    }

    #[test]
    fn every_offset_and_fraction_is_read() {
        let ms = |text: &str| parse_nanos(text).map(|n| i64::try_from(n.div_euclid(1_000_000)).unwrap());
        assert_eq!(ms("2023-11-14T22:13:20.123Z"), Some(MS_2023));
        assert_eq!(ms("2023-11-14t22:13:20.123z"), Some(MS_2023));
        assert_eq!(ms("2023-11-14 22:13:20.123Z"), Some(MS_2023));
        assert_eq!(ms("  2023-11-14T22:13:20.123Z\n"), Some(MS_2023));
        assert_eq!(ms("2023-11-15T00:13:20.123+02:00"), Some(MS_2023));
        assert_eq!(ms("2023-11-14T17:13:20.123-05:00"), Some(MS_2023));
        assert_eq!(ms("2023-11-14T22:13:20Z"), Some(MS_2023 - 123));
        assert_eq!(ms("1969-12-31T23:59:59Z"), Some(-1000));
        assert_eq!(
            parse_nanos("2023-11-14T22:13:20.123456789123Z"),
            Some(i128::from(MS_2023) * 1_000_000 + 456_789)
        );
        assert_eq!(
            parse_nanos("2023-11-14T22:13:20.5Z").map(|n| n % 1_000_000_000),
            Some(500_000_000)
        );
        assert_eq!(ms("2016-12-31T23:59:60Z"), ms("2017-01-01T00:00:00Z"));
        assert_eq!(ms("2024-02-29T00:00:00Z"), Some(1_709_164_800_000));
        assert_eq!(ms("0000-01-01T00:00:00Z"), Some(MIN_MS));
        assert_eq!(ms("9999-12-31T23:59:59.999Z"), Some(MAX_MS));
    }

    #[test]
    fn anything_else_is_not_a_time() {
        for text in [
            "",
            "now",
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13Z",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20.123",
            "2023-11-14T22:13:20+0200",
            "2023-11-14T22:13:20+24:00",
            "2023-11-14T22:13:20+02:60",
            "2023-11-14T22:13:20Z trailing",
            "2023-11-14X22:13:20Z",
            "2023-13-01T00:00:00Z",
            "2023-00-01T00:00:00Z",
            "2023-04-31T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T23:60:00Z",
            "2023-11-14T23:59:61Z",
            "+2023-11-14T22:13:20Z",
            "２023-11-14T22:13:20Z",
            "2023-1١-14T22:13:20Z",
            "1700000000",
        ] {
            assert_eq!(parse_nanos(text), None, "{text:?}");
        }
    }

    #[test]
    fn days_between_is_exact_for_whole_and_fractional_days() {
        let now = parse_nanos("2026-11-09T12:00:00Z").unwrap() / 1_000_000;
        let now = i64::try_from(now).unwrap();
        let days = |text: &str| days_between(parse_nanos(text).unwrap(), now);
        assert_eq!(days("2026-11-02T12:00:00Z"), 7.0);
        assert_eq!(days("2026-11-09T00:00:00Z"), 0.5);
        assert_eq!(days("2026-11-09T14:00:00+02:00"), 0.0);
        assert_eq!(days("2026-11-10T12:00:00Z"), -1.0);
        assert_eq!(days("2025-11-09T12:00:00Z"), 365.0);
        assert_eq!(days("2026-11-09T11:59:59.999Z"), 1.0 / 86_400_000.0);
    }

    #[test]
    fn times_read_as_instants() {
        let at = |ms: i64| match ms >= 0 {
            true => UNIX_EPOCH + Duration::from_millis(ms as u64),
            false => UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs()),
        };
        assert_eq!(parse_time("2023-11-14T22:13:20.123Z"), Some(at(MS_2023)));
        assert_eq!(parse_time("1969-12-31T23:59:59.999Z"), Some(at(-1)));
        assert_eq!(
            parse_time("1970-01-01T00:00:00.000000001Z"),
            Some(UNIX_EPOCH + Duration::from_nanos(1))
        );
        assert_eq!(parse_time("2023-11-14"), None);
    }

    #[test]
    fn what_is_written_reads_back() {
        for ms in [0, -1, MS_2023, MIN_MS, MAX_MS, 951_782_400_000, 4_102_444_800_000] {
            assert_eq!(
                parse_nanos(&format_millis(ms)),
                Some(i128::from(ms) * 1_000_000),
                "{ms}"
            );
        }
    }
}
