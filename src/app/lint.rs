//! Lint as a use case (SPEC 13): which rule set, which store and window —
//! for `leadscore lint`, `POST /lint` and the console's playground alike.
//! The checks are the domain's (`crate::lint`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::app::{AppError, Engine, backtest};
use crate::lint::{self, History, LintReport};
use crate::score::{RuleSet, RuleSources};
use crate::store::{EventWindow, Store};

/// The window when the request does not say.
pub const DEFAULT_SINCE: &str = "30d";

/// Stored events read at a time.
const PAGE: usize = 512;

/// `POST /lint`'s body: the rule files to check (the playground's edited
/// set), or none for the loaded rules.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LintRequest {
    /// The rule files, complete: a file left out is not in the set.
    pub rules: Option<BTreeMap<String, String>>,
    /// `tiers.toml`; when left out, the loaded one.
    pub tiers: Option<String>,
    pub since: Option<String>,
}

/// Lints a rule set: the store-free checks, then, with a store, the checks
/// against the latest event of each contact received since `since` (a
/// duration back or an RFC 3339 time, never before `retention`).
pub async fn run(
    rules: Arc<RuleSet>,
    store: Option<Arc<dyn Store>>,
    since: &str,
    retention: Duration,
) -> Result<LintReport, AppError> {
    let mut findings = lint::store_free(&rules);
    let Some(store) = store else {
        return Ok(LintReport {
            contacts: None,
            since: None,
            findings,
        });
    };
    let now = SystemTime::now();
    let since = crate::time::parse_since(since, now).map_err(|e| AppError::parameter("since", e))?;
    let since_ms = crate::time::window_start_ms(since, retention, now);
    let window = EventWindow {
        since_ms,
        all_events: false,
        up_to_seq: store.last_seq().await?,
    };
    let mut history = History::new(rules, now);
    let mut after = 0i64;
    loop {
        let events = store.scan_events(window, after, PAGE).await?;
        let Some(last) = events.last() else { break };
        after = last.seq;
        // Each contact is scored: off the async executor.
        history = tokio::task::spawn_blocking(move || {
            events.iter().for_each(|event| history.add(event));
            history
        })
        .await
        .map_err(|e| AppError::Internal(format!("lint failed: {e}")))?;
    }
    findings.extend(history.findings());
    Ok(LintReport {
        contacts: Some(history.contacts()),
        since: Some(crate::time::format_ms(since_ms)),
        findings,
    })
}

impl Engine {
    /// `POST /lint`: the given rule files (or the loaded set) against this
    /// engine's store.
    pub async fn lint(&self, request: LintRequest) -> Result<LintReport, AppError> {
        let loaded = self.rules().current();
        let rules = match request.rules {
            None if request.tiers.is_none() => loaded,
            files => {
                let sources = RuleSources {
                    files: files.map_or_else(
                        || {
                            loaded
                                .rule_texts()
                                .map(|(n, t)| (n.to_owned(), t.to_owned()))
                                .collect()
                        },
                        |files| files.into_iter().collect(),
                    ),
                    tiers: request.tiers.or_else(|| loaded.tiers_source().map(str::to_owned)),
                };
                backtest::compile(sources, self.rules().limits().clone()).await?
            }
        };
        run(
            rules,
            Some(self.store().clone()),
            request.since.as_deref().unwrap_or(DEFAULT_SINCE),
            self.settings().retention,
        )
        .await
    }
}
