//! Tests for the QUIC decoder.
//!
//! Fixtures (`tests/fixtures/quic/`, see the README there):
//! - `bios-rgb32-720x400` and `linux-rgb32-320x240`: the QUIC image of the first full-surface
//!   `DRAW_COPY` of real QEMU sessions, with the SHA-256 of spice-gtk's rendering (the RGB of a
//!   `spicy-screenshot` PPM) and a cropped region of that PPM;
//! - `synthetic-*`: synthetic images encoded by spice-common's `quic_encode`, with the SHA-256 of
//!   what spice-common's `quic_decode` writes (as spice-gtk's canvas asks for it), as
//!   little-endian `u32` pixels.

use super::*;
use crate::render::test_util::sha256_hex;

const BIOS: &[u8] = include_bytes!("../../../tests/fixtures/quic/bios-rgb32-720x400.quic");
const BIOS_SHA256: &str = include_str!("../../../tests/fixtures/quic/bios-rgb32-720x400.rgb.sha256");
const BIOS_CROP: &[u8] = include_bytes!("../../../tests/fixtures/quic/bios-rgb32-720x400-crop-0-112.ppm");
const LINUX: &[u8] = include_bytes!("../../../tests/fixtures/quic/linux-rgb32-320x240.quic");
const LINUX_SHA256: &str = include_str!("../../../tests/fixtures/quic/linux-rgb32-320x240.rgb.sha256");
const LINUX_CROP: &[u8] = include_bytes!("../../../tests/fixtures/quic/linux-rgb32-320x240-crop-64-104.ppm");
const GRAY: &[u8] = include_bytes!("../../../tests/fixtures/quic/synthetic-gray-2100x7.quic");
const GRAY_SHA256: &str = include_str!("../../../tests/fixtures/quic/synthetic-gray-2100x7.pixels.sha256");
const RGB16: &[u8] = include_bytes!("../../../tests/fixtures/quic/synthetic-rgb16-160x96.quic");
const RGB16_SHA256: &str = include_str!("../../../tests/fixtures/quic/synthetic-rgb16-160x96.pixels.sha256");
const RGB24: &[u8] = include_bytes!("../../../tests/fixtures/quic/synthetic-rgb24-96x64.quic");
const RGB24_SHA256: &str = include_str!("../../../tests/fixtures/quic/synthetic-rgb24-96x64.pixels.sha256");
const RGBA: &[u8] = include_bytes!("../../../tests/fixtures/quic/synthetic-rgba-128x72.quic");
const RGBA_SHA256: &str = include_str!("../../../tests/fixtures/quic/synthetic-rgba-128x72.pixels.sha256");

/// Every fixture stream, for the robustness tests.
const ALL: [&[u8]; 6] = [BIOS, LINUX, GRAY, RGB16, RGB24, RGBA];

/// The hex digest at the start of a `sha256sum`-style line.
fn digest(line: &str) -> &str {
    line.split_whitespace().next().unwrap_or_default()
}

/// The R, G, B bytes of each pixel (what a P6 PPM holds).
fn rgb_bytes(image: &QuicImage) -> Vec<u8> {
    image.pixels.iter().flat_map(|p| [(p >> 16) as u8, (p >> 8) as u8, *p as u8]).collect()
}

/// Pixels as spice-gtk's canvas stores them on a little-endian machine.
fn le_bytes(image: &QuicImage) -> Vec<u8> {
    image.pixels.iter().flat_map(|p| p.to_le_bytes()).collect()
}

/// Parses a binary PPM (`P6`, maxval 255) without comments: `(width, height, rgb)`.
fn parse_ppm(data: &[u8]) -> (usize, usize, &[u8]) {
    let mut fields = Vec::new();
    let mut pos = 0;
    while fields.len() < 4 {
        while data[pos].is_ascii_whitespace() {
            pos += 1;
        }
        let start = pos;
        while !data[pos].is_ascii_whitespace() {
            pos += 1;
        }
        fields.push(std::str::from_utf8(&data[start..pos]).unwrap());
    }
    assert_eq!((fields[0], fields[3]), ("P6", "255"));
    let (w, h): (usize, usize) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    (w, h, &data[pos + 1..pos + 1 + w * h * 3])
}

/// Compares `image` with a PPM crop whose top-left corner is `(x0, y0)`; returns the number of
/// differing pixels and how many were compared.
fn compare_crop(image: &QuicImage, crop: &[u8], x0: usize, y0: usize) -> (usize, usize) {
    let (w, h, rgb) = parse_ppm(crop);
    let full = rgb_bytes(image);
    let width = image.width as usize;
    let mut bad = 0;
    for y in 0..h {
        for x in 0..w {
            let at = ((y0 + y) * width + x0 + x) * 3;
            if full[at..at + 3] != rgb[(y * w + x) * 3..(y * w + x) * 3 + 3] {
                bad += 1;
            }
        }
    }
    (bad, w * h)
}

