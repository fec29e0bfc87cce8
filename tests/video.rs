//! The MP4 of a live session: H.264 that ffprobe reads, as long as the
//! session, whose last frame is within 35 dB PSNR of spice-gtk's picture;
//! and after `kill -9` of the proxy the partial file still plays.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn ffprobe(file: &Path, entries: &str) -> String {
    let out = run_bounded(
        Command::new("ffprobe").args(["-v", "error", "-show_entries", entries, "-of", "default=nw=1:nk=1"]).arg(file),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "ffprobe {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The last decoded frame of a video as RGB24 (ffmpeg overwrites one PPM
/// with every frame).
fn last_frame(file: &Path, w: usize, h: usize) -> Vec<u8> {
    let ppm = file.with_extension("last.ppm");
    let out = run_bounded(
        Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-i"])
            .arg(file)
            .args(["-fps_mode", "passthrough", "-update", "1", "-pix_fmt", "rgb24"])
            .arg(&ppm),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    let (fw, fh, rgb) = read_ppm(&ppm);
    assert_eq!((fw, fh), (w, h));
    rgb
}

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let mse = a.iter().zip(b).map(|(x, y)| f64::from(x.abs_diff(*y)).powi(2)).sum::<f64>() / a.len() as f64;
    if mse == 0.0 { f64::INFINITY } else { 10.0 * (255.0f64 * 255.0 / mse).log10() }
}

fn seconds(rfc3339: &serde_json::Value) -> f64 {
    let t = time::OffsetDateTime::parse(rfc3339.as_str().unwrap(), &time::format_description::well_known::Rfc3339);
    t.unwrap().unix_timestamp_nanos() as f64 / 1e9
}

#[test]
fn live_session_mp4_plays_lasts_as_long_and_ends_on_spice_gtk_picture() {
    let dir = Scratch::new("video-live");
    let qemu = Qemu::bios(&dir.path, "");
    // The SeaBIOS screen is final a few seconds after boot.
    same_screen(|out| spicy_screenshot(qemu.port, out), |out| spicy_screenshot(qemu.port, out), &dir.path);
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", qemu.port), true, &[]);
    let go = dir.path.join("go");
    let toucher = {
        let go = go.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(6));
            std::fs::write(go, "go").unwrap();
        })
    };
    let shot = dir.path.join("spice-gtk.ppm");
    spice_gtk_shot_with(tap.port(), &shot, &go, &["--settle", "0"], Duration::from_secs(120));
    toucher.join().unwrap();
    tap.stop();

    let session = tap.sessions().pop().unwrap();
    let mp4 = session.join("display-0.mp4");
    assert!(mp4.exists(), "display-0.mp4 in {}", session.display());
    assert_eq!(ffprobe(&mp4, "stream=codec_name").trim(), "h264");
    let duration: f64 = ffprobe(&mp4, "format=duration").trim().parse().unwrap();
    let s = session_json(&session);
    let span = seconds(&s["end"]) - seconds(&s["start"]);
    assert!((duration - span).abs() <= 1.0, "video {duration:.3} s, session {span:.3} s");
    let (w, h, expected) = read_ppm(&shot);
    let got = last_frame(&mp4, w, h);
    let p = psnr(&got, &expected);
    eprintln!("video: {duration:.3} s for a {span:.3} s session, last frame PSNR {p:.1} dB");
    assert!(p >= 35.0, "last frame PSNR {p:.1} dB");
    let display = channels(&s).into_iter().find(|c| c["type"] == "display").unwrap();
    let video = &display["render"]["video"];
    assert_eq!(video["files"][0]["file"], "display-0.mp4", "{video}");
}

#[test]
fn mp4_survives_kill_9_of_the_proxy() {
    let dir = Scratch::new("video-kill");
    let qemu = Qemu::linux_booting(&dir.path, "", "spicetap.mode=noise");
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", qemu.port), true, &[]);
    let x = Xvfb::start();
    let _viewer = Guard::spawn(
        "remote-viewer",
        Command::new("remote-viewer")
            .arg(format!("spice://127.0.0.1:{}", tap.port()))
            .env("DISPLAY", &x.display)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    qemu.wait_serial("SPICETAP-GUEST-READY", Duration::from_secs(180));
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(6));
    tap.guard.child.kill().unwrap(); // SIGKILL
    let _ = tap.guard.child.wait();
    let recorded = started.elapsed().as_secs_f64();

    let session = tap.sessions().pop().unwrap();
    let mp4 = session.join("display-0.mp4");
    let duration: f64 = ffprobe(&mp4, "format=duration").trim().parse().unwrap();
    let decoded = run_bounded(
        Command::new("ffmpeg").args(["-v", "error", "-i"]).arg(&mp4).args(["-f", "null", "-"]),
        Duration::from_secs(120),
    );
    assert!(decoded.status.success(), "the partial MP4 decodes: {}", String::from_utf8_lossy(&decoded.stderr));
    eprintln!("after kill -9: {duration:.2} s playable, guest drew for {recorded:.2} s");
    // Everything up to one keyframe interval (2 s) before the kill plays.
    assert!(duration >= recorded - 2.0 - 0.5, "only {duration:.2} s of {recorded:.2} s");
}
