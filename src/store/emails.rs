//! The embedded store's index of contacts by email, kept in batches.
//!
//! Calls link to a contact by email and `GET /contacts?email=` searches by
//! it (SPEC 11), so every event with an email needs an index entry. An
//! index on `events (email)` got one at every commit: a random page of
//! the index per event, written to the log and then into the file. Under
//! load that was the largest cost of a stored contact, about a sixth of its
//! CPU and 7 of its 12 KB written (BENCHMARKS.md, session 16).
//!
//! So the entries of new events wait in memory, and go into the table
//! `event_emails` in batches sorted by email, a slice per commit: a page of
//! the index is then written once per batch instead of once per event.
//! Nothing is lost by waiting:
//!
//! * the email stays in the event's own row: `emails_indexed_through` (in
//!   `meta`) is the last event whose entry is in the table, and the events
//!   after it are the ones to read without the index — readers scan that
//!   short tail ([`CANDIDATES`]); a store opened after a crash indexes it
//!   first ([`CATCH_UP`]);
//! * the writer, which links calls to contacts, also looks in memory
//!   ([`EmailIndex::latest`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};

/// The table, one row per event with an email (schema 6).
pub const TABLE: &str = "
CREATE TABLE IF NOT EXISTS event_emails (
    email TEXT NOT NULL,
    seq   INTEGER NOT NULL,
    PRIMARY KEY (email, seq)
) WITHOUT ROWID;";

/// Fills the table from the events `?1 < seq <= ?2`: a file of schema 5 or
/// older, the tail after the last indexed event when a store is opened,
/// events another process stored.
pub const CATCH_UP: &str = "
INSERT OR IGNORE INTO event_emails (email, seq)
    SELECT email, seq FROM events WHERE seq > ?1 AND seq <= ?2 AND email IS NOT NULL ORDER BY email, seq;";

/// The key in `meta` of the last event whose entry is in the table.
pub const INDEXED_THROUGH: &str = "emails_indexed_through";

/// After pruning: the mark no further than the last event left. A number
/// pruned from the end is given out again (`seq` is SQLite's rowid), and a
/// new event must never fall behind the mark, out of the tail readers scan.
/// (Entries of a pruned number that linger are harmless: every lookup
/// joins an entry to its event by number *and* email.)
pub const MARK_NO_FURTHER_THAN_THE_EVENTS: &str = "
UPDATE meta SET value = (SELECT COALESCE(MAX(seq), 0) FROM events)
 WHERE key = 'emails_indexed_through' AND CAST(value AS INTEGER) > (SELECT COALESCE(MAX(seq), 0) FROM events)";

/// `seq` and `contact_key` of every event with the email `?1`: the indexed
/// ones and the tail not indexed yet.
pub const CANDIDATES: &str = "
SELECT e.seq, e.contact_key FROM event_emails x JOIN events e ON e.seq = x.seq AND e.email = x.email
 WHERE x.email = ?1
UNION ALL
SELECT seq, contact_key FROM events
 WHERE seq > COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'emails_indexed_through'), 0)
   AND email = ?1";

/// Entries waiting before a batch is started, at most (with the batch being
/// written, about 2 MB of memory under load).
const BATCH_AT: usize = 8_192;
/// How long an entry waits for a batch at most (while the store is written).
const BATCH_AFTER: Duration = Duration::from_secs(1);
/// Pages of the table a slice should change, about: each is written and
/// synced with the commit that carries the slice. A slice is as many
/// entries as fall on that many pages, so its size follows the table's:
/// in a small table a page takes many entries of a batch, in a large one
/// each entry is a page of its own (fixed slices of 512 raised p99 from 9
/// to 16 ms on a store of a million contacts, slices of 64 cost 5 % more
/// CPU per contact on a small one; BENCHMARKS.md, session 16).
const PAGES_PER_SLICE: usize = 64;
/// Entries of the table per page, about (an email and a number, in pages
/// filled to two thirds).
const ENTRIES_PER_PAGE: usize = 64;
/// The smallest and largest slice.
const MIN_SLICE: usize = 64;
const MAX_SLICE: usize = 1024;

/// The entries not in the table yet, and the batch being written.
pub struct EmailIndex {
    /// [`BATCH_AT`], [`BATCH_AFTER`] and [`MAX_SLICE`] (smaller in tests).
    batch_at: usize,
    batch_after: Duration,
    max_slice: usize,
    /// Entries in the table, about (the last indexed event's number: at
    /// least as many).
    table_entries: usize,
    /// The open transaction's new events, with their emails.
    open: Vec<(Option<Arc<str>>, i64)>,
    /// Committed entries not in a batch yet, in `seq` order.
    waiting: Vec<(Arc<str>, i64)>,
    /// When the first event since the last batch was committed.
    waiting_since: Option<Instant>,
    /// This writer's events since the last batch (with an email or not).
    own_seqs: Vec<i64>,
    /// The batch being written.
    batch: Option<Batch>,
    /// Where the open transaction's slice of the batch ends.
    open_slice_end: Option<usize>,
    /// For every committed entry not in the table: its email's latest event.
    latest: HashMap<Arc<str>, i64>,
}

