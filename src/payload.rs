//! Webhook bodies → contacts (SPEC 1 and 4): an array of contact objects or
//! a single object, each with an `id` that is a number or a string. Each
//! contact is kept byte for byte as received, beside its parsed value.

use std::sync::Arc;

use serde_json::Value;
use serde_json::value::RawValue;

mod tree;

pub use tree::{JsonNode, JsonTree};

/// Deepest nesting of arrays and objects a body may have (SPEC 4).
pub const MAX_DEPTH: usize = 128;

/// JSON text that a parse has read as valid, kept as it is. It serializes
/// as that text, as serde_json's `RawValue` does; unlike `Box<RawValue>`, it
/// can be made from text a parse already checked without a second,
/// validating scan (BENCHMARKS.md, session 13: a quarter of a contact's parse).
#[derive(Clone, PartialEq, Eq)]
pub struct RawJson(Box<str>);

impl RawJson {
    pub fn get(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RawJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RawJson")
            .field(&format_args!("{}", self.0))
            .finish()
    }
}

impl From<Box<RawValue>> for RawJson {
    fn from(raw: Box<RawValue>) -> Self {
        Self(raw.into())
    }
}

/// Written exactly as `RawValue` writes itself (serde_json 1.x's raw-value
/// token, which its serializers recognise): the text as it is. The test
/// `raw_json_serializes_as_raw_value_does` pins this to `RawValue`'s output.
impl serde::Serialize for RawJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        const TOKEN: &str = "$serde_json::private::RawValue";
        let mut raw = serializer.serialize_struct(TOKEN, 1)?;
        raw.serialize_field(TOKEN, &*self.0)?;
        raw.end()
    }
}

impl<'de> serde::Deserialize<'de> for RawJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(Self::from)
    }
}

/// One received contact.
#[derive(Debug, Clone)]
pub struct Contact {
    /// The contact's `id` with its JSON type (number or string).
    pub id: Value,
    /// The contact's identity as text (see [`id_key`]): equal ids, equal keys.
    pub key: String,
    /// The contact's JSON exactly as received.
    pub raw: RawJson,
    /// The parsed contact the rules read.
    pub tree: Arc<JsonTree>,
}

impl Contact {
    /// Parses one contact object from its JSON text, whose nesting the caller
    /// has already bounded (see [`parse_body`]).
    pub fn from_raw(raw: &RawValue) -> Result<Self, String> {
        let (raw, tree) = compact_object(raw.get())?;
        Self::from_parsed(raw, tree)
    }

    /// A contact from an element already made compact and parsed.
    fn from_parsed(raw: RawJson, tree: JsonTree) -> Result<Self, String> {
        let root = tree.root();
        if !root.is_object() {
            return Err(format!("is a JSON {}, not an object", root.kind()));
        }
        let id = match root.get("id") {
            Some(id) if id.as_number().is_some() || id.as_str().is_some() => id.to_value(),
            Some(other) => {
                return Err(format!(
                    "has an `id` that is a JSON {}; it must be a number or a string",
                    other.kind()
                ));
            }
            None => return Err("has no `id`".to_owned()),
        };
        let key = id_key(&id, &raw);
        Ok(Self {
            id,
            key,
            raw,
            tree: Arc::new(tree),
        })
    }

    /// The parsed contact.
    pub fn root(&self) -> JsonNode<'_> {
        self.tree.root()
    }

    /// The parsed contact as a `serde_json::Value`.
    pub fn to_value(&self) -> Value {
        self.root().to_value()
    }

    /// `email` as compared (SPEC 11: trimmed, lower-cased); `None` when it
    /// is not a non-empty string.
    pub fn email(&self) -> Option<String> {
        self.root()
            .get("email")
            .and_then(JsonNode::as_str)
            .and_then(crate::ingest::hooks::normal_email)
    }

    /// Parses a contact from a JSON value (rule tests, inline contacts).
    pub fn from_value(value: &Value) -> Result<Self, String> {
        let text = value.to_string();
        if too_deep(&text) {
            return Err(PayloadError::TooDeep.to_string());
        }
        let (raw, tree) = compact_object(&text)?;
        Self::from_parsed(raw, tree)
    }

    /// The id as shown in logs: strings without quotes.
    pub fn id_text(&self) -> String {
        match &self.id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

/// The identity of a contact id, as text: a string is its JSON text
/// (`"abc"`), a number its exact value written in one way. So `1`, `1.0` and
/// `1e0` are one contact, and integers past 64 bits keep every digit
/// (`18446744073709551616` and `…617` are two contacts, though a 64-bit float
/// holds neither exactly). Numbers that `serde_json` holds exactly (64-bit
/// integers) are written as it writes them; others are read from the raw text.
pub fn id_key(id: &Value, raw: &RawJson) -> String {
    match id {
        Value::Number(n) if n.is_f64() => raw_id(raw).map_or_else(|| n.to_string(), exact_number),
        other => other.to_string(),
    }
}

/// The raw text of a contact object's `id`.
fn raw_id(raw: &RawJson) -> Option<&str> {
    #[derive(serde::Deserialize)]
    struct IdOnly<'a> {
        #[serde(borrow)]
        id: &'a RawValue,
    }
    parse_json::<IdOnly>(raw.get()).ok().map(|only| only.id.get())
}

