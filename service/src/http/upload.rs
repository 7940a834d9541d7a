//! Reading `multipart/form-data` uploads with limits: part count, text-field size, file-name
//! length, file size, and images: the type sniffed from the bytes (JPEG, PNG) and the dimensions
//! read from the header before any pixel is decoded. Also the payload fingerprint for idempotency,
//! taken over the parts' names and contents so that two uploads of the same files match even
//! though each client picks its own multipart boundary. Public so the fuzz targets reach it.

use std::collections::HashMap;
use std::io::Cursor;

use axum::extract::multipart::{Multipart, MultipartError};
use axum::http::StatusCode;
use sha2::{Digest, Sha256};

use crate::config::Settings;
use crate::error::AppError;

const MAX_NAME_BYTES: usize = 64;
/// What reading an image's header may allocate: PNG text chunks and JPEG markers, never pixels.
const HEADER_ALLOC_BYTES: u64 = 16 * 1024 * 1024;

/// The limits an upload is read under (`http.multipart_*`, `http.upload_body_limit`, `kyc.max_image_*`).
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    pub max_parts: usize,
    /// The bytes of one text part (any part not named as a file field).
    pub max_field_bytes: usize,
    pub max_file_name_bytes: usize,
    /// The bytes of one file part.
    pub max_file_bytes: usize,
    pub body_limit: usize,
    pub image: ImageLimits,
}

impl UploadLimits {
    #[must_use]
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            max_parts: s.http.multipart_max_parts,
            max_field_bytes: s.http.multipart_max_field_bytes,
            max_file_name_bytes: s.http.multipart_max_file_name_bytes,
            max_file_bytes: s.kyc.max_image_bytes,
            body_limit: s.http.upload_body_limit,
            image: ImageLimits {
                max_width: s.kyc.max_image_width,
                max_height: s.kyc.max_image_height,
                max_pixels: s.kyc.max_image_pixels,
            },
        }
    }
}

/// The largest image accepted, by its header.
#[derive(Debug, Clone, Copy)]
pub struct ImageLimits {
    pub max_width: u32,
    pub max_height: u32,
    pub max_pixels: u64,
}

/// What an image's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    pub mime: &'static str,
    pub width: u32,
    pub height: u32,
}

/// Why an image is refused before it is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageRefusal {
    /// Neither JPEG nor PNG by its magic bytes.
    NotAnImage,
    /// The magic bytes say JPEG or PNG but the header cannot be read, or declares no pixels.
    Unreadable,
    /// The header declares more width, height or pixels than allowed.
    TooLarge,
}

/// The type (by magic bytes) and dimensions (by header) of an image, within `limits`. Reads the
/// header only: a decompression bomb is refused by what it declares, before any pixel is decoded.
///
/// # Errors
/// Which [`ImageRefusal`] applies.
pub fn inspect_image(data: &[u8], limits: &ImageLimits) -> Result<ImageInfo, ImageRefusal> {
    let mime = sniff_image(data).ok_or(ImageRefusal::NotAnImage)?;
    let format = if mime == "image/png" {
        image::ImageFormat::Png
    } else {
        image::ImageFormat::Jpeg
    };
    let mut header_limits = image::Limits::default();
    header_limits.max_image_width = Some(limits.max_width);
    header_limits.max_image_height = Some(limits.max_height);
    header_limits.max_alloc = Some(HEADER_ALLOC_BYTES);
    let mut reader = image::ImageReader::with_format(Cursor::new(data), format);
    reader.limits(header_limits);
    let (width, height) = reader.into_dimensions().map_err(|e| match e {
        image::ImageError::Limits(_) => ImageRefusal::TooLarge,
        _ => ImageRefusal::Unreadable,
    })?;
    if width == 0 || height == 0 {
        return Err(ImageRefusal::Unreadable);
    }
    if width > limits.max_width
        || height > limits.max_height
        || u64::from(width) * u64::from(height) > limits.max_pixels
    {
        return Err(ImageRefusal::TooLarge);
    }
    Ok(ImageInfo {
        mime,
        width,
        height,
    })
}

