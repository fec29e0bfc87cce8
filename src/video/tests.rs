//! End-to-end tests: record synthetic screens, then check the files with
//! `ffprobe` and `ffmpeg` (both must be installed).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

const KI: Duration = Duration::from_secs(2);

fn manual() -> VideoConfig {
    VideoConfig { realtime: false, sync: false, ..VideoConfig::default() }
}

/// Whether a pixel of glyph `c` at `(gx, gy)` in its 5x10 cell is ink.
fn glyph(c: usize, gx: usize, gy: usize) -> bool {
    let h = (c as u32).wrapping_mul(2_654_435_761);
    let bit = |b: u32| h >> b & 1 == 1;
    (gx == 0 && bit(1) && gy >= 2)
        || (gx == 4 && bit(2) && gy >= 2)
        || (gx == 2 && bit(3) && gy >= 4)
        || (gy == 2 && bit(4))
        || (gy == 5 && bit(5))
        || (gy == 9 && bit(6))
        || (gx == gy / 2 && bit(7))
}

/// A desktop-like picture: title bar, side panel with coloured icons, lines
/// of black text-like glyphs (with grey anti-aliasing), and a window with
/// its own text whose position follows `step`.
fn desktop(width: u32, height: u32, step: usize) -> Vec<u32> {
    let (w, h) = (width as usize, height as usize);
    let mut px = vec![0xffff_ffff_u32; w * h];
    let mut put = |x: usize, y: usize, c: u32| {
        if x < w && y < h {
            px[y * w + x] = c;
        }
    };
    for y in 0..24 {
        for x in 0..w {
            put(x, y, 0xff00_0000 | ((40 + (x * 60 / w) as u32) << 16) | 0x3c8c);
        }
    }
    for y in 24..h {
        for x in 0..120.min(w) {
            put(x, y, 0xffee_eeee);
        }
    }
    for i in 0..h / 60 {
        let colour = [0xffd0_3030, 0xff30_a030, 0xff30_50d0, 0xffe0_a020][i % 4];
        for y in 40 + i * 60..80 + i * 60 {
            for x in 20..60 {
                put(x, y, colour);
            }
        }
    }
    let mut y0 = 36;
    let mut line = 0;
    while y0 + 12 < h {
        let len = (line * 37 % 70) + 10;
        for k in 0..len {
            let x0 = 130 + k * 7;
            let c = line * 131 + k * 17;
            if x0 + 6 >= w || c % 6 == 0 {
                continue;
            }
            for gy in 0..10 {
                for gx in 0..5 {
                    if glyph(c % 40, gx, gy) {
                        put(x0 + gx, y0 + gy, 0xff20_2020);
                        if !glyph(c % 40, gx + 1, gy) {
                            put(x0 + gx + 1, y0 + gy, 0xffa0_a0a0);
                        }
                    }
                }
            }
        }
        y0 += 16;
        line += 1;
    }
    let (ww, wh) = (w / 3, h / 3);
    let rx = 130 + (step * 11) % w.saturating_sub(ww + 130).max(1);
    let ry = 40 + (step * 5) % h.saturating_sub(wh + 40).max(1);
    for y in ry..ry + wh {
        for x in rx..rx + ww {
            let title = y < ry + 18;
            let ink = !title && (y - ry) % 14 < 10 && glyph((x - rx) / 7 + y / 14, (x - rx) % 7, (y - ry) % 14);
            put(
                x,
                y,
                if title {
                    0xff20_60c0
                } else if ink {
                    0xff10_1010
                } else {
                    0xfff4_f4e8
                },
            );
        }
    }
    px
}

fn frame(at: Duration, width: u32, height: u32, step: usize) -> Frame {
    Frame::new(at, width, height, Arc::new(desktop(width, height, step))).unwrap()
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Runs a tool; panics with its stderr unless it succeeds with an empty
/// stderr (`-v error` prints nothing unless something is wrong).
fn run(program: &str, args: &[&str]) -> Vec<u8> {
    let output = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && stderr.trim().is_empty(), "{program} {args:?}: {}\n{stderr}", output.status);
    output.stdout
}

