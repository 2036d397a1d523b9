//! Store conformance: the behaviour every `Store` backend must have, written
//! once against the trait and run for each backend.

use std::sync::Arc;
use std::time::Duration;

use leadscore::store::{
    self, AttemptLog, AttemptOutcome, ClaimedDelivery, DeliveryFilter, DeliveryStatus, Enqueued, Requeue,
    Store, now_ms,
};
use serde_json::json;

#[path = "support/mod.rs"]
mod support;

use support::pg::{self, attempt_log, event, retention, unforwarded};

/// What keeps a test's store alive and cleans it up afterwards.
#[allow(dead_code)]
enum Scratch {
    /// The SQLite file's folder, removed on drop.
    Dir(tempfile::TempDir),
    /// A PostgreSQL schema of the test's own, dropped on drop.
    Schema(pg::Schema),
}

/// Every backend under test; each test gets a fresh store: SQLite in a
/// temporary folder, and PostgreSQL in a fresh schema when
/// `LEADSCORE_TEST_POSTGRES_URL` is set.
async fn backends() -> Vec<(String, Arc<dyn Store>, Scratch)> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let mut all = vec![(
        "sqlite".into(),
        store::open(&url, retention()).await.unwrap(),
        Scratch::Dir(dir),
    )];
    if let Some(schema) = pg::Schema::fresh("store") {
        let store = store::open(&schema.url(), retention())
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL store at {}: {e}", schema.url()));
        all.push(("postgres".into(), store, Scratch::Schema(schema)));
    }
    all
}

fn ids(list: &[ClaimedDelivery]) -> Vec<&str> {
    list.iter().map(|d| d.event_id.as_str()).collect()
}

/// The claim of `id` among `claimed`.
fn of<'a>(claimed: &'a [ClaimedDelivery], id: &str) -> &'a ClaimedDelivery {
    claimed
        .iter()
        .find(|d| d.event_id == id)
        .unwrap_or_else(|| panic!("{id} is not among the claimed {:?}", ids(claimed)))
}

