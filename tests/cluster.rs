//! Several instances on one PostgreSQL schema (SPEC 4.1, 5, 7): stores
//! sharing a schema, and real `leadscore` processes behind an imaginary
//! load balancer, one of them killed with SIGKILL mid-load.
//!
//! Needs `LEADSCORE_TEST_POSTGRES_URL` (e.g.
//! `postgres://postgres@127.0.0.1:5432/test`); each test works in a schema
//! of its own, dropped afterwards. Unset: every test says it skipped.
//! Loopback only; every wait is bounded.

#[path = "support/mod.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leadscore::store::{self, AttemptOutcome, Enqueued, NewEvent, Store, StoreError};
use serde_json::{Value, json};
use support::pg::Schema;
use support::{Answer, Process, Receiver};

/// The longest any one wait of these tests takes.
const WAIT: Duration = Duration::from_secs(60);

use support::pg::{attempt_log, event, retention, unforwarded};

async fn open(url: &str) -> Arc<dyn Store> {
    store::open(url, retention())
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"))
}

// ------------------------------------------------------------ store level

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_together_migrate_once() {
    let Some(schema) = Schema::fresh("cluster") else {
        return;
    };
    // Two through `?schema=`, two through the search path option.
    let urls = [
        schema.url(),
        schema.options_url(),
        schema.url(),
        schema.options_url(),
    ];
    let opened = futures_util::future::join_all(urls.iter().map(|u| store::open(u, retention()))).await;
    for (url, result) in urls.iter().zip(&opened) {
        assert!(result.is_ok(), "{url}: {:?}", result.as_ref().err());
    }
    let client = schema.client().await;
    let versions: Vec<i32> = client
        .query(
            "SELECT version FROM leadscore_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename LIKE 'leadscore%'",
            &[&schema.name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        tables, 10,
        "events, keys, instances, counters, deliveries, attempts, rate windows, hooks, rescore jobs and migrations in the test's schema"
    );
    // What one instance stores, the others see.
    let stores: Vec<Arc<dyn Store>> = opened.into_iter().map(Result::unwrap).collect();
    stores[0].enqueue(vec![event("evt_1", 1, "k")]).await.unwrap();
    let again = stores[3].enqueue(vec![event("evt_2", 1, "k")]).await.unwrap();
    assert!(
        matches!(&again[0], Enqueued::Duplicate(s) if s.id == "evt_1"),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_posted_to_two_instances_at_once_is_stored_once() {
    let Some(schema) = Schema::fresh("cluster") else {
        return;
    };
    let a = open(&schema.url()).await;
    let b = open(&schema.options_url()).await;
    for round in 0..50 {
        let key = format!("key-{round}");
        let (x, y) = tokio::join!(
            a.enqueue(vec![event(&format!("evt_a{round}"), round, &key)]),
            b.enqueue(vec![event(&format!("evt_b{round}"), round, &key)]),
        );
        let (x, y) = (x.unwrap().remove(0), y.unwrap().remove(0));
        match (&x, &y) {
            (Enqueued::Stored(s), Enqueued::Duplicate(d)) | (Enqueued::Duplicate(d), Enqueued::Stored(s)) => {
                assert_eq!(s, d, "round {round}: the duplicate answers with the stored event")
            }
            other => panic!("round {round}: {other:?}"),
        }
    }
    let counts = a.delivery_counts().await.unwrap();
    assert_eq!(counts.pending, 50);
}

/// SPEC 11 "Linking" across instances: contacts written by one instance and
/// their outcomes (by id) and calls (by email) by the other, at the same
/// time: every hook ends up linked, whichever committed first (neither
/// transaction may miss the other's row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_and_their_contacts_on_two_instances_at_once_always_link() {
    use leadscore::payload::HookKind;
    use store::{ItemStored, NewHook, NewItem};
    let Some(schema) = Schema::fresh("cluster") else {
        return;
    };
    let a = open(&schema.url()).await;
    let b = open(&schema.options_url()).await;
    let hook = |id: String, kind: HookKind, contact: i64| NewHook {
        idempotency_key: id.clone(),
        id,
        kind,
        received_at: store::now_ms(),
        contact_ref: (kind == HookKind::Outcome).then(|| contact.to_string()),
        email: (kind == HookKind::Call).then(|| format!("c{contact}@example.com")),
        own_id: None,
        call_status: Some("booked"),
        call_start: None,
        call_type: None,
        call_outcome: Some("SALE".into()),
        sale: kind == HookKind::Outcome,
        revenue: 100.0,
        body: "{}".into(),
    };
    for round in 0..40i64 {
        let mut contact = event(&format!("evt_{round}"), round, &format!("e{round}"));
        contact.email = Some(format!("c{round}@example.com"));
        let hooks = vec![
            NewItem::Hook(hook(format!("hook_o{round}"), HookKind::Outcome, round)),
            NewItem::Hook(hook(format!("hook_c{round}"), HookKind::Call, round)),
        ];
        let (x, y) = tokio::join!(a.enqueue(unforwarded(vec![contact])), b.store_items(hooks));
        x.unwrap();
        for stored in y.unwrap() {
            assert!(matches!(stored, ItemStored::Hook(_)), "round {round}");
        }
    }
    let rows = a.contact_outcomes(0).await.unwrap();
    assert_eq!(rows.len(), 40);
    for row in rows {
        assert!(
            row.booked && row.converted,
            "{} is not linked to its hooks: {row:?}",
            row.contact_key
        );
        assert_eq!(row.revenue, 100.0, "{}", row.contact_key);
    }
}

/// SPEC 12: one rescore job at a time per store, across instances; a job
/// whose owner stopped renewing its lease is taken over by one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_start_one_rescore_job_and_one_takes_over_a_dead_owners() {
    let Some(schema) = Schema::fresh("cluster") else {
        return;
    };
    let a = open(&schema.url()).await;
    let b = open(&schema.options_url()).await;
    for round in 0..10 {
        let job_a = leadscore::rescore::new_job(leadscore::rescore::Cause::Manual, 0, 0);
        let job_b = leadscore::rescore::new_job(leadscore::rescore::Cause::Manual, 0, 0);
        let lease = store::now_ms() + 60_000;
        let (x, y) = tokio::join!(
            a.start_rescore(&job_a, "a", lease),
            b.start_rescore(&job_b, "b", lease)
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        let running = match (&x, &y) {
            (Ok(()), Err(id)) => {
                assert_eq!(id, &job_a.id, "round {round}");
                job_a.clone()
            }
            (Err(id), Ok(())) => {
                assert_eq!(id, &job_b.id, "round {round}");
                job_b.clone()
            }
            other => panic!("round {round}: exactly one starts: {other:?}"),
        };
        // Nobody takes a job whose lease holds; the other owner cannot save it.
        assert_eq!(a.take_over_rescore("c", lease).await.unwrap(), None);
        let other = if running.id == job_a.id { "b" } else { "a" };
        assert!(
            !a.save_rescore(&running, other, lease).await.unwrap(),
            "round {round}"
        );
        let mut done = running.clone();
        done.state = "done".into();
        let owner = if running.id == job_a.id { "a" } else { "b" };
        assert!(
            b.save_rescore(&done, owner, lease).await.unwrap(),
            "round {round}"
        );
    }
    // A job whose lease ran out: one of two instances takes it, with its cursor.
    let mut orphan = leadscore::rescore::new_job(leadscore::rescore::Cause::Rules, 0, 9);
    a.start_rescore(&orphan, "dead", store::now_ms() - 1)
        .await
        .unwrap()
        .unwrap();
    orphan.cursor = 0;
    let (x, y) = tokio::join!(
        a.take_over_rescore("a", store::now_ms() + 60_000),
        b.take_over_rescore("b", store::now_ms() + 60_000)
    );
    let taken: Vec<_> = [x.unwrap(), y.unwrap()].into_iter().flatten().collect();
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(taken[0].id, orphan.id);
    assert_eq!(taken[0].up_to_seq, 9);
}

/// issue 19 (8): a contact's events are delivered in commit order across
/// instances. Instance A's write is held after it has inserted its event
/// (a row its counters need is locked) while instance B writes an event of
/// the same contact: B's must not commit first yet be ordered after A's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contacts_events_are_delivered_in_commit_order_across_instances() {
    let Some(schema) = Schema::fresh("cluster") else {
        return;
    };
    let a = open(&schema.url()).await;
    let b = open(&schema.url()).await;
    // The counters' rows are per minute: keep the test inside one.
    let into_minute = store::now_ms() % 60_000;
    if into_minute > 50_000 {
        tokio::time::sleep(Duration::from_millis((61_000 - into_minute) as u64)).await;
    }
    // A's counter rows for this minute exist; lock them.
    a.enqueue(unforwarded(vec![event("evt_warmup", 99, "warmup")]))
        .await
        .unwrap();
    let blocker = schema.client().await;
    blocker.batch_execute("BEGIN").await.unwrap();
    let locked = blocker
        .query("SELECT 1 FROM leadscore_counters FOR UPDATE", &[])
        .await
        .unwrap();
    assert!(!locked.is_empty());
    let blocker_pid: i32 = blocker
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    // Sessions waiting for the blocker, directly or through one that does
    // (other tests share the server: count only these).
    let watcher = schema.client().await;
    let waiting = async || -> i64 {
        watcher
            .query_one(
                "WITH held AS (SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)))
                 SELECT (SELECT count(*) FROM held)
                      + (SELECT count(*) FROM pg_stat_activity
                         WHERE pg_blocking_pids(pid) && ARRAY(SELECT pid FROM held))",
                &[&blocker_pid],
            )
            .await
            .unwrap()
            .get(0)
    };
    let committed = Arc::new(Mutex::new(Vec::new()));
    let write = |store: Arc<dyn Store>, id: &'static str| {
        let committed = committed.clone();
        tokio::spawn(async move {
            let stored = store.enqueue(vec![event(id, 1, id)]).await;
            committed.lock().unwrap().push(id);
            stored
        })
    };
    let first = write(a.clone(), "evt_a");
    let deadline = Instant::now() + Duration::from_secs(3);
    while waiting().await < 1 {
        assert!(
            Instant::now() < deadline,
            "A's write never waited for the locked counters"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = write(b.clone(), "evt_b");
    // B either commits (the defect) or waits behind A's contact lock.
    let deadline = Instant::now() + Duration::from_secs(3);
    while committed.lock().unwrap().is_empty() && waiting().await < 2 {
        assert!(Instant::now() < deadline, "B neither committed nor waited");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    blocker.batch_execute("ROLLBACK").await.unwrap();
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    let committed = committed.lock().unwrap().clone();
    let claimed = a.claim_due("default", 10, Duration::from_secs(30)).await.unwrap();
    let claimed: Vec<&str> = claimed.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(
        claimed,
        [committed[0]],
        "the event committed first ({committed:?}) goes first"
    );
}

/// issue 19 (10): a migration that takes longer than the store's 10 s
/// operation limit (here migration 2's index waits 12 s for a lock another
/// session holds, as a large table's build would take) is waited for; the
/// start used to fail after 10 s, and then on every retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_longer_than_the_operation_limit_completes() {
    let Some(schema) = Schema::fresh("cluster") else {
        return;
    };
    // A schema at version 1.
    drop(open(&schema.url()).await);
    let client = schema.client().await;
    client
        .batch_execute(
            "DROP INDEX leadscore_events_contact; DROP TABLE leadscore_counters;
             DELETE FROM leadscore_schema_migrations WHERE version = 2;",
        )
        .await
        .unwrap();
    // CREATE INDEX needs a lock this session's holds for 12 s.
    client
        .batch_execute("BEGIN; LOCK TABLE leadscore_events IN ROW EXCLUSIVE MODE")
        .await
        .unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(12)).await;
        client.batch_execute("COMMIT").await.unwrap();
        client
    });
    let started = Instant::now();
    let store = store::open(&schema.url(), retention())
        .await
        .unwrap_or_else(|e| panic!("the migration was given up after {:?}: {e}", started.elapsed()));
    let client = release.await.unwrap();
    let versions: Vec<i32> = client
        .query(
            "SELECT version FROM leadscore_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    store.enqueue(vec![event("evt_1", 1, "k")]).await.unwrap();
    assert_eq!(store.delivery_counts().await.unwrap().pending, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_claim_each_contact_in_order_and_one_at_a_time() {
    let Some(schema) = Schema::fresh("cluster") else {
        return;
    };
    let a = open(&schema.url()).await;
    let b = open(&schema.url()).await;
    const CONTACTS: i64 = 30;
    const PER_CONTACT: usize = 4;
    // Interleaved: contact 0's first event, contact 1's first, ...
    for n in 0..PER_CONTACT {
        let batch: Vec<NewEvent> = (0..CONTACTS)
            .map(|c| event(&format!("evt_{c}_{n}"), c, &format!("k{c}.{n}")))
            .collect();
        let store = if n % 2 == 0 { &a } else { &b };
        store.enqueue(batch).await.unwrap();
    }
    struct Shared {
        in_flight: Mutex<HashSet<String>>,
        next: Mutex<HashMap<String, usize>>,
        delivered: AtomicUsize,
        violations: Mutex<Vec<String>>,
    }
    let shared = Arc::new(Shared {
        in_flight: Mutex::new(HashSet::new()),
        next: Mutex::new(HashMap::new()),
        delivered: AtomicUsize::new(0),
        violations: Mutex::new(Vec::new()),
    });
    let total = CONTACTS as usize * PER_CONTACT;
    let deadline = Instant::now() + WAIT;
    let mut workers = Vec::new();
    for w in 0..6 {
        let store = if w % 2 == 0 { a.clone() } else { b.clone() };
        let shared = shared.clone();
        workers.push(tokio::spawn(async move {
            while shared.delivered.load(Ordering::SeqCst) < total && Instant::now() < deadline {
                let claimed = store
                    .claim_due("default", 3, Duration::from_secs(60))
                    .await
                    .unwrap();
                if claimed.is_empty() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                for d in claimed {
                    let (contact, n) = {
                        let mut parts = d.event_id.trim_start_matches("evt_").split('_');
                        let contact = parts.next().unwrap().to_owned();
                        let n: usize = parts.next().unwrap().parse().unwrap();
                        (contact, n)
                    };
                    if !shared.in_flight.lock().unwrap().insert(contact.clone()) {
                        shared
                            .violations
                            .lock()
                            .unwrap()
                            .push(format!("{}: contact {contact} already in flight", d.event_id));
                    }
                    {
                        let mut next = shared.next.lock().unwrap();
                        let expected = next.entry(contact.clone()).or_insert(0);
                        if *expected != n {
                            shared.violations.lock().unwrap().push(format!(
                                "{}: expected event {expected} of contact {contact}",
                                d.event_id
                            ));
                        }
                        *expected = n + 1;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    shared.in_flight.lock().unwrap().remove(&contact);
                    store
                        .record_attempt(&d, AttemptOutcome::Delivered { status: 200 }, attempt_log())
                        .await
                        .unwrap();
                    shared.delivered.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let violations = shared.violations.lock().unwrap().clone();
    assert!(violations.is_empty(), "{violations:#?}");
    assert_eq!(
        shared.delivered.load(Ordering::SeqCst),
        total,
        "every event delivered once"
    );
    let counts = a.delivery_counts().await.unwrap();
    assert_eq!((counts.pending, counts.delivered), (0, total as u64));
}

/// A TCP relay to the database that a test can cut and restore.
struct Relay {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let links = Arc::new(Mutex::new(Vec::new()));
        let (up2, links2) = (up.clone(), links.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the connection closes at once
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                links2.lock().unwrap().push(link.abort_handle());
            }
        });
        Self {
            addr,
            up,
            links,
            task,
        }
    }

    /// Drops every connection and refuses new ones.
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// The database's address and the URL with the relay in its place.
async fn relayed(schema: &Schema) -> (Relay, String) {
    let mut url = reqwest::Url::parse(&schema.url()).expect("a URL");
    let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = url.port().unwrap_or(5432);
    let target = tokio::net::lookup_host((host.as_str(), port))
        .await
        .unwrap()
        .next()
        .expect("an address");
    let relay = Relay::start(target).await;
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(relay.addr.port())).unwrap();
    (relay, url.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_answers_unavailable_and_recovers_by_itself() {
    let Some(schema) = Schema::fresh("cluster") else {
        return;
    };
    let (relay, url) = relayed(&schema).await;
    let store = open(&url).await;
    store.enqueue(vec![event("evt_1", 1, "k1")]).await.unwrap();
    store.check_writable().await.unwrap();

    relay.cut();
    let started = Instant::now();
    match store.enqueue(vec![event("evt_2", 2, "k2")]).await {
        Err(StoreError::Unavailable(why)) => eprintln!("while cut: {why}"),
        other => panic!("a write without a database: {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered within iClosed's limit"
    );
    assert!(store.check_writable().await.is_err(), "not ready while cut");
    assert!(
        store
            .claim_due("default", 10, Duration::from_secs(30))
            .await
            .is_err()
    );

    relay.restore();
    let deadline = Instant::now() + WAIT;
    let stored = loop {
        match store.enqueue(vec![event("evt_2", 2, "k2")]).await {
            Ok(stored) => break stored,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("did not recover: {e}"),
        }
    };
    assert!(matches!(&stored[0], Enqueued::Stored(s) if s.id == "evt_2"));
    store.check_writable().await.unwrap();
    let again = store.enqueue(vec![event("evt_3", 1, "k1")]).await.unwrap();
    assert!(matches!(&again[0], Enqueued::Duplicate(s) if s.id == "evt_1"));
    assert_eq!(
        store
            .claim_due("default", 10, Duration::from_secs(30))
            .await
            .unwrap()
            .len(),
        2
    );
}

// ------------------------------------------------------------ processes

/// One request the downstream receiver got.
#[derive(Debug, Clone)]
struct Delivered {
    webhook_id: String,
    body: Value,
}

/// An in-process downstream on 127.0.0.1 that accepts everything; deliveries
/// stay in flight a moment, so a kill catches some.
async fn downstream() -> Receiver {
    let receiver = Receiver::start().await;
    receiver.answer_by_default(Answer {
        delay: Some(Duration::from_millis(5)),
        ..Answer::status(200)
    });
    receiver
}

/// What the downstream got so far, in arrival order.
fn delivered(downstream: &Receiver) -> Vec<Delivered> {
    downstream
        .requests()
        .iter()
        .map(|r| Delivered {
            webhook_id: r.webhook_id(),
            body: r.json(),
        })
        .collect()
}

/// A `leadscore serve` process on the example rules, ready (its store
/// reachable); SIGKILLed on drop.
async fn instance(store_url: &str, forward_url: &str, log: PathBuf) -> Process {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let args: Vec<String> = [
        "serve",
        "--listen",
        &addr.to_string(),
        "--rules",
        support::RULES,
        "--store",
        store_url,
        "--forward-url",
        forward_url,
        "--delivery-lease",
        "2s",
        "--retry-schedule",
        "100ms,200ms,500ms,1s,2s,5s",
        "--forward-timeout",
        "1s",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let mut process = Process::spawn(&args, &[("LEADSCORE_LOG", "warn")], addr, &log);
    process.wait_ready(WAIT).await;
    process
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A fixture contact with this id.
fn contact(stage: &str, id: i64) -> Value {
    let path = format!(
        "{}/tests/fixtures/contact-created-{stage}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut value: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut contact = match value.take() {
        Value::Array(mut items) => items.remove(0),
        object => object,
    };
    contact["id"] = json!(id);
    contact
}

async fn post_json(client: &reqwest::Client, url: &str, body: &Value) -> reqwest::Result<reqwest::Response> {
    client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
}

/// Posts to the first instance that takes it, as a load balancer and
/// iClosed's retries would (a few rounds); returns the answer's JSON.
async fn post(client: &reqwest::Client, targets: &[String], body: &Value) -> Option<Value> {
    for round in 0..5 {
        if round > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for target in targets {
            if let Ok(reply) = post_json(client, target, body).await
                && reply.status() == 200
            {
                return serde_json::from_slice(&reply.bytes().await.ok()?).ok();
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_load_and_one_dies_without_losing_a_contact() {
    let Some(schema) = Schema::fresh("cluster") else {
        return;
    };
    let logs = tempfile::tempdir().unwrap();
    let downstream = downstream().await;
    let a = instance(&schema.url(), &downstream.url(), logs.path().join("a.log")).await;
    let b = instance(
        &schema.options_url(),
        &downstream.url(),
        logs.path().join("b.log"),
    )
    .await;
    let hooks = [a.url("/webhooks/iclosed"), b.url("/webhooks/iclosed")];
    let a = Arc::new(Mutex::new(a));

    const CONTACTS: i64 = 300;
    const KILL_AFTER: usize = 150;
    const TASKS: i64 = 12;
    let done = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    // event id -> (contact, stage) for every event acknowledged with a 2xx
    let acknowledged: Arc<Mutex<HashMap<String, (i64, &'static str)>>> = Arc::default();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let hooks = hooks.clone();
        let (done, killed, acknowledged, a) = (done.clone(), killed.clone(), acknowledged.clone(), a.clone());
        tasks.push(tokio::spawn(async move {
            let client = http_client();
            for id in (0..CONTACTS).filter(|i| i % TASKS == t) {
                // POTENTIAL, then (once acknowledged) QUALIFIED, each to
                // the other instance first.
                for (n, stage) in ["potential", "qualified"].into_iter().enumerate() {
                    let first = (id as usize + n) % 2;
                    let order = [hooks[first].clone(), hooks[1 - first].clone()];
                    let reply = post(&client, &order, &contact(stage, 10_000 + id))
                        .await
                        .unwrap_or_else(|| panic!("contact {id} {stage}: no instance took it"));
                    let result = &reply["results"][0];
                    let event_id = result["id"].as_str().expect("an event id").to_owned();
                    acknowledged
                        .lock()
                        .unwrap()
                        .insert(event_id, (10_000 + id, stage));
                }
                if done.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER
                    && !killed.swap(true, Ordering::SeqCst)
                {
                    a.lock().unwrap().kill_hard();
                }
            }
        }));
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    for task in tasks {
        tokio::time::timeout_at(deadline, task)
            .await
            .expect("posting finished in time")
            .unwrap();
    }
    assert!(killed.load(Ordering::SeqCst), "instance A was killed mid-load");
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert_eq!(
        acknowledged.len(),
        2 * CONTACTS as usize,
        "two distinct events per contact"
    );

    // Every acknowledged event arrives downstream (B takes over A's leases).
    let deadline = Instant::now() + WAIT;
    let received = loop {
        let received = delivered(&downstream);
        let ids: HashSet<&str> = received.iter().map(|d| d.webhook_id.as_str()).collect();
        let missing = acknowledged
            .keys()
            .filter(|id| !ids.contains(id.as_str()))
            .count();
        if missing == 0 {
            break received;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} acknowledged event(s) never delivered; B's log:\n{}",
            b.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // In order per contact: every POTENTIAL arrival before any QUALIFIED one.
    let mut arrivals: HashMap<i64, Vec<&'static str>> = HashMap::new();
    for d in &received {
        let (contact, stage) = acknowledged
            .get(&d.webhook_id)
            .copied()
            .unwrap_or_else(|| panic!("an unknown event was delivered: {}", d.webhook_id));
        assert_eq!(d.body["contact_id"], json!(contact));
        assert_eq!(
            d.body["contact"]["status"]
                .as_str()
                .map(str::to_lowercase)
                .as_deref(),
            Some(stage)
        );
        arrivals.entry(contact).or_default().push(stage);
    }
    for (contact, stages) in &arrivals {
        let first_qualified = stages.iter().position(|s| *s == "qualified").unwrap();
        assert!(
            stages[first_qualified..].iter().all(|s| *s == "qualified"),
            "contact {contact} out of order: {stages:?}"
        );
    }
    // Repeats: only what A had in flight when it died (at most its forward
    // concurrency, 16).
    let duplicates = received.len() - acknowledged.len();
    eprintln!(
        "{} deliveries for {} events: {duplicates} repeated after the kill",
        received.len(),
        acknowledged.len()
    );
    assert!(duplicates <= 16, "{duplicates} repeated deliveries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_body_posted_to_both_instances_at_once_is_stored_once() {
    let Some(schema) = Schema::fresh("cluster") else {
        return;
    };
    let logs = tempfile::tempdir().unwrap();
    let downstream = downstream().await;
    let a = instance(&schema.url(), &downstream.url(), logs.path().join("a.log")).await;
    let b = instance(&schema.url(), &downstream.url(), logs.path().join("b.log")).await;
    let client = http_client();
    let (hook_a, hook_b) = (a.url("/webhooks/iclosed"), b.url("/webhooks/iclosed"));
    let mut stored_ids = HashSet::new();
    for round in 0..50 {
        let body = contact("qualified", 50_000 + round);
        let (x, y) = tokio::join!(
            post_json(&client, &hook_a, &body),
            post_json(&client, &hook_b, &body),
        );
        let mut answers = Vec::new();
        for reply in [x, y] {
            let reply = reply.expect("an answer");
            assert_eq!(reply.status(), 200);
            let json: Value = serde_json::from_slice(&reply.bytes().await.unwrap()).unwrap();
            answers.push(json["results"][0].clone());
        }
        let fresh = answers.iter().filter(|r| r["duplicate"] == json!(false)).count();
        assert_eq!(fresh, 1, "round {round}: {answers:?}");
        assert_eq!(answers[0]["id"], answers[1]["id"], "round {round}: one event");
        stored_ids.insert(answers[0]["id"].as_str().unwrap().to_owned());
    }
    // Each stored once, and forwarded once.
    let deadline = Instant::now() + WAIT;
    loop {
        let received = delivered(&downstream);
        if received.len() >= 50 {
            let ids: HashSet<String> = received.into_iter().map(|d| d.webhook_id).collect();
            assert_eq!(ids, stored_ids);
            break;
        }
        assert!(Instant::now() < deadline, "only {} forwarded", received.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(delivered(&downstream).len(), 50, "nothing forwarded twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_without_its_database_answers_503_then_recovers() {
    let Some(schema) = Schema::fresh("cluster") else {
        return;
    };
    let (relay, url) = relayed(&schema).await;
    let logs = tempfile::tempdir().unwrap();
    let downstream = downstream().await;
    let a = instance(&url, &downstream.url(), logs.path().join("a.log")).await;
    let client = http_client();
    let hook = a.url("/webhooks/iclosed");
    let first = post_json(&client, &hook, &contact("qualified", 1)).await.unwrap();
    assert_eq!(first.status(), 200);

    relay.cut();
    let started = Instant::now();
    let refused = post_json(&client, &hook, &contact("qualified", 2)).await.unwrap();
    assert_eq!(refused.status(), 503, "a write without a database");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "inside iClosed's limit"
    );
    let body: Value = serde_json::from_slice(&refused.bytes().await.unwrap()).unwrap();
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    let ready = client.get(a.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);

    relay.restore();
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = post_json(&client, &hook, &contact("qualified", 2)).await.unwrap();
        if reply.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {} after the database came back",
            reply.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = client.get(a.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let deadline = Instant::now() + WAIT;
    while delivered(&downstream).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "both contacts forwarded:\n{}",
            a.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_schema_newer_than_this_build_is_refused() {
    let Some(schema) = Schema::fresh("cluster") else {
        return;
    };
    drop(open(&schema.url()).await);
    schema
        .client()
        .await
        .batch_execute(
            "INSERT INTO leadscore_schema_migrations (version, description) VALUES (999, 'future')",
        )
        .await
        .unwrap();
    let error = store::open(&schema.url(), retention())
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&error, StoreError::Unavailable(why) if why.contains("newer than this build")),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_batches_on_two_instances_store_each_key_once() {
    use rand::seq::SliceRandom as _;
    let Some(schema) = Schema::fresh("cluster") else {
        return;
    };
    let stores = [open(&schema.url()).await, open(&schema.url()).await];
    const KEYS: usize = 40;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = stores[t % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for r in 0..15 {
                // Five keys of the shared forty, in a random order: batches
                // on both instances take the same keys in opposite orders.
                let mut keys: Vec<usize> = (0..KEYS).collect();
                keys.shuffle(&mut rand::rng());
                let batch: Vec<NewEvent> = keys[..5]
                    .iter()
                    .map(|k| event(&format!("evt_{t}_{r}_{k}"), *k as i64, &format!("key-{k}")))
                    .collect();
                let answers = store
                    .enqueue(unforwarded(batch))
                    .await
                    .expect("no deadlock, no failure");
                outcomes.extend(keys[..5].iter().copied().zip(answers));
            }
            outcomes
        }));
    }
    let mut stored: HashMap<usize, Vec<String>> = HashMap::new();
    let mut duplicates: Vec<(usize, String)> = Vec::new();
    for task in tasks {
        for (key, answer) in tokio::time::timeout(WAIT, task).await.expect("in time").unwrap() {
            match answer {
                Enqueued::Stored(s) => stored.entry(key).or_default().push(s.id),
                Enqueued::Duplicate(d) => duplicates.push((key, d.id)),
                Enqueued::Superseded => panic!("key {key}: only rescored events are superseded"),
            }
        }
    }
    for (key, ids) in &stored {
        assert_eq!(ids.len(), 1, "key {key} stored more than once: {ids:?}");
    }
    for (key, id) in duplicates {
        assert_eq!(
            stored.get(&key),
            Some(&vec![id]),
            "key {key}: a duplicate of the stored event"
        );
    }
}

/// SPEC 10: a destination's rate limit is shared by the instances on one
/// store: two instances taking slots as fast as they can for `5/1s` start
/// at most 5 requests in any second between them, and a `429` pause taken
/// on one holds the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_a_destinations_rate_limit_and_pause() {
    let Some(schema) = Schema::fresh("cluster") else {
        return;
    };
    let a = open(&schema.url()).await;
    let b = open(&schema.url()).await;
    let limit = leadscore::destinations::RateLimit::parse("5/1s").unwrap();
    let gates = [a.rate_gate("crm", Some(limit)), b.rate_gate("crm", Some(limit))];
    let started = Instant::now();
    let taken = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let mut takers = Vec::new();
    for gate in gates.clone() {
        let taken = taken.clone();
        takers.push(tokio::spawn(async move {
            while started.elapsed() < Duration::from_millis(2600) {
                match gate.try_acquire().await {
                    Ok(()) => taken.lock().unwrap().push(started.elapsed()),
                    Err(wait) => tokio::time::sleep(wait.min(Duration::from_millis(50))).await,
                }
            }
        }));
    }
    for taker in takers {
        taker.await.unwrap();
    }
    let mut taken = taken.lock().unwrap().clone();
    taken.sort();
    assert!(taken.len() >= 10, "slots were given in 2.6 s: {taken:?}");
    // Any window a little under a second (the clocks of the database and of
    // this test differ by a query's time) holds at most 5 starts.
    for (i, first) in taken.iter().enumerate() {
        let within = taken[i..]
            .iter()
            .take_while(|t| **t - *first < Duration::from_millis(950))
            .count();
        assert!(
            within <= 5,
            "{within} starts within 950 ms from {first:?}: {taken:?}"
        );
    }
    // A pause taken on one instance holds the other.
    gates[0].pause_for(Duration::from_secs(30)).await;
    let wait = gates[1].try_acquire().await.expect_err("paused");
    assert!(wait > Duration::from_secs(25), "{wait:?}");
}
