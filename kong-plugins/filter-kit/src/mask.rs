//! Masks PII in JSON response bodies the Chinese way (`110105********002X`, `138****8000`, `张*`).
//! Owns the masking rules and the body rewrite; deciding which responses to buffer (content type,
//! size) and whether the caller may see PII unmasked is the filter's, with the helpers below.
//!
//! The body is scanned once, validated as RFC 8259 JSON on the way, and every byte that is not a
//! masked value is copied verbatim: key order, whitespace, number spelling and escapes all survive.
//! A masked number becomes a string (`13800138000` → `"138****8000"`). The scan keeps an explicit
//! stack, so nesting depth cannot overflow the wasm stack (deep nesting is not a way around it).

use std::borrow::Cow;

use crate::config::MaskConfig;

/// How a field's values are masked. Every rule keeps at most what it names, keeps less of short
/// values so something is always hidden, and is idempotent (masking a masked value changes nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskRule {
    /// `11010519491231002X` → `110105********002X`: first 6 and last 4 (see [`mask_id_number`]).
    IdNumber,
    /// `13800138000` → `138****8000`: first 3 and last 4 (see [`mask_phone`]).
    Phone,
    /// `张三` → `张*`, `欧阳娜娜` → `欧***`: the first character (see [`mask_name`]).
    Name,
    /// The first 6 characters, then `****` (see [`mask_address`]).
    Address,
    /// The first and the last character (see [`mask_ends`]).
    Ends,
}

impl MaskRule {
    /// The rule for a field, from its normalized name (see [`normalize_field`]):
    /// `idcard`/`idnumber`/`…idno` → [`IdNumber`](Self::IdNumber), `…phone…`/`…mobile…`/`tel` →
    /// [`Phone`](Self::Phone), `…address…`/`addr` → [`Address`](Self::Address), `…name…` →
    /// [`Name`](Self::Name), anything else → [`Ends`](Self::Ends).
    #[must_use]
    pub fn for_field(normalized: &str) -> Self {
        let has = |s: &str| normalized.contains(s);
        if has("idcard") || has("idnumber") || normalized.ends_with("idno") {
            Self::IdNumber
        } else if has("phone") || has("mobile") || normalized == "tel" {
            Self::Phone
        } else if has("address") || normalized == "addr" {
            Self::Address
        } else if has("name") {
            Self::Name
        } else {
            Self::Ends
        }
    }

    /// Masks one value.
    #[must_use]
    pub fn apply(self, value: &str) -> String {
        match self {
            Self::IdNumber => mask_id_number(value),
            Self::Phone => mask_phone(value),
            Self::Name => mask_name(value),
            Self::Address => mask_address(value),
            Self::Ends => mask_ends(value),
        }
    }
}

/// A field name as keys are compared: ASCII lower-case, without `_` and `-`
/// (`idCard`, `ID_CARD`, `id-card` → `idcard`).
#[must_use]
pub fn normalize_field(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    normalize_into(&mut out, name);
    out
}

fn normalize_into(out: &mut String, name: &str) {
    out.extend(
        name.chars()
            .filter(|c| *c != '_' && *c != '-')
            .map(|c| c.to_ascii_lowercase()),
    );
}

/// Keeps `head` leading and `tail` trailing characters and stars the rest; the length is kept.
/// Callers choose `head + tail` below the length, so something is always hidden.
fn keep_ends(value: &str, head: usize, tail: usize) -> String {
    let n = value.chars().count();
    value
        .chars()
        .enumerate()
        .map(|(i, c)| if i < head || i + tail >= n { c } else { '*' })
        .collect()
}

/// `11010519491231002X` → `110105********002X` (region kept, birth date and sequence hidden).
/// 15 characters or more keep 6 + 4; 10–14 keep 3 + 2; 4–9 keep 1 + 1; shorter keep nothing.
#[must_use]
pub fn mask_id_number(value: &str) -> String {
    let (head, tail) = match value.chars().count() {
        0..=3 => (0, 0),
        4..=9 => (1, 1),
        10..=14 => (3, 2),
        _ => (6, 4),
    };
    keep_ends(value, head, tail)
}

