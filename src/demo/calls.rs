//! Calls and outcomes for generated contacts: the `Call booked`, `Call
//! rescheduled`, `Call canceled` and `Outcome added` hooks iClosed would
//! send for one contact (SPEC 11), in the shapes of its fixtures.
//!
//! A contact's hooks come from a stream of their own, seeded by (seed,
//! contact id), and read only the contact: generating them never changes
//! the contacts of a seed, and the hooks of one contact do not depend on
//! which contacts came before it. The contact's fields are read
//! defensively (a missing or odd field counts as absent), so any
//! `newContactCreated` contact works, not only generated ones.
//!
//! The model, imitating the project's first outcome generator:
//!
//! 1. **Booked call.** A contact with a `latestCall` always books; otherwise
//!    by `status`: QUALIFIED 0.25, POTENTIAL 0.2, anything else (DISQUALIFIED)
//!    0.05. (Generated QUALIFIED contacts have a `latestCall` three times in
//!    five, so 0.7 of them book.) No booking: no hooks at all.
//! 2. **Its fate,** one draw: canceled 0.10 (a `Call canceled` follows and
//!    nothing else), rescheduled 0.15 (a `Call rescheduled` to a start one
//!    to four days after the first one's day), kept 0.75.
//! 3. **Outcome.** A call that was not canceled gets an `Outcome added` with
//!    probability 0.85.
//! 4. **Sale,** given an outcome: the product of base 0.04; role (`What is
//!    your role?`) CEO, Founder, CTO or VP of Operations ×3; budget (`What is
//!    your monthly budget for this project?`) `$10,000+` ×2.5, `$5,000 -
//!    $10,000` ×1.8; current `utm_source` linkedin ×2; a free email domain
//!    ×0.5; capped at 0.9. A DISQUALIFIED contact: 0.005. A sale is `SALE`
//!    (0.8) or `PARTIAL_SALE`, with `dealValue` (and `deal.value`) 2,000 to
//!    30,000 in steps of 500; anything else is `NO_SALE`, `NOT_INTERESTED`
//!    or `PRICE_OBJECTION` without a value.
//!
//! A contact's chance to buy is therefore booked × 0.9 × 0.85 × sale.
//! Variations a linker must cope with: an outcome's `contactId` is `null`
//! one time in five (it links by email only), and a contact's call hooks
//! carry the invitee email upper-cased three times in ten (Unicode upper
//! case: `chloé` becomes `CHLOÉ`). Times: the call
//! is booked up to 90 minutes after the contact's `createdAt` and starts one
//! to four days later, on the hour or half hour between 14:00 and 21:30 UTC;
//! all times are UTC.

use serde_json::{Value, json};

use super::{FREE_DOMAINS, QUESTIONS, Stream};

/// Roles that buy three times as often.
const DECISION_MAKERS: [&str; 4] = ["ceo", "founder", "cto", "vp of operations"];
/// `(name, email)` of the closers who take the calls.
const CLOSERS: [(&str, &str); 3] = [
    ("Dana Closer", "dana@seller.example"),
    ("Miguel Reyes", "miguel@seller.example"),
    ("Priya Shah", "priya@seller.example"),
];
/// `(callOutcome, noSaleReason, objection)` of a call that did not sell.
const NO_SALES: [(&str, &str, Option<&str>); 3] = [
    ("NO_SALE", "Not a fit", None),
    ("NOT_INTERESTED", "Not interested right now", None),
    ("PRICE_OBJECTION", "Budget below minimum", Some("Price")),
];
const CANCEL_REASONS: [&str; 3] = [
    "Went with another vendor",
    "No longer needed",
    "Scheduling conflict",
];
const RESCHEDULE_REASONS: [&str; 3] = ["Travelling that day", "Conflicting meeting", "Feeling unwell"];
const PRODUCTS: [&str; 2] = ["Annual plan", "Monthly plan"];
const CALL_MINUTES: u64 = 30;
/// 2026-11-01T00:00:00Z: the time of a contact without a readable `createdAt`.
const FALLBACK_CREATED: u64 = 1_793_491_200;

