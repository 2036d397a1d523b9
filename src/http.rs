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
}

/// A refusal with its status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl warp::reject::Reject for ApiError {}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
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
        .and(warp::get())
        .map(|| warp::reply::with_header(OPENAPI, "content-type", "application/json").into_response());
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| json_reply(StatusCode::OK, &json!({"status": "ok"})));
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_app.clone())
        .then(handle_readyz);
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_app.clone())
        .then(handle_metrics);
    let rules = warp::path!("rules")
        .and(warp::get())
        .and(admin.clone())
        .map(handle_rules);
    let deliveries = warp::path!("deliveries")
        .and(warp::get())
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
        p if p.starts_with("/deliveries/") && p.ends_with("/retry") => "/deliveries/{id}/retry",
        "/" => "/",
        "/console/config" => "/console/config",
        p if p.starts_with("/assets/") => "/assets/*",
        p if p.starts_with("/rules/") => "/rules/{file}",
        _ => "other",
    }
}

/// RFC 9110: a `405` lists the methods the resource supports in `Allow`.
fn with_allow(path: &str, mut reply: Response) -> Response {
    if reply.status() == StatusCode::METHOD_NOT_ALLOWED {
        let allowed = match route_label(path) {
            "/webhooks/iclosed" | "/score" | "/deliveries/retry-dead" | "/deliveries/{id}/retry" => "POST",
            "/rules/{file}" => "GET, PUT, DELETE",
            "other" => return reply,
            _ => "GET",
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
        .and_then(move |headers: HeaderMap| async move {
            check_content_headers(&headers, max).map_err(warp::reject::custom)
        })
        .and(warp::body::stream())
        .and_then(move |(), stream| async move {
            match tokio::time::timeout(BODY_TIMEOUT, read_limited(stream, max)).await {
                Ok(result) => result,
                Err(_) => Err(reject(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body was not received in time",
                )),
            }
        })
}

fn check_content_headers(headers: &HeaderMap, max: usize) -> Result<(), ApiError> {
    if let Some(value) = headers.get(http::header::CONTENT_TYPE) {
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
    let delivery_id = DELIVERY_ID_HEADERS
        .iter()
        .find_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty());
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
    Ok(json_reply(status, &json!({ "error": message })))
}

#[cfg(test)]
mod tests {
    use super::*;

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
