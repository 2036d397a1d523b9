//! [`TestStore`]: one isolated store per test, of the kind the environment
//! selects: SQLite in a temporary folder by default; PostgreSQL (a schema of
//! the test's own) when `LEADSCORE_TEST_POSTGRES_URL` is set, unless
//! `LEADSCORE_TEST_STORE=sqlite` (the other half of CI's matrix).

use std::path::PathBuf;
use std::sync::Arc;

use tempfile::TempDir;

/// Which store backend the suite runs against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// A SQLite file in a fresh temporary folder (the default).
    Sqlite,
    /// A PostgreSQL server (`LEADSCORE_TEST_POSTGRES_URL`).
    Postgres(String),
}

impl StoreKind {
    /// PostgreSQL when `LEADSCORE_TEST_POSTGRES_URL` is set, unless
    /// `LEADSCORE_TEST_STORE=sqlite` (the other half of CI's matrix).
    pub fn from_env() -> Self {
        let url = std::env::var("LEADSCORE_TEST_POSTGRES_URL")
            .ok()
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty());
        match (std::env::var("LEADSCORE_TEST_STORE").ok().as_deref(), url) {
            (Some("sqlite"), _) => Self::Sqlite,
            (None, None) => {
                super::skipped(
                    "the PostgreSQL store variant",
                    "LEADSCORE_TEST_POSTGRES_URL is not set; these tests ran on SQLite only \
                     (e.g. LEADSCORE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test)",
                );
                Self::Sqlite
            }
            (Some("postgres") | None, Some(url)) => Self::Postgres(url),
            (Some(other), url) => panic!(
                "LEADSCORE_TEST_STORE={other:?}: use sqlite or postgres (postgres needs \
                 LEADSCORE_TEST_POSTGRES_URL; set: {})",
                url.is_some()
            ),
        }
    }
}

/// One isolated store: what a test (and its restarts) point the server at.
#[derive(Clone)]
pub struct TestStore {
    pub kind: StoreKind,
    pub url: String,
    _dir: Arc<TempDir>,
    /// A PostgreSQL store's schema, dropped with the last clone.
    _schema: Option<Arc<super::pg::Schema>>,
}

impl TestStore {
    /// A fresh, empty store of the kind the environment selects.
    pub fn fresh() -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("a temporary folder"));
        match StoreKind::from_env() {
            StoreKind::Sqlite => Self {
                url: format!("sqlite://{}", dir.path().join("leadscore.db").display()),
                kind: StoreKind::Sqlite,
                _dir: dir,
                _schema: None,
            },
            StoreKind::Postgres(base) => {
                // Isolation per test: a schema of its own, selected through
                // the connection's search_path (the Postgres store creates
                // the schema and its tables in the first schema of the
                // search path); dropped when the test is done with it.
                let schema = super::pg::Schema::new(&base, "it");
                Self {
                    url: schema.options_url(),
                    kind: StoreKind::Postgres(base),
                    _dir: dir,
                    _schema: Some(Arc::new(schema)),
                }
            }
        }
    }

    /// The database file of a SQLite store.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        match self.kind {
            StoreKind::Sqlite => self.url.strip_prefix("sqlite://").map(PathBuf::from),
            StoreKind::Postgres(_) => None,
        }
    }
}

impl TestStore {
    /// A fresh SQLite store, whatever the environment selects (suites about
    /// HTTP rather than storage).
    pub fn sqlite() -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("a temporary folder"));
        Self {
            url: format!("sqlite://{}", dir.path().join("leadscore.db").display()),
            kind: StoreKind::Sqlite,
            _dir: dir,
            _schema: None,
        }
    }
}
