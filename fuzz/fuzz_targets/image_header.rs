//! The service's image check (`kyc_service::http::upload::inspect_image`) on any bytes: the type
//! by magic bytes, the dimensions by the header alone. Never panics; an accepted image is within
//! the limits and of the sniffed type; only JPEG or PNG magic gets past the sniff.

#![no_main]

use kyc_service::http::upload::{ImageLimits, ImageRefusal, inspect_image, sniff_image};
use libfuzzer_sys::fuzz_target;

const LIMITS: ImageLimits = ImageLimits {
    max_width: 4096,
    max_height: 4096,
    max_pixels: 4_000_000,
};

fuzz_target!(|data: &[u8]| {
    match inspect_image(data, &LIMITS) {
        Ok(info) => {
            assert!((1..=LIMITS.max_width).contains(&info.width), "{info:?}");
            assert!((1..=LIMITS.max_height).contains(&info.height), "{info:?}");
            assert!(u64::from(info.width) * u64::from(info.height) <= LIMITS.max_pixels);
            assert_eq!(Some(info.mime), sniff_image(data));
        }
        Err(ImageRefusal::NotAnImage) => assert!(sniff_image(data).is_none()),
        Err(ImageRefusal::Unreadable | ImageRefusal::TooLarge) => {
            assert!(sniff_image(data).is_some());
        }
    }
});
