//! Settings (SPEC 7) as a user meets them, running the real binary: the
//! config file and its precedence, `leadscore config`, and the checks every
//! setting gets at start.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_leadscore");

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The binary with no `LEADSCORE_*` setting inherited from the environment.
fn leadscore() -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LEADSCORE_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(repo());
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the leadscore binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("stderr is UTF-8")
}

/// A config file in its own temporary folder.
struct ConfigFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn config_file(text: &str) -> ConfigFile {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("leadscore.toml");
    std::fs::write(&path, text).expect("the file is written");
    ConfigFile { _dir: dir, path }
}

/// The line `leadscore config` prints for `key`.
fn line_of(out: &Output, key: &str) -> String {
    let text = stdout(out);
    text.lines()
        .find(|line| line.starts_with(&format!("{key} = ")) || line.starts_with(&format!("# {key} ")))
        .unwrap_or_else(|| panic!("no line for {key} in:\n{text}\n{}", stderr(out)))
        .to_owned()
}

/// `serve` (or `leadscore` alone) in an empty folder, for settings it
/// must refuse: were one accepted, it would stop at the missing rules
/// folder (or, at worst, be killed after a minute) instead of serving.
fn serve_refusing(args: &[&str], env: &[(&str, &str)]) -> Output {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let mut child = leadscore()
        .current_dir(folder.path())
        .env("LEADSCORE_LISTEN", "127.0.0.1:0")
        .args(args)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the leadscore binary starts");
    for _ in 0..600 {
        if child.try_wait().expect("the child can be waited for").is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    child.wait_with_output().expect("the output is read")
}

fn refused(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(2),
        "refused with exit 2:\n{}\n{}",
        stdout(out),
        stderr(out)
    );
    stderr(out)
}

#[test]
fn flag_beats_environment_beats_file_beats_default() {
    let file = config_file("# the file\nlisten = \"127.0.0.1:9001\"\n");
    let empty = config_file("# nothing\n");
    // Every combination of the three places: the highest one present wins.
    for flag in [false, true] {
        for env in [false, true] {
            for in_file in [false, true] {
                let mut cmd = leadscore();
                cmd.arg("config");
                if flag {
                    cmd.args(["--listen", "127.0.0.1:9003"]);
                }
                if env {
                    cmd.env("LEADSCORE_LISTEN", "127.0.0.1:9002");
                }
                cmd.arg("--config")
                    .arg(if in_file { &file.path } else { &empty.path });
                let out = run(&mut cmd);
                assert!(out.status.success(), "{}", stderr(&out));
                let expected = match (flag, env, in_file) {
                    (true, _, _) => "listen = \"127.0.0.1:9003\"  # from flag",
                    (false, true, _) => "listen = \"127.0.0.1:9002\"  # from env LEADSCORE_LISTEN",
                    (false, false, true) => "listen = \"127.0.0.1:9001\"  # from file:2",
                    (false, false, false) => "listen = \"127.0.0.1:8080\"  # from default",
                };
                assert_eq!(
                    line_of(&out, "listen"),
                    expected,
                    "flag {flag}, env {env}, file {in_file}"
                );
            }
        }
    }
}

/// Not only printed: a one-shot command runs with the file's rules folder
/// unless the variable or the flag names another one.
#[test]
fn the_file_configures_one_shot_commands_under_the_same_precedence() {
    let folder = |points: u32| {
        let dir = tempfile::tempdir().expect("a temporary folder");
        std::fs::write(
            dir.path().join("10-a.rhai"),
            format!("add({points}, \"from {points}\");\n"),
        )
        .unwrap();
        dir
    };
    let (in_file, in_env, in_flag) = (folder(1), folder(2), folder(3));
    let file = config_file(&format!(
        "rules = {}\nlisten = \"0.0.0.0:1\"\nwebhook-token = {{ env = \"UNSET_SO_NEVER_READ\" }}\n",
        toml_string(in_file.path())
    ));
    let score = |env: bool, flag: bool| {
        let mut cmd = leadscore();
        cmd.args(["score", "--config"]).arg(&file.path);
        if env {
            cmd.env("LEADSCORE_RULES", in_env.path());
        }
        if flag {
            cmd.arg("--rules").arg(in_flag.path());
        }
        let payload = repo().join("tests/fixtures/contact-created-single-object.json");
        let out = run(cmd.arg(payload));
        assert!(out.status.success(), "{}", stderr(&out));
        let scored: serde_json::Value = serde_json::from_str(stdout(&out).lines().next().unwrap()).unwrap();
        scored["score"].as_u64().unwrap()
    };
    assert_eq!(score(false, false), 1, "the file's folder");
    assert_eq!(score(true, false), 2, "the variable wins over the file");
    assert_eq!(score(true, true), 3, "the flag wins over both");
}

