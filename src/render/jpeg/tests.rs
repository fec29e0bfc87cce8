//! The decoder against libjpeg-turbo's own output for the same bitstreams.
//!
//! References (`*.islow.rgb`, `*.ifast.rgb`) were written once by Debian
//! bookworm's libjpeg-turbo 2.1.5 `djpeg`: `djpeg -rgb -ppm` (spice-gtk's
//! JPEG image settings) and `djpeg -rgb -dct fast -nosmooth -ppm` (its
//! MJPEG settings), header stripped (tests/fixtures/jpeg/README.md).

use super::*;

const MAX: u32 = 8192;

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jpeg").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Decodes `name.jpg` with `options` and compares with `name.<suffix>.rgb`:
/// every byte must be equal.
fn assert_equals_reference(name: &str, suffix: &str, options: &DecodeOptions) {
    let img = decode_exact(&fixture(&format!("{name}.jpg")), options).unwrap_or_else(|e| panic!("{name}: {e}"));
    let reference = fixture(&format!("{name}.{suffix}.rgb"));
    assert_eq!(img.rgb.len(), reference.len(), "{name}: size");
    let differing = img.rgb.chunks(3).zip(reference.chunks(3)).filter(|(a, b)| a != b).count();
    assert_eq!(differing, 0, "{name} ({suffix}): {differing} pixels differ from libjpeg-turbo's");
}

#[test]
fn jpeg_images_recorded_from_qemu_equal_libjpeg_turbo() {
    // A 1024x48 band of random noise, 4:2:0 (the busy picture spice-gtk
    // and zune-jpeg disagreed on), glyphs 22 pixels wide (an odd chroma
    // edge), and a 400x32 console strip.
    for name in ["qemu-noise-band", "qemu-glyphs-22x10", "qemu-linux-image"] {
        assert_equals_reference(name, "islow", &DecodeOptions::spice_gtk_image(MAX, MAX));
    }
}

#[test]
fn mjpeg_frames_recorded_from_qemu_equal_libjpeg_turbo_fast_path() {
    // The noise band as an MJPEG stream frame without Huffman tables, and
    // a small frame with its own.
    for name in ["qemu-linux-mjpeg-frame-no-dht", "qemu-linux-mjpeg-frame"] {
        assert_equals_reference(name, "ifast", &DecodeOptions::spice_gtk_mjpeg(MAX, MAX));
    }
}

#[test]
fn every_sampling_and_layout_equals_libjpeg_turbo() {
    // cjpeg of a 37x29 noise picture (odd in both directions) at each
    // sampling, with restart markers, grayscale and untransformed RGB;
    // and pictures narrower than the fancy filters need.
    let names = [
        "n37x29-1x1",
        "n37x29-2x1",
        "n37x29-1x2",
        "n37x29-2x2",
        "n37x29-4x1",
        "n37x29-4x2",
        "n37x29-restart",
        "n37x29-gray",
        "n37x29-rgb",
        "n5x17-2x2",
        "n3x3-2x1",
    ];
    for name in names {
        let name = format!("cjpeg/{name}");
        assert_equals_reference(&name, "islow", &DecodeOptions::spice_gtk_image(MAX, MAX));
        assert_equals_reference(&name, "ifast", &DecodeOptions::spice_gtk_mjpeg(MAX, MAX));
    }
}

#[test]
fn progressive_jpeg_goes_to_the_general_decoder() {
    let data = fixture("cjpeg/n37x29-progressive.jpg");
    let options = DecodeOptions::spice_gtk_image(MAX, MAX);
    assert_eq!(decode_exact(&data, &options), Err(JpegError::Unsupported("progressive")));
    let img = decode(&data, &options).unwrap();
    let reference = fixture("cjpeg/n37x29-progressive.islow.rgb");
    let sum: u64 = img.rgb.iter().zip(&reference).map(|(a, b)| u64::from(a.abs_diff(*b))).sum();
    let mae = sum as f64 / reference.len() as f64;
    assert!(mae < 3.0, "mean absolute error {mae} against libjpeg-turbo");
}

