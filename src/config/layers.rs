//! Where a setting's value comes from: flag, then environment, then the
//! config file, then default (SPEC 7).
//!
//! clap already ranks flag > environment > default. The file slots in
//! between by becoming the defaults: the command line is parsed once to
//! find `--config` and the subcommand, the file is checked against the
//! flags of `serve` (its keys are their long names, its values go through
//! the flags' own parsers), and the command line is parsed again with the
//! file's values as the defaults of the flags that subcommand has.
//! `ArgMatches::value_source` then tells a flag from a variable, and a
//! default that the file set from a built-in one.

use std::any::TypeId;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

use super::file::{ConfigFile, Entry, FileValue};
use super::{MASK, did_you_mean, mask_url_password};

/// The id of the global `--config FILE` argument.
pub const CONFIG_ARG: &str = "config";
/// The subcommand whose flags are the settings a file may hold.
const SERVE: &str = "serve";
/// Settings whose value is a size: a string (`"1MiB"`) or a number of bytes.
const SIZE_KEYS: [&str; 1] = ["max-body"];

/// The TOML type a setting takes in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Integer,
    Boolean,
    Size,
    /// A repeatable flag: an array of strings.
    List,
    /// One flag value that is itself a comma-separated list (the retry
    /// schedule): a string, or an array of strings joined with commas.
    CommaList,
}

impl Kind {
    pub fn of(arg: &Arg) -> Kind {
        let value_type = arg.get_value_parser().type_id();
        let integers = [
            TypeId::of::<u64>(),
            TypeId::of::<u32>(),
            TypeId::of::<u16>(),
            TypeId::of::<i64>(),
            TypeId::of::<i32>(),
            TypeId::of::<usize>(),
        ];
        match arg.get_action() {
            ArgAction::SetTrue | ArgAction::SetFalse => Kind::Boolean,
            ArgAction::Append => Kind::List,
            _ if arg.get_long().is_some_and(|long| SIZE_KEYS.contains(&long)) => Kind::Size,
            _ if value_type == TypeId::of::<Vec<Duration>>() => Kind::CommaList,
            _ if integers.iter().any(|integer| value_type == *integer) => Kind::Integer,
            _ => Kind::Text,
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Kind::Text => "a string",
            Kind::Integer => "an integer",
            Kind::Boolean => "a boolean (true or false)",
            Kind::Size => "a size: a string such as \"1MiB\" or a number of bytes",
            Kind::List => "an array of strings, e.g. [\"…\"]",
            Kind::CommaList => "a string or an array of strings",
        }
    }
}

/// The settings of a command: its flags with a long name, in the order
/// of `--help`.
pub fn settings(command: &Command) -> impl Iterator<Item = &Arg> {
    command.get_arguments().filter(|arg| {
        arg.get_long().is_some() && !matches!(arg.get_id().as_str(), "help" | "version" | CONFIG_ARG)
    })
}

fn setting<'a>(command: &'a Command, key: &str) -> Option<&'a Arg> {
    settings(command).find(|arg| arg.get_long() == Some(key))
}

/// Why the command line could not be read.
#[derive(Debug)]
pub enum Failure {
    /// clap's own error (also `--help` and `--version`), to `exit()` with.
    Clap(clap::Error),
    /// Problems with the config file, one message each.
    Config(Vec<String>),
}

/// The parsed command line with the config file's values applied.
#[derive(Debug)]
pub struct Parsed {
    pub matches: ArgMatches,
    /// The command the matches come from (the file's values are its defaults).
    pub command: Command,
    pub file: Option<ConfigFile>,
}

impl Parsed {
    /// The matches and the command of the subcommand that ran (the deepest).
    pub fn leaf(&self) -> (&ArgMatches, &Command) {
        let (mut matches, mut command) = (&self.matches, &self.command);
        while let Some((name, sub_matches)) = matches.subcommand() {
            match command.find_subcommand(name) {
                Some(sub_command) => (matches, command) = (sub_matches, sub_command),
                None => break,
            }
        }
        (matches, command)
    }
}

