//! Request bodies (SPEC 10), built at each attempt from the stored event:
//! the scored contact of SPEC 3, or an alert event `{"type":
//! "destination.failing" | "destination.recovered", "id", "destination",
//! "at", "reason", "last_error"}`.
//!
//! * `scored-contact`: the event as it is.
//! * `slack`: a Slack incoming-webhook message. Checked against Slack's
//!   incoming-webhook guide (api.slack.com/messaging/webhooks): a JSON body
//!   with `text` and, optionally, Block Kit `blocks`, where `text` becomes
//!   the notification fallback. Section blocks (api.slack.com/reference/
//!   block-kit/blocks#section): a `text` object of at most 3,000 characters
//!   or up to 10 `fields` of at most 2,000 each, here all `mrkdwn`. Slack's
//!   formatting reference (api.slack.com/reference/surfaces/formatting,
//!   "Escaping text"): `&`, `<` and `>` are control characters and must be
//!   sent as `&amp;`, `&lt;` and `&gt;`, and nothing else entity-encoded.
//! * `hubspot`: a batch upsert of the contact keyed by email. Checked
//!   against HubSpot's API reference "Upsert a batch of contacts"
//!   (developers.hubspot.com/docs/api-reference/…/contacts/batch/upsert-contacts):
//!   `POST /crm/v3/objects/contacts/batch/upsert` with `{"inputs": [{"id",
//!   "idProperty", "properties"}]}`, here `idProperty` `email` and `id` the
//!   email. Property values are sent as text, the form HubSpot returns them
//!   in (`leadscore_score` `"85"`). HubSpot's batch update reference says an
//!   empty string *clears* a property, so a field the contact lacks is left
//!   out, never sent empty. Its error-handling guide: `207 Multi-Status`
//!   when some inputs failed, listed in `errors` (see [`hubspot_failure`]).
//! * `transform = "FILE.rhai"`: a Rhai script that sees `event`; a map or
//!   an array is sent as JSON, a string as it is (with the destination's
//!   `content_type`), `()` skips the delivery, an error makes it dead.

use std::path::PathBuf;
use std::sync::Arc;

use rhai::{AST, Scope};
use serde_json::{Value, json};

use super::script::{Sandbox, to_json};
use crate::score::runtime::to_dynamic;

/// A built-in body shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    ScoredContact,
    Slack,
    Hubspot,
}

impl Template {
    pub const NAMES: [&'static str; 3] = ["scored-contact", "slack", "hubspot"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "scored-contact" => Some(Template::ScoredContact),
            "slack" => Some(Template::Slack),
            "hubspot" => Some(Template::Hubspot),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Template::ScoredContact => "scored-contact",
            Template::Slack => "slack",
            Template::Hubspot => "hubspot",
        }
    }
}

/// A compiled transform script.
#[derive(Clone)]
pub struct Transform {
    /// The path as written in the destinations file (shown in status).
    written: String,
    /// The path it was read from (relative to the destinations file).
    path: PathBuf,
    ast: Arc<AST>,
    sandbox: Arc<Sandbox>,
}

impl std::fmt::Debug for Transform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Transform").field(&self.written).finish()
    }
}

impl Transform {
    pub fn new(written: String, path: PathBuf, ast: AST, sandbox: Arc<Sandbox>) -> Self {
        Self {
            written,
            path,
            ast: Arc::new(ast),
            sandbox,
        }
    }

    pub fn file_as_written(&self) -> &str {
        &self.written
    }

    pub fn path(&self) -> &PathBuf {
        &self.path
    }

    /// Runs the script over `event` under the rule limits.
    pub fn run(&self, event: &Value) -> Result<Body, BodyError> {
        let mut scope = Scope::new();
        scope.push_dynamic("event", to_dynamic(event));
        let value = self
            .sandbox
            .run(&self.ast, &mut scope)
            .map_err(|error| BodyError::Transform(format!("{}: {error}", self.written)))?;
        if value.is_unit() {
            return Ok(Body::Skip(format!("the transform {} returned ()", self.written)));
        }
        if value.is_string() {
            return Ok(Body::Text(value.into_string().unwrap_or_default()));
        }
        if value.is_map() || value.is_array() {
            return to_json(&value)
                .map(Body::Json)
                .map_err(|error| BodyError::Transform(format!("{}: {error}", self.written)));
        }
        Err(BodyError::Transform(format!(
            "{}: the transform's value is {} ({value}); it must be a map or an array (sent as JSON), \
             a string (sent as it is) or () (skips the delivery)",
            self.written,
            value.type_name()
        )))
    }
}

