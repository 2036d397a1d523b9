//! Native evaluation of the common rule shapes, with Rhai as the reference.
//!
//! One file on purpose: the translation and the evaluator must agree on
//! every operator with Rhai, and read best side by side.
//!
//! Why: a rule like `let role = answer("Role").to_lower(); if role.contains("vp") { add(20, "VP") }`
//! spends almost all of its time in Rhai's generic machinery — about a
//! thousand instructions per call for argument `Dynamic`s, call hashing and
//! lookup, native call contexts — not in the work itself (BENCHMARKS.md).
//! At compile time each rule's AST is translated into a small tree of
//! [`Step`]s and [`Node`]s whose functions are resolved once; at run time that
//! tree is walked directly.
//!
//! Exactness comes first: this path covers a subset of the language whose
//! meaning is spelt out below from Rhai's own sources (`func/builtin.rs`,
//! `packages/string_more.rs`), and gives up — [`Bail`] — on anything else:
//! a construct outside the subset, a value of a type it does not handle, an
//! operation that could fail, a limit that could be reached. A rule that
//! bails is run again from the start by Rhai (its effects so far are
//! discarded), so any error, limit or unusual case is Rhai's to decide, with
//! Rhai's message. The test suite compares both paths on generated contacts
//! and on snippets aimed at each operator's edge cases.
//!
//! Covered: `let`/`const`, `if`/`else`, blocks, `return`, expression
//! statements; constants, variables, array literals, `&&`/`||`/`!`,
//! `== != < <= > >=`, `+` on numbers and text, `in`; `contact.field.field`
//! reads; the rule API except `answers()` (`now()`, `days_since(t)`,
//! `first_seen()` and `calls()` included); the text methods `to_lower`,
//! `to_upper`, `contains`, `starts_with`, `ends_with`, `is_empty`, `len`,
//! and `to_int`/`to_float`. Not covered (always Rhai): loops, assignment,
//! `switch`, `try`, `throw`, closures, functions defined in the rule (and
//! any call to a name one of them has), indexing, maps, interpolated
//! strings, `print`/`debug`, and everything else.

use std::borrow::Cow;

use rhai::{AST, ASTFlags, Array, Dynamic, Expr, FLOAT, INT, ImmutableString, Position, Stmt};

use super::runtime::{self, Limits, Points};

/// Gave up: the rule must be run by Rhai.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bail;

type Eval<T> = Result<T, Bail>;

/// A rule translated for native evaluation.
#[derive(Debug)]
pub(crate) struct NativeRule {
    body: Vec<Step>,
}

#[derive(Debug)]
enum Step {
    /// `let`/`const`: evaluates and pushes a local.
    Let(Node),
    If(Node, Vec<Step>, Vec<Step>),
    Eval(Node),
    /// A nested block: its locals end with it.
    Block(Vec<Step>),
    Return,
    Bail,
}

#[derive(Debug)]
enum Node {
    Const(Dynamic),
    /// A local by its slot, resolved at translation.
    Local(usize),
    /// `contact.NAME`: the field of the contact, converted when read.
    ContactField(ImmutableString),
    Array(Vec<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
    Call(Op, Vec<Node>),
    /// `map.NAME`.
    Property(Box<Node>, ImmutableString),
    Bail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Answer,
    HasAnswer,
    Utm,
    FirstUtm,
    EmailDomain,
    IsFreeEmail,
    IclosedDisqualified,
    DisqualifyingGroups,
    Now,
    DaysSince,
    FirstSeen,
    Calls,
    ParseNumber,
    Add,
    Disqualify,
    Tag,
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    Plus,
    Not,
    Contains,
    StartsWith,
    EndsWith,
    ToLower,
    ToUpper,
    IsEmpty,
    Len,
    ToInt,
    ToFloat,
}

impl Op {
    /// The function a call resolves to, by name and number of arguments
    /// (the receiver of a method call counts).
    fn of(name: &str, arity: usize) -> Option<Self> {
        Some(match (name, arity) {
            ("answer", 1) => Self::Answer,
            ("has_answer", 1) => Self::HasAnswer,
            ("utm", 1) => Self::Utm,
            ("first_utm", 1) => Self::FirstUtm,
            ("email_domain", 0) => Self::EmailDomain,
            ("is_free_email", 0) => Self::IsFreeEmail,
            ("iclosed_disqualified", 0) => Self::IclosedDisqualified,
            ("disqualifying_groups", 0) => Self::DisqualifyingGroups,
            ("now", 0) => Self::Now,
            ("days_since", 1) => Self::DaysSince,
            ("first_seen", 0) => Self::FirstSeen,
            ("calls", 0) => Self::Calls,
            ("parse_number", 1) => Self::ParseNumber,
            ("add", 2) => Self::Add,
            ("disqualify", 1) => Self::Disqualify,
            ("tag", 1) => Self::Tag,
            ("==", 2) => Self::Equal,
            ("!=", 2) => Self::NotEqual,
            ("<", 2) => Self::Less,
            ("<=", 2) => Self::LessOrEqual,
            (">", 2) => Self::Greater,
            (">=", 2) => Self::GreaterOrEqual,
            ("+", 2) => Self::Plus,
            ("!", 1) => Self::Not,
            ("contains", 2) => Self::Contains,
            ("starts_with", 2) => Self::StartsWith,
            ("ends_with", 2) => Self::EndsWith,
            ("to_lower", 1) => Self::ToLower,
            ("to_upper", 1) => Self::ToUpper,
            ("is_empty", 1) => Self::IsEmpty,
            ("len", 1) => Self::Len,
            ("to_int", 1) => Self::ToInt,
            ("to_float", 1) => Self::ToFloat,
            _ => return None,
        })
    }
}

/// Names a rule's own functions could shadow or that the text conversion
/// of `text + number` calls.
const SHADOWABLE: &[&str] = &["to_string"];

/// Translation state: the locals in scope, innermost last.
struct Translator<'a> {
    locals: Vec<ImmutableString>,
    /// Names of functions the rule defines: calls to them are Rhai's.
    own_functions: Vec<&'a str>,
}

