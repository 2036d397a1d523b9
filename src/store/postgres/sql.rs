//! The statements the writer and the claims run (the pool's one-off
//! statements stay beside their callers).

use super::LOCK_CONTACT;

pub(super) const COUNT: &str = "
INSERT INTO leadscore_counters AS c (minute, what, name, instance, count)
SELECT u.minute, u.what, u.name, $5, u.count
FROM unnest($1::int8[], $2::text[], $3::text[], $4::int8[]) AS u(minute, what, name, count)
ON CONFLICT (minute, what, name, instance) DO UPDATE SET count = c.count + excluded.count";

/// The events of an [`EventWindow`] after $1: received since $3 up to the
/// snapshot $2 and, unless $4, only a contact's latest event.
pub(super) const WINDOW_FILTER: &str = "e.seq > $1 AND e.seq <= $2 AND e.received_at >= $3
    AND ($4 OR NOT EXISTS (
        SELECT 1 FROM leadscore_events l WHERE l.contact_key = e.contact_key AND l.seq > e.seq AND l.seq <= $2))";

pub(super) const UPSERT_KEYS: &str = "
INSERT INTO leadscore_idempotency_keys AS k (key, event_id, created_at)
SELECT * FROM unnest($1::bytea[], $2::text[], $3::int8[])
ON CONFLICT (key) DO UPDATE SET event_id = excluded.event_id, created_at = excluded.created_at
    WHERE k.created_at < $4
RETURNING k.key";

/// The events (in arrival order: their `seq`) and, in the same statement,
/// their deliveries: `$9`/`$10` pair event ids with destinations.
pub(super) const INSERT_EVENTS: &str = "
WITH inserted AS (
    INSERT INTO leadscore_events (id, contact_key, received_at, score, tier, disqualified, rules_version, body,
                                  email, kind)
    SELECT id, contact_key, received_at, score, tier, disqualified, rules_version, body, email, kind
    FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::bool[], $7::text[],
                $8::text[], $11::text[], $12::text[]) WITH ORDINALITY
         AS u(id, contact_key, received_at, score, tier, disqualified, rules_version, body, email, kind, ord)
    ORDER BY ord
    RETURNING seq, id, contact_key, received_at)
INSERT INTO leadscore_deliveries (event_seq, destination, contact_key, status, next_attempt_at, created_at)
SELECT i.seq, d.destination, i.contact_key, 'pending', i.received_at, i.received_at
FROM inserted i JOIN unnest($9::text[], $10::text[]) AS d(event_id, destination) ON d.event_id = i.id";

/// Hooks waiting for these contacts ($1 keys, $2 their loose forms).
pub(super) const LINK_BY_REF: &str = "
UPDATE leadscore_hooks h SET contact_key = u.contact_key
FROM unnest($1::text[], $2::text[]) AS u(contact_key, ref)
WHERE h.contact_key IS NULL AND h.contact_ref = u.ref";

/// Hooks waiting for these contacts' emails ($1 keys, $2 emails).
pub(super) const LINK_BY_EMAIL: &str = "
UPDATE leadscore_hooks h SET contact_key = u.contact_key
FROM unnest($1::text[], $2::text[]) AS u(contact_key, email)
WHERE h.contact_key IS NULL AND h.email = u.email";

/// The contact a hook's reference names ($1 as a number, $2 as a string).
pub(super) const LINK_OF_REF: &str =
    "SELECT contact_key FROM leadscore_events WHERE contact_key IN ($1, $2) ORDER BY seq DESC LIMIT 1";

/// The contact most recently received with an email.
pub(super) const LINK_OF_EMAIL: &str =
    "SELECT contact_key FROM leadscore_events WHERE email = $1 ORDER BY seq DESC LIMIT 1";

/// The hook stored first under a key inside the dedupe window ($2: its start).
pub(super) const FIND_HOOK: &str = "
SELECT id, kind, contact_key FROM leadscore_hooks WHERE idempotency_key = $1 AND received_at >= $2
ORDER BY seq LIMIT 1";

pub(super) const INSERT_HOOK: &str = "
INSERT INTO leadscore_hooks (id, kind, idempotency_key, received_at, contact_key, contact_ref, email, own_id,
                             call_status, call_start, call_type, call_outcome, sale, revenue, body)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";

/// Columns of a stored hook as the reads take them.
pub(super) const HOOK_COLUMNS: &str =
    "seq, id, kind, received_at, own_id, call_status, call_start, call_type, call_outcome, sale, revenue";

