//! The `postgres://` store URL: libpq's parameters plus ours.

use tokio_postgres::Config;
use tokio_postgres::config::SslMode;

use super::{CONNECT_TIMEOUT, DEFAULT_POOL_SIZE, KEEPALIVE_IDLE};
use crate::store::{StoreError, StoreResult, redact_url};

/// What the store URL says.
#[derive(Clone)]
pub(super) struct Settings {
    pub(super) config: Config,
    /// `?schema=`: created when missing and put first in the search path.
    pub(super) schema: Option<String>,
    pub(super) pool_size: usize,
}

fn invalid(url: &str, reason: impl Into<String>) -> StoreError {
    StoreError::InvalidUrl {
        url: redact_url(url),
        reason: reason.into(),
    }
}

/// Parses a `postgres://` URL: libpq's parameters as tokio-postgres reads
/// them, plus `schema=NAME` and `pool_size=N`, which are ours.
pub(super) fn parse_url(url: &str) -> StoreResult<Settings> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut kept = Vec::new();
    let mut schema = None;
    let mut pool_size = DEFAULT_POOL_SIZE;
    for pair in query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = || {
            form_urlencoded::parse(format!("v={value}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        match key {
            "schema" => {
                let name = decoded();
                let valid = !name.is_empty()
                    && name.len() <= 63
                    && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if !valid {
                    return Err(invalid(
                        url,
                        format!("schema {name:?} is not a plain lower-case name (a-z, 0-9, _; at most 63)"),
                    ));
                }
                schema = Some(name);
            }
            "pool_size" => {
                pool_size = decoded()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .ok_or_else(|| invalid(url, "pool_size must be a number from 1 to 64"))?;
            }
            _ => kept.push(pair),
        }
    }
    let libpq_url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config: Config = libpq_url
        .parse()
        .map_err(|e: tokio_postgres::Error| invalid(url, e.to_string()))?;
    if config.get_ssl_mode() == SslMode::Require {
        return Err(invalid(
            url,
            "sslmode=require: this build connects to PostgreSQL without TLS (use a private network or a local proxy)",
        ));
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if !url.contains("keepalives_idle=") {
        // Notice a connection a firewall or NAT dropped silently within a
        // minute or two, not after libpq's default two hours.
        config.keepalives_idle(KEEPALIVE_IDLE);
    }
    if config.get_application_name().is_none() {
        config.application_name("leadscore");
    }
    if let Some(name) = &schema {
        let options = match config.get_options() {
            Some(existing) if !existing.trim().is_empty() => format!("{existing} -c search_path={name}"),
            _ => format!("-c search_path={name}"),
        };
        config.options(options);
    }
    Ok(Settings {
        config,
        schema,
        pool_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    #[test]
    fn urls_keep_libpq_parameters_and_take_ours() {
        let s =
            parse_url("postgres://u:pw@db.example:5433/leads?schema=blue_1&pool_size=7&connect_timeout=9")
                .unwrap();
        assert_eq!(s.schema.as_deref(), Some("blue_1"));
        assert_eq!(s.pool_size, 7);
        assert_eq!(s.config.get_dbname(), Some("leads"));
        assert_eq!(s.config.get_options(), Some("-c search_path=blue_1"));
        assert_eq!(s.config.get_connect_timeout(), Some(&Duration::from_secs(9)));
        assert_eq!(s.config.get_application_name(), Some("leadscore"));
        assert_eq!(s.config.get_keepalives_idle(), KEEPALIVE_IDLE);
        let s = parse_url("postgresql://u@h/db?options=-csearch_path%3Dxyz").unwrap();
        assert_eq!(s.schema, None);
        assert_eq!(s.config.get_options(), Some("-csearch_path=xyz"));
        assert_eq!(s.config.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        for (url, expected) in [
            ("postgres://u@h/db?schema=Bad-Name", "not a plain lower-case name"),
            ("postgres://u@h/db?pool_size=0", "pool_size"),
            ("postgres://u:secret@h/db?sslmode=require", "without TLS"),
            ("postgres://u@h/db?nonsense=1", "nonsense"),
        ] {
            let e = parse_url(url).err().expect(url).to_string();
            assert!(e.contains(expected), "{url}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }
}
