//! The steady load a scenario runs under: complete verifications (`POST /api/v1/kyc/verify`, a
//! fresh Idempotency-Key each) and status queries of the requests already accepted, through the
//! edge. Every answer is written down as the client saw it, for the audit.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use uuid::Uuid;

use crate::stack::REQUEST_TIMEOUT;

/// The seed's person.
pub const NAME: &str = "张三";
pub const ID_NUMBER: &str = "11010519491231002X";
const PHONE: &str = "13800138000";
const BOUNDARY: &str = "kyc-chaos-3f9a1c";

/// A client gives up on an answer after this: longer is a hang, which the audit reports.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(REQUEST_TIMEOUT.as_secs() + 10);

/// What the client saw of one request.
#[derive(Debug, Clone)]
pub enum Answer {
    Http {
        code: u16,
        retry_after: bool,
        replayed: bool,
        /// The KYC request the answer names (`request_id` of a verdict, `kyc_request_id` of an
        /// error on an accepted request).
        kyc_request: Option<Uuid>,
        /// The verdict's `status`, when the answer carries one.
        kyc_status: Option<String>,
    },
    /// No HTTP answer: refused connection, reset, or no answer within [`CLIENT_TIMEOUT`].
    Transport { timed_out: bool },
}

#[derive(Debug, Clone)]
pub struct Attempt {
    pub key: String,
    /// Since the load's start.
    pub sent: Duration,
    pub done: Duration,
    pub answer: Answer,
}

impl Attempt {
    pub fn code(&self) -> Option<u16> {
        match self.answer {
            Answer::Http { code, .. } => Some(code),
            Answer::Transport { .. } => None,
        }
    }

    /// The KYC request this attempt created, if the client saw one.
    pub fn accepted(&self) -> Option<Uuid> {
        match &self.answer {
            Answer::Http { kyc_request, .. } => *kyc_request,
            Answer::Transport { .. } => None,
        }
    }
}

/// The verification every request sends: the same multipart bytes each time (with a fixed
/// boundary), so a retry with the same key is the same payload.
pub struct Payload {
    body: Arc<Vec<u8>>,
}