/// `13800138000` → `138****8000`. 11 characters or more keep 3 + 4 (so `+8613800138000` keeps
/// `+86` and `8000`); 5–10 keep 1 + 2; shorter keep nothing.
#[must_use]
pub fn mask_phone(value: &str) -> String {
    let (head, tail) = match value.chars().count() {
        0..=4 => (0, 0),
        5..=10 => (1, 2),
        _ => (3, 4),
    };
    keep_ends(value, head, tail)
}

/// `张三` → `张*`, `欧阳娜娜` → `欧***`: the first character only; a single character is hidden.
#[must_use]
pub fn mask_name(value: &str) -> String {
    match value.chars().count() {
        0 | 1 => "*".repeat(value.chars().count()),
        _ => keep_ends(value, 1, 0),
    }
}

/// `北京市朝阳区建国路88号` → `北京市朝阳区****`: at most the first 6 characters (at most half of a
/// shorter value), then exactly four stars, which also hides the length. A value already of that
/// form (at most 6 characters, then `****`) is left as it is.
#[must_use]
pub fn mask_address(value: &str) -> String {
    if value.is_empty() {
        return String::new();
    }
    if value.ends_with("****") && value.trim_end_matches('*').chars().count() <= 6 {
        return value.to_owned();
    }
    let keep = (value.chars().count() / 2).min(6);
    value.chars().take(keep).chain("****".chars()).collect()
}

/// The first and last character of 4 or more (`a******z`), the first of 2–3, none of 1.
#[must_use]
pub fn mask_ends(value: &str) -> String {
    match value.chars().count() {
        0 | 1 => "*".repeat(value.chars().count()),
        2 | 3 => keep_ends(value, 1, 0),
        _ => keep_ends(value, 1, 1),
    }
}

/// What [`mask_json`] did with a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskOutcome {
    /// The rewritten body; replace the response body with it (and drop `Content-Length`).
    Masked(Vec<u8>),
    /// Valid JSON with nothing to mask (or already masked): send the body as it is.
    Unchanged,
    /// Not valid JSON (or not UTF-8): left untouched; what to send is the filter's call.
    NotJson,
}

/// Masks the values of the configured fields, at any depth, in a JSON body.
///
/// A string or number under a masked field is masked with that field's rule. Under a masked field,
/// arrays and objects pass the rule down to every string and number inside them, unless a nested
/// key is a masked field with a rule of its own. `true`, `false` and `null` are never changed.
#[must_use]
pub fn mask_json(body: &[u8], cfg: &MaskConfig) -> MaskOutcome {
    let Ok(text) = std::str::from_utf8(body) else {
        return MaskOutcome::NotJson;
    };
    match scan(text, cfg) {
        Err(NotJson) => MaskOutcome::NotJson,
        Ok(edits) if edits.is_empty() => MaskOutcome::Unchanged,
        Ok(edits) => {
            let mut out = Vec::with_capacity(body.len() + 8 * edits.len());
            let mut copied = 0;
            for edit in &edits {
                out.extend_from_slice(&body[copied..edit.start]);
                out.extend_from_slice(edit.replacement.as_bytes());
                copied = edit.end;
            }
            out.extend_from_slice(&body[copied..]);
            MaskOutcome::Masked(out)
        }
    }
}

/// Whether a `Content-Type` is JSON: `application/json` or any `…+json`, parameters ignored.
#[must_use]
pub fn is_json_content_type(content_type: &str) -> bool {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    media == "application/json" || (media.ends_with("+json") && media.contains('/'))
}

/// Whether this caller may see the body unmasked: its token carries the configured
/// `unmasked_scope` (default `kyc:pii`).
#[must_use]
pub fn unmasked_for(cfg: &MaskConfig, scopes: &[String]) -> bool {
    cfg.unmasked_scope
        .as_ref()
        .is_some_and(|wanted| scopes.iter().any(|s| s == wanted))
}

#[derive(Debug)]
struct NotJson;

