//! Limits on JSON request bodies that serde does not give a clear answer for: the nesting depth,
//! checked on the raw bytes before anything is deserialised. (Size is `http.json_body_limit`,
//! enforced by the router's body limit.)

use axum::http::StatusCode;

use crate::error::AppError;

/// Whether `body` nests arrays and objects deeper than `max`. Brackets inside strings do not
/// count; the bytes need not be valid JSON (the parser judges that afterwards).
#[must_use]
pub fn nests_deeper_than(body: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// 400 `JSON_TOO_DEEP` when `body` nests deeper than `max`.
///
/// # Errors
/// The refusal, which names the limit and nothing of the body.
pub fn check_depth(body: &[u8], max: usize) -> Result<(), AppError> {
    if nests_deeper_than(body, max) {
        return Err(AppError::InputLimit {
            status: StatusCode::BAD_REQUEST,
            code: "JSON_TOO_DEEP",
            message: format!("the JSON body nests deeper than {max} levels"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::nests_deeper_than;

    #[test]
    fn depth_counts_arrays_and_objects_but_not_brackets_in_strings() {
        assert!(!nests_deeper_than(br#"{"a":[1,{"b":2}]}"#, 3));
        assert!(nests_deeper_than(br#"{"a":[1,{"b":2}]}"#, 2));
        assert!(!nests_deeper_than(br#"{"a":"[[[[[[\"[[[["}"#, 1));
        assert!(!nests_deeper_than(b"", 1));
        assert!(nests_deeper_than(&[b'['; 33], 32));
    }
}
