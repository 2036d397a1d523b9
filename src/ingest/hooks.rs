//! Calls, outcomes and unknown hooks (SPEC 11): what is read from each, and
//! their idempotency keys. iClosed documents these hooks by example, not by
//! schema, so every field is read defensively: a missing or oddly typed
//! field is `None`, never an error (iClosed would retry a `4xx` forever).

use sha2::{Digest, Sha256};

use crate::payload::{Hook, HookKind, JsonNode, reference_key};
use crate::store::NewHook;

/// A new hook id: `hook_` and a time-ordered UUID, like event ids.
fn new_hook_id() -> String {
    let event_id = super::new_event_id();
    format!("hook_{}", event_id.trim_start_matches("evt_"))
}

/// The stored form of one hook.
pub fn new_hook(hook: &Hook, delivery_id: Option<&str>, received_at: i64) -> NewHook {
    let value = hook.tree.root();
    let mut stored = NewHook {
        id: new_hook_id(),
        kind: hook.kind,
        idempotency_key: String::new(),
        received_at,
        contact_ref: None,
        email: None,
        own_id: None,
        call_status: None,
        call_start: None,
        call_type: None,
        call_outcome: None,
        sale: false,
        revenue: 0.0,
        body: hook.raw.get().to_owned(),
    };
    match hook.kind {
        HookKind::Call => {
            stored.own_id = value.pointer("/event/uuid").and_then(text_of);
            stored.email = value.pointer("/invitee/email").and_then(email_of);
            stored.call_status = Some(call_status(value));
            stored.call_start = value.pointer("/event/utc_start_time").and_then(text_of);
            stored.call_type = value.pointer("/event_type/name").and_then(text_of);
        }
        HookKind::Outcome => {
            stored.own_id = value.get("uuid").and_then(text_of);
            stored.contact_ref = value.get("contactId").and_then(reference_key);
            stored.email = value.get("email").and_then(email_of);
            stored.call_outcome = value.get("callOutcome").and_then(text_of);
            stored.sale = stored
                .call_outcome
                .as_deref()
                .map(|o| o.trim().to_ascii_uppercase())
                .is_some_and(|o| o == "SALE" || o == "PARTIAL_SALE");
            if stored.sale {
                stored.revenue = value
                    .get("dealValue")
                    .and_then(amount_of)
                    .or_else(|| value.pointer("/deal/value").and_then(amount_of))
                    .unwrap_or(0.0);
            }
        }
        HookKind::Unknown => {}
    }
    stored.idempotency_key = idempotency_key(hook, stored.own_id.as_deref(), delivery_id);
    stored
}

/// SPEC 4.1: the sender's delivery id with the hook's kind and own id (a
/// call's also with its `hookType`), else a digest of its canonical JSON.
fn idempotency_key(hook: &Hook, own_id: Option<&str>, delivery_id: Option<&str>) -> String {
    let mut hasher = Sha256::new();
    match (delivery_id, own_id) {
        (Some(delivery), Some(own)) => {
            hasher.update(b"hook\0");
            hasher.update(delivery.as_bytes());
            hasher.update(b"\0");
            hasher.update(hook.kind.as_str().as_bytes());
            hasher.update(b"\0");
            hasher.update(own.as_bytes());
            if hook.kind == HookKind::Call {
                let hook_type = hook
                    .tree
                    .root()
                    .get("hookType")
                    .and_then(JsonNode::as_str)
                    .unwrap_or("");
                hasher.update(b"\0");
                hasher.update(hook_type.as_bytes());
            }
        }
        _ => {
            hasher.update(b"hook-content\0");
            let mut canonical = Vec::with_capacity(hook.raw.get().len());
            super::write_canonical(hook.tree.root(), &mut canonical);
            hasher.update(&canonical);
        }
    }
    hex::encode(hasher.finalize())
}

