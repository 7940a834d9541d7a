//! `kyc_jwt`: the gateway's authentication filter, a thin proxy-wasm adapter over
//! `filter_kit::jwt`. It verifies the bearer token, answers 401/403 itself, and hands the verified
//! identity to the upstream (`x-kyc-client-id`, `x-kyc-scopes`) and to the filters after it in the
//! chain (`kong.ctx.shared.kyc_client_id`, `kong.ctx.shared.kyc_scopes`). Every decision is
//! filter-kit's; this crate only reads the host, calls it, and writes the answer back.

use std::cell::RefCell;
use std::rc::Rc;

use filter_host::{Counter, Unconfigured, configure, log, now_s, request_header, request_id};
use filter_kit::config::JwtConfig;
use filter_kit::jwt::{Identity, JwtError, TokenCache};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

const FILTER: &str = "kyc_jwt";

/// Verified tokens remembered per worker, so EdDSA/ES256 signatures are checked once per token.
const TOKEN_CACHE_ENTRIES: usize = 1024;

/// Identity headers a client could send to impersonate someone; all are removed before ours are
/// set. Kong's own auth plugins set some of them too, so do not combine those with this filter.
const IDENTITY_HEADERS: [&str; 7] = [
    "x-client-id",
    "x-consumer-id",
    "x-consumer-username",
    "x-authenticated-scope",
    "x-credential-identifier",
    CLIENT_ID_HEADER,
    SCOPES_HEADER,
];
const CLIENT_ID_HEADER: &str = "x-kyc-client-id";
const SCOPES_HEADER: &str = "x-kyc-scopes";

/// Kong exposes `kong.ctx.shared.<key>` as a read-write property (3.6+; host path segments are
/// joined with `.`). A client cannot write it, so the later filters trust it.
const CLIENT_ID_PROPERTY: [&str; 4] = ["kong", "ctx", "shared", "kyc_client_id"];
/// The token's scopes, space-separated as in the `scope` claim.
const SCOPES_PROPERTY: [&str; 4] = ["kong", "ctx", "shared", "kyc_scopes"];

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(JwtRoot::default())
    });
}}

/// What every request context of one configuration shares.
struct Shared {
    cfg: JwtConfig,
    /// Rebuilt on every `on_configure`, so a key rotation never honours an old verdict.
    cache: RefCell<TokenCache>,
    authenticated: Counter,
    /// Requests let through without a token by `anonymous_query_param`.
    anonymous: Counter,
    rejected: Counter,
}

#[derive(Default)]
struct JwtRoot {
    shared: Option<Rc<Shared>>,
}

impl Context for JwtRoot {}

impl RootContext for JwtRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        self.shared = configure(FILTER, JwtConfig::from_json(&bytes)).map(|cfg| {
            Rc::new(Shared {
                cfg,
                cache: RefCell::new(TokenCache::new(TOKEN_CACHE_ENTRIES)),
                authenticated: Counter::define("authenticated_total"),
                anonymous: Counter::define("anonymous_total"),
                rejected: Counter::define("rejected_total"),
            })
        });
        self.shared.is_some()
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(match &self.shared {
            Some(shared) => Box::new(JwtRequest {
                shared: Rc::clone(shared),
            }),
            None => Box::new(Unconfigured { filter: FILTER }),
        })
    }
}

struct JwtRequest {
    shared: Rc<Shared>,
}

impl Context for JwtRequest {}

impl HttpContext for JwtRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let authorization = request_header(self, "authorization");
        let path = request_header(self, ":path");
        let shared = Rc::clone(&self.shared);
        if filter_kit::jwt::passes_anonymously(&shared.cfg, authorization.as_deref(), path.as_deref()) {
            // No token at all, but the configured ticket parameter: the upstream checks it. No
            // identity goes on, and none a client sent.
            shared.anonymous.bump();
            for name in IDENTITY_HEADERS {
                self.set_http_request_header(name, None);
            }
            return Action::Continue;
        }
        let verdict = shared
            .cache
            .borrow_mut()
            .authenticate(
                &shared.cfg,
                authorization.as_deref(),
                path.as_deref(),
                now_s(self),
            )
            // Signed claims still become header values: refuse what a header cannot carry.
            .and_then(|identity| {
                if header_safe(&identity) {
                    Ok(identity)
                } else {
                    Err(JwtError::Malformed)
                }
            });
        match verdict {
            Ok(identity) => {
                shared.authenticated.bump();
                let has_bearer = authorization
                    .as_deref()
                    .and_then(filter_kit::jwt::bearer_token)
                    .is_some();
                self.forward(&identity, path.as_deref(), has_bearer);
                Action::Continue
            }
            Err(e) => {
                shared.rejected.bump();
                self.reject(&e);
                Action::Pause
            }
        }
    }
}

