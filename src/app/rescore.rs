//! Rescoring as a use case (SPEC 12): starting a job (`POST /rescore`,
//! `leadscore rescore`, a rule reload, the schedule), its status and
//! cancellation, the rescore of one contact when a call or outcome for it
//! arrives, and the supervisor that takes over a job whose owner died. The
//! job itself is the domain's (`crate::rescore`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::app::AppError;
use crate::deliver::manager::Routes;
use crate::destinations::Destinations;
use crate::reload::LiveRules;
use crate::rescore::{self, Cause, RunEnd, Surroundings};
use crate::score::RuleSet;
use crate::store::{RescoreJob, RescoreSource, Store};

/// The window when a request does not give one.
pub const DEFAULT_SINCE: &str = "30d";

/// `GET /rescore/{id}` (SPEC 12).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobView {
    pub id: String,
    pub state: String,
    pub cause: String,
    /// RFC 3339: contacts first seen since then.
    pub since: String,
    pub scored: u64,
    pub changed: u64,
    pub pushed: u64,
    pub started_at: String,
    pub finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<RescoreJob> for JobView {
    fn from(job: RescoreJob) -> Self {
        Self {
            id: job.id,
            state: job.state,
            cause: job.cause,
            since: crate::time::format_ms(job.since_ms),
            scored: job.scored,
            changed: job.changed,
            pushed: job.pushed,
            started_at: crate::time::format_ms(job.started_at),
            finished_at: job.finished_at.map(crate::time::format_ms),
            error: job.error,
        }
    }
}

/// The live rules and destinations a job of `serve` scores and routes with.
pub struct Live {
    pub rules: Arc<LiveRules>,
    pub routes: Arc<Routes>,
}

impl Surroundings for Live {
    fn rules(&self) -> Arc<RuleSet> {
        self.rules.current()
    }

    fn destinations(&self) -> Arc<Destinations> {
        self.routes.current()
    }

    fn stored(&self, destinations: &[String]) {
        for destination in destinations {
            self.routes.wake(destination);
        }
    }
}

/// Who runs jobs in this process: its owner name (for leases) and how to
/// score.
pub struct Rescorer {
    pub store: Arc<dyn Store>,
    pub around: Arc<dyn Surroundings>,
    pub owner: String,
    /// How far back history reaches (`--retention`).
    pub retention: Duration,
}

/// A name for this process's leases: host, process id and a random part.
pub fn owner_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "leadscore".into());
    format!("{host}-{}-{:08x}", std::process::id(), rand::random::<u32>())
}

impl Rescorer {
    /// Starts a job over contacts first seen since `since` (a duration back
    /// or an RFC 3339 time, never before the retention) and runs it in the
    /// background; `Conflict` names the job already running.
    pub async fn start(self: &Arc<Self>, cause: Cause, since: Option<&str>) -> Result<JobView, AppError> {
        let job = self.begin(cause, since).await?;
        tracing::info!(job = %job.id, cause = %job.cause, "rescore started");
        self.spawn(job.clone());
        Ok(job.into())
    }

    /// Runs a job here to its end (`leadscore rescore`), not in the
    /// background. A job left running by a process that stopped (its lease
    /// ran out) is finished first.
    pub async fn run_here(self: &Arc<Self>, cause: Cause, since: Option<&str>) -> Result<JobView, AppError> {
        if let Some(orphan) = self
            .store
            .take_over_rescore(&self.owner, rescore::lease_until())
            .await?
        {
            tracing::warn!(job = %orphan.id, "finishing a rescore whose process stopped first");
            let id = orphan.id.clone();
            if let Err(e) = rescore::run(self.store.as_ref(), self.around.as_ref(), orphan, &self.owner).await
            {
                self.fail(&id, &e.to_string()).await;
            }
        }
        let job = self.begin(cause, since).await?;
        let id = job.id.clone();
        match rescore::run(self.store.as_ref(), self.around.as_ref(), job, &self.owner).await {
            Ok(_) => {}
            Err(e) => self.fail(&id, &e.to_string()).await,
        }
        status(self.store.as_ref(), &id).await
    }

