//! A parsed JSON value in a few flat buffers: what the rules, the digest and
//! the hooks read of a received element.
//!
//! Why not `serde_json::Value`: building one allocated every key and every
//! string of a contact on its own (about 190 allocations for a typical
//! contact) and hashed every key into an ordered map; building it and
//! dropping it was half of the instructions a contact cost to parse, score
//! and serialize (BENCHMARKS.md, session 15). Here every key and string is
//! appended to one text, every node to one vector, and each object's
//! members and each array's items are runs of one vector each: a handful of
//! allocations per element, whatever its size. Objects are read by a scan of
//! their members (contacts have a few dozen keys at most per object), those
//! of more than 64 members through their keys sorted, so that a hostile
//! body's large object costs a binary search per read.
//!
//! It reads as `serde_json::Value` reads, key for key: numbers are
//! `serde_json::Number`s parsed by serde_json, and a key repeated in one
//! object keeps its first place with its last value.

use std::collections::HashMap;
use std::fmt;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

/// A run of [`JsonTree`]'s text or of one of its vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    fn range(self) -> std::ops::Range<usize> {
        self.start..self.end
    }

    fn len(self) -> usize {
        self.end - self.start
    }
}

#[derive(Debug, Clone)]
enum Slot {
    Null,
    Bool(bool),
    Number(Number),
    /// A run of the text.
    String(Span),
    /// A run of the items.
    Array(Span),
    /// A run of the members.
    Object(Span),
}

/// One parsed JSON value (see the module's documentation).
#[derive(Clone)]
pub struct JsonTree {
    /// Every key and string, unescaped, one after the other.
    text: String,
    /// Every value; a value's children come before it, the root last.
    slots: Vec<Slot>,
    /// Arrays' items, as indexes of `slots`.
    items: Vec<usize>,
    /// Objects' members: the key (a run of `text`) and the value's slot.
    members: Vec<(Span, usize)>,
    /// For each object of more than [`SCAN_KEYS_UP_TO`] members, in the
    /// order they were closed (so by where their members start): where its
    /// members start, and where their places sorted by key start in `sorted`.
    indexed: Vec<(usize, usize)>,
    /// Places in `members`, each indexed object's sorted by key: a key of a
    /// large object is found by binary search, not by a scan, so that a rule
    /// reading a field in a loop costs no more per read on a hostile body.
    sorted: Vec<usize>,
}

impl JsonTree {
    /// Parses one JSON value, without serde_json's depth limit (the caller
    /// bounds nesting first: `payload::too_deep`).
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        de.disable_recursion_limit();
        let tree = Builder::new(text.len()).build(&mut de)?;
        de.end()?;
        Ok(tree)
    }

    /// The tree of a `serde_json::Value` (tests, values made in code).
    pub fn from_value(value: &Value) -> Self {
        let mut builder = Builder::new(0);
        builder.add_value(value);
        builder.tree
    }

    /// The whole value.
    pub fn root(&self) -> JsonNode<'_> {
        JsonNode {
            tree: self,
            slot: self.slots.last().expect("a parsed tree has a root"),
        }
    }
}

impl fmt::Debug for JsonTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonTree({})", self.root())
    }
}

/// A value inside a [`JsonTree`], read as `serde_json::Value` is.
#[derive(Clone, Copy)]
pub struct JsonNode<'a> {
    tree: &'a JsonTree,
    slot: &'a Slot,
}

