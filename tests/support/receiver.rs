//! [`Receiver`]: an in-process downstream (CRM, n8n, ...) on 127.0.0.1 that
//! records every request and answers what the test tells it to.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;
use warp::Filter;
use warp::reply::Reply as _;

/// One request the downstream receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When it arrived.
    pub at: SystemTime,
    /// The status the receiver answered.
    pub answered: u16,
    /// Requests being answered when this one arrived, itself included.
    pub in_flight: usize,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("forwarded body is not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("forwarded request has no {name} header: {:?}", self.headers))
            .to_str()
            .expect("a text header")
    }

    pub fn webhook_id(&self) -> String {
        self.header("webhook-id").to_owned()
    }

    pub fn contact_id(&self) -> Value {
        self.json()["contact_id"].clone()
    }

    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.answered)
    }
}

/// What the receiver answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// A `Retry-After` header (seconds or an HTTP date).
    pub retry_after: Option<String>,
    /// How long to hold the request before answering.
    pub delay: Option<Duration>,
}

impl Answer {
    pub const fn status(status: u16) -> Self {
        Self {
            status,
            retry_after: None,
            delay: None,
        }
    }
}

struct ReceiverState {
    received: Mutex<Vec<Received>>,
    /// Requests being answered now, and the most there ever were.
    in_flight: Mutex<(usize, usize)>,
    /// Answers to give next, in order, then the default.
    queue: Mutex<VecDeque<Answer>>,
    default: Mutex<Answer>,
}

impl ReceiverState {
    fn next_answer(&self) -> Answer {
        let queued = self.queue.lock().expect("lock").pop_front();
        queued.unwrap_or_else(|| self.default.lock().expect("lock").clone())
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An in-process downstream (CRM, n8n, …) on 127.0.0.1 that records every
/// request and answers what the test tells it to (`200` by default).
#[derive(Clone)]
pub struct Receiver {
    state: Arc<ReceiverState>,
    addr: SocketAddr,
    _task: Arc<AbortOnDrop>,
}

impl Receiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("the receiver's address");
        let state = Arc::new(ReceiverState {
            received: Mutex::new(Vec::new()),
            in_flight: Mutex::new((0, 0)),
            queue: Mutex::new(VecDeque::new()),
            default: Mutex::new(Answer::status(200)),
        });
        let recorder = state.clone();
        let filter = warp::any()
            .and(warp::path::full())
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .then(
                move |path: warp::path::FullPath, headers: HeaderMap, body: Bytes| {
                    let answer = recorder.next_answer();
                    let now_in_flight = {
                        let mut in_flight = recorder.in_flight.lock().expect("lock");
                        in_flight.0 += 1;
                        in_flight.1 = in_flight.1.max(in_flight.0);
                        in_flight.0
                    };
                    let done = recorder.clone();
                    recorder.received.lock().expect("lock").push(Received {
                        path: path.as_str().to_owned(),
                        headers,
                        body,
                        at: SystemTime::now(),
                        answered: answer.status,
                        in_flight: now_in_flight,
                    });
                    async move {
                        if let Some(delay) = answer.delay {
                            tokio::time::sleep(delay).await;
                        }
                        done.in_flight.lock().expect("lock").0 -= 1;
                        let status = StatusCode::from_u16(answer.status).expect("a valid status");
                        let mut response = warp::reply::with_status("", status).into_response();
                        if let Some(value) = answer.retry_after {
                            response.headers_mut().insert(
                                "retry-after",
                                HeaderValue::try_from(value).expect("a header value"),
                            );
                        }
                        response
                    }
                },
            );
        let task = tokio::spawn(warp::serve(filter).incoming(listener).run());
        Self {
            state,
            addr,
            _task: Arc::new(AbortOnDrop(task)),
        }
    }

    /// The URL to forward to.
    pub fn url(&self) -> String {
        format!("http://{}/hooks/scored", self.addr)
    }

    /// Answers these next, in order, before falling back to the default.
    pub fn answer_next(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state.queue.lock().expect("lock").extend(answers);
    }

    /// The answer once the queue is empty.
    pub fn answer_by_default(&self, answer: Answer) {
        *self.state.default.lock().expect("lock") = answer;
    }

    /// The most requests that were ever being answered at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.in_flight.lock().expect("lock").1
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.state.received.lock().expect("lock").clone()
    }

    /// The requests answered with a 2xx.
    pub fn accepted(&self) -> Vec<Received> {
        self.requests().into_iter().filter(Received::accepted).collect()
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        self.wait_until(&format!("{n} forwarded request(s)"), timeout, |r| r.len() >= n)
            .await
    }

    /// Waits until the requests so far satisfy `done`.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let requests = self.requests();
            if done(&requests) {
                return requests;
            }
            if Instant::now() >= deadline {
                let summary: Vec<String> = requests
                    .iter()
                    .map(|r| {
                        format!(
                            "{} contact {} answered {}",
                            r.headers
                                .get("webhook-id")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("?"),
                            serde_json::from_slice::<Value>(&r.body)
                                .map(|b| b["contact_id"].to_string())
                                .unwrap_or_default(),
                            r.answered
                        )
                    })
                    .collect();
                panic!("timed out after {timeout:?} waiting for {what}; received so far: {summary:#?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
