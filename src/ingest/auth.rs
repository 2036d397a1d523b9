//! Inbound authentication (SPEC 4.2). Each configured check is one way a
//! sender may prove itself; a request passes when any one passes. Secrets
//! are compared in constant time and never logged.
//!
//! The work is bounded and split in two so that the HTTP layer can keep it
//! off its async workers:
//!
//! 1. [`InboundAuth::check_head`] looks only at the headers and the query:
//!    tokens, the size and shape of the signature headers, the timestamp.
//!    It is cheap (no MAC), and it often settles the request: a right token
//!    passes it, and a request no configured check could pass whatever its
//!    body is refused before the body is read.
//! 2. Otherwise it returns a [`BodyCheck`], owned and `Send`, that computes
//!    at most one MAC of the body per configured check (two at most), and
//!    compares every candidate signature against it. For a body larger than
//!    [`INLINE_BODY_BYTES`] the caller runs it on a blocking thread
//!    ([`BodyCheck::should_run_blocking`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::signature::{HmacHeaderError, Mac256, SignatureList, WebhookSecret, parse_plain_hmac, plain_hmac};
pub use crate::signature::{MAX_HMAC_HEADER_BYTES, MAX_SIGNATURE_HEADER_BYTES, MAX_SIGNATURES};

/// Standard Webhooks' timestamp tolerance.
pub const TIMESTAMP_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Largest body whose MACs are computed where the request is handled: about
/// a tenth of a millisecond of HMAC-SHA256. A larger body's check belongs
/// on a blocking thread (up to `--max-body`, 1 MiB by default: a few
/// milliseconds per MAC).
pub const INLINE_BODY_BYTES: usize = 64 * 1024;

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

/// What the headers and query alone decide (see the module docs).
#[derive(Debug)]
pub enum HeadCheck {
    /// Authenticated (a token matched, or no check is configured): the
    /// body needs no check.
    Passed,
    /// No configured check can pass, whatever the body: answer `401`
    /// without reading it.
    Refused(AuthFailure),
    /// A body signature may pass: read the body, then run the check (on a
    /// blocking thread when [`BodyCheck::should_run_blocking`] says so).
    NeedsBody(BodyCheck),
}

/// The body part of the authentication of one request: at most one MAC
/// per configured body check. Owns what it needs, so it can be moved to a
/// blocking thread.
pub struct BodyCheck {
    /// The body HMAC check: its secret and the MAC the header carries.
    hmac: Option<(Vec<u8>, Mac256)>,
    /// The Standard Webhooks check: the secret, `webhook-id`,
    /// `webhook-timestamp` and the `v1` candidates.
    standard: Option<StandardCheck>,
    /// Why the checks already decided from the head failed, with their
    /// place in the check order (token, body HMAC, Standard Webhooks).
    head_failures: Vec<(Check, String)>,
}

struct StandardCheck {
    secret: WebhookSecret,
    id: String,
    timestamp: String,
    signatures: SignatureList,
}

impl std::fmt::Debug for BodyCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyCheck")
            .field("hmac", &self.hmac.is_some())
            .field("standard_webhooks", &self.standard.is_some())
            .finish()
    }
}

impl BodyCheck {
    /// Whether the caller should run [`BodyCheck::verify`] on a blocking
    /// thread (`tokio::task::spawn_blocking`) rather than on an async
    /// worker: the body is over [`INLINE_BODY_BYTES`].
    pub fn should_run_blocking(&self, body_len: usize) -> bool {
        body_len > INLINE_BODY_BYTES
    }

    /// Checks the body: passes when any remaining check passes. At most one
    /// MAC of the body per check, however many signatures the request
    /// carries.
    pub fn verify(&self, body: &[u8]) -> Result<(), AuthFailure> {
        let mut tried = self.head_failures.clone();
        if let Some((secret, given)) = &self.hmac {
            if bool::from(plain_hmac(secret, body).ct_eq(given)) {
                return Ok(());
            }
            tried.push((Check::BodyHmac, "body HMAC does not match".to_owned()));
        }
        if let Some(check) = &self.standard {
            let expected = check.secret.expected(&check.id, &check.timestamp, body);
            if check.signatures.matches(&expected) {
                return Ok(());
            }
            tried.push((
                Check::StandardWebhooks,
                "webhook-signature does not match".to_owned(),
            ));
        }
        Err(failure(tried))
    }
}

/// The configured checks, in the order a refusal lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Check {
    Token,
    BodyHmac,
    StandardWebhooks,
}

fn failure(mut tried: Vec<(Check, String)>) -> AuthFailure {
    tried.sort_by_key(|(check, _)| *check);
    let reasons: Vec<String> = tried.into_iter().map(|(_, reason)| reason).collect();
    AuthFailure(format!("authentication failed: {}", reasons.join("; ")))
}

impl InboundAuth {
    /// No check configured: ingest is open (a warning is logged at start).
    pub fn is_open(&self) -> bool {
        self.token.is_none() && self.hmac.is_none() && self.standard_webhooks.is_none()
    }

