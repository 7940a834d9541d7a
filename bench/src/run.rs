//! `kyc-bench run`: every figure of issue #8, in one run, each against its reference a moment
//! apart. See bench/README.md for what each figure measures and why.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::json;

use crate::loads::{self, Person};
use crate::report::{self, Report, Verdict};
use crate::tools::{self, LoadResult};
use kyc_bench::procs::{self, Proc};
use kyc_bench::seed::{self, jwt_secret};

const UPSTREAM: u16 = 18300;
const NGINX_PROXY: u16 = 18200;
const BENCH_EDGE: u16 = 18100;
const BENCH_EDGE_ADMIN: u16 = 18101;
const SANDBOX: u16 = 19100;
const SERVICE: u16 = 18080;
const STACK_EDGE: u16 = 18000;
const STACK_EDGE_ADMIN: u16 = 18001;
const DB: &str = "kyc_bench";
const PGBENCH_DB: &str = "kyc_pgbench";

/// The small JSON document the upstream answers (figures 1 and 2), with fields the mask acts on.
const UPSTREAM_JSON: &str = r#"{"request_id":"0193a5b0-7c1e-7000-8000-000000000001","status":"success","name":"张三","id_number":"11010519491231002X","phone":"13800138000","score":0.95}"#;

const PERSON_NAME: &str = "张三";
const PERSON_ID: &str = "11010519491231002X";

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// A few seconds per figure: proves the scripts work, says nothing about speed.
    #[arg(long)]
    quick: bool,
    /// Where the results go (default bench/results, or target/bench with --quick).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The release binaries.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    #[arg(long, default_value = "target/filters")]
    filters: PathBuf,
    /// Workers of the edge and of nginx in figures 1 and 2 (the same for both).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Only these figures (comma-separated numbers); default all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<u8>,
}

struct Plan {
    quick: bool,
    /// wrk runs of figures 1 and 2.
    throughput: Duration,
    rounds: usize,
    /// oha runs at a fixed rate.
    fixed: Duration,
    status: Duration,
    verify: Duration,
    ws_connections: usize,
    ws_hold: Duration,
    rate: Duration,
}

impl Plan {
    fn new(quick: bool) -> Self {
        let s = Duration::from_secs;
        if quick {
            Self {
                quick,
                throughput: s(2),
                rounds: 1,
                fixed: s(2),
                status: s(3),
                verify: s(3),
                ws_connections: 200,
                ws_hold: s(2),
                rate: s(5),
            }
        } else {
            Self {
                quick,
                throughput: s(10),
                rounds: 3,
                fixed: s(15),
                status: s(30),
                verify: s(20),
                ws_connections: 10_000,
                ws_hold: s(30),
                rate: s(20),
            }
        }
    }
}

fn psql(db: &str, sql: &str) -> anyhow::Result<String> {
    procs::run(
        Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "kyc_user", "-d", db, "-tAqc", sql])
            .env("PGPASSWORD", "kyc_password"),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn machine() -> Vec<(String, String)> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let mem = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or_else(String::new, |kib| {
            format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0)
        });
    vec![
        (
            "cores".into(),
            std::thread::available_parallelism()
                .map_or(0, usize::from)
                .to_string(),
        ),
        ("cpu".into(), model),
        ("memory".into(), mem),
        ("kernel".into(), tools::version("uname", "-r")),
    ]
}

fn write_nginx(dir: &Path, workers: usize, server: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir.join("logs"))?;
    let conf = format!(
        "worker_processes {workers};\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log warn;\n\
         events {{ worker_connections 16384; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
         keepalive_requests 1000000;\n{server}\n}}\n",
        d = dir.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    Ok(path)
}

fn start_nginx(name: &str, dir: &Path, conf: &Path) -> anyhow::Result<Proc> {
    let mut cmd = Command::new("nginx");
    cmd.args([
        "-p",
        &dir.display().to_string(),
        "-c",
        &conf.display().to_string(),
    ])
    .args(["-g", "daemon off;"]);
    Proc::spawn(name, cmd, &dir.join("logs/stdout.log"))
}

struct Context {
    args: RunArgs,
    plan: Plan,
    work: PathBuf,
    secret: String,
    report: Report,
}

impl Context {
    fn want(&self, figure: u8) -> bool {
        self.args.only.is_empty() || self.args.only.contains(&figure)
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.args.bin_dir.join(name)
    }

