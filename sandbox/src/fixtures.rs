//! Test fixtures for one synthetic person: the ID card (and a photocopy of it), a selfie of the
//! same face, a selfie of someone else, and a short liveness sequence, as JPEG bytes, plus a
//! README listing what the sandbox will answer for them. Used by the CLI and by tests.

use std::path::{Path, PathBuf};

use image::{DynamicImage, RgbImage};

use crate::acting;
use crate::card::{self, CardData};
use crate::face::{self, Face, Pose};
use crate::id_number::{IdNumber, IdNumberError};
use crate::imaging;
use crate::liveness::Action;

pub const DEFAULT_ADDRESS: &str = "北京市朝阳区建国路1号";
pub const DEFAULT_ETHNICITY: &str = "汉";
/// JPEG quality of every fixture.
pub const JPEG_QUALITY: u8 = 85;
/// `face.jpg` scores at least this against the card (see [`SELFIES`]).
pub const SAME_MIN_SCORE: f64 = 0.9;
/// `face_other.jpg` is redrawn until its score against the card is at most this.
pub const OTHER_MAX_SCORE: f64 = 0.3;
/// Frames per action in [`Fixtures::liveness_actions`].
pub const LIVENESS_FRAMES: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersonError {
    #[error("invalid ID number: {0}")]
    IdNumber(#[from] IdNumberError),
    #[error("the {field} must not be empty")]
    Empty { field: &'static str },
    #[error("the {field} is too long for the card: {len} bytes of UTF-8, at most {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
}

/// A synthetic person, valid for a card once constructed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    name: String,
    id_number: IdNumber,
    address: String,
    ethnicity: String,
}

fn field(field: &'static str, value: &str, max: usize) -> Result<String, PersonError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(PersonError::Empty { field });
    }
    if value.len() > max {
        return Err(PersonError::TooLong {
            field,
            len: value.len(),
            max,
        });
    }
    Ok(value.to_owned())
}

impl Person {
    /// A person with the default ethnicity (汉) and, when `address` is `None`, the default address.
    ///
    /// # Errors
    /// When the name or address is empty or too long, or the ID number is not valid (GB 11643).
    pub fn new(name: &str, id_number: &str, address: Option<&str>) -> Result<Self, PersonError> {
        Ok(Self {
            name: field("name", name, card::MAX_NAME_BYTES)?,
            id_number: IdNumber::parse(id_number)?,
            address: field(
                "address",
                address.unwrap_or(DEFAULT_ADDRESS),
                card::MAX_ADDRESS_BYTES,
            )?,
            ethnicity: DEFAULT_ETHNICITY.to_owned(),
        })
    }

