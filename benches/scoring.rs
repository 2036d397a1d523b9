//! Scoring benchmarks (BENCHMARKS.md, "Scoring"): the benchmark rule set of
//! `benches/rules` against
//!
//! * `qualified`: the documented qualified contact of the iClosed fixtures;
//! * `mix`: 1,000 generated payloads (`benches/data/contacts-1000-seed7.jsonl`).
//!
//! Every bench times one contact per iteration, so criterion's figures are
//! per contact. The `mix` benches walk the payloads round-robin in flat
//! sampling mode: each sample spans several passes over the whole mix, so a
//! sample's mean is the mix's mean and not that of a few lucky contacts.
//!
//! Run pinned to one core: `taskset -c 0 cargo bench --bench scoring`.
//!
//! Tools for rule authors (SPEC 13, BENCHMARKS.md "Session 9"):
//! `evaluate_traced` is `score --trace`'s evaluation, `evaluate_timed` times
//! every rule file of every contact, and `ingest_scoring` is what ingest
//! does per contact: the time per rule file taken for one contact in 16
//! and recorded into the Prometheus histogram, the others scored plainly.
//!
//! Counting mode, for a machine too busy for stable timings: with
//! `SCORING_COUNT=evaluate|evaluate_rhai_only|score|parse_score_serialize|evaluate_traced|evaluate_timed|ingest_scoring|parse|parse_batch|digest` (and optionally
//! `SCORING_PASSES=N`, default 1) the binary skips criterion and runs that
//! step N times over the mix, so that under
//! `valgrind --tool=callgrind` the instructions per contact are
//! `(Ir with N=3 − Ir with N=1) / 2000`, whatever else the machine runs.

use std::hint::black_box;
use std::path::Path;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, SamplingMode, criterion_group};
use leadscore::payload::{self, Contact};
use leadscore::score::{Limits, Outcome, RuleSet, RuleTrace, ScoredContact, ScoringContext};
use leadscore::telemetry;

// The allocator of the `leadscore` binary (src/main.rs), so that the figures
// are those of the shipped program.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MIX_SIZE: usize = 1000;
const MIX_SEED: u64 = 7;

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The mix as JSON lines: the copy committed in `benches/data/` (the output
/// of the project's first generator, kept so that figures stay comparable
/// across sessions).
fn mix_payloads() -> Vec<Vec<u8>> {
    let name = format!("contacts-{MIX_SIZE}-seed{MIX_SEED}.jsonl");
    let path = manifest_dir().join("benches/data").join(&name);
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.split(|&b| b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .map(<[u8]>::to_vec)
        .collect()
}

fn parse(body: &[u8]) -> Vec<Contact> {
    payload::parse_body(body, usize::MAX).expect("a valid payload")
}

fn load_rules(limits: &Limits) -> RuleSet {
    RuleSet::load(&manifest_dir().join("benches/rules"), limits).expect("the bench rules load")
}

/// The scoring time and history of every measured contact: none, as at
/// ingest until the store provides them.
static AT: LazyLock<ScoringContext> = LazyLock::new(|| ScoringContext::at(SystemTime::now()));

// The measured steps, kept out of line so that a profiler finds them by name.

#[inline(never)]
fn evaluate(rules: &RuleSet, contact: &Contact) -> Outcome {
    rules.evaluate(contact, &AT)
}

#[inline(never)]
fn score(rules: &RuleSet, contact: &Contact) -> ScoredContact {
    rules.score(contact, None, &AT)
}

#[inline(never)]
fn evaluate_traced(rules: &RuleSet, contact: &Contact) -> (Outcome, Vec<RuleTrace>) {
    rules.evaluate_traced(contact, &AT)
}

#[inline(never)]
fn evaluate_timed(rules: &RuleSet, contact: &Contact) -> Outcome {
    rules.evaluate_timed(contact, &AT).0
}

/// Ingest's scoring of one contact (src/ingest/mod.rs, `prepare`).
#[inline(never)]
fn ingest_scoring(rules: &RuleSet, contact: &Contact) -> ScoredContact {
    if telemetry::sample_rule_times() {
        let (outcome, times) = rules.evaluate_timed(contact, &AT);
        telemetry::rule_times(&times);
        rules.scored_contact(contact, outcome, None, &AT)
    } else {
        rules.score(contact, None, &AT)
    }
}

/// What the CLI does per payload: parse, score, print one JSON line.
#[inline(never)]
fn parse_score_serialize(rules: &RuleSet, body: &[u8], out: &mut Vec<u8>) {
    out.clear();
    for contact in parse(body) {
        let scored = score(rules, &contact);
        serde_json::to_writer(&mut *out, &scored).expect("serialize");
        out.push(b'\n');
    }
}

/// Yields the items of `items` round-robin, one per call.
struct Cycle<'a, T> {
    items: &'a [T],
    next: usize,
}

impl<'a, T> Cycle<'a, T> {
    fn new(items: &'a [T]) -> Self {
        assert!(!items.is_empty());
        Self { items, next: 0 }
    }

    fn next(&mut self) -> &'a T {
        let item = &self.items[self.next];
        self.next = (self.next + 1) % self.items.len();
        item
    }
}

