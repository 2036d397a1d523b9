//! The live rule set as the API shows it (`GET /rules`), and reading and
//! changing rule files from the console (`GET`/`PUT`/`DELETE /rules/{file}`).

use serde::Serialize;

use crate::app::{AppError, Engine};
use crate::reload::ReloadError;
use crate::rule_files;

/// `GET /rules` (SPEC 4).
#[derive(Debug, Clone, Serialize)]
pub struct RuleStatus {
    pub rules_version: String,
    pub loaded_at: String,
    pub files: Vec<String>,
    pub last_error: Option<ReloadError>,
}

/// What a saved or deleted rule file put in force.
#[derive(Debug, Clone, Serialize)]
pub struct RuleChange {
    pub file: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    pub rules_version: String,
}

/// One rule file's text.
#[derive(Debug, Clone, Serialize)]
pub struct RuleFile {
    pub file: String,
    pub content: String,
}

impl Engine {
    pub fn rule_status(&self) -> RuleStatus {
        let live = self.rules();
        let rules = live.current();
        RuleStatus {
            rules_version: rules.version().to_owned(),
            loaded_at: crate::time::format_time(live.loaded_at()),
            files: rules.file_names(),
            last_error: live.last_error(),
        }
    }

    /// Rule files may be changed through the API only with `--allow-rule-edits`.
    pub fn check_rule_edits_allowed(&self) -> Result<(), AppError> {
        if self.settings().allow_rule_edits {
            Ok(())
        } else {
            Err(AppError::Forbidden(
                "rule files cannot be changed through the API: start leadscore with --allow-rule-edits"
                    .into(),
            ))
        }
    }

    /// The text of a rule file or `tiers.toml` as it is on disk.
    pub async fn read_rule_file(&self, name: String) -> Result<RuleFile, AppError> {
        let dir = self.rules().dir().to_path_buf();
        let lookup = name.clone();
        let content = tokio::task::spawn_blocking(move || rule_files::read(&dir, &lookup))
            .await
            .map_err(|e| AppError::Internal(format!("reading failed: {e}")))??;
        Ok(RuleFile { file: name, content })
    }

    /// Saves (`Some(text)`) or deletes (`None`) a rule file when the
    /// resulting rule set compiles; that set is in force when this returns.
    /// Refused unless rule edits are allowed (`--allow-rule-edits`).
    pub async fn change_rule_file(&self, name: String, text: Option<String>) -> Result<RuleChange, AppError> {
        self.check_rule_edits_allowed()?;
        rule_files::check_name(&name)?;
        let live = self.rules().clone();
        let file = name.clone();
        let deleted = text.is_none();
        let in_force = tokio::task::spawn_blocking(move || live.change(&file, text.as_deref()))
            .await
            .map_err(|e| AppError::Internal(format!("the change failed: {e}")))?;
        match in_force {
            Ok(rules) => {
                let version = rules.version().to_owned();
                tracing::info!(file = %name, deleted, rules_version = %version, "rule file changed through the API");
                Ok(RuleChange {
                    file: name,
                    deleted,
                    rules_version: version,
                })
            }
            Err(e) => {
                tracing::info!(file = %name, error = %e, "rule file change refused; nothing was written");
                Err(e.into())
            }
        }
    }
}
