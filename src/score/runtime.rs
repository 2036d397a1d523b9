//! The Rhai side of scoring: one configured [`Engine`] per rule set, the rule
//! API of SPEC section 2 registered on it, and the per-contact run state.
//!
//! Why a thread-local run state: the engine and the compiled rules are shared
//! by every scoring thread, but `answer()` or `add()` must reach the contact
//! being scored *now* on *this* thread. Scoring one contact is synchronous on
//! one thread, so the state is installed for the duration of one
//! [`RunGuard`] and helpers reach it without any locking or copying.

use std::any::TypeId;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rhai::{
    AST, ASTNode, Array, Caches, Dynamic, Engine, EvalAltResult, Expr, FLOAT, INT, ImmutableString, Map,
    NativeCallContext, Position, Scope, Stmt,
};
use serde_json::Value;

use super::budget::{Budget, Exhausted};
use super::context::{CallSummary, MAX_CALLS, ScoringContext};
use super::helpers::{self, Answers, Touch};
use super::rfc3339;
use super::trace::Lookup;
use crate::payload::{JsonNode, JsonTree};

/// Run-time limits of a rule (SPEC 2.3), documented in the README.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Operations per rule and contact (`--rule-max-operations`).
    pub max_operations: u64,
    /// Budget of the whole rule set per contact (`--rule-timeout`), in CPU
    /// time of the scoring thread: the same contact and rules give the same
    /// result however loaded the machine is (SPEC 2.3).
    pub timeout: Duration,
    /// The last-resort wall-clock guard, as a multiple of `timeout`: a rule
    /// set still running after `timeout × wall_clock_factor` of real time is
    /// stopped whatever CPU time it used (only a thread starved of a core for
    /// that long gets there).
    pub wall_clock_factor: u32,
    pub max_call_levels: usize,
    pub max_expr_depth: usize,
    pub max_function_expr_depth: usize,
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
    pub max_variables: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_operations: 1_000_000,
            timeout: Duration::from_millis(100),
            wall_clock_factor: 10,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_function_expr_depth: 32,
            max_string_size: 256 * 1024,
            max_array_size: 10_000,
            max_map_size: 10_000,
            max_variables: 1_000,
        }
    }
}

/// A point contribution: integer and float points are kept apart so that
/// the score stays an integer when every contribution is one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Points {
    Int(i64),
    Float(f64),
}

/// What one rule did for one contact; kept only if the rule finished.
#[derive(Debug, Default, Clone)]
pub(crate) struct RuleEffects {
    pub reasons: Vec<(Points, String)>,
    pub disqualifications: Vec<String>,
    pub tags: Vec<String>,
}

/// Rhai's function-resolution caches of a rule set, one per rule, kept from
/// one contact to the next.
///
/// Why: `Engine::run_ast_with_scope` starts every run with empty caches, so
/// each function call of each rule was resolved from scratch for every
/// contact (hashing name and argument types, searching the packages, trying
/// `Dynamic` wildcards): a sixth of the scoring time. What a call resolves to
/// depends only on the engine and the rule's AST, both fixed for the life of
/// a rule set, so the caches stay valid. A pool, not one set: any number of
/// threads may score with the same rule set at once.
#[derive(Default)]
pub(crate) struct CachePool(Mutex<Vec<Vec<Caches>>>);

impl CachePool {
    /// A set of caches, one per rule: used ones when there are.
    pub fn take(&self, rules: usize) -> Vec<Caches> {
        let pooled = self.0.lock().unwrap_or_else(PoisonError::into_inner).pop();
        pooled.unwrap_or_else(|| vec![Caches::new(); rules])
    }

    pub fn give_back(&self, caches: Vec<Caches>) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(caches);
    }
}

