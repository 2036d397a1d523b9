//! Reading, saving and deleting the files of a rules folder on behalf of the
//! console (SPEC 9, `GET`/`PUT`/`DELETE /rules/{file}`).
//!
//! A change is checked before it touches the disk: the whole rule set that
//! would result (every other file as it is on disk, this one changed or
//! removed) must compile, else nothing is written and every compile error is
//! returned. A save writes a hidden temporary file in the same folder, syncs
//! it and renames it over the old one, so the watcher and a crash only ever
//! see the old or the new content. Changes are serialised within the process,
//! so two saves cannot each compile against a folder the other is changing.
//!
//! Both return the rule set they compiled, so the caller can put that very
//! set in force (`LiveRules::change`) instead of compiling it again.
//!
//! Blocking (file I/O and compilation): call from a blocking thread.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::score::{CompileError, Limits, LoadError, RuleSet, RuleSources, TIERS_FILE, is_rule_file_name};

/// Why a rule file could not be read, saved or deleted.
#[derive(Debug, thiserror::Error)]
pub enum RuleFileError {
    /// Not a `*.rhai` file name or `tiers.toml` directly in the folder.
    #[error("{0}")]
    BadName(String),
    #[error("no rule file {0:?} in the rules folder")]
    NotFound(String),
    /// The resulting rule set would not compile; nothing was written.
    #[error("the rule set would not compile with this change: {}", first_error(.0))]
    Compile(Vec<CompileError>),
    #[error("{0}")]
    Io(String),
}

fn first_error(errors: &[CompileError]) -> String {
    match errors {
        [] => "no details".into(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} (and {} more)", rest.len()),
    }
}

/// Serialises changes made through this module.
static CHANGES: Mutex<()> = Mutex::new(());

/// Checks that `name` names a rule file (`*.rhai`) or `tiers.toml` directly
/// inside the rules folder: no separators, no `..`, no hidden file.
pub fn check_name(name: &str) -> Result<(), RuleFileError> {
    let bad = |why: &str| Err(RuleFileError::BadName(format!("{name:?} {why}")));
    if name.is_empty() {
        return bad("is empty: name a rule file such as 10-role.rhai, or tiers.toml");
    }
    if name.contains(['/', '\\']) || name.contains("..") {
        return bad("is not a file name directly in the rules folder (no '/', '\\' or '..')");
    }
    if name.starts_with('.') {
        return bad("is a hidden file, which the rules folder ignores");
    }
    if name.chars().any(char::is_control) {
        return bad("contains control characters");
    }
    if name != TIERS_FILE && !is_rule_file_name(name) {
        return bad("is neither a rule file (*.rhai) nor tiers.toml");
    }
    Ok(())
}

/// The text of one rule file or `tiers.toml`.
pub fn read(dir: &Path, name: &str) -> Result<String, RuleFileError> {
    check_name(name)?;
    let path = dir.join(name);
    if !path.is_file() {
        return Err(RuleFileError::NotFound(name.to_owned()));
    }
    std::fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => RuleFileError::NotFound(name.to_owned()),
        _ => RuleFileError::Io(format!("cannot read {name}: {e}")),
    })
}

/// Writes `text` as `name` (a new file or a replacement) if the resulting rule
/// set compiles; returns that rule set.
pub fn save(dir: &Path, name: &str, text: &str, limits: &Limits) -> Result<RuleSet, RuleFileError> {
    check_name(name)?;
    let _guard = CHANGES.lock().unwrap_or_else(|p| p.into_inner());
    let mut sources = read_sources(dir)?;
    if name == TIERS_FILE {
        sources.tiers = Some(text.to_owned());
    } else {
        match sources.files.iter_mut().find(|(n, _)| n == name) {
            Some((_, old)) => *old = text.to_owned(),
            None => sources.files.push((name.to_owned(), text.to_owned())),
        }
    }
    let compiled = compile(sources, limits)?;
    write_atomically(dir, name, text.as_bytes())?;
    Ok(compiled)
}

/// Removes `name` if it exists and the rule set without it compiles;
/// returns that rule set.
pub fn delete(dir: &Path, name: &str, limits: &Limits) -> Result<RuleSet, RuleFileError> {
    check_name(name)?;
    let _guard = CHANGES.lock().unwrap_or_else(|p| p.into_inner());
    let path = dir.join(name);
    if !path.is_file() {
        return Err(RuleFileError::NotFound(name.to_owned()));
    }
    let mut sources = read_sources(dir)?;
    if name == TIERS_FILE {
        sources.tiers = None;
    } else {
        sources.files.retain(|(n, _)| n != name);
    }
    let compiled = compile(sources, limits)?;
    std::fs::remove_file(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => RuleFileError::NotFound(name.to_owned()),
        _ => RuleFileError::Io(format!("cannot delete {name}: {e}")),
    })?;
    sync_dir(dir);
    Ok(compiled)
}

fn read_sources(dir: &Path) -> Result<RuleSources, RuleFileError> {
    RuleSources::read_dir(dir).map_err(|LoadError(errors)| RuleFileError::Io(first_error(&errors)))
}

