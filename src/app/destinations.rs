//! `GET /destinations` (SPEC 10): each destination of the file in force
//! with its breaker, backlog and last results, and the last rejected file.

use serde::Serialize;

use crate::app::AppError;
use crate::deliver::manager::{FileError, Routes};
use crate::destinations::DestinationStatus;
use crate::store::Store;

#[derive(Debug, Serialize)]
pub struct DestinationsReport {
    pub destinations: Vec<DestinationReport>,
    pub last_error: Option<FileError>,
}

#[derive(Debug, Serialize)]
pub struct DestinationReport {
    #[serde(flatten)]
    pub settings: DestinationStatus,
    /// `closed`, `open` or `half-open` (this instance's breaker).
    pub breaker: &'static str,
    pub pending: u64,
    pub dead: u64,
    pub last_success_at: Option<String>,
    pub last_failure_at: Option<String>,
    pub last_error: Option<String>,
}

pub async fn report(store: &dyn Store, routes: &Routes) -> Result<DestinationsReport, AppError> {
    let backlogs = store.destination_backlogs().await?;
    let destinations = routes
        .current()
        .iter()
        .map(|destination| {
            let backlog = backlogs
                .iter()
                .find(|(name, _)| *name == destination.name)
                .map(|(_, backlog)| *backlog)
                .unwrap_or_default();
            let (breaker, last) = routes.state_of(&destination.name).unwrap_or_default();
            DestinationReport {
                settings: destination.status(),
                breaker: if breaker.is_empty() { "closed" } else { breaker },
                pending: backlog.pending,
                dead: backlog.dead,
                last_success_at: last.success_at.map(crate::time::format_ms),
                last_failure_at: last.failure_at.map(crate::time::format_ms),
                last_error: last.error,
            }
        })
        .collect();
    Ok(DestinationsReport {
        destinations,
        last_error: routes.last_error(),
    })
}
