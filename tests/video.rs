//! The MP4 of a live session: H.264 that ffprobe reads, as long as the
//! session, whose last frame is within 35 dB PSNR of spice-gtk's picture;
//! one file across resolution changes that ffmpeg and Chromium play from
//! start to end; and after `kill -9` of the proxy the partial file still
//! plays.

mod support;

use std::path::Path;
use std::process::Command;
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
/// with every frame). Decoding starts at the keyframe before the last three
/// seconds: more than the keyframe interval (2 s), so a frame is always in
/// the window however the session's end falls between frames, and short
/// enough to stay past the resolution changes (ffmpeg scales every output
/// frame to the size of its first one).
fn last_frame(file: &Path, w: usize, h: usize) -> Vec<u8> {
    let ppm = file.with_extension("last.ppm");
    let out = run_bounded(
        Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-sseof", "-3", "-i"])
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
    assert_eq!(video["file"]["file"], "display-0.mp4", "{video}");
}

/// `ffmpeg -v error -i FILE -f null -` (its default constant-rate output):
/// asserts it succeeds and prints nothing.
fn decodes_cleanly(mp4: &Path) {
    let out = run_bounded(
        Command::new("ffmpeg").args(["-v", "error", "-i"]).arg(mp4).args(["-f", "null", "-"]),
        Duration::from_secs(300),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "ffmpeg -f null: {}\n{stderr}", out.status);
}

/// A session recorded from QEMU's start (remote-viewer connected while the
/// VM is still stopped): SeaBIOS at 720x400, then the Linux guest's qxl
/// console at 1024x768, all in one display-0.mp4 that ffmpeg decodes
/// without a word, that lasts as long as the session, ends on spice-gtk's
/// picture and that Chromium plays across the resolution changes.
#[test]
fn boot_to_linux_is_one_mp4_that_plays_everywhere() {
    let dir = Scratch::new("video-boot");
    let qemu = Qemu::linux_paused(&dir.path, "", "spicetap.mode=text");
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", qemu.port), true, &[]);
    let x = Xvfb::start();
    let viewer = remote_viewer(&x, &format!("spice://127.0.0.1:{}", tap.port()), &[]);
    wait_until("remote-viewer's display channel", Duration::from_secs(60), || {
        tap.sessions().first().is_some_and(|s| s.join("display-0.pcap").exists())
    });
    std::thread::sleep(Duration::from_secs(1));
    qemu.monitor_command("cont");
    qemu.wait_serial("SPICETAP-GUEST-READY", Duration::from_secs(180));
    std::thread::sleep(Duration::from_secs(4));
    let shot = dir.path.join("final.ppm");
    spicy_screenshot(qemu.port, &shot);
    drop(viewer);
    tap.stop();

    let session = tap.sessions().pop().unwrap();
    let videos: Vec<_> = std::fs::read_dir(&session)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".mp4"))
        .collect();
    assert_eq!(videos, ["display-0.mp4"], "one video for the display");
    let mp4 = session.join("display-0.mp4");
    let s = session_json(&session);
    let display = channels(&s).into_iter().find(|c| c["type"] == "display").unwrap();
    let video = display["render"]["video"]["file"].clone();
    let sizes: Vec<(u64, u64, f64)> = video["resolutions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["width"].as_u64().unwrap(), r["height"].as_u64().unwrap(), r["at_s"].as_f64().unwrap()))
        .collect();
    eprintln!("resolutions (width, height, from s): {sizes:?}");
    // qxl's 640x480 at reset, SeaBIOS's 720x400 text mode, ..., the console.
    assert!(sizes.iter().any(|r| (r.0, r.1) == (720, 400)), "SeaBIOS: {sizes:?}");
    assert_eq!(sizes.last().map(|r| (r.0, r.1)), Some((1024, 768)), "{sizes:?}");

    decodes_cleanly(&mp4);
    let duration: f64 = ffprobe(&mp4, "format=duration").trim().parse().unwrap();
    let span = seconds(&s["end"]) - seconds(&s["start"]);
    assert!((duration - span).abs() <= 1.0, "video {duration:.3} s, session {span:.3} s");
    let (w, h, expected) = read_ppm(&shot);
    let p = psnr(&last_frame(&mp4, w, h), &expected);
    assert!(p >= 35.0, "last frame PSNR {p:.1} dB");

    // Chromium, at 8x: past the change to the guest's console.
    let start = video["start_s"].as_f64().unwrap();
    let change = sizes.last().unwrap().2 - start;
    let played = browser::chromium_play(&mp4, change + 0.5, 8.0, Duration::from_secs(120));
    eprintln!(
        "video: {duration:.3} s for a {span:.3} s session, last frame PSNR {p:.1} dB, 1024x768 from {change:.2} s; Chromium: {played:?}"
    );
    assert!(played.why == "passed" || played.why == "ended", "{played:?}");
    assert!((played.duration - span).abs() <= 1.0, "Chromium's duration {} s, session {span:.3} s", played.duration);
    assert!(played.current_time > change, "{played:?}");
    assert!(played.sizes.contains(&(1024, 768)), "{played:?}");

    // `spicetap render --mp4` writes the same kind of file from the pcaps.
    let offline = dir.path.join("offline.mp4");
    let out = run_bounded(
        Command::new(SPICETAP).arg("render").arg(&session).arg("--mp4").arg(&offline),
        Duration::from_secs(300),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("720x400 from") && stderr.contains("1024x768 from"), "{stderr}");
    decodes_cleanly(&offline);
    let widths = ffprobe(&offline, "frame=width");
    assert!(widths.lines().any(|w| w.trim() == "720") && widths.lines().any(|w| w.trim() == "1024"), "{widths}");
    let offline_duration: f64 = ffprobe(&offline, "format=duration").trim().parse().unwrap();
    assert!((offline_duration - duration).abs() <= 1.0, "offline {offline_duration:.3} s, live {duration:.3} s");
}