/// A JSON number's value in one canonical form: an integer in plain digits
/// (up to 40 of them), a small decimal as `1.25`, anything else as
/// `d.ddde±N`. Equal values give equal text; the text is never longer than
/// the number's own plus an exponent.
fn exact_number(text: &str) -> String {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], &unsigned[at + 1..]),
        None => (unsigned, "0"),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    // An exponent past ±10^15 only comes from hostile input; saturate it.
    let exponent: i64 = exponent.parse().unwrap_or(if exponent.starts_with('-') {
        -1_000_000_000_000_000
    } else {
        1_000_000_000_000_000
    });
    let digits: String = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    let trimmed = digits.trim_end_matches('0');
    if trimmed.is_empty() {
        return "0".to_owned();
    }
    // value = trimmed × 10^scale
    let scale = exponent
        .saturating_sub(fraction.len() as i64)
        .saturating_add((digits.len() - trimmed.len()) as i64);
    let sign = if negative { "-" } else { "" };
    let length = trimmed.len() as i64;
    if scale >= 0 && length + scale <= 40 {
        return format!("{sign}{trimmed}{}", "0".repeat(scale as usize));
    }
    if scale < 0 && -scale <= 40 && length <= 40 {
        let point = length + scale;
        return if point > 0 {
            let (int, frac) = trimmed.split_at(point as usize);
            format!("{sign}{int}.{frac}")
        } else {
            format!("{sign}0.{}{trimmed}", "0".repeat((-point) as usize))
        };
    }
    let (first, rest) = trimmed.split_at(1);
    let point = if rest.is_empty() { "" } else { "." };
    format!("{sign}{first}{point}{rest}e{}", scale.saturating_add(length - 1))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Why a body was refused. The HTTP layer maps these to status codes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("body is not valid UTF-8 (byte {0})")]
    InvalidUtf8(usize),
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("body nests arrays and objects deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("body must be a JSON object or an array of objects, not a JSON {0}")]
    NotObjectOrArray(&'static str),
    #[error("contact #{index} {problem}")]
    InvalidContact { index: usize, problem: String },
    #[error("body has {count} contacts; at most {max} are accepted per request")]
    TooManyContacts { count: usize, max: usize },
}

/// Splits a webhook body into its contacts, checking everything SPEC 4 names.
/// `max_contacts` bounds the contacts of one body.
pub fn parse_body(body: &[u8], max_contacts: usize) -> Result<Vec<Contact>, PayloadError> {
    split_body(body, max_contacts)?
        .into_iter()
        .enumerate()
        .map(|(i, (raw, tree))| {
            Contact::from_parsed(raw, tree).map_err(|problem| PayloadError::InvalidContact {
                index: i + 1,
                problem,
            })
        })
        .collect()
}

/// One element of a webhook body (SPEC 11 "Kinds").
#[derive(Debug, Clone)]
pub enum Element {
    Contact(Contact),
    Hook(Hook),
}

/// A call, outcome or unknown hook, kept as received beside its value.
#[derive(Debug, Clone)]
pub struct Hook {
    pub kind: HookKind,
    /// The element's JSON, compact (layout removed, nothing else changed).
    pub raw: RawJson,
    pub tree: JsonTree,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    Call,
    Outcome,
    Unknown,
}

impl HookKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Call => "call",
            Self::Outcome => "outcome",
            Self::Unknown => "unknown",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "call" => Some(Self::Call),
            "outcome" => Some(Self::Outcome),
            "unknown" => Some(Self::Unknown),
            _ => None,
        }
    }
}