/// Runs a compiled rule as `Engine::run_ast_with_scope` does, but with the
/// rule's own caches (see [`CachePool`]). `source` is the AST's source.
pub(crate) fn run_rule(
    engine: &Engine,
    scope: &mut Scope,
    ast: &AST,
    source: &ImmutableString,
    caches: &mut Caches,
) -> RhaiResult<()> {
    let mut global = engine.new_global_runtime_state();
    global.source = Some(source.clone());
    global.lib.push(ast.shared_lib().clone());
    // Deprecated, but the only entry point that takes the caches; it is what
    // `run_ast_with_scope` runs after setting up the same state as above.
    #[allow(deprecated)]
    let result = engine.eval_statements_raw(&mut global, caches, scope, ast.statements());
    result.map(drop)
}

/// Per-contact, per-thread state the registered functions read and write.
struct RunState {
    contact: Arc<JsonTree>,
    /// The contact's `id`, formatted only when a rule logs.
    contact_id: Value,
    rule: Arc<str>,
    budget: Budget,
    /// Set once a limit of the budget has run out: the rest of the contact's
    /// rules do not run.
    exhausted: Option<Exhausted>,
    answers: Option<Answers>,
    email_domain: Option<ImmutableString>,
    /// The scoring time in unix ms, and as `now()` writes it (on first use).
    now_ms: i64,
    now_text: Option<ImmutableString>,
    /// The contact's first receive time in unix ms, when known.
    first_seen_ms: Option<i64>,
    /// The newest [`MAX_CALLS`] calls, newest first.
    calls: Vec<CallSummary>,
    effects: RuleEffects,
    /// The current rule's lookups, when a trace is asked for.
    lookups: Option<Vec<Lookup>>,
    /// Lines of the current rule's `add`/`disqualify`/`tag` calls that ran,
    /// when coverage is asked for (Rhai's calls only carry a position).
    effect_lines: Option<Vec<usize>>,
}

thread_local! {
    static RUN: RefCell<Option<RunState>> = const { RefCell::new(None) };
}

/// Installs the run state of one contact on this thread; removes it on drop
/// so that a panic or early return never leaks one contact into the next.
pub(crate) struct RunGuard(());

impl RunGuard {
    pub fn install(contact: Arc<JsonTree>, contact_id: Value, budget: Budget, at: &ScoringContext) -> Self {
        RUN.with(|run| {
            *run.borrow_mut() = Some(RunState {
                contact,
                contact_id,
                rule: Arc::from(""),
                budget,
                exhausted: None,
                answers: None,
                email_domain: None,
                now_ms: rfc3339::unix_millis(at.now),
                now_text: None,
                first_seen_ms: at.first_seen.map(rfc3339::unix_millis),
                calls: at.calls.iter().take(MAX_CALLS).cloned().collect(),
                effects: RuleEffects::default(),
                lookups: None,
                effect_lines: None,
            })
        });
        RunGuard(())
    }

    /// Records the lookups of each rule from now on (a trace).
    pub fn record_lookups(&self) {
        with_state(|s| s.lookups = Some(Vec::new()));
    }

    /// Records the lines of the effect calls of each rule from now on (coverage).
    pub fn record_effect_lines(&self) {
        with_state(|s| s.effect_lines = Some(Vec::new()));
    }

    /// Starts a rule: clears the effects (and what is recorded) of the
    /// previous one, or of a native run that gave up.
    pub fn begin_rule(&self, rule: &Arc<str>) {
        with_state(|s| {
            s.rule = rule.clone();
            s.effects = RuleEffects::default();
            if let Some(lookups) = s.lookups.as_mut() {
                lookups.clear();
            }
            if let Some(lines) = s.effect_lines.as_mut() {
                lines.clear();
            }
        });
    }

    /// The current rule's lookups (empty unless recorded).
    pub fn take_lookups(&self) -> Vec<Lookup> {
        with_state(|s| s.lookups.as_mut().map(std::mem::take))
            .flatten()
            .unwrap_or_default()
    }

    /// The current rule's effect lines (empty unless recorded).
    pub fn take_effect_lines(&self) -> Vec<usize> {
        with_state(|s| s.effect_lines.as_mut().map(std::mem::take))
            .flatten()
            .unwrap_or_default()
    }

    pub fn take_effects(&self) -> RuleEffects {
        with_state(|s| std::mem::take(&mut s.effects)).unwrap_or_default()
    }

