//! The HTTP interface of SPEC 4 (warp). Thin: each handler checks what the
//! transport must (content type, size, authentication), calls the domain
//! code, and one [`recover`] turns every refusal into a status and a JSON
//! `{"error": "…"}` body.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use crate::backtest::{self, Backtest, BacktestError, Baseline, Progress, Source};
use crate::ingest::auth::{InboundAuth, bearer, secrets_equal};
use crate::ingest::{DELIVERY_ID_HEADERS, Ingest, IngestError};
use crate::payload::PayloadError;
use crate::reload::LiveRules;
use crate::store::{DeliveryStatus, Store, StoreError};
use crate::telemetry;

/// How long a client may take to send its body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// The OpenAPI 3 document of this interface, kept in the repository.
pub const OPENAPI: &str = include_str!("../docs/openapi.json");

/// Most deliveries one `GET /deliveries` lists.
const MAX_LIST: usize = 1000;

/// Everything the handlers need.
pub struct App {
    pub ingest: Ingest,
    pub store: Arc<dyn Store>,
    pub rules: Arc<LiveRules>,
    pub auth: InboundAuth,
    pub admin_token: Option<String>,
    pub max_body: usize,
    pub allow_rule_edits: bool,
    pub backtest_max_contacts: usize,
    /// How far back stored history reaches (`--retention`).
    pub retention: Duration,
    /// The backtest over stored history running now, if any.
    pub backtest_running: BacktestSlot,
}

/// One backtest over stored history at a time per instance (SPEC 8).
#[derive(Default)]
pub struct BacktestSlot(std::sync::Mutex<Option<(Instant, Arc<Progress>)>>);

impl BacktestSlot {
    /// Takes the slot, or says how long the running backtest should still take.
    fn take(&self, progress: &Arc<Progress>) -> Result<SlotGuard<'_>, Duration> {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((started, running)) = slot.as_ref() {
            return Err(backtest::remaining(running, started.elapsed()));
        }
        *slot = Some((Instant::now(), progress.clone()));
        Ok(SlotGuard(self))
    }
}

/// Frees the slot when the backtest ends, however it ends.
struct SlotGuard<'a>(&'a BacktestSlot);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// A refusal with its status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Sent as `Retry-After` (whole seconds).
    pub retry_after: Option<Duration>,
}

impl warp::reject::Reject for ApiError {}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }
}

pub(crate) fn reject(status: StatusCode, message: impl Into<String>) -> Rejection {
    warp::reject::custom(ApiError::new(status, message))
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        let status = match &e {
            IngestError::Payload(PayloadError::TooManyContacts { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::Payload(_) => StatusCode::BAD_REQUEST,
            IngestError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            IngestError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "ingest failed; the sender will retry");
        }
        ApiError::new(status, e.to_string())
    }
}