/// The call and outcome hooks iClosed would send for `contact`, in order:
/// maybe `Call booked`, then maybe `Call rescheduled` or `Call canceled`,
/// then maybe `Outcome added` (never after a cancellation). The same seed and
/// contact always give the same hooks; see the module doc for the model.
pub fn hooks(seed: u64, contact: &Value) -> Vec<Value> {
    let key = contact_key(&contact["id"]);
    let mut rng = stream_for(seed, key);
    let status = text(&contact["status"]).trim().to_ascii_uppercase();
    let p_book = if contact["latestCall"].is_object() {
        1.0
    } else {
        match status.as_str() {
            "QUALIFIED" => 0.25,
            "POTENTIAL" => 0.2,
            _ => 0.05,
        }
    };
    if !rng.chance(p_book) {
        return Vec::new();
    }

    let created = text(&contact["createdAt"])
        .get(..16)
        .and_then(parse_minutes)
        .unwrap_or(FALLBACK_CREATED);
    let booked_at = created + 60 * rng.between(1, 90);
    let start = call_start(&mut rng, created);
    let closer = rng.pick(&CLOSERS);
    let email = text(&contact["email"]);
    let invitee_email = if rng.chance(0.3) {
        email.to_uppercase()
    } else {
        email.to_owned()
    };
    let call = Call {
        contact,
        uuid: key.wrapping_mul(7).wrapping_add(1).to_string(),
        invitee_email,
        closer,
        booked_at,
    };
    let mut hooks = vec![call.hook("Call booked", start, None)];

    let fate = rng.below(100);
    if fate < 10 {
        let canceled_at = booked_at + 3600 * rng.between(1, 12);
        let reason = rng.pick(&CANCEL_REASONS);
        hooks.push(call.hook(
            "Call canceled",
            start,
            Some(Change::Canceled { canceled_at, reason }),
        ));
        return hooks;
    }
    let start = if fate < 25 {
        let later = call_start(&mut rng, start);
        let reason = rng.pick(&RESCHEDULE_REASONS);
        hooks.push(call.hook(
            "Call rescheduled",
            later,
            Some(Change::Rescheduled { from: start, reason }),
        ));
        later
    } else {
        start
    };

    if !rng.chance(0.85) {
        return hooks;
    }
    let sold = rng.chance(sale_probability(contact, &status));
    let (outcome, reason, objection, value) = if sold {
        let outcome = if rng.chance(0.8) { "SALE" } else { "PARTIAL_SALE" };
        (outcome, None, None, Some(2_000 + 500 * rng.between(0, 56)))
    } else {
        let (outcome, reason, objection) = rng.pick(&NO_SALES);
        (outcome, Some(reason), objection, None)
    };
    let contact_id = if rng.chance(0.2) {
        Value::Null
    } else {
        contact["id"].clone()
    };
    let (event_id, event_name, _) = event_type(contact);
    hooks.push(json!({
        "uuid": key.wrapping_mul(7).wrapping_add(3),
        "userId": contact.get("userId").cloned().unwrap_or(json!(4)),
        "eventName": event_name,
        "eventId": event_id.parse::<u64>().map_or(json!(event_id), Value::from),
        "eventDuration": CALL_MINUTES,
        "eventDurationUnit": "MINUTES",
        "email": email,
        "contactId": contact_id,
        "firstName": contact["firstName"],
        "lastName": contact["lastName"],
        "phoneNumber": contact["phoneNumber"],
        "closerEmail": closer.1,
        "callOutcome": outcome,
        "noSaleReason": reason,
        "objection": objection,
        "startTime": utc(start, "Z"),
        "notes": if sold { json!("Signed on the call") } else { Value::Null },
        "dealValue": value,
        "productName": if sold { json!(rng.pick(&PRODUCTS)) } else { Value::Null },
        "deal": value.map(|value| json!({
            "transactionType": "SALE",
            "createdAt": utc(start + 60 * (CALL_MINUTES + 10), "Z"),
            "value": value,
        })),
        "transaction": [],
        "hookType": "Outcome added",
    }));
    hooks
}

/// The chance that a contact with an outcome bought (step 4 of the model).
fn sale_probability(contact: &Value, status: &str) -> f64 {
    if status == "DISQUALIFIED" {
        return 0.005;
    }
    let answer = |question: &str| text(&contact["questionsAndAnswers"][question]).trim().to_owned();
    let mut p = 0.04;
    if DECISION_MAKERS.contains(&answer(QUESTIONS[0]).to_lowercase().as_str()) {
        p *= 3.0;
    }
    p *= match answer(QUESTIONS[2]).as_str() {
        "$10,000+" => 2.5,
        "$5,000 - $10,000" => 1.8,
        _ => 1.0,
    };
    if text(&contact["tracking"]["utm_source"])
        .trim()
        .eq_ignore_ascii_case("linkedin")
    {
        p *= 2.0;
    }
    let email = text(&contact["email"]).trim().to_ascii_lowercase();
    let domain = email.rsplit_once('@').map_or("", |(_, d)| d);
    if FREE_DOMAINS.contains(&domain) {
        p *= 0.5;
    }
    f64::min(p, 0.9)
}