    /// Records a new job as running, owned here; `Conflict` names the job
    /// already running.
    async fn begin(&self, cause: Cause, since: Option<&str>) -> Result<RescoreJob, AppError> {
        let job = self.new_job(cause, since).await?;
        self.store
            .start_rescore(&job, &self.owner, rescore::lease_until())
            .await?
            .map_err(|running| AppError::Conflict {
                message: format!("rescore {running} is running; one runs at a time"),
                id: running,
            })?;
        Ok(job)
    }

    async fn new_job(&self, cause: Cause, since: Option<&str>) -> Result<RescoreJob, AppError> {
        let now = SystemTime::now();
        let since = crate::time::parse_since(since.unwrap_or(DEFAULT_SINCE), now)
            .map_err(|e| AppError::parameter("since", e))?;
        let since_ms = crate::time::window_start_ms(since, self.retention, now);
        let up_to_seq = self.store.last_seq().await?;
        Ok(rescore::new_job(cause, since_ms, up_to_seq))
    }

    fn spawn(self: &Arc<Self>, job: RescoreJob) {
        let this = self.clone();
        tokio::spawn(async move {
            let id = job.id.clone();
            match rescore::run(this.store.as_ref(), this.around.as_ref(), job, &this.owner).await {
                Ok(RunEnd::Done(job)) => tracing::info!(
                    job = %job.id, scored = job.scored, changed = job.changed, pushed = job.pushed,
                    "rescore done"
                ),
                Ok(RunEnd::Stopped) => tracing::info!(job = %id, "rescore stopped (cancelled or taken over)"),
                Err(e) => this.fail(&id, &e.to_string()).await,
            }
        });
    }

    /// Marks a job failed (when this owner still holds it).
    async fn fail(&self, id: &str, error: &str) {
        tracing::error!(job = %id, error, "rescore failed");
        if let Ok(Some(mut job)) = self.store.rescore_job(id).await {
            job.state = "failed".into();
            job.error = Some(error.to_owned());
            job.finished_at = Some(crate::store::now_ms());
            let _ = self.store.save_rescore(&job, &self.owner, 0).await;
        }
    }

    /// Takes over a job whose owner stopped renewing its lease (it crashed),
    /// and runs it from its cursor. Returns whether one was taken.
    pub async fn take_over(self: &Arc<Self>) -> bool {
        match self
            .store
            .take_over_rescore(&self.owner, rescore::lease_until())
            .await
        {
            Ok(Some(job)) => {
                tracing::info!(job = %job.id, cursor = job.cursor, "taking over a rescore whose owner stopped");
                self.spawn(job);
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for a rescore to take over");
                false
            }
        }
    }

    /// A rule reload put a new set in force (`--rescore-on-reload`): a job
    /// over `window`; one still running (of the old rules) is cancelled first.
    pub async fn after_reload(self: &Arc<Self>, window: &str) {
        if let Ok(jobs) = self.store.recent_rescore_jobs(1).await
            && let Some(running) = jobs.into_iter().find(|j| j.state == "running")
        {
            let _ = self.store.cancel_rescore(&running.id).await;
        }
        if let Err(e) = self.start(Cause::Rules, Some(window)).await {
            tracing::warn!(error = %e, "no rescore after the rule reload");
        }
    }

