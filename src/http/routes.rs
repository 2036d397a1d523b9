//! The route table: every path the server answers, its methods and who may
//! call it. The dispatcher, the metric labels, the `Allow` header of a `405`
//! and the OpenAPI completeness test all read this one list.

use http::Method;

/// What a route does; the dispatcher maps each to its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Webhook,
    Score,
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
    Rules,
    Deliveries,
    RetryDead,
    RetryOne,
    Attempts,
    Destinations,
    Backtest,
    Contacts,
    ContactTimeline,
    Stats,
    Report,
    ConsoleIndex,
    ConsoleConfig,
    ConsoleAsset,
    RuleFile,
    Lint,
    Rescore,
    RescoreJob,
}

/// Who may call a route (SPEC 4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health, metrics, the OpenAPI document).
    Open,
    /// Senders proving themselves with the webhook checks.
    Webhook,
    /// The admin token when one is configured; without one, only requests
    /// whose `Host` is this machine or an allowed host.
    Admin,
    /// The console's page and assets: no token (the page asks for it), but
    /// the same `Host` rule as the admin endpoints.
    Console,
}

pub struct Route {
    /// `/deliveries/{id}/retry`: a `{…}` segment matches any one non-empty segment.
    pub path: &'static str,
    /// `GET` routes answer `HEAD` too (RFC 9110).
    pub methods: &'static [Method],
    pub endpoint: Endpoint,
    pub access: Access,
}

const GET: &[Method] = &[Method::GET];
const POST: &[Method] = &[Method::POST];
const GET_PUT_DELETE: &[Method] = &[Method::GET, Method::PUT, Method::DELETE];
const GET_DELETE: &[Method] = &[Method::GET, Method::DELETE];
const GET_POST: &[Method] = &[Method::GET, Method::POST];

macro_rules! route {
    ($path:literal, $methods:expr, $endpoint:ident, $access:ident) => {
        Route {
            path: $path,
            methods: $methods,
            endpoint: Endpoint::$endpoint,
            access: Access::$access,
        }
    };
}

pub const ROUTES: &[Route] = &[
    route!("/webhooks/iclosed", POST, Webhook, Webhook),
    route!("/score", POST, Score, Admin),
    route!("/healthz", GET, Healthz, Open),
    route!("/readyz", GET, Readyz, Open),
    route!("/metrics", GET, Metrics, Open),
    route!("/openapi.json", GET, OpenApi, Open),
    route!("/rules", GET, Rules, Admin),
    route!("/deliveries", GET_DELETE, Deliveries, Admin),
    route!("/deliveries/retry-dead", POST, RetryDead, Admin),
    route!("/deliveries/{id}/retry", POST, RetryOne, Admin),
    route!("/deliveries/{id}/attempts", GET, Attempts, Admin),
    route!("/destinations", GET, Destinations, Admin),
    route!("/backtest", POST, Backtest, Admin),
    route!("/contacts", GET, Contacts, Admin),
    route!("/contacts/{id}", GET, ContactTimeline, Admin),
    route!("/stats", GET, Stats, Admin),
    route!("/report", GET, Report, Admin),
    route!("/", GET, ConsoleIndex, Console),
    route!("/console/config", GET, ConsoleConfig, Console),
    route!("/assets/{asset}", GET, ConsoleAsset, Console),
    route!("/rules/{file}", GET_PUT_DELETE, RuleFile, Admin),
    route!("/lint", POST, Lint, Admin),
    route!("/rescore", GET_POST, Rescore, Admin),
    route!("/rescore/{id}", GET_DELETE, RescoreJob, Admin),
];

impl Route {
    pub fn allows(&self, method: &Method) -> bool {
        self.methods.contains(method) || (method == Method::HEAD && self.methods.contains(&Method::GET))
    }

    /// The `Allow` header of a `405`.
    pub fn allow_header(&self) -> String {
        let mut names: Vec<&str> = Vec::new();
        for method in self.methods {
            names.push(method.as_str());
            if method == Method::GET {
                names.push("HEAD");
            }
        }
        names.join(", ")
    }

    /// The path's `{…}` segment, if it matches.
    fn matches<'p>(&self, path: &'p str) -> Option<Option<&'p str>> {
        let mut param = None;
        let mut given = path.split('/');
        for expected in self.path.split('/') {
            let segment = given.next()?;
            if expected.starts_with('{') {
                if segment.is_empty() {
                    return None;
                }
                param = Some(segment);
            } else if expected != segment {
                return None;
            }
        }
        given.next().is_none().then_some(param)
    }
}

/// The route a path names and its parameter, if any. One trailing slash
/// is ignored (`/healthz/` is `/healthz`), as warp's path filters did.
pub fn find(path: &str) -> Option<(&'static Route, Option<&str>)> {
    let path = match path.strip_suffix('/') {
        Some(trimmed) if !trimmed.is_empty() => trimmed,
        _ => path,
    };
    ROUTES
        .iter()
        .find_map(|route| route.matches(path).map(|param| (route, param)))
}

/// A bounded label for metrics: the route's pattern, never an id.
pub fn label(path: &str) -> &'static str {
    find(path).map_or("other", |(route, _)| route.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_find_their_routes_and_parameters() {
        let (route, param) = find("/deliveries/evt_123/retry").unwrap();
        assert_eq!((route.endpoint, param), (Endpoint::RetryOne, Some("evt_123")));
        assert_eq!(
            find("/deliveries/retry-dead").unwrap().0.endpoint,
            Endpoint::RetryDead
        );
        assert_eq!(find("/").unwrap().0.endpoint, Endpoint::ConsoleIndex);
        assert_eq!(find("/rules/10-a.rhai").unwrap().1, Some("10-a.rhai"));
        assert_eq!(find("/healthz/").unwrap().0.endpoint, Endpoint::Healthz);
        assert_eq!(find("/rules/").unwrap().0.endpoint, Endpoint::Rules);
        for none in [
            "",
            "/nope",
            "/healthz//",
            "//healthz",
            "/deliveries//retry",
            "/nope/../x",
        ] {
            assert!(find(none).is_none(), "{none:?}");
        }
    }

    #[test]
    fn labels_are_bounded_and_allow_lists_head_with_get() {
        assert_eq!(label("/deliveries/evt_123/retry"), "/deliveries/{id}/retry");
        assert_eq!(label("/assets/app.js"), "/assets/{asset}");
        assert_eq!(label("/nope/../x"), "other");
        let (rule_file, _) = find("/rules/x.rhai").unwrap();
        assert_eq!(rule_file.allow_header(), "GET, HEAD, PUT, DELETE");
        assert!(rule_file.allows(&Method::HEAD));
        let (webhook, _) = find("/webhooks/iclosed").unwrap();
        assert_eq!(webhook.allow_header(), "POST");
        assert!(!webhook.allows(&Method::HEAD));
    }
}