impl NativeRule {
    /// Translates a compiled rule; `None` when nothing of it can run natively.
    pub fn translate(ast: &AST) -> Option<Self> {
        let own_functions: Vec<&str> = ast.iter_functions().map(|f| f.name).collect();
        if own_functions.iter().any(|name| SHADOWABLE.contains(name)) {
            return None;
        }
        let mut translator = Translator {
            locals: Vec::new(),
            own_functions,
        };
        let body = translator.block(ast.statements());
        if matches!(body.first(), Some(Step::Bail)) {
            return None; // would bail before doing anything
        }
        Some(Self { body })
    }
}

impl Translator<'_> {
    fn block(&mut self, statements: &[Stmt]) -> Vec<Step> {
        let depth = self.locals.len();
        let steps = statements.iter().filter_map(|s| self.step(s)).collect();
        self.locals.truncate(depth);
        steps
    }

    fn step(&mut self, statement: &Stmt) -> Option<Step> {
        Some(match statement {
            Stmt::Noop(_) => return None,
            Stmt::Var(var, flags, _) if !flags.intersects(ASTFlags::EXPORTED) => {
                let (ident, value, _) = &**var;
                let value = self.node(value);
                self.locals.push(ident.name.clone());
                Step::Let(value)
            }
            Stmt::If(flow, _) => {
                let condition = self.node(&flow.expr);
                let then = self.block(flow.body.statements());
                let otherwise = self.block(flow.branch.statements());
                Step::If(condition, then, otherwise)
            }
            Stmt::FnCall(call, pos) => Step::Eval(self.node(&Expr::FnCall(call.clone(), *pos))),
            Stmt::Expr(expr) => Step::Eval(self.node(expr)),
            Stmt::Block(block) => Step::Block(self.block(block.statements())),
            // `return` (`throw` is a `Return` with BREAK: an error, Rhai's).
            Stmt::Return(value, flags, _) if !flags.intersects(ASTFlags::BREAK) => match value {
                None => Step::Return,
                // The value is evaluated (it may fail in Rhai), then ignored.
                Some(value) => Step::Block(vec![Step::Eval(self.node(value)), Step::Return]),
            },
            _ => Step::Bail,
        })
    }

    fn node(&self, expr: &Expr) -> Node {
        match expr {
            Expr::DynamicConstant(value, _) => constant((**value).clone()),
            Expr::BoolConstant(b, _) => Node::Const(Dynamic::from_bool(*b)),
            Expr::IntegerConstant(n, _) => Node::Const(Dynamic::from_int(*n)),
            Expr::FloatConstant(f, _) => Node::Const(Dynamic::from_float(**f)),
            Expr::StringConstant(s, _) => Node::Const(s.clone().into()),
            Expr::Unit(_) => Node::Const(Dynamic::UNIT),
            Expr::Variable(var, _, _) => self.variable(&var.1),
            Expr::Array(items, _) => Node::Array(items.iter().map(|e| self.node(e)).collect()),
            Expr::And(items, _) => Node::And(items.iter().map(|e| self.node(e)).collect()),
            Expr::Or(items, _) => Node::Or(items.iter().map(|e| self.node(e)).collect()),
            Expr::FnCall(call, _) if !call.capture_parent_scope => {
                let args: Vec<Node> = call.args.iter().map(|e| self.node(e)).collect();
                self.call(&call.name, args)
            }
            Expr::Dot(chain, flags, _) if !flags.intersects(ASTFlags::NEGATED) => {
                match (&chain.lhs, self.variable_name(&chain.lhs)) {
                    // `contact.NAME…`: the field, not the whole contact.
                    (_, Some("contact")) if !self.is_local("contact") => match &chain.rhs {
                        Expr::Property(p, _) => Node::ContactField(p.2.clone()),
                        Expr::Dot(rest, flags, _) if !flags.intersects(ASTFlags::NEGATED) => {
                            match &rest.lhs {
                                Expr::Property(p, _) => {
                                    self.chain(Node::ContactField(p.2.clone()), &rest.rhs)
                                }
                                _ => Node::Bail,
                            }
                        }
                        _ => Node::Bail,
                    },
                    (lhs, _) => {
                        let base = self.node(lhs);
                        self.chain(base, &chain.rhs)
                    }
                }
            }
            _ => Node::Bail,
        }
    }

    /// Applies the right-hand side of a `.` chain to `base`.
    fn chain(&self, base: Node, rhs: &Expr) -> Node {
        match rhs {
            Expr::Property(p, _) => Node::Property(Box::new(base), p.2.clone()),
            Expr::MethodCall(call, _) if !call.capture_parent_scope => {
                let mut args = Vec::with_capacity(call.args.len() + 1);
                args.push(base);
                args.extend(call.args.iter().map(|e| self.node(e)));
                self.call(&call.name, args)
            }
            Expr::Dot(rest, flags, _) if !flags.intersects(ASTFlags::NEGATED) => {
                let inner = self.chain(base, &rest.lhs);
                self.chain(inner, &rest.rhs)
            }
            _ => Node::Bail,
        }
    }

    fn call(&self, name: &str, args: Vec<Node>) -> Node {
        if self.own_functions.contains(&name) {
            return Node::Bail;
        }
        match Op::of(name, args.len()) {
            Some(op) => Node::Call(op, args),
            None => Node::Bail,
        }
    }

    fn variable_name<'e>(&self, expr: &'e Expr) -> Option<&'e str> {
        match expr {
            Expr::Variable(var, _, _) => Some(var.1.as_str()),
            _ => None,
        }
    }

    fn is_local(&self, name: &str) -> bool {
        self.locals.iter().any(|l| l == name)
    }

    fn variable(&self, name: &str) -> Node {
        match self.locals.iter().rposition(|l| l == name) {
            Some(slot) => Node::Local(slot),
            // `contact` itself (not a field of it), or a name from outside.
            None => Node::Bail,
        }
    }
}