    fn edge(
        &self,
        name: &str,
        declarative: &Path,
        ports: (u16, u16),
        workers: usize,
        resolve: &str,
    ) -> anyhow::Result<Proc> {
        let mut cmd = Command::new(self.bin("kyc-edge"));
        cmd.args(["--conf", "kong/kong.conf", "--declarative"])
            .arg(declarative)
            .arg("--filters")
            .arg(&self.args.filters)
            .args(["--proxy-listen", &format!("127.0.0.1:{}", ports.0)])
            .args(["--admin-listen", &format!("127.0.0.1:{}", ports.1)])
            .args(["--workers", &workers.to_string()])
            .args(["--resolve", resolve, "--access-log", "off"])
            .env("DECK_KYC_JWT_SECRET", &self.secret)
            .env("KYC_EDGE_LOG", "warn");
        Proc::spawn(name, cmd, &self.work.join(format!("{name}.log")))
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let plan = Plan::new(args.quick);
    let out = args.out.clone().unwrap_or_else(|| {
        if args.quick {
            "target/bench".into()
        } else {
            "bench/results".into()
        }
    });
    let work = PathBuf::from(".tmp/bench");
    std::fs::create_dir_all(&work)?;
    for bin in ["kyc-edge", "kyc-service", "kyc-sandbox"] {
        if !args.bin_dir.join(bin).exists() {
            bail!(
                "{} is missing: build with `cargo build --release -p {bin}` (scripts/bench.sh does)",
                args.bin_dir.join(bin).display()
            );
        }
    }
    let mut report = Report {
        mode: if args.quick { "quick" } else { "full" }.into(),
        started: procs::run(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]))?
            .trim()
            .to_owned(),
        machine: machine(),
        ..Report::default()
    };
    report.tools = vec![
        ("wrk".into(), tools::version("wrk", "-v")),
        ("oha".into(), tools::version("oha", "--version")),
        ("nginx".into(), tools::version("nginx", "-v")),
        ("pgbench".into(), tools::version("pgbench", "--version")),
        ("postgres".into(), tools::version("postgres", "--version")),
        (
            "kyc-edge".into(),
            tools::version(
                &args.bin_dir.join("kyc-edge").display().to_string(),
                "--version",
            ),
        ),
    ];
    let mut cx = Context {
        secret: jwt_secret()?,
        args,
        plan,
        work,
        report,
    };
    println!(
        "[bench] {} mode; results go to {}",
        cx.report.mode,
        out.display()
    );

    // The stack first: figures 1 and 2 need a token the service issues.
    let mut stack = Stack::start(&cx).await?;
    let token = stack.token().await?;

    if cx.want(1) || cx.want(2) {
        proxy_figures(&mut cx, &token).await?;
    }
    if cx.want(3) {
        filter_figure(&mut cx)?;
    }
    if cx.want(4) || cx.want(5) || cx.want(6) || cx.want(7) || cx.want(8) {
        stack_figures(&mut cx, &mut stack, &token).await?;
    }
    drop(stack);

    cx.report.write(&out)?;
    println!("\n{}", cx.report.table());
    println!("[bench] wrote {}/latest.md and latest.json", out.display());
    Ok(())
}