    /// # Errors
    /// When the ethnicity is empty or too long.
    pub fn with_ethnicity(mut self, ethnicity: &str) -> Result<Self, PersonError> {
        self.ethnicity = field("ethnicity", ethnicity, card::MAX_ETHNICITY_BYTES)?;
        Ok(self)
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
    #[must_use]
    pub fn id_number(&self) -> &IdNumber {
        &self.id_number
    }
    #[must_use]
    pub fn address(&self) -> &str {
        &self.address
    }
    #[must_use]
    pub fn ethnicity(&self) -> &str {
        &self.ethnicity
    }

    /// What the card says.
    #[must_use]
    pub fn card_data(&self) -> CardData {
        CardData {
            name: self.name.clone(),
            ethnicity: self.ethnicity.clone(),
            id_number: self.id_number.as_str().to_owned(),
            address: self.address.clone(),
        }
    }

    /// This person's face, derived from the ID number.
    #[must_use]
    pub fn face(&self) -> Face {
        Face::from_label(&format!("kyc-sandbox face v1:{}", self.id_number.as_str()))
    }

    /// The card at its nominal size, before JPEG encoding.
    #[must_use]
    pub fn card_image(&self) -> RgbImage {
        card::render(&self.card_data(), &self.face())
    }
}

/// One person's fixtures, as file contents.
#[derive(Debug, Clone)]
pub struct Fixtures {
    pub person: Person,
    /// `idcard.jpg`: the card, 856x540.
    pub idcard: Vec<u8>,
    /// `idcard_photocopy.jpg`: the same card in grayscale.
    pub idcard_photocopy: Vec<u8>,
    /// `face.jpg`: a selfie of the card's face, larger, elsewhere in the frame and brighter.
    pub face: Vec<u8>,
    /// `face_other.jpg`: a selfie of someone else.
    pub face_other: Vec<u8>,
    /// `liveness_1.jpg`..`liveness_3.jpg`: the selfie blinking (open, closed, open): passes
    /// `blink`, and only `blink`.
    pub liveness: Vec<Vec<u8>>,
    /// `liveness_<action>_1.jpg`..: 320x240 frames of this face performing each action (rest,
    /// acted, rest, acted; see [`crate::acting`]): each passes its own action.
    pub liveness_actions: Vec<(Action, Vec<Vec<u8>>)>,
    /// Scores the sandbox gives these files.
    pub score_face: f64,
    pub score_other: f64,
    /// `README.txt`.
    pub readme: String,
}

fn jpeg(img: RgbImage) -> Vec<u8> {
    imaging::encode_jpeg(&DynamicImage::ImageRgb8(img), JPEG_QUALITY)
}

/// A 480x640 selfie of `face`.
fn selfie(face: &Face, pose: Pose) -> RgbImage {
    let mut img = crate::acting::backdrop(480, 640);
    face.draw(&mut img, pose);
    img
}

const SELFIE: Pose = Pose::new(250.0, 290.0, 125.0, 1.12);

/// Selfie poses tried in turn until one scores at least [`SAME_MIN_SCORE`] against the card
/// (in a sweep of 150 ID numbers the first always did, at 0.96 or more).
const SELFIES: [Pose; 3] = [
    SELFIE,
    Pose::new(240.0, 300.0, 110.0, 1.05),
    Pose::new(240.0, 300.0, 100.0, 1.0),
];

/// Scores JPEGs against one image the way the sandbox's face endpoint does.
struct Scorer(Option<Vec<f32>>);

impl Scorer {
    fn new(reference: &[u8]) -> Self {
        Self(
            imaging::decode(reference)
                .ok()
                .and_then(|img| face::features(&img).ok()),
        )
    }