/// A constant; shared values (closures) are Rhai's.
fn constant(value: Dynamic) -> Node {
    if value.is_shared() {
        Node::Bail
    } else {
        Node::Const(value)
    }
}

/// What a rule's run needs besides the rule: the limits, and the `contact`
/// fields it reads.
pub(crate) struct Run<'a> {
    pub contact: crate::payload::JsonNode<'a>,
    pub limits: &'a Limits,
    locals: Vec<Dynamic>,
    /// A cell so that evaluating (which only counts) borrows the run
    /// shared: a local's value is then read in place, not cloned.
    operations: std::cell::Cell<u64>,
}

/// Every node or step evaluated counts this many operations against
/// `--rule-max-operations`: more than Rhai counts for the same work, so that
/// a rule near the limit bails to Rhai, which then decides exactly.
const OPERATIONS_PER_NODE: u64 = 8;

impl<'a> Run<'a> {
    pub fn new(contact: crate::payload::JsonNode<'a>, limits: &'a Limits) -> Self {
        Self {
            contact,
            limits,
            locals: Vec::with_capacity(16),
            operations: std::cell::Cell::new(0),
        }
    }

    /// Runs a rule. Its effects go where the registered functions put them
    /// (the thread's run state); on `Err(Bail)` the caller discards them.
    pub fn run(&mut self, rule: &NativeRule) -> Eval<()> {
        self.locals.clear();
        self.operations.set(0);
        self.steps(&rule.body).map(drop)
    }

    fn count(&self) -> Eval<()> {
        let operations = self.operations.get() + OPERATIONS_PER_NODE;
        self.operations.set(operations);
        if operations > self.limits.max_operations {
            return Err(Bail);
        }
        Ok(())
    }

    /// Runs steps; `Ok(true)` when a `return` ended the rule.
    fn steps(&mut self, steps: &[Step]) -> Eval<bool> {
        let depth = self.locals.len();
        for step in steps {
            self.count()?;
            let returned = match step {
                Step::Let(node) => {
                    let value = self.eval(node)?.into_owned();
                    self.locals.push(value);
                    false
                }
                Step::If(condition, then, otherwise) => {
                    let branch = if as_bool(&*self.eval(condition)?)? {
                        then
                    } else {
                        otherwise
                    };
                    self.steps(branch)?
                }
                Step::Eval(node) => {
                    self.eval(node)?;
                    false
                }
                Step::Block(steps) => self.steps(steps)?,
                Step::Return => true,
                Step::Bail => return Err(Bail),
            };
            if returned {
                return Ok(true);
            }
        }
        self.locals.truncate(depth);
        Ok(false)
    }

    fn eval<'n>(&'n self, node: &'n Node) -> Eval<Cow<'n, Dynamic>> {
        self.count()?;
        Ok(match node {
            Node::Const(value) => Cow::Borrowed(value),
            Node::Local(slot) => Cow::Borrowed(self.locals.get(*slot).ok_or(Bail)?),
            Node::ContactField(name) => {
                let value = self
                    .contact
                    .get(name.as_str())
                    .map_or(Dynamic::UNIT, runtime::node_to_dynamic);
                if !within_limits(&value, self.limits) {
                    return Err(Bail);
                }
                Cow::Owned(value)
            }
            Node::Array(items) => {
                if items.len() > self.limits.max_array_size {
                    return Err(Bail);
                }
                let mut array = Array::with_capacity(items.len());
                for item in items {
                    let value = self.eval(item)?.into_owned();
                    if value.is_shared() {
                        return Err(Bail);
                    }
                    array.push(value);
                }
                Cow::Owned(Dynamic::from_array(array))
            }
            Node::And(items) => {
                for item in items {
                    if !as_bool(&*self.eval(item)?)? {
                        return Ok(Cow::Owned(Dynamic::FALSE));
                    }
                }
                Cow::Owned(Dynamic::TRUE)
            }
            Node::Or(items) => {
                for item in items {
                    if as_bool(&*self.eval(item)?)? {
                        return Ok(Cow::Owned(Dynamic::TRUE));
                    }
                }
                Cow::Owned(Dynamic::FALSE)
            }
            Node::Property(base, name) => {
                let base = self.eval(base)?;
                if !base.is_map() || base.is_shared() {
                    return Err(Bail); // getters of other types are Rhai's
                }
                let map = base.as_map_ref().map_err(|_| Bail)?;
                // A missing property of a map reads as `()`.
                Cow::Owned(map.get(name.as_str()).cloned().unwrap_or(Dynamic::UNIT))
            }
            Node::Call(op, args) => Cow::Owned(self.call(*op, args)?),
            Node::Bail => return Err(Bail),
        })
    }

