//! Selection (SPEC 10): a destination's `when` is a Rhai expression over
//! the event being delivered. Each top-level field of the event is a
//! variable; a name the event lacks is `()`, so `previous` and `cause` can
//! be tested on events that are not rescored. A `when` that fails at run
//! time selects the event: losing a lead to a typo is worse than sending
//! one too many, and the caller logs and counts the failure.
//!
//! Only the names the expression reads are converted from the event, so a
//! `when` like `tier == "hot"` does not copy the whole contact.

use std::collections::BTreeSet;
use std::sync::Arc;

use rhai::{AST, ASTNode, Dynamic, Expr, Scope};
use serde_json::Value;

use super::script::{Sandbox, ScriptCompileError};
use crate::score::runtime::to_dynamic;

/// The fields of an event: the scored contact (SPEC 3), and `previous`
/// and `cause` of rescored events (SPEC 12).
pub const EVENT_FIELDS: [&str; 15] = [
    "type",
    "id",
    "contact_id",
    "score",
    "tier",
    "disqualified",
    "reasons",
    "disqualifications",
    "tags",
    "errors",
    "rules_version",
    "scored_at",
    "contact",
    "previous",
    "cause",
];

/// A compiled `when`: shared by every thread that scores.
#[derive(Clone)]
pub struct When {
    text: String,
    ast: Arc<AST>,
    /// The variables the expression reads, each bound to the event's field
    /// of that name or `()`.
    names: Arc<[String]>,
    /// Parameters of the closures in the expression (`r` of `|r| …`).
    closure_params: Arc<[String]>,
    sandbox: Arc<Sandbox>,
}

impl std::fmt::Debug for When {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("When").field(&self.text).finish()
    }
}

/// Whether a destination takes an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Selected,
    NotSelected,
    /// The expression failed at run time (message with line and column):
    /// the event is selected, and the caller logs and counts the failure.
    SelectedAfterError(String),
}

impl Selection {
    pub fn is_selected(&self) -> bool {
        !matches!(self, Selection::NotSelected)
    }
}

impl When {
    pub fn compile(text: &str, sandbox: Arc<Sandbox>) -> Result<Self, ScriptCompileError> {
        let ast = sandbox.compile_expression(text)?;
        let mut names = BTreeSet::new();
        ast.walk(&mut |path: &[ASTNode]| {
            if let Some(ASTNode::Expr(Expr::Variable(variable, ..))) = path.last() {
                names.insert(variable.1.to_string());
            }
            true
        });
        let closure_params: BTreeSet<String> = ast
            .iter_functions()
            .flat_map(|function| function.params.into_iter().map(str::to_owned))
            .collect();
        Ok(Self {
            text: text.to_owned(),
            ast: Arc::new(ast),
            names: names.into_iter().collect(),
            closure_params: closure_params.into_iter().collect(),
            sandbox,
        })
    }

    /// The expression as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The variables the expression reads that are no field of any event
    /// (nor a closure's parameter): always `()`, most likely a typo.
    pub fn unknown_names(&self) -> Vec<&str> {
        self.names
            .iter()
            .map(String::as_str)
            .filter(|name| !EVENT_FIELDS.contains(name) && !self.closure_params.iter().any(|p| p == name))
            .collect()
    }

    /// Evaluates the expression over `event`. A value other than a boolean
    /// is a run-time error (it selects the event).
    pub fn evaluate(&self, event: &Value) -> Selection {
        let mut scope = Scope::new();
        for name in self.names.iter() {
            let value = event.get(name).map_or(Dynamic::UNIT, to_dynamic);
            scope.push_dynamic(name.as_str(), value);
        }
        match self.sandbox.run(&self.ast, &mut scope) {
            Ok(value) => match value.as_bool() {
                Ok(true) => Selection::Selected,
                Ok(false) => Selection::NotSelected,
                Err(_) => Selection::SelectedAfterError(format!(
                    "`when` must be true or false, but it is {} ({value})",
                    value.type_name()
                )),
            },
            Err(error) => Selection::SelectedAfterError(error),
        }
    }
}

