//! The stack a chaos run owns: its own PostgreSQL cluster and Redis server (so that stopping them
//! touches nothing else on the machine), kyc-sandbox as the vendors, kyc-service and kyc-edge
//! running the built filters. Every part can be killed, stopped and started again.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use kyc_bench::procs::{self, Proc};
use serde_json::json;

pub const PG_PORT: u16 = 55432;
pub const REDIS_PORT: u16 = 56379;
pub const SANDBOX_PORT: u16 = 59100;
pub const SERVICE_PORT: u16 = 58080;
pub const EDGE_PORT: u16 = 58000;
pub const ADMIN_PORT: u16 = 58001;
pub const DB: &str = "kyc_chaos";
pub const DB_USER: &str = "kyc_user";

/// The service's request timeout in this run: an orphaned `processing` row is finished by the
/// sweep after this plus 5 s, so audits wait a little longer than that.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(8);
/// The database pool's acquire timeout: while PostgreSQL is down, answers come within this.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// A liveness action not announced within this ends the session (`ACTION_TIMEOUT`, 1008).
pub const LIVENESS_ACTION_TIMEOUT: Duration = Duration::from_secs(4);
/// The breaker: this many consecutive failed calls open it, for this long.
pub const BREAKER_FAILURES: u32 = 2;
pub const BREAKER_OPEN: Duration = Duration::from_secs(2);

const STARTUP: Duration = Duration::from_secs(60);

/// A PostgreSQL cluster of the run's own, in `dir`, on [`PG_PORT`]. PostgreSQL refuses to run as
/// root, so under root its commands run as the `postgres` user (Debian's package creates it).
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    running: bool,
}

impl Postgres {
    pub fn init(dir: &Path) -> anyhow::Result<Self> {
        let bin = pg_bin()?;
        let root = dir.join("pg");
        std::fs::create_dir_all(&root)?;
        if is_root() {
            procs::run(Command::new("chown").args(["-R", "postgres"]).arg(&root))?;
        }
        let pg = Self {
            bin,
            data: root.join("data"),
            log: root.join("postgres.log"),
            running: false,
        };
        pg.ctl("initdb")
            .args(["-D"])
            .arg(&pg.data)
            .args(["-A", "trust", "-U", DB_USER, "--no-sync"])
            .output()
            .context("initdb")
            .and_then(|o| {
                if o.status.success() {
                    Ok(())
                } else {
                    bail!("initdb failed: {}", String::from_utf8_lossy(&o.stderr))
                }
            })?;
        Ok(pg)
    }

