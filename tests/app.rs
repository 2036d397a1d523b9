//! The use cases of `leadscore::app` without a socket: the same calls the
//! HTTP API, the console and the CLI make, against an SQLite store in a
//! temporary folder and the repository's example rules.

use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use leadscore::app::backtest::BacktestRequest;
use leadscore::app::deliveries::DeliveryQuery;
use leadscore::app::{AppError, Engine, EngineSettings, stats};
use leadscore::ingest::Ingest;
use leadscore::reload::LiveRules;
use leadscore::score::Limits;
use leadscore::score::pool::ScoringPool;
use leadscore::store::{self, DeliveryStatus, Retention};
use serde_json::json;

const EXAMPLE_RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");

struct Fixture {
    engine: Engine,
    rules_dir: tempfile::TempDir,
    _data: tempfile::TempDir,
}

/// A copy of the example rules (so tests may change it) and an empty store.
async fn engine(allow_rule_edits: bool) -> Fixture {
    let rules_dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(EXAMPLE_RULES).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_file() {
            std::fs::copy(entry.path(), rules_dir.path().join(entry.file_name())).unwrap();
        }
    }
    let data = tempfile::tempdir().unwrap();
    let retention = Retention {
        dedupe_window: Duration::from_secs(7 * 86400),
        retention: Duration::from_secs(90 * 86400),
    };
    let url = format!("sqlite://{}", data.path().join("leadscore.db").display());
    let store = store::open(&url, retention).await.unwrap();
    let rules = LiveRules::load(rules_dir.path(), Limits::default()).unwrap();
    // One destination, never started: deliveries stay pending.
    let routes = leadscore::deliver::manager::Routes::new(leadscore::destinations::Destinations {
        list: vec![leadscore::destinations::Destination::default_from_forward(
            "http://127.0.0.1:9/".parse().unwrap(),
            None,
            &Default::default(),
            &Default::default(),
        )],
        ..Default::default()
    });
    let rescorer = std::sync::Arc::new(leadscore::app::rescore::Rescorer {
        store: store.clone(),
        around: std::sync::Arc::new(leadscore::app::rescore::Live {
            rules: rules.clone(),
            routes: routes.clone(),
        }),
        owner: "test".into(),
        retention: retention.retention,
    });
    let engine = Engine::new(
        Ingest {
            rules,
            store,
            routes,
            max_contacts: 1000,
            pool: ScoringPool::new(2).unwrap(),
        },
        EngineSettings {
            allow_rule_edits,
            backtest_max_contacts: 1000,
            retention: retention.retention,
        },
        rescorer,
    );
    Fixture {
        engine,
        rules_dir,
        _data: data,
    }
}

fn qualified(id: u64) -> Bytes {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/contact-created-qualified.json"),
    )
    .unwrap();
    let mut body: serde_json::Value = serde_json::from_str(&text).unwrap();
    body[0]["id"] = json!(id);
    Bytes::from(body.to_string())
}

#[tokio::test]
async fn ingest_stores_scores_and_lists_deliveries_and_stats() {
    let fixture = engine(false).await;
    let engine = &fixture.engine;
    let reply = engine.ingest(qualified(1), None).await.unwrap();
    assert_eq!((reply.accepted, reply.duplicates), (1, 0));
    assert_eq!(reply.results[0].contact().unwrap().tier, "hot");
    let again = engine.ingest(qualified(1), None).await.unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, 1));
    assert_eq!(
        again.results[0].id(),
        reply.results[0].id(),
        "a duplicate answers the first event"
    );

    let pending = engine
        .list_deliveries(DeliveryQuery::new(Some(DeliveryStatus::Pending), 10).unwrap())
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, reply.results[0].id());

    let window = stats::Window::from_params(Some("1h"), Some("1h"), SystemTime::now()).unwrap();
    let stats = stats::stats(engine.store().as_ref(), window).await.unwrap();
    let received: u64 = stats.buckets.iter().map(|b| b.received).sum();
    let duplicates: u64 = stats.buckets.iter().map(|b| b.duplicates).sum();
    assert_eq!((received, duplicates), (1, 1));
    assert_eq!(stats.deliveries.pending, 1);
}

#[tokio::test]
async fn requeue_answers_not_found_and_not_dead() {
    let fixture = engine(false).await;
    let engine = &fixture.engine;
    assert!(matches!(
        engine.requeue("evt_unknown", None).await,
        Err(AppError::NotFound(_))
    ));
    let reply = engine.ingest(qualified(2), None).await.unwrap();
    assert_eq!(
        engine.requeue(reply.results[0].id(), None).await.unwrap(),
        0,
        "pending is not dead"
    );
    assert_eq!(engine.requeue_dead(None).await.unwrap(), 0);
}