/// Evaluates an optional `when`: no expression selects every event, at no
/// cost.
pub fn select(when: Option<&When>, event: &Value) -> Selection {
    when.map_or(Selection::Selected, |when| when.evaluate(event))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::score::Limits;

    fn when(text: &str) -> When {
        When::compile(text, Arc::new(Sandbox::new(&Limits::default()))).unwrap()
    }

    fn scored(tier: &str, score: i64) -> Value {
        json!({"type": "contact.scored", "id": "evt_1", "contact_id": 7, "score": score, "tier": tier,
               "disqualified": false, "reasons": [], "tags": ["decision-maker"], "errors": [],
               "contact": {"id": 7, "email": "a@b.example"}})
    }

    #[test]
    fn fields_are_variables_and_absent_ones_are_unit() {
        let hot = when(r#"tier == "hot""#);
        assert_eq!(hot.evaluate(&scored("hot", 85)), Selection::Selected);
        assert_eq!(hot.evaluate(&scored("warm", 50)), Selection::NotSelected);
        let rescored = when(r#"cause == "rules" || previous == ()"#);
        assert_eq!(rescored.evaluate(&scored("warm", 50)), Selection::Selected);
        let mut event = scored("warm", 50);
        event["cause"] = json!("call");
        event["previous"] = json!({"tier": "hot"});
        assert_eq!(rescored.evaluate(&event), Selection::NotSelected);
        let nested =
            when(r#"score >= 40 && "decision-maker" in tags && contact.email.ends_with(".example")"#);
        assert_eq!(nested.evaluate(&scored("warm", 50)), Selection::Selected);
        assert_eq!(nested.evaluate(&scored("warm", 39)), Selection::NotSelected);
        let kind = when(r#"type == "contact.rescored" && id != () && contact_id == 7"#);
        assert_eq!(kind.evaluate(&event), Selection::NotSelected);
        event["type"] = json!("contact.rescored");
        assert_eq!(kind.evaluate(&event), Selection::Selected);
        let closure = when("reasons.filter(|r| r.points > 10).len() == 0");
        assert_eq!(closure.evaluate(&scored("warm", 50)), Selection::Selected);
    }

    #[test]
    fn names_that_are_no_event_field_are_reported() {
        assert_eq!(when(r#"teir == "hot" || score > 5"#).unknown_names(), ["teir"]);
        assert!(
            when("reasons.filter(|r| r.points > score).len() > 0")
                .unknown_names()
                .is_empty()
        );
        assert!(
            when(r#"cause == "rules" && previous.tier != tier"#)
                .unknown_names()
                .is_empty()
        );
    }

    #[test]
    fn a_failing_or_non_boolean_when_selects_and_says_why() {
        let failing = when("contact.email.len() > score.foo");
        match failing.evaluate(&scored("hot", 1)) {
            Selection::SelectedAfterError(why) => assert!(why.contains("line 1"), "{why}"),
            other => panic!("{other:?}"),
        }
        match when("score").evaluate(&scored("hot", 85)) {
            Selection::SelectedAfterError(why) => {
                assert_eq!(why, "`when` must be true or false, but it is i64 (85)")
            }
            other => panic!("{other:?}"),
        }
        let limited = Arc::new(Sandbox::new(&Limits {
            max_operations: 10,
            ..Limits::default()
        }));
        let long = ["score"; 20].join(" + ") + " > 0";
        let endless = When::compile(&long, limited).unwrap();
        match endless.evaluate(&scored("hot", 1)) {
            Selection::SelectedAfterError(why) => {
                assert!(why.starts_with("stopped: more than 10 operations"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        assert!(Selection::SelectedAfterError(String::new()).is_selected());
        assert_eq!(select(None, &json!({})), Selection::Selected);
    }

    #[test]
    fn one_compiled_when_serves_many_threads() {
        let hot = when(r#"tier == "hot""#);
        let selected: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|i| {
                    let hot = &hot;
                    s.spawn(move || {
                        (0..50)
                            .filter(|j| {
                                let tier = if (i + j) % 2 == 0 { "hot" } else { "cold" };
                                hot.evaluate(&scored(tier, 1)).is_selected()
                            })
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(selected, 100);
    }
}