fn store_error(e: StoreError) -> Rejection {
    tracing::error!(error = %e, "store request failed");
    reject(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

pub(crate) fn json_reply(status: StatusCode, body: &impl Serialize) -> Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

/// All routes, with request metrics and error mapping.
pub fn routes(app: Arc<App>) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let with_app = {
        let app = app.clone();
        warp::any().map(move || app.clone())
    };
    let admin = with_app
        .clone()
        .and(warp::header::headers_cloned())
        .and_then(require_admin);

    let webhook = warp::path!("webhooks" / "iclosed")
        .and(warp::post())
        .and(with_app.clone())
        .and(warp::header::headers_cloned())
        .and(optional_raw_query())
        .and(json_body(app.max_body))
        .and_then(handle_webhook);
    let score = warp::path!("score")
        .and(warp::post())
        .and(admin.clone())
        .and(json_body(app.max_body))
        .and_then(handle_score);
    let openapi = warp::path!("openapi.json")
        .and(get_or_head())
        .map(|| warp::reply::with_header(OPENAPI, "content-type", "application/json").into_response());
    let healthz = warp::path!("healthz")
        .and(get_or_head())
        .map(|| json_reply(StatusCode::OK, &json!({"status": "ok"})));
    let readyz = warp::path!("readyz")
        .and(get_or_head())
        .and(with_app.clone())
        .then(handle_readyz);
    let metrics = warp::path!("metrics")
        .and(get_or_head())
        .and(with_app.clone())
        .then(handle_metrics);
    let rules = warp::path!("rules")
        .and(get_or_head())
        .and(admin.clone())
        .map(handle_rules);
    let deliveries = warp::path!("deliveries")
        .and(get_or_head())
        .and(admin.clone())
        .and(warp::query::<ListQuery>().or_else(|_| async {
            Err::<(ListQuery,), _>(reject(
                StatusCode::BAD_REQUEST,
                "invalid query: use status=pending|dead|delivered and limit=N",
            ))
        }))
        .and_then(handle_list);
    let retry_one = warp::path!("deliveries" / String / "retry")
        .and(warp::post())
        .and(admin.clone())
        .and_then(handle_retry_one);
    let retry_dead = warp::path!("deliveries" / "retry-dead")
        .and(warp::post())
        .and(admin.clone())
        .and_then(handle_retry_dead);
    let backtest = warp::path!("backtest")
        .and(warp::post())
        .and(admin.clone())
        .and(json_body(app.max_body))
        .and_then(handle_backtest);
    let contacts = warp::path!("contacts")
        .and(get_or_head())
        .and(admin.clone())
        .and(warp::query::<ContactsQuery>().or_else(|_| async {
            Err::<(ContactsQuery,), _>(reject(StatusCode::BAD_REQUEST, "invalid query: use limit=N"))
        }))
        .and_then(handle_contacts);
    let stats = warp::path!("stats")
        .and(get_or_head())
        .and(admin.clone())
        .and(warp::query::<StatsQuery>().or_else(|_| async {
            Err::<(StatsQuery,), _>(reject(
                StatusCode::BAD_REQUEST,
                "invalid query: use since=24h&bucket=1h",
            ))
        }))
        .and_then(handle_stats);

    let api = webhook
        .or(score)
        .unify()
        .or(healthz)
        .unify()
        .or(openapi)
        .unify()
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .or(rules)
        .unify()
        .or(deliveries)
        .unify()
        .or(retry_dead)
        .unify()
        .or(retry_one)
        .unify()
        .or(backtest)
        .unify()
        .or(contacts)
        .unify()
        .or(stats)
        .unify()
        .or(crate::console::routes(app.clone(), admin.clone().boxed()))
        .unify()
        .recover(recover)
        .unify();
    warp::path::full()
        .and(api)
        .map(|path: warp::path::FullPath, reply: Response| with_allow(path.as_str(), reply))
        .with(warp::log::custom(|info| {
            telemetry::http_request(route_label(info.path()), info.status().as_u16(), info.elapsed())
        }))
}

/// `GET`, or `HEAD` for the same resource (RFC 9110: a server that serves
/// GET serves HEAD; load balancers probe `/healthz` with either). hyper
/// sends a HEAD answer's headers without its body.
pub(crate) fn get_or_head() -> impl Filter<Extract = (), Error = Rejection> + Copy {
    warp::get().or(warp::head()).unify()
}

/// A bounded label for metrics (no ids in label values).
fn route_label(path: &str) -> &'static str {
    match path {
        "/webhooks/iclosed" => "/webhooks/iclosed",
        "/score" => "/score",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        "/openapi.json" => "/openapi.json",
        "/rules" => "/rules",
        "/deliveries" => "/deliveries",
        "/deliveries/retry-dead" => "/deliveries/retry-dead",
        "/backtest" => "/backtest",
        "/contacts" => "/contacts",
        "/stats" => "/stats",
        p if p.starts_with("/deliveries/") && p.ends_with("/retry") => "/deliveries/{id}/retry",
        "/" => "/",
        "/console/config" => "/console/config",
        p if p.starts_with("/assets/") => "/assets/*",
        p if p.starts_with("/rules/") => "/rules/{file}",
        _ => "other",
    }
}

