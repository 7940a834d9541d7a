//! Settings: the seed's `config.yaml` plus `KYC__SECTION__KEY` environment overrides, validated once
//! at start-up into typed values. Nothing else in the service reads the environment.
//!
//! Keys the seed does not name have defaults, so the seed's file loads unchanged.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The secrets printed in the seed. They are accepted in dev mode only.
const PLACEHOLDER_SECRETS: [&str; 2] = [
    "your-secret-key-here-must-be-32-bytes-long",
    "your-encryption-key-here-32-bytes",
];

/// Keys whose values are secrets: errors name them but never quote them.
const SECRET_KEYS: [&str; 7] = [
    "password",
    "jwt_secret",
    "previous_jwt_secrets",
    "encryption_key",
    "previous_encryption_keys",
    "blind_index_key",
    "api_key",
];

/// A configuration problem, reported as one line naming the key and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}: {}", self.key, self.problem)
    }
}

impl std::error::Error for ConfigError {}

fn err(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_owned(),
        problem: problem.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// The file's shape. Field names follow the seed exactly.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    port: u16,
    #[serde(default = "default_host")]
    host: String,
    gin_mode: String,
    log_level: String,
    #[serde(default)]
    log: RawLog,
    database: RawDatabase,
    redis: RawRedis,
    security: RawSecurity,
    third_party: RawThirdParty,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    kyc: RawKyc,
}

fn default_host() -> String {
    "0.0.0.0".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    dir: String,
    file: String,
    max_size_mb: u64,
    max_files: usize,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            dir: "logs".into(),
            file: "kyc-service.log".into(),
            max_size_mb: 100,
            max_files: 7,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    host: String,
    port: u16,
    user: String,
    password: String,
    dbname: String,
    sslmode: String,
    max_open_conns: u32,
    max_idle_conns: u32,
    #[serde(default = "default_acquire_timeout")]
    acquire_timeout: String,
}

fn default_acquire_timeout() -> String {
    "3s".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    host: String,
    port: u16,
    password: String,
    db: u32,
    pool_size: usize,
    min_idle_conns: usize,
    max_retries: u32,
    dial_timeout: String,
    read_timeout: String,
    write_timeout: String,
    #[serde(default = "default_key_prefix")]
    key_prefix: String,
}

fn default_key_prefix() -> String {
    "kyc:".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    jwt_secret: String,
    jwt_expiration: String,
    encryption_key: String,
    rate_limit_per_second: u32,
    rate_limit_burst: u32,
    #[serde(default = "default_issuer")]
    jwt_issuer: String,
    #[serde(default = "default_audience")]
    jwt_audience: String,
    #[serde(default = "default_algorithm")]
    jwt_algorithm: String,
    #[serde(default)]
    jwt_private_key_file: Option<String>,
    #[serde(default)]
    previous_jwt_secrets: KeyList,
    #[serde(default)]
    previous_jwt_public_key_files: KeyList,
    #[serde(default = "default_leeway")]
    jwt_leeway: String,
    #[serde(default = "default_refresh_expiration")]
    refresh_expiration: String,
    #[serde(default)]
    previous_encryption_keys: KeyList,
    #[serde(default)]
    blind_index_key: Option<String>,
    #[serde(default = "default_true")]
    rate_limit_fail_open: bool,
}

/// A YAML list, or (from the environment) one comma-separated string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum KeyList {
    List(Vec<String>),
    Joined(String),
}

impl Default for KeyList {
    fn default() -> Self {
        Self::List(Vec::new())
    }
}

impl KeyList {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::List(v) => v,
            Self::Joined(s) => s.split(',').map(|k| k.trim().to_owned()).collect(),
        }
    }
}