fn ffprobe(path: &Path, args: &[&str]) -> String {
    let mut all = vec!["-v", "error"];
    all.extend_from_slice(args);
    all.push(path.to_str().unwrap());
    String::from_utf8(run("ffprobe", &all)).unwrap()
}

/// `key=value` lines of `ffprobe -show_entries`.
fn probe_value(path: &Path, entries: &str, key: &str) -> String {
    let out = ffprobe(path, &["-show_entries", entries, "-of", "default=noprint_wrappers=1"]);
    out.lines()
        .find_map(|line| line.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {out}"))
        .to_owned()
}

fn duration_of(path: &Path) -> f64 {
    probe_value(path, "format=duration", "duration").parse().unwrap()
}

/// Presentation times of the packets, and whether each is a keyframe.
fn packets(path: &Path) -> Vec<(f64, bool)> {
    let out = ffprobe(path, &["-select_streams", "v:0", "-show_entries", "packet=pts_time,flags", "-of", "csv=p=0"]);
    out.lines()
        .map(|line| {
            let (pts, flags) = line.split_once(',').unwrap();
            (pts.parse().unwrap(), flags.starts_with('K'))
        })
        .collect()
}

/// Times of the keyframes, decoded (`-skip_frame nokey`).
fn decoded_keyframes(path: &Path) -> Vec<f64> {
    let out = ffprobe(
        path,
        &["-select_streams", "v:0", "-skip_frame", "nokey", "-show_entries", "frame=pts_time", "-of", "csv=p=0"],
    );
    out.lines().map(|line| line.trim_end_matches(',').parse().unwrap()).collect()
}

/// Decodes the whole file, checking ffmpeg reports no error; returns the
/// number of frames and the time of the last one. (Timestamps pass through
/// unchanged: by default ffmpeg would convert the variable frame rate to a
/// constant one first, at a guessed rate.)
fn decode_all(path: &Path) -> (usize, f64) {
    let path_str = path.to_str().unwrap();
    let args = ["-v", "error", "-i", path_str, "-fps_mode", "passthrough", "-enc_time_base", "-1", "-f", "null", "-"];
    run("ffmpeg", &args);
    let out = ffprobe(path, &["-select_streams", "v:0", "-show_entries", "frame=pts_time", "-of", "csv=p=0"]);
    let times: Vec<f64> = out.lines().map(|line| line.trim_end_matches(',').parse().unwrap()).collect();
    (times.len(), times.iter().copied().fold(0.0, f64::max))
}

/// The last decoded picture, as RGB24 (`width x height` of the file).
fn last_picture(path: &Path, scratch: &Path) -> Vec<u8> {
    let out = scratch.join("last.rgb");
    run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-y",
            "-i",
            path.to_str().unwrap(),
            "-fps_mode",
            "passthrough",
            "-pix_fmt",
            "rgb24",
            "-c:v",
            "rawvideo",
            "-f",
            "image2",
            "-update",
            "1",
            out.to_str().unwrap(),
        ],
    );
    std::fs::read(out).unwrap()
}

/// PSNR (dB) of the decoded RGB24 picture (`coded_width` wide) against the
/// source's `width x height` pixels.
fn psnr(decoded: &[u8], coded_width: usize, source: &Frame) -> f64 {
    let (w, h) = (source.width() as usize, source.height() as usize);
    let mut sum = 0.0;
    for y in 0..h {
        for x in 0..w {
            let p = source.pixels()[y * source.stride() + x];
            let d = &decoded[(y * coded_width + x) * 3..][..3];
            for (c, shift) in [16, 8, 0].into_iter().enumerate() {
                let e = f64::from((p >> shift) as u8) - f64::from(d[c]);
                sum += e * e;
            }
        }
    }
    let mse = sum / (w * h * 3) as f64;
    10.0 * (255.0 * 255.0 / mse).log10()
}

