//! The request a destination would get for an event, without sending it
//! (`leadscore destinations preview`, SPEC 10): method, URL (scheme and
//! host when the URL is a secret), headers with secrets masked, body.
//! Built by the same code as real requests (`auth::header_lines`,
//! [`super::body::build`]), with an OAuth2 token shown as `Bearer ***`
//! and never fetched.

use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;

use super::auth::{Authorization, header_lines};
use super::body::{Body, BodyError};
use super::{Destination, Selection};

/// What a preview of one event shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Preview {
    pub destination: String,
    /// Whether `when` selects the event (alert events always are).
    pub selected: bool,
    /// A `when` that failed at run time (the event is then selected).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when_error: Option<String>,
    pub method: &'static str,
    pub url: String,
    /// Name and value, secrets masked; empty for a skipped delivery.
    pub headers: Vec<(String, String)>,
    pub body: PreviewBody,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PreviewBody {
    Json {
        json: Value,
    },
    Text {
        text: String,
    },
    /// The delivery would be skipped (recorded, not sent).
    Skip {
        reason: String,
    },
}

/// The request `destination` would get for `event` at `now`. A failing
/// transform is the error the delivery would die with.
pub fn preview(destination: &Destination, event: &Value, now: SystemTime) -> Result<Preview, BodyError> {
    let selection = destination.select(event);
    let body = destination.build_body(event)?;
    let event_id = match event.get("id") {
        Some(Value::String(id)) => id.clone(),
        // A dry run has no id yet (SPEC 3): the store assigns it.
        _ => "(assigned when stored)".to_owned(),
    };
    let timestamp = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .to_string();
    let headers = match destination.payload(&body) {
        None => Vec::new(),
        Some(payload) => header_lines(
            destination,
            &payload,
            &event_id,
            &timestamp,
            Authorization::NotFetched,
        )
        .into_iter()
        .map(|line| (line.name.to_string(), line.shown))
        .collect(),
    };
    Ok(Preview {
        destination: destination.name.clone(),
        selected: selection.is_selected(),
        when_error: match selection {
            Selection::SelectedAfterError(why) => Some(why),
            _ => None,
        },
        method: "POST",
        url: destination.display_url(),
        headers,
        body: match body {
            Body::Json(json) => PreviewBody::Json { json },
            Body::Text(text) => PreviewBody::Text { text },
            Body::Skip(reason) => PreviewBody::Skip { reason },
        },
    })
}

impl std::fmt::Display for Preview {
    /// As an HTTP request: `POST url`, the headers, a blank line, the body
    /// (JSON pretty-printed); a skip or an unselected event says so.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.selected {
            return writeln!(
                f,
                "# {}: not selected by `when`; nothing would be sent",
                self.destination
            );
        }
        if let Some(why) = &self.when_error {
            writeln!(
                f,
                "# {}: `when` failed ({why}); the event is selected",
                self.destination
            )?;
        }
        if let PreviewBody::Skip { reason } = &self.body {
            return writeln!(
                f,
                "# {}: skipped ({reason}); nothing would be sent",
                self.destination
            );
        }
        writeln!(f, "{} {}", self.method, self.url)?;
        for (name, value) in &self.headers {
            writeln!(f, "{name}: {value}")?;
        }
        writeln!(f)?;
        match &self.body {
            PreviewBody::Json { json } => {
                writeln!(f, "{}", serde_json::to_string_pretty(json).unwrap_or_default())
            }
            PreviewBody::Text { text } => writeln!(f, "{text}"),
            PreviewBody::Skip { .. } => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::destinations::{Defaults, Destinations};

    fn set() -> Destinations {
        let text = r#"
[[destination]]
name = "crm"
url = "https://api.hubapi.com/crm/v3/objects/contacts/batch/upsert"
template = "hubspot"
auth = { oauth2 = { token_url = "https://api.hubapi.com/oauth/v1/token", client_id = "id", client_secret_env = "CS" } }
headers = { "X-Env" = "prod", "X-Api-Key" = { env = "KEY" } }

[[destination]]
name = "ops-slack"
url = { env = "SLACK_URL" }
template = "slack"
when = 'tier == "hot"'
signing_secret = { env = "SIGN" }
"#;
        let env = |name: &str| match name {
            "CS" => Some("client-secret-value".to_owned()),
            "KEY" => Some("api-key-value".to_owned()),
            "SLACK_URL" => Some("https://hooks.slack.com/services/T/B/slack-secret".to_owned()),
            "SIGN" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()),
            _ => None,
        };
        Destinations::parse(Path::new("d.toml"), text, &Defaults::default(), &env).unwrap()
    }

    fn event(tier: &str) -> Value {
        json!({"type": "contact.scored", "id": null, "contact_id": 5, "score": 80, "tier": tier,
               "reasons": [{"rule": "r", "points": 80, "reason": "Big"}], "tags": [],
               "contact": {"id": 5, "email": "x@y.example", "firstName": "Ann"}})
    }

    #[test]
    fn previews_mask_every_secret() {
        let set = set();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let crm = preview(set.get("crm").unwrap(), &event("warm"), now).unwrap();
        assert_eq!(
            crm.url,
            "https://api.hubapi.com/crm/v3/objects/contacts/batch/upsert"
        );
        assert_eq!(
            crm.headers,
            [
                ("x-env", "prod"),
                ("x-api-key", "***"),
                ("authorization", "Bearer ***"),
                ("content-type", "application/json"),
                ("webhook-id", "(assigned when stored)"),
                ("webhook-timestamp", "1800000000"),
            ]
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
        let PreviewBody::Json { json } = &crm.body else {
            panic!()
        };
        assert_eq!(json["inputs"][0]["id"], "x@y.example");

        let slack = preview(set.get("ops-slack").unwrap(), &event("hot"), now).unwrap();
        assert_eq!(slack.url, "https://hooks.slack.com");
        assert!(
            slack
                .headers
                .contains(&("webhook-signature".into(), "v1,***".into()))
        );
        let text = slack.to_string();
        assert!(
            text.starts_with("POST https://hooks.slack.com\nwebhook-signature: v1,***\n")
                || text.starts_with("POST https://hooks.slack.com\n"),
            "{text}"
        );
        assert!(text.contains("\"text\": \"Ann: hot, score 80\""), "{text}");
        let json = format!(
            "{} {crm} {crm:?} {slack:?}",
            serde_json::to_string(&slack).unwrap()
        );
        for secret in ["client-secret-value", "api-key-value", "slack-secret", "MfKQ9r8"] {
            assert!(!json.contains(secret), "{secret} in {json}");
        }

        let cold = preview(set.get("ops-slack").unwrap(), &event("cold"), now).unwrap();
        assert!(!cold.selected);
        assert_eq!(
            cold.to_string(),
            "# ops-slack: not selected by `when`; nothing would be sent\n"
        );
    }

    #[test]
    fn a_skip_is_shown_as_such() {
        let set = set();
        let mut no_email = event("hot");
        no_email["contact"] = json!({"id": 5});
        let crm = preview(set.get("crm").unwrap(), &no_email, SystemTime::now()).unwrap();
        assert_eq!(
            crm.body,
            PreviewBody::Skip {
                reason: "no email".into()
            }
        );
        assert!(crm.headers.is_empty());
        assert_eq!(
            crm.to_string(),
            "# crm: skipped (no email); nothing would be sent\n"
        );
        assert_eq!(
            serde_json::to_value(&crm).unwrap()["body"],
            json!({"kind": "skip", "reason": "no email"})
        );
    }
}
