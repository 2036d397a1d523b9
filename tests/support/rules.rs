//! [`RulesDir`]: a rules folder in a temporary folder, which tests may change.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tempfile::TempDir;

use super::{BENCH_RULES, RULES};

/// A rules folder in a temporary folder, which tests may change.
#[derive(Clone)]
pub struct RulesDir {
    dir: Arc<TempDir>,
    path: PathBuf,
}

impl RulesDir {
    /// A copy of a rules folder's `*.rhai` files and `tiers.toml`.
    pub fn copy_of(source: &Path) -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("a temporary folder"));
        let path = dir.path().join("rules");
        std::fs::create_dir(&path).expect("create the rules folder");
        for entry in std::fs::read_dir(source).unwrap_or_else(|e| panic!("{}: {e}", source.display())) {
            let entry = entry.expect("a folder entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_file() && (name.ends_with(".rhai") || name == "tiers.toml") {
                std::fs::copy(entry.path(), path.join(&name)).expect("copy a rule file");
            }
        }
        Self { dir, path }
    }

    /// A copy of the repository's benchmark rules (`benches/rules`).
    pub fn bench() -> Self {
        Self::copy_of(Path::new(BENCH_RULES))
    }

    /// A copy of the repository's example rules (`rules/`).
    pub fn example() -> Self {
        Self::copy_of(Path::new(RULES))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a file the way editors save: a new file renamed over the old.
    pub fn write(&self, name: &str, text: &str) {
        let staging = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&staging, text).expect("write a staged rule file");
        std::fs::rename(&staging, self.path.join(name)).expect("rename a rule file into place");
    }

    /// Rewrites a file in place (truncate, then write).
    pub fn write_in_place(&self, name: &str, text: &str) {
        std::fs::write(self.path.join(name), text).expect("write a rule file");
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.path.join(name)).expect("remove a rule file");
    }

    /// The same rules reached through a symbolic link beside the folder, so
    /// that a test can switch folders ([`RulesDir::repoint`]) without any
    /// file event inside the watched one.
    pub fn through_symlink(&self) -> Self {
        let link = self.dir.path().join("current");
        std::os::unix::fs::symlink(&self.path, &link).expect("create the symlink");
        Self {
            dir: self.dir.clone(),
            path: link,
        }
    }

    /// Points the symbolic link of [`RulesDir::through_symlink`] at another
    /// folder, atomically.
    pub fn repoint(&self, target: &Path) {
        let staging = self.dir.path().join(".current.tmp");
        std::os::unix::fs::symlink(target, &staging).expect("create the new symlink");
        std::fs::rename(&staging, &self.path).expect("swap the symlink");
    }
}
