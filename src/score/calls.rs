//! The rule API calls written in a rule file, found in its compiled AST:
//! the question texts and tracking names given as constants (lint checks
//! them against stored contacts) and the `add`/`disqualify`/`tag` calls
//! (coverage lists those no test reached). Calls whose argument is not a
//! constant text are listed without one: nothing can be checked before
//! the rule runs.

use rhai::{AST, ASTNode, Expr, Stmt};

/// The reading functions whose argument names something of the contact.
pub const LOOKUP_FUNCTIONS: &[&str] = &["answer", "has_answer", "utm", "first_utm"];

/// The functions through which a rule has an effect.
pub const EFFECT_FUNCTIONS: &[&str] = &["add", "disqualify", "tag"];

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