/// RFC 9110: a `405` lists the methods the resource supports in `Allow`;
/// a `401` says how to authenticate in `WWW-Authenticate` (every token this
/// server takes can be sent as a Bearer token).
fn with_allow(path: &str, mut reply: Response) -> Response {
    if reply.status() == StatusCode::UNAUTHORIZED {
        reply.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer realm=\"leadscore\""),
        );
    }
    if reply.status() == StatusCode::METHOD_NOT_ALLOWED {
        let allowed = match route_label(path) {
            "/webhooks/iclosed"
            | "/score"
            | "/deliveries/retry-dead"
            | "/deliveries/{id}/retry"
            | "/backtest" => "POST",
            "/rules/{file}" => "GET, HEAD, PUT, DELETE",
            "other" => return reply,
            _ => "GET, HEAD",
        };
        reply
            .headers_mut()
            .insert(http::header::ALLOW, http::HeaderValue::from_static(allowed));
    }
    reply
}

fn optional_raw_query() -> impl Filter<Extract = (Option<String>,), Error = Infallible> + Clone {
    warp::query::raw().map(Some).or(warp::any().map(|| None)).unify()
}

pub(crate) async fn require_admin(app: Arc<App>, headers: HeaderMap) -> Result<Arc<App>, Rejection> {
    if let Some(expected) = &app.admin_token {
        let ok = bearer(&headers).is_some_and(|given| secrets_equal(given.as_bytes(), expected.as_bytes()));
        if !ok {
            return Err(reject(
                StatusCode::UNAUTHORIZED,
                "this endpoint needs `Authorization: Bearer <admin token>`",
            ));
        }
    }
    Ok(app)
}

/// The request body, after SPEC 4's content checks: a JSON content type (or
/// none), no content encoding, at most `max` bytes (413), sent within
/// [`BODY_TIMEOUT`] (408).
fn json_body(max: usize) -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::header::headers_cloned()
        .and(warp::body::stream())
        .and_then(move |headers: HeaderMap, stream| async move {
            read_body(&headers, stream, max, BodyKind::Json).await
        })
}

/// What a body may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// JSON: a JSON content type or none (`415` otherwise).
    Json,
    /// Any content type (a rule file from the console).
    Any,
}

/// Reads a request body: uncompressed (`415`), at most `max` bytes (`413`,
/// refused from `Content-Length` before reading), received within
/// [`BODY_TIMEOUT`] (`408`), and for [`BodyKind::Json`] with a JSON content
/// type or none.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    stream: impl Stream<Item = Result<impl Buf, warp::Error>> + Unpin,
    max: usize,
    kind: BodyKind,
) -> Result<Bytes, Rejection> {
    check_content_headers(headers, max, kind).map_err(warp::reject::custom)?;
    match tokio::time::timeout(BODY_TIMEOUT, read_limited(stream, max)).await {
        Ok(result) => result,
        Err(_) => Err(reject(
            StatusCode::REQUEST_TIMEOUT,
            "the request body was not received in time",
        )),
    }
}

fn check_content_headers(headers: &HeaderMap, max: usize, kind: BodyKind) -> Result<(), ApiError> {
    if kind == BodyKind::Json
        && let Some(value) = headers.get(http::header::CONTENT_TYPE)
    {
        let text = value.to_str().unwrap_or("");
        if !is_json_content_type(text) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content type {text:?} is not JSON; send application/json"),
            ));
        }
    }
    for value in headers.get_all(http::header::CONTENT_ENCODING) {
        let text = value.to_str().unwrap_or("?");
        if text
            .split(',')
            .any(|e| !e.trim().eq_ignore_ascii_case("identity"))
        {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content encoding {text:?} is not accepted; send the body uncompressed"),
            ));
        }
    }
    if let Some(length) = headers.get(http::header::CONTENT_LENGTH) {
        match length.to_str().ok().and_then(|l| l.trim().parse::<u64>().ok()) {
            Some(n) if n > max as u64 => return Err(too_large(max)),
            Some(_) => {}
            None => return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid Content-Length")),
        }
    }
    Ok(())
}

