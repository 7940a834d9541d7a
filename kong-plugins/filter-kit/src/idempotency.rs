//! The idempotency filter's per-node state machine: the `Idempotency-Key` rule, the records kept in
//! shared data (`idem/<client>/<key>`), and what to do when a request arrives and when its response
//! comes back. Owns decisions and encodings; reading, CAS-writing and deleting shared data, buffering
//! bodies and sending replies are the filter's.
//!
//! The flow, per request of a configured method that carries a key:
//! 1. [`IdempotencyKey::parse`] (400 on a bad or, when required, missing key), [`storage_key`], and
//!    after the whole body is in, [`Fingerprint::new`].
//! 2. Read the key's record with its CAS and call [`on_request`]: `Proceed` → write the in-flight
//!    record with that CAS (on a CAS mismatch, read and decide again: another worker got there
//!    first) and forward; `Replay` → answer with the stored response; `Conflict409` / `Mismatch422`
//!    → answer with [`RequestDecision::reply`].
//! 3. When the response is complete, call [`on_response`]: `Store` → write the record (read first
//!    for the CAS); `Release` → delete it. Also release when the request ends without a response
//!    (client gone, upstream failure), so the key is not held until `lock_timeout_secs`.
//!
//! Records carry a hash of their own key: ngx_wasm_module finds shared-data entries by the CRC32 of
//! the key alone, so two keys can share a slot, and a record that is not ours must never be replayed.

use sha2::{Digest, Sha256};

use crate::config::IdempotencyConfig;
use crate::gcra::escape_part;
use crate::reply::ErrorReply;

/// The `shm_kv` zone the records live in (`nginx_wasm_shm_kv_idem` in kong.conf); every key
/// [`storage_key`] builds starts with it.
pub const ZONE: &str = "idem";

/// The request header carrying the key.
pub const HEADER: &str = "idempotency-key";

/// A header worth adding to a replayed response, so clients and logs can tell it from a fresh one.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// The longest key accepted, in characters (= bytes, since keys are ASCII).
pub const MAX_KEY_LEN: usize = 255;

/// A valid `Idempotency-Key`: 1 to 255 characters, each visible ASCII (`!` to `~`, 0x21–0x7E)
/// other than `"`, `'` and `\`. So no spaces, no control characters, nothing outside ASCII.
/// The header may also carry it as a structured-field string, `"…"` (as the IETF draft writes it);
/// the quotes are then not part of the key. Surrounding spaces and tabs are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses the header's value (`None` when the request has no such header).
    ///
    /// # Errors
    /// [`KeyError::Missing`] without a header, [`KeyError::Invalid`] when the value breaks the rule.
    pub fn parse(header: Option<&str>) -> Result<Self, KeyError> {
        let raw = header.ok_or(KeyError::Missing)?.trim_matches([' ', '\t']);
        let key = raw
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or(raw);
        let valid = (1..=MAX_KEY_LEN).contains(&key.len())
            && key
                .bytes()
                .all(|b| (0x21..=0x7E).contains(&b) && !matches!(b, b'"' | b'\'' | b'\\'));
        if valid {
            Ok(Self(key.to_owned()))
        } else {
            Err(KeyError::Invalid)
        }
    }

    /// The key.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a request's key was refused; both answer 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No `Idempotency-Key` header, on a route that requires one.
    #[error("the Idempotency-Key header is missing")]
    Missing,
    /// The header breaks the rule of [`IdempotencyKey`].
    #[error("the Idempotency-Key header is invalid")]
    Invalid,
}

impl KeyError {
    /// The 400 reply: `IDEMPOTENCY_KEY_MISSING` or `IDEMPOTENCY_KEY_INVALID`.
    #[must_use]
    pub fn reply(self) -> ErrorReply {
        let (code, message) = match self {
            Self::Missing => (
                "IDEMPOTENCY_KEY_MISSING",
                "this request needs an Idempotency-Key header",
            ),
            Self::Invalid => (
                "IDEMPOTENCY_KEY_INVALID",
                "the Idempotency-Key must be 1 to 255 visible ASCII characters without spaces, quotes or backslashes",
            ),
        };
        ErrorReply {
            status: 400,
            code,
            message: message.to_owned(),
        }
    }
}

/// The shared-data key of a client's idempotency key: `idem/<client_id>/<key>`. `/` and `%` in the
/// client id are percent-encoded, so one client can never reach another's records.
#[must_use]
pub fn storage_key(client_id: &str, key: &IdempotencyKey) -> String {
    format!("{ZONE}/{}/{}", escape_part(client_id), key.as_str())
}

/// What a record is bound to: the hash of its storage key, and the SHA-256 of the request it
/// answers (method, path with query, body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    /// SHA-256 of the storage key.
    pub key: [u8; 32],
    /// SHA-256 of method, path and body, each length-prefixed so no two requests can collide by
    /// moving bytes between the parts. A `multipart/*` body with a valid `boundary` is hashed as
    /// the segments between its delimiters instead (see [`Fingerprint::new`]).
    pub request: [u8; 32],
}

/// Stands where a raw body's length prefix would be, to mark a body hashed as multipart segments.
/// No body is `u64::MAX` bytes long, so the two encodings never meet.
const MULTIPART_MARKER: u64 = u64::MAX;

