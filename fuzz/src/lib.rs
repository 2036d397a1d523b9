//! The checks behind the fuzz targets, as plain functions: libFuzzer calls
//! them from `fuzz_targets/`, and `cargo test` (tests/seeds.rs) runs them
//! over the seeds and their mutations on stable Rust, without libFuzzer.

use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use leadscore::ingest::auth::{
    HeadCheck, InboundAuth, MAX_HMAC_HEADER_BYTES, MAX_SIGNATURE_HEADER_BYTES, MAX_SIGNATURES,
};
use leadscore::signature::{WebhookSecret, verify_plain_hmac};

/// The Standard Webhooks secret of the specification's known-answer vector
/// (the seeds carry its signed message).
pub const STANDARD_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
/// The body HMAC check's secret and header.
pub const HMAC_SECRET: &[u8] = b"fuzz-hmac-secret";
pub const HMAC_HEADER: &str = "x-signature";
/// The time the checks run at: the vector's timestamp.
pub const NOW: u64 = 1_649_367_553;

/// Splits fuzz input into the request's parts: `webhook-id`,
/// `webhook-timestamp`, `webhook-signature`, the body HMAC header, a token
/// header, and the body, separated by NUL bytes (the body is the rest).
/// The first byte chooses which checks are configured.
fn parts(data: &[u8]) -> (u8, Vec<&[u8]>, &[u8]) {
    let (&mode, mut rest) = data.split_first().unwrap_or((&0b111, &[]));
    let mut fields = Vec::with_capacity(5);
    for _ in 0..5 {
        match rest.iter().position(|&b| b == 0) {
            Some(end) => {
                fields.push(&rest[..end]);
                rest = &rest[end + 1..];
            }
            None => {
                fields.push(rest);
                rest = &[];
            }
        }
    }
    (mode, fields, rest)
}

/// Any bytes as a request's signature headers and body, against the token,
/// body HMAC and Standard Webhooks checks: no panic, a refusal never
/// quotes what was sent, the caps hold, and a pass is explained by an
/// independent computation of the right signature.
pub fn signature_headers(data: &[u8]) {
    let (mode, fields, body) = parts(data);
    let secret = WebhookSecret::parse(STANDARD_SECRET).expect("the vector's secret");
    let auth = InboundAuth {
        token: (mode & 1 != 0).then(|| "fuzz-token".to_owned()),
        hmac: (mode & 2 != 0).then(|| (HeaderName::from_static(HMAC_HEADER), HMAC_SECRET.to_vec())),
        standard_webhooks: (mode & 4 != 0).then(|| secret.clone()),
    };
    let names = [
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        HMAC_HEADER,
        "x-webhook-token",
    ];
    let mut headers = HeaderMap::new();
    for (name, value) in names.iter().zip(&fields) {
        // Bytes a header cannot carry never reach the application.
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.insert(*name, value);
        }
    }
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = UNIX_EPOCH + Duration::from_secs(NOW);

    let whole = auth.check(&headers, None, body, now);
    let two_steps = match auth.check_head(&headers, None, now) {
        HeadCheck::Passed => Ok(()),
        HeadCheck::Refused(failure) => Err(failure),
        HeadCheck::NeedsBody(check) => {
            let _ = check.should_run_blocking(body.len());
            check.verify(body)
        }
    };
    assert_eq!(whole, two_steps, "check() and its two steps agree");

    match whole {
        Err(failure) => {
            // Nothing sent is ever quoted: every reason of the refusal is
            // one of the fixed ones. (Looking for the sent values in the
            // text gave false alarms: a token `authentication fail` is a
            // piece of the fixed wording, found by libFuzzer in 1 s.)
            let reasons = failure
                .0
                .strip_prefix("authentication failed: ")
                .unwrap_or_else(|| panic!("{failure}"));
            let fixed = fixed_reasons();
            for reason in reasons.split("; ") {
                assert!(
                    fixed.iter().any(|f| f == reason),
                    "a refusal reason that is not a fixed one (it may quote a header): {reason:?} in {failure}"
                );
            }
        }
        Ok(()) => {
            // Some configured check must explain the pass, computed here
            // from the library's signing side.
            let token =
                auth.token.is_some() && text("x-webhook-token").is_some_and(|t| t.trim() == "fuzz-token");
            let hmac = auth.hmac.is_some()
                && text(HMAC_HEADER).is_some_and(|given| {
                    given.len() <= MAX_HMAC_HEADER_BYTES && verify_plain_hmac(HMAC_SECRET, body, given)
                });
            let standard = auth.standard_webhooks.is_some()
                && match (
                    text("webhook-id"),
                    text("webhook-timestamp"),
                    text("webhook-signature"),
                ) {
                    (Some(id), Some(ts), Some(list)) => {
                        let right = secret.sign(id, ts.trim(), body);
                        // Explains the pass only with a fresh timestamp: a
                        // stale one left alone makes the assert below fail.
                        let fresh = ts
                            .trim()
                            .parse::<i64>()
                            .is_ok_and(|sent| (NOW as i64).abs_diff(sent) <= 300);
                        fresh
                            && list.len() <= MAX_SIGNATURE_HEADER_BYTES
                            && list.split_whitespace().count() <= MAX_SIGNATURES
                            && list.split_whitespace().any(|entry| entry == right)
                    }
                    _ => false,
                };
            // With no check configured ingest is open (SPEC 4.2): every request passes.
            assert!(
                auth.is_open() || token || hmac || standard,
                "a pass no check explains: {mode:#b} {headers:?}"
            );
        }
    }
}

/// Every reason a refusal may give (`src/ingest/auth.rs`, `src/signature.rs`).
fn fixed_reasons() -> Vec<String> {
    use leadscore::signature::{HmacHeaderError, SignatureHeaderError};
    let mut reasons: Vec<String> = [
        "body HMAC does not match",
        "webhook-signature does not match",
        "no body HMAC header",
        "no token given",
        "token does not match",
        "no Standard Webhooks headers",
        "webhook-timestamp is not a number",
        "webhook-timestamp is outside the 5-minute tolerance",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    reasons.extend(
        [SignatureHeaderError::TooLong, SignatureHeaderError::TooMany]
            .iter()
            .map(ToString::to_string),
    );
    reasons.extend(
        [HmacHeaderError::TooLong, HmacHeaderError::NotAMac]
            .iter()
            .map(ToString::to_string),
    );
    reasons
}