    /// Which limit of the contact's budget has run out, if one has.
    pub fn exhausted(&self) -> Option<Exhausted> {
        with_state(check_budget).flatten()
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        RUN.with(|run| run.borrow_mut().take());
    }
}

fn with_state<R>(f: impl FnOnce(&mut RunState) -> R) -> Option<R> {
    RUN.with(|run| run.borrow_mut().as_mut().map(f))
}

fn check_budget(state: &mut RunState) -> Option<Exhausted> {
    if state.exhausted.is_none() {
        state.exhausted = state.budget.exhausted();
    }
    state.exhausted
}

pub(crate) type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

fn outside_scoring() -> Box<EvalAltResult> {
    "this function can only be called while a contact is scored".into()
}

fn read<R>(f: impl FnOnce(&mut RunState) -> R) -> RhaiResult<R> {
    with_state(f).ok_or_else(outside_scoring)
}

fn answers(state: &mut RunState) -> &Answers {
    let contact = &state.contact;
    state
        .answers
        .get_or_insert_with(|| Answers::from_contact(contact.root()))
}

fn email_domain(state: &mut RunState) -> &ImmutableString {
    let contact = &state.contact;
    state
        .email_domain
        .get_or_insert_with(|| helpers::email_domain(contact.root()).into())
}

/// The contact id as logs show it: strings without quotes.
fn id_text(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The text of a value given as a reason or label: strings as they are,
/// anything else printed.
fn text_of(value: &Dynamic) -> String {
    match value.clone().into_immutable_string() {
        Ok(s) => s.as_str().to_owned(), // not `to_string()`: that formats
        Err(_) => value.to_string(),
    }
}

fn push_reason(points: Points, reason: &Dynamic, at: Position) -> RhaiResult<()> {
    let reason = text_of(reason);
    read(|s| {
        note_effect_line(s, at);
        s.effects.reasons.push((points, reason))
    })
}

fn note_effect_line(state: &mut RunState, at: Position) {
    if let (Some(lines), Some(line)) = (state.effect_lines.as_mut(), at.line()) {
        lines.push(line);
    }
}

/// What a rule reads of the `contact` variable, found in its compiled AST.
///
/// Why: converting the whole contact into a Rhai map (every field, nested
/// maps and strings) cost more than running the rules themselves, while rules
/// typically read one or two fields (`contact.latestCall`). When every use of
/// `contact` in a rule set is a read of a named field, only those fields are
/// converted; the map then lacks the other keys, which a field read cannot
/// tell apart (a missing key reads as `()` either way). Any other use — the
/// map itself (`let c = contact`, `contact.keys()`, `print(contact)`,
/// `"x" in contact`) or a computed index — converts the whole contact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum ContactUse {
    #[default]
    None,
    /// Only `contact.NAME` and `contact["NAME"]`: the top-level fields read.
    Fields(BTreeSet<String>),
    Whole,
}

impl ContactUse {
    /// The uses of the variable `contact` in a compiled rule (function
    /// bodies included).
    pub fn of(ast: &AST) -> Self {
        let mut fields = BTreeSet::new();
        let complete = ast.walk(&mut |path: &[ASTNode]| match path {
            // `AST::walk` does not visit the value of `break value`: be safe.
            [.., ASTNode::Stmt(Stmt::BreakLoop(Some(_), ..))] => false,
            [.., node @ ASTNode::Expr(expr)] if is_contact_variable(expr) => {
                let parent = path.len().checked_sub(2).map(|i| &path[i]);
                match parent.and_then(|parent| field_read(parent, node)) {
                    Some(field) => {
                        fields.insert(field.to_owned());
                        true
                    }
                    None => false, // stops the walk: the whole contact
                }
            }
            _ => true,
        });
        match (complete, fields.is_empty()) {
            (false, _) => Self::Whole,
            (true, true) => Self::None,
            (true, false) => Self::Fields(fields),
        }
    }

    /// The use of a whole rule set.
    pub fn union(self, other: Self) -> Self {
        match (self, other) {
            (Self::Whole, _) | (_, Self::Whole) => Self::Whole,
            (Self::None, other) | (other, Self::None) => other,
            (Self::Fields(mut mine), Self::Fields(theirs)) => {
                mine.extend(theirs);
                Self::Fields(mine)
            }
        }
    }