fn bench_qualified(c: &mut Criterion) {
    let rules = load_rules(&Limits::default());
    let body = std::fs::read(manifest_dir().join("tests/fixtures/contact-created-qualified.json"))
        .expect("read the qualified fixture");
    let contact = parse(&body).remove(0);
    // Guard against benchmarking a rule set that errors out early.
    let outcome = rules.evaluate(&contact, &AT);
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(outcome.tier, "hot");

    let mut group = c.benchmark_group("qualified");
    group.bench_function("evaluate", |b| b.iter(|| evaluate(&rules, black_box(&contact))));
    group.bench_function("evaluate_traced", |b| {
        b.iter(|| evaluate_traced(&rules, black_box(&contact)))
    });
    group.bench_function("score", |b| b.iter(|| score(&rules, black_box(&contact))));
    // The same rules run by Rhai alone (no native evaluation): the reference.
    let rhai_only = load_rules(&Limits::default()).interpreted_only();
    assert_eq!(rhai_only.evaluate(&contact, &AT), outcome);
    group.bench_function("evaluate_rhai_only", |b| {
        b.iter(|| evaluate(&rhai_only, black_box(&contact)))
    });
    let mut out = Vec::with_capacity(8192);
    group.bench_function("parse_score_serialize", |b| {
        b.iter(|| parse_score_serialize(&rules, black_box(&body), &mut out))
    });
    group.finish();
}

/// The mix, parsed, after checking that no rule fails on any of it.
fn mix(limits: &Limits) -> (RuleSet, Vec<Vec<u8>>, Vec<Contact>) {
    let rules = load_rules(limits);
    let payloads = mix_payloads();
    let contacts: Vec<Contact> = payloads.iter().flat_map(|p| parse(p)).collect();
    assert_eq!(contacts.len(), MIX_SIZE, "one contact per generated payload");
    for contact in &contacts {
        let outcome = rules.evaluate(contact, &AT);
        assert!(outcome.errors.is_empty(), "{}: {:?}", contact.id, outcome.errors);
    }
    (rules, payloads, contacts)
}

fn bench_mix(c: &mut Criterion) {
    let (rules, payloads, contacts) = mix(&Limits::default());
    let mut group = c.benchmark_group("mix");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(50);
    group.measurement_time(Duration::from_secs(10));
    let mut cycle = Cycle::new(&contacts);
    group.bench_function("evaluate", |b| {
        b.iter(|| evaluate(&rules, black_box(cycle.next())))
    });
    let mut cycle = Cycle::new(&contacts);
    group.bench_function("evaluate_traced", |b| {
        b.iter(|| evaluate_traced(&rules, black_box(cycle.next())))
    });
    let mut cycle = Cycle::new(&contacts);
    group.bench_function("evaluate_timed", |b| {
        b.iter(|| evaluate_timed(&rules, black_box(cycle.next())))
    });
    let mut cycle = Cycle::new(&contacts);
    group.bench_function("score", |b| b.iter(|| score(&rules, black_box(cycle.next()))));
    // The histogram records into the server's recorder, as in `serve`.
    telemetry::metrics_handle();
    let mut cycle = Cycle::new(&contacts);
    group.bench_function("ingest_scoring", |b| {
        b.iter(|| ingest_scoring(&rules, black_box(cycle.next())))
    });
    let rhai_only = load_rules(&Limits::default()).interpreted_only();
    let mut cycle = Cycle::new(&contacts);
    group.bench_function("evaluate_rhai_only", |b| {
        b.iter(|| evaluate(&rhai_only, black_box(cycle.next())))
    });
    let mut cycle = Cycle::new(&payloads);
    let mut out = Vec::with_capacity(8192);
    group.bench_function("parse_score_serialize", |b| {
        b.iter(|| parse_score_serialize(&rules, black_box(cycle.next()), &mut out))
    });
    group.finish();
}

