//! The `postgres://` store URL: libpq's parameters plus ours.

use std::path::PathBuf;

use tokio_postgres::Config;

use super::tls::{MakeRustls, RootCert, SslMode};

use super::{CONNECT_TIMEOUT, DEFAULT_POOL_SIZE, KEEPALIVE_IDLE};
use crate::store::{StoreError, StoreResult, redact_url};

/// What the store URL says.
#[derive(Clone)]
pub(super) struct Settings {
    pub(super) config: Config,
    /// `?schema=`: created when missing and put first in the search path.
    pub(super) schema: Option<String>,
    pub(super) pool_size: usize,
    /// `sslmode` (libpq's default: `prefer`); `tls` carries it into the
    /// connections, this copy is for the tests that check the reading.
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the unit tests"))]
    pub(super) ssl_mode: SslMode,
    /// TLS as `sslmode` and `sslrootcert` say.
    pub(super) tls: MakeRustls,
}

fn invalid(url: &str, reason: impl Into<String>) -> StoreError {
    StoreError::InvalidUrl {
        url: redact_url(url),
        reason: reason.into(),
    }
}

/// Parses a `postgres://` URL: libpq's parameters as tokio-postgres reads
/// them, plus `schema=NAME` and `pool_size=N`, which are ours, and
/// `sslmode` / `sslrootcert` read here (tokio-postgres knows only some of
/// libpq's modes).
pub(super) fn parse_url(url: &str) -> StoreResult<Settings> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut kept = Vec::new();
    let mut schema = None;
    let mut pool_size = DEFAULT_POOL_SIZE;
    let mut ssl_mode = SslMode::Prefer;
    let mut root_cert = None;
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
            "sslmode" => {
                let mode = decoded();
                ssl_mode = SslMode::parse(&mode).ok_or_else(|| {
                    invalid(
                        url,
                        format!(
                            "sslmode {mode:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                        ),
                    )
                })?;
            }
            "sslrootcert" => {
                let path = decoded();
                if path.is_empty() {
                    return Err(invalid(
                        url,
                        "sslrootcert is empty: give a PEM file of CA certificates, or system",
                    ));
                }
                root_cert = Some(match path.as_str() {
                    "system" => RootCert::System,
                    _ => RootCert::File(PathBuf::from(path)),
                });
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
    // libpq: `sslrootcert=system` without a mode means `verify-full`.
    if root_cert == Some(RootCert::System)
        && !query.is_some_and(|q| q.split('&').any(|p| p.starts_with("sslmode=")))
    {
        ssl_mode = SslMode::VerifyFull;
    }
    config.ssl_mode(ssl_mode.for_driver());
    let tls = MakeRustls::new(ssl_mode, root_cert).map_err(|reason| invalid(url, reason))?;
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
        ssl_mode,
        tls,
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
            (
                "postgres://u:secret@h/db?sslmode=verify",
                "sslmode \"verify\" is not one of",
            ),
            (
                "postgres://u:secret@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
                "sslrootcert /nonexistent/ca.pem: cannot read it",
            ),
            (
                "postgres://u:secret@h/db?sslmode=verify-full&sslrootcert=",
                "sslrootcert is empty",
            ),
            ("postgres://u@h/db?nonsense=1", "nonsense"),
        ] {
            let e = parse_url(url).err().expect(url).to_string();
            assert!(e.contains(expected), "{url}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn sslmode_and_sslrootcert_read_as_libpq_does() {
        let mode = |url: &str| parse_url(url).map(|s| s.ssl_mode).map_err(|e| e.to_string());
        assert_eq!(mode("postgres://u@h/db"), Ok(SslMode::Prefer), "libpq's default");
        assert_eq!(mode("postgres://u@h/db?sslmode=allow"), Ok(SslMode::Prefer));
        assert_eq!(mode("postgres://u@h/db?sslmode=disable"), Ok(SslMode::Disable));
        assert_eq!(mode("postgres://u@h/db?sslmode=require"), Ok(SslMode::Require));
        assert_eq!(mode("postgres://u@h/db?sslmode=verify-ca"), Ok(SslMode::VerifyCa));
        assert_eq!(
            mode("postgres://u@h/db?sslmode=verify-full"),
            Ok(SslMode::VerifyFull)
        );
        assert_eq!(
            mode("postgres://u@h/db?sslrootcert=system"),
            Ok(SslMode::VerifyFull)
        );
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let e = mode(&format!(
            "postgres://u:secret@h/db?sslmode=verify-full&sslrootcert={}",
            not_pem.display()
        ))
        .unwrap_err();
        assert!(
            e.contains("sslrootcert") && e.contains("no PEM certificate"),
            "{e}"
        );
        assert!(!e.contains("secret"), "{e}");
        let s = parse_url("postgres://u@h/db?sslmode=disable").unwrap();
        assert_eq!(s.config.get_ssl_mode(), tokio_postgres::config::SslMode::Disable);
        let s = parse_url("postgres://u@h/db?sslmode=verify-full").unwrap();
        assert_eq!(s.config.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
    }
}