    /// The `contact` the rules get, or `None` when no rule reads it.
    pub fn contact(&self, contact: JsonNode<'_>) -> Option<Dynamic> {
        match self {
            Self::None => None,
            Self::Fields(fields) if contact.is_object() => Some(Dynamic::from_map(
                fields
                    .iter()
                    .filter_map(|name| Some((name.as_str().into(), node_to_dynamic(contact.get(name)?))))
                    .collect(),
            )),
            _ => Some(node_to_dynamic(contact)),
        }
    }
}

fn is_contact_variable(expr: &Expr) -> bool {
    matches!(expr, Expr::Variable(x, ..) if x.1 == "contact")
}

/// The field read when `node` (the variable) is the object of `parent`:
/// `contact.NAME…` or `contact["NAME"]…`.
fn field_read<'a>(parent: &'a ASTNode, node: &ASTNode) -> Option<&'a str> {
    let is_node = |lhs: &Expr| matches!(node, ASTNode::Expr(e) if std::ptr::eq(*e, lhs));
    match parent {
        ASTNode::Expr(Expr::Dot(x, ..)) if is_node(&x.lhs) => match first_link(&x.rhs) {
            Expr::Property(p, _) => Some(p.2.as_str()),
            _ => None,
        },
        ASTNode::Expr(Expr::Index(x, ..)) if is_node(&x.lhs) => match first_link(&x.rhs) {
            Expr::StringConstant(name, _) => Some(name.as_str()),
            _ => None,
        },
        _ => None,
    }
}

/// The first link of a chain's right-hand side: `a` of `a.b[c]`.
fn first_link(mut expr: &Expr) -> &Expr {
    while let Expr::Dot(x, ..) | Expr::Index(x, ..) = expr {
        expr = &x.lhs;
    }
    expr
}

/// Converts a JSON value into a Rhai value (objects become maps, null `()`).
pub fn to_dynamic(value: &Value) -> Dynamic {
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Dynamic::from(ImmutableString::from(s.as_str())),
        Value::Array(items) => Dynamic::from_array(items.iter().map(to_dynamic).collect()),
        Value::Object(map) => Dynamic::from_map(
            map.iter()
                .map(|(k, v)| (k.as_str().into(), to_dynamic(v)))
                .collect::<Map>(),
        ),
    }
}

/// [`to_dynamic`] of a value in a parsed tree (the contact).
pub fn node_to_dynamic(value: JsonNode<'_>) -> Dynamic {
    if let Some(members) = value.members() {
        Dynamic::from_map(
            members
                .map(|(k, v)| (k.into(), node_to_dynamic(v)))
                .collect::<Map>(),
        )
    } else if let Some(items) = value.items() {
        Dynamic::from_array(items.map(node_to_dynamic).collect())
    } else if let Some(s) = value.as_str() {
        Dynamic::from(ImmutableString::from(s))
    } else if let Some(n) = value.as_number() {
        match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN)),
        }
    } else if let Some(b) = value.as_bool() {
        Dynamic::from_bool(b)
    } else {
        Dynamic::UNIT
    }
}

/// Why a run stopped when `on_progress` terminated it: the CPU budget or
/// the wall-clock guard.
const CPU_BUDGET_TOKEN: &str = "leadscore:cpu-budget";
const WALL_CLOCK_TOKEN: &str = "leadscore:wall-clock";

/// An engine with the sandbox of rules and nothing registered: no `eval`,
/// no `import`, and the limits of SPEC 2.3 but the time budget (which
/// needs the caller's `on_progress`). Destination scripts use it too.
pub fn sandboxed_engine(limits: &Limits) -> Engine {
    let mut engine = Engine::new();
    // `no_module` (Cargo feature) removes `import`; `eval` could run code
    // the compile-time checks never saw.
    engine.disable_symbol("eval");
    engine.set_max_operations(limits.max_operations);
    engine.set_max_call_levels(limits.max_call_levels);
    engine.set_max_expr_depths(limits.max_expr_depth, limits.max_function_expr_depth);
    engine.set_max_string_size(limits.max_string_size);
    engine.set_max_array_size(limits.max_array_size);
    engine.set_max_map_size(limits.max_map_size);
    engine.set_max_variables(limits.max_variables);
    engine
}