fn max_gap(times: &[f64]) -> f64 {
    times.windows(2).map(|pair| pair[1] - pair[0]).fold(0.0, f64::max)
}

/// (1) Irregular frames over 5 s, one static stretch longer than the
/// keyframe interval: true timestamps, duration, keyframes, quality.
#[test]
fn synthetic_sequence_plays_with_true_timing() {
    for (width, height) in [(640, 480), (641, 481)] {
        let dir = tempfile::tempdir().unwrap();
        let recorder = VideoRecorder::start(dir.path(), "display-0", manual()).unwrap();
        // 5.2 s from 0.3 s, gaps from 40 ms to 2.2 s (longer than the
        // keyframe interval: a repeat is due in it).
        let mut times = Vec::new();
        let mut t = 300;
        for i in 0..25u64 {
            times.push(t);
            t += [40, 90, 45, 160, 70][i as usize % 5];
        }
        let static_from = t;
        t += 2_200;
        for i in 0..15u64 {
            times.push(t);
            t += 40 + (i * 37) % 50;
        }
        let mut last = None;
        for (step, &at) in times.iter().enumerate() {
            let f = frame(ms(at), width, height, if at >= static_from { step + 1000 } else { step });
            last = Some(f.clone());
            recorder.push(f);
        }
        let end = ms(t + 150);
        let report = recorder.finish_at(end).unwrap();
        let last = last.unwrap();

        let file = report.file.as_ref().unwrap();
        assert_eq!(file.path, dir.path().join("display-0.mp4"));
        assert_eq!(file.sizes.len(), 1);
        let size = &file.sizes[0];
        assert_eq!((size.width, size.height, size.at), (width, height, ms(300)));
        assert_eq!((size.coded_width, size.coded_height), (width + width % 2, height + height % 2));
        assert_eq!(file.start, ms(300));
        // The end is on the grid: the first tick at or after the requested end.
        let file_end = file.end.unwrap();
        assert!(file_end >= end && file_end < end + ms(34), "{file_end:?} for {end:?}");
        let stats = &report.stats;
        assert_eq!(stats.frames_offered, times.len() as u64);
        assert_eq!(stats.frames_encoded, times.len() as u64, "no frame closer than 1/30 s");
        assert_eq!(stats.frames_dropped, 0);
        assert!(!stats.failed);
        let bytes = std::fs::metadata(&file.path).unwrap().len();
        assert_eq!((file.bytes, stats.bytes_written), (bytes, bytes));

        let path = &file.path;
        assert_eq!(probe_value(path, "stream=codec_name", "codec_name"), "h264");
        assert_eq!(probe_value(path, "stream=width", "width"), (width + width % 2).to_string());
        assert_eq!(probe_value(path, "stream=height", "height"), (height + height % 2).to_string());
        let span = (file_end - ms(300)).as_secs_f64();
        let duration = duration_of(path);
        assert!((duration - span).abs() < 0.2, "duration {duration} for a span of {span}");

        // Every frame is shown from the first tick of 1/30 s at or after
        // its time, and every sample starts on the grid.
        let packets = packets(path);
        assert_eq!(packets.len() as u64, file.samples);
        for &at in &times {
            let want = ((at * 30).div_ceil(1000) - 9) as f64 / 30.0;
            assert!(packets.iter().any(|(pts, _)| (pts - want).abs() < 0.0001), "no picture at {want}");
        }
        for (pts, _) in &packets {
            assert!((pts * 30.0 - (pts * 30.0).round()).abs() < 0.001, "{pts} is off the grid");
        }
        // So common tools see the real rate, and decode at their default
        // (constant) frame rate without complaint.
        assert_eq!(probe_value(path, "stream=r_frame_rate", "r_frame_rate"), "30/1");
        run("ffmpeg", &["-v", "error", "-i", path.to_str().unwrap(), "-f", "null", "-"]);
        let keyframes: Vec<f64> = packets.iter().filter(|(_, key)| *key).map(|(pts, _)| *pts).collect();
        let decoded = decoded_keyframes(path);
        assert_eq!(decoded, keyframes, "every keyframe decodes on its own");
        assert_eq!(keyframes[0], 0.0);
        let gap = max_gap(&keyframes);
        assert!(gap <= KI.as_secs_f64() + 0.001, "keyframes {keyframes:?}");
        assert!(span - keyframes.last().unwrap() <= KI.as_secs_f64());
        let (frames, last_frame) = decode_all(path);
        assert_eq!(frames as u64, file.samples);
        assert_eq!(last_frame, packets.last().unwrap().0);

        let picture = last_picture(path, dir.path());
        let coded_width = (width + width % 2) as usize;
        assert_eq!(picture.len(), coded_width * (height + height % 2) as usize * 3);
        let quality = psnr(&picture, coded_width, &last);
        eprintln!(
            "{width}x{height}: {} frames, {} samples, {} bytes, duration {duration:.3} s (span {span:.3} s), keyframes {keyframes:?}, last-frame PSNR {quality:.1} dB",
            times.len(),
            file.samples,
            file.bytes
        );
        assert!(quality >= 35.0, "last-frame PSNR {quality:.1} dB");
    }
}