impl Fingerprint {
    /// Fingerprints a request. `path` is the `:path` pseudo-header, query string included;
    /// `content_type` is the request's `Content-Type` header, if it has one.
    ///
    /// The body is hashed as it is, except for a `multipart/*` body whose `Content-Type` carries a
    /// valid `boundary` parameter (RFC 2046 §5.1.1, RFC 7578 §4.1; quoted or not): that body is
    /// hashed as the sequence of segments between occurrences of `--<boundary>` (preamble, each
    /// part with its headers, and what follows the close delimiter), each length-prefixed. Clients
    /// pick a new random boundary per request (`curl -F` does), so a retry of the same upload
    /// fingerprints the same, while any change to a part's headers or content still differs.
    /// Without a boundary, or with a malformed `Content-Type` or boundary, the body is hashed raw.
    #[must_use]
    pub fn new(
        storage_key: &str,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Self {
        fn put(h: &mut Sha256, part: &[u8]) {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        let mut h = Sha256::new();
        put(&mut h, method.as_bytes());
        put(&mut h, path.as_bytes());
        match content_type.and_then(Delimiter::of_content_type) {
            Some(delimiter) => {
                h.update(MULTIPART_MARKER.to_be_bytes());
                delimiter.for_each_segment(body, |segment| put(&mut h, segment));
            }
            None => put(&mut h, body),
        }
        Self {
            key: Sha256::digest(storage_key.as_bytes()).into(),
            request: h.finalize().into(),
        }
    }
}

/// The longest boundary RFC 2046 allows.
const MAX_BOUNDARY_LEN: usize = 70;

/// A multipart delimiter, `--` then the boundary, kept on the stack.
struct Delimiter {
    bytes: [u8; 2 + MAX_BOUNDARY_LEN],
    len: usize,
}

impl Delimiter {
    /// The delimiter of a `multipart/*` content type with exactly one valid `boundary` parameter;
    /// `None` for any other type, or when the header or its boundary is malformed.
    fn of_content_type(content_type: &str) -> Option<Self> {
        let ct = content_type.trim_matches([' ', '\t']).as_bytes();
        let type_end = ct.iter().position(|&b| b == b';').unwrap_or(ct.len());
        let (media_type, mut rest) = ct.split_at(type_end);
        let (top, subtype) = trim_ows_end(media_type).split_at_checked(10)?;
        if !top.eq_ignore_ascii_case(b"multipart/")
            || subtype.is_empty()
            || !subtype.iter().all(|&b| is_tchar(b))
        {
            return None;
        }
        let mut found = None;
        // rest: *( OWS ";" OWS [ token "=" ( token / quoted-string ) ] ) (RFC 9110 §5.6.6)
        while let Some(after_semicolon) = rest.strip_prefix(b";") {
            rest = trim_ows_start(after_semicolon);
            if rest.is_empty() || rest[0] == b';' {
                continue;
            }
            let name_len = rest.iter().take_while(|&&b| is_tchar(b)).count();
            let (name, after_name) = rest.split_at(name_len);
            let value_start = after_name.strip_prefix(b"=").filter(|_| name_len > 0)?;
            let is_boundary = name.eq_ignore_ascii_case(b"boundary");
            if is_boundary && found.is_some() {
                return None; // two boundaries: which one the upstream takes is anyone's guess
            }
            let mut delimiter = Self {
                bytes: [b'-'; 2 + MAX_BOUNDARY_LEN],
                len: 2,
            };
            let mut push = |b: u8| {
                if is_boundary {
                    if delimiter.len == delimiter.bytes.len() || !is_bchar(b) {
                        return false;
                    }
                    delimiter.bytes[delimiter.len] = b;
                    delimiter.len += 1;
                }
                true
            };
            if let Some(quoted) = value_start.strip_prefix(b"\"") {
                // quoted-string: qdtext and quoted-pairs up to the closing quote.
                let mut i = 0;
                loop {
                    match *quoted.get(i)? {
                        b'"' => break,
                        b'\\' => {
                            let b = *quoted.get(i + 1)?;
                            if !(is_quoted_pair_char(b) && push(b)) {
                                return None;
                            }
                            i += 2;
                        }
                        b if is_qdtext(b) && push(b) => i += 1,
                        _ => return None,
                    }
                }
                rest = &quoted[i + 1..];
            } else {
                let len = value_start
                    .iter()
                    .take_while(|&&b| is_tchar_or_bchar(b))
                    .count();
                if len == 0 || !value_start[..len].iter().all(|&b| push(b)) {
                    return None;
                }
                rest = &value_start[len..];
            }
            rest = trim_ows_start(rest);
            if is_boundary {
                let boundary = &delimiter.bytes[2..delimiter.len];
                if boundary.is_empty() || boundary.ends_with(b" ") {
                    return None;
                }
                found = Some(delimiter);
            }
        }
        if rest.is_empty() { found } else { None }
    }

    /// Calls `f` with each segment of `body` between occurrences of the delimiter, in order: the
    /// preamble (empty when the body starts with a delimiter), then what follows each delimiter.
    /// Occurrences do not overlap. Boyer-Moore-Horspool with the shift table on the stack.
    fn for_each_segment(&self, body: &[u8], mut f: impl FnMut(&[u8])) {
        let needle = &self.bytes[..self.len];
        let m = needle.len(); // 3..=72, so every shift fits a u8
        let last = m - 1;
        let mut shift = [m as u8; 256];
        for (i, &b) in needle[..last].iter().enumerate() {
            shift[usize::from(b)] = (last - i) as u8;
        }
        let (mut start, mut at) = (0, 0);
        while at + m <= body.len() {
            let tail = body[at + last];
            if tail == needle[last] && body[at..at + last] == needle[..last] {
                f(&body[start..at]);
                at += m;
                start = at;
            } else {
                at += usize::from(shift[usize::from(tail)]);
            }
        }
        f(&body[start..]);
    }
}

fn trim_ows_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    &s[n..]
}

fn trim_ows_end(s: &[u8]) -> &[u8] {
    let n = s
        .iter()
        .rev()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    &s[..s.len() - n]
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 2046 `bchars`: what a boundary may contain (a space only inside, and only when quoted).
fn is_bchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&b)
}

