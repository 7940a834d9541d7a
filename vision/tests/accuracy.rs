//! Reading accuracy on generated identities: each card rendered with the real font and a real
//! portrait, then read clean and through five degradations (blur, noise, a 4° turn, half
//! resolution, low contrast), after a JPEG round trip. Asserts field exact match ≥ 99% per field
//! and that no wrong ID number is ever accepted: a misread must fail its check character. Also
//! that the clean card raises no quality flag and the blurred one `BLURRED`.
//!
//! `KYC_VISION_ACCURACY_COUNT` identities (default 8, the CI smoke; `scripts/vision-accuracy.sh`
//! runs 50 in release).

use std::collections::BTreeMap;

use image::DynamicImage;
use kyc_vision::card::Reason;
use kyc_vision::fixtures::{self, CardFont, Degradation, Identity, render};
use kyc_vision::imaging::{self, DecodeLimits};
use kyc_vision::{models, ocr, reader};

const FIELDS: [&str; 6] = [
    "name",
    "sex",
    "ethnicity",
    "birth_date",
    "address",
    "id_number",
];

fn jpeg_round_trip(img: &image::RgbImage) -> image::RgbImage {
    let bytes = kyc_sandbox::imaging::encode_jpeg(
        &DynamicImage::ImageRgb8(img.clone()),
        fixtures::JPEG_QUALITY,
    );
    imaging::decode(&bytes, DecodeLimits::default()).expect("decodes")
}

#[test]
fn generated_cards_read_field_for_field_and_no_wrong_id_passes() {
    let count: u64 = std::env::var("KYC_VISION_ACCURACY_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let seed = 20_261_201;
    let dir = models::dir(None);
    models::verify(&dir, &models::OCR_FILES).unwrap_or_else(|e| panic!("{e}"));
    let mut engine = ocr::Engine::load(&dir, 2).expect("models load");
    let font = CardFont::open(std::path::Path::new(render::DEFAULT_FONT)).expect("font");
    let photos = fixtures::photographs(&dir).expect("photographs");

    // per degradation, per field: (right, total)
    let mut table: BTreeMap<(&str, &str), (u32, u32)> = BTreeMap::new();
    let mut misses = Vec::new();
    let (mut wrong_ids, mut wrong_ids_flagged) = (0, 0);
    let mut back_right = 0;
    let mut quality_wrong = 0;
    let started = std::time::Instant::now();
    for n in 0..count {
        let id = Identity::generate(seed, n);
        let photo = &photos[(n % photos.len() as u64) as usize];
        let front = render::front(&font, &id, photo, seed ^ n);
        for d in Degradation::ALL {
            let img = jpeg_round_trip(&d.apply(&front, seed ^ n));
            let truth = [
                id.name.as_str(),
                id.sex.as_str(),
                id.ethnicity.as_str(),
                id.birth_date.as_str(),
                id.address.as_str(),
                id.id_number.as_str(),
            ];
            let got = match reader::front(&mut engine, &img) {
                Ok(a) => [
                    a.fields.name.value,
                    a.fields.sex.value,
                    a.fields.ethnicity.value,
                    a.fields.birth_date.value,
                    a.fields.address.value,
                    a.fields.id_number.value.clone(),
                ]
                .map(Some)
                .into_iter()
                .chain([serde_json::to_string(&a.reasons).ok()])
                .collect::<Vec<_>>(),
                Err(e) => {
                    misses.push(format!("#{n} {}: {e}", d.name()));
                    vec![None; 7]
                }
            };
            for (i, field) in FIELDS.iter().enumerate() {
                let e = table.entry((d.name(), field)).or_default();
                e.1 += 1;
                if got[i].as_deref() == Some(truth[i]) {
                    e.0 += 1;
                } else {
                    // the identity is generated: its fields are not personal data
                    misses.push(format!(
                        "#{n} {} {field}: read {:?}, printed {:?}",
                        d.name(),
                        got[i],
                        truth[i]
                    ));
                }
            }
            // the quality flags: none on the clean card, BLURRED on the blurred one
            let reasons = got[6].clone().unwrap_or_default();
            let quality_flagged = ["BLURRED", "OVEREXPOSED", "UNDEREXPOSED", "CARD_TOO_SMALL"]
                .iter()
                .any(|r| reasons.contains(r));
            match d {
                Degradation::Clean if quality_flagged => {
                    misses.push(format!("#{n} clean: quality flagged {reasons}"));
                    quality_wrong += 1;
                }
                Degradation::Blur if !reasons.contains("BLURRED") => {
                    misses.push(format!("#{n} blur: not flagged BLURRED ({reasons})"));
                    quality_wrong += 1;
                }
                _ => {}
            }
            if let Some(read_id) = &got[5]
                && read_id != truth[5]
            {
                wrong_ids += 1;
                let reasons = got[6].clone().unwrap_or_default();
                if reasons.contains("ID_CHECK_CHARACTER_INVALID")
                    || reasons.contains("ID_NUMBER_MALFORMED")
                {
                    wrong_ids_flagged += 1;
                }
            }
        }
        let back = reader::back(
            &mut engine,
            &jpeg_round_trip(&render::back(&font, &id, seed ^ n)),
            "2026-12-01",
        );
        match back {
            Ok(b)
                if b.issuing_authority == id.issuing_authority
                    && b.valid_from == id.valid_from
                    && b.valid_until == id.valid_until =>
            {
                back_right += 1;
                let expired = id.valid_until != "长期" && id.valid_until.as_str() < "2026-12-01";
                assert_eq!(b.expired, expired, "#{n}");
                assert_eq!(b.reasons.contains(&Reason::CardExpired), expired);
            }
            other => misses.push(format!("#{n} back: {other:?}")),
        }
    }
    let reads = count * Degradation::ALL.len() as u64;
    eprintln!(
        "{count} identities, {reads} front reads + {count} back reads in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    eprint!("{:<12}", "field");
    for d in Degradation::ALL {
        eprint!("{:>12}", d.name());
    }
    eprintln!("{:>10}", "all");
    let mut worst = 1.0f64;
    for field in FIELDS {
        eprint!("{field:<12}");
        let (mut r, mut t) = (0, 0);
        for d in Degradation::ALL {
            let (ok, all) = table[&(d.name(), field)];
            eprint!("{:>12}", format!("{ok}/{all}"));
            r += ok;
            t += all;
        }
        let rate = f64::from(r) / f64::from(t);
        worst = worst.min(rate);
        eprintln!("{:>9.2}%", rate * 100.0);
    }
    eprintln!("back (authority, validity): {back_right}/{count}");
    eprintln!(
        "wrong ID numbers read: {wrong_ids}, flagged by the check character: {wrong_ids_flagged}"
    );
    for m in &misses {
        eprintln!("  miss: {m}");
    }
    assert_eq!(
        quality_wrong, 0,
        "quality flags wrong on {quality_wrong} cards"
    );
    assert_eq!(
        wrong_ids, wrong_ids_flagged,
        "a wrong ID number passed its check character"
    );
    assert!(
        worst >= 0.99,
        "a field is read exactly in {:.2}% < 99%",
        worst * 100.0
    );
    assert!(
        f64::from(back_right) >= 0.99 * count as f64,
        "backs read {back_right}/{count}"
    );
}