    /// A command of PostgreSQL's bin directory, as the user that owns the cluster.
    fn ctl(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    pub fn start(&mut self) -> anyhow::Result<()> {
        let socket_dir = self
            .data
            .parent()
            .context("no parent")?
            .display()
            .to_string();
        let options =
            format!("-p {PG_PORT} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off");
        procs::run(
            self.ctl("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .args(["-o", &options, "-l"])
                .arg(&self.log)
                .args(["-w", "-t", "60", "start"]),
        )?;
        self.running = true;
        Ok(())
    }

    /// A fast shutdown: sessions are ended, as by `systemctl restart postgresql`.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        procs::run(
            self.ctl("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "fast", "-w", "-t", "60", "stop"]),
        )?;
        self.running = false;
        Ok(())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .ctl("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// The newest PostgreSQL server installed (Debian keeps each major under /usr/lib/postgresql),
/// or `$PG_BIN`.
fn pg_bin() -> anyhow::Result<PathBuf> {
    if let Ok(b) = std::env::var("PG_BIN") {
        return Ok(PathBuf::from(b));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("no /usr/lib/postgresql: install postgresql (scripts/setup.sh does)")?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, b)| b)
        .context("no PostgreSQL server with initdb under /usr/lib/postgresql; set PG_BIN")
}

/// Runs one SQL statement in the run's database; rows as text, one per line, fields by `|`.
pub fn sql(query: &str) -> anyhow::Result<String> {
    procs::run(
        Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &PG_PORT.to_string(), "-U", DB_USER])
            .args(["-d", DB, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", query]),
    )
}

pub struct Stack {
    pub dir: PathBuf,
    bins: PathBuf,
    filters: PathBuf,
    declarative: PathBuf,
    secret: String,
    pub pg: Postgres,
    redis: Option<Proc>,
    sandbox: Proc,
    service: Option<Proc>,
    service_stdout: Option<PathBuf>,
    edge: Option<Proc>,
    /// How many times each process was started (log files are numbered by it).
    starts: u32,
    pub fixtures: PathBuf,
    pub base: String,
    pub service_url: String,
    pub admin: String,
    pub sandbox_url: String,
}

impl Stack {
    pub async fn start(
        dir: &Path,
        bins: &Path,
        filters: &Path,
        secret: String,
    ) -> anyhow::Result<Self> {
        // Absolute: PostgreSQL resolves paths from its data directory.
        let dir = &std::path::absolute(dir)?;
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir.join("out"))?;
        println!("[chaos] PostgreSQL :{PG_PORT} and Redis :{REDIS_PORT} of the run's own");
        let mut pg = Postgres::init(dir)?;
        pg.start()?;
        procs::run(
            Command::new("psql")
                .args(["-h", "127.0.0.1", "-p", &PG_PORT.to_string(), "-U", DB_USER])
                .args(["-d", "postgres", "-qc", &format!("CREATE DATABASE {DB}")]),
        )?;
        let fixtures = dir.join("fixtures");
        procs::run(
            Command::new(bins.join("kyc-sandbox"))
                .args(["fixtures", "--name", crate::load::NAME, "--id"])
                .arg(crate::load::ID_NUMBER)
                .arg("--out")
                .arg(&fixtures),
        )?;
        let declarative = dir.join("kong.chaos.yaml");
        write_declarative(&declarative)?;
        let sandbox = {
            let mut cmd = Command::new(bins.join("kyc-sandbox"));
            cmd.args(["serve", "--listen", &format!("127.0.0.1:{SANDBOX_PORT}")]);
            Proc::spawn("kyc-sandbox", cmd, &dir.join("out/kyc-sandbox.log"))?
        };
        let mut stack = Self {
            dir: dir.to_owned(),
            bins: bins.to_owned(),
            filters: filters.to_owned(),
            declarative,
            secret,
            pg,
            redis: None,
            sandbox,
            service: None,
            service_stdout: None,
            edge: None,
            starts: 0,
            fixtures,
            base: format!("http://127.0.0.1:{EDGE_PORT}"),
            service_url: format!("http://127.0.0.1:{SERVICE_PORT}"),
            admin: format!("http://127.0.0.1:{ADMIN_PORT}"),
            sandbox_url: format!("http://127.0.0.1:{SANDBOX_PORT}"),
        };
        stack.start_redis().await?;
        stack
            .sandbox
            .wait_ready(&format!("{}/health", stack.sandbox_url), STARTUP)
            .await?;
        stack.start_service().await?;
        stack.start_edge().await?;
        Ok(stack)
    }

    fn log(&mut self, name: &str) -> PathBuf {
        self.starts += 1;
        self.dir
            .join("out")
            .join(format!("{name}.{:02}.log", self.starts))
    }

    pub async fn start_redis(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &REDIS_PORT.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"]);
        let log = self.log("redis");
        let redis = Proc::spawn("redis-server", cmd, &log)?;
        let deadline = Instant::now() + STARTUP;
        while procs::run(
            Command::new("redis-cli")
                .args(["-p", &REDIS_PORT.to_string(), "ping"])
                .stderr(std::process::Stdio::null()),
        )
        .is_err()
        {
            if Instant::now() > deadline {
                bail!("redis-server did not start; {}", log.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.redis = Some(redis);
        Ok(())
    }

    /// Redis goes away at once, as on a crash or `redis-cli shutdown nosave`.
    pub fn stop_redis(&mut self) -> anyhow::Result<()> {
        if let Some(mut r) = self.redis.take() {
            r.kill9()?;
        }
        Ok(())
    }

    pub fn service_command(&self) -> Command {
        let mut cmd = Command::new(self.bins.join("kyc-service"));
        cmd.args(["--config", "config.yaml"]);
        let vendor = self.sandbox_url.clone();
        let secs = |d: Duration| format!("{}s", d.as_secs());
        for (k, v) in [
            ("KYC__PORT", SERVICE_PORT.to_string()),
            ("KYC__DATABASE__HOST", "127.0.0.1".into()),
            ("KYC__DATABASE__PORT", PG_PORT.to_string()),
            ("KYC__DATABASE__USER", DB_USER.into()),
            ("KYC__DATABASE__DBNAME", DB.into()),
            ("KYC__DATABASE__ACQUIRE_TIMEOUT", secs(ACQUIRE_TIMEOUT)),
            ("KYC__REDIS__HOST", "127.0.0.1".into()),
            ("KYC__REDIS__PORT", REDIS_PORT.to_string()),
            ("KYC__LOG__DIR", self.dir.join("logs").display().to_string()),
            ("KYC__HTTP__REQUEST_TIMEOUT", secs(REQUEST_TIMEOUT)),
            // The load, not the per-client limit, is what this run is about; the limiter still
            // runs on every request (and so meets Redis's outage).
            ("KYC__SECURITY__RATE_LIMIT_PER_SECOND", "1000000".into()),
            ("KYC__SECURITY__RATE_LIMIT_BURST", "1000000".into()),
            (
                "KYC__KYC__LIVENESS_ACTION_TIMEOUT",
                secs(LIVENESS_ACTION_TIMEOUT),
            ),
        ] {
            cmd.env(k, v);
        }
        for v in ["OCR", "FACE", "LIVENESS"] {
            let key = |k: &str| format!("KYC__THIRD_PARTY__{v}_SERVICE__{k}");
            cmd.env(key("URL"), &vendor)
                .env(key("MAX_CONCURRENCY"), "64")
                .env(key("RATE_LIMIT_PER_SECOND"), "1000")
                // No retries and a breaker of 3, so that 30% errors open it within seconds
                // (tests/chaos/README.md).
                .env(key("RETRY_COUNT"), "0")
                .env(
                    key("CIRCUIT_FAILURE_THRESHOLD"),
                    BREAKER_FAILURES.to_string(),
                )
                .env(
                    key("CIRCUIT_OPEN_SECONDS"),
                    BREAKER_OPEN.as_secs().to_string(),
                );
        }
        cmd
    }

    pub async fn start_service(&mut self) -> anyhow::Result<()> {
        let cmd = self.service_command();
        self.start_service_with(cmd).await
    }

    pub async fn start_service_with(&mut self, cmd: Command) -> anyhow::Result<()> {
        let log = self.log("kyc-service");
        let mut p = Proc::spawn("kyc-service", cmd, &log)?;
        p.wait_ready(&format!("{}/health", self.service_url), STARTUP)
            .await?;
        self.service = Some(p);
        self.service_stdout = Some(log);
        Ok(())
    }

    pub fn service(&mut self) -> anyhow::Result<&mut Proc> {
        self.service.as_mut().context("kyc-service is not running")
    }

    /// Where the running service's stdout goes.
    pub fn service_stdout(&self) -> anyhow::Result<PathBuf> {
        self.service_stdout
            .clone()
            .context("kyc-service is not running")
    }

    pub fn kill_service(&mut self) -> anyhow::Result<()> {
        self.service
            .take()
            .context("kyc-service is not running")?
            .kill9()
    }

    pub fn stop_service(&mut self) -> anyhow::Result<()> {
        self.service
            .take()
            .context("kyc-service is not running")?
            .terminate(Duration::from_secs(30))
    }

    pub async fn start_edge(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(self.bins.join("kyc-edge"));
        cmd.args(["--conf", "kong/kong.conf", "--declarative"])
            .arg(&self.declarative)
            .arg("--filters")
            .arg(&self.filters)
            .args(["--proxy-listen", &format!("127.0.0.1:{EDGE_PORT}")])
            .args(["--admin-listen", &format!("127.0.0.1:{ADMIN_PORT}")])
            .args(["--workers", "2"])
            .args(["--resolve", "kyc-service=127.0.0.1", "--access-log", "off"])
            .env("DECK_KYC_JWT_SECRET", &self.secret)
            .env("KYC_EDGE_LOG", "warn");
        let log = self.log("kyc-edge");
        let mut p = Proc::spawn("kyc-edge", cmd, &log)?;
        p.wait_ready(&format!("{}/status", self.admin), STARTUP)
            .await?;
        self.edge = Some(p);
        Ok(())
    }

    pub fn kill_edge(&mut self) -> anyhow::Result<()> {
        self.edge.take().context("kyc-edge is not running")?.kill9()
    }

    /// Fails when a process that should be running has exited.
    pub fn check(&mut self) -> anyhow::Result<()> {
        self.sandbox.check_alive()?;
        for p in [&mut self.service, &mut self.edge, &mut self.redis]
            .into_iter()
            .flatten()
        {
            p.check_alive()?;
        }
        Ok(())
    }

    pub async fn sandbox_faults(&self, faults: serde_json::Value) -> anyhow::Result<()> {
        reqwest::Client::new()
            .put(format!("{}/sandbox/faults", self.sandbox_url))
            .json(&faults)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    pub async fn clear_faults(&self) -> anyhow::Result<()> {
        self.sandbox_faults(json!({})).await
    }

    /// Calls the vendors answered so far, faults included.
    pub async fn vendor_calls(&self) -> anyhow::Result<u64> {
        let s: serde_json::Value = reqwest::get(format!("{}/sandbox/stats", self.sandbox_url))
            .await?
            .error_for_status()?
            .json()
            .await?;
        s["total"].as_u64().context("no total in /sandbox/stats")
    }

    /// The sum of every series of one metric of the service's /metrics.
    pub async fn service_metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = reqwest::get(format!("{}/metrics", self.service_url))
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(metric_sum(&text, name))
    }
}

/// The sum of the values of `name`'s series in a Prometheus text exposition.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// declarative/kong.yaml as shipped, pointing at this run's service, with every rate limit out of
/// the load's way (the filters still run on every request).
fn write_declarative(path: &Path) -> anyhow::Result<()> {
    let shipped = std::fs::read_to_string("declarative/kong.yaml")
        .context("run from the repository's root")?;
    let url = "url: http://kyc-service:8080";
    if !shipped.contains(url) {
        bail!("declarative/kong.yaml no longer has `{url}`");
    }
    let text = shipped.replace(url, &format!("url: http://kyc-service:{SERVICE_PORT}"));
    let text = regex::Regex::new(r"(rate_per_sec|burst): \d+")?
        .replace_all(&text, "$1: 1000000")
        .into_owned();
    std::fs::write(path, text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sum_adds_the_series_of_one_name_only() {
        let text = "# HELP x\nredis_unavailable_total{operation=\"rate_limit\"} 3\n\
                    redis_unavailable_total{operation=\"ticket\"} 2\nredis_unavailable_totals 7\n\
                    log_write_errors_total 4\n";
        assert_eq!(metric_sum(text, "redis_unavailable_total"), 5.0);
        assert_eq!(metric_sum(text, "log_write_errors_total"), 4.0);
        assert_eq!(metric_sum(text, "absent"), 0.0);
    }
}