    fn call(&self, op: Op, args: &[Node]) -> Eval<Dynamic> {
        // Short calls: at most two arguments are ever evaluated here.
        let first = match args.first() {
            Some(node) => Some(self.eval(node)?),
            None => None,
        };
        let second = match args.get(1) {
            Some(node) => Some(self.eval(node)?),
            None => None,
        };
        let a = first.as_deref();
        let b = second.as_deref();
        let result = match (op, a, b) {
            (Op::Answer, Some(q), None) => runtime::api_answer(&text(q)?).map(Dynamic::from),
            (Op::HasAnswer, Some(q), None) => runtime::api_has_answer(&text(q)?).map(Dynamic::from_bool),
            (Op::Utm, Some(name), None) => runtime::api_utm(&text(name)?).map(Dynamic::from),
            (Op::FirstUtm, Some(name), None) => runtime::api_first_utm(&text(name)?).map(Dynamic::from),
            (Op::EmailDomain, None, None) => runtime::api_email_domain().map(Dynamic::from),
            (Op::IsFreeEmail, None, None) => runtime::api_is_free_email().map(Dynamic::from_bool),
            (Op::IclosedDisqualified, None, None) => {
                runtime::api_iclosed_disqualified().map(Dynamic::from_bool)
            }
            (Op::DisqualifyingGroups, None, None) => {
                runtime::api_disqualifying_groups().map(Dynamic::from_array)
            }
            (Op::Now, None, None) => runtime::api_now().map(Dynamic::from),
            // A shared value (a closure's capture) is Rhai's.
            (Op::DaysSince, Some(t), None) if !t.is_shared() => runtime::api_days_since(t),
            (Op::FirstSeen, None, None) => runtime::api_first_seen(),
            (Op::Calls, None, None) => runtime::api_calls().map(Dynamic::from_array),
            (Op::ParseNumber, Some(x), None) => return parse_number(x),
            (Op::Add, Some(points), Some(reason)) => {
                let points = if let Some(n) = points.is_int().then(|| points.as_int().ok()).flatten() {
                    Points::Int(n)
                } else {
                    match number(points) {
                        Some(f) if f.is_finite() => Points::Float(f),
                        _ => return Err(Bail), // not finite: Rhai's error
                    }
                };
                runtime::api_add(points, reason, Position::NONE).map(|()| Dynamic::UNIT)
            }
            (Op::Disqualify, Some(reason), None) => {
                runtime::api_disqualify(reason, Position::NONE).map(|()| Dynamic::UNIT)
            }
            (Op::Tag, Some(label), None) => runtime::api_tag(label, Position::NONE).map(|()| Dynamic::UNIT),
            (Op::Equal, Some(a), Some(b)) => return compare(op, a, b),
            (
                Op::NotEqual | Op::Less | Op::LessOrEqual | Op::Greater | Op::GreaterOrEqual,
                Some(a),
                Some(b),
            ) => {
                return compare(op, a, b);
            }
            (Op::Plus, Some(a), Some(b)) => return self.plus(a, b),
            (Op::Not, Some(x), None) => return Ok(Dynamic::from_bool(!as_bool(x)?)),
            (Op::Contains, Some(container), Some(x)) => return contains(container, x),
            (Op::StartsWith, Some(s), Some(x)) => {
                return Ok(Dynamic::from_bool(text(s)?.starts_with(text(x)?.as_str())));
            }
            (Op::EndsWith, Some(s), Some(x)) => {
                return Ok(Dynamic::from_bool(text(s)?.ends_with(text(x)?.as_str())));
            }
            (Op::ToLower, Some(s), None) => return self.case(s, str::to_lowercase, char::is_lowercase),
            (Op::ToUpper, Some(s), None) => return self.case(s, str::to_uppercase, char::is_uppercase),
            (Op::IsEmpty, Some(x), None) => return length(x).map(|n| Dynamic::from_bool(n == 0)),
            (Op::Len, Some(x), None) => return length(x).map(|n| Dynamic::from_int(n as INT)),
            (Op::ToInt, Some(x), None) => return to_int(x),
            (Op::ToFloat, Some(x), None) => return to_float(x),
            _ => return Err(Bail),
        };
        // An API function that failed (no run state): Rhai reports it.
        let value = result.map_err(|_| Bail)?;
        // Rhai checks the size of every value a function returns.
        if !within_limits(&value, self.limits) {
            return Err(Bail);
        }
        Ok(value)
    }

    /// `to_lower`/`to_upper`: as Rhai's, which returns the text itself when
    /// every character already has the case.
    fn case(&self, s: &Dynamic, convert: fn(&str) -> String, has_case: fn(char) -> bool) -> Eval<Dynamic> {
        let string = text(s)?;
        if string.is_empty() || string.chars().all(has_case) {
            return Ok(s.clone());
        }
        self.sized(convert(&string))
    }

    fn sized(&self, string: String) -> Eval<Dynamic> {
        if self.limits.max_string_size > 0 && string.len() > self.limits.max_string_size {
            return Err(Bail); // Rhai raises the limit error
        }
        Ok(ImmutableString::from(string).into())
    }

    /// `a + b`, for numbers and text only.
    fn plus(&self, a: &Dynamic, b: &Dynamic) -> Eval<Dynamic> {
        if let Some((x, y)) = both_ints(a, b) {
            return x.checked_add(y).map(Dynamic::from_int).ok_or(Bail); // overflow: Rhai's error
        }
        if let (Some(x), Some(y)) = (number(a), number(b)) {
            return Ok(Dynamic::from_float(x + y));
        }
        if a.is_unit() && b.is_string() {
            return Ok(b.clone());
        }
        let left = text(a)?;
        if b.is_unit() {
            return Ok(a.clone());
        }
        let left = left.as_str();
        let joined = if let Ok(right) = text(b) {
            format!("{left}{}", right.as_str())
        } else if let Some(n) = b.is_int().then(|| b.as_int().ok()).flatten() {
            // Rhai prints the number with `to_string` (not redefined: see
            // SHADOWABLE), which for an integer is its decimal form.
            format!("{left}{n}")
        } else {
            return Err(Bail); // floats and others print in Rhai's own ways
        };
        self.sized(joined)
    }
}

fn as_bool(value: &Dynamic) -> Eval<bool> {
    if value.is_shared() {
        return Err(Bail);
    }
    value.as_bool().map_err(|_| Bail)
}

/// The text of a string value, borrowed (no reference count touched); any
/// other type is Rhai's.
fn text(value: &Dynamic) -> Eval<impl std::ops::Deref<Target = ImmutableString> + '_> {
    if value.is_shared() || !value.is_string() {
        return Err(Bail);
    }
    value.as_immutable_string_ref().map_err(|_| Bail)
}

