//! The one error of the use cases. Each transport translates it once: HTTP
//! to a status and a JSON body (`http::error`), the CLI to a message and an
//! exit code.

use std::time::Duration;

use crate::ingest::IngestError;
use crate::payload::PayloadError;
use crate::rule_files::RuleFileError;
use crate::score::CompileError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request itself is wrong (a parameter, a body); the message names what.
    #[error("{0}")]
    BadRequest(String),
    /// More than a limit allows (body size, contacts per body).
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    NotFound(String),
    /// Not allowed in this configuration (e.g. rule edits switched off).
    #[error("{0}")]
    Forbidden(String),
    /// One at a time: try again after `retry_after`.
    #[error("{message}")]
    Busy { message: String, retry_after: Duration },
    /// Another run of the same thing is in progress (a rescore job): `id`
    /// names it.
    #[error("{message}")]
    Conflict { message: String, id: String },
    /// A rule set that does not compile; every error with its place.
    #[error("{message}")]
    Unprocessable {
        message: String,
        errors: Vec<CompileError>,
    },
    /// The store cannot serve now; the caller may retry.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    /// A query or body parameter out of range or malformed, named in the message.
    pub fn parameter(name: &str, problem: impl std::fmt::Display) -> Self {
        Self::BadRequest(format!("{name}: {problem}"))
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store request failed");
        Self::Unavailable(e.to_string())
    }
}

impl From<PayloadError> for AppError {
    fn from(e: PayloadError) -> Self {
        match e {
            PayloadError::TooManyContacts { .. } => Self::TooLarge(e.to_string()),
            other => Self::BadRequest(other.to_string()),
        }
    }
}

impl From<IngestError> for AppError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Payload(p) => p.into(),
            IngestError::Store(s) => {
                tracing::error!(error = %s, "ingest failed; the sender will retry");
                Self::Unavailable(s.to_string())
            }
            IngestError::Internal(m) => {
                tracing::error!(error = %m, "ingest failed; the sender will retry");
                Self::Internal(m)
            }
        }
    }
}

impl From<RuleFileError> for AppError {
    fn from(e: RuleFileError) -> Self {
        match e {
            RuleFileError::BadName(m) => Self::BadRequest(m),
            RuleFileError::NotFound(_) => Self::NotFound(e.to_string()),
            RuleFileError::Compile(ref errors) => Self::Unprocessable {
                message: e.to_string(),
                errors: errors.clone(),
            },
            RuleFileError::Io(m) => {
                tracing::error!(error = %m, "rule file request failed");
                Self::Internal(m)
            }
        }
    }
}
