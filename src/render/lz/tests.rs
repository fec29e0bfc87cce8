//! Tests: real fixtures recorded from QEMU + spice-gtk (see `tests/fixtures/lz/README.md`), hand-built
//! streams for the types and corner cases the fixtures do not reach, hostile inputs and a fuzz loop.

use super::glz::{MAX_WINDOW_IMAGES, MAX_WINDOW_PIXELS};
use super::*;
use crate::render::test_util::sha256_hex;

const SEABIOS_LZ: &[u8] = include_bytes!("../../../tests/fixtures/lz/seabios-720x400-rgb32.lz");
/// SHA-256 of the RGB bytes of spice-gtk's screenshot (P6 body) of the SeaBIOS session.
const SEABIOS_RGB_SHA256: &str = "6466311d54de4ac3f36ac851a3aeab64fe0d849605d798abdf4aead9b433661d";
const BOOT_SESSION: &[u8] = include_bytes!("../../../tests/fixtures/lz/boot-session.lzs");
/// SHA-256 of the RGB bytes of spice-gtk's screenshot at the end of the boot session.
const BOOT_RGB_SHA256: &str = "96d4f6261bb3c999ee0d14aa071a1797c0a3830e4ffb45e57b4fd235715ce2de";

// ---------------------------------------------------------------------------------------------------
// helpers

fn rgb_bytes(argb: &[u32]) -> Vec<u8> {
    argb.iter().flat_map(|&p| [(p >> 16) as u8, (p >> 8) as u8, p as u8]).collect()
}

fn argb(img: &LzImage) -> &[u32] {
    match &img.pixels {
        LzPixels::Argb(px) => px,
        other => panic!("expected ARGB pixels, got {other:?}"),
    }
}

/// One draw of the boot-session container (see the fixtures README).
struct Draw<'a> {
    glz: bool,
    x: i32,
    y: i32,
    data: &'a [u8],
}

struct Session<'a> {
    window: u32,
    width: usize,
    height: usize,
    draws: Vec<Draw<'a>>,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn parse_session(blob: &[u8]) -> Session<'_> {
    assert_eq!(&blob[..8], b"SPTAPLZS");
    assert_eq!(le_u32(blob, 8), 1, "container version");
    let (window, width, height, count) = (le_u32(blob, 12), le_u32(blob, 16), le_u32(blob, 20), le_u32(blob, 24));
    let mut pos = 28;
    let mut draws = Vec::new();
    for _ in 0..count {
        let len = le_u32(blob, pos) as usize;
        let rec = &blob[pos + 4..pos + 4 + len];
        let glz = match rec[0] {
            1 => false,
            2 => true,
            k => panic!("record kind {k}"),
        };
        draws.push(Draw { glz, x: le_u32(rec, 1) as i32, y: le_u32(rec, 5) as i32, data: &rec[9..] });
        pos += 4 + len;
    }
    assert_eq!(pos, blob.len());
    Session { window, width: width as usize, height: height as usize, draws }
}

fn blit(canvas: &mut [u32], width: usize, draw: &Draw<'_>, img: &LzImage) {
    let px = argb(img);
    for row in 0..img.height as usize {
        let dst = (draw.y as usize + row) * width + draw.x as usize;
        let w = img.width as usize;
        canvas[dst..dst + w].copy_from_slice(&px[row * w..(row + 1) * w]);
    }
}

/// Deterministic xorshift64 generator for the fuzz loop.
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

// --- a tiny encoder for hand-built streams ----------------------------------------------------------

fn lz_header(code: u32, width: u32, height: u32, stride: u32, top_down: bool) -> Vec<u8> {
    [LZ_MAGIC, LZ_VERSION, code, width, height, stride, u32::from(top_down)]
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .collect()
}

fn glz_header(type_byte: u8, width: u32, height: u32, id: u64, win_head_dist: u32) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&LZ_MAGIC.to_be_bytes());
    out.extend_from_slice(&LZ_VERSION.to_be_bytes());
    out.push(type_byte);
    out.extend_from_slice(&width.to_be_bytes());
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&(width * 4).to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&win_head_dist.to_be_bytes());
    out
}

/// Literal run of units (each unit given as its coded bytes), split in runs of at most 32.
fn literals(out: &mut Vec<u8>, units: &[Vec<u8>]) {
    for chunk in units.chunks(32) {
        out.push(chunk.len() as u8 - 1);
        for unit in chunk {
            out.extend_from_slice(unit);
        }
    }
}

fn rgb_units(pixels: &[u32]) -> Vec<Vec<u8>> {
    pixels.iter().map(|&p| vec![p as u8, (p >> 8) as u8, (p >> 16) as u8]).collect()
}

fn byte_units(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes.iter().map(|&b| vec![b]).collect()
}

/// Length field (3 bits) plus extension bytes for a match of `len` units with bias `bias`.
fn len_code(len: usize, bias: usize) -> (u8, Vec<u8>) {
    let raw = len - bias;
    assert!(raw >= 1);
    if raw < 7 {
        return (raw as u8, Vec::new());
    }
    let mut rest = raw - 7;
    let mut ext = Vec::new();
    while rest >= 255 {
        ext.push(255);
        rest -= 255;
    }
    ext.push(rest as u8);
    (7, ext)
}

/// An LZ match (same image) of `len` units, `distance` units back.
fn lz_match(out: &mut Vec<u8>, len: usize, distance: usize, bias: usize) {
    let (field, ext) = len_code(len, bias);
    let ofs = distance - 1;
    if ofs < 8191 {
        out.push(field << 5 | (ofs >> 8) as u8);
        out.extend_from_slice(&ext);
        out.push(ofs as u8);
    } else {
        let far = ofs - 8191;
        out.push(field << 5 | 31);
        out.extend_from_slice(&ext);
        out.extend_from_slice(&[255, (far >> 8) as u8, far as u8]);
    }
}

