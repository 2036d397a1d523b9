//! `leadscore demo`: generated contacts ([`crate::demo`]) posted to a running
//! engine's webhook, or written as JSON lines (one webhook body per line);
//! with `--outcomes`, then every contact's call and outcome hooks
//! ([`crate::demo::hooks`]), one hook per body, to the same place.

use std::io::{BufWriter, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use crate::demo::{Contacts, FIRST_ID, hooks};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many contacts to generate.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub contacts: u64,
    /// Same seed, same contacts.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// The id of the first contact; the others count up from it.
    #[arg(long, default_value_t = FIRST_ID)]
    pub first_id: u64,
    /// Contacts per webhook body (per request, or per line of the output).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub batch: u64,
    /// A running engine to post to: its address (`http://127.0.0.1:8080`,
    /// the contacts go to /webhooks/iclosed) or a full webhook URL.
    #[arg(long, conflicts_with = "out")]
    pub url: Option<String>,
    /// The engine's webhook token (`--webhook-token`), sent as `Authorization: Bearer`.
    #[arg(
        long,
        env = "LEADSCORE_WEBHOOK_TOKEN",
        hide_env_values = true,
        requires = "url"
    )]
    pub token: Option<String>,
    /// Write JSON lines here (`-` or no --url and no --out: standard output).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// After all the contacts, also send each contact's call and outcome
    /// hooks (booked, rescheduled or canceled, outcome), one hook per body.
    #[arg(long)]
    pub outcomes: bool,
}

pub fn run(args: &DemoArgs) -> ExitCode {
    let (seed, first_id, n) = (args.seed, args.first_id, args.contacts as usize);
    let contacts = batches(Contacts::starting_at(seed, first_id).take(n), args.batch as usize);
    // The contacts come first, so that every hook links as it arrives; the
    // hooks read the same contacts again (cheaper than keeping them).
    let hook_bodies = args.outcomes.then(|| {
        Contacts::starting_at(seed, first_id)
            .take(n)
            .flat_map(move |contact| hooks(seed, &contact))
            .map(|hook| vec![hook])
    });
    let outcome = match &args.url {
        Some(url) => post_all(url, args.token.as_deref(), contacts, hook_bodies),
        None => write_all(
            args.out.as_ref(),
            contacts.chain(hook_bodies.into_iter().flatten()),
        ),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Webhook bodies: JSON arrays of up to `size` contacts.
fn batches(contacts: impl Iterator<Item = Value>, size: usize) -> impl Iterator<Item = Vec<Value>> {
    let mut contacts = contacts.peekable();
    std::iter::from_fn(move || {
        contacts.peek()?;
        Some(contacts.by_ref().take(size).collect())
    })
}

fn write_all(out: Option<&PathBuf>, bodies: impl Iterator<Item = Vec<Value>>) -> Result<(), String> {
    let to_stdout = out.is_none_or(|p| p.as_os_str() == "-");
    let (mut writer, name): (Box<dyn std::io::Write>, String) = if to_stdout {
        (Box::new(std::io::stdout().lock()), "standard output".into())
    } else {
        let path = out.expect("a path");
        let file =
            std::fs::File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        (Box::new(file), path.display().to_string())
    };
    let mut writer = BufWriter::new(&mut writer);
    for body in bodies {
        serde_json::to_writer(&mut writer, &body)
            .and_then(|()| writer.write_all(b"\n").map_err(serde_json::Error::io))
            .map_err(|e| format!("cannot write {name}: {e}"))?;
    }
    writer.flush().map_err(|e| format!("cannot write {name}: {e}"))
}

/// The webhook URL: a bare address gets the iClosed webhook path.
fn webhook_url(text: &str) -> Result<reqwest::Url, String> {
    let mut url = reqwest::Url::parse(text.trim()).map_err(|e| format!("--url {text:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("--url {text:?}: use an http:// or https:// URL"));
    }
    if url.path() == "/" {
        url.set_path("/webhooks/iclosed");
    }
    Ok(url)
}

/// What the engine answered to a run of bodies.
#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    sent: u64,
    accepted: u64,
    duplicates: u64,
}

impl Tally {
    fn summary(&self, what: &str, url: &reqwest::Url) -> String {
        let Self {
            requests,
            sent,
            accepted,
            duplicates,
        } = self;
        format!(
            "sent {sent} {what} in {requests} request(s) to {url}: {accepted} accepted, {duplicates} duplicates"
        )
    }
}

/// Posts the contacts, then the hooks if there are any to send.
fn post_all(
    url: &str,
    token: Option<&str>,
    contacts: impl Iterator<Item = Vec<Value>>,
    hooks: Option<impl Iterator<Item = Vec<Value>>>,
) -> Result<(), String> {
    let url = webhook_url(url)?;
    let token = token.map(str::trim).filter(|t| !t.is_empty());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        let tally = post_bodies(&client, &url, token, contacts).await?;
        println!("{}", tally.summary("contacts", &url));
        if let Some(hooks) = hooks {
            let tally = post_bodies(&client, &url, token, hooks).await?;
            println!("{}", tally.summary("call and outcome hooks", &url));
        }
        Ok(())
    })
}

