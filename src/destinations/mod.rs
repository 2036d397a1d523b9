//! Destinations (SPEC 10): where scored contacts go, each in its own shape,
//! with its own credentials, rate limit and circuit breaker.
//!
//! The rooms follow one request's life:
//! [`config`] (the `[[destination]]` file → validated [`Destination`]s) →
//! [`select`] (`when`) → [`body`] (templates and transforms) → [`auth`]
//! (the request's headers, OAuth2 tokens) → [`rate`] and [`breaker`]
//! (whether a request may start) — and [`preview`], the request that would
//! be sent, with secrets masked. [`script`] is the Rhai sandbox of `when`
//! and transforms.
//!
//! How a caller uses them (the delivery worker, the API and the CLI):
//!
//! 1. Load: [`Destinations::load`] (or [`Destination::default_from_forward`]
//!    for `--forward-url`); log [`Destinations::warnings`]; watch
//!    [`SourceFiles`] for reload.
//! 2. When an event is scored: [`Destination::select`] per destination (a
//!    [`Selection::SelectedAfterError`] is logged and counted, and selects).
//! 3. Per attempt: [`breaker::Breaker::permit`], then
//!    [`rate::RateGate::try_acquire`] (waiting on either uses no retry);
//!    [`Destination::build_body`] (a [`Body::Skip`] is recorded as skipped,
//!    an error makes the delivery dead, class `transform`);
//!    [`Destination::payload`] (the bytes sent and signed);
//!    [`auth::Credentials::request_headers`] (one `Credentials` per
//!    destination, kept across reloads while its auth is unchanged); send;
//!    on a `401` with [`auth::Credentials::refreshes_tokens`], call
//!    [`auth::Credentials::token_rejected`] and send once more; judge a `2xx`
//!    with [`Destination::failed_answer`]; a `429` with `Retry-After` →
//!    [`rate::RateGate::pause_for`]; then [`breaker::Breaker::record`] with
//!    [`breaker::AttemptResult::of`], and [`breaker::Breaker::delivery_died`]
//!    when the delivery is dead. A [`breaker::HealthChange`] becomes an
//!    alert event ([`breaker::HealthChange::event`]) for the `alert`
//!    destination, delivered like any event but bypassing `when`.
//! 4. `leadscore destinations preview`: [`preview::preview`].
//!
//! Secrets (any value written `{ env = "NAME" }`: tokens, passwords, client
//! secrets, signing secrets, and a URL given that way — for Slack the URL
//! is itself the secret) are held in [`Secret`], whose `Debug` and
//! `Display` never show the value; [`Destination`]'s `Debug` is written by
//! hand for the same reason.

pub mod auth;
pub mod body;
pub mod breaker;
pub mod config;
pub mod preview;
pub mod rate;
pub mod script;
pub mod select;

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName};
use serde::Serialize;

use crate::score::Limits;
use crate::signature::WebhookSecret;

pub use auth::{Auth, OAuth2Settings};
pub use body::{Body, Payload, Template};
pub use breaker::{BreakerSettings, BreakerState};
pub use config::{ConfigError, Destinations, LoadError};
pub use rate::RateLimit;
pub use select::{Selection, When};

/// The name of the `--forward-url` shorthand's destination.
pub use crate::store::DEFAULT_DESTINATION;

/// A value read from the environment: shown as `***` everywhere.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// What a destination does not say comes from the command line
/// (`--forward-concurrency`, `--forward-timeout`, `--retry-schedule`) and
/// the rule limits (`--rule-max-operations`, `--rule-timeout`), which
/// `when` and transforms run under.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub concurrency: usize,
    pub timeout: Duration,
    pub retry_schedule: Vec<Duration>,
    pub rule_limits: Limits,
}

impl Default for Defaults {
    /// SPEC 7's defaults.
    fn default() -> Self {
        Self {
            concurrency: 16,
            timeout: Duration::from_secs(10),
            retry_schedule: [5, 300, 1800, 7200, 18_000, 36_000, 36_000]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            rule_limits: Limits::default(),
        }
    }
}

/// Where a destination's URL came from.
#[derive(Clone, PartialEq, Eq)]
pub enum DestinationUrl {
    /// Written in the file (or given with `--forward-url`): not a secret.
    Plain(Url),
    /// Read from this environment variable: a secret (a Slack webhook URL
    /// is its own credential), shown as scheme and host only.
    FromEnv { variable: String, url: Url },
}

impl DestinationUrl {
    /// The URL requests go to.
    pub fn url(&self) -> &Url {
        match self {
            DestinationUrl::Plain(url) | DestinationUrl::FromEnv { url, .. } => url,
        }
    }

    /// The URL as logs, API answers and the console may show it: a URL from
    /// the environment as `scheme://host` only, a written one with any
    /// password masked.
    pub fn display(&self) -> String {
        match self {
            DestinationUrl::Plain(url) => crate::config::mask_url_password(url.as_str()),
            DestinationUrl::FromEnv { url, .. } => {
                format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""))
            }
        }
    }
}