/// A GLZ match: `image_dist == 0` means `pixel_offset` is a distance back in the same image (coded minus
/// one); otherwise it is the first pixel in image `id - image_dist`.
fn glz_match(out: &mut Vec<u8>, len: usize, bias: usize, pixel_offset: usize, image_dist: u32) {
    let (field, ext) = len_code(len, bias);
    let ofs = if image_dist == 0 { pixel_offset - 1 } else { pixel_offset };
    let dist = image_dist as usize;
    if ofs < 1 << 12 {
        let extra = [0, 1 << 6, 1 << 14, 1 << 22].iter().filter(|&&limit| dist >= limit).count() - 1;
        out.push(field << 5 | (ofs & 0xf) as u8);
        out.extend_from_slice(&ext);
        out.push((ofs >> 4) as u8);
        out.push((extra as u8) << 6 | (dist & 0x3f) as u8);
        for i in 0..extra {
            out.push((dist >> (6 + 8 * i)) as u8);
        }
    } else {
        let extra = [1, 1 << 8, 1 << 16].iter().filter(|&&limit| dist >= limit).count();
        let long = ofs >= 1 << 17;
        out.push(field << 5 | 0x10 | (ofs & 0xf) as u8);
        out.extend_from_slice(&ext);
        out.push((ofs >> 4) as u8);
        out.push((extra as u8) << 6 | u8::from(long) << 5 | ((ofs >> 12) & 0x1f) as u8);
        for i in 0..extra {
            out.push((dist >> (8 * i)) as u8);
        }
        if long {
            out.push((ofs >> 17) as u8);
        }
    }
}

/// A top-down RGB32 GLZ image made of literals only.
fn glz_literal_image(id: u64, win_head_dist: u32, width: u32, height: u32, pixels: &[u32]) -> Vec<u8> {
    let mut data = glz_header(0x10 | 8, width, height, id, win_head_dist);
    literals(&mut data, &rgb_units(pixels));
    data
}

fn pattern(seed: u32, count: usize) -> Vec<u32> {
    (0..count as u32).map(|i| (seed.wrapping_mul(0x9e37_79b9) ^ i.wrapping_mul(0x0101_0101)) & 0x00ff_ffff).collect()
}

// ---------------------------------------------------------------------------------------------------
// real fixtures

#[test]
fn seabios_lz_matches_spice_gtk_pixel_exactly() {
    let img = decode_lz(SEABIOS_LZ).unwrap();
    assert_eq!((img.lz_type, img.width, img.height, img.top_down), (LzType::Rgb32, 720, 400, true));
    assert!(!img.has_alpha());
    assert!(argb(&img).iter().all(|p| p >> 24 == 0), "LZ RGB32 leaves the x byte 0");
    assert_eq!(sha256_hex(&rgb_bytes(argb(&img))), SEABIOS_RGB_SHA256);
}

#[test]
fn boot_session_glz_matches_spice_gtk_pixel_exactly() {
    let session = parse_session(BOOT_SESSION);
    assert_eq!((session.width, session.height), (720, 400));
    let mut dict = GlzDictionary::new(session.window);
    let mut canvas = vec![0u32; session.width * session.height];
    let (mut lz, mut glz, mut cross) = (0, 0, 0);
    for (i, draw) in session.draws.iter().enumerate() {
        let img = if draw.glz {
            glz += 1;
            let header = GlzHeader::parse(draw.data).unwrap();
            assert_eq!(header.id, glz - 1, "ids count from 0");
            assert_eq!(header.win_head_dist as u64, header.id, "the whole session fits the window");
            let before = dict.len();
            let img = dict.decode(draw.data).unwrap_or_else(|e| panic!("draw {i}: {e}"));
            assert_eq!(dict.len(), before + 1);
            // Does this image need earlier ones? Decoding it in an empty window tells.
            if header.id > 0 && matches!(GlzDictionary::new(0).decode(draw.data), Err(GlzError::MissingImage { .. })) {
                cross += 1;
            }
            img
        } else {
            lz += 1;
            decode_lz(draw.data).unwrap()
        };
        assert_eq!(img.lz_type, LzType::Rgb32);
        blit(&mut canvas, session.width, draw, &img);
    }
    assert_eq!((lz, glz), (1, 914));
    assert_eq!(cross, 761, "images that copy from earlier ones");
    assert_eq!(dict.evicted(), 0);
    assert_eq!(sha256_hex(&rgb_bytes(&canvas)), BOOT_RGB_SHA256);
}

/// A synthetic LZ fixture: encoded by spice-common's `lz_encode`, expected pixels from its `lz_decode`
/// called as spice-gtk's `canvas_get_lz` calls it (see the fixtures README).
struct Synthetic {
    name: &'static str,
    data: &'static [u8],
    lz_type: LzType,
    width: u32,
    height: u32,
    top_down: bool,
    /// Palette entries (see [`synthetic_palette`]).
    entries: u32,
    /// SHA-256 of the expected pixels: u32 LE words, or one byte per pixel for the alpha types.
    sha256: &'static str,
}