async fn post_bodies(
    client: &reqwest::Client,
    url: &reqwest::Url,
    token: Option<&str>,
    bodies: impl Iterator<Item = Vec<Value>>,
) -> Result<Tally, String> {
    let mut tally = Tally::default();
    for body in bodies {
        let answer = post_one(client, url, token, &body).await?;
        tally.requests += 1;
        tally.sent += body.len() as u64;
        tally.accepted += answer["accepted"].as_u64().unwrap_or(0);
        tally.duplicates += answer["duplicates"].as_u64().unwrap_or(0);
    }
    Ok(tally)
}

/// Posts one body; a busy or briefly unavailable engine (429, 503) is
/// asked again a few times (a repeated body is a duplicate, never a second
/// contact).
async fn post_one(
    client: &reqwest::Client,
    url: &reqwest::Url,
    token: Option<&str>,
    body: &[Value],
) -> Result<Value, String> {
    const ATTEMPTS: u32 = 5;
    let bytes = serde_json::to_vec(body).map_err(|e| format!("cannot encode a body: {e}"))?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut request = client
            .post(url.clone())
            .header("content-type", "application/json")
            .body(bytes.clone());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("cannot reach {url}: {e} (is `leadscore serve` running there?)"))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let text = response.text().await.unwrap_or_default();
        if status.is_success() {
            return serde_json::from_str(&text)
                .map_err(|e| format!("{url} answered {status} with a body that is not JSON ({e})"));
        }
        if matches!(status.as_u16(), 429 | 503) && attempt < ATTEMPTS {
            let wait = Duration::from_secs(retry_after.unwrap_or(1).clamp(1, 10));
            tokio::time::sleep(wait).await;
            continue;
        }
        let hint = if status.as_u16() == 401 {
            " (give the engine's webhook token with --token or LEADSCORE_WEBHOOK_TOKEN)"
        } else {
            ""
        };
        let text: String = text.chars().take(500).collect();
        return Err(format!("{url} answered {status}{hint}: {text}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_address_gets_the_webhook_path() {
        assert_eq!(
            webhook_url("http://127.0.0.1:8080").unwrap().as_str(),
            "http://127.0.0.1:8080/webhooks/iclosed"
        );
        assert_eq!(
            webhook_url("https://scoring.example.com/webhooks/iclosed?source=demo")
                .unwrap()
                .as_str(),
            "https://scoring.example.com/webhooks/iclosed?source=demo"
        );
        assert!(webhook_url("ftp://x").unwrap_err().contains("http://"));
        assert!(webhook_url("localhost:8080x").is_err());
    }

    #[test]
    fn batches_split_and_keep_the_rest() {
        let sizes: Vec<usize> = batches((0..7).map(Value::from), 3).map(|b| b.len()).collect();
        assert_eq!(sizes, [3, 3, 1]);
    }
}
