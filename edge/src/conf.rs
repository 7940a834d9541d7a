//! The part of `kong.conf` the edge honours: the `shm_kv` zones (`nginx_wasm_shm_kv_<name>` and
//! `nginx_wasm_shm_kv` for the `*` zone); the client address (`trusted_ips`, `real_ip_header`,
//! `real_ip_recursive`); the request limits, under the nginx directive names Kong injects
//! (`nginx_http_client_header_timeout`, `nginx_http_client_body_timeout`,
//! `nginx_http_large_client_header_buffers`, `nginx_events_worker_connections`) and
//! `lua_max_req_headers`; and, when the command line leaves them unset, the listen addresses and
//! the declarative file. Every other key is read and ignored, so one file serves both Kong and the
//! edge.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

/// The smallest zone ngx_wasm_module accepts.
const MIN_ZONE_BYTES: usize = 15 * 1024;

#[derive(Debug, Clone, Default)]
pub struct KongConf {
    /// Zone name (`*` for the catch-all zone) → size in bytes.
    pub shm_zones: BTreeMap<String, usize>,
    pub proxy_listen: Option<String>,
    pub admin_listen: Option<String>,
    pub declarative_config: Option<PathBuf>,
    pub wasm_filters_path: Option<PathBuf>,
    pub client_address: ClientAddress,
    pub limits: Limits,
}

/// Kong's `trusted_ips`, `real_ip_header` and `real_ip_recursive` (nginx's realip module): the
/// client address is the connection's peer unless the peer is trusted, and only then taken from
/// the header. Kong's default trusts nobody.
#[derive(Debug, Clone)]
pub struct ClientAddress {
    pub trusted_ips: Vec<IpNet>,
    /// Lower case; Kong's default is `X-Real-IP`.
    pub real_ip_header: String,
    pub real_ip_recursive: bool,
}

impl Default for ClientAddress {
    fn default() -> Self {
        Self {
            trusted_ips: Vec::new(),
            real_ip_header: "x-real-ip".into(),
            real_ip_recursive: false,
        }
    }
}

impl ClientAddress {
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_ips.iter().any(|net| net.contains(ip))
    }
}

/// An address or a CIDR block (`10.0.0.0/8`, `::1`, `0.0.0.0/0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .with_context(|| format!("{text:?} is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .with_context(|| format!("{text:?}: prefix length must be 0..={max}"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 @ IpAddr::V4(_) => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let shift = 32 - u32::from(self.prefix);
                shift == 32 || (u32::from(net) >> shift) == (u32::from(ip) >> shift)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let shift = 128 - u32::from(self.prefix);
                shift == 128 || (u128::from(net) >> shift) == (u128::from(ip) >> shift)
            }
            _ => false,
        }
    }
}

/// What one client may make the proxy listener hold. Defaults are nginx's (and so Kong's) where
/// nginx has the setting.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `nginx_http_client_header_timeout` (nginx: 60s): a request head not complete in this time
    /// closes the connection.
    pub header_timeout: Duration,
    /// `nginx_http_client_body_timeout` (nginx: 60s): the longest wait between two reads of a
    /// request body (408 beyond).
    pub body_timeout: Duration,
    /// `nginx_http_large_client_header_buffers` (nginx: `4 8k`): a request line longer than the
    /// size is a 414, a header line longer than the size or a head larger than number × size a 431.
    pub header_buffers: (usize, usize),
    /// `lua_max_req_headers` (Kong: 100): more request headers are a 431.
    pub max_headers: usize,
    /// `nginx_events_worker_connections` per worker (the edge's default 4096): connections beyond
    /// it are answered 503 and closed.
    pub worker_connections: usize,
    /// The largest WebSocket frame and message a client may send through a tunnel (the edge's
    /// own: nginx has none; `--ws-max-frame-bytes`, `--ws-max-message-bytes`, 1 MiB each).
    pub ws_max_frame: u64,
    pub ws_max_message: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            header_buffers: (4, 8 * 1024),
            max_headers: 100,
            worker_connections: 4096,
            ws_max_frame: 1 << 20,
            ws_max_message: 1 << 20,
        }
    }
}

impl Limits {
    pub fn max_line(&self) -> usize {
        self.header_buffers.1
    }

    pub fn max_head(&self) -> usize {
        self.header_buffers.0.saturating_mul(self.header_buffers.1)
    }
}

