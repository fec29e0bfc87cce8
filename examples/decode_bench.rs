//! Decoder throughput on the committed fixtures, spicetap against a peer.
//!
//! For each codec, decodes the same inputs repeatedly for about a second
//! and reports megapixels of output per second of wall time on one core,
//! first with spicetap's decoders, then with the published
//! `shakenfist-spice-compression` crate (ryll's decoders) in the same run.
//!
//! Inputs (`tests/fixtures/`): QUIC `linux-rgb32-320x240.quic` and
//! `bios-rgb32-720x400.quic` (recorded from QEMU), LZ
//! `seabios-720x400-rgb32.lz`, GLZ `boot-session.lzs` (914 GLZ images of a
//! recorded boot, decoded in order through one dictionary, as a session
//! does), JPEG `qemu-linux-image.jpg` and `qemu-noise-band.jpg`, MJPEG
//! `qemu-linux-mjpeg-frame-no-dht.jpg` (spicetap only: the peer's JPEG
//! path is another library; zune-jpeg, spicetap's general JPEG decoder,
//! on the same band for comparison). LZ4 has no recorded fixture: the SeaBIOS screen's
//! pixels (from the LZ fixture) are coded here as one LZ4 block in the
//! `SPICE_IMAGE_TYPE_LZ4` layout.
//!
//! Run: `cargo run --release --example decode_bench`

use std::time::{Duration, Instant};

use spicetap::render::image::{self, ImageCaches, ImageError, ImageSources, Pixels};
use spicetap::render::lz::{GlzDictionary, decode_lz};
use spicetap::render::quic;

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const RUN_FOR: Duration = Duration::from_secs(1);