/// The mix as bodies of ten contacts each (its payloads are one-element
/// arrays: their insides joined by commas).
fn batches_of_ten(payloads: &[Vec<u8>]) -> Vec<Vec<u8>> {
    payloads
        .chunks(10)
        .map(|chunk| {
            let insides: Vec<&[u8]> = chunk
                .iter()
                .map(|p| {
                    p.trim_ascii()
                        .strip_prefix(b"[")
                        .and_then(|p| p.strip_suffix(b"]"))
                        .expect("an array")
                })
                .collect();
            [&b"["[..], &insides.join(&b","[..]), b"]"].concat()
        })
        .collect()
}

/// Counting mode (see the module documentation).
fn count(step: &str, passes: usize) {
    // Under valgrind the first contacts take longer than the default budget.
    let patient = Limits {
        timeout: Duration::from_secs(3600),
        ..Limits::default()
    };
    let (rules, payloads, contacts) = mix(&patient);
    let rhai_only = load_rules(&patient).interpreted_only();
    let mut out = Vec::with_capacity(8192);
    for _ in 0..passes {
        match step {
            "evaluate" => contacts.iter().for_each(|c| drop(black_box(evaluate(&rules, c)))),
            "evaluate_rhai_only" => contacts
                .iter()
                .for_each(|c| drop(black_box(evaluate(&rhai_only, c)))),
            "score" => contacts.iter().for_each(|c| drop(black_box(score(&rules, c)))),
            "evaluate_traced" => contacts
                .iter()
                .for_each(|c| drop(black_box(evaluate_traced(&rules, c)))),
            "evaluate_timed" => contacts
                .iter()
                .for_each(|c| drop(black_box(evaluate_timed(&rules, c)))),
            "ingest_scoring" => {
                telemetry::metrics_handle();
                contacts
                    .iter()
                    .for_each(|c| drop(black_box(ingest_scoring(&rules, c))));
            }
            "parse_score_serialize" => payloads
                .iter()
                .for_each(|p| parse_score_serialize(&rules, p, &mut out)),
            // The parse alone, one contact per body (iClosed's shape) and ten
            // per body: per contact the two should cost the same (BENCHMARKS.md,
            // session 13: no element is read twice).
            "parse" => payloads.iter().for_each(|p| drop(black_box(parse(p)))),
            "parse_batch" => batches_of_ten(&payloads)
                .iter()
                .for_each(|b| drop(black_box(parse(b)))),
            // What ingest adds per contact without a delivery id: the digest
            // of its canonical JSON (the idempotency key, SPEC 4.1). Under
            // valgrind, sha2 runs its portable code (valgrind hides the CPU's
            // SHA instructions, which the server uses): most of this count.
            "digest" => contacts
                .iter()
                .for_each(|c| drop(black_box(leadscore::ingest::idempotency_key(c, &c.key, None)))),
            other => {
                panic!(
                    "SCORING_COUNT={other}: evaluate, evaluate_rhai_only, score, parse_score_serialize, \
                     evaluate_traced, evaluate_timed, ingest_scoring, parse, parse_batch or digest"
                )
            }
        }
    }
}

criterion_group!(benches, bench_qualified, bench_mix);

fn main() {
    if let Ok(step) = std::env::var("SCORING_COUNT") {
        let passes = std::env::var("SCORING_PASSES").map_or(1, |n| n.parse().expect("SCORING_PASSES"));
        count(&step, passes);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