/// A number as a float. The type is asked first: a failed `as_int` or
/// `as_float` looks the type's name up for its error, which cost more than
/// the comparisons that called it.
fn number(value: &Dynamic) -> Option<FLOAT> {
    if value.is_int() {
        value.as_int().ok().map(|n| n as FLOAT)
    } else if value.is_float() {
        value.as_float().ok()
    } else {
        None
    }
}

/// Both values integers, for the integer forms of `+` and comparisons.
fn both_ints(a: &Dynamic, b: &Dynamic) -> Option<(INT, INT)> {
    if a.is_int() && b.is_int() {
        Some((a.as_int().ok()?, b.as_int().ok()?))
    } else {
        None
    }
}

fn is_number(value: &Dynamic) -> bool {
    value.is_int() || value.is_float()
}

/// Whether a value read from the contact stays within Rhai's size limits,
/// counted generously (every nested element, entry and byte added up), so
/// that anything Rhai might refuse is left to Rhai.
fn within_limits(value: &Dynamic, limits: &Limits) -> bool {
    // The type is asked first (a plain match): a failed `as_*_ref` is a
    // type-id cast and a type name, and most values are text.
    fn sizes(value: &Dynamic, totals: &mut (usize, usize, usize)) {
        if value.is_string() {
            if let Ok(s) = value.as_immutable_string_ref() {
                totals.2 += s.len();
            }
        } else if value.is_array() {
            if let Ok(array) = value.as_array_ref() {
                totals.0 += array.len();
                array.iter().for_each(|v| sizes(v, totals));
            }
        } else if value.is_map()
            && let Ok(map) = value.as_map_ref()
        {
            totals.1 += map.len();
            map.values().for_each(|v| sizes(v, totals));
        }
    }
    let mut totals = (0, 0, 0);
    sizes(value, &mut totals);
    let fits = |total: usize, max: usize| max == 0 || total <= max;
    !value.is_shared()
        && fits(totals.0, limits.max_array_size)
        && fits(totals.1, limits.max_map_size)
        && fits(totals.2, limits.max_string_size)
}

/// `== != < <= > >=` as Rhai's built-in operators decide them.
fn compare(op: Op, a: &Dynamic, b: &Dynamic) -> Eval<Dynamic> {
    use std::cmp::Ordering;
    if a.is_shared() || b.is_shared() || a.is_char() || b.is_char() {
        return Err(Bail); // characters compare with text in their own way
    }
    // Text first: most comparisons in rules are of text (the branches test
    // disjoint types, so their order does not change a result).
    let ordering: Option<Ordering> = if a.is_string() && b.is_string() {
        let (x, y) = (text(a)?, text(b)?);
        Some(x.as_str().cmp(y.as_str()))
    } else if let Some((x, y)) = both_ints(a, b) {
        Some(x.cmp(&y))
    } else if is_number(a) && is_number(b) {
        // Mixed or float: compared as floats; NaN compares unequal to all.
        let (x, y) = (number(a).ok_or(Bail)?, number(b).ok_or(Bail)?);
        match x.partial_cmp(&y) {
            Some(ordering) => Some(ordering),
            None => {
                return Ok(Dynamic::from_bool(op == Op::NotEqual));
            }
        }
    } else if a.is_unit() && b.is_unit() {
        // `() == ()` is true; `() != ()` and every ordering false.
        return Ok(Dynamic::from_bool(op == Op::Equal));
    } else if a.is_bool() && b.is_bool() {
        let (x, y) = (as_bool(a)?, as_bool(b)?);
        if !matches!(op, Op::Equal | Op::NotEqual) {
            return Err(Bail);
        }
        Some(x.cmp(&y))
    } else if a.type_id() != b.type_id() && !(is_number(a) && is_number(b)) {
        // Different, non-numeric types: only `!=` is true.
        return Ok(Dynamic::from_bool(op == Op::NotEqual));
    } else {
        None // same type without a built-in (arrays, maps): Rhai's
    };
    let ordering = ordering.ok_or(Bail)?;
    Ok(Dynamic::from_bool(match op {
        Op::Equal => ordering == Ordering::Equal,
        Op::NotEqual => ordering != Ordering::Equal,
        Op::Less => ordering == Ordering::Less,
        Op::LessOrEqual => ordering != Ordering::Greater,
        Op::Greater => ordering == Ordering::Greater,
        Op::GreaterOrEqual => ordering != Ordering::Less,
        _ => return Err(Bail),
    }))
}

/// `text.contains(part)` and `array.contains(text)` (also `x in y`).
fn contains(container: &Dynamic, x: &Dynamic) -> Eval<Dynamic> {
    if let Ok(string) = text(container) {
        return Ok(Dynamic::from_bool(string.contains(text(x)?.as_str())));
    }
    let wanted = text(x)?;
    if container.is_shared() || !container.is_array() {
        return Err(Bail);
    }
    let array = container.as_array_ref().map_err(|_| Bail)?;
    // As the engine's `contains` (runtime.rs): text elements compare as text;
    // an element of another type never equals a text (different types).
    for item in array.iter() {
        if item.is_shared() || item.is_char() {
            return Err(Bail);
        }
        if text(item).is_ok_and(|s| s.as_str() == wanted.as_str()) {
            return Ok(Dynamic::TRUE);
        }
    }
    Ok(Dynamic::FALSE)
}

/// Length of text (in characters, as Rhai counts), an array or a map.
fn length(x: &Dynamic) -> Eval<usize> {
    if let Ok(s) = text(x) {
        return Ok(s.chars().count());
    }
    if x.is_shared() {
        return Err(Bail);
    }
    if let Ok(array) = x.as_array_ref() {
        return Ok(array.len());
    }
    if let Ok(map) = x.as_map_ref() {
        return Ok(map.len());
    }
    Err(Bail)
}

