//! `spicetap render` against spice-gtk: QEMU serves the static SeaBIOS
//! screen under each image compression, spicy-screenshot connects through
//! spicetap and saves spice-gtk's rendering, and the PNG spicetap renders
//! from the recorded pcap must be equal in RGB, pixel for pixel.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::*;

/// Renders `session` up to its first MARK (the frame spicy-screenshot
/// saves: the SeaBIOS text cursor blinks, so later frames differ), checking
/// that spicetap met image type `image`.
fn render_first_frame_with(session: &Path, image: Option<&str>) -> (u32, u32, Vec<u8>) {
    let png = session.join("rendered.png");
    let out = run_bounded(
        Command::new(SPICETAP).arg("render").arg(session).args(["--mark", "1", "--png"]).arg(&png),
        Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "spicetap render: {stderr}");
    if let Some(t) = image {
        assert!(stderr.contains(&format!("{t} x")), "no {t} image in the recording: {stderr}");
    }
    read_png(&png)
}

/// Pixels whose RGB differs between a rendering and a PPM.
fn differing(rendered: &(u32, u32, Vec<u8>), shot: &Path) -> usize {
    let (pw, ph, expected) = read_ppm(shot);
    assert_eq!((rendered.0 as usize, rendered.1 as usize), (pw, ph));
    rendered.2.chunks(3).zip(expected.chunks(3)).filter(|(a, b)| a != b).count()
}

fn bios_case(name: &str, spice_opts: &str) {
    bios_case_with(name, spice_opts, None)
}

fn bios_case_with(name: &str, spice_opts: &str, image: Option<&str>) {
    let dir = Scratch::new(&format!("render-{name}"));
    let qemu = Qemu::bios(&dir.path, spice_opts);
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", qemu.port), true, &[]);
    same_screen(|out| spicy_screenshot(qemu.port, out), |out| spicy_screenshot(tap.port(), out), &dir.path);
    tap.stop();
    let session = tap.sessions().pop().expect("a session");
    let rendered = render_first_frame_with(&session, image);
    let n = differing(&rendered, &dir.path.join("via.ppm"));
    assert_eq!(n, 0, "{n} pixels differ from spice-gtk's rendering");
}

#[test]
fn bios_image_compression_off() {
    bios_case_with("off", "image-compression=off", Some("BITMAP"));
}

#[test]
fn bios_auto_glz() {
    bios_case_with("auto_glz", "image-compression=auto_glz", Some("LZ_RGB"));
}

#[test]
fn bios_auto_lz() {
    bios_case_with("auto_lz", "image-compression=auto_lz", Some("LZ_RGB"));
}

#[test]
fn bios_quic() {
    bios_case_with("quic", "image-compression=quic", Some("QUIC"));
}

#[test]
fn bios_glz() {
    bios_case_with("glz", "image-compression=glz", Some("LZ_RGB"));
}

#[test]
fn bios_lz() {
    bios_case_with("lz", "image-compression=lz", Some("LZ_RGB"));
}

#[test]
fn bios_glz_with_zlib_always() {
    bios_case("zlib", "image-compression=glz,zlib-glz-wan-compression=always");
}