/// What a later call hook changes.
enum Change {
    Canceled { canceled_at: u64, reason: &'static str },
    Rescheduled { from: u64, reason: &'static str },
}

/// What a contact's call hooks share.
struct Call<'a> {
    contact: &'a Value,
    uuid: String,
    invitee_email: String,
    closer: (&'static str, &'static str),
    booked_at: u64,
}

impl Call<'_> {
    fn hook(&self, kind: &str, start: u64, change: Option<Change>) -> Value {
        let c = self.contact;
        let (type_uuid, name, slug) = event_type(c);
        let end = start + 60 * CALL_MINUTES;
        let (first, last) = (text(&c["firstName"]), text(&c["lastName"]));
        let full_name = format!("{first} {last}").trim().to_owned();
        let (closer_name, closer_email) = self.closer;
        let mut event = json!({
            "uuid": self.uuid,
            "assigned_to": {"1": closer_name},
            "extended_assigned_to": {"1": {"name": closer_name, "email": closer_email, "primary": "true"}},
            "utc_start_time": utc(start, "+00:00"),
            "utc_end_time": utc(end, "+00:00"),
            "start_time": utc(start, "+00:00"),
            "start_time_pretty": pretty(start),
            "end_time": utc(end, "+00:00"),
            "end_time_pretty": pretty(end),
            "created_at": utc(self.booked_at, "+00:00"),
            "type": "DISCOVERY_CALL",
            "location": format!("https://app.iclosed.io/e/{slug}"),
            "canceled": false,
            "canceler_name": null,
            "cancel_reason": null,
            "canceled_at": null,
        });
        let mut invitee = json!({
            "previewUrl": format!("https://app.iclosed.io/contacts/{}", text(&c["previewId"])),
            "uuid": format!("inv_{}", self.uuid),
            "name": full_name,
            "first_name": first,
            "last_name": last,
            "email": self.invitee_email,
            "phone_number": c["phoneNumber"],
            "timezone": c["timeZone"],
            "canceled": false,
            "is_reschedule": false,
        });
        match change {
            Some(Change::Canceled { canceled_at, reason }) => {
                event["canceled"] = json!(true);
                event["canceler_name"] = json!(full_name);
                event["cancel_reason"] = json!(reason);
                event["canceled_at"] = json!(utc(canceled_at, "+00:00"));
                invitee["canceled"] = json!(true);
                invitee["canceler_name"] = json!(full_name);
                invitee["cancel_reason"] = json!(reason);
            }
            Some(Change::Rescheduled { from, reason }) => {
                event["old_start_time"] = json!(utc(from, "+00:00"));
                invitee["is_reschedule"] = json!(true);
                invitee["reschedule_reason"] = json!(reason);
            }
            None => {}
        }
        json!({
            "event_type": {
                "uuid": type_uuid,
                "kind": "Round Robin",
                "slug": slug,
                "name": name,
                "duration": CALL_MINUTES.to_string(),
                "durationUnit": "MINUTES",
                "owner": {"type": "closer"},
                "type": "DISCOVERY_EVENT",
            },
            "event": event,
            "invitee": invitee,
            "hookType": kind,
        })
    }
}

/// `(id, name, slug)` of the contact's event type, iClosed's discovery call
/// unless the contact says otherwise.
fn event_type(contact: &Value) -> (String, String, String) {
    let event = &contact["event"];
    let id = match &event["id"] {
        Value::Number(n) => n.to_string(),
        Value::String(s) if !s.is_empty() => s.clone(),
        _ => "812".to_owned(),
    };
    let or = |value: &str, default: &str| if value.is_empty() { default } else { value }.to_owned();
    (
        id,
        or(text(&event["name"]), "Discovery Call"),
        or(text(&event["linkPrefix"]), "discovery"),
    )
}

/// A call start one to four days after the day of `after`, on the hour or
/// half hour between 14:00 and 21:30 UTC.
fn call_start(rng: &mut Stream, after: u64) -> u64 {
    let day = after / 86_400 + rng.between(1, 4);
    day * 86_400 + 3600 * rng.between(14, 21) + 1800 * rng.below(2)
}

