//! The outcomes report as a use case (SPEC 11): which window and which
//! tiers — for `GET /report` and `leadscore report` alike. The numbers are
//! the domain's (`crate::outcomes`).

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::app::{AppError, Engine};
use crate::outcomes::{self, OutcomeReport};
use crate::score::{TIERS_FILE, Tiers};
use crate::store::Store;

/// The window when the request does not say.
pub const DEFAULT_SINCE: &str = "90d";

/// The report of the contacts first seen since `since` (a duration back or
/// an RFC 3339 time, never before `retention`), laid out by `tiers`.
pub async fn run(
    store: &dyn Store,
    tiers: Tiers,
    since: &str,
    retention: Duration,
) -> Result<OutcomeReport, AppError> {
    let now = SystemTime::now();
    let since = crate::time::parse_since(since, now).map_err(|e| AppError::parameter("since", e))?;
    let since_ms = crate::time::window_start_ms(since, retention, now);
    let rows = store.contact_outcomes(since_ms).await?;
    // Sorting a long window's contacts is CPU work: off the async executor.
    tokio::task::spawn_blocking(move || outcomes::report(&rows, &tiers, crate::time::format_ms(since_ms)))
        .await
        .map_err(|e| AppError::Internal(format!("the report failed: {e}")))
}

/// The tiers of a rules folder: its `tiers.toml`, or the default tiers
/// without one. The rule files are not compiled: a report needs none.
pub fn folder_tiers(rules: &Path) -> Result<Tiers, String> {
    let path = rules.join(TIERS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Tiers::parse(&text)
            .map_err(|e| format!("{}:{}:{}: {}", path.display(), e.line, e.column, e.message)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if rules.is_dir() {
                Ok(Tiers::default())
            } else {
                Err(format!("the rules folder {} does not exist", rules.display()))
            }
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

impl Engine {
    /// `GET /report`: this engine's store, the loaded rule set's tiers.
    pub async fn report(&self, since: Option<&str>) -> Result<OutcomeReport, AppError> {
        let tiers = self.rules().current().tiers().clone();
        run(
            self.store().as_ref(),
            tiers,
            since.unwrap_or(DEFAULT_SINCE),
            self.settings().retention,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_without_tiers_toml_has_the_default_tiers() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(folder_tiers(dir.path()).unwrap(), Tiers::default());
        std::fs::write(
            dir.path().join(TIERS_FILE),
            "[[tiers]]\nname = \"hot\"\nmin_score = 70\n[[tiers]]\nname = \"cold\"\n",
        )
        .unwrap();
        assert_eq!(
            folder_tiers(dir.path()).unwrap().names(),
            ["hot", "cold", "disqualified"]
        );
        std::fs::write(dir.path().join(TIERS_FILE), "[score]\nmin = \"low\"\n").unwrap();
        let error = folder_tiers(dir.path()).unwrap_err();
        assert!(error.contains("tiers.toml:2:"), "{error}");
        let error = folder_tiers(&dir.path().join("missing")).unwrap_err();
        assert!(error.contains("does not exist"), "{error}");
    }
}
