//! # kyc-vision
//!
//! An on-premises KYC vendor that reads real images: the front and back of the second-generation
//! resident ID card with PP-OCRv4 on ONNX Runtime. It serves the vendor HTTP contract
//! (`docs/vendor-api.yaml`) that `kyc-sandbox` also serves, so the service switches between them
//! through the `third_party.*` URLs alone.
//!
//! # Layout
//! - [`models`]: the models directory, the pinned SHA-256 check at start-up, ONNX Runtime.
//! - [`imaging`]: bounded decoding, OpenCV-compatible resizing, quality measures.
//! - [`ocr`]: the engine (detection, direction, recognition) as the Python reference does it.
//! - [`card`]: rows and labels to fields, GB 11643 cross-checks, quality flags.
//! - [`face`]: face detection (HOG, then CNN), dlib embeddings, the calibrated score, landmarks.
//! - [`liveness`]: the asked action, one person throughout and replays, from the 68 landmarks.
//! - [`reader`]: an image to the contract's answer; [`fixtures`]: generated identities on
//!   rendered cards with real portraits, and the degradations the accuracy test reads through.

pub mod card;
pub mod face;
pub mod fixtures;
pub mod http;
pub mod imaging;
pub mod liveness;
pub mod models;
pub mod ocr;
pub mod pool;
pub mod reader;
