//! `declarative/kong.yaml` in decK's format 3.0: services (with `url` or protocol/host/port/path),
//! routes (nested or top-level with `service:`), and `filter_chains` (nested under a service or a
//! route, or top-level with `service:`/`route:`). Kong's defaults apply to what a file leaves out.
//! decK's `${{ env "DECK_…" }}` templates are filled from the environment before parsing. Other
//! entity kinds (plugins, consumers, upstreams…) are not run by the edge; it says so at load.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use anyhow::{Context, anyhow, bail};
use regex::Regex;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Namespace of the ids given to entities the file does not give one (stable across reloads).
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6b79_632d_6564_6765_8000_0000_0000_0001);

#[derive(Debug, Clone)]
pub struct Service {
    pub id: Uuid,
    pub name: String,
    pub protocol: String,
    pub host: String,
    pub port: u16,
    pub path: Option<String>,
    pub connect_timeout_ms: u64,
    pub read_timeout_ms: u64,
    pub write_timeout_ms: u64,
    pub retries: u64,
    pub enabled: bool,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub id: Uuid,
    pub name: Option<String>,
    pub service: Option<Uuid>,
    pub paths: Vec<String>,
    pub methods: Vec<String>,
    pub hosts: Vec<String>,
    pub protocols: Vec<String>,
    pub strip_path: bool,
    pub preserve_host: bool,
    pub regex_priority: i64,
    pub path_handling: String,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub name: String,
    pub config: Option<Value>,
    pub enabled: bool,
}