impl<'a> JsonNode<'a> {
    fn at(self, slot: usize) -> JsonNode<'a> {
        JsonNode {
            tree: self.tree,
            slot: &self.tree.slots[slot],
        }
    }

    fn text(self, span: Span) -> &'a str {
        &self.tree.text[span.range()]
    }

    /// The member `key` of an object; `None` for a missing key or another kind.
    pub fn get(self, key: &str) -> Option<JsonNode<'a>> {
        self.get_key_value(key).map(|(_, value)| value)
    }

    /// [`Self::get`] with the key as the tree holds it.
    pub fn get_key_value(self, key: &str) -> Option<(&'a str, JsonNode<'a>)> {
        let Slot::Object(span) = self.slot else {
            return None;
        };
        let tree = self.tree;
        let bytes = tree.text.as_bytes();
        let members = &tree.members[span.range()];
        let place = if members.len() > SCAN_KEYS_UP_TO {
            let (_, sorted_start) =
                tree.indexed[tree.indexed.partition_point(|&(start, _)| start < span.start)];
            let order = &tree.sorted[sorted_start..sorted_start + members.len()];
            let found =
                order.binary_search_by(|&place| bytes[tree.members[place].0.range()].cmp(key.as_bytes()));
            order[found.ok()?]
        } else {
            // Lengths first: most keys differ in length, and comparing bytes
            // skips the character-boundary checks of slicing a `str`.
            span.start
                + members
                    .iter()
                    .position(|(k, _)| k.len() == key.len() && &bytes[k.range()] == key.as_bytes())?
        };
        let (k, value) = tree.members[place];
        Some((self.text(k), self.at(value)))
    }

    /// The value at a JSON pointer (RFC 6901: `/event/uuid`), as
    /// `serde_json::Value::pointer` finds it.
    pub fn pointer(self, pointer: &str) -> Option<JsonNode<'a>> {
        if pointer.is_empty() {
            return Some(self);
        }
        let tokens = pointer.strip_prefix('/')?;
        tokens.split('/').try_fold(self, |node, token| {
            let token = token.replace("~1", "/").replace("~0", "~");
            match node.slot {
                Slot::Object(_) => node.get(&token),
                Slot::Array(span) => {
                    // As serde_json: decimal digits, no sign or leading zero.
                    if token.starts_with('+') || (token.len() > 1 && token.starts_with('0')) {
                        return None;
                    }
                    let index: usize = token.parse().ok()?;
                    node.tree.items[span.range()]
                        .get(index)
                        .map(|&item| node.at(item))
                }
                _ => None,
            }
        })
    }

    /// An object's members in the order received; `None` for another kind.
    pub fn members(self) -> Option<impl ExactSizeIterator<Item = (&'a str, JsonNode<'a>)> + Clone + 'a> {
        match self.slot {
            Slot::Object(span) => Some(
                self.tree.members[span.range()]
                    .iter()
                    .map(move |&(key, value)| (self.text(key), self.at(value))),
            ),
            _ => None,
        }
    }

    /// An array's items; `None` for another kind.
    pub fn items(self) -> Option<impl ExactSizeIterator<Item = JsonNode<'a>> + Clone + 'a> {
        match self.slot {
            Slot::Array(span) => Some(
                self.tree.items[span.range()]
                    .iter()
                    .map(move |&item| self.at(item)),
            ),
            _ => None,
        }
    }

    pub fn as_str(self) -> Option<&'a str> {
        match self.slot {
            Slot::String(span) => Some(self.text(*span)),
            _ => None,
        }
    }

    pub fn as_number(self) -> Option<&'a Number> {
        match self.slot {
            Slot::Number(n) => Some(n),
            _ => None,
        }
    }

    pub fn as_bool(self) -> Option<bool> {
        match self.slot {
            Slot::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn is_null(self) -> bool {
        matches!(self.slot, Slot::Null)
    }

    pub fn is_object(self) -> bool {
        matches!(self.slot, Slot::Object(_))
    }

    pub fn is_array(self) -> bool {
        matches!(self.slot, Slot::Array(_))
    }

    /// The JSON type's name, for messages.
    pub fn kind(self) -> &'static str {
        match self.slot {
            Slot::Null => "null",
            Slot::Bool(_) => "boolean",
            Slot::Number(_) => "number",
            Slot::String(_) => "string",
            Slot::Array(_) => "array",
            Slot::Object(_) => "object",
        }
    }

    /// The same value as a `serde_json::Value`.
    pub fn to_value(self) -> Value {
        match self.slot {
            Slot::Null => Value::Null,
            Slot::Bool(b) => Value::Bool(*b),
            Slot::Number(n) => Value::Number(n.clone()),
            Slot::String(span) => Value::String(self.text(*span).to_owned()),
            Slot::Array(_) => Value::Array(self.items().into_iter().flatten().map(Self::to_value).collect()),
            Slot::Object(_) => Value::Object(
                self.members()
                    .into_iter()
                    .flatten()
                    .map(|(key, value)| (key.to_owned(), value.to_value()))
                    .collect(),
            ),
        }
    }
}