/// `application/json` and `application/*+json`, with or without parameters.
pub fn is_json_content_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is larger than the limit of {max} bytes (--max-body)"),
    )
}

async fn read_limited(
    mut stream: impl Stream<Item = Result<impl Buf, warp::Error>> + Unpin,
    max: usize,
) -> Result<Bytes, Rejection> {
    let mut body = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let mut chunk =
            chunk.map_err(|e| reject(StatusCode::BAD_REQUEST, format!("cannot read the body: {e}")))?;
        if body.len() + chunk.remaining() > max {
            return Err(warp::reject::custom(too_large(max)));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            body.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(body.freeze())
}

async fn handle_webhook(
    app: Arc<App>,
    headers: HeaderMap,
    query: Option<String>,
    body: Bytes,
) -> Result<Response, Rejection> {
    if let Err(failure) = app
        .auth
        .check(&headers, query.as_deref(), &body, SystemTime::now())
    {
        tracing::warn!(reason = %failure, "webhook refused: authentication failed");
        return Err(reject(StatusCode::UNAUTHORIZED, failure.0));
    }
    // The first of the headers with a value: an empty one counts as absent.
    let delivery_id = DELIVERY_ID_HEADERS
        .iter()
        .filter_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .find(|v| !v.is_empty())
        .map(str::to_owned);
    let started = Instant::now();
    let reply = app
        .ingest
        .ingest(body, delivery_id)
        .await
        .map_err(|e| warp::reject::custom(ApiError::from(e)))?;
    tracing::debug!(
        contacts = reply.results.len(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "webhook handled"
    );
    Ok(json_reply(StatusCode::OK, &reply))
}

async fn handle_score(app: Arc<App>, body: Bytes) -> Result<Response, Rejection> {
    let results = app
        .ingest
        .dry_run(body)
        .await
        .map_err(|e| warp::reject::custom(ApiError::from(e)))?;
    Ok(json_reply(StatusCode::OK, &ScoreReply { results }))
}

/// The `200` body of `POST /score`. Serialised as a struct, not through
/// `json!`: that would re-parse each contact's raw JSON into a `Value`,
/// changing it (duplicate keys, long numbers) and panicking past
/// serde_json's recursion limit (a contact nested 128 levels deep).
#[derive(Serialize)]
struct ScoreReply {
    results: Vec<crate::score::ScoredContact>,
}

async fn handle_readyz(app: Arc<App>) -> Response {
    match app.store.check_writable().await {
        Ok(()) => json_reply(
            StatusCode::OK,
            &json!({"status": "ready", "rules_version": app.rules.current().version()}),
        ),
        Err(e) => json_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": format!("not ready: {e}")}),
        ),
    }
}

async fn handle_metrics(app: Arc<App>) -> Response {
    if let Ok(counts) = app.store.delivery_counts().await {
        telemetry::delivery_backlog(counts);
    }
    let text = telemetry::metrics_handle().render();
    warp::reply::with_header(text, "content-type", "text/plain; version=0.0.4").into_response()
}

fn handle_rules(app: Arc<App>) -> Response {
    let rules = app.rules.current();
    json_reply(
        StatusCode::OK,
        &json!({
            "rules_version": rules.version(),
            "loaded_at": humantime::format_rfc3339_millis(app.rules.loaded_at()).to_string(),
            "files": rules.file_names(),
            "last_error": app.rules.last_error(),
        }),
    )
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
}

async fn handle_list(app: Arc<App>, query: ListQuery) -> Result<Response, Rejection> {
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(text) => Some(DeliveryStatus::parse(text).ok_or_else(|| {
            reject(
                StatusCode::BAD_REQUEST,
                format!("unknown status {text:?}; use pending, dead or delivered"),
            )
        })?),
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {MAX_LIST}"),
        ));
    }
    let deliveries = app
        .store
        .list_deliveries(status, limit)
        .await
        .map_err(store_error)?;
    Ok(json_reply(StatusCode::OK, &json!({ "deliveries": deliveries })))
}

