//! The use cases, free of any transport: the HTTP API (`http`), the command
//! line (`cli`) and the console all call these and only translate requests
//! and answers. The [`Engine`] is the running service (live rules, store,
//! ingest, the delivery worker's wake-up); the one-shot CLI commands call
//! the same functions of the submodules with a store they opened.
//!
//! Data flow stays in the domain modules (`ingest` → `score` → `store` →
//! `deliver`); this layer decides what a request means, validates its
//! parameters into bounded ranges, and returns one [`AppError`].

pub mod backtest;
pub mod contacts;
pub mod deliveries;
pub mod destinations;
mod error;
pub mod lint;
pub mod report;
pub mod rescore;
pub mod rules;
pub mod stats;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use error::AppError;

use crate::ingest::{Ingest, IngestReply};
use crate::reload::LiveRules;
use crate::score::ScoredContact;
use crate::store::Store;

/// A yes/no parameter (`?trace=true`): `true`/`false`, `1`/`0`; absent is no.
pub fn parse_flag(name: &str, value: Option<&str>) -> Result<bool, AppError> {
    match value.map(str::trim) {
        None => Ok(false),
        Some("true" | "1") => Ok(true),
        Some("false" | "0" | "") => Ok(false),
        Some(other) => Err(AppError::parameter(
            name,
            format!("{other:?} is not true or false"),
        )),
    }
}

/// What the use cases need besides the domain parts.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// The console may write rule files (`--allow-rule-edits`).
    pub allow_rule_edits: bool,
    /// Most stored contacts one backtest over history may score.
    pub backtest_max_contacts: usize,
    /// How far back stored history reaches (`--retention`).
    pub retention: Duration,
}

/// The running service: every use case of `serve`.
pub struct Engine {
    ingest: Ingest,
    settings: EngineSettings,
    backtest_slot: backtest::Slot,
    rescorer: Arc<rescore::Rescorer>,
}

impl Engine {
    pub fn new(ingest: Ingest, settings: EngineSettings, rescorer: Arc<rescore::Rescorer>) -> Self {
        Self {
            ingest,
            settings,
            backtest_slot: Default::default(),
            rescorer,
        }
    }

    /// Starts a rescore job (`POST /rescore`, the console's "Rescore now").
    pub async fn start_rescore(&self, since: Option<&str>) -> Result<rescore::JobView, AppError> {
        self.rescorer.start(crate::rescore::Cause::Manual, since).await
    }

    pub fn rules(&self) -> &Arc<LiveRules> {
        &self.ingest.rules
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.ingest.store
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// Scores and durably stores every contact of a webhook body (SPEC 1, 4).
    /// A call or outcome linked to a known contact rescores that contact
    /// at once (SPEC 12, cause `call`), after the answer: the webhook never
    /// waits for it.
    pub async fn ingest(&self, body: Bytes, delivery_id: Option<String>) -> Result<IngestReply, AppError> {
        let reply = self.ingest.ingest(body, delivery_id).await?;
        let mut linked: Vec<(String, String)> = reply
            .results
            .iter()
            .filter_map(|line| match line {
                crate::ingest::ResultLine::Hook(hook) if !hook.duplicate && hook.kind != "unknown" => {
                    Some((hook.contact_key.clone()?, hook.id.clone()))
                }
                _ => None,
            })
            .collect();
        linked.sort();
        linked.dedup_by(|a, b| a.0 == b.0);
        if !linked.is_empty() {
            let rescorer = self.rescorer.clone();
            tokio::spawn(async move {
                for (contact_key, hook_id) in linked {
                    if let Err(e) = rescorer.rescore_contact(&contact_key, &hook_id).await {
                        tracing::warn!(error = %e, hook_id, "cannot rescore the contact of a call or outcome");
                    }
                }
            });
        }
        Ok(reply)
    }

    /// `POST /score`: scored with the live rules, nothing stored; with
    /// `trace`, each result has its trace (SPEC 13).
    pub async fn dry_run(&self, body: Bytes, trace: bool) -> Result<Vec<ScoredContact>, AppError> {
        Ok(self.ingest.dry_run(body, trace).await?)
    }

    /// Ready when the store takes a write; answers the live rules' version.
    pub async fn readiness(&self) -> Result<String, AppError> {
        self.store()
            .check_writable()
            .await
            .map_err(|e| AppError::Unavailable(format!("not ready: {e}")))?;
        Ok(self.rules().current().version().to_owned())
    }

    /// The Prometheus text, with the delivery backlog read now.
    pub async fn metrics(&self) -> String {
        if let Ok(backlog) = self.store().delivery_backlog().await {
            crate::telemetry::delivery_backlog(backlog.pending, backlog.dead);
        }
        crate::telemetry::metrics_handle().render()
    }

    /// Wakes the delivery worker: new or requeued deliveries are due.
    fn wake_deliveries(&self) {
        self.ingest.routes.wake_all();
    }

    pub async fn list_deliveries(
        &self,
        query: deliveries::DeliveryQuery,
    ) -> Result<Vec<crate::store::DeliveryInfo>, AppError> {
        deliveries::list(self.store().as_ref(), query).await
    }

    /// Requeues an event's dead deliveries; `0` when none is dead.
    pub async fn requeue(&self, id: &str, destination: Option<&str>) -> Result<u64, AppError> {
        let n = deliveries::requeue(self.store().as_ref(), id, destination).await?;
        if n > 0 {
            self.wake_deliveries();
        }
        Ok(n)
    }

    pub async fn requeue_dead(&self, destination: Option<&str>) -> Result<u64, AppError> {
        let n = deliveries::requeue_dead(self.store().as_ref(), destination).await?;
        if n > 0 {
            self.wake_deliveries();
        }
        Ok(n)
    }

    pub async fn attempts(
        &self,
        id: &str,
        destination: Option<&str>,
    ) -> Result<Vec<crate::store::AttemptInfo>, AppError> {
        deliveries::attempts(self.store().as_ref(), id, destination).await
    }

    /// `GET /destinations`.
    pub async fn destinations(&self) -> Result<destinations::DestinationsReport, AppError> {
        destinations::report(self.store().as_ref(), &self.ingest.routes).await
    }

    pub async fn discard_deliveries(&self, destination: Option<&str>) -> Result<u64, AppError> {
        deliveries::discard(self.store().as_ref(), destination).await
    }
}