/// A request body, or why there is none.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// Sent as JSON (`Content-Type: application/json`).
    Json(Value),
    /// A transform's string, sent as it is with the destination's
    /// `content_type`.
    Text(String),
    /// Nothing to send for this destination: recorded and counted as
    /// skipped, not dead.
    Skip(String),
}

impl Body {
    /// What goes on the wire, made once per attempt so that the signature
    /// covers the very bytes sent; `text_content_type` is the type of a
    /// transform's string. `None` for a skip.
    pub fn payload(&self, text_content_type: &str) -> Option<Payload> {
        let (bytes, content_type) = match self {
            Body::Json(value) => (serde_json::to_vec(value).unwrap_or_default(), "application/json"),
            Body::Text(text) => (text.as_bytes().to_vec(), text_content_type),
            Body::Skip(_) => return None,
        };
        Some(Payload {
            bytes,
            content_type: content_type.to_owned(),
        })
    }
}

/// A body's bytes and their content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub bytes: Vec<u8>,
    pub content_type: String,
}

/// A body that cannot be built: the delivery is dead with this error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("transform failed: {0}")]
    Transform(String),
}

impl BodyError {
    /// The attempt's error class (SPEC 10 "Attempts").
    pub fn class(&self) -> &'static str {
        match self {
            BodyError::Transform(_) => "transform",
        }
    }
}

/// Whether `event` is an alert event (`destination.failing` or
/// `destination.recovered`): alerts bypass `when`.
pub fn is_alert_event(event: &Value) -> bool {
    event
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|kind| kind.starts_with("destination."))
}

/// Builds the body of `spec` for `event`.
pub fn build(spec: &super::BodySpec, event: &Value) -> Result<Body, BodyError> {
    match spec {
        super::BodySpec::Template(Template::ScoredContact) => Ok(Body::Json(event.clone())),
        super::BodySpec::Template(Template::Slack) => Ok(Body::Json(slack_message(event))),
        super::BodySpec::Template(Template::Hubspot) => Ok(hubspot_upsert(event)),
        super::BodySpec::Transform(transform) => transform.run(event),
    }
}

// ---------------------------------------------------------------- Slack

/// Longest `text` of a section block, and of one of its fields (Slack's
/// Block Kit reference).
const SLACK_SECTION_TEXT_MAX: usize = 3000;
const SLACK_FIELD_TEXT_MAX: usize = 2000;
/// How many reasons the message lists, by points.
const SLACK_TOP_REASONS: usize = 3;

/// Escapes Slack's control characters: `&`, `<` and `>` only.
pub fn slack_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Cuts escaped text to `max` characters with an ellipsis, never inside an
/// entity (`&amp;` cut in half would show as text).
fn slack_cut(escaped: String, max: usize) -> String {
    if escaped.chars().count() <= max {
        return escaped;
    }
    let mut cut: String = escaped.chars().take(max.saturating_sub(1)).collect();
    if let Some(amp) = cut.rfind('&')
        && !cut[amp..].contains(';')
    {
        cut.truncate(amp);
    }
    cut.push('…');
    cut
}

