//! The README's commands, checked so that they cannot rot.
//!
//! - Every line of a `sh` block names a program a user has; every
//!   `leadscore …` parses with the binary's own command line (and `serve`'s
//!   settings pass its checks); every repository file a command names exists
//!   (or an earlier command of the README makes it); a `sed` edit finds its
//!   text; `cargo --test/--bench NAME` names a target.
//! - Links to repository files and to the README's own sections resolve,
//!   and nothing outside the repository is referred to.
//! - The quick start's `curl` posts its fixture to a real server and gets
//!   the tier and contact the README shows.
//! - Every `console` transcript (the worked example) runs with the real
//!   binary and prints what the README shows (`…` stands for any text).

#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::Write as _;
use std::path::Path;
use std::process::Stdio;

use clap::Parser as _;
use leadscore::cli::{Cli, Command};
use support::{Options, TestServer};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    let path = repo().join("README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Programs the README may run: what a machine with Rust, curl and the
/// usual tools has, plus `leadscore` itself. A new one is a decision, not
/// an accident (the README once ran a script users did not have).
const PROGRAMS: &[&str] = &[
    "leadscore",
    "cargo",
    "curl",
    "cp",
    "sed",
    "echo",
    "alias",
    "openssl",
    "docker",
    "install",
    "systemctl",
    "bash",
];

/// Top-level folders of the repository: a command word starting with one
/// of them is a repository path and must exist.
const REPOSITORY_FOLDERS: &[&str] = &[
    "rules",
    "tests",
    "benches",
    "packaging",
    "docs",
    "scripts",
    "console",
    ".ci",
    "src",
    "examples",
    "fuzz",
];

// ------------------------------------------------------------ the Markdown

/// A fenced code block: its info string, the README line of its first
/// line, and its text with the fence's indentation removed.
struct Block {
    info: String,
    line: usize,
    text: String,
}

fn blocks(readme: &str) -> Vec<Block> {
    let mut found = Vec::new();
    let mut open: Option<(usize, Block)> = None;
    for (index, line) in readme.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match open.take() {
            None if trimmed.starts_with("```") => {
                let info = trimmed.trim_start_matches('`').trim().to_owned();
                let block = Block {
                    info,
                    line: index + 2,
                    text: String::new(),
                };
                open = Some((indent, block));
            }
            None => {}
            Some((_, block)) if trimmed.starts_with("```") => found.push(block),
            Some((indent, mut block)) => {
                let cut = line.len() - line.trim_start().len();
                block.text.push_str(&line[cut.min(indent)..]);
                block.text.push('\n');
                open = Some((indent, block));
            }
        }
    }
    assert!(open.is_none(), "README.md: a code block is not closed");
    found
}

/// A shell block's logical lines (`\` continuations joined), with the
/// README line each starts on.
fn logical_lines(block: &Block) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (offset, line) in block.text.lines().enumerate() {
        let (start, mut text) = pending.take().unwrap_or((block.line + offset, String::new()));
        match line.trim_end().strip_suffix('\\') {
            Some(head) => {
                text.push_str(head);
                text.push(' ');
                pending = Some((start, text));
            }
            None => {
                text.push_str(line);
                lines.push((start, text));
            }
        }
    }
    lines.extend(pending);
    lines
}

/// Files the README's text introduces before a block ("`rules/45-seats.rhai`:")
/// with that block's text.
fn introduced_files(readme: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = readme.lines().collect();
    let all = blocks(readme);
    let mut files = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let Some(name) = line.strip_prefix('`').and_then(|l| l.strip_suffix("`:")) else {
            continue;
        };
        let block = all
            .iter()
            .find(|b| b.line > index + 1)
            .unwrap_or_else(|| panic!("README line {}: `{name}`: has no block after it", index + 1));
        files.push((name.to_owned(), block.text.clone()));
    }
    files
}

// ------------------------------------------------------------ shell words

/// One simple command: its words (leading `NAME=value` assignments removed)
/// and its redirections (`<`, `>`, `>>` with their targets).
#[derive(Debug, Default)]
struct Simple {
    words: Vec<String>,
    redirects: Vec<(String, String)>,
}

