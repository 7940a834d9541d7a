//! The two checks a filter's `config` passes must agree. Kong validates it against the filter's
//! `config_schema` (`kong-plugins/<name>/<name>.meta.json`, JSON Schema draft 4) when the chain
//! is configured; the filter parses it with filter-kit's `*Config::from_json` in `on_configure`,
//! and answers 500 on every request of the route if that fails. A config the schema accepts but
//! the parser refuses is a route that breaks after a successful `deck gateway sync`; one the
//! parser would accept but the schema refuses is an option operators cannot use.
//!
//! So: every `config` in `declarative/kong.yaml` passes both, and every fixture below is accepted
//! by both or refused by both. The few rules draft 4 cannot express are listed on their own, as
//! refused by the parser only.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use boon::{Compiler, Draft, SchemaIndex, Schemas};
use filter_kit::config::{IdempotencyConfig, JwtConfig, MaskConfig, RateLimitConfig};
use serde_json::Value;

const DRAFT_04: &str = "http://json-schema.org/draft-04/schema#";

/// Stands in for `${{ env "DECK_…" }}`: 32+ bytes, like the HS256 secret it replaces.
const DUMMY_SECRET: &str = "dummy-secret-for-the-schema-agreement-test";

// Placeholders in the fixtures, so the table stays readable.
const SECRET: &str = "your-secret-key-here-must-be-32-bytes-long";
/// RFC 8037 appendix A.2 (Ed25519) and RFC 7515 appendix A.3 (P-256) public keys.
const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const EC_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const EC_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
/// A previous HS256 secret, kept through a rotation.
const OLD_SECRET: &str = "the-previous-jwt-secret-of-at-least-32-bytes";
/// 64 random bytes, unpadded base64url (RFC 7515 appendix A.1's HS256 key).
const B64_SECRET: &str =
    "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filter {
    Jwt,
    RateLimit,
    Idempotency,
    PiiMask,
}

use Filter::{Idempotency, Jwt, PiiMask, RateLimit};

const FILTERS: [Filter; 4] = [Jwt, RateLimit, Idempotency, PiiMask];