    /// The checks that need no body (see the module docs). Cheap: no MAC,
    /// and every header it reads is bounded.
    pub fn check_head(&self, headers: &HeaderMap, query: Option<&str>, now: SystemTime) -> HeadCheck {
        if self.is_open() {
            return HeadCheck::Passed;
        }
        let mut tried = Vec::new();
        if let Some(expected) = &self.token {
            match check_token(expected, headers, query) {
                Ok(()) => return HeadCheck::Passed,
                Err(reason) => tried.push((Check::Token, reason)),
            }
        }
        let mut hmac = None;
        if let Some((header, secret)) = &self.hmac {
            match headers.get(header).map(|v| v.to_str()) {
                None => tried.push((Check::BodyHmac, "no body HMAC header".to_owned())),
                Some(Err(_)) => tried.push((Check::BodyHmac, HmacHeaderError::NotAMac.to_string())),
                Some(Ok(value)) => match parse_plain_hmac(value) {
                    Ok(given) => hmac = Some((secret.clone(), given)),
                    Err(e) => tried.push((Check::BodyHmac, e.to_string())),
                },
            }
        }
        let mut standard = None;
        if let Some(secret) = &self.standard_webhooks {
            match standard_head(secret, headers, now) {
                Ok(check) => standard = Some(check),
                Err(reason) => tried.push((Check::StandardWebhooks, reason)),
            }
        }
        if hmac.is_none() && standard.is_none() {
            return HeadCheck::Refused(failure(tried));
        }
        HeadCheck::NeedsBody(BodyCheck {
            hmac,
            standard,
            head_failures: tried,
        })
    }

    /// The whole check on the calling thread: [`InboundAuth::check_head`],
    /// then the body. For callers that hold a small body (or are on a
    /// blocking thread already); the HTTP layer uses the two steps.
    pub fn check(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), AuthFailure> {
        match self.check_head(headers, query, now) {
            HeadCheck::Passed => Ok(()),
            HeadCheck::Refused(failure) => Err(failure),
            HeadCheck::NeedsBody(check) => check.verify(body),
        }
    }
}

/// The token check: `Authorization: Bearer T`, `X-Webhook-Token: T` or
/// `?token=T`; one matching is enough.
fn check_token(expected: &str, headers: &HeaderMap, query: Option<&str>) -> Result<(), String> {
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
    // Every token given is compared (no early exit), each in constant time.
    let matched = present.iter().fold(false, |found, t| {
        secrets_equal(t.as_bytes(), expected.as_bytes()) | found
    });
    match (matched, present.is_empty()) {
        (true, _) => Ok(()),
        (false, true) => Err("no token given".to_owned()),
        (false, false) => Err("token does not match".to_owned()),
    }
}