/// `booked`, `rescheduled` or `canceled`: by `hookType`, else by shape.
fn call_status(value: JsonNode<'_>) -> &'static str {
    let hook_type = value
        .get("hookType")
        .and_then(JsonNode::as_str)
        .map(|t| t.trim().to_ascii_lowercase());
    match hook_type.as_deref() {
        Some("call canceled" | "call cancelled") => "canceled",
        Some("call rescheduled") => "rescheduled",
        Some("call booked") => "booked",
        _ if truthy(value.pointer("/event/canceled")) || truthy(value.pointer("/invitee/canceled")) => {
            "canceled"
        }
        _ if truthy(value.pointer("/invitee/is_reschedule"))
            || value
                .pointer("/event/old_start_time")
                .is_some_and(|v| !v.is_null()) =>
        {
            "rescheduled"
        }
        _ => "booked",
    }
}

fn truthy(value: Option<JsonNode<'_>>) -> bool {
    value.is_some_and(|v| {
        v.as_bool()
            .unwrap_or_else(|| v.as_str().is_some_and(|s| s.eq_ignore_ascii_case("true")))
    })
}

/// A string or number as text; anything else (or empty) is nothing.
fn text_of(value: JsonNode<'_>) -> Option<String> {
    match (value.as_str(), value.as_number()) {
        (Some(s), _) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        (_, Some(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// An email as compared (SPEC 11: trimmed, case-insensitive).
fn email_of(value: JsonNode<'_>) -> Option<String> {
    value.as_str().and_then(normal_email)
}

/// An email trimmed and lower-cased; `None` when empty.
pub fn normal_email(text: &str) -> Option<String> {
    let trimmed = text.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_lowercase())
}

/// A money amount: a number, or a string holding one (`"24000"`,
/// `"24,000.50"`); negative or non-finite amounts count as none.
fn amount_of(value: JsonNode<'_>) -> Option<f64> {
    let amount = match (value.as_number(), value.as_str()) {
        (Some(n), _) => n.as_f64()?,
        (_, Some(s)) => s.trim().replace([',', '$'], "").parse().ok()?,
        _ => return None,
    };
    (amount.is_finite() && amount >= 0.0).then_some(amount)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{Element, parse_webhook};

    fn hook(text: &str) -> Hook {
        match parse_webhook(text.as_bytes(), 10).unwrap().remove(0) {
            Element::Hook(hook) => hook,
            Element::Contact(_) => panic!("a contact"),
        }
    }

    #[test]
    fn outcomes_read_their_sale_and_value_defensively() {
        let sale = new_hook(
            &hook(
                r#"{"hookType":"Outcome added","uuid":5,"contactId":"48213","email":" A@B.com ","callOutcome":"partial_sale","dealValue":null,"deal":{"value":"1,500"}}"#,
            ),
            None,
            1,
        );
        assert_eq!(sale.kind, HookKind::Outcome);
        assert_eq!(sale.own_id.as_deref(), Some("5"));
        assert_eq!(sale.contact_ref.as_deref(), Some("48213"));
        assert_eq!(sale.email.as_deref(), Some("a@b.com"));
        assert!(sale.sale);
        assert_eq!(sale.revenue, 1500.0);
        let no_sale = new_hook(
            &hook(r#"{"callOutcome":"NO_SALE","dealValue":900,"contactId":{"x":1}}"#),
            None,
            1,
        );
        assert_eq!(no_sale.kind, HookKind::Outcome);
        assert!(!no_sale.sale);
        assert_eq!(no_sale.revenue, 0.0);
        assert_eq!(no_sale.contact_ref, None);
    }

    #[test]
    fn calls_read_status_by_hook_type_else_by_shape() {
        let text = |hook_type: &str, extra: &str| {
            format!(
                r#"{{{hook_type}"event":{{"uuid":"9","utc_start_time":"2026-11-24T17:00:00+00:00"{extra}}},"event_type":{{"name":"Discovery"}},"invitee":{{"email":"X@Y.io"}}}}"#
            )
        };
        let booked = new_hook(&hook(&text(r#""hookType":"Call booked","#, "")), None, 1);
        assert_eq!(booked.call_status, Some("booked"));
        assert_eq!(booked.own_id.as_deref(), Some("9"));
        assert_eq!(booked.email.as_deref(), Some("x@y.io"));
        assert_eq!(booked.call_type.as_deref(), Some("Discovery"));
        assert_eq!(booked.call_start.as_deref(), Some("2026-11-24T17:00:00+00:00"));
        let canceled = new_hook(&hook(&text("", r#","canceled":true"#)), None, 1);
        assert_eq!(canceled.call_status, Some("canceled"));
        let moved = new_hook(
            &hook(&text("", r#","old_start_time":"2026-11-20T10:00:00Z""#)),
            None,
            1,
        );
        assert_eq!(moved.call_status, Some("rescheduled"));
    }

    #[test]
    fn keys_use_the_delivery_id_with_kind_and_own_id() {
        let booked = hook(r#"{"hookType":"Call booked","event":{"uuid":"9"},"invitee":{}}"#);
        let canceled = hook(r#"{"hookType":"Call canceled","event":{"uuid":"9"},"invitee":{}}"#);
        let key = |h: &Hook, d: Option<&str>| new_hook(h, d, 1).idempotency_key;
        assert_eq!(key(&booked, Some("msg_1")), key(&booked, Some("msg_1")));
        assert_ne!(key(&booked, Some("msg_1")), key(&canceled, Some("msg_1")));
        assert_ne!(key(&booked, Some("msg_1")), key(&booked, Some("msg_2")));
        // Without a delivery id: the content, whatever its layout.
        let spaced = hook(r#"{ "invitee": {}, "event": {"uuid": "9"}, "hookType": "Call booked" }"#);
        assert_eq!(key(&booked, None), key(&spaced, None));
        assert_ne!(key(&booked, None), key(&canceled, None));
    }
}