/// Figures 1 and 2: nginx, the edge without filters, the edge with the chain and with each filter,
/// all proxying one upstream (nginx answering a small JSON document, keep-alive to it).
async fn proxy_figures(cx: &mut Context, token: &str) -> anyhow::Result<()> {
    let w = cx.args.workers;
    let up_dir = std::env::current_dir()?
        .join(&cx.work)
        .join("nginx-upstream");
    let up_conf = write_nginx(
        &up_dir,
        1,
        &format!(
            "  server {{\n    listen 127.0.0.1:{UPSTREAM};\n    location / {{\n      default_type application/json;\n      \
             return 200 '{UPSTREAM_JSON}';\n    }}\n  }}"
        ),
    )?;
    let px_dir = std::env::current_dir()?.join(&cx.work).join("nginx-proxy");
    let px_conf = write_nginx(
        &px_dir,
        w,
        &format!(
            "  upstream bench {{\n    server 127.0.0.1:{UPSTREAM};\n    keepalive 256;\n    keepalive_requests 1000000;\n  }}\n  \
             server {{\n    listen 127.0.0.1:{NGINX_PROXY};\n    location / {{\n      proxy_pass http://bench;\n      \
             proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}"
        ),
    )?;
    let mut upstream = start_nginx("nginx-upstream", &up_dir, &up_conf)?;
    let mut proxy = start_nginx("nginx-proxy", &px_dir, &px_conf)?;
    let mut edge = cx.edge(
        "bench-edge",
        Path::new("bench/kong.bench.yaml"),
        (BENCH_EDGE, BENCH_EDGE_ADMIN),
        w,
        "bench-upstream=127.0.0.1",
    )?;
    let t = Duration::from_secs(15);
    upstream
        .wait_ready(&format!("http://127.0.0.1:{UPSTREAM}/"), t)
        .await?;
    proxy
        .wait_ready(&format!("http://127.0.0.1:{NGINX_PROXY}/"), t)
        .await?;
    edge.wait_ready(&format!("http://127.0.0.1:{BENCH_EDGE_ADMIN}/status"), t)
        .await?;

    let nginx_url = format!("http://127.0.0.1:{NGINX_PROXY}/api/v1/kyc/status/x");
    let edge_url =
        |route: &str| format!("http://127.0.0.1:{BENCH_EDGE}/{route}/api/v1/kyc/status/x");
    // (name, url, token) for each target; jwt needs the token, the others ignore it.
    let targets: Vec<(&str, String, Option<&str>)> = vec![
        ("nginx", nginx_url.clone(), None),
        ("edge, no filters", edge_url("plain"), None),
        ("edge, full chain", edge_url("chain"), Some(token)),
        ("edge, kyc_jwt", edge_url("jwt"), Some(token)),
        ("edge, kyc_rate_limit", edge_url("rate_limit"), None),
        ("edge, kyc_idempotency", edge_url("idempotency"), None),
        ("edge, kyc_pii_mask", edge_url("pii_mask"), None),
    ];
    let conns = 50;
    println!("[bench] figures 1-2: warming up");
    for (_, url, tok) in &targets {
        let r = tools::wrk(url, 1, conns, Duration::from_secs(1), *tok)?;
        if r.errors > 0 {
            bail!("warm-up of {url} had {} errors", r.errors);
        }
    }
    // Interleaved rounds, so a slow moment of the machine falls on every target alike.
    let mut rps: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    let mut last: Vec<Option<LoadResult>> = vec![None; targets.len()];
    // CPU seconds and requests per target, of the proxy serving it (nginx's workers, or the edge).
    let mut cpu = vec![(0.0_f64, 0_u64); targets.len()];
    for round in 0..cx.plan.rounds {
        for (i, (name, url, tok)) in targets.iter().enumerate() {
            let pid = if i == 0 { proxy.pid() } else { edge.pid() };
            let before = procs::cpu_seconds(pid)?;
            let r = tools::wrk(url, 1, conns, cx.plan.throughput, *tok)?;
            cpu[i].0 += procs::cpu_seconds(pid)? - before;
            cpu[i].1 += r.requests;
            println!(
                "[bench]   round {} {name}: {:.0} req/s, p99 {:.2} ms{}",
                round + 1,
                r.rps,
                r.latency.p99,
                if r.errors > 0 {
                    format!(", {} errors", r.errors)
                } else {
                    String::new()
                }
            );
            if r.errors > 0 {
                bail!("{name}: {} errors in {}", r.errors, r.command);
            }
            rps[i].push(r.rps);
            last[i] = Some(r);
        }
        edge.check_alive()?;
    }
    let med: Vec<f64> = rps.into_iter().map(median).collect();
    let cmd = |i: usize| {
        last[i]
            .as_ref()
            .map_or(String::new(), |r| r.command.clone())
    };
    for (i, (name, _, _)) in targets.iter().enumerate() {
        cx.report.run(
            &format!("throughput: {name}"),
            &json!({ "median_rps": med[i], "last": last[i] }),
        );
    }
    // µs of the proxy's CPU per request: what the throughput ratios come from when the proxy, the
    // load generator and the upstream share the cores.
    #[allow(clippy::cast_precision_loss)]
    let us: Vec<f64> = cpu
        .iter()
        .map(|&(s, n)| s * 1e6 / n.max(1) as f64)
        .collect();
    for (i, (name, _, _)) in targets.iter().enumerate() {
        cx.report.run(
            &format!("cpu per request: {name}"),
            &json!({ "us_per_request": us[i], "cpu_seconds": cpu[i].0, "requests": cpu[i].1 }),
        );
    }
    let cpu_cmd = "utime+stime of the proxy process (and its workers) from /proc around each wrk run above, over its requests";
    cx.report.row(
        1,
        "proxy CPU per request, full chain vs no filters",
        format!(
            "{:.1} vs {:.1} µs (+{:.1} µs for the chain)",
            us[2],
            us[1],
            us[2] - us[1]
        ),
        "context",
        Verdict::Info,
        cpu_cmd,
    );
    for i in 3..targets.len() {
        cx.report.row(
            1,
            &format!("proxy CPU per request, {} alone", &targets[i].0[6..]),
            format!("{:.1} µs (+{:.1} µs)", us[i], us[i] - us[1]),
            "context",
            Verdict::Info,
            cpu_cmd,
        );
    }
    cx.report.row(
        2,
        "proxy CPU per request, edge (no filters) vs nginx",
        format!("{:.1} vs {:.1} µs ({:.2}×)", us[1], us[0], us[1] / us[0]),
        "context",
        Verdict::Info,
        cpu_cmd,
    );
    let (nginx, plain, chain) = (med[0], med[1], med[2]);
    let ratio = chain / plain;
    let median_note = format!(" (median of {})", cx.plan.rounds);
    cx.report.row(
        1,
        "throughput, full chain / no filters",
        format!("{ratio:.3}× ({chain:.0} / {plain:.0} req/s)"),
        "≥ 0.90×",
        Verdict::of(ratio >= 0.90),
        &format!("{} vs {}{median_note}", cmd(2), cmd(1)),
    );
    for i in 3..targets.len() {
        let r = med[i] / plain;
        cx.report.row(
            1,
            &format!("throughput, {} alone / no filters", &targets[i].0[6..]),
            format!("{r:.3}× ({:.0} req/s)", med[i]),
            "context",
            Verdict::Info,
            &cmd(i),
        );
    }
    let ratio = plain / nginx;
    cx.report.row(
        2,
        "throughput, edge (no filters) / nginx",
        format!("{ratio:.3}× ({plain:.0} / {nginx:.0} req/s)"),
        "≥ 0.8×",
        Verdict::of(ratio >= 0.8),
        &format!("{} vs {}{median_note}", cmd(1), cmd(0)),
    );

    // Latency at a fixed rate: half the edge's no-filter throughput, the same rate for all three.
    let rate = (plain / 2.0).round();
    println!("[bench] figures 1-2: latency at a fixed {rate:.0} req/s");
    let mut fixed = Vec::new();
    for (name, url, tok) in targets.iter().take(3) {
        let r = tools::oha(url, rate, conns, cx.plan.fixed, *tok)?;
        println!(
            "[bench]   {name}: p50 {:.3} ms, p99 {:.3} ms, {} errors",
            r.latency.p50, r.latency.p99, r.errors
        );
        if r.errors > 0 {
            bail!("{name}: {} errors in {}", r.errors, r.command);
        }
        cx.report.run(&format!("fixed rate: {name}"), &r);
        fixed.push(r);
    }
    let (n, p, c) = (&fixed[0], &fixed[1], &fixed[2]);
    let add50 = (c.latency.p50 - p.latency.p50) * 1000.0;
    let add99 = (c.latency.p99 - p.latency.p99) * 1000.0;
    cx.report.row(
        1,
        &format!("added latency p50 at {rate:.0} req/s"),
        format!(
            "{add50:+.0} µs ({:.3} vs {:.3} ms)",
            c.latency.p50, p.latency.p50
        ),
        "≤ 50 µs",
        Verdict::of(add50 <= 50.0),
        &format!("{} vs {}", c.command, p.command),
    );
    cx.report.row(
        1,
        &format!("added latency p99 at {rate:.0} req/s"),
        format!(
            "{add99:+.0} µs ({:.3} vs {:.3} ms)",
            c.latency.p99, p.latency.p99
        ),
        "≤ 250 µs",
        Verdict::of(add99 <= 250.0),
        &format!("{} vs {}", c.command, p.command),
    );
    let r99 = p.latency.p99 / n.latency.p99;
    cx.report.row(
        2,
        &format!("p99, edge / nginx at {rate:.0} req/s"),
        format!("{r99:.2}× ({:.3} / {:.3} ms)", p.latency.p99, n.latency.p99),
        "≤ 1.5×",
        Verdict::of(r99 <= 1.5),
        &format!("{} vs {}", p.command, n.command),
    );
    let dir = cx.args.out.clone().unwrap_or_else(|| {
        if cx.plan.quick {
            "target/bench".into()
        } else {
            "bench/results".into()
        }
    });
    std::fs::create_dir_all(&dir)?;
    report::plot(
        &dir.join("latency.svg"),
        &format!("Latency at a fixed {rate:.0} req/s (oha, coordinated-omission corrected)"),
        &[
            ("nginx (reference)", n),
            ("kyc-edge, no filters", p),
            ("kyc-edge, jwt → rate_limit → idempotency → pii_mask", c),
        ],
    )?;
    Ok(())
}