fn to_int(x: &Dynamic) -> Eval<Dynamic> {
    if x.is_int() {
        return x.as_int().map(Dynamic::from_int).map_err(|_| Bail);
    }
    let f = x.as_float().map_err(|_| Bail)?;
    // Rhai's range check; NaN passes it and truncates to 0.
    #[allow(clippy::cast_precision_loss)]
    if f > INT::MAX as FLOAT || f < INT::MIN as FLOAT {
        return Err(Bail);
    }
    #[allow(clippy::cast_possible_truncation)]
    Ok(Dynamic::from_int(f.trunc() as INT))
}

fn to_float(x: &Dynamic) -> Eval<Dynamic> {
    number(x).map(Dynamic::from_float).ok_or(Bail)
}

/// `parse_number` as registered in runtime.rs, for each argument type.
fn parse_number(x: &Dynamic) -> Eval<Dynamic> {
    if let Ok(s) = text(x) {
        return Ok(super::helpers::parse_number(s.as_str()).map_or(Dynamic::UNIT, Dynamic::from_float));
    }
    if x.is_unit() {
        return Ok(Dynamic::UNIT);
    }
    number(x).map(Dynamic::from_float).ok_or(Bail)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::super::{CallStatus, CallSummary, RuleSet, RuleSources, ScoringContext};
    use super::*;
    use crate::payload::Contact;

    fn rule_set(script: &str, limits: &Limits) -> RuleSet {
        let sources = RuleSources {
            files: vec![("10-test.rhai".into(), script.into())],
            tiers: None,
        };
        RuleSet::compile(sources, limits).unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    fn contacts() -> Vec<Contact> {
        [
            json!({"id": 1}),
            json!({
                "id": "c-2",
                "email": "Ann@Acme.io",
                "questionsAndAnswers": {
                    "1_question": "What is your role?", "1_response": "VP Sales",
                    "2_question": "How many employees?", "2_response": "201-500",
                    "3_question": "Budget", "3_response": 12000,
                    "Direct": ["a", "b"]
                },
                "tracking": {"utm_source": "google", "utm_medium": "cpc", "first_utm_source": "newsletter"},
                "latestCall": {"dateTime": "2026-11-02T18:07:00.000Z", "user": {"email": "rep@x.io"}, "n": 2.5},
                "disqualifyingGroup": [{"name": "Students", "isDisqualified": true}],
                "isDisqualified": true
            }),
            json!({"id": 3, "email": 5, "questionsAndAnswers": [1, 2], "tracking": "x", "latestCall": [1]}),
        ]
        .into_iter()
        .map(|value| Contact::from_value(&value).unwrap())
        .collect()
    }

    /// 2026-11-09T12:00:00.000123456Z: rules see it to the millisecond.
    fn scoring_time() -> SystemTime {
        UNIX_EPOCH + Duration::new(1_794_225_600, 123_456)
    }

    fn call(status: CallStatus, start_time: Option<&str>, event_type: Option<&str>) -> CallSummary {
        CallSummary {
            status,
            start_time: start_time.map(str::to_owned),
            event_type: event_type.map(str::to_owned),
        }
    }

    /// Scoring contexts the snippets run in: no history; a week-old contact
    /// with a booked and a canceled call; an unknown first receive time
    /// and more calls than `calls()` returns.
    fn contexts() -> Vec<ScoringContext> {
        let now = scoring_time();
        vec![
            ScoringContext::at(now),
            ScoringContext {
                now,
                first_seen: Some(now - Duration::from_secs(8 * 86_400)),
                calls: vec![
                    call(
                        CallStatus::Booked,
                        Some("2026-11-12T15:00:00.000Z"),
                        Some("Discovery call"),
                    ),
                    call(CallStatus::Canceled, None, None),
                ],
            },
            ScoringContext {
                now,
                first_seen: None,
                calls: (0..150)
                    .map(|i| call(CallStatus::Rescheduled, Some(&format!("call {i}")), None))
                    .collect(),
            },
        ]
    }

    /// Each snippet is run by Rhai alone and by the native path (with Rhai
    /// taking over where it gives up) on every contact: same outcome; and
    /// where the native path finishes alone, that outcome is the same too.
    /// The flag says whether the native path is expected to finish on some
    /// contact (so that the comparison really covers native code) or to
    /// hand over to Rhai on some contact (the construct is Rhai's).
    const SNIPPETS: &[(bool, &str)] = &[
        (true, r#"if () >= 200.0 { add(1, "a") } else { add(2, "b") }"#),
        (
            true,
            r#"if () == () { add(1, "u") } if () != () { add(2, "v") } if () < () { add(4, "w") }"#,
        ),
        (
            true,
            r#"if "" == () { add(1, "a") } if "" != () { add(2, "b") } if () > "" { add(4, "c") }"#,
        ),
        (
            true,
            r#"if 1 == 1.0 { add(1, "a") } if 2 > 1.5 { add(2, "b") } if 1.5 <= 1 { add(4, "c") }"#,
        ),
        (
            true,
            r#"if "b" > "a" { add(1, "a") } if "a" < "B" { add(2, "b") } if "ab" >= "ab" { add(4, "c") }"#,
        ),
        (
            true,
            r#"if true == true { add(1, "a") } if true != false { add(2, "b") } if 1 == true { add(4, "c") }"#,
        ),
        (
            true,
            r#"if [1] != () { add(1, "a") } if #{a: 1} == 1 { add(2, "b") }"#,
        ),
        (false, r#"if [1] == [1] { add(1, "a") }"#),
        (
            false,
            r#"let t = answer("nothing") == ""; if t > false { add(1, "a") }"#,
        ),
        (
            true,
            r#"add(1, "x" + 5); add(2, "x" + ()); add(3, () + "x"); add(4, "a" + "b")"#,
        ),
        (
            true,
            r#"add(1 + 2, "i"); add(1.5 + 1, "f"); add(1.5, "half"); add(2, 2 == 2.0)"#,
        ),
        (false, r#"add(1, "x" + 1.5)"#),
        (false, r#"add(1, "x" + true)"#),
        (false, r#"let n = 9223372036854775807; add(n + 1, "overflow")"#),
        (
            true,
            r#"add(parse_number("$5k").to_int(), "n"); add(5.to_float(), "f"); add(2.7.to_int(), "t")"#,
        ),
        (
            true,
            r#"add(parse_number(7), "i"); add(parse_number(2.5), "f"); if parse_number(()) == () { add(1, "u") }"#,
        ),
        (true, r#"add(5.to_int(), "i")"#),
        (false, r#"add(1e300.to_int(), "big")"#),
        (
            true,
            r#"add("abc".len(), "a"); add("ÄÖü".len(), "b"); add([1, 2].len(), "c"); add(#{a: 1}.len(), "d")"#,
        ),
        (
            true,
            r#"if "".is_empty() { add(1, "a") } if [].is_empty() { add(2, "b") } if !"x".is_empty() { add(4, "c") }"#,
        ),
        (
            true,
            r#"add(1, "VP Sales".to_lower()); add(2, "straße".to_upper()); add(3, "abc".to_lower())"#,
        ),
        (
            true,
            r#"if "x" in ["a", "x"] { add(1, "a") } if "x" in "xyz" { add(2, "b") } if !("x" in ["a"]) { add(4, "c") }"#,
        ),
        (
            true,
            r#"if ["a", 1, ()].contains("a") { add(1, "a") } if [1, [2], #{}].contains("1") { add(2, "b") }"#,
        ),
        (false, r#"if [1].contains(1) { add(1, "a") }"#),
        (false, r#"if #{a: 1}.contains("a") { add(1, "a") }"#),
        (
            true,
            r#"if "abc".starts_with("ab") && "abc".ends_with("bc") { add(1, "a") } if "abc".starts_with("c") || false { add(2, "b") }"#,
        ),
        (
            false,
            r#"let t = answer("x") == ""; let one = 1; if t && one { add(1, "a") }"#,
        ),
        (
            true,
            r#"let one = 1; let t = answer("x") == ""; if !t && one { add(1, "a") } if t || one { add(2, "b") }"#,
        ),
        (false, r#"let s = "x"; if s { add(1, "a") }"#),
        (
            true,
            r#"let x = 1; { let x = 2; add(x, "inner") } add(x, "outer"); let x = x + 10; add(x, "shadow")"#,
        ),
        (true, r#"if true { return; } add(1, "never")"#),
        (
            true,
            r#"add(1, "before"); return add(2, "in return"); add(4, "never")"#,
        ),
        (false, r#"throw "stop";"#),
        (false, r#"add(1, "x"); throw "stop";"#),
        (false, r#"add(1 / 0, "x")"#),
        (false, r#"let t = "x"; for i in 0..3 { t += "y" } add(1, t)"#),
        (false, r#"let x = "a"; x = "b"; add(1, x)"#),
        (false, r#"fn answer(q) { "fake" } add(1, answer("role"))"#),
        (false, r#"fn to_string(x) { "s" } add(1, "a" + 1)"#),
        (false, r#"print("hello"); add(1, "p")"#),
        (false, r#"let n = answer("x").len(); add(1, `interpolated ${n}`)"#),
        (
            false,
            r#"let groups = []; for g in disqualifying_groups() { groups.push(g.name) } add(groups.len(), "g")"#,
        ),
        (
            true,
            r#"let g = disqualifying_groups(); add(g.len(), "groups"); if iclosed_disqualified() { disqualify("dq") }"#,
        ),
        (
            true,
            r#"let role = answer("role").to_lower(); if role.contains("vp") { add(20, "VP"); tag("decision-maker") }"#,
        ),
        (
            true,
            r#"add(1, answer("What is your role?")); add(2, answer("budget")); add(3, answer("Direct")); add(4, answer(""))"#,
        ),
        (
            true,
            r#"if has_answer("employees") { add(1, "e") } add(2, utm("source") + "/" + first_utm("source") + "/" + utm("medium"))"#,
        ),
        (
            true,
            r#"add(1, email_domain()); if is_free_email() { add(2, "free") } tag(5); tag(()); disqualify(1.5)"#,
        ),
        (
            true,
            r#"let c = contact.latestCall; if c != () && c.dateTime != () { add(15, c.dateTime) } add(1, contact.latestCall.user.email)"#,
        ),
        (
            true,
            r#"add(1, contact.missing); if contact.id == 1 { add(2, "one") }"#,
        ),
        (false, r#"let c = contact; add(1, c.id)"#),
        (false, r#"add(1, contact["id"])"#),
        (false, r#"add(1, contact?.latestCall)"#),
        (false, r#"answer(5)"#),
        (false, r#"let a = [answer("x"), 2]; add(1, a[1])"#),
        (false, r#"let one = answer("x").len() + 1; add(-one, "neg")"#),
        // The scoring time and the contact's history (SPEC 12).
        (
            true,
            r#"add(1, now()); add(2, first_seen()); if now() == first_seen() { add(4, "fresh") }"#,
        ),
        (
            true,
            r#"let t = now(); if t.starts_with("2026-11-09T12:00:00.000") && t.ends_with("Z") { add(t.len(), t) }"#,
        ),
        (
            true,
            r#"let d = days_since(first_seen()); if d == () { add(1, "unknown") } else if d > 7.0 { add(2, "week") } else { add(4, d) }"#,
        ),
        (
            true,
            r#"if days_since(now()) == 0.0 { add(1, "zero") } if days_since("2026-11-02T12:00:00Z") == 7.0 { add(2, "week") } if days_since("2099-01-01T00:00:00+02:00") < 0.0 { add(4, "future") }"#,
        ),
        (
            true,
            r#"if days_since("yesterday") == () { add(1, "a") } if days_since(5) == () { add(2, "b") } if days_since(()) == () { add(4, "c") } if days_since([]) == () { add(8, "d") }"#,
        ),
        (
            true,
            r#"let c = contact.latestCall; if c != () { add(days_since(c.dateTime), "since the call") }"#,
        ),
        (
            true,
            r#"let c = calls(); add(c.len(), "calls"); if c.is_empty() { add(1000, "none") } if c.contains("booked") { add(1, "never: maps") }"#,
        ),
        (
            false,
            r#"let c = calls(); if c.len() > 0 { add(1, c[0].status + "/" + c[0].start_time + "/" + c[0].event_type) }"#,
        ),
        (
            false,
            r#"for c in calls() { add(1, c.status); if c.start_time != () { add(2, `${c.start_time}`) } tag(c.event_type) }"#,
        ),
        (false, r#"let f = || now(); add(1, f.call())"#),
        (false, r#"fn now() { "fake" } add(1, now())"#),
        (false, r#"let f = Fn("calls"); add(f.call().len(), "pointer")"#),
    ];

    #[test]
    fn native_evaluation_gives_the_same_outcome_as_rhai() {
        let limits = Limits::default();
        let contacts = contacts();
        let contexts = contexts();
        for (native_expected, script) in SNIPPETS {
            let native = rule_set(script, &limits);
            let rhai = rule_set(script, &limits).interpreted_only();
            let mut finished_natively = 0;
            for (at, contact) in contexts
                .iter()
                .flat_map(|at| contacts.iter().map(move |c| (at, c)))
            {
                let expected = rhai.evaluate(contact, at);
                let on = || format!("{script} on {} with {at:?}", contact.root());
                assert_eq!(native.evaluate(contact, at), expected, "{}", on());
                if let Some(alone) = native.evaluate_native_only(contact, at) {
                    assert_eq!(alone, expected, "{}", on());
                    finished_natively += 1;
                }
            }
            if *native_expected {
                assert!(finished_natively > 0, "{script}: never finished natively");
            } else {
                assert!(
                    finished_natively < contacts.len() * contexts.len(),
                    "{script}: expected Rhai to take over at least once"
                );
            }
        }
    }

    #[test]
    fn limits_are_left_to_rhai() {
        // Fewer operations than the rule needs: Rhai's error, not a native result.
        let limits = Limits {
            max_operations: 20,
            ..Limits::default()
        };
        let script = r#"let a = answer("role"); let b = a.to_lower(); if b == "x" { add(1, "x") } else if b.contains("vp") { add(2, "vp") } else { add(3, "other") }"#;
        let native = rule_set(script, &limits);
        let rhai = rule_set(script, &limits).interpreted_only();
        let at = ScoringContext::at(scoring_time());
        for contact in contacts() {
            let expected = rhai.evaluate(&contact, &at);
            assert_eq!(expected.errors.len(), 1, "{expected:?}");
            assert_eq!(native.evaluate(&contact, &at), expected);
        }
        // Text longer than the string limit.
        let limits = Limits {
            max_string_size: 8,
            ..Limits::default()
        };
        let script = r#"add(1, "12345" + "67890")"#;
        let native = rule_set(script, &limits);
        let rhai = rule_set(script, &limits).interpreted_only();
        let contact = &contacts()[0];
        assert_eq!(rhai.evaluate(contact, &at).errors.len(), 1);
        assert_eq!(native.evaluate(contact, &at), rhai.evaluate(contact, &at));
        assert!(native.evaluate_native_only(contact, &at).is_none());
        // More calls than the array limit allows: Rhai's error both ways.
        let limits = Limits {
            max_array_size: 50,
            ..Limits::default()
        };
        let script = r#"add(calls().len(), "calls")"#;
        let native = rule_set(script, &limits);
        let rhai = rule_set(script, &limits).interpreted_only();
        let contexts = contexts();
        let at = &contexts[2];
        let expected = rhai.evaluate(contact, at);
        assert_eq!(expected.errors.len(), 1, "{expected:?}");
        assert!(expected.errors[0].error.contains("Size of array"), "{expected:?}");
        assert_eq!(native.evaluate(contact, at), expected);
        assert!(native.evaluate_native_only(contact, at).is_none());
        // A contact's map with more entries than the map limit: left to Rhai,
        // and the same outcome both ways.
        let limits = Limits {
            max_map_size: 2,
            ..Limits::default()
        };
        let script = r#"let t = contact.tracking; if t != () { add(1, "tracked") }"#;
        let native = rule_set(script, &limits);
        let rhai = rule_set(script, &limits).interpreted_only();
        let at = ScoringContext::at(scoring_time());
        let mut left_to_rhai = 0;
        for contact in contacts() {
            assert_eq!(native.evaluate(&contact, &at), rhai.evaluate(&contact, &at));
            let big = contact
                .root()
                .get("tracking")
                .and_then(|t| t.members())
                .is_some_and(|m| m.len() > 2);
            assert_eq!(native.evaluate_native_only(&contact, &at).is_none(), big);
            left_to_rhai += usize::from(big);
        }
        assert!(left_to_rhai > 0, "no contact has a tracking map over the limit");
    }

    #[test]
    fn translation_skips_rules_it_cannot_start() {
        let limits = Limits::default();
        assert_eq!(rule_set("loop { }", &limits).native_rule_count(), 0);
        assert_eq!(
            rule_set(r#"fn to_string(x) { "" } add(1, "a")"#, &limits).native_rule_count(),
            0
        );
        assert_eq!(rule_set(r#"add(1, "a")"#, &limits).native_rule_count(), 1);
        assert_eq!(
            rule_set(r#"add(1, "a")"#, &limits)
                .interpreted_only()
                .native_rule_count(),
            0
        );
    }
}
