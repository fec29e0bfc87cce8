//! Encoding speed of `spicetap::video`: frames per second through the whole
//! recorder (xRGB to YUV, H.264, MP4), at 1024x768 and 1920x1080 by default.
//!
//! ```text
//! cargo run --release --example video_speed -- [--screen-content] [WIDTHxHEIGHT ...]
//! ```
//!
//! The frames are desktop-like (text, a moving window) and all different;
//! they are pushed with 1/30 s timestamps through a recorder with the default
//! settings except `realtime` (so nothing is dropped and nothing waits for
//! the clock).

use std::sync::Arc;
use std::time::{Duration, Instant};

use spicetap::video::{Frame, VideoConfig, VideoRecorder};

const FRAMES: usize = 150;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let screen_content = args.iter().any(|arg| arg == "--screen-content");
    let mut sizes: Vec<(u32, u32)> = args
        .iter()
        .filter(|arg| !arg.starts_with("--"))
        .map(|arg| {
            let (w, h) = arg.split_once('x').ok_or("sizes are WIDTHxHEIGHT")?;
            Ok::<_, Box<dyn std::error::Error>>((w.parse()?, h.parse()?))
        })
        .collect::<Result<_, _>>()?;
    if sizes.is_empty() {
        sizes = vec![(1024, 768), (1920, 1080)];
    }
    let dir = std::env::temp_dir().join(format!("video_speed-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for (i, &(width, height)) in sizes.iter().enumerate() {
        let pictures: Vec<Arc<Vec<u32>>> = (0..FRAMES).map(|n| Arc::new(screen(width, height, n))).collect();
        let config = VideoConfig { realtime: false, screen_content, ..VideoConfig::default() };
        let recorder = VideoRecorder::start(&dir, &format!("speed-{i}"), config)?;
        let interval = Duration::from_secs(1) / 30;
        let started = Instant::now();
        for (n, pixels) in pictures.iter().enumerate() {
            recorder.push(Frame::new(interval * n as u32, width, height, Arc::clone(pixels))?);
        }
        let report = recorder.finish_at(interval * FRAMES as u32)?;
        let seconds = started.elapsed().as_secs_f64();
        let bytes = report.stats.bytes_written as f64;
        println!(
            "{width}x{height}: {:.1} frames/s ({:.1} ms/frame), {} samples, {:.0} KB, {:.2} Mbit/s at 30 frames/s",
            FRAMES as f64 / seconds,
            seconds * 1000.0 / FRAMES as f64,
            report.file.as_ref().map_or(0, |f| f.samples),
            bytes / 1000.0,
            bytes * 8.0 / report.duration.as_secs_f64() / 1e6,
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// A desktop-like picture: lines of text-like marks, coloured icons, and a
/// window that moves with `n`.
fn screen(width: u32, height: u32, n: usize) -> Vec<u32> {
    let (w, h) = (width as usize, height as usize);
    let mut pixels = vec![0xffff_ffff_u32; w * h];
    for (y, row) in pixels.chunks_exact_mut(w).enumerate() {
        for (x, pixel) in row.iter_mut().enumerate() {
            *pixel = if y < 28 {
                0xff30_50a0
            } else if x < 120 {
                if (y / 60) % 2 == 0 && (20..60).contains(&x) { 0xffd0_3030 } else { 0xffee_eeee }
            } else if y % 16 < 10 && x % 7 < 5 && (x * 31 + y * 17) % 5 < 2 && (x / 7 + y / 16) % 9 != 0 {
                0xff20_2020
            } else {
                0xffff_ffff
            };
        }
    }
    let (ww, wh) = (w / 3, h / 3);
    let x0 = 130 + (n * 11) % (w - ww - 130);
    let y0 = 40 + (n * 5) % (h - wh - 40);
    for (y, row) in pixels.chunks_exact_mut(w).enumerate().skip(y0).take(wh) {
        for (x, pixel) in row.iter_mut().enumerate().skip(x0).take(ww) {
            *pixel = if y < y0 + 18 {
                0xff20_60c0
            } else if (y - y0) % 14 < 10 && (x * 13 + y * 7) % 4 == 0 {
                0xff10_1010
            } else {
                0xfff4_f4e8
            };
        }
    }
    pixels
}
