//! The destinations a server delivers to (SPEC 10): the live set, one
//! [`Deliverer`] per destination, their wake-ups and health, and the reload
//! of the destinations file (watched, and on SIGHUP). A file that does not
//! load keeps the last good set; its error shows in `GET /destinations`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use super::{AlertSender, Deliverer, DestinationHealth, LastResults, lock};
use crate::destinations::{Defaults, Destination, Destinations};
use crate::store::Store;
use crate::telemetry;

/// How often the destinations file (and its transforms) is looked at.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// The last rejected destinations file, as `GET /destinations` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub at: String,
}

/// Where the `{ env = … }` values of a destinations file come from.
#[derive(Clone, Default)]
pub enum Environment {
    /// The process environment.
    #[default]
    Process,
    /// These values only (an embedding program, tests).
    Fixed(Arc<HashMap<String, String>>),
}

impl Environment {
    pub fn get(&self, name: &str) -> Option<String> {
        match self {
            Environment::Process => crate::destinations::config::process_env(name),
            Environment::Fixed(values) => values.get(name).cloned(),
        }
    }
}

impl std::fmt::Debug for Environment {
    /// Names only: the values are secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Environment::Process => f.write_str("Process"),
            Environment::Fixed(values) => f.debug_set().entries(values.keys()).finish(),
        }
    }
}

/// Where the destinations come from.
#[derive(Debug, Clone)]
pub enum DestinationsSource {
    /// `--destinations FILE`: reloaded when it (or a transform) changes.
    File {
        path: PathBuf,
        defaults: Defaults,
        env: Environment,
    },
    /// `--forward-url`: one destination, `default`, fixed.
    Fixed,
}

/// The live destinations, shared by ingest (selection), the workers and
/// the API.
pub struct Routes {
    set: ArcSwap<Destinations>,
    wakers: DashMap<String, Arc<Notify>>,
    health: DashMap<String, Arc<DestinationHealth>>,
    last_error: Mutex<Option<FileError>>,
}

impl Routes {
    pub fn new(set: Destinations) -> Arc<Self> {
        Arc::new(Self {
            set: ArcSwap::from_pointee(set),
            wakers: DashMap::new(),
            health: DashMap::new(),
            last_error: Mutex::new(None),
        })
    }

    /// The set in force.
    pub fn current(&self) -> Arc<Destinations> {
        self.set.load_full()
    }

    /// Wakes the worker of `destination` (new or requeued deliveries).
    pub fn wake(&self, destination: &str) {
        if let Some(waker) = self.wakers.get(destination) {
            waker.notify_one();
        }
    }

    pub fn wake_all(&self) {
        for waker in self.wakers.iter() {
            waker.notify_one();
        }
    }

    fn waker(&self, destination: &str) -> Arc<Notify> {
        self.wakers
            .entry(destination.to_owned())
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    /// A destination's breaker and last results: kept across reloads, and
    /// a new breaker when its settings changed.
    pub fn health(&self, destination: &Destination) -> Arc<DestinationHealth> {
        let mut entry = self
            .health
            .entry(destination.name.clone())
            .or_insert_with(|| Arc::new(DestinationHealth::new(destination.breaker)));
        if entry.settings != destination.breaker {
            *entry = Arc::new(DestinationHealth::new(destination.breaker));
        }
        entry.clone()
    }

    /// The breaker state and last results of a destination this instance
    /// has delivered to.
    pub fn state_of(&self, destination: &str) -> Option<(&'static str, LastResults)> {
        self.health
            .get(destination)
            .map(|h| (h.breaker_state().as_str(), h.last()))
    }

    pub fn last_error(&self) -> Option<FileError> {
        lock(&self.last_error).clone()
    }
}

/// Runs the workers and applies reloads.
pub struct Manager {
    routes: Arc<Routes>,
    store: Arc<dyn Store>,
    lease: Duration,
    /// Per destination: its settings as shown (secrets redacted, so a
    /// changed secret value alone does not restart it), its stop signal
    /// and its task.
    workers: HashMap<String, (String, watch::Sender<bool>, JoinHandle<()>)>,
}

impl Manager {
    pub fn new(routes: Arc<Routes>, store: Arc<dyn Store>, lease: Duration) -> Self {
        Self {
            routes,
            store,
            lease,
            workers: HashMap::new(),
        }
    }

    /// Starts, restarts and stops workers to match the set in force.
    fn sync_workers(&mut self) {
        let set = self.routes.current();
        let wanted: HashMap<&str, &Destination> = set.iter().map(|d| (d.name.as_str(), d)).collect();
        // Removed destinations stop; their deliveries stay, paused (SPEC 10).
        let removed: Vec<String> = self
            .workers
            .keys()
            .filter(|name| !wanted.contains_key(name.as_str()))
            .cloned()
            .collect();
        for name in removed {
            if let Some((_, stop, _)) = self.workers.remove(&name) {
                let _ = stop.send(true);
                tracing::info!(destination = %name, "destination removed; its deliveries are kept, paused");
            }
        }
        for destination in set.iter() {
            let settings = settings_of(destination);
            if let Some((running, stop, _)) = self.workers.get(&destination.name) {
                if *running == settings {
                    continue;
                }
                let _ = stop.send(true);
            }
            match self.start(destination, &set) {
                Ok((stop, task)) => {
                    tracing::info!(
                        destination = %destination.name,
                        url = %destination.display_url(),
                        template = %destination.template_name(),
                        concurrency = destination.concurrency,
                        "delivering to a destination"
                    );
                    self.workers
                        .insert(destination.name.clone(), (settings, stop, task));
                }
                Err(e) => {
                    tracing::error!(destination = %destination.name, error = %e, "cannot start the destination's HTTP client")
                }
            }
        }
    }

