//! The running configuration (a `Plan`): which route a request matches, the path the upstream
//! receives, and the filters that run for it. A plan is immutable; a PATCH or a reload builds a
//! new one with a new generation, and each worker re-creates its filter instances for it.
//!
//! Matching follows Kong's `traditional_compatible` router in the parts the project uses: a route
//! matches when its methods (if any), hosts (if any, `*.` wildcards allowed) and one of its paths
//! (a prefix, or a regex written `~…`) match. Among matches, the one with more criteria wins, then a
//! regex path by `regex_priority`, then the longest prefix. No match is Kong's 404.

use std::sync::Arc;

use regex::Regex;

use crate::declarative::{Declarative, Route, Service};

/// One filter of a chain as a worker runs it: `entry` names the root context (its config) in the
/// plan, so two chains using one filter with different configs get two root contexts.
#[derive(Debug)]
pub struct FilterStep {
    pub entry: usize,
    pub filter: Arc<str>,
    pub config: Arc<[u8]>,
    pub chain: Arc<str>,
}

enum PathRule {
    Prefix(String),
    Regex(Regex),
}

struct RouteRule {
    route: usize,
    service: Option<usize>,
    paths: Vec<PathRule>,
    criteria: u8,
}

/// (criteria, regex path, regex priority, matched length): the larger wins.
type Score = (u8, bool, i64, usize);

pub struct Plan {
    pub generation: u64,
    pub decl: Declarative,
    rules: Vec<RouteRule>,
    /// Per route index: the service's chain then the route's, enabled filters only.
    chains: Vec<Arc<[Arc<FilterStep>]>>,
    /// Every step of the plan, indexed by `entry`.
    pub steps: Vec<Arc<FilterStep>>,
}

pub struct Match<'p> {
    pub route: &'p Route,
    pub service: &'p Service,
    pub steps: Arc<[Arc<FilterStep>]>,
    /// The matched part of the path that `strip_path` removes (empty when it is off).
    pub strip: String,
}

impl Match<'_> {
    /// Path and query for the upstream: `path_and_query` (as the filters left it) after
    /// `strip_path` and the service's path.
    pub fn upstream_path(&self, path_and_query: &str) -> String {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        // A filter may have rewritten the path; strip only what still matches.
        let rest = match path.strip_prefix(self.strip.as_str()) {
            Some(rest) if !self.strip.is_empty() => rest,
            _ => path,
        };
        let mut out = join_paths(self.service.path.as_deref(), rest);
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        out
    }
}

impl Plan {
    pub fn new(decl: Declarative, generation: u64) -> anyhow::Result<Self> {
        let mut rules = Vec::new();
        for (i, r) in decl.routes.iter().enumerate() {
            // Kong leaves the routes of a disabled service out of the router.
            let disabled = r
                .service
                .and_then(|id| decl.services.iter().find(|s| s.id == id))
                .is_some_and(|s| !s.enabled);
            let paths = r
                .paths
                .iter()
                .map(|p| match p.strip_prefix('~') {
                    Some(re) => Regex::new(&format!("^(?:{re})")).map(PathRule::Regex),
                    None => Ok(PathRule::Prefix(p.clone())),
                })
                .collect::<Result<Vec<_>, _>>()?;
            if disabled {
                continue;
            }
            rules.push(RouteRule {
                route: i,
                service: r
                    .service
                    .and_then(|id| decl.services.iter().position(|s| s.id == id)),
                paths,
                criteria: u8::from(!r.methods.is_empty()) + u8::from(!r.hosts.is_empty()),
            });
        }
        let mut steps = Vec::new();
        let mut chains = Vec::new();
        for r in &decl.routes {
            let mut chain = Vec::new();
            let owned = decl.filter_chains.iter().filter(|c| {
                c.enabled
                    && (c.route == Some(r.id) || (c.service.is_some() && c.service == r.service))
            });
            // The service's chain runs first, then the route's.
            let mut owned: Vec<_> = owned.collect();
            owned.sort_by_key(|c| c.route.is_some());
            for c in owned {
                let chain_name: Arc<str> =
                    c.name.clone().unwrap_or_else(|| c.id.to_string()).into();
                for f in c.filters.iter().filter(|f| f.enabled) {
                    let step = Arc::new(FilterStep {
                        entry: steps.len(),
                        filter: f.name.as_str().into(),
                        config: f.config_bytes().into(),
                        chain: Arc::clone(&chain_name),
                    });
                    steps.push(Arc::clone(&step));
                    chain.push(step);
                }
            }
            chains.push(chain.into());
        }
        Ok(Self {
            generation,
            decl,
            rules,
            chains,
            steps,
        })
    }