async fn handle_retry_one(id: String, app: Arc<App>) -> Result<Response, Rejection> {
    use crate::store::Requeue;
    match app.store.requeue(&id).await.map_err(store_error)? {
        Requeue::Requeued => {
            app.ingest.wake.notify_one();
            Ok(json_reply(StatusCode::ACCEPTED, &json!({"requeued": 1})))
        }
        Requeue::NotDead => Ok(json_reply(StatusCode::ACCEPTED, &json!({"requeued": 0}))),
        Requeue::Unknown => Err(reject(
            StatusCode::NOT_FOUND,
            format!("no delivery with id {id:?}"),
        )),
    }
}

async fn handle_retry_dead(app: Arc<App>) -> Result<Response, Rejection> {
    let n = app.store.requeue_dead().await.map_err(store_error)?;
    if n > 0 {
        app.ingest.wake.notify_one();
    }
    Ok(json_reply(StatusCode::ACCEPTED, &json!({ "requeued": n })))
}

/// The body of `POST /backtest` (SPEC 8).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BacktestRequest {
    /// The candidate's rule files, complete: a file left out is not in it.
    rules: std::collections::BTreeMap<String, String>,
    /// The candidate's `tiers.toml`; when left out, the loaded one.
    tiers: Option<String>,
    since: Option<String>,
    #[serde(default)]
    all_events: bool,
    against: Option<String>,
    top: Option<usize>,
    contacts: Option<Box<serde_json::value::RawValue>>,
}

/// Most changed contacts one report lists.
const MAX_TOP: usize = 1000;

