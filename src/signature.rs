//! Standard Webhooks signatures: HMAC-SHA256 over `{id}.{timestamp}.{body}`
//! with the base64-decoded secret after `whsec_`, sent as `v1,<base64>`;
//! several space-separated signatures allow key rotation.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

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
        format!(
            "v1,{}",
            BASE64.encode(self.mac(id, timestamp, body).finalize().into_bytes())
        )
    }

    /// Whether any `v1,` signature in a space-separated list matches, compared
    /// in constant time.
    pub fn verify(&self, id: &str, timestamp: &str, body: &[u8], signatures: &str) -> bool {
        signatures.split_whitespace().any(|candidate| {
            let Some(encoded) = candidate.strip_prefix("v1,") else {
                return false;
            };
            let Ok(given) = BASE64.decode(encoded) else {
                return false;
            };
            self.mac(id, timestamp, body).verify_slice(&given).is_ok()
        })
    }
}

/// HMAC-SHA256 of `body` with a plain shared secret (the `--webhook-hmac-*`
/// check), accepting hex or base64 with an optional `sha256=` prefix.
pub fn verify_plain_hmac(secret: &[u8], body: &[u8], given: &str) -> bool {
    let given = given.trim();
    let given = given.strip_prefix("sha256=").unwrap_or(given);
    let decoded = hex::decode(given)
        .ok()
        .filter(|d| d.len() == 32)
        .or_else(|| BASE64.decode(given).ok());
    let Some(decoded) = decoded else { return false };
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    mac.verify_slice(&decoded).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
