//! The load tools from the registries: wrk (Debian) for throughput, oha (crates.io) at a fixed
//! request rate for latency percentiles, pgbench (PostgreSQL) for the database's own bound. Each run
//! returns its numbers and the command line that produced them (with the token as `$TOKEN`).

use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;

use kyc_bench::procs;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p75: f64,
    pub p90: f64,
    pub p99: f64,
    /// Present when the tool reports them (oha).
    pub p95: Option<f64>,
    pub p999: Option<f64>,
    pub p9999: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    pub command: String,
    pub requests: u64,
    pub rps: f64,
    /// Responses outside 2xx/3xx and socket errors.
    pub errors: u64,
    pub latency: Percentiles,
}

fn shown(args: &[String], token: Option<&str>) -> String {
    let mut text = args
        .iter()
        .map(|a| {
            if a.contains(' ') || a.contains('$') {
                format!("'{a}'")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(t) = token {
        text = text.replace(t, "$TOKEN");
    }
    text
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

/// `wrk` for `duration` with `connections` over `threads`, one header at most.
pub fn wrk(
    url: &str,
    threads: usize,
    connections: usize,
    duration: Duration,
    token: Option<&str>,
) -> anyhow::Result<LoadResult> {
    let mut args: Vec<String> = vec![
        "wrk".into(),
        format!("-t{threads}"),
        format!("-c{connections}"),
        format!("-d{}", secs(duration)),
        "--latency".into(),
    ];
    if let Some(t) = token {
        args.push("-H".into());
        args.push(format!("Authorization: Bearer {t}"));
    }
    args.push(url.into());
    let out = procs::run(Command::new(&args[0]).args(&args[1..]))?;
    parse_wrk(&out, shown(&args, token))
}

fn wrk_time(text: &str) -> Option<f64> {
    let text = text.trim();
    let (num, scale) = if let Some(v) = text.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = text.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = text.strip_suffix('m') {
        (v, 60_000.0)
    } else if let Some(v) = text.strip_suffix('s') {
        (v, 1000.0)
    } else {
        return None;
    };
    num.trim().parse::<f64>().ok().map(|v| v * scale)
}

pub fn parse_wrk(out: &str, command: String) -> anyhow::Result<LoadResult> {
    let mut r = LoadResult {
        command,
        requests: 0,
        rps: 0.0,
        errors: 0,
        latency: Percentiles::default(),
    };
    for line in out.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("50%"), Some(v)) => r.latency.p50 = wrk_time(v).context("wrk p50")?,
            (Some("75%"), Some(v)) => r.latency.p75 = wrk_time(v).context("wrk p75")?,
            (Some("90%"), Some(v)) => r.latency.p90 = wrk_time(v).context("wrk p90")?,
            (Some("99%"), Some(v)) => r.latency.p99 = wrk_time(v).context("wrk p99")?,
            (Some("Requests/sec:"), Some(v)) => r.rps = v.parse().context("wrk Requests/sec")?,
            (Some(n), Some("requests")) => r.requests = n.parse().context("wrk requests")?,
            _ => {}
        }
        if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.errors += n.trim().parse::<u64>().unwrap_or(0);
        }
        if let Some(rest) = line.strip_prefix("Socket errors:") {
            r.errors += rest
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    if r.rps == 0.0 {
        bail!("wrk printed no Requests/sec:\n{out}");
    }
    Ok(r)
}

/// `oha` at a fixed `rate` (requests per second) for `duration`, with coordinated-omission
/// correction: latency counts from when each request was due, not when it was sent.
pub fn oha(
    url: &str,
    rate: f64,
    connections: usize,
    duration: Duration,
    token: Option<&str>,
) -> anyhow::Result<LoadResult> {
    let mut args: Vec<String> = vec![
        "oha".into(),
        "--no-tui".into(),
        "--output-format".into(),
        "json".into(),
        "-z".into(),
        secs(duration),
        "-c".into(),
        connections.to_string(),
        "-q".into(),
        format!("{}", rate.round().max(1.0)),
        "--latency-correction".into(),
    ];
    if let Some(t) = token {
        args.push("-H".into());
        args.push(format!("Authorization: Bearer {t}"));
    }
    args.push(url.into());
    let out = procs::run(Command::new(&args[0]).args(&args[1..]))?;
    parse_oha(&out, shown(&args, token))
}

pub fn parse_oha(out: &str, command: String) -> anyhow::Result<LoadResult> {
    let v: serde_json::Value = serde_json::from_str(out)
        .with_context(|| format!("oha printed no JSON:\n{}", &out[..out.len().min(400)]))?;
    let ms = |key: &str| v["latencyPercentiles"][key].as_f64().map(|s| s * 1000.0);
    let codes = v["statusCodeDistribution"]
        .as_object()
        .context("oha: no statusCodeDistribution")?;
    let mut requests = 0;
    let mut errors = 0;
    for (code, n) in codes {
        let n = n.as_u64().unwrap_or(0);
        requests += n;
        if !code.starts_with('2') && !code.starts_with('3') {
            errors += n;
        }
    }
    // Requests still in flight when the duration ends are cut ("aborted due to deadline"):
    // that is how a timed run stops, not an error of the target.
    errors += v["errorDistribution"].as_object().map_or(0, |e| {
        e.iter()
            .filter(|(kind, _)| !kind.contains("aborted due to deadline"))
            .filter_map(|(_, n)| n.as_u64())
            .sum()
    });
    Ok(LoadResult {
        command,
        requests,
        rps: v["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0),
        errors,
        latency: Percentiles {
            p50: ms("p50").context("oha: no p50")?,
            p75: ms("p75").unwrap_or(0.0),
            p90: ms("p90").unwrap_or(0.0),
            p99: ms("p99").context("oha: no p99")?,
            p95: ms("p95"),
            p999: ms("p99.9"),
            p9999: ms("p99.99"),
        },
    })
}

/// `pgbench -S` (select-only) with `clients` on `db`, `pgbench -i` having prepared it.
pub fn pgbench_select(
    db: &str,
    clients: usize,
    threads: usize,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let args: Vec<String> = vec![
        "pgbench".into(),
        "-h".into(),
        "127.0.0.1".into(),
        "-U".into(),
        "kyc_user".into(),
        "-n".into(),
        "-S".into(),
        "-c".into(),
        clients.to_string(),
        "-j".into(),
        threads.to_string(),
        "-T".into(),
        duration.as_secs().max(1).to_string(),
        db.into(),
    ];
    let out = procs::run(
        Command::new(&args[0])
            .args(&args[1..])
            .env("PGPASSWORD", "kyc_password"),
    )?;
    let mut r = LoadResult {
        command: shown(&args, None),
        requests: 0,
        rps: 0.0,
        errors: 0,
        latency: Percentiles::default(),
    };
    for line in out.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("tps = ") {
            r.rps = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .context("pgbench tps")?;
        }
        if let Some(rest) = line.strip_prefix("number of transactions actually processed:") {
            r.requests = rest.trim().split('/').next().unwrap_or("0").parse()?;
        }
        if let Some(rest) = line.strip_prefix("latency average =") {
            r.latency.p50 = rest
                .trim()
                .trim_end_matches("ms")
                .trim()
                .parse()
                .unwrap_or(0.0);
        }
        if let Some(rest) = line.strip_prefix("number of failed transactions:") {
            r.errors = rest.split_whitespace().next().unwrap_or("0").parse()?;
        }
    }
    // pgbench prints a tps of 0 (or none) when its clients spent the whole run connecting: a
    // result, not a failure of the script.
    Ok(r)
}

/// `tool --version`'s first line, for the results' tool list.
pub fn version(tool: &str, arg: &str) -> String {
    Command::new(tool)
        .arg(arg)
        .output()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|_| "not found".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let out = "Running 2s test @ http://127.0.0.1:18100/plain/x
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms  412.00us   9.00ms   80.00%
  Latency Distribution
     50%  812.00us
     75%    2.21ms
     90%    2.50ms
     99%    1.02s
  45678 requests in 2.00s, 9.10MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:  22839.00
Transfer/sec:      4.55MB
";
        let r = parse_wrk(out, "wrk".into()).expect("parses");
        assert_eq!(r.requests, 45678);
        assert!((r.rps - 22839.0).abs() < 1e-9);
        assert_eq!(r.errors, 12);
        assert!((r.latency.p50 - 0.812).abs() < 1e-9);
        assert!((r.latency.p75 - 2.21).abs() < 1e-9);
        assert!((r.latency.p99 - 1020.0).abs() < 1e-9);
    }

    #[test]
    fn wrk_without_a_rate_is_an_error() {
        assert!(parse_wrk("unable to connect to 127.0.0.1:1", "wrk".into()).is_err());
    }

    #[test]
    fn hides_the_token_in_commands() {
        let args = vec![
            "wrk".to_owned(),
            "-H".to_owned(),
            "Authorization: Bearer abc.def".to_owned(),
        ];
        assert_eq!(
            shown(&args, Some("abc.def")),
            "wrk -H 'Authorization: Bearer $TOKEN'"
        );
    }
}