impl Filter {
    /// The bytes `on_configure` reads, as Kong sends them: a string as is, any other JSON value
    /// re-encoded, no config as nothing.
    pub fn config_bytes(&self) -> Vec<u8> {
        match &self.config {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => s.clone().into_bytes(),
            Some(v) => v.to_string().into_bytes(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct FilterChain {
    pub id: Uuid,
    pub name: Option<String>,
    pub enabled: bool,
    pub service: Option<Uuid>,
    pub route: Option<Uuid>,
    pub filters: Vec<Filter>,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Declarative {
    pub services: Vec<Service>,
    pub routes: Vec<Route>,
    pub filter_chains: Vec<FilterChain>,
    /// Hex digest of the file as loaded (Kong's `configuration_hash`).
    pub hash: String,
    /// Entity kinds the file holds that the edge does not run.
    pub ignored: Vec<String>,
}

// ---- the file as written -------------------------------------------------------------------

#[derive(Deserialize)]
struct RawFile {
    #[serde(rename = "_format_version")]
    format_version: Option<String>,
    #[serde(default)]
    services: Vec<RawService>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    filter_chains: Vec<RawChain>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
struct RawService {
    id: Option<Uuid>,
    name: Option<String>,
    url: Option<String>,
    protocol: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    path: Option<String>,
    connect_timeout: Option<u64>,
    read_timeout: Option<u64>,
    write_timeout: Option<u64>,
    retries: Option<u64>,
    enabled: Option<bool>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    filter_chains: Vec<RawChain>,
    #[serde(default)]
    plugins: Vec<Value>,
}

#[derive(Deserialize)]
struct RawRoute {
    id: Option<Uuid>,
    name: Option<String>,
    service: Option<Reference>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    protocols: Vec<String>,
    strip_path: Option<bool>,
    preserve_host: Option<bool>,
    regex_priority: Option<i64>,
    path_handling: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    filter_chains: Vec<RawChain>,
    #[serde(default)]
    plugins: Vec<Value>,
}

#[derive(Deserialize)]
struct RawChain {
    id: Option<Uuid>,
    name: Option<String>,
    enabled: Option<bool>,
    service: Option<Reference>,
    route: Option<Reference>,
    #[serde(default)]
    filters: Vec<RawFilter>,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFilter {
    pub name: String,
    #[serde(default)]
    pub config: Option<Value>,
    pub enabled: Option<bool>,
}

/// A foreign key: a name or id, or `{id: …}` / `{name: …}`.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum Reference {
    Key(String),
    Object {
        id: Option<String>,
        name: Option<String>,
    },
}

impl Reference {
    fn key(&self) -> Option<&str> {
        match self {
            Self::Key(k) => Some(k),
            Self::Object { id, name } => id.as_deref().or(name.as_deref()),
        }
    }
}

/// Fills decK's `${{ env "DECK_NAME" }}` templates; an unset variable is an error that names it.
pub fn fill_env_templates(text: &str) -> anyhow::Result<String> {
    let re = Regex::new(r#"\$\{\{\s*env\s+"([A-Za-z_][A-Za-z0-9_]*)"\s*\}\}"#)?;
    let mut missing = BTreeSet::new();
    let filled = re.replace_all(text, |caps: &regex::Captures<'_>| {
        let name = &caps[1];
        match std::env::var(name) {
            Ok(v) => v,
            Err(_) => {
                missing.insert(name.to_owned());
                String::new()
            }
        }
    });
    if !missing.is_empty() {
        let names: Vec<_> = missing.into_iter().collect();
        bail!(
            "environment variable(s) {} not set (the file uses ${{{{ env \"…\" }}}} templates, as decK does)",
            names.join(", ")
        );
    }
    Ok(filled.into_owned())
}

fn stable_id(kind: &str, key: &str) -> Uuid {
    Uuid::new_v5(&ID_NAMESPACE, format!("{kind}:{key}").as_bytes())
}

impl Declarative {
    /// Parses the text of a declarative file (YAML or JSON). `loaded_filters` are the names found in
    /// the filters directory; a chain naming any other filter is refused, as Kong refuses it.
    pub fn parse(text: &str, loaded_filters: &HashSet<String>) -> anyhow::Result<Self> {
        let filled = fill_env_templates(text)?;
        let raw: RawFile =
            serde_yaml_ng::from_str(&filled).context("not a valid declarative file")?;
        match raw.format_version.as_deref() {
            Some("3.0") | Some("2.1") => {}
            Some(v) => bail!("_format_version {v:?} is not supported (use \"3.0\")"),
            None => bail!("_format_version is missing (use \"3.0\")"),
        }
        let mut out = Declarative {
            hash: hex::encode(&Sha256::digest(filled.as_bytes())[..16]),
            ..Self::default()
        };
        if let Some(Value::Array(plugins)) = raw.other.get("plugins") {
            check_plugins(plugins, loaded_filters)?;
        }
        out.ignored = raw
            .other
            .keys()
            .filter(|k| !k.starts_with('_'))
            .cloned()
            .collect();
        let mut pending_chains: Vec<(RawChain, Option<Uuid>, Option<Uuid>)> = Vec::new();
        let mut pending_routes: Vec<(RawRoute, Option<Uuid>)> = Vec::new();
        for (i, s) in raw.services.into_iter().enumerate() {
            let at = format!("services[{i}]");
            let service = build_service(&s).with_context(|| at.clone())?;
            check_plugins(&s.plugins, loaded_filters).with_context(|| at.clone())?;
            if !s.plugins.is_empty() {
                out.ignored.push(format!("{at}.plugins"));
            }
            for c in s.filter_chains {
                pending_chains.push((c, Some(service.id), None));
            }
            for r in s.routes {
                pending_routes.push((r, Some(service.id)));
            }
            out.services.push(service);
        }
        pending_routes.extend(raw.routes.into_iter().map(|r| (r, None)));
        for (i, (r, parent)) in pending_routes.into_iter().enumerate() {
            let at = format!("routes[{i}] ({})", r.name.as_deref().unwrap_or("unnamed"));
            let service = match (&r.service, parent) {
                (_, Some(p)) => Some(p),
                (Some(reference), None) => {
                    Some(out.service_id(reference).with_context(|| at.clone())?)
                }
                (None, None) => None,
            };
            let route = build_route(&r, service).with_context(|| at.clone())?;
            check_plugins(&r.plugins, loaded_filters).with_context(|| at.clone())?;
            if !r.plugins.is_empty() {
                out.ignored.push(format!("{at}.plugins"));
            }
            for c in r.filter_chains {
                pending_chains.push((c, None, Some(route.id)));
            }
            out.routes.push(route);
        }
        pending_chains.extend(raw.filter_chains.into_iter().map(|c| (c, None, None)));
        for (i, (c, service, route)) in pending_chains.into_iter().enumerate() {
            let at = format!(
                "filter_chains[{i}] ({})",
                c.name.as_deref().unwrap_or("unnamed")
            );
            let chain = out
                .build_chain(c, service, route, loaded_filters)
                .with_context(|| at.clone())?;
            out.filter_chains.push(chain);
        }
        out.check_unique()?;
        Ok(out)
    }

    fn service_id(&self, reference: &Reference) -> anyhow::Result<Uuid> {
        let key = reference
            .key()
            .ok_or_else(|| anyhow!("service reference is empty"))?;
        self.services
            .iter()
            .find(|s| s.name == key || s.id.to_string() == key)
            .map(|s| s.id)
            .ok_or_else(|| anyhow!("no service {key:?}"))
    }

    fn route_id(&self, reference: &Reference) -> anyhow::Result<Uuid> {
        let key = reference
            .key()
            .ok_or_else(|| anyhow!("route reference is empty"))?;
        self.routes
            .iter()
            .find(|r| r.name.as_deref() == Some(key) || r.id.to_string() == key)
            .map(|r| r.id)
            .ok_or_else(|| anyhow!("no route {key:?}"))
    }

    fn build_chain(
        &self,
        c: RawChain,
        service: Option<Uuid>,
        route: Option<Uuid>,
        loaded_filters: &HashSet<String>,
    ) -> anyhow::Result<FilterChain> {
        let service = match (&c.service, service) {
            (_, Some(s)) => Some(s),
            (Some(r), None) => Some(self.service_id(r)?),
            _ => None,
        };
        let route = match (&c.route, route) {
            (_, Some(r)) => Some(r),
            (Some(r), None) => Some(self.route_id(r)?),
            _ => None,
        };
        if service.is_some() == route.is_some() {
            bail!("a filter chain belongs to exactly one service or one route");
        }
        let filters = c
            .filters
            .into_iter()
            .map(|f| filter_from_raw(f, loaded_filters))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if filters.is_empty() {
            bail!("filters: a filter chain needs at least one filter");
        }
        let id = c.id.unwrap_or_else(|| {
            let owner = service.or(route).unwrap_or_default();
            stable_id(
                "filter_chain",
                c.name.as_deref().unwrap_or(&owner.to_string()),
            )
        });
        Ok(FilterChain {
            id,
            name: c.name,
            enabled: c.enabled.unwrap_or(true),
            service,
            route,
            filters,
            tags: c.tags,
        })
    }

    fn check_unique(&self) -> anyhow::Result<()> {
        let mut names = HashSet::new();
        for s in &self.services {
            if !names.insert(("service", s.name.clone())) {
                bail!("two services are named {:?}", s.name);
            }
        }
        for r in self.routes.iter().filter_map(|r| r.name.clone()) {
            if !names.insert(("route", r.clone())) {
                bail!("two routes are named {r:?}");
            }
        }
        let mut owners = HashSet::new();
        for c in &self.filter_chains {
            if let Some(n) = &c.name
                && !names.insert(("chain", n.clone()))
            {
                bail!("two filter chains are named {n:?}");
            }
            if !owners.insert((c.service, c.route)) {
                bail!(
                    "filter chain {:?}: Kong allows one chain per service and one per route",
                    c.name.as_deref().unwrap_or("unnamed")
                );
            }
        }
        Ok(())
    }

    pub fn service(&self, id: Uuid) -> Option<&Service> {
        self.services.iter().find(|s| s.id == id)
    }

    pub fn chain_index(&self, key: &str) -> Option<usize> {
        self.filter_chains
            .iter()
            .position(|c| c.name.as_deref() == Some(key) || c.id.to_string() == key)
    }

    // ---- the Admin API's view (Kong's entity shapes) --------------------------------------

    pub fn service_json(&self, s: &Service) -> Value {
        json!({
            "id": s.id, "name": s.name, "protocol": s.protocol, "host": s.host, "port": s.port,
            "path": s.path, "connect_timeout": s.connect_timeout_ms,
            "read_timeout": s.read_timeout_ms, "write_timeout": s.write_timeout_ms,
            "retries": s.retries, "enabled": s.enabled, "tags": s.tags,
        })
    }

    pub fn route_json(&self, r: &Route) -> Value {
        json!({
            "id": r.id, "name": r.name, "service": r.service.map(|id| json!({"id": id})),
            "paths": r.paths, "methods": nullable(&r.methods), "hosts": nullable(&r.hosts),
            "protocols": r.protocols, "strip_path": r.strip_path, "preserve_host": r.preserve_host,
            "regex_priority": r.regex_priority, "path_handling": r.path_handling, "tags": r.tags,
        })
    }

    pub fn chain_json(&self, c: &FilterChain) -> Value {
        json!({
            "id": c.id, "name": c.name, "enabled": c.enabled,
            "service": c.service.map(|id| json!({"id": id})),
            "route": c.route.map(|id| json!({"id": id})),
            "filters": c.filters.iter().map(|f| json!({
                "name": f.name, "config": f.config, "enabled": f.enabled,
            })).collect::<Vec<_>>(),
            "tags": c.tags,
        })
    }
}

fn nullable(v: &[String]) -> Value {
    if v.is_empty() { Value::Null } else { json!(v) }
}

/// Kong 3.9 also runs a filter configured as a plugin. The edge does not, so such a file is
/// refused rather than run without that filter (a `kyc_jwt` plugin ignored would mean no auth).
fn check_plugins(plugins: &[Value], loaded: &HashSet<String>) -> anyhow::Result<()> {
    for p in plugins {
        if let Some(name) = p.get("name").and_then(Value::as_str)
            && loaded.contains(name)
        {
            bail!(
                "plugins: {name:?} is a Wasm filter configured as a plugin; kyc-edge runs filters only from filter_chains, so write it as a filter_chains entry"
            );
        }
    }
    Ok(())
}

pub fn filter_from_raw(f: RawFilter, loaded: &HashSet<String>) -> anyhow::Result<Filter> {
    if !loaded.contains(&f.name) {
        bail!(
            "filters: no filter named {:?} is loaded (each must be a <name>.wasm in the filters directory)",
            f.name
        );
    }
    if let Some(c) = &f.config
        && !(c.is_object() || c.is_string() || c.is_null())
    {
        bail!("filters.{}.config: expected an object or a string", f.name);
    }
    Ok(Filter {
        name: f.name,
        config: f.config,
        enabled: f.enabled.unwrap_or(true),
    })
}

fn build_service(s: &RawService) -> anyhow::Result<Service> {
    let name = s
        .name
        .clone()
        .ok_or_else(|| anyhow!("name: the edge needs every service named"))?;
    let (mut protocol, mut host, mut port, mut path) = (
        s.protocol.clone().unwrap_or_else(|| "http".into()),
        s.host.clone(),
        s.port,
        s.path.clone(),
    );
    if let Some(url) = &s.url {
        let parsed: http::Uri = url.parse().with_context(|| format!("url {url:?}"))?;
        protocol = parsed.scheme_str().unwrap_or("http").to_owned();
        host = parsed.host().map(str::to_owned);
        port = parsed.port_u16();
        path = match parsed.path() {
            "" => None,
            p => Some(p.to_owned()),
        };
    }
    if protocol != "http" {
        bail!("protocol {protocol:?}: the edge proxies to http upstreams only");
    }
    Ok(Service {
        id: s.id.unwrap_or_else(|| stable_id("service", &name)),
        name,
        protocol,
        host: host.ok_or_else(|| anyhow!("host: a service needs a url or a host"))?,
        port: port.unwrap_or(80),
        path,
        connect_timeout_ms: s.connect_timeout.unwrap_or(60_000),
        read_timeout_ms: s.read_timeout.unwrap_or(60_000),
        write_timeout_ms: s.write_timeout.unwrap_or(60_000),
        retries: s.retries.unwrap_or(5),
        enabled: s.enabled.unwrap_or(true),
        tags: s.tags.clone(),
    })
}

fn build_route(r: &RawRoute, service: Option<Uuid>) -> anyhow::Result<Route> {
    if r.paths.is_empty() && r.hosts.is_empty() && r.methods.is_empty() {
        bail!("a route needs paths, hosts or methods");
    }
    for p in &r.paths {
        if let Some(re) = p.strip_prefix('~') {
            Regex::new(&format!("^(?:{re})")).with_context(|| format!("paths: bad regex {p:?}"))?;
        } else if !p.starts_with('/') {
            bail!("paths: {p:?} must start with / (or ~ for a regex)");
        }
    }
    let path_handling = r.path_handling.clone().unwrap_or_else(|| "v0".into());
    if path_handling != "v0" && path_handling != "v1" {
        bail!("path_handling: {path_handling:?} is not v0 or v1");
    }
    let key = r
        .name
        .clone()
        .unwrap_or_else(|| format!("{:?}{:?}{:?}", r.paths, r.methods, r.hosts));
    Ok(Route {
        id: r.id.unwrap_or_else(|| stable_id("route", &key)),
        name: r.name.clone(),
        service,
        paths: r.paths.clone(),
        methods: r.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
        hosts: r.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        protocols: if r.protocols.is_empty() {
            vec!["http".into(), "https".into()]
        } else {
            r.protocols.clone()
        },
        strip_path: r.strip_path.unwrap_or(true),
        preserve_host: r.preserve_host.unwrap_or(false),
        regex_priority: r.regex_priority.unwrap_or(0),
        path_handling,
        tags: r.tags.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded() -> HashSet<String> {
        ["kyc_jwt", "kyc_rate_limit"].map(String::from).into()
    }

    #[test]
    fn nested_and_top_level_entities_resolve_with_kong_defaults() {
        let d = Declarative::parse(
            r#"
_format_version: "3.0"
services:
- name: api
  url: http://api.internal:8080/base
  routes:
  - name: r1
    paths: ["/a"]
    filter_chains:
    - name: r1-chain
      filters:
      - name: kyc_rate_limit
        config: {burst: 3}
routes:
- name: r2
  service: api
  paths: ["/b"]
filter_chains:
- name: svc-chain
  service: {name: api}
  enabled: false
  filters:
  - name: kyc_jwt
    enabled: false
    config: '{"raw":true}'
plugins: []
"#,
            &loaded(),
        )
        .expect("parses");
        let svc = &d.services[0];
        assert_eq!((svc.host.as_str(), svc.port), ("api.internal", 8080));
        assert_eq!(svc.path.as_deref(), Some("/base"));
        assert_eq!(d.routes.len(), 2);
        assert!(
            d.routes
                .iter()
                .all(|r| r.service == Some(svc.id) && r.strip_path)
        );
        assert_eq!(
            d.filter_chains[0].filters[0].config_bytes(),
            br#"{"burst":3}"#
        );
        assert_eq!(
            d.filter_chains[1].filters[0].config_bytes(),
            br#"{"raw":true}"#
        );
        assert!(!d.filter_chains[1].enabled && !d.filter_chains[1].filters[0].enabled);
        assert_eq!(d.ignored, vec!["plugins".to_owned()]);
        // Ids are stable across loads, so the Admin API's ids survive a reload.
        let again = Declarative::parse(&d_text(), &loaded()).expect("parses");
        let once = Declarative::parse(&d_text(), &loaded()).expect("parses");
        assert_eq!(again.routes[0].id, once.routes[0].id);
    }

    fn d_text() -> String {
        "_format_version: \"3.0\"\nservices:\n- name: s\n  host: h\n  routes:\n  - name: r\n    paths: [/]\n"
            .into()
    }

    #[test]
    fn refuses_unknown_filters_double_chains_and_missing_templates() {
        let unknown = "_format_version: \"3.0\"\nservices:\n- name: s\n  host: h\n  filter_chains:\n  - filters:\n    - name: nope\n";
        let err = Declarative::parse(unknown, &loaded()).expect_err("unknown filter");
        assert!(
            format!("{err:#}").contains("no filter named \"nope\""),
            "{err:#}"
        );

        let two = "_format_version: \"3.0\"\nservices:\n- name: s\n  host: h\n  filter_chains:\n  - filters: [{name: kyc_jwt}]\n  - filters: [{name: kyc_jwt}]\n";
        let err = Declarative::parse(two, &loaded()).expect_err("two chains");
        assert!(
            format!("{err:#}").contains("one chain per service"),
            "{err:#}"
        );

        let templ = "_format_version: \"3.0\"\nx: ${{ env \"DECK_EDGE_TEST_SURELY_UNSET\" }}\n";
        let err = Declarative::parse(templ, &loaded()).expect_err("unset variable");
        assert!(
            format!("{err:#}").contains("DECK_EDGE_TEST_SURELY_UNSET"),
            "{err:#}"
        );

        assert!(Declarative::parse("services: []", &loaded()).is_err());

        // A filter configured as a Kong 3.9 plugin would silently not run here: refused.
        let as_plugin = "_format_version: \"3.0\"\nplugins:\n- name: kyc_jwt\n  route: r\n";
        let err = Declarative::parse(as_plugin, &loaded()).expect_err("filter as plugin");
        assert!(
            format!("{err:#}").contains("filter_chains entry"),
            "{err:#}"
        );
        let lua = "_format_version: \"3.0\"\nplugins:\n- name: prometheus\n";
        assert!(Declarative::parse(lua, &loaded()).is_ok());
    }
}
