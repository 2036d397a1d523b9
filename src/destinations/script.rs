//! The Rhai sandbox of destinations: `when` expressions and transform
//! scripts run under the rule limits (SPEC 2.3): operations, call and
//! expression depth, string, array and map sizes, and the CPU-time budget
//! of `--rule-timeout` (per run here, as per contact for the rules).
//!
//! Why an engine of its own and not the rules' one: the rule API (`add`,
//! `answer`, …) reads the thread's scoring state, which a destination run
//! does not have; and a `when` may name any field of the event, so
//! variables are not strict (an absent field is `()`, see [`super::select`]).
//! One engine serves every thread (`rhai` is built with `sync`).

use std::cell::RefCell;

use rhai::{AST, Dynamic, Engine, EvalAltResult, Position, Scope};
use serde_json::Value;

use crate::score::Limits;
use crate::score::budget::{Budget, Exhausted};
use crate::score::runtime::{describe_runtime_error, sandboxed_engine, with_position};

/// Why a run was stopped by `on_progress`: the token Rhai carries back.
const BUDGET_TOKEN: &str = "leadscore:destination-budget";

thread_local! {
    /// The budget of the run on this thread, and which limit ran out.
    static RUN_BUDGET: RefCell<Option<(Budget, Option<Exhausted>)>> = const { RefCell::new(None) };
}

/// The shared, sandboxed engine and the limits it enforces.
pub struct Sandbox {
    engine: Engine,
    limits: Limits,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("limits", &self.limits).finish()
    }
}

/// A compile error: the message and its place in the script text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptCompileError {
    pub message: String,
    /// 1-based line and column in the script text.
    pub line: usize,
    pub column: usize,
}