/// A batch: entries sorted by email, the first `written` in the table.
struct Batch {
    entries: Vec<(Arc<str>, i64)>,
    written: usize,
    /// Entries written per commit.
    slice: usize,
    /// This writer's events the batch covers, with an email or not, sorted.
    own_seqs: Vec<i64>,
}

impl EmailIndex {
    /// The index of a store whose table holds the events up to
    /// `indexed_through` (the last one's number).
    pub fn new(indexed_through: i64) -> Self {
        let mut index = Self::with_limits(BATCH_AT, BATCH_AFTER, MAX_SLICE);
        index.table_entries = usize::try_from(indexed_through).unwrap_or(0);
        index
    }

    fn with_limits(batch_at: usize, batch_after: Duration, max_slice: usize) -> Self {
        Self {
            batch_at,
            batch_after,
            max_slice,
            table_entries: 0,
            open: Vec::new(),
            waiting: Vec::new(),
            waiting_since: None,
            own_seqs: Vec::new(),
            batch: None,
            open_slice_end: None,
            latest: HashMap::new(),
        }
    }

    /// An event stored in the open transaction, with its email if it has one.
    pub fn add(&mut self, email: Option<&str>, seq: i64) {
        self.open.push((email.map(Arc::from), seq));
    }

    /// The latest event with this email that is not in the table yet, if
    /// any (it is newer than every one that is).
    pub fn latest(&self, email: &str) -> Option<i64> {
        if let Some((_, seq)) = self.open.iter().rev().find(|(e, _)| e.as_deref() == Some(email)) {
            return Some(*seq);
        }
        self.latest.get(email).copied()
    }

    /// Inside the open transaction, before it commits: the next slice of the
    /// batch, and once a batch is in, the mark of how far the table goes.
    pub fn write_slice(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let Some(batch) = &self.batch else {
            return Ok(());
        };
        let end = (batch.written + batch.slice).min(batch.entries.len());
        let mut insert =
            conn.prepare_cached("INSERT OR IGNORE INTO event_emails (email, seq) VALUES (?1, ?2)")?;
        for (email, seq) in &batch.entries[batch.written..end] {
            insert.execute(params![&**email, seq])?;
        }
        if end == batch.entries.len() {
            mark(conn, &batch.own_seqs)?;
        }
        self.open_slice_end = Some(end);
        Ok(())
    }

    /// The open transaction committed: its entries wait for a batch, its
    /// slice is written; a new batch starts when enough have waited.
    pub fn committed(&mut self) {
        for (email, seq) in self.open.drain(..) {
            self.waiting_since.get_or_insert_with(Instant::now);
            self.own_seqs.push(seq);
            if let Some(email) = email {
                self.latest.insert(email.clone(), seq);
                self.waiting.push((email, seq));
            }
        }
        if let (Some(end), Some(batch)) = (self.open_slice_end.take(), self.batch.as_mut()) {
            batch.written = end;
            if end == batch.entries.len() {
                // Entries of this batch are found in the table from now on;
                // a newer event of the same email stays in memory.
                let through = batch.own_seqs.last().copied().unwrap_or(0);
                self.latest.retain(|_, seq| *seq > through);
                self.table_entries += batch.entries.len();
                self.batch = None;
            }
        }
        let due = self.waiting.len() >= self.batch_at
            || self
                .waiting_since
                .is_some_and(|since| since.elapsed() >= self.batch_after);
        if self.batch.is_none() && due {
            let mut entries = std::mem::take(&mut self.waiting);
            entries.sort_unstable();
            self.batch = Some(Batch {
                slice: slice_size(entries.len(), self.table_entries).min(self.max_slice),
                entries,
                written: 0,
                own_seqs: {
                    let mut own = std::mem::take(&mut self.own_seqs);
                    own.sort_unstable();
                    own
                },
            });
            self.waiting_since = None;
        }
    }

    /// The open transaction rolled back: its entries and its slice with it.
    pub fn rolled_back(&mut self) {
        self.open.clear();
        self.open_slice_end = None;
    }
}

