//! The console (SPEC 9): its embedded assets at `/`, `GET /console/config`,
//! and the rule-file endpoints `GET`/`PUT`/`DELETE /rules/{file}` with their
//! guards (admin token, `--allow-rule-edits`, names inside the folder, body
//! limit) and their promise: a change that would not compile is refused with
//! file, line and column and leaves the disk alone; a good one is live when
//! the answer arrives.

use serde_json::{Value, json};

use crate::support::{Options, RulesDir, TestServer, contact};

const TOKEN: &str = "console-admin-token-7f3a";

/// A server with an admin token, rule edits allowed or not.
async fn server(allow_rule_edits: bool) -> TestServer {
    TestServer::start(Options {
        admin_token: Some(TOKEN.to_owned()),
        allow_rule_edits,
        rules: Some(RulesDir::bench()),
        forward: false,
        ..Options::default()
    })
    .await
}

fn header<'a>(reply: &'a crate::support::Reply, name: &str) -> &'a str {
    reply
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header: {:?}", reply.headers))
        .to_str()
        .expect("a text header")
}

async fn put(server: &TestServer, file: &str, text: &str) -> crate::support::Reply {
    server
        .request(
            "PUT",
            &format!("/rules/{file}"),
            Some(text.as_bytes().to_vec()),
            &[("content-type", "text/plain")],
        )
        .await
}

fn on_disk(server: &TestServer, file: &str) -> Option<String> {
    std::fs::read_to_string(server.rules().path().join(file)).ok()
}

