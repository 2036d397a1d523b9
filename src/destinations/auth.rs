//! The headers of one request to a destination (SPEC 5 and 10): extra
//! headers (static or `{ env }`), `Authorization` (bearer, basic or an
//! OAuth2 client-credentials token), `Content-Type`, and the Standard
//! Webhooks `webhook-id`, `webhook-timestamp` and — with a signing secret —
//! `webhook-signature` over the exact bytes sent.
//!
//! Every header line carries the value sent and the value shown
//! ([`HeaderLine::shown`]), so a preview can never show more than the
//! request would send, nor a secret.
//!
//! OAuth2: one token per destination ([`TokenCache`]), fetched with a form
//! `POST` (`grant_type=client_credentials`, `client_id`, `client_secret`,
//! `scope`), kept until shortly before `expires_in` runs out (a tenth of
//! its life, at most a minute; a token without `expires_in` is kept until
//! the destination rejects it). After a `401` the caller calls
//! [`Credentials::token_rejected`] and retries once with a new token.
//! Token values are never logged.

use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use super::{Destination, Payload, Secret};

/// The mask of a secret value in previews.
pub const MASK: &str = "***";

/// `auth = …` of a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// `{ bearer_env = "NAME" }`.
    Bearer { token: Secret },
    /// `{ basic_user = "u", basic_password_env = "NAME" }`.
    Basic { user: String, password: Secret },
    /// `{ oauth2 = { token_url, client_id, client_secret_env, scope } }`.
    OAuth2(OAuth2Settings),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth2Settings {
    pub token_url: Url,
    pub client_id: String,
    pub client_secret: Secret,
    pub scope: Option<String>,
}

/// Why a request's headers cannot be made: a failed attempt (retried),
/// never quoting a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("OAuth2 token request to {url} failed: {why}")]
    Token { url: String, why: String },
    #[error("header {0} cannot carry its value")]
    InvalidHeader(String),
}

impl AuthError {
    /// The attempt's error class (SPEC 10 "Attempts").
    pub fn class(&self) -> &'static str {
        "auth"
    }
}

/// One header of a request: what is sent and what may be shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderLine {
    pub name: HeaderName,
    value: String,
    /// The value with secrets masked (`Bearer ***`, `***`).
    pub shown: String,
}

impl HeaderLine {
    fn plain(name: HeaderName, value: impl Into<String>) -> Self {
        let value = value.into();
        Self {
            name,
            shown: value.clone(),
            value,
        }
    }

    fn secret(name: HeaderName, value: impl Into<String>, shown: impl Into<String>) -> Self {
        Self {
            name,
            value: value.into(),
            shown: shown.into(),
        }
    }
}

/// The `Authorization` value of a request: known (bearer, basic, a fetched
/// token) or not fetched (a preview of an OAuth2 destination).
pub(crate) enum Authorization<'a> {
    None,
    Token(&'a Secret),
    NotFetched,
}

/// Every header of one request, in a stable order.
pub(crate) fn header_lines(
    destination: &Destination,
    payload: &Payload,
    event_id: &str,
    timestamp: &str,
    oauth: Authorization<'_>,
) -> Vec<HeaderLine> {
    let mut lines: Vec<HeaderLine> = destination
        .headers
        .iter()
        .map(|(name, source)| match source {
            super::HeaderSource::Plain(value) => HeaderLine::plain(name.clone(), value.clone()),
            super::HeaderSource::FromEnv { value, .. } => {
                HeaderLine::secret(name.clone(), value.expose(), MASK)
            }
        })
        .collect();
    match (&destination.auth, oauth) {
        (Some(Auth::Bearer { token }), _) | (Some(Auth::OAuth2(_)), Authorization::Token(token)) => {
            lines.push(HeaderLine::secret(
                AUTHORIZATION,
                format!("Bearer {}", token.expose()),
                format!("Bearer {MASK}"),
            ));
        }
        (Some(Auth::Basic { user, password }), _) => {
            let pair =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", password.expose()));
            lines.push(HeaderLine::secret(
                AUTHORIZATION,
                format!("Basic {pair}"),
                format!("Basic {MASK}"),
            ));
        }
        // A preview never fetches a token, and shows where it would go.
        (Some(Auth::OAuth2(_)), Authorization::NotFetched) => {
            lines.push(HeaderLine::secret(AUTHORIZATION, "", format!("Bearer {MASK}")));
        }
        (Some(Auth::OAuth2(_)), Authorization::None) | (None, _) => {}
    }
    lines.push(HeaderLine::plain(CONTENT_TYPE, payload.content_type.as_str()));
    lines.push(HeaderLine::plain(HeaderName::from_static("webhook-id"), event_id));
    lines.push(HeaderLine::plain(
        HeaderName::from_static("webhook-timestamp"),
        timestamp,
    ));
    if let Some(secret) = &destination.signing_secret {
        lines.push(HeaderLine::secret(
            HeaderName::from_static("webhook-signature"),
            secret.sign(event_id, timestamp, &payload.bytes),
            format!("v1,{MASK}"),
        ));
    }
    lines
}