/// What an unquoted parameter value may be made of: a token's characters, and for a boundary
/// (which `push` further limits to `bcharsnospace`) also `(`, `)`, `,`, `/`, `:`, `=` and `?`.
/// Strictly those need quotes, but unquoted they are common and unambiguous before the next `;`.
fn is_tchar_or_bchar(b: u8) -> bool {
    is_tchar(b) || (b != b' ' && is_bchar(b))
}

/// What may follow the `\` of an RFC 9110 `quoted-pair`.
fn is_quoted_pair_char(b: u8) -> bool {
    matches!(b, b'\t' | 0x20..=0x7E | 0x80..=0xFF)
}

/// RFC 9110 `qdtext` (obs-text included).
fn is_qdtext(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21 | 0x23..=0x5B | 0x5D..=0x7E | 0x80..=0xFF)
}

/// A record as kept in shared data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A request with this key is being processed.
    InFlight {
        /// What the record is bound to.
        fingerprint: Fingerprint,
        /// When processing began (s since the epoch).
        started_at_s: u64,
    },
    /// The response to replay.
    Completed {
        /// What the record is bound to.
        fingerprint: Fingerprint,
        /// The response's status.
        status: u16,
        /// The response's `Content-Type`, if it had one.
        content_type: Option<String>,
        /// The response's body.
        body: Vec<u8>,
        /// When it was stored (s since the epoch).
        stored_at_s: u64,
    },
}

const VERSION: u8 = 1;
const IN_FLIGHT: u8 = 1;
const COMPLETED: u8 = 2;
/// version, kind, key hash, request hash, time.
const HEAD_LEN: usize = 2 + 32 + 32 + 8;

impl Record {
    /// The bytes to store: `[version, kind, key hash, request hash, time (BE u64)]`, then for a
    /// completed record `status (BE u16), has-content-type (0|1), content-type length (BE u16),
    /// content type, body`.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let (kind, fingerprint, time) = match self {
            Self::InFlight {
                fingerprint,
                started_at_s,
            } => (IN_FLIGHT, fingerprint, *started_at_s),
            Self::Completed {
                fingerprint,
                stored_at_s,
                ..
            } => (COMPLETED, fingerprint, *stored_at_s),
        };
        let mut out = Vec::with_capacity(HEAD_LEN + 5 + self.body().len() + 32);
        out.extend_from_slice(&[VERSION, kind]);
        out.extend_from_slice(&fingerprint.key);
        out.extend_from_slice(&fingerprint.request);
        out.extend_from_slice(&time.to_be_bytes());
        if let Self::Completed {
            status,
            content_type,
            body,
            ..
        } = self
        {
            out.extend_from_slice(&status.to_be_bytes());
            let ct = content_type.as_deref().unwrap_or_default().as_bytes();
            // Content types longer than a u16 do not exist; such a response is never stored
            // (see `on_response`), so the cast cannot truncate.
            let ct_len = u16::try_from(ct.len()).unwrap_or(u16::MAX);
            out.push(u8::from(content_type.is_some()));
            out.extend_from_slice(&ct_len.to_be_bytes());
            out.extend_from_slice(&ct[..usize::from(ct_len)]);
            out.extend_from_slice(body);
        }
        out
    }

    /// Reads stored bytes; `None` for anything malformed or of another version (the slot then
    /// counts as empty).
    #[must_use]
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (head, rest) = bytes.split_at_checked(HEAD_LEN)?;
        if head[0] != VERSION {
            return None;
        }
        let fingerprint = Fingerprint {
            key: head[2..34].try_into().ok()?,
            request: head[34..66].try_into().ok()?,
        };
        let time = u64::from_be_bytes(head[66..74].try_into().ok()?);
        match head[1] {
            IN_FLIGHT if rest.is_empty() => Some(Self::InFlight {
                fingerprint,
                started_at_s: time,
            }),
            COMPLETED => {
                let (meta, rest) = rest.split_at_checked(5)?;
                let status = u16::from_be_bytes([meta[0], meta[1]]);
                let has_ct = meta[2];
                let ct_len = usize::from(u16::from_be_bytes([meta[3], meta[4]]));
                let (ct, body) = rest.split_at_checked(ct_len)?;
                let content_type = match has_ct {
                    0 if ct.is_empty() => None,
                    1 => Some(std::str::from_utf8(ct).ok()?.to_owned()),
                    _ => return None,
                };
                (100..=599).contains(&status).then(|| Self::Completed {
                    fingerprint,
                    status,
                    content_type,
                    body: body.to_vec(),
                    stored_at_s: time,
                })
            }
            _ => None,
        }
    }

    fn fingerprint(&self) -> &Fingerprint {
        match self {
            Self::InFlight { fingerprint, .. } | Self::Completed { fingerprint, .. } => fingerprint,
        }
    }

    fn body(&self) -> &[u8] {
        match self {
            Self::InFlight { .. } => &[],
            Self::Completed { body, .. } => body,
        }
    }
}

