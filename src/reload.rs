//! The live rule set: swapped atomically when the rules folder changes.
//! A change is debounced, the whole folder is compiled, and only a set that
//! compiles replaces the current one; scoring in progress finishes on the
//! set it started with (it holds an `Arc` to it).
//!
//! Reloads and changes made through the API are serialised, so an older set
//! can never replace a newer one; a change made through the API compiles
//! once and puts that compiled set in force, and the watcher then finds the
//! folder at the version already loaded and does nothing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::rule_files::{self, RuleFileError};
use crate::score::{CompileError, Limits, LoadError, RuleSet, RuleSources};
use crate::telemetry;

/// Quiet time after the last file event before reloading: editors write a
/// file in several steps (truncate, write, rename).
const DEBOUNCE: Duration = Duration::from_millis(100);

/// How often the folder is looked at when no file event arrives.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// Names, sizes and modification times of the rule files and `tiers.toml`.
fn fingerprint(dir: &Path) -> Vec<(String, u64, Option<SystemTime>)> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !(crate::score::is_rule_file_name(&name) || name == crate::score::TIERS_FILE) {
                return None;
            }
            let meta = std::fs::metadata(entry.path()).ok()?;
            Some((name, meta.len(), meta.modified().ok()))
        })
        .collect();
    entries.sort();
    entries
}

/// The last rejected change, as `GET /rules` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReloadError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub at: String,
}

#[derive(Debug, Clone)]
struct Status {
    loaded_at: SystemTime,
    last_error: Option<ReloadError>,
}

pub struct LiveRules {
    current: ArcSwap<RuleSet>,
    status: Mutex<Status>,
    dir: PathBuf,
    limits: Limits,
    /// Held while a reload or a change decides what is in force.
    changing: Mutex<()>,
    /// The version in force, for whoever acts on a change (a rescore).
    version: tokio::sync::watch::Sender<String>,
}

impl LiveRules {
    /// Loads the folder once; the engine does not start without a valid set.
    pub fn load(dir: &Path, limits: Limits) -> Result<Arc<Self>, LoadError> {
        let rules = RuleSet::load(dir, &limits)?;
        telemetry::rules_loaded(rules.version(), rules.file_names().len());
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(rules),
            status: Mutex::new(Status {
                loaded_at: SystemTime::now(),
                last_error: None,
            }),
            dir: dir.to_path_buf(),
            limits,
            changing: Mutex::new(()),
            version: tokio::sync::watch::Sender::new(String::new()),
        }))
    }

    /// The rule set to score with now.
    pub fn current(&self) -> Arc<RuleSet> {
        self.current.load_full()
    }

    /// Sees each new rule set put in force (a reload, a console change).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<String> {
        self.version.subscribe()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn loaded_at(&self) -> SystemTime {
        self.lock_status().loaded_at
    }

    pub fn last_error(&self) -> Option<ReloadError> {
        self.lock_status().last_error.clone()
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the folder again and, if it differs from the set in force,
    /// compiles it and swaps it in when it compiles. Blocking: call from a
    /// blocking thread.
    pub fn reload(&self) -> Result<bool, Vec<CompileError>> {
        let _serial = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let compiled = RuleSources::read_dir(&self.dir).and_then(|sources| {
            if sources.version() == self.current.load().version() {
                return Ok(None);
            }
            RuleSet::compile(sources, &self.limits).map(Some)
        });
        match compiled {
            Ok(None) => {
                self.lock_status().last_error = None;
                Ok(false)
            }
            Ok(Some(rules)) => {
                self.put_in_force(rules);
                Ok(true)
            }
            Err(LoadError(errors)) => {
                telemetry::rules_reload_failed(
                    errors
                        .iter()
                        .map(|e| (e.file.as_str(), e.line, e.column, e.message.as_str())),
                );
                let first = errors.first().cloned().unwrap_or(CompileError {
                    file: String::new(),
                    line: 0,
                    column: 0,
                    message: "the rule set did not load".into(),
                });
                self.lock_status().last_error = Some(ReloadError {
                    file: first.file,
                    line: first.line,
                    column: first.column,
                    message: first.message,
                    at: crate::time::format_time(SystemTime::now()),
                });
                Err(errors)
            }
        }
    }

    /// Saves (`Some(text)`) or deletes (`None`) one file of the folder if the
    /// resulting set compiles, and puts that compiled set in force before
    /// returning. A refused change writes nothing and leaves the set in
    /// force and its status as they were. Blocking.
    pub fn change(&self, name: &str, text: Option<&str>) -> Result<Arc<RuleSet>, RuleFileError> {
        let _serial = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let rules = match text {
            Some(text) => rule_files::save(&self.dir, name, text, &self.limits)?,
            None => rule_files::delete(&self.dir, name, &self.limits)?,
        };
        if rules.version() != self.current.load().version() {
            self.put_in_force(rules);
        }
        self.lock_status().last_error = None;
        Ok(self.current())
    }

    fn put_in_force(&self, rules: RuleSet) {
        telemetry::rules_loaded(rules.version(), rules.file_names().len());
        let version = rules.version().to_owned();
        self.current.store(Arc::new(rules));
        self.version.send_replace(version);
        let mut status = self.lock_status();
        status.last_error = None;
        status.loaded_at = SystemTime::now();
    }
}

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    FileChange,
    Signal,
}

/// Watches the rules folder and reloads on change; also returns a sender
/// for other triggers (SIGHUP). Stops when the returned watcher is dropped.
pub fn watch(
    live: Arc<LiveRules>,
) -> notify::Result<(notify::RecommendedWatcher, mpsc::UnboundedSender<Trigger>)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Trigger>();
    let events = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Any event in the folder may change the rule set: the reload itself
        // decides (by digest) whether anything changed.
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = events.send(Trigger::FileChange);
        }
    })?;
    // Watching the folder (not each file) keeps working when editors
    // replace a file by renaming a new one over it.
    watcher.watch(live.dir(), RecursiveMode::NonRecursive)?;
    // A watch is lost when the folder itself is replaced (a deploy swapping
    // a directory or a symlink) and some file systems send no events at all:
    // a cheap look at names, sizes and times every second catches those.
    let polled = tx.clone();
    let dir = live.dir().to_path_buf();
    tokio::spawn(async move {
        let mut last = fingerprint(&dir);
        loop {
            tokio::time::sleep(POLL_EVERY).await;
            let now = fingerprint(&dir);
            if now != last {
                last = now;
                if polled.send(Trigger::FileChange).is_err() {
                    return;
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            // Debounce: wait until the folder has been quiet for DEBOUNCE.
            while let Ok(Some(_)) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
            let live = live.clone();
            let result = tokio::task::spawn_blocking(move || live.reload()).await;
            if let Ok(Ok(true)) = result {
                tracing::debug!(trigger = ?first, "rules reloaded");
            }
        }
    });
    Ok((watcher, tx))
}