impl serde::Serialize for JsonNode<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.slot {
            Slot::Null => serializer.serialize_unit(),
            Slot::Bool(b) => serializer.serialize_bool(*b),
            Slot::Number(n) => n.serialize(serializer),
            Slot::String(span) => serializer.serialize_str(self.text(*span)),
            Slot::Array(span) => {
                let mut seq = serializer.serialize_seq(Some(span.end - span.start))?;
                for item in self.items().into_iter().flatten() {
                    seq.serialize_element(&item)?;
                }
                seq.end()
            }
            Slot::Object(span) => {
                let mut map = serializer.serialize_map(Some(span.end - span.start))?;
                for (key, value) in self.members().into_iter().flatten() {
                    map.serialize_entry(key, &value)?;
                }
                map.end()
            }
        }
    }
}

/// Compact JSON, as `serde_json::Value` displays.
impl fmt::Display for JsonNode<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl fmt::Debug for JsonNode<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Objects with more members than this are read through an index of their
/// keys sorted (a lookup is a binary search); smaller ones, all of a usual
/// contact's, by a scan, which costs less than building the index.
const SCAN_KEYS_UP_TO: usize = 64;

/// Objects with more members than this find repeated keys with a hash map;
/// smaller ones (all of a usual contact's) by comparing each key with those
/// before it.
const SCAN_REPEATS_UP_TO: usize = 32;

/// A tree being built, and the members and items of the objects and arrays
/// still open, innermost last (a member with its key's [`fingerprint`]).
struct Builder {
    tree: JsonTree,
    open_members: Vec<OpenMember>,
    open_items: Vec<usize>,
}

#[derive(Clone, Copy)]
struct OpenMember {
    key: Span,
    fingerprint: u64,
    value: usize,
}

/// A member whose key repeats an earlier one's: its value has moved there.
const REPEATED: usize = usize::MAX;