/// What to do with a request that carries a valid key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestDecision {
    /// Claim the key by writing `record_to_write` (an in-flight record) with the CAS just read,
    /// then forward the request.
    Proceed {
        /// The encoded in-flight record.
        record_to_write: Vec<u8>,
    },
    /// Answer with the stored response (adding [`REPLAYED_HEADER`]), without reaching upstream.
    Replay {
        /// The stored status.
        status: u16,
        /// The stored `Content-Type`.
        content_type: Option<String>,
        /// The stored body.
        body: Vec<u8>,
    },
    /// The same request is still in flight: 409 `IDEMPOTENCY_IN_FLIGHT`.
    Conflict409,
    /// The key was used for a different request: 422 `IDEMPOTENCY_KEY_REUSED`.
    Mismatch422,
}

impl RequestDecision {
    /// The error reply for `Conflict409` and `Mismatch422`; `None` for the others.
    #[must_use]
    pub fn reply(&self) -> Option<ErrorReply> {
        let (status, code, message) = match self {
            Self::Conflict409 => (
                409,
                "IDEMPOTENCY_IN_FLIGHT",
                "a request with this Idempotency-Key is still being processed; retry later",
            ),
            Self::Mismatch422 => (
                422,
                "IDEMPOTENCY_KEY_REUSED",
                "this Idempotency-Key was already used for a different request",
            ),
            Self::Proceed { .. } | Self::Replay { .. } => return None,
        };
        Some(ErrorReply {
            status,
            code,
            message: message.to_owned(),
        })
    }
}

/// Decides a request from the record its key holds (`existing`, as read from shared data).
///
/// No record, an unreadable one, one bound to another key, an expired completed one (older than
/// `ttl_secs`) or an abandoned in-flight one (older than `lock_timeout_secs`) all mean the key is
/// free: `Proceed`. Otherwise a different request is `Mismatch422` (checked first, so a client
/// learns of its bug even while the first request runs), the same one still running is
/// `Conflict409`, and the same one completed is `Replay`.
#[must_use]
pub fn on_request(
    cfg: &IdempotencyConfig,
    existing: Option<&[u8]>,
    fingerprint: &Fingerprint,
    now_s: u64,
) -> RequestDecision {
    let live = existing
        .and_then(Record::decode)
        .filter(|r| r.fingerprint().key == fingerprint.key)
        .filter(|r| match r {
            Record::InFlight { started_at_s, .. } => {
                now_s.saturating_sub(*started_at_s) < cfg.lock_timeout_secs
            }
            Record::Completed { stored_at_s, .. } => {
                now_s.saturating_sub(*stored_at_s) < cfg.ttl_secs
            }
        });
    match live {
        None => RequestDecision::Proceed {
            record_to_write: Record::InFlight {
                fingerprint: *fingerprint,
                started_at_s: now_s,
            }
            .encode(),
        },
        Some(r) if r.fingerprint().request != fingerprint.request => RequestDecision::Mismatch422,
        Some(Record::InFlight { .. }) => RequestDecision::Conflict409,
        Some(Record::Completed {
            status,
            content_type,
            body,
            ..
        }) => RequestDecision::Replay {
            status,
            content_type,
            body,
        },
    }
}

/// What to do with the key once the response is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseDecision {
    /// Write this completed record over the in-flight one.
    Store(Vec<u8>),
    /// Delete the in-flight record: the response is not kept, and a retry runs again.
    Release,
}

/// Whether a response with this status is kept for replay: 2xx, 3xx and 4xx, except the
/// statuses that say "try again" (408, 425, 429). 5xx are never kept: a retry should run again.
#[must_use]
pub fn is_cacheable_status(status: u16) -> bool {
    (200..500).contains(&status) && !matches!(status, 408 | 425 | 429)
}