/// What `$NAME`, `${NAME}` and `$(…)` stand for when a line is checked.
fn expansion(name: &str) -> String {
    match name {
        "PWD" => "/home/user/leadscore".to_owned(),
        "HOME" => "/home/user".to_owned(),
        _ => "placeholder".to_owned(),
    }
}

/// Splits a shell line into simple commands, as far as the README needs:
/// quotes, backslashes, `$` expansions, comments, `|`, `&&`, `||`, `;`,
/// `&` and redirections. Anything else is an error naming it.
fn shell_split(line: &str) -> Result<Vec<Simple>, String> {
    let chars: Vec<char> = line.chars().collect();
    let mut commands = vec![Simple::default()];
    let mut word: Option<String> = None;
    let mut redirect: Option<String> = None;
    let mut i = 0;

    fn finish(word: &mut Option<String>, redirect: &mut Option<String>, commands: &mut [Simple]) {
        if let Some(w) = word.take() {
            let current = commands.last_mut().expect("a command");
            match redirect.take() {
                Some(op) => current.redirects.push((op, w)),
                None => current.words.push(w),
            }
        }
    }
    fn dollar(chars: &[char], i: &mut usize) -> Result<String, String> {
        // chars[*i] is '$'
        *i += 1;
        match chars.get(*i) {
            Some('(') => {
                let mut depth = 0;
                while let Some(&c) = chars.get(*i) {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    *i += 1;
                    if depth == 0 {
                        return Ok(expansion(""));
                    }
                }
                Err("an unclosed $(".to_owned())
            }
            Some('{') => {
                let end = chars[*i..]
                    .iter()
                    .position(|&c| c == '}')
                    .ok_or("an unclosed ${")?;
                let name: String = chars[*i + 1..*i + end].iter().collect();
                *i += end + 1;
                Ok(expansion(&name))
            }
            _ => {
                let start = *i;
                while chars
                    .get(*i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    *i += 1;
                }
                if start == *i {
                    return Ok("$".to_owned());
                }
                Ok(expansion(&chars[start..*i].iter().collect::<String>()))
            }
        }
    }

    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' => {
                finish(&mut word, &mut redirect, &mut commands);
                i += 1;
            }
            '#' if word.is_none() => break,
            '\'' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&c| c == '\'')
                    .ok_or("an unclosed '")?;
                word.get_or_insert_default().extend(&chars[i + 1..i + 1 + end]);
                i += end + 2;
            }
            '"' => {
                let text = word.get_or_insert_default();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("an unclosed \"".to_owned()),
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') if matches!(chars.get(i + 1), Some('"' | '\\' | '$' | '`')) => {
                            text.push(chars[i + 1]);
                            i += 2;
                        }
                        Some('$') => text.push_str(&dollar(&chars, &mut i)?),
                        Some('`') => return Err("backquotes".to_owned()),
                        Some(&c) => {
                            text.push(c);
                            i += 1;
                        }
                    }
                }
            }
            '\\' => {
                let next = chars.get(i + 1).ok_or("a trailing backslash")?;
                word.get_or_insert_default().push(*next);
                i += 2;
            }
            '$' => {
                let text = dollar(&chars, &mut i)?;
                word.get_or_insert_default().push_str(&text);
            }
            '`' => return Err("backquotes".to_owned()),
            '|' | '&' | ';' => {
                finish(&mut word, &mut redirect, &mut commands);
                if redirect.is_some() {
                    return Err(format!("a redirection without a target before {c:?}"));
                }
                i += 1;
                if chars.get(i) == Some(&c) {
                    i += 1;
                }
                commands.push(Simple::default());
            }
            '<' | '>' => {
                // `2>` / `1>`: the digits were the start of this redirection.
                if word
                    .as_deref()
                    .is_some_and(|w| w.chars().all(|c| c.is_ascii_digit()))
                {
                    word = None;
                }
                finish(&mut word, &mut redirect, &mut commands);
                let mut op = c.to_string();
                i += 1;
                if chars.get(i) == Some(&'>') {
                    op.push('>');
                    i += 1;
                }
                if chars.get(i) == Some(&'&') {
                    // `2>&1`: a descriptor, not a file.
                    i += 1;
                    while chars.get(i).is_some_and(char::is_ascii_digit) {
                        i += 1;
                    }
                    continue;
                }
                redirect = Some(op);
            }
            c => {
                word.get_or_insert_default().push(c);
                i += 1;
            }
        }
    }
    finish(&mut word, &mut redirect, &mut commands);
    if let Some(op) = redirect {
        return Err(format!("{op} without a target"));
    }
    for command in &mut commands {
        let assignments = command
            .words
            .iter()
            .take_while(|w| {
                w.split_once('=').is_some_and(|(name, _)| {
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                })
            })
            .count();
        command.words.drain(..assignments);
    }
    commands.retain(|c| !c.words.is_empty() || !c.redirects.is_empty());
    Ok(commands)
}