/// A header with the given words.
fn header(magic: u32, version: u32, kind: u32, width: u32, height: u32) -> Vec<u8> {
    [magic, version, kind, width, height].iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Deterministic xorshift64 generator.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn bios_screen_matches_spice_gtk_pixel_for_pixel() {
    let image = decode(BIOS).unwrap();
    assert_eq!((image.kind, image.width, image.height), (QuicType::Rgb32, 720, 400));
    assert_eq!(image.pixels.len(), 720 * 400);
    assert!(image.pixels.iter().all(|p| p >> 24 == 0), "RGB32 decodes with a zero pad byte");
    assert_eq!(compare_crop(&image, BIOS_CROP, 0, 112), (0, 176 * 16));
    assert_eq!(sha256_hex(&rgb_bytes(&image)), digest(BIOS_SHA256));
}

#[test]
fn linux_console_with_noise_matches_spice_gtk_pixel_for_pixel() {
    let image = decode(LINUX).unwrap();
    assert_eq!((image.kind, image.width, image.height), (QuicType::Rgb32, 320, 240));
    assert!(image.pixels.iter().all(|p| p >> 24 == 0));
    assert_eq!(compare_crop(&image, LINUX_CROP, 64, 104), (0, 64 * 32));
    assert_eq!(sha256_hex(&rgb_bytes(&image)), digest(LINUX_SHA256));
}

#[test]
fn every_type_matches_spice_common() {
    for (data, kind, width, height, expected) in [
        (GRAY, QuicType::Gray, 2100, 7, GRAY_SHA256),
        (RGB16, QuicType::Rgb16, 160, 96, RGB16_SHA256),
        (RGB24, QuicType::Rgb24, 96, 64, RGB24_SHA256),
        (RGBA, QuicType::Rgba, 128, 72, RGBA_SHA256),
    ] {
        let image = decode(data).unwrap();
        assert_eq!((image.kind, image.width, image.height), (kind, width, height));
        assert_eq!(sha256_hex(&le_bytes(&image)), digest(expected), "{kind:?}");
    }
}

#[test]
fn rgb16_widens_five_bit_channels() {
    let image = decode(RGB16).unwrap();
    for p in &image.pixels {
        assert_eq!(p >> 24, 0);
        for shift in [0, 8, 16] {
            let v = (p >> shift) as u8;
            assert_eq!(v, ((v >> 3) << 3) | (v >> 5), "{p:#010x}");
        }
    }
}

#[test]
fn rgba_carries_alpha_and_gray_is_replicated() {
    let rgba = decode(RGBA).unwrap();
    let alphas: std::collections::BTreeSet<u32> = rgba.pixels.iter().map(|p| p >> 24).collect();
    assert!(alphas.len() > 100 && alphas.contains(&0) && alphas.contains(&255));
    let gray = decode(GRAY).unwrap();
    assert!(gray.pixels.iter().all(|p| p >> 24 == 0 && (p & 0xff) * 0x01_0101 == *p));
}

#[test]
fn hand_made_gray_pixels() {
    // A fresh model codes with Rice parameter 7: "1" and 7 remainder bits for folded residuals
    // below 128, "0" and 7 bits (plus 128) above. A residual r (mod 256) is folded to 2r for
    // 0 <= r < 128 and to 2(256 - r) - 1 otherwise; the first pixel is predicted as 0.
    let cases = [
        (0x8000_0000u32, 0u32),
        (0x8a00_0000, 5),
        (0x8100_0000, 255),
        (0xfe00_0000, 63),
        (0x7f00_0000, 128),
        (0x0000_0000, 64),
    ];
    for (word, value) in cases {
        let mut data = header(QUIC_MAGIC, 0, 1, 1, 1);
        data.extend_from_slice(&word.to_le_bytes());
        data.extend_from_slice(&[0; 4]);
        let image = decode(&data).unwrap();
        assert_eq!(image.pixels, [value * 0x01_0101], "{word:#x}");
        // Without the trailing zero word the 32-bit look-ahead cannot be refilled.
        assert_eq!(decode(&data[..24]), Err(QuicError::Truncated { words: 6 }));
    }
}

#[test]
fn header_errors() {
    let ok = |kind, w, h| header(QUIC_MAGIC, 0, kind, w, h);
    assert_eq!(decode(&header(0x4349_5552, 0, 4, 1, 1)), Err(QuicError::BadMagic(0x4349_5552)));
    assert_eq!(decode(b"QUIC"), Err(QuicError::Truncated { words: 1 }));
    assert_eq!(decode(&header(QUIC_MAGIC, 1, 4, 1, 1)), Err(QuicError::UnsupportedVersion(1)));
    assert_eq!(decode(&header(QUIC_MAGIC, 0x1_0000, 4, 1, 1)), Err(QuicError::UnsupportedVersion(0x1_0000)));
    for kind in [0, 6, 7, u32::MAX] {
        assert_eq!(decode(&ok(kind, 1, 1)), Err(QuicError::BadType(kind)));
    }
    for (w, h) in [(0, 1), (1, 0), (0, 0)] {
        assert_eq!(decode(&ok(4, w, h)), Err(QuicError::Empty { width: w, height: h }));
    }
    for (w, h) in [(16385, 1), (1, 16385), (16384, 16384), (8193, 8192), (u32::MAX, u32::MAX), (1 << 31, 2)] {
        assert_eq!(decode(&ok(4, w, h)), Err(QuicError::TooLarge { width: w, height: h }));
    }
    assert!(parse_header(&ok(4, 16384, 4096)).is_ok());
    assert!(parse_header(&ok(4, 8192, 8192)).is_ok());
    // A valid header and nothing else: the first data word is missing.
    assert_eq!(decode(&ok(4, 16384, 4096)), Err(QuicError::Truncated { words: 5 }));
    // A huge image claimed by a few words fails fast on truncation.
    let mut huge = ok(5, 16384, 4096);
    huge.extend_from_slice(&[0x55; 64]);
    assert!(matches!(decode(&huge), Err(QuicError::Truncated { words: 21 })));
    for kind in 1..=5 {
        assert_eq!(QuicType::from_wire(kind).map(QuicType::to_wire), Some(kind));
    }
}

#[test]
fn trailing_bytes_and_words_are_ignored() {
    let image = decode(RGB24).unwrap();
    for extra in [1usize, 3, 4, 64] {
        let mut data = RGB24.to_vec();
        data.extend(std::iter::repeat_n(0xa5, extra));
        assert_eq!(decode(&data).unwrap(), image);
    }
}

#[test]
fn every_truncation_is_an_error() {
    for data in ALL {
        // Every cut point of the last 48 bytes, and about 150 spread over the rest.
        let tail = data.len().saturating_sub(48);
        let step = (tail / 150).max(1);
        for cut in (0..tail).step_by(step).chain(tail..data.len()) {
            match decode(&data[..cut]) {
                Err(QuicError::Truncated { words }) => assert_eq!(words, cut / 4),
                other => panic!("cut at {cut} of {}: {:?}", data.len(), other.map(|i| i.kind)),
            }
        }
    }
}

#[test]
fn mutated_fixtures_never_panic() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let (mut decoded, mut refused) = (0, 0);
    for round in 0..2000 {
        let mut data = ALL[round % ALL.len()].to_vec();
        match rng.below(5) {
            0 => {
                for _ in 0..1 + rng.below(4) {
                    let at = 20 + rng.below(data.len() - 20);
                    data[at] ^= 1 << rng.below(8);
                }
            }
            1 => {
                for _ in 0..1 + rng.below(32) {
                    let at = 20 + rng.below(data.len() - 20);
                    data[at] = rng.next() as u8;
                }
            }
            2 => {
                let at = 20 + rng.below(data.len() - 20);
                let fill = [0, 0xff][rng.below(2)];
                let end = (at + rng.below(256)).min(data.len());
                data[at..end].fill(fill);
            }
            3 => data[8] = 1 + rng.below(5) as u8,
            _ => {
                let at = 20 + rng.below(data.len() - 20);
                for byte in &mut data[at..] {
                    *byte = rng.next() as u8;
                }
            }
        }
        match decode(&data) {
            Ok(image) => {
                assert_eq!(image.pixels.len(), (image.width * image.height) as usize);
                decoded += 1;
            }
            Err(_) => refused += 1,
        }
    }
    assert_eq!(decoded + refused, 2000);
}