/// Figure 3, from the criterion benchmark scripts/bench.sh ran just before.
fn filter_figure(cx: &mut Context) -> anyhow::Result<()> {
    let path = Path::new("target/bench/filters.json");
    let command = if cx.plan.quick {
        "cargo bench -p kyc-edge --bench filters -- --quick"
    } else {
        "cargo bench -p kyc-edge --bench filters"
    };
    let Ok(text) = std::fs::read_to_string(path) else {
        cx.report.notes.push(format!(
            "figure 3: {} is missing; run `{command}` first (scripts/bench.sh does)",
            path.display()
        ));
        return Ok(());
    };
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let cases = v["cases"].as_array().context("filters.json: no cases")?;
    for c in cases {
        let name = c["name"].as_str().unwrap_or("?");
        let ns = c["ns_per_request"].as_f64().unwrap_or(f64::NAN);
        let allocs = c["allocs_per_request"].as_f64().unwrap_or(f64::NAN);
        let per_filter = name.starts_with("kyc_");
        cx.report.row(
            3,
            &format!("host call cost, {name}"),
            format!("{:.2} µs, {allocs:.0} allocs", ns / 1000.0),
            if per_filter { "≤ 10 µs" } else { "context" },
            if per_filter {
                Verdict::of(ns <= 10_000.0)
            } else {
                Verdict::Info
            },
            command,
        );
    }
    cx.report.run("filters", &v);
    Ok(())
}

