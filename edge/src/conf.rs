//! The part of `kong.conf` the edge honours: the `shm_kv` zones (`nginx_wasm_shm_kv_<name>` and
//! `nginx_wasm_shm_kv` for the `*` zone) and, when the command line leaves them unset, the listen
//! addresses and the declarative file. Every other key is read and ignored, so one file serves both
//! Kong and the edge.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
            }
        }
        Ok(conf)
    }
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
    fn refuses_bad_sizes_and_lines() {
        assert!(KongConf::parse("nginx_wasm_shm_kv_a = 1k").is_err());
        assert!(KongConf::parse("nginx_wasm_shm_kv_a = lots").is_err());
        assert!(KongConf::parse("just words").is_err());
        assert_eq!(parse_size("16384").expect("bytes"), 16384);
    }
}
