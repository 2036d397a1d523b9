//! Inbound authentication (SPEC 4.2). Each configured check is one way a
//! sender may prove itself; a request passes when any one passes. Secrets
//! are compared in constant time and never logged.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::signature::{WebhookSecret, verify_plain_hmac};

/// Standard Webhooks' timestamp tolerance.
pub const TIMESTAMP_TOLERANCE: Duration = Duration::from_secs(5 * 60);

#[derive(Clone, Default)]
pub struct InboundAuth {
    pub token: Option<String>,
    /// Header name (lower-case) and secret of the plain body HMAC check.
    pub hmac: Option<(http::HeaderName, Vec<u8>)>,
    pub standard_webhooks: Option<WebhookSecret>,
}

impl std::fmt::Debug for InboundAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundAuth")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("hmac_header", &self.hmac.as_ref().map(|(h, _)| h))
            .field("standard_webhooks", &self.standard_webhooks.is_some())
            .finish()
    }
}

/// Why a request was refused; never includes a secret or a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthFailure(pub String);

/// Compares two secrets in constant time (also hiding their lengths).
pub fn secrets_equal(given: &[u8], expected: &[u8]) -> bool {
    Sha256::digest(given).ct_eq(&Sha256::digest(expected)).into()
}

/// The token of an `Authorization: Bearer T` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// What the headers and query alone decide, before the body is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeforeBody {
    /// A valid token: accepted whatever the body.
    Passed,
    /// Only the token check is configured and it failed: refuse without
    /// reading the body (issue 19 #4: an unauthenticated sender cannot make
    /// the server read and hold a large body).
    Refused(AuthFailure),
    /// A body check (HMAC, Standard Webhooks) may still pass.
    NeedsBody,
}

impl InboundAuth {
    /// What can be decided before the body is read.
    pub fn check_before_body(&self, headers: &HeaderMap, query: Option<&str>) -> BeforeBody {
        if self.is_open() {
            return BeforeBody::Passed;
        }
        match self.check_token(headers, query) {
            Some(Ok(())) => BeforeBody::Passed,
            Some(Err(reason)) if self.hmac.is_none() && self.standard_webhooks.is_none() => {
                BeforeBody::Refused(AuthFailure(format!("authentication failed: {reason}")))
            }
            _ => BeforeBody::NeedsBody,
        }
    }

    /// The shared-token check (`None` when no token is configured).
    fn check_token(&self, headers: &HeaderMap, query: Option<&str>) -> Option<Result<(), &'static str>> {
        let expected = self.token.as_ref()?;
        let header_token = headers
            .get("x-webhook-token")
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        let query_token = query.and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.into_owned())
        });
        let candidates = [
            bearer(headers).map(str::to_owned),
            header_token.map(str::to_owned),
            query_token,
        ];
        let present: Vec<String> = candidates.into_iter().flatten().collect();
        if present
            .iter()
            .any(|t| secrets_equal(t.as_bytes(), expected.as_bytes()))
        {
            return Some(Ok(()));
        }
        Some(Err(if present.is_empty() {
            "no token given"
        } else {
            "token does not match"
        }))
    }

    /// No check configured: ingest is open (a warning is logged at start).
    pub fn is_open(&self) -> bool {
        self.token.is_none() && self.hmac.is_none() && self.standard_webhooks.is_none()
    }

    pub fn check(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), AuthFailure> {
        if self.is_open() {
            return Ok(());
        }
        let mut tried = Vec::new();
        match self.check_token(headers, query) {
            Some(Ok(())) => return Ok(()),
            Some(Err(reason)) => tried.push(reason),
            None => {}
        }
        if let Some((header, secret)) = &self.hmac {
            match headers.get(header).and_then(|v| v.to_str().ok()) {
                Some(given) if verify_plain_hmac(secret, body, given) => return Ok(()),
                Some(_) => tried.push("body HMAC does not match"),
                None => tried.push("no body HMAC header"),
            }
        }
        if let Some(secret) = &self.standard_webhooks {
            match check_standard(secret, headers, body, now) {
                Ok(()) => return Ok(()),
                Err(reason) => tried.push(reason),
            }
        }
        Err(AuthFailure(format!(
            "authentication failed: {}",
            tried.join("; ")
        )))
    }
}

fn check_standard(
    secret: &WebhookSecret,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<(), &'static str> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(timestamp), Some(signature)) = (
        get("webhook-id"),
        get("webhook-timestamp"),
        get("webhook-signature"),
    ) else {
        return Err("no Standard Webhooks headers");
    };
    let sent: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| "webhook-timestamp is not a number")?;
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    if (now - sent).unsigned_abs() > TIMESTAMP_TOLERANCE.as_secs() {
        return Err("webhook-timestamp is outside the 5-minute tolerance");
    }
    if secret.verify(id, timestamp.trim(), body, signature) {
        Ok(())
    } else {
        Err("webhook-signature does not match")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn token_in_any_of_three_places() {
        let auth = InboundAuth {
            token: Some("t0k".into()),
            ..Default::default()
        };
        let now = SystemTime::now();
        assert!(
            auth.check(&headers(&[("authorization", "Bearer t0k")]), None, b"", now)
                .is_ok()
        );
        assert!(
            auth.check(&headers(&[("x-webhook-token", "t0k")]), None, b"", now)
                .is_ok()
        );
        assert!(
            auth.check(&HeaderMap::new(), Some("a=1&token=t0k"), b"", now)
                .is_ok()
        );
        let err = auth
            .check(&headers(&[("authorization", "Bearer nope")]), None, b"", now)
            .unwrap_err();
        assert!(!err.0.contains("nope") && !err.0.contains("t0k"), "{err}");
        assert!(auth.check(&HeaderMap::new(), None, b"", now).is_err());
    }

    #[test]
    fn standard_webhooks_vector_and_tolerance() {
        let secret = WebhookSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let auth = InboundAuth {
            standard_webhooks: Some(secret),
            ..Default::default()
        };
        let h = headers(&[
            ("webhook-id", "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk"),
            ("webhook-timestamp", "1649367553"),
            (
                "webhook-signature",
                "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
            ),
        ]);
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        let sent = UNIX_EPOCH + Duration::from_secs(1_649_367_553);
        assert!(
            auth.check(&h, None, body, sent + Duration::from_secs(299))
                .is_ok()
        );
        let stale = auth
            .check(&h, None, body, sent + Duration::from_secs(301))
            .unwrap_err();
        assert!(stale.0.contains("tolerance"), "{stale}");
        assert!(
            auth.check(&h, None, body, sent - Duration::from_secs(301))
                .is_err()
        );
        assert!(auth.check(&h, None, b"{}", sent).is_err());
    }
}