/// Builds the sandboxed engine with the rule API registered.
pub fn build_engine(limits: &Limits) -> Engine {
    let mut engine = sandboxed_engine(limits);
    engine.set_strict_variables(true);
    engine.on_progress(|ops| {
        // Reading a clock every operation would cost more than the rules.
        if ops % 512 != 0 {
            return None;
        }
        with_state(check_budget).flatten().map(|why| {
            Dynamic::from(match why {
                Exhausted::Cpu => CPU_BUDGET_TOKEN,
                Exhausted::WallClock => WALL_CLOCK_TOKEN,
            })
        })
    });
    engine.on_print(|text| {
        with_state(|s| tracing::debug!(contact_id = %id_text(&s.contact_id), rule = %s.rule, "{text}"));
    });
    engine.on_debug(|text, _source, pos| {
        with_state(|s| {
            tracing::debug!(contact_id = %id_text(&s.contact_id), rule = %s.rule, line = pos.line().unwrap_or(0), "{text}")
        });
    });
    register_read_api(&mut engine);
    register_write_api(&mut engine);
    register_fast_paths(&mut engine);
    engine
}

/// Faster equivalents of standard-library functions, registered over them
/// (a registered function with exact parameter types is found before the
/// standard one, which takes a `Dynamic`).
fn register_fast_paths(engine: &mut Engine) {
    // `array.contains(text)`, also `text in array`: the standard version
    // calls `==` for each element through a fresh native-call context, which
    // resolves `==` from scratch every time (a tenth of the scoring time of a
    // rule like `["ceo", "cto"].contains(role)`). String elements are
    // compared directly, as the built-in `==` does (this engine overloads no
    // `==`); any other element goes the standard way, same error handling.
    engine.register_fn(
        "contains",
        |ctx: NativeCallContext, array: &mut Array, value: ImmutableString| -> RhaiResult<bool> {
            for item in array.iter_mut() {
                let equal = if item.is_string() {
                    item.as_immutable_string_ref().is_ok_and(|text| *text == value)
                } else {
                    ctx.call_native_fn_raw("==", true, &mut [item, &mut value.clone().into()])
                        .or_else(|err| match *err {
                            EvalAltResult::ErrorFunctionNotFound(ref signature, ..)
                                if signature.starts_with("==") =>
                            {
                                if item.type_id() == TypeId::of::<ImmutableString>() {
                                    Err(err) // as the standard version: no default for the same type
                                } else {
                                    Ok(Dynamic::FALSE)
                                }
                            }
                            _ => Err(err),
                        })?
                        .as_bool()
                        .unwrap_or(false)
                };
                if equal {
                    return Ok(true);
                }
            }
            Ok(false)
        },
    );
}

// The rule API, shared by the registered functions and the native path
// (native.rs), so that both read and write the same run state the same way.

pub(crate) fn api_answer(q: &str) -> RhaiResult<ImmutableString> {
    // Rhai's own string type: a `String` would be copied once more into one.
    read(|s| {
        if s.lookups.is_none() {
            return answers(s).answer(q).into();
        }
        let found = answers(s).lookup(q);
        let response = ImmutableString::from(found.response);
        let lookup = Lookup::answer("answer", q, &found, response.as_str().into());
        s.lookups.get_or_insert_default().push(lookup);
        response
    })
}

pub(crate) fn api_has_answer(q: &str) -> RhaiResult<bool> {
    read(|s| {
        if s.lookups.is_none() {
            return !answers(s).answer(q).is_empty();
        }
        let found = answers(s).lookup(q);
        let has = !found.response.is_empty();
        let lookup = Lookup::answer("has_answer", q, &found, has.into());
        s.lookups.get_or_insert_default().push(lookup);
        has
    })
}