/// What an element is (SPEC 11): by `hookType` when it is a string, else by
/// shape (a `callOutcome` field: an outcome; `event` and `invitee` objects:
/// a call; anything else: a contact).
pub fn classify(element: JsonNode<'_>) -> Option<HookKind> {
    if !element.is_object() {
        return None;
    }
    if let Some(hook_type) = element.get("hookType").and_then(JsonNode::as_str) {
        return match hook_type.trim().to_ascii_lowercase().as_str() {
            "contact created" | "contact updated" => None,
            "call booked" | "call rescheduled" | "call canceled" | "call cancelled" => Some(HookKind::Call),
            "outcome added" => Some(HookKind::Outcome),
            _ => Some(HookKind::Unknown),
        };
    }
    if element.get("callOutcome").is_some() {
        return Some(HookKind::Outcome);
    }
    if element.get("event").is_some_and(JsonNode::is_object)
        && element.get("invitee").is_some_and(JsonNode::is_object)
    {
        return Some(HookKind::Call);
    }
    None
}

/// Splits a webhook body into its elements (SPEC 4 and 11): contacts, which
/// must have an `id`, and call, outcome and unknown hooks. `max_elements`
/// bounds the elements of one body, whatever their kind.
pub fn parse_webhook(body: &[u8], max_elements: usize) -> Result<Vec<Element>, PayloadError> {
    split_body(body, max_elements)?
        .into_iter()
        .enumerate()
        .map(|(i, (raw, tree))| match classify(tree.root()) {
            Some(kind) => Ok(Element::Hook(Hook { kind, raw, tree })),
            None => Contact::from_parsed(raw, tree)
                .map(Element::Contact)
                .map_err(|problem| PayloadError::InvalidContact {
                    index: i + 1,
                    problem,
                }),
        })
        .collect()
}

/// An element's compact text and its parsed tree (which checks the text).
fn compact_object(text: &str) -> Result<(RawJson, JsonTree), String> {
    let raw = match minify(text) {
        Some(compact) => compact.into_boxed_str(),
        None => text.into(),
    };
    let tree = JsonTree::parse(&raw).map_err(|e| e.to_string())?;
    Ok((RawJson(raw), tree))
}

/// A body's elements, compact and parsed, after the checks every body gets.
fn split_body(body: &[u8], max_elements: usize) -> Result<Vec<(RawJson, JsonTree)>, PayloadError> {
    let text = std::str::from_utf8(body).map_err(|e| PayloadError::InvalidUtf8(e.valid_up_to()))?;
    if too_deep(text) {
        return Err(PayloadError::TooDeep);
    }
    // The usual body: each element parsed once, which checks it, its end
    // found by that parse. Anything else, and every refusal, takes the
    // validating path below, whose errors are the ones to report.
    if let Some(elements) = parse_elements(text, max_elements) {
        return Ok(elements);
    }
    validating_split(text, max_elements)
}

/// [`split_body`]'s path for what the quick one ([`parse_elements`]) does not take: the body
/// read as raw JSON elements by serde_json (which checks it), then each
/// element parsed.
fn validating_split(text: &str, max_elements: usize) -> Result<Vec<(RawJson, JsonTree)>, PayloadError> {
    let invalid = |e: serde_json::Error| PayloadError::InvalidJson(e.to_string());
    let first = text.bytes().find(|b| !is_json_space(*b));
    let items: Vec<Box<RawValue>> = match first {
        Some(b'[') => parse_json(text).map_err(invalid)?,
        Some(b'{') => vec![parse_json(text).map_err(invalid)?],
        _ => {
            let value: Value = parse_json(text).map_err(invalid)?;
            return Err(PayloadError::NotObjectOrArray(kind(&value)));
        }
    };
    if items.len() > max_elements {
        return Err(PayloadError::TooManyContacts {
            count: items.len(),
            max: max_elements,
        });
    }
    items
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            compact_object(raw.get()).map_err(|problem| PayloadError::InvalidContact {
                index: i + 1,
                problem,
            })
        })
        .collect()
}

