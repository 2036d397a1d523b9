//! Settings (SPEC 7): the value types they use — durations (`500ms`, `5m`,
//! `7d`), sizes (`1MiB`), lists of durations (`5s,5m,30m`), listen
//! addresses, store URLs, `whsec_` secrets, the log filter — and where they
//! come from: flag, environment, the config file ([`file`]) or default
//! ([`layers`]).

pub mod file;
pub mod layers;

use std::time::Duration;

/// The longest duration any setting takes: 100 years as humantime counts
/// them (`100y`, a year of 365.25 days). Far beyond any sensible value,
/// and short enough that adding it to a clock or counting it in
/// milliseconds never overflows.
const LONGEST: Duration = Duration::from_secs(100 * 31_557_600);

/// A duration such as `500ms`, `5s`, `5m`, `2h` or `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration ({e}); write e.g. 500ms, 5s, 5m, 2h or 7d"))?;
    if duration > LONGEST {
        return Err(format!("{text:?} is too long (at most 100 years)"));
    }
    Ok(duration)
}

/// A duration longer than zero (timeouts, leases).
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err(format!("{text:?}: must be longer than 0"));
    }
    Ok(duration)
}

/// A comma-separated list of durations (the retry schedule).
pub fn parse_duration_list(text: &str) -> Result<Vec<Duration>, String> {
    let list: Vec<Duration> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_duration)
        .collect::<Result<_, _>>()?;
    if list.is_empty() {
        return Err("the list is empty; give at least one duration, e.g. 5s,5m,30m".into());
    }
    Ok(list)
}

/// A size in bytes: `1048576`, `512KiB`, `1MiB`, `1MB`, `2GiB` (case-insensitive).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size; write e.g. 1MiB, 512KiB or 1048576"))?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "{text:?}: unknown size unit {other:?}; use B, KiB, MiB, GiB, KB, MB or GB"
            ));
        }
    };
    let bytes = number * factor;
    if !(1.0..=(u32::MAX as f64)).contains(&bytes) {
        return Err(format!("{text:?} is out of range (1 byte to 4 GiB)"));
    }
    Ok(bytes as usize)
}

/// An address to listen on: `IP:PORT` (`127.0.0.1:8080`, `[::]:8080`) or
/// `HOST:PORT` (`localhost:8080`).
pub fn parse_listen(text: &str) -> Result<String, String> {
    let trimmed = text.trim();
    if trimmed.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(trimmed.to_owned());
    }
    let hint = "write HOST:PORT, e.g. 127.0.0.1:8080, 0.0.0.0:8080 or [::]:8080";
    let Some((host, port)) = trimmed.rsplit_once(':') else {
        return Err(format!("{text:?} has no port; {hint}"));
    };
    if port.parse::<u16>().is_err() {
        return Err(format!("{text:?}: {port:?} is not a port (0 to 65535); {hint}"));
    }
    let host_name = !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|label| !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if !host_name {
        return Err(format!(
            "{text:?}: {host:?} is neither an IP address nor a host name; {hint}"
        ));
    }
    Ok(trimmed.to_owned())
}

/// Checks the scheme of a store URL; the message shows the URL without its
/// password. The store itself reports what else is wrong when it opens.
pub fn check_store_url(url: &str) -> Result<(), String> {
    let url = url.trim();
    let rest = ["sqlite://", "postgres://", "postgresql://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme));
    match rest {
        Some(rest) if !rest.is_empty() => Ok(()),
        Some(_) => Err(format!(
            "{:?} names no database after the scheme",
            mask_url_password(url)
        )),
        None => Err(format!(
            "{:?} is not a store URL; use sqlite://PATH or postgres://USER@HOST/DB",
            mask_url_password(url)
        )),
    }
}

/// What a masked secret shows instead of its value.
pub const MASK: &str = "********";

/// A URL with the password of its user info (`user:PASSWORD@`) and a
/// `password=` query parameter masked.
pub fn mask_url_password(url: &str) -> String {
    let mut masked = url.to_owned();
    if let Some(scheme_end) = url.find("://") {
        let authority_start = scheme_end + 3;
        let authority_end = url[authority_start..]
            .find(['/', '?'])
            .map_or(url.len(), |i| authority_start + i);
        if let Some(at) = url[authority_start..authority_end].rfind('@') {
            let userinfo = &url[authority_start..authority_start + at];
            if let Some((user, _)) = userinfo.split_once(':') {
                masked = format!(
                    "{}{user}:{MASK}{}",
                    &url[..authority_start],
                    &url[authority_start + at..]
                );
            }
        }
    }
    if let Some((base, query)) = masked.split_once('?') {
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}={MASK}"),
                _ => pair.to_owned(),
            })
            .collect();
        masked = format!("{base}?{}", query.join("&"));
    }
    masked
}