pub(super) const FIND_FIRST_EVENTS: &str = "
SELECT k.key, e.id, e.contact_key, e.score, e.tier, e.disqualified
FROM leadscore_idempotency_keys k JOIN leadscore_events e ON e.id = k.event_id
WHERE k.key = ANY($1::bytea[])";

/// Points a key whose first event is gone (pruned against the rules) at a new event.
pub(super) const REPAIR_KEY: &str = "
UPDATE leadscore_idempotency_keys SET event_id = $2, created_at = $3 WHERE key = $1";

/// Attempts' outcomes, each only while its claim holds, and their log rows.
pub(super) const RECORD_ATTEMPTS: &str = "
WITH u AS (
    SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::int4[], $5::text[], $6::int8[], $7::int8[],
                         $8::int8[], $9::int8[], $10::int8[], $11::text[], $12::int4[], $13::text[])
        AS u(seq, destination, status, last_status, error, next_attempt_at, delivered_at, claim, at,
             latency_ms, response_body, attempt_status, attempt_error)),
changed AS (
    UPDATE leadscore_deliveries d
    SET status = u.status, attempts = d.attempts + 1, last_status = u.last_status, last_error = u.error,
        next_attempt_at = coalesce(u.next_attempt_at, d.next_attempt_at),
        delivered_at = coalesce(u.delivered_at, d.delivered_at), claimed_until = NULL
    FROM u
    WHERE d.event_seq = u.seq AND d.destination = u.destination AND d.status = 'pending'
      AND d.claimed_until = u.claim
    RETURNING d.event_seq, d.destination)
INSERT INTO leadscore_attempts (event_seq, destination, at, status, error, latency_ms, response_body)
SELECT u.seq, u.destination, u.at, u.attempt_status, u.attempt_error, u.latency_ms, u.response_body
FROM u JOIN changed c ON c.event_seq = u.seq AND c.destination = u.destination";

pub(super) const HEARTBEAT: &str = "
INSERT INTO leadscore_instances (id, started_at, seen_at) VALUES ($1, $2, $3)
ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at";

/// Due deliveries of destination $D, unclaimed, and no other delivery of
/// the contact there pending earlier or claimed now ($1 = now).
pub(super) const CLAIMABLE: &str = "
    d.destination = $D AND d.status = 'pending' AND d.next_attempt_at <= $1
    AND (d.claimed_until IS NULL OR d.claimed_until <= $1)
    AND NOT EXISTS (
        SELECT 1 FROM leadscore_deliveries o
        WHERE o.destination = d.destination AND o.contact_key = d.contact_key AND o.status = 'pending'
          AND o.event_seq <> d.event_seq AND (o.event_seq < d.event_seq OR o.claimed_until > $1))";

pub(super) fn claim_pick_sql() -> String {
    let claimable = CLAIMABLE.replace("$D", "$3");
    format!(
        "WITH c AS MATERIALIZED (
            SELECT d.event_seq, d.contact_key FROM leadscore_deliveries d
            WHERE {claimable}
            ORDER BY d.next_attempt_at, d.event_seq
            LIMIT $2
            FOR UPDATE OF d SKIP LOCKED)
         SELECT event_seq FROM c
         WHERE pg_try_advisory_xact_lock(
             hashtextextended(current_schema() || ' ' || $3 || ' ' || contact_key, {LOCK_CONTACT}))"
    )
}

/// The contacts' locks (those claims try), taken in one order on every
/// instance: a writer that stores an event of a contact waits for another
/// writing the same contact to commit, so a contact's events get their
/// `seq` (the delivery order) in commit order.
pub(super) fn lock_contacts_sql() -> String {
    format!(
        "SELECT count(pg_advisory_xact_lock(k)) FROM (
            SELECT DISTINCT hashtextextended(current_schema() || ' ' || c, {LOCK_CONTACT}) AS k
            FROM unnest($1::text[]) AS c
            ORDER BY k) AS locks"
    )
}

pub(super) fn claim_take_sql() -> String {
    let claimable = CLAIMABLE.replace("$D", "$4");
    format!(
        "WITH taken AS (
             UPDATE leadscore_deliveries d SET claimed_until = greatest($2, coalesce(d.claimed_until, 0) + 1)
             WHERE d.event_seq = ANY($3::int8[]) AND {claimable}
             RETURNING d.event_seq, d.contact_key, d.attempts, d.claimed_until)
         SELECT t.event_seq, e.id, t.contact_key, t.attempts, e.body, t.claimed_until
         FROM taken t JOIN leadscore_events e ON e.seq = t.event_seq"
    )
}
