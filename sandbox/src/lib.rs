//! # kyc-sandbox
//!
//! A SANDBOX stand-in for the KYC vendors (ID-card OCR, face comparison, liveness) for local
//! runs and tests: one process serves all three behind the vendor HTTP contract
//! (`docs/vendor-api.yaml`), with fault injection and call counters. It is not a real vendor: it
//! "reads" only the cards it generates itself and matches only its own synthetic faces.
//!
//! # Layout
//! - [`app`]: [`Config`], the shared [`SandboxState`], [`serve`] on a given listener, and
//!   [`spawn`] for in-process tests.
//! - [`http`]: routes, API key, body limit, the admin API; [`error`]: the one error body.
//! - [`vendor`]: the three operations on parsed requests, and the contract's bodies.
//! - [`faults`]: fault configuration, `X-Sandbox-*` headers, the decision per call;
//!   [`stats`]: call counters.
//! - [`card`]: the sandbox ID card, its data band, and the reader ("OCR").
//! - [`face`]: synthetic faces, finding a face, feature vectors and scores.
//! - [`liveness`]: the liveness rule, deciding each action from the frames;
//!   [`acting`]: a synthetic face acting the actions out, as frames and videos.
//! - [`fixtures`]: a person's card, photocopy, selfies and liveness frames; [`id_number`]: GB 11643.
//! - [`imaging`], [`font`], [`prng`]: decoding and drawing, a bitmap font, a stable generator;
//!   [`y4m`]: `.y4m` video for a browser's fake camera.

pub mod acting;
pub mod app;
pub mod card;
pub mod error;
pub mod face;
pub mod faults;
pub mod fixtures;
pub mod font;
pub mod http;
pub mod id_number;
pub mod imaging;
pub mod liveness;
pub mod prng;
pub mod stats;
pub mod vendor;
pub mod y4m;

pub use acting::{liveness_frames, liveness_frames_rgb, liveness_video, still_video};
pub use app::{Config, RunningSandbox, SandboxState, serve, spawn};
pub use fixtures::{Fixtures, Person, fixtures};
pub use http::router;
pub use liveness::Action;
pub use y4m::write_y4m;
