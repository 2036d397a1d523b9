//! Demo data: realistic iClosed `newContactCreated` contacts, deterministic
//! by seed, for `leadscore demo`, the tests and the README's walkthroughs.
//!
//! The model (ported from the project's first generator script): a contact
//! has a name, a free (35 %) or business email, a status (QUALIFIED three
//! times in five, POTENTIAL and DISQUALIFIED once each), the booking form's
//! answers as numbered `N_question`/`N_response` pairs plus the same answers
//! under their question text (a POTENTIAL hook has only the phone half the
//! time), current- and first-touch UTMs (a custom `partner` parameter in
//! 30 % of tracked leads), a booked call for 60 % of QUALIFIED contacts and
//! iClosed's disqualifying group for DISQUALIFIED ones. Every answer the
//! example rules and the benchmark rules read occurs, so a sample of a few
//! thousand reaches every tier.
//!
//! Why not `rand`: the output is part of the contract (same seed, same
//! bytes, in tests and in the README's figures), and rand documents neither
//! `StdRng` nor its range sampling as stable across versions. A SplitMix64
//! stream with the few draws written out here is.
//!
//! Calls and outcomes (SPEC 11): [`hooks`] gives the call and outcome hooks
//! of one contact from a generator of its own, which reads the contact and
//! draws from a stream seeded by (seed, contact id), so they never change
//! the contacts of a seed. Its module doc holds the buying model.

use serde_json::{Map, Value, json};

mod calls;

pub use calls::hooks;

/// The id of the first contact unless another is asked for.
pub const FIRST_ID: u64 = 100_000;

const ROLES: [&str; 10] = [
    "CEO",
    "Founder",
    "VP of Operations",
    "Head of Sales",
    "Marketing Manager",
    "Operations Analyst",
    "Student",
    "Consultant",
    "CTO",
    "Office Manager",
];
const SIZES: [&str; 7] = [
    "Just me", "2-10", "11-50", "51-200", "201-500", "501-1000", "1000+",
];
const BUDGETS: [&str; 5] = [
    "Less than $500",
    "$500 - $2,000",
    "$2,000 - $5,000",
    "$5,000 - $10,000",
    "$10,000+",
];
const TIMELINES: [&str; 4] = ["Within 30 days", "1-3 months", "3-6 months", "Just researching"];
const TOOLS: [&str; 6] = [
    "Salesforce",
    "HubSpot",
    "Pipedrive",
    "Spreadsheets",
    "Nothing yet",
    "Zoho",
];
/// Current-touch source and medium; `None`: an untracked lead.
const SOURCES: [Option<(&str, &str)>; 6] = [
    Some(("google", "cpc")),
    Some(("facebook", "paid_social")),
    Some(("linkedin", "social")),
    Some(("newsletter", "email")),
    Some(("partner", "referral")),
    None,
];
const FREE_DOMAINS: [&str; 4] = ["gmail.com", "yahoo.com", "hotmail.com", "outlook.com"];
const FIRST_NAMES: [&str; 12] = [
    "Ava", "Noah", "Mia", "Liam", "Zoe", "Omar", "Sofia", "Kenji", "Amara", "Lucas", "Chloé", "Søren",
];
const LAST_NAMES: [&str; 10] = [
    "Nguyen", "Smith", "Garcia", "Okafor", "Müller", "Rossi", "Tanaka", "Kowalski", "Haddad", "Silva",
];
/// Drawn uniformly: QUALIFIED three times in five.
const STATUSES: [&str; 5] = ["POTENTIAL", "QUALIFIED", "QUALIFIED", "QUALIFIED", "DISQUALIFIED"];
const COUNTRIES: [&str; 6] = ["US", "GB", "DE", "IN", "BR", "NG"];
/// The booking form's own questions, after phone, email and name.
pub const QUESTIONS: [&str; 5] = [
    "What is your role?",
    "How many employees does your company have?",
    "What is your monthly budget for this project?",
    "When do you want to get started?",
    "Which tools do you use today?",
];

/// SplitMix64 (Steele, Lea, Flood 2014): small, fast and fixed forever.
#[derive(Debug, Clone)]
struct Stream(u64);