#[tokio::test]
async fn bad_bodies_and_parameters_are_named_errors() {
    let fixture = engine(false).await;
    let engine = &fixture.engine;
    assert!(matches!(
        engine.ingest(Bytes::from_static(b"{"), None).await,
        Err(AppError::BadRequest(_))
    ));
    let too_many =
        Bytes::from(serde_json::to_string(&(0..1001).map(|i| json!({"id": i})).collect::<Vec<_>>()).unwrap());
    assert!(matches!(
        engine.ingest(too_many, None).await,
        Err(AppError::TooLarge(_))
    ));
    let error = DeliveryQuery::from_params(None, Some("5000"))
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("limit"), "{error}");
    let error = stats::Window::from_params(None, Some("2305843009213693952s"), SystemTime::now())
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("bucket"), "{error}");
    let error = stats::Window::from_params(Some("10000-01-01T00:00:00Z"), None, SystemTime::now())
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("since"), "{error}");
}

#[tokio::test]
async fn a_backtest_of_given_contacts_compares_both_rule_sets() {
    let fixture = engine(false).await;
    let engine = &fixture.engine;
    let mut files = std::collections::BTreeMap::new();
    for name in engine.rules().current().file_names() {
        files.insert(
            name.clone(),
            std::fs::read_to_string(fixture.rules_dir.path().join(&name)).unwrap(),
        );
    }
    // The candidate: every contact gets 1000 more points, so it is hot.
    files.insert("99-boost.rhai".into(), "add(1000, \"boost\");".into());
    let contacts = serde_json::value::RawValue::from_string(r#"[{"id": 7}]"#.into()).unwrap();
    let report = engine
        .backtest(BacktestRequest {
            rules: files.clone(),
            tiers: None,
            since: None,
            all_events: false,
            against: None,
            top: None,
            contacts: Some(contacts),
            trace: false,
        })
        .await
        .unwrap();
    let report = serde_json::to_value(&report).unwrap();
    assert_eq!(report["contacts"], 1);
    assert_eq!(report["results"][0]["candidate"]["tier"], "hot");
    assert_ne!(report["results"][0]["baseline"]["tier"], "hot");

    files.insert("99-boost.rhai".into(), "add(1000,".into());
    let broken = engine
        .backtest(BacktestRequest {
            rules: files,
            tiers: None,
            since: Some("1d".into()),
            all_events: false,
            against: None,
            top: Some(5000),
            contacts: None,
            trace: false,
        })
        .await;
    assert!(
        matches!(broken, Err(AppError::BadRequest(ref m)) if m.starts_with("top")),
        "{broken:?}"
    );
}

/// issue 17: a rule change through the API compiles once and is in force
/// when it returns; a refused change writes nothing; edits need the setting.
#[tokio::test]
async fn rule_changes_are_in_force_at_once_and_refused_changes_write_nothing() {
    let fixture = engine(false).await;
    let refused = fixture
        .engine
        .change_rule_file("99-x.rhai".into(), Some("tag(\"x\");".into()))
        .await;
    assert!(matches!(refused, Err(AppError::Forbidden(_))));

    let fixture = engine(true).await;
    let engine = &fixture.engine;
    let before = engine.rule_status().rules_version;
    let change = engine
        .change_rule_file("99-x.rhai".into(), Some("tag(\"x\");".into()))
        .await
        .unwrap();
    assert_ne!(change.rules_version, before);
    assert_eq!(engine.rule_status().rules_version, change.rules_version);
    assert!(engine.rule_status().files.contains(&"99-x.rhai".to_owned()));
    // The folder now holds what is loaded: a reload finds nothing to do.
    assert!(!engine.rules().reload().unwrap());

    let broken = engine
        .change_rule_file("99-x.rhai".into(), Some("tag(".into()))
        .await;
    let Err(AppError::Unprocessable { errors, .. }) = broken else {
        panic!("{broken:?}")
    };
    assert_eq!(errors[0].file, "99-x.rhai");
    assert_eq!(
        std::fs::read_to_string(fixture.rules_dir.path().join("99-x.rhai")).unwrap(),
        "tag(\"x\");"
    );
    assert_eq!(engine.rule_status().rules_version, change.rules_version);
    assert!(
        engine.rule_status().last_error.is_none(),
        "a refused change is not a failed reload"
    );

    let deleted = engine.change_rule_file("99-x.rhai".into(), None).await.unwrap();
    assert_eq!(deleted.rules_version, before);
    assert!(matches!(
        engine.read_rule_file("99-x.rhai".into()).await,
        Err(AppError::NotFound(_))
    ));
}