impl Payload {
    pub fn from_fixtures(dir: &Path) -> anyhow::Result<Self> {
        let file = |name: &str| {
            std::fs::read(dir.join(name)).with_context(|| format!("reading fixture {name}"))
        };
        let mut body = Vec::new();
        for (name, value) in [("name", NAME), ("idcard", ID_NUMBER), ("phone", PHONE)] {
            body.extend_from_slice(
                format!(
                    "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                )
                .as_bytes(),
            );
        }
        for (name, f) in [("idcard_image", "idcard.jpg"), ("face_image", "face.jpg")] {
            body.extend_from_slice(
                format!(
                    "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; \
                     filename=\"{f}\"\r\nContent-Type: image/jpeg\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(&file(f)?);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        Ok(Self {
            body: Arc::new(body),
        })
    }
}

/// One client's connection to the stack: the token and the payload.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    pub base: String,
    pub token: String,
    body: Arc<Vec<u8>>,
}

impl Client {
    pub fn new(base: &str, token: String, payload: &Payload) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(CLIENT_TIMEOUT)
                .pool_max_idle_per_host(16)
                .build()?,
            base: base.to_owned(),
            token,
            body: payload.body.clone(),
        })
    }

    /// One verification with `key`, as the client sees it.
    pub async fn verify(&self, key: &str, t0: Instant) -> Attempt {
        let sent = t0.elapsed();
        let resp = self
            .http
            .post(format!("{}/api/v1/kyc/verify", self.base))
            .bearer_auth(&self.token)
            .header("Idempotency-Key", key)
            .header(
                "Content-Type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(self.body.as_ref().clone())
            .send()
            .await;
        let answer = match resp {
            Err(e) => Answer::Transport {
                timed_out: e.is_timeout(),
            },
            Ok(r) => {
                let code = r.status().as_u16();
                let retry_after = r.headers().contains_key("retry-after");
                let replayed = r
                    .headers()
                    .get("idempotent-replayed")
                    .is_some_and(|v| v == "true");
                match r.bytes().await {
                    Err(e) => Answer::Transport {
                        timed_out: e.is_timeout(),
                    },
                    Ok(bytes) => {
                        let v: serde_json::Value =
                            serde_json::from_slice(&bytes).unwrap_or_default();
                        let kyc_status = v["status"].as_str().map(str::to_owned);
                        let id = if kyc_status.is_some() {
                            v["request_id"].as_str()
                        } else {
                            v["kyc_request_id"].as_str()
                        };
                        Answer::Http {
                            code,
                            retry_after,
                            replayed,
                            kyc_request: id.and_then(|s| Uuid::try_parse(s).ok()),
                            kyc_status,
                        }
                    }
                }
            }
        };
        Attempt {
            key: key.to_owned(),
            sent,
            done: t0.elapsed(),
            answer,
        }
    }

    /// The status query (the seed's section 3.6): the HTTP status and the request's `status`.
    pub async fn status(&self, id: Uuid) -> Result<(u16, Option<String>), reqwest::Error> {
        let r = self
            .http
            .get(format!("{}/api/v1/kyc/status/{id}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let code = r.status().as_u16();
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        Ok((code, v["status"].as_str().map(str::to_owned)))
    }
}

/// A status query as the load saw it.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub sent: Duration,
    /// `None`: no HTTP answer.
    pub code: Option<u16>,
}

#[derive(Default)]
pub struct Ledger {
    pub verifies: Vec<Attempt>,
    pub probes: Vec<Probe>,
}

struct Shared {
    client: Client,
    t0: Instant,
    stop: AtomicBool,
    ledger: Mutex<Ledger>,
    accepted: Mutex<Vec<Uuid>>,
    next: AtomicUsize,
}

/// The running load; [`Load::stop`] ends it and hands over the ledger.
pub struct Load {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `verifiers` clients each sending verifications at up to `per_client` per second, and
    /// `pollers` clients querying statuses at up to 20 per second each.
    pub fn start(client: Client, t0: Instant, verifiers: usize, per_client: f64) -> Self {
        let shared = Arc::new(Shared {
            client,
            t0,
            stop: AtomicBool::new(false),
            ledger: Mutex::new(Ledger::default()),
            accepted: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
        });
        let mut tasks = Vec::new();
        let pace = Duration::from_secs_f64(1.0 / per_client);
        for _ in 0..verifiers {
            let s = shared.clone();
            tasks.push(tokio::spawn(async move {
                while !s.stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let a = s.client.verify(&Uuid::new_v4().to_string(), s.t0).await;
                    if let Some(id) = a.accepted() {
                        lock(&s.accepted).push(id);
                    }
                    lock(&s.ledger).verifies.push(a);
                    tokio::time::sleep(pace.saturating_sub(started.elapsed())).await;
                }
            }));
        }
        for _ in 0..2 {
            let s = shared.clone();
            tasks.push(tokio::spawn(async move {
                while !s.stop.load(Ordering::Relaxed) {
                    let id = {
                        let ids = lock(&s.accepted);
                        (!ids.is_empty())
                            .then(|| ids[s.next.fetch_add(7, Ordering::Relaxed) % ids.len()])
                    };
                    if let Some(id) = id {
                        let sent = s.t0.elapsed();
                        let code = s.client.status(id).await.ok().map(|(c, _)| c);
                        lock(&s.ledger).probes.push(Probe { sent, code });
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }));
        }
        Self { shared, tasks }
    }

    /// Answers received so far with this status code, among verifications sent after `since`.
    pub fn count_since(&self, since: Duration, code: u16) -> usize {
        lock(&self.shared.ledger)
            .verifies
            .iter()
            .filter(|a| a.sent >= since && a.code() == Some(code))
            .count()
    }

    /// Stops sending and waits for every request in flight to be answered (or to time out).
    pub async fn stop(self) -> Ledger {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        std::mem::take(&mut *lock(&self.shared.ledger))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
