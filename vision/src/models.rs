//! The models directory: which files kyc-vision opens, their pinned SHA-256 (the committed
//! `vision/models.sha256`, compiled in), the start-up check, and the one ONNX Runtime environment
//! of the process. Nothing is downloaded here: `scripts/install-vision.sh` installs the files.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest as _, Sha256};

/// Relative paths inside the models directory.
pub const DET: &str = "ocr/ch_PP-OCRv4_det_infer.onnx";
pub const REC: &str = "ocr/ch_PP-OCRv4_rec_infer.onnx";
pub const CLS: &str = "ocr/ch_ppocr_mobile_v2.0_cls_infer.onnx";
pub const ORT_LIB: &str = "onnxruntime/libonnxruntime.so.1.31.1";
/// Real photographs shipped in registry wheels (fixtures, not used to serve).
pub const FACE_ASTRONAUT: &str = "faces/astronaut.png";
pub const FACE_HOPPER: &str = "faces/grace_hopper.jpg";

/// The files the OCR opens.
pub const OCR_FILES: [&str; 4] = [ORT_LIB, DET, CLS, REC];
/// The files the face comparison opens.
pub const FACE_FILES: [&str; 4] = [
    "dlib/mmod_human_face_detector.dat",
    "dlib/shape_predictor_5_face_landmarks.dat",
    "dlib/shape_predictor_68_face_landmarks.dat",
    "dlib/dlib_face_recognition_resnet_model_v1.dat",
];

/// Every file `kyc-vision serve` opens, checked at start-up.
#[must_use]
pub fn served_files() -> Vec<&'static str> {
    OCR_FILES.iter().chain(&FACE_FILES).copied().collect()
}

/// What installs the models, named in every error about them.
pub const INSTALL: &str = "scripts/install-vision.sh";

const PINS: &str = include_str!("../models.sha256");

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("model file {0} is missing; install the models with {INSTALL}")]
    Missing(String),
    #[error(
        "model file {file} is corrupt (SHA-256 {got}, expected {expected}); reinstall with {INSTALL}"
    )]
    Corrupt {
        file: String,
        got: String,
        expected: String,
    },
    #[error("model file {file} cannot be loaded: {reason}; reinstall with {INSTALL}")]
    Load { file: String, reason: String },
    #[error("{0} has no pinned SHA-256 in vision/models.sha256")]
    Unpinned(String),
}

/// The pinned SHA-256 of a file, from `vision/models.sha256`.
#[must_use]
pub fn pin(rel: &str) -> Option<&'static str> {
    PINS.lines().find_map(|l| {
        let (hash, path) = l.split_once("  ")?;
        (path.trim() == rel).then_some(hash.trim())
    })
}

/// The models directory: the given one, else `$KYC_VISION_MODELS`, else `vision/models` next to
/// the crate (a checkout's default, as `scripts/install-vision.sh` writes it).
#[must_use]
pub fn dir(configured: Option<&Path>) -> PathBuf {
    configured
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("KYC_VISION_MODELS").map(PathBuf::from))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models"))
}

/// Checks that each file exists and has its pinned SHA-256.
///
/// # Errors
/// The first file that is missing, corrupt or unpinned.
pub fn verify(dir: &Path, files: &[&str]) -> Result<(), ModelError> {
    for &rel in files {
        let expected = pin(rel).ok_or_else(|| ModelError::Unpinned(rel.to_owned()))?;
        let path = dir.join(rel);
        let bytes = std::fs::read(&path).map_err(|_| ModelError::Missing(path_str(&path)))?;
        let got = hex::encode(Sha256::digest(&bytes));
        if got != expected {
            return Err(ModelError::Corrupt {
                file: path_str(&path),
                got,
                expected: expected.to_owned(),
            });
        }
    }
    Ok(())
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

static ENV: OnceLock<Result<ort::environment::Environment, ModelError>> = OnceLock::new();

/// The process's ONNX Runtime, loaded once from `<dir>/onnxruntime/` (the library from the
/// `onnxruntime` wheel). ONNX Runtime allows one environment per process: later calls return the
/// first one, whatever directory they name.
///
/// # Errors
/// The library cannot be opened or is older than the API `ort` needs.
pub fn environment(dir: &Path) -> Result<ort::environment::Environment, ModelError> {
    ENV.get_or_init(|| {
        let lib = dir.join(ORT_LIB);
        let load = |reason: String| ModelError::Load {
            file: path_str(&lib),
            reason,
        };
        ort::init_from(&lib)
            .map_err(|e| load(e.to_string()))?
            .with_name("kyc-vision")
            .build()
            .map_err(|e| load(e.to_string()))
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_opened_file_is_pinned() {
        for f in served_files().iter().chain(&[FACE_ASTRONAUT, FACE_HOPPER]) {
            let h = pin(f).unwrap_or_else(|| panic!("{f} unpinned"));
            assert_eq!(h.len(), 64, "{f}");
        }
        assert_eq!(pin("ocr/nothing.onnx"), None);
    }

    #[test]
    fn a_missing_or_corrupt_file_is_named_with_the_install_command() {
        let tmp = std::env::temp_dir().join(format!("kyc-vision-models-{}", std::process::id()));
        std::fs::create_dir_all(tmp.join("ocr")).expect("mkdir");
        let e = verify(&tmp, &[DET]).expect_err("missing");
        assert!(matches!(e, ModelError::Missing(_)));
        let line = e.to_string();
        assert!(line.contains(DET) && line.contains(INSTALL), "{line}");
        std::fs::write(tmp.join(DET), b"not a model").expect("write");
        let e = verify(&tmp, &[DET]).expect_err("corrupt");
        assert!(
            matches!(&e, ModelError::Corrupt { got, .. } if got.len() == 64),
            "{e}"
        );
        assert!(!e.to_string().contains('\n'));
        std::fs::remove_dir_all(&tmp).ok();
    }
}