/// LZ4 goes out only to a client that prefers it: remote-viewer through
/// spicetap records the session, and since the BIOS screen is static, a
/// spicy-screenshot of the same VM is the reference.
#[test]
fn bios_lz4_via_remote_viewer() {
    let dir = Scratch::new("render-lz4");
    let qemu = Qemu::bios(&dir.path, "");
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", qemu.port), true, &[]);
    // Wait for the final BIOS screen.
    same_screen(|out| spicy_screenshot(qemu.port, out), |out| spicy_screenshot(qemu.port, out), &dir.path);
    let x = Xvfb::start();
    let mut viewer =
        remote_viewer(&x, &format!("spice://127.0.0.1:{}", tap.port()), &["--spice-preferred-compression=lz4"]);
    wait_until("remote-viewer's display channel", Duration::from_secs(60), || {
        tap.log_text().lines().any(|l| l.contains("channel=display") && l.contains("channel linked"))
    });
    std::thread::sleep(Duration::from_secs(3));
    viewer.terminate(Duration::from_secs(10));
    tap.stop();
    let session = tap.sessions().pop().expect("a session");
    let s = session_json(&session);
    let display = channels(&s).into_iter().find(|c| c["type"] == "display").unwrap();
    let prefs = &display["client_to_server"]["histogram"]["SPICE_MSGC_DISPLAY_PREFERRED_COMPRESSION"];
    assert!(prefs.as_u64().unwrap_or(0) >= 1, "remote-viewer asked for LZ4: {display}");
    // spice-gtk sends its preference right after DISPLAY_INIT, so the
    // server may already have compressed the first frame its own way; the
    // text cursor's blinks (one DRAW_COPY every 270 ms) come after. The
    // whole recording is rendered, and the reference is whichever cursor
    // phase matches: the other differs in the cursor's pixels only.
    let (rendered, stderr) = render_end(&session);
    assert!(stderr.contains("LZ4 x"), "no LZ4 image in the recording: {stderr}");
    let reference = dir.path.join("reference.ppm");
    let mut best = usize::MAX;
    for _ in 0..20 {
        spicy_screenshot(qemu.port, &reference);
        best = best.min(differing(&rendered, &reference));
        if best == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    assert_eq!(best, 0, "{best} pixels differ from spice-gtk's rendering");
}

/// Renders the whole recording of `session` (to its end).
fn render_end(session: &Path) -> ((u32, u32, Vec<u8>), String) {
    let png = session.join("rendered.png");
    let out =
        run_bounded(Command::new(SPICETAP).arg("render").arg(session).arg("--png").arg(&png), Duration::from_secs(300));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "spicetap render: {stderr}");
    (read_png(&png), stderr)
}