impl std::fmt::Debug for DestinationUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DestinationUrl::Plain(_) => write!(f, "Plain({})", self.display()),
            DestinationUrl::FromEnv { variable, .. } => {
                write!(f, "FromEnv({variable}: {})", self.display())
            }
        }
    }
}

/// One extra header's value.
#[derive(Clone, PartialEq, Eq)]
pub enum HeaderSource {
    /// Written in the file.
    Plain(String),
    /// Read from the environment: masked in previews.
    FromEnv { variable: String, value: Secret },
}

impl HeaderSource {
    pub fn value(&self) -> &str {
        match self {
            HeaderSource::Plain(value) => value,
            HeaderSource::FromEnv { value, .. } => value.expose(),
        }
    }
}

impl std::fmt::Debug for HeaderSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderSource::Plain(value) => write!(f, "{value:?}"),
            HeaderSource::FromEnv { variable, .. } => write!(f, "FromEnv({variable}: ***)"),
        }
    }
}

/// How the body is made.
#[derive(Debug, Clone)]
pub enum BodySpec {
    Template(Template),
    Transform(body::Transform),
}

/// The content type of a transform's string body when the destination
/// does not set `content_type`: the script wrote text, and nothing says
/// what kind; a receiver expecting JSON gets a map instead.
pub const DEFAULT_TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// A validated destination.
#[derive(Clone)]
pub struct Destination {
    /// `[a-z0-9_-]{1,40}`: deliveries are keyed by it.
    pub name: String,
    pub url: DestinationUrl,
    pub body: BodySpec,
    pub when: Option<When>,
    /// Extra headers, in file order (names checked against leadscore's own).
    pub headers: Vec<(HeaderName, HeaderSource)>,
    pub auth: Option<Auth>,
    /// `signing_secret = { env }`: Standard Webhooks signatures.
    pub signing_secret: Option<WebhookSecret>,
    /// Content type of a transform's string body.
    pub content_type: String,
    pub rate: Option<RateLimit>,
    pub concurrency: usize,
    pub timeout: Duration,
    pub retry_schedule: Vec<Duration>,
    pub breaker: BreakerSettings,
    /// Another destination told when this one fails or recovers.
    pub alert: Option<String>,
}

impl std::fmt::Debug for Destination {
    /// Every secret redacted: the URL from the environment shows scheme and
    /// host, header values from the environment and credentials `***`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("body", &self.template_name())
            .field("when", &self.when.as_ref().map(When::text))
            .field("headers", &self.headers)
            .field("auth", &self.auth)
            .field("signing_secret", &self.signing_secret)
            .field("content_type", &self.content_type)
            .field("rate", &self.rate.map(|rate| rate.to_string()))
            .field("concurrency", &self.concurrency)
            .field("timeout", &self.timeout)
            .field("retry_schedule", &self.retry_schedule)
            .field("breaker", &self.breaker)
            .field("alert", &self.alert)
            .finish()
    }
}

/// The fields of `GET /destinations` that come from the file (SPEC 10);
/// the caller adds breaker, counts and last success, failure and error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DestinationStatus {
    pub name: String,
    /// The display form: scheme and host when the URL is a secret.
    pub url: String,
    /// `"scored-contact"`, `"slack"`, `"hubspot"` or `"transform:FILE"`.
    pub template: String,
    pub when: Option<String>,
    pub rate: Option<String>,
}

impl Destination {
    /// The `--forward-url` shorthand (SPEC 10): a destination named
    /// `default` that receives the scored contact, signed with the forward
    /// secret, with the forward headers.
    pub fn default_from_forward(
        url: Url,
        secret: Option<WebhookSecret>,
        headers: &HeaderMap,
        defaults: &Defaults,
    ) -> Self {
        let headers = headers
            .iter()
            .map(|(name, value)| {
                // `parse_header` accepted these as text; lossy only for
                // bytes no configuration can write.
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.clone(), HeaderSource::Plain(value))
            })
            .collect();
        Self {
            name: DEFAULT_DESTINATION.to_owned(),
            url: DestinationUrl::Plain(url),
            body: BodySpec::Template(Template::ScoredContact),
            when: None,
            headers,
            auth: None,
            signing_secret: secret,
            content_type: DEFAULT_TEXT_CONTENT_TYPE.to_owned(),
            rate: None,
            concurrency: defaults.concurrency,
            timeout: defaults.timeout,
            retry_schedule: defaults.retry_schedule.clone(),
            breaker: BreakerSettings::default(),
            alert: None,
        }
    }

    /// The URL as it may be shown (see [`DestinationUrl::display`]).
    pub fn display_url(&self) -> String {
        self.url.display()
    }

    /// `"scored-contact"`, `"slack"`, `"hubspot"` or `"transform:FILE"`.
    pub fn template_name(&self) -> String {
        match &self.body {
            BodySpec::Template(template) => template.name().to_owned(),
            BodySpec::Transform(transform) => format!("transform:{}", transform.file_as_written()),
        }
    }

    /// The fields of this destination in `GET /destinations`.
    pub fn status(&self) -> DestinationStatus {
        DestinationStatus {
            name: self.name.clone(),
            url: self.display_url(),
            template: self.template_name(),
            when: self.when.as_ref().map(|when| when.text().to_owned()),
            rate: self.rate.map(|rate| rate.to_string()),
        }
    }

    /// Whether this destination selects `event` (alert events bypass `when`).
    pub fn select(&self, event: &serde_json::Value) -> Selection {
        if body::is_alert_event(event) {
            return Selection::Selected;
        }
        select::select(self.when.as_ref(), event)
    }

    /// Whether an answer that looks successful is a failed attempt: for the
    /// `hubspot` template a `207`, or a `2xx` listing `errors` (see
    /// [`body::hubspot_failure`]). Other destinations go by status alone.
    pub fn failed_answer(&self, status: u16, response_body: &[u8]) -> Option<String> {
        match self.body {
            BodySpec::Template(Template::Hubspot) => body::hubspot_failure(status, response_body),
            _ => None,
        }
    }

    /// The bytes and content type of `body` (a transform's string goes
    /// with `content_type`); `None` for a skip.
    pub fn payload(&self, body: &Body) -> Option<body::Payload> {
        body.payload(&self.content_type)
    }

    /// The request body for `event` (see [`body::build`]).
    pub fn build_body(&self, event: &serde_json::Value) -> Result<Body, body::BodyError> {
        body::build(&self.body, event)
    }
}

