//! The shared store: PostgreSQL, for several instances behind one load
//! balancer (`--store postgres://USER@HOST/DB`).
//!
//! Same contract as the SQLite store, built for many writers:
//!
//! - **Ingest** goes through one writer task per instance. Every write that
//!   arrives while a transaction is running joins the next one (group
//!   commit: under load one commit serves many requests, with no added wait
//!   when idle). A group is a handful of pipelined, array-valued statements:
//!   idempotency keys first (`INSERT … ON CONFLICT DO UPDATE … WHERE
//!   expired`, in key order so that two instances never deadlock), then the
//!   new events and the look-up of the duplicates' first events, then
//!   `COMMIT`; each request is answered once its group committed.
//! - **Duplicates across instances**: the key table's primary key makes the
//!   second of two concurrent inserts wait for the first to commit, and then
//!   see its key (a duplicate) — or, when the key is older than the dedupe
//!   window, take it over for a new event.
//! - **Delivery** claims with `FOR UPDATE SKIP LOCKED` and a lease
//!   (`claimed_until`); a contact's event is claimed only when no other
//!   event of the contact is pending earlier or claimed, re-checked under a
//!   per-contact advisory lock (`pg_try_advisory_xact_lock`) after the
//!   candidates were picked, so two instances never deliver one contact out
//!   of order (a lease that runs out hands the delivery to another instance).
//! - **Schema**: versioned migrations in `leadscore_schema_migrations`,
//!   applied at open under a transaction-scoped advisory lock, so instances
//!   may start together. The tables live in the schema named by `?schema=`
//!   (created when missing) or by the first entry of the connection's
//!   `search_path` (`?options=-csearch_path%3Dname`).
//! - **Connections**: the writer's own connection plus a small pool for
//!   claims, listings and maintenance; a lost connection fails the requests
//!   it carried (`Unavailable`, 503) and is replaced on the next use.
//! - **TLS** as libpq's `sslmode` and `sslrootcert` say, with rustls
//!   ([`tls`]).
//!
//! The parts: [`url`] reads the store URL, [`pool`] holds the connections
//! (and the error wording), [`schema`] the migrations, [`sql`] the
//! statements, [`tls`] the encryption, [`writer`] the group-committing writer task and [`store`]
//! the `Store` methods that run on the pool.

mod pool;
mod rate;
mod schema;
mod sql;
mod store;
mod tls;
mod url;
mod writer;

use std::time::Duration;

pub use store::PostgresStore;

/// Connections of the pool (besides the writer's) unless `?pool_size=` says.
const DEFAULT_POOL_SIZE: usize = 4;
/// Connect timeout when the URL sets none.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// TCP keepalive idle time when the URL sets none.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// How long an ingest waits for its commit before answering 503: inside
/// iClosed's 5-second limit. The sender retries; should the commit have
/// happened after all, the retry is answered as a duplicate.
const ENQUEUE_DEADLINE: Duration = Duration::from_secs(4);
/// The longest one transaction (or pool operation) may take before its
/// connection is dropped as broken.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a caller waits for a pool connection.
const POOL_WAIT: Duration = Duration::from_secs(5);
/// Most operations one writer transaction takes.
const MAX_GROUP: usize = 512;
/// Attempts of a transaction that lost a deadlock or serialization check.
const TRANSIENT_RETRIES: usize = 3;
/// Rows one prune statement deletes at most (short transactions).
const PRUNE_BATCH: i64 = 10_000;
/// Advisory locks: migrations take (this, hashtext(schema)) in the
/// two-key space; claims take a 64-bit hash of schema, destination and
/// contact, and writers one of schema and contact (both seeded with
/// [`LOCK_CONTACT`]) in the one-key space, so that
/// schemas sharing a database do not lock each other's contacts.
const LOCK_MIGRATIONS: i32 = 0x4c53_0001;
const LOCK_CONTACT: i64 = 0x4c53_0002;