/// Parses `args` (program name first) with the config file named by
/// `--config`/`LEADSCORE_CONFIG`, if any; `env` reads the variables that
/// `{ env = "NAME" }` values name.
pub fn parse(
    command: Command,
    args: &[OsString],
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Parsed, Failure> {
    let first = command
        .clone()
        .try_get_matches_from(args)
        .map_err(Failure::Clap)?;
    let mut path = Vec::new();
    let mut leaf = &first;
    while let Some((name, sub_matches)) = leaf.subcommand() {
        path.push(name.to_owned());
        leaf = sub_matches;
    }
    let Some(file_path) = leaf.get_one::<PathBuf>(CONFIG_ARG) else {
        return Ok(Parsed {
            matches: first,
            command,
            file: None,
        });
    };
    let file = ConfigFile::load(file_path).map_err(|e| {
        let from = match leaf.value_source(CONFIG_ARG) {
            Some(ValueSource::EnvVariable) => " (named by LEADSCORE_CONFIG)",
            _ => "",
        };
        Failure::Config(vec![format!("{e}{from}")])
    })?;
    let command = apply_file(command, &path, &file, env).map_err(Failure::Config)?;
    let matches = command
        .clone()
        .try_get_matches_from(args)
        .map_err(Failure::Clap)?;
    Ok(Parsed {
        matches,
        command,
        file: Some(file),
    })
}

/// Checks every key of the file against the settings of `serve` and makes
/// the values of those the subcommand at `path` has its defaults. A key
/// `serve` knows but the subcommand does not use is checked and ignored;
/// its `{ env = … }` variables are not read.
pub fn apply_file(
    root: Command,
    path: &[String],
    file: &ConfigFile,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Command, Vec<String>> {
    let Some(serve) = root.find_subcommand(SERVE) else {
        return Err(vec![
            "the command line has no `serve` command to take settings from".into(),
        ]);
    };
    let mut target = &root;
    for name in path {
        target = target
            .find_subcommand(name)
            .ok_or_else(|| vec![format!("no subcommand {name:?}")])?;
    }
    let mut errors = Vec::new();
    let mut defaults = Vec::new();
    for entry in &file.entries {
        let at = file.at(entry.line);
        let Some(arg) = setting(serve, &entry.key) else {
            let known = settings(serve).filter_map(Arg::get_long);
            errors.push(format!(
                "{at}: unknown key {:?}{}",
                entry.key,
                did_you_mean(&entry.key, known)
            ));
            continue;
        };
        let kind = Kind::of(arg);
        if let Err(why) = check_type(&entry.value, kind) {
            errors.push(format!("{at}: {}: {why}", entry.key));
            continue;
        }
        let used_here = setting(target, &entry.key).map(|arg| arg.get_id().clone());
        if used_here.is_none() && !entry.value.env_names().is_empty() {
            continue;
        }
        let values = match resolve(entry, kind, env) {
            Ok(values) => values,
            Err(why) => {
                errors.push(format!("{at}: {}: {why}", entry.key));
                continue;
            }
        };
        let mut valid = true;
        for value in &values {
            if let Err(why) = check_value(arg, value) {
                errors.push(format!("{at}: {}: {why}", entry.key));
                valid = false;
            }
        }
        if let (true, Some(id)) = (valid, used_here) {
            defaults.push((id, values, arg.is_hide_env_values_set()));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(at_path(root, path, move |mut command| {
        for (id, values, secret) in defaults {
            // A secret from the file never shows up as `[default: …]` in help.
            command = command.mut_arg(id, |arg| arg.default_values(values).hide_default_value(secret));
        }
        command
    }))
}

fn at_path(command: Command, path: &[String], change: impl FnOnce(Command) -> Command) -> Command {
    match path.split_first() {
        None => change(command),
        Some((first, rest)) => command.mut_subcommand(first, |sub| at_path(sub, rest, change)),
    }
}

fn check_type(value: &FileValue, kind: Kind) -> Result<(), String> {
    let text_like = |value: &FileValue| matches!(value, FileValue::Text(_) | FileValue::FromEnv(_));
    let fits = match (kind, value) {
        (Kind::Text, value) => text_like(value),
        (Kind::Integer, FileValue::Integer(_)) | (Kind::Boolean, FileValue::Boolean(_)) => true,
        (Kind::Size, FileValue::Text(_) | FileValue::Integer(_)) => true,
        (Kind::List, FileValue::Array(items)) => items.iter().all(text_like),
        (Kind::CommaList, FileValue::Text(_)) => true,
        (Kind::CommaList, FileValue::Array(items)) => {
            items.iter().all(|item| matches!(item, FileValue::Text(_)))
        }
        _ => false,
    };
    if fits {
        return Ok(());
    }
    let found = match value {
        FileValue::Table => "a table (the only table a setting takes is { env = \"NAME\" })".to_owned(),
        FileValue::FromEnv(_) => "{ env = … }, which only strings take".to_owned(),
        FileValue::Array(items) if matches!(kind, Kind::List | Kind::CommaList) => {
            let odd = items
                .iter()
                .find(|item| !text_like(item))
                .map_or("", FileValue::type_name);
            format!("an array holding {odd}")
        }
        other => other.type_name().to_owned(),
    };
    Err(format!("expected {}, found {found}", kind.expected()))
}

/// The values given to the flag, with `{ env = … }` read.
fn resolve(entry: &Entry, kind: Kind, env: &dyn Fn(&str) -> Option<OsString>) -> Result<Vec<String>, String> {
    let read = |name: &str| match env(name) {
        Some(value) if !value.is_empty() => value
            .into_string()
            .map_err(|_| format!("environment variable {name} is not valid UTF-8")),
        _ => Err(format!(
            "environment variable {name} is not set (the file reads it with {{ env = {name:?} }})"
        )),
    };
    let one = |value: &FileValue| match value {
        FileValue::Text(text) => Ok(text.clone()),
        FileValue::FromEnv(name) => read(name),
        FileValue::Integer(number) => Ok(number.to_string()),
        FileValue::Boolean(flag) => Ok(flag.to_string()),
        other => Err(format!(
            "expected {}, found {}",
            kind.expected(),
            other.type_name()
        )),
    };
    match (&entry.value, kind) {
        (FileValue::Array(items), Kind::CommaList) => Ok(vec![
            items.iter().map(one).collect::<Result<Vec<_>, _>>()?.join(","),
        ]),
        (FileValue::Array(items), _) => items.iter().map(one).collect(),
        (value, _) => Ok(vec![one(value)?]),
    }
}

/// Runs the flag's own parser on a value from the file, so that the file
/// accepts exactly what the flag accepts.
fn check_value(arg: &Arg, value: &str) -> Result<(), String> {
    let probe = Arg::new("value")
        .long("value")
        .action(ArgAction::Set)
        .value_parser(arg.get_value_parser().clone());
    let result = Command::new("file")
        .no_binary_name(true)
        .arg(probe)
        .try_get_matches_from([format!("--value={value}")]);
    let Err(error) = result else { return Ok(()) };
    // A secret is never echoed, whatever the parser says.
    let shown = if arg.is_hide_env_values_set() {
        MASK.to_owned()
    } else {
        format!("{value:?}")
    };
    if let Some(ContextValue::Strings(valid)) = error.get(ContextKind::ValidValue) {
        return Err(format!("{shown} is not one of {}", valid.join(", ")));
    }
    match std::error::Error::source(&error) {
        Some(why) if !arg.is_hide_env_values_set() => {
            let why = why.to_string();
            // Our parsers name the value already; clap's (ranges) do not.
            if why.contains(&shown) || why.contains(value) {
                Err(why)
            } else {
                Err(format!("{shown}: {why}"))
            }
        }
        _ => Err(format!("{shown} is not a valid value")),
    }
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env(String),
    /// The config file's line, and the variables `{ env = … }` read.
    File {
        line: usize,
        env: Vec<String>,
    },
    Default,
    /// No value and no default.
    Unset,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag => f.write_str("flag"),
            Source::Env(name) => write!(f, "env {name}"),
            Source::File { line, env } if env.is_empty() => write!(f, "file:{line}"),
            Source::File { line, env } => write!(f, "file:{line} (env {})", env.join(", ")),
            Source::Default => f.write_str("default"),
            Source::Unset => f.write_str("not set"),
        }
    }
}

pub fn source(matches: &ArgMatches, arg: &Arg, file: Option<&ConfigFile>) -> Source {
    let id = arg.get_id().as_str();
    match matches.value_source(id) {
        Some(ValueSource::CommandLine) => Source::Flag,
        Some(ValueSource::EnvVariable) => Source::Env(
            arg.get_env()
                .map(OsStr::to_string_lossy)
                .unwrap_or_default()
                .into_owned(),
        ),
        Some(_) => match arg.get_long().and_then(|key| file?.get(key)) {
            Some(entry) => Source::File {
                line: entry.line,
                env: entry.value.env_names().into_iter().map(str::to_owned).collect(),
            },
            None => Source::Default,
        },
        None => Source::Unset,
    }
}

/// The effective settings of `command` as `key = value  # from SOURCE`
/// lines (TOML, so the output can start a config file), secrets masked.
pub fn effective(matches: &ArgMatches, command: &Command, file: Option<&ConfigFile>) -> Vec<String> {
    settings(command)
        .map(|arg| {
            let key = arg.get_long().unwrap_or_default();
            let from = source(matches, arg, file);
            if from == Source::Unset {
                return format!("# {key} is not set");
            }
            format!("{key} = {}  # from {from}", shown_value(matches, arg))
        })
        .collect()
}

fn shown_value(matches: &ArgMatches, arg: &Arg) -> String {
    let id = arg.get_id().as_str();
    let kind = Kind::of(arg);
    if kind == Kind::Boolean {
        return matches
            .try_get_one::<bool>(id)
            .ok()
            .flatten()
            .copied()
            .unwrap_or(false)
            .to_string();
    }
    let raw: Vec<String> = matches
        .get_raw(id)
        .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let masked: Vec<String> = raw.iter().map(|value| mask(arg, value)).collect();
    let quote = |text: &String| toml::Value::String(text.clone()).to_string();
    match kind {
        Kind::List => format!("[{}]", masked.iter().map(quote).collect::<Vec<_>>().join(", ")),
        Kind::Integer => masked.join(","),
        _ => quote(&masked.join(",")),
    }
}

/// A value as `leadscore config` may show it: secrets masked, the names of
/// secret headers kept, store URLs without their password.
pub fn mask(arg: &Arg, value: &str) -> String {
    if !arg.is_hide_env_values_set() {
        return if arg.get_long() == Some("store") {
            mask_url_password(value)
        } else {
            value.to_owned()
        };
    }
    if value.trim().is_empty() {
        return value.to_owned();
    }
    match (Kind::of(arg), value.split_once(':')) {
        (Kind::List, Some((name, _))) => format!("{name}: {MASK}"),
        _ => MASK.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::{CommandFactory as _, FromArgMatches as _};

    use super::*;
    use crate::cli::Cli;

    fn file(text: &str) -> ConfigFile {
        ConfigFile::parse(Path::new("leadscore.toml"), text).expect("valid TOML")
    }

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn errors_of(path: &[&str], text: &str, env: &dyn Fn(&str) -> Option<OsString>) -> Vec<String> {
        let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        apply_file(Cli::command(), &path, &file(text), env).expect_err("the file is refused")
    }

    /// Parses with the file's text as `--config` (written to a temporary file).
    fn parse_with(text: &str, list: &[&str]) -> Parsed {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leadscore.toml");
        std::fs::write(&path, text).unwrap();
        let mut full = args(list);
        full.push("--config".into());
        full.push(path.into());
        parse(Cli::command(), &full, &no_env).expect("parses")
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line_and_the_closest_key() {
        let errors = errors_of(
            &["serve"],
            "listen = \"127.0.0.1:1\"\n\nforward_url = \"http://x\"\n",
            &no_env,
        );
        assert_eq!(
            errors,
            vec!["leadscore.toml:3: unknown key \"forward_url\"; did you mean \"forward-url\"?"]
        );
        // Unknown to serve means unknown for every command, even one that would ignore it.
        let errors = errors_of(&["check"], "colour = \"blue\"\n", &no_env);
        assert_eq!(errors, vec!["leadscore.toml:1: unknown key \"colour\""]);
        // Flags that are no settings (of other subcommands) are not keys either.
        let errors = errors_of(&["backtest"], "rules = \"r\"\ncandidate = \"c\"\n", &no_env);
        assert_eq!(errors, vec!["leadscore.toml:2: unknown key \"candidate\""]);
    }

    #[test]
    fn a_wrong_type_names_key_line_and_the_expected_type() {
        let text = "max-contacts = \"lots\"\nallow-rule-edits = \"yes\"\nforward-header = \"A: b\"\n\
                    listen = 8080\nmax-body = 1.5\nretry-schedule = [5]\nwebhook-token = { file = \"x\" }\n\
                    rule-max-operations = { env = \"OPS\" }\n";
        let errors = errors_of(&["serve"], text, &no_env);
        assert_eq!(
            errors,
            vec![
                "leadscore.toml:1: max-contacts: expected an integer, found a string",
                "leadscore.toml:2: allow-rule-edits: expected a boolean (true or false), found a string",
                "leadscore.toml:3: forward-header: expected an array of strings, e.g. [\"…\"], found a string",
                "leadscore.toml:4: listen: expected a string, found an integer",
                "leadscore.toml:5: max-body: expected a size: a string such as \"1MiB\" or a number of bytes, \
                 found a float",
                "leadscore.toml:6: retry-schedule: expected a string or an array of strings, \
                 found an array holding an integer",
                "leadscore.toml:7: webhook-token: expected a string, found a table \
                 (the only table a setting takes is { env = \"NAME\" })",
                "leadscore.toml:8: rule-max-operations: expected an integer, found { env = … }, which only strings take",
            ]
        );
    }

    #[test]
    fn values_go_through_the_flags_own_parsers() {
        let text = "max-body = \"lots\"\nforward-concurrency = 5000\nlog-format = \"xml\"\n\
                    listen = \"8080\"\nretry-schedule = [\"5s\", \"soon\"]\ndelivery-lease = \"0s\"\n";
        let errors = errors_of(&["serve"], text, &no_env);
        assert_eq!(errors.len(), 6, "{errors:#?}");
        assert!(
            errors[0].starts_with("leadscore.toml:1: max-body: \"lots\" is not a size"),
            "{}",
            errors[0]
        );
        assert!(
            errors[1] == "leadscore.toml:2: forward-concurrency: 5000 is not in 1..=1024",
            "{}",
            errors[1]
        );
        assert_eq!(
            errors[2],
            "leadscore.toml:3: log-format: \"xml\" is not one of pretty, json"
        );
        assert!(
            errors[3].starts_with("leadscore.toml:4: listen: \"8080\" has no port"),
            "{}",
            errors[3]
        );
        assert!(
            errors[4]
                .starts_with("leadscore.toml:5: retry-schedule: \"5s,soon\": \"soon\" is not a duration"),
            "{}",
            errors[4]
        );
        assert!(
            errors[5].contains("leadscore.toml:6: delivery-lease: \"0s\": must be longer than 0"),
            "{}",
            errors[5]
        );
    }

    #[test]
    fn secrets_come_from_the_environment_and_a_missing_variable_is_named() {
        let env = |name: &str| {
            (name == "WH_SECRET").then(|| OsString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
        };
        let text = "webhook-secret = { env = \"WH_SECRET\" }\nadmin-token = { env = \"NO_SUCH_VAR\" }\n";
        let errors = errors_of(&["serve"], text, &env);
        assert_eq!(
            errors,
            vec![
                "leadscore.toml:2: admin-token: environment variable NO_SUCH_VAR is not set \
                 (the file reads it with { env = \"NO_SUCH_VAR\" })"
            ]
        );
        // `check` uses neither, so neither variable is read.
        let path = vec!["check".to_owned()];
        assert!(apply_file(Cli::command(), &path, &file(text), &no_env).is_ok());
        // A secret from the file is a default that help never shows.
        let command = apply_file(
            Cli::command(),
            &["serve".to_owned()],
            &file(text.lines().next().unwrap()),
            &env,
        )
        .unwrap();
        let serve = command.find_subcommand("serve").unwrap();
        let secret = setting(serve, "webhook-secret").unwrap();
        assert_eq!(
            secret.get_default_values(),
            ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
        );
        assert!(secret.is_hide_default_value_set());
    }

    #[test]
    fn the_file_fills_in_what_flags_do_not_say() {
        let text = "listen = \"127.0.0.1:9001\"\nrules = \"from-file\"\nmax-contacts = 7\n\
                    allow-rule-edits = true\nforward-header = [\"A: 1\", \"B: 2\"]\n\
                    retry-schedule = [\"1s\", \"2s\"]\nmax-body = 2048\n";
        let parsed = parse_with(text, &["leadscore", "config", "--listen", "127.0.0.1:9003"]);
        let Some(crate::cli::Command::Config(args)) = Cli::from_arg_matches(&parsed.matches).unwrap().command
        else {
            panic!("the config command")
        };
        assert_eq!(args.listen, "127.0.0.1:9003", "a flag wins over the file");
        assert_eq!(args.rules.rules, Path::new("from-file"));
        assert_eq!(args.max_contacts, 7);
        assert!(args.allow_rule_edits);
        assert_eq!(args.forward_headers, ["A: 1", "B: 2"]);
        assert_eq!(
            args.retry_schedule,
            [Duration::from_secs(1), Duration::from_secs(2)]
        );
        assert_eq!(args.max_body, 2048);
        assert_eq!(args.forward_concurrency, 16, "the default where neither says");

        let (matches, command) = parsed.leaf();
        let lines = effective(matches, command, parsed.file.as_ref());
        let line = |key: &str| {
            lines
                .iter()
                .find(|l| l.starts_with(&format!("{key} = ")) || l.starts_with(&format!("# {key} ")))
                .unwrap_or_else(|| panic!("{key} in {lines:#?}"))
                .as_str()
        };
        assert_eq!(line("listen"), "listen = \"127.0.0.1:9003\"  # from flag");
        assert_eq!(line("rules"), "rules = \"from-file\"  # from file:2");
        assert_eq!(line("max-contacts"), "max-contacts = 7  # from file:3");
        assert_eq!(line("allow-rule-edits"), "allow-rule-edits = true  # from file:4");
        assert_eq!(
            line("forward-header"),
            "forward-header = [\"A: ********\", \"B: ********\"]  # from file:5"
        );
        assert_eq!(
            line("retry-schedule"),
            "retry-schedule = \"1s,2s\"  # from file:6"
        );
        assert_eq!(
            line("forward-concurrency"),
            "forward-concurrency = 16  # from default"
        );
        assert_eq!(line("forward-url"), "# forward-url is not set");
    }

    /// `--allowed-host` is repeatable: the file takes an array, and a flag
    /// replaces the file's list rather than adding to it.
    #[test]
    fn allowed_hosts_come_from_the_file_unless_a_flag_names_them() {
        let text = "allowed-host = [\"leadscore.internal\", \"10.0.0.5\"]\n";
        let serve_args = |parsed: &Parsed| match Cli::from_arg_matches(&parsed.matches).unwrap().command {
            Some(crate::cli::Command::Config(args)) => args,
            other => panic!("the config command, not {other:?}"),
        };
        let parsed = parse_with(text, &["leadscore", "config"]);
        let args = serve_args(&parsed);
        assert_eq!(args.allowed_hosts, ["leadscore.internal", "10.0.0.5"]);
        let config = args.to_config().expect("valid settings");
        assert_eq!(config.allowed_hosts, ["leadscore.internal", "10.0.0.5"]);
        let (matches, command) = parsed.leaf();
        let lines = effective(matches, command, parsed.file.as_ref());
        assert!(
            lines
                .contains(&"allowed-host = [\"leadscore.internal\", \"10.0.0.5\"]  # from file:1".to_owned()),
            "{lines:#?}"
        );

        let parsed = parse_with(
            text,
            &["leadscore", "config", "--allowed-host", "ops.example.com"],
        );
        assert_eq!(serve_args(&parsed).allowed_hosts, ["ops.example.com"]);

        let errors = errors_of(&["serve"], "allowed-host = \"leadscore.internal\"\n", &no_env);
        assert_eq!(
            errors,
            vec![
                "leadscore.toml:1: allowed-host: expected an array of strings, e.g. [\"…\"], found a string"
            ]
        );
    }

    #[test]
    fn one_shot_commands_take_their_settings_and_ignore_the_others() {
        let text =
            "rules = \"from-file\"\nstore = \"sqlite://x.db\"\nlisten = \"0.0.0.0:1\"\nretention = \"30d\"\n";
        let parsed = parse_with(text, &["leadscore", "deliveries", "list"]);
        let Some(crate::cli::Command::Deliveries(crate::cli::DeliveriesCommand::List { store, .. })) =
            Cli::from_arg_matches(&parsed.matches).unwrap().command
        else {
            panic!("deliveries list")
        };
        assert_eq!(store.store, "sqlite://x.db");
        let parsed = parse_with(text, &["leadscore", "backtest", "--candidate", "c"]);
        let Some(crate::cli::Command::Backtest(args)) =
            Cli::from_arg_matches(&parsed.matches).unwrap().command
        else {
            panic!("backtest")
        };
        assert_eq!(args.rules.rules, Path::new("from-file"));
        assert_eq!(args.store.retention, Duration::from_secs(30 * 86400));
        let parsed = parse_with(text, &["leadscore", "report", "--since", "14d"]);
        let Some(crate::cli::Command::Report(args)) = Cli::from_arg_matches(&parsed.matches).unwrap().command
        else {
            panic!("report")
        };
        assert_eq!(args.rules, Path::new("from-file"));
        assert_eq!(args.store.store, "sqlite://x.db");
        assert_eq!(args.store.retention, Duration::from_secs(30 * 86400));
        assert_eq!(args.since, "14d");
        let parsed = parse_with("", &["leadscore", "report", "--format", "json"]);
        let Some(crate::cli::Command::Report(args)) = Cli::from_arg_matches(&parsed.matches).unwrap().command
        else {
            panic!("report")
        };
        assert_eq!(args.since, "90d", "SPEC 11's default window");
        assert_eq!(args.rules, Path::new("./rules"));
        assert_eq!(args.store.store, "sqlite://./data/leadscore.db");
    }

    #[test]
    fn masking() {
        let command = Cli::command();
        let serve = command.find_subcommand("serve").unwrap();
        let masked = |key: &str, value: &str| mask(setting(serve, key).unwrap(), value);
        assert_eq!(masked("webhook-token", "tok_123"), MASK);
        assert_eq!(
            masked("forward-header", "Authorization: Bearer abc"),
            "Authorization: ********"
        );
        assert_eq!(
            masked("store", "postgres://app:pw@db/leads"),
            "postgres://app:********@db/leads"
        );
        assert_eq!(masked("listen", "127.0.0.1:8080"), "127.0.0.1:8080");
        for key in [
            "webhook-token",
            "webhook-hmac-secret",
            "webhook-secret",
            "forward-secret",
            "admin-token",
        ] {
            assert_eq!(masked(key, "s3cret"), MASK, "{key}");
        }
    }

    /// Every flag of every subcommand says what it is for, and subcommands
    /// show only the settings they use.
    #[test]
    fn every_flag_has_help_and_subcommands_only_their_own_settings() {
        fn walk(command: &Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut command = Cli::command();
        command.build();
        let mut missing = Vec::new();
        walk(&command, "leadscore", &mut missing);
        assert!(missing.is_empty(), "flags without help: {missing:?}");

        let deliveries = command.find_subcommand("deliveries").unwrap();
        for name in ["list", "retry"] {
            let longs: Vec<&str> = deliveries
                .find_subcommand(name)
                .unwrap()
                .get_arguments()
                .filter_map(Arg::get_long)
                .collect();
            assert!(longs.contains(&"store"), "{name}: {longs:?}");
            for unused in ["dedupe-window", "retention", "listen"] {
                assert!(!longs.contains(&unused), "deliveries {name} lists --{unused}");
            }
        }
        let backtest = command.find_subcommand("backtest").unwrap();
        assert!(setting(backtest, "dedupe-window").is_none());
        assert!(setting(backtest, "retention").is_some(), "it bounds the window");
        let report = command.find_subcommand("report").unwrap();
        for unused in ["dedupe-window", "rule-timeout", "rule-max-operations", "listen"] {
            assert!(setting(report, unused).is_none(), "report lists --{unused}");
        }
        for used in ["rules", "store", "retention", "since", "format"] {
            assert!(setting(report, used).is_some(), "report lacks --{used}");
        }
    }

    #[test]
    fn kinds_follow_the_flags() {
        let command = Cli::command();
        let serve = command.find_subcommand("serve").unwrap();
        let kind = |key: &str| Kind::of(setting(serve, key).unwrap());
        assert_eq!(kind("listen"), Kind::Text);
        assert_eq!(kind("max-contacts"), Kind::Integer);
        assert_eq!(kind("rule-max-operations"), Kind::Integer);
        assert_eq!(kind("allow-rule-edits"), Kind::Boolean);
        assert_eq!(kind("forward-header"), Kind::List);
        assert_eq!(kind("retry-schedule"), Kind::CommaList);
        assert_eq!(kind("max-body"), Kind::Size);
        assert_eq!(kind("rule-timeout"), Kind::Text);
    }
}