/// (2) Size changes stay in the one file: each starts with an IDR picture
/// carrying its own parameter sets, shown at its own size.
#[test]
fn resolution_changes_stay_in_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = VideoRecorder::start(dir.path(), "display-0", manual()).unwrap();
    let sizes = [(640, 480, 0..1000), (64, 64, 1000..1100), (800, 600, 1100..2000), (640, 480, 2000..2400)];
    for (width, height, span) in sizes.clone() {
        for at in span.step_by(50) {
            recorder.push(frame(ms(at), width, height, at as usize / 50));
        }
    }
    let report = recorder.finish_at(ms(2500)).unwrap();
    let file = report.file.as_ref().unwrap();
    assert_eq!(file.path, dir.path().join("display-0.mp4"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "one file");
    let got: Vec<_> = file.sizes.iter().map(|s| (s.width, s.height, s.at)).collect();
    let want: Vec<_> = sizes.iter().map(|(w, h, span)| (*w, *h, ms(span.start))).collect();
    assert_eq!(got, want);
    assert_eq!(report.duration, ms(2500));
    assert_eq!((file.start, file.end), (ms(0), Some(ms(2500))));
    let path = &file.path;
    let duration = duration_of(path);
    assert!((duration - 2.5).abs() < 0.001, "{duration} s");
    let (frames, _) = decode_all(path);
    assert_eq!(frames as u64, file.samples);
    run("ffmpeg", &["-v", "error", "-i", path.to_str().unwrap(), "-f", "null", "-"]);
    // Each decoded picture has its own size: nothing scaled or stretched.
    let out =
        ffprobe(path, &["-select_streams", "v:0", "-show_entries", "frame=pts_time,width,height", "-of", "csv=p=0"]);
    let mut seen: Vec<(u32, u32, f64)> = Vec::new();
    for line in out.lines() {
        let mut it = line.trim_end_matches(',').split(',');
        let (pts, w, h) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        let (w, h, pts): (u32, u32, f64) = (w.parse().unwrap(), h.parse().unwrap(), pts.parse().unwrap());
        if seen.last().is_none_or(|&(lw, lh, _)| (lw, lh) != (w, h)) {
            seen.push((w, h, pts));
        }
    }
    let want: Vec<_> = sizes.iter().map(|(w, h, span)| (*w, *h, span.start as f64 / 1000.0)).collect();
    assert_eq!(seen.len(), want.len(), "{seen:?}");
    for (s, w) in seen.iter().zip(&want) {
        assert_eq!((s.0, s.1), (w.0, w.1));
        assert!((s.2 - w.2).abs() < 0.001, "{seen:?}");
    }
    let keyframes = decoded_keyframes(path);
    for (_, _, at) in &want {
        assert!(keyframes.iter().any(|k| (k - at).abs() < 0.001), "an IDR at {at}: {keyframes:?}");
    }
    assert_eq!(report.stats.frames_encoded, 48, "every frame pushed (20 + 2 + 18 + 8)");
    assert_eq!(file.bytes, report.stats.bytes_written);
    assert_eq!(file.bytes, std::fs::metadata(path).unwrap().len());
}

