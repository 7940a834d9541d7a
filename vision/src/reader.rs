//! One card image to the contract's answer: decode under limits, read the lines, parse the side
//! that was asked for, cross-check and measure quality. Runs on a pool worker (blocking).

use image::RgbImage;
use kyc_sandbox::card::Warnings;
use kyc_sandbox::vendor::OcrResponse;
use serde::Serialize;
use uuid::Uuid;

use crate::card::{self, Back, Front, Quality, Reason};
use crate::ocr::{Engine, Line};

/// Mean chroma (max − min of R, G, B) of the card under which it counts as a photocopy.
pub const PHOTOCOPY_CHROMA: f64 = 6.0;

/// `POST /v1/idcard/ocr`, front: the sandbox's fields (so the service reads either vendor the same
/// way), then what only a real reader has: each field with its confidence, the reason codes of
/// the cross-checks and the quality flags, and the measures behind them.
#[derive(Debug, Clone, Serialize)]
pub struct FrontAnswer {
    /// The sandbox's answer, field for field; its `confidence` is the lowest field confidence.
    #[serde(flatten)]
    pub contract: OcrResponse,
    pub side: &'static str,
    pub fields: Front,
    pub reasons: Vec<Reason>,
    pub quality: Quality,
}

/// `POST /v1/idcard/ocr` with `"side": "back"`.
#[derive(Debug, Clone, Serialize)]
pub struct BackAnswer {
    pub request_id: Uuid,
    pub side: &'static str,
    pub issuing_authority: String,
    pub valid_from: String,
    pub valid_until: String,
    pub expired: bool,
    pub confidence: f64,
    pub fields: Back,
    pub reasons: Vec<Reason>,
    pub quality: Quality,
}

/// Why a card could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("no card found: {0}")]
    NoCard(&'static str),
    #[error("the OCR models failed on this image")]
    Engine,
}

fn lines(engine: &mut Engine, img: &RgbImage) -> Result<Vec<Line>, ReadError> {
    engine.read(img).map_err(|e| {
        tracing::error!(error = %e, "OCR inference failed");
        ReadError::Engine
    })
}

fn mean_chroma(img: &RgbImage) -> f64 {
    let n = f64::from(img.width() * img.height()).max(1.0);
    img.pixels()
        .map(|p| {
            let [r, g, b] = p.0;
            f64::from(r.max(g).max(b) - r.min(g).min(b))
        })
        .sum::<f64>()
        / n
}

/// Reads the front.
///
/// # Errors
/// [`ReadError::NoCard`] when no ID number is found.
pub fn front(engine: &mut Engine, img: &RgbImage) -> Result<FrontAnswer, ReadError> {
    let lines = lines(engine, img)?;
    let fields = card::parse_front(&card::rows(&lines));
    if fields.id_number.value.is_empty() {
        return Err(ReadError::NoCard(
            "no ID number (17 digits and a digit or X) was read; is this the front of a resident ID card?",
        ));
    }
    let quality = Quality::measure(img, &lines);
    let mut reasons = card::check_front(&fields);
    reasons.extend(quality.reasons());
    reasons.sort();
    reasons.dedup();
    let edited = reasons.iter().any(|r| {
        matches!(
            r,
            Reason::IdCheckCharacterInvalid
                | Reason::IdNumberMalformed
                | Reason::BirthDateMismatch
                | Reason::SexMismatch
        )
    });
    let confidence = [
        &fields.name,
        &fields.sex,
        &fields.ethnicity,
        &fields.birth_date,
        &fields.address,
        &fields.id_number,
    ]
    .iter()
    .map(|f| f64::from(f.confidence))
    .fold(1.0, f64::min);
    Ok(FrontAnswer {
        contract: OcrResponse {
            request_id: Uuid::new_v4(),
            name: fields.name.value.clone(),
            id_number: fields.id_number.value.clone(),
            sex: card::sex_of(&fields),
            ethnicity: fields.ethnicity.value.clone(),
            birth_date: fields.birth_date.value.clone(),
            address: fields.address.value.clone(),
            confidence: (confidence * 1000.0).round() / 1000.0,
            warnings: Warnings {
                photocopy: mean_chroma(img) < PHOTOCOPY_CHROMA,
                screen_reshoot: false,
                edited,
                low_quality: !quality.reasons().is_empty(),
            },
        },
        side: "front",
        fields,
        reasons,
        quality,
    })
}

/// Reads the back; `today` is `YYYY-MM-DD`.
///
/// # Errors
/// [`ReadError::NoCard`] when neither the authority nor the validity period is found.
pub fn back(engine: &mut Engine, img: &RgbImage, today: &str) -> Result<BackAnswer, ReadError> {
    let lines = lines(engine, img)?;
    let fields = card::parse_back(&card::rows(&lines));
    if fields.issuing_authority.value.is_empty() && fields.valid_until.value.is_empty() {
        return Err(ReadError::NoCard(
            "neither 签发机关 nor 有效期限 was read; is this the back of a resident ID card?",
        ));
    }
    let quality = Quality::measure(img, &lines);
    let expired = card::expired(&fields, today);
    let mut reasons = quality.reasons();
    if expired {
        reasons.push(Reason::CardExpired);
    }
    if fields.issuing_authority.value.is_empty() || fields.valid_until.value.is_empty() {
        reasons.push(Reason::FieldMissing);
    }
    reasons.sort();
    let confidence = f64::from(
        fields
            .issuing_authority
            .confidence
            .min(fields.valid_until.confidence),
    );
    Ok(BackAnswer {
        request_id: Uuid::new_v4(),
        side: "back",
        issuing_authority: fields.issuing_authority.value.clone(),
        valid_from: fields.valid_from.value.clone(),
        valid_until: fields.valid_until.value.clone(),
        expired,
        confidence: (confidence * 1000.0).round() / 1000.0,
        fields,
        reasons,
        quality,
    })
}