fn text_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) if !text.trim().is_empty() => Some(text.trim().to_owned()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The contact's name: first and last name, else its email, else its id.
fn contact_name(event: &Value) -> String {
    let contact = event.get("contact");
    let field = |name: &str| text_of(contact.and_then(|c| c.get(name)));
    let name: Vec<String> = [field("firstName"), field("lastName")]
        .into_iter()
        .flatten()
        .collect();
    if !name.is_empty() {
        return name.join(" ");
    }
    field("email").unwrap_or_else(|| match event.get("contact_id") {
        Some(Value::String(id)) => format!("contact {id}"),
        Some(id) => format!("contact {id}"),
        None => "a contact".to_owned(),
    })
}

fn mrkdwn(text: String) -> Value {
    json!({"type": "mrkdwn", "text": text})
}

/// The Slack message of an event.
pub fn slack_message(event: &Value) -> Value {
    if is_alert_event(event) {
        return json!({"text": slack_escape(&alert_line(event))});
    }
    let name = contact_name(event);
    let tier = text_of(event.get("tier")).unwrap_or_else(|| "unscored".to_owned());
    let score = event
        .get("score")
        .map_or_else(|| "?".to_owned(), Value::to_string);
    let previous_tier = event.get("previous").and_then(|p| text_of(p.get("tier")));
    let change = match &previous_tier {
        Some(previous) if *previous != tier => format!(" (was {previous})"),
        _ => String::new(),
    };
    let text = format!("{name}: {tier}{change}, score {score}");
    let headline = format!(
        "*{}* is *{}*{}, score *{}*",
        slack_escape(&name),
        slack_escape(&tier),
        slack_escape(&change),
        slack_escape(&score)
    );
    let email = text_of(event.get("contact").and_then(|c| c.get("email"))).unwrap_or_else(|| "—".into());
    let tags: Vec<String> = event
        .get("tags")
        .and_then(Value::as_array)
        .map(|tags| tags.iter().filter_map(|t| text_of(Some(t))).collect())
        .unwrap_or_default();
    let tags = if tags.is_empty() {
        "—".to_owned()
    } else {
        tags.join(", ")
    };
    let field = |label: &str, value: &str| {
        mrkdwn(slack_cut(
            format!("*{label}*\n{}", slack_escape(value)),
            SLACK_FIELD_TEXT_MAX,
        ))
    };
    let mut blocks = vec![
        json!({"type": "section", "text": mrkdwn(slack_cut(headline, SLACK_SECTION_TEXT_MAX))}),
        json!({"type": "section", "fields": [
            field("Email", &email),
            field("Score", &score),
            field("Tier", &tier),
            field("Tags", &tags),
        ]}),
    ];
    let reasons = top_reasons(event, SLACK_TOP_REASONS);
    if !reasons.is_empty() {
        let lines: Vec<String> = reasons
            .iter()
            .map(|(points, reason)| format!("• {} ({points})", slack_escape(reason)))
            .collect();
        let text = format!("*Top reasons*\n{}", lines.join("\n"));
        blocks.push(json!({"type": "section", "text": mrkdwn(slack_cut(text, SLACK_SECTION_TEXT_MAX))}));
    }
    json!({"text": slack_cut(slack_escape(&text), SLACK_SECTION_TEXT_MAX), "blocks": blocks})
}

/// The event's reasons in evaluation order, as (points, points shown
/// with their sign, reason): `(30.0, "+30", "Budget $10k+/month")`.
fn reasons_of(event: &Value) -> Vec<(f64, String, String)> {
    let Some(reasons) = event.get("reasons").and_then(Value::as_array) else {
        return Vec::new();
    };
    reasons
        .iter()
        .filter_map(|reason| {
            let points = reason.get("points")?;
            let value = points.as_f64()?;
            let shown = if value > 0.0 {
                format!("+{points}")
            } else {
                points.to_string()
            };
            Some((value, shown, text_of(reason.get("reason"))?))
        })
        .collect()
}

/// The `n` reasons with the most points (ties in evaluation order), as
/// `("+30", "Budget $10k+/month")`.
fn top_reasons(event: &Value, n: usize) -> Vec<(String, String)> {
    let mut reasons = reasons_of(event);
    // A stable sort keeps evaluation order among equal points.
    reasons.sort_by(|a, b| b.0.total_cmp(&a.0));
    reasons
        .into_iter()
        .take(n)
        .map(|(_, shown, reason)| (shown, reason))
        .collect()
}

/// One line for an alert event (Slack, previews).
pub fn alert_line(event: &Value) -> String {
    let destination = text_of(event.get("destination")).unwrap_or_else(|| "?".to_owned());
    let reason = text_of(event.get("reason"));
    let last_error = text_of(event.get("last_error"));
    match event.get("type").and_then(Value::as_str) {
        Some("destination.recovered") => format!("Destination {destination} recovered"),
        _ => {
            let mut line = format!("Destination {destination} is failing");
            if let Some(reason) = reason {
                line.push_str(&format!(": {reason}"));
            }
            if let Some(error) = last_error {
                line.push_str(&format!(" (last error: {error})"));
            }
            line
        }
    }
}

// -------------------------------------------------------------- HubSpot

/// The HubSpot batch upsert of a scored contact, or a skip when the
/// contact has no email (the upsert's key) or the event is an alert.
pub fn hubspot_upsert(event: &Value) -> Body {
    if is_alert_event(event) {
        return Body::Skip("an alert event has no HubSpot contact".to_owned());
    }
    let contact = event.get("contact");
    let field = |name: &str| text_of(contact.and_then(|c| c.get(name)));
    let Some(email) = field("email").filter(|email| email.contains('@')) else {
        return Body::Skip("no email".to_owned());
    };
    let mut properties = serde_json::Map::new();
    properties.insert("email".into(), json!(email));
    // iClosed's contact fields (shared/fixtures/iclosed): firstName,
    // lastName, phoneNumber.
    for (property, field_name) in [
        ("firstname", "firstName"),
        ("lastname", "lastName"),
        ("phone", "phoneNumber"),
    ] {
        if let Some(value) = field(field_name) {
            properties.insert(property.into(), json!(value));
        }
    }
    if let Some(score) = event.get("score").filter(|s| s.is_number()) {
        properties.insert("leadscore_score".into(), json!(score.to_string()));
    }
    if let Some(tier) = text_of(event.get("tier")) {
        properties.insert("leadscore_tier".into(), json!(tier));
    }
    let reasons: Vec<String> = reasons_of(event)
        .into_iter()
        .map(|(_, shown, reason)| format!("{reason} ({shown})"))
        .collect();
    properties.insert("leadscore_reasons".into(), json!(reasons.join("; ")));
    Body::Json(json!({"inputs": [{"idProperty": "email", "id": email, "properties": properties}]}))
}

/// Whether a HubSpot answer is a failed attempt although its status says
/// otherwise: a `207 Multi-Status`, or a `2xx` whose JSON body has a
/// non-empty `errors` array. The error names the first failure's message.
pub fn hubspot_failure(status: u16, body: &[u8]) -> Option<String> {
    if !(200..300).contains(&status) {
        return None;
    }
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let errors = parsed
        .as_ref()
        .and_then(|b| b.get("errors"))
        .and_then(Value::as_array)
        .filter(|errors| !errors.is_empty());
    if status != 207 && errors.is_none() {
        return None;
    }
    let first = errors
        .and_then(|errors| errors.first())
        .and_then(|error| text_of(error.get("message")));
    let count = errors.map_or(0, Vec::len);
    Some(match first {
        Some(message) => format!("HubSpot answered {status} with {count} error(s): {message}"),
        None => format!("HubSpot answered {status}: some inputs failed"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::Limits;

    fn fixture_contact() -> Value {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/fixtures/iclosed/contact-created-qualified.json"
        ))
        .unwrap_or_else(|_| {
            r#"[{"id": 48213, "firstName": "Raya", "lastName": "Fleming",
                "email": "raya.fleming@northwind-logistics.com", "phoneNumber": "+14155550123"}]"#
                .to_owned()
        });
        let contacts: Value = serde_json::from_str(&text).unwrap();
        contacts[0].clone()
    }

    pub(crate) fn scored_event() -> Value {
        json!({
            "type": "contact.scored", "id": "evt_01", "contact_id": 48213, "score": 85, "tier": "hot",
            "disqualified": false,
            "reasons": [
                {"rule": "10-role.rhai", "points": 20, "reason": "Decision maker"},
                {"rule": "30-budget.rhai", "points": 30, "reason": "Budget $10k+/month"},
                {"rule": "40-size.rhai", "points": 15, "reason": "201-500 <employees> & growing"},
                {"rule": "50-free.rhai", "points": -5, "reason": "Free email"},
                {"rule": "60-time.rhai", "points": 25, "reason": "Starts within 30 days"}
            ],
            "disqualifications": [], "tags": ["decision-maker", "r&d"], "errors": [],
            "rules_version": "abc", "scored_at": "2026-11-20T15:31:02.511Z",
            "contact": fixture_contact()
        })
    }

    #[test]
    fn scored_contact_is_the_event_as_it_is() {
        let event = scored_event();
        let body = build(&super::super::BodySpec::Template(Template::ScoredContact), &event).unwrap();
        assert_eq!(body, Body::Json(event.clone()));
        let payload = body.payload("text/csv").unwrap();
        assert_eq!(payload.bytes, serde_json::to_vec(&event).unwrap());
        assert_eq!(payload.content_type, "application/json");
        let text = Body::Text("a,b".into()).payload("text/csv").unwrap();
        assert_eq!(
            (text.bytes.as_slice(), text.content_type.as_str()),
            (&b"a,b"[..], "text/csv")
        );
        assert_eq!(Body::Skip("no email".into()).payload("text/csv"), None);
    }

    #[test]
    fn hubspot_upserts_the_contact_by_email_with_its_iclosed_fields() {
        let Body::Json(body) = hubspot_upsert(&scored_event()) else {
            panic!()
        };
        assert_eq!(
            body,
            json!({"inputs": [{
                "idProperty": "email",
                "id": "raya.fleming@northwind-logistics.com",
                "properties": {
                    "email": "raya.fleming@northwind-logistics.com",
                    "firstname": "Raya",
                    "lastname": "Fleming",
                    "phone": "+14155550123",
                    "leadscore_score": "85",
                    "leadscore_tier": "hot",
                    "leadscore_reasons": "Decision maker (+20); Budget $10k+/month (+30); \
                        201-500 <employees> & growing (+15); Free email (-5); Starts within 30 days (+25)"
                }
            }]})
        );
    }

    #[test]
    fn hubspot_skips_a_contact_without_email_and_leaves_absent_fields_out() {
        let mut event = scored_event();
        event["contact"] = json!({"id": 1, "email": null, "firstName": "A"});
        assert_eq!(hubspot_upsert(&event), Body::Skip("no email".into()));
        event["contact"] = json!({"id": 1, "firstName": "A"});
        assert_eq!(hubspot_upsert(&event), Body::Skip("no email".into()));
        event["contact"] = json!({"id": 1, "email": "  "});
        assert_eq!(hubspot_upsert(&event), Body::Skip("no email".into()));
        event["contact"] = json!({"id": 1, "email": " b@c.example ", "lastName": null});
        event["score"] = json!(12.5);
        let Body::Json(body) = hubspot_upsert(&event) else {
            panic!()
        };
        let properties = &body["inputs"][0]["properties"];
        assert_eq!(body["inputs"][0]["id"], "b@c.example");
        assert_eq!(properties["leadscore_score"], "12.5");
        assert!(properties.get("lastname").is_none() && properties.get("phone").is_none());
    }

    #[test]
    fn hubspot_answers_with_errors_are_failed_attempts() {
        let partial = br#"{"status": "COMPLETE", "results": [], "numErrors": 1,
            "errors": [{"status": "error", "category": "VALIDATION_ERROR",
                        "message": "Property \"leadscore_tier\" does not exist"}]}"#;
        assert_eq!(
            hubspot_failure(207, partial).unwrap(),
            "HubSpot answered 207 with 1 error(s): Property \"leadscore_tier\" does not exist"
        );
        assert_eq!(
            hubspot_failure(200, partial).unwrap(),
            "HubSpot answered 200 with 1 error(s): Property \"leadscore_tier\" does not exist"
        );
        assert_eq!(
            hubspot_failure(207, b"not json").unwrap(),
            "HubSpot answered 207: some inputs failed"
        );
        assert_eq!(
            hubspot_failure(200, br#"{"status": "COMPLETE", "results": [{}], "errors": []}"#),
            None
        );
        assert_eq!(hubspot_failure(200, b""), None);
        assert_eq!(
            hubspot_failure(400, partial),
            None,
            "a 4xx is judged as any other answer"
        );
    }

    #[test]
    fn slack_message_has_text_and_blocks_escaped() {
        let message = slack_message(&scored_event());
        assert_eq!(message["text"], "Raya Fleming: hot, score 85");
        let blocks = message["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 3);
        assert_eq!(
            blocks[0],
            json!({"type": "section", "text": {"type": "mrkdwn", "text": "*Raya Fleming* is *hot*, score *85*"}})
        );
        let fields: Vec<&str> = blocks[1]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                assert_eq!(f["type"], "mrkdwn");
                f["text"].as_str().unwrap()
            })
            .collect();
        assert_eq!(
            fields,
            [
                "*Email*\nraya.fleming@northwind-logistics.com",
                "*Score*\n85",
                "*Tier*\nhot",
                "*Tags*\ndecision-maker, r&amp;d"
            ]
        );
        assert_eq!(
            blocks[2]["text"]["text"],
            "*Top reasons*\n• Budget $10k+/month (+30)\n• Starts within 30 days (+25)\n• Decision maker (+20)"
        );
    }

    #[test]
    fn slack_escapes_control_characters_and_shows_a_rescore() {
        let mut event = scored_event();
        event["contact"] = json!({"id": 9, "firstName": "<!channel>", "lastName": "Tom & Jerry"});
        event["previous"] = json!({"tier": "warm", "score": 50});
        event["reasons"] = json!([{"rule": "a", "points": 40, "reason": "size > 500 & <growing>"}]);
        let message = slack_message(&event);
        assert_eq!(
            message["text"],
            "&lt;!channel&gt; Tom &amp; Jerry: hot (was warm), score 85"
        );
        assert_eq!(
            message["blocks"][2]["text"]["text"],
            "*Top reasons*\n• size &gt; 500 &amp; &lt;growing&gt; (+40)"
        );
        assert_eq!(message["blocks"][1]["fields"][0]["text"], "*Email*\n—");
        let escaped = slack_escape(&"&".repeat(2000));
        let cut = slack_cut(escaped, 100);
        assert!(cut.ends_with("&amp;…") && cut.chars().count() <= 100, "{cut}");
    }

    #[test]
    fn slack_names_a_contact_by_name_else_email_else_id() {
        let mut event = scored_event();
        event["contact"] = json!({"id": 9, "firstName": " Ann ", "lastName": null});
        assert_eq!(slack_message(&event)["text"], "Ann: hot, score 85");
        event["contact"] = json!({"id": 9, "email": "x@y.example"});
        assert_eq!(slack_message(&event)["text"], "x@y.example: hot, score 85");
        event["contact"] = json!({"id": "c-9"});
        event["contact_id"] = json!("c-9");
        event["reasons"] = json!([]);
        event["tags"] = json!([]);
        let message = slack_message(&event);
        assert_eq!(message["text"], "contact c-9: hot, score 85");
        assert_eq!(
            message["blocks"].as_array().unwrap().len(),
            2,
            "no reasons, no reasons block"
        );
        assert_eq!(message["blocks"][1]["fields"][3]["text"], "*Tags*\n—");
    }

    #[test]
    fn alert_events_are_one_line() {
        let failing = json!({"type": "destination.failing", "id": "evt_a", "destination": "crm",
            "at": "2026-11-20T15:31:02.511Z", "reason": "the breaker opened after 10 consecutive failed attempts",
            "last_error": "the receiver answered 503 <html>"});
        assert!(is_alert_event(&failing));
        assert_eq!(
            slack_message(&failing),
            json!({"text": "Destination crm is failing: the breaker opened after 10 consecutive failed attempts \
                            (last error: the receiver answered 503 &lt;html&gt;)"})
        );
        let recovered = json!({"type": "destination.recovered", "destination": "crm", "reason": null, "last_error": null});
        assert_eq!(
            slack_message(&recovered),
            json!({"text": "Destination crm recovered"})
        );
        assert_eq!(
            hubspot_upsert(&recovered),
            Body::Skip("an alert event has no HubSpot contact".into())
        );
    }

    fn transform(script: &str) -> Transform {
        let sandbox = Arc::new(Sandbox::new(&Limits {
            max_operations: 10_000,
            ..Limits::default()
        }));
        let ast = sandbox.compile_script(script).unwrap();
        Transform::new("crm.rhai".into(), PathBuf::from("/x/crm.rhai"), ast, sandbox)
    }

    #[test]
    fn a_transform_value_is_the_body() {
        let event = scored_event();
        let map = transform(r#"#{ email: event.contact.email, score: event.score, tags: event.tags }"#);
        assert_eq!(
            map.run(&event).unwrap(),
            Body::Json(
                json!({"email": "raya.fleming@northwind-logistics.com", "score": 85,
                              "tags": ["decision-maker", "r&d"]})
            )
        );
        let text = transform(r#"`${event.tier},${event.score}`"#);
        assert_eq!(text.run(&event).unwrap(), Body::Text("hot,85".into()));
        let skip = transform(r#"if event.tier != "hot" { return; } #{}"#);
        let mut cold = event.clone();
        cold["tier"] = json!("cold");
        assert_eq!(
            skip.run(&cold).unwrap(),
            Body::Skip("the transform crm.rhai returned ()".into())
        );
        assert_eq!(skip.run(&event).unwrap(), Body::Json(json!({})));
        assert_eq!(
            transform("[1, 2]").run(&event).unwrap(),
            Body::Json(json!([1, 2]))
        );
    }

    #[test]
    fn a_failing_transform_is_an_error_of_class_transform() {
        let event = scored_event();
        let error = transform("event.contact.nope.len()").run(&event).unwrap_err();
        assert_eq!(error.class(), "transform");
        assert!(
            error.to_string().starts_with("transform failed: crm.rhai: "),
            "{error}"
        );
        let error = transform("loop {}").run(&event).unwrap_err();
        assert!(
            error.to_string().contains("more than 10000 operations"),
            "{error}"
        );
        let error = transform("42").run(&event).unwrap_err();
        assert!(
            error.to_string().contains("the transform's value is i64 (42)"),
            "{error}"
        );
    }
}