/// What one request sends, and the OAuth2 token it used (to reject after
/// a `401`).
#[derive(Debug)]
pub struct RequestHeaders {
    pub headers: HeaderMap,
    token: Option<Secret>,
}

/// A destination's credentials for its whole life: the token cache lives
/// here. One per destination, shared by its requests.
#[derive(Debug)]
pub struct Credentials {
    tokens: Option<TokenCache>,
}

impl Credentials {
    /// The destination's `timeout` also bounds each token request.
    pub fn new(destination: &Destination) -> Self {
        let tokens = match &destination.auth {
            Some(Auth::OAuth2(settings)) => Some(TokenCache::new(settings.clone(), destination.timeout)),
            _ => None,
        };
        Self { tokens }
    }

    /// The headers of one request of `destination` sending `payload` for
    /// `event_id` at `timestamp` (Unix seconds, as sent).
    pub async fn request_headers(
        &self,
        destination: &Destination,
        payload: &Payload,
        event_id: &str,
        timestamp: &str,
    ) -> Result<RequestHeaders, AuthError> {
        let token = match &self.tokens {
            Some(cache) => Some(cache.token().await?),
            None => None,
        };
        let oauth = token.as_ref().map_or(Authorization::None, Authorization::Token);
        let mut headers = HeaderMap::new();
        for line in header_lines(destination, payload, event_id, timestamp, oauth) {
            let mut value = HeaderValue::try_from(line.value)
                .map_err(|_| AuthError::InvalidHeader(line.name.to_string()))?;
            value.set_sensitive(line.shown != value.to_str().unwrap_or_default());
            headers.append(line.name, value);
        }
        Ok(RequestHeaders { headers, token })
    }

    /// The destination answered `401` to a request with these headers:
    /// its token is dropped, so the next request fetches a new one. A
    /// token already replaced (another request's `401`) is left alone.
    pub async fn token_rejected(&self, sent: &RequestHeaders) {
        if let (Some(cache), Some(token)) = (&self.tokens, &sent.token) {
            cache.invalidate(token).await;
        }
    }

    /// Whether a `401` is worth one retry with a new token.
    pub fn refreshes_tokens(&self) -> bool {
        self.tokens.is_some()
    }
}

/// Longest margin before a token's expiry at which it is renewed.
const MAX_RENEW_MARGIN: Duration = Duration::from_secs(60);

/// One destination's OAuth2 token.
pub struct TokenCache {
    settings: OAuth2Settings,
    http: reqwest::Client,
    /// Held while fetching, so concurrent requests wait for one fetch.
    current: tokio::sync::Mutex<Option<CachedToken>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("token_url", &self.settings.token_url.as_str())
            .finish()
    }
}