/// The files a destinations set was read from, for reload watching: the
/// destinations file and the transforms it names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceFiles {
    pub destinations: PathBuf,
    pub transforms: Vec<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_shared_across_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Destination>();
        shared::<Destinations>();
        shared::<When>();
        shared::<auth::Credentials>();
        shared::<rate::LocalRateGate>();
        shared::<breaker::Breaker>();
    }

    #[test]
    fn secrets_never_show() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret} {secret:?}"), "*** ***");
        assert_eq!(secret.expose(), "hunter2");
        let url = DestinationUrl::FromEnv {
            variable: "SLACK_WEBHOOK_URL".into(),
            url: Url::parse("https://hooks.slack.com:443/services/T0/B0/XyZsecret").unwrap(),
        };
        assert_eq!(url.display(), "https://hooks.slack.com");
        assert_eq!(
            format!("{url:?}"),
            "FromEnv(SLACK_WEBHOOK_URL: https://hooks.slack.com)"
        );
        let plain = DestinationUrl::Plain(Url::parse("https://u:pw@crm.example/hook?x=1").unwrap());
        assert_eq!(plain.display(), "https://u:********@crm.example/hook?x=1");
    }

    #[test]
    fn the_forward_shorthand_is_a_default_destination() {
        let mut headers = HeaderMap::new();
        headers.insert("x-source", "leadscore".parse().unwrap());
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let defaults = Defaults::default();
        let destination = Destination::default_from_forward(
            Url::parse("https://crm.example/hooks/leads").unwrap(),
            Some(secret),
            &headers,
            &defaults,
        );
        assert_eq!(destination.name, "default");
        assert_eq!(destination.template_name(), "scored-contact");
        assert_eq!(destination.concurrency, 16);
        assert_eq!(destination.timeout, Duration::from_secs(10));
        assert_eq!(destination.retry_schedule.len(), 7);
        assert_eq!(destination.headers[0].1.value(), "leadscore");
        assert!(destination.signing_secret.is_some());
        assert_eq!(
            destination.status(),
            DestinationStatus {
                name: "default".into(),
                url: "https://crm.example/hooks/leads".into(),
                template: "scored-contact".into(),
                when: None,
                rate: None,
            }
        );
        let mut hot_only = destination.clone();
        hot_only.when = Some(
            When::compile(
                r#"tier == "hot""#,
                std::sync::Arc::new(script::Sandbox::new(&Limits::default())),
            )
            .unwrap(),
        );
        let cold = serde_json::json!({"type": "contact.scored", "tier": "cold"});
        let alert = serde_json::json!({"type": "destination.failing", "destination": "crm"});
        assert_eq!(hot_only.select(&cold), Selection::NotSelected);
        assert_eq!(hot_only.select(&alert), Selection::Selected, "alerts bypass when");
        assert_eq!(destination.select(&cold), Selection::Selected);
        assert_eq!(
            destination.failed_answer(207, br#"{"errors": [{"message": "x"}]}"#),
            None
        );
        let mut hubspot = destination.clone();
        hubspot.body = BodySpec::Template(Template::Hubspot);
        assert_eq!(
            hubspot
                .failed_answer(207, br#"{"errors": [{"message": "x"}]}"#)
                .as_deref(),
            Some("HubSpot answered 207 with 1 error(s): x")
        );
        let debug = format!("{destination:?}");
        assert!(debug.contains("WebhookSecret(***)"), "{debug}");
        assert!(!debug.contains("MfKQ9r8"), "{debug}");
    }
}