/// LZ images of every type.
const SYNTHETIC: [Synthetic; 11] = [
    Synthetic {
        name: "plt1le-301x290",
        data: include_bytes!("../../../tests/fixtures/lz/synthetic/plt1le-301x290.lz"),
        lz_type: LzType::Plt1Le,
        width: 301,
        height: 290,
        top_down: true,
        entries: 2,
        sha256: "37e8340525eb0b03109f0b26dcc08891d9478397ac7a54207bd687961b2e5d63",
    },
    Synthetic {
        name: "plt1be-301x290-bottomup",
        data: include_bytes!("../../../tests/fixtures/lz/synthetic/plt1be-301x290-bottomup.lz"),
        lz_type: LzType::Plt1Be,
        width: 301,
        height: 290,
        top_down: false,
        entries: 2,
        sha256: "37e8340525eb0b03109f0b26dcc08891d9478397ac7a54207bd687961b2e5d63",
    },
    Synthetic {
        name: "plt4le-301x140-bottomup",
        data: include_bytes!("../../../tests/fixtures/lz/synthetic/plt4le-301x140-bottomup.lz"),
        lz_type: LzType::Plt4Le,
        width: 301,
        height: 140,
        top_down: false,
        entries: 11,
        sha256: "b9fb6d3eb5486625e237ef56b3c17eac6963e4d4469c091144971dc1bcc6611f",
    },
    Synthetic {
        name: "plt4be-301x140",
        data: include_bytes!("../../../tests/fixtures/lz/synthetic/plt4be-301x140.lz"),
        lz_type: LzType::Plt4Be,
        width: 301,
        height: 140,
        top_down: true,
        entries: 16,
        sha256: "011881bbc467161e90f4ac2219f43b4145bf63ceb79e8972607aadd0ce0d42b6",
    },
    Synthetic {
        name: "plt8-301x140",
        data: include_bytes!("../../../tests/fixtures/lz/synthetic/plt8-301x140.lz"),
        lz_type: LzType::Plt8,
        width: 301,
        height: 140,
        top_down: true,
        entries: 256,
        sha256: "ca888e195b5a3a8234cd110cc6e9a804dd34806a9d0d09fe4321652ff35f750c",
    },
    Synthetic {
        name: "rgb16-301x140-bottomup",
        data: include_bytes!("../../../tests/fixtures/lz/synthetic/rgb16-301x140-bottomup.lz"),
        lz_type: LzType::Rgb16,
        width: 301,
        height: 140,
        top_down: false,
        entries: 0,
        sha256: "eb702bac7eda0ef85d3127b84d578f4ecb826034b7437364ce35df5236a0ca33",
    },
    Synthetic {
        name: "rgb24-301x140",
        data: include_bytes!("../../../tests/fixtures/lz/synthetic/rgb24-301x140.lz"),
        lz_type: LzType::Rgb24,
        width: 301,
        height: 140,
        top_down: true,
        entries: 0,
        sha256: "c3b2356a4a7b4923ecbdd4accad3c0961254a50a5ad65729e49850cce9b6bbba",
    },
    Synthetic {
        name: "rgb32-301x140",
        data: include_bytes!("../../../tests/fixtures/lz/synthetic/rgb32-301x140.lz"),
        lz_type: LzType::Rgb32,
        width: 301,
        height: 140,
        top_down: true,
        entries: 0,
        sha256: "c3b2356a4a7b4923ecbdd4accad3c0961254a50a5ad65729e49850cce9b6bbba",
    },
    Synthetic {
        name: "rgba-301x140-bottomup",
        data: include_bytes!("../../../tests/fixtures/lz/synthetic/rgba-301x140-bottomup.lz"),
        lz_type: LzType::Rgba,
        width: 301,
        height: 140,
        top_down: false,
        entries: 0,
        sha256: "b803c6c852b2cfc2c054364577900d7de5f7c3445fa6c35732721b4163bdc243",
    },
    Synthetic {
        name: "xxxa-301x140",
        data: include_bytes!("../../../tests/fixtures/lz/synthetic/xxxa-301x140.lz"),
        lz_type: LzType::Xxxa,
        width: 301,
        height: 140,
        top_down: true,
        entries: 0,
        sha256: "ca3fd77810952a95eed5252bfe734ace728ad30dc1b1fe6581dcc0420f98b298",
    },
    Synthetic {
        name: "a8-301x140-bottomup",
        data: include_bytes!("../../../tests/fixtures/lz/synthetic/a8-301x140-bottomup.lz"),
        lz_type: LzType::A8,
        width: 301,
        height: 140,
        top_down: false,
        entries: 0,
        sha256: "ca3fd77810952a95eed5252bfe734ace728ad30dc1b1fe6581dcc0420f98b298",
    },
];

/// The palette of the synthetic fixtures (`palette_entry` in the generator).
fn synthetic_palette(entries: u32) -> Vec<u32> {
    (0..entries).map(|i| i.wrapping_mul(0x9e37_79b1) ^ 0xa500_0000).collect()
}

#[test]
fn synthetic_lz_matches_spice_common_for_every_type() {
    for Synthetic { name, data, lz_type, width, height, top_down, entries, sha256 } in SYNTHETIC {
        let img = decode_lz(data).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((img.lz_type, img.width, img.height, img.top_down), (lz_type, width, height, top_down), "{name}");
        let bytes: Vec<u8> = match &img.pixels {
            LzPixels::Alpha(alpha) => alpha.clone(),
            _ => img.to_argb(&synthetic_palette(entries)).iter().flat_map(|p| p.to_le_bytes()).collect(),
        };
        assert_eq!(sha256_hex(&bytes), sha256, "{name}");
    }
}

#[test]
fn glz_images_need_their_window() {
    // Skipping one image of the session makes a later reference to it fail instead of decoding garbage.
    let session = parse_session(BOOT_SESSION);
    let glz: Vec<&[u8]> = session.draws.iter().filter(|d| d.glz).map(|d| d.data).collect();
    let mut dict = GlzDictionary::new(session.window);
    let mut missing = 0;
    for (id, data) in glz.iter().enumerate() {
        if id == 13 {
            continue;
        }
        match dict.decode(data) {
            Ok(_) => {}
            Err(GlzError::MissingImage { id: 13, referenced_by }) => {
                assert_eq!(referenced_by, id as u64);
                assert!(!dict.contains(id as u64), "a failed image is not inserted");
                missing += 1;
            }
            Err(GlzError::MissingImage { .. }) => missing += 1, // follows from an earlier failure
            Err(e) => panic!("image {id}: {e}"),
        }
    }
    assert!(missing >= 2, "image 13 is referenced by later images");
}