fn default_issuer() -> String {
    "kyc-service".into()
}
fn default_audience() -> String {
    "kyc-api".into()
}
fn default_algorithm() -> String {
    "HS256".into()
}
fn default_leeway() -> String {
    "60s".into()
}
fn default_refresh_expiration() -> String {
    "720h".into()
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThirdParty {
    ocr_service: RawVendor,
    face_service: RawVendor,
    liveness_service: RawVendor,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVendor {
    url: String,
    api_key: String,
    timeout: u64,
    retry_count: u32,
    #[serde(default = "default_vendor_concurrency")]
    max_concurrency: usize,
    #[serde(default = "default_vendor_rate")]
    rate_limit_per_second: u32,
    #[serde(default = "default_breaker_failures")]
    circuit_failure_threshold: u32,
    #[serde(default = "default_breaker_open")]
    circuit_open_seconds: u64,
}

fn default_vendor_concurrency() -> usize {
    32
}
fn default_vendor_rate() -> u32 {
    100
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_open() -> u64 {
    10
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawKyc {
    face_threshold: f64,
    require_liveness: bool,
    max_image_bytes: usize,
    max_image_width: u32,
    max_image_height: u32,
    max_image_pixels: u64,
    liveness_session_ttl: String,
    liveness_ticket_ttl: String,
    liveness_action_timeout: String,
    liveness_max_sessions: u32,
    liveness_max_frame_bytes: usize,
    liveness_max_fps: u32,
    liveness_min_frames: usize,
    liveness_max_frames: usize,
    status_cache_entries: usize,
}

impl Default for RawKyc {
    fn default() -> Self {
        Self {
            face_threshold: 0.8,
            require_liveness: false,
            max_image_bytes: 8 * 1024 * 1024,
            max_image_width: 10_000,
            max_image_height: 10_000,
            max_image_pixels: 40_000_000,
            liveness_session_ttl: "120s".into(),
            liveness_ticket_ttl: "60s".into(),
            liveness_action_timeout: "10s".into(),
            liveness_max_sessions: 3,
            liveness_max_frame_bytes: 256 * 1024,
            liveness_max_fps: 15,
            liveness_min_frames: 3,
            liveness_max_frames: 30,
            status_cache_entries: crate::store::terminal_cache::DEFAULT_CAPACITY,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHttp {
    json_body_limit: usize,
    json_max_depth: usize,
    upload_body_limit: usize,
    multipart_max_parts: usize,
    multipart_max_field_bytes: usize,
    multipart_max_file_name_bytes: usize,
    request_timeout: String,
    shutdown_timeout: String,
}

impl Default for RawHttp {
    fn default() -> Self {
        Self {
            json_body_limit: 64 * 1024,
            json_max_depth: 32,
            upload_body_limit: 10 * 1024 * 1024,
            multipart_max_parts: 16,
            multipart_max_field_bytes: 4 * 1024,
            multipart_max_file_name_bytes: 255,
            request_timeout: "30s".into(),
            shutdown_timeout: "20s".into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The validated, typed settings the service runs on.

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// `gin_mode: debug`: seeds the demo client and tolerates the seed's placeholder secrets.
    pub dev_mode: bool,
    pub log_level: String,
    pub log: LogSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub security: SecuritySettings,
    pub third_party: ThirdPartySettings,
    pub http: HttpSettings,
    pub kyc: KycSettings,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub dir: PathBuf,
    pub file: String,
    pub max_bytes: u64,
    pub max_files: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: SecretString,
    pub dbname: String,
    pub sslmode: SslMode,
    pub max_connections: u32,
    pub min_connections: u32,
    pub acquire_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub host: String,
    pub port: u16,
    pub password: SecretString,
    pub db: u32,
    pub pool_size: usize,
    pub min_idle_conns: usize,
    pub max_retries: u32,
    pub dial_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub key_prefix: String,
}

impl RedisSettings {
    /// The connection URL. It may hold the password, so it is itself a secret.
    #[must_use]
    pub fn url(&self) -> SecretString {
        let auth = if self.password.expose_secret().is_empty() {
            String::new()
        } else {
            format!(":{}@", percent_encode(self.password.expose_secret()))
        };
        SecretString::from(format!(
            "redis://{auth}{}:{}/{}",
            self.host, self.port, self.db
        ))
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    Hs256,
    EdDsa,
    Es256,
}

#[derive(Debug, Clone)]
pub struct SecuritySettings {
    pub jwt_secret: SecretString,
    pub jwt_expiration: Duration,
    pub refresh_expiration: Duration,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub jwt_algorithm: JwtAlgorithm,
    /// PEM (PKCS#8) private key for EdDSA or ES256; its public half is served as JWKS.
    pub jwt_private_key_pem: Option<SecretString>,
    /// Older HS256 secrets: tokens signed with them still verify, nothing new is signed with them.
    pub previous_jwt_secrets: Vec<SecretString>,
    /// Older EdDSA/ES256 keys (PEM: a public key, or the old private key, of which only the public
    /// half is kept): they verify and are published in the JWKS, nothing is signed with them.
    pub previous_jwt_public_keys_pem: Vec<SecretString>,
    pub jwt_leeway: Duration,
    pub encryption_key: SecretString,
    pub previous_encryption_keys: Vec<SecretString>,
    pub blind_index_key: Option<SecretString>,
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    pub rate_limit_fail_open: bool,
}

#[derive(Debug, Clone)]
pub struct VendorSettings {
    pub url: String,
    pub api_key: SecretString,
    pub timeout: Duration,
    pub retry_count: u32,
    pub max_concurrency: usize,
    pub rate_limit_per_second: u32,
    pub circuit_failure_threshold: u32,
    pub circuit_open: Duration,
}

/// The verification decision's knobs.
#[derive(Debug, Clone)]
pub struct KycSettings {
    /// Face comparison scores at or above this pass (the seed's 0.8).
    pub face_threshold: f64,
    /// `/kyc/verify` without a passed liveness session fails with `LIVENESS_REQUIRED`.
    pub require_liveness: bool,
    /// The largest single image accepted in a multipart upload.
    pub max_image_bytes: usize,
    /// An image's largest width, height and pixel count, read from its header before any pixel
    /// is decoded (a decompression bomb is a small file that declares a huge image).
    pub max_image_width: u32,
    pub max_image_height: u32,
    pub max_image_pixels: u64,
    /// Terminal request statuses the status query keeps in memory per generation (two are
    /// held); 0 turns the cache off.
    pub status_cache_entries: usize,
    pub liveness: LivenessSettings,
}

/// Liveness sessions over WebSocket (`docs/liveness-protocol.md`).
#[derive(Debug, Clone)]
pub struct LivenessSettings {
    /// A session's life from its creation.
    pub session_ttl: Duration,
    /// A ticket's life (never beyond its session's).
    pub ticket_ttl: Duration,
    /// The time to announce an action, and then to end it.
    pub action_timeout: Duration,
    /// Sessions a client may hold that are neither finished nor expired.
    pub max_sessions: u32,
    pub max_frame_bytes: usize,
    pub max_fps: u32,
    /// Frames per action, inclusive; the vendor contract takes 2 to 30.
    pub min_frames: usize,
    pub max_frames: usize,
}

/// The vendor contract's bounds on the frames of one liveness check.
pub const VENDOR_MIN_FRAMES: usize = 2;
pub const VENDOR_MAX_FRAMES: usize = 30;

#[derive(Debug, Clone)]
pub struct ThirdPartySettings {
    pub ocr_service: VendorSettings,
    pub face_service: VendorSettings,
    pub liveness_service: VendorSettings,
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub json_body_limit: usize,
    /// The deepest nesting of arrays and objects a JSON body may have.
    pub json_max_depth: usize,
    pub upload_body_limit: usize,
    /// Parts in one multipart body, the bytes of one text part, and a part's file name.
    pub multipart_max_parts: usize,
    pub multipart_max_field_bytes: usize,
    pub multipart_max_file_name_bytes: usize,
    pub request_timeout: Duration,
    pub shutdown_timeout: Duration,
}

impl Settings {
    /// Loads `path` and applies overrides from `env` (`KYC__DATABASE__HOST=...`).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first key that is missing, unknown or invalid.
    pub fn load<I>(path: &Path, env: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        if !path.is_file() {
            return Err(err(
                "config file",
                format!("{} does not exist or is not a file", path.display()),
            ));
        }
        let overrides: HashMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("KYC__"))
            .collect();
        let source = config::Environment::with_prefix("KYC")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(false)
            .source(Some(overrides));
        let cfg = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Yaml))
            .add_source(source)
            .build()
            .map_err(|e| err(&path.display().to_string(), e.to_string()))?;
        let raw: Raw = serde_path_to_error::deserialize(cfg).map_err(|e| {
            let path = e.path().to_string();
            describe_serde_error(&path, &e.into_inner().to_string())
        })?;
        raw.validate()
    }
}

/// Turns serde's message into "key: problem", pointing at the missing or unknown key itself.
fn describe_serde_error(path: &str, message: &str) -> ConfigError {
    let join = |field: &str| {
        if path == "." || path.is_empty() {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        }
    };
    let quoted = |m: &str| m.split('`').nth(1).map(str::to_owned);
    // config's own wording names the full key: `missing configuration field "database.host"`.
    if let Some(key) = message
        .strip_prefix("missing configuration field ")
        .map(|k| k.trim_matches('"'))
    {
        return err(key, "is required but missing");
    }
    if let Some(field) = message.strip_prefix("missing field ").and_then(quoted) {
        return err(&join(&field), "is required but missing");
    }
    if let Some(field) = message.strip_prefix("unknown field ").and_then(quoted) {
        // Here the path already ends at the unknown key itself.
        let key = if path.ends_with(&field) {
            path.to_owned()
        } else {
            join(&field)
        };
        return err(&key, "is not a known key (check its spelling)");
    }
    // The value of a secret is never repeated, not even in an error.
    if SECRET_KEYS.iter().any(|k| path.ends_with(k)) {
        return err(path, "has an invalid value (not shown: it is a secret)");
    }
    // config's own messages sometimes end with "for key `x`"; the path already says where.
    let problem = message.split(" for key ").next().unwrap_or(message);
    err(path, problem.trim().to_owned())
}

fn duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(value.trim()).map_err(|_| {
        err(
            key,
            format!("expected a duration such as 5s, 500ms or 24h, got {value:?}"),
        )
    })?;
    if d.is_zero() {
        return Err(err(key, "must be greater than zero"));
    }
    if d > Duration::from_secs(10 * 365 * 24 * 3600) {
        return Err(err(key, "must be at most 10 years"));
    }
    Ok(d)
}

fn nonempty(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        Err(err(key, "must not be empty"))
    } else {
        Ok(())
    }
}

fn secret(key: &str, value: String, dev_mode: bool) -> Result<SecretString, ConfigError> {
    if value.len() < 32 {
        return Err(err(
            key,
            format!("must be at least 32 bytes long (got {} bytes)", value.len()),
        ));
    }
    if !dev_mode && PLACEHOLDER_SECRETS.contains(&value.as_str()) {
        return Err(err(
            key,
            "is the placeholder from the example config; set a real secret (only gin_mode: debug accepts it)",
        ));
    }
    Ok(SecretString::from(value))
}

impl Raw {
    fn validate(self) -> Result<Settings, ConfigError> {
        let dev_mode = match self.gin_mode.as_str() {
            "debug" => true,
            "release" | "test" => false,
            other => {
                return Err(err(
                    "gin_mode",
                    format!("expected one of debug, release, test, got {other:?}"),
                ));
            }
        };
        let log_level = match self.log_level.to_ascii_lowercase().as_str() {
            l @ ("trace" | "debug" | "info" | "warn" | "error") => l.to_owned(),
            other => {
                return Err(err(
                    "log_level",
                    format!("expected one of trace, debug, info, warn, error, got {other:?}"),
                ));
            }
        };
        let ip: IpAddr = self.host.parse().map_err(|_| {
            err(
                "host",
                format!("expected an IP address to listen on, got {:?}", self.host),
            )
        })?;
        if self.port == 0 {
            return Err(err("port", "expected a port between 1 and 65535"));
        }

        nonempty("log.dir", &self.log.dir)?;
        nonempty("log.file", &self.log.file)?;
        if self.log.max_size_mb == 0 {
            return Err(err("log.max_size_mb", "must be at least 1"));
        }

        let db = self.database;
        nonempty("database.host", &db.host)?;
        nonempty("database.user", &db.user)?;
        nonempty("database.dbname", &db.dbname)?;
        let sslmode = match db.sslmode.as_str() {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(err(
                    "database.sslmode",
                    format!(
                        "expected one of disable, prefer, require, verify-ca, verify-full, got {other:?}"
                    ),
                ));
            }
        };
        if db.max_open_conns == 0 {
            return Err(err("database.max_open_conns", "must be at least 1"));
        }
        if db.max_idle_conns > db.max_open_conns {
            return Err(err(
                "database.max_idle_conns",
                "must not exceed database.max_open_conns",
            ));
        }

        let r = self.redis;
        nonempty("redis.host", &r.host)?;
        if r.pool_size == 0 {
            return Err(err("redis.pool_size", "must be at least 1"));
        }
        if r.min_idle_conns > r.pool_size {
            return Err(err(
                "redis.min_idle_conns",
                "must not exceed redis.pool_size",
            ));
        }
        if r.db > 15 {
            return Err(err(
                "redis.db",
                "expected a database number between 0 and 15",
            ));
        }

        let s = self.security;
        let jwt_algorithm = match s.jwt_algorithm.as_str() {
            "HS256" => JwtAlgorithm::Hs256,
            "EdDSA" => JwtAlgorithm::EdDsa,
            "ES256" => JwtAlgorithm::Es256,
            other => {
                return Err(err(
                    "security.jwt_algorithm",
                    format!("expected one of HS256, EdDSA, ES256, got {other:?}"),
                ));
            }
        };
        let jwt_private_key_pem = match (jwt_algorithm, s.jwt_private_key_file.as_deref()) {
            (JwtAlgorithm::Hs256, _) => None,
            (_, None | Some("")) => {
                return Err(err(
                    "security.jwt_private_key_file",
                    "is required when jwt_algorithm is EdDSA or ES256",
                ));
            }
            (_, Some(file)) => Some(SecretString::from(std::fs::read_to_string(file).map_err(
                |e| {
                    err(
                        "security.jwt_private_key_file",
                        format!("cannot read {file}: {e}"),
                    )
                },
            )?)),
        };
        let previous_jwt_secrets: Vec<SecretString> = s
            .previous_jwt_secrets
            .into_vec()
            .into_iter()
            .filter(|k| !k.is_empty())
            .map(|k| secret("security.previous_jwt_secrets", k, true))
            .collect::<Result<_, _>>()?;
        let previous_jwt_public_keys_pem: Vec<SecretString> = s
            .previous_jwt_public_key_files
            .into_vec()
            .into_iter()
            .filter(|f| !f.trim().is_empty())
            .map(|file| {
                std::fs::read_to_string(file.trim())
                    .map(SecretString::from)
                    .map_err(|e| {
                        err(
                            "security.previous_jwt_public_key_files",
                            format!("cannot read {}: {e}", file.trim()),
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        if s.rate_limit_per_second == 0 || s.rate_limit_per_second > 1_000_000 {
            return Err(err(
                "security.rate_limit_per_second",
                "must be between 1 and 1000000",
            ));
        }
        if s.rate_limit_burst == 0 {
            return Err(err("security.rate_limit_burst", "must be at least 1"));
        }
        nonempty("security.jwt_issuer", &s.jwt_issuer)?;
        nonempty("security.jwt_audience", &s.jwt_audience)?;
        let jwt_leeway = humantime::parse_duration(s.jwt_leeway.trim())
            .map_err(|_| err("security.jwt_leeway", "expected a duration such as 60s"))?;
        let previous_encryption_keys: Vec<SecretString> = s
            .previous_encryption_keys
            .into_vec()
            .into_iter()
            .filter(|k| !k.is_empty())
            .map(|k| secret("security.previous_encryption_keys", k, true))
            .collect::<Result<_, _>>()?;
        let blind_index_key = match s.blind_index_key {
            Some(k) if !k.is_empty() => Some(secret("security.blind_index_key", k, dev_mode)?),
            _ => None,
        };
        if blind_index_key.is_none() && !previous_encryption_keys.is_empty() {
            return Err(err(
                "security.blind_index_key",
                "must be set when previous_encryption_keys is (set it to the key the look-up index was built with)",
            ));
        }
        let security = SecuritySettings {
            jwt_secret: secret("security.jwt_secret", s.jwt_secret, dev_mode)?,
            jwt_expiration: duration("security.jwt_expiration", &s.jwt_expiration)?,
            refresh_expiration: duration("security.refresh_expiration", &s.refresh_expiration)?,
            jwt_issuer: s.jwt_issuer,
            jwt_audience: s.jwt_audience,
            jwt_algorithm,
            jwt_private_key_pem,
            previous_jwt_secrets,
            previous_jwt_public_keys_pem,
            jwt_leeway,
            encryption_key: secret("security.encryption_key", s.encryption_key, dev_mode)?,
            previous_encryption_keys,
            blind_index_key,
            rate_limit_per_second: s.rate_limit_per_second,
            rate_limit_burst: s.rate_limit_burst,
            rate_limit_fail_open: s.rate_limit_fail_open,
        };

        let vendor = |name: &str, v: RawVendor| -> Result<VendorSettings, ConfigError> {
            let key = |k: &str| format!("third_party.{name}.{k}");
            if !(v.url.starts_with("http://") || v.url.starts_with("https://")) || v.url.len() < 8 {
                return Err(err(
                    &key("url"),
                    format!("expected an http:// or https:// URL, got {:?}", v.url),
                ));
            }
            if v.timeout == 0 {
                return Err(err(
                    &key("timeout"),
                    "expected a number of seconds, at least 1",
                ));
            }
            if v.retry_count > 10 {
                return Err(err(&key("retry_count"), "expected at most 10 retries"));
            }
            if v.max_concurrency == 0 {
                return Err(err(&key("max_concurrency"), "must be at least 1"));
            }
            if v.rate_limit_per_second == 0 {
                return Err(err(&key("rate_limit_per_second"), "must be at least 1"));
            }
            if v.circuit_failure_threshold == 0 {
                return Err(err(&key("circuit_failure_threshold"), "must be at least 1"));
            }
            Ok(VendorSettings {
                url: v.url.trim_end_matches('/').to_owned(),
                api_key: SecretString::from(v.api_key),
                timeout: Duration::from_secs(v.timeout),
                retry_count: v.retry_count,
                max_concurrency: v.max_concurrency,
                rate_limit_per_second: v.rate_limit_per_second,
                circuit_failure_threshold: v.circuit_failure_threshold,
                circuit_open: Duration::from_secs(v.circuit_open_seconds.max(1)),
            })
        };
        let third_party = ThirdPartySettings {
            ocr_service: vendor("ocr_service", self.third_party.ocr_service)?,
            face_service: vendor("face_service", self.third_party.face_service)?,
            liveness_service: vendor("liveness_service", self.third_party.liveness_service)?,
        };

        let k = self.kyc;
        if !(0.0..=1.0).contains(&k.face_threshold) {
            return Err(err(
                "kyc.face_threshold",
                "expected a number between 0 and 1",
            ));
        }
        if k.max_image_bytes < 1024 {
            return Err(err("kyc.max_image_bytes", "must be at least 1024 bytes"));
        }
        if k.max_image_width == 0 {
            return Err(err("kyc.max_image_width", "must be at least 1"));
        }
        if k.max_image_height == 0 {
            return Err(err("kyc.max_image_height", "must be at least 1"));
        }
        if k.max_image_pixels == 0 {
            return Err(err("kyc.max_image_pixels", "must be at least 1"));
        }
        if k.status_cache_entries > 1_000_000 {
            return Err(err("kyc.status_cache_entries", "expected 0 to 1000000"));
        }
        let liveness = LivenessSettings {
            session_ttl: duration("kyc.liveness_session_ttl", &k.liveness_session_ttl)?,
            ticket_ttl: duration("kyc.liveness_ticket_ttl", &k.liveness_ticket_ttl)?,
            action_timeout: duration("kyc.liveness_action_timeout", &k.liveness_action_timeout)?,
            max_sessions: k.liveness_max_sessions,
            max_frame_bytes: k.liveness_max_frame_bytes,
            max_fps: k.liveness_max_fps,
            min_frames: k.liveness_min_frames,
            max_frames: k.liveness_max_frames,
        };
        if liveness.session_ttl > Duration::from_secs(3600) {
            return Err(err("kyc.liveness_session_ttl", "must be at most 1 hour"));
        }
        // The session's TTL bounds an action anyway; a bound here keeps deadline arithmetic sane.
        if liveness.action_timeout > Duration::from_secs(3600) {
            return Err(err("kyc.liveness_action_timeout", "must be at most 1 hour"));
        }
        if liveness.max_sessions == 0 {
            return Err(err("kyc.liveness_max_sessions", "must be at least 1"));
        }
        if !(1024..=4 * 1024 * 1024).contains(&liveness.max_frame_bytes) {
            return Err(err(
                "kyc.liveness_max_frame_bytes",
                "expected 1024 to 4194304 bytes",
            ));
        }
        if !(1..=120).contains(&liveness.max_fps) {
            return Err(err("kyc.liveness_max_fps", "expected 1 to 120"));
        }
        if !(VENDOR_MIN_FRAMES..=VENDOR_MAX_FRAMES).contains(&liveness.max_frames) {
            return Err(err(
                "kyc.liveness_max_frames",
                format!(
                    "expected {VENDOR_MIN_FRAMES} to {VENDOR_MAX_FRAMES} (the vendor contract)"
                ),
            ));
        }
        if !(VENDOR_MIN_FRAMES..=liveness.max_frames).contains(&liveness.min_frames) {
            return Err(err(
                "kyc.liveness_min_frames",
                format!("expected {VENDOR_MIN_FRAMES} to kyc.liveness_max_frames"),
            ));
        }
        let kyc = KycSettings {
            face_threshold: k.face_threshold,
            require_liveness: k.require_liveness,
            max_image_bytes: k.max_image_bytes,
            max_image_width: k.max_image_width,
            max_image_height: k.max_image_height,
            max_image_pixels: k.max_image_pixels,
            status_cache_entries: k.status_cache_entries,
            liveness,
        };

        let h = self.http;
        if h.json_body_limit < 1024 {
            return Err(err("http.json_body_limit", "must be at least 1024 bytes"));
        }
        if h.upload_body_limit < 1024 {
            return Err(err("http.upload_body_limit", "must be at least 1024 bytes"));
        }
        // serde_json stops at 128 levels on its own; a lower bound gives a clear code first.
        if !(1..=128).contains(&h.json_max_depth) {
            return Err(err("http.json_max_depth", "expected 1 to 128"));
        }
        if !(1..=64).contains(&h.multipart_max_parts) {
            return Err(err("http.multipart_max_parts", "expected 1 to 64"));
        }
        if !(64..=1024 * 1024).contains(&h.multipart_max_field_bytes) {
            return Err(err(
                "http.multipart_max_field_bytes",
                "expected 64 to 1048576 bytes",
            ));
        }
        if !(1..=1024).contains(&h.multipart_max_file_name_bytes) {
            return Err(err(
                "http.multipart_max_file_name_bytes",
                "expected 1 to 1024 bytes",
            ));
        }
        let request_timeout = duration("http.request_timeout", &h.request_timeout)?;
        if request_timeout > Duration::from_secs(600) {
            return Err(err("http.request_timeout", "must be at most 10 minutes"));
        }

        Ok(Settings {
            listen: SocketAddr::new(ip, self.port),
            dev_mode,
            log_level,
            log: LogSettings {
                dir: PathBuf::from(self.log.dir),
                file: self.log.file,
                max_bytes: self.log.max_size_mb.saturating_mul(1024 * 1024),
                max_files: self.log.max_files,
            },
            database: DatabaseSettings {
                host: db.host,
                port: db.port,
                user: db.user,
                password: SecretString::from(db.password),
                dbname: db.dbname,
                sslmode,
                max_connections: db.max_open_conns,
                min_connections: db.max_idle_conns,
                acquire_timeout: duration("database.acquire_timeout", &db.acquire_timeout)?,
            },
            redis: RedisSettings {
                host: r.host,
                port: r.port,
                password: SecretString::from(r.password),
                db: r.db,
                pool_size: r.pool_size,
                min_idle_conns: r.min_idle_conns,
                max_retries: r.max_retries,
                dial_timeout: duration("redis.dial_timeout", &r.dial_timeout)?,
                read_timeout: duration("redis.read_timeout", &r.read_timeout)?,
                write_timeout: duration("redis.write_timeout", &r.write_timeout)?,
                key_prefix: r.key_prefix,
            },
            security,
            third_party,
            http: HttpSettings {
                json_body_limit: h.json_body_limit,
                json_max_depth: h.json_max_depth,
                upload_body_limit: h.upload_body_limit,
                multipart_max_parts: h.multipart_max_parts,
                multipart_max_field_bytes: h.multipart_max_field_bytes,
                multipart_max_file_name_bytes: h.multipart_max_file_name_bytes,
                request_timeout,
                shutdown_timeout: duration("http.shutdown_timeout", &h.shutdown_timeout)?,
            },
            kyc,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.yaml")
    }

    fn load(env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::load(
            &seed(),
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
    }

    #[test]
    fn the_seed_config_loads_unchanged_in_dev_mode() {
        let s = load(&[]).expect("seed config loads");
        assert_eq!(s.listen.port(), 8080);
        assert!(s.dev_mode);
        assert_eq!(s.database.max_connections, 25);
        assert_eq!(s.database.min_connections, 5);
        assert_eq!(s.redis.dial_timeout, Duration::from_secs(5));
        assert_eq!(s.security.jwt_expiration, Duration::from_secs(86_400));
        assert_eq!(
            s.third_party.liveness_service.timeout,
            Duration::from_secs(60)
        );
        assert_eq!(s.security.jwt_algorithm, JwtAlgorithm::Hs256);
    }

    #[test]
    fn environment_overrides_any_key() {
        let s = load(&[
            ("KYC__DATABASE__HOST", "db.internal"),
            ("KYC__REDIS__POOL_SIZE", "8"),
            ("KYC__PORT", "9999"),
        ])
        .expect("overrides apply");
        assert_eq!(s.database.host, "db.internal");
        assert_eq!(s.redis.pool_size, 8);
        assert_eq!(s.listen.port(), 9999);
    }

    #[test]
    fn an_invalid_value_names_its_key() {
        let e = load(&[("KYC__DATABASE__PORT", "not-a-port")]).expect_err("bad port is refused");
        assert_eq!(e.key, "database.port", "{e}");
        let e = load(&[("KYC__REDIS__DIAL_TIMEOUT", "soon")]).expect_err("bad duration is refused");
        assert_eq!(e.key, "redis.dial_timeout");
        assert!(e.to_string().contains("duration"), "{e}");
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let e = load(&[("KYC__DATABASE__HOTS", "x")]).expect_err("typo is refused");
        assert_eq!(e.key, "database.hots", "{e}");
    }

    #[test]
    fn placeholder_secrets_are_refused_outside_dev_mode() {
        let e = load(&[("KYC__GIN_MODE", "release")]).expect_err("placeholders refused in release");
        assert_eq!(e.key, "security.jwt_secret");
        let ok = load(&[
            ("KYC__GIN_MODE", "release"),
            (
                "KYC__SECURITY__JWT_SECRET",
                "a-real-secret-that-is-long-enough-123",
            ),
            (
                "KYC__SECURITY__ENCRYPTION_KEY",
                "another-real-secret-long-enough-456",
            ),
        ])
        .expect("real secrets pass");
        assert!(!ok.dev_mode);
    }

    #[test]
    fn numeric_looking_strings_are_kept_exactly() {
        let s = load(&[
            ("KYC__DATABASE__PASSWORD", "007007"),
            (
                "KYC__SECURITY__JWT_SECRET",
                "12345678901234567890123456789012",
            ),
        ])
        .expect("loads");
        assert_eq!(s.database.password.expose_secret(), "007007");
        assert_eq!(
            s.security.jwt_secret.expose_secret(),
            "12345678901234567890123456789012"
        );
    }

    #[test]
    fn a_secrets_value_is_never_quoted_in_an_error() {
        let e = load(&[
            ("KYC__SECURITY__JWT_EXPIRATION", "x"),
            ("KYC__DATABASE__MAX_OPEN_CONNS", "many"),
        ])
        .expect_err("refused");
        assert!(!e.to_string().contains("many") || e.key == "database.max_open_conns");
        let e = describe_serde_error(
            "security.previous_encryption_keys",
            "invalid type: string \"old-secret-value\", expected a sequence",
        );
        assert!(!e.to_string().contains("old-secret-value"), "{e}");
    }

    #[test]
    fn rotation_without_a_pinned_blind_index_key_is_refused() {
        let e = load(&[(
            "KYC__SECURITY__PREVIOUS_ENCRYPTION_KEYS",
            "an-older-key-that-is-at-least-32-bytes",
        )])
        .expect_err("refused");
        assert_eq!(e.key, "security.blind_index_key");
    }

    #[test]
    fn a_short_secret_is_refused() {
        let e = load(&[("KYC__SECURITY__ENCRYPTION_KEY", "short")]).expect_err("short key refused");
        assert_eq!(e.key, "security.encryption_key");
    }

    #[test]
    fn asymmetric_signing_needs_a_key_file() {
        let e = load(&[("KYC__SECURITY__JWT_ALGORITHM", "EdDSA")]).expect_err("needs key file");
        assert_eq!(e.key, "security.jwt_private_key_file");
    }

    #[test]
    fn previous_jwt_keys_default_to_none_and_are_named_when_invalid() {
        let s = load(&[]).expect("loads");
        assert!(s.security.previous_jwt_secrets.is_empty());
        assert!(s.security.previous_jwt_public_keys_pem.is_empty());

        let s = load(&[(
            "KYC__SECURITY__PREVIOUS_JWT_SECRETS",
            "an-older-jwt-secret-of-at-least-32-bytes, another-older-jwt-secret-32-bytes!",
        )])
        .expect("a comma-separated list loads");
        assert_eq!(s.security.previous_jwt_secrets.len(), 2);

        let e = load(&[("KYC__SECURITY__PREVIOUS_JWT_SECRETS", "short-old-secret")])
            .expect_err("a short previous secret is refused");
        assert_eq!(e.key, "security.previous_jwt_secrets");
        assert!(!e.to_string().contains("short-old-secret"), "{e}");

        let e = load(&[(
            "KYC__SECURITY__PREVIOUS_JWT_PUBLIC_KEY_FILES",
            "/nonexistent/old-key.pem",
        )])
        .expect_err("a missing key file is refused");
        assert_eq!(e.key, "security.previous_jwt_public_key_files");
        assert!(e.to_string().contains("/nonexistent/old-key.pem"), "{e}");
    }

    #[test]
    fn liveness_settings_have_the_protocol_defaults_and_bounds() {
        let s = load(&[]).expect("loads");
        let l = &s.kyc.liveness;
        assert_eq!(l.session_ttl, Duration::from_secs(120));
        assert_eq!(l.ticket_ttl, Duration::from_secs(60));
        assert_eq!(l.action_timeout, Duration::from_secs(10));
        assert_eq!((l.max_sessions, l.max_fps), (3, 15));
        assert_eq!((l.min_frames, l.max_frames), (3, 30));
        assert_eq!(l.max_frame_bytes, 262_144);
        let e = load(&[("KYC__KYC__LIVENESS_MAX_FRAMES", "31")]).expect_err("over the contract");
        assert_eq!(e.key, "kyc.liveness_max_frames");
        let e = load(&[("KYC__KYC__LIVENESS_MIN_FRAMES", "1")]).expect_err("under the contract");
        assert_eq!(e.key, "kyc.liveness_min_frames");
        let e = load(&[("KYC__KYC__LIVENESS_ACTION_TIMEOUT", "soon")]).expect_err("not a duration");
        assert_eq!(e.key, "kyc.liveness_action_timeout");
        let e = load(&[("KYC__KYC__LIVENESS_ACTION_TIMEOUT", "100000000h")]).expect_err("too long");
        assert_eq!(e.key, "kyc.liveness_action_timeout");
    }

    #[test]
    fn the_redis_url_encodes_the_password() {
        let s = load(&[("KYC__REDIS__PASSWORD", "p@ss word")]).expect("loads");
        assert_eq!(
            s.redis.url().expose_secret(),
            "redis://:p%40ss%20word@localhost:6379/0"
        );
    }
}