impl Filter {
    fn name(self) -> &'static str {
        match self {
            Jwt => "kyc_jwt",
            RateLimit => "kyc_rate_limit",
            Idempotency => "kyc_idempotency",
            PiiMask => "kyc_pii_mask",
        }
    }

    fn named(name: &str) -> Option<Self> {
        FILTERS.into_iter().find(|f| f.name() == name)
    }

    /// What the filter does in `on_configure`, with the bytes Kong would hand it (Kong re-encodes
    /// an object config with cjson, so formatting and key order do not matter).
    fn parse(self, config: &Value) -> Result<(), String> {
        let bytes = serde_json::to_vec(config).expect("a serde_json value always serialises");
        let result = match self {
            Jwt => JwtConfig::from_json(&bytes).map(drop),
            RateLimit => RateLimitConfig::from_json(&bytes).map(drop),
            Idempotency => IdempotencyConfig::from_json(&bytes).map(drop),
            PiiMask => MaskConfig::from_json(&bytes).map(drop),
        };
        result.map_err(|e| e.to_string())
    }

    fn meta_path(self) -> PathBuf {
        repo_root()
            .join("kong-plugins")
            .join(self.name())
            .join(format!("{}.meta.json", self.name()))
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Each filter's compiled `config_schema`, as Kong would apply it.
struct Validators {
    schemas: Schemas,
    index: Vec<(Filter, SchemaIndex)>,
}

impl Validators {
    fn load() -> Self {
        let mut schemas = Schemas::new();
        let mut compiler = Compiler::new();
        // Kong forces draft 4 whatever the file says; each file also says it (checked below).
        compiler.set_default_draft(Draft::V4);
        let mut index = Vec::new();
        for filter in FILTERS {
            let meta: Value = serde_json::from_str(&read(&filter.meta_path()))
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", filter.name()));
            let schema = meta["config_schema"].clone();
            let url = format!("file:///kyc-edge/{}.config_schema.json", filter.name());
            compiler
                .add_resource(&url, schema)
                .unwrap_or_else(|e| panic!("{}: {e}", filter.name()));
            let i = compiler.compile(&url, &mut schemas).unwrap_or_else(|e| {
                panic!("{}: config_schema does not compile: {e:#}", filter.name())
            });
            index.push((filter, i));
        }
        Self { schemas, index }
    }

    fn validate(&self, filter: Filter, config: &Value) -> Result<(), String> {
        let (_, i) = self
            .index
            .iter()
            .find(|(f, _)| *f == filter)
            .expect("every filter's schema is loaded");
        self.schemas
            .validate(config, *i)
            .map_err(|e| e.to_string().replace('\n', " "))
    }
}

/// Replaces every decK `${{ env "DECK_…" }}` template with [`DUMMY_SECRET`], as decK (or
/// kyc-edge) would with the real value.
fn render_env_templates(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("}}")
            .unwrap_or_else(|| panic!("unclosed decK template at {:?}", &rest[start..]));
        let template = &rest[start..start + end + 2];
        assert!(
            template.contains("env \"DECK_"),
            "only DECK_* env templates are expected: {template}"
        );
        out.push_str(DUMMY_SECRET);
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}

/// One filter of a chain in the declarative file, with where it sits.
struct ChainFilter {
    at: String,
    filter: Filter,
    config: Value,
}

fn declarative_filters() -> Vec<ChainFilter> {
    let path = repo_root().join("declarative/kong.yaml");
    let text = render_env_templates(&read(&path));
    let doc: Value = serde_yaml_ng::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
    assert_eq!(doc["_format_version"], "3.0", "decK format version");

    let mut chains: Vec<(String, &Value)> = Vec::new();
    for service in doc["services"].as_array().expect("services is a list") {
        let service_name = service["name"].as_str().expect("every service has a name");
        if let Some(list) = service["filter_chains"].as_array() {
            chains.extend(list.iter().map(|c| (format!("service {service_name}"), c)));
        }
        for route in service["routes"].as_array().into_iter().flatten() {
            let route_name = route["name"].as_str().expect("every route has a name");
            if let Some(list) = route["filter_chains"].as_array() {
                // Kong allows one chain per route; the name ties it to its route.
                assert_eq!(list.len(), 1, "route {route_name}: one filter chain");
                assert_eq!(
                    list[0]["name"].as_str(),
                    Some(format!("{route_name}-chain").as_str()),
                    "route {route_name}: chain name"
                );
                chains.extend(list.iter().map(|c| (format!("route {route_name}"), c)));
            }
        }
    }

    let mut out = Vec::new();
    for (owner, chain) in chains {
        let filters = chain["filters"].as_array().expect("a chain lists filters");
        assert!(
            !filters.is_empty(),
            "{owner}: a chain needs at least one filter"
        );
        for (i, entry) in filters.iter().enumerate() {
            let at = format!("{owner}, filters[{i}]");
            let name = entry["name"].as_str().expect("every filter has a name");
            let filter = Filter::named(name).unwrap_or_else(|| {
                panic!("{at}: `{name}` is not one of the filters built into wasm_filters_path")
            });
            let config = entry["config"].clone();
            assert!(
                config.is_object(),
                "{at}: config must be an object (a schema-backed filter's config is JSON)"
            );
            out.push(ChainFilter { at, filter, config });
        }
    }
    out
}

#[test]
fn every_meta_json_declares_a_draft_4_object_schema_that_refuses_unknown_fields() {
    for filter in FILTERS {
        let meta: Value = serde_json::from_str(&read(&filter.meta_path())).expect("JSON");
        let schema = &meta["config_schema"];
        assert_eq!(schema["$schema"], DRAFT_04, "{}", filter.name());
        assert_eq!(schema["type"], "object", "{}", filter.name());
        // The parsers refuse unknown fields (a misspelt option must not silently do nothing).
        assert_eq!(schema["additionalProperties"], false, "{}", filter.name());
    }
    // And every schema compiles under draft 4.
    let _ = Validators::load();
}

#[test]
fn every_config_in_the_declarative_file_passes_the_schema_and_the_filter() {
    let validators = Validators::load();
    let entries = declarative_filters();
    let mut failures = String::new();
    for entry in &entries {
        if let Err(e) = validators.validate(entry.filter, &entry.config) {
            writeln!(
                failures,
                "{} ({}): schema: {e}",
                entry.at,
                entry.filter.name()
            )
            .ok();
        }
        if let Err(e) = entry.filter.parse(&entry.config) {
            writeln!(
                failures,
                "{} ({}): from_json: {e}",
                entry.at,
                entry.filter.name()
            )
            .ok();
        }
    }
    assert!(failures.is_empty(), "declarative/kong.yaml:\n{failures}");
    for filter in FILTERS {
        assert!(
            entries.iter().any(|e| e.filter == filter),
            "declarative/kong.yaml uses no {}; nothing checked it",
            filter.name()
        );
    }
}

#[test]
fn the_declared_secret_is_a_deck_template_never_a_literal() {
    let text = read(&repo_root().join("declarative/kong.yaml"));
    assert!(
        !text.contains(SECRET),
        "the seed's jwt_secret must not be committed"
    );
    let entries = declarative_filters();
    let jwt: Vec<_> = entries.iter().filter(|e| e.filter == Jwt).collect();
    assert!(!jwt.is_empty());
    for e in jwt {
        assert_eq!(e.config["secret"], DUMMY_SECRET, "{}: secret", e.at);
    }
}

/// `(filter, accepted, config)`: accepted by both the schema and the parser, or refused by both.
/// `$SECRET`, `$OLD`, `$B64`, `$ED_X`, `$EC_X` and `$EC_Y` are replaced by the constants above.
#[rustfmt::skip] // one fixture a line reads as a table
const FIXTURES: &[(Filter, bool, &str)] = &[
    // --- kyc_rate_limit -------------------------------------------------------------------------
    (RateLimit, true, r#"{}"#),
    (RateLimit, true, r#"{"rate_per_sec":5,"burst":20,"policy_name":"token"}"#),
    (RateLimit, true, r#"{"rate_per_sec":1,"burst":1000000,"policy_name":"a b-c.d","emit_headers":false}"#),
    (RateLimit, true, r#"{"rate_per_sec":null,"burst":null,"policy_name":null,"emit_headers":null,"fail_closed":null}"#),
    (RateLimit, true, r#"{"fail_closed":true}"#),
    (RateLimit, true, r#"{"fail_closed":false}"#),
    (RateLimit, false, r#"{"rate_per_sec":0}"#),
    (RateLimit, false, r#"{"rate_per_sec":1000001}"#),
    (RateLimit, false, r#"{"burst":0}"#),
    (RateLimit, false, r#"{"burst":-1}"#),
    (RateLimit, false, r#"{"burst":4294967296}"#),
    (RateLimit, false, r#"{"burst":1.5}"#),
    (RateLimit, false, r#"{"burst":"10"}"#),
    (RateLimit, false, r#"{"policy_name":""}"#),
    (RateLimit, false, r#"{"policy_name":"say\"hi"}"#),
    (RateLimit, false, r#"{"policy_name":"back\\slash"}"#),
    (RateLimit, false, r#"{"policy_name":"tab\there"}"#),
    (RateLimit, false, r#"{"policy_name":"ünïcode"}"#),
    (RateLimit, false, r#"{"policy_name":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#),
    (RateLimit, false, r#"{"emit_headers":"yes"}"#),
    (RateLimit, false, r#"{"fail_closed":"true"}"#),
    (RateLimit, false, r#"{"fail_closed":1}"#),
    (RateLimit, false, r#"{"fail_close":true}"#),
    (RateLimit, false, r#"{"rate":5}"#),
    // --- kyc_idempotency ------------------------------------------------------------------------
    (Idempotency, true, r#"{}"#),
    (Idempotency, true, r#"{"ttl_secs":86400,"lock_timeout_secs":60,"methods":["POST"],"required":false}"#),
    (Idempotency, true, r#"{"ttl_secs":2592000,"max_body_bytes":0,"methods":["POST","PATCH","PUT"],"required":true}"#),
    (Idempotency, true, r#"{"ttl_secs":null,"lock_timeout_secs":null,"max_body_bytes":null,"methods":null,"required":null}"#),
    (Idempotency, true, r#"{"max_body_bytes":16777216}"#),
    (Idempotency, false, r#"{"ttl_secs":0}"#),
    (Idempotency, false, r#"{"ttl_secs":2592001}"#),
    (Idempotency, false, r#"{"lock_timeout_secs":0}"#),
    (Idempotency, false, r#"{"max_body_bytes":16777217}"#),
    (Idempotency, false, r#"{"max_body_bytes":-1}"#),
    (Idempotency, false, r#"{"methods":[]}"#),
    (Idempotency, false, r#"{"methods":["post"]}"#),
    (Idempotency, false, r#"{"methods":[""]}"#),
    (Idempotency, false, r#"{"methods":"POST"}"#),
    (Idempotency, false, r#"{"methods":[1]}"#),
    (Idempotency, false, r#"{"required":"false"}"#),
    (Idempotency, false, r#"{"ttl":60}"#),
    // --- kyc_pii_mask ---------------------------------------------------------------------------
    (PiiMask, true, r#"{}"#),
    (PiiMask, true, r#"{"fields":["name","id_card","idcard","id_number","phone","mobile","address"],"unmasked_scope":"kyc:pii"}"#),
    (PiiMask, true, r#"{"fields":["realName","ID-Card","email"],"unmasked_scope":null}"#),
    (PiiMask, true, r#"{"fields":null}"#),
    (PiiMask, true, r#"{"fields":["a"]}"#),
    (PiiMask, false, r#"{"fields":[]}"#),
    (PiiMask, false, r#"{"fields":["__"]}"#),
    (PiiMask, false, r#"{"fields":["-_-"]}"#),
    (PiiMask, false, r#"{"fields":[""]}"#),
    (PiiMask, false, r#"{"fields":"name"}"#),
    (PiiMask, false, r#"{"fields":[5]}"#),
    (PiiMask, false, r#"{"unmasked_scope":"a b"}"#),
    (PiiMask, false, r#"{"unmasked_scope":""}"#),
    (PiiMask, false, r#"{"unmasked_scope":"say\"hi"}"#),
    (PiiMask, false, r#"{"unmasked_scope":7}"#),
    (PiiMask, false, r#"{"field":["name"]}"#),
    // --- kyc_jwt --------------------------------------------------------------------------------
    (Jwt, true, r#"{"secret":"$SECRET"}"#),
    (Jwt, true, r#"{"algorithms":["HS256"],"secret":"$SECRET","issuer":"kyc-service","audience":"kyc-api","required_scopes":["kyc:write"]}"#),
    (Jwt, true, r#"{"secret":"$SECRET","required_scopes":["kyc:write"],"allow_query_token":true}"#),
    (Jwt, true, r#"{"secret":"$SECRET","anonymous_query_param":"ticket"}"#),
    (Jwt, true, r#"{"secret":"$SECRET","anonymous_query_param":null}"#),
    (Jwt, false, r#"{"secret":"$SECRET","anonymous_query_param":"a b"}"#),
    (Jwt, false, r#"{"secret":"$SECRET","anonymous_query_param":""}"#),
    (Jwt, false, r#"{"secret":"$SECRET","anonymous_query_param":7}"#),
    (Jwt, true, r#"{"secret":"$SECRET","leeway_secs":0,"token_type":null,"issuer":null,"audience":null,"realm":"kyc api"}"#),
    (Jwt, true, r#"{"secret":"$SECRET","leeway_secs":3600,"token_type":"JWT"}"#),
    (Jwt, true, r#"{"secret_base64url":"$B64"}"#),
    (Jwt, true, r#"{"secret_base64url":"$B64=="}"#),
    (Jwt, true, r#"{"secret_base64url":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#),
    (Jwt, true, r#"{"secret":"$SECRET","secret_base64url":null}"#),
    (Jwt, true, r#"{"secret":"ééééééééééééééééé"}"#),
    (Jwt, true, r#"{"algorithms":["EdDSA"],"jwks":{"keys":[{"kty":"OKP","crv":"Ed25519","x":"$ED_X","kid":"ed","alg":"EdDSA","use":"sig"}]}}"#),
    (Jwt, true, r#"{"algorithms":["ES256"],"jwks":{"keys":[{"kty":"EC","crv":"P-256","x":"$EC_X","y":"$EC_Y","kid":"ec","alg":"ES256"}]}}"#),
    (Jwt, true, r#"{"algorithms":["HS256","EdDSA","ES256"],"secret":"$SECRET","jwks":{"keys":[{"kty":"OKP","crv":"Ed25519","x":"$ED_X"},{"kty":"EC","crv":"P-256","x":"$EC_X","y":"$EC_Y"}]}}"#),
    (Jwt, true, r#"{"algorithms":["EdDSA"],"jwks":{"keys":[{"kty":"OKP","crv":"Ed25519","x":"$ED_X","d":null,"kid":null,"alg":null,"use":null}]}}"#),
    (Jwt, true, r#"{"secret":"$SECRET","jwks":null}"#),
    // No key for an allowed algorithm.
    (Jwt, false, r#"{}"#),
    (Jwt, false, r#"{"algorithms":["HS256"]}"#),
    (Jwt, false, r#"{"secret":null}"#),
    (Jwt, false, r#"{"algorithms":["EdDSA"]}"#),
    (Jwt, false, r#"{"algorithms":["EdDSA"],"jwks":{"keys":[{"kty":"EC","crv":"P-256","x":"$EC_X","y":"$EC_Y"}]}}"#),
    (Jwt, false, r#"{"algorithms":["ES256"],"jwks":{"keys":[{"kty":"OKP","crv":"Ed25519","x":"$ED_X"}]}}"#),
    (Jwt, false, r#"{"algorithms":["ES256"],"secret":"$SECRET"}"#),
    // Algorithms.
    (Jwt, false, r#"{"algorithms":[],"secret":"$SECRET"}"#),
    (Jwt, false, r#"{"algorithms":["none"],"secret":"$SECRET"}"#),
    (Jwt, false, r#"{"algorithms":["HS256","none"],"secret":"$SECRET"}"#),
    (Jwt, false, r#"{"algorithms":["hs256"],"secret":"$SECRET"}"#),
    (Jwt, false, r#"{"algorithms":["RS256"],"secret":"$SECRET"}"#),
    (Jwt, false, r#"{"algorithms":"HS256","secret":"$SECRET"}"#),
    (Jwt, false, r#"{"algorithms":null,"secret":"$SECRET"}"#),
    // Secrets.
    (Jwt, false, r#"{"secret":"too-short"}"#),
    (Jwt, false, r#"{"secret":"0123456789012345678901234567890"}"#),
    (Jwt, false, r#"{"secret":12345678901234567890123456789012345}"#),
    (Jwt, false, r#"{"secret":"$SECRET","secret_base64url":"$B64"}"#),
    (Jwt, false, r#"{"secret_base64url":"AAAA"}"#),
    (Jwt, false, r#"{"secret_base64url":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#),
    (Jwt, false, r#"{"secret_base64url":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==="}"#),
    (Jwt, false, r#"{"secret_base64url":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB"}"#),
    (Jwt, false, r#"{"secret_base64url":"$B64+/"}"#),
    (Jwt, false, r#"{"secret_base64url":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#),
    // Previous secrets (a rotation).
    (Jwt, true, r#"{"secret":"$SECRET","previous_secrets":["$OLD"]}"#),
    (Jwt, true, r#"{"secret":"$SECRET","previous_secrets":["$OLD","ééééééééééééééééé"],"previous_secrets_base64url":["$B64","$B64=="]}"#),
    (Jwt, true, r#"{"secret_base64url":"$B64","previous_secrets":["$OLD"]}"#),
    (Jwt, true, r#"{"secret":"$SECRET","previous_secrets":[],"previous_secrets_base64url":null}"#),
    (Jwt, true, r#"{"algorithms":["EdDSA"],"jwks":{"keys":[{"kty":"OKP","crv":"Ed25519","x":"$ED_X"}]},"previous_secrets":[],"previous_secrets_base64url":[]}"#),
    (Jwt, true, r#"{"algorithms":["HS256","EdDSA"],"secret":"$SECRET","previous_secrets":["$OLD"],"jwks":{"keys":[{"kty":"OKP","crv":"Ed25519","x":"$ED_X","kid":"ed"}]}}"#),
    (Jwt, false, r#"{"previous_secrets":["$OLD"]}"#),
    (Jwt, false, r#"{"algorithms":["EdDSA"],"jwks":{"keys":[{"kty":"OKP","crv":"Ed25519","x":"$ED_X"}]},"previous_secrets":["$OLD"]}"#),
    (Jwt, false, r#"{"algorithms":["EdDSA"],"jwks":{"keys":[{"kty":"OKP","crv":"Ed25519","x":"$ED_X"}]},"previous_secrets_base64url":["$B64"]}"#),
    (Jwt, false, r#"{"secret":"$SECRET","previous_secrets":"$OLD"}"#),
    (Jwt, false, r#"{"secret":"$SECRET","previous_secrets":["$OLD","too-short"]}"#),
    (Jwt, false, r#"{"secret":"$SECRET","previous_secrets":["0123456789012345678901234567890"]}"#),
    (Jwt, false, r#"{"secret":"$SECRET","previous_secrets":[12345678901234567890123456789012345]}"#),
    (Jwt, false, r#"{"secret":"$SECRET","previous_secrets":[null]}"#),
    (Jwt, false, r#"{"secret":"$SECRET","previous_secrets_base64url":["AAAA"]}"#),
    (Jwt, false, r#"{"secret":"$SECRET","previous_secrets_base64url":["$B64+/"]}"#),
    (Jwt, false, r#"{"secret":"$SECRET","previous_secrets_base64url":["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB"]}"#),
    (Jwt, false, r#"{"secret":"$SECRET","previous_secrets_base64url":"$B64"}"#),
    (Jwt, false, r#"{"secret":"$SECRET","previous_secret":["$OLD"]}"#),
    // JWKS.
    (Jwt, false, r#"{"secret":"$SECRET","jwks":{}}"#),
    (Jwt, false, r#"{"secret":"$SECRET","jwks":{"keys":[{"x":"$ED_X"}]}}"#),
    (Jwt, false, r#"{"secret":"$SECRET","jwks":{"keys":[{"kty":"oct","k":"AAAA"}]}}"#),
    (Jwt, false, r#"{"secret":"$SECRET","jwks":{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}}"#),
    (Jwt, false, r#"{"secret":"$SECRET","jwks":{"keys":[{"kty":"OKP","crv":"X25519","x":"$ED_X"}]}}"#),
    (Jwt, false, r#"{"secret":"$SECRET","jwks":{"keys":[{"kty":"OKP","crv":"P-256","x":"$ED_X"}]}}"#),
    (Jwt, false, r#"{"secret":"$SECRET","jwks":{"keys":[{"kty":"OKP","x":"$ED_X"}]}}"#),
    (Jwt, false, r#"{"secret":"$SECRET","jwks":{"keys":[{"kty":"OKP","crv":"Ed25519","x":"$ED_X","d":"secret"}]}}"#),
    (Jwt, false, r#"{"secret":"$SECRET","jwks":{"keys":[{"kty":"OKP","crv":"Ed25519","x":"$ED_X","use":"enc"}]}}"#),
    (Jwt, false, r#"{"secret":"$SECRET","jwks":{"keys":[{"kty":"OKP","crv":"Ed25519","x":"$ED_X","alg":"ES256"}]}}"#),
    (Jwt, false, r#"{"secret":"$SECRET","jwks":{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA"}]}}"#),
    (Jwt, false, r#"{"secret":"$SECRET","jwks":{"keys":[{"kty":"OKP","crv":"Ed25519","x":"$ED_X="}]}}"#),
    (Jwt, false, r#"{"secret":"$SECRET","jwks":{"keys":[{"kty":"OKP","crv":"Ed25519","x":"not base64!"}]}}"#),
    (Jwt, false, r#"{"secret":"$SECRET","jwks":{"keys":[{"kty":"EC","crv":"P-256","x":"$EC_X"}]}}"#),
    (Jwt, false, r#"{"secret":"$SECRET","jwks":{"keys":[{"kty":"EC","crv":"P-256","x":"$EC_X","y":null}]}}"#),
    (Jwt, false, r#"{"secret":"$SECRET","jwks":{"keys":[{"kty":"EC","crv":"Ed25519","x":"$EC_X","y":"$EC_Y"}]}}"#),
    (Jwt, false, r#"{"secret":"$SECRET","jwks":{"keys":[{"kty":"EC","crv":"P-256","x":"$EC_X","y":"$EC_Y","alg":"EdDSA"}]}}"#),
    // Claims, scopes, the rest.
    (Jwt, false, r#"{"secret":"$SECRET","issuer":""}"#),
    (Jwt, false, r#"{"secret":"$SECRET","audience":""}"#),
    (Jwt, false, r#"{"secret":"$SECRET","audience":["kyc-api"]}"#),
    (Jwt, false, r#"{"secret":"$SECRET","token_type":""}"#),
    (Jwt, false, r#"{"secret":"$SECRET","leeway_secs":3601}"#),
    (Jwt, false, r#"{"secret":"$SECRET","leeway_secs":-1}"#),
    (Jwt, false, r#"{"secret":"$SECRET","leeway_secs":null}"#),
    (Jwt, false, r#"{"secret":"$SECRET","leeway_secs":"60"}"#),
    (Jwt, false, r#"{"secret":"$SECRET","required_scopes":["kyc:read","a b"]}"#),
    (Jwt, false, r#"{"secret":"$SECRET","required_scopes":[""]}"#),
    (Jwt, false, r#"{"secret":"$SECRET","required_scopes":["say\"hi"]}"#),
    (Jwt, false, r#"{"secret":"$SECRET","required_scopes":"kyc:read"}"#),
    (Jwt, false, r#"{"secret":"$SECRET","required_scopes":null}"#),
    (Jwt, false, r#"{"secret":"$SECRET","allow_query_token":"true"}"#),
    (Jwt, false, r#"{"secret":"$SECRET","allow_query_token":null}"#),
    (Jwt, false, r#"{"secret":"$SECRET","realm":""}"#),
    (Jwt, false, r#"{"secret":"$SECRET","realm":"k\"yc"}"#),
    (Jwt, false, r#"{"secret":"$SECRET","realm":null}"#),
    (Jwt, false, r#"{"secret":"$SECRET","required_scope":["kyc:read"]}"#),
];

/// Rules draft 4 cannot express, so only the filter refuses these (and says so in its log; Kong
/// then answers 500 on the route). Listed so that the gap is known, and stays this small.
const PARSER_ONLY: &[(Filter, &str, &str)] = &[
    (
        Jwt,
        r#"{"secret":"$SECRET","anonymous_query_param":"access_token"}"#,
        "the ticket parameter must not be access_token (draft 4 has no negative lookahead)",
    ),
    (
        Idempotency,
        r#"{"ttl_secs":10,"lock_timeout_secs":20}"#,
        "lock_timeout_secs must not exceed ttl_secs (a comparison of two fields)",
    ),
    (
        Jwt,
        r#"{"secret":"éééééééé"}"#,
        "a non-ASCII secret's length in bytes (the schema counts characters)",
    ),
    (
        Jwt,
        r#"{"algorithms":["HS256","ES256"],"secret":"$EC_X","jwks":{"keys":[{"kty":"EC","crv":"P-256","x":"$EC_X","y":"$EC_Y"}]}}"#,
        "an HS256 secret equal to a JWKS public key (equality between fields)",
    ),
    (
        Jwt,
        r#"{"secret":"$SECRET","previous_secrets":["éééééééé"]}"#,
        "a non-ASCII previous secret's length in bytes (the schema counts characters)",
    ),
    (
        Jwt,
        r#"{"algorithms":["HS256","ES256"],"secret":"$SECRET","previous_secrets":["$EC_Y"],"jwks":{"keys":[{"kty":"EC","crv":"P-256","x":"$EC_X","y":"$EC_Y"}]}}"#,
        "a previous HS256 secret equal to a JWKS public key (equality between fields)",
    ),
    (
        Jwt,
        r#"{"algorithms":["ES256"],"jwks":{"keys":[{"kty":"EC","crv":"P-256","x":"$EC_X","y":"$EC_X"}]}}"#,
        "x and y must be a point on P-256 (arithmetic)",
    ),
    (
        Jwt,
        r#"{"algorithms":["EdDSA"],"jwks":{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}}"#,
        "a weak (small-order) Ed25519 key (arithmetic)",
    ),
];

fn fixture(json: &str) -> Value {
    let json = json
        .replace("$SECRET", SECRET)
        .replace("$OLD", OLD_SECRET)
        .replace("$B64", B64_SECRET)
        .replace("$ED_X", ED_X)
        .replace("$EC_X", EC_X)
        .replace("$EC_Y", EC_Y);
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("fixture is not JSON ({e}): {json}"))
}

fn verdict(result: &Result<(), String>) -> String {
    match result {
        Ok(()) => "accepts".to_owned(),
        Err(e) => format!("refuses ({e})"),
    }
}

#[test]
fn the_schema_and_the_parser_accept_and_refuse_the_same_configs() {
    let validators = Validators::load();
    let mut failures = String::new();
    for &(filter, accepted, json) in FIXTURES {
        let config = fixture(json);
        let schema = validators.validate(filter, &config);
        let parser = filter.parse(&config);
        if schema.is_ok() != accepted || parser.is_ok() != accepted {
            writeln!(
                failures,
                "{} {json}\n  expected: {}\n  schema {}\n  from_json {}",
                filter.name(),
                if accepted { "accepted" } else { "refused" },
                verdict(&schema),
                verdict(&parser),
            )
            .ok();
        }
    }
    assert!(
        failures.is_empty(),
        "schema and parser disagree:\n{failures}"
    );
    for filter in FILTERS {
        for accepted in [true, false] {
            assert!(
                FIXTURES
                    .iter()
                    .any(|&(f, a, _)| f == filter && a == accepted),
                "{}: no {} fixture",
                filter.name(),
                if accepted { "good" } else { "bad" }
            );
        }
    }
}

#[test]
fn only_rules_draft_4_cannot_express_are_left_to_the_parser() {
    let validators = Validators::load();
    let mut failures = String::new();
    for &(filter, json, why) in PARSER_ONLY {
        let config = fixture(json);
        let schema = validators.validate(filter, &config);
        let parser = filter.parse(&config);
        if schema.is_err() || parser.is_ok() {
            writeln!(
                failures,
                "{} {json} ({why})\n  expected: schema accepts, from_json refuses\n  schema {}\n  from_json {}",
                filter.name(),
                verdict(&schema),
                verdict(&parser),
            )
            .ok();
        }
    }
    assert!(failures.is_empty(), "{failures}");
}