fn toml_string(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

#[test]
fn an_unknown_key_is_refused_naming_key_and_line() {
    let file = config_file(
        "listen = \"127.0.0.1:8080\"\n\n# forwarding\nforward_url = \"https://crm.example.com/\"\n",
    );
    for command in [&["config"][..], &["check"], &["deliveries", "list"]] {
        let out = run(leadscore().args(command).arg("--config").arg(&file.path));
        let message = refused(&out);
        let expected = format!(
            "error: {}:4: unknown key \"forward_url\"; did you mean \"forward-url\"?",
            file.path.display()
        );
        assert!(message.contains(&expected), "{command:?}: {message}");
    }
    for command in [&["serve"][..], &[]] {
        let out = serve_refusing(
            &[command, &["--config", file.path.to_str().unwrap()]].concat(),
            &[],
        );
        assert!(
            refused(&out).contains(":4: unknown key \"forward_url\""),
            "{command:?}"
        );
    }
    // The variable names the file too.
    let out = run(leadscore().env("LEADSCORE_CONFIG", &file.path).arg("config"));
    assert!(refused(&out).contains(":4: unknown key \"forward_url\""));
}

#[test]
fn a_wrong_type_names_key_line_and_expected_type() {
    let file = config_file("max-contacts = \"500\"\nallow-rule-edits = 1\n");
    let out = run(leadscore().arg("config").arg("--config").arg(&file.path));
    let message = refused(&out);
    let at = file.path.display();
    assert!(
        message.contains(&format!(
            "error: {at}:1: max-contacts: expected an integer, found a string"
        )),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "error: {at}:2: allow-rule-edits: expected a boolean (true or false), found an integer"
        )),
        "{message}"
    );
}

#[test]
fn a_bad_value_in_the_file_names_key_and_line() {
    let file = config_file("rules = \"./rules\"\nmax-body = \"lots\"\n");
    let out = serve_refusing(&["serve", "--config", file.path.to_str().unwrap()], &[]);
    let message = refused(&out);
    assert!(
        message.contains(&format!(
            "{}:2: max-body: \"lots\" is not a size",
            file.path.display()
        )),
        "{message}"
    );
    // A missing file and a TOML syntax error are named too.
    let out = run(leadscore().args(["config", "--config", "no-such-leadscore.toml"]));
    assert!(refused(&out).contains("config file no-such-leadscore.toml: cannot read it"));
    let broken = config_file("listen = \"127.0.0.1:8080\"\nstore = \n");
    let out = run(leadscore().arg("config").arg("--config").arg(&broken.path));
    assert!(refused(&out).contains(&format!("config file {}:2: ", broken.path.display())));
}

const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[test]
fn a_secret_comes_from_the_variable_the_file_names() {
    let file = config_file("webhook-secret = { env = \"ICLOSED_SECRET_FOR_TEST\" }\n");
    let out = run(leadscore()
        .env("ICLOSED_SECRET_FOR_TEST", WEBHOOK_SECRET)
        .arg("config")
        .arg("--config")
        .arg(&file.path));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        line_of(&out, "webhook-secret"),
        "webhook-secret = \"********\"  # from file:1 (env ICLOSED_SECRET_FOR_TEST)"
    );
    let everything = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        !everything.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        "{everything}"
    );

    // The value is checked like a flag's: a non-whsec_ secret is refused.
    let out = run(leadscore()
        .env("ICLOSED_SECRET_FOR_TEST", "notwhsec")
        .arg("config")
        .arg("--config")
        .arg(&file.path));
    let message = refused(&out);
    assert!(
        message.contains("--webhook-secret: a Standard Webhooks secret starts with `whsec_`"),
        "{message}"
    );
    assert!(!message.contains("notwhsec"), "{message}");

    // A missing variable names key, line and variable.
    let out = run(leadscore().arg("config").arg("--config").arg(&file.path));
    let message = refused(&out);
    assert!(
        message.contains(&format!(
            "error: {}:1: webhook-secret: environment variable ICLOSED_SECRET_FOR_TEST is not set",
            file.path.display()
        )),
        "{message}"
    );
}