pub(crate) fn api_utm(name: &str) -> RhaiResult<ImmutableString> {
    read(|s| tracking_value(s, "utm", name, Touch::Current))
}

pub(crate) fn api_first_utm(name: &str) -> RhaiResult<ImmutableString> {
    read(|s| tracking_value(s, "first_utm", name, Touch::First))
}

fn tracking_value(state: &mut RunState, function: &str, name: &str, touch: Touch) -> ImmutableString {
    let Some(lookups) = state.lookups.as_mut() else {
        return helpers::utm_text(state.contact.root(), name, touch)
            .as_ref()
            .into();
    };
    let found = helpers::utm_lookup(state.contact.root(), name, touch);
    let found = found.as_ref().map(|(key, value)| (*key, value.as_ref()));
    lookups.push(Lookup::tracking(function, name, found));
    found.map_or("", |(_, value)| value).into()
}

pub(crate) fn api_email_domain() -> RhaiResult<ImmutableString> {
    read(|s| email_domain(s).clone())
}

pub(crate) fn api_is_free_email() -> RhaiResult<bool> {
    read(|s| helpers::is_free_email_domain(email_domain(s)))
}

/// `now()`: the scoring time (SPEC 12).
pub(crate) fn api_now() -> RhaiResult<ImmutableString> {
    read(|s| {
        let now_ms = s.now_ms;
        s.now_text
            .get_or_insert_with(|| rfc3339::format_millis(now_ms).into())
            .clone()
    })
}

/// `days_since(t)`: days from the time `t` to the scoring time; `()` when
/// `t` is not RFC 3339 text.
pub(crate) fn api_days_since(t: &Dynamic) -> RhaiResult<Dynamic> {
    let nanos = match t.clone().into_immutable_string() {
        Ok(text) => rfc3339::parse_nanos(&text),
        Err(_) => None,
    };
    read(|s| {
        nanos.map_or(Dynamic::UNIT, |nanos| {
            Dynamic::from_float(rfc3339::days_between(nanos, s.now_ms))
        })
    })
}

/// `first_seen()`: when the contact's first event was received; `()` when unknown.
pub(crate) fn api_first_seen() -> RhaiResult<Dynamic> {
    read(|s| {
        s.first_seen_ms.map_or(Dynamic::UNIT, |ms| {
            ImmutableString::from(rfc3339::format_millis(ms)).into()
        })
    })
}

/// `calls()`: the contact's calls, newest first, as maps.
pub(crate) fn api_calls() -> RhaiResult<Array> {
    let text = |value: &Option<String>| {
        value
            .as_deref()
            .map_or(Dynamic::UNIT, |v| ImmutableString::from(v).into())
    };
    read(|s| {
        s.calls
            .iter()
            .map(|call| {
                let mut map = Map::new();
                map.insert(
                    "status".into(),
                    ImmutableString::from(call.status.as_str()).into(),
                );
                map.insert("start_time".into(), text(&call.start_time));
                map.insert("event_type".into(), text(&call.event_type));
                Dynamic::from_map(map)
            })
            .collect()
    })
}

pub(crate) fn api_iclosed_disqualified() -> RhaiResult<bool> {
    read(|s| helpers::iclosed_disqualified(s.contact.root()))
}

pub(crate) fn api_disqualifying_groups() -> RhaiResult<Array> {
    read(|s| {
        helpers::disqualifying_groups(s.contact.root())
            .into_iter()
            .map(node_to_dynamic)
            .collect()
    })
}

/// `add`, `disqualify` and `tag` take the call's position (`Position::NONE`
/// from the native path): coverage lists the calls no test reached.
pub(crate) fn api_add(points: Points, reason: &Dynamic, at: Position) -> RhaiResult<()> {
    push_reason(points, reason, at)
}

pub(crate) fn api_disqualify(reason: &Dynamic, at: Position) -> RhaiResult<()> {
    let reason = text_of(reason);
    read(|s| {
        note_effect_line(s, at);
        s.effects.disqualifications.push(reason)
    })
}