/// Every simple command of every `sh` block, with its README line.
fn sh_commands(readme: &str) -> Vec<(usize, String, Simple)> {
    let mut all = Vec::new();
    for block in blocks(readme).iter().filter(|b| b.info == "sh") {
        for (line, text) in logical_lines(block) {
            let commands = shell_split(&text)
                .unwrap_or_else(|e| panic!("README line {line}: cannot read {text:?}: {e}"));
            all.extend(commands.into_iter().map(|c| (line, text.clone(), c)));
        }
    }
    all
}

// ------------------------------------------------------------ the checks

fn parse_leadscore(words: &[String]) -> Result<(), String> {
    let args = leadscore::cli::with_default_command(words.iter().map(OsString::from));
    let cli = Cli::try_parse_from(args).map_err(|e| e.render().to_string())?;
    if let Some(Command::Serve(serve)) = &cli.command {
        // Settings come from LEADSCORE_* variables too, as for a user.
        serve
            .to_config()
            .map_err(|e| format!("{e} (LEADSCORE_* variables in the environment count too)"))?;
    }
    Ok(())
}

/// Whether `pattern` (one `*` at most) matches a file of `dir`.
fn glob_matches(dir: &Path, pattern: &str) -> bool {
    let (prefix, suffix) = pattern.split_once('*').unwrap_or((pattern, ""));
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.len() >= prefix.len() + suffix.len() && name.starts_with(prefix) && name.ends_with(suffix)
        })
}

/// What the README's commands make: files (`--out`, `--csv`, `>`,
/// introduced files) and folders copied from the repository (`cp -r A B`: B → A).
struct Made {
    files: BTreeSet<String>,
    copies: BTreeMap<String, String>,
}

fn made(readme: &str) -> Made {
    let mut files: BTreeSet<String> = introduced_files(readme)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let mut copies = BTreeMap::new();
    for (_, _, command) in sh_commands(readme) {
        for pair in command.words.windows(2) {
            if matches!(pair[0].as_str(), "--out" | "--csv") {
                files.insert(pair[1].clone());
            }
        }
        for (op, target) in &command.redirects {
            if op.starts_with('>') {
                files.insert(target.clone());
            }
        }
        if command.words.first().is_some_and(|w| w == "cp") {
            let rest: Vec<&String> = command.words[1..]
                .iter()
                .filter(|w| !w.starts_with('-'))
                .collect();
            if let [from, to] = rest.as_slice() {
                copies.insert(to.to_string(), from.to_string());
            }
        }
    }
    Made { files, copies }
}

impl Made {
    /// The repository path a command's path stands for (through a copy).
    fn resolve(&self, path: &str) -> String {
        for (to, from) in &self.copies {
            if path == to {
                return from.clone();
            }
            if let Some(rest) = path.strip_prefix(&format!("{to}/")) {
                return format!("{from}/{rest}");
            }
        }
        path.to_owned()
    }

    /// A repository path (`rules/…`, a copied folder), or a data file
    /// named bare (`payload.json`: a made-up name a user does not have).
    fn is_repository_path(&self, word: &str) -> bool {
        let head = word.split('/').next().unwrap_or("");
        let data_file = !word.starts_with('-')
            && !word.contains('/')
            && [".json", ".jsonl", ".toml", ".rhai", ".csv"]
                .iter()
                .any(|ext| word.ends_with(ext));
        (REPOSITORY_FOLDERS.contains(&head) || self.copies.contains_key(head) || data_file)
            && !word.contains(':')
            && !word.contains('=')
    }