impl KongConf {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut conf = Self::default();
        for (n, raw) in text.lines().enumerate() {
            let line = strip_comment(raw).trim();
            if line.is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                bail!("line {}: expected `key = value`, found {line:?}", n + 1);
            };
            let (key, value) = (key.trim().to_ascii_lowercase(), value.trim());
            let at = || format!("line {}: {key}", n + 1);
            if key == "nginx_wasm_shm_kv" {
                conf.shm_zones
                    .insert("*".into(), parse_size(value).with_context(at)?);
            } else if let Some(zone) = key.strip_prefix("nginx_wasm_shm_kv_") {
                conf.shm_zones
                    .insert(zone.to_owned(), parse_size(value).with_context(at)?);
            } else if key == "proxy_listen" {
                conf.proxy_listen = Some(first_listen(value));
            } else if key == "admin_listen" {
                conf.admin_listen = Some(first_listen(value));
            } else if key == "declarative_config" {
                conf.declarative_config = Some(value.into());
            } else if key == "wasm_filters_path" {
                conf.wasm_filters_path = Some(value.into());
            } else if key == "trusted_ips" {
                conf.client_address.trusted_ips = parse_trusted_ips(value).with_context(at)?;
            } else if key == "real_ip_header" {
                if value.eq_ignore_ascii_case("proxy_protocol") || value.is_empty() {
                    bail!("{}: the edge supports a header name only", at());
                }
                conf.client_address.real_ip_header = value.to_ascii_lowercase();
            } else if key == "real_ip_recursive" {
                conf.client_address.real_ip_recursive = parse_flag(value).with_context(at)?;
            } else if key == "nginx_http_client_header_timeout" {
                conf.limits.header_timeout = parse_duration(value).with_context(at)?;
            } else if key == "nginx_http_client_body_timeout" {
                conf.limits.body_timeout = parse_duration(value).with_context(at)?;
            } else if key == "nginx_http_large_client_header_buffers" {
                conf.limits.header_buffers = parse_buffers(value).with_context(at)?;
            } else if key == "lua_max_req_headers" {
                conf.limits.max_headers = parse_count(value).with_context(at)?;
            } else if key == "nginx_events_worker_connections"
                && !value.eq_ignore_ascii_case("auto")
            {
                conf.limits.worker_connections = parse_count(value).with_context(at)?;
            }
        }
        Ok(conf)
    }
}

/// `NONE`, or a comma-separated list of addresses and CIDR blocks.
fn parse_trusted_ips(value: &str) -> anyhow::Result<Vec<IpNet>> {
    if value.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| {
            if v.starts_with("unix:") {
                bail!("{v:?}: the edge listens on TCP only");
            }
            IpNet::parse(v)
        })
        .collect()
}

fn parse_flag(value: &str) -> anyhow::Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => bail!("{value:?} is not on or off"),
    }
}

fn parse_count(value: &str) -> anyhow::Result<usize> {
    value
        .parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .with_context(|| format!("{value:?} is not a positive number"))
}

/// nginx times: `60s`, `500ms`, `2m`, `1h`, or plain seconds.
pub fn parse_duration(value: &str) -> anyhow::Result<Duration> {
    let v = value.trim().to_ascii_lowercase();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: u64 = digits
        .parse()
        .with_context(|| format!("{value:?} is not a time like 60s or 500ms"))?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => bail!("{value:?} is not a time like 60s or 500ms"),
    };
    if d.is_zero() {
        bail!("{value:?}: a timeout must be positive");
    }
    Ok(d)
}

/// `4 8k`: a number of buffers and the size of one (at least 1k, as a request line must fit).
fn parse_buffers(value: &str) -> anyhow::Result<(usize, usize)> {
    let mut parts = value.split_whitespace();
    let (Some(n), Some(size), None) = (parts.next(), parts.next(), parts.next()) else {
        bail!("{value:?} is not `number size`, like `4 8k`");
    };
    let n = parse_count(n)?;
    let v = size.to_ascii_lowercase();
    let (digits, unit) = match v.strip_suffix('k') {
        Some(d) => (d, 1024),
        None => match v.strip_suffix('m') {
            Some(d) => (d, 1024 * 1024),
            None => (v.as_str(), 1),
        },
    };
    let size = digits
        .parse::<usize>()
        .ok()
        .map(|d| d.saturating_mul(unit))
        .filter(|&s| s >= 1024)
        .with_context(|| format!("{size:?} is not a size of at least 1k"))?;
    Ok((n, size))
}

/// `#` starts a comment unless escaped as `\#`, as in kong.conf.
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || bytes[i - 1] != b'\\') {
            return &line[..i];
        }
    }
    line
}