impl Sandbox {
    pub fn new(limits: &Limits) -> Self {
        let mut engine = sandboxed_engine(limits);
        engine.on_progress(|ops| {
            // Reading a clock every operation would cost more than the script.
            if ops % 512 != 0 {
                return None;
            }
            RUN_BUDGET.with(|run| {
                let mut run = run.borrow_mut();
                let (budget, exhausted) = run.as_mut()?;
                if exhausted.is_none() {
                    *exhausted = budget.exhausted();
                }
                exhausted.map(|_| Dynamic::from(BUDGET_TOKEN))
            })
        });
        engine.on_print(|text| tracing::debug!(target: "leadscore::destinations", "{text}"));
        engine.on_debug(|text, _, pos| {
            tracing::debug!(target: "leadscore::destinations", line = pos.line().unwrap_or(0), "{text}")
        });
        Self {
            engine,
            limits: limits.clone(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Compiles a single expression (`when`).
    pub fn compile_expression(&self, text: &str) -> Result<AST, ScriptCompileError> {
        self.engine.compile_expression(text).map_err(compile_error)
    }

    /// Compiles a script (a transform).
    pub fn compile_script(&self, text: &str) -> Result<AST, ScriptCompileError> {
        self.engine.compile(text).map_err(compile_error)
    }

    /// Runs a compiled script or expression with `scope` under the limits;
    /// a run-time error is described with its line and column.
    pub fn run(&self, ast: &AST, scope: &mut Scope) -> Result<Dynamic, String> {
        RUN_BUDGET.with(|run| *run.borrow_mut() = Some((Budget::start(&self.limits), None)));
        let result = self.engine.eval_ast_with_scope::<Dynamic>(scope, ast);
        let exhausted = RUN_BUDGET
            .with(|run| run.borrow_mut().take())
            .and_then(|(_, why)| why);
        result.map_err(|error| match (*error, exhausted) {
            (EvalAltResult::ErrorTerminated(_, pos), Some(why)) => {
                with_position(format!("stopped: {}", why.describe(&self.limits)), pos)
            }
            (error, _) => describe_runtime_error(&error, &self.limits),
        })
    }
}

fn compile_error(error: rhai::ParseError) -> ScriptCompileError {
    let position: Position = error.1;
    let mut message = error.0.to_string();
    // Rhai may append its own " (line L, position C)"; the caller places it.
    if let Some(cut) = message.rfind(" (line ") {
        message.truncate(cut);
    }
    ScriptCompileError {
        message,
        line: position.line().unwrap_or(1),
        column: position.position().unwrap_or(1),
    }
}

/// A script's value as JSON: maps, arrays, strings, numbers, booleans and
/// `()` (null). Anything else (a timestamp, a blob, a function pointer, a
/// NaN) is an error naming its type.
pub fn to_json(value: &Dynamic) -> Result<Value, String> {
    if value.is_unit() {
        return Ok(Value::Null);
    }
    if let Ok(flag) = value.as_bool() {
        return Ok(Value::Bool(flag));
    }
    if let Ok(number) = value.as_int() {
        return Ok(Value::from(number));
    }
    if let Ok(number) = value.as_float() {
        return serde_json::Number::from_f64(number)
            .map(Value::Number)
            .ok_or_else(|| format!("{number} is not a number JSON can carry"));
    }
    if let Ok(character) = value.as_char() {
        return Ok(Value::String(character.to_string()));
    }
    if let Ok(text) = value.as_immutable_string_ref() {
        return Ok(Value::String(text.to_string()));
    }
    if let Ok(items) = value.as_array_ref() {
        return items
            .iter()
            .map(to_json)
            .collect::<Result<_, _>>()
            .map(Value::Array);
    }
    if let Ok(map) = value.as_map_ref() {
        let mut object = serde_json::Map::with_capacity(map.len());
        for (key, item) in map.iter() {
            object.insert(key.to_string(), to_json(item)?);
        }
        return Ok(Value::Object(object));
    }
    Err(format!(
        "a value of type {} cannot be sent as JSON",
        value.type_name()
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn scripts_run_under_the_operation_limit_and_the_cpu_budget() {
        let sandbox = Sandbox::new(&Limits {
            max_operations: 1_000,
            ..Limits::default()
        });
        let ast = sandbox.compile_script("let x = 0; loop { x += 1; }").unwrap();
        let error = sandbox.run(&ast, &mut Scope::new()).unwrap_err();
        assert!(error.starts_with("stopped: more than 1000 operations"), "{error}");

        let sandbox = Sandbox::new(&Limits {
            max_operations: u64::MAX,
            timeout: Duration::from_millis(20),
            ..Limits::default()
        });
        let ast = sandbox.compile_script("let x = 0; loop { x += 1; }").unwrap();
        let error = sandbox.run(&ast, &mut Scope::new()).unwrap_err();
        assert!(error.contains("CPU time budget of 20ms"), "{error}");
        // The next run on this thread starts with a fresh budget.
        let quick = sandbox.compile_expression("1 + 1").unwrap();
        assert_eq!(sandbox.run(&quick, &mut Scope::new()).unwrap().as_int(), Ok(2));
    }

    #[test]
    fn eval_is_not_available_and_compile_errors_have_a_place() {
        let sandbox = Sandbox::new(&Limits::default());
        let error = sandbox.compile_script("let a = 1;\neval(\"a\")").unwrap_err();
        assert_eq!(error.line, 2, "{error:?}");
        let error = sandbox.compile_expression("tier == ").unwrap_err();
        assert_eq!((error.line, error.column), (1, 9), "{error:?}");
        assert!(!error.message.contains("(line"), "{}", error.message);
    }

    #[test]
    fn values_become_json() {
        let sandbox = Sandbox::new(&Limits::default());
        let ast = sandbox
            .compile_expression(r#"#{a: [1, 2.5, "x", true, ()], b: #{c: 'z'}}"#)
            .unwrap();
        let value = sandbox.run(&ast, &mut Scope::new()).unwrap();
        assert_eq!(
            to_json(&value).unwrap(),
            serde_json::json!({"a": [1, 2.5, "x", true, null], "b": {"c": "z"}})
        );
        let ast = sandbox.compile_expression("timestamp()").unwrap();
        let value = sandbox.run(&ast, &mut Scope::new()).unwrap();
        assert!(to_json(&value).unwrap_err().contains("cannot be sent as JSON"));
    }
}