/// A contact's stream: (seed, contact key) mixed so that neighbouring ids
/// and seeds give unrelated streams, salted apart from the contacts' own.
fn stream_for(seed: u64, key: u64) -> Stream {
    let seeded = Stream(seed ^ 0xCA11_5A1E_0C0E_CA11).next_u64();
    Stream(Stream(seeded ^ key).next_u64())
}

/// The contact id as a number: itself if it is one, else a hash (FNV-1a)
/// of its JSON text.
fn contact_key(id: &Value) -> u64 {
    if let Some(n) = id.as_u64() {
        return n;
    }
    if let Some(n) = id.as_str().and_then(|s| s.trim().parse::<u64>().ok()) {
        return n;
    }
    id.to_string().bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    })
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

/// Unix seconds of `YYYY-MM-DDTHH:MM` (UTC).
fn parse_minutes(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 16 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| text.get(range)?.parse::<u64>().ok();
    let (y, m, d, h, min) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?);
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 || min > 59 {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400 + h * 3600 + min * 60)
}

/// Days since 1970-01-01 of a date from 1970 on (Hinnant's algorithm).
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `(year, month, day)` of days since 1970-01-01 (Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + u64::from(m <= 2), m, d)
}

/// `2026-11-24T17:00:00` and `zone` (`Z` or `+00:00`).
fn utc(secs: u64, zone: &str) -> String {
    let (y, m, d) = civil_from_days(secs / 86_400);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{zone}",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// `05:00pm - Tuesday, November 24, 2026`, as iClosed writes it.
fn pretty(secs: u64) -> String {
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let days = secs / 86_400;
    let (y, m, d) = civil_from_days(days);
    let s = secs % 86_400;
    let (h, min) = (s / 3600, s % 3600 / 60);
    let (h12, half) = (
        if h % 12 == 0 { 12 } else { h % 12 },
        if h < 12 { "am" } else { "pm" },
    );
    format!(
        "{h12:02}:{min:02}{half} - {}, {} {d}, {y}",
        DAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_and_write_as_iclosed_does() {
        let t = parse_minutes("2026-11-24T17:00").unwrap();
        assert_eq!(utc(t, "+00:00"), "2026-11-24T17:00:00+00:00");
        assert_eq!(utc(t, "Z"), "2026-11-24T17:00:00Z");
        assert_eq!(pretty(t), "05:00pm - Tuesday, November 24, 2026");
        assert_eq!(
            pretty(t - 17 * 3600 + 1800),
            "12:30am - Tuesday, November 24, 2026"
        );
        assert_eq!(utc(FALLBACK_CREATED, "Z"), "2026-11-01T00:00:00Z");
        assert_eq!(
            utc(parse_minutes("2028-02-29T23:59").unwrap() + 60, "Z"),
            "2028-03-01T00:00:00Z"
        );
        assert_eq!(parse_minutes("2026-13-01T00:00"), None);
        assert_eq!(parse_minutes("yesterday"), None);
    }

    #[test]
    fn an_odd_contact_still_gets_well_formed_hooks() {
        // No createdAt, a string id, no answers: every path stays defined.
        let contact = json!({"id": "abc", "status": "QUALIFIED", "latestCall": {}});
        let hooks = hooks(1, &contact);
        assert_eq!(hooks[0]["hookType"], "Call booked");
        assert!(
            hooks[0]["event"]["utc_start_time"]
                .as_str()
                .unwrap()
                .starts_with("2026-11-0")
        );
        assert_eq!(hooks, super::hooks(1, &contact));
    }

    #[test]
    fn the_sale_model_multiplies_and_caps() {
        let contact = |role: &str, budget: &str, source: &str, email: &str| {
            json!({
                "email": email,
                "questionsAndAnswers": {QUESTIONS[0]: role, QUESTIONS[2]: budget},
                "tracking": {"utm_source": source},
            })
        };
        let p = |c: &Value| sale_probability(c, "QUALIFIED");
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(
            p(&contact("Student", "Less than $500", "google", "a@b.example.com")),
            0.04
        ));
        assert!(close(
            p(&contact("CEO", "$10,000+", "google", "a@b.example.com")),
            0.3
        ));
        assert!(close(
            p(&contact("cto", "$5,000 - $10,000", "linkedin", "a@gmail.com")),
            0.216
        ));
        assert!(close(
            p(&contact("Founder", "$10,000+", "linkedin", "a@b.example.com")),
            0.6
        ));
        assert!(close(p(&json!({})), 0.04));
        assert!(close(
            sale_probability(&contact("CEO", "$10,000+", "linkedin", ""), "DISQUALIFIED"),
            0.005
        ));
    }
}
