//! The one normalisation of a request path, done once per request before routing: the router,
//! the filters (`:path`) and the upstream all see its result, so no spelling of a path can reach
//! an endpoint without that endpoint's filter chain.
//!
//! It follows Kong's router (`kong.tools.uri.normalize(path, true)`, which every router flavour
//! applies before matching): percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are
//! decoded, dot segments are removed (RFC 3986 §5.2.4, `%2E` counting as `.`), and runs of
//! slashes are merged into one (Kong's `merge_slashes`). Where Kong is lenient the edge refuses:
//! an encoded `/` (`%2F`), `\` (`%5C`) or NUL (`%00`), a raw backslash, and a malformed `%`
//! escape are each a 400, since upstreams disagree on what they mean. Any other escape is kept,
//! its hex digits upper-cased (Kong decodes those too, then re-escapes them for the upstream).

use std::borrow::Cow;

/// Why a path is refused; each is a 400 with a stable `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// `%2F`, `%5C`, `%00` or a raw `\`: upstreams split or terminate paths on these differently.
    Ambiguous,
    /// A `%` not followed by two hex digits, or a path not starting with `/`.
    Malformed,
}

impl PathError {
    pub fn code(self) -> &'static str {
        match self {
            Self::Ambiguous => "PATH_AMBIGUOUS",
            Self::Malformed => "PATH_MALFORMED",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::Ambiguous => {
                "The path holds an encoded slash, backslash or NUL, or a raw backslash"
            }
            Self::Malformed => "The path is not a valid absolute path",
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The normalised form of `path` (without its query). Borrowed when `path` is already normal,
/// which is one pass over its bytes and no allocation.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::Malformed);
    }
    if is_normal(bytes)? {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(bytes)?;
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

/// One pass: refuses what is never accepted, and says whether anything needs rewriting (an
/// escape, an empty segment or a dot segment).
fn is_normal(bytes: &[u8]) -> Result<bool, PathError> {
    let mut normal = true;
    let mut segment_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\\' => return Err(PathError::Ambiguous),
            b'%' => normal = false,
            b'/' => {
                let segment = &bytes[segment_start..i];
                if i > 0 && (segment.is_empty() || segment == b"." || segment == b"..") {
                    normal = false;
                }
                segment_start = i + 1;
            }
            _ => {}
        }
    }
    let last = &bytes[segment_start..];
    if last == b"." || last == b".." {
        normal = false;
    }
    if !normal {
        // decode() checks the escapes.
        return Ok(false);
    }
    Ok(true)
}

/// Decodes unreserved escapes, upper-cases the others, refuses the ambiguous and malformed ones.
fn decode(bytes: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(PathError::Malformed);
        };
        let c = hi * 16 + lo;
        if matches!(c, b'/' | b'\\' | 0) {
            return Err(PathError::Ambiguous);
        }
        if unreserved(c) {
            out.push(c);
        } else {
            out.push(b'%');
            out.push(bytes[i + 1].to_ascii_uppercase());
            out.push(bytes[i + 2].to_ascii_uppercase());
        }
        i += 3;
    }
    Ok(out)
}

/// RFC 3986 §5.2.4 on an absolute path, with empty segments dropped (Kong merges slashes). A
/// trailing slash stays, and a path ending in a dot segment ends with a slash.
fn remove_dot_segments(path: &[u8]) -> String {
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut trailing = path.ends_with(b"/");
    for segment in path.split(|&b| b == b'/') {
        match segment {
            b"" => {}
            b"." => trailing = true,
            b".." => {
                segments.pop();
                trailing = true;
            }
            s => {
                segments.push(s);
                trailing = false;
            }
        }
    }
    if path.ends_with(b"/") {
        trailing = true;
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        // Only ASCII escapes and the client's own bytes (hyper accepts no non-ASCII in a path).
        out.push_str(&String::from_utf8_lossy(s));
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, PathError> {
        normalize(p).map(Cow::into_owned)
    }

    #[test]
    fn a_normal_path_is_borrowed() {
        for p in [
            "/",
            "/api/v1/kyc/status/x",
            "/api/v1/kyc/status/",
            "/a.b/c..d/.e",
        ] {
            assert!(matches!(normalize(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn dot_segments_follow_rfc3986_and_slashes_merge_as_in_kong() {
        let cases = [
            ("/api/v1/./kyc/status/x", "/api/v1/kyc/status/x"),
            ("/api/v1/kyc/../kyc/status/x", "/api/v1/kyc/status/x"),
            ("/api/v1/%6Byc/status/x", "/api/v1/kyc/status/x"),
            ("/api/v1/%6byc/%73tatus/x", "/api/v1/kyc/status/x"),
            ("/api/v1/kyc/%2e%2E/kyc/status/x", "/api/v1/kyc/status/x"),
            ("//api///v1//kyc/status/x", "/api/v1/kyc/status/x"),
            ("/a//../b", "/b"),
            ("/../../a", "/a"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/a/b/", "/a/b/"),
            ("/..", "/"),
            ("/a/%7e%41", "/a/~A"),
            ("/a/%3f%20b", "/a/%3F%20b"),
        ];
        for (input, want) in cases {
            assert_eq!(norm(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn ambiguous_and_malformed_encodings_are_refused() {
        for p in ["/a%2Fb", "/a%2fb", "/a%5Cb", "/a%00", "/a\\b", "/a/%5c/.."] {
            assert_eq!(norm(p), Err(PathError::Ambiguous), "{p}");
        }
        for p in ["/a%", "/a%4", "/a%zz", "a/b", "", "*"] {
            assert_eq!(norm(p), Err(PathError::Malformed), "{p}");
        }
    }
}
