//! `leadscore serve`: wires rules, store, ingest, delivery and HTTP
//! together, and runs the accept loop with the connection limits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::app::{Engine, EngineSettings};
use crate::deliver::manager::{DestinationsSource, Manager, Routes};
use crate::destinations::Destinations;
use crate::http::{HttpSettings, routes};
use crate::ingest::Ingest;
use crate::ingest::auth::InboundAuth;
use crate::reload::{self, LiveRules};
use crate::score::Limits;
use crate::score::pool::ScoringPool;
use crate::store::{self, Retention};

/// Connections served at once; more wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 4096;
/// Connections one peer address may hold at once (issue 19 #4): one client
/// cannot take every slot with idle or slow connections. A reverse proxy on
/// the same host is one peer for all its clients, hence a quarter of all.
pub const MAX_CONNECTIONS_PER_PEER: usize = MAX_CONNECTIONS / 4;
/// A client must send a request's headers within this time, idle
/// keep-alive connections included.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers) accepted.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How long shutdown waits for requests in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// How often old keys, events and delivered records are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Everything `serve` needs, already validated.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub rules_dir: PathBuf,
    pub limits: Limits,
    pub store_url: String,
    /// `None`: ingest scores and stores, nothing is forwarded.
    pub deliveries: Option<DeliveryConfig>,
    pub auth: InboundAuth,
    pub admin_token: Option<String>,
    /// More `Host` names the admin endpoints answer without an admin token.
    pub allowed_hosts: Vec<String>,
    pub retention: Retention,
    pub max_body: usize,
    pub max_contacts: usize,
    /// The console may write rule files (`PUT`/`DELETE /rules/{file}`).
    pub allow_rule_edits: bool,
    /// Most stored contacts one `POST /backtest` may score.
    pub backtest_max_contacts: usize,
    /// Connections one peer address may hold at once ([`MAX_CONNECTIONS_PER_PEER`]).
    pub max_connections_per_peer: usize,
    /// When rescores start by themselves (SPEC 12 "Triggers").
    pub rescore: crate::app::rescore::Triggers,
}

/// Where scored contacts go (SPEC 10).
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// The destinations at start.
    pub destinations: Destinations,
    /// Where they come from (a file is reloaded).
    pub source: DestinationsSource,
    /// How long a claimed delivery stays with one instance.
    pub lease: Duration,
}

/// A running server.
pub struct Running {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    reload: tokio::sync::mpsc::UnboundedSender<reload::Trigger>,
    reload_destinations: tokio::sync::mpsc::UnboundedSender<()>,
}

impl Running {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Asks for a rule reload (what SIGHUP does).
    pub fn reload_rules(&self) {
        let _ = self.reload.send(reload::Trigger::Signal);
        let _ = self.reload_destinations.send(());
    }