#[test]
fn mp4_survives_kill_9_of_the_proxy() {
    let dir = Scratch::new("video-kill");
    let qemu = Qemu::linux_booting(&dir.path, "", "spicetap.mode=noise");
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", qemu.port), true, &[]);
    let x = Xvfb::start();
    let _viewer = remote_viewer(&x, &format!("spice://127.0.0.1:{}", tap.port()), &[]);
    // The video starts with its first frame, during the boot.
    wait_until("display-0.mp4", Duration::from_secs(60), || {
        tap.sessions().first().is_some_and(|s| s.join("display-0.mp4").exists())
    });
    let started = Instant::now();
    qemu.wait_serial("SPICETAP-GUEST-READY", Duration::from_secs(180));
    std::thread::sleep(Duration::from_secs(6));
    tap.guard.child.kill().unwrap(); // SIGKILL
    let _ = tap.guard.child.wait();
    let recorded = started.elapsed().as_secs_f64();

    let session = tap.sessions().pop().unwrap();
    let mp4 = session.join("display-0.mp4");
    let duration: f64 = ffprobe(&mp4, "format=duration").trim().parse().unwrap();
    decodes_cleanly(&mp4);
    // The boot's resolution changes are in the one file, up to the console.
    let widths = ffprobe(&mp4, "frame=width");
    assert!(widths.lines().any(|w| w.trim() == "1024"), "the guest's 1024x768 console is in display-0.mp4");
    assert!(!session.join("display-0.1.mp4").exists());
    eprintln!("after kill -9: {duration:.2} s playable of {recorded:.2} s recorded");
    // Everything up to one keyframe interval (2 s) before the kill plays.
    assert!(duration >= recorded - 2.0 - 0.5, "only {duration:.2} s of {recorded:.2} s");
    // session.json is whole (written by rename) and every pcap reads to
    // its last complete packet, quiet channels included (flushed within
    // about a second).
    let report = session_json(&session);
    let pcaps: Vec<_> = channels(&report).iter().filter_map(|c| c["pcap"].as_str().map(str::to_string)).collect();
    assert!(pcaps.iter().any(|p| p.starts_with("display")), "{report}");
    for pcap in pcaps {
        let packets = pcap_packets_to_last_complete(&session.join(&pcap));
        eprintln!("after kill -9: {pcap} holds {packets} packets");
        assert!(packets > 0, "{pcap} is empty");
    }
}
