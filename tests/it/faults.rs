//! Faults the service must survive (issue 19): receivers that accept a
//! connection and never answer, or trickle their answer. The forward timeout
//! holds, slots are freed, and other contacts keep flowing.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{Options, TestServer, WAIT, contact_with_id, eventually, ms};

/// A raw downstream on 127.0.0.1: for contact `never` it keeps the
/// connection open and never answers; for `trickle` it sends a `200` head
/// and then one body byte every half second; everyone else gets `200` at
/// once. Records the contacts answered at once.
struct SlowReceiver {
    addr: std::net::SocketAddr,
    answered: Arc<Mutex<HashSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SlowReceiver {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answered = Arc::new(Mutex::new(HashSet::new()));
        let record = answered.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, record.clone()));
            }
        });
        Self { addr, answered, task }
    }

    fn answered(&self) -> HashSet<String> {
        self.answered.lock().unwrap().clone()
    }
}

impl Drop for SlowReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request per connection (the request is read to its Content-Length).
async fn serve(mut stream: TcpStream, answered: Arc<Mutex<HashSet<String>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let body = loop {
        let Ok(n) = stream.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if buf.len() >= end + 4 + length {
            break buf[end + 4..end + 4 + length].to_vec();
        }
    };
    let contact = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["contact_id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    match contact.as_str() {
        "never" => tokio::time::sleep(Duration::from_secs(3600)).await,
        "trickle" => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                .await;
            for _ in 0..7200 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if stream.write_all(b"x").await.is_err() {
                    return;
                }
            }
        }
        _ => {
            answered.lock().unwrap().insert(contact);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_receivers_cannot_hold_the_delivery_slots() {
    let receiver = SlowReceiver::start().await;
    let server = TestServer::start(Options {
        forward_url: Some(format!("http://{}/hook", receiver.addr)),
        forward_concurrency: 2,
        forward_timeout: Duration::from_secs(1),
        // The hanging contact keeps coming back; the others must still pass.
        retry_schedule: ms(&[100, 100, 100, 100, 100, 100, 100, 100]),
        ..Options::default()
    })
    .await;
    let never = server
        .webhook(&json!([contact_with_id("qualified", "never")]))
        .await;
    let never_id = never["results"][0]["id"].as_str().unwrap().to_owned();
    let trickle = server
        .webhook(&json!([contact_with_id("qualified", "trickle")]))
        .await;
    let trickle_id = trickle["results"][0]["id"].as_str().unwrap().to_owned();
    let others: HashSet<String> = (0..20).map(|i| format!("normal-{i}")).collect();
    for id in &others {
        server
            .webhook(&json!([contact_with_id("potential", id.as_str())]))
            .await;
    }
    // Every other contact reaches the receiver although two slots of two
    // are taken, again and again, by receivers that never finish.
    eventually("the other contacts delivered", WAIT * 3, async || {
        others.is_subset(&receiver.answered()).then_some(())
    })
    .await;
    // The trickling answer counts by its status (the body read is bounded);
    // the silent one is cut by the forward timeout and retried.
    server.wait_for_delivery(&trickle_id, "delivered").await;
    let hanging = eventually("the silent receiver timed out", WAIT * 3, async || {
        let listed = server.deliveries(None).await;
        listed
            .into_iter()
            .find(|d| d["id"] == never_id.as_str() && d["attempts"].as_u64().unwrap_or(0) >= 2)
    })
    .await;
    assert_eq!(hanging["last_status"], Value::Null, "no HTTP answer: {hanging}");
    let error = hanging["last_error"].as_str().unwrap_or("");
    assert!(error.contains("tim"), "the error says it timed out: {hanging}");
    server.shutdown().await;
}

/// A small tmpfs of our own (root only), unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .ok()?;
        mounted.status.success().then_some(Self { dir })
    }

    fn resize(&self, size: &str) {
        let resized = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()
            .expect("mount");
        assert!(resized.success(), "remount of the tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// issue 19: the store's disk fills up. Ingest answers `503` (the sender
/// retries; nothing is half-accepted), `/readyz` fails, nothing already
/// acknowledged is lost, and when space returns the engine takes webhooks
/// again by itself and delivers every acknowledged contact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_503_and_the_engine_recovers_when_space_returns() {
    // An SQLite file on a disk of its own: run once, in the suite's SQLite pass.
    if !in_the_sqlite_pass() {
        return;
    }
    let Some(disk) = Tmpfs::mount("3m") else {
        crate::support::skipped(
            "a_full_disk_is_503_and_the_engine_recovers_when_space_returns",
            "cannot mount a tmpfs (needs root)",
        );
        return;
    };
    let mut store = crate::support::TestStore::sqlite();
    store.url = format!("sqlite://{}/leadscore.db", disk.dir.path().display());
    let server = TestServer::start(Options {
        store: Some(store),
        ..Options::default()
    })
    .await;
    // Contacts that do not compress: the disk fills after a few dozen.
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for i in 0..400 {
        let mut contact = contact_with_id("qualified", format!("disk-{i}"));
        // Pseudo-random hex (a multiplicative hash): LZ4 cannot shrink it.
        let padding: String = (0..4000u64)
            .map(|j| {
                format!(
                    "{:016x}",
                    (i as u64 * 4001 + j).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                )
            })
            .collect();
        contact["padding"] = json!(padding);
        let reply = server
            .post_json("/webhooks/iclosed", &json!([contact]), &[])
            .await;
        match reply.status {
            200 => acknowledged.push(format!("disk-{i}")),
            503 => {
                refused = Some(reply);
                break;
            }
            other => panic!("a full disk is 200 or 503, never {other}: {}", reply.text),
        }
    }
    let refused = refused.expect("the 3 MB disk fills up");
    assert!(refused.json()["error"].is_string(), "{}", refused.text);
    assert!(
        !acknowledged.is_empty(),
        "some contacts fit before the disk filled"
    );
    let ready = server.get("/readyz").await;
    assert_eq!(
        ready.status, 503,
        "not ready while the store cannot write: {}",
        ready.text
    );

    disk.resize("256m");
    let ready = eventually("/readyz once space returns", WAIT * 3, async || {
        let reply = server.get("/readyz").await;
        (reply.status == 200).then_some(reply)
    })
    .await;
    assert_eq!(ready.json()["status"], "ready");
    let after = server
        .webhook(&json!([contact_with_id("qualified", "after-the-disk-was-full")]))
        .await;
    assert_eq!(after["accepted"], 1, "{after}");
    acknowledged.push("after-the-disk-was-full".into());
    // Every acknowledged contact reaches the receiver.
    assert_every_contact_delivered(&server, acknowledged.iter().cloned()).await;
    server.shutdown().await;
    drop(disk);
}

/// issue 19 (6): while another process holds the SQLite file's write lock
/// for 7 s, every webhook is answered `503` inside iClosed's 5 s (it used to
/// wait out a 5 s busy timeout, twice when it queued behind another), and
/// none of them is stored: once the lock is gone they are all new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_store_answers_503_inside_the_senders_5_seconds() {
    let server = TestServer::default().await;
    let Some(path) = server.store().sqlite_path() else {
        return;
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let blocker = rusqlite::Connection::open(&path).expect("open the store file");
    blocker
        .execute_batch("BEGIN EXCLUSIVE")
        .expect("take the write lock");
    let mut senders = Vec::new();
    for n in 0..6u64 {
        let (client, url) = (client.clone(), server.url("/webhooks/iclosed"));
        senders.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700 * n)).await;
            let body = json!([contact_with_id("qualified", format!("locked-{n}"))]).to_string();
            let reply = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            match reply {
                Ok(reply) => reply.status().as_u16(),
                Err(e) => panic!("webhook {n} got no answer within 5 s: {e}"),
            }
        }));
    }
    let mut statuses = Vec::new();
    for sender in senders {
        statuses.push(sender.await.unwrap());
    }
    assert_eq!(statuses, [503; 6]);
    blocker.execute_batch("ROLLBACK").expect("release the lock");
    drop(blocker);
    for n in 0..6u64 {
        let reply = server
            .webhook(&json!([contact_with_id("qualified", format!("locked-{n}"))]))
            .await;
        assert_eq!(reply["results"][0]["duplicate"], false, "locked-{n}: {reply}");
    }
    server.shutdown().await;
}

