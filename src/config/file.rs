//! The config file (`--config FILE`, SPEC 7): a flat TOML table with the
//! settings of `serve` under their flags' names, e.g.
//!
//! ```toml
//! listen = "0.0.0.0:8080"
//! max-contacts = 500
//! forward-header = ["X-Api-Key: abc"]
//! webhook-secret = { env = "ICLOSED_WEBHOOK_SECRET" }
//! ```
//!
//! This module only reads the file and remembers each key's line; which
//! keys exist and what they accept is the command line's business
//! ([`super::layers`]), so the file can never drift from the flags.

use std::path::{Path, PathBuf};

/// One `key = value` of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    /// 1-based line of the key.
    pub line: usize,
    pub value: FileValue,
}

/// A value as written in the file.
#[derive(Debug, Clone, PartialEq)]
pub enum FileValue {
    Text(String),
    /// `{ env = "NAME" }`: the value of that environment variable.
    FromEnv(String),
    Integer(i64),
    Boolean(bool),
    Array(Vec<FileValue>),
    /// A table that is not `{ env = "NAME" }`.
    Table,
    /// A float or a date: no setting takes them.
    Other(&'static str),
}

impl FileValue {
    /// "a string", "an integer", … for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            FileValue::Text(_) => "a string",
            FileValue::FromEnv(_) => "{ env = … }",
            FileValue::Integer(_) => "an integer",
            FileValue::Boolean(_) => "a boolean",
            FileValue::Array(_) => "an array",
            FileValue::Table => "a table",
            FileValue::Other(name) => name,
        }
    }

    /// The environment variables the value reads.
    pub fn env_names(&self) -> Vec<&str> {
        match self {
            FileValue::FromEnv(name) => vec![name],
            FileValue::Array(items) => items.iter().flat_map(FileValue::env_names).collect(),
            _ => Vec::new(),
        }
    }
}

/// A read config file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub entries: Vec<Entry>,
}

impl ConfigFile {
    /// Reads and parses the file; the error names the file (and the line
    /// for a syntax error).
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("config file {}: cannot read it: {e}", path.display()))?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, String> {
        use std::collections::BTreeMap;
        use toml::Spanned;
        let table: BTreeMap<Spanned<String>, toml::Value> = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|span| line_of(text, span.start));
            let place = line.map_or(String::new(), |line| format!(":{line}"));
            format!("config file {}{place}: {}", path.display(), e.message())
        })?;
        let mut entries: Vec<Entry> = table
            .into_iter()
            .map(|(key, value)| Entry {
                line: line_of(text, key.span().start),
                key: key.into_inner(),
                value: FileValue::from(value),
            })
            .collect();
        entries.sort_by_key(|entry| entry.line);
        Ok(Self {
            path: path.to_path_buf(),
            entries,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|entry| entry.key == key)
    }

    /// `FILE:LINE`, for messages.
    pub fn at(&self, line: usize) -> String {
        format!("{}:{line}", self.path.display())
    }
}

impl From<toml::Value> for FileValue {
    fn from(value: toml::Value) -> Self {
        match value {
            toml::Value::String(text) => FileValue::Text(text),
            toml::Value::Integer(number) => FileValue::Integer(number),
            toml::Value::Boolean(flag) => FileValue::Boolean(flag),
            toml::Value::Array(items) => FileValue::Array(items.into_iter().map(FileValue::from).collect()),
            toml::Value::Table(table) => match (table.len(), table.get("env")) {
                (1, Some(toml::Value::String(name))) => FileValue::FromEnv(name.clone()),
                _ => FileValue::Table,
            },
            toml::Value::Float(_) => FileValue::Other("a float"),
            toml::Value::Datetime(_) => FileValue::Other("a date"),
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    1 + text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_lines_and_values_their_types() {
        let text = "# settings\nlisten = \"0.0.0.0:8080\"\n\nmax-contacts = 500\nallow-rule-edits = true\n\
                    forward-header = [\"A: b\", { env = \"H\" }]\nwebhook-secret = { env = \"WH\" }\n\
                    ratio = 1.5\nbad = { env = 1 }\n";
        let file = ConfigFile::parse(Path::new("l.toml"), text).unwrap();
        let found: Vec<(&str, usize, &FileValue)> = file
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.line, &e.value))
            .collect();
        assert_eq!(
            found,
            vec![
                ("listen", 2, &FileValue::Text("0.0.0.0:8080".into())),
                ("max-contacts", 4, &FileValue::Integer(500)),
                ("allow-rule-edits", 5, &FileValue::Boolean(true)),
                (
                    "forward-header",
                    6,
                    &FileValue::Array(vec![
                        FileValue::Text("A: b".into()),
                        FileValue::FromEnv("H".into())
                    ])
                ),
                ("webhook-secret", 7, &FileValue::FromEnv("WH".into())),
                ("ratio", 8, &FileValue::Other("a float")),
                ("bad", 9, &FileValue::Table),
            ]
        );
        assert_eq!(file.get("forward-header").unwrap().value.env_names(), vec!["H"]);
        assert_eq!(file.at(4), "l.toml:4");
    }

    #[test]
    fn a_syntax_error_names_file_and_line() {
        let error = ConfigFile::parse(Path::new("l.toml"), "listen = \"a\"\nstore = \n").unwrap_err();
        assert!(error.starts_with("config file l.toml:2: "), "{error}");
        let error = ConfigFile::parse(Path::new("l.toml"), "a = 1\na = 2\n").unwrap_err();
        assert!(error.starts_with("config file l.toml:2: "), "{error}");
        let error = ConfigFile::load(Path::new("/no/such/leadscore.toml")).unwrap_err();
        assert!(
            error.contains("/no/such/leadscore.toml: cannot read it"),
            "{error}"
        );
    }
}