    fn start(
        &self,
        destination: &Destination,
        set: &Destinations,
    ) -> reqwest::Result<(watch::Sender<bool>, JoinHandle<()>)> {
        let alerts = match destination.alert.as_deref().and_then(|name| set.get(name)) {
            Some(target) => Some(Arc::new(AlertSender::new(Arc::new(target.clone()))?)),
            None => None,
        };
        let worker = Deliverer::new(
            self.store.clone(),
            Arc::new(destination.clone()),
            self.lease,
            self.routes.health(destination),
            self.routes.waker(&destination.name),
            alerts,
        )?;
        let (stop, stopped) = watch::channel(false);
        Ok((stop, tokio::spawn(worker.run(stopped))))
    }

    /// Starts the workers, then follows reloads and stops every worker
    /// (each finishes its deliveries in flight) when `shutdown` turns true.
    pub async fn run(
        mut self,
        source: DestinationsSource,
        mut reloads: mpsc::UnboundedReceiver<()>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        self.sync_workers();
        let (changed_tx, mut changed) = mpsc::unbounded_channel::<()>();
        if let DestinationsSource::File { path, .. } = &source {
            let path = path.clone();
            let routes = self.routes.clone();
            tokio::spawn(async move {
                let mut last = fingerprint(&path, &routes.current());
                loop {
                    tokio::time::sleep(POLL_EVERY).await;
                    let now = fingerprint(&path, &routes.current());
                    if now != last {
                        last = now;
                        if changed_tx.send(()).is_err() {
                            return;
                        }
                    }
                }
            });
        }
        loop {
            tokio::select! {
                Some(()) = changed.recv() => self.reload(&source).await,
                Some(()) = reloads.recv() => self.reload(&source).await,
                result = shutdown.changed() => {
                    if result.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        for (_, (_, stop, task)) in self.workers.drain() {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }

    async fn reload(&mut self, source: &DestinationsSource) {
        let DestinationsSource::File { path, defaults, env } = source else {
            return;
        };
        let (path, defaults, env) = (path.clone(), defaults.clone(), env.clone());
        let loaded = tokio::task::spawn_blocking(move || {
            Destinations::load(&path, &defaults, &|name: &str| env.get(name))
        })
        .await;
        match loaded {
            Ok(Ok(set)) => {
                self.routes.set.store(Arc::new(set));
                *lock(&self.routes.last_error) = None;
                telemetry::destinations_reloaded(true);
                tracing::info!("destinations reloaded");
                self.sync_workers();
            }
            Ok(Err(errors)) => {
                telemetry::destinations_reloaded(false);
                if let Some(first) = errors.first() {
                    tracing::error!(error = %first.message(), "the destinations file did not load; keeping the previous destinations");
                    *lock(&self.routes.last_error) = Some(FileError {
                        file: first.file.clone(),
                        line: first.line,
                        column: first.column,
                        message: first.message(),
                        at: crate::time::format_time(SystemTime::now()),
                    });
                }
            }
            Err(e) => tracing::error!(error = %e, "reloading the destinations failed"),
        }
    }
}

/// Sizes and modification times of the destinations file and the
/// transforms the set in force reads.
fn fingerprint(path: &Path, set: &Destinations) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    std::iter::once(path.to_path_buf())
        .chain(set.files.transforms.iter().cloned())
        .map(|file| {
            let meta = std::fs::metadata(&file).ok();
            let size = meta.as_ref().map_or(0, |m| m.len());
            let modified = meta.and_then(|m| m.modified().ok());
            (file, size, modified)
        })
        .collect()
}

/// What makes a worker restart when it changes: the settings as shown
/// (secrets redacted) and the transform script's size and time.
fn settings_of(destination: &Destination) -> String {
    let script = match &destination.body {
        crate::destinations::BodySpec::Transform(transform) => std::fs::metadata(transform.path())
            .ok()
            .map(|m| (m.len(), m.modified().ok())),
        crate::destinations::BodySpec::Template(_) => None,
    };
    format!("{destination:?} {script:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destinations::BreakerSettings;

    /// A reload keeps a destination's breaker, unless its settings changed.
    #[test]
    fn a_changed_breaker_setting_takes_effect_on_reload() {
        let routes = Routes::new(Destinations::default());
        let mut destination = Destination::default_from_forward(
            "http://127.0.0.1:9/".parse().unwrap(),
            None,
            &Default::default(),
            &Default::default(),
        );
        let first = routes.health(&destination);
        assert!(Arc::ptr_eq(&first, &routes.health(&destination)), "kept");
        destination.breaker = BreakerSettings {
            failures: 3,
            cooldown: Duration::from_secs(5),
        };
        let changed = routes.health(&destination);
        assert!(!Arc::ptr_eq(&first, &changed), "replaced");
        assert_eq!(changed.settings, destination.breaker);
    }
}
