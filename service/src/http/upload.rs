//! Reading `multipart/form-data` uploads with limits: part count, text-field size, file size, and
//! image types sniffed from the bytes (JPEG, PNG). Also the payload fingerprint for idempotency,
//! taken over the parts' names and contents so that two uploads of the same files match even
//! though each client picks its own multipart boundary.

use std::collections::HashMap;

use axum::extract::multipart::{Multipart, MultipartError};
use axum::http::StatusCode;
use sha2::{Digest, Sha256};

use crate::error::AppError;

const MAX_PARTS: usize = 16;
const MAX_TEXT_BYTES: usize = 4 * 1024;
const MAX_NAME_BYTES: usize = 64;

pub struct Upload {
    files: HashMap<String, Vec<u8>>,
    texts: HashMap<String, String>,
    digest: Sha256,
}

fn multipart_error(e: &MultipartError, limit: usize) -> AppError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        AppError::PayloadTooLarge { limit }
    } else {
        AppError::BadRequest {
            code: "MULTIPART_INVALID",
            message: "the multipart body is malformed or truncated".into(),
        }
    }
}

pub fn missing(field: &'static str) -> AppError {
    AppError::Field {
        status: StatusCode::BAD_REQUEST,
        code: "FIELD_MISSING",
        message: format!("the field {field} is required"),
        field,
    }
}

pub fn invalid(field: &'static str, code: &'static str, message: impl Into<String>) -> AppError {
    AppError::Field {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code,
        message: message.into(),
        field,
    }
}

impl Upload {
    /// Reads every part. `file_fields` are kept as bytes (at most `max_file` each), the rest as text.
    ///
    /// # Errors
    /// 400 for a malformed or truncated body, 413 beyond a limit.
    pub async fn read(
        mut mp: Multipart,
        file_fields: &[&str],
        max_file: usize,
        body_limit: usize,
    ) -> Result<Self, AppError> {
        let mut up = Self {
            files: HashMap::new(),
            texts: HashMap::new(),
            digest: Sha256::new(),
        };
        let mut parts = 0;
        while let Some(mut field) = mp
            .next_field()
            .await
            .map_err(|e| multipart_error(&e, body_limit))?
        {
            parts += 1;
            if parts > MAX_PARTS {
                return Err(AppError::BadRequest {
                    code: "MULTIPART_INVALID",
                    message: format!("at most {MAX_PARTS} parts"),
                });
            }
            let name = field.name().unwrap_or_default().to_owned();
            if name.is_empty()
                || name.len() > MAX_NAME_BYTES
                || field.file_name().is_some_and(|f| f.len() > 255)
            {
                return Err(AppError::BadRequest {
                    code: "MULTIPART_INVALID",
                    message: "a part has no name or too long a name".into(),
                });
            }
            let limit = if file_fields.contains(&name.as_str()) {
                max_file
            } else {
                MAX_TEXT_BYTES
            };
            let mut data = Vec::new();
            while let Some(chunk) = field
                .chunk()
                .await
                .map_err(|e| multipart_error(&e, body_limit))?
            {
                if data.len() + chunk.len() > limit {
                    return Err(AppError::PayloadTooLarge { limit });
                }
                data.extend_from_slice(&chunk);
            }
            up.digest.update((name.len() as u64).to_be_bytes());
            up.digest.update(name.as_bytes());
            up.digest.update((data.len() as u64).to_be_bytes());
            up.digest.update(&data);
            if file_fields.contains(&name.as_str()) {
                up.files.insert(name, data);
            } else {
                let text = String::from_utf8(data).map_err(|_| AppError::BadRequest {
                    code: "MULTIPART_INVALID",
                    message: format!("the field {name} is not UTF-8 text"),
                })?;
                up.texts.insert(name, text);
            }
        }
        Ok(up)
    }

    /// The SHA-256 of method, path and every part's name and content, in order.
    #[must_use]
    pub fn fingerprint(&self, method: &str, path: &str) -> Vec<u8> {
        let mut d = self.digest.clone();
        d.update(method.as_bytes());
        d.update([0]);
        d.update(path.as_bytes());
        d.finalize().to_vec()
    }

    /// The image in `field`, which must be a JPEG or PNG by its bytes.
    ///
    /// # Errors
    /// 400 when missing or empty, 415 when not an image.
    pub fn image(&mut self, field: &'static str) -> Result<Vec<u8>, AppError> {
        let data = self
            .files
            .remove(field)
            .filter(|d| !d.is_empty())
            .ok_or_else(|| missing(field))?;
        if sniff_image(&data).is_none() {
            return Err(AppError::Field {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code: "UNSUPPORTED_MEDIA_TYPE",
                message: format!("the field {field} must be a JPEG or PNG image"),
                field,
            });
        }
        Ok(data)
    }

    #[must_use]
    pub fn text(&self, field: &str) -> Option<&str> {
        self.texts
            .get(field)
            .map(String::as_str)
            .filter(|s| !s.trim().is_empty())
    }
}

/// The image type by its magic bytes.
#[must_use]
pub fn sniff_image(data: &[u8]) -> Option<&'static str> {
    if data.starts_with(&[0xFF, 0xD8, 0xFF]) && data.len() > 4 {
        Some("image/jpeg")
    } else if data.starts_with(b"\x89PNG\r\n\x1a\n") && data.len() > 8 {
        Some("image/png")
    } else {
        None
    }
}

/// For `multipart/form-data` without a `boundary` parameter (as `ab -T 'multipart/form-data'`
/// sends, in the seed's section 6.1), takes the boundary from the body's first line.
pub async fn infer_boundary(
    axum::extract::State(limit): axum::extract::State<usize>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<axum::response::Response, AppError> {
    use axum::http::header::CONTENT_TYPE;
    let needs = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.to_ascii_lowercase();
            ct.starts_with("multipart/form-data") && !ct.contains("boundary=")
        });
    if !needs {
        return Ok(next.run(req).await);
    }
    let (mut parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| AppError::PayloadTooLarge { limit })?;
    let boundary = bytes
        .strip_prefix(b"--")
        .and_then(|rest| rest.split(|b| *b == b'\n').next())
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|b| !b.is_empty() && b.len() <= 70 && b.iter().all(|c| c.is_ascii_graphic()))
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or_else(|| AppError::BadRequest {
            code: "MULTIPART_INVALID",
            message: "no multipart boundary found".into(),
        })?;
    let value =
        axum::http::HeaderValue::from_str(&format!("multipart/form-data; boundary={boundary}"))
            .map_err(|_| AppError::BadRequest {
                code: "MULTIPART_INVALID",
                message: "invalid multipart boundary".into(),
            })?;
    parts.headers.insert(CONTENT_TYPE, value);
    Ok(next
        .run(axum::extract::Request::from_parts(
            parts,
            axum::body::Body::from(bytes),
        ))
        .await)
}

#[cfg(test)]
mod tests {
    use super::sniff_image;

    #[test]
    fn only_jpeg_and_png_bytes_are_images() {
        assert_eq!(
            sniff_image(b"\xFF\xD8\xFF\xE0\x00\x10JFIF"),
            Some("image/jpeg")
        );
        assert_eq!(sniff_image(b"\x89PNG\r\n\x1a\n\x00\x00"), Some("image/png"));
        assert_eq!(sniff_image(b"GIF89a......"), None);
        assert_eq!(sniff_image(b"%PDF-1.7"), None);
        assert_eq!(sniff_image(b"\xFF\xD8"), None);
    }
}