    /// A call or outcome for a known contact arrived (SPEC 12 "Triggers"):
    /// that contact rescored now, its event keyed by the hook, so a retried
    /// hook rescores nothing twice.
    pub async fn rescore_contact(&self, contact_key: &str, hook_id: &str) -> Result<bool, AppError> {
        let Some(source) = contact_source(self.store.as_ref(), contact_key).await? else {
            return Ok(false);
        };
        let rules = self.around.rules();
        let now = SystemTime::now();
        let histories = self
            .store
            .contact_histories(vec![(contact_key.to_owned(), None)], crate::time::unix_ms(now))
            .await?;
        let destinations = self.around.destinations();
        let scope = format!("call\0{hook_id}");
        let page = tokio::task::spawn_blocking(move || {
            rescore::score_page(
                &rules,
                &destinations,
                &[source],
                &histories,
                now,
                Cause::Call,
                &scope,
            )
        })
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
        let mut selected: Vec<String> = page.events.iter().flat_map(|e| e.destinations.clone()).collect();
        let stored = self.store.enqueue(page.events).await?;
        selected.sort_unstable();
        selected.dedup();
        self.around.stored(&selected);
        Ok(stored
            .iter()
            .any(|s| matches!(s, crate::store::Enqueued::Stored(_))))
    }
}

/// A contact's latest contact event and latest result, from its timeline.
async fn contact_source(store: &dyn Store, contact_key: &str) -> Result<Option<RescoreSource>, AppError> {
    let timeline = store
        .contact_timeline(contact_key, crate::app::contacts::MAX_TIMELINE_EVENTS)
        .await?;
    let Some(latest) = timeline.events.last() else {
        return Ok(None);
    };
    let source = timeline.events.iter().rev().find(|event| {
        crate::payload::parse_json::<serde_json::Value>(&event.body)
            .is_ok_and(|body| body["type"] != "contact.rescored")
    });
    Ok(source.map(|source| RescoreSource {
        contact_key: contact_key.to_owned(),
        source_seq: source.seq,
        source_body: source.body.clone(),
        latest_seq: latest.seq,
        latest_body: (latest.seq != source.seq).then(|| latest.body.clone()),
    }))
}

/// A job's status; `NotFound` for an unknown id.
pub async fn status(store: &dyn Store, id: &str) -> Result<JobView, AppError> {
    store
        .rescore_job(id)
        .await?
        .map(JobView::from)
        .ok_or_else(|| AppError::NotFound(format!("no rescore with id {id:?}")))
}

/// Cancels a running job (a finished one stays as it ended).
pub async fn cancel(store: &dyn Store, id: &str) -> Result<JobView, AppError> {
    store
        .cancel_rescore(id)
        .await?
        .map(JobView::from)
        .ok_or_else(|| AppError::NotFound(format!("no rescore with id {id:?}")))
}

/// The newest jobs, newest first (the console's overview).
pub async fn recent(store: &dyn Store, limit: usize) -> Result<Vec<JobView>, AppError> {
    Ok(store
        .recent_rescore_jobs(limit)
        .await?
        .into_iter()
        .map(JobView::from)
        .collect())
}

/// How `serve` triggers rescores (SPEC 12 "Triggers").
#[derive(Debug, Clone)]
pub struct Triggers {
    /// `--rescore-on-reload`.
    pub on_reload: bool,
    /// `--rescore-every`.
    pub every: Option<Duration>,
    /// `--rescore-window`: the window of the jobs these start.
    pub window: String,
}

/// The background duties of `serve`: take over a job whose owner died,
/// start a job after each rule reload and on the schedule. Stops when
/// `shutdown` turns true.
pub async fn supervise(
    rescorer: Arc<Rescorer>,
    rules: Arc<LiveRules>,
    triggers: Triggers,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut versions = rules.subscribe();
    let mut take_over = tokio::time::interval(rescore::LEASE / 3);
    let mut schedule = triggers.every.map(|every| {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    loop {
        let scheduled = async {
            match schedule.as_mut() {
                Some(interval) => {
                    interval.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = take_over.tick() => {
                rescorer.take_over().await;
            }
            changed = versions.changed() => {
                if changed.is_err() {
                    return;
                }
                if triggers.on_reload {
                    rescorer.after_reload(&triggers.window).await;
                }
            }
            () = scheduled => {
                match rescorer.start(Cause::Schedule, Some(&triggers.window)).await {
                    Ok(job) => tracing::debug!(job = %job.id, "scheduled rescore started"),
                    Err(e) => tracing::info!(error = %e, "no scheduled rescore this time"),
                }
            }
        }
    }
}