#[test]
fn leadscore_config_masks_every_secret() {
    let secrets = [
        "tok_Zr4T9qLm2XcV8bN2",
        "hmac_Qw8Er7Ty6Ui5Op4",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        "adm_Lk3Jh2Gf1Ds0Aa9",
        "hdr_Xy7Wv6Ut5Sr4Qp3",
        "pw_Nm2Bv3Cx4Zl5Kj6",
    ];
    let file = config_file(&format!(
        "forward-url = \"https://crm.example.com/hook\"\nforward-secret = \"whsec_{}\"\n\
         forward-header = [\"X-Api-Key: {}\"]\nstore = \"postgres://app:{}@db.example.com/leads\"\n",
        secrets[3], secrets[5], secrets[6]
    ));
    let out = run(leadscore()
        .env("LEADSCORE_WEBHOOK_HMAC_SECRET", secrets[1])
        .arg("config")
        .arg("--config")
        .arg(&file.path)
        .args([
            "--webhook-token",
            secrets[0],
            "--webhook-hmac-header",
            "X-Signature",
        ])
        .args(["--webhook-secret", &format!("whsec_{}", secrets[2])])
        .args(["--admin-token", secrets[4]]));
    assert!(out.status.success(), "{}", stderr(&out));
    let everything = format!("{}{}", stdout(&out), stderr(&out));
    for secret in secrets {
        assert!(!everything.contains(secret), "{secret} shown:\n{everything}");
    }
    assert_eq!(
        line_of(&out, "webhook-token"),
        "webhook-token = \"********\"  # from flag"
    );
    assert_eq!(
        line_of(&out, "webhook-hmac-secret"),
        "webhook-hmac-secret = \"********\"  # from env LEADSCORE_WEBHOOK_HMAC_SECRET"
    );
    assert_eq!(
        line_of(&out, "webhook-hmac-header"),
        "webhook-hmac-header = \"X-Signature\"  # from flag"
    );
    assert_eq!(
        line_of(&out, "webhook-secret"),
        "webhook-secret = \"********\"  # from flag"
    );
    assert_eq!(
        line_of(&out, "admin-token"),
        "admin-token = \"********\"  # from flag"
    );
    assert_eq!(
        line_of(&out, "forward-secret"),
        "forward-secret = \"********\"  # from file:2"
    );
    assert_eq!(
        line_of(&out, "forward-header"),
        "forward-header = [\"X-Api-Key: ********\"]  # from file:3"
    );
    assert_eq!(
        line_of(&out, "store"),
        "store = \"postgres://app:********@db.example.com/leads\"  # from file:4"
    );
    assert_eq!(
        line_of(&out, "forward-url"),
        "forward-url = \"https://crm.example.com/hook\"  # from file:1"
    );
}

/// One refused start: the flags, the variables, and what the message says.
type RefusedStart<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);

#[test]
fn every_setting_is_checked_at_start_with_a_message_naming_it() {
    let cases: Vec<RefusedStart> = vec![
        (
            vec![],
            vec![("LEADSCORE_LOG", "debugg")],
            "invalid value \"debugg\" for LEADSCORE_LOG",
        ),
        (
            vec![],
            vec![("LEADSCORE_LOG", "debugg")],
            "did you mean \"debug\"?",
        ),
        (
            vec![],
            vec![("LEADSCORE_LOG", "leadscore=loud")],
            "\"loud\" is not a level",
        ),
        (
            vec!["--webhook-secret", "notwhsec"],
            vec![],
            "--webhook-secret: a Standard Webhooks secret starts with `whsec_`",
        ),
        (
            vec!["--forward-secret", "notwhsec"],
            vec![],
            "--forward-secret: a Standard Webhooks secret starts with `whsec_`",
        ),
        (
            vec!["--listen", "8080"],
            vec![],
            "'--listen <LISTEN>': \"8080\" has no port",
        ),
        (
            vec![],
            vec![("LEADSCORE_LISTEN", "localhost:http")],
            "is not a port",
        ),
        (
            vec!["--store", "mysql://db/leads"],
            vec![],
            "--store \"mysql://db/leads\" is not a store URL",
        ),
        (
            vec!["--forward-timeout", "0s"],
            vec![],
            "'--forward-timeout <FORWARD_TIMEOUT>': \"0s\": must be longer than 0",
        ),
        (vec!["--delivery-lease", "0ms"], vec![], "--delivery-lease"),
        (
            vec!["--retention", "500y"],
            vec![],
            "\"500y\" is too long (at most 100 years)",
        ),
        (vec!["--max-body", "1 parsec"], vec![], "--max-body"),
        (vec!["--forward-header", "no colon"], vec![], "--forward-header"),
    ];
    for (flags, env, expected) in &cases {
        // `leadscore config` checks like `serve`, which refuses to start.
        let config = run(leadscore().arg("config").args(flags).envs(env.iter().copied()));
        let serve = serve_refusing(&[&["serve"][..], flags].concat(), env);
        for (command, out) in [("config", config), ("serve", serve)] {
            let message = refused(&out);
            assert!(
                message.contains(expected),
                "{command} {flags:?} {env:?}: expected {expected:?} in\n{message}"
            );
        }
    }
    // A store password is never shown in a message about the store.
    let out = run(leadscore().args(["config", "--store", "mysql://app:pw_Nm2Bv3@db/leads"]));
    let message = refused(&out);
    assert!(
        !message.contains("pw_Nm2Bv3") && !stdout(&out).contains("pw_Nm2Bv3"),
        "{message}"
    );
    // The one-shot commands check the log filter too.
    let out = run(leadscore().env("LEADSCORE_LOG", "debugg").arg("test"));
    assert!(refused(&out).contains("LEADSCORE_LOG"));
}

