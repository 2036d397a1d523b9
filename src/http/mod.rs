//! The HTTP interface of SPEC 4 (warp), thin: find the route in the table
//! ([`routes`]), check what the transport must (method, who is calling,
//! content type and size), call the application layer ([`crate::app`]) and
//! translate its answer or its [`AppError`](crate::app::AppError) into a
//! status and a JSON body ([`error`]).

mod body;
mod console;
mod deliveries;
pub mod error;
mod history;
mod ingest;
mod ops;
mod rescore;
pub mod routes;
mod rules;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Buf;
use futures_util::StreamExt as _;
use http::{HeaderMap, Method, StatusCode};
use warp::Filter;
use warp::reply::Response;

pub use body::{BodyKind, is_json_content_type};
pub use console::CONTENT_SECURITY_POLICY;
pub use error::HttpError;

use crate::app::Engine;
use crate::ingest::auth::{InboundAuth, bearer, secrets_equal};
use crate::telemetry;
use body::BodyStream;
use routes::{Access, Endpoint};

/// What the transport itself checks.
#[derive(Clone, Default)]
pub struct HttpSettings {
    /// The webhook's sender checks (SPEC 4.2).
    pub auth: InboundAuth,
    /// The admin endpoints' token; without one they answer only requests
    /// whose `Host` is this machine, an allowed host or the listen address.
    pub admin_token: Option<String>,
    /// `--allowed-host`: more names the admin endpoints answer without a token.
    pub allowed_hosts: Vec<String>,
    /// The address the server listens on (its `Host` is allowed too).
    pub listen: Option<SocketAddr>,
    pub max_body: usize,
}

impl std::fmt::Debug for HttpSettings {
    /// Never prints the admin token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSettings")
            .field("auth", &self.auth)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "********"))
            .field("allowed_hosts", &self.allowed_hosts)
            .field("listen", &self.listen)
            .field("max_body", &self.max_body)
            .finish()
    }
}

/// One request as the handlers see it.
pub struct Request {
    pub method: Method,
    /// The route's `{…}` segment, as sent (not percent-decoded).
    pub param: Option<String>,
    pub query: Option<String>,
    pub headers: HeaderMap,
    body: BodyStream,
}

impl Request {
    /// The body, checked and read (SPEC 4).
    pub async fn body(self, max: usize, kind: BodyKind) -> Result<(bytes::Bytes, HeaderMap), HttpError> {
        let bytes = body::read(&self.headers, self.body, max, kind).await?;
        Ok((bytes, self.headers))
    }

    /// Query parameters by name; a parameter given twice is refused.
    pub fn params(&self) -> Result<HashMap<String, String>, HttpError> {
        let mut params = HashMap::new();
        for (name, value) in form_urlencoded::parse(self.query.as_deref().unwrap_or("").as_bytes()) {
            if params
                .insert(name.clone().into_owned(), value.into_owned())
                .is_some()
            {
                return Err(HttpError::new(
                    StatusCode::BAD_REQUEST,
                    format!("{name}: given more than once"),
                ));
            }
        }
        Ok(params)
    }
}

type Handled = Result<Response, HttpError>;

/// Every route, with request metrics and error mapping.
pub fn routes(
    engine: Arc<Engine>,
    settings: HttpSettings,
) -> impl Filter<Extract = (impl warp::Reply,), Error = Infallible> + Clone {
    let settings = Arc::new(settings);
    let query = warp::query::raw().map(Some).or(warp::any().map(|| None)).unify();
    warp::method()
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(body_stream())
        .then(move |method, path: warp::path::FullPath, query, headers, body| {
            let engine = engine.clone();
            let settings = settings.clone();
            async move {
                dispatch(&engine, &settings, method, path.as_str(), query, headers, body)
                    .await
                    .unwrap_or_else(HttpError::into_response)
            }
        })
        // None of the filters above refuses a request; should one ever, it
        // is still answered in this API's shape.
        .recover(|rejection: warp::Rejection| async move {
            tracing::warn!(?rejection, "unhandled rejection");
            Ok::<_, Infallible>(HttpError::new(StatusCode::BAD_REQUEST, "bad request").into_response())
        })
        .unify()
        .with(warp::log::custom(|info| {
            telemetry::http_request(routes::label(info.path()), info.status().as_u16(), info.elapsed())
        }))
}

/// The body as a stream of `Bytes` (hyper's chunks, handed on without a copy).
fn body_stream() -> impl Filter<Extract = (BodyStream,), Error = warp::Rejection> + Clone {
    fn boxed<S, B>(stream: S) -> BodyStream
    where
        S: futures_util::Stream<Item = Result<B, warp::Error>> + Send + 'static,
        B: Buf,
    {
        stream
            .map(|chunk| chunk.map(|mut buf| buf.copy_to_bytes(buf.remaining())))
            .boxed()
    }
    warp::body::stream().map(boxed)
}

