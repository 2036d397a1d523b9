//! The durable-storage ceiling for the load benchmark (BENCHMARKS.md, issue
//! 24): warp, a `serde_json` parse of the body (an array of contacts or one
//! object, as the webhook takes), and one SQLite writer thread that inserts
//! each body under its SHA-256 (`INSERT OR IGNORE`, the key unique) in
//! group-committed transactions, WAL with `synchronous=FULL` and the other
//! pragmas of `src/store/sqlite.rs`'s `connect`. A request is answered only
//! after the commit that holds its row. No scoring, no destinations.
//!
//!     cargo build --release --example durable_append
//!     taskset -c 0 target/release/examples/durable_append 127.0.0.1:8094 /tmp/append.db [--checkpointer] [--yield]
//!
//! With `--checkpointer`, a second thread checkpoints after every commit as
//! leadscore's store did until session 11 (`checkpoint_loop`); without it
//! the log is copied by the writer's own automatic checkpoint at 50,000
//! pages, as set below. With `--yield`, the writer offers the CPU once
//! before it takes a group, as leadscore's writer does since session 14
//! (a reference figure; the baseline of issue 24 is without it).

use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, params};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use warp::Filter;
use warp::http::StatusCode;

/// One request's row, and where to say that it is on disk.
struct Append {
    key: [u8; 32],
    body: bytes::Bytes,
    done: oneshot::Sender<bool>,
}

/// The pragmas of leadscore's `connect` (src/store/sqlite.rs).
fn connect(path: &str) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(2))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "wal_autocheckpoint", 50_000)?;
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    conn.pragma_update(None, "cache_size", -8192)?;
    Ok(conn)
}

/// Takes what queued during the last commit as the next group (no wait),
/// commits it, then answers each request of it.
fn writer(
    conn: &Connection,
    rx: &mpsc::Receiver<Append>,
    committed: Option<&mpsc::SyncSender<()>>,
    yield_first: bool,
) {
    let mut group = Vec::with_capacity(256);
    while let Ok(first) = rx.recv() {
        group.push(first);
        if yield_first {
            // leadscore's writer does this: the other ready threads run
            // first, and what they queue joins the group.
            std::thread::yield_now();
        }
        while group.len() < 256 {
            match rx.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        let outcome = (|| {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            let mut insert =
                conn.prepare_cached("INSERT OR IGNORE INTO bodies (key, body) VALUES (?1, ?2)")?;
            for op in &group {
                insert.execute(params![&op.key[..], &op.body[..]])?;
            }
            conn.execute_batch("COMMIT")
        })();
        if outcome.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for op in group.drain(..) {
            let _ = op.done.send(outcome.is_ok());
        }
        if let Some(committed) = committed {
            let _ = committed.try_send(());
        }
    }
}

/// leadscore's checkpointer: after a commit, passive checkpoints until the
/// database file has caught up with the log (or stops getting closer).
fn checkpointer(conn: &Connection, commits: &mpsc::Receiver<()>) {
    while commits.recv().is_ok() {
        let mut last_copied = -1;
        for _ in 0..8 {
            match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
            }) {
                Ok((in_log, copied)) if copied < in_log && copied != last_copied => last_copied = copied,
                _ => break,
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr: std::net::SocketAddr = args
        .get(1)
        .map_or("127.0.0.1:8094", String::as_str)
        .parse()
        .expect("ADDR");
    let path = args.get(2).cloned().unwrap_or_else(|| "durable-append.db".into());
    let with_checkpointer = args.iter().any(|a| a == "--checkpointer");
    let yield_first = args.iter().any(|a| a == "--yield");

    let conn = connect(&path).expect("open the database");
    conn.execute_batch("CREATE TABLE IF NOT EXISTS bodies (key BLOB PRIMARY KEY, body BLOB NOT NULL)")
        .expect("create the table");
    let committed = with_checkpointer.then(|| {
        let (committed, commits) = mpsc::sync_channel(1);
        let checkpoint_conn = connect(&path).expect("open the database");
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpointer(&checkpoint_conn, &commits))
            .expect("start the checkpointer");
        committed
    });
    let (tx, rx) = mpsc::channel::<Append>();
    std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || writer(&conn, &rx, committed.as_ref(), yield_first))
        .expect("start the writer");

    let route = warp::path!("webhooks" / "iclosed")
        .and(warp::post())
        .and(warp::body::bytes())
        .then(move |body: bytes::Bytes| {
            let tx = tx.clone();
            async move {
                // An array of contacts or one contact; anything else is refused.
                let valid = matches!(
                    serde_json::from_slice::<serde_json::Value>(&body),
                    Ok(serde_json::Value::Array(_) | serde_json::Value::Object(_))
                );
                if !valid {
                    return warp::reply::with_status("{\"error\":\"invalid\"}", StatusCode::BAD_REQUEST);
                }
                let key: [u8; 32] = Sha256::digest(&body).into();
                let (done, stored) = oneshot::channel();
                let sent = tx.send(Append { key, body, done }).is_ok();
                match sent && stored.await.unwrap_or(false) {
                    true => warp::reply::with_status("{\"ok\":true}", StatusCode::OK),
                    false => warp::reply::with_status(
                        "{\"error\":\"not stored\"}",
                        StatusCode::SERVICE_UNAVAILABLE,
                    ),
                }
            }
        });
    warp::serve(route).run(addr).await;
}
