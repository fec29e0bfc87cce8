//! The mouse pointer: cursor shapes of every type, served by a scripted
//! SPICE server to spice-gtk through spicetap, must decode to exactly what
//! spice-gtk makes of them; and a pointer that moves, changes shape and
//! hides must show in `display-0.mp4` and in `spicetap render --cursor`
//! where and as it was at each time; the Linux guest's real pointer (qxl)
//! likewise.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use spicetap::render::cursor::{self, CursorHeader};
use support::fake_server::{FakeServer, SLEEP};
use support::*;

/// `SPICE_MSG_CURSOR_*` and `SPICE_MSG_DISPLAY_*` used here.
const INIT: u16 = 101;
const SET: u16 = 103;
const MOVE: u16 = 104;
const HIDE: u16 = 105;
const SURFACE_CREATE: u16 = 314;
const DRAW_FILL: u16 = 302;
const MARK: u16 = 102;
const CACHE_ME: u16 = 2;
const FROM_CACHE: u16 = 4;

const W: u32 = 160;
const H: u32 = 120;
const BACKGROUND: u32 = 0x0040_4040;

/// A grey primary surface of W x H, then a MARK.
fn display() -> Vec<(u16, Vec<u8>)> {
    let create: Vec<u8> = [0u32, W, H, 32, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut fill = 0u32.to_le_bytes().to_vec();
    for v in [0, 0, H as i32, W as i32] {
        fill.extend(v.to_le_bytes());
    }
    fill.push(0); // no clip
    fill.push(1); // solid brush
    fill.extend(BACKGROUND.to_le_bytes());
    fill.extend((1u16 << 3).to_le_bytes()); // SPICE_ROPD_OP_PUT
    fill.extend([0; 13]); // no mask
    vec![(SURFACE_CREATE, create), (DRAW_FILL, fill), (MARK, Vec::new())]
}

fn sleep(ms: u32) -> (u16, Vec<u8>) {
    (SLEEP, ms.to_le_bytes().to_vec())
}

/// A SpiceCursor: flags, header, data.
fn cursor_bytes(flags: u16, h: &CursorHeader, data: &[u8]) -> Vec<u8> {
    let mut b = flags.to_le_bytes().to_vec();
    b.extend(h.unique.to_le_bytes());
    b.push(h.cursor_type);
    for v in [h.width, h.height, h.hot_spot_x, h.hot_spot_y] {
        b.extend(v.to_le_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn init(pos: (i16, i16), cursor: &[u8]) -> (u16, Vec<u8>) {
    let mut b = pos.0.to_le_bytes().to_vec();
    b.extend(pos.1.to_le_bytes());
    b.extend([0, 0, 0, 0, 1]);
    b.extend_from_slice(cursor);
    (INIT, b)
}

fn set(pos: (i16, i16), cursor: &[u8]) -> (u16, Vec<u8>) {
    let mut b = pos.0.to_le_bytes().to_vec();
    b.extend(pos.1.to_le_bytes());
    b.push(1);
    b.extend_from_slice(cursor);
    (SET, b)
}

fn header(unique: u64, cursor_type: u8, w: u16, h: u16, hot: (u16, u16)) -> CursorHeader {
    CursorHeader { unique, cursor_type, width: w, height: h, hot_spot_x: hot.0, hot_spot_y: hot.1 }
}

/// Deterministic bytes.
fn noise(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as u8
        })
        .collect()
}

/// One shape of each type (and the quirks: odd sizes, inverting pixels,
/// an all-ones AND plane), as (header, data).
fn shapes() -> Vec<(CursorHeader, Vec<u8>)> {
    let mut out = Vec::new();
    // ALPHA 16x16 with every alpha value.
    out.push((header(0, 0, 16, 16, (3, 4)), noise(16 * 16 * 4, 1)));
    // MONO 16x12 and MONO 13x9 (rows padded), random planes.
    out.push((header(0, 1, 16, 12, (0, 0)), noise(2 * 2 * 12, 2)));
    out.push((header(0, 1, 13, 9, (12, 8)), noise(2 * 2 * 9, 3)));
    // MONO drawn only by inverting: AND all ones, a few XOR pixels.
    let mut inv = vec![0xff; 2 * 10];
    inv.extend([0, 0, 0x18, 0, 0x3c, 0, 0x18, 0, 0, 0, 0, 0, 0x40, 0x02, 0, 0, 0, 0, 0, 0]);
    out.push((header(0, 1, 16, 10, (1, 1)), inv));
    // COLOR4 16x8 and 9x5 with white (inverting) palette entries.
    for (w, h, seed) in [(16u16, 8u16, 4u32), (9, 5, 5)] {
        let pix = usize::from(w).div_ceil(2) * usize::from(h);
        let mut d = noise(pix, seed);
        let mut palette = noise(64, seed + 10);
        palette[8..12].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
        d.extend(palette);
        d.extend(noise((usize::from(w) * usize::from(h)).div_ceil(8), seed + 20));
        out.push((header(0, 2, w, h, (0, 0)), d));
    }
    // COLOR16 12x6 with inverting whites.
    let n = 12 * 6;
    let mut d = noise(2 * n, 6);
    for i in (0..n).step_by(5) {
        d[2 * i..2 * i + 2].copy_from_slice(&0x7fffu16.to_le_bytes());
    }
    d.extend(noise(n.div_ceil(8), 7));
    out.push((header(0, 4, 12, 6, (2, 2)), d));
    // COLOR32 10x7 with inverting whites.
    let n = 10 * 7;
    let mut d = noise(4 * n, 8);
    for i in (0..n).step_by(3) {
        d[4 * i..4 * i + 4].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
    }
    d.extend(noise(n.div_ceil(8), 9));
    out.push((header(0, 6, 10, 7, (9, 6)), d));
    // COLOR8 and COLOR24: spice-gtk draws nothing of them.
    out.push((header(0, 3, 8, 8, (0, 0)), noise(64 + 1024 + 8, 10)));
    out.push((header(0, 5, 8, 8, (0, 0)), noise(3 * 64 + 8, 11)));
    out
}

/// Every shape type, served to spice-gtk through spicetap: what spice-gtk
/// makes of each (its `SpiceCursorShape`: RGBA and hot spot) equals
/// spicetap's decoding of the same bytes, pixel for pixel; a shape cached
/// with CACHE_ME comes back with FROM_CACHE; `session.json` lists them.
#[test]
fn every_cursor_type_decodes_as_spice_gtk_decodes_it() {
    let dir = Scratch::new("cursor-shapes");
    let shapes = shapes();
    let mut messages = Vec::new();
    for (i, (h, data)) in shapes.iter().enumerate() {
        let c = cursor_bytes(0, h, data);
        messages.push(if i == 0 { init((10, 10), &c) } else { set((10, 10), &c) });
        messages.push(sleep(150));
    }
    // The last ALPHA again, cached, then from the cache.
    let (h, data) = &shapes[0];
    let cached = CursorHeader { unique: 0x77, ..*h };
    messages.push(set((20, 20), &cursor_bytes(CACHE_ME, &cached, data)));
    messages.push(sleep(150));
    messages.push(set((30, 30), &cursor_bytes(FROM_CACHE, &cached, &[])));
    let server = FakeServer::start_with_cursor(display(), messages);
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", server.port), true, &["--no-video"]);
    let shapes_dir = spice_gtk_shapes(&tap, &dir.path, shapes.len() + 2, Duration::ZERO, "0.5");
    tap.stop();

    let mut sent: Vec<(CursorHeader, Vec<u8>)> = shapes.clone();
    sent.push((cached, data.clone()));
    sent.push((cached, data.clone()));
    for (i, (h, data)) in sent.iter().enumerate() {
        let base = shapes_dir.join(format!("shape-{i:03}"));
        let theirs = std::fs::read(base.with_extension("rgba")).unwrap();
        let meta = std::fs::read_to_string(base.with_extension("txt")).unwrap();
        let meta: Vec<i64> = meta.split_whitespace().map(|v| v.parse().unwrap()).collect();
        let ours = cursor::decode(h, data).unwrap();
        let what = format!("shape {i} ({} {}x{})", cursor::type_name(h.cursor_type), h.width, h.height);
        let ours_meta = [ours.width, ours.height, ours.hot_spot_x, ours.hot_spot_y].map(i64::from);
        assert_eq!(meta[1..], ours_meta, "{what}: spice-gtk says {meta:?}");
        let differ = theirs.chunks(4).zip(ours.rgba.chunks(4)).filter(|(a, b)| a != b).count();
        eprintln!("{what}: {differ} of {} pixels differ", theirs.len() / 4);
        assert_eq!(theirs.len(), ours.rgba.len(), "{what}");
        assert_eq!(differ, 0, "{what}");
    }

    let session = tap.sessions().pop().unwrap();
    let json = session_json(&session);
    let ch = channels(&json).into_iter().find(|c| c["type"] == "cursor").expect("the cursor channel");
    let report = &ch["cursor"];
    eprintln!("session.json cursor: {}", serde_json::to_string_pretty(report).unwrap());
    assert_eq!(report["error_count"], 0, "{report}");
    assert_eq!(report["messages"]["SPICE_MSG_CURSOR_SET"], shapes.len() + 1, "{report}");
    let listed = report["shapes"].as_array().unwrap();
    assert_eq!(listed.len(), shapes.len(), "{report}");
    assert_eq!(listed[0]["type"], "ALPHA");
    assert_eq!(listed[0]["size"], serde_json::json!([16, 16]));
    assert_eq!(listed[0]["hot_spot"], serde_json::json!([3, 4]));
    assert_eq!(listed[0]["uses"], 3, "set, cached, from the cache");
}

/// Runs spice-gtk (scripts/spice-gtk-shot) through `tap` until it saved
/// `shapes` cursor shapes and `then` passed; returns the folder of the
/// shapes (`shape-NNN.rgba`, `.txt`).
fn spice_gtk_shapes(tap: &Spicetap, dir: &Path, shapes: usize, then: Duration, settle: &str) -> std::path::PathBuf {
    let shapes_dir = dir.join("spice-gtk");
    std::fs::create_dir_all(&shapes_dir).unwrap();
    let go = dir.join("go");
    let (go2, watched) = (go.clone(), shapes_dir.clone());
    let waiter = std::thread::spawn(move || {
        wait_until("spice-gtk's cursor shapes", Duration::from_secs(60), || {
            std::fs::read_dir(&watched).map(|d| d.count()).unwrap_or(0) >= 2 * shapes
        });
        std::thread::sleep(then);
        std::fs::write(go2, "go").unwrap();
    });
    let cursor_dir = shapes_dir.to_str().unwrap().to_string();
    spice_gtk_shot_with(
        tap.port(),
        &dir.join("spice-gtk.ppm"),
        &go,
        &["--settle", settle, "--timeout", "90", "--cursor-dir", &cursor_dir],
        Duration::from_secs(120),
    );
    waiter.join().unwrap();
    shapes_dir
}

/// A red arrow-less square (ALPHA 12x12, hot spot (2, 2)) and a blue one
/// (COLOR32 12x12, hot spot (0, 0)).
fn square(cursor_type: u8, argb: u32, hot: (u16, u16)) -> Vec<u8> {
    let n = 12 * 12;
    let mut data: Vec<u8> = (0..n).flat_map(|_| argb.to_le_bytes()).collect();
    if cursor_type == 6 {
        data.extend(vec![0; n / 8]); // AND mask all zero: opaque
    }
    cursor_bytes(0, &header(0, cursor_type, 12, 12, hot), &data)
}

/// The phases of the moving pointer, 2 s each from the cursor channel's
/// start: where its top-left corner is and its colour (None: hidden).
type Phase = Option<((u32, u32), [u8; 3])>;
const PHASES: [Phase; 4] =
    [Some(((38, 38), [255, 0, 0])), Some(((118, 78), [255, 0, 0])), Some(((60, 100), [0, 0, 255])), None];

fn moving_pointer() -> Vec<(u16, Vec<u8>)> {
    vec![
        init((0, 0), &square(0, 0xffff_0000, (2, 2))),
        (MOVE, [40i16, 40].iter().flat_map(|v| v.to_le_bytes()).collect()),
        sleep(2000),
        (MOVE, [120i16, 80].iter().flat_map(|v| v.to_le_bytes()).collect()),
        sleep(2000),
        set((60, 100), &square(6, 0x0000_00ff, (0, 0))),
        sleep(2000),
        (HIDE, Vec::new()),
    ]
}

/// Mean colour of the 8x8 inside a pointer whose top-left is `at`, in an
/// RGB image of W x H.
fn mean(rgb: &[u8], at: (u32, u32)) -> [u8; 3] {
    let mut sum = [0u32; 3];
    for y in at.1 + 2..at.1 + 10 {
        for x in at.0 + 2..at.0 + 10 {
            let i = 3 * (y * W + x) as usize;
            for c in 0..3 {
                sum[c] += u32::from(rgb[i + c]);
            }
        }
    }
    sum.map(|s| (s / 64) as u8)
}

fn near(a: [u8; 3], b: [u8; 3], tolerance: u8) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= tolerance)
}

