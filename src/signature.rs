//! Standard Webhooks signatures: HMAC-SHA256 over `{id}.{timestamp}.{body}`
//! with the base64-decoded secret after `whsec_`, sent as `v1,<base64>`;
//! several space-separated signatures allow key rotation.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// A `whsec_…` secret, decoded.
#[derive(Clone)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

impl WebhookSecret {
    /// Parses `whsec_<base64>`; the prefix is optional.
    pub fn parse(text: &str) -> Result<Self, String> {
        let encoded = text.trim().strip_prefix("whsec_").unwrap_or(text.trim());
        let key = BASE64
            .decode(encoded)
            .map_err(|_| "a Standard Webhooks secret is `whsec_` followed by base64".to_owned())?;
        if key.is_empty() {
            return Err("the Standard Webhooks secret is empty".to_owned());
        }
        Ok(Self { key })
    }

    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
        #[cfg(test)]
        tests::count_mac();
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` header value: `v1,<base64>`.
    pub fn sign(&self, id: &str, timestamp: &str, body: &[u8]) -> String {
        format!("v1,{}", BASE64.encode(self.expected(id, timestamp, body)))
    }

    /// The MAC a `v1` signature of this message must carry: computed once
    /// per message, whatever the number of candidates.
    pub fn expected(&self, id: &str, timestamp: &str, body: &[u8]) -> Mac256 {
        self.mac(id, timestamp, body).finalize().into_bytes().into()
    }

    /// Whether any `v1,` signature in a space-separated list matches, compared
    /// in constant time. A list over [`SignatureList`]'s caps never matches.
    pub fn verify(&self, id: &str, timestamp: &str, body: &[u8], signatures: &str) -> bool {
        match SignatureList::parse(signatures) {
            Ok(list) if !list.is_empty() => list.matches(&self.expected(id, timestamp, body)),
            _ => false,
        }
    }
}

/// An HMAC-SHA256 value.
pub type Mac256 = [u8; 32];

/// Most entries in a `webhook-signature` list: key rotation needs two or
/// three; more is an attempt to make the check expensive.
pub const MAX_SIGNATURES: usize = 16;
/// Longest `webhook-signature` header accepted, in bytes: 16 entries of a
/// long scheme (`v1a,` and an 88-character base64 Ed25519 signature) fit.
pub const MAX_SIGNATURE_HEADER_BYTES: usize = 2048;
/// Longest body HMAC header accepted, in bytes (`sha256=` and 64 hex
/// digits is 71).
pub const MAX_HMAC_HEADER_BYTES: usize = 256;

/// Why a signature header cannot be checked at all; never quotes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureHeaderError {
    #[error("webhook-signature is longer than {MAX_SIGNATURE_HEADER_BYTES} bytes (the limit)")]
    TooLong,
    #[error("webhook-signature has more than {MAX_SIGNATURES} signatures (the limit)")]
    TooMany,
}

/// The `v1` candidates of a `webhook-signature` header, decoded once.
/// Entries of other versions, and `v1` entries that are not base64 of a
/// 32-byte MAC, can never match and are dropped here (their length is not
/// a secret).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignatureList {
    candidates: Vec<Mac256>,
}

impl SignatureList {
    /// Parses a header value within the caps: at most
    /// [`MAX_SIGNATURE_HEADER_BYTES`] bytes and [`MAX_SIGNATURES`] entries
    /// (of any version).
    pub fn parse(header: &str) -> Result<Self, SignatureHeaderError> {
        if header.len() > MAX_SIGNATURE_HEADER_BYTES {
            return Err(SignatureHeaderError::TooLong);
        }
        let mut entries = 0;
        let mut candidates = Vec::new();
        for entry in header.split_whitespace() {
            entries += 1;
            if entries > MAX_SIGNATURES {
                return Err(SignatureHeaderError::TooMany);
            }
            let Some(encoded) = entry.strip_prefix("v1,") else {
                continue;
            };
            if let Some(mac) = BASE64.decode(encoded).ok().and_then(|d| Mac256::try_from(d).ok()) {
                candidates.push(mac);
            }
        }
        Ok(Self { candidates })
    }

    /// No `v1` candidate that could match.
    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    /// Whether any candidate equals `expected`. Every candidate is compared
    /// in constant time, without stopping at a match.
    pub fn matches(&self, expected: &Mac256) -> bool {
        let mut found = subtle::Choice::from(0);
        for candidate in &self.candidates {
            found |= candidate.ct_eq(expected);
        }
        found.into()
    }
}

/// Why a body HMAC header cannot be checked at all; never quotes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HmacHeaderError {
    #[error("the body HMAC header is longer than {MAX_HMAC_HEADER_BYTES} bytes (the limit)")]
    TooLong,
    #[error("the body HMAC header is not a SHA-256 HMAC in hex or base64")]
    NotAMac,
}

/// The MAC in a body HMAC header: hex or base64, an optional `sha256=`
/// prefix, at most [`MAX_HMAC_HEADER_BYTES`] bytes.
pub fn parse_plain_hmac(given: &str) -> Result<Mac256, HmacHeaderError> {
    if given.len() > MAX_HMAC_HEADER_BYTES {
        return Err(HmacHeaderError::TooLong);
    }
    let given = given.trim();
    let given = given.strip_prefix("sha256=").unwrap_or(given);
    let decoded = hex::decode(given)
        .ok()
        .filter(|d| d.len() == 32)
        .or_else(|| BASE64.decode(given).ok());
    decoded
        .and_then(|d| Mac256::try_from(d).ok())
        .ok_or(HmacHeaderError::NotAMac)
}

/// HMAC-SHA256 of `body` with a plain shared secret.
pub fn plain_hmac(secret: &[u8], body: &[u8]) -> Mac256 {
    #[cfg(test)]
    tests::count_mac();
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA256 of `body` with a plain shared secret (the `--webhook-hmac-*`
/// check), accepting hex or base64 with an optional `sha256=` prefix;
/// compared in constant time.
pub fn verify_plain_hmac(secret: &[u8], body: &[u8], given: &str) -> bool {
    match parse_plain_hmac(given) {
        Ok(given) => bool::from(plain_hmac(secret, body).ct_eq(&given)),
        Err(_) => false,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::Cell;

    use super::*;

    thread_local! {
        /// MACs computed on this thread over a body (test hook: the cost of
        /// a check is counted in MACs, not timed).
        static MACS: Cell<u64> = const { Cell::new(0) };
    }

    pub(crate) fn count_mac() {
        MACS.with(|n| n.set(n.get() + 1));
    }

    /// MACs computed on this thread while `f` ran.
    pub(crate) fn macs_during<R>(f: impl FnOnce() -> R) -> (R, u64) {
        let before = MACS.with(Cell::get);
        let result = f();
        (result, MACS.with(Cell::get) - before)
    }

    #[derive(serde::Deserialize)]
    struct Vector {
        secret: String,
        webhook_id: String,
        webhook_timestamp: String,
        body: String,
        webhook_signature: String,
    }

    fn vector() -> Vector {
        let text = include_str!("../tests/fixtures/standard-webhooks-vector.json");
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn known_answer_vector() {
        let v = vector();
        let secret = WebhookSecret::parse(&v.secret).unwrap();
        assert_eq!(
            secret.sign(&v.webhook_id, &v.webhook_timestamp, v.body.as_bytes()),
            v.webhook_signature
        );
        assert!(secret.verify(
            &v.webhook_id,
            &v.webhook_timestamp,
            v.body.as_bytes(),
            &v.webhook_signature
        ));
    }

    #[test]
    fn rotation_lists_and_tampering() {
        let v = vector();
        let secret = WebhookSecret::parse(&v.secret).unwrap();
        let list = format!("v1,bm90IGl0 {} v2,whatever", v.webhook_signature);
        assert!(secret.verify(&v.webhook_id, &v.webhook_timestamp, v.body.as_bytes(), &list));
        assert!(!secret.verify(
            &v.webhook_id,
            "1649367554",
            v.body.as_bytes(),
            &v.webhook_signature
        ));
        assert!(!secret.verify(&v.webhook_id, &v.webhook_timestamp, b"{}", &v.webhook_signature));
        assert!(!secret.verify(&v.webhook_id, &v.webhook_timestamp, v.body.as_bytes(), ""));
        assert!(WebhookSecret::parse("whsec_!!").is_err());
    }

    #[test]
    fn plain_hmac_in_hex_or_base64() {
        let mut mac = HmacSha256::new_from_slice(b"s3cret").unwrap();
        mac.update(b"body");
        let raw = mac.finalize().into_bytes();
        assert!(verify_plain_hmac(b"s3cret", b"body", &hex::encode(raw)));
        assert!(verify_plain_hmac(
            b"s3cret",
            b"body",
            &format!("sha256={}", hex::encode(raw))
        ));
        assert!(verify_plain_hmac(b"s3cret", b"body", &BASE64.encode(raw)));
        assert!(!verify_plain_hmac(b"other", b"body", &hex::encode(raw)));
        assert!(!verify_plain_hmac(b"s3cret", b"body", "nonsense"));
    }

    #[test]
    fn verify_computes_one_mac_whatever_the_list() {
        let v = vector();
        let secret = WebhookSecret::parse(&v.secret).unwrap();
        let mut list = vec!["v1,"; MAX_SIGNATURES - 1].join(" ");
        list.push(' ');
        list.push_str(&v.webhook_signature);
        let (ok, macs) =
            macs_during(|| secret.verify(&v.webhook_id, &v.webhook_timestamp, v.body.as_bytes(), &list));
        assert!(ok);
        assert_eq!(macs, 1);
        // Over the caps: refused without a MAC, even with the right entry.
        let many = format!(
            "{} {}",
            vec!["v1,"; MAX_SIGNATURES].join(" "),
            v.webhook_signature
        );
        let (ok, macs) =
            macs_during(|| secret.verify(&v.webhook_id, &v.webhook_timestamp, v.body.as_bytes(), &many));
        assert!(!ok);
        assert_eq!(macs, 0);
        assert_eq!(SignatureList::parse(&many), Err(SignatureHeaderError::TooMany));
        let long = format!(
            "{}{}",
            " ".repeat(MAX_SIGNATURE_HEADER_BYTES),
            v.webhook_signature
        );
        assert_eq!(SignatureList::parse(&long), Err(SignatureHeaderError::TooLong));
        // Nothing that could match: no MAC either.
        let (ok, macs) = macs_during(|| {
            secret.verify(
                &v.webhook_id,
                &v.webhook_timestamp,
                v.body.as_bytes(),
                "v1,!! v2,abc",
            )
        });
        assert!(!ok);
        assert_eq!(macs, 0);
    }

    #[test]
    fn plain_hmac_headers_are_bounded() {
        let raw = plain_hmac(b"s3cret", b"body");
        assert_eq!(parse_plain_hmac(&format!("sha256={}", hex::encode(raw))), Ok(raw));
        assert_eq!(parse_plain_hmac(&format!(" {} ", BASE64.encode(raw))), Ok(raw));
        assert_eq!(parse_plain_hmac("abcd"), Err(HmacHeaderError::NotAMac));
        assert_eq!(
            parse_plain_hmac(&"0".repeat(MAX_HMAC_HEADER_BYTES + 1)),
            Err(HmacHeaderError::TooLong)
        );
    }
}