/// The Linux guest (qxl KMS: DRAW_COPY with clip rectangles, caches, GLZ
/// references between images), watched from boot through spicetap by a
/// spice-gtk client until it drew text and noise and stopped; spice-gtk's
/// final surface is the reference for spicetap's rendering of the session.
fn linux_case(name: &str, spice_opts: &str, expect_image: &str) -> std::path::PathBuf {
    let dir = Scratch::new(&format!("render-linux-{name}"));
    let qemu = Qemu::linux_booting(&dir.path, spice_opts, "");
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", qemu.port), true, &[]);
    let shot = dir.path.join("spice-gtk.ppm");
    spice_gtk_shot(tap.port(), &shot, &qemu.serial, "SPICETAP-GUEST-READY");
    tap.stop();
    let session = tap.sessions().pop().expect("a session");
    let (rendered, stderr) = render_end(&session);
    assert!(stderr.contains(&format!("{expect_image} x")), "{stderr}");
    let n = differing(&rendered, &shot);
    assert_eq!(n, 0, "{n} pixels differ from spice-gtk's rendering; {stderr}");
    // Many draws, not one full-screen image.
    let draws: u64 =
        stderr.split(" draws").next().and_then(|s| s.rsplit(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(draws > 10, "{stderr}");
    // Keep the scratch folder's session for the caller.
    let kept = std::env::temp_dir().join(format!("spicetap-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&kept);
    std::fs::create_dir_all(&kept).unwrap();
    for e in std::fs::read_dir(&session).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), kept.join(e.file_name())).unwrap();
    }
    kept
}

#[test]
fn linux_guest_auto_glz() {
    let session = linux_case("auto_glz", "image-compression=auto_glz", "GLZ_RGB");
    // The same recording as an MP4, timed by the capture.
    let mp4 = session.join("offline.mp4");
    let out = run_bounded(
        Command::new(SPICETAP).arg("render").arg(&session).arg("--mp4").arg(&mp4),
        Duration::from_secs(300),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let probe = run_bounded(
        Command::new("ffprobe").args(["-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0"]).arg(&mp4),
        Duration::from_secs(60),
    );
    assert!(probe.status.success(), "{}", String::from_utf8_lossy(&probe.stderr));
    assert_eq!(String::from_utf8_lossy(&probe.stdout).lines().next().unwrap_or(""), "h264");
    let _ = std::fs::remove_dir_all(session);
}

#[test]
fn linux_guest_quic() {
    let kept = linux_case("quic", "image-compression=quic", "QUIC");
    let _ = std::fs::remove_dir_all(kept);
}

/// Mean and largest absolute difference per channel between two RGB
/// buffers of the same size.
fn abs_error(rendered: &[u8], expected: &[u8]) -> (f64, u8) {
    assert_eq!(rendered.len(), expected.len());
    let (mut sum, mut max) = (0u64, 0u8);
    for (a, b) in rendered.iter().zip(expected) {
        let d = a.abs_diff(*b);
        sum += u64::from(d);
        max = max.max(d);
    }
    (sum as f64 / expected.len() as f64, max)
}

/// JPEG (`jpeg-wan-compression=always`) on the static screen: console text
/// and a noise rectangle, drawn once. spice-gtk decodes JPEG with
/// libjpeg-turbo at its defaults and spicetap must agree: a mean absolute
/// error of at most 1 per channel and no channel off by more than 8.
#[test]
fn linux_guest_jpeg() {
    let dir = Scratch::new("render-linux-jpeg");
    let qemu = Qemu::linux_booting(&dir.path, "image-compression=quic,jpeg-wan-compression=always", "");
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", qemu.port), true, &[]);
    let shot = dir.path.join("spice-gtk.ppm");
    spice_gtk_shot(tap.port(), &shot, &qemu.serial, "SPICETAP-GUEST-READY");
    tap.stop();
    let session = tap.sessions().pop().expect("a session");
    let (rendered, stderr) = render_end(&session);
    assert!(stderr.contains("JPEG x"), "the server sent JPEG images: {stderr}");
    let (mae, max) = abs_error(&rendered.2, &read_ppm(&shot).2);
    eprintln!("JPEG: mean absolute error {mae:.4}, max {max}; {stderr}");
    assert!(mae <= 1.0, "mean absolute error {mae}");
    assert!(max <= 8, "max error {max}");
}

/// JPEG on busy pictures: the guest redraws a full-width band of random
/// noise several times a second (`spicetap.mode=noise`) under
/// `jpeg-wan-compression=always`, then the VM is paused (a static screen)
/// and spice-gtk's surface is the reference. Same bounds as above: mean
/// absolute error at most 1 per channel, no channel off by more than 8.
#[test]
fn linux_guest_jpeg_noise() {
    let dir = Scratch::new("render-linux-jpeg-noise");
    let qemu = std::sync::Arc::new(Qemu::linux_booting(
        &dir.path,
        "image-compression=quic,jpeg-wan-compression=always",
        "spicetap.mode=noise",
    ));
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", qemu.port), true, &[]);
    let paused = dir.path.join("paused");
    let pauser = pause_after_ready(qemu.clone(), paused.clone(), Duration::from_secs(4));
    let shot = dir.path.join("spice-gtk.ppm");
    spice_gtk_shot(tap.port(), &shot, &paused, "paused");
    pauser.join().unwrap();
    tap.stop();
    let session = tap.sessions().pop().expect("a session");
    let (rendered, stderr) = render_end(&session);
    assert!(stderr.contains("JPEG x"), "the server sent JPEG images: {stderr}");
    let (mae, max) = abs_error(&rendered.2, &read_ppm(&shot).2);
    eprintln!("JPEG noise: mean absolute error {mae:.4}, max {max}; {stderr}");
    assert!(mae <= 1.0, "mean absolute error {mae}");
    assert!(max <= 8, "max error {max}");
}

/// Pauses the VM (`stop` on QEMU's monitor) `after` the guest said it is
/// ready, then writes `paused` into the file `flag`.
fn pause_after_ready(
    qemu: std::sync::Arc<Qemu>,
    flag: std::path::PathBuf,
    after: Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        qemu.wait_serial("SPICETAP-GUEST-READY", Duration::from_secs(180));
        std::thread::sleep(after);
        qemu.monitor_command("stop");
        std::fs::write(&flag, "paused").unwrap();
    })
}