pub(crate) fn api_tag(label: &Dynamic, at: Position) -> RhaiResult<()> {
    let label = text_of(label);
    read(|s| {
        note_effect_line(s, at);
        if !s.effects.tags.contains(&label) {
            s.effects.tags.push(label);
        }
    })
}

fn register_read_api(engine: &mut Engine) {
    engine.register_fn("answer", api_answer);
    engine.register_fn("has_answer", api_has_answer);
    engine.register_fn("answers", || -> RhaiResult<Map> {
        read(|s| {
            let mut map = Map::new();
            for entry in answers(s).entries() {
                map.entry(entry.question.into())
                    .or_insert_with(|| ImmutableString::from(entry.response).into());
            }
            map
        })
    });
    engine.register_fn("utm", api_utm);
    engine.register_fn("first_utm", api_first_utm);
    engine.register_fn("email_domain", api_email_domain);
    engine.register_fn("is_free_email", api_is_free_email);
    engine.register_fn("parse_number", |text: &str| -> Dynamic {
        helpers::parse_number(text).map_or(Dynamic::UNIT, Dynamic::from_float)
    });
    engine.register_fn("parse_number", |n: INT| -> FLOAT { n as FLOAT });
    engine.register_fn("parse_number", |n: FLOAT| -> FLOAT { n });
    engine.register_fn("parse_number", |_: ()| -> Dynamic { Dynamic::UNIT });
    engine.register_fn("iclosed_disqualified", api_iclosed_disqualified);
    engine.register_fn("disqualifying_groups", api_disqualifying_groups);
    engine.register_fn("now", api_now);
    engine.register_fn("days_since", |t: Dynamic| api_days_since(&t));
    engine.register_fn("first_seen", api_first_seen);
    engine.register_fn("calls", api_calls);
}

fn register_write_api(engine: &mut Engine) {
    engine.register_fn(
        "add",
        |ctx: NativeCallContext, points: INT, reason: Dynamic| -> RhaiResult<()> {
            api_add(Points::Int(points), &reason, ctx.call_position())
        },
    );
    engine.register_fn(
        "add",
        |ctx: NativeCallContext, points: FLOAT, reason: Dynamic| -> RhaiResult<()> {
            if !points.is_finite() {
                return Err(format!("add: points must be a finite number, got {points}").into());
            }
            api_add(Points::Float(points), &reason, ctx.call_position())
        },
    );
    engine.register_fn(
        "disqualify",
        |ctx: NativeCallContext, reason: Dynamic| -> RhaiResult<()> {
            api_disqualify(&reason, ctx.call_position())
        },
    );
    engine.register_fn(
        "tag",
        |ctx: NativeCallContext, label: Dynamic| -> RhaiResult<()> { api_tag(&label, ctx.call_position()) },
    );
}

/// A run-time error as shown in a result's `errors`: the message and where
/// in the rule file it happened.
pub fn describe_runtime_error(error: &EvalAltResult, limits: &Limits) -> String {
    let message = match error {
        EvalAltResult::ErrorTerminated(token, _) if token.to_string() == CPU_BUDGET_TOKEN => {
            format!("stopped: {}", Exhausted::Cpu.describe(limits))
        }
        EvalAltResult::ErrorTerminated(token, _) if token.to_string() == WALL_CLOCK_TOKEN => {
            format!("stopped: {}", Exhausted::WallClock.describe(limits))
        }
        EvalAltResult::ErrorTooManyOperations(_) => format!(
            "stopped: more than {} operations (--rule-max-operations)",
            limits.max_operations
        ),
        other => {
            let mut text = other.to_string();
            // Rhai appends its own " (line L, position C)"; ours follows.
            if let Some(cut) = text.rfind(" (line ") {
                text.truncate(cut);
            }
            text
        }
    };
    with_position(message, error.position())
}

pub fn with_position(message: String, pos: Position) -> String {
    match (pos.line(), pos.position()) {
        (Some(line), Some(column)) => format!("{message} (line {line}, column {column})"),
        (Some(line), None) => format!("{message} (line {line})"),
        _ => message,
    }
}