/// `0.0.0.0:8000 reuseport backlog=16384, 0.0.0.0:8443 ssl` → `0.0.0.0:8000`.
fn first_listen(value: &str) -> String {
    value
        .split(',')
        .next()
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_default()
        .to_owned()
}

/// nginx sizes: `12m`, `15k`, `1g` or plain bytes.
pub fn parse_size(value: &str) -> anyhow::Result<usize> {
    let v = value.trim().to_ascii_lowercase();
    let (digits, unit) = match v.char_indices().last() {
        Some((i, 'k')) => (&v[..i], 1024),
        Some((i, 'm')) => (&v[..i], 1024 * 1024),
        Some((i, 'g')) => (&v[..i], 1024 * 1024 * 1024),
        _ => (v.as_str(), 1),
    };
    let n: usize = digits
        .parse()
        .with_context(|| format!("{value:?} is not a size like 12m, 15k or 4096"))?;
    let bytes = n.saturating_mul(unit);
    if bytes < MIN_ZONE_BYTES {
        bail!("zone size {value:?} is below the 15k minimum");
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_zones_listens_and_ignores_the_rest() {
        let conf = KongConf::parse(
            "# Kong\nwasm = on\nnginx_wasm_shm_kv_ratelimit = 12m  # limiter\n\
             NGINX_WASM_SHM_KV = 64k\nproxy_listen = 0.0.0.0:8000 reuseport, 0.0.0.0:8443 ssl\n\
             admin_listen=127.0.0.1:8001\n",
        )
        .expect("parses");
        assert_eq!(conf.shm_zones.get("ratelimit"), Some(&(12 << 20)));
        assert_eq!(conf.shm_zones.get("*"), Some(&(64 << 10)));
        assert_eq!(conf.proxy_listen.as_deref(), Some("0.0.0.0:8000"));
        assert_eq!(conf.admin_listen.as_deref(), Some("127.0.0.1:8001"));
    }

    #[test]
    fn reads_the_client_address_and_limit_settings() {
        let conf = KongConf::parse(
            "trusted_ips = 10.0.0.0/8, ::1\nreal_ip_header = X-Forwarded-For\n\
             real_ip_recursive = on\nnginx_http_client_header_timeout = 5s\n\
             nginx_http_client_body_timeout = 1500ms\n\
             nginx_http_large_client_header_buffers = 2 4k\nlua_max_req_headers = 20\n\
             nginx_events_worker_connections = 64\n",
        )
        .expect("parses");
        let ca = &conf.client_address;
        assert!(ca.is_trusted("10.1.2.3".parse().expect("ip")));
        assert!(ca.is_trusted("::ffff:10.1.2.3".parse().expect("ip")));
        assert!(ca.is_trusted("::1".parse().expect("ip")));
        assert!(!ca.is_trusted("11.0.0.1".parse().expect("ip")));
        assert_eq!(ca.real_ip_header, "x-forwarded-for");
        assert!(ca.real_ip_recursive);
        let l = &conf.limits;
        assert_eq!(l.header_timeout, Duration::from_secs(5));
        assert_eq!(l.body_timeout, Duration::from_millis(1500));
        assert_eq!((l.max_line(), l.max_head()), (4096, 8192));
        assert_eq!((l.max_headers, l.worker_connections), (20, 64));
        // The defaults trust nobody.
        let d = KongConf::parse("").expect("empty");
        assert!(
            !d.client_address
                .is_trusted("127.0.0.1".parse().expect("ip"))
        );
        assert!(
            KongConf::parse("trusted_ips = NONE")
                .expect("none")
                .client_address
                .trusted_ips
                .is_empty()
        );
        assert!(
            IpNet::parse("0.0.0.0/0")
                .expect("all")
                .contains("8.8.8.8".parse().expect("ip"))
        );
        for bad in [
            "trusted_ips = 10.0.0.0/33",
            "trusted_ips = unix:",
            "real_ip_header = proxy_protocol",
            "nginx_http_large_client_header_buffers = 4",
            "nginx_http_client_body_timeout = 0s",
        ] {
            assert!(KongConf::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_bad_sizes_and_lines() {
        assert!(KongConf::parse("nginx_wasm_shm_kv_a = 1k").is_err());
        assert!(KongConf::parse("nginx_wasm_shm_kv_a = lots").is_err());
        assert!(KongConf::parse("just words").is_err());
        assert_eq!(parse_size("16384").expect("bytes"), 16384);
    }
}