/// Streams (`streaming-video=all`, the guest redrawing a noise band several
/// times a second): spice-server turns the band into an MJPEG stream. The VM
/// is paused after a few seconds of video; the last frame spicetap renders
/// must be within 35 dB PSNR of spice-gtk's (which schedules frames on a
/// timer and may drop late ones), and within the JPEG bounds (mean absolute
/// error 1, max 8).
#[test]
fn linux_guest_stream_last_frame() {
    let dir = Scratch::new("render-linux-stream");
    let qemu = std::sync::Arc::new(Qemu::linux_booting(&dir.path, "streaming-video=all", "spicetap.mode=noise"));
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", qemu.port), true, &[]);
    let paused = dir.path.join("paused");
    let pauser = pause_after_ready(qemu.clone(), paused.clone(), Duration::from_secs(6));
    let shot = dir.path.join("spice-gtk.ppm");
    spice_gtk_shot(tap.port(), &shot, &paused, "paused");
    pauser.join().unwrap();
    tap.stop();
    let session = tap.sessions().pop().expect("a session");
    let (rendered, stderr) = render_end(&session);
    let s = session_json(&session);
    let display = channels(&s).into_iter().find(|c| c["type"] == "display").unwrap();
    let frames = display["server_to_client"]["histogram"]["SPICE_MSG_DISPLAY_STREAM_DATA"].as_u64().unwrap_or(0)
        + display["server_to_client"]["histogram"]["SPICE_MSG_DISPLAY_STREAM_DATA_SIZED"].as_u64().unwrap_or(0);
    assert!(frames >= 5, "the server streamed video: {frames} frames; {stderr}");
    let (_, _, expected) = read_ppm(&shot);
    let mse = rendered.2.iter().zip(&expected).map(|(a, b)| f64::from(a.abs_diff(*b)).powi(2)).sum::<f64>()
        / expected.len() as f64;
    let psnr = if mse == 0.0 { f64::INFINITY } else { 10.0 * (255.0f64 * 255.0 / mse).log10() };
    let (mae, max) = abs_error(&rendered.2, &expected);
    eprintln!("stream: {frames} frames, PSNR {psnr:.1} dB, mean absolute error {mae:.4}, max {max}; {stderr}");
    assert!(psnr >= 35.0, "PSNR {psnr:.1} dB");
    // MJPEG frames are decoded as spice-gtk's MJPEG decoder does: when
    // spice-gtk showed the last frame, the pictures agree as JPEG images do.
    assert!(mae <= 1.0 && max <= 8, "mean absolute error {mae}, max {max}");
}

/// Real captures written by ryll 0.3.0 (`--capture`, no link stage, fake
/// TCP 10.0.0.1 / 10.0.0.2) of QEMU's SeaBIOS screen under auto_glz and
/// quic, with spicy-screenshot's pictures of the same screen with the
/// blinking text cursor off and on (tests/fixtures/ryll, see its README).
#[test]
fn ryll_captures_render_as_spice_gtk_shows_them() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ryll");
    let dir = Scratch::new("ryll");
    for pcap in [fixtures.join("display.pcap"), fixtures.join("quic/display.pcap")] {
        for (extra, reference) in [(None, "ref.png"), (Some("1"), "ref-cursor-on.png")] {
            let png = dir.path.join("out.png");
            let mut cmd = Command::new(SPICETAP);
            cmd.arg("render").arg(&pcap).args(["--channel-type", "display", "--png"]).arg(&png);
            if let Some(mark) = extra {
                cmd.args(["--mark", mark]);
            }
            let r = run_bounded(&mut cmd, Duration::from_secs(60));
            assert!(r.status.success(), "{}: {}", pcap.display(), String::from_utf8_lossy(&r.stderr));
            let (w, h, rendered) = read_png(&png);
            let (rw, rh, expected) = read_png(&fixtures.join(reference));
            assert_eq!((w, h), (rw, rh));
            let differing = rendered.chunks(3).zip(expected.chunks(3)).filter(|(a, b)| a != b).count();
            assert_eq!(differing, 0, "{} against {reference}", pcap.display());
        }
    }
}