fn compile(sources: RuleSources, limits: &Limits) -> Result<RuleSet, RuleFileError> {
    RuleSet::compile(sources, limits).map_err(|LoadError(errors)| RuleFileError::Compile(errors))
}

/// A temporary file beside the target (hidden, so neither the watcher's
/// reload nor `RuleSources::read_dir` takes it for a rule), synced, then
/// renamed over the target, then the folder synced.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), RuleFileError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let io = |what: &str, e: std::io::Error| RuleFileError::Io(format!("cannot {what} {name}: {e}"));
    let target = dir.join(name);
    let staging: PathBuf = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = write_and_rename(&staging, &target, bytes).map_err(|(what, e)| io(what, e));
    if result.is_err() {
        let _ = std::fs::remove_file(&staging);
    }
    result?;
    sync_dir(dir);
    Ok(())
}

/// Writes `bytes` to `staging` (with the permissions of `target`, if it
/// exists), syncs it and renames it over `target`.
fn write_and_rename(
    staging: &Path,
    target: &Path,
    bytes: &[u8],
) -> Result<(), (&'static str, std::io::Error)> {
    let mut file = std::fs::File::create(staging).map_err(|e| ("write", e))?;
    file.write_all(bytes).map_err(|e| ("write", e))?;
    // Keep the permissions of the file being replaced.
    if let Ok(meta) = std::fs::metadata(target) {
        let _ = file.set_permissions(meta.permissions());
    }
    file.sync_all().map_err(|e| ("write", e))?;
    drop(file);
    std::fs::rename(staging, target).map_err(|e| ("replace", e))
}

/// Makes a rename or removal durable; best effort (not every file system
/// lets a folder be opened for syncing).
fn sync_dir(dir: &Path) {
    if let Ok(folder) = std::fs::File::open(dir) {
        let _ = folder.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("a temporary folder");
        std::fs::write(dir.path().join("10-a.rhai"), "add(10, \"a\");\n").unwrap();
        std::fs::write(
            dir.path().join("tiers.toml"),
            "[[tiers]]\nname = \"hot\"\nmin_score = 10\n[[tiers]]\nname = \"cold\"\n",
        )
        .unwrap();
        dir
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn names_outside_the_folder_or_not_rules_are_refused() {
        for bad in [
            "",
            "../x.rhai",
            "a/b.rhai",
            "a\\b.rhai",
            "..rhai",
            ".hidden.rhai",
            "x.txt",
            ".rhai",
            "tiers.toml.bak",
            "a\nb.rhai",
        ] {
            assert!(
                matches!(check_name(bad), Err(RuleFileError::BadName(_))),
                "{bad:?}"
            );
        }
        for good in ["10-role.rhai", "tiers.toml", "my rule.rhai"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn a_save_that_breaks_the_set_writes_nothing() {
        let dir = folder();
        let err = save(dir.path(), "10-a.rhai", "add(1,\n  ;", &Limits::default()).unwrap_err();
        let RuleFileError::Compile(errors) = err else {
            panic!("{err:?}")
        };
        assert_eq!(errors[0].file, "10-a.rhai");
        assert_eq!(errors[0].line, 2);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("10-a.rhai")).unwrap(),
            "add(10, \"a\");\n"
        );
        assert_eq!(names(dir.path()), ["10-a.rhai", "tiers.toml"]);
    }

    #[test]
    fn save_replaces_and_creates_without_leaving_temporary_files() {
        let dir = folder();
        save(dir.path(), "10-a.rhai", "add(5, \"five\");", &Limits::default()).unwrap();
        save(dir.path(), "20-b.rhai", "tag(\"b\");", &Limits::default()).unwrap();
        assert_eq!(read(dir.path(), "10-a.rhai").unwrap(), "add(5, \"five\");");
        assert_eq!(names(dir.path()), ["10-a.rhai", "20-b.rhai", "tiers.toml"]);
    }

    #[test]
    fn a_broken_tiers_file_is_refused_with_its_line() {
        let dir = folder();
        let err = save(
            dir.path(),
            "tiers.toml",
            "[[tiers]]\nname = 5\n",
            &Limits::default(),
        )
        .unwrap_err();
        let RuleFileError::Compile(errors) = err else {
            panic!("{err:?}")
        };
        assert_eq!(errors[0].file, "tiers.toml");
        assert!(errors[0].line >= 1, "{errors:?}");
    }

    #[test]
    fn delete_removes_and_reports_unknown_files() {
        let dir = folder();
        save(dir.path(), "20-b.rhai", "tag(\"b\");", &Limits::default()).unwrap();
        delete(dir.path(), "20-b.rhai", &Limits::default()).unwrap();
        assert!(matches!(
            delete(dir.path(), "20-b.rhai", &Limits::default()),
            Err(RuleFileError::NotFound(_))
        ));
        assert!(matches!(
            read(dir.path(), "nope.rhai"),
            Err(RuleFileError::NotFound(_))
        ));
        delete(dir.path(), "tiers.toml", &Limits::default()).unwrap();
        assert_eq!(names(dir.path()), ["10-a.rhai"]);
    }
}