/// Checks one picture of phase `p`: the pointer where and as it is then,
/// the background where it is in the other phases.
fn check_phase(rgb: &[u8], p: usize, tolerance: u8, what: &str) {
    let grey = [0x40, 0x40, 0x40];
    for (q, phase) in PHASES.iter().enumerate() {
        let Some((at, colour)) = phase else { continue };
        let got = mean(rgb, *at);
        if q == p {
            assert!(near(got, *colour, tolerance), "{what}: pointer of phase {q} at {at:?} is {got:?}, not {colour:?}");
        } else if PHASES[p].is_none_or(|(here, _)| here != *at) {
            assert!(near(got, grey, tolerance), "{what}: {at:?} (phase {q}'s place) is {got:?}, not background");
        }
    }
}

/// A pointer that moves, changes shape and hides, recorded through
/// spicetap: `display-0.mp4` and `spicetap render --cursor` show it where
/// and as it was at each time; `--no-video-cursor` leaves it out.
#[test]
fn the_pointer_moves_in_the_video() {
    let dir = Scratch::new("cursor-video");
    let server = FakeServer::start_with_cursor(display(), moving_pointer());
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", server.port), true, &[]);
    let go = dir.path.join("go");
    let go2 = go.clone();
    let timer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(8500));
        std::fs::write(go2, "go").unwrap();
    });
    let shot = dir.path.join("spice-gtk.ppm");
    let cursor_dir = dir.path.to_str().unwrap().to_string();
    spice_gtk_shot_with(
        tap.port(),
        &shot,
        &go,
        &["--settle", "0", "--timeout", "60", "--cursor-dir", &cursor_dir],
        Duration::from_secs(90),
    );
    timer.join().unwrap();
    tap.stop();
    let session = tap.sessions().pop().unwrap();

    // The cursor channel's first message starts phase 0; the video's and
    // render's times count from the session's and the display's start.
    let json = session_json(&session);
    let report = &channels(&json).into_iter().find(|c| c["type"] == "cursor").unwrap()["cursor"];
    eprintln!("session.json cursor: {report}");
    assert_eq!(report["mouse_modes"], serde_json::json!([[0.0, "server"]]), "{report}");
    let visible = report["visible_seconds"].as_f64().unwrap();
    assert!((5.5..7.0).contains(&visible), "visible {visible} s, expected about 6 s: {report}");

    // spicetap render --cursor: lossless pictures in the middle of each phase.
    let png_dir = dir.path.join("at");
    let times: Vec<String> = (0..4).map(|p| format!("{}", 1.0 + 2.0 * p as f64)).collect();
    let r = run_bounded(
        Command::new(SPICETAP)
            .arg("render")
            .arg(&session)
            .arg("--cursor")
            .args(["--at", &times.join(","), "--png-dir"])
            .arg(&png_dir),
        Duration::from_secs(60),
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    for (p, t) in times.iter().enumerate() {
        let (w, h, rgb) = read_png(&png_dir.join(format!("at-{:.3}s.png", t.parse::<f64>().unwrap())));
        assert_eq!((w, h), (W, H));
        check_phase(&rgb, p, 0, &format!("render --cursor at {t} s"));
    }
    // Without --cursor: no pointer.
    let plain = dir.path.join("plain.png");
    let r = run_bounded(
        Command::new(SPICETAP).arg("render").arg(&session).args(["--at", "1.0", "--png"]).arg(&plain),
        Duration::from_secs(60),
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (_, _, rgb) = read_png(&plain);
    assert!(near(mean(&rgb, (38, 38)), [0x40, 0x40, 0x40], 0));

    // The live video: the frames shown in the middle of each phase (H.264:
    // colours within a tolerance). Video time 0 is the first sample, at
    // `start_s` of the session's clock.
    let mp4 = session.join("display-0.mp4");
    let display = channels(&json).into_iter().find(|c| c["type"] == "display").unwrap();
    let start_s = display["render"]["video"]["file"]["start_s"].as_f64().unwrap();
    let frames = frames(&mp4);
    let offset = cursor_channel_offset(&session);
    for p in 0..4 {
        let t = offset + 1.0 + 2.0 * p as f64 - start_s;
        let (pts, rgb) = frames.iter().rev().find(|(pts, _)| *pts <= t).expect("a frame shown then");
        check_phase(rgb, p, 40, &format!("display-0.mp4 at {t:.2} s (the frame of {pts:.3} s)"));
    }
}

/// A real pointer: the Linux guest's drm-cursor (a 64x64 arrow, hot spot
/// (1, 1), moved to (200,150), (600,150), ... every 2 s) makes QEMU's qxl
/// device send SET with an ALPHA shape and MOVE. spice-gtk and spicetap
/// make the same RGBA of it; `session.json`, `inspect` and `render
/// --cursor` have it where the guest put it.
#[test]
fn a_qxl_guest_pointer_is_recorded_as_spice_gtk_shows_it() {
    let dir = Scratch::new("cursor-qxl");
    let qemu = Qemu::linux(&dir.path, "", "spicetap.mode=cursor");
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", qemu.port), true, &["--no-video"]);
    // The first shape, then two moves more.
    let shapes_dir = spice_gtk_shapes(&tap, &dir.path, 1, Duration::from_millis(4500), "0");
    tap.stop();
    let session = tap.sessions().pop().unwrap();

    // The shapes QEMU sent, decoded by spicetap, against spice-gtk's.
    let replay = spicetap::capture::replay::read(&session.join("cursor-0.pcap"), None).unwrap();
    let mut ours = Vec::new();
    let mut moves = Vec::new();
    for m in &replay.messages {
        match cursor::parse(m.header.msg_type, &m.body).unwrap() {
            Some(cursor::CursorMessage::Init { cursor: c, .. })
            | Some(cursor::CursorMessage::Set { cursor: c, .. }) => {
                if let Some(h) = c.header {
                    ours.push(cursor::decode(&h, c.data).unwrap());
                }
            }
            Some(cursor::CursorMessage::Move { position }) => moves.push(position),
            _ => {}
        }
    }
    eprintln!("{} shapes, moves {moves:?}", ours.len());
    let first = ours.first().expect("QEMU sent a cursor shape");
    assert_eq!((first.cursor_type, first.width, first.height), (0, 64, 64), "qxl's ALPHA 64x64");
    assert_eq!((first.hot_spot_x, first.hot_spot_y), (1, 1));
    let theirs = std::fs::read(shapes_dir.join("shape-000.rgba")).unwrap();
    let differ = theirs.chunks(4).zip(first.rgba.chunks(4)).filter(|(a, b)| a != b).count();
    assert_eq!(differ, 0, "{differ} of 4096 pixels differ from spice-gtk's");
    // The arrow's tip (white body below it, black outline) and its shadow.
    assert_eq!(&first.rgba[4 * (64 + 1)..4 * (64 + 2)], [0, 0, 0, 255]);
    assert_eq!(&first.rgba[4 * (5 * 64 + 3)..4 * (5 * 64 + 4)], [255, 255, 255, 255]);
    let known = [(200, 150), (600, 150), (600, 450), (200, 450)];
    assert!(!moves.is_empty() && moves.iter().all(|p| known.contains(p)), "{moves:?}");

    let json = session_json(&session);
    let report = &channels(&json).into_iter().find(|c| c["type"] == "cursor").unwrap()["cursor"];
    eprintln!("session.json cursor: {report}");
    assert_eq!(report["shapes"][0]["type"], "ALPHA", "{report}");
    assert_eq!(report["shapes"][0]["size"], serde_json::json!([64, 64]), "{report}");
    assert_eq!(report["error_count"], 0, "{report}");

    // render --cursor: the arrow's tip pixel at the last position.
    let (x, y) = *moves.last().unwrap();
    let png = dir.path.join("end.png");
    let r = run_bounded(
        Command::new(SPICETAP).arg("render").arg(&session).arg("--cursor").arg("--png").arg(&png),
        Duration::from_secs(60),
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (w, _, rgb) = read_png(&png);
    let at = |px: i32, py: i32| {
        let i = 3 * (py as usize * w as usize + px as usize);
        [rgb[i], rgb[i + 1], rgb[i + 2]]
    };
    // (x, y) is the hot spot (1, 1): the outline; (x + 2, y + 4) is inside.
    assert_eq!(at(i32::from(x), i32::from(y)), [0, 0, 0]);
    assert_eq!(at(i32::from(x) + 2, i32::from(y) + 4), [255, 255, 255]);
    let text = inspect(&session, &["--channel", "cursor"]);
    assert!(text.contains("visible ALPHA 64x64 hot spot (1,1)"), "{text}");
    assert!(text.contains(&format!("SPICE_MSG_CURSOR_MOVE  at ({x},{y})")), "{text}");
}

/// Seconds from the session's start (the video's zero) to the cursor
/// channel's first message, from the pcaps' timestamps.
fn cursor_channel_offset(session: &Path) -> f64 {
    let first = |name: &str| -> f64 {
        let out = tshark(&session.join(name), &["-T", "fields", "-e", "frame.time_epoch", "-c", "1"]);
        out.trim().parse().unwrap()
    };
    first("cursor-0.pcap") - first("main-0.pcap")
}

/// Every frame of `mp4` with its presentation time in seconds, in order.
fn frames(mp4: &Path) -> Vec<(f64, Vec<u8>)> {
    let probe = run_bounded(
        Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "frame=pts_time", "-of", "csv=p=0"])
            .arg(mp4),
        Duration::from_secs(30),
    );
    assert!(probe.status.success(), "ffprobe: {}", String::from_utf8_lossy(&probe.stderr));
    let times: Vec<f64> =
        String::from_utf8_lossy(&probe.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect();
    let out = run_bounded(
        Command::new("ffmpeg").args(["-v", "error", "-i"]).arg(mp4).args([
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    let size = (3 * W * H) as usize;
    assert_eq!(out.stdout.len(), size * times.len(), "{} frames of {W}x{H}", times.len());
    times.into_iter().zip(out.stdout.chunks(size).map(<[u8]>::to_vec)).collect()
}