/// Notes that the table holds every event up to this writer's last of
/// the batch (`own_seqs`, sorted), and no further than the last event
/// stored. Another process may have stored events meanwhile (`leadscore
/// rescore` beside the engine): when an event in the range is not one of
/// this writer's, the range is indexed from the events' rows first, so that
/// no event is left behind the mark unindexed.
fn mark(conn: &Connection, own_seqs: &[i64]) -> rusqlite::Result<()> {
    let Some(&last_own) = own_seqs.last() else {
        return Ok(());
    };
    let indexed: i64 = conn
        .query_row(
            "SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?1",
            [INDEXED_THROUGH],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    let last_stored: i64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?;
    let through = last_own.min(last_stored);
    if through <= indexed {
        return Ok(());
    }
    let mut in_range = conn.prepare_cached("SELECT seq FROM events WHERE seq > ?1 AND seq <= ?2")?;
    let mut seqs = in_range.query(params![indexed, through])?;
    let mut foreign = false;
    while let Some(row) = seqs.next()? {
        if own_seqs.binary_search(&row.get::<_, i64>(0)?).is_err() {
            foreign = true;
            break;
        }
    }
    drop(seqs);
    if foreign {
        conn.prepare_cached(CATCH_UP)?
            .execute(params![indexed, through])?;
    }
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![INDEXED_THROUGH, through.to_string()])?;
    Ok(())
}