/// The head part of the Standard Webhooks check: the three headers, the
/// timestamp within the tolerance, the signature list within its caps and
/// with at least one `v1` candidate.
fn standard_head(
    secret: &WebhookSecret,
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<StandardCheck, String> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(timestamp), Some(signature)) = (
        get("webhook-id"),
        get("webhook-timestamp"),
        get("webhook-signature"),
    ) else {
        return Err("no Standard Webhooks headers".to_owned());
    };
    let sent: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| "webhook-timestamp is not a number".to_owned())?;
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    if now.abs_diff(sent) > TIMESTAMP_TOLERANCE.as_secs() {
        return Err("webhook-timestamp is outside the 5-minute tolerance".to_owned());
    }
    let signatures = SignatureList::parse(signature).map_err(|e| e.to_string())?;
    if signatures.is_empty() {
        // Nothing that could match: no need to read the body.
        return Err("webhook-signature does not match".to_owned());
    }
    Ok(StandardCheck {
        secret: secret.clone(),
        id: id.to_owned(),
        timestamp: timestamp.trim().to_owned(),
        signatures,
    })
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use hmac::{Hmac, Mac};

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

    use crate::signature::tests::macs_during;

    const VECTOR_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const VECTOR_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const VECTOR_TIMESTAMP: &str = "1649367553";
    const VECTOR_SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";
    const VECTOR_BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;

    fn vector_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_649_367_553)
    }

    fn standard_auth() -> InboundAuth {
        InboundAuth {
            standard_webhooks: Some(WebhookSecret::parse(VECTOR_SECRET).unwrap()),
            ..Default::default()
        }
    }

    fn standard_headers(signature: &str) -> HeaderMap {
        headers(&[
            ("webhook-id", VECTOR_ID),
            ("webhook-timestamp", VECTOR_TIMESTAMP),
            ("webhook-signature", signature),
        ])
    }

    /// Entries that are not the right signature: empty, not base64, the
    /// wrong length, the right length but the wrong MAC, another version.
    fn garbage_entries(n: usize) -> Vec<String> {
        let wrong_mac = format!("v1,{}", BASE64.encode([7u8; 32]));
        let kinds = [
            "v1,".to_owned(),
            "v1,!!".to_owned(),
            "v1,AAAA".to_owned(),
            wrong_mac,
            "v2,xyz".to_owned(),
        ];
        (0..n).map(|i| kinds[i % kinds.len()].clone()).collect()
    }

    #[test]
    fn a_signature_list_costs_one_mac_however_many_entries_it_has() {
        let auth = standard_auth();
        let mut entries = garbage_entries(MAX_SIGNATURES - 1);
        entries.push(VECTOR_SIGNATURE.to_owned());
        let h = standard_headers(&entries.join(" "));
        let (result, macs) = macs_during(|| auth.check(&h, None, VECTOR_BODY, vector_time()));
        assert_eq!(result, Ok(()));
        assert_eq!(macs, 1, "one MAC of the body, every entry compared against it");

        // Only wrong entries: still one MAC, and refused.
        let h = standard_headers(&garbage_entries(MAX_SIGNATURES).join(" "));
        let (result, macs) = macs_during(|| auth.check(&h, None, VECTOR_BODY, vector_time()));
        let failure = result.unwrap_err();
        assert!(
            failure.0.contains("webhook-signature does not match"),
            "{failure}"
        );
        assert!(macs <= 1, "{macs} MACs");
    }

    #[test]
    fn a_signature_list_over_the_caps_is_refused_without_any_mac() {
        let auth = standard_auth();
        // 15,000 empty entries (the reported attack), the right one last.
        let mut entries = vec!["v1,".to_owned(); 15_000];
        entries.push(VECTOR_SIGNATURE.to_owned());
        let h = standard_headers(&entries.join(" "));
        let (result, macs) = macs_during(|| auth.check(&h, None, VECTOR_BODY, vector_time()));
        let failure = result.unwrap_err();
        assert_eq!(macs, 0, "refused from the header alone");
        assert!(
            failure
                .0
                .contains(&format!("longer than {MAX_SIGNATURE_HEADER_BYTES} bytes")),
            "{failure}"
        );

        // Short entries, more of them than the cap, within the size cap.
        let mut entries = garbage_entries(MAX_SIGNATURES);
        entries.push(VECTOR_SIGNATURE.to_owned());
        let h = standard_headers(&entries.join(" "));
        assert!(entries.join(" ").len() <= MAX_SIGNATURE_HEADER_BYTES);
        let (result, macs) = macs_during(|| auth.check(&h, None, VECTOR_BODY, vector_time()));
        let failure = result.unwrap_err();
        assert_eq!(macs, 0);
        assert!(
            failure
                .0
                .contains(&format!("more than {MAX_SIGNATURES} signatures")),
            "{failure}"
        );
        assert!(
            !failure.0.contains(VECTOR_SIGNATURE),
            "no signature echoed: {failure}"
        );
    }

    #[test]
    fn the_body_hmac_header_costs_one_mac_and_is_bounded() {
        let secret = b"s3cret".to_vec();
        let auth = InboundAuth {
            hmac: Some((http::HeaderName::from_static("x-signature"), secret.clone())),
            ..Default::default()
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(&secret).unwrap();
        mac.update(b"body");
        let right = hex::encode(mac.finalize().into_bytes());
        let now = SystemTime::now();
        let h = headers(&[("x-signature", &format!("sha256={right}"))]);
        let (result, macs) = macs_during(|| auth.check(&h, None, b"body", now));
        assert_eq!(result, Ok(()));
        assert_eq!(macs, 1);

        // Not a SHA-256 MAC in hex or base64: refused without computing one.
        for given in ["nonsense", "sha256=abcd", &"a".repeat(64 * 1024)] {
            let h = headers(&[("x-signature", given)]);
            let (result, macs) = macs_during(|| auth.check(&h, None, b"body", now));
            let failure = result.unwrap_err();
            assert_eq!(macs, 0, "{failure}");
            assert!(failure.0.contains("body HMAC"), "{failure}");
        }
        let h = headers(&[("x-signature", &"a".repeat(MAX_HMAC_HEADER_BYTES + 1))]);
        let failure = auth.check(&h, None, b"body", now).unwrap_err();
        assert!(
            failure
                .0
                .contains(&format!("longer than {MAX_HMAC_HEADER_BYTES} bytes")),
            "{failure}"
        );
    }

    #[test]
    fn every_configured_check_costs_at_most_one_mac() {
        let auth = InboundAuth {
            token: Some("t0k".into()),
            hmac: Some((http::HeaderName::from_static("x-signature"), b"s3cret".to_vec())),
            standard_webhooks: Some(WebhookSecret::parse(VECTOR_SECRET).unwrap()),
        };
        let mut h = standard_headers(&garbage_entries(MAX_SIGNATURES).join(" "));
        h.insert("x-signature", BASE64.encode([1u8; 32]).parse().unwrap());
        let (result, macs) = macs_during(|| auth.check(&h, None, VECTOR_BODY, vector_time()));
        assert!(result.is_err());
        assert_eq!(macs, 2, "one per body check");
        // A right token settles it before any MAC.
        h.insert("x-webhook-token", "t0k".parse().unwrap());
        let (result, macs) = macs_during(|| auth.check(&h, None, VECTOR_BODY, vector_time()));
        assert_eq!(result, Ok(()));
        assert_eq!(macs, 0);
    }
}