// ---------------------------------------------------------------------------------------------------
// hand-built LZ streams

#[test]
fn lz_rgb32_literals_runs_and_patterns() {
    let mut data = lz_header(8, 4, 3, 16, true);
    literals(&mut data, &rgb_units(&[0x112233, 0x445566]));
    lz_match(&mut data, 6, 2, 0); // repeats the two-pixel pattern three times (overlapping copy)
    literals(&mut data, &rgb_units(&[0xabcdef]));
    lz_match(&mut data, 3, 1, 0); // run of the previous pixel
    let img = decode_lz(&data).unwrap();
    assert_eq!(
        argb(&img),
        &[
            0x112233, 0x445566, 0x112233, 0x445566, 0x112233, 0x445566, 0x112233, 0x445566, 0xabcdef, 0xabcdef,
            0xabcdef, 0xabcdef
        ]
    );
}

#[test]
fn lz_bottom_up_rows_are_flipped() {
    let mut data = lz_header(7, 2, 3, 6, false);
    literals(&mut data, &rgb_units(&[1, 2, 3, 4, 5, 6]));
    let img = decode_lz(&data).unwrap();
    assert!(!img.top_down);
    assert_eq!(argb(&img), &[5, 6, 3, 4, 1, 2]);
}

#[test]
fn lz_long_lengths_and_far_distances() {
    // PLT8, two rows of 9000: the second row copies the first from 9000 bytes back (a far distance) with
    // a length that needs many extension bytes.
    let width = 9000u32;
    let row: Vec<u8> = (0..width).map(|i| (i * 7 % 251) as u8).collect();
    let mut data = lz_header(5, width, 2, width, true);
    literals(&mut data, &byte_units(&row));
    lz_match(&mut data, width as usize, width as usize, 2);
    let img = decode_lz(&data).unwrap();
    let LzPixels::PaletteIndices(idx) = &img.pixels else { panic!() };
    assert_eq!(&idx[..9000], &row[..]);
    assert_eq!(&idx[9000..], &row[..]);
    // Distances just below and at the far threshold, and the largest one (65535 + 8191 + 1), in a
    // 16384x6 image: a literal prefix of `distance` bytes, then one match to the end.
    let total = 16384 * 6;
    let prefix: Vec<u8> = (0..total).map(|i| (i % 13) as u8).collect();
    for distance in [8191, 8192, 8193, 65535 + 8191 + 1] {
        let mut data = lz_header(5, 16384, 6, 16384, true);
        literals(&mut data, &byte_units(&prefix[..distance]));
        lz_match(&mut data, total - distance, distance, 2);
        let img = decode_lz(&data).unwrap_or_else(|e| panic!("distance {distance}: {e}"));
        let LzPixels::PaletteIndices(idx) = &img.pixels else { panic!() };
        assert!((distance..total).all(|i| idx[i] == idx[i - distance]), "distance {distance}");
        assert_eq!(&idx[..distance], &prefix[..distance]);
    }
}

#[test]
fn lz_rgb16_is_widened_like_spice_common() {
    let words = [0x7fffu16, 0x001f, 0x03e0, 0x7c00, 0x4210, 0x0000, 0x0421];
    let mut data = lz_header(6, 7, 1, 14, true);
    literals(&mut data, &words.iter().map(|w| w.to_be_bytes().to_vec()).collect::<Vec<_>>());
    let img = decode_lz(&data).unwrap();
    assert_eq!(argb(&img), &[0xffffff, 0x0000ff, 0x00ff00, 0xff0000, 0x848484, 0x000000, 0x080808]);
    // RGB16 matches are one unit shorter than palette/alpha ones: bias 1.
    let mut data = lz_header(6, 4, 1, 8, true);
    literals(&mut data, &[0x7c00u16.to_be_bytes().to_vec()]);
    lz_match(&mut data, 3, 1, 1);
    assert_eq!(argb(&decode_lz(&data).unwrap()), &[0xff0000; 4]);
}

#[test]
fn lz_rgba_has_an_alpha_pass_touching_only_alpha() {
    let mut data = lz_header(9, 4, 1, 16, true);
    literals(&mut data, &rgb_units(&[0x010203, 0x040506, 0x070809, 0x0a0b0c]));
    literals(&mut data, &byte_units(&[0x80]));
    lz_match(&mut data, 3, 1, 2); // alpha run over the remaining pixels
    let img = decode_lz(&data).unwrap();
    assert!(img.has_alpha());
    assert_eq!(argb(&img), &[0x80010203, 0x80040506, 0x80070809, 0x800a0b0c]);
}

#[test]
fn lz_alpha_types() {
    for code in [10, 11] {
        let stride = if code == 10 { 12 } else { 3 };
        let mut data = lz_header(code, 3, 2, stride, false);
        literals(&mut data, &byte_units(&[1, 2, 3]));
        lz_match(&mut data, 3, 3, 2);
        let img = decode_lz(&data).unwrap();
        assert_eq!(img.pixels, LzPixels::Alpha(vec![1, 2, 3, 1, 2, 3]));
        assert_eq!(img.to_argb(&[])[..2], [0x0100_0000, 0x0200_0000]);
    }
}