struct Edit {
    start: usize,
    end: usize,
    replacement: String,
}

#[derive(Clone, Copy)]
enum Frame {
    Object(Option<MaskRule>),
    Array(Option<MaskRule>),
}

/// Validates `text` as one JSON value and lists the replacements of masked values, in order.
fn scan(text: &str, cfg: &MaskConfig) -> Result<Vec<Edit>, NotJson> {
    let mut s = Scanner {
        text,
        b: text.as_bytes(),
        i: 0,
    };
    let mut stack: Vec<Frame> = Vec::new();
    let mut edits = Vec::new();
    let mut key = String::new();
    // The rule for the value about to be read.
    let mut rule: Option<MaskRule> = None;
    loop {
        s.ws();
        match s.peek().ok_or(NotJson)? {
            b'{' => {
                s.i += 1;
                s.ws();
                if s.peek() == Some(b'}') {
                    s.i += 1;
                } else {
                    stack.push(Frame::Object(rule));
                    rule = s.key(cfg, &mut key)?.or(rule);
                    continue;
                }
            }
            b'[' => {
                s.i += 1;
                s.ws();
                if s.peek() == Some(b']') {
                    s.i += 1;
                } else {
                    stack.push(Frame::Array(rule));
                    continue;
                }
            }
            b'"' => {
                let start = s.i;
                let (raw, escaped) = s.string()?;
                if let Some(rule) = rule {
                    let value = if escaped {
                        Cow::Owned(unescape(raw))
                    } else {
                        Cow::Borrowed(raw)
                    };
                    let masked = rule.apply(&value);
                    if masked != value {
                        edits.push(Edit {
                            start,
                            end: s.i,
                            replacement: json_string(&masked),
                        });
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = s.i;
                s.number()?;
                if let Some(rule) = rule {
                    edits.push(Edit {
                        start,
                        end: s.i,
                        replacement: json_string(&rule.apply(&text[start..s.i])),
                    });
                }
            }
            b't' => s.literal("true")?,
            b'f' => s.literal("false")?,
            b'n' => s.literal("null")?,
            _ => return Err(NotJson),
        }
        // A value just ended: close what it ends, or move on to the next member or element.
        loop {
            s.ws();
            let Some(top) = stack.last().copied() else {
                return if s.i == s.b.len() {
                    Ok(edits)
                } else {
                    Err(NotJson)
                };
            };
            match (top, s.bump()) {
                (Frame::Object(inherited), Some(b',')) => {
                    s.ws();
                    rule = s.key(cfg, &mut key)?.or(inherited);
                    break;
                }
                (Frame::Array(inherited), Some(b',')) => {
                    rule = inherited;
                    break;
                }
                (Frame::Object(_), Some(b'}')) | (Frame::Array(_), Some(b']')) => {
                    stack.pop();
                }
                _ => return Err(NotJson),
            }
        }
    }
}

struct Scanner<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn literal(&mut self, word: &str) -> Result<(), NotJson> {
        if self.b[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(())
        } else {
            Err(NotJson)
        }
    }

    /// A string starting at the opening quote: its raw contents (escapes not decoded) and whether
    /// it has escapes. Leaves the cursor after the closing quote.
    fn string(&mut self) -> Result<(&'a str, bool), NotJson> {
        self.i += 1;
        let start = self.i;
        let mut escaped = false;
        loop {
            match self.peek().ok_or(NotJson)? {
                b'"' => {
                    // Both ends sit next to ASCII quotes, so they are char boundaries.
                    let raw = self.text.get(start..self.i).ok_or(NotJson)?;
                    self.i += 1;
                    return Ok((raw, escaped));
                }
                b'\\' => {
                    escaped = true;
                    match self.b.get(self.i + 1).ok_or(NotJson)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                        b'u' => {
                            let hex = self.b.get(self.i + 2..self.i + 6).ok_or(NotJson)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return Err(NotJson);
                            }
                            self.i += 6;
                        }
                        _ => return Err(NotJson),
                    }
                }
                0x00..=0x1F => return Err(NotJson),
                _ => self.i += 1,
            }
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Result<(), NotJson> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(NotJson),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.some_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Ok(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Result<(), NotJson> {
        let before = self.i;
        self.digits();
        if self.i == before {
            Err(NotJson)
        } else {
            Ok(())
        }
    }

    /// An object key and its colon; returns the key's rule if it is a masked field.
    fn key(&mut self, cfg: &MaskConfig, buf: &mut String) -> Result<Option<MaskRule>, NotJson> {
        if self.peek() != Some(b'"') {
            return Err(NotJson);
        }
        let (raw, escaped) = self.string()?;
        buf.clear();
        if escaped {
            normalize_into(buf, &unescape(raw));
        } else {
            normalize_into(buf, raw);
        }
        self.ws();
        if self.bump() != Some(b':') {
            return Err(NotJson);
        }
        Ok(cfg.rule_for(buf))
    }
}

/// Decodes the escapes of an already validated string body. A lone surrogate becomes U+FFFD.
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let decoded = match chars.next() {
            Some('b') => '\u{8}',
            Some('f') => '\u{c}',
            Some('n') => '\n',
            Some('r') => '\r',
            Some('t') => '\t',
            Some('u') => {
                let high = hex4(&mut chars);
                if (0xD800..0xDC00).contains(&high) {
                    let mut ahead = chars.clone();
                    if ahead.next() == Some('\\') && ahead.next() == Some('u') {
                        let low = hex4(&mut ahead);
                        if (0xDC00..0xE000).contains(&low) {
                            chars = ahead;
                            let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                            out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                            continue;
                        }
                    }
                }
                char::from_u32(high).unwrap_or('\u{FFFD}')
            }
            Some(other) => other,
            None => break,
        };
        out.push(decoded);
    }
    out
}

