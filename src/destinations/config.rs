//! The destinations file (SPEC 10): a `[[destination]]` array of tables,
//! read into validated [`Destination`]s.
//!
//! The file is walked as a spanned TOML tree, so every error names the
//! file, line and column, the destination and the setting:
//!
//! ```text
//! destinations.toml:14:8: destination "crm": rate: "0/10s": the number of requests must be at least 1
//! ```
//!
//! Unknown keys are errors (with the closest known key); a value written
//! `{ env = "NAME" }` is read through the `env` function the caller passes
//! (tests pass a map, never the process environment), and a missing
//! variable is an error that names it. Values read from the environment
//! never appear in an error.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use reqwest::Url;
use reqwest::header::HeaderName;
use serde::Serialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::auth::{Auth, OAuth2Settings};
use super::body::{Template, Transform};
use super::breaker::BreakerSettings;
use super::rate::RateLimit;
use super::script::Sandbox;
use super::select::{EVENT_FIELDS, When};
use super::{
    BodySpec, DEFAULT_TEXT_CONTENT_TYPE, Defaults, Destination, DestinationUrl, HeaderSource, Secret,
    SourceFiles,
};
use crate::score::tiers::line_column;
use crate::signature::WebhookSecret;

/// The settings of a `[[destination]]`.
const KEYS: [&str; 15] = [
    "name",
    "url",
    "template",
    "transform",
    "when",
    "headers",
    "auth",
    "signing_secret",
    "content_type",
    "rate",
    "concurrency",
    "timeout",
    "retry_schedule",
    "breaker",
    "alert",
];

/// Most requests in flight per instance, as `--forward-concurrency`.
const MAX_CONCURRENCY: i64 = 1024;
/// Longest destination name.
const MAX_NAME_LEN: usize = 40;

/// The process environment, for callers outside tests.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// One problem in a destinations file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigError {
    /// The destinations file, or the transform script the error is in.
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The destination's name (or `#N`, its place, when it has no valid name).
    pub destination: Option<String>,
    /// The setting, e.g. `rate` or `auth.oauth2.token_url`.
    pub setting: Option<String>,
    /// What is wrong, without the place.
    pub problem: String,
}

impl ConfigError {
    /// The message without the file position: destination, setting and
    /// problem (the `message` of `GET /destinations`' `last_error`).
    pub fn message(&self) -> String {
        let mut message = String::new();
        if let Some(destination) = &self.destination {
            message.push_str(&format!("destination {destination}: "));
        }
        if let Some(setting) = &self.setting {
            message.push_str(&format!("{setting}: "));
        }
        message.push_str(&self.problem);
        message
    }
}

impl ConfigError {
    /// `last_error` of `GET /destinations` (SPEC 10): `{"file", "line",
    /// "column", "message", "at"}`, `at` being when the load failed.
    pub fn last_error_json(&self, at: std::time::SystemTime) -> serde_json::Value {
        serde_json::json!({
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "message": self.message(),
            "at": crate::time::format_time(at),
        })
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file,
            self.line,
            self.column,
            self.message()
        )
    }
}

/// Every problem that keeps a destinations file from loading, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct LoadError(pub Vec<ConfigError>);

impl LoadError {
    /// The first problem (what `GET /destinations` shows).
    pub fn first(&self) -> Option<&ConfigError> {
        self.0.first()
    }
}

/// A loaded destinations set.
#[derive(Debug, Clone, Default)]
pub struct Destinations {
    /// In file order.
    pub list: Vec<Destination>,
    /// The files read, to watch for reload.
    pub files: SourceFiles,
    /// What loads but is most likely a mistake (a `when` reading a name
    /// that is no field of the event): for `destinations check` and the log.
    pub warnings: Vec<ConfigError>,
}

impl Destinations {
    /// Reads and validates `path`.
    pub fn load(
        path: &Path,
        defaults: &Defaults,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            LoadError(vec![ConfigError {
                file: path.display().to_string(),
                line: 0,
                column: 0,
                destination: None,
                setting: None,
                problem: format!("cannot read the destinations file: {e}"),
            }])
        })?;
        Self::parse(path, &text, defaults, env)
    }

    /// Validates `text`, the contents of `path` (transforms are read
    /// relative to it).
    pub fn parse(
        path: &Path,
        text: &str,
        defaults: &Defaults,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, LoadError> {
        let mut reader = Reader {
            path,
            text,
            env,
            defaults,
            sandbox: Arc::new(Sandbox::new(&defaults.rule_limits)),
            errors: Vec::new(),
            warnings: Vec::new(),
            transforms: Vec::new(),
        };
        let list = reader.read_file();
        let mut errors = reader.errors;
        if errors.is_empty() {
            return Ok(Self {
                list,
                files: SourceFiles {
                    destinations: path.to_path_buf(),
                    transforms: reader.transforms,
                },
                warnings: reader.warnings,
            });
        }
        // The destinations file's errors first, in file order; then those
        // in transform scripts.
        let file = path.display().to_string();
        errors.sort_by_key(|e| (e.file != file, e.line, e.column));
        Err(LoadError(errors))
    }

    pub fn get(&self, name: &str) -> Option<&Destination> {
        self.list.iter().find(|destination| destination.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Destination> {
        self.list.iter()
    }
}

type Value<'i> = Spanned<DeValue<'i>>;

struct Reader<'a> {
    path: &'a Path,
    text: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    defaults: &'a Defaults,
    sandbox: Arc<Sandbox>,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
    transforms: Vec<PathBuf>,
}

/// The place errors of one destination name.
struct Place<'d> {
    destination: &'d str,
}