    /// The route for a request, or `None` (Kong's 404). `path` is the path without the query.
    pub fn route(&self, method: &str, host: &str, path: &str) -> Option<Match<'_>> {
        let host = host_without_port(host);
        let mut best: Option<(Score, usize, usize)> = None;
        for (rule_idx, rule) in self.rules.iter().enumerate() {
            let r = &self.decl.routes[rule.route];
            if !r.methods.is_empty() && !r.methods.iter().any(|m| m == method) {
                continue;
            }
            if !r.hosts.is_empty() && !r.hosts.iter().any(|h| host_matches(h, host)) {
                continue;
            }
            let matched = if rule.paths.is_empty() {
                Some((false, 0))
            } else {
                rule.paths
                    .iter()
                    .filter_map(|p| match p {
                        PathRule::Prefix(prefix) => path
                            .starts_with(prefix.as_str())
                            .then_some((false, prefix.len())),
                        PathRule::Regex(re) => re.find(path).map(|m| (true, m.end())),
                    })
                    .max_by_key(|&(regex, len)| (regex, len))
            };
            let Some((regex, len)) = matched else {
                continue;
            };
            let score = (
                rule.criteria,
                regex,
                if regex { r.regex_priority } else { 0 },
                len,
            );
            if best.as_ref().is_none_or(|(s, _, _)| score > *s) {
                best = Some((score, rule_idx, len));
            }
        }
        let (_, rule_idx, matched_len) = best?;
        let rule = &self.rules[rule_idx];
        let route = &self.decl.routes[rule.route];
        let service = rule.service.map(|i| &self.decl.services[i])?;
        Some(Match {
            route,
            service,
            steps: Arc::clone(&self.chains[rule.route]),
            strip: if route.strip_path {
                path.get(..matched_len).unwrap_or_default().to_owned()
            } else {
                String::new()
            },
        })
    }
}

fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(host, |(h, _)| h);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .is_some_and(|head| head.ends_with('.') && head.len() > 1),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// Kong's `path_handling: v0` join of the service's path and the (stripped) request path.
fn join_paths(base: Option<&str>, rest: &str) -> String {
    let base = base.unwrap_or("/");
    if rest.is_empty() || rest == "/" && base != "/" {
        return base.to_owned();
    }
    if base == "/" {
        return if rest.starts_with('/') {
            rest.to_owned()
        } else {
            format!("/{rest}")
        };
    }
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    format!("{}/{rest}", base.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn plan(yaml: &str) -> Plan {
        let loaded: HashSet<String> = ["f"].map(String::from).into();
        Plan::new(Declarative::parse(yaml, &loaded).expect("parses"), 1).expect("plan")
    }

    const FILE: &str = r#"
_format_version: "3.0"
services:
- name: s
  url: http://up:9000
  filter_chains:
  - name: svc
    filters: [{name: f, config: {svc: 1}}]
  routes:
  - name: kyc
    paths: [/api/v1/kyc]
    strip_path: false
    filter_chains:
    - name: kyc-chain
      filters: [{name: f, config: {route: 1}}, {name: f, enabled: false}]
  - name: status
    methods: [GET]
    paths: [/api/v1/kyc/status/]
    strip_path: false
  - name: stripped
    paths: [/strip]
  - name: re
    paths: ["~/items/\\d+$"]
    regex_priority: 5
"#;

    #[test]
    fn longest_prefix_methods_and_regex_pick_the_route() {
        let p = plan(FILE);
        let m = p
            .route("GET", "localhost:8000", "/api/v1/kyc/status/42")
            .expect("match");
        assert_eq!(m.route.name.as_deref(), Some("status"));
        let m = p
            .route("POST", "localhost", "/api/v1/kyc/status/42")
            .expect("match");
        assert_eq!(
            m.route.name.as_deref(),
            Some("kyc"),
            "method mismatch falls back to the prefix"
        );
        assert_eq!(
            m.upstream_path("/api/v1/kyc/status/42?a=1"),
            "/api/v1/kyc/status/42?a=1"
        );
        assert!(p.route("GET", "localhost", "/nothing").is_none());
        assert_eq!(
            p.route("GET", "h", "/items/7")
                .expect("regex")
                .route
                .name
                .as_deref(),
            Some("re")
        );
        assert!(p.route("GET", "h", "/items/x").is_none());
    }

    #[test]
    fn routes_of_a_disabled_service_do_not_match() {
        let p = plan(&FILE.replace(
            "  url: http://up:9000",
            "  url: http://up:9000\n  enabled: false",
        ));
        assert!(p.route("GET", "h", "/strip/a").is_none());
        assert!(plan(FILE).route("GET", "h", "/strip/a").is_some());
    }

    #[test]
    fn strip_path_and_chains_follow_kong() {
        let p = plan(FILE);
        let m = p.route("GET", "h", "/strip/a/b").expect("match");
        assert_eq!(m.upstream_path("/strip/a/b?x=1"), "/a/b?x=1");
        assert_eq!(
            p.route("GET", "h", "/strip")
                .expect("match")
                .upstream_path("/strip"),
            "/"
        );
        // The service's chain first, then the route's; disabled filters are left out.
        let m = p.route("POST", "h", "/api/v1/kyc/ocr").expect("match");
        let configs: Vec<_> = m
            .steps
            .iter()
            .map(|s| String::from_utf8_lossy(&s.config).into_owned())
            .collect();
        assert_eq!(configs, vec![r#"{"svc":1}"#, r#"{"route":1}"#]);
        assert_eq!(join_paths(Some("/base"), "/x"), "/base/x");
        assert_eq!(join_paths(Some("/base/"), ""), "/base/");
    }
}
