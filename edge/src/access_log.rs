//! The access log, in the spirit of Kong's (nginx's `combined` format plus the request id):
//!
//! `127.0.0.1 - - [30/Nov/2026:15:36:58 +0000] "POST /api/v1/kyc/ocr HTTP/1.1" 200 - "-" "curl/8.5.0" kong_request_id: "…"`
//!
//! Lines go through a bounded queue to a writer thread, so a slow disk never holds a request; when
//! the queue is full the line is dropped and counted. Query values named like credentials
//! (`access_token`, `token`, `key`, …) are written as `REDACTED`: the WebSocket route carries its
//! access token in the query.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use anyhow::Context as _;

const QUEUE: usize = 8192;
const SECRET_PARAMS: &[&str] = &[
    "access_token",
    "token",
    "id_token",
    "refresh_token",
    "ticket",
    "key",
    "apikey",
    "api_key",
    "client_secret",
];

pub struct AccessLog {
    tx: SyncSender<String>,
    pub dropped: AtomicU64,
}

impl AccessLog {
    /// Appends to `path` (its directory is created).
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening the access log {}", path.display()))?;
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("kyc-edge-access-log".into())
            .spawn(move || write_lines(&rx, file))?;
        Ok(Self {
            tx,
            dropped: AtomicU64::new(0),
        })
    }

    pub fn write(&self, line: String) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(line) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn write_lines(rx: &Receiver<String>, file: std::fs::File) {
    let mut out = std::io::BufWriter::new(file);
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(line) => {
                if out.write_all(line.as_bytes()).is_err() {
                    tracing::warn!("the access log cannot be written");
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = out.flush();
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let _ = out.flush();
                return;
            }
        }
        // Flush once the queue is drained, so `tail -f` sees lines promptly.
        if rx.try_iter().next().is_none() {
            let _ = out.flush();
        }
    }
}

/// `path?query` with the values of credential-like parameters replaced.
pub fn redact(path_and_query: &str) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.to_owned();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if SECRET_PARAMS.iter().any(|s| k.eq_ignore_ascii_case(s)) => {
                format!("{k}=REDACTED")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", parts.join("&"))
}

/// One line: client, time, request line, status, referer, user agent, request id.
pub fn line(
    client: &str,
    method: &str,
    path: &str,
    status: u16,
    referer: &str,
    agent: &str,
    request_id: &str,
) -> String {
    let time = chrono::Utc::now().format("%d/%b/%Y:%H:%M:%S %z");
    let q = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.replace('"', "\\\"")
        }
    };
    format!(
        "{client} - - [{time}] \"{method} {} HTTP/1.1\" {status} - \"{}\" \"{}\" kong_request_id: \"{request_id}\"\n",
        q(&redact(path)),
        q(referer),
        q(agent),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_in_the_query_are_redacted() {
        assert_eq!(
            redact("/ws?access_token=eyJ.x.y&a=1"),
            "/ws?access_token=REDACTED&a=1"
        );
        assert_eq!(redact("/plain"), "/plain");
        // A liveness ticket the gateway refused (429) would still be good for a minute.
        assert_eq!(redact("/ws?ticket=kPj3"), "/ws?ticket=REDACTED");
        let l = line(
            "127.0.0.1",
            "GET",
            "/ws?ACCESS_TOKEN=abc",
            101,
            "",
            "ua \"x\"",
            "rid",
        );
        assert!(l.contains("\"GET /ws?ACCESS_TOKEN=REDACTED HTTP/1.1\" 101 - \"-\" \"ua \\\"x\\\"\" kong_request_id: \"rid\""), "{l}");
        assert!(!l.contains("abc"));
    }
}