/// Decides what happens to the key after the response. Responses with a status that is not kept
/// (see [`is_cacheable_status`]) or a body over `max_body_bytes` are released, not cached.
#[must_use]
pub fn on_response(
    cfg: &IdempotencyConfig,
    fingerprint: &Fingerprint,
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
    now_s: u64,
) -> ResponseDecision {
    if !is_cacheable_status(status)
        || body.len() > cfg.max_body_bytes
        || content_type.is_some_and(|ct| ct.len() > usize::from(u16::MAX))
    {
        return ResponseDecision::Release;
    }
    ResponseDecision::Store(
        Record::Completed {
            fingerprint: *fingerprint,
            status,
            content_type: content_type.map(str::to_owned),
            body: body.to_vec(),
            stored_at_s: now_s,
        }
        .encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_764_000_000;

    fn key(s: &str) -> IdempotencyKey {
        IdempotencyKey::parse(Some(s)).expect("valid key")
    }

    fn fp(body: &str) -> Fingerprint {
        let sk = storage_key("kyc-client", &key("8e03978e-40d5-43e8-bc93-6894a57f9324"));
        Fingerprint::new(&sk, "POST", "/api/v1/kyc/verify", None, body.as_bytes())
    }

    fn cfg() -> IdempotencyConfig {
        IdempotencyConfig::default()
    }

    fn write(d: &RequestDecision) -> Vec<u8> {
        match d {
            RequestDecision::Proceed { record_to_write } => record_to_write.clone(),
            other => panic!("expected Proceed, got {other:?}"),
        }
    }

    fn stored(r: ResponseDecision) -> Vec<u8> {
        match r {
            ResponseDecision::Store(bytes) => bytes,
            ResponseDecision::Release => panic!("expected Store"),
        }
    }

    #[test]
    fn keys_follow_the_documented_rule() {
        for ok in [
            "8e03978e-40d5-43e8-bc93-6894a57f9324",
            "a",
            "!#$%&()*+,-./:;<=>?@[]^_`{|}~",
            &"k".repeat(255),
        ] {
            assert_eq!(key(ok).as_str(), ok);
        }
        for bad in [
            "",
            " ",
            "a b",
            "a\"b",
            "a'b",
            "a\\b",
            "ключ",
            "a\tb",
            "a\u{7f}",
            &"k".repeat(256),
        ] {
            assert_eq!(
                IdempotencyKey::parse(Some(bad)),
                Err(KeyError::Invalid),
                "{bad:?}"
            );
        }
        assert_eq!(IdempotencyKey::parse(None), Err(KeyError::Missing));
    }

    #[test]
    fn the_structured_field_form_and_surrounding_spaces_are_accepted() {
        assert_eq!(key("\"abc-123\"").as_str(), "abc-123");
        assert_eq!(key("  abc-123\t").as_str(), "abc-123");
        assert_eq!(IdempotencyKey::parse(Some("\"\"")), Err(KeyError::Invalid));
        assert_eq!(
            IdempotencyKey::parse(Some("\"a\"b\"")),
            Err(KeyError::Invalid)
        );
    }

    #[test]
    fn key_errors_answer_400_in_the_projects_shape() {
        let missing = KeyError::Missing.reply();
        assert_eq!(
            (missing.status, missing.code),
            (400, "IDEMPOTENCY_KEY_MISSING")
        );
        let invalid = KeyError::Invalid.reply();
        assert_eq!(
            (invalid.status, invalid.code),
            (400, "IDEMPOTENCY_KEY_INVALID")
        );
        let body: serde_json::Value =
            serde_json::from_slice(&invalid.json_body("r-1")).expect("json");
        assert_eq!(body["error"]["code"], "IDEMPOTENCY_KEY_INVALID");
        assert_eq!(body["request_id"], "r-1");
    }

    #[test]
    fn records_are_scoped_by_client() {
        let k = key("order-1");
        assert_eq!(storage_key("kyc-client", &k), "idem/kyc-client/order-1");
        assert_ne!(
            storage_key("a/b", &key("c")),
            storage_key("a", &key("b/c")),
            "a client id with a slash must not reach another client's keys"
        );
    }

    #[test]
    fn the_fingerprint_binds_method_path_body_and_key() {
        let sk = "idem/c/k";
        let base = Fingerprint::new(sk, "POST", "/v1/verify", None, b"{}");
        assert_eq!(
            base,
            Fingerprint::new(sk, "POST", "/v1/verify", None, b"{}")
        );
        assert_ne!(
            base.request,
            Fingerprint::new(sk, "PATCH", "/v1/verify", None, b"{}").request
        );
        assert_ne!(
            base.request,
            Fingerprint::new(sk, "POST", "/v1/verify?x=1", None, b"{}").request
        );
        assert_ne!(
            base.request,
            Fingerprint::new(sk, "POST", "/v1/verify", None, b"{ }").request
        );
        assert_ne!(
            Fingerprint::new(sk, "POST", "/ab", None, b"c").request,
            Fingerprint::new(sk, "POST", "/a", None, b"bc").request
        );
        let other_key = Fingerprint::new("idem/c/k2", "POST", "/v1/verify", None, b"{}");
        assert_eq!(base.request, other_key.request);
        assert_ne!(base.key, other_key.key);
    }

    /// A `curl -F image=@idcard.jpg -F language=zh` body, with `boundary` as the boundary.
    fn multipart(boundary: &str, image: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        body.extend_from_slice(
            b"Content-Disposition: form-data; name=\"image\"; filename=\"idcard.jpg\"\r\n",
        );
        body.extend_from_slice(b"Content-Type: image/jpeg\r\n\r\n");
        body.extend_from_slice(image);
        body.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
        body.extend_from_slice(b"Content-Disposition: form-data; name=\"language\"\r\n\r\nzh");
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        body
    }

    fn ocr(content_type: Option<&str>, body: &[u8]) -> [u8; 32] {
        Fingerprint::new("idem/c/k", "POST", "/api/v1/kyc/ocr", content_type, body).request
    }

    fn form(boundary: &str) -> String {
        format!("multipart/form-data; boundary={boundary}")
    }

    const JPEG: &[u8] = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00-- not a delimiter\r\n--\xff\xd9";

    #[test]
    fn the_multipart_boundary_does_not_change_the_fingerprint() {
        // curl picks a new random boundary on every run.
        let a = "------------------------d74496d66958873e";
        let b = "------------------------0a1b2c3d4e5f6789";
        let fa = ocr(Some(&form(a)), &multipart(a, JPEG));
        assert_eq!(fa, ocr(Some(&form(b)), &multipart(b, JPEG)));
        // Browsers' and other clients' shapes, of other lengths.
        for other in [
            "----WebKitFormBoundary7MA4YWxkTrZu0gW",
            "x",
            &"b".repeat(70),
        ] {
            assert_eq!(
                fa,
                ocr(Some(&form(other)), &multipart(other, JPEG)),
                "{other}"
            );
        }
        // Any multipart subtype, any case of the type and of the parameter's name, other
        // parameters before or after it, spaces around the semicolons.
        for ct in [
            format!("Multipart/Form-Data; BOUNDARY={b}"),
            format!("multipart/mixed ;charset=utf-8;  Boundary={b} ; x=\"y;boundary=z\""),
            format!("multipart/form-data; boundary={b};"),
        ] {
            assert_eq!(fa, ocr(Some(&ct), &multipart(b, JPEG)), "{ct}");
        }
        // Without a multipart content type, the boundary is part of the body as before.
        assert_ne!(
            ocr(None, &multipart(a, JPEG)),
            ocr(None, &multipart(b, JPEG))
        );
    }

    #[test]
    fn any_change_to_a_part_changes_the_fingerprint() {
        let b = "------------------------d74496d66958873e";
        let ct = form(b);
        let base = ocr(Some(&ct), &multipart(b, JPEG));
        let mut other_image = JPEG.to_vec();
        other_image[6] ^= 1;
        assert_ne!(base, ocr(Some(&ct), &multipart(b, &other_image)));
        assert_ne!(base, ocr(Some(&ct), &multipart(b, &JPEG[1..])));
        let renamed = String::from_utf8_lossy(&multipart(b, b"img"))
            .replace("idcard.jpg", "idcard2.jpg")
            .into_bytes();
        assert_ne!(
            ocr(Some(&ct), &multipart(b, b"img")),
            ocr(Some(&ct), &renamed)
        );
        let language = String::from_utf8_lossy(&multipart(b, b"img"))
            .replace("\r\n\r\nzh", "\r\n\r\nen")
            .into_bytes();
        assert_ne!(
            ocr(Some(&ct), &multipart(b, b"img")),
            ocr(Some(&ct), &language)
        );
        // Bytes moved across a delimiter, and the epilogue, count too.
        let body = multipart(b, JPEG);
        let mut epilogue = body.clone();
        epilogue.extend_from_slice(b"trailing");
        assert_ne!(base, ocr(Some(&ct), &epilogue));
        let two = format!("--{b}\r\nab--{b}c");
        let moved = format!("--{b}\r\na--{b}bc");
        assert_ne!(
            ocr(Some(&ct), two.as_bytes()),
            ocr(Some(&ct), moved.as_bytes())
        );
        // Method and path still count.
        assert_ne!(
            base,
            Fingerprint::new("idem/c/k", "POST", "/api/v1/kyc/face", Some(&ct), &body).request
        );
    }

    #[test]
    fn a_quoted_boundary_is_unquoted() {
        let b = "gc0p4Jq0M2Yt08jU534c0p";
        let plain = ocr(Some(&form(b)), &multipart(b, JPEG));
        assert_eq!(
            plain,
            ocr(
                Some(&format!("multipart/form-data; boundary=\"{b}\"")),
                &multipart(b, JPEG)
            )
        );
        // Quoted, a boundary may hold characters a token may not: spaces, `:`, `?`, `=`, …
        let spaced = "simple boundary: (a=b)?";
        assert_eq!(
            plain,
            ocr(
                Some(&format!("multipart/mixed; boundary=\"{spaced}\"")),
                &multipart(spaced, JPEG)
            )
        );
        // A quoted-pair stands for its character.
        assert_eq!(
            plain,
            ocr(
                Some("multipart/form-data; boundary=\"gc0p4Jq0M2Yt08jU534c0\\p\""),
                &multipart(b, JPEG)
            )
        );
    }

    #[test]
    fn a_body_that_is_not_multipart_is_hashed_raw() {
        let body = b"--x\r\n{\"a\":1}\r\n--x--";
        let raw = |ct| Fingerprint::new("idem/c/k", "POST", "/v1", ct, body).request;
        let none = raw(None);
        for ct in [
            "application/json",
            "text/plain; boundary=x",
            "application/x-multipart; boundary=x",
            "multipart; boundary=x",
        ] {
            assert_eq!(raw(Some(ct)), none, "{ct}");
        }
        assert_ne!(raw(Some("multipart/form-data; boundary=x")), none);
        // And the raw hash is the one of before: method, path and body, each length-prefixed.
        let mut h = Sha256::new();
        for part in [b"POST".as_slice(), b"/v1", body] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        assert_eq!(none, <[u8; 32]>::from(h.finalize()));
    }

    #[test]
    fn multipart_without_a_valid_boundary_is_hashed_raw() {
        let b = "------------------------d74496d66958873e";
        let body = multipart(b, JPEG);
        let none = ocr(None, &body);
        let too_long = "b".repeat(71);
        for ct in [
            "multipart/form-data".to_owned(),
            "multipart/form-data;".to_owned(),
            "multipart/form-data; charset=utf-8".to_owned(),
            "multipart/form-data; boundary=".to_owned(),
            "multipart/form-data; boundary=\"\"".to_owned(),
            format!("multipart/form-data; boundary={too_long}"),
            format!("multipart/form-data; boundary=\"{b}"),
            format!("multipart/form-data; boundary=\"{b} \""),
            format!("multipart/form-data; boundary={b} x"),
            format!("multipart/form-data; boundary = {b}"),
            "multipart/form-data; boundary=a@b".to_owned(),
            "multipart/form-data; boundary=\"a\\\"b\"".to_owned(),
            format!("multipart/form-data; boundary={b}; boundary={b}"),
            format!("multipart/form-data; charset; boundary={b}"),
            format!("multipart/; boundary={b}"),
            format!("multipart /form-data; boundary={b}"),
        ] {
            assert_eq!(ocr(Some(&ct), &body), none, "{ct}");
        }
    }

    #[test]
    fn segments_split_at_every_delimiter_without_overlap() {
        let d = Delimiter::of_content_type("multipart/form-data; boundary=-a").expect("valid");
        let segments = |body: &[u8]| {
            let mut out = Vec::new();
            d.for_each_segment(body, |s| out.push(s.to_vec()));
            out
        };
        let v = |parts: &[&[u8]]| parts.iter().map(|p| p.to_vec()).collect::<Vec<_>>();
        assert_eq!(segments(b""), v(&[b""]));
        assert_eq!(segments(b"---a"), v(&[b"", b""]));
        assert_eq!(segments(b"x---a---a-y---a"), v(&[b"x", b"", b"-y", b""]));
        assert_eq!(segments(b"-----a--a"), v(&[b"--", b"--a"]));
        assert_eq!(segments(b"---"), v(&[b"---"]));
        // Horspool against a plain scan, on every body of up to 8 bytes made of the delimiter's
        // own bytes and one other.
        let mut bodies = vec![Vec::new()];
        for len in 1..=8 {
            let longer: Vec<Vec<u8>> = bodies
                .iter()
                .filter(|b| b.len() == len - 1)
                .flat_map(|b| {
                    b"-ax".iter().map(move |&c| {
                        let mut b = b.clone();
                        b.push(c);
                        b
                    })
                })
                .collect();
            bodies.extend(longer);
        }
        assert_eq!(bodies.len(), (0..=8).map(|n| 3_usize.pow(n)).sum::<usize>());
        for body in &bodies {
            let mut expected = Vec::new();
            let (mut start, mut at) = (0, 0);
            while at < body.len() {
                if body[at..].starts_with(b"---a") {
                    expected.push(body[start..at].to_vec());
                    at += 4;
                    start = at;
                } else {
                    at += 1;
                }
            }
            expected.push(body[start..].to_vec());
            assert_eq!(
                segments(body),
                expected,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn records_round_trip_and_garbage_reads_as_nothing() {
        let f = fp("{}");
        let records = [
            Record::InFlight {
                fingerprint: f,
                started_at_s: NOW,
            },
            Record::Completed {
                fingerprint: f,
                status: 201,
                content_type: Some("application/json".into()),
                body: br#"{"success":true}"#.to_vec(),
                stored_at_s: NOW,
            },
            Record::Completed {
                fingerprint: f,
                status: 204,
                content_type: None,
                body: Vec::new(),
                stored_at_s: 0,
            },
        ];
        for r in records {
            let bytes = r.encode();
            assert_eq!(Record::decode(&bytes), Some(r.clone()));
            for cut in 0..bytes.len().min(HEAD_LEN + 5) {
                assert_eq!(Record::decode(&bytes[..cut]), None, "truncated at {cut}");
            }
        }
        assert_eq!(Record::decode(b""), None);
        assert_eq!(Record::decode(&[9; 100]), None);
        let mut wrong_version = Record::InFlight {
            fingerprint: f,
            started_at_s: 1,
        }
        .encode();
        wrong_version[0] = 2;
        assert_eq!(Record::decode(&wrong_version), None);
    }

    #[test]
    fn the_first_request_claims_the_key_and_a_retry_replays_its_response() {
        let c = cfg();
        let f = fp(r#"{"name":"张三"}"#);
        let in_flight = write(&on_request(&c, None, &f, NOW));
        assert_eq!(
            Record::decode(&in_flight),
            Some(Record::InFlight {
                fingerprint: f,
                started_at_s: NOW
            })
        );
        let done = stored(on_response(
            &c,
            &f,
            201,
            Some("application/json"),
            b"{\"id\":1}",
            NOW + 2,
        ));
        assert_eq!(
            on_request(&c, Some(&done), &f, NOW + 10),
            RequestDecision::Replay {
                status: 201,
                content_type: Some("application/json".into()),
                body: b"{\"id\":1}".to_vec(),
            }
        );
    }

    #[test]
    fn a_retry_while_the_first_runs_is_a_conflict() {
        let c = cfg();
        let f = fp("{}");
        let in_flight = write(&on_request(&c, None, &f, NOW));
        let d = on_request(&c, Some(&in_flight), &f, NOW + 1);
        assert_eq!(d, RequestDecision::Conflict409);
        let reply = d.reply().expect("a reply");
        assert_eq!((reply.status, reply.code), (409, "IDEMPOTENCY_IN_FLIGHT"));
        // A worker whose clock is a little behind sees the same.
        assert_eq!(
            on_request(&c, Some(&in_flight), &f, NOW - 5),
            RequestDecision::Conflict409
        );
    }

    #[test]
    fn a_key_reused_for_another_request_is_refused_running_or_done() {
        let c = cfg();
        let first = fp(r#"{"amount":1}"#);
        let second = fp(r#"{"amount":2}"#);
        let in_flight = write(&on_request(&c, None, &first, NOW));
        let d = on_request(&c, Some(&in_flight), &second, NOW);
        assert_eq!(d, RequestDecision::Mismatch422);
        let reply = d.reply().expect("a reply");
        assert_eq!((reply.status, reply.code), (422, "IDEMPOTENCY_KEY_REUSED"));
        let done = stored(on_response(&c, &first, 200, None, b"ok", NOW));
        assert_eq!(
            on_request(&c, Some(&done), &second, NOW),
            RequestDecision::Mismatch422
        );
    }

    #[test]
    fn an_abandoned_claim_and_an_expired_response_free_the_key() {
        let c = IdempotencyConfig {
            ttl_secs: 3600,
            lock_timeout_secs: 60,
            ..cfg()
        };
        let f = fp("{}");
        let in_flight = write(&on_request(&c, None, &f, NOW));
        assert_eq!(
            on_request(&c, Some(&in_flight), &f, NOW + 59),
            RequestDecision::Conflict409
        );
        write(&on_request(&c, Some(&in_flight), &f, NOW + 60));
        let done = stored(on_response(&c, &f, 200, None, b"ok", NOW));
        assert!(matches!(
            on_request(&c, Some(&done), &f, NOW + 3599),
            RequestDecision::Replay { .. }
        ));
        write(&on_request(&c, Some(&done), &f, NOW + 3600));
        // An expired record no longer binds the key to its old request either.
        write(&on_request(&c, Some(&done), &fp("other"), NOW + 3600));
    }

    #[test]
    fn a_record_of_another_key_in_the_same_slot_is_never_replayed() {
        let c = cfg();
        let mine = fp("{}");
        let theirs = Fingerprint::new(
            "idem/other-client/k",
            "POST",
            "/api/v1/kyc/verify",
            None,
            b"{}",
        );
        assert_eq!(mine.request, theirs.request);
        let their_record = stored(on_response(&c, &theirs, 200, None, b"their PII", NOW));
        let d = on_request(&c, Some(&their_record), &mine, NOW);
        assert!(matches!(d, RequestDecision::Proceed { .. }), "{d:?}");
    }

    #[test]
    fn an_unreadable_record_counts_as_none() {
        write(&on_request(&cfg(), Some(b"garbage"), &fp("{}"), NOW));
    }

    #[test]
    fn server_errors_and_retry_later_statuses_are_released() {
        let c = cfg();
        let f = fp("{}");
        for status in [500, 502, 503, 504, 408, 425, 429, 101, 199] {
            assert_eq!(
                on_response(&c, &f, status, None, b"", NOW),
                ResponseDecision::Release,
                "{status}"
            );
        }
        for status in [200, 201, 204, 302, 400, 404, 409, 422] {
            assert!(
                matches!(
                    on_response(&c, &f, status, None, b"", NOW),
                    ResponseDecision::Store(_)
                ),
                "{status}"
            );
        }
    }

    #[test]
    fn bodies_over_the_cap_are_not_cached() {
        let c = IdempotencyConfig {
            max_body_bytes: 10,
            ..cfg()
        };
        let f = fp("{}");
        assert!(matches!(
            on_response(&c, &f, 200, None, &[b'x'; 10], NOW),
            ResponseDecision::Store(_)
        ));
        assert_eq!(
            on_response(&c, &f, 200, None, &[b'x'; 11], NOW),
            ResponseDecision::Release
        );
    }

    #[test]
    fn proceed_and_replay_have_no_error_reply() {
        assert!(on_request(&cfg(), None, &fp("{}"), NOW).reply().is_none());
    }
}