impl Stream {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (multiply-shift; the bias is far below what a
    /// demo can show).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `low..=high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// An endless, deterministic sequence of contacts: the same seed gives the
/// same contacts, ids counting up from the first one.
#[derive(Debug, Clone)]
pub struct Contacts {
    stream: Stream,
    next_id: u64,
}

impl Contacts {
    /// Contacts of `seed`, the first with id [`FIRST_ID`].
    pub fn new(seed: u64) -> Self {
        Self::starting_at(seed, FIRST_ID)
    }

    /// Contacts of `seed`, the first with id `first_id`.
    pub fn starting_at(seed: u64, first_id: u64) -> Self {
        Self {
            // Seeds 0, 1, 2, ... must not give overlapping streams: spread them.
            stream: Stream(seed.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ 0x5EED_5EED_5EED_5EED),
            next_id: first_id,
        }
    }
}

impl Iterator for Contacts {
    type Item = Value;

    fn next(&mut self) -> Option<Value> {
        let id = self.next_id;
        self.next_id += 1;
        Some(contact(&mut self.stream, id))
    }
}

/// The first `n` contacts of `seed` (ids from [`FIRST_ID`]).
pub fn contacts(seed: u64, n: usize) -> Vec<Value> {
    Contacts::new(seed).take(n).collect()
}

/// One `newContactCreated` contact.
fn contact(rng: &mut Stream, id: u64) -> Value {
    let first = rng.pick(&FIRST_NAMES);
    let last = rng.pick(&LAST_NAMES);
    let domain = if rng.chance(0.35) {
        rng.pick(&FREE_DOMAINS).to_owned()
    } else {
        format!("{}-{}.example.com", last.to_lowercase(), rng.between(1, 999))
    };
    let email = format!(
        "{}.{}{}@{domain}",
        first.to_lowercase(),
        last.to_lowercase(),
        rng.between(1, 99)
    );
    let phone = format!("+1{}", rng.between(2_000_000_000, 9_999_999_999));
    let status = rng.pick(&STATUSES);
    let tool = rng.below(TOOLS.len() as u64) as usize;
    let other_tool = (tool + 1 + rng.below(TOOLS.len() as u64 - 1) as usize) % TOOLS.len();
    let answers = [
        phone.clone(),
        email.clone(),
        format!("{first} {last}"),
        rng.pick(&ROLES).to_owned(),
        rng.pick(&SIZES).to_owned(),
        rng.pick(&BUDGETS).to_owned(),
        rng.pick(&TIMELINES).to_owned(),
        format!("{}, {}", TOOLS[tool], TOOLS[other_tool]),
    ];
    let labels = ["Phone Number", "Email Address", "Full Name"]
        .into_iter()
        .chain(QUESTIONS);
    // Early POTENTIAL hooks often carry only the first answer.
    let depth = if status == "POTENTIAL" && rng.chance(0.5) {
        1
    } else {
        answers.len()
    };
    let mut qa = Map::new();
    let pairs: Vec<(&str, &String)> = labels.zip(&answers).take(depth).collect();
    for (n, (question, response)) in pairs.iter().enumerate() {
        qa.insert(format!("{}_question", n + 1), json!(question));
        qa.insert(format!("{}_response", n + 1), json!(response));
    }
    for (question, response) in &pairs {
        qa.insert((*question).to_owned(), json!(response));
    }

    let mut tracking = Map::new();
    if let Some((source, medium)) = rng.pick(&SOURCES) {
        let first_source = if rng.chance(0.5) { source } else { "organic" };
        tracking.extend([
            ("utm_source".to_owned(), json!(source)),
            ("utm_medium".to_owned(), json!(medium)),
            (
                "utm_campaign".to_owned(),
                json!(format!("campaign-{}", rng.between(1, 40))),
            ),
            ("utm_term".to_owned(), Value::Null),
            ("utm_content".to_owned(), Value::Null),
            ("first_utm_source".to_owned(), json!(first_source)),
            ("first_utm_medium".to_owned(), json!(medium)),
            ("first_utm_campaign".to_owned(), Value::Null),
        ]);
        if rng.chance(0.3) {
            tracking.insert("utmKey_1".to_owned(), json!("partner"));
            tracking.insert(
                "utmValue_1".to_owned(),
                json!(format!("partner-{}", rng.between(1, 9))),
            );
        }
    }

    let disqualifying_group = if status == "DISQUALIFIED" {
        json!([{
            "id": rng.between(1, 90),
            "name": "Budget too low",
            "logicalOperator": "OR",
            "logicStatements": [{"question": QUESTIONS[2], "operator": "IS", "values": [BUDGETS[0]]}],
        }])
    } else {
        json!([])
    };
    let time = format!(
        "2026-11-{:02}T{:02}:{:02}:00.000Z",
        rng.between(1, 28),
        rng.between(0, 23),
        rng.between(0, 59)
    );
    let latest_call = if status == "QUALIFIED" && rng.chance(0.6) {
        let host = rng.between(1, 30);
        json!({
            "id": id * 3,
            "dateTime": time,
            "duration": rng.pick(&[15, 30, 45, 60]),
            "status": "SCHEDULED",
            "user": {"id": host, "firstName": "Host", "lastName": host.to_string(), "email": "host@example-sales.com"},
        })
    } else {
        Value::Null
    };
    json!({
        "id": id,
        "userId": 4,
        "accountId": 3,
        "firstName": first,
        "lastName": last,
        "email": email,
        "phoneNumber": phone,
        "secondary_email": null,
        "secondary_phoneNumber": null,
        "status": status,
        "createdAt": time,
        "updatedAt": time,
        "previewId": format!("contact_{id:012}"),
        "timeZone": "America/New_York",
        "joinedTime": time,
        "country": rng.pick(&COUNTRIES),
        "ipAddress": format!("198.51.100.{}", rng.between(1, 254)),
        "hookType": "Contact created",
        "event": {"id": 812, "name": "Discovery Call", "linkPrefix": "discovery", "color": "#4F46E5", "eventType": "DISCOVERY_EVENT"},
        "questionsAndAnswers": qa,
        "tracking": tracking,
        "latestCall": latest_call,
        "disqualifyingGroup": disqualifying_group,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_fixed() {
        // SplitMix64's published first outputs for seed 0: the generator
        // must never change under a dependency upgrade.
        let mut stream = Stream(0);
        assert_eq!(stream.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(stream.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn ids_count_up_from_the_first() {
        let ids: Vec<u64> = Contacts::starting_at(3, 7)
            .take(3)
            .map(|c| c["id"].as_u64().unwrap())
            .collect();
        assert_eq!(ids, [7, 8, 9]);
    }

    #[test]
    fn a_potential_contact_may_carry_only_its_phone() {
        let short = contacts(1, 500)
            .into_iter()
            .find(|c| c["questionsAndAnswers"].as_object().unwrap().len() == 3)
            .expect("some early POTENTIAL hook among 500");
        assert_eq!(short["status"], "POTENTIAL");
        assert_eq!(short["questionsAndAnswers"]["1_question"], "Phone Number");
        assert_eq!(short["questionsAndAnswers"]["Phone Number"], short["phoneNumber"]);
    }
}