pub struct Upload {
    files: HashMap<String, Vec<u8>>,
    texts: HashMap<String, String>,
    digest: Sha256,
    image_limits: ImageLimits,
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
    /// Reads every part. `file_fields` are kept as bytes, the rest as text, within `limits`.
    ///
    /// # Errors
    /// 400 for a malformed or truncated body or too long a file name, 413 beyond a size or count.
    pub async fn read(
        mut mp: Multipart,
        file_fields: &[&str],
        limits: &UploadLimits,
    ) -> Result<Self, AppError> {
        let mut up = Self {
            files: HashMap::new(),
            texts: HashMap::new(),
            digest: Sha256::new(),
            image_limits: limits.image,
        };
        let mut parts = 0;
        while let Some(mut field) = mp
            .next_field()
            .await
            .map_err(|e| multipart_error(&e, limits.body_limit))?
        {
            parts += 1;
            if parts > limits.max_parts {
                return Err(AppError::InputLimit {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    code: "MULTIPART_TOO_MANY_PARTS",
                    message: format!(
                        "the multipart body has more than {} parts",
                        limits.max_parts
                    ),
                });
            }
            let name = field.name().unwrap_or_default().to_owned();
            if name.is_empty() || name.len() > MAX_NAME_BYTES {
                return Err(AppError::BadRequest {
                    code: "MULTIPART_INVALID",
                    message: "a part has no name or too long a name".into(),
                });
            }
            if field
                .file_name()
                .is_some_and(|f| f.len() > limits.max_file_name_bytes)
            {
                return Err(AppError::InputLimit {
                    status: StatusCode::BAD_REQUEST,
                    code: "FILE_NAME_TOO_LONG",
                    message: format!(
                        "a part's file name exceeds {} bytes",
                        limits.max_file_name_bytes
                    ),
                });
            }
            let is_file = file_fields.contains(&name.as_str());
            let limit = if is_file {
                limits.max_file_bytes
            } else {
                limits.max_field_bytes
            };
            let mut data = Vec::new();
            while let Some(chunk) = field
                .chunk()
                .await
                .map_err(|e| multipart_error(&e, limits.body_limit))?
            {
                if data.len() + chunk.len() > limit {
                    return Err(if is_file {
                        AppError::PayloadTooLarge { limit }
                    } else {
                        AppError::InputLimit {
                            status: StatusCode::PAYLOAD_TOO_LARGE,
                            code: "FIELD_TOO_LARGE",
                            message: format!("a text field exceeds the {limit}-byte limit"),
                        }
                    });
                }
                data.extend_from_slice(&chunk);
            }
            up.digest.update((name.len() as u64).to_be_bytes());
            up.digest.update(name.as_bytes());
            up.digest.update((data.len() as u64).to_be_bytes());
            up.digest.update(&data);
            if is_file {
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

    /// The image in `field`: a JPEG or PNG by its bytes, whose header is readable and within the
    /// image limits.
    ///
    /// # Errors
    /// 400 when missing or empty, 415 when not an image, 422 when its header is unreadable or
    /// declares too large an image.
    pub fn image(&mut self, field: &'static str) -> Result<Vec<u8>, AppError> {
        let data = self
            .files
            .remove(field)
            .filter(|d| !d.is_empty())
            .ok_or_else(|| missing(field))?;
        let l = &self.image_limits;
        match inspect_image(&data, l) {
            Ok(_) => Ok(data),
            Err(ImageRefusal::NotAnImage) => Err(AppError::Field {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code: "UNSUPPORTED_MEDIA_TYPE",
                message: format!("the field {field} must be a JPEG or PNG image"),
                field,
            }),
            Err(ImageRefusal::Unreadable) => Err(invalid(
                field,
                "IMAGE_INVALID",
                format!("the field {field} is not a readable JPEG or PNG image"),
            )),
            Err(ImageRefusal::TooLarge) => Err(invalid(
                field,
                "IMAGE_DIMENSIONS_TOO_LARGE",
                format!(
                    "the field {field} must be at most {}x{} pixels and {} pixels in all",
                    l.max_width, l.max_height, l.max_pixels
                ),
            )),
        }
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