async fn handle_backtest(app: Arc<App>, body: Bytes) -> Result<Response, Rejection> {
    let request: BacktestRequest = crate::payload::parse_json(
        std::str::from_utf8(&body).map_err(|_| reject(StatusCode::BAD_REQUEST, "the body is not UTF-8"))?,
    )
    .map_err(|e| reject(StatusCode::BAD_REQUEST, format!("invalid backtest request: {e}")))?;
    let top = request.top.unwrap_or(20);
    if top > MAX_TOP {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            format!("top must be at most {MAX_TOP}"),
        ));
    }
    let loaded = app.rules.current();
    let baseline = match request.against.as_deref().unwrap_or("rules") {
        "rules" => Baseline::Rules(loaded.clone()),
        "stored" => Baseline::Stored,
        other => {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                format!("unknown against {other:?}; use \"rules\" or \"stored\""),
            ));
        }
    };
    let tiers = match request.tiers {
        Some(text) => Some(text),
        None => loaded_tiers(&app),
    };
    let sources = crate::score::RuleSources {
        files: request.rules.into_iter().collect(),
        tiers,
    };
    let limits = app.rules.limits().clone();
    let compiled = tokio::task::spawn_blocking(move || crate::score::RuleSet::compile(sources, &limits))
        .await
        .map_err(|e| reject(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let candidate = match compiled {
        Ok(set) => Arc::new(set),
        Err(e) => {
            return Ok(json_reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({"error": format!("the candidate rule set does not compile:\n{e}"), "errors": e.0}),
            ));
        }
    };
    let progress = Arc::new(Progress::default());
    let (source, _slot) = match request.contacts {
        Some(raw) => {
            if request.since.is_some() {
                return Err(reject(
                    StatusCode::BAD_REQUEST,
                    "give either `contacts` or `since`, not both",
                ));
            }
            let contacts = crate::payload::parse_body(raw.get().as_bytes(), app.ingest.max_contacts)
                .map_err(|e| warp::reject::custom(ApiError::from(crate::ingest::IngestError::Payload(e))))?;
            (Source::Contacts(contacts), None)
        }
        None => {
            let since = backtest::parse_since(request.since.as_deref().unwrap_or("30d"), SystemTime::now())
                .map_err(|e| reject(StatusCode::BAD_REQUEST, format!("since: {e}")))?;
            let slot = app.backtest_running.take(&progress).map_err(|wait| {
                warp::reject::custom(
                    ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        format!(
                            "a backtest is running on this instance; try again in {} s",
                            wait.as_secs().max(1)
                        ),
                    )
                    .with_retry_after(wait),
                )
            })?;
            let source = Source::Store {
                store: app.store.clone(),
                since_ms: backtest::window_start_ms(since, app.retention, SystemTime::now()),
                all_events: request.all_events,
                max_contacts: Some(app.backtest_max_contacts as u64),
            };
            (source, Some(slot))
        }
    };
    let job = Backtest {
        source,
        baseline,
        candidate,
        top,
        threads: backtest::default_threads(),
        // Webhooks first: the backtest takes the CPU time they leave.
        background: true,
    };
    match job.run(progress, None).await {
        Ok(report) => Ok(json_reply(StatusCode::OK, &report)),
        Err(e @ BacktestError::Store(_)) => {
            tracing::error!(error = %e, "backtest failed");
            Err(reject(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
        }
        Err(e @ BacktestError::Internal(_)) => {
            tracing::error!(error = %e, "backtest failed");
            Err(reject(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
        }
        Err(e) => Err(reject(StatusCode::BAD_REQUEST, e.to_string())),
    }
}

/// The loaded rule set's `tiers.toml` (not the folder's, which may hold a
/// change that failed to load).
fn loaded_tiers(app: &App) -> Option<String> {
    app.rules.current().tiers_source().map(str::to_owned)
}

#[derive(Debug, Deserialize)]
struct ContactsQuery {
    limit: Option<usize>,
}

/// Most contacts one `GET /contacts` lists.
const MAX_CONTACTS_LISTED: usize = 200;

async fn handle_contacts(app: Arc<App>, query: ContactsQuery) -> Result<Response, Rejection> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=MAX_CONTACTS_LISTED).contains(&limit) {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {MAX_CONTACTS_LISTED}"),
        ));
    }
    let events = app.store.recent_events(limit).await.map_err(store_error)?;
    #[derive(Deserialize, Serialize)]
    struct Listed {
        contact_id: serde_json::Value,
        score: serde_json::Value,
        tier: String,
        contact: Box<serde_json::value::RawValue>,
    }
    #[derive(Serialize)]
    struct Entry {
        id: String,
        received_at: String,
        #[serde(flatten)]
        listed: Listed,
    }
    let contacts: Vec<Entry> = events
        .into_iter()
        .filter_map(|event| {
            let listed: Listed = crate::payload::parse_json(&event.body).ok()?;
            Some(Entry {
                id: event.id,
                received_at: crate::store::format_ms(event.received_at),
                listed,
            })
        })
        .collect();
    Ok(json_reply(StatusCode::OK, &json!({ "contacts": contacts })))
}

#[derive(Debug, Deserialize)]
struct StatsQuery {
    since: Option<String>,
    bucket: Option<String>,
}

/// Most buckets one `GET /stats` answers.
const MAX_BUCKETS: i64 = 2000;