impl JwtRequest {
    fn forward(&self, identity: &Identity, path: Option<&str>, has_bearer: bool) {
        for name in IDENTITY_HEADERS {
            self.set_http_request_header(name, None);
        }
        let scopes = identity.scopes.join(" ");
        self.set_http_request_header(CLIENT_ID_HEADER, Some(&identity.client_id));
        if !scopes.is_empty() {
            self.set_http_request_header(SCOPES_HEADER, Some(&scopes));
        }
        self.set_property(
            CLIENT_ID_PROPERTY.to_vec(),
            Some(identity.client_id.as_bytes()),
        );
        self.set_property(SCOPES_PROPERTY.to_vec(), Some(scopes.as_bytes()));
        // RFC 6750 §2.3: a token in the query must not travel further in the URL. The upstream
        // still authenticates the request itself, so a query token that was the credential moves
        // into the Authorization header (where logs and caches do not keep it).
        if self.shared.cfg.allow_query_token
            && let Some(stripped) = path.and_then(without_access_token)
        {
            if !has_bearer
                && let Some(token) = path.and_then(filter_kit::jwt::query_token)
            {
                self.set_http_request_header("authorization", Some(&format!("Bearer {token}")));
            }
            self.set_http_request_header(":path", Some(&stripped));
        }
    }

    fn reject(&self, e: &JwtError) {
        let rejection = e.rejection(&self.shared.cfg);
        log(
            FILTER,
            LogLevel::Info,
            &format!("{} {}: {}", rejection.status, rejection.code, e.reason()),
        );
        let body = rejection.json_body(&request_id(self));
        self.send_http_response(
            u32::from(rejection.status),
            vec![
                ("www-authenticate", rejection.www_authenticate.as_str()),
                ("content-type", "application/json"),
            ],
            Some(&body),
        );
    }
}

/// Whether the client id and every scope can be sent as a header value (no control characters).
fn header_safe(identity: &Identity) -> bool {
    let safe = |s: &str| !s.chars().any(char::is_control);
    safe(&identity.client_id) && identity.scopes.iter().all(|s| safe(s))
}

/// `:path` without its `access_token` query parameters; `None` when there is none to remove.
fn without_access_token(path: &str) -> Option<String> {
    let (route, query) = path.split_once('?')?;
    let is_token = |pair: &&str| *pair == "access_token" || pair.starts_with("access_token=");
    if !query.split('&').any(|pair| is_token(&pair)) {
        return None;
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && !is_token(pair))
        .collect();
    Some(if kept.is_empty() {
        route.to_owned()
    } else {
        format!("{route}?{}", kept.join("&"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_access_token_is_removed_and_the_rest_of_the_query_kept() {
        assert_eq!(
            without_access_token("/v1/kyc?access_token=abc&page=2").as_deref(),
            Some("/v1/kyc?page=2")
        );
        assert_eq!(
            without_access_token("/v1/kyc?a=1&access_token=abc&access_token=def&b=2").as_deref(),
            Some("/v1/kyc?a=1&b=2")
        );
        assert_eq!(
            without_access_token("/v1/kyc?access_token=abc").as_deref(),
            Some("/v1/kyc")
        );
        assert_eq!(without_access_token("/v1/kyc?my_access_token=abc"), None);
        assert_eq!(without_access_token("/v1/kyc"), None);
    }

    #[test]
    fn identities_with_control_characters_cannot_become_headers() {
        let identity = |client: &str, scope: &str| Identity {
            client_id: client.to_owned(),
            scopes: vec![scope.to_owned()],
            subject: None,
            token_id: None,
        };
        assert!(header_safe(&identity("kyc-client", "kyc:read")));
        assert!(!header_safe(&identity("kyc\r\nx-admin: 1", "kyc:read")));
        assert!(!header_safe(&identity("kyc-client", "kyc:\u{0}read")));
    }
}