/// issue 19: PostgreSQL restarted under load (webhooks from 8 senders for
/// 20 s, the database restarted after 6 s, on a server of the test's own).
/// Every request is answered `2xx` or `503` within 5 s — none hangs — every
/// acknowledged contact is delivered, and the engine recovers by itself:
/// after the restart, webhooks are accepted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_loses_nothing_and_recovers() {
    // A server of its own: run once, in the suite's SQLite pass.
    if !in_the_sqlite_pass() {
        return;
    }
    let database = match crate::support::pg_server::PgServer::start() {
        Ok(database) => Arc::new(database),
        Err(why) => {
            crate::support::skipped("postgres_restarted_under_load_loses_nothing_and_recovers", &why);
            return;
        }
    };
    let mut store = crate::support::TestStore::sqlite();
    store.url = database.url();
    let server = Arc::new(
        TestServer::start(Options {
            store: Some(store),
            ..Options::default()
        })
        .await,
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let run_for = Duration::from_secs(20);
    let restart_at = Duration::from_secs(6);
    // (contact id, status or 0 for no answer in time, sent after the restart)
    let outcomes = Arc::new(Mutex::new(Vec::<(String, u16, bool)>::new()));
    let restarted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for sender in 0..8 {
        let (client, url, outcomes, restarted) = (
            client.clone(),
            server.url("/webhooks/iclosed"),
            outcomes.clone(),
            restarted.clone(),
        );
        senders.push(tokio::spawn(async move {
            let mut n = 0;
            while started.elapsed() < run_for {
                let id = format!("pg-{sender}-{n}");
                n += 1;
                let body = json!([contact_with_id("potential", id.as_str())]).to_string();
                let status = match client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                {
                    Ok(reply) => reply.status().as_u16(),
                    Err(_) => 0,
                };
                let after = restarted.load(std::sync::atomic::Ordering::SeqCst);
                outcomes.lock().unwrap().push((id, status, after));
                if status == 503 {
                    // What a sender does: back off a little and go on.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    tokio::time::sleep(restart_at).await;
    let db = database.clone();
    tokio::task::spawn_blocking(move || db.restart())
        .await
        .unwrap()
        .expect("pg_ctl restart");
    restarted.store(true, std::sync::atomic::Ordering::SeqCst);
    for sender in senders {
        sender.await.unwrap();
    }
    let outcomes = outcomes.lock().unwrap().clone();
    let hung: Vec<_> = outcomes.iter().filter(|o| o.1 == 0).collect();
    assert!(hung.is_empty(), "requests without an answer within 5 s: {hung:?}");
    let odd: Vec<_> = outcomes.iter().filter(|o| o.1 != 200 && o.1 != 503).collect();
    assert!(odd.is_empty(), "every answer is 200 or 503: {odd:?}");
    let accepted_after = outcomes.iter().filter(|o| o.2 && o.1 == 200).count();
    assert!(
        accepted_after > 0,
        "webhooks are accepted again after the restart: {outcomes:?}"
    );
    let acknowledged: HashSet<String> = outcomes
        .iter()
        .filter(|o| o.1 == 200)
        .map(|o| o.0.clone())
        .collect();
    eprintln!(
        "postgres restart under load: {} requests, {} acknowledged, {} answered 503",
        outcomes.len(),
        acknowledged.len(),
        outcomes.iter().filter(|o| o.1 == 503).count()
    );
    assert_every_contact_delivered(&server, acknowledged.iter().cloned()).await;
    match Arc::try_unwrap(server) {
        Ok(server) => server.shutdown().await,
        Err(_) => panic!("the server is still shared"),
    }
}

/// The suites run twice in CI (PostgreSQL, then SQLite); tests that bring
/// their own store run in the SQLite pass only.
fn in_the_sqlite_pass() -> bool {
    matches!(
        crate::support::store::StoreKind::from_env(),
        crate::support::store::StoreKind::Sqlite
    )
}

/// Waits until the receiver accepted every one of these contact ids.
async fn assert_every_contact_delivered(server: &TestServer, contacts: impl IntoIterator<Item = String>) {
    let wanted: HashSet<String> = contacts.into_iter().collect();
    server
        .receiver()
        .wait_until("every acknowledged contact delivered", WAIT * 6, |requests| {
            let got: HashSet<String> = requests
                .iter()
                .filter(|r| r.accepted())
                .filter_map(|r| r.contact_id().as_str().map(str::to_owned))
                .collect();
            wanted.is_subset(&got)
        })
        .await;
}
