//! Records a synthetic 640x480 screen in real time with `spicetap::video`,
//! until killed: the crash-safety check (see `src/video/tests.rs`, which
//! SIGKILLs it mid-way and checks that the partial MP4 plays).
//!
//! ```text
//! cargo run --example video_crash -- <dir> [moving-seconds] [max-seconds]
//! ```
//!
//! The screen changes at about 30 frames per second for `moving-seconds`
//! (default 3), then stays static (the recorder then repeats keyframes on its
//! own). It prints `started` once, then `elapsed <seconds>` every 100 ms on
//! stdout. After `max-seconds` (default 60) it finishes cleanly and prints the
//! report.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use spicetap::video::{Frame, VideoConfig, VideoRecorder};

const WIDTH: u32 = 640;
const HEIGHT: u32 = 480;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: video_crash <dir> [moving-seconds] [max-seconds]")?);
    let moving = Duration::from_secs_f64(args.next().map_or(Ok(3.0), |arg| arg.parse())?);
    let max = Duration::from_secs_f64(args.next().map_or(Ok(60.0), |arg| arg.parse())?);

    let recorder = VideoRecorder::start(&dir, "display-0", VideoConfig::default())?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "started")?;
    stdout.flush()?;
    let mut printed = Duration::ZERO;
    loop {
        let now = recorder.elapsed();
        if now >= max {
            break;
        }
        if now < moving {
            recorder.offer(Frame::new(now, WIDTH, HEIGHT, Arc::new(screen(now)))?);
        }
        if now >= printed {
            writeln!(stdout, "elapsed {:.3}", now.as_secs_f64())?;
            stdout.flush()?;
            printed += Duration::from_millis(100);
        }
        std::thread::sleep(Duration::from_millis(33));
    }
    let report = recorder.finish()?;
    writeln!(stdout, "{report:#?}")?;
    Ok(())
}

/// A desktop-like picture: a title bar, lines of text-like marks, and a
/// window whose position depends on `t`.
fn screen(t: Duration) -> Vec<u32> {
    let (w, h) = (WIDTH as usize, HEIGHT as usize);
    let mut pixels = vec![0xffff_ffff_u32; w * h];
    for (y, row) in pixels.chunks_exact_mut(w).enumerate() {
        for (x, pixel) in row.iter_mut().enumerate() {
            if y < 24 {
                *pixel = 0xff30_50a0;
            } else if y % 16 < 10 && x % 7 < 5 && (x * 31 + y * 17) % 5 < 2 && (x / 7 + y / 16) % 9 != 0 {
                *pixel = 0xff20_2020;
            }
        }
    }
    let offset = (t.as_millis() as usize / 10) % (w - 200);
    for row in pixels.chunks_exact_mut(w).skip(200).take(120) {
        row[offset..offset + 160].fill(0xffd0_6020);
    }
    pixels
}
