//! The three vendor operations on parsed requests: request and response bodies of the contract,
//! and the calls into the card reader, the face matcher and the liveness rule. No HTTP here.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::card::{self, Warnings};
use crate::error::SandboxError;
use crate::face;
use crate::id_number::Sex;
use crate::imaging::{self, ImageError};
pub use crate::liveness::Action;
use crate::liveness::{self, Reason};

/// Which side of the card an OCR request holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The portrait side (name, ID number, address, photo).
    #[default]
    Front,
    /// The issuing-authority side; the sandbox has no back-side cards.
    Back,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OcrRequest {
    pub image: String,
    #[serde(default)]
    pub side: Option<Side>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OcrResponse {
    pub request_id: Uuid,
    pub name: String,
    pub id_number: String,
    pub sex: Sex,
    pub ethnicity: String,
    pub birth_date: String,
    pub address: String,
    pub confidence: f64,
    pub warnings: Warnings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaceRequest {
    pub image_a: String,
    pub image_b: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceResponse {
    pub request_id: Uuid,
    pub score: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LivenessRequest {
    pub action: Action,
    pub frames: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LivenessResponse {
    pub request_id: Uuid,
    pub passed: bool,
    pub score: f64,
    pub reason: Option<Reason>,
}

fn image(field: &str, text: &str) -> Result<image::RgbImage, SandboxError> {
    imaging::decode_base64(text).map_err(|e| {
        SandboxError::InvalidImage(match e {
            ImageError::Base64 => format!("{field}: not valid base64"),
            other => format!("{field}: {other}"),
        })
    })
}

/// `POST /v1/idcard/ocr`.
///
/// # Errors
/// `INVALID_IMAGE`, or `NO_CARD_FOUND` for the back side or an image without a readable card.
pub fn ocr(req: &OcrRequest) -> Result<OcrResponse, SandboxError> {
    let img = image("image", &req.image)?;
    if req.side.unwrap_or_default() == Side::Back {
        return Err(SandboxError::NoCardFound(
            "the sandbox reads only the front (portrait side) of its own cards".into(),
        ));
    }
    let r = card::read(&img).map_err(|e| SandboxError::NoCardFound(e.to_string()))?;
    Ok(OcrResponse {
        request_id: Uuid::new_v4(),
        name: r.data.name,
        id_number: r.data.id_number,
        sex: r.sex,
        ethnicity: r.data.ethnicity,
        birth_date: r.birth_date,
        address: r.data.address,
        confidence: r.confidence,
        warnings: r.warnings,
    })
}

/// `POST /v1/face/compare`.
///
/// # Errors
/// `INVALID_IMAGE`, or `NO_FACE_FOUND` naming the image without a face.
pub fn compare(req: &FaceRequest) -> Result<FaceResponse, SandboxError> {
    let a = image("image_a", &req.image_a)?;
    let b = image("image_b", &req.image_b)?;
    let fa = face::features(&a).map_err(|e| SandboxError::NoFaceFound(format!("image_a: {e}")))?;
    let fb = face::features(&b).map_err(|e| SandboxError::NoFaceFound(format!("image_b: {e}")))?;
    Ok(FaceResponse {
        request_id: Uuid::new_v4(),
        score: face::score(face::cosine(&fa, &fb)),
    })
}

/// `POST /v1/liveness/check`.
///
/// # Errors
/// `BAD_REQUEST` for a frame count outside 2..=30, `INVALID_IMAGE` naming the bad frame.
pub fn liveness(req: &LivenessRequest) -> Result<LivenessResponse, SandboxError> {
    let n = req.frames.len();
    if !(liveness::MIN_FRAMES..=liveness::MAX_FRAMES).contains(&n) {
        return Err(SandboxError::BadRequest(format!(
            "frames must hold {}..={} images, got {n}",
            liveness::MIN_FRAMES,
            liveness::MAX_FRAMES
        )));
    }
    let frames = req
        .frames
        .iter()
        .enumerate()
        .map(|(i, f)| image(&format!("frames[{i}]"), f))
        .collect::<Result<Vec<_>, _>>()?;
    let outcome = liveness::check(&frames, req.action);
    tracing::debug!(action = %req.action, ?outcome, "liveness judged");
    Ok(LivenessResponse {
        request_id: Uuid::new_v4(),
        passed: outcome.passed,
        score: outcome.score,
        reason: outcome.reason,
    })
}