/// The example binary, (re)built now with cargo if needed (a plain
/// `cargo test` builds it too; `cargo test --lib` does not).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let path = profile_dir.join("examples").join(name);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "--example", name]).current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.ends_with("release") {
        build.arg("--release");
    }
    match build.status() {
        Ok(status) => assert!(status.success(), "cannot build the {name} example"),
        Err(error) => assert!(path.exists(), "no {name} example, and cannot run cargo: {error}"),
    }
    path
}

/// (3) SIGKILL mid-recording, while the screen changes and during a static
/// stretch: the file plays up to at most one keyframe interval before the
/// kill.
#[test]
fn killed_recording_plays() {
    use std::io::BufRead;
    for moving in ["60", "3"] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(example("video_crash"))
            .args([dir.path().to_str().unwrap(), moving, "60"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut elapsed = 0.0;
        while elapsed < 5.5 {
            let line = lines.next().expect("the example stopped").unwrap();
            if let Some(value) = line.strip_prefix("elapsed ") {
                elapsed = value.parse().unwrap();
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let path = dir.path().join("display-0.mp4");
        assert_eq!(probe_value(&path, "stream=codec_name", "codec_name"), "h264");
        let (frames, last_frame) = decode_all(&path);
        let keyframes = decoded_keyframes(&path);
        // The end of the last complete fragment: the last frame is shown until then.
        let duration = duration_of(&path);
        eprintln!(
            "moving {moving} s, killed at {elapsed:.2} s: plays {duration:.2} s; {frames} frames decoded, the last at {last_frame:.2} s; keyframes {keyframes:?}"
        );
        assert!(duration >= elapsed - KI.as_secs_f64(), "plays {duration} s of {elapsed} s");
        assert!(last_frame < duration && frames >= 10, "{frames} frames, the last at {last_frame}");
        assert!(max_gap(&keyframes) <= KI.as_secs_f64() + 0.001);
    }
}

/// A crash while a fragment is being written leaves a trailing `free` box
/// (the fragment is made visible only once whole): readers skip it.
#[test]
fn torn_fragment_is_skipped() {
    use super::convert::{Geometry, Picture};
    use super::fmp4::{Mp4Writer, hide};
    use super::h264::H264;
    use std::io::Write;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("torn.mp4");
    let geometry = Geometry::new(320, 240);
    let mut picture = Picture::new(geometry);
    let mut h264 = H264::new(&VideoConfig::default()).unwrap();
    let mut writer: Option<Mp4Writer> = None;
    for i in 0..30 {
        picture.fill(&frame(ms(i * 40), 320, 240, i as usize)).unwrap();
        let sample = h264.encode(&picture, i % 15 == 0, ms(i * 40)).unwrap().unwrap();
        let writer = writer.get_or_insert_with(|| {
            let (sps, pps) = h264.parameter_sets().unwrap();
            Mp4Writer::create(&path, geometry, sps, pps, 90_000, false).unwrap()
        });
        if i == 15 {
            writer.flush().unwrap();
        }
        writer.push(sample, 3600);
    }
    // The second fragment, as `append` first writes it, cut anywhere.
    let mut torn = writer.unwrap().fragment().unwrap();
    hide(&mut torn).unwrap();
    for cut in [3, 8, 100, torn.len() / 2, torn.len() - 1, torn.len()] {
        let copy = dir.path().join(format!("torn-{cut}.mp4"));
        std::fs::copy(&path, &copy).unwrap();
        std::fs::OpenOptions::new().append(true).open(&copy).unwrap().write_all(&torn[..cut]).unwrap();
        assert!((duration_of(&copy) - 0.6).abs() < 0.001, "cut at {cut}");
        assert_eq!(decode_all(&copy).0, 15, "cut at {cut}");
    }
}

/// (4) Offering far more than `max_fps`: `offer` never waits, the encoder
/// takes only the newest frames, drops are counted.
#[test]
fn flood_is_bounded_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let config = VideoConfig { sync: false, ..VideoConfig::default() };
    let recorder = VideoRecorder::start(dir.path(), "display-0", config).unwrap();
    let pictures: Vec<Arc<Vec<u32>>> = (0..8).map(|i| Arc::new(desktop(1280, 720, i))).collect();
    let started = Instant::now();
    let (mut offered, mut slow) = (0u64, 0u64);
    let mut slowest = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(2) {
        let f = Frame::new(recorder.elapsed(), 1280, 720, Arc::clone(&pictures[offered as usize % 8])).unwrap();
        let before = Instant::now();
        recorder.offer(f);
        let took = before.elapsed();
        slowest = slowest.max(took);
        slow += u64::from(took > Duration::from_millis(1));
        offered += 1;
    }
    let stats = recorder.stats();
    let report = recorder.finish().unwrap();
    let seconds = report.duration.as_secs_f64();
    eprintln!(
        "flood: {offered} offers in 2 s ({slow} over 1 ms, slowest {slowest:?}); while running {stats:?}; final {:?}",
        report.stats
    );
    assert_eq!(report.stats.frames_offered, offered);
    assert_eq!(report.stats.frames_encoded + report.stats.frames_dropped, offered);
    assert!(offered > 10_000, "offer is too slow: {offered} in 2 s");
    // Only a descheduled thread (the machine is busy with other tests) waits.
    assert!(slow * 100 < offered, "{slow} of {offered} offers took over 1 ms");
    assert!(report.stats.frames_encoded as f64 <= seconds * 30.0 + 2.0, "{:?} in {seconds} s", report.stats);
    assert!(report.stats.frames_encoded >= 2, "{:?}", report.stats);
    let file = report.file.as_ref().unwrap();
    let duration = duration_of(&file.path);
    assert!((duration - seconds).abs() < 0.2, "{duration} vs {seconds}");
    assert_eq!(decode_all(&file.path).0 as u64, file.samples);
}

/// A static screen on the wall clock: keyframes repeat on their own and the
/// duration follows the clock.
#[test]
fn static_screen_repeats_keyframes_in_real_time() {
    let dir = tempfile::tempdir().unwrap();
    let config = VideoConfig { keyframe_interval: Duration::from_secs(1), ..VideoConfig::default() };
    let recorder = VideoRecorder::start(dir.path(), "display-0", config).unwrap();
    recorder.offer(frame(recorder.elapsed(), 320, 240, 0));
    // The repeat at 1 s writes the first fragment (the frame and its
    // refinement), long before anything is finished.
    let file = loop {
        if let Some(file) = recorder.file().filter(|file| file.samples >= 2) {
            break file;
        }
        assert!(recorder.elapsed() < Duration::from_secs(2), "nothing written after {:?}", recorder.elapsed());
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(file.end.is_none(), "{file:?}");
    assert!((duration_of(&file.path) - 1.0).abs() < 0.001);
    std::thread::sleep(Duration::from_millis(2600).saturating_sub(recorder.elapsed()));
    let report = recorder.finish().unwrap();
    let path = &report.file.as_ref().unwrap().path;
    let keyframes = decoded_keyframes(path);
    assert_eq!(keyframes, [0.0, 1.0, 2.0]);
    let duration = duration_of(path);
    assert!((duration - report.duration.as_secs_f64()).abs() < 0.05 && duration > 2.5, "{duration}");
    // Frame, refinement, and per repeat the IDR and its refinement.
    assert_eq!(report.stats.extra_samples, 5);
}

#[test]
fn recorder_moves_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<VideoRecorder>();
    send_sync::<Frame>();
    send_sync::<VideoError>();
}

#[test]
fn tiny_and_huge_frames_are_padded_or_scaled() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = VideoRecorder::start(dir.path(), "d", manual()).unwrap();
    recorder.push(Frame::new(ms(0), 1, 1, vec![0xffff_0000]).unwrap());
    recorder.push(Frame::new(ms(100), 15, 7, vec![0xff00_ff00; 15 * 7]).unwrap());
    recorder.push(frame(ms(200), 4096, 2160, 0));
    recorder.push(frame(ms(300), 4096, 2160, 1));
    let report = recorder.finish_at(ms(400)).unwrap();
    let file = report.file.as_ref().unwrap();
    let sizes: Vec<_> = file.sizes.iter().map(|s| (s.width, s.height, s.coded_width, s.coded_height)).collect();
    assert_eq!(sizes, [(1, 1, 16, 16), (15, 7, 16, 16), (4096, 2160, 3840, 2024)]);
    assert_eq!(decode_all(&file.path).0 as u64, file.samples);
    // The first picture (red, padded to 16x16) is the first frame decoded.
    let first = dir.path().join("first.rgb");
    let path = file.path.to_str().unwrap();
    let args =
        ["-v", "error", "-i", path, "-frames:v", "1", "-pix_fmt", "rgb24", "-f", "rawvideo", first.to_str().unwrap()];
    run("ffmpeg", &args);
    let picture = std::fs::read(&first).unwrap();
    assert_eq!(picture.len(), 16 * 16 * 3);
    assert!(picture.chunks(3).all(|p| p[0] > 200 && p[1] < 60 && p[2] < 60), "red everywhere, padding included");
}

#[test]
fn invalid_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(Frame::new(ms(0), 4, 4, vec![0; 15]), Err(VideoError::FrameSize { .. })));
    assert!(matches!(Frame::new(ms(0), 0, 4, vec![]), Err(VideoError::FrameSize { .. })));
    assert!(matches!(Frame::with_stride(ms(0), 4, 2, 3, vec![0; 8]), Err(VideoError::FrameSize { .. })));
    assert!(Frame::with_stride(ms(0), 4, 2, 6, vec![0; 10]).is_ok());
    for stem in ["", ".", "..", "a/b", "/x"] {
        assert!(matches!(VideoRecorder::start(dir.path(), stem, manual()), Err(VideoError::Stem(_))), "{stem:?}");
    }
    for config in [
        VideoConfig { max_fps: 0, ..manual() },
        VideoConfig { qp: 52, ..manual() },
        VideoConfig { keyframe_interval: Duration::ZERO, ..manual() },
        VideoConfig { keyframe_interval: Duration::from_secs(7200), ..manual() },
    ] {
        assert!(matches!(VideoRecorder::start(dir.path(), "x", config), Err(VideoError::Config(_))));
    }
    assert!(matches!(VideoRecorder::start(&dir.path().join("missing"), "x", manual()), Err(VideoError::Io { .. })));
    std::fs::write(dir.path().join("taken.mp4"), b"").unwrap();
    assert!(matches!(VideoRecorder::start(dir.path(), "taken", manual()), Err(VideoError::Io { .. })));
}

#[test]
fn nothing_recorded_writes_nothing_and_drop_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let report = VideoRecorder::start(dir.path(), "empty", manual()).unwrap().finish().unwrap();
    assert!(report.file.is_none());
    assert_eq!(report.duration, Duration::ZERO);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    let recorder = VideoRecorder::start(dir.path(), "dropped", manual()).unwrap();
    recorder.push(frame(ms(0), 64, 48, 0));
    recorder.push(frame(ms(500), 64, 48, 1));
    drop(recorder);
    let path = dir.path().join("dropped.mp4");
    let duration = duration_of(&path);
    // Frames at ticks 0 and 15, the last refined at tick 16, ending at 17.
    assert!((duration - 17.0 / 30.0).abs() < 0.001, "{duration}");
    assert_eq!(decode_all(&path).0, 4, "two frames, two refinements");
}