/// kyc-sandbox, kyc-service (its own database) and the edge with the shipped configuration.
struct Stack {
    sandbox: Proc,
    service: Proc,
    edge: Proc,
    base: String,
    admin: String,
}

impl Stack {
    async fn start(cx: &Context) -> anyhow::Result<Self> {
        println!(
            "[bench] starting kyc-sandbox :{SANDBOX}, kyc-service :{SERVICE}, kyc-edge :{STACK_EDGE}"
        );
        // A fresh database each run: the service migrates it on start.
        psql(
            "kyc_db",
            &format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"),
        )?;
        psql("kyc_db", &format!("CREATE DATABASE {DB}"))?;
        let fixtures = cx.work.join("fixtures");
        procs::run(
            Command::new(cx.bin("kyc-sandbox"))
                .args([
                    "fixtures",
                    "--name",
                    PERSON_NAME,
                    "--id",
                    PERSON_ID,
                    "--out",
                ])
                .arg(&fixtures),
        )?;
        let mut sandbox = {
            let mut cmd = Command::new(cx.bin("kyc-sandbox"));
            cmd.args(["serve", "--listen", &format!("127.0.0.1:{SANDBOX}")]);
            Proc::spawn("kyc-sandbox", cmd, &cx.work.join("kyc-sandbox.log"))?
        };
        let mut service = {
            let mut cmd = Command::new(cx.bin("kyc-service"));
            cmd.args(["--config", "config.yaml"]);
            let vendor = format!("http://127.0.0.1:{SANDBOX}");
            for (k, v) in [
                ("KYC__PORT", SERVICE.to_string()),
                ("KYC__DATABASE__DBNAME", DB.into()),
                ("KYC__LOG__DIR", cx.work.join("logs").display().to_string()),
                // The service's own per-client limit (100/s by default) would refuse the status
                // load; the gateway's is raised the same way below.
                ("KYC__SECURITY__RATE_LIMIT_PER_SECOND", "1000000".into()),
                ("KYC__SECURITY__RATE_LIMIT_BURST", "1000000".into()),
                // Idle sockets for figure 6: no action deadline, no session cap within the hold.
                ("KYC__KYC__LIVENESS_ACTION_TIMEOUT", "600s".into()),
                ("KYC__KYC__LIVENESS_SESSION_TTL", "900s".into()),
                ("KYC__KYC__LIVENESS_MAX_SESSIONS", "1000000".into()),
            ] {
                cmd.env(k, v);
            }
            for v in ["OCR", "FACE", "LIVENESS"] {
                cmd.env(format!("KYC__THIRD_PARTY__{v}_SERVICE__URL"), &vendor);
                // 50 clients with a vendor latency of 300 ms need 50 calls in flight and
                // ~170 calls/s; the defaults (32, 100/s) would queue them (figure 5).
                cmd.env(
                    format!("KYC__THIRD_PARTY__{v}_SERVICE__MAX_CONCURRENCY"),
                    "64",
                );
                cmd.env(
                    format!("KYC__THIRD_PARTY__{v}_SERVICE__RATE_LIMIT_PER_SECOND"),
                    "1000",
                );
            }
            Proc::spawn("kyc-service", cmd, &cx.work.join("kyc-service.log"))?
        };
        let decl = std::fs::read_to_string("declarative/kong.yaml")?;
        let shipped = "url: http://kyc-service:8080";
        if !decl.contains(shipped) {
            bail!("declarative/kong.yaml no longer has `{shipped}`");
        }
        let decl_path = cx.work.join("kong.stack.yaml");
        std::fs::write(
            &decl_path,
            decl.replace(shipped, &format!("url: http://kyc-service:{SERVICE}")),
        )?;
        let mut edge = cx.edge(
            "kyc-edge",
            &decl_path,
            (STACK_EDGE, STACK_EDGE_ADMIN),
            2,
            "kyc-service=127.0.0.1",
        )?;
        let t = Duration::from_secs(60);
        sandbox
            .wait_ready(&format!("http://127.0.0.1:{SANDBOX}/health"), t)
            .await?;
        service
            .wait_ready(&format!("http://127.0.0.1:{SERVICE}/health"), t)
            .await?;
        edge.wait_ready(&format!("http://127.0.0.1:{STACK_EDGE_ADMIN}/status"), t)
            .await?;
        Ok(Self {
            sandbox,
            service,
            edge,
            base: format!("http://127.0.0.1:{STACK_EDGE}"),
            admin: format!("http://127.0.0.1:{STACK_EDGE_ADMIN}"),
        })
    }

