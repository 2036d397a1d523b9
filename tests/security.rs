//! SPEC 4.2: each inbound authentication mode (shared token, body HMAC,
//! Standard Webhooks) accepts what it should and answers everything else
//! `401` with a JSON error; the Standard Webhooks known-answer vector and the
//! reference library (Python `standardwebhooks`) agree with our signatures;
//! the admin endpoints need the admin token while health and metrics stay
//! open; and no secret or signature ever reaches the log or an error body.

#[path = "support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use leadscore::ingest::auth::InboundAuth;
use leadscore::signature::WebhookSecret;
use serde_json::{Value, json};
use sha2::Sha256;
use support::raw::{Reply, contact_body, get, post, request};
use support::{Options, Process, TestServer as Server};

const TOKEN: &str = "tok_Zr4T9qLm2XcV8bN1";
const HMAC_HEADER: &str = "X-Leadscore-Signature";
const HMAC_SECRET: &str = "hmac-secret-7Yq2Lw9Rt";
/// A Standard Webhooks secret of our own (not the vector's).
const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ADMIN_TOKEN: &str = "adm_Pq7Wn3Ks8Hd2Jf5G";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn hmac_raw(secret: &str, body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

fn secret() -> WebhookSecret {
    WebhookSecret::parse(WEBHOOK_SECRET).expect("a valid secret")
}

/// The three Standard Webhooks headers for `body`, signed at `timestamp`.
fn standard_headers(id: &str, timestamp: u64, body: &[u8]) -> (String, String, String) {
    let ts = timestamp.to_string();
    let signature = secret().sign(id, &ts, body);
    (id.to_owned(), ts, signature)
}

async fn ingest_with(server: &Server, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    post(server.addr, path, &all, body).await
}

fn assert_accepted(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 200, "{what}: {reply:?}");
    assert_eq!(
        reply.json()["results"].as_array().map(Vec::len),
        Some(1),
        "{what}: {reply:?}"
    );
}

fn assert_refused(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 401, "{what} must be refused: {reply:?}");
    reply.assert_error(401);
}

fn unique_body() -> Vec<u8> {
    contact_body(json!(format!("c-{}", uuid::Uuid::now_v7().simple())))
}

// ------------------------------------------------------------- shared token