#[test]
fn garbage_after_a_valid_header_never_panics() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for round in 0..600 {
        let kind = 1 + (round % 5) as u32;
        let (w, h) = (1 + rng.below(300) as u32, 1 + rng.below(40) as u32);
        let mut data = header(QUIC_MAGIC, 0, kind, w, h);
        let words = rng.below(4000);
        let bias = rng.below(3);
        for _ in 0..words {
            let word = match bias {
                0 => rng.next() as u32,
                1 => rng.next() as u32 | rng.next() as u32,
                _ => rng.next() as u32 & rng.next() as u32 & rng.next() as u32,
            };
            data.extend_from_slice(&word.to_le_bytes());
        }
        if let Ok(image) = decode(&data) {
            assert_eq!(image.pixels.len(), (w * h) as usize);
        }
    }
}

/// Decode speed; run with `cargo test --release -- --ignored --nocapture quic_decode_speed`.
#[test]
#[ignore = "benchmark"]
fn quic_decode_speed() {
    for (name, data) in [("bios 720x400", BIOS), ("linux 320x240", LINUX), ("rgba 128x72", RGBA)] {
        let rounds = 200;
        let start = std::time::Instant::now();
        let mut pixels = 0;
        for _ in 0..rounds {
            pixels += decode(std::hint::black_box(data)).unwrap().pixels.len();
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{name}: {:.3} ms per image, {:.1} Mpixel/s, {:.1} MB/s of QUIC input",
            secs * 1e3 / f64::from(rounds),
            pixels as f64 / secs / 1e6,
            (data.len() * rounds as usize) as f64 / secs / 1e6
        );
    }
}