/// A key's length, first and last eight bytes, mixed: different for nearly
/// every two different keys of an object, so that looking for a repeated
/// key compares one number per key, and bytes only when the numbers match.
fn fingerprint(key: &[u8]) -> u64 {
    let word = |bytes: &[u8]| {
        let mut word = [0u8; 8];
        word[..bytes.len()].copy_from_slice(bytes);
        u64::from_le_bytes(word)
    };
    let head = word(&key[..key.len().min(8)]);
    let tail = word(&key[key.len().saturating_sub(8)..]);
    (key.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ head ^ tail.rotate_left(29)
}

impl Builder {
    /// A builder for a text of `text_len` bytes: keys and strings are most
    /// of a contact's text, with a value for about every 20 bytes of it,
    /// so that a contact's buffers are allocated once, not grown.
    /// (The vectors' first sizes stop at a 64 KiB text's: a long string is
    /// one value, and a large element grows them as it needs.)
    fn new(text_len: usize) -> Self {
        let estimate = text_len.min(64 * 1024);
        Self {
            tree: JsonTree {
                text: String::with_capacity(text_len),
                slots: Vec::with_capacity(estimate / 16),
                items: Vec::with_capacity(estimate / 256),
                members: Vec::with_capacity(estimate / 24),
                indexed: Vec::new(),
                sorted: Vec::new(),
            },
            open_members: Vec::with_capacity(estimate / 48),
            open_items: Vec::with_capacity(estimate / 256),
        }
    }

    fn build<'de, D: serde::Deserializer<'de>>(mut self, deserializer: D) -> Result<JsonTree, D::Error> {
        SlotSeed(&mut self).deserialize(deserializer)?;
        Ok(self.tree)
    }

    fn push(&mut self, slot: Slot) -> usize {
        self.tree.slots.push(slot);
        self.tree.slots.len() - 1
    }

    /// A member whose key is `key`, its value still to come.
    fn open_member(&mut self, key: &str) -> OpenMember {
        OpenMember {
            key: self.push_text(key),
            fingerprint: fingerprint(key.as_bytes()),
            value: REPEATED,
        }
    }

    fn push_text(&mut self, text: &str) -> Span {
        let start = self.tree.text.len();
        self.tree.text.push_str(text);
        Span {
            start,
            end: self.tree.text.len(),
        }
    }

    /// Closes the array whose items start at `open` in `open_items`.
    fn close_array(&mut self, open: usize) -> usize {
        let start = self.tree.items.len();
        self.tree.items.extend(self.open_items.drain(open..));
        let end = self.tree.items.len();
        self.push(Slot::Array(Span { start, end }))
    }

    /// Closes the object whose members start at `open` in `open_members`:
    /// a repeated key keeps its first place and takes the later value, as
    /// `serde_json::Map::insert` does.
    fn close_object(&mut self, open: usize) -> usize {
        let Self {
            tree, open_members, ..
        } = self;
        let bytes = tree.text.as_bytes();
        let members = &mut open_members[open..];
        if members.len() <= SCAN_REPEATS_UP_TO {
            for later in 1..members.len() {
                let key = members[later];
                let first = members[..later].iter().position(|earlier| {
                    earlier.fingerprint == key.fingerprint
                        && bytes[earlier.key.range()] == bytes[key.key.range()]
                });
                if let Some(first) = first {
                    members[first].value = key.value;
                    members[later].value = REPEATED;
                    // A repeat matches its first occurrence before this one.
                    members[later].fingerprint = !key.fingerprint;
                }
            }
        } else {
            let mut places: HashMap<&[u8], usize> = HashMap::with_capacity(members.len());
            for later in 0..members.len() {
                let key = members[later];
                match places.get(&bytes[key.key.range()]) {
                    Some(&first) => {
                        members[first].value = key.value;
                        members[later].value = REPEATED;
                    }
                    None => {
                        places.insert(&bytes[key.key.range()], later);
                    }
                }
            }
        }
        let start = tree.members.len();
        tree.members.extend(
            open_members
                .drain(open..)
                .filter(|member| member.value != REPEATED)
                .map(|member| (member.key, member.value)),
        );
        let end = tree.members.len();
        if end - start > SCAN_KEYS_UP_TO {
            let sorted_start = tree.sorted.len();
            tree.sorted.extend(start..end);
            let (bytes, members) = (tree.text.as_bytes(), &tree.members);
            tree.sorted[sorted_start..].sort_unstable_by_key(|&place| &bytes[members[place].0.range()]);
            tree.indexed.push((start, sorted_start));
        }
        self.push(Slot::Object(Span { start, end }))
    }

    fn add_value(&mut self, value: &Value) -> usize {
        match value {
            Value::Null => self.push(Slot::Null),
            Value::Bool(b) => self.push(Slot::Bool(*b)),
            Value::Number(n) => self.push(Slot::Number(n.clone())),
            Value::String(s) => {
                let span = self.push_text(s);
                self.push(Slot::String(span))
            }
            Value::Array(items) => {
                let open = self.open_items.len();
                for item in items {
                    let slot = self.add_value(item);
                    self.open_items.push(slot);
                }
                self.close_array(open)
            }
            Value::Object(map) => {
                let open = self.open_members.len();
                for (key, value) in map {
                    let member = self.open_member(key);
                    let value = self.add_value(value);
                    self.open_members.push(OpenMember { value, ..member });
                }
                self.close_object(open)
            }
        }
    }
}

/// Reads one value into the builder; yields its slot.
struct SlotSeed<'b>(&'b mut Builder);

impl<'de> DeserializeSeed<'de> for SlotSeed<'_> {
    type Value = usize;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<usize, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SlotSeed<'_> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<usize, E> {
        Ok(self.0.push(Slot::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<usize, E> {
        Ok(self.0.push(Slot::Number(v.into())))
    }

    fn visit_u64<E>(self, v: u64) -> Result<usize, E> {
        Ok(self.0.push(Slot::Number(v.into())))
    }

    fn visit_f64<E>(self, v: f64) -> Result<usize, E> {
        // As `serde_json::Value` reads it: a float JSON cannot hold is null.
        Ok(self.0.push(Number::from_f64(v).map_or(Slot::Null, Slot::Number)))
    }

    fn visit_str<E>(self, v: &str) -> Result<usize, E> {
        let span = self.0.push_text(v);
        Ok(self.0.push(Slot::String(span)))
    }

    fn visit_unit<E>(self) -> Result<usize, E> {
        Ok(self.0.push(Slot::Null))
    }

    fn visit_none<E>(self) -> Result<usize, E> {
        Ok(self.0.push(Slot::Null))
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<usize, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let builder = self.0;
        let open = builder.open_items.len();
        while let Some(slot) = seq.next_element_seed(SlotSeed(builder))? {
            builder.open_items.push(slot);
        }
        Ok(builder.close_array(open))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
        let builder = self.0;
        let open = builder.open_members.len();
        while let Some(member) = map.next_key_seed(KeySeed(builder))? {
            let value = map.next_value_seed(SlotSeed(builder))?;
            builder.open_members.push(OpenMember { value, ..member });
        }
        Ok(builder.close_object(open))
    }
}

/// Reads one object key into the builder's text.
struct KeySeed<'b>(&'b mut Builder);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = OpenMember;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<OpenMember, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = OpenMember;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, v: &str) -> Result<OpenMember, E> {
        Ok(self.0.open_member(v))
    }
}