#[test]
fn lz_palette_types_unpack_in_spice_common_order() {
    // 10 pixels wide: PLT1 rows take 2 bytes, PLT4 rows 5 bytes; the padding pixels are dropped.
    let cases: [(u32, u32, &[u8], &[u8]); 5] = [
        (1, 2, &[0b1000_0001, 0b0000_0010], &[1, 0, 0, 0, 0, 0, 0, 1, 0, 1]),
        (2, 2, &[0b1000_0001, 0b0100_0000], &[1, 0, 0, 0, 0, 0, 0, 1, 0, 1]),
        (3, 5, &[0x21, 0x43, 0x65, 0x87, 0xa9], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
        (4, 5, &[0x12, 0x34, 0x56, 0x78, 0x9a], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
        (5, 10, &[9, 8, 7, 6, 5, 4, 3, 2, 1, 0], &[9, 8, 7, 6, 5, 4, 3, 2, 1, 0]),
    ];
    for (code, stride, row, want) in cases {
        let mut data = lz_header(code, 10, 2, stride, false);
        literals(&mut data, &byte_units(row));
        let last: Vec<u8> = row.iter().map(|b| !b).collect();
        literals(&mut data, &byte_units(&last));
        let img = decode_lz(&data).unwrap_or_else(|e| panic!("type {code}: {e}"));
        assert!(img.lz_type.is_palette());
        let LzPixels::PaletteIndices(idx) = &img.pixels else { panic!() };
        // Bottom-up: the first stream row is the last image row.
        assert_eq!(&idx[10..], want, "type {code}");
        let max = match code {
            1 | 2 => 1,
            3 | 4 => 15,
            _ => 255,
        };
        assert_eq!(idx[..10].iter().map(|&v| max - v).collect::<Vec<_>>(), want, "type {code}");
    }
    // Wrong strides are refused (too long, too short, and not the rounded-up row for PLT).
    for (code, stride) in [(1, 3), (1, 1), (3, 6), (3, 4), (5, 11)] {
        let data = lz_header(code, 10, 2, stride, true);
        assert!(matches!(decode_lz(&data), Err(LzError::BadStride { .. })), "type {code} stride {stride}");
    }
}

#[test]
fn palette_lookup_follows_spice_common() {
    let img = |lz_type, idx: Vec<u8>| LzImage {
        lz_type,
        width: idx.len() as u32,
        height: 1,
        top_down: true,
        pixels: LzPixels::PaletteIndices(idx),
    };
    let palette = [0xff00_0011, 0x22, 0x33];
    assert_eq!(img(LzType::Plt8, vec![0, 2, 3]).to_argb(&palette), [0x11, 0x33, 0]);
    assert_eq!(img(LzType::Plt4Le, vec![0, 4, 15]).to_argb(&palette), [0x11, 0x22, 0x11]);
    assert_eq!(img(LzType::Plt4Be, vec![5]).to_argb(&[]), [0]);
    assert_eq!(img(LzType::Plt1Be, vec![0, 1]).to_argb(&palette[..1]), [0x11, 0]);
}

// ---------------------------------------------------------------------------------------------------
// hand-built GLZ streams and the window

#[test]
fn glz_cross_image_reference_forms() {
    // Image 0 is big enough for offsets past 2^17 (the "very long" form).
    let (w0, h0) = (512u32, 300u32);
    let px0 = pattern(1, (w0 * h0) as usize);
    let mut dict = GlzDictionary::new(0);
    dict.decode(&glz_literal_image(0, 0, w0, h0, &px0)).unwrap();
    for id in 1..=70u64 {
        dict.decode(&glz_literal_image(id, id as u32, 2, 1, &pattern(id as u32, 2))).unwrap();
    }
    // Image 71 takes pieces of image 0 (distance 71 needs an extra distance byte in the short form),
    // with short, wide and very long offsets, and of image 70 (distance 1), then a same-image match.
    let mut data = glz_header(0x10 | 8, 4 * 5 + 2 + 3, 1, 71, 71);
    glz_match(&mut data, 5, 0, 10, 71);
    glz_match(&mut data, 5, 0, 5000, 71);
    glz_match(&mut data, 5, 0, 150_000, 71);
    glz_match(&mut data, 5, 0, 150_000, 0); // same image: a distance of 150000 exceeds what was decoded
    let err = GlzDictionary::new(0).decode(&data).unwrap_err();
    assert!(matches!(err, GlzError::MissingImage { id: 0, referenced_by: 71 }), "{err}");
    let err = dict.decode(&data).unwrap_err();
    assert!(matches!(err, GlzError::Format(LzError::BadReference { distance: 150_000, position: 15 })), "{err}");

    let mut data = glz_header(0x10 | 8, 4 * 5 + 2 + 3, 1, 71, 71);
    glz_match(&mut data, 5, 0, 10, 71);
    glz_match(&mut data, 5, 0, 5000, 71);
    glz_match(&mut data, 5, 0, 150_000, 71);
    glz_match(&mut data, 5, 0, 20, 71);
    glz_match(&mut data, 2, 0, 0, 1);
    glz_match(&mut data, 3, 0, 3, 0);
    let img = dict.decode(&data).unwrap();
    let mut want = Vec::new();
    for start in [10, 5000, 150_000, 20] {
        want.extend_from_slice(&px0[start..start + 5]);
    }
    want.extend_from_slice(&pattern(70, 2));
    want.extend_from_within(want.len() - 3..);
    assert_eq!(argb(&img), &want[..]);
}

#[test]
fn glz_window_keeps_stream_order_and_flips_output() {
    let mut dict = GlzDictionary::new(1000);
    // Bottom-up 2x2: stream order is the bottom row first.
    let mut a = glz_header(8, 2, 2, 0, 0);
    literals(&mut a, &rgb_units(&[1, 2, 3, 4]));
    assert_eq!(argb(&dict.decode(&a).unwrap()), &[3, 4, 1, 2]);
    // A top-down image copying 4 pixels from offset 0 of image 0 gets the stream order.
    let mut b = glz_header(0x10 | 8, 4, 1, 1, 1);
    glz_match(&mut b, 4, 0, 0, 1);
    assert_eq!(argb(&dict.decode(&b).unwrap()), &[1, 2, 3, 4]);
}

#[test]
fn glz_rgba_and_rgb16() {
    let mut dict = GlzDictionary::new(0);
    let mut a = glz_header(0x10 | 9, 3, 1, 0, 0);
    literals(&mut a, &rgb_units(&[0x010101, 0x020202, 0x030303]));
    literals(&mut a, &byte_units(&[0x10, 0x20, 0x30]));
    assert_eq!(argb(&dict.decode(&a).unwrap()), &[0x10010101, 0x20020202, 0x30030303]);
    // RGBA image 1: RGB from its own literals, alpha copied from image 0 (alpha matches have bias 2).
    let mut b = glz_header(0x10 | 9, 3, 1, 1, 1);
    literals(&mut b, &rgb_units(&[0x0a0a0a, 0x0b0b0b, 0x0c0c0c]));
    glz_match(&mut b, 3, 2, 0, 1);
    assert_eq!(argb(&dict.decode(&b).unwrap()), &[0x100a0a0a, 0x200b0b0b, 0x300c0c0c]);
    // RGB32 image 2 copying whole words of image 1 keeps its alpha byte, like spice-gtk's memory.
    let mut c = glz_header(0x10 | 8, 2, 1, 2, 2);
    glz_match(&mut c, 2, 0, 1, 1);
    let img = dict.decode(&c).unwrap();
    assert!(!img.has_alpha());
    assert_eq!(argb(&img), &[0x200b0b0b, 0x300c0c0c]);
    // RGB16 literals and a run (bias 1).
    let mut d = glz_header(0x10 | 6, 4, 1, 3, 3);
    literals(&mut d, &[0x03e0u16.to_be_bytes().to_vec()]);
    glz_match(&mut d, 3, 1, 1, 0);
    assert_eq!(argb(&dict.decode(&d).unwrap()), &[0x00ff00; 4]);
}

#[test]
fn glz_release_rule_in_order() {
    let mut dict = GlzDictionary::new(0);
    for id in 0..6u64 {
        dict.decode(&glz_literal_image(id, id.min(2) as u32, 2, 2, &pattern(id as u32, 4))).unwrap();
    }
    // After image 5 (win_head_dist 2) everything below 3 is gone.
    assert_eq!((0..6).filter(|&id| dict.contains(id)).collect::<Vec<_>>(), [3, 4, 5]);
    assert_eq!(dict.retained_pixels(), 12);
    let mut data = glz_header(0x10 | 8, 1, 1, 6, 3);
    glz_match(&mut data, 1, 0, 0, 4);
    assert_eq!(dict.decode(&data).unwrap_err(), GlzError::MissingImage { id: 2, referenced_by: 6 });
    let mut data = glz_header(0x10 | 8, 1, 1, 6, 3);
    glz_match(&mut data, 1, 0, 0, 3);
    assert_eq!(argb(&dict.decode(&data).unwrap()), &pattern(3, 1)[..]);
}

#[test]
fn glz_release_rule_out_of_order() {
    let mut dict = GlzDictionary::new(0);
    let image = |id: u64, whd: u32| glz_literal_image(id, whd, 1, 1, &[id as u32]);
    dict.decode(&image(0, 0)).unwrap();
    // Image 2 arrives before 1 (another display channel): the gap keeps the release keyed on image 0.
    dict.decode(&image(2, 0)).unwrap();
    assert!(dict.contains(0) && dict.contains(2));
    // Image 1 fills the gap, but the gap counter never moves past the id just inserted, so the release
    // is still keyed on image 1 (window from 0): nothing goes.
    dict.decode(&image(1, 1)).unwrap();
    assert_eq!((0..3).filter(|&id| dict.contains(id)).collect::<Vec<_>>(), [0, 1, 2]);
    // Image 3 moves the counter over 2 and 3; image 3's window starts at 2.
    dict.decode(&image(3, 1)).unwrap();
    assert_eq!((0..4).filter(|&id| dict.contains(id)).collect::<Vec<_>>(), [2, 3]);
    // A late image below the released range is kept (spice-gtk never releases it either).
    dict.decode(&image(0, 0)).unwrap();
    assert!(dict.contains(0));
    // A repeated id replaces the image.
    dict.decode(&glz_literal_image(2, 0, 1, 1, &[0x42])).unwrap();
    let mut data = glz_header(0x10 | 8, 1, 1, 4, 2);
    glz_match(&mut data, 1, 0, 0, 2);
    assert_eq!(argb(&dict.decode(&data).unwrap()), &[0x42]);
    assert_eq!(dict.evicted(), 0);
}

#[test]
fn glz_clear_starts_over() {
    let mut dict = GlzDictionary::new(0);
    for id in 0..4u64 {
        dict.decode(&glz_literal_image(id, 0, 1, 1, &[1])).unwrap();
    }
    assert_eq!(dict.len(), 1);
    dict.clear();
    assert!(dict.is_empty());
    assert_eq!(dict.retained_pixels(), 0);
    // Ids restart at 0 after a reconnect and the rule applies from there.
    for id in 0..3u64 {
        dict.decode(&glz_literal_image(id, 1, 1, 1, &[1])).unwrap_or_else(|e| {
            assert_eq!(id, 0);
            assert_eq!(e, GlzError::BadWindowDistance { id: 0, win_head_dist: 1 });
            dict.decode(&glz_literal_image(0, 0, 1, 1, &[1])).unwrap()
        });
    }
    assert_eq!((0..3).filter(|&id| dict.contains(id)).collect::<Vec<_>>(), [1, 2]);
}

#[test]
fn glz_memory_bound() {
    let mut dict = GlzDictionary::new(100);
    assert_eq!(dict.window_size(), 100);
    let err = dict.decode(&glz_literal_image(0, 0, 10, 10, &[0; 100])).unwrap_err();
    assert!(matches!(err, GlzError::LargerThanWindow { pixels: 100, window: 100, .. }), "{err}");
    // A server claiming it may reference everything: the rule releases nothing, the bound (2 * window
    // pixels) drops the oldest images.
    for id in 0..10u64 {
        dict.decode(&glz_literal_image(id, id as u32, 10, 5, &pattern(id as u32, 50))).unwrap();
        assert!(dict.retained_pixels() <= 200);
    }
    assert_eq!(dict.len(), 4);
    assert_eq!(dict.evicted(), 6);
    let mut data = glz_header(0x10 | 8, 1, 1, 10, 10);
    glz_match(&mut data, 1, 0, 0, 10);
    assert_eq!(dict.decode(&data).unwrap_err(), GlzError::MissingImage { id: 0, referenced_by: 10 });
    assert_eq!(GlzDictionary::new(0).window_size(), u64::from(MAX_WINDOW_PIXELS));
    assert_eq!(GlzDictionary::new(u32::MAX).window_size(), u64::from(MAX_WINDOW_PIXELS));
    const { assert!(MAX_WINDOW_IMAGES >= 1 << 16) };
}

#[test]
fn glz_bad_references() {
    let mut dict = GlzDictionary::new(0);
    dict.decode(&glz_literal_image(0, 0, 2, 2, &[1, 2, 3, 4])).unwrap();
    // Past the end of the referenced image.
    let mut data = glz_header(0x10 | 8, 4, 1, 1, 1);
    glz_match(&mut data, 4, 0, 2, 1);
    assert_eq!(dict.decode(&data).unwrap_err(), GlzError::BadImageReference { id: 0, offset: 2, len: 4, available: 4 });
    // An image distance beyond image 0.
    let mut data = glz_header(0x10 | 8, 1, 1, 1, 1);
    glz_match(&mut data, 1, 0, 0, 2);
    assert_eq!(dict.decode(&data).unwrap_err(), GlzError::BadImageDistance { id: 1, distance: 2 });
    // A match longer than the image being decoded.
    let mut data = glz_header(0x10 | 8, 2, 1, 1, 1);
    glz_match(&mut data, 3, 0, 0, 1);
    assert!(matches!(dict.decode(&data), Err(GlzError::Format(LzError::Overrun { .. }))));
    // A same-image match before the image start.
    let mut data = glz_header(0x10 | 8, 2, 1, 1, 1);
    glz_match(&mut data, 1, 0, 1, 0);
    assert_eq!(dict.decode(&data).unwrap_err(), LzError::BadReference { distance: 1, position: 0 }.into());
    assert_eq!(dict.len(), 1, "failed decodes leave the window alone");
}

// ---------------------------------------------------------------------------------------------------
// hostile headers, truncation, fuzzing

#[test]
fn lz_header_errors() {
    let good = SEABIOS_LZ;
    let with = |at: usize, word: u32| {
        let mut data = good.to_vec();
        data[at..at + 4].copy_from_slice(&word.to_be_bytes());
        data
    };
    assert_eq!(decode_lz(&with(0, 0x4c5a2020)), Err(LzError::BadMagic { found: 0x4c5a2020 }));
    assert_eq!(decode_lz(&with(4, 0x0001_0002)), Err(LzError::BadVersion { found: 0x0001_0002 }));
    for code in [0, 12, 0x0100_0008, u32::MAX] {
        assert_eq!(decode_lz(&with(8, code)), Err(LzError::BadType { found: code }));
    }
    assert_eq!(decode_lz(&with(12, 0)), Err(LzError::EmptyImage { width: 0, height: 400 }));
    assert_eq!(decode_lz(&with(16, 0)), Err(LzError::EmptyImage { width: 720, height: 0 }));
    assert_eq!(decode_lz(&with(16, 16385)), Err(LzError::TooLarge { width: 720, height: 16385 }));
    assert_eq!(decode_lz(&with(12, u32::MAX)), Err(LzError::TooLarge { width: u32::MAX, height: 400 }));
    let square = lz_header(8, 16384, 16384, 65536, true);
    assert_eq!(decode_lz(&square), Err(LzError::TooLarge { width: 16384, height: 16384 }));
    assert!(matches!(decode_lz(&with(20, 2881)), Err(LzError::BadStride { stride: 2881, .. })));
    // Valid header, more rows than the stream holds: runs out of input.
    assert!(matches!(decode_lz(&with(16, 401)), Err(LzError::Truncated { .. })));
    let mut trailing = good.to_vec();
    trailing.push(0);
    assert_eq!(decode_lz(&trailing), Err(LzError::TrailingData { extra: 1 }));
    // A match before anything was decoded, and a literal run past the end.
    let mut data = lz_header(8, 4, 1, 16, true);
    lz_match(&mut data, 2, 1, 0);
    assert_eq!(decode_lz(&data), Err(LzError::BadReference { distance: 1, position: 0 }));
    let mut data = lz_header(8, 2, 1, 8, true);
    literals(&mut data, &rgb_units(&[1, 2, 3]));
    assert_eq!(decode_lz(&data), Err(LzError::Overrun { position: 0, len: 3, size: 2 }));
}

#[test]
fn glz_header_errors() {
    let session = parse_session(BOOT_SESSION);
    let first = session.draws.iter().find(|d| d.glz).unwrap().data;
    let with = |at: usize, bytes: &[u8]| {
        let mut data = first.to_vec();
        data[at..at + bytes.len()].copy_from_slice(bytes);
        GlzDictionary::new(0).decode(&data)
    };
    assert_eq!(with(0, b"LZ  ").unwrap_err(), LzError::BadMagic { found: 0x4c5a2020 }.into());
    assert_eq!(with(4, &[0, 2, 0, 1]).unwrap_err(), LzError::BadVersion { found: 0x0002_0001 }.into());
    for code in [0u8, 12, 13, 15] {
        assert_eq!(with(8, &[0x10 | code]).unwrap_err(), LzError::BadType { found: u32::from(code) }.into());
    }
    for code in [1u8, 2, 3, 4, 5, 10, 11] {
        let err = with(8, &[0x10 | code]).unwrap_err();
        assert!(matches!(err, GlzError::UnsupportedType { .. }), "{err}");
    }
    assert_eq!(with(9, &[0; 4]).unwrap_err(), LzError::EmptyImage { width: 0, height: 2 }.into());
    assert_eq!(with(13, &[0, 0, 0x40, 1]).unwrap_err(), LzError::TooLarge { width: 32, height: 16385 }.into());
    // id 0 with a window head distance of 1.
    assert_eq!(with(29, &[0, 0, 0, 1]).unwrap_err(), GlzError::BadWindowDistance { id: 0, win_head_dist: 1 });
    assert!(matches!(GlzHeader::parse(&first[..32]), Err(GlzError::Format(LzError::Truncated { .. }))));
}

#[test]
fn truncations_fail_cleanly() {
    // LZ: every cut in the header and the first and last 300 bytes, then every 11th byte.
    let n = SEABIOS_LZ.len();
    for cut in (0..n).filter(|&c| c < 300 || c > n - 300 || c % 11 == 0) {
        let err = decode_lz(&SEABIOS_LZ[..cut]).unwrap_err();
        assert!(matches!(err, LzError::Truncated { .. }), "cut {cut}: {err}");
    }
    for Synthetic { name, data, .. } in SYNTHETIC {
        for cut in (0..data.len()).step_by(5) {
            let err = decode_lz(&data[..cut]).unwrap_err();
            assert!(matches!(err, LzError::Truncated { .. }), "{name} cut {cut}: {err}");
        }
    }
    // GLZ: cut images 0..40 of the session at every point, each in a window holding its predecessors;
    // failures leave the window as it was, so the intact image decodes afterwards.
    let session = parse_session(BOOT_SESSION);
    let mut dict = GlzDictionary::new(session.window);
    for (id, draw) in session.draws.iter().filter(|d| d.glz).take(40).enumerate() {
        for cut in 0..draw.data.len() {
            let err = dict.decode(&draw.data[..cut]).unwrap_err();
            assert!(matches!(err, GlzError::Format(LzError::Truncated { .. })), "image {id} cut {cut}: {err}");
        }
        assert_eq!(dict.len(), id);
        dict.decode(draw.data).unwrap();
    }
}

#[test]
fn fuzzed_fixtures_never_panic() {
    let session = parse_session(BOOT_SESSION);
    let glz: Vec<&[u8]> = session.draws.iter().filter(|d| d.glz).map(|d| d.data).collect();
    let mut dict = GlzDictionary::new(session.window);
    for data in &glz[..300] {
        dict.decode(data).unwrap();
    }
    let mut rng = XorShift(0x5eed_1234_abcd_ef01);
    let (mut ok, mut failed) = (0, 0);
    for round in 0..2000 {
        let lz = round % 4 == 0;
        let source = match round % 8 {
            0 => SEABIOS_LZ,
            4 => SYNTHETIC[rng.below(SYNTHETIC.len())].data,
            _ => glz[300 + rng.below(glz.len() - 300)],
        };
        let mut data = source.to_vec();
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(data.len());
            match rng.below(6) {
                0 => data[at] ^= 1 << rng.below(8),
                1 => data[at] = rng.next() as u8,
                2 => data[at] = [0, 31, 32, 0xe0, 0xff][rng.below(5)],
                3 => data.truncate(at),
                4 => {
                    let len = rng.below(16).min(data.len() - at);
                    let chunk = data[at..at + len].to_vec();
                    let to = rng.below(data.len());
                    data.splice(to..to, chunk);
                }
                _ => {
                    let end = (at + rng.below(16)).min(data.len());
                    data.drain(at..end);
                }
            }
            if data.is_empty() {
                break;
            }
        }
        let result =
            if lz { decode_lz(&data).map(|_| ()).map_err(GlzError::from) } else { dict.decode(&data).map(|_| ()) };
        match result {
            Ok(()) => ok += 1,
            Err(_) => failed += 1,
        }
    }
    assert_eq!(ok + failed, 2000);
    assert!(ok > 0 && failed > 0, "{ok} decoded, {failed} refused");
}

/// Throughput in release mode: `cargo test --release -- --ignored --nocapture decode_speed`.
#[test]
#[ignore = "timing, run in release mode"]
fn decode_speed() {
    let reps = 200;
    let start = std::time::Instant::now();
    for _ in 0..reps {
        std::hint::black_box(decode_lz(SEABIOS_LZ).unwrap());
    }
    let t = start.elapsed() / reps;
    println!("LZ SeaBIOS 720x400: {t:?} per image, {:.0} Mpixel/s", 288_000.0 / t.as_secs_f64() / 1e6);
    let session = parse_session(BOOT_SESSION);
    let (mut pixels, mut bytes) = (0u64, 0usize);
    let start = std::time::Instant::now();
    for _ in 0..20 {
        let mut dict = GlzDictionary::new(session.window);
        for draw in session.draws.iter().filter(|d| d.glz) {
            let img = std::hint::black_box(dict.decode(draw.data).unwrap());
            pixels += u64::from(img.width * img.height);
            bytes += draw.data.len();
        }
    }
    let t = start.elapsed();
    println!(
        "GLZ boot session (914 small images): {:.0} Mpixel/s, {:.0} MB/s of input, {:.1} us per image",
        pixels as f64 / t.as_secs_f64() / 1e6,
        bytes as f64 / t.as_secs_f64() / 1e6,
        t.as_secs_f64() * 1e6 / (20.0 * 914.0)
    );
}