struct CachedToken {
    token: Secret,
    /// `None`: kept until rejected.
    renew_at: Option<Instant>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct TokenErrorAnswer {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

impl TokenCache {
    pub fn new(settings: OAuth2Settings, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("leadscore/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Self {
            settings,
            http,
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// The cached token, or a new one.
    pub async fn token(&self) -> Result<Secret, AuthError> {
        let mut current = self.current.lock().await;
        if let Some(cached) = current.as_ref()
            && cached.renew_at.is_none_or(|at| Instant::now() < at)
        {
            return Ok(cached.token.clone());
        }
        let fetched = self.fetch().await?;
        let token = fetched.token.clone();
        *current = Some(fetched);
        Ok(token)
    }

    /// Drops `token` if it is still the cached one.
    pub async fn invalidate(&self, token: &Secret) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|cached| cached.token == *token) {
            *current = None;
        }
    }

    async fn fetch(&self) -> Result<CachedToken, AuthError> {
        let failed = |why: String| AuthError::Token {
            url: self.settings.token_url.to_string(),
            why,
        };
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", self.settings.client_id.as_str()),
            ("client_secret", self.settings.client_secret.expose()),
        ];
        if let Some(scope) = &self.settings.scope {
            form.push(("scope", scope));
        }
        let form: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let asked_at = Instant::now();
        let response = self
            .http
            .post(self.settings.token_url.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(form)
            .send()
            .await
            .map_err(|e| {
                failed(if e.is_timeout() {
                    "timed out".into()
                } else {
                    "could not connect".into()
                })
            })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|_| failed("the answer was cut off".into()))?;
        if !status.is_success() {
            // Only the standard error fields: a body could echo anything.
            let why = match serde_json::from_slice::<TokenErrorAnswer>(&body) {
                Ok(answer) => match answer.error_description {
                    Some(description) => format!("{} ({description})", answer.error),
                    None => answer.error,
                },
                Err(_) => "no OAuth2 error in the answer".into(),
            };
            return Err(failed(format!(
                "the token endpoint answered {}: {why}",
                status.as_u16()
            )));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|_| failed("the answer is not a JSON object with an access_token".into()))?;
        if let Some(kind) = &answer.token_type
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(failed(format!(
                "the token type is {kind:?}; only bearer tokens are supported"
            )));
        }
        if answer.access_token.is_empty() || HeaderValue::from_str(&answer.access_token).is_err() {
            return Err(failed(
                "the access_token is empty or cannot be sent in a header".into(),
            ));
        }
        // `expires_in` is a number of seconds; some servers send it as text.
        let lifetime = match &answer.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_f64(),
            Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .filter(|seconds| seconds.is_finite() && *seconds > 0.0)
        .map(|seconds| Duration::from_secs_f64(seconds.min(1e9)));
        let renew_at = lifetime.map(|life| asked_at + life - (life / 10).min(MAX_RENEW_MARGIN));
        Ok(CachedToken {
            token: Secret::new(answer.access_token),
            renew_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::destinations::{Body, BodySpec, Defaults, HeaderSource, Template};
    use crate::signature::WebhookSecret;

    fn destination(auth: Option<Auth>) -> Destination {
        let mut destination = Destination::default_from_forward(
            Url::parse("https://crm.example/hook").unwrap(),
            None,
            &HeaderMap::new(),
            &Defaults::default(),
        );
        destination.auth = auth;
        destination
    }

    fn json_payload(value: serde_json::Value) -> Payload {
        Body::Json(value).payload("text/plain").unwrap()
    }

    fn shown(lines: &[HeaderLine]) -> Vec<(String, String)> {
        lines
            .iter()
            .map(|l| (l.name.to_string(), l.shown.clone()))
            .collect()
    }

    #[tokio::test]
    async fn static_env_bearer_and_signature_headers() {
        let mut dest = destination(Some(Auth::Bearer {
            token: Secret::new("tok-123"),
        }));
        dest.headers = vec![
            (
                HeaderName::from_static("x-env"),
                HeaderSource::Plain("prod".into()),
            ),
            (
                HeaderName::from_static("x-api-key"),
                HeaderSource::FromEnv {
                    variable: "KEY".into(),
                    value: Secret::new("key-456"),
                },
            ),
        ];
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        dest.signing_secret = Some(WebhookSecret::parse(secret).unwrap());
        let body = json_payload(serde_json::json!({"a": 1}));
        let credentials = Credentials::new(&dest);
        let sent = credentials
            .request_headers(&dest, &body, "evt_1", "1700000000")
            .await
            .unwrap();
        let h = &sent.headers;
        assert_eq!(h["x-env"], "prod");
        assert_eq!(h["x-api-key"], "key-456");
        assert_eq!(h["authorization"], "Bearer tok-123");
        assert!(h["authorization"].is_sensitive() && h["x-api-key"].is_sensitive());
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["webhook-id"], "evt_1");
        assert_eq!(h["webhook-timestamp"], "1700000000");
        let signature = h["webhook-signature"].to_str().unwrap();
        assert!(WebhookSecret::parse(secret).unwrap().verify(
            "evt_1",
            "1700000000",
            br#"{"a":1}"#,
            signature
        ));
        let lines = header_lines(&dest, &body, "evt_1", "1700000000", Authorization::None);
        assert_eq!(
            shown(&lines),
            [
                ("x-env", "prod"),
                ("x-api-key", "***"),
                ("authorization", "Bearer ***"),
                ("content-type", "application/json"),
                ("webhook-id", "evt_1"),
                ("webhook-timestamp", "1700000000"),
                ("webhook-signature", "v1,***"),
            ]
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
    }

    #[tokio::test]
    async fn basic_auth_and_text_bodies() {
        let mut dest = destination(Some(Auth::Basic {
            user: "ops".into(),
            password: Secret::new("pw"),
        }));
        dest.content_type = "text/csv".into();
        dest.body = BodySpec::Template(Template::ScoredContact);
        let credentials = Credentials::new(&dest);
        let sent = credentials
            .request_headers(
                &dest,
                &dest.payload(&Body::Text("a,b".into())).unwrap(),
                "evt_2",
                "1",
            )
            .await
            .unwrap();
        // base64("ops:pw")
        assert_eq!(sent.headers["authorization"], "Basic b3BzOnB3");
        assert_eq!(sent.headers["content-type"], "text/csv");
        assert!(!credentials.refreshes_tokens());
    }

    /// A token endpoint on 127.0.0.1: each answer is a new token
    /// `token-N` living `expires_in` seconds; it records the forms.
    async fn token_endpoint(
        expires_in: f64,
        status: u16,
    ) -> (Url, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/oauth/token", listener.local_addr().unwrap())).unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let forms = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (served, seen) = (count.clone(), forms.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let n = served.fetch_add(1, Ordering::SeqCst) + 1;
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                // Read the head, then the body by Content-Length.
                loop {
                    let read = socket.read(&mut buffer).await.unwrap_or(0);
                    if read == 0 {
                        break;
                    }
                    request.extend_from_slice(&buffer[..read]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            seen.lock().unwrap().push(text[end + 4..].to_owned());
                            break;
                        }
                    }
                }
                let body = if status == 200 {
                    format!(
                        r#"{{"access_token":"token-{n}","token_type":"Bearer","expires_in":{expires_in}}}"#
                    )
                } else {
                    r#"{"error":"invalid_client","error_description":"bad secret"}"#.to_owned()
                };
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        (url, count, forms)
    }

    fn oauth(url: Url) -> Destination {
        destination(Some(Auth::OAuth2(OAuth2Settings {
            token_url: url,
            client_id: "leadscore".into(),
            client_secret: Secret::new("s3cr&t"),
            scope: Some("crm.objects.contacts.write".into()),
        })))
    }

    #[tokio::test]
    async fn oauth2_tokens_are_cached_until_shortly_before_expiry() {
        let (url, fetches, forms) = token_endpoint(1.0, 200).await;
        let dest = oauth(url);
        let credentials = Credentials::new(&dest);
        let body = json_payload(serde_json::json!({}));
        let first = credentials
            .request_headers(&dest, &body, "evt_1", "1")
            .await
            .unwrap();
        let second = credentials
            .request_headers(&dest, &body, "evt_2", "1")
            .await
            .unwrap();
        assert_eq!(first.headers["authorization"], "Bearer token-1");
        assert_eq!(second.headers["authorization"], "Bearer token-1");
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        assert_eq!(
            forms.lock().unwrap()[0],
            "grant_type=client_credentials&client_id=leadscore&client_secret=s3cr%26t&scope=crm.objects.contacts.write"
        );
        // Renewed a tenth of its life before it expires.
        tokio::time::sleep(Duration::from_millis(950)).await;
        let third = credentials
            .request_headers(&dest, &body, "evt_3", "1")
            .await
            .unwrap();
        assert_eq!(third.headers["authorization"], "Bearer token-2");
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_401_makes_the_next_request_fetch_a_new_token_once() {
        let (url, fetches, _) = token_endpoint(2.0, 200).await;
        let dest = oauth(url);
        let credentials = Credentials::new(&dest);
        assert!(credentials.refreshes_tokens());
        let body = json_payload(serde_json::json!({}));
        let (a, b) = tokio::join!(
            credentials.request_headers(&dest, &body, "evt_1", "1"),
            credentials.request_headers(&dest, &body, "evt_2", "1"),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            1,
            "concurrent requests share one fetch"
        );
        // Both got 401: the first rejection drops token-1, the second
        // finds it already replaced by then.
        credentials.token_rejected(&a).await;
        let retried = credentials
            .request_headers(&dest, &body, "evt_1", "1")
            .await
            .unwrap();
        credentials.token_rejected(&b).await;
        let other = credentials
            .request_headers(&dest, &body, "evt_2", "1")
            .await
            .unwrap();
        assert_eq!(retried.headers["authorization"], "Bearer token-2");
        assert_eq!(other.headers["authorization"], "Bearer token-2");
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_token_request_is_an_error_without_secrets() {
        let (url, _, _) = token_endpoint(60.0, 401).await;
        let dest = oauth(url.clone());
        let credentials = Credentials::new(&dest);
        let error = credentials
            .request_headers(&dest, &json_payload(serde_json::json!({})), "evt_1", "1")
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "OAuth2 token request to {url} failed: the token endpoint answered 401: invalid_client (bad secret)"
            )
        );
        assert_eq!(error.class(), "auth");
        let preview = header_lines(
            &dest,
            &json_payload(serde_json::json!({})),
            "e",
            "1",
            Authorization::NotFetched,
        );
        assert!(shown(&preview).contains(&("authorization".into(), "Bearer ***".into())));
        assert!(!format!("{credentials:?} {dest:?}").contains("s3cr"));
    }
}