impl Reader<'_> {
    fn error_at(
        &mut self,
        span: Range<usize>,
        destination: Option<&str>,
        setting: Option<&str>,
        problem: String,
    ) {
        let (line, column) = line_column(self.text, span.start);
        self.errors.push(ConfigError {
            file: self.path.display().to_string(),
            line,
            column,
            destination: destination.map(str::to_owned),
            setting: setting.map(str::to_owned),
            problem,
        });
    }

    fn error(&mut self, span: Range<usize>, place: &Place<'_>, setting: &str, problem: String) {
        self.error_at(span, Some(place.destination), Some(setting), problem);
    }

    fn read_file(&mut self) -> Vec<Destination> {
        let root = match DeTable::parse(self.text) {
            Ok(root) => root,
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                self.error_at(span, None, None, e.message().trim_end().to_owned());
                return Vec::new();
            }
        };
        let mut tables = Vec::new();
        for (key, value) in root.get_ref() {
            if key.get_ref() != "destination" {
                let hint = crate::config::did_you_mean(key.get_ref(), ["destination"]);
                let problem = format!(
                    "unknown key {:?}{hint}; the file holds [[destination]] tables",
                    key.get_ref()
                );
                self.error_at(key.span(), None, None, problem);
                continue;
            }
            match value.get_ref() {
                DeValue::Array(items) if items.iter().all(|item| item.get_ref().is_table()) => {
                    tables.extend(items.iter());
                }
                _ => self.error_at(
                    value.span(),
                    None,
                    Some("destination"),
                    "destinations are written as [[destination]] tables".to_owned(),
                ),
            }
        }
        let mut list: Vec<(Destination, Option<Range<usize>>)> = Vec::new();
        let mut seen = BTreeMap::new();
        for (index, table) in tables.into_iter().enumerate() {
            let Some((destination, name_span, alert_span)) = self.read_destination(index, table) else {
                continue;
            };
            if let Some(first_line) = seen.get(&destination.name) {
                let problem = format!(
                    "another destination already has this name (line {first_line}); names must be unique"
                );
                self.error_at(
                    name_span,
                    Some(&format!("{:?}", destination.name)),
                    Some("name"),
                    problem,
                );
                continue;
            }
            seen.insert(
                destination.name.clone(),
                line_column(self.text, name_span.start).0,
            );
            list.push((destination, alert_span));
        }
        self.check_alerts(&list);
        list.into_iter().map(|(destination, _)| destination).collect()
    }

    /// One destination, or `None` after recording its errors.
    fn read_destination(
        &mut self,
        index: usize,
        table: &Value<'_>,
    ) -> Option<(Destination, Range<usize>, Option<Range<usize>>)> {
        let DeValue::Table(table_map) = table.get_ref() else {
            return None;
        };
        let errors_before = self.errors.len();
        let get = |key: &str| table_map.iter().find(|(k, _)| k.get_ref() == key).map(|(_, v)| v);
        // The name first: every other error names the destination.
        let fallback = format!("#{}", index + 1);
        let (name, name_span) = match get("name") {
            Some(value) => match value.get_ref().as_str() {
                Some(name) if valid_name(name) => (format!("{name:?}"), value.span()),
                Some(name) => {
                    let problem =
                        format!("{name:?} is not a valid name: use 1 to {MAX_NAME_LEN} of a-z, 0-9, _ and -");
                    self.error_at(value.span(), Some(&fallback), Some("name"), problem);
                    (fallback.clone(), value.span())
                }
                None => {
                    let problem = format!("expected a string, found {}", value.get_ref().type_str());
                    self.error_at(value.span(), Some(&fallback), Some("name"), problem);
                    (fallback.clone(), value.span())
                }
            },
            None => {
                let problem = "a destination needs a name (name = \"crm\")".to_owned();
                self.error_at(table.span(), Some(&fallback), None, problem);
                (fallback.clone(), table.span())
            }
        };
        let place = Place { destination: &name };
        for (key, _) in table_map.iter() {
            if !KEYS.contains(&key.get_ref().as_ref()) {
                let hint = crate::config::did_you_mean(key.get_ref(), KEYS);
                self.error(
                    key.span(),
                    &place,
                    key.get_ref(),
                    format!("unknown setting{hint}"),
                );
            }
        }
        let url = match get("url") {
            Some(value) => self.url(&place, value),
            None => {
                self.error(
                    name_span.clone(),
                    &place,
                    "url",
                    "a destination needs a url".to_owned(),
                );
                None
            }
        };
        let body = match (get("template"), get("transform")) {
            (Some(_), Some(transform)) => {
                let problem = "give either template or transform, not both".to_owned();
                self.error(transform.span(), &place, "transform", problem);
                None
            }
            (Some(template), None) => self.template(&place, template),
            (None, Some(transform)) => self.transform(&place, transform),
            (None, None) => Some(BodySpec::Template(Template::ScoredContact)),
        };
        let when = get("when").and_then(|value| self.when(&place, value));
        let headers = get("headers").map_or_else(Vec::new, |value| self.headers(&place, value));
        let auth = get("auth").and_then(|value| self.auth(&place, value));
        if auth.is_some()
            && let Some((name, _)) = headers
                .iter()
                .find(|(name, _)| *name == reqwest::header::AUTHORIZATION)
        {
            let span = get("headers").map_or(name_span.clone(), |v| v.span());
            let problem = format!("{name} is set by auth; give one or the other");
            self.error(span, &place, "headers", problem);
        }
        let signing_secret = get("signing_secret").and_then(|value| {
            let secret = self.env_only(&place, "signing_secret", value)?;
            match WebhookSecret::parse(secret.expose()) {
                Ok(secret) => Some(secret),
                Err(why) => {
                    self.error(value.span(), &place, "signing_secret", why);
                    None
                }
            }
        });
        let content_type = match get("content_type") {
            Some(value) => self.content_type(&place, value, get("template").is_some()),
            None => Some(DEFAULT_TEXT_CONTENT_TYPE.to_owned()),
        };
        let rate = get("rate").and_then(|value| {
            let text = self.string(&place, "rate", value)?;
            self.check(&place, "rate", value, RateLimit::parse(text))
        });
        let concurrency = match get("concurrency") {
            Some(value) => self
                .integer(&place, "concurrency", value, 1..=MAX_CONCURRENCY)
                .map(|n| n as usize),
            None => Some(self.defaults.concurrency),
        };
        let timeout = match get("timeout") {
            Some(value) => self.string(&place, "timeout", value).and_then(|text| {
                self.check(
                    &place,
                    "timeout",
                    value,
                    crate::config::parse_positive_duration(text),
                )
            }),
            None => Some(self.defaults.timeout),
        };
        let retry_schedule = match get("retry_schedule") {
            Some(value) => self.retry_schedule(&place, value),
            None => Some(self.defaults.retry_schedule.clone()),
        };
        let breaker = match get("breaker") {
            Some(value) => self.breaker(&place, value),
            None => Some(BreakerSettings::default()),
        };
        let alert = get("alert").and_then(|value| {
            let target = self.string(&place, "alert", value)?;
            Some((target.to_owned(), value.span()))
        });
        if self.errors.len() > errors_before {
            return None;
        }
        let name = get("name")?.get_ref().as_str()?.to_owned();
        let (alert, alert_span) = alert.map_or((None, None), |(target, span)| (Some(target), Some(span)));
        Some((
            Destination {
                name,
                url: url?,
                body: body?,
                when,
                headers,
                auth,
                signing_secret,
                content_type: content_type?,
                rate,
                concurrency: concurrency?,
                timeout: timeout?,
                retry_schedule: retry_schedule?,
                breaker: breaker?,
                alert,
            },
            name_span,
            alert_span,
        ))
    }

    /// `Ok` as is; `Err(why)` recorded at the value.
    fn check<T>(
        &mut self,
        place: &Place<'_>,
        setting: &str,
        value: &Value<'_>,
        result: Result<T, String>,
    ) -> Option<T> {
        result
            .map_err(|why| self.error(value.span(), place, setting, why))
            .ok()
    }

    fn string<'v>(&mut self, place: &Place<'_>, setting: &str, value: &'v Value<'_>) -> Option<&'v str> {
        match value.get_ref().as_str() {
            Some(text) => Some(text),
            None => {
                let problem = format!("expected a string, found {}", value.get_ref().type_str());
                self.error(value.span(), place, setting, problem);
                None
            }
        }
    }

    /// An integer within `range`.
    fn integer(
        &mut self,
        place: &Place<'_>,
        setting: &str,
        value: &Value<'_>,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<i64> {
        let problem = match value.get_ref().as_integer() {
            Some(n) => match i64::from_str_radix(n.as_str(), n.radix()) {
                Ok(n) if range.contains(&n) => return Some(n),
                _ => format!("{n} is not in {}..={}", range.start(), range.end()),
            },
            None => format!("expected an integer, found {}", value.get_ref().type_str()),
        };
        self.error(value.span(), place, setting, problem);
        None
    }

    /// The variable of `{ env = "NAME" }`, if `value` is written so.
    fn env_name<'v>(value: &'v DeValue<'_>) -> Option<&'v str> {
        let table = value.as_table()?;
        let mut entries = table.iter();
        match (entries.next(), entries.next()) {
            (Some((key, name)), None) if key.get_ref() == "env" => name.get_ref().as_str(),
            _ => None,
        }
    }

    /// Reads an environment variable named in the file. Surrounding
    /// whitespace (a newline left by a secrets file) is not part of it.
    fn read_env(
        &mut self,
        place: &Place<'_>,
        setting: &str,
        span: Range<usize>,
        variable: &str,
    ) -> Option<Secret> {
        match (self.env)(variable) {
            Some(value) if !value.trim().is_empty() => Some(Secret::new(value.trim())),
            _ => {
                let problem = format!("environment variable {variable} is not set");
                self.error(span, place, setting, problem);
                None
            }
        }
    }

    /// A value that must come from the environment: `{ env = "NAME" }`.
    fn env_only(&mut self, place: &Place<'_>, setting: &str, value: &Value<'_>) -> Option<Secret> {
        match Self::env_name(value.get_ref()) {
            Some(variable) => self.read_env(place, setting, value.span(), variable),
            None => {
                let problem =
                    format!("a secret comes from the environment: write {setting} = {{ env = \"NAME\" }}");
                self.error(value.span(), place, setting, problem);
                None
            }
        }
    }

    /// A string or `{ env = "NAME" }`: the text and the variable it came from.
    fn text_or_env(
        &mut self,
        place: &Place<'_>,
        setting: &str,
        value: &Value<'_>,
    ) -> Option<(String, Option<(String, Secret)>)> {
        if let Some(text) = value.get_ref().as_str() {
            return Some((text.to_owned(), None));
        }
        if let Some(variable) = Self::env_name(value.get_ref()) {
            let secret = self.read_env(place, setting, value.span(), variable)?;
            return Some((secret.expose().to_owned(), Some((variable.to_owned(), secret))));
        }
        let problem = format!(
            "expected a string or {{ env = \"NAME\" }}, found {}",
            value.get_ref().type_str()
        );
        self.error(value.span(), place, setting, problem);
        None
    }

    fn url(&mut self, place: &Place<'_>, value: &Value<'_>) -> Option<DestinationUrl> {
        let (text, from_env) = self.text_or_env(place, "url", value)?;
        // A URL from the environment is a secret: the message never quotes it.
        let shown = match &from_env {
            Some((variable, _)) => format!("the URL in {variable}"),
            None => format!("{text:?}"),
        };
        let url = match Url::parse(text.trim()) {
            Ok(url) => url,
            Err(e) => {
                self.error(value.span(), place, "url", format!("{shown} is not a URL ({e})"));
                return None;
            }
        };
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            let problem = format!("{shown} must be an http or https URL with a host");
            self.error(value.span(), place, "url", problem);
            return None;
        }
        Some(match from_env {
            Some((variable, _)) => DestinationUrl::FromEnv { variable, url },
            None => DestinationUrl::Plain(url),
        })
    }

    fn template(&mut self, place: &Place<'_>, value: &Value<'_>) -> Option<BodySpec> {
        let name = self.string(place, "template", value)?;
        match Template::parse(name) {
            Some(template) => Some(BodySpec::Template(template)),
            None => {
                let hint = crate::config::did_you_mean(name, Template::NAMES);
                let problem = format!(
                    "{name:?} is not a template{hint}; use one of {} or transform = \"FILE.rhai\"",
                    Template::NAMES.join(", ")
                );
                self.error(value.span(), place, "template", problem);
                None
            }
        }
    }

    fn transform(&mut self, place: &Place<'_>, value: &Value<'_>) -> Option<BodySpec> {
        let written = self.string(place, "transform", value)?.to_owned();
        let base = self.path.parent().unwrap_or(Path::new(""));
        let path = base.join(&written);
        self.transforms.push(path.clone());
        let script = match std::fs::read_to_string(&path) {
            Ok(script) => script,
            Err(e) => {
                let problem = format!("cannot read {}: {e}", path.display());
                self.error(value.span(), place, "transform", problem);
                return None;
            }
        };
        match self.sandbox.compile_script(&script) {
            Ok(ast) => Some(BodySpec::Transform(Transform::new(
                written,
                path,
                ast,
                self.sandbox.clone(),
            ))),
            Err(e) => {
                self.errors.push(ConfigError {
                    file: path.display().to_string(),
                    line: e.line,
                    column: e.column,
                    destination: Some(place.destination.to_owned()),
                    setting: Some("transform".to_owned()),
                    problem: e.message,
                });
                None
            }
        }
    }

    fn when(&mut self, place: &Place<'_>, value: &Value<'_>) -> Option<When> {
        let text = self.string(place, "when", value)?;
        if text.trim().is_empty() {
            let problem = "is empty; leave `when` out to take every event".to_owned();
            self.error(value.span(), place, "when", problem);
            return None;
        }
        match When::compile(text, self.sandbox.clone()) {
            Ok(when) => {
                for name in when.unknown_names() {
                    let hint = crate::config::did_you_mean(name, EVENT_FIELDS);
                    let problem = format!("`{name}` is no field of the event, so it is always (){hint}");
                    let (line, column) = line_column(self.text, value.span().start);
                    self.warnings.push(ConfigError {
                        file: self.path.display().to_string(),
                        line,
                        column,
                        destination: Some(place.destination.to_owned()),
                        setting: Some("when".to_owned()),
                        problem,
                    });
                }
                Some(when)
            }
            Err(e) => {
                let at = offset_in_string(self.text, value.span(), e.line, e.column);
                let problem = match e.line {
                    1 => format!("{} (column {} of the expression)", e.message, e.column),
                    line => format!(
                        "{} (line {line}, column {} of the expression)",
                        e.message, e.column
                    ),
                };
                self.error(at..at, place, "when", problem);
                None
            }
        }
    }

    fn headers(&mut self, place: &Place<'_>, value: &Value<'_>) -> Vec<(HeaderName, HeaderSource)> {
        let Some(table) = value.get_ref().as_table() else {
            let problem = format!(
                "expected a table of header names and values, found {}",
                value.get_ref().type_str()
            );
            self.error(value.span(), place, "headers", problem);
            return Vec::new();
        };
        let mut headers = Vec::new();
        // In file order (the parsed table is sorted by name).
        let mut entries: Vec<_> = table.iter().collect();
        entries.sort_by_key(|(key, _)| key.span().start);
        for (key, item) in entries {
            let setting = format!("headers.{}", key.get_ref());
            let Some((text, from_env)) = self.text_or_env(place, &setting, item) else {
                continue;
            };
            match crate::deliver::parse_header(&format!("{}: {text}", key.get_ref())) {
                Ok((name, _)) if headers.iter().any(|(given, _)| *given == name) => {
                    let problem = format!("header {name} is given twice (names ignore case)");
                    self.error(key.span(), place, &setting, problem);
                }
                Ok((name, _)) => {
                    let source = match from_env {
                        Some((variable, value)) => HeaderSource::FromEnv { variable, value },
                        None => HeaderSource::Plain(text.trim().to_owned()),
                    };
                    headers.push((name, source));
                }
                // `parse_header` never quotes a value.
                Err(why) => self.error(key.span(), place, &setting, why),
            }
        }
        headers
    }

    fn auth(&mut self, place: &Place<'_>, value: &Value<'_>) -> Option<Auth> {
        let forms = "auth is { bearer_env = \"NAME\" }, { basic_user = \"u\", basic_password_env = \"NAME\" } \
                     or { oauth2 = { token_url, client_id, client_secret_env, scope } }";
        let Some(table) = value.get_ref().as_table() else {
            self.error(value.span(), place, "auth", format!("expected a table: {forms}"));
            return None;
        };
        let keys: BTreeSet<&str> = table.iter().map(|(k, _)| k.get_ref().as_ref()).collect();
        let field = |key: &str| table.iter().find(|(k, _)| k.get_ref() == key).map(|(_, v)| v);
        let env_variable = |reader: &mut Self, setting: &str, value: &Value<'_>| -> Option<Secret> {
            let variable = reader.string(place, setting, value)?;
            reader.read_env(place, setting, value.span(), variable)
        };
        let expected = |names: &[&str]| keys == names.iter().copied().collect::<BTreeSet<_>>();
        if expected(&["bearer_env"]) {
            let at = field("bearer_env")?;
            let token = env_variable(self, "auth.bearer_env", at)?;
            if reqwest::header::HeaderValue::from_str(token.expose()).is_err() {
                let problem = "the token cannot be sent in a header (it has control characters)".to_owned();
                self.error(at.span(), place, "auth.bearer_env", problem);
                return None;
            }
            return Some(Auth::Bearer { token });
        }
        if expected(&["basic_user", "basic_password_env"]) {
            let user = self.string(place, "auth.basic_user", field("basic_user")?);
            let password = env_variable(self, "auth.basic_password_env", field("basic_password_env")?);
            if let Some(user) = user
                && user.contains(':')
            {
                let problem = "a basic-auth user name cannot contain ':'".to_owned();
                self.error(field("basic_user")?.span(), place, "auth.basic_user", problem);
                return None;
            }
            return Some(Auth::Basic {
                user: user?.to_owned(),
                password: password?,
            });
        }
        if expected(&["oauth2"]) {
            return self.oauth2(place, field("oauth2")?);
        }
        self.error(value.span(), place, "auth", format!("unknown form; {forms}"));
        None
    }

    fn oauth2(&mut self, place: &Place<'_>, value: &Value<'_>) -> Option<Auth> {
        let Some(table) = value.get_ref().as_table() else {
            let problem = "expected { token_url, client_id, client_secret_env, scope }".to_owned();
            self.error(value.span(), place, "auth.oauth2", problem);
            return None;
        };
        let known = ["token_url", "client_id", "client_secret_env", "scope"];
        let mut complete = true;
        for (key, _) in table.iter() {
            if !known.contains(&key.get_ref().as_ref()) {
                let hint = crate::config::did_you_mean(key.get_ref(), known);
                let setting = format!("auth.oauth2.{}", key.get_ref());
                self.error(key.span(), place, &setting, format!("unknown setting{hint}"));
                complete = false;
            }
        }
        let field = |key: &str| table.iter().find(|(k, _)| k.get_ref() == key).map(|(_, v)| v);
        let mut required = |reader: &mut Self, key: &str| -> Option<String> {
            let setting = format!("auth.oauth2.{key}");
            match field(key) {
                Some(value) => reader.string(place, &setting, value).map(str::to_owned),
                None => {
                    reader.error(value.span(), place, &setting, "is missing".to_owned());
                    complete = false;
                    None
                }
            }
        };
        let token_url = required(self, "token_url");
        let client_id = required(self, "client_id");
        let secret_variable = required(self, "client_secret_env");
        let scope = match field("scope") {
            Some(value) => Some(self.string(place, "auth.oauth2.scope", value)?.to_owned()),
            None => None,
        };
        let client_secret = match (&secret_variable, field("client_secret_env")) {
            (Some(variable), Some(at)) => {
                self.read_env(place, "auth.oauth2.client_secret_env", at.span(), variable)
            }
            _ => None,
        };
        let token_url = token_url.and_then(|text| {
            let at = field("token_url")?.span();
            match Url::parse(&text) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
                _ => {
                    let problem = format!("{text:?} is not an http or https URL");
                    self.error(at, place, "auth.oauth2.token_url", problem);
                    None
                }
            }
        });
        if !complete {
            return None;
        }
        Some(Auth::OAuth2(OAuth2Settings {
            token_url: token_url?,
            client_id: client_id?,
            client_secret: client_secret?,
            scope,
        }))
    }

    fn content_type(&mut self, place: &Place<'_>, value: &Value<'_>, template: bool) -> Option<String> {
        let text = self.string(place, "content_type", value)?;
        if template {
            let problem = "content_type is for a transform's string bodies; templates send JSON".to_owned();
            self.error(value.span(), place, "content_type", problem);
            return None;
        }
        if text.trim().is_empty() || reqwest::header::HeaderValue::from_str(text.trim()).is_err() {
            let problem = format!("{text:?} is not a content type (e.g. text/csv)");
            self.error(value.span(), place, "content_type", problem);
            return None;
        }
        Some(text.trim().to_owned())
    }

    fn retry_schedule(&mut self, place: &Place<'_>, value: &Value<'_>) -> Option<Vec<std::time::Duration>> {
        let text = match value.get_ref() {
            DeValue::String(text) => text.to_string(),
            DeValue::Array(items) if items.iter().all(|item| item.get_ref().is_str()) => items
                .iter()
                .filter_map(|item| item.get_ref().as_str())
                .collect::<Vec<_>>()
                .join(","),
            other => {
                let problem = format!(
                    "expected durations, e.g. \"5s,5m,30m\" or [\"5s\", \"5m\"], found {}",
                    other.type_str()
                );
                self.error(value.span(), place, "retry_schedule", problem);
                return None;
            }
        };
        self.check(
            place,
            "retry_schedule",
            value,
            crate::config::parse_duration_list(&text),
        )
    }

    fn breaker(&mut self, place: &Place<'_>, value: &Value<'_>) -> Option<BreakerSettings> {
        let Some(table) = value.get_ref().as_table() else {
            let problem = "expected { failures = 10, cooldown = \"1m\" }".to_owned();
            self.error(value.span(), place, "breaker", problem);
            return None;
        };
        let mut settings = BreakerSettings::default();
        let mut valid = true;
        for (key, item) in table.iter() {
            let setting = format!("breaker.{}", key.get_ref());
            match key.get_ref().as_ref() {
                "failures" => match self.integer(place, &setting, item, 1..=1_000_000) {
                    Some(n) => settings.failures = n as u32,
                    None => valid = false,
                },
                "cooldown" => {
                    match self
                        .string(place, &setting, item)
                        .map(crate::config::parse_positive_duration)
                    {
                        Some(Ok(cooldown)) => settings.cooldown = cooldown,
                        Some(Err(why)) => {
                            self.error(item.span(), place, &setting, why);
                            valid = false;
                        }
                        None => valid = false,
                    }
                }
                other => {
                    let hint = crate::config::did_you_mean(other, ["failures", "cooldown"]);
                    self.error(key.span(), place, &setting, format!("unknown setting{hint}"));
                    valid = false;
                }
            }
        }
        valid.then_some(settings)
    }

    /// Every `alert` names another destination, and no chain of alerts
    /// leads back to where it started.
    fn check_alerts(&mut self, list: &[(Destination, Option<Range<usize>>)]) {
        let alerts: BTreeMap<&str, &str> = list
            .iter()
            .filter_map(|(d, _)| Some((d.name.as_str(), d.alert.as_deref()?)))
            .collect();
        let mut in_reported_cycle = BTreeSet::new();
        for (destination, span) in list {
            let (Some(target), Some(span)) = (destination.alert.as_deref(), span.clone()) else {
                continue;
            };
            let place = Place {
                destination: &format!("{:?}", destination.name),
            };
            if !list.iter().any(|(d, _)| d.name == target) {
                let hint = crate::config::did_you_mean(target, list.iter().map(|(d, _)| d.name.as_str()));
                self.error(
                    span,
                    &place,
                    "alert",
                    format!("no destination is named {target:?}{hint}"),
                );
                continue;
            }
            let mut chain = vec![destination.name.as_str()];
            let mut next = Some(target);
            while let Some(current) = next {
                if current == destination.name {
                    chain.push(current);
                    if in_reported_cycle.insert(destination.name.as_str()) {
                        in_reported_cycle.extend(chain.iter().copied());
                        let problem = format!(
                            "alerts lead back to this destination ({}); an alert destination cannot alert back",
                            chain.join(" → ")
                        );
                        self.error(span.clone(), &place, "alert", problem);
                    }
                    break;
                }
                if chain.contains(&current) {
                    break; // a cycle further on, reported from one of its own
                }
                chain.push(current);
                next = alerts.get(current).copied();
            }
        }
    }
}

fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The offset in the file of `line`:`column` (1-based) of the text of the
/// TOML string at `span`: exact for strings without escapes.
fn offset_in_string(file: &str, span: Range<usize>, line: usize, column: usize) -> usize {
    let raw = file.get(span.clone()).unwrap_or("");
    let quote = if raw.starts_with("'''") || raw.starts_with("\"\"\"") {
        3
    } else {
        1
    };
    let mut start = (span.start + quote).min(span.end);
    // A multi-line string's first newline is not part of it.
    if quote == 3 && file[start..].starts_with('\n') {
        start += 1;
    } else if quote == 3 && file[start..].starts_with("\r\n") {
        start += 2;
    }
    let content = &file[start..span.end];
    let mut offset = start;
    let mut rest = content;
    for _ in 1..line {
        match rest.find('\n') {
            Some(newline) => {
                offset += newline + 1;
                rest = &rest[newline + 1..];
            }
            None => break,
        }
    }
    let within: usize = rest
        .chars()
        .take(column.saturating_sub(1))
        .map(char::len_utf8)
        .sum();
    (offset + within).min(span.end)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;
    use crate::destinations::{Body, Selection};

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn parse_with(text: &str, env: &[(&str, &str)]) -> Result<Destinations, LoadError> {
        Destinations::parse(
            Path::new("destinations.toml"),
            text,
            &Defaults::default(),
            &env_of(env),
        )
    }

    fn errors(text: &str, env: &[(&str, &str)]) -> Vec<String> {
        parse_with(text, env)
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const SPEC_EXAMPLE: &str = r#"
[[destination]]
name = "crm"                           # [a-z0-9_-]{1,40}; deliveries are keyed by it
url = "https://api.hubapi.com/crm/v3/objects/contacts/batch/upsert"
template = "hubspot"
when = 'tier != "disqualified"'
auth = { bearer_env = "HUBSPOT_TOKEN" }
rate = "100/10s"
concurrency = 4
timeout = "10s"
retry_schedule = "5s,5m,30m,2h,5h,10h,10h"
breaker = { failures = 10, cooldown = "1m" }
alert = "ops-slack"

[[destination]]
name = "ops-slack"
url = { env = "SLACK_WEBHOOK_URL" }
template = "slack"
when = 'tier == "hot"'
rate = "1/1s"
"#;

    const SLACK_URL: &str = "https://hooks.slack.com/services/T000/B000/XXXXsecretXXXX";

    #[test]
    fn the_spec_example_loads() {
        let env = [
            ("HUBSPOT_TOKEN", "pat-na1-secret"),
            ("SLACK_WEBHOOK_URL", SLACK_URL),
        ];
        let set = parse_with(SPEC_EXAMPLE, &env).unwrap();
        assert_eq!(set.list.len(), 2);
        let crm = set.get("crm").unwrap();
        assert_eq!(
            crm.url.url().as_str(),
            "https://api.hubapi.com/crm/v3/objects/contacts/batch/upsert"
        );
        assert_eq!(crm.template_name(), "hubspot");
        assert_eq!(crm.when.as_ref().unwrap().text(), r#"tier != "disqualified""#);
        assert_eq!(
            crm.auth,
            Some(Auth::Bearer {
                token: Secret::new("pat-na1-secret")
            })
        );
        assert_eq!(crm.rate.unwrap().to_string(), "100/10s");
        assert_eq!(crm.concurrency, 4);
        assert_eq!(crm.timeout, Duration::from_secs(10));
        assert_eq!(crm.retry_schedule.len(), 7);
        assert_eq!(crm.retry_schedule[6], Duration::from_secs(36_000));
        assert_eq!(
            crm.breaker,
            BreakerSettings {
                failures: 10,
                cooldown: Duration::from_secs(60)
            }
        );
        assert_eq!(crm.alert.as_deref(), Some("ops-slack"));
        let slack = set.get("ops-slack").unwrap();
        assert_eq!(slack.url.url().as_str(), SLACK_URL);
        assert_eq!(slack.display_url(), "https://hooks.slack.com");
        assert_eq!(slack.concurrency, 16, "the default");
        assert_eq!(slack.breaker, BreakerSettings::default());
        assert_eq!(
            serde_json::to_value(slack.status()).unwrap(),
            serde_json::json!({"name": "ops-slack", "url": "https://hooks.slack.com", "template": "slack",
                               "when": "tier == \"hot\"", "rate": "1/1s"})
        );
        let debug = format!("{:?}", set);
        assert!(
            !debug.contains("XXXXsecret") && !debug.contains("pat-na1"),
            "{debug}"
        );
    }

    #[test]
    fn missing_environment_variables_name_destination_and_setting() {
        let errors = errors(SPEC_EXAMPLE, &[]);
        assert_eq!(
            errors,
            [
                "destinations.toml:7:23: destination \"crm\": auth.bearer_env: environment variable HUBSPOT_TOKEN is not set",
                "destinations.toml:17:7: destination \"ops-slack\": url: environment variable SLACK_WEBHOOK_URL is not set",
            ]
        );
    }

    #[test]
    fn unknown_keys_wrong_types_and_bad_values_are_placed() {
        let text = r#"
[[destination]]
name = "crm"
url = "ftp://x.example/"
templte = "hubspot"
concurrency = 0
timeout = "1000y"
rate = "0/1s"
retry_schedule = 5
breaker = { failures = 0, cooldwn = "1m" }
when = 'tier == '
"#;
        assert_eq!(
            errors(text, &[]),
            [
                "destinations.toml:4:7: destination \"crm\": url: \"ftp://x.example/\" must be an http or https URL with a host",
                "destinations.toml:5:1: destination \"crm\": templte: unknown setting; did you mean \"template\"?",
                "destinations.toml:6:15: destination \"crm\": concurrency: 0 is not in 1..=1024",
                "destinations.toml:7:11: destination \"crm\": timeout: \"1000y\" is too long (at most 100 years)",
                "destinations.toml:8:8: destination \"crm\": rate: \"0/1s\": the number of requests must be at least 1",
                "destinations.toml:9:18: destination \"crm\": retry_schedule: expected durations, e.g. \"5s,5m,30m\" or [\"5s\", \"5m\"], found integer",
                "destinations.toml:10:24: destination \"crm\": breaker.failures: 0 is not in 1..=1000000",
                "destinations.toml:10:27: destination \"crm\": breaker.cooldwn: unknown setting; did you mean \"cooldown\"?",
                "destinations.toml:11:17: destination \"crm\": when: Script is incomplete (column 9 of the expression)",
            ]
        );
    }

    #[test]
    fn the_example_file_loads_with_its_transform() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("destinations.example.toml");
        let env = env_of(&[
            ("HUBSPOT_TOKEN", "pat-na1-token"),
            ("SLACK_WEBHOOK_URL", SLACK_URL),
            ("NURTURE_API_KEY", "nurture-key"),
            ("NURTURE_SIGNING_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ]);
        let set = Destinations::load(&path, &Defaults::default(), &env).unwrap();
        let names: Vec<&str> = set.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["crm", "ops-slack", "nurture"]);
        assert_eq!(
            set.files.transforms,
            [path.parent().unwrap().join("transforms/nurture.rhai")]
        );
        let nurture = set.get("nurture").unwrap();
        assert_eq!(nurture.template_name(), "transform:transforms/nurture.rhai");
        assert_eq!(nurture.alert.as_deref(), Some("ops-slack"));
        assert_eq!(nurture.breaker.failures, 5);
        let headers: Vec<(String, String)> = nurture
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.value().to_owned()))
            .collect();
        assert_eq!(
            headers,
            [("x-source", "leadscore"), ("x-api-key", "nurture-key")]
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );

        // The selections and bodies the comments promise.
        let event = |tier: &str, disqualified: bool| {
            serde_json::json!({"type": "contact.scored", "id": "evt_1", "contact_id": 1, "score": 10,
                "tier": tier, "disqualified": disqualified, "reasons": [],
                "disqualifications": [{"rule": "80-dq.rhai", "reason": "Student"}], "tags": [],
                "contact": {"id": 1, "email": "s@uni.example", "firstName": "Sam"}})
        };
        let disqualified = event("disqualified", true);
        assert!(!set.get("crm").unwrap().select(&disqualified).is_selected());
        assert!(nurture.select(&disqualified).is_selected());
        assert_eq!(
            nurture.build_body(&disqualified).unwrap(),
            Body::Json(serde_json::json!({"email": "s@uni.example", "first_name": "Sam",
                "list": "nurture", "tags": ["leadscore", "disqualified"], "note": "Disqualified: [\"Student\"]"}))
        );
        let slack = set.get("ops-slack").unwrap();
        assert!(slack.select(&event("hot", false)).is_selected());
        let mut still_hot = event("hot", false);
        still_hot["type"] = "contact.rescored".into();
        still_hot["cause"] = "schedule".into();
        still_hot["previous"] = serde_json::json!({"tier": "hot", "score": 90});
        assert_eq!(slack.select(&still_hot), Selection::NotSelected);
        still_hot["previous"]["tier"] = "warm".into();
        assert_eq!(slack.select(&still_hot), Selection::Selected);
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn transforms_are_read_relative_to_the_file_and_their_errors_placed_in_them() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "scripts/ok.rhai", "#{ id: event.id }");
        write(dir.path(), "scripts/broken.rhai", "let a = 1;\nlet b = ;\n");
        let text = r#"
[[destination]]
name = "ok"
url = "https://a.example/"
transform = "scripts/ok.rhai"
content_type = "text/csv"

[[destination]]
name = "broken"
url = "https://a.example/"
transform = "scripts/broken.rhai"

[[destination]]
name = "missing"
url = "https://a.example/"
transform = "scripts/none.rhai"

[[destination]]
name = "both"
url = "https://a.example/"
template = "slack"
transform = "scripts/ok.rhai"

[[destination]]
name = "typed"
url = "https://a.example/"
template = "slak"
content_type = "text/csv"
"#;
        let path = write(dir.path(), "destinations.toml", text);
        let error = Destinations::load(&path, &Defaults::default(), &env_of(&[])).unwrap_err();
        let shown = error
            .to_string()
            .replace(&format!("{}/", dir.path().display()), "");
        assert_eq!(
            shown.lines().collect::<Vec<_>>(),
            [
                "destinations.toml:16:13: destination \"missing\": transform: cannot read scripts/none.rhai: \
                 No such file or directory (os error 2)",
                "destinations.toml:22:13: destination \"both\": transform: give either template or transform, not both",
                "destinations.toml:27:12: destination \"typed\": template: \"slak\" is not a template; did you mean \
                 \"slack\"?; use one of scored-contact, slack, hubspot or transform = \"FILE.rhai\"",
                "destinations.toml:28:16: destination \"typed\": content_type: content_type is for a transform's \
                 string bodies; templates send JSON",
                "scripts/broken.rhai:2:9: destination \"broken\": transform: Unexpected ';'",
            ]
        );
        assert_eq!(error.first().unwrap().line, 16);
        let at = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let status = error.first().unwrap().last_error_json(at);
        assert_eq!(status["line"], 16);
        assert_eq!(status["column"], 13);
        assert_eq!(status["at"], "2027-01-15T08:00:00.000Z");
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .starts_with("destination \"missing\": transform: ")
        );
        assert_eq!(
            error.first().unwrap().message(),
            format!(
                "destination \"missing\": transform: cannot read {}: No such file or directory (os error 2)",
                dir.path().join("scripts/none.rhai").display()
            )
        );
    }

    #[test]
    fn names_must_be_valid_unique_and_present_and_url_is_required() {
        let text = r#"
[[destination]]
name = "CRM"
url = "https://a.example/"

[[destination]]
name = "crm"
url = "https://a.example/"

[[destination]]
name = "crm"
url = "https://b.example/"

[[destination]]
url = "https://c.example/"

[[destination]]
name = "nourl"
"#;
        assert_eq!(
            errors(text, &[]),
            [
                "destinations.toml:3:8: destination #1: name: \"CRM\" is not a valid name: use 1 to 40 of a-z, 0-9, _ and -",
                "destinations.toml:11:8: destination \"crm\": name: another destination already has this name \
                 (line 7); names must be unique",
                "destinations.toml:14:1: destination #4: a destination needs a name (name = \"crm\")",
                "destinations.toml:18:8: destination \"nourl\": url: a destination needs a url",
            ]
        );
    }

    #[test]
    fn alerts_must_exist_and_never_lead_back() {
        let text = r#"
[[destination]]
name = "a"
url = "https://a.example/"
alert = "b"

[[destination]]
name = "b"
url = "https://b.example/"
alert = "c"

[[destination]]
name = "c"
url = "https://c.example/"
alert = "a"

[[destination]]
name = "self"
url = "https://d.example/"
alert = "self"

[[destination]]
name = "typo"
url = "https://e.example/"
alert = "sel"

[[destination]]
name = "fine"
url = "https://f.example/"
alert = "a"
"#;
        assert_eq!(
            errors(text, &[]),
            [
                "destinations.toml:5:9: destination \"a\": alert: alerts lead back to this destination \
                 (a → b → c → a); an alert destination cannot alert back",
                "destinations.toml:20:9: destination \"self\": alert: alerts lead back to this destination \
                 (self → self); an alert destination cannot alert back",
                "destinations.toml:25:9: destination \"typo\": alert: no destination is named \"sel\"; \
                 did you mean \"self\"?",
            ]
        );
    }

    #[test]
    fn credentials_take_their_forms_and_never_show_their_values() {
        let text = r#"
[[destination]]
name = "basic"
url = "https://a.example/"
auth = { basic_user = "ops", basic_password_env = "PW" }
headers = { "X-Key" = { env = "KEY" } }
signing_secret = { env = "SIGN" }

[[destination]]
name = "oauth"
url = "https://a.example/"
auth = { oauth2 = { token_url = "https://auth.example/token", client_id = "id", client_secret_env = "CS", scope = "w" } }
"#;
        let env = [
            ("PW", "pw-value"),
            ("KEY", "key-value"),
            ("SIGN", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            ("CS", "cs-value"),
        ];
        let set = parse_with(text, &env).unwrap();
        assert_eq!(
            set.get("basic").unwrap().auth,
            Some(Auth::Basic {
                user: "ops".into(),
                password: Secret::new("pw-value")
            })
        );
        let Some(Auth::OAuth2(oauth)) = &set.get("oauth").unwrap().auth else {
            panic!()
        };
        assert_eq!(oauth.token_url.as_str(), "https://auth.example/token");
        assert_eq!(
            (oauth.client_id.as_str(), oauth.client_secret.expose()),
            ("id", "cs-value")
        );
        assert_eq!(oauth.scope.as_deref(), Some("w"));
        let debug = format!("{set:?}");
        for value in ["pw-value", "key-value", "MfKQ9r8", "cs-value"] {
            assert!(!debug.contains(value), "{value} in {debug}");
        }

        let bad = r#"
[[destination]]
name = "x"
url = { env = "URL" }
auth = { bearer_env = "T", basic_user = "u" }
signing_secret = "whsec_literal"
headers = { "Content-Type" = "text/plain", "X-Bad" = { env = "NL" }, "X-A" = "1", "x-a" = "2" }

[[destination]]
name = "y"
url = { env = "URL2" }
signing_secret = { env = "NOT_WHSEC" }
auth = { oauth2 = { token_url = "ftp://x", client_secret_env = "CS", scop = "w" } }
"#;
        let env = [
            ("T", "bearer-value"),
            ("URL", "not a url at all secret-url-value"),
            ("URL2", "mailto:secret@example.com"),
            ("NOT_WHSEC", "whsec_!!!secret!!!"),
            ("NL", "line\nbreak-secret"),
        ];
        let errors = errors(bad, &env);
        assert_eq!(
            errors,
            [
                "destinations.toml:4:7: destination \"x\": url: the URL in URL is not a URL (relative URL without a base)",
                "destinations.toml:5:8: destination \"x\": auth: unknown form; auth is { bearer_env = \"NAME\" }, \
                 { basic_user = \"u\", basic_password_env = \"NAME\" } or { oauth2 = { token_url, client_id, \
                 client_secret_env, scope } }",
                "destinations.toml:6:18: destination \"x\": signing_secret: a secret comes from the environment: \
                 write signing_secret = { env = \"NAME\" }",
                "destinations.toml:7:13: destination \"x\": headers.Content-Type: content-type is set by leadscore \
                 on every forwarded request and cannot be added",
                "destinations.toml:7:44: destination \"x\": headers.X-Bad: the value of header x-bad is not valid",
                "destinations.toml:7:83: destination \"x\": headers.x-a: header x-a is given twice (names ignore case)",
                "destinations.toml:11:7: destination \"y\": url: the URL in URL2 must be an http or https URL with a host",
                "destinations.toml:12:18: destination \"y\": signing_secret: a Standard Webhooks secret is `whsec_` \
                 followed by base64",
                "destinations.toml:13:19: destination \"y\": auth.oauth2.client_id: is missing",
                "destinations.toml:13:33: destination \"y\": auth.oauth2.token_url: \"ftp://x\" is not an http or https URL",
                "destinations.toml:13:64: destination \"y\": auth.oauth2.client_secret_env: environment variable CS is \
                 not set",
                "destinations.toml:13:70: destination \"y\": auth.oauth2.scop: unknown setting; did you mean \"scope\"?",
            ]
        );
        for secret in [
            "secret-url-value",
            "secret@example",
            "!!!secret",
            "break-secret",
            "bearer-value",
        ] {
            assert!(
                errors.iter().all(|e| !e.contains(secret)),
                "{secret} in {errors:?}"
            );
        }
    }

    #[test]
    fn environment_values_lose_surrounding_whitespace_and_must_fit_a_header() {
        let text = "[[destination]]\nname = \"x\"\nurl = { env = \"U\" }\nauth = { bearer_env = \"T\" }\n\
                    headers = { \"X-Key\" = { env = \"K\" } }\n";
        let set = parse_with(
            text,
            &[("U", " https://a.example/x \n"), ("T", "tok\n"), ("K", " key ")],
        )
        .unwrap();
        let x = set.get("x").unwrap();
        assert_eq!(x.url.url().as_str(), "https://a.example/x");
        assert_eq!(
            x.auth,
            Some(Auth::Bearer {
                token: Secret::new("tok")
            })
        );
        assert_eq!(x.headers[0].1.value(), "key");
        assert_eq!(
            errors(text, &[("U", "https://a.example/"), ("T", "a\u{7}b"), ("K", "k")]),
            [
                "destinations.toml:4:23: destination \"x\": auth.bearer_env: the token cannot be sent in a header \
              (it has control characters)"
            ]
        );
        assert_eq!(
            errors(text, &[("U", "https://a.example/"), ("T", "  "), ("K", "k")]),
            ["destinations.toml:4:23: destination \"x\": auth.bearer_env: environment variable T is not set"]
        );
    }

    #[test]
    fn an_authorization_header_and_auth_exclude_each_other() {
        let text = r#"
[[destination]]
name = "x"
url = "https://a.example/"
auth = { bearer_env = "T" }
headers = { "Authorization" = "Bearer literal" }
"#;
        assert_eq!(
            errors(text, &[("T", "tok")]),
            [
                "destinations.toml:6:11: destination \"x\": headers: authorization is set by auth; give one or the other"
            ]
        );
    }

    #[test]
    fn syntax_errors_and_stray_keys_have_a_place() {
        let syntax = errors("[[destination]]\nname = \"a\"\nurl = \n", &[]);
        assert_eq!(syntax.len(), 1);
        assert!(syntax[0].starts_with("destinations.toml:3:"), "{syntax:?}");
        assert_eq!(
            errors("destinations = []\n[destination]\nname = \"a\"\n", &[]),
            [
                "destinations.toml:1:1: unknown key \"destinations\"; did you mean \"destination\"?; the file holds \
                 [[destination]] tables",
                "destinations.toml:2:1: destination: destinations are written as [[destination]] tables",
            ]
        );
        let empty = parse_with("# nothing yet\n", &[]).unwrap();
        assert!(empty.list.is_empty());
        let typo = "[[destination]]\nname = \"x\"\nurl = \"https://a.example/\"\nwhen = 'tir == \"hot\"'\n";
        let loaded = parse_with(typo, &[]).unwrap();
        assert_eq!(
            loaded
                .warnings
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [
                "destinations.toml:4:8: destination \"x\": when: `tir` is no field of the event, so it is always (); \
              did you mean \"tier\"?"
            ]
        );
        assert!(
            parse_with(
                SPEC_EXAMPLE,
                &[("HUBSPOT_TOKEN", "t"), ("SLACK_WEBHOOK_URL", SLACK_URL)]
            )
            .unwrap()
            .warnings
            .is_empty()
        );
    }

    #[test]
    fn a_when_error_points_into_a_multi_line_expression() {
        let text = "[[destination]]\nname = \"x\"\nurl = \"https://a.example/\"\n\
                    when = '''\ntier == \"hot\" &&\n  score > \n'''\n";
        let errors = errors(text, &[]);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                == "destinations.toml:7:1: destination \"x\": when: Script is incomplete (line 3, column 1 of the expression)",
            "{errors:?}"
        );
    }

    #[test]
    fn malformed_files_are_errors_with_a_place_never_panics() {
        let head = "[[destination]]\nname = \"x\"\nurl = \"https://a.example/\"\n";
        let settings = [
            "destination = 5",
            "[[destination]]\nname = 5\nurl = 6",
            "[[destination]]\nname = \"\"\nurl = \"https://a.example/\"",
            "[[destination]]\nname = \"a-very-long-name-that-is-longer-than-forty-chars\"\nurl = \"https://a.example/\"",
            "[[destination]]\nname = \"x\"\nurl = { env = 5 }",
            "[[destination]]\nname = \"x\"\nurl = { env = \"U\", other = 1 }",
            "[[destination]]\nname = \"x\"\nurl = \"https://\"",
            "[[destination]]\nname = \"x\"\nurl = \"\"",
        ];
        let extras = [
            "template = 5",
            "transform = [1]",
            "when = 5",
            "when = \"  \"",
            "when = \"é + + é\"",
            "when = \"\\u00e9 ==\"",
            "headers = 5",
            "headers = { \"Bad Name\" = \"v\" }",
            "headers = { \"X-A\" = 5 }",
            "auth = \"token\"",
            "auth = {}",
            "auth = { bearer_env = 5 }",
            "auth = { basic_user = \"a:b\", basic_password_env = \"P\" }",
            "auth = { oauth2 = 5 }",
            "auth = { oauth2 = {} }",
            "signing_secret = { env = \"S\" }",
            "content_type = \"bad\\nvalue\"",
            "rate = 5",
            "rate = \"5/\"",
            "rate = \"/1s\"",
            "concurrency = \"4\"",
            "concurrency = 99999999999999999",
            "timeout = 10",
            "timeout = \"0s\"",
            "retry_schedule = \"\"",
            "retry_schedule = [1, 2]",
            "breaker = 3",
            "breaker = { failures = \"x\" }",
            "breaker = { cooldown = 5 }",
            "alert = 5",
            "alert = \"nobody\"",
            "\"weird key\" = 1",
        ];
        let cases = settings
            .iter()
            .map(|text| text.to_string())
            .chain(extras.iter().map(|extra| format!("{head}{extra}\n")));
        for text in cases {
            let error = parse_with(&text, &[("P", "p")]).expect_err(&text);
            for e in &error.0 {
                assert!(e.line >= 1 && e.column >= 1, "{text}: {e}");
            }
        }
    }
}