/// A [`JsonTree`] as a `Deserialize` type, for serde_json's stream of values.
pub(crate) struct StreamedTree(pub JsonTree);

impl<'de> serde::Deserialize<'de> for StreamedTree {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // The element's length is not known before it is read: sized for
        // a usual contact (BENCHMARKS.md, session 15), grown past it.
        Builder::new(USUAL_ELEMENT_LEN)
            .build(deserializer)
            .map(StreamedTree)
    }
}

/// About the length of an iClosed contact's JSON.
const USUAL_ELEMENT_LEN: usize = 3 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read_as_value(text: &str) -> Value {
        crate::payload::parse_json(text).expect("valid JSON")
    }

    #[test]
    fn it_reads_what_serde_json_value_reads() {
        let texts = [
            r#"{"id":1,"a":{"b":[1,2.5,-3,"x\"y\u00e9\n",null,true,false,{},[]]},"c":"é","":""}"#,
            r#"{"k":1,"j":2,"k":3,"o":{"x":1,"x":{"deep":true}}}"#,
            r#"[1e-400, 1.5e300, -0, 18446744073709551615, -9223372036854775808, 1.5e-7, 12345678901234567890123]"#,
            r#""just text""#,
            "null",
            r#"{"a\u0000b":"\ud83d\ude00","a":"\\"}"#,
        ];
        for text in texts {
            let tree = JsonTree::parse(text).expect("valid JSON");
            let value = read_as_value(text);
            assert_eq!(tree.root().to_value(), value, "{text}");
            assert_eq!(tree.root().to_string(), value.to_string(), "{text}");
            assert_eq!(
                JsonTree::from_value(&value).root().to_string(),
                value.to_string(),
                "{text}"
            );
        }
    }

    #[test]
    fn a_repeated_key_keeps_its_first_place_and_its_last_value() {
        let tree = JsonTree::parse(r#"{"k":1,"j":2,"k":3}"#).unwrap();
        let keys: Vec<_> = tree
            .root()
            .members()
            .unwrap()
            .map(|(k, v)| (k, v.to_string()))
            .collect();
        assert_eq!(keys, [("k", "3".to_owned()), ("j", "2".to_owned())]);
        assert_eq!(tree.root().get("k").unwrap().as_number(), Some(&Number::from(3)));
        for text in [
            r#"{"k":1,"k":2,"j":0,"k":3}"#,
            r#"{"a":{"k":1,"k":{"k":2,"k":3}},"a":[{"x":1,"x":2}],"b":1}"#,
            r#"{"1_question":"a","2_question":"b","1_question":"c","1_response":"d"}"#,
        ] {
            let tree = JsonTree::parse(text).unwrap();
            assert_eq!(tree.root().to_string(), read_as_value(text).to_string(), "{text}");
        }
        // Past the scan, through the hash map: the same rule.
        let mut text = String::from("{");
        for i in 0..100 {
            text.push_str(&format!("\"k{}\":{i},", i % 40));
        }
        text.push_str("\"last\":true}");
        let tree = JsonTree::parse(&text).unwrap();
        assert_eq!(tree.root().to_value(), read_as_value(&text));
        let members: Vec<_> = tree.root().members().unwrap().collect();
        assert_eq!(members.len(), 41);
        // (Looked up by a scan: an index starts past 64 members; below.)
        for (key, value) in &members {
            assert_eq!(
                tree.root().get(key).map(JsonNode::to_value),
                Some(value.to_value()),
                "{key}"
            );
        }
        assert!(tree.root().get("k40").is_none() && tree.root().get("").is_none());
        // Large objects inside large objects, before and after small ones:
        // each finds its own index.
        let inner = |tag: &str, n: usize| {
            let members: Vec<String> = (0..n).map(|i| format!("\"{tag}{i}\":{i}")).collect();
            format!("{{{}}}", members.join(","))
        };
        let outer: Vec<String> = (0..100)
            .map(|i| match i % 3 {
                0 => format!("\"o{i}\":{}", inner(&format!("a{i}_"), 70)),
                1 => format!("\"o{i}\":{}", inner(&format!("b{i}_"), 3)),
                _ => format!("\"o{i}\":{i}"),
            })
            .collect();
        let text = format!("{{{}}}", outer.join(","));
        let (tree, value) = (JsonTree::parse(&text).unwrap(), read_as_value(&text));
        for (key, member) in value.as_object().unwrap() {
            let node = tree.root().get(key).unwrap();
            assert_eq!(node.to_value(), *member, "{key}");
            for (inner_key, inner_member) in member.as_object().into_iter().flatten() {
                assert_eq!(
                    node.get(inner_key).map(JsonNode::to_value).as_ref(),
                    Some(inner_member),
                    "{key}.{inner_key}"
                );
            }
        }
        for missing in ["o100", "o", "", "o1 ", "a0_0"] {
            assert!(tree.root().get(missing).is_none(), "{missing}");
        }
        assert!(tree.root().get("o0").unwrap().get("a0_70").is_none());
        assert_eq!(members[0].0, "k0");
        assert_eq!(members[0].1.as_number(), Some(&Number::from(80)));
    }

    #[test]
    fn reads_give_what_the_value_gives() {
        let value =
            json!({"s": "text", "n": 7, "f": 1.25, "b": true, "z": null, "a": [1, "two"], "o": {"p": 1}});
        let tree = JsonTree::from_value(&value);
        let root = tree.root();
        assert_eq!(root.get("s").and_then(JsonNode::as_str), Some("text"));
        assert_eq!(
            root.get("n").and_then(JsonNode::as_number),
            value["n"].as_number()
        );
        assert_eq!(root.get("b").and_then(JsonNode::as_bool), Some(true));
        assert!(root.get("z").unwrap().is_null());
        assert!(root.get("missing").is_none());
        assert!(root.get("s").unwrap().get("s").is_none());
        assert_eq!(root.get("a").unwrap().items().unwrap().len(), 2);
        assert!(root.get("o").unwrap().is_object() && root.get("a").unwrap().is_array());
        assert_eq!(root.get_key_value("o").map(|(k, _)| k), Some("o"));
        assert_eq!(
            root.members().unwrap().map(|(_, v)| v.kind()).collect::<Vec<_>>(),
            ["string", "number", "number", "boolean", "null", "array", "object"]
        );
    }

    #[test]
    fn pointers_find_what_serde_json_finds() {
        let value = json!({"event": {"uuid": "9", "a/b": 1, "m~n": 2, "list": [10, 20]}, "": 3});
        let tree = JsonTree::from_value(&value);
        for pointer in [
            "",
            "/event",
            "/event/uuid",
            "/event/a~1b",
            "/event/m~0n",
            "/event/list/1",
            "/event/list/01",
            "/event/list/+1",
            "/event/list/9",
            "/",
            "/event/uuid/x",
            "event",
            "/missing",
        ] {
            assert_eq!(
                tree.root().pointer(pointer).map(JsonNode::to_value).as_ref(),
                value.pointer(pointer),
                "{pointer}"
            );
        }
    }

    #[test]
    fn invalid_json_is_refused_with_serde_jsons_message() {
        for text in ["{", r#"{"a" 1}"#, "[1,]", r#"{"a":1} x"#, "nul"] {
            let ours = JsonTree::parse(text).unwrap_err().to_string();
            let theirs = crate::payload::parse_json::<Value>(text).unwrap_err().to_string();
            assert_eq!(ours, theirs, "{text}");
        }
    }
}