#[cfg(test)]
mod tests {
    use rhai::Scope;
    use serde_json::json;

    use super::*;

    fn contact_use(script: &str) -> ContactUse {
        let engine = build_engine(&Limits::default());
        let mut scope = Scope::new();
        scope.push_dynamic("contact", Dynamic::UNIT);
        let ast = engine.compile_with_scope(&scope, script).unwrap();
        ContactUse::of(&ast)
    }

    fn fields(names: &[&str]) -> ContactUse {
        ContactUse::Fields(names.iter().map(|n| n.to_string()).collect())
    }

    #[test]
    fn field_reads_convert_only_those_fields() {
        let call = "let b = contact.latestCall; if b != () && b.dateTime != () { add(1, \"x\") }";
        assert_eq!(contact_use(call), fields(&["latestCall"]));
        assert_eq!(
            contact_use("contact.latestCall.user.email"),
            fields(&["latestCall"])
        );
        assert_eq!(
            contact_use("contact.tracking.utm_source.to_lower()"),
            fields(&["tracking"])
        );
        assert_eq!(contact_use("contact[\"tracking\"][\"a\"]"), fields(&["tracking"]));
        assert_eq!(contact_use("contact?.email ?? \"\""), fields(&["email"]));
        assert_eq!(contact_use("contact.a.len() + contact.b[0]"), fields(&["a", "b"]));
        assert_eq!(contact_use("// contact.a\nanswer(\"contact\")"), ContactUse::None);
    }

    #[test]
    fn any_other_use_converts_the_whole_contact() {
        for script in [
            "let c = contact;",
            "contact.keys()",
            "contact.len()",
            "print(contact)",
            "type_of(contact)",
            "\"id\" in contact",
            "let k = \"id\"; contact[k]",
            "contact[contact.a]",
            "`${contact}`",
            "let x = loop { break contact; };",
            "let f = || contact.id; f.call()",
            "contact.a; let c = contact;",
        ] {
            assert_eq!(contact_use(script), ContactUse::Whole, "{script}");
        }
        assert_eq!(fields(&["a"]).union(ContactUse::Whole), ContactUse::Whole);
        assert_eq!(ContactUse::None.union(fields(&["a"])), fields(&["a"]));
        assert_eq!(fields(&["a"]).union(fields(&["b"])), fields(&["a", "b"]));
    }

    #[test]
    fn array_contains_text_agrees_with_the_standard_library() {
        let ours = build_engine(&Limits::default());
        let standard = Engine::new();
        for script in [
            r#"["a", "b"].contains("b")"#,
            r#"["a", "b"].contains("B")"#,
            r#"[].contains("")"#,
            r#"["a", 1, (), 2.5, true].contains("1")"#,
            r#"[1, 2].contains("x")"#,
            r#""b" in ["a", "b"]"#,
            r#"['b', "c"].contains("b")"#,
            r#"[[1], #{a: 1}, "x"].contains("x")"#,
            r#"const A = ["x", "y"]; A.contains("y")"#,
            r#"let s = "x"; let f = || s; [s].contains("x")"#,
            r#"let t = "x"; [t + "y"].contains("xy")"#,
        ] {
            let expected = standard.eval::<bool>(script).unwrap();
            assert_eq!(ours.eval::<bool>(script).unwrap(), expected, "{script}");
        }
    }

    #[test]
    fn field_conversion_keeps_only_the_fields_read() {
        let contact = JsonTree::from_value(
            &json!({"id": 1, "latestCall": {"dateTime": "t", "user": null}, "email": "a@b.c"}),
        );
        let contact = contact.root();
        let map = fields(&["latestCall", "missing"])
            .contact(contact)
            .unwrap()
            .cast::<Map>();
        assert_eq!(map.len(), 1);
        let call = map["latestCall"].clone().cast::<Map>();
        assert_eq!(call["dateTime"].clone().into_string().unwrap(), "t");
        assert!(call["user"].is_unit());
        assert_eq!(ContactUse::Whole.contact(contact).unwrap().cast::<Map>().len(), 3);
        assert!(ContactUse::None.contact(contact).is_none());
    }
}
