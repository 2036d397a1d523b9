//! The rule API calls written in a rule file, found in its compiled AST:
//! the question texts and tracking names given as constants (lint checks
//! them against stored contacts) and the `add`/`disqualify`/`tag` calls
//! (coverage lists those no test reached). Calls whose argument is not a
//! constant text are listed without one: nothing can be checked before
//! the rule runs. Also whether a rule reads the contact's history
//! (`calls()`, `first_seen()`), so that scoring can skip looking it up.

use rhai::{AST, ASTNode, Dynamic, Expr, Stmt};

/// The reading functions whose argument names something of the contact.
pub const LOOKUP_FUNCTIONS: &[&str] = &["answer", "has_answer", "utm", "first_utm"];

/// The functions through which a rule has an effect.
pub const EFFECT_FUNCTIONS: &[&str] = &["add", "disqualify", "tag"];

/// The functions that read the contact's stored history (SPEC 12).
pub const HISTORY_FUNCTIONS: &[&str] = &["calls", "first_seen"];

/// One call in a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCall {
    pub rule: String,
    pub function: &'static str,
    /// The first argument when it is a constant text.
    pub text: Option<String>,
    pub line: usize,
}

/// The lookup and effect calls of one compiled rule, in source order.
pub fn of(rule: &str, ast: &AST) -> Vec<RuleCall> {
    let own: Vec<&str> = ast.iter_functions().map(|f| f.name).collect();
    let mut calls = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        // A call that is a statement of its own is a `Stmt::FnCall`.
        let call = match path.last() {
            Some(ASTNode::Expr(Expr::FnCall(call, pos)) | ASTNode::Stmt(Stmt::FnCall(call, pos))) => {
                Some((call, pos))
            }
            _ => None,
        };
        if let Some((call, pos)) = call {
            let known = LOOKUP_FUNCTIONS
                .iter()
                .chain(EFFECT_FUNCTIONS)
                .find(|name| **name == call.name.as_str());
            // A function of the rule's own with the same name is not the API.
            if let Some(function) = known.filter(|name| !own.contains(name)) {
                let text = match call.args.first() {
                    Some(Expr::StringConstant(text, _)) => Some(text.to_string()),
                    _ => None,
                };
                calls.push(RuleCall {
                    rule: rule.to_owned(),
                    function,
                    text,
                    line: pos.line().unwrap_or(0),
                });
            }
        }
        true
    });
    calls.sort_by_key(|call| call.line);
    calls
}

/// What a rule reads of the contact's history (SPEC 12).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryUse {
    /// It may call `calls()`.
    pub calls: bool,
    /// It may call `first_seen()`.
    pub first_seen: bool,
}

impl HistoryUse {
    const ALL: Self = Self {
        calls: true,
        first_seen: true,
    };

    pub fn any(self) -> bool {
        self.calls || self.first_seen
    }

    pub fn union(self, other: Self) -> Self {
        Self {
            calls: self.calls || other.calls,
            first_seen: self.first_seen || other.first_seen,
        }
    }

    fn of_name(name: &str) -> Self {
        Self {
            calls: name == "calls",
            first_seen: name == "first_seen",
        }
    }
}

/// What a compiled rule may read of the contact's history, from its code:
/// calls of `calls()` and `first_seen()` (function bodies and closures
/// included; not a function of the rule's own of that name), and function
/// pointers to them. A function pointer whose name is computed (`Fn(x)`)
/// could be either: it counts as both, so the answer errs on the safe side.
pub fn history_use(ast: &AST) -> HistoryUse {
    // A rule's own function shadows the API only with the same arity (0).
    let own: Vec<&str> = ast
        .iter_functions()
        .filter(|f| f.params.is_empty())
        .map(|f| f.name)
        .collect();
    let api = |name: &str| match own.contains(&name) {
        true => HistoryUse::default(),
        false => HistoryUse::of_name(name),
    };
    let mut found = HistoryUse::default();
    ast.walk(&mut |path: &[ASTNode]| {
        let used = match path.last() {
            Some(ASTNode::Expr(Expr::FnCall(call, _)) | ASTNode::Stmt(Stmt::FnCall(call, _))) => {
                match (call.name.as_str(), call.args.first()) {
                    ("Fn", Some(Expr::StringConstant(name, _))) => HistoryUse::of_name(name),
                    ("Fn", _) => HistoryUse::ALL,
                    (name, _) => api(name),
                }
            }
            Some(ASTNode::Expr(Expr::DynamicConstant(value, _))) => pointed_to(value),
            _ => HistoryUse::default(),
        };
        found = found.union(used);
        found != HistoryUse::ALL // nothing more to learn
    });
    found
}