fn hex4(chars: &mut std::str::Chars<'_>) -> u32 {
    (0..4).fold(0, |acc, _| {
        acc * 16 + chars.next().and_then(|c| c.to_digit(16)).unwrap_or(0)
    })
}

/// `value` as a JSON string literal, escaping only what JSON requires.
fn json_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(body: &str) -> String {
        masked_with(body, &MaskConfig::default())
    }

    fn masked_with(body: &str, cfg: &MaskConfig) -> String {
        match mask_json(body.as_bytes(), cfg) {
            MaskOutcome::Masked(out) => String::from_utf8(out).expect("masking keeps UTF-8"),
            MaskOutcome::Unchanged => body.to_owned(),
            MaskOutcome::NotJson => panic!("not JSON: {body}"),
        }
    }

    #[test]
    fn the_chinese_conventions_are_followed() {
        assert_eq!(mask_id_number("11010519491231002X"), "110105********002X");
        assert_eq!(mask_phone("13800138000"), "138****8000");
        assert_eq!(mask_name("张三"), "张*");
        assert_eq!(mask_name("欧阳娜娜"), "欧***");
        assert_eq!(mask_address("北京市朝阳区建国路88号"), "北京市朝阳区****");
        assert_eq!(mask_ends("alice@example.com"), "a***************m");
    }

    #[test]
    fn an_ocr_response_is_masked_and_everything_else_is_kept_byte_for_byte() {
        let body = r#"{
  "success": true,
  "id_card": "11010519491231002X",
  "name": "张三",
  "sex": "男",
  "birth_date": "1949-12-31",
  "address": "北京市朝阳区建国路88号",
  "confidence": 0.98e0,
  "warnings": [],
  "request_id": "0193a5b2-7c1d"
}"#;
        let expected = r#"{
  "success": true,
  "id_card": "110105********002X",
  "name": "张*",
  "sex": "男",
  "birth_date": "1949-12-31",
  "address": "北京市朝阳区****",
  "confidence": 0.98e0,
  "warnings": [],
  "request_id": "0193a5b2-7c1d"
}"#;
        assert_eq!(masked(body), expected);
    }

    #[test]
    fn fields_are_masked_at_any_depth() {
        let body = r#"{"data":{"people":[{"name":"欧阳娜娜","contacts":[{"phone":"13800138000"}]},[{"mobile":"13900139000"}]]}}"#;
        assert_eq!(
            masked(body),
            r#"{"data":{"people":[{"name":"欧***","contacts":[{"phone":"138****8000"}]},[{"mobile":"139****9000"}]]}}"#
        );
    }

    #[test]
    fn numbers_under_masked_fields_become_masked_strings() {
        assert_eq!(
            masked(r#"{"phone":13800138000,"count":13800138000}"#),
            r#"{"phone":"138****8000","count":13800138000}"#
        );
        assert_eq!(masked(r#"{"idcard":-1.5e3}"#), r#"{"idcard":"-****3"}"#);
    }

    #[test]
    fn a_masked_field_passes_its_rule_into_arrays_and_objects_below_it() {
        assert_eq!(
            masked(r#"{"phone":["13800138000",["13900139000"],null,true]}"#),
            r#"{"phone":["138****8000",["139****9000"],null,true]}"#
        );
        assert_eq!(
            masked(
                r#"{"address":{"province":"广东省深圳市南山区","detail":{"street":"科技园南路一号大楼"},"phone":"13800138000"}}"#
            ),
            r#"{"address":{"province":"广东省深****","detail":{"street":"科技园南****"},"phone":"138****8000"}}"#
        );
    }

    #[test]
    fn keys_match_whatever_their_case_separators_or_escapes() {
        assert_eq!(
            masked(
                r#"{"Name":"张三","ID-Card":"11010519491231002X","idNumber":"11010519491231002X","na\u006de":"李四"}"#
            ),
            r#"{"Name":"张*","ID-Card":"110105********002X","idNumber":"110105********002X","na\u006de":"李*"}"#
        );
    }

    #[test]
    fn escaped_values_are_decoded_before_masking_and_re_escaped_after() {
        assert_eq!(masked(r#"{"name":"\u5f20\u4e09"}"#), r#"{"name":"张*"}"#);
        assert_eq!(masked(r#"{"name":"\"Bob\""}"#), r#"{"name":"\"****"}"#);
        assert_eq!(masked(r#"{"name":"\ud83d\ude00x"}"#), r#"{"name":"😀*"}"#);
        let cfg = MaskConfig::from_json(br#"{"fields":["email"]}"#).expect("valid");
        let out = masked_with(r#"{"email":"\n\\\t\u0001end"}"#, &cfg);
        assert_eq!(out, r#"{"email":"\n*****d"}"#);
        serde_json::from_str::<serde_json::Value>(&out).expect("still valid JSON");
    }

    #[test]
    fn other_configured_fields_keep_their_first_and_last_character() {
        let cfg = MaskConfig::from_json(br#"{"fields":["email","bank_card"]}"#).expect("valid");
        assert_eq!(
            masked_with(
                r#"{"email":"li@qq.com","bank_card":"6222021234567890","name":"张三"}"#,
                &cfg
            ),
            r#"{"email":"l*******m","bank_card":"6**************0","name":"张三"}"#
        );
    }

    #[test]
    fn a_body_with_nothing_to_mask_is_unchanged() {
        let cfg = MaskConfig::default();
        for body in [
            r#"{"success":true,"status":"pending"}"#,
            r#"[1,2,{"a":[]}]"#,
            r#""name""#,
            "  42  ",
            r#"{"name":null,"phone":true,"address":""}"#,
            r#"{"phone":"138****8000","name":"张*"}"#,
        ] {
            assert_eq!(
                mask_json(body.as_bytes(), &cfg),
                MaskOutcome::Unchanged,
                "{body}"
            );
        }
    }

    #[test]
    fn invalid_json_is_reported_and_never_rewritten() {
        let cfg = MaskConfig::default();
        let bad: [&[u8]; 22] = [
            b"",
            b"   ",
            b"{",
            b"{\"name\":\"x\"",
            b"{\"name\":\"x\",}",
            b"[1,]",
            b"{'name':'x'}",
            b"{\"name\" \"x\"}",
            b"{\"name\":NaN}",
            b"{\"phone\":0123}",
            b"{\"phone\":1.}",
            b"{\"phone\":-}",
            b"{\"phone\":1e}",
            b"{\"name\":\"a\nb\"}",
            b"{\"name\":\"\\x41\"}",
            b"{\"name\":\"\\u12G4\"}",
            b"{\"name\":\"x\"} {}",
            b"{\"name\":tru}",
            b"{\"name\":\"\xff\"}",
            b"\xef\xbb\xbf{}",
            b"{1:2}",
            b"[}",
        ];
        for body in bad {
            assert_eq!(
                mask_json(body, &cfg),
                MaskOutcome::NotJson,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn deep_nesting_neither_overflows_nor_escapes_masking() {
        let depth = 100_000;
        let body = format!(
            "{}{{\"phone\":\"13800138000\"}}{}",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let out = masked(&body);
        assert!(out.contains(r#"{"phone":"138****8000"}"#));
        assert_eq!(out.len(), body.len());
    }

    #[test]
    fn masking_twice_is_masking_once() {
        let cfg =
            MaskConfig::from_json(br#"{"fields":["name","id_card","phone","address","email"]}"#)
                .expect("valid");
        let bodies = [
            r#"{"name":"欧阳娜娜","id_card":"11010519491231002X","phone":13800138000,"address":"北京市朝阳区建国路88号","email":"a@b.cn"}"#,
            r#"{"address":"北京","name":"李","phone":"123","id_card":"1234567"}"#,
            r#"{"address":"abcdefg*","email":"x"}"#,
            r#"[{"address":{"a":"深圳市南山区科技园","b":["短"]}}]"#,
        ];
        for body in bodies {
            let once = masked_with(body, &cfg);
            assert_eq!(masked_with(&once, &cfg), once, "{body}");
        }
    }

    #[test]
    fn no_rule_ever_keeps_more_than_it_names_or_hides_nothing() {
        // (rule, the most characters it may keep)
        let rules = [
            (MaskRule::IdNumber, 10),
            (MaskRule::Phone, 7),
            (MaskRule::Name, 1),
            (MaskRule::Address, 6),
            (MaskRule::Ends, 2),
        ];
        for (rule, most) in rules {
            for n in 1..40 {
                for alphabet in ["1234567890", "张王李赵欧阳娜"] {
                    let value: String = alphabet.chars().cycle().take(n).collect();
                    let out = rule.apply(&value);
                    let kept = out.chars().filter(|c| *c != '*').count();
                    assert!(kept <= most, "{rule:?} kept {kept} of {value} -> {out}");
                    assert!(kept < n, "{rule:?} hid nothing of {value} -> {out}");
                    assert!(out.contains('*'), "{rule:?}: {value} -> {out}");
                    assert_eq!(
                        rule.apply(&out),
                        out,
                        "{rule:?} is not idempotent on {value}"
                    );
                    let original: Vec<char> = value.chars().collect();
                    for (i, c) in out.chars().enumerate() {
                        assert!(
                            c == '*' || original.get(i) == Some(&c),
                            "{rule:?} moved characters: {value} -> {out}"
                        );
                    }
                }
            }
            assert_eq!(rule.apply(""), "", "{rule:?}");
        }
    }

    #[test]
    fn json_content_types_are_recognised() {
        assert!(is_json_content_type("application/json"));
        assert!(is_json_content_type("Application/JSON; charset=utf-8"));
        assert!(is_json_content_type("application/problem+json"));
        assert!(!is_json_content_type("text/html"));
        assert!(!is_json_content_type("application/jsonp"));
        assert!(!is_json_content_type("+json"));
    }

    #[test]
    fn the_pii_scope_sees_bodies_unmasked() {
        let cfg = MaskConfig::default();
        assert!(unmasked_for(&cfg, &["kyc:read".into(), "kyc:pii".into()]));
        assert!(!unmasked_for(&cfg, &["kyc:read".into()]));
        let strict = MaskConfig::from_json(br#"{"unmasked_scope":null}"#).expect("valid");
        assert!(!unmasked_for(&strict, &["kyc:pii".into()]));
    }
}