fn is_json_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// A body's elements, each compact and parsed once: an object is its own
/// one element; an array's elements are read one after the other, each
/// parse finding where its element ends. `None` for anything else (another
/// first byte, invalid JSON, an empty array, more than `max_elements`): the
/// caller's validating path then answers.
fn parse_elements(text: &str, max_elements: usize) -> Option<Vec<(RawJson, JsonTree)>> {
    if max_elements == 0 {
        return None;
    }
    let text = text.trim_matches([' ', '\t', '\n', '\r']);
    if text.starts_with('{') {
        return compact_object(text).ok().map(|element| vec![element]);
    }
    let inner = text.strip_prefix('[')?.strip_suffix(']')?;
    let mut rest = inner.trim_start_matches([' ', '\t', '\n', '\r']);
    let mut elements = Vec::new();
    while !rest.is_empty() && elements.len() < max_elements {
        let mut de = serde_json::Deserializer::from_str(rest);
        de.disable_recursion_limit();
        let mut values = de.into_iter::<tree::StreamedTree>();
        let Some(Ok(tree::StreamedTree(tree))) = values.next() else {
            return None;
        };
        // Where the value ends: a number, `true`, `false` or `null` must be
        // followed by a delimiter or the end, which serde_json checks.
        let (element, after) = rest.split_at(values.byte_offset());
        let raw = minify(element).map_or_else(|| element.into(), String::into_boxed_str);
        elements.push((RawJson(raw), tree));
        let after = after.trim_start_matches([' ', '\t', '\n', '\r']);
        if after.is_empty() {
            return Some(elements);
        }
        rest = after
            .strip_prefix(',')?
            .trim_start_matches([' ', '\t', '\n', '\r']);
        if rest.is_empty() {
            return None;
        }
    }
    None
}

/// The identity a hook's `contactId` is compared by (SPEC 11: numbers and
/// strings by value): a contact key (see [`id_key`]) with a string of a
/// plain integer (`"48213"`) read as that number.
pub fn loose_key(contact_key: &str) -> std::borrow::Cow<'_, str> {
    if let Some(inner) = contact_key.strip_prefix('"').and_then(|k| k.strip_suffix('"'))
        && !inner.is_empty()
        && inner.len() <= 40
        && inner.bytes().all(|b| b.is_ascii_digit())
        && (inner == "0" || !inner.starts_with('0'))
    {
        return std::borrow::Cow::Owned(inner.to_owned());
    }
    std::borrow::Cow::Borrowed(contact_key)
}

/// The contact key of a hook's `contactId` value (a number or a string;
/// anything else names no contact), in its [`loose_key`] form.
pub fn reference_key(value: JsonNode<'_>) -> Option<String> {
    let key = match (value.as_number(), value.as_str()) {
        (Some(n), _) if n.is_f64() => exact_number(&n.to_string()),
        (Some(n), _) => n.to_string(),
        (_, Some(s)) if !s.trim().is_empty() => Value::String(s.trim().to_owned()).to_string(),
        _ => return None,
    };
    Some(loose_key(&key).into_owned())
}

/// The JSON text without whitespace outside strings, or `None` when it is
/// already on one line. Keys, their order, numbers and escapes stay exactly
/// as received; only the layout goes, so that a contact fits on one line.
/// (A raw line break can only be layout: inside a JSON string it must be
/// escaped, so text without one needs no change.)
pub fn minify(text: &str) -> Option<String> {
    memchr::memchr2(b'\n', b'\r', text.as_bytes())?;
    let bytes = text.as_bytes();
    let (mut in_string, mut escaped) = (false, false);
    let mut first_space = None;
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if b.is_ascii_whitespace() {
            first_space = Some(i);
            break;
        }
    }
    let start = first_space?;
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..start]);
    for &b in &bytes[start..] {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if b.is_ascii_whitespace() {
            continue;
        }
        out.push(b);
    }
    // Only ASCII whitespace bytes were removed, so the text is still UTF-8.
    String::from_utf8(out).ok()
}