fn files(rules: &Value) -> Vec<String> {
    rules["files"]
        .as_array()
        .unwrap_or_else(|| panic!("no files: {rules}"))
        .iter()
        .map(|f| f.as_str().expect("a name").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_with_its_types_and_a_strict_policy() {
    let server = server(false).await;
    // The page itself is open: it shows the login form.
    let no_token = [("authorization", "Bearer wrong")];
    let index = server.request("GET", "/", None, &no_token).await;
    assert_eq!(index.status, 200, "{}", index.text);
    assert_eq!(header(&index, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&index, "cache-control"), "no-cache");
    let csp = header(&index, "content-security-policy");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-eval") && !csp.contains("http"), "{csp}");
    assert_eq!(header(&index, "x-content-type-options"), "nosniff");
    assert!(index.text.contains("/assets/app.js"), "{}", index.text);
    assert!(index.text.contains("/assets/app.css"), "{}", index.text);
    assert!(!index.text.contains(TOKEN));

    let js = server.request("GET", "/assets/app.js", None, &no_token).await;
    assert_eq!(js.status, 200);
    assert_eq!(header(&js, "content-type"), "text/javascript; charset=utf-8");
    assert!(js.text.len() > 1000, "the built bundle, not a placeholder");
    let css = server.request("GET", "/assets/app.css", None, &no_token).await;
    assert_eq!(css.status, 200);
    assert_eq!(header(&css, "content-type"), "text/css; charset=utf-8");
    // Nothing remote: no URL to another origin in what the browser loads.
    for (name, text) in [("index", &index.text), ("css", &css.text)] {
        assert!(
            !text.contains("https://") && !text.contains("http://"),
            "{name} loads something remote"
        );
    }

    server
        .request("GET", "/assets/nope.js", None, &no_token)
        .await
        .assert_error(404);
    let post = server.request("POST", "/", None, &no_token).await;
    post.assert_error(405);
    assert_eq!(header(&post, "allow"), "GET, HEAD");

    let config = server.request("GET", "/console/config", None, &no_token).await;
    assert_eq!(config.status, 200, "{}", config.text);
    assert_eq!(
        config.json(),
        json!({"admin_token_required": true, "allow_rule_edits": false})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_files_need_the_admin_token() {
    let server = server(true).await;
    let before = on_disk(&server, "10-role.rhai").expect("the bench rule");
    for token in ["Bearer wrong", "Basic abc"] {
        let auth = [("authorization", token)];
        server
            .request("GET", "/rules/10-role.rhai", None, &auth)
            .await
            .assert_error(401);
        server
            .request(
                "PUT",
                "/rules/10-role.rhai",
                Some(b"add(1, \"x\");".to_vec()),
                &auth,
            )
            .await
            .assert_error(401);
        server
            .request("DELETE", "/rules/10-role.rhai", None, &auth)
            .await
            .assert_error(401);
    }
    assert_eq!(on_disk(&server, "10-role.rhai").as_deref(), Some(before.as_str()));

    let read = server.get("/rules/10-role.rhai").await;
    assert_eq!(read.status, 200, "{}", read.text);
    assert_eq!(read.json(), json!({"file": "10-role.rhai", "content": before}));
    let tiers = server.get("/rules/tiers.toml").await;
    assert_eq!(tiers.status, 200, "{}", tiers.text);
    assert_eq!(
        tiers.json()["content"].as_str(),
        on_disk(&server, "tiers.toml").as_deref()
    );
    server.get("/rules/99-nope.rhai").await.assert_error(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_need_allow_rule_edits() {
    let server = server(false).await;
    let before = on_disk(&server, "10-role.rhai").expect("the bench rule");
    let version = server.rules_status().await["rules_version"].clone();

    let message = put(&server, "10-role.rhai", "add(1, \"x\");")
        .await
        .assert_error(403);
    assert!(message.contains("--allow-rule-edits"), "{message}");
    put(&server, "95-new.rhai", "add(1, \"x\");")
        .await
        .assert_error(403);
    let message = server
        .request("DELETE", "/rules/10-role.rhai", None, &[])
        .await
        .assert_error(403);
    assert!(message.contains("--allow-rule-edits"), "{message}");

    assert_eq!(on_disk(&server, "10-role.rhai").as_deref(), Some(before.as_str()));
    assert_eq!(on_disk(&server, "95-new.rhai"), None);
    assert_eq!(server.rules_status().await["rules_version"], version);
    // Reading stays allowed: the playground shows the files.
    assert_eq!(server.get("/rules/10-role.rhai").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_that_does_not_compile_is_refused_with_file_line_and_column() {
    let server = server(true).await;
    let before = on_disk(&server, "30-budget.rhai").expect("the bench rule");
    let status = server.rules_status().await;

    let broken = "// a comment\nlet n = 1;\nlet m = n + ;\nadd(m, \"x\");\n";
    let reply = put(&server, "30-budget.rhai", broken).await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    let body = reply.json();
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("30-budget.rhai:3:")),
        "{body}"
    );
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors: {body}"));
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["file"], "30-budget.rhai", "{body}");
    assert_eq!(errors[0]["line"], 3, "{body}");
    assert!(errors[0]["column"].as_u64().is_some_and(|c| c >= 1), "{body}");
    assert!(
        errors[0]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );

    // A new file that breaks the set (an undefined variable) is refused too.
    let reply = put(&server, "95-new.rhai", "add(points, \"x\");").await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    assert_eq!(reply.json()["errors"][0]["file"], "95-new.rhai");
    assert_eq!(reply.json()["errors"][0]["line"], 1);

    // A broken tiers.toml, with its line.
    let reply = put(
        &server,
        "tiers.toml",
        "[[tiers]]\nname = \"hot\"\nmin_score = \"high\"\n",
    )
    .await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    assert_eq!(reply.json()["errors"][0]["file"], "tiers.toml");

    // Nothing changed: not the file, not the folder, not the live set.
    assert_eq!(
        on_disk(&server, "30-budget.rhai").as_deref(),
        Some(before.as_str())
    );
    assert_eq!(on_disk(&server, "95-new.rhai"), None);
    let mut names: Vec<String> = std::fs::read_dir(server.rules().path())
        .expect("the rules folder")
        .map(|e| e.expect("an entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        names.iter().all(|n| !n.starts_with('.')),
        "no temporary file left: {names:?}"
    );
    let after = server.rules_status().await;
    assert_eq!(after["rules_version"], status["rules_version"]);
    assert_eq!(
        after["last_error"],
        Value::Null,
        "a refused save is not a failed reload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_save_is_live_when_the_answer_arrives_and_delete_undoes_it() {
    let server = server(true).await;
    let lead = contact("qualified");
    let baseline = server.dry_run(&lead).await;
    let v1 = server.rules_status().await["rules_version"]
        .as_str()
        .expect("a version")
        .to_owned();

    // A new rule file.
    let reply = put(&server, "95-bonus.rhai", "add(3, \"Console bonus\");\n").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = reply.json();
    assert_eq!(body["file"], "95-bonus.rhai");
    let v2 = body["rules_version"].as_str().expect("a version").to_owned();
    assert_ne!(v2, v1);
    // Immediately, without waiting for the watcher.
    let rules = server.rules_status().await;
    assert_eq!(rules["rules_version"], v2.as_str(), "{rules}");
    assert!(files(&rules).contains(&"95-bonus.rhai".to_owned()), "{rules}");
    let scored = server.dry_run(&lead).await;
    assert_eq!(scored["rules_version"], v2.as_str());
    assert!(
        scored["reasons"]
            .as_array()
            .expect("reasons")
            .iter()
            .any(|r| r["reason"] == "Console bonus" && r["points"] == 3 && r["rule"] == "95-bonus.rhai"),
        "{scored}"
    );
    assert_eq!(
        on_disk(&server, "95-bonus.rhai").as_deref(),
        Some("add(3, \"Console bonus\");\n")
    );

    // Replacing an existing file, with a file name that needs encoding.
    let reply = put(&server, "95%20extra.rhai", "tag(\"from-console\");").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["file"], "95 extra.rhai");
    assert!(
        server.dry_run(&lead).await["tags"]
            .as_array()
            .expect("tags")
            .contains(&json!("from-console"))
    );

    // Delete both: back to the first version.
    let reply = server.request("DELETE", "/rules/95-bonus.rhai", None, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["file"], "95-bonus.rhai");
    assert_eq!(reply.json()["deleted"], true);
    let reply = server
        .request("DELETE", "/rules/95%20extra.rhai", None, &[])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["rules_version"], v1.as_str());
    let rules = server.rules_status().await;
    assert_eq!(rules["rules_version"], v1.as_str());
    assert!(!files(&rules).contains(&"95-bonus.rhai".to_owned()), "{rules}");
    assert_eq!(server.dry_run(&lead).await["score"], baseline["score"]);
    assert_eq!(on_disk(&server, "95-bonus.rhai"), None);
    server
        .request("DELETE", "/rules/95-bonus.rhai", None, &[])
        .await
        .assert_error(404);

    // Removing tiers.toml is allowed: every contact is then "scored".
    let reply = server.request("DELETE", "/rules/tiers.toml", None, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(server.dry_run(&lead).await["tier"], "scored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_outside_the_rules_folder_are_refused() {
    let server = server(true).await;
    let outside = server
        .rules()
        .path()
        .parent()
        .expect("a parent")
        .join("escape.rhai");
    for name in [
        "..%2Fescape.rhai",
        "%2E%2E%2Fescape.rhai",
        "..%5Cescape.rhai",
        ".hidden.rhai",
        "notes.txt",
        "tiers.toml.bak",
        "%00.rhai",
    ] {
        let path = format!("/rules/{name}");
        let put_reply = put(&server, name, "add(1, \"x\");").await;
        assert_eq!(put_reply.status, 400, "PUT {path}: {}", put_reply.text);
        put_reply.assert_error(400);
        let get_reply = server.get(&path).await;
        assert_eq!(get_reply.status, 400, "GET {path}: {}", get_reply.text);
        let delete_reply = server.request("DELETE", &path, None, &[]).await;
        assert_eq!(delete_reply.status, 400, "DELETE {path}: {}", delete_reply.text);
    }
    assert!(!outside.exists(), "a file was written outside the rules folder");
    // A sub-path never reaches the handler.
    assert_eq!(server.get("/rules/tests/10-role.toml").await.status, 404);
    // Wrong method on a rule file: 405 with what is allowed.
    let reply = server.request("POST", "/rules/10-role.rhai", None, &[]).await;
    reply.assert_error(405);
    assert_eq!(header(&reply, "allow"), "GET, HEAD, PUT, DELETE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_file_over_the_body_limit_is_413() {
    let server = TestServer::start(Options {
        admin_token: Some(TOKEN.to_owned()),
        allow_rule_edits: true,
        max_body: 4096,
        forward: false,
        ..Options::default()
    })
    .await;
    let big = format!("// {}\nadd(1, \"x\");\n", "x".repeat(5000));
    put(&server, "95-big.rhai", &big).await.assert_error(413);
    assert!(!server.rules().path().join("95-big.rhai").exists());
    let reply = server
        .request("PUT", "/rules/95-bad.rhai", Some(vec![0xff, 0xfe, b'x']), &[])
        .await;
    reply.assert_error(400);
    // Under the limit and valid: saved.
    assert_eq!(put(&server, "95-small.rhai", "add(1, \"x\");").await.status, 200);
}