    /// A token from the service through the edge (the seed's section 2).
    async fn token(&self) -> anyhow::Result<String> {
        seed::token(&self.base).await
    }

    /// Sets a chain's kyc_rate_limit through the Admin API, as an operator would.
    async fn set_rate_limit(&self, chain: &str, rate: u32, burst: u32) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let url = format!("{}/filter-chains/{chain}", self.admin);
        let current: serde_json::Value = client
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let mut filters = current["filters"]
            .as_array()
            .context("chain without filters")?
            .clone();
        for f in &mut filters {
            if f["name"] == "kyc_rate_limit" {
                f["config"]["rate_per_sec"] = json!(rate);
                f["config"]["burst"] = json!(burst);
            }
        }
        let resp = client
            .patch(&url)
            .json(&json!({ "filters": filters }))
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("PATCH {url}: {} {}", resp.status(), resp.text().await?);
        }
        Ok(())
    }

    async fn sandbox_faults(&self, faults: serde_json::Value) -> anyhow::Result<()> {
        reqwest::Client::new()
            .put(format!("http://127.0.0.1:{SANDBOX}/sandbox/faults"))
            .json(&faults)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    fn check(&mut self) -> anyhow::Result<()> {
        self.sandbox.check_alive()?;
        self.service.check_alive()?;
        self.edge.check_alive()
    }
}