#[test]
fn pictures_outside_the_bounds_are_refused_before_decoding() {
    let data = fixture("qemu-noise-band.jpg");
    assert_eq!(
        decode(&data, &DecodeOptions::spice_gtk_image(1023, 48)),
        Err(JpegError::BadSize { width: 1024, height: 48 })
    );
    assert!(decode(&data, &DecodeOptions::spice_gtk_image(1024, 47)).is_err());
    // A frame header saying 0 lines (height from a DNL marker) is refused.
    let mut zero = data.clone();
    let sof = zero.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
    zero[sof + 5] = 0;
    zero[sof + 6] = 0;
    assert!(matches!(decode_exact(&zero, &DecodeOptions::spice_gtk_image(MAX, MAX)), Err(JpegError::BadSize { .. })));
}

#[test]
fn malformed_headers_are_typed_errors() {
    let opts = DecodeOptions::spice_gtk_image(MAX, MAX);
    assert_eq!(decode_exact(&[], &opts), Err(JpegError::Malformed("no SOI")));
    assert_eq!(decode_exact(&[0xff, 0xd8], &opts), Err(JpegError::Truncated));
    assert_eq!(decode_exact(&[0xff, 0xd8, 0xff, 0xd9], &opts), Err(JpegError::Truncated));
    // A segment length under 2.
    assert!(matches!(decode_exact(&[0xff, 0xd8, 0xff, 0xdb, 0, 1], &opts), Err(JpegError::Malformed(_))));
    // SOS before any frame header.
    assert_eq!(
        decode_exact(&[0xff, 0xd8, 0xff, 0xda, 0, 8, 1, 1, 0, 0, 63, 0], &opts),
        Err(JpegError::Malformed("SOS before SOF"))
    );
    // A quantisation table numbered 4.
    let mut dqt = vec![0xff, 0xd8, 0xff, 0xdb, 0, 67, 0x04];
    dqt.extend([1u8; 64]);
    assert_eq!(decode_exact(&dqt, &opts), Err(JpegError::Malformed("DQT")));
    // A Huffman table claiming more symbols than it holds.
    let mut dht = vec![0xff, 0xd8, 0xff, 0xc4, 0, 19, 0x00];
    dht.extend([0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(decode_exact(&dht, &opts), Err(JpegError::BadHuffmanTable));
    // A frame with a table the scan never defined: the quantisation table.
    let data = fixture("qemu-glyphs-22x10.jpg");
    let dqt_at = data.windows(2).position(|w| w == [0xff, 0xdb]).unwrap();
    let mut no_dqt = data.clone();
    no_dqt[dqt_at + 1] = 0xfe; // DQT becomes a comment
    assert_eq!(decode_exact(&no_dqt, &opts), Err(JpegError::Malformed("quantisation table not defined")));
    // 12-bit samples and arithmetic coding are not reproduced.
    let mut twelve = data.clone();
    let sof = twelve.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
    twelve[sof + 4] = 12;
    assert!(matches!(decode_exact(&twelve, &opts), Err(JpegError::Unsupported(_))));
    let mut arith = data;
    arith[sof + 1] = 0xc9;
    assert!(matches!(decode_exact(&arith, &opts), Err(JpegError::Unsupported(_))));
}

#[test]
fn truncated_and_mutated_streams_never_panic() {
    for name in ["qemu-glyphs-22x10.jpg", "qemu-noise-band.jpg", "cjpeg/n37x29-restart.jpg"] {
        let data = fixture(name);
        let step = (data.len() / 400).max(1);
        for cut in (0..data.len()).step_by(step) {
            for opts in [DecodeOptions::spice_gtk_image(MAX, MAX), DecodeOptions::spice_gtk_mjpeg(MAX, MAX)] {
                let _ = decode(&data[..cut], &opts);
            }
        }
        let mut x: u32 = 0x9e37_79b9;
        for _ in 0..300 {
            let mut m = data.clone();
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let i = x as usize % m.len();
                m[i] ^= (x >> 8) as u8;
            }
            let _ = decode(&m, &DecodeOptions::spice_gtk_image(MAX, MAX));
        }
    }
}

#[test]
fn entropy_data_cut_short_decodes_as_libjpeg_does() {
    // libjpeg reads missing entropy data as zeros and still returns a
    // picture; so does this decoder (the header is whole).
    let data = fixture("qemu-noise-band.jpg");
    let cut = data.len() * 3 / 4;
    let img = decode_exact(&data[..cut], &DecodeOptions::spice_gtk_image(MAX, MAX)).unwrap();
    assert_eq!((img.width, img.height), (1024, 48));
}