/// Parses JSON without serde_json's own depth limit (127 levels): callers
/// bound the depth with [`nesting_depth`] first, so that exactly
/// [`MAX_DEPTH`] levels are accepted as SPEC 4 says.
pub fn parse_json<'a, T: serde::Deserialize<'a>>(text: &'a str) -> Result<T, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    de.disable_recursion_limit();
    let value = T::deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Whether `text` nests arrays and objects deeper than [`MAX_DEPTH`].
pub fn too_deep(text: &str) -> bool {
    // Most bodies hold fewer brackets in all than the limit allows in depth:
    // counting them is a fast vectorised pass, the exact scan is not.
    opening_brackets(text.as_bytes()) > MAX_DEPTH && nesting_depth(text) > MAX_DEPTH
}

/// How many `[` and `{` a text holds, strings included. `b | 0x20` is `{`
/// for exactly these two bytes, and counting 64 bytes at a time into a byte
/// lets the compiler vectorize the loop: 0.5 instructions per byte against
/// 5.3 for a `filter().count()` with two comparisons, run on every body
/// (BENCHMARKS.md, session 12; a `fold` over the chunk was not vectorized).
fn opening_brackets(bytes: &[u8]) -> usize {
    let is_open = |b: u8| u8::from((b | 0x20) == b'{');
    let mut chunks = bytes.chunks_exact(64);
    let mut count = 0;
    for chunk in chunks.by_ref() {
        let mut in_chunk = 0u8; // at most 64
        for &b in chunk {
            in_chunk += is_open(b);
        }
        count += usize::from(in_chunk);
    }
    count + chunks.remainder().iter().filter(|&&b| is_open(b) == 1).count()
}

/// The deepest nesting of `[`/`{` outside strings. Run before parsing so that
/// the limit is exactly [`MAX_DEPTH`] whatever the parser's own limit is.
pub fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in text.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    /// The quick split and the validating one agree on every body: the same
    /// elements, byte for byte, or the same refusal.
    #[test]
    fn the_quick_split_agrees_with_the_validating_one() {
        let line = include_str!("../benches/data/contacts-1000-seed7.jsonl")
            .lines()
            .next()
            .unwrap();
        let bodies = [
            line,
            r#"{"id": 1}"#,
            " \r\n\t{\"id\": 1}\n ",
            "[]",
            " [ ] ",
            r#"[{"id":1},{"id":2}]"#,
            "[ {\"id\" :\n 1 } ,\n\t{\"id\":2}\r\n ]",
            r#"[{"id":"a,b]}","n":"\\"},{"id":"\"]","x":[1,{"y":"}"}]}]"#,
            r#"[1, "two", null, [3], {"id": 4}]"#,
            r#"{"id": 1, "q": "\u00e9\ud83d\ude00"}"#,
            // refused, each for its own reason
            "",
            "   ",
            "[",
            "]",
            "[,]",
            r#"[{"id":1},]"#,
            r#"[,{"id":1}]"#,
            r#"[{"id":1} {"id":2}]"#,
            r#"[{"id":1}}, {"id":2}]"#,
            r#"[{"id":1},{"id":2}"#,
            r#"[{"id":1]"#,
            r#"["abc]"#,
            r#"["abc\"]"#,
            r#"["abc\]"#,
            r#"{"id":1} x"#,
            r#"{"id":1}}"#,
            r#"{"id":1"#,
            r#"{"id":"a	b"}"#,
            "[{\"id\":1}]\u{a0}",
            "\u{feff}{\"id\":1}",
            r#"3"#,
            r#""text""#,
            "null",
            r#"[1, 2, 3]"#,
        ];
        // Elements as comparable values.
        let values = |elements: Vec<(RawJson, JsonTree)>| -> Vec<(RawJson, Value)> {
            elements
                .into_iter()
                .map(|(raw, tree)| (raw, tree.root().to_value()))
                .collect()
        };
        for body in &bodies[..10] {
            // The valid ones (but an empty array) are read by the quick path itself.
            let checked = values(validating_split(body, 100).unwrap());
            match parse_elements(body, 100) {
                Some(quick) => assert_eq!(values(quick), checked, "{body:?}"),
                None => assert!(checked.is_empty(), "{body:?} left to the validating path"),
            }
        }
        for body in bodies {
            for max in [1, 2, 100] {
                let quick = split_body(body.as_bytes(), max).map(values);
                let checked = validating_split(body, max).map(values);
                assert_eq!(quick, checked, "{body:?} (at most {max})");
            }
        }
        assert_eq!(
            split_body(b"[1, 2, 3]", 2).map(values),
            Err(PayloadError::TooManyContacts { count: 3, max: 2 })
        );
        let (raw, _) = &split_body(b" [ {\"id\" :\n 1 } ,{\"id\":2}\t] ", 9).unwrap()[0];
        assert_eq!(raw.get(), "{\"id\":1}", "compact: the layout removed");
    }

    /// `RawJson` is written exactly as serde_json's `RawValue`, by the
    /// serializer and into a `Value` alike.
    #[test]
    fn raw_json_serializes_as_raw_value_does() {
        let text = r#"{"b": 1.50, "a": [1e2, "\u00e9"]}"#;
        let ours = RawJson::from(RawValue::from_string(text.to_owned()).unwrap());
        let theirs = RawValue::from_string(text.to_owned()).unwrap();
        assert_eq!(serde_json::to_string(&ours).unwrap(), text);
        assert_eq!(
            serde_json::to_string(&ours).unwrap(),
            serde_json::to_string(&theirs).unwrap()
        );
        assert_eq!(
            serde_json::to_value(&ours).unwrap(),
            serde_json::to_value(&theirs).unwrap()
        );
        let back: RawJson = serde_json::from_str(&format!("[{text}]"))
            .map(|mut v: Vec<RawJson>| v.remove(0))
            .unwrap();
        assert_eq!(back, ours);
    }

    /// The exact-size parse gives what serde_json's own does: the same
    /// values, the same key order, a repeated key at its first place with
    /// its last value, numbers of every kind, escapes, empty and deep nesting.
    #[test]
    fn the_tree_reads_what_serde_json_reads() {
        let deep = format!("{}1{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        let texts = [
            r#"{"b": 1, "a": [true, false, null], "c": {"z": "\u00e9\n\"", "y": {}}, "d": []}"#,
            r#"{"k": 1, "j": 2, "k": 3}"#,
            r#"[18446744073709551615, -9223372036854775808, 18446744073709551616, 1.5e300, -0.0, 0.1, 1e-400]"#,
            r#""text""#,
            "12",
            "null",
            deep.as_str(),
            include_str!("../benches/data/contacts-1000-seed7.jsonl")
                .lines()
                .next()
                .unwrap(),
        ];
        for text in texts {
            let ours = JsonTree::parse(text).unwrap().root().to_value();
            let theirs: Value = parse_json(text).unwrap();
            assert_eq!(ours, theirs, "{text}");
            // Equal maps may differ in order; their texts may not.
            assert_eq!(ours.to_string(), theirs.to_string(), "{text}");
        }
        for bad in ["{", r#"{"a": }"#, "[1,]", "{} {}", r#"{"a": 1,}"#, "tru"] {
            assert!(JsonTree::parse(bad).is_err(), "{bad}");
        }
    }

    /// issue 19 (10): one contact per JSON number value, every digit kept.
    #[test]
    fn numeric_ids_are_keyed_by_their_exact_value() {
        let key = |id: &str| {
            Contact::from_raw(&RawValue::from_string(format!(r#"{{"id": {id}, "email": "a@b.c"}}"#)).unwrap())
                .unwrap()
                .key
        };
        for same in ["1", "1.0", "1e0", "10e-1", "0.1e1", "1.000E+0"] {
            assert_eq!(key(same), "1", "{same}");
        }
        assert_eq!(key("48213"), "48213");
        assert_eq!(key("-7"), "-7");
        assert_eq!(key("-0.0"), "0");
        assert_eq!(key("0"), "0");
        assert_eq!(key("18446744073709551615"), "18446744073709551615");
        assert_eq!(key("18446744073709551616"), "18446744073709551616");
        assert_eq!(key("18446744073709551617"), "18446744073709551617");
        assert_eq!(key("18446744073709551617.0"), "18446744073709551617");
        assert_eq!(key("1.5"), "1.5");
        assert_eq!(key("-0.025"), "-0.025");
        assert_eq!(key("2.5e-3"), "0.0025");
        assert_eq!(key("1e39"), format!("1{}", "0".repeat(39)), "40 digits");
        assert_eq!(key("1e40"), "1e40");
        assert_eq!(key("12.5e100"), "1.25e101");
        assert_eq!(key("1e-50"), "1e-50");
        assert_eq!(key("1e300"), "1e300");
        assert_eq!(
            key("-123456789012345678901234567890123456789012345"),
            "-1.23456789012345678901234567890123456789012345e44"
        );
        assert_eq!(key(r#""1""#), r#""1""#, "a string id stays a string");
    }

    use super::*;

    #[test]
    fn array_and_single_object_bodies() {
        let contacts = parse_body(br#"[{"id": 1, "a": [1,2]}, {"id": "x-2"}]"#, 10).unwrap();
        assert_eq!(contacts.len(), 2);
        assert_eq!(contacts[0].id, serde_json::json!(1));
        assert_eq!(
            contacts[0].raw.get(),
            r#"{"id": 1, "a": [1,2]}"#,
            "one line already: kept as sent"
        );
        assert_eq!(contacts[1].id_text(), "x-2");
        let single = parse_body(br#" {"id": 7.5, "email": null} "#, 10).unwrap();
        assert_eq!(single[0].id, serde_json::json!(7.5));
        assert!(parse_body(b"[]", 10).unwrap().is_empty());
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        assert_eq!(
            parse_body(b"\xff[]", 10).unwrap_err(),
            PayloadError::InvalidUtf8(0)
        );
        assert!(matches!(
            parse_body(b"[{\"id\":1}", 10),
            Err(PayloadError::InvalidJson(_))
        ));
        assert_eq!(
            parse_body(b"42", 10).unwrap_err(),
            PayloadError::NotObjectOrArray("number")
        );
        assert_eq!(
            parse_body(b"\"s\"", 10).unwrap_err(),
            PayloadError::NotObjectOrArray("string")
        );
        let err = parse_body(br#"[{"id":1},{"name":"x"}]"#, 10).unwrap_err();
        assert_eq!(err.to_string(), "contact #2 has no `id`");
        let err = parse_body(br#"[{"id":null}]"#, 10).unwrap_err();
        assert_eq!(
            err.to_string(),
            "contact #1 has an `id` that is a JSON null; it must be a number or a string"
        );
        assert!(matches!(
            parse_body(br#"[{"id":1}, 3]"#, 10),
            Err(PayloadError::InvalidContact { index: 2, .. })
        ));
        assert_eq!(
            parse_body(br#"[{"id":1},{"id":2},{"id":3}]"#, 2).unwrap_err(),
            PayloadError::TooManyContacts { count: 3, max: 2 }
        );
    }

    #[test]
    fn contacts_are_kept_as_received_but_on_one_line() {
        let body = "[{\"id\": 1e0,\n \"b\" : \"x y\\\" \\n\", \"a\": 12345678901234567890123, \"a\": 2}]";
        let contacts = parse_body(body.as_bytes(), 10).unwrap();
        assert_eq!(
            contacts[0].raw.get(),
            "{\"id\":1e0,\"b\":\"x y\\\" \\n\",\"a\":12345678901234567890123,\"a\":2}"
        );
        assert_eq!(minify("[1, 2]"), None);
        assert_eq!(minify("[1,\r\n 2]").as_deref(), Some("[1,2]"));
    }

    #[test]
    fn depth_limit_is_exactly_128() {
        let nested = |levels: usize| {
            format!(
                r#"{{"id":1,"x":{}{}}}"#,
                "[".repeat(levels - 1),
                "]".repeat(levels - 1)
            )
        };
        assert!(parse_body(nested(MAX_DEPTH).as_bytes(), 10).is_ok());
        assert_eq!(
            parse_body(nested(MAX_DEPTH + 1).as_bytes(), 10).unwrap_err(),
            PayloadError::TooDeep
        );
        assert_eq!(nesting_depth(r#"{"a":"[[[{{{\"[["}"#), 1);
    }

    #[test]
    fn many_brackets_are_not_depth() {
        // More brackets than the limit, but side by side or inside strings:
        // the quick count alone must not refuse the body.
        let wide = format!(
            r#"{{"id":1,"x":[{}],"s":"{}"}}"#,
            vec!["[]"; 200].join(","),
            "[{".repeat(100)
        );
        assert!(!too_deep(&wide));
        assert_eq!(parse_body(wide.as_bytes(), 10).unwrap().len(), 1);
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(too_deep(&deep));
        let at_limit = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(!too_deep(&at_limit));
    }

    #[test]
    fn opening_brackets_are_counted_exactly() {
        // Every byte value, at every position of a chunk and its remainder.
        let all: Vec<u8> = (0..=255u8).collect();
        for len in [0, 1, 31, 32, 33, 64, 100, 256] {
            for shift in [0, 7, 91, 123] {
                let bytes: Vec<u8> = all.iter().cycle().skip(shift).take(len).copied().collect();
                let expected = bytes.iter().filter(|&&b| b == b'[' || b == b'{').count();
                assert_eq!(opening_brackets(&bytes), expected, "{len} {shift}");
            }
        }
        assert_eq!(opening_brackets(&[b'{'; 1000]), 1000);
        assert_eq!(opening_brackets(&[b'['; 65]), 65);
        assert_eq!(opening_brackets(b"[{]}{[ 0x5b 0x7b ;{"), 5);
    }
}