    fn score(&self, jpeg: &[u8]) -> f64 {
        let other = imaging::decode(jpeg)
            .ok()
            .and_then(|img| face::features(&img).ok());
        match (&self.0, other) {
            (Some(a), Some(b)) => face::score(face::cosine(a, &b)),
            _ => 0.0,
        }
    }
}

/// Generates the fixtures of `person`. Deterministic: the same person gives the same bytes.
#[must_use]
pub fn fixtures(person: &Person) -> Fixtures {
    let card = person.card_image();
    let idcard_photocopy = imaging::encode_jpeg(
        &DynamicImage::ImageLuma8(imaging::to_gray(&card)),
        JPEG_QUALITY,
    );
    let idcard = jpeg(card);
    let scorer = Scorer::new(&idcard);
    let face = person.face();

    // The selfie: the first pose (normally the first) that scores at least SAME_MIN_SCORE.
    let mut best: Option<(f64, Vec<u8>)> = None;
    for pose in SELFIES {
        let bytes = jpeg(selfie(&face, pose));
        let s = scorer.score(&bytes);
        if best.as_ref().is_none_or(|(b, _)| s > *b) {
            best = Some((s, bytes));
        }
        if s >= SAME_MIN_SCORE {
            break;
        }
    }
    let (score_face, face_jpg) = best.expect("at least one selfie is drawn");

    // Someone else: the first of a few candidate faces that scores low against the card.
    let other_pose = Pose::new(230.0, 300.0, 118.0, 1.0);
    let mut best: Option<(f64, Vec<u8>)> = None;
    for k in 0..16 {
        let other = Face::from_label(&format!(
            "kyc-sandbox other face v1:{}:{k}",
            person.id_number.as_str()
        ));
        let bytes = jpeg(selfie(&other, other_pose));
        let s = scorer.score(&bytes);
        if best.as_ref().is_none_or(|(b, _)| s < *b) {
            best = Some((s, bytes));
        }
        if s <= OTHER_MAX_SCORE {
            break;
        }
    }
    let (score_other, face_other) = best.expect("at least one candidate face is drawn");

    let liveness = (0..3)
        .map(|i| {
            let pose = Pose {
                eyes_closed: i == 1,
                ..SELFIE
            };
            jpeg(selfie(&face, pose))
        })
        .collect();
    let liveness_actions = Action::ALL
        .into_iter()
        .map(|a| (a, acting::liveness_frames(person, a, LIVENESS_FRAMES)))
        .collect();
    let readme = readme(person, score_face, score_other);
    Fixtures {
        person: person.clone(),
        idcard,
        idcard_photocopy,
        face: face_jpg,
        face_other,
        liveness,
        liveness_actions,
        score_face,
        score_other,
        readme,
    }
}

fn readme(p: &Person, score_face: f64, score_other: f64) -> String {
    let id = p.id_number();
    format!(
        "KYC SANDBOX FIXTURES - synthetic data for the kyc-sandbox vendor stand-in. Not a real person,
not a real ID card; a real vendor will not read these.

Person
  name        {name}
  id_number   {id_number}
  sex         {sex}
  ethnicity   {ethnicity}
  birth_date  {birth}
  address     {address}

POST /v1/idcard/ocr
  idcard.jpg            -> 200 with the fields above, confidence 0.98, no warnings
  idcard_photocopy.jpg  -> 200 with the same fields and warnings.photocopy = true

POST /v1/face/compare
  idcard.jpg vs face.jpg         -> score {score_face:.4} (the same person)
  idcard.jpg vs face_other.jpg   -> score {score_other:.4} (another person)
  idcard_photocopy.jpg           -> 422 NO_FACE_FOUND (the face finder needs colour)

POST /v1/liveness/check
  liveness_1.jpg .. liveness_3.jpg with action blink   -> passed = true (the face blinks)
  liveness_<action>_1.jpg .. _4.jpg with that action   -> passed = true (320x240, the face
                                                          performs it: blink, open_mouth, nod,
                                                          shake_head, turn_left, turn_right)
  the same frames with another action                  -> passed = false, ACTION_NOT_DETECTED
                                                          (shake_head frames also pass the turns)
  the same frame repeated                              -> passed = false, reason STATIC_FRAMES
  turn_left is the user's own left: the face turns towards the image's right.
  A video of a whole challenge for a fake camera: kyc-sandbox liveness-video --help

Regenerate with:
  kyc-sandbox fixtures --name '{name}' --id {id_number} --address '{address}' --out DIR
",
        name = p.name(),
        id_number = id.as_str(),
        sex = id.sex().as_str(),
        ethnicity = p.ethnicity(),
        birth = id.birth_date(),
        address = p.address(),
    )
}

impl Fixtures {
    /// Writes every file into `dir` (created if missing) and returns their paths.
    ///
    /// # Errors
    /// When the directory or a file cannot be written.
    pub fn write(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut files: Vec<(String, &[u8])> = vec![
            ("idcard.jpg".into(), &self.idcard),
            ("idcard_photocopy.jpg".into(), &self.idcard_photocopy),
            ("face.jpg".into(), &self.face),
            ("face_other.jpg".into(), &self.face_other),
        ];
        for (i, frame) in self.liveness.iter().enumerate() {
            files.push((format!("liveness_{}.jpg", i + 1), frame));
        }
        for (action, frames) in &self.liveness_actions {
            for (i, frame) in frames.iter().enumerate() {
                files.push((format!("liveness_{action}_{}.jpg", i + 1), frame));
            }
        }
        files.push(("README.txt".into(), self.readme.as_bytes()));
        files
            .into_iter()
            .map(|(name, bytes)| {
                let path = dir.join(name);
                std::fs::write(&path, bytes)?;
                Ok(path)
            })
            .collect()
    }
}