/// The entries of a batch that fall on about [`PAGES_PER_SLICE`] pages of
/// a table of `table_entries` entries.
fn slice_size(batch: usize, table_entries: usize) -> usize {
    let pages = (table_entries / ENTRIES_PER_PAGE).max(1);
    (PAGES_PER_SLICE * batch / pages).clamp(MIN_SLICE, MAX_SLICE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables `EmailIndex` works with, as the store has them.
    fn store() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(TABLE).unwrap();
        conn.execute_batch(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE events (seq INTEGER PRIMARY KEY, email TEXT);",
        )
        .unwrap();
        conn
    }

    fn table(conn: &Connection) -> Vec<(String, i64)> {
        conn.prepare("SELECT email, seq FROM event_emails ORDER BY email, seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn through(conn: &Connection) -> Option<i64> {
        conn.query_row(
            "SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?1",
            [INDEXED_THROUGH],
            |r| r.get(0),
        )
        .ok()
    }

    /// One transaction of the writer: the events stored, then the slice,
    /// then a commit or a rollback.
    fn transaction(index: &mut EmailIndex, conn: &Connection, events: &[(Option<&str>, i64)], commit: bool) {
        conn.execute_batch("BEGIN").unwrap();
        for (email, seq) in events {
            conn.execute(
                "INSERT INTO events (seq, email) VALUES (?1, ?2)",
                params![seq, email],
            )
            .unwrap();
            index.add(*email, *seq);
        }
        index.write_slice(conn).unwrap();
        if commit {
            conn.execute_batch("COMMIT").unwrap();
            index.committed();
        } else {
            conn.execute_batch("ROLLBACK").unwrap();
            index.rolled_back();
        }
    }

    fn entries(list: &[(&str, i64)]) -> Vec<(String, i64)> {
        list.iter().map(|(e, s)| ((*e).to_owned(), *s)).collect()
    }

    #[test]
    fn entries_go_in_sorted_batches_a_slice_per_commit_and_are_found_meanwhile() {
        let conn = store();
        let mut index = EmailIndex::with_limits(4, Duration::from_secs(3600), 2);
        transaction(&mut index, &conn, &[(Some("b@x"), 1), (Some("a@x"), 2)], true);
        // Found in the open transaction's entries, then in memory.
        index.add(Some("c@x"), 3);
        assert_eq!(index.latest("c@x"), Some(3));
        index.rolled_back();
        assert_eq!(index.latest("c@x"), None, "rolled back with its transaction");
        transaction(
            &mut index,
            &conn,
            &[(Some("c@x"), 3), (None, 4), (Some("b@x"), 5)],
            true,
        );
        assert_eq!(index.latest("b@x"), Some(5), "the latest event of an email");
        assert!(
            table(&conn).is_empty(),
            "four waiting: the batch starts after this commit"
        );
        // Two per commit, in email order; the mark once the batch is in.
        transaction(&mut index, &conn, &[(Some("d@x"), 6)], true);
        assert_eq!(table(&conn), entries(&[("a@x", 2), ("b@x", 1)]));
        assert_eq!(through(&conn), None);
        // A slice rolled back is written again by the next commit.
        transaction(&mut index, &conn, &[], false);
        assert_eq!(table(&conn).len(), 2);
        transaction(&mut index, &conn, &[], true);
        assert_eq!(
            table(&conn),
            entries(&[("a@x", 2), ("b@x", 1), ("b@x", 5), ("c@x", 3)])
        );
        assert_eq!(
            through(&conn),
            Some(5),
            "the batch covers this writer's events up to 5"
        );
        // Batched entries leave memory; a newer one waits there.
        assert_eq!(index.latest("a@x"), None);
        assert_eq!(index.latest("d@x"), Some(6));
        assert_eq!(index.latest("b@x"), None, "its latest event is in the table now");
    }

    #[test]
    fn entries_wait_for_a_batch_no_longer_than_its_time() {
        let conn = store();
        let mut index = EmailIndex::with_limits(1000, Duration::ZERO, 512);
        transaction(&mut index, &conn, &[(Some("a@x"), 1), (None, 2)], true);
        transaction(&mut index, &conn, &[], true);
        assert_eq!(table(&conn), entries(&[("a@x", 1)]));
        assert_eq!(through(&conn), Some(2));
    }

    /// `leadscore rescore` stores events into the file the engine writes:
    /// the engine's mark must not pass them unindexed.
    #[test]
    fn events_another_process_stored_are_indexed_before_the_mark_passes_them() {
        let conn = store();
        let mut index = EmailIndex::with_limits(1000, Duration::ZERO, 512);
        transaction(&mut index, &conn, &[(Some("a@x"), 1)], true);
        // Another writer's events, between this writer's.
        conn.execute_batch("INSERT INTO events (seq, email) VALUES (2, 'other@x'), (3, NULL)")
            .unwrap();
        transaction(&mut index, &conn, &[(Some("b@x"), 4)], true);
        assert_eq!(table(&conn), entries(&[("a@x", 1)]), "the first batch: event 1");
        assert_eq!(through(&conn), Some(1));
        transaction(&mut index, &conn, &[], true);
        assert_eq!(table(&conn), entries(&[("a@x", 1), ("b@x", 4), ("other@x", 2)]));
        assert_eq!(through(&conn), Some(4));
    }

    /// The engine's batch holds events 1 and 3; another process moved the
    /// mark to 1 (opening the file) and stored 2. As many events in the
    /// range as the engine has of its own must not hide that 2 is not one.
    #[test]
    fn another_process_event_is_indexed_even_when_the_counts_match() {
        let conn = store();
        let mut index = EmailIndex::with_limits(2, Duration::from_secs(3600), 512);
        transaction(&mut index, &conn, &[(Some("a@x"), 1)], true);
        conn.execute_batch(
            "INSERT INTO meta (key, value) VALUES ('emails_indexed_through', '1');
             INSERT INTO events (seq, email) VALUES (2, 'other@x');",
        )
        .unwrap();
        transaction(&mut index, &conn, &[(Some("b@x"), 3)], true);
        transaction(&mut index, &conn, &[], true);
        assert_eq!(table(&conn), entries(&[("a@x", 1), ("b@x", 3), ("other@x", 2)]));
        assert_eq!(through(&conn), Some(3));
    }

    /// Pruning the last events gives their numbers out again: the mark goes
    /// back to the last event left, and a new event is never behind it.
    #[test]
    fn numbers_given_out_again_after_pruning_stay_ahead_of_the_mark() {
        let conn = store();
        let mut index = EmailIndex::with_limits(1000, Duration::ZERO, 512);
        transaction(&mut index, &conn, &[(Some("a@x"), 1), (Some("b@x"), 2)], true);
        transaction(&mut index, &conn, &[], true);
        assert_eq!(through(&conn), Some(2));
        // Pruned, as `prune_step` does it.
        conn.execute_batch("DELETE FROM event_emails; DELETE FROM events;")
            .unwrap();
        conn.execute_batch(MARK_NO_FURTHER_THAN_THE_EVENTS).unwrap();
        assert_eq!(through(&conn), Some(0));
        transaction(&mut index, &conn, &[(Some("c@x"), 1)], true);
        transaction(&mut index, &conn, &[], true);
        assert_eq!(table(&conn), entries(&[("c@x", 1)]));
        assert_eq!(through(&conn), Some(1));
    }

    #[test]
    fn slices_shrink_as_the_table_grows() {
        // A new table: the batch's entries share pages, slices are long.
        assert_eq!(slice_size(8192, 0), MAX_SLICE);
        // 150,000 entries (a bench run's): about 2,300 pages.
        assert_eq!(slice_size(8192, 150_000), 223);
        // A million: each entry a page of its own, the shortest slices.
        assert_eq!(slice_size(8192, 1_000_000), MIN_SLICE);
        assert_eq!(slice_size(10, 150_000), MIN_SLICE);
    }
}