    /// Stops taking requests, finishes those in progress and the deliveries
    /// in flight, then returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Waits until the server stops by itself (it does not, unless shut down).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Starts serving on `listener`.
pub async fn start(config: ServeConfig, listener: TcpListener) -> anyhow::Result<Running> {
    let addr = listener.local_addr()?;
    // Install the metrics recorder before anything records.
    crate::telemetry::metrics_handle();
    let rules = LiveRules::load(&config.rules_dir, config.limits.clone()).map_err(|e| {
        anyhow::anyhow!(
            "the rule set in {} did not load:\n{e}",
            config.rules_dir.display()
        )
    })?;
    let store = store::open(&config.store_url, config.retention)
        .await
        .with_context(|| format!("cannot open the store {}", store::redact_url(&config.store_url)))?;
    match store.release_stale_claims().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            deliveries = n,
            "the previous run stopped with deliveries in flight; they are sent again"
        ),
        Err(e) => return Err(anyhow::anyhow!("cannot use the store: {e}")),
    }
    let (watcher, reload_tx) = reload::watch(rules.clone())
        .with_context(|| format!("cannot watch the rules folder {}", config.rules_dir.display()))?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let destination_routes = Routes::new(
        config
            .deliveries
            .as_ref()
            .map(|d| d.destinations.clone())
            .unwrap_or_default(),
    );
    let (reload_destinations, destination_reloads) = tokio::sync::mpsc::unbounded_channel();
    let manager = match &config.deliveries {
        Some(deliveries) => Some((
            Manager::new(destination_routes.clone(), store.clone(), deliveries.lease),
            deliveries.source.clone(),
        )),
        None => {
            tracing::warn!(
                "no destinations (--destinations or --forward-url): contacts are scored and stored, nothing is forwarded"
            );
            None
        }
    };
    if config.auth.is_open() {
        tracing::warn!(
            "no webhook secret is configured: anyone who can reach this server can post contacts \
                        (set --webhook-token, --webhook-hmac-secret or --webhook-secret)"
        );
    }

    let rescorer = Arc::new(crate::app::rescore::Rescorer {
        store: store.clone(),
        around: Arc::new(crate::app::rescore::Live {
            rules: rules.clone(),
            routes: destination_routes.clone(),
        }),
        owner: crate::app::rescore::owner_name(),
        retention: config.retention.retention,
    });
    let rescore_task = tokio::spawn(crate::app::rescore::supervise(
        rescorer.clone(),
        rules.clone(),
        config.rescore.clone(),
        shutdown_rx.clone(),
    ));
    let engine = Arc::new(Engine::new(
        Ingest {
            rules,
            store: store.clone(),
            routes: destination_routes.clone(),
            max_contacts: config.max_contacts,
            pool: ScoringPool::new(ScoringPool::default_size())
                .context("cannot start the scoring threads")?,
        },
        EngineSettings {
            allow_rule_edits: config.allow_rule_edits,
            backtest_max_contacts: config.backtest_max_contacts,
            retention: config.retention.retention,
        },
        rescorer,
    ));
    let http = HttpSettings {
        auth: config.auth.clone(),
        admin_token: config.admin_token.clone(),
        allowed_hosts: config.allowed_hosts.clone(),
        listen: Some(addr),
        max_body: config.max_body,
    };

    let prune_store = store.clone();
    let mut prune_stop = shutdown_rx.clone();
    let pruner = tokio::spawn(async move {
        loop {
            match prune_store.prune().await {
                Ok(p) if p.events > 0 => {
                    tracing::info!(events = p.events, "pruned events past the retention")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "pruning failed; will try again"),
            }
            tokio::select! {
                _ = tokio::time::sleep(PRUNE_EVERY) => {}
                _ = prune_stop.changed() => break,
            }
        }
    });

    let delivery_task = manager
        .map(|(manager, source)| tokio::spawn(manager.run(source, destination_reloads, shutdown_rx.clone())));
    let filter = routes(engine, http);
    tracing::info!(%addr, "listening; point iClosed's webhook at http://{addr}/webhooks/iclosed");
    let closing_store = store.clone();
    let task = tokio::spawn(async move {
        accept_loop(listener, filter, shutdown_rx, config.max_connections_per_peer).await;
        if let Some(task) = delivery_task {
            let _ = task.await;
        }
        let _ = pruner.await;
        let _ = rescore_task.await;
        drop(watcher);
        match closing_store.close().await {
            Ok(true) => {}
            Ok(false) => tracing::info!(
                "the store's write-ahead log was in use and is kept; the next start reads it (nothing is lost)"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "the store's write-ahead log could not be emptied; the next start reads it")
            }
        }
        tracing::info!("stopped");
    });
    Ok(Running {
        addr,
        shutdown: shutdown_tx,
        task,
        reload: reload_tx,
        reload_destinations,
    })
}

async fn accept_loop<F>(
    listener: TcpListener,
    filter: F,
    mut shutdown: watch::Receiver<bool>,
    max_per_peer: usize,
) where
    F: warp::Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_peer = Arc::new(PeerConnections::default());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("never closed"),
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Some(peer_slot) = per_peer.take(peer.ip(), max_per_peer) else {
            // Closed at once: the peer already holds its share of connections.
            crate::telemetry::connection_refused(peer.ip());
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = PathTargetsOnly(hyper_util::service::TowerToHyperService::new(warp::service(
            filter.clone(),
        )));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_HEADER_BYTES)
            .keep_alive(true);
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(peer_slot);
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some requests were still running at shutdown");
    }
}

/// Answers `400` to a request whose target is not a path (the authority
/// form of `CONNECT host:port`) before the routes see it: warp's path
/// filter panics on one (it falls back to an empty static path, which the
/// `http` crate refuses), and a panic would only close the connection.
struct PathTargetsOnly<S>(S);

impl<S> hyper::service::Service<http::Request<hyper::body::Incoming>> for PathTargetsOnly<S>
where
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = warp::reply::Response,
            Error = std::convert::Infallible,
        >,
{
    type Response = warp::reply::Response;
    type Error = std::convert::Infallible;
    type Future =
        futures_util::future::Either<std::future::Ready<Result<Self::Response, Self::Error>>, S::Future>;

    fn call(&self, request: http::Request<hyper::body::Incoming>) -> Self::Future {
        if request.uri().path_and_query().is_none() {
            let refusal = crate::http::error::HttpError::new(
                http::StatusCode::BAD_REQUEST,
                "the request target must be a path (such as /webhooks/iclosed)",
            );
            return futures_util::future::Either::Left(std::future::ready(Ok(refusal.into_response())));
        }
        futures_util::future::Either::Right(self.0.call(request))
    }
}

/// Open connections per peer address.
#[derive(Default)]
struct PeerConnections(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

impl PeerConnections {
    /// One more connection of `peer`, unless it holds `max` already.
    fn take(self: &Arc<Self>, peer: std::net::IpAddr, max: usize) -> Option<PeerSlot> {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(peer).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(PeerSlot(self.clone(), peer))
    }
}

/// Gives the connection back when it ends.
struct PeerSlot(Arc<PeerConnections>, std::net::IpAddr);

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.0.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.1) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.1);
            }
        }
    }
}