async fn dispatch(
    engine: &Engine,
    settings: &HttpSettings,
    method: Method,
    path: &str,
    query: Option<String>,
    headers: HeaderMap,
    body: BodyStream,
) -> Handled {
    let Some((route, param)) = routes::find(path) else {
        return Err(HttpError::new(StatusCode::NOT_FOUND, "not found"));
    };
    if !route.allows(&method) {
        let mut reply = HttpError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed").into_response();
        if let Ok(allow) = http::HeaderValue::from_str(&route.allow_header()) {
            reply.headers_mut().insert(http::header::ALLOW, allow);
        }
        return Ok(reply);
    }
    match route.access {
        Access::Open | Access::Webhook => {}
        Access::Admin => {
            check_host(settings, &headers)?;
            check_admin(settings, &headers)?;
        }
        Access::Console => check_host(settings, &headers)?,
    }
    let request = Request {
        method,
        param: param.map(str::to_owned),
        query,
        headers,
        body,
    };
    match route.endpoint {
        Endpoint::Webhook => ingest::webhook(engine, settings, request).await,
        Endpoint::Score => ingest::score(engine, settings, request).await,
        Endpoint::Healthz => Ok(ops::healthz()),
        Endpoint::Readyz => Ok(ops::readyz(engine).await),
        Endpoint::Metrics => Ok(ops::metrics(engine).await),
        Endpoint::OpenApi => Ok(ops::openapi()),
        Endpoint::Rules => Ok(rules::status(engine)),
        Endpoint::RuleFile => rules::file(engine, settings, request).await,
        Endpoint::Lint => rules::lint(engine, settings, request).await,
        Endpoint::Deliveries => deliveries::list(engine, request).await,
        Endpoint::RetryDead => deliveries::retry_dead(engine, request).await,
        Endpoint::RetryOne => deliveries::retry_one(engine, request).await,
        Endpoint::Attempts => deliveries::attempts(engine, request).await,
        Endpoint::Destinations => deliveries::destinations(engine).await,
        Endpoint::Backtest => history::backtest(engine, settings, request).await,
        Endpoint::Contacts => history::contacts(engine, request).await,
        Endpoint::ContactTimeline => history::contact(engine, request).await,
        Endpoint::Stats => history::stats(engine, request).await,
        Endpoint::Report => history::report(engine, request).await,
        Endpoint::ConsoleIndex => Ok(console::index()),
        Endpoint::ConsoleConfig => Ok(console::config(engine, settings)),
        Endpoint::ConsoleAsset => console::asset(request),
        Endpoint::Rescore => rescore::jobs(engine, settings, request).await,
        Endpoint::RescoreJob => rescore::job(engine, request).await,
    }
}

/// SPEC 4.2: the admin token as `Authorization: Bearer`, when one is configured.
fn check_admin(settings: &HttpSettings, headers: &HeaderMap) -> Result<(), HttpError> {
    if let Some(expected) = &settings.admin_token {
        let ok = bearer(headers).is_some_and(|given| secrets_equal(given.as_bytes(), expected.as_bytes()));
        if !ok {
            return Err(HttpError::new(
                StatusCode::UNAUTHORIZED,
                "this endpoint needs `Authorization: Bearer <admin token>`",
            ));
        }
    }
    Ok(())
}

/// SPEC 4.2: without an admin token, the admin endpoints and the console
/// answer only a `Host` that is a loopback name or address, an allowed host
/// or the listen address, so that a web page cannot reach them through DNS
/// rebinding. A request without `Host` comes from no browser and passes.
fn check_host(settings: &HttpSettings, headers: &HeaderMap) -> Result<(), HttpError> {
    if settings.admin_token.is_some() {
        return Ok(());
    }
    let Some(value) = headers.get(http::header::HOST) else {
        return Ok(());
    };
    let host = value.to_str().unwrap_or("");
    if host_allowed(host, settings) {
        return Ok(());
    }
    Err(HttpError::new(
        StatusCode::FORBIDDEN,
        format!(
            "Host {host:?} is not allowed without an admin token: set --admin-token, or name the host with --allowed-host"
        ),
    ))
}

fn host_allowed(host: &str, settings: &HttpSettings) -> bool {
    let host = host.trim();
    // `name:port`, `[v6]:port`, `[v6]`, `name`.
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    if let Ok(ip) = name.parse::<IpAddr>()
        && (ip.is_loopback()
            || settings
                .listen
                .is_some_and(|l| l.ip() == ip && !ip.is_unspecified()))
    {
        return true;
    }
    settings
        .allowed_hosts
        .iter()
        .any(|allowed| allowed.trim().trim_end_matches('.').eq_ignore_ascii_case(&name))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC 4: `GET /openapi.json` documents this interface: every route in
    /// the table is in it, and everything in it is a route.
    #[test]
    fn the_openapi_document_lists_every_route() {
        let document: serde_json::Value =
            serde_json::from_str(ops::OPENAPI).expect("docs/openapi.json is JSON");
        let documented: std::collections::BTreeSet<&str> = document["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .map(String::as_str)
            .collect();
        let routed: std::collections::BTreeSet<&str> = routes::ROUTES.iter().map(|r| r.path).collect();
        assert_eq!(documented, routed, "docs/openapi.json and the route table differ");
        for route in routes::ROUTES {
            let operations = document["paths"][route.path].as_object().expect("operations");
            for method in route.methods {
                let name = method.as_str().to_ascii_lowercase();
                assert!(
                    operations.contains_key(&name),
                    "{} {} is not documented",
                    method,
                    route.path
                );
            }
        }
    }

    #[test]
    fn hosts_allowed_without_an_admin_token() {
        let settings = HttpSettings {
            allowed_hosts: vec!["leads.example.com".into()],
            listen: Some("10.0.0.5:8080".parse().unwrap()),
            ..Default::default()
        };
        for ok in [
            "localhost",
            "localhost:8080",
            "LOCALHOST.",
            "127.0.0.1:8080",
            "127.1.2.3",
            "[::1]:8080",
            "[::1]",
            "leads.example.com",
            "Leads.Example.com:443",
            "10.0.0.5:8080",
        ] {
            assert!(host_allowed(ok, &settings), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:80",
            "10.0.0.6",
            "localhost.evil.example",
            "",
            "[::2]:80",
        ] {
            assert!(!host_allowed(bad, &settings), "{bad}");
        }
    }
}