    /// `None` when `path` exists (or is made); else why not.
    fn check(&self, path: &str) -> Option<String> {
        let path = path.trim_end_matches('/');
        if self.files.contains(path) {
            return None;
        }
        let resolved = self.resolve(path);
        let full = repo().join(&resolved);
        let exists = match resolved.rsplit_once('/') {
            Some((dir, name)) if name.contains('*') => glob_matches(&repo().join(dir), name),
            _ => full.exists(),
        };
        (!exists).then(|| format!("{path} is not in the repository"))
    }
}

/// `s/A/B/` → A as plain text.
fn sed_search_text(script: &str) -> Option<String> {
    let body = script.strip_prefix("s/")?;
    let mut text = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => text.push(chars.next()?),
            '/' => return Some(text),
            c => text.push(c),
        }
    }
    None
}

#[test]
fn every_shell_command_in_the_readme_runs_as_written() {
    let readme = readme();
    let made = made(&readme);
    let mut problems = Vec::new();
    let mut leadscore_lines = 0;
    for (line, text, command) in sh_commands(&readme) {
        let mut problem = |what: String| problems.push(format!("README line {line}: {what}\n    {text}"));
        let Some(program) = command.words.first() else {
            continue;
        };
        if !PROGRAMS.contains(&program.as_str()) {
            problem(format!(
                "`{program}` is not a program a user has (known: {PROGRAMS:?})"
            ));
        }
        if program == "leadscore" {
            leadscore_lines += 1;
            if let Err(e) = parse_leadscore(&command.words) {
                problem(format!("the leadscore command line is refused: {e}"));
            }
        }
        for word in &command.words[1..] {
            let path = word.strip_prefix('@');
            let path = match path {
                Some(p) => p,
                None if made.is_repository_path(word) => word,
                None => continue,
            };
            if let Some(why) = made.check(path) {
                problem(why);
            }
        }
        for (op, target) in &command.redirects {
            if op == "<"
                && let Some(why) = made.check(target)
            {
                problem(why);
            }
        }
        if program == "sed"
            && let Some(script) = command.words.iter().find_map(|w| sed_search_text(w))
        {
            let file = made.resolve(command.words.last().expect("a file"));
            match std::fs::read_to_string(repo().join(&file)) {
                Ok(content) if content.contains(&script) => {}
                Ok(_) => problem(format!("sed looks for {script:?}, which {file} does not hold")),
                Err(e) => problem(format!("{file}: {e}")),
            }
        }
        if program == "cargo" {
            for pair in command.words.windows(2) {
                let candidates = match pair[0].as_str() {
                    "--test" => vec![
                        format!("tests/{}.rs", pair[1]),
                        format!("tests/{}/main.rs", pair[1]),
                    ],
                    "--bench" => vec![format!("benches/{}.rs", pair[1])],
                    _ => continue,
                };
                if !candidates.iter().any(|c| repo().join(c).is_file()) {
                    problem(format!(
                        "{} {}: no such target ({candidates:?})",
                        pair[0], pair[1]
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The walk itself must not rot into checking nothing.
    assert!(
        leadscore_lines >= 15,
        "only {leadscore_lines} leadscore command(s) found in sh blocks"
    );
}

#[test]
fn the_shell_splitter_reads_what_the_readme_writes() {
    let commands = shell_split(
        r#"TOKEN=$(openssl rand -hex 24); echo "$TOKEN" | leadscore score - < demo.jsonl 2>&1 # note"#,
    )
    .expect("splits");
    let words: Vec<&Vec<String>> = commands.iter().map(|c| &c.words).collect();
    assert_eq!(
        words,
        [
            &vec!["echo".to_owned(), "placeholder".to_owned()],
            &vec!["leadscore".to_owned(), "score".to_owned(), "-".to_owned()]
        ]
    );
    assert_eq!(commands[1].redirects, [("<".to_owned(), "demo.jsonl".to_owned())]);
    let sed =
        shell_split(r#"sed -i 's/add(18, "Budget \$5k")/x/' candidate/30-budget.rhai"#).expect("splits");
    assert_eq!(sed[0].words[2], r#"s/add(18, "Budget \$5k")/x/"#);
    assert_eq!(
        sed_search_text(&sed[0].words[2]).as_deref(),
        Some(r#"add(18, "Budget $5k")"#)
    );
    assert!(parse_leadscore(&["leadscore".into(), "serve".into(), "--no-such-flag".into()]).is_err());
    assert!(
        parse_leadscore(&[
            "leadscore".into(),
            "--forward-url".into(),
            "ftp://crm.example/leads".into()
        ])
        .is_err()
    );
    assert!(shell_split("echo 'unclosed").is_err());
}

#[test]
fn the_readme_refers_only_to_what_the_repository_holds() {
    let readme = readme();
    let mut problems = Vec::new();
    for needle in ["../shared", "SPEC", "of the spec", "gen-contacts"] {
        for (index, line) in readme.lines().enumerate() {
            if line.contains(needle) {
                problems.push(format!("README line {}: mentions {needle:?}: {line}", index + 1));
            }
        }
    }
    // Section anchors as GitHub makes them.
    let anchors: BTreeSet<String> = readme
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect();
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("](") {
        rest = &rest[start + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = &rest[..end];
        if target.starts_with("http://") || target.starts_with("https://") {
            continue;
        }
        let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
        if !file.is_empty() && !repo().join(file).exists() {
            problems.push(format!("link to {target}: {file} is not in the repository"));
        }
        if file.is_empty() && !anchors.contains(anchor) {
            problems.push(format!("link to #{anchor}: no such section"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The quick start's example request, sent to a server started as the
/// quick start's command starts it (example rules, SQLite, no forwarding).
#[tokio::test]
async fn the_quick_start_curl_example_gets_the_answer_the_readme_shows() {
    let readme = readme();
    let block = blocks(&readme)
        .into_iter()
        .find(|b| b.info == "sh" && b.text.contains("curl") && b.text.contains("--data-binary @"))
        .expect("the quick start's curl example");
    let lines = logical_lines(&block);
    let (_, curl) = lines
        .iter()
        .find(|(_, l)| l.trim_start().starts_with("curl"))
        .expect("a curl line");
    let words = &shell_split(curl).expect("splits")[0].words;
    let file = words
        .iter()
        .find_map(|w| w.strip_prefix('@'))
        .expect("a --data-binary @file");
    let url = words
        .iter()
        .find(|w| w.contains("/webhooks/"))
        .expect("a webhook URL");
    let path = &url[url.find('/').expect("a path")..];
    let header = words
        .windows(2)
        .find(|p| p[0] == "-H")
        .map(|p| p[1].clone())
        .expect("a -H header");
    let (name, value) = header.split_once(':').expect("Name: value");
    let shown = lines
        .iter()
        .find_map(|(_, l)| l.trim_start().strip_prefix("# {"))
        .expect("the answer the README shows, as a comment");
    let field = |key: &str| -> String {
        let start = shown
            .find(&format!("\"{key}\":"))
            .unwrap_or_else(|| panic!("{key} in {shown}"));
        let value = &shown[start + key.len() + 3..];
        value[..value.find([',', '}']).expect("a value end")]
            .trim_matches('"')
            .to_owned()
    };

    let server = TestServer::start(Options::plain()).await;
    let body = std::fs::read(repo().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let reply = server
        .request("POST", path, Some(body), &[(name.trim(), value.trim())])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let answer = reply.json();
    assert_eq!(
        answer["accepted"],
        field("accepted").parse::<u64>().expect("a count"),
        "{answer}"
    );
    assert_eq!(
        answer["duplicates"],
        field("duplicates").parse::<u64>().expect("a count"),
        "{answer}"
    );
    let result = &answer["results"][0];
    assert_eq!(result["contact_id"].to_string(), field("contact_id"), "{answer}");
    assert_eq!(result["tier"], field("tier").as_str(), "{answer}");
    assert!(
        result["id"].as_str().is_some_and(|id| id.starts_with("evt_")),
        "{answer}"
    );
    server.stop().await;
}

/// `…` stands for any text; an abbreviated hash before it (`3f1c…`) too.
fn matches_shown(shown: &str, actual: &str) -> bool {
    let mut pieces: Vec<String> = shown.split('…').map(str::to_owned).collect();
    let last = pieces.len() - 1;
    for piece in &mut pieces[..last] {
        let hex = piece.chars().rev().take_while(char::is_ascii_hexdigit).count();
        let before = piece[..piece.len() - hex].chars().last();
        if hex >= 4 && matches!(before, Some(' ' | '"')) {
            piece.truncate(piece.len() - hex);
        }
    }
    let Some(mut rest) = actual.strip_prefix(pieces[0].as_str()) else {
        return false;
    };
    if last == 0 {
        return rest.is_empty();
    }
    for piece in &pieces[1..last] {
        match rest.find(piece.as_str()) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.ends_with(pieces[last].as_str())
}

/// The worked example: the README's files in a copy of the example rules,
/// then its transcript run with the real binary in that folder.
#[test]
fn console_transcripts_print_what_the_readme_shows() {
    let readme = readme();
    let work = tempfile::tempdir().expect("a temporary folder");
    let rules = work.path().join("rules");
    std::fs::create_dir_all(rules.join("tests")).expect("a rules folder");
    for entry in std::fs::read_dir(repo().join("rules")).expect("rules/") {
        let entry = entry.expect("an entry");
        if entry.path().is_file() {
            std::fs::copy(entry.path(), rules.join(entry.file_name())).expect("copy a rule file");
        }
    }
    for (name, text) in introduced_files(&readme) {
        std::fs::write(work.path().join(&name), text).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let mut ran = 0;
    for block in blocks(&readme).iter().filter(|b| b.info == "console") {
        let mut steps: Vec<(String, Vec<String>)> = Vec::new();
        for line in block.text.lines() {
            match line.strip_prefix("$ ") {
                Some(command) => steps.push((command.to_owned(), Vec::new())),
                None => steps
                    .last_mut()
                    .expect("a $ command first")
                    .1
                    .push(line.to_owned()),
            }
        }
        for (command, shown) in steps {
            let simple = shell_split(&command).expect("splits");
            let (stdin, words) = match simple.as_slice() {
                [echo, run] if echo.words[0] == "echo" => {
                    (Some(format!("{}\n", echo.words[1..].join(" "))), &run.words)
                }
                [run] => (None, &run.words),
                _ => panic!(
                    "README line {}: a transcript runs one leadscore command: {command}",
                    block.line
                ),
            };
            assert_eq!(words[0], "leadscore", "README line {}: {command}", block.line);
            let mut child = support::leadscore()
                .args(&words[1..])
                .current_dir(work.path())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("the binary runs");
            let mut input = child.stdin.take().expect("stdin");
            input
                .write_all(stdin.unwrap_or_default().as_bytes())
                .expect("write stdin");
            drop(input);
            let output = child.wait_with_output().expect("the binary finishes");
            let stdout = String::from_utf8_lossy(&output.stdout);
            let actual: Vec<&str> = stdout.lines().collect();
            let lines_match =
                actual.len() == shown.len() && shown.iter().zip(&actual).all(|(s, a)| matches_shown(s, a));
            assert!(
                output.status.success() && lines_match,
                "README line {}: `{command}` printed\n{stdout}{}\nbut the README shows\n{}",
                block.line,
                String::from_utf8_lossy(&output.stderr),
                shown.join("\n")
            );
            ran += 1;
        }
    }
    assert!(ran >= 3, "only {ran} transcript command(s) found");
}

#[test]
fn wildcard_matching_is_strict_outside_the_wildcards() {
    assert!(matches_shown(
        "ok: 9 rule file(s), rules_version 3f1c…",
        "ok: 9 rule file(s), rules_version 59aaef90"
    ));
    assert!(!matches_shown(
        "ok: 9 rule file(s), rules_version 3f1c…",
        "ok: 8 rule file(s), rules_version 59aaef90"
    ));
    assert!(matches_shown(
        r#"{"score":5,"id":"evt_…"}"#,
        r#"{"score":5,"id":"evt_01ab"}"#
    ));
    assert!(!matches_shown(
        r#"{"score":5,"id":"evt_…"}"#,
        r#"{"score":6,"id":"evt_01ab"}"#
    ));
    assert!(!matches_shown("2 passed, 0 failed", "2 passed, 0 failed!"));
}