fn read(path: &str) -> Vec<u8> {
    std::fs::read(format!("{FIX}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs `f` (which returns the pixels it decoded) until `RUN_FOR` has passed; Mpx/s.
fn measure(mut f: impl FnMut() -> u64) -> f64 {
    let start = Instant::now();
    let mut pixels = 0u64;
    while start.elapsed() < RUN_FOR {
        pixels += f();
    }
    pixels as f64 / start.elapsed().as_secs_f64() / 1e6
}

struct NoSources(ImageCaches);

impl ImageSources for NoSources {
    fn caches(&mut self) -> &mut ImageCaches {
        &mut self.0
    }
    fn surface(&self, _: u32) -> Option<Pixels> {
        None
    }
    fn glz(&mut self, _: &[u8]) -> Result<Pixels, ImageError> {
        Err(ImageError::Unsupported("no GLZ here".into()))
    }
}

/// A `SpiceImage` of `ty` whose payload is `data_size u32, data`.
fn spice_image(ty: u8, width: u32, height: u32, data: &[u8]) -> Vec<u8> {
    // Offset 0 is the null pointer in a message body: start the image at 4.
    let mut b = vec![0u8; 4];
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&[ty, 0]);
    b.extend_from_slice(&width.to_le_bytes());
    b.extend_from_slice(&height.to_le_bytes());
    b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    b.extend_from_slice(data);
    b
}

/// The records of a `.lzs` session (see tests/fixtures/lz/README.md): (glz?, image data).
fn lzs_records(blob: &[u8]) -> (u32, Vec<(bool, &[u8])>) {
    let u32_at = |at: usize| u32::from_le_bytes(blob[at..at + 4].try_into().unwrap());
    assert_eq!(&blob[..8], b"SPTAPLZS");
    let (window, count) = (u32_at(12), u32_at(24));
    let mut pos = 28;
    let mut records = Vec::new();
    for _ in 0..count {
        let len = u32_at(pos) as usize;
        let rec = &blob[pos + 4..pos + 4 + len];
        records.push((rec[0] == 2, &rec[9..]));
        pos += 4 + len;
    }
    (window, records)
}

fn row(codec: &str, input: &str, ours: f64, peer: Option<f64>) {
    let peer = peer.map_or("n/a".to_string(), |p| format!("{p:.1}"));
    println!("| {codec} | {input} | {ours:.1} | {peer} |");
}

fn main() {
    use shakenfist_spice_compression as peer;
    println!("| codec | input | spicetap Mpx/s | shakenfist-spice-compression Mpx/s |");
    println!("| --- | --- | ---: | ---: |");

    for name in ["quic/linux-rgb32-320x240.quic", "quic/bios-rgb32-720x400.quic"] {
        let data = read(name);
        let h = quic::parse_header(&data).expect("fixture header");
        let (w, hh) = (h.width, h.height);
        let ours = measure(|| {
            let img = quic::decode(&data).expect("spicetap QUIC");
            u64::from(img.width * img.height)
        });
        let theirs = measure(|| {
            let px = peer::quic::quic_decode(&data, w, hh).expect("peer QUIC");
            assert!(px.len() >= (w * hh) as usize);
            u64::from(w * hh)
        });
        row("QUIC", name, ours, Some(theirs));
    }

    let lz = read("lz/seabios-720x400-rgb32.lz");
    let ours = measure(|| {
        let img = decode_lz(&lz).expect("spicetap LZ");
        u64::from(img.width * img.height)
    });
    let theirs = measure(|| {
        let img = peer::lz::decompress_lz(&lz).expect("peer LZ");
        u64::from(img.width * img.height)
    });
    row("LZ_RGB", "lz/seabios-720x400-rgb32.lz", ours, Some(theirs));

    let blob = read("lz/boot-session.lzs");
    let (window, records) = lzs_records(&blob);
    let ours = measure(|| {
        let mut dict = GlzDictionary::new(window);
        let mut n = 0u64;
        for (glz, data) in &records {
            let img = if *glz { dict.decode(data) } else { Ok(decode_lz(data).expect("LZ")) }.expect("spicetap GLZ");
            n += u64::from(img.width * img.height);
        }
        n
    });
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let theirs = measure(|| {
        rt.block_on(async {
            let dict = peer::glz::GlzDictionary::new();
            let mut n = 0u64;
            for (glz, data) in &records {
                if *glz {
                    let img = peer::glz::decompress_glz(data, &dict).await.expect("peer GLZ");
                    n += u64::from(img.width * img.height);
                    let oldest = img.image_id.saturating_sub(u64::from(img.win_head_dist));
                    dict.insert(img.image_id, img.pixels);
                    dict.evict_older_than(oldest);
                } else {
                    let img = peer::lz::decompress_lz(data).expect("peer LZ");
                    n += u64::from(img.width * img.height);
                }
            }
            n
        })
    });
    row("GLZ_RGB", "lz/boot-session.lzs (915 images)", ours, Some(theirs));

    // LZ4: the SeaBIOS pixels as one block, SPICE_BITMAP_FMT_32BIT, top-down.
    let bios = decode_lz(&lz).expect("LZ");
    let (w, h) = (bios.width, bios.height);
    let raw: Vec<u8> = spicetap_pixels_bgrx(&bios);
    let mut lz4_body = vec![1u8, 8];
    let block = lz4_flex::block::compress(&raw);
    lz4_body.extend_from_slice(&(block.len() as u32).to_be_bytes());
    lz4_body.extend_from_slice(&block);
    let desc = spice_image(image::image_type::LZ4, w, h, &lz4_body);
    let mut src = NoSources(ImageCaches::default());
    let ours = measure(|| {
        let p = image::decode(&desc, 4, &mut src).expect("spicetap LZ4");
        u64::from(p.width * p.height)
    });
    let theirs = measure(|| {
        let img = peer::lz4::decompress_spice_lz4(&lz4_body, w as usize, h as usize).expect("peer LZ4");
        u64::from(img.width * img.height)
    });
    row("LZ4", "SeaBIOS 720x400 as one LZ4 block", ours, Some(theirs));

    let jpeg = read("jpeg/qemu-linux-image.jpg");
    let desc = spice_image(image::image_type::JPEG, 400, 32, &jpeg);
    let ours = measure(|| {
        let p = image::decode(&desc, 4, &mut src).expect("spicetap JPEG");
        u64::from(p.width * p.height)
    });
    row("JPEG", "jpeg/qemu-linux-image.jpg (400x32)", ours, None);

    // The noise band: the busiest JPEG QEMU sends, through both of
    // spice-gtk's libjpeg settings, and through zune-jpeg for comparison.
    use spicetap::render::jpeg::{self, DecodeOptions};
    let band = read("jpeg/qemu-noise-band.jpg");
    let frame = read("jpeg/qemu-linux-mjpeg-frame-no-dht.jpg");
    let pixels = |img: jpeg::RgbImage| u64::from(img.width * img.height);
    let ours = measure(|| pixels(jpeg::decode(&band, &DecodeOptions::spice_gtk_image(1024, 48)).expect("JPEG")));
    row("JPEG", "jpeg/qemu-noise-band.jpg (1024x48 noise, 4:2:0)", ours, None);
    let ours = measure(|| pixels(jpeg::decode(&frame, &DecodeOptions::spice_gtk_mjpeg(1024, 48)).expect("MJPEG")));
    row("MJPEG", "jpeg/qemu-linux-mjpeg-frame-no-dht.jpg (1024x48 noise)", ours, None);
    let zune = measure(|| {
        let options = zune_core::options::DecoderOptions::default()
            .jpeg_set_out_colorspace(zune_core::colorspace::ColorSpace::RGB);
        let mut dec = zune_jpeg::JpegDecoder::new_with_options(band.as_slice(), options);
        dec.decode().expect("zune-jpeg");
        1024 * 48
    });
    row("JPEG (zune-jpeg, not libjpeg-exact)", "jpeg/qemu-noise-band.jpg", zune, None);
}

/// An LZ image's pixels as the little-endian B, G, R, X bytes a 32-bit bitmap holds.
fn spicetap_pixels_bgrx(img: &spicetap::render::lz::LzImage) -> Vec<u8> {
    img.to_argb(&[]).iter().flat_map(|p| p.to_le_bytes()).collect()
}