#[test]
fn test_with_no_tests_is_an_error_naming_the_folder() {
    let rules = tempfile::tempdir().expect("a temporary folder");
    std::fs::write(rules.path().join("10-a.rhai"), "add(1, \"a\");\n").unwrap();
    let out = run(leadscore().arg("test").arg("--rules").arg(rules.path()));
    let message = refused(&out);
    assert!(
        message.contains(&format!(
            "no rule tests in {}",
            rules.path().join("tests").display()
        )),
        "{message}"
    );
    // A tests folder with no test in its files is no better.
    std::fs::create_dir(rules.path().join("tests")).unwrap();
    std::fs::write(rules.path().join("tests/empty.toml"), "# none yet\n").unwrap();
    let out = run(leadscore().arg("test").arg("--rules").arg(rules.path()));
    let message = refused(&out);
    assert!(message.contains("no tests in"), "{message}");
    assert!(message.contains("empty.toml"), "{message}");
}

#[test]
fn subcommands_list_only_their_own_settings() {
    for command in [&["deliveries", "list"][..], &["deliveries", "retry"]] {
        let out = run(leadscore().args(command).arg("--help"));
        assert!(out.status.success());
        let help = stdout(&out);
        assert!(help.contains("--store"), "{help}");
        assert!(help.contains("--config"), "{help}");
        for unused in ["--dedupe-window", "--retention", "--listen"] {
            assert!(!help.contains(unused), "{command:?} lists {unused}:\n{help}");
        }
    }
}

#[test]
fn the_example_config_file_is_accepted() {
    let out = run(leadscore().args(["config", "--config", "leadscore.example.toml"]));
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(
        line_of(&out, "listen"),
        "listen = \"127.0.0.1:8080\"  # from file:19"
    );
    assert!(
        line_of(&out, "retry-schedule")
            .starts_with("retry-schedule = \"5s,5m,30m,2h,5h,10h,10h\"  # from file:")
    );
    // It mentions every setting, so that it documents them all.
    let example = std::fs::read_to_string(repo().join("leadscore.example.toml")).unwrap();
    for line in stdout(&out)
        .lines()
        .filter(|l| !l.starts_with("# leadscore") && !l.starts_with("# LEADSCORE_LOG"))
    {
        let key = line.trim_start_matches("# ").split([' ', '=']).next().unwrap();
        assert!(
            example.contains(&format!("\n{key} = ")) || example.contains(&format!("\n# {key} = ")),
            "leadscore.example.toml does not mention {key}"
        );
    }
}

/// `--allowed-host` is a key of the file like any repeatable flag, and its
/// variable (a `,`-separated list) wins over the file.
#[test]
fn allowed_hosts_come_from_the_file_and_the_variable_wins() {
    let file = config_file("allowed-host = [\"leadscore.internal\", \"10.0.0.5\"]\n");
    let out = run(leadscore().arg("config").arg("--config").arg(&file.path));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        line_of(&out, "allowed-host"),
        "allowed-host = [\"leadscore.internal\", \"10.0.0.5\"]  # from file:1"
    );

    let out = run(leadscore()
        .arg("config")
        .arg("--config")
        .arg(&file.path)
        .env("LEADSCORE_ALLOWED_HOSTS", "ops.example.com,leads.example.com"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        line_of(&out, "allowed-host"),
        "allowed-host = [\"ops.example.com\", \"leads.example.com\"]  # from env LEADSCORE_ALLOWED_HOSTS"
    );
}