/// A Standard Webhooks secret: `whsec_` then base64. The prefix is required
/// here, so that a token pasted into the wrong setting is refused at start;
/// the message never shows the value.
pub fn parse_whsec(text: &str) -> Result<crate::signature::WebhookSecret, String> {
    if !text.trim().starts_with("whsec_") {
        return Err("a Standard Webhooks secret starts with `whsec_`, followed by base64".into());
    }
    crate::signature::WebhookSecret::parse(text)
}

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Checks a `LEADSCORE_LOG` filter (tracing's `EnvFilter` syntax) more
/// strictly than `EnvFilter` does: a bare word is read there as a target
/// name, so a mistyped level (`debugg`) silently turned every log off.
/// Here a bare word must be a level; a target is written `TARGET=LEVEL`
/// (or as a path, `leadscore::deliver`).
pub fn check_log_filter(text: &str) -> Result<(), String> {
    let refuse = |why: String| Err(format!("invalid value {text:?} for LEADSCORE_LOG: {why}"));
    let is_level = |word: &str| {
        let word = word.trim().to_ascii_lowercase();
        LEVELS.contains(&word.as_str()) || matches!(word.as_str(), "0" | "1" | "2" | "3" | "4" | "5")
    };
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        // `target[span{field=value}]` without a level: the brackets hold the `=`.
        if directive.ends_with(']') {
            continue;
        }
        match directive.rsplit_once('=') {
            Some((target, level)) => {
                if target.trim().is_empty() {
                    return refuse(format!("{directive:?} names no target before `=`"));
                }
                if !is_level(level) {
                    return refuse(format!(
                        "{level:?} is not a level (trace, debug, info, warn, error or off){}",
                        did_you_mean(level, LEVELS)
                    ));
                }
            }
            None if is_level(directive) || directive.contains("::") || directive == "leadscore" => {}
            None => {
                return refuse(format!(
                    "{directive:?} is not a level (trace, debug, info, warn, error or off); \
                     a target takes a level, e.g. {directive}=debug{}",
                    did_you_mean(directive, LEVELS)
                ));
            }
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(text)
        .map(drop)
        .or_else(|e| refuse(e.to_string()))
}

/// `; did you mean "X"?` when one of `known` is a likely typo of `given`.
pub fn did_you_mean<'a>(given: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    let given = given.trim().to_ascii_lowercase().replace('_', "-");
    known
        .into_iter()
        .map(|candidate| (edit_distance(&given, candidate), candidate))
        .filter(|&(distance, candidate)| distance <= (candidate.len() / 3).max(1))
        .min()
        .map(|(_, candidate)| format!("; did you mean {candidate:?}?"))
        .unwrap_or_default()
}

/// Levenshtein distance (insertions, deletions, substitutions).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_sizes_and_lists() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert!(parse_duration("soon").unwrap_err().contains("\"soon\""));
        assert_eq!(
            parse_duration_list("5s, 5m,2h").unwrap(),
            vec![
                Duration::from_secs(5),
                Duration::from_secs(300),
                Duration::from_secs(7200)
            ]
        );
        assert!(parse_duration_list(" , ").is_err());
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("64kib").unwrap(), 64 << 10);
        assert_eq!(parse_size("2MB").unwrap(), 2_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("1 parsec").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn durations_are_bounded_and_some_must_be_positive() {
        assert_eq!(
            parse_duration("100y").unwrap(),
            Duration::from_secs(100 * 31_557_600)
        );
        assert!(
            parse_duration("36525d 1s")
                .unwrap_err()
                .contains("at most 100 years")
        );
        assert!(parse_duration("101y").unwrap_err().contains("at most 100 years"));
        assert!(
            parse_positive_duration("0s")
                .unwrap_err()
                .contains("longer than 0")
        );
        assert_eq!(parse_positive_duration("2s").unwrap(), Duration::from_secs(2));
    }

    #[test]
    fn listen_addresses() {
        for good in [
            "127.0.0.1:8080",
            "[::]:8080",
            "0.0.0.0:0",
            "localhost:8080",
            "lead-score.internal:80",
        ] {
            assert_eq!(parse_listen(good).as_deref(), Ok(good));
        }
        assert!(parse_listen("8080").unwrap_err().contains("has no port"));
        assert!(
            parse_listen("127.0.0.1:80800")
                .unwrap_err()
                .contains("is not a port")
        );
        assert!(
            parse_listen("http://x:80")
                .unwrap_err()
                .contains("neither an IP address nor a host name")
        );
        assert!(parse_listen(":8080").unwrap_err().contains("HOST:PORT"));
    }

    #[test]
    fn store_urls_need_a_known_scheme_and_never_show_the_password() {
        assert!(check_store_url("sqlite://./data/leadscore.db").is_ok());
        assert!(check_store_url("postgres://u@h/db").is_ok());
        assert!(check_store_url("postgresql://u@h/db").is_ok());
        let error = check_store_url("mysql://u:hunter2@db/leads").unwrap_err();
        assert!(error.contains("mysql://u:********@db/leads"), "{error}");
        assert!(!error.contains("hunter2"));
        assert!(check_store_url("sqlite://").unwrap_err().contains("no database"));
    }

    #[test]
    fn url_passwords_are_masked() {
        assert_eq!(
            mask_url_password("postgres://app:s3cret@db:5432/leads?sslmode=require&password=x2"),
            "postgres://app:********@db:5432/leads?sslmode=require&password=********"
        );
        assert_eq!(
            mask_url_password("postgres://app@db/leads"),
            "postgres://app@db/leads"
        );
        assert_eq!(
            mask_url_password("sqlite://./data/a@b.db"),
            "sqlite://./data/a@b.db"
        );
    }

    #[test]
    fn standard_webhooks_secrets_need_their_prefix() {
        assert!(parse_whsec("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
        // Valid base64, but not a whsec_ secret: a token in the wrong place.
        let error = parse_whsec("notwhsec").unwrap_err();
        assert!(error.contains("whsec_"), "{error}");
        assert!(!error.contains("notwhsec"), "the value is not shown: {error}");
        assert!(parse_whsec("whsec_***").is_err());
    }

    #[test]
    fn log_filters() {
        for good in [
            "info",
            "DEBUG",
            "warn,leadscore=debug",
            "leadscore::deliver=trace",
            "leadscore",
            "leadscore::deliver",
            "info,leadscore[deliver{contact_id=5}]=debug",
            "off",
        ] {
            assert_eq!(check_log_filter(good), Ok(()), "{good}");
        }
        let error = check_log_filter("debugg").unwrap_err();
        assert!(error.contains("LEADSCORE_LOG"), "{error}");
        assert!(error.contains(r#"did you mean "debug"?"#), "{error}");
        let error = check_log_filter("leadscore=verbose").unwrap_err();
        assert!(error.contains(r#""verbose" is not a level"#), "{error}");
        assert!(check_log_filter("hyper").unwrap_err().contains("hyper=debug"));
        assert!(check_log_filter("=debug").unwrap_err().contains("no target"));
        assert!(check_log_filter("[[bad").unwrap_err().contains("LEADSCORE_LOG"));
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            did_you_mean("forward_url", ["forward-url", "listen"]),
            "; did you mean \"forward-url\"?"
        );
        assert_eq!(
            did_you_mean("forward-headers", ["forward-header"]),
            "; did you mean \"forward-header\"?"
        );
        assert_eq!(did_you_mean("colour", ["listen", "store"]), "");
    }
}