#[tokio::test]
async fn duplicates_answer_with_the_first_event() {
    for (name, store, _dir) in backends().await {
        let first = store.enqueue(vec![event("evt_a", 1, "k1")]).await.unwrap();
        assert!(
            matches!(&first[0], Enqueued::Stored(s) if s.id == "evt_a"),
            "{name}"
        );
        let mut again = event("evt_b", 1, "k1");
        again.score = 7.into();
        let second = store.enqueue(vec![again, event("evt_c", 2, "k2")]).await.unwrap();
        match &second[0] {
            Enqueued::Duplicate(s) => {
                assert_eq!(
                    (s.id.as_str(), s.score.to_string().as_str(), s.tier.as_str()),
                    ("evt_a", "42", "warm")
                );
                assert_eq!(s.contact_id, json!(1), "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
        assert!(
            matches!(&second[1], Enqueued::Stored(s) if s.id == "evt_c"),
            "{name}"
        );
        // The same key twice in one batch: the second is a duplicate of the first.
        let batch = store
            .enqueue(vec![event("evt_d", 3, "k3"), event("evt_e", 3, "k3")])
            .await
            .unwrap();
        assert!(
            matches!(&batch[1], Enqueued::Duplicate(s) if s.id == "evt_d"),
            "{name}"
        );
        let counts = store.delivery_counts().await.unwrap();
        assert_eq!(
            (counts.pending, counts.dead, counts.delivered),
            (3, 0, 0),
            "{name}"
        );
    }
}

#[tokio::test]
async fn keys_older_than_the_dedupe_window_start_a_new_event() {
    for (name, store, _dir) in backends().await {
        let mut old = event("evt_old", 1, "k");
        old.received_at = now_ms() - 2 * 3600 * 1000;
        store.enqueue(unforwarded(vec![old])).await.unwrap();
        let fresh = store
            .enqueue(unforwarded(vec![event("evt_new", 1, "k")]))
            .await
            .unwrap();
        assert!(
            matches!(&fresh[0], Enqueued::Stored(s) if s.id == "evt_new"),
            "{name}"
        );
        // Not forwarded: no delivery records.
        assert!(
            store
                .list_deliveries(DeliveryFilter::default(), 10)
                .await
                .unwrap()
                .is_empty(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn claims_keep_per_contact_order_and_respect_leases() {
    for (name, store, _dir) in backends().await {
        let events = vec![
            event("evt_1", 1, "a"),
            event("evt_2", 2, "b"),
            event("evt_3", 1, "c"),
            event("evt_4", 3, "d"),
        ];
        store.enqueue(events).await.unwrap();
        let lease = Duration::from_secs(30);
        let claimed = store.claim_due("default", 10, lease).await.unwrap();
        // evt_3 waits for evt_1 (same contact).
        assert_eq!(ids(&claimed), ["evt_1", "evt_2", "evt_4"], "{name}");
        assert!(
            store.claim_due("default", 10, lease).await.unwrap().is_empty(),
            "{name}: claimed ones are leased"
        );
        // A retry keeps evt_3 waiting behind evt_1.
        let retry_at = now_ms() + 2_000;
        let retry = AttemptOutcome::Retry {
            next_attempt_at: retry_at,
            status: Some(503),
            error: "503".into(),
        };
        store
            .record_attempt(of(&claimed, "evt_1"), retry, attempt_log())
            .await
            .unwrap();
        assert!(
            store.claim_due("default", 10, lease).await.unwrap().is_empty(),
            "{name}"
        );
        let wait = retry_at - now_ms() + 50;
        tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
        let retried = store.claim_due("default", 10, lease).await.unwrap();
        assert_eq!(ids(&retried), ["evt_1"], "{name}: due again, still before evt_3");
        // Dead unblocks the contact's next event.
        store
            .record_attempt(
                of(&retried, "evt_1"),
                AttemptOutcome::Dead {
                    status: Some(422),
                    error: "422".into(),
                },
                attempt_log(),
            )
            .await
            .unwrap();
        let later = store.claim_due("default", 10, lease).await.unwrap();
        assert_eq!(ids(&later), ["evt_3"], "{name}");
        store
            .record_attempt(
                of(&later, "evt_3"),
                AttemptOutcome::Delivered { status: 200 },
                attempt_log(),
            )
            .await
            .unwrap();
        store
            .record_attempt(
                of(&claimed, "evt_2"),
                AttemptOutcome::Delivered { status: 204 },
                attempt_log(),
            )
            .await
            .unwrap();
        store
            .record_attempt(
                of(&claimed, "evt_4"),
                AttemptOutcome::Delivered { status: 200 },
                attempt_log(),
            )
            .await
            .unwrap();
        let counts = store.delivery_counts().await.unwrap();
        assert_eq!(
            (counts.pending, counts.dead, counts.delivered),
            (0, 1, 3),
            "{name}"
        );
    }
}

#[tokio::test]
async fn an_expired_lease_is_taken_over() {
    for (name, store, _dir) in backends().await {
        store.enqueue(vec![event("evt_1", 1, "a")]).await.unwrap();
        assert_eq!(
            store
                .claim_due("default", 1, Duration::from_millis(1))
                .await
                .unwrap()
                .len(),
            1,
            "{name}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        let again = store
            .claim_due("default", 1, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(ids(&again), ["evt_1"], "{name}: the lease ran out");
        assert_eq!(again[0].attempts, 0, "{name}");
    }
}

/// issue 19 (7): a worker whose lease ran out while it was sending records
/// nothing over the claim that took the delivery over.
#[tokio::test]
async fn an_attempt_is_recorded_only_while_its_claim_holds() {
    for (name, store, _dir) in backends().await {
        store.enqueue(vec![event("evt_1", 1, "a")]).await.unwrap();
        let first = store
            .claim_due("default", 1, Duration::from_millis(1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = store
            .claim_due("default", 1, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(ids(&second), ["evt_1"], "{name}: taken over");
        assert!(second[0].claim > first[0].claim, "{name}: the claim token grows");
        // The first worker's (late) answer is not recorded.
        store
            .record_attempt(
                &first[0],
                AttemptOutcome::Delivered { status: 200 },
                attempt_log(),
            )
            .await
            .unwrap();
        let listed = store
            .list_deliveries(DeliveryFilter::default(), 10)
            .await
            .unwrap();
        assert_eq!(
            (listed[0].status, listed[0].attempts),
            (DeliveryStatus::Pending, 0),
            "{name}: the stale claim recorded nothing"
        );
        // The holder's is.
        store
            .record_attempt(
                &second[0],
                AttemptOutcome::Delivered { status: 201 },
                attempt_log(),
            )
            .await
            .unwrap();
        let listed = store
            .list_deliveries(DeliveryFilter::default(), 10)
            .await
            .unwrap();
        assert_eq!(
            (listed[0].status, listed[0].attempts, listed[0].last_status),
            (DeliveryStatus::Delivered, 1, Some(201)),
            "{name}"
        );
        // And once recorded, the claim is spent: a repeat changes nothing.
        store
            .record_attempt(
                &second[0],
                AttemptOutcome::Delivered { status: 202 },
                attempt_log(),
            )
            .await
            .unwrap();
        let listed = store
            .list_deliveries(DeliveryFilter::default(), 10)
            .await
            .unwrap();
        assert_eq!(listed[0].last_status, Some(201), "{name}");
    }
}

/// issue 19 (8): a requeued dead event is held back while a later event of
/// the same contact is in flight (one event of a contact at a time).
#[tokio::test]
async fn a_requeued_event_waits_while_a_later_one_is_in_flight() {
    for (name, store, _dir) in backends().await {
        let lease = Duration::from_secs(30);
        store.enqueue(vec![event("evt_1", 1, "a")]).await.unwrap();
        let first = store.claim_due("default", 10, lease).await.unwrap();
        let dead = AttemptOutcome::Dead {
            status: Some(422),
            error: "422".into(),
        };
        store
            .record_attempt(&first[0], dead, attempt_log())
            .await
            .unwrap();
        store.enqueue(vec![event("evt_2", 1, "b")]).await.unwrap();
        let in_flight = store.claim_due("default", 10, lease).await.unwrap();
        assert_eq!(ids(&in_flight), ["evt_2"], "{name}");
        assert_eq!(
            store.requeue("evt_1", None).await.unwrap(),
            Requeue::Requeued,
            "{name}"
        );
        assert!(
            store.claim_due("default", 10, lease).await.unwrap().is_empty(),
            "{name}: evt_1 waits while evt_2 is being sent"
        );
        store
            .record_attempt(
                &in_flight[0],
                AttemptOutcome::Delivered { status: 200 },
                attempt_log(),
            )
            .await
            .unwrap();
        assert_eq!(
            ids(&store.claim_due("default", 10, lease).await.unwrap()),
            ["evt_1"],
            "{name}: then it goes"
        );
    }
}

/// SPEC 10: one delivery per event and destination, each destination with
/// its own queue and per-contact order; attempts logged per destination;
/// listing, requeueing and discarding by destination.
#[tokio::test]
async fn deliveries_are_per_destination_and_independent() {
    for (name, store, _dir) in backends().await {
        let lease = Duration::from_secs(30);
        let mut both = event("evt_1", 1, "a");
        both.destinations = vec!["crm".into(), "slack".into()];
        let mut crm_only = event("evt_2", 1, "b");
        crm_only.destinations = vec!["crm".into()];
        store.enqueue(vec![both, crm_only]).await.unwrap();
        // The CRM holds contact 1's first event; Slack is not held by it.
        let crm = store.claim_due("crm", 10, lease).await.unwrap();
        assert_eq!(ids(&crm), ["evt_1"], "{name}");
        let slack = store.claim_due("slack", 10, lease).await.unwrap();
        assert_eq!(ids(&slack), ["evt_1"], "{name}");
        assert_eq!(slack[0].destination, "slack", "{name}");
        let slow = AttemptLog {
            at: now_ms(),
            status: Some(500),
            error: None,
            latency_ms: 1234,
            response_body: Some(store::truncate_body(&"é".repeat(600))),
        };
        store
            .record_attempt(
                &crm[0],
                AttemptOutcome::Dead {
                    status: Some(500),
                    error: "the receiver answered 500".into(),
                },
                slow.clone(),
            )
            .await
            .unwrap();
        store
            .record_attempt(
                &slack[0],
                AttemptOutcome::Delivered { status: 200 },
                attempt_log(),
            )
            .await
            .unwrap();
        // The dead CRM delivery no longer holds the CRM's next event.
        assert_eq!(
            ids(&store.claim_due("crm", 10, lease).await.unwrap()),
            ["evt_2"],
            "{name}"
        );
        let attempts = store.attempts("evt_1", None).await.unwrap().unwrap();
        assert_eq!(attempts.len(), 2, "{name}");
        let crm_attempt = attempts.iter().find(|a| a.destination == "crm").unwrap();
        assert_eq!(
            (
                crm_attempt.status,
                crm_attempt.latency_ms,
                crm_attempt.error.as_deref()
            ),
            (Some(500), 1234, None),
            "{name}: the attempt as logged, not the delivery's last error"
        );
        let body = crm_attempt.response_body.as_deref().unwrap();
        assert_eq!(
            (body.len(), body.chars().count()),
            (1024, 512),
            "{name}: 1 KiB, whole characters"
        );
        let only_slack = store.attempts("evt_1", Some("slack")).await.unwrap().unwrap();
        assert_eq!(only_slack.len(), 1, "{name}");
        assert_eq!(only_slack[0].response_body.as_deref(), Some("ok"), "{name}");
        assert_eq!(
            store.attempts("evt_1", Some("hubspot")).await.unwrap(),
            None,
            "{name}"
        );

        let crm_listed = store
            .list_deliveries(
                DeliveryFilter {
                    destination: Some("crm".into()),
                    ..Default::default()
                },
                10,
            )
            .await
            .unwrap();
        let seen: Vec<(&str, DeliveryStatus)> =
            crm_listed.iter().map(|d| (d.id.as_str(), d.status)).collect();
        assert_eq!(
            seen,
            [
                ("evt_2", DeliveryStatus::Pending),
                ("evt_1", DeliveryStatus::Dead)
            ],
            "{name}"
        );
        let backlogs: Vec<_> = store
            .destination_backlogs()
            .await
            .unwrap()
            .into_iter()
            .filter(|(_, b)| b.pending + b.dead > 0)
            .collect();
        assert_eq!(
            backlogs,
            [("crm".to_owned(), store::DeliveryBacklog { pending: 1, dead: 1 })],
            "{name}: Slack has no backlog"
        );
        // Requeueing at Slack finds nothing dead there; at the CRM it does.
        assert_eq!(
            store.requeue("evt_1", Some("slack")).await.unwrap(),
            Requeue::NotDead,
            "{name}"
        );
        assert_eq!(store.requeue_dead(Some("slack")).await.unwrap(), 0, "{name}");
        assert_eq!(
            store.requeue("evt_1", Some("crm")).await.unwrap(),
            Requeue::Requeued,
            "{name}"
        );
        let requeued = store.attempts("evt_1", Some("crm")).await.unwrap().unwrap();
        assert_eq!(requeued.len(), 1, "{name}: a requeue keeps the earlier attempts");
        // A destination removed from the file: its backlog discarded.
        assert_eq!(store.discard_deliveries("crm").await.unwrap(), 2, "{name}");
        assert_eq!(
            store.delivery_backlog().await.unwrap(),
            store::DeliveryBacklog::default(),
            "{name}"
        );
        let left: Vec<String> = store
            .list_deliveries(DeliveryFilter::default(), 10)
            .await
            .unwrap()
            .into_iter()
            .map(|d| format!("{}@{}", d.id, d.destination))
            .collect();
        assert_eq!(left, ["evt_1@slack"], "{name}");
    }
}

#[tokio::test]
async fn listing_retrying_and_requeueing() {
    for (name, store, _dir) in backends().await {
        store
            .enqueue(vec![
                event("evt_1", 1, "a"),
                event("evt_2", 2, "b"),
                event("evt_3", 3, "c"),
            ])
            .await
            .unwrap();
        let claimed = store
            .claim_due("default", 10, Duration::from_secs(30))
            .await
            .unwrap();
        store
            .record_attempt(
                of(&claimed, "evt_1"),
                AttemptOutcome::Dead {
                    status: Some(422),
                    error: "the receiver answered 422".into(),
                },
                attempt_log(),
            )
            .await
            .unwrap();
        store
            .record_attempt(
                of(&claimed, "evt_2"),
                AttemptOutcome::Delivered { status: 200 },
                attempt_log(),
            )
            .await
            .unwrap();
        let retry_at = now_ms() + 5_000;
        store
            .record_attempt(
                of(&claimed, "evt_3"),
                AttemptOutcome::Retry {
                    next_attempt_at: retry_at,
                    status: None,
                    error: "could not connect".into(),
                },
                attempt_log(),
            )
            .await
            .unwrap();

        let all = store
            .list_deliveries(DeliveryFilter::default(), 10)
            .await
            .unwrap();
        assert_eq!(
            all.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["evt_3", "evt_2", "evt_1"],
            "{name}: newest first"
        );
        let dead = store
            .list_deliveries(
                DeliveryFilter {
                    status: Some(DeliveryStatus::Dead),
                    ..Default::default()
                },
                10,
            )
            .await
            .unwrap();
        assert_eq!(dead.len(), 1, "{name}");
        assert_eq!(
            (
                dead[0].attempts,
                dead[0].last_status,
                dead[0].last_error.as_deref()
            ),
            (1, Some(422), Some("the receiver answered 422"))
        );
        assert_eq!(dead[0].contact_id, json!(1));
        assert!(dead[0].next_attempt_at.is_none() && dead[0].delivered_at.is_none());
        let delivered = store
            .list_deliveries(
                DeliveryFilter {
                    status: Some(DeliveryStatus::Delivered),
                    ..Default::default()
                },
                10,
            )
            .await
            .unwrap();
        assert_eq!(
            (delivered[0].id.as_str(), delivered[0].last_status),
            ("evt_2", Some(200))
        );
        assert!(delivered[0].delivered_at.is_some());
        let pending = store
            .list_deliveries(
                DeliveryFilter {
                    status: Some(DeliveryStatus::Pending),
                    ..Default::default()
                },
                10,
            )
            .await
            .unwrap();
        assert_eq!(
            pending[0].next_attempt_at.as_deref(),
            Some(store::format_ms(retry_at).as_str())
        );
        assert_eq!(pending[0].last_status, None);
        assert_eq!(
            store
                .list_deliveries(DeliveryFilter::default(), 2)
                .await
                .unwrap()
                .len(),
            2,
            "{name}: limit"
        );

        assert_eq!(
            store.requeue("evt_2", None).await.unwrap(),
            Requeue::NotDead,
            "{name}"
        );
        assert_eq!(
            store.requeue("evt_nope", None).await.unwrap(),
            Requeue::Unknown,
            "{name}"
        );
        assert_eq!(
            store.requeue("evt_1", None).await.unwrap(),
            Requeue::Requeued,
            "{name}"
        );
        let requeued = store
            .list_deliveries(
                DeliveryFilter {
                    status: Some(DeliveryStatus::Pending),
                    ..Default::default()
                },
                10,
            )
            .await
            .unwrap();
        let evt_1 = requeued.iter().find(|d| d.id == "evt_1").unwrap();
        assert_eq!(evt_1.attempts, 0, "{name}: the schedule starts again");
        let again = store
            .claim_due("default", 10, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(ids(&again), ["evt_1"]);
        store
            .record_attempt(
                of(&again, "evt_1"),
                AttemptOutcome::Dead {
                    status: Some(410),
                    error: "gone".into(),
                },
                attempt_log(),
            )
            .await
            .unwrap();
        assert_eq!(store.requeue_dead(None).await.unwrap(), 1, "{name}");
        assert_eq!(store.requeue_dead(None).await.unwrap(), 0, "{name}");
    }
}

#[tokio::test]
async fn pruning_keeps_pending_and_dead_deliveries() {
    for (name, store, _dir) in backends().await {
        let old = now_ms() - 8 * 86400 * 1000;
        let mut delivered = event("evt_done", 1, "a");
        let mut dead = event("evt_dead", 2, "b");
        let mut pending = event("evt_wait", 3, "c");
        let mut plain = event("evt_plain", 4, "d");
        for e in [&mut delivered, &mut dead, &mut pending, &mut plain] {
            e.received_at = old;
        }
        store.enqueue(vec![delivered, dead, pending]).await.unwrap();
        store.enqueue(unforwarded(vec![plain])).await.unwrap();
        store.enqueue(vec![event("evt_recent", 5, "e")]).await.unwrap();
        let claimed = store
            .claim_due("default", 10, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 4, "{name}");
        store
            .record_attempt(
                of(&claimed, "evt_done"),
                AttemptOutcome::Delivered { status: 200 },
                attempt_log(),
            )
            .await
            .unwrap();
        store
            .record_attempt(
                of(&claimed, "evt_dead"),
                AttemptOutcome::Dead {
                    status: Some(400),
                    error: "no".into(),
                },
                attempt_log(),
            )
            .await
            .unwrap();
        store
            .record_attempt(
                of(&claimed, "evt_recent"),
                AttemptOutcome::Delivered { status: 200 },
                attempt_log(),
            )
            .await
            .unwrap();
        let pruned = store.prune().await.unwrap();
        assert_eq!(
            pruned.events, 2,
            "{name}: the old delivered and the old unforwarded event"
        );
        let left: Vec<String> = store
            .list_deliveries(DeliveryFilter::default(), 10)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(left, ["evt_recent", "evt_wait", "evt_dead"], "{name}");
        let counts = store.delivery_counts().await.unwrap();
        assert_eq!(
            (counts.pending, counts.dead, counts.delivered),
            (1, 1, 1),
            "{name}: the pruned delivered event is no longer counted"
        );
        assert_eq!(
            store.delivery_backlog().await.unwrap(),
            store::DeliveryBacklog { pending: 1, dead: 1 },
            "{name}"
        );
        store.check_writable().await.unwrap();
    }
}

/// issue 19 (6): pruning a large backlog is many short transactions, and a
/// webhook that arrives meanwhile is written between two of them instead of
/// waiting for the whole pass (with one `DELETE`, it waited for all of it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_pruning_lets_writes_through_between_its_steps() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = store::open(&url, retention()).await.unwrap();
    const OLD: u64 = 60_000;
    let old = now_ms() - 8 * 86400 * 1000;
    for batch in 0..OLD / 1000 {
        let events = (0..1000)
            .map(|i| {
                let n = (batch * 1000 + i) as i64;
                let mut e = event(&format!("evt_old_{n}"), n, &format!("old-{n}"));
                e.received_at = old;
                e
            })
            .collect();
        store.enqueue(unforwarded(events)).await.unwrap();
    }
    let pruning = tokio::spawn({
        let store = store.clone();
        async move { store.prune().await }
    });
    // The pass has begun.
    tokio::time::sleep(Duration::from_millis(20)).await;
    store.enqueue(vec![event("evt_new", 1, "new")]).await.unwrap();
    assert!(
        !pruning.is_finished(),
        "the write waited for the whole pruning pass"
    );
    let pruned = pruning.await.unwrap().unwrap();
    assert_eq!(pruned.events, OLD);
    assert_eq!(
        ids(&store
            .claim_due("default", 10, Duration::from_secs(30))
            .await
            .unwrap()),
        ["evt_new"]
    );
    assert_eq!(store.prune().await.unwrap().events, 0, "nothing left to prune");
}

/// The rows the previous release left: one delivery per event, in the
/// event's own columns (a pending, a dead, a delivered and an unforwarded event).
const PREVIOUS_RELEASE_ROWS: &str = "
INSERT INTO {events} (id, contact_key, received_at, score, tier, disqualified, rules_version, body,
                      delivery, attempts, next_attempt_at, last_status, last_error, delivered_at {key_column})
VALUES ('evt_pending', '1', {now}, '40', 'warm', {false}, 'v1', '{\"id\":\"evt_pending\"}',
        'pending', 2, {now}, 503, 'the receiver answered 503', NULL {key_1}),
       ('evt_dead', '2', {now}, '10', 'cold', {false}, 'v1', '{\"id\":\"evt_dead\"}',
        'dead', 8, NULL, 410, 'the receiver answered 410', NULL {key_2}),
       ('evt_done', '3', {now}, '90', 'hot', {false}, 'v1', '{\"id\":\"evt_done\"}',
        'delivered', 1, NULL, 200, NULL, {now} {key_3}),
       ('evt_plain', '4', {now}, '5', 'cold', {false}, 'v1', '{\"id\":\"evt_plain\"}',
        NULL, 0, NULL, NULL, NULL, NULL {key_4});";

/// issue 20 (11): a store written by the previous release (one delivery
/// per event) opens with this build on both backends: its deliveries are
/// deliveries of `default` with their state, and they are claimed,
/// requeued and listed as such.
#[tokio::test]
async fn a_store_of_the_previous_release_keeps_its_deliveries_as_default() {
    let now = now_ms().to_string();
    let mut stores: Vec<(String, Arc<dyn Store>, Scratch)> = Vec::new();
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(support::previous_release::SQLITE_SCHEMA_3)
            .unwrap();
        let rows = PREVIOUS_RELEASE_ROWS
            .replace("{events}", "events")
            .replace("{now}", &now)
            .replace("{false}", "0")
            .replace("{key_column}", ", idempotency_key")
            .replace("{key_1}", ", x'01'")
            .replace("{key_2}", ", x'02'")
            .replace("{key_3}", ", x'03'")
            .replace("{key_4}", ", x'04'");
        conn.execute_batch(&rows).unwrap();
        drop(conn);
        let url = format!("sqlite://{}", path.display());
        stores.push((
            "sqlite".into(),
            store::open(&url, retention()).await.unwrap(),
            Scratch::Dir(dir),
        ));
    }
    if let Some(schema) = pg::Schema::fresh("previous") {
        let client = schema.client().await;
        client
            .batch_execute(&format!("CREATE SCHEMA \"{}\"", schema.name))
            .await
            .unwrap();
        client
            .batch_execute(support::previous_release::POSTGRES_MIGRATIONS_1_2)
            .await
            .unwrap();
        let rows = PREVIOUS_RELEASE_ROWS
            .replace("{events}", "leadscore_events")
            .replace("{now}", &now)
            .replace("{false}", "false")
            .replace("{key_column}", "")
            .replace("{key_1}", "")
            .replace("{key_2}", "")
            .replace("{key_3}", "")
            .replace("{key_4}", "");
        client.batch_execute(&rows).await.unwrap();
        let store = store::open(&schema.url(), retention())
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL store at {}: {e}", schema.url()));
        stores.push(("postgres".into(), store, Scratch::Schema(schema)));
    }
    for (name, store, _scratch) in stores {
        let listed = store
            .list_deliveries(DeliveryFilter::default(), 10)
            .await
            .unwrap();
        let seen: Vec<(&str, &str, DeliveryStatus, u32)> = listed
            .iter()
            .map(|d| (d.id.as_str(), d.destination.as_str(), d.status, d.attempts))
            .collect();
        assert_eq!(
            seen,
            [
                ("evt_done", "default", DeliveryStatus::Delivered, 1),
                ("evt_dead", "default", DeliveryStatus::Dead, 8),
                ("evt_pending", "default", DeliveryStatus::Pending, 2),
            ],
            "{name}"
        );
        assert_eq!(
            listed[1].last_error.as_deref(),
            Some("the receiver answered 410"),
            "{name}"
        );
        let counts = store.delivery_counts().await.unwrap();
        assert_eq!(
            (counts.pending, counts.dead, counts.delivered),
            (1, 1, 1),
            "{name}"
        );
        let claimed = store
            .claim_due("default", 10, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(ids(&claimed), ["evt_pending"], "{name}");
        assert_eq!(
            claimed[0].attempts, 2,
            "{name}: the schedule goes on where it was"
        );
        assert_eq!(
            store.requeue("evt_dead", Some("default")).await.unwrap(),
            Requeue::Requeued,
            "{name}"
        );
        assert_eq!(
            store.attempts("evt_done", None).await.unwrap(),
            Some(Vec::new()),
            "{name}: no attempt log from before"
        );
        assert_eq!(
            store.attempts("evt_plain", None).await.unwrap(),
            None,
            "{name}: never forwarded"
        );
    }
}

#[tokio::test]
async fn the_sqlite_store_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("nested/folder/store.db").display());
    {
        let store = store::open(&url, retention()).await.unwrap();
        store.enqueue(vec![event("evt_1", 1, "k")]).await.unwrap();
        // Claimed by a process that then dies.
        assert_eq!(
            store
                .claim_due("default", 1, Duration::from_secs(3600))
                .await
                .unwrap()
                .len(),
            1
        );
    }
    let store = store::open(&url, retention()).await.unwrap();
    let again = store.enqueue(vec![event("evt_2", 1, "k")]).await.unwrap();
    assert!(matches!(&again[0], Enqueued::Duplicate(s) if s.id == "evt_1"));
    // Opening alone (as `leadscore deliveries` does) leaves the claim alone...
    assert!(
        store
            .claim_due("default", 1, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    // ...and a restarting server releases the dead process's claims at once.
    assert_eq!(store.release_stale_claims().await.unwrap(), 1);
    assert_eq!(
        ids(&store
            .claim_due("default", 1, Duration::from_secs(30))
            .await
            .unwrap()),
        ["evt_1"]
    );
}

#[tokio::test]
async fn a_sqlite_store_of_schema_1_is_migrated_and_keeps_its_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let url = format!("sqlite://{}", path.display());
    {
        let store = store::open(&url, retention()).await.unwrap();
        store.enqueue(vec![event("evt_1", 1, "k")]).await.unwrap();
    }
    // Back to schema 1's indexes, as if the event had been stored by the
    // version before.
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "DROP INDEX events_contact_key;
             CREATE INDEX events_idempotency ON events (idempotency_key);
             CREATE INDEX events_contact ON events (contact_key, seq);
             UPDATE meta SET value = '1' WHERE key = 'schema_version';",
        )
        .unwrap();
    }
    let store = store::open(&url, retention()).await.unwrap();
    let again = store
        .enqueue(vec![event("evt_2", 1, "k"), event("evt_3", 1, "other")])
        .await
        .unwrap();
    assert!(
        matches!(&again[0], Enqueued::Duplicate(s) if s.id == "evt_1"),
        "{again:?}"
    );
    assert!(
        matches!(&again[1], Enqueued::Stored(s) if s.id == "evt_3"),
        "{again:?}"
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mut indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' AND sql IS NOT NULL ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    indexes.sort();
    assert_eq!(indexes, ["events_contact_key"]);
    let version: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(version, "6");
    drop(conn);
    drop(store);
    // A file from a newer version is refused, not misread.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'", [])
        .unwrap();
    let refused = store::open(&url, retention()).await.err().unwrap().to_string();
    assert!(
        refused.contains("written by a newer leadscore (store schema 7; this version knows up to 6)"),
        "{refused}"
    );
}

#[tokio::test]
async fn sqlite_bodies_are_packed_and_text_bodies_of_schema_2_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let url = format!("sqlite://{}", path.display());
    let body_of = |id: &str, contact: i64| {
        json!({"type": "contact.scored", "id": id, "contact_id": contact, "score": 42, "tier": "warm",
               "contact": {"id": contact, "email": "raya.fleming@northwind-logistics.com", "status": "QUALIFIED",
                           "questionsAndAnswers": {"4_question": "What is your role?", "4_response": "VP of Operations"}}})
        .to_string()
    };
    let with_body = |id: &str, contact: i64| {
        let mut e = event(id, contact, &format!("key-{id}"));
        e.body = body_of(id, contact);
        e
    };
    {
        let store = store::open(&url, retention()).await.unwrap();
        store
            .enqueue(vec![with_body("evt_1", 1), with_body("evt_2", 2)])
            .await
            .unwrap();
    }
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let (kind, stored): (String, i64) = conn
            .query_row(
                "SELECT typeof(body), length(body) FROM events WHERE id = 'evt_2'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(kind, "blob");
        assert!(
            (stored as usize) < body_of("evt_2", 2).len(),
            "{stored} bytes stored for {}",
            body_of("evt_2", 2).len()
        );
        // evt_1 as the version before stored it: the JSON text.
        conn.execute(
            "UPDATE events SET body = ?1 WHERE id = 'evt_1'",
            [body_of("evt_1", 1)],
        )
        .unwrap();
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'", [])
            .unwrap();
    }
    let store = store::open(&url, retention()).await.unwrap();
    let recent = store.recent_events(10).await.unwrap();
    let bodies: Vec<(&str, &str)> = recent.iter().map(|e| (e.id.as_str(), e.body.as_str())).collect();
    assert_eq!(
        bodies,
        [
            ("evt_2", body_of("evt_2", 2).as_str()),
            ("evt_1", body_of("evt_1", 1).as_str())
        ]
    );
    let claimed = store
        .claim_due("default", 10, Duration::from_secs(30))
        .await
        .unwrap();
    let claimed: Vec<(&str, &str)> = claimed
        .iter()
        .map(|d| (d.event_id.as_str(), d.body.as_str()))
        .collect();
    assert_eq!(
        claimed,
        [
            ("evt_1", body_of("evt_1", 1).as_str()),
            ("evt_2", body_of("evt_2", 2).as_str())
        ]
    );
    let listed = store
        .list_deliveries(DeliveryFilter::default(), 10)
        .await
        .unwrap();
    assert_eq!(listed[1].contact_id, json!(1));
    let again = store.enqueue(vec![with_body("evt_3", 1)]).await.unwrap();
    assert_eq!(again.len(), 1);
    assert!(matches!(&again[0], Enqueued::Stored(s) if s.id == "evt_3"));
    let mut duplicate = with_body("evt_4", 1);
    duplicate.idempotency_key = "key-evt_1".into();
    let again = store.enqueue(vec![duplicate]).await.unwrap();
    assert!(
        matches!(&again[0], Enqueued::Duplicate(s) if s.id == "evt_1" && s.contact_id == json!(1)),
        "{again:?}"
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(version, "6");
}

#[tokio::test]
async fn the_sqlite_log_is_copied_into_the_database_file_beside_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = store::open(&format!("sqlite://{}", path.display()), retention())
        .await
        .unwrap();
    let schema_only = std::fs::metadata(&path).unwrap().len();
    // 300 events of about 3 KB in 30 commits: some 900 KB that the writer
    // only appends to the log (it never checkpoints below 50,000 pages).
    // Random hex: stored bodies are compressed, and this must stay ~3 KB.
    let padding: String = (0..1500)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    for commit in 0..30 {
        let events = (0..10)
            .map(|i| {
                let n = commit * 10 + i;
                let mut e = event(&format!("evt_{n}"), n, &format!("key-{n}"));
                e.body = json!({"type": "contact.scored", "id": e.event_id, "padding": padding}).to_string();
                e
            })
            .collect();
        store.enqueue(unforwarded(events)).await.unwrap();
    }
    // The checkpointer thread copies them into the database file while the
    // store stays open: the log is below the 8,000 pages that wake it, so
    // this is its pass after a second without such a commit.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let size = std::fs::metadata(&path).unwrap().len();
        if size >= 900_000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the database file stayed at {size} bytes (schema only: {schema_only}); nothing was checkpointed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        schema_only < 100_000,
        "a new database file holds only the schema: {schema_only}"
    );
    // Every event is readable from the file alone, as another process sees it.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let count: i64 = conn
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 300);
}

#[tokio::test]
async fn bad_store_urls_are_clear_errors() {
    for (url, expected) in [
        ("mysql://x", "use sqlite://PATH"),
        ("sqlite://", "no file path"),
        (
            "postgres://u@127.0.0.1/db?schema=No-Good",
            "not a plain lower-case name",
        ),
        (
            "postgresql://u:pw@127.0.0.1/db?sslmode=verify",
            "sslmode \"verify\" is not one of disable, allow, prefer, require, verify-ca, verify-full",
        ),
        (
            "postgresql://u:pw@127.0.0.1/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
            "sslrootcert /nonexistent/ca.pem: cannot read it",
        ),
    ] {
        let err = store::open(url, retention()).await.err().unwrap().to_string();
        assert!(err.contains(expected), "{url}: {err}");
        assert!(!err.contains(":pw@"), "the password stays hidden: {err}");
    }
}

/// A stored hook of `kind` (as ingest makes one).
fn hook(id: &str, kind: leadscore::payload::HookKind, key: &str) -> store::NewHook {
    store::NewHook {
        id: id.into(),
        kind,
        idempotency_key: key.into(),
        received_at: now_ms(),
        contact_ref: None,
        email: None,
        own_id: None,
        call_status: None,
        call_start: None,
        call_type: None,
        call_outcome: None,
        sale: false,
        revenue: 0.0,
        body: json!({"id": id}).to_string(),
    }
}

#[tokio::test]
async fn hooks_link_to_their_contact_and_sum_into_outcomes() {
    use leadscore::payload::HookKind::{Call, Outcome, Unknown};
    use store::{ItemStored, NewItem};
    for (name, store, _dir) in backends().await {
        let linked = |stored: &ItemStored| match stored {
            ItemStored::Hook(h) => (h.contact_id.clone(), h.duplicate),
            other => panic!("{name}: {other:?}"),
        };
        // An outcome for contact 1 before it arrives, twice (a retry of the
        // same outcome, another delivery id: one sale, not two).
        let mut sale = hook("hook_s1", Outcome, "s1");
        sale.contact_ref = Some("1".into());
        sale.own_id = Some("o1".into());
        sale.sale = true;
        sale.revenue = 2500.0;
        let mut sale_again = sale.clone();
        sale_again.id = "hook_s1b".into();
        sale_again.idempotency_key = "s1b".into();
        // A booking of contact 2 by email, another case of it is ingest's job.
        let mut booking = hook("hook_c2", Call, "c2");
        booking.email = Some("two@example.com".into());
        booking.call_status = Some("booked");
        booking.own_id = Some("call-2".into());
        let unknown = hook("hook_u", Unknown, "u");
        let stored = store
            .store_items(vec![
                NewItem::Hook(sale.clone()),
                NewItem::Hook(sale_again),
                NewItem::Hook(booking),
                NewItem::Hook(unknown),
            ])
            .await
            .unwrap();
        assert_eq!(linked(&stored[0]), (json!(null), false), "{name}");
        assert_eq!(linked(&stored[2]), (json!(null), false), "{name}");
        // The same key again: a duplicate of the first.
        let again = store.store_items(vec![NewItem::Hook(sale)]).await.unwrap();
        match &again[0] {
            ItemStored::Hook(h) => assert_eq!((h.id.as_str(), h.duplicate), ("hook_s1", true), "{name}"),
            other => panic!("{name}: {other:?}"),
        }

        // The contacts arrive: both hooks link.
        let mut one = event("evt_1", 1, "e1");
        one.body = json!({"reasons": [{"rule": "10-role.rhai", "reason": "CEO", "points": 30},
                                      {"rule": "10-role.rhai", "reason": "CEO", "points": 5}],
                          "tags": ["decision-maker"], "disqualifications": []})
        .to_string();
        one.score = 85.into();
        one.tier = "hot".into();
        let mut two = event("evt_2", 2, "e2");
        two.email = Some("two@example.com".into());
        two.disqualified = true;
        two.tier = "disqualified".into();
        two.body = json!({"reasons": [], "tags": [],
                          "disqualifications": [{"rule": "80-dq.rhai", "reason": "student"}]})
        .to_string();
        store.enqueue(unforwarded(vec![one, two])).await.unwrap();
        let timeline = store.contact_hooks("1", 10).await.unwrap();
        assert_eq!(timeline.len(), 2, "{name}: {timeline:?}");
        let calls = store.contact_hooks("2", 10).await.unwrap();
        assert_eq!(calls.len(), 1, "{name}");
        assert_eq!(calls[0].call_status.as_deref(), Some("booked"), "{name}");

        // A call of contact 2 arriving later links at once, by email.
        let mut canceled = hook("hook_c2x", Call, "c2x");
        canceled.email = Some("two@example.com".into());
        canceled.call_status = Some("canceled");
        let now = store.store_items(vec![NewItem::Hook(canceled)]).await.unwrap();
        assert_eq!(linked(&now[0]), (json!(2), false), "{name}");

        let mut rows = store.contact_outcomes(0).await.unwrap();
        rows.sort_by(|a, b| a.contact_key.cmp(&b.contact_key));
        assert_eq!(rows.len(), 2, "{name}");
        let (first, second) = (&rows[0], &rows[1]);
        assert_eq!(first.contact_key, "1");
        assert_eq!((first.score, first.tier.as_str()), (85.0, "hot"), "{name}");
        assert_eq!(
            first.reasons,
            vec![("10-role.rhai".to_owned(), "CEO".to_owned())],
            "{name}"
        );
        assert_eq!(first.tags, vec!["decision-maker".to_owned()], "{name}");
        assert!(
            !first.booked && first.with_outcome && first.converted,
            "{name}: {first:?}"
        );
        assert_eq!(first.revenue, 2500.0, "{name}: one sale, sent twice");
        assert_eq!(second.disqualified_by, vec!["80-dq.rhai".to_owned()], "{name}");
        assert!(
            second.disqualified && second.booked && !second.with_outcome && !second.converted,
            "{name}"
        );
        assert_eq!(second.revenue, 0.0, "{name}");
        // The window: contacts first seen after now are none.
        assert!(
            store
                .contact_outcomes(now_ms() + 60_000)
                .await
                .unwrap()
                .is_empty(),
            "{name}"
        );

        let found = store.contacts_by_email("two@example.com", 10).await.unwrap();
        assert_eq!(
            found.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["evt_2"],
            "{name}"
        );
    }
}

#[tokio::test]
async fn rescored_events_are_stored_once_per_job_and_only_over_the_newest_event() {
    use leadscore::rescore::{Cause, new_job};
    for (name, store, _dir) in backends().await {
        store
            .enqueue(unforwarded(vec![
                event("evt_1", 1, "e1"),
                event("evt_2", 2, "e2"),
            ]))
            .await
            .unwrap();
        let sources = store.rescore_sources(0, i64::MAX, 0, 10).await.unwrap();
        assert_eq!(sources.len(), 2, "{name}");
        let one = sources.iter().find(|s| s.contact_key == "1").unwrap();
        assert_eq!(
            (one.source_seq, one.latest_body.is_none()),
            (one.latest_seq, true),
            "{name}"
        );
        let rescored = |id: &str, contact: i64, key: &str, over: i64| {
            let mut e = event(id, contact, key);
            e.supersedes = Some(over);
            e.score = 50.into();
            e
        };
        // Over the newest event: stored; again under the same key: a duplicate.
        let first = store
            .enqueue(vec![rescored("evt_r1", 1, "job1-1", one.latest_seq)])
            .await
            .unwrap();
        assert!(matches!(&first[0], Enqueued::Stored(_)), "{name}: {first:?}");
        let again = store
            .enqueue(vec![rescored("evt_r1b", 1, "job1-1", one.latest_seq)])
            .await
            .unwrap();
        assert!(
            matches!(&again[0], Enqueued::Duplicate(s) if s.id == "evt_r1"),
            "{name}: {again:?}"
        );
        // Over an event that is no longer the newest (a webhook came): not stored.
        let two = sources.iter().find(|s| s.contact_key == "2").unwrap();
        store
            .enqueue(unforwarded(vec![event("evt_3", 2, "e3")]))
            .await
            .unwrap();
        let late = store
            .enqueue(vec![rescored("evt_r2", 2, "job1-2", two.latest_seq)])
            .await
            .unwrap();
        assert_eq!(late[0], Enqueued::Superseded, "{name}");
        // Contact 1's source is still its contact event; its latest is the rescored one.
        let sources = store.rescore_sources(0, i64::MAX, 0, 10).await.unwrap();
        let one = sources.iter().find(|s| s.contact_key == "1").unwrap();
        assert!(one.latest_seq > one.source_seq, "{name}");
        assert!(one.latest_body.as_deref().unwrap().contains("evt_r1"), "{name}");
        // The outcomes report reads contact events only.
        let rows = store.contact_outcomes(0).await.unwrap();
        let row = rows.iter().find(|r| r.contact_key == "1").unwrap();
        assert_eq!(row.score, 42.0, "{name}: the rescored 50 is not the report's");

        // Jobs: one running; the owner saves, another cannot; cancel.
        let job = new_job(Cause::Manual, 0, 3);
        let lease = now_ms() + 60_000;
        store.start_rescore(&job, "me", lease).await.unwrap().unwrap();
        let other = new_job(Cause::Rules, 0, 3);
        assert_eq!(
            store.start_rescore(&other, "you", lease).await.unwrap(),
            Err(job.id.clone()),
            "{name}"
        );
        let mut progress = job.clone();
        progress.cursor = 2;
        progress.scored = 2;
        assert!(
            store.save_rescore(&progress, "me", lease).await.unwrap(),
            "{name}"
        );
        assert!(
            !store.save_rescore(&progress, "you", lease).await.unwrap(),
            "{name}"
        );
        assert_eq!(
            store.rescore_job(&job.id).await.unwrap().unwrap().cursor,
            2,
            "{name}"
        );
        let cancelled = store.cancel_rescore(&job.id).await.unwrap().unwrap();
        assert_eq!(cancelled.state, "cancelled", "{name}");
        assert!(
            !store.save_rescore(&progress, "me", lease).await.unwrap(),
            "{name}: a cancelled job stops"
        );
        store.start_rescore(&other, "you", lease).await.unwrap().unwrap();
        let recent = store.recent_rescore_jobs(5).await.unwrap();
        assert_eq!(recent.len(), 2, "{name}");
    }
}

/// PostgreSQL compresses the bodies it stores with LZ4 where the server
/// has it (its default, pglz, was a third of its CPU per webhook:
/// BENCHMARKS.md, session 11).
#[tokio::test]
async fn postgres_compresses_stored_bodies_with_lz4() {
    let Some(schema) = pg::Schema::fresh("lz4") else {
        return;
    };
    let store = store::open(&schema.url(), retention()).await.unwrap();
    let client = schema.client().await;
    let has_lz4: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_settings
                            WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    if !has_lz4 {
        eprintln!("skipped: this PostgreSQL server was built without LZ4");
        return;
    }
    let mut big = event("evt_big", 1, "key-big");
    big.body = json!({"type": "contact.scored", "padding": "abc".repeat(5000)}).to_string();
    store.enqueue(unforwarded(vec![big])).await.unwrap();
    let method: Option<String> = client
        .query_one(
            &format!(
                "SELECT pg_column_compression(body) FROM \"{}\".leadscore_events WHERE id = 'evt_big'",
                schema.name
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(method.as_deref(), Some("lz4"));
}

/// A rescore job's state is written on a connection of its own: while
/// another process holds the SQLite file's write lock (as the writer does
/// under load), the periodic take-over check does not wait for it when no
/// job is orphaned, and reads go on while a job's write waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_job_writes_wait_aside_from_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = store::open(&format!("sqlite://{}", path.display()), retention())
        .await
        .unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    // Before: an UPDATE that waited out the busy timeout, "database is locked".
    assert_eq!(
        store.take_over_rescore("me", now_ms() + 60_000).await.unwrap(),
        None
    );
    let waiting = {
        let store = store.clone();
        tokio::spawn(async move { store.cancel_rescore("rsc_1").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(store.recent_rescore_jobs(10).await.unwrap().len(), 0);
    assert!(
        !waiting.is_finished(),
        "the job's write finished first: the read waited for it"
    );
    other.execute_batch("ROLLBACK").unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), None);
}

/// The embedded store indexes contacts by email in batches (store::emails):
/// a contact is found by email, and a call links to it, before its batch,
/// after it, and after the store is opened again (which indexes what the
/// last writer still held in memory).
#[tokio::test]
async fn sqlite_contacts_are_found_by_email_before_and_after_their_batch() {
    use leadscore::payload::HookKind::Call;
    use store::{ItemStored, NewItem};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let url = format!("sqlite://{}", path.display());
    let with_email = |id: &str, contact: i64, email: Option<&str>| {
        let mut e = event(id, contact, &format!("key-{id}"));
        e.email = email.map(str::to_owned);
        e
    };
    let found = |store: Arc<dyn Store>, email: &'static str| async move {
        let events = store.contacts_by_email(email, 10).await.unwrap();
        events.into_iter().map(|e| e.id).collect::<Vec<_>>()
    };
    let call_links_to = |store: Arc<dyn Store>, id: &'static str, email: &'static str| async move {
        let mut call = hook(id, Call, id);
        call.email = Some(email.into());
        call.call_status = Some("booked");
        match &store.store_items(vec![NewItem::Hook(call)]).await.unwrap()[0] {
            ItemStored::Hook(h) => h.contact_id.clone(),
            other => panic!("{other:?}"),
        }
    };
    let table = || {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let entries: Vec<(String, i64)> = conn
            .prepare("SELECT email, seq FROM event_emails ORDER BY email, seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        entries
    };
    {
        let store: Arc<dyn Store> = store::open(&url, retention()).await.unwrap();
        store
            .enqueue(unforwarded(vec![
                with_email("evt_1", 1, Some("a@x")),
                with_email("evt_2", 2, Some("b@x")),
            ]))
            .await
            .unwrap();
        assert!(table().is_empty(), "not batched yet");
        assert_eq!(found(store.clone(), "a@x").await, ["evt_1"]);
        assert_eq!(call_links_to(store.clone(), "call_1", "a@x").await, json!(1));
        // A second later, the next commit starts a batch, the one after writes it.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        store
            .enqueue(unforwarded(vec![with_email("evt_3", 3, Some("c@x"))]))
            .await
            .unwrap();
        store
            .enqueue(unforwarded(vec![with_email("evt_4", 4, None)]))
            .await
            .unwrap();
        assert_eq!(
            table(),
            [
                ("a@x".to_owned(), 1),
                ("b@x".to_owned(), 2),
                ("c@x".to_owned(), 3)
            ]
        );
        assert_eq!(found(store.clone(), "a@x").await, ["evt_1"]);
        assert_eq!(call_links_to(store.clone(), "call_2", "b@x").await, json!(2));
        // A newer contact with the same email: in memory, found first.
        store
            .enqueue(unforwarded(vec![with_email("evt_5", 5, Some("a@x"))]))
            .await
            .unwrap();
        assert_eq!(found(store.clone(), "a@x").await, ["evt_5", "evt_1"]);
        assert_eq!(call_links_to(store.clone(), "call_3", "a@x").await, json!(5));
    }
    // Opened again: what the writer held in memory is indexed at once.
    let store: Arc<dyn Store> = store::open(&url, retention()).await.unwrap();
    assert!(table().contains(&("a@x".to_owned(), 5)), "{:?}", table());
    assert_eq!(found(store.clone(), "a@x").await, ["evt_5", "evt_1"]);
    assert_eq!(call_links_to(store.clone(), "call_4", "a@x").await, json!(5));
    // An event pruned past the retention takes its entry with it.
    let mut old = with_email("evt_old", 6, Some("old@x"));
    old.received_at = now_ms() - 8 * 86400 * 1000;
    store.enqueue(unforwarded(vec![old])).await.unwrap();
    drop(store);
    let store: Arc<dyn Store> = store::open(&url, retention()).await.unwrap();
    assert!(table().iter().any(|(email, _)| email == "old@x"), "{:?}", table());
    assert_eq!(store.prune().await.unwrap().events, 1);
    assert!(
        !table().iter().any(|(email, _)| email == "old@x"),
        "{:?}",
        table()
    );
    assert!(found(store.clone(), "old@x").await.is_empty());
    assert_eq!(found(store, "a@x").await, ["evt_5", "evt_1"]);
}