async fn handle_stats(app: Arc<App>, query: StatsQuery) -> Result<Response, Rejection> {
    let now = SystemTime::now();
    let since = backtest::parse_since(query.since.as_deref().unwrap_or("24h"), now)
        .map_err(|e| reject(StatusCode::BAD_REQUEST, format!("since: {e}")))?;
    let bucket = crate::config::parse_duration(query.bucket.as_deref().unwrap_or("1h"))
        .map_err(|e| reject(StatusCode::BAD_REQUEST, format!("bucket: {e}")))?;
    if bucket < Duration::from_secs(60) {
        return Err(reject(StatusCode::BAD_REQUEST, "bucket must be at least 1m"));
    }
    let ms = |t: SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    };
    let (since_ms, now_ms, bucket_ms) = (ms(since), ms(now), bucket.as_millis() as i64);
    if (now_ms - since_ms) / bucket_ms > MAX_BUCKETS {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            format!("more than {MAX_BUCKETS} buckets; choose a later since or a wider bucket"),
        ));
    }
    let counters = app.store.counters(since_ms).await.map_err(store_error)?;
    let deliveries = app.store.delivery_counts().await.map_err(store_error)?;
    let stats = crate::store::Stats::from_counters(&counters, since_ms, now_ms, bucket_ms, deliveries);
    Ok(json_reply(StatusCode::OK, &stats))
}

/// Every refusal as a status and `{"error": "…"}`.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let (status, message) = if let Some(e) = rejection.find::<ApiError>() {
        (e.status, e.message.clone())
    } else if rejection.is_not_found() {
        (StatusCode::NOT_FOUND, "not found".to_owned())
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        (StatusCode::METHOD_NOT_ALLOWED, "method not allowed".to_owned())
    } else if rejection.find::<warp::reject::InvalidQuery>().is_some() {
        (StatusCode::BAD_REQUEST, "invalid query string".to_owned())
    } else if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        (StatusCode::BAD_REQUEST, e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::MissingHeader>() {
        (StatusCode::BAD_REQUEST, e.to_string())
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        (StatusCode::PAYLOAD_TOO_LARGE, "the body is too large".to_owned())
    } else if rejection.find::<warp::reject::UnsupportedMediaType>().is_some() {
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported media type".to_owned(),
        )
    } else {
        tracing::warn!(?rejection, "unhandled rejection");
        (StatusCode::BAD_REQUEST, "bad request".to_owned())
    };
    let mut reply = json_reply(status, &json!({ "error": message }));
    if let Some(wait) = rejection.find::<ApiError>().and_then(|e| e.retry_after) {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        reply
            .headers_mut()
            .insert(http::header::RETRY_AFTER, seconds.into());
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC 4: `GET /openapi.json` documents this interface: every route the
    /// server answers is in it, and everything in it is a route.
    #[test]
    fn the_openapi_document_lists_every_route() {
        let document: serde_json::Value = serde_json::from_str(OPENAPI).expect("docs/openapi.json is JSON");
        let documented: std::collections::BTreeSet<String> = document["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .map(|path| {
                path.replace("{id}", "evt_1")
                    .replace("{asset}", "app.js")
                    .replace("{file}", "10-a.rhai")
            })
            .collect();
        let routes = [
            "/webhooks/iclosed",
            "/score",
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
            "/rules",
            "/deliveries",
            "/deliveries/evt_1/retry",
            "/deliveries/retry-dead",
            "/backtest",
            "/contacts",
            "/stats",
            "/",
            "/console/config",
            "/assets/app.js",
            "/rules/10-a.rhai",
        ];
        for route in routes {
            assert!(documented.contains(route), "{route} is not in docs/openapi.json");
        }
        for path in &documented {
            assert_ne!(route_label(path), "other", "{path} is documented but not a route");
            assert!(
                routes.contains(&path.as_str()),
                "{path} is documented; add it to this test's routes"
            );
        }
    }

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/cloudevents+json",
        ] {
            assert!(is_json_content_type(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonx",
            "multipart/form-data",
            "",
        ] {
            assert!(!is_json_content_type(bad), "{bad}");
        }
    }

    #[test]
    fn route_labels_are_bounded() {
        assert_eq!(route_label("/deliveries/evt_123/retry"), "/deliveries/{id}/retry");
        assert_eq!(route_label("/nope/../x"), "other");
    }
}