/// Samples a process's RSS every 100 ms until stopped; the largest value.
fn rss_sampler(pid: u32) -> (Arc<AtomicBool>, std::thread::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let handle = std::thread::spawn(move || {
        let max = AtomicU64::new(0);
        while !flag.load(Ordering::Relaxed) {
            if let Ok(kib) = procs::rss_kib(pid) {
                max.fetch_max(kib, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        max.load(Ordering::Relaxed)
    });
    (stop, handle)
}

/// This process's soft limit on open files (children inherit it).
fn open_files_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        })
        .unwrap_or(1024)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn stack_figures(cx: &mut Context, stack: &mut Stack, token: &str) -> anyhow::Result<()> {
    let base = stack.base.clone();
    let idle_kib = stack.service.rss_kib()?;
    let fixtures = cx.work.join("fixtures");
    let person = Arc::new(Person::load(&fixtures, PERSON_NAME, PERSON_ID)?);
    let client = reqwest::Client::new();
    let first = loads::verify_once(&client, &base, token, &person).await?;
    let request_id = first["request_id"]
        .as_str()
        .context("verify answered no request_id")?
        .to_owned();
    let status_url = format!("{base}/api/v1/kyc/status/{request_id}");
    let status_cmd = format!("{STACK_EDGE}/api/v1/kyc/status/<request_id>");
    if cx.want(7) {
        cx.report.row(
            7,
            "kyc-service RSS, idle",
            format!("{:.1} MiB", mib(idle_kib)),
            "≤ 64 MiB",
            Verdict::of(mib(idle_kib) <= 64.0),
            "VmRSS after start, before any load",
        );
    }

    if cx.want(8) {
        // The status route as shipped: 20/s with a burst of 40. A full bucket first.
        let (rate, burst) = (20.0, 40.0);
        tokio::time::sleep(Duration::from_secs_f64(burst / rate + 0.5)).await;
        println!(
            "[bench] figure 8: {} req/s for {:?} from 8 connections",
            2.0 * rate,
            cx.plan.rate
        );
        let r = loads::rate_load(&status_url, token, 2.0 * rate, 8, cx.plan.rate).await?;
        let expected = rate * cx.plan.rate.as_secs_f64() + burst;
        let off = (r.admitted as f64 - expected) / expected;
        let command = format!(
            "TOKEN=… kyc-bench rate-accuracy http://127.0.0.1:{status_cmd} --rate {} -c 8 -d {}",
            2.0 * rate,
            cx.plan.rate.as_secs()
        );
        cx.report.row(
            8,
            "rate limit: admitted vs rate × time + burst",
            format!("{} vs {expected:.0} ({:+.2}%)", r.admitted, off * 100.0),
            "within ±2%",
            Verdict::of(off.abs() <= 0.02),
            &command,
        );
        cx.report.row(
            8,
            "rate limit: 429s without Retry-After, other answers",
            format!(
                "{} of {} 429s, {} other",
                r.refused_without_retry_after, r.refused, r.other
            ),
            "0, 0",
            Verdict::of(r.refused_without_retry_after == 0 && r.other == 0 && r.refused > 0),
            &command,
        );
        cx.report.run("rate accuracy", &r);
    }

    for chain in [
        "kyc-status-chain",
        "kyc-verify-chain",
        "kyc-liveness-ws-chain",
    ] {
        stack.set_rate_limit(chain, 1_000_000, 1_000_000).await?;
    }
    cx.report.notes.push(
        "Figures 4-7 run with the status, verify and liveness-ws rate limits raised to 1,000,000/s \
         through the Admin API (PATCH /filter-chains), and the service's own per-client limit raised \
         the same way through KYC__SECURITY__RATE_LIMIT_*: they measure the work, not refusals."
            .into(),
    );

    if cx.want(4) || cx.want(7) {
        println!("[bench] figure 4: status through the edge, wrk -c400");
        let (stop, sampler) = rss_sampler(stack.service.pid());
        let r = tools::wrk(&status_url, 2, 400, cx.plan.status, Some(token))?;
        stop.store(true, Ordering::Relaxed);
        let loaded_kib = sampler.join().unwrap_or(0);
        let status_command = r.command.replace(&request_id, "<request_id>");
        println!(
            "[bench]   {:.0} req/s, p99 {:.2} ms, {} errors",
            r.rps, r.latency.p99, r.errors
        );
        println!("[bench] figure 4: pgbench -S -c400");
        // 400 connections take PostgreSQL a few seconds to open: never a run shorter than 10 s.
        let pg_time = cx.plan.status.max(Duration::from_secs(10));
        let pg = tools::pgbench_select(PGBENCH_DB, 400, 2, pg_time)?;
        println!("[bench]   {:.0} tps", pg.rps);
        let ratio = r.rps / pg.rps;
        if cx.want(4) {
            cx.report.row(
                4,
                "status via edge / pgbench -S, 400 clients",
                format!("{ratio:.3}× ({:.0} / {:.0})", r.rps, pg.rps),
                "≥ 0.5×",
                Verdict::of(ratio >= 0.5 && r.errors == 0),
                &format!("{status_command} vs {}", pg.command),
            );
            cx.report.row(
                4,
                "status via edge, p99 at 400 clients",
                format!("{:.2} ms ({} errors)", r.latency.p99, r.errors),
                "≤ 25 ms",
                Verdict::of(r.latency.p99 <= 25.0 && r.errors == 0),
                &status_command,
            );
        }
        if cx.want(7) {
            cx.report.row(
                7,
                "kyc-service RSS, under the -c400 status load",
                format!("{:.1} MiB (max)", mib(loaded_kib)),
                "≤ 256 MiB",
                Verdict::of(mib(loaded_kib) <= 256.0),
                &status_command,
            );
        }
        let mut status_run = serde_json::to_value(&r)?;
        status_run["command"] = json!(status_command);
        cx.report.run("status via edge", &status_run);
        cx.report.run("pgbench", &pg);
        stack.check()?;
    }

    if cx.want(5) {
        println!("[bench] figure 5: /verify, OCR +200 ms, face +300 ms, 50 clients");
        stack
            .sandbox_faults(json!({ "ocr": { "latency_ms": 200 }, "face": { "latency_ms": 300 } }))
            .await?;
        let r = loads::verify_load(&base, token, Arc::clone(&person), 50, cx.plan.verify).await;
        stack.sandbox_faults(json!({})).await?;
        let r = r?;
        let command = format!(
            "TOKEN=… kyc-bench verify --base {base} -c 50 -d {} --fixtures {} (after PUT /sandbox/faults \
             {{\"ocr\":{{\"latency_ms\":200}},\"face\":{{\"latency_ms\":300}}}})",
            cx.plan.verify.as_secs(),
            fixtures.display()
        );
        println!(
            "[bench]   {} requests, p50 {:.1} ms, p99 {:.1} ms, {} errors{}",
            r.requests,
            r.latency.p50,
            r.latency.p99,
            r.errors,
            r.first_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        );
        cx.report.row(
            5,
            "verify wall time p50, vendor calls 200 + 300 ms",
            format!(
                "{:.1} ms ({:.2}× 300 ms)",
                r.latency.p50,
                r.latency.p50 / 300.0
            ),
            "≤ 330 ms",
            Verdict::of(r.latency.p50 <= 330.0),
            &command,
        );
        cx.report.row(
            5,
            "verify request errors",
            format!("{} of {} ({} success)", r.errors, r.requests, r.succeeded),
            "0",
            Verdict::of(r.errors == 0 && r.requests > 0),
            &command,
        );
        cx.report.run("verify", &r);
        stack.check()?;
    }

    if cx.want(7) {
        let kib = stack.edge.rss_kib()?;
        cx.report.row(
            7,
            "kyc-edge RSS, all filters loaded, 2 workers",
            format!("{:.1} MiB", mib(kib)),
            "≤ 128 MiB",
            Verdict::of(mib(kib) <= 128.0),
            "VmRSS after the loads above (every chain has run on both workers)",
        );
    }

    if cx.want(6) {
        // The edge holds two sockets per connection (client and upstream side).
        let fd_limit = open_files_limit();
        let n = cx.plan.ws_connections.min(fd_limit.saturating_sub(200) / 2);
        if n < cx.plan.ws_connections {
            cx.report.notes.push(format!(
                "figure 6: {n} connections instead of {}: the open-files limit here is {fd_limit} \
                 (`ulimit -Hn`; raising it needs CAP_SYS_RESOURCE), and the edge needs two per \
                 connection",
                cx.plan.ws_connections
            ));
        }
        println!(
            "[bench] figure 6: {n} idle liveness WebSockets for {:?}",
            cx.plan.ws_hold
        );
        let ws_url = format!("ws://127.0.0.1:{STACK_EDGE}/api/v1/kyc/liveness/ws");
        let (svc_pid, edge_pid) = (stack.service.pid(), stack.edge.pid());
        let before = (procs::rss_kib(svc_pid)?, procs::rss_kib(edge_pid)?);
        let during = Arc::new(std::sync::Mutex::new((0u64, 0u64)));
        let d = Arc::clone(&during);
        let r = loads::ws_idle(&ws_url, token, n, cx.plan.ws_hold, async move || {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let now = (procs::rss_kib(svc_pid)?, procs::rss_kib(edge_pid)?);
            *d.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = now;
            Ok(())
        })
        .await?;
        let after = *during.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / r.opened.max(1) as f64;
        let (svc, edge) = (per(after.0, before.0), per(after.1, before.1));
        let command = format!(
            "TOKEN=… kyc-bench ws-idle --url {ws_url} -n {n} --hold {}",
            cx.plan.ws_hold.as_secs()
        );
        println!(
            "[bench]   opened {} of {n} in {:.1} s, {} survived; service +{svc:.1} KiB, edge +{edge:.1} KiB per connection{}",
            r.opened,
            r.open_seconds,
            r.survived,
            r.first_failure
                .as_deref()
                .map(|e| format!(" (first failure: {e})"))
                .unwrap_or_default()
        );
        cx.report.row(
            6,
            "idle WebSockets: service memory per connection",
            format!("{svc:.1} KiB"),
            "≤ 50 KiB",
            Verdict::of(svc <= 50.0 && r.opened == n),
            &command,
        );
        cx.report.row(
            6,
            "idle WebSockets: edge memory per connection",
            format!("{edge:.1} KiB"),
            "≤ 50 KiB",
            Verdict::of(edge <= 50.0 && r.opened == n),
            &command,
        );
        cx.report.row(
            6,
            "idle WebSockets: open after the hold",
            format!("{} of {n} (target {})", r.survived, cx.plan.ws_connections),
            "all",
            Verdict::of(r.survived == n && n == cx.plan.ws_connections),
            &command,
        );
        cx.report.run(
            "websockets",
            &json!({ "result": r, "rss_before_kib": before, "rss_open_kib": after }),
        );
        stack.check()?;
    }
    Ok(())
}
