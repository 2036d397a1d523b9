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

pub(super) const INSERT_EVENTS: &str = "
INSERT INTO leadscore_events (id, contact_key, received_at, score, tier, disqualified, rules_version, body,
                              delivery, next_attempt_at)
SELECT id, contact_key, received_at, score, tier, disqualified, rules_version, body, delivery, received_at
FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::bool[], $7::text[], $8::text[],
            $9::text[]) WITH ORDINALITY
     AS u(id, contact_key, received_at, score, tier, disqualified, rules_version, body, delivery, ord)
ORDER BY ord";

pub(super) const FIND_FIRST_EVENTS: &str = "
SELECT k.key, e.id, e.contact_key, e.score, e.tier, e.disqualified
FROM leadscore_idempotency_keys k JOIN leadscore_events e ON e.id = k.event_id
WHERE k.key = ANY($1::bytea[])";

/// Points a key whose first event is gone (pruned against the rules) at a new event.
pub(super) const REPAIR_KEY: &str = "
UPDATE leadscore_idempotency_keys SET event_id = $2, created_at = $3 WHERE key = $1";

pub(super) const RECORD_ATTEMPTS: &str = "
UPDATE leadscore_events e
SET delivery = u.delivery, attempts = e.attempts + 1, last_status = u.status, last_error = u.error,
    next_attempt_at = coalesce(u.next_attempt_at, e.next_attempt_at),
    delivered_at = coalesce(u.delivered_at, e.delivered_at), claimed_until = NULL
FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::int8[], $6::int8[], $7::int8[])
     AS u(id, delivery, status, error, next_attempt_at, delivered_at, claim)
WHERE e.id = u.id AND e.delivery = 'pending' AND e.claimed_until = u.claim";

pub(super) const HEARTBEAT: &str = "
INSERT INTO leadscore_instances (id, started_at, seen_at) VALUES ($1, $2, $3)
ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at";

/// Due, unclaimed, and no other event of the contact pending earlier or
/// claimed now ($1 = now).
pub(super) const CLAIMABLE: &str = "
    d.delivery = 'pending' AND d.next_attempt_at <= $1
    AND (d.claimed_until IS NULL OR d.claimed_until <= $1)
    AND NOT EXISTS (
        SELECT 1 FROM leadscore_events o
        WHERE o.contact_key = d.contact_key AND o.delivery = 'pending' AND o.seq <> d.seq
          AND (o.seq < d.seq OR o.claimed_until > $1))";

pub(super) fn claim_pick_sql() -> String {
    format!(
        "WITH c AS MATERIALIZED (
            SELECT d.seq, d.contact_key FROM leadscore_events d
            WHERE {CLAIMABLE}
            ORDER BY d.next_attempt_at, d.seq
            LIMIT $2
            FOR UPDATE OF d SKIP LOCKED)
         SELECT seq FROM c
         WHERE pg_try_advisory_xact_lock(hashtextextended(current_schema() || ' ' || contact_key, {LOCK_CONTACT}))"
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
    format!(
        "UPDATE leadscore_events d SET claimed_until = greatest($2, coalesce(d.claimed_until, 0) + 1)
         WHERE d.seq = ANY($3::int8[]) AND {CLAIMABLE}
         RETURNING d.seq, d.id, d.contact_key, d.attempts, d.body, d.claimed_until"
    )
}