/// What a case is about, the request path and its headers.
type TokenCase<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_token_in_bearer_header_or_query() {
    let server = Server::start(Options {
        webhook_token: Some(TOKEN.into()),
        ..Options::plain()
    })
    .await;
    let bearer = format!("Bearer {TOKEN}");
    let path = "/webhooks/iclosed";
    let with_query = format!("{path}?token={TOKEN}");
    let valid: [TokenCase; 5] = [
        (
            "Authorization: Bearer",
            path,
            vec![("Authorization", bearer.as_str())],
        ),
        (
            "lower-case bearer scheme",
            path,
            vec![("Authorization", "bearer tok_Zr4T9qLm2XcV8bN1")],
        ),
        ("X-Webhook-Token", path, vec![("X-Webhook-Token", TOKEN)]),
        ("?token=", with_query.as_str(), vec![]),
        (
            "a wrong Bearer but the right X-Webhook-Token (any one passing is enough)",
            path,
            vec![("Authorization", "Bearer nope"), ("X-Webhook-Token", TOKEN)],
        ),
    ];
    for (what, path, headers) in &valid {
        assert_accepted(&ingest_with(&server, path, headers, &unique_body()).await, what);
    }
    let wrong_query = format!("{path}?token=nope");
    let prefix_query = format!("{path}?token={}", &TOKEN[..TOKEN.len() - 1]);
    let longer = format!("Bearer {TOKEN}x");
    let basic = format!("Basic {TOKEN}");
    let invalid: [TokenCase; 8] = [
        ("no token", path, vec![]),
        ("a wrong Bearer", path, vec![("Authorization", "Bearer nope")]),
        ("a longer token", path, vec![("Authorization", longer.as_str())]),
        (
            "the token under another scheme",
            path,
            vec![("Authorization", basic.as_str())],
        ),
        ("an empty X-Webhook-Token", path, vec![("X-Webhook-Token", "")]),
        ("a wrong X-Webhook-Token", path, vec![("X-Webhook-Token", "nope")]),
        ("a wrong ?token=", wrong_query.as_str(), vec![]),
        ("a prefix of the token in ?token=", prefix_query.as_str(), vec![]),
    ];
    for (what, path, headers) in &invalid {
        assert_refused(&ingest_with(&server, path, headers, &unique_body()).await, what);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zapier_style_token_urls_are_percent_decoded() {
    // A token with characters that must be escaped in a URL, as generated
    // secrets often have: `?token=` is form-decoded before comparing.
    let token = "a+b/c=d&e f";
    let server = Server::start(Options {
        webhook_token: Some(token.into()),
        ..Options::plain()
    })
    .await;
    let reply = ingest_with(
        &server,
        "/webhooks/iclosed?source=zapier&token=a%2Bb%2Fc%3Dd%26e%20f",
        &[],
        &unique_body(),
    )
    .await;
    assert_accepted(&reply, "a percent-encoded token in the URL");
    let reply = ingest_with(&server, "/webhooks/iclosed?token=a+b/c=d", &[], &unique_body()).await;
    assert_refused(&reply, "an unescaped token whose `+` decodes to a space");
    server.stop().await;
}

// ---------------------------------------------------------------- body HMAC

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_hmac_in_hex_or_base64_with_optional_prefix() {
    let server = Server::start(Options {
        webhook_hmac: Some(("x-leadscore-signature".into(), HMAC_SECRET.into())),
        ..Options::plain()
    })
    .await;
    for (what, encode) in [
        ("hex", (|raw: &[u8]| hex::encode(raw)) as fn(&[u8]) -> String),
        ("upper-case hex", |raw| hex::encode_upper(raw)),
        ("sha256=hex", |raw| format!("sha256={}", hex::encode(raw))),
        ("base64", |raw| BASE64.encode(raw)),
        ("sha256=base64", |raw| format!("sha256={}", BASE64.encode(raw))),
    ] {
        let body = unique_body();
        let signature = encode(&hmac_raw(HMAC_SECRET, &body));
        let reply = ingest_with(&server, "/webhooks/iclosed", &[(HMAC_HEADER, &signature)], &body).await;
        assert_accepted(&reply, what);
    }

    let body = unique_body();
    let other = unique_body();
    let of_other_body = hex::encode(hmac_raw(HMAC_SECRET, &other));
    let with_other_secret = hex::encode(hmac_raw("not-the-secret", &body));
    let truncated = hex::encode(&hmac_raw(HMAC_SECRET, &body)[..16]);
    let in_wrong_header = hex::encode(hmac_raw(HMAC_SECRET, &body));
    let cases: [(&str, Vec<(&str, &str)>); 6] = [
        ("no signature header", vec![]),
        (
            "the signature of another body",
            vec![(HMAC_HEADER, of_other_body.as_str())],
        ),
        (
            "a signature made with another secret",
            vec![(HMAC_HEADER, with_other_secret.as_str())],
        ),
        ("a truncated signature", vec![(HMAC_HEADER, truncated.as_str())]),
        ("garbage", vec![(HMAC_HEADER, "sha256=zzzz")]),
        (
            "the right signature in another header",
            vec![("X-Signature", in_wrong_header.as_str())],
        ),
    ];
    for (what, headers) in &cases {
        let reply = ingest_with(&server, "/webhooks/iclosed", headers, &body).await;
        assert_refused(&reply, what);
    }
    // Tampering: a valid signature, one byte of the body changed.
    let signature = hex::encode(hmac_raw(HMAC_SECRET, &body));
    let mut tampered = body.clone();
    let at = tampered.iter().rposition(|&b| b == b'1').unwrap_or(5);
    tampered[at] = b'2';
    let reply = ingest_with(
        &server,
        "/webhooks/iclosed",
        &[(HMAC_HEADER, &signature)],
        &tampered,
    )
    .await;
    assert_refused(&reply, "a tampered body");
    server.stop().await;
}

// ---------------------------------------------------------- Standard Webhooks

/// A `webhook-signature` list made of the old key's and the new key's signatures.
type SignatureList = fn(&str, &str) -> String;

async fn standard_server() -> Server {
    Server::start(Options {
        webhook_secret: Some(WEBHOOK_SECRET.into()),
        ..Options::plain()
    })
    .await
}

async fn post_standard(server: &Server, body: &[u8], id: &str, ts: &str, signature: &str) -> Reply {
    let headers = [
        ("webhook-id", id),
        ("webhook-timestamp", ts),
        ("webhook-signature", signature),
    ];
    ingest_with(server, "/webhooks/iclosed", &headers, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_webhooks_valid_missing_wrong_and_stale() {
    let server = standard_server().await;

    let body = unique_body();
    let (id, ts, signature) = standard_headers("msg_valid", now(), &body);
    assert_accepted(
        &post_standard(&server, &body, &id, &ts, &signature).await,
        "a fresh valid signature",
    );
    // A replay inside the tolerance passes the check but is a duplicate
    // (the webhook-id is the delivery id): not stored or forwarded again.
    let replay = post_standard(&server, &body, &id, &ts, &signature).await;
    assert_accepted(&replay, "a replay");
    assert_eq!(replay.json()["results"][0]["duplicate"], true, "{replay:?}");

    // Inside the 5-minute tolerance on both sides.
    for offset in [-240i64, 240] {
        let body = unique_body();
        let at = (now() as i64 + offset) as u64;
        let (id, ts, signature) = standard_headers(&format!("msg_{offset}"), at, &body);
        let reply = post_standard(&server, &body, &id, &ts, &signature).await;
        assert_accepted(&reply, &format!("a timestamp {offset} s away"));
    }

    let body = unique_body();
    let (id, ts, signature) = standard_headers("msg_1", now(), &body);
    // Missing headers, one at a time.
    for missing in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let all = [
            ("webhook-id", id.as_str()),
            ("webhook-timestamp", ts.as_str()),
            ("webhook-signature", signature.as_str()),
        ];
        let headers: Vec<(&str, &str)> = all.iter().copied().filter(|(name, _)| *name != missing).collect();
        let reply = ingest_with(&server, "/webhooks/iclosed", &headers, &body).await;
        assert_refused(&reply, &format!("no {missing}"));
    }
    // Wrong: another id, another timestamp, another body, another secret.
    let other_ts = (now() - 1).to_string();
    let other_secret = WebhookSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
        .expect("secret")
        .sign(&id, &ts, &body);
    let cases = [
        (
            "a signature for another id",
            "msg_2",
            ts.as_str(),
            signature.clone(),
            body.clone(),
        ),
        (
            "a signature for another timestamp",
            id.as_str(),
            other_ts.as_str(),
            signature.clone(),
            body.clone(),
        ),
        (
            "a signature for another body",
            id.as_str(),
            ts.as_str(),
            signature.clone(),
            unique_body(),
        ),
        (
            "a signature made with another secret",
            id.as_str(),
            ts.as_str(),
            other_secret,
            body.clone(),
        ),
        (
            "the right MAC under another version",
            id.as_str(),
            ts.as_str(),
            signature.replacen("v1,", "v2,", 1),
            body.clone(),
        ),
        (
            "the right MAC without a version",
            id.as_str(),
            ts.as_str(),
            signature.trim_start_matches("v1,").to_owned(),
            body.clone(),
        ),
        (
            "garbage",
            id.as_str(),
            ts.as_str(),
            "v1,!!!not base64!!!".to_owned(),
            body.clone(),
        ),
        (
            "an empty signature",
            id.as_str(),
            ts.as_str(),
            String::new(),
            body.clone(),
        ),
        (
            "a timestamp that is not a number",
            id.as_str(),
            "yesterday",
            signature.clone(),
            body.clone(),
        ),
    ];
    for (what, id, ts, signature, body) in &cases {
        assert_refused(&post_standard(&server, body, id, ts, signature).await, what);
    }

    // Stale and future timestamps, correctly signed for that timestamp.
    for (what, at) in [
        ("a timestamp 6 minutes old", now() - 360),
        ("a timestamp 6 minutes ahead", now() + 360),
        ("the epoch", 0),
    ] {
        let body = unique_body();
        let (id, ts, signature) = standard_headers("msg_stale", at, &body);
        let reply = post_standard(&server, &body, &id, &ts, &signature).await;
        assert_refused(&reply, what);
        assert!(
            reply.json()["error"].as_str().unwrap_or("").contains("tolerance"),
            "{what}: the error says why: {reply:?}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_webhooks_rotated_keys_in_a_signature_list() {
    let server = standard_server().await;
    let old = WebhookSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").expect("secret");
    // During a rotation a sender signs with the old and the new key; the
    // valid one may come first, last, or between unknown versions.
    let lists: [(&str, SignatureList); 3] = [
        ("new key last", |old, new| format!("{old} {new}")),
        ("new key first", |old, new| format!("{new} {old}")),
        ("between unknown versions", |old, new| {
            format!("v2,abcd {old}  {new} v1a,xyz")
        }),
    ];
    for (i, (what, list)) in lists.into_iter().enumerate() {
        let body = unique_body();
        let (id, ts, new) = standard_headers(&format!("msg_rotate_{i}"), now(), &body);
        let list = list(&old.sign(&id, &ts, &body), &new);
        let reply = post_standard(&server, &body, &id, &ts, &list).await;
        assert_accepted(&reply, what);
    }
    let body = unique_body();
    let (id, ts, _) = standard_headers("msg_rotate_bad", now(), &body);
    let only_old = format!("{} v1,bm90IGl0", old.sign(&id, &ts, &body));
    assert_refused(
        &post_standard(&server, &body, &id, &ts, &only_old).await,
        "a list where no key matches",
    );
    server.stop().await;
}

/// The known-answer vector of the Standard Webhooks reference libraries.
#[test]
fn standard_webhooks_known_answer_vector() {
    let shared = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/standard-webhooks/vector.json"
    );
    let copy = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/standard-webhooks-vector.json"
    );
    let copy_value: Value =
        serde_json::from_str(&std::fs::read_to_string(copy).expect("the vector copy")).expect("JSON");
    if let Ok(text) = std::fs::read_to_string(shared) {
        let shared_value: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(
            shared_value, copy_value,
            "tests/fixtures holds the shared vector unchanged"
        );
    }
    let field = |name: &str| copy_value[name].as_str().expect("a string field").to_owned();
    let secret = WebhookSecret::parse(&field("secret")).expect("the vector's secret");
    let (id, ts, body, signature) = (
        field("webhook_id"),
        field("webhook_timestamp"),
        field("body"),
        field("webhook_signature"),
    );
    assert_eq!(secret.sign(&id, &ts, body.as_bytes()), signature);
    assert!(secret.verify(&id, &ts, body.as_bytes(), &signature));

    // Through the inbound check, at the vector's own time (the vector is
    // years old, so the live server refuses it as stale; see below).
    let auth = InboundAuth {
        standard_webhooks: Some(secret),
        ..Default::default()
    };
    let mut headers = http::HeaderMap::new();
    headers.insert("webhook-id", id.parse().expect("header"));
    headers.insert("webhook-timestamp", ts.parse().expect("header"));
    headers.insert("webhook-signature", signature.parse().expect("header"));
    let sent = UNIX_EPOCH + Duration::from_secs(ts.parse().expect("a number"));
    assert!(auth.check(&headers, None, body.as_bytes(), sent).is_ok());
    assert!(
        auth.check(&headers, None, body.as_bytes(), sent + Duration::from_secs(300))
            .is_ok()
    );
    let stale = auth
        .check(&headers, None, body.as_bytes(), sent + Duration::from_secs(301))
        .expect_err("301 s late is stale");
    assert!(stale.0.contains("tolerance"), "{stale}");
    assert!(auth.check(&headers, None, b"{}", sent).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_server_refuses_the_replayed_vector_as_stale() {
    let vector: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/standard-webhooks-vector.json"
        ))
        .expect("the vector"),
    )
    .expect("JSON");
    let server = Server::start(Options {
        webhook_secret: Some(vector["secret"].as_str().unwrap().into()),
        ..Options::plain()
    })
    .await;
    let reply = post_standard(
        &server,
        vector["body"].as_str().unwrap().as_bytes(),
        vector["webhook_id"].as_str().unwrap(),
        vector["webhook_timestamp"].as_str().unwrap(),
        vector["webhook_signature"].as_str().unwrap(),
    )
    .await;
    assert_refused(&reply, "a replay of a correctly signed but years-old request");
    server.stop().await;
}

// ------------------------------------------- the reference library (Python)

/// Signs with the `standardwebhooks` package: prints the timestamp and the
/// signature of the body on stdin; or verifies (`verify ID TS SIG`).
const PYTHON_SIGNER: &str = r#"
import sys
from datetime import datetime, timezone
from standardwebhooks import Webhook

mode, secret = sys.argv[1], sys.argv[2]
body = sys.stdin.buffer.read().decode("utf-8")
wh = Webhook(secret)
if mode == "sign":
    msg_id = sys.argv[3]
    now = datetime.now(tz=timezone.utc)
    print(int(now.timestamp()))
    print(wh.sign(msg_id, now, body))
else:
    msg_id, ts, sig = sys.argv[3], sys.argv[4], sys.argv[5]
    wh.verify(body, {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": sig})
    print("verified")
"#;

fn python_has_standardwebhooks() -> bool {
    Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn python(args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::Write as _;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(PYTHON_SIGNER)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("python3 finishes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_library_signature_is_accepted_by_the_real_server() {
    if !python_has_standardwebhooks() {
        support::skipped(
            "reference_library_signature_is_accepted_by_the_real_server",
            "python3 cannot import `standardwebhooks` (install it with \
             `python3 -m pip install standardwebhooks`)",
        );
        return;
    }
    let process = Process::serve(&["--webhook-secret", WEBHOOK_SECRET], &[]);
    // Non-ASCII text: both sides must sign the same UTF-8 bytes.
    let body = serde_json::to_vec(&json!([{
        "id": "py-1", "firstName": "Zoë", "lastName": "Ångström", "email": "zoe@example.com",
        "questionsAndAnswers": {"1_question": "What is your role?", "1_response": "CEO — founder"}
    }]))
    .expect("serialise");
    let signed = python(&["sign", WEBHOOK_SECRET, "msg_python_1"], &body);
    assert!(
        signed.status.success(),
        "the reference library signs: {}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let out = String::from_utf8(signed.stdout).expect("UTF-8");
    let mut lines = out.lines();
    let (ts, signature) = (
        lines.next().expect("a timestamp"),
        lines.next().expect("a signature"),
    );
    assert!(signature.starts_with("v1,"), "{signature}");
    // Our signer agrees with the reference one byte for byte.
    assert_eq!(secret().sign("msg_python_1", ts, &body), signature);

    let headers = [
        ("Content-Type", "application/json"),
        ("webhook-id", "msg_python_1"),
        ("webhook-timestamp", ts),
        ("webhook-signature", signature),
    ];
    let reply = post(process.addr, "/webhooks/iclosed", &headers, &body).await;
    assert_eq!(reply.status, 200, "{reply:?}\nlog:\n{}", process.log_text());
    assert_eq!(reply.json()["results"][0]["contact_id"], "py-1");
    // And a tampered body signed by the same library is refused.
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let reply = post(process.addr, "/webhooks/iclosed", &headers, &tampered).await;
    assert_refused(&reply, "a body changed after the reference library signed it");

    // The other direction: what we sign (forwarded requests) verifies with
    // the reference library.
    let ts = now().to_string();
    let ours = secret().sign("msg_rust_1", &ts, &body);
    let verified = python(&["verify", WEBHOOK_SECRET, "msg_rust_1", &ts, &ours], &body);
    assert!(
        verified.status.success(),
        "the reference library verifies our signature: {}",
        String::from_utf8_lossy(&verified.stderr)
    );
}

// ------------------------------------------------------------- any one mode

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_mode_configured_any_one_passing_is_enough() {
    let server = Server::start(Options {
        webhook_token: Some(TOKEN.into()),
        webhook_hmac: Some(("x-leadscore-signature".into(), HMAC_SECRET.into())),
        webhook_secret: Some(WEBHOOK_SECRET.into()),
        ..Options::plain()
    })
    .await;
    let body = unique_body();
    let bearer = format!("Bearer {TOKEN}");
    assert_accepted(
        &ingest_with(&server, "/webhooks/iclosed", &[("Authorization", &bearer)], &body).await,
        "the token alone",
    );
    let body = unique_body();
    let mac = hex::encode(hmac_raw(HMAC_SECRET, &body));
    assert_accepted(
        &ingest_with(&server, "/webhooks/iclosed", &[(HMAC_HEADER, &mac)], &body).await,
        "the body HMAC alone",
    );
    let body = unique_body();
    let (id, ts, signature) = standard_headers("msg_any", now(), &body);
    assert_accepted(
        &post_standard(&server, &body, &id, &ts, &signature).await,
        "Standard Webhooks alone",
    );
    let body = unique_body();
    let (id, ts, signature) = standard_headers("msg_none", now() - 3600, &body);
    let headers = [
        ("Authorization", "Bearer nope"),
        (HMAC_HEADER, "sha256=00"),
        ("webhook-id", id.as_str()),
        ("webhook-timestamp", ts.as_str()),
        ("webhook-signature", signature.as_str()),
    ];
    let reply = ingest_with(&server, "/webhooks/iclosed", &headers, &body).await;
    assert_refused(&reply, "every check failing");
    assert_refused(
        &ingest_with(&server, "/webhooks/iclosed", &[], &body).await,
        "no credentials at all",
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_ingest_is_open() {
    let server = Server::start(Options::plain()).await;
    let reply = ingest_with(&server, "/webhooks/iclosed", &[], &unique_body()).await;
    assert_accepted(&reply, "no secret configured");
    let reply = ingest_with(
        &server,
        "/webhooks/iclosed",
        &[("Authorization", "Bearer anything")],
        &unique_body(),
    )
    .await;
    assert_accepted(&reply, "credentials are ignored when none is configured");
    server.stop().await;
}

// -------------------------------------------------------------------- admin

/// The admin endpoints (SPEC 4.2) as method, path and body.
const ADMIN_ENDPOINTS: [(&str, &str, &[u8]); 18] = [
    ("POST", "/score", br#"[{"id": 1}]"#),
    ("GET", "/rules", b""),
    ("GET", "/deliveries", b""),
    ("GET", "/deliveries?status=dead&limit=5", b""),
    ("POST", "/deliveries/evt_unknown/retry", b""),
    ("POST", "/deliveries/retry-dead", b""),
    ("POST", "/backtest", br#"{"rules": {}}"#),
    ("GET", "/contacts", b""),
    ("GET", "/stats", b""),
    ("GET", "/rules/10-role.rhai", b""),
    ("PUT", "/rules/10-role.rhai", b"add(1, \"x\");"),
    ("DELETE", "/rules/10-role.rhai", b""),
    ("GET", "/report", b""),
    ("GET", "/rescore", b""),
    ("POST", "/rescore", b""),
    ("GET", "/rescore/rsc_unknown", b""),
    ("DELETE", "/rescore/rsc_unknown", b""),
    ("GET", "/contacts?email=a%40b.c", b""),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_need_the_admin_token() {
    let server = Server::start(Options {
        admin_token: Some(ADMIN_TOKEN.into()),
        webhook_token: Some(TOKEN.into()),
        ..Options::plain()
    })
    .await;
    let right = format!("Bearer {ADMIN_TOKEN}");
    let webhook_token = format!("Bearer {TOKEN}");
    let longer = format!("Bearer {ADMIN_TOKEN}0");
    let basic = format!("Basic {ADMIN_TOKEN}");
    let json = ("Content-Type", "application/json");
    for (method, path, body) in ADMIN_ENDPOINTS {
        for (what, auth) in [
            ("no Authorization", None),
            ("a wrong bearer", Some("Bearer wrong")),
            ("the webhook token", Some(webhook_token.as_str())),
            ("the admin token plus a character", Some(longer.as_str())),
            ("the admin token as Basic", Some(basic.as_str())),
            ("an empty bearer", Some("Bearer ")),
        ] {
            let mut headers = vec![json];
            headers.extend(auth.map(|a| ("Authorization", a)));
            let reply = request(server.addr, method, path, &headers, body).await;
            assert_eq!(reply.status, 401, "{method} {path} with {what}: {reply:?}");
            reply.assert_error(401);
            assert_eq!(
                reply.header("www-authenticate"),
                Some("Bearer realm=\"leadscore\""),
                "RFC 9110: a 401 says how to authenticate; {method} {path}"
            );
        }
        // The admin token in X-Webhook-Token or ?token= is not the admin check.
        let query_path = format!(
            "{path}{}token={ADMIN_TOKEN}",
            if path.contains('?') { '&' } else { '?' }
        );
        let reply = request(server.addr, method, &query_path, &[json], body).await;
        assert_eq!(reply.status, 401, "{method} {query_path}: {reply:?}");

        let reply = request(
            server.addr,
            method,
            path,
            &[json, ("Authorization", &right)],
            body,
        )
        .await;
        let expected: &[u16] = match (method, path) {
            (_, "/deliveries/evt_unknown/retry" | "/rescore/rsc_unknown") => &[404],
            (_, "/deliveries/retry-dead") | ("POST", "/rescore") => &[202],
            // Rule edits are off on this server (no --allow-rule-edits).
            ("PUT" | "DELETE", _) => &[403],
            _ => &[200],
        };
        assert!(
            expected.contains(&reply.status),
            "{method} {path} with the admin token: {reply:?}"
        );
    }
    // Health, readiness, metrics and the API document stay open.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let reply = get(server.addr, path, &[]).await;
        assert_eq!(reply.status, 200, "{path} without a token: {reply:?}");
        let reply = get(server.addr, path, &[("Authorization", "Bearer wrong")]).await;
        assert_eq!(reply.status, 200, "{path} with a wrong token: {reply:?}");
    }
    // Admin endpoints that may not exist yet must never answer 2xx without
    // the token.
    for (method, path) in [
        ("POST", "/backtest"),
        ("GET", "/stats"),
        ("GET", "/report"),
        ("PUT", "/rules/10-role.rhai"),
    ] {
        let reply = request(server.addr, method, path, &[json], b"{}").await;
        assert!(
            !(200..300).contains(&reply.status),
            "{method} {path} without the admin token: {reply:?}"
        );
    }
    // The admin token is not a webhook credential.
    let reply = ingest_with(
        &server,
        "/webhooks/iclosed",
        &[("Authorization", &right)],
        &unique_body(),
    )
    .await;
    assert_refused(&reply, "the admin token on the webhook");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_token_admin_endpoints_are_open() {
    let server = Server::start(Options::plain()).await;
    for (method, path, body) in ADMIN_ENDPOINTS {
        let reply = request(
            server.addr,
            method,
            path,
            &[("Content-Type", "application/json")],
            body,
        )
        .await;
        assert_ne!(reply.status, 401, "{method} {path}: {reply:?}");
        assert!(reply.status < 500, "{method} {path}: {reply:?}");
    }
    server.stop().await;
}

// ----------------------------------------------------------- what is logged

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_checks_log_no_secret_and_no_signature() {
    // The real binary at debug level, secrets given by flag and by
    // environment variable.
    let process = Process::serve(
        &[
            "--webhook-token",
            TOKEN,
            "--webhook-hmac-header",
            HMAC_HEADER,
            "--admin-token",
            ADMIN_TOKEN,
        ],
        &[
            ("LEADSCORE_LOG", "debug"),
            ("LEADSCORE_WEBHOOK_HMAC_SECRET", HMAC_SECRET),
            ("LEADSCORE_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ],
    );
    let addr = process.addr;
    let body = unique_body();
    let json = ("Content-Type", "application/json");
    // Everything sent that must never be logged.
    let mut never_logged: Vec<String> = vec![
        TOKEN.into(),
        HMAC_SECRET.into(),
        WEBHOOK_SECRET.into(),
        WEBHOOK_SECRET.trim_start_matches("whsec_").into(),
        ADMIN_TOKEN.into(),
    ];
    let mut replies = Vec::new();

    // Wrong tokens (a mistyped token is nearly a secret too).
    let wrong_token = "tok_Zr4T9qLm2XcV8bN2";
    never_logged.push(wrong_token.into());
    let wrong_bearer = format!("Bearer {wrong_token}");
    replies.push(
        post(
            addr,
            "/webhooks/iclosed",
            &[json, ("Authorization", &wrong_bearer)],
            &body,
        )
        .await,
    );
    replies.push(
        post(
            addr,
            "/webhooks/iclosed",
            &[json, ("X-Webhook-Token", wrong_token)],
            &body,
        )
        .await,
    );
    let query = format!("/webhooks/iclosed?token={wrong_token}");
    replies.push(post(addr, &query, &[json], &body).await);
    // A body HMAC made with the right secret over another body.
    let mac = hex::encode(hmac_raw(HMAC_SECRET, b"another body"));
    never_logged.push(mac.clone());
    replies.push(post(addr, "/webhooks/iclosed", &[json, (HMAC_HEADER, &mac)], &body).await);
    // A Standard Webhooks signature over another body, and a stale one.
    let (id, ts, signature) = standard_headers("msg_log_1", now(), b"another body");
    never_logged.push(signature.trim_start_matches("v1,").into());
    let headers = [
        json,
        ("webhook-id", id.as_str()),
        ("webhook-timestamp", ts.as_str()),
        ("webhook-signature", signature.as_str()),
    ];
    replies.push(post(addr, "/webhooks/iclosed", &headers, &body).await);
    let (id, ts, stale) = standard_headers("msg_log_2", now() - 3600, &body);
    never_logged.push(stale.trim_start_matches("v1,").into());
    let headers = [
        json,
        ("webhook-id", id.as_str()),
        ("webhook-timestamp", ts.as_str()),
        ("webhook-signature", stale.as_str()),
    ];
    replies.push(post(addr, "/webhooks/iclosed", &headers, &body).await);
    for reply in &replies {
        assert_refused(reply, "a failed check");
    }
    // Admin endpoints with a wrong token.
    let wrong_admin = "adm_Pq7Wn3Ks8Hd2Jf5X";
    never_logged.push(wrong_admin.into());
    let bearer = format!("Bearer {wrong_admin}");
    for path in ["/rules", "/deliveries"] {
        let reply = get(addr, path, &[("Authorization", &bearer)]).await;
        reply.assert_error(401);
        replies.push(reply);
    }
    // Accepted requests do not log their credentials either.
    let right_query = format!("/webhooks/iclosed?token={TOKEN}");
    let reply = post(addr, &right_query, &[json], &unique_body()).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let body = unique_body();
    let (id, ts, good) = standard_headers("msg_log_3", now(), &body);
    never_logged.push(good.trim_start_matches("v1,").into());
    let headers = [
        json,
        ("webhook-id", id.as_str()),
        ("webhook-timestamp", ts.as_str()),
        ("webhook-signature", good.as_str()),
    ];
    let reply = post(addr, "/webhooks/iclosed", &headers, &body).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let admin = format!("Bearer {ADMIN_TOKEN}");
    assert_eq!(
        get(addr, "/rules", &[("Authorization", &admin)]).await.status,
        200
    );

    // Give the logger a moment to flush the last lines.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = process.log_text();
    assert!(
        log.contains("authentication failed"),
        "the refusals are logged (else this test reads nothing):\n{log}"
    );
    for secret in &never_logged {
        assert!(
            !log.contains(secret.as_str()),
            "the log contains {secret:?}:\n{log}"
        );
        for reply in &replies {
            let body = String::from_utf8_lossy(&reply.body);
            assert!(
                !body.contains(secret.as_str()),
                "an answer contains {secret:?}: {reply:?}"
            );
        }
    }
}

/// issue 19 #4: with token authentication only, a sender without the token
/// is refused from its headers: the server does not wait for (or hold) a
/// body it announced. The old server read the whole body first and, with no
/// body coming, answered only after its 30 s body timeout.
#[tokio::test]
async fn a_token_only_server_refuses_before_reading_the_body() {
    use tokio::io::AsyncWriteExt as _;
    let server = Server::start(Options {
        webhook_token: Some(TOKEN.into()),
        ..Options::plain()
    })
    .await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(
            b"POST /webhooks/iclosed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
              Content-Length: 1000000\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    // Never sends a body byte; a server that waits for it does not answer
    // within this bound (it is a hang detector, not a timing check).
    let reply = tokio::time::timeout(Duration::from_secs(15), support::raw::read_reply(&mut stream))
        .await
        .expect("the refusal comes without the body")
        .unwrap();
    reply.assert_error(401);
    let bearer = format!("Bearer {TOKEN}");
    let accepted = ingest_with(
        &server,
        "/webhooks/iclosed",
        &[("Authorization", &bearer)],
        &unique_body(),
    )
    .await;
    assert_accepted(&accepted, "the token in the header, after the refusal");
    server.stop().await;
}

/// Sends `GET path` with exactly the `Host` given (or none).
async fn get_with_host(
    addr: std::net::SocketAddr,
    path: &str,
    host: Option<&str>,
    admin: Option<&str>,
) -> Reply {
    let mut head = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
    if let Some(host) = host {
        head.push_str(&format!("Host: {host}\r\n"));
    }
    if let Some(token) = admin {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    support::raw::send_raw(addr, head.as_bytes()).await.unwrap()
}

/// SPEC 4.2 (issue 19 #10): without an admin token, the admin endpoints and
/// the console answer `403` to a `Host` that is not this machine (a web page
/// reaching them through DNS rebinding); loopback names, the listen address
/// and `--allowed-host` names pass, and health and metrics stay open.
#[tokio::test]
async fn without_an_admin_token_a_foreign_host_is_refused() {
    let server = Server::start(Options::plain()).await;
    let port = server.addr.port();
    for path in [
        "/contacts",
        "/rules",
        "/stats",
        "/deliveries",
        "/",
        "/console/config",
        "/assets/app.js",
    ] {
        let refused = get_with_host(server.addr, path, Some("evil.example"), None).await;
        refused.assert_error(403);
        assert!(
            refused.json()["error"]
                .as_str()
                .unwrap()
                .contains("--allowed-host"),
            "{refused:?}"
        );
        for host in [
            "localhost",
            &format!("localhost:{port}"),
            &format!("127.0.0.1:{port}"),
            "[::1]:80",
        ] {
            let reply = get_with_host(server.addr, path, Some(host), None).await;
            assert_eq!(reply.status, 200, "{path} with Host {host}: {reply:?}");
        }
    }
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let reply = get_with_host(server.addr, path, Some("evil.example"), None).await;
        assert_eq!(reply.status, 200, "{path} stays open: {reply:?}");
    }
    server.stop().await;

    // With an admin token the token decides, whatever the Host.
    let server = Server::start(Options {
        admin_token: Some(ADMIN_TOKEN.into()),
        ..Options::plain()
    })
    .await;
    let reply = get_with_host(
        server.addr,
        "/contacts",
        Some("leads.example.com"),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    get_with_host(server.addr, "/contacts", Some("leads.example.com"), None)
        .await
        .assert_error(401);
    server.stop().await;
}
