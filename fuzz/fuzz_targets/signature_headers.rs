//! Any bytes as a request's signature headers and body (split at NUL
//! bytes: `webhook-id`, `webhook-timestamp`, `webhook-signature`, the body
//! HMAC header, `X-Webhook-Token`, then the body; the first byte picks the
//! configured checks): the token, body HMAC and Standard Webhooks checks
//! never panic, stay within their caps, never quote what was sent, and
//! every pass is explained by the right signature. See
//! `leadscore_fuzz::signature_headers`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| leadscore_fuzz::signature_headers(data));