/// The history functions a constant points to (a `Fn("calls")` the
/// optimizer folded, possibly inside an array or map constant).
fn pointed_to(value: &Dynamic) -> HistoryUse {
    if let Some(pointer) = value.read_lock::<rhai::FnPtr>() {
        return HistoryUse::of_name(pointer.fn_name());
    }
    if let Some(array) = value.read_lock::<rhai::Array>() {
        return array
            .iter()
            .fold(HistoryUse::default(), |all, v| all.union(pointed_to(v)));
    }
    if let Some(map) = value.read_lock::<rhai::Map>() {
        return map
            .values()
            .fold(HistoryUse::default(), |all, v| all.union(pointed_to(v)));
    }
    HistoryUse::default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::runtime::{Limits, build_engine};

    fn history(script: &str) -> HistoryUse {
        let engine = build_engine(&Limits::default());
        let mut scope = rhai::Scope::new();
        scope.push_dynamic("contact", Dynamic::UNIT);
        let ast = engine
            .compile_with_scope(&scope, script)
            .unwrap_or_else(|e| panic!("{script}: {e}"));
        history_use(&ast)
    }

    const CALLS: HistoryUse = HistoryUse {
        calls: true,
        first_seen: false,
    };
    const FIRST_SEEN: HistoryUse = HistoryUse {
        calls: false,
        first_seen: true,
    };

    #[test]
    fn direct_calls_are_found_wherever_they_are() {
        assert_eq!(history(r#"if calls().len() > 0 { add(1, "c") }"#), CALLS);
        assert_eq!(history("let d = days_since(first_seen());"), FIRST_SEEN);
        assert_eq!(history("calls(); first_seen();"), HistoryUse::ALL);
        assert_eq!(history("fn f() { calls() } f()"), CALLS);
        assert_eq!(history("let f = || first_seen(); f.call()"), FIRST_SEEN);
        assert_eq!(history("for c in calls() { add(1, c.status) }"), CALLS);
        assert_eq!(history(r#"let x = #{a: [calls()]};"#), CALLS);
    }

    #[test]
    fn function_pointers_count_and_computed_ones_count_as_both() {
        assert_eq!(history(r#"let f = Fn("calls"); f.call()"#), CALLS);
        assert_eq!(history(r#"let f = [Fn("first_seen")]; f[0].call()"#), FIRST_SEEN);
        assert_eq!(history(r#"call(Fn("calls"))"#), CALLS);
        assert_eq!(history(r#"let n = "calls"; Fn(n).call()"#), HistoryUse::ALL);
        assert_eq!(history(r#"Fn(answer("which")).call()"#), HistoryUse::ALL);
        // The optimizer folds a constant name into a pointer: known.
        assert_eq!(history(r#"Fn("cal" + "ls").call()"#), CALLS);
    }

    #[test]
    fn other_functions_and_a_rule_of_its_own_do_not_count() {
        for script in [
            r#"add(1, "x")"#,
            r#"let t = now(); let d = days_since("2026-01-01T00:00:00Z");"#,
            r#"let calls = 1; add(calls, "a variable")"#,
            r#"add(1, "calls()")"#,
            r#"fn calls() { [] } fn first_seen() { () } calls(); first_seen()"#,
            r#"let f = Fn("now"); f.call()"#,
        ] {
            assert_eq!(history(script), HistoryUse::default(), "{script}");
        }
        // An own function of another arity does not shadow the API.
        assert_eq!(history("fn calls(x) { x } calls()"), CALLS);
    }
}
