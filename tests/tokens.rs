//! Token mode: spicetap authenticates clients by token and logs in to the
//! VM with the VM's own password; the client never learns the password or
//! the VM's address, and secrets never reach logs, session.json, the audit
//! log or pcaps.

mod support;

use std::io::Read;
use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::*;

const VM_PASSWORD: &str = "vm-Secret-7431";
const TOKEN: &str = "tok-8c1f44e2";
const OLD_TOKEN: &str = "tok-expired-19";

/// A listener standing for a VM that must never be contacted: counts accepts.
fn decoy() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            if s.is_ok() {
                c.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (port, count)
}

/// Writes a targets file readable by its owner only.
fn write_targets(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// `spicetap proxy --auth tokens --targets TARGETS EXTRA...` on a free port.
fn token_proxy(dir: &std::path::Path, capture: bool, targets: &std::path::Path, extra: &[&str]) -> Spicetap {
    let mut args = vec!["--listen", "127.0.0.1:0", "--auth", "tokens", "--targets", targets.to_str().unwrap()];
    args.extend_from_slice(extra);
    Spicetap::start_args(dir, capture, &args)
}

#[test]
fn tokens_reach_their_vm_and_nothing_else() {
    let dir = Scratch::new("tokens");
    let qemu = Qemu::bios_password(&dir.path, VM_PASSWORD);
    let (decoy_port, decoy_hits) = decoy();
    let targets = dir.path.join("targets.toml");
    write_targets(
        &targets,
        &format!(
            "[[target]]\nname = \"vm1\"\ntoken = \"{TOKEN}\"\nupstream = \"127.0.0.1:{}\"\npassword = \"{VM_PASSWORD}\"\n\n\
             [[target]]\nname = \"old\"\ntoken = \"{OLD_TOKEN}\"\nupstream = \"127.0.0.1:{decoy_port}\"\n\
             password = \"x\"\nexpires = 2020-01-01T00:00:00Z\n",
            qemu.port
        ),
    );
    let audit = dir.path.join("audit.jsonl");
    let http = free_port();
    let http_addr = format!("127.0.0.1:{http}");
    let mut tap =
        token_proxy(&dir.path, true, &targets, &["--audit-log", audit.to_str().unwrap(), "--http", &http_addr]);

    // The right token shows the VM's screen, as its own password does directly.
    same_screen(
        |out| assert!(spicy_screenshot_password(qemu.port, Some(VM_PASSWORD), out), "direct with the VM password"),
        |out| assert!(spicy_screenshot_password(tap.port(), Some(TOKEN), out), "through spicetap with the token"),
        &dir.path,
    );
    // The VM's password is not a token.
    let out = dir.path.join("denied.ppm");
    assert!(!spicy_screenshot_password(tap.port(), Some(VM_PASSWORD), &out), "the VM password is refused");
    assert!(!spicy_screenshot_password(tap.port(), Some(OLD_TOKEN), &out), "an expired token is refused");
    assert!(!spicy_screenshot_password(tap.port(), Some("wrong"), &out), "a wrong token is refused");
    // A raw client sees PERMISSION_DENIED in the link result.
    let (mut s, reply) = link_start(tap.addr, 1, 0);
    assert_eq!(link_error(&reply), 0, "spicetap answers the link itself");
    assert_eq!(link_result(&mut s, &reply), 7, "SPICE_LINK_ERR_PERMISSION_DENIED");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert_eq!(decoy_hits.load(Ordering::SeqCst), 0, "no connection attempt upstream for refused tokens");

    // A connection file for the token opens the VM in remote-viewer.
    let vv = Command::new(SPICETAP)
        .args(["vv", "--targets", targets.to_str().unwrap(), "--token", TOKEN, "--port", &tap.port().to_string()])
        .output()
        .unwrap();
    assert!(vv.status.success(), "{}", String::from_utf8_lossy(&vv.stderr));
    let vv_text = String::from_utf8(vv.stdout).unwrap();
    assert!(vv_text.starts_with("[virt-viewer]\ntype=spice\n"), "{vv_text}");
    assert!(vv_text.contains(&format!("port={}\n", tap.port())) && vv_text.contains(&format!("password={TOKEN}\n")));
    assert!(!vv_text.contains(VM_PASSWORD) && !vv_text.contains(&qemu.port.to_string()), "{vv_text}");
    let vv_file = dir.path.join("vm1.vv");
    std::fs::write(&vv_file, &vv_text).unwrap();
    let x = Xvfb::start();
    let mut viewer = remote_viewer(&x, vv_file.to_str().unwrap(), &[]);
    wait_until("remote-viewer's inputs channel via the .vv file", Duration::from_secs(60), || {
        tap.log_text().lines().any(|l| l.contains("channel=inputs") && l.contains("channel linked"))
    });
    viewer.terminate(Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));

    // Every response of the HTTP surface, head and body: no secret.
    let mut paths = vec!["/".to_string(), "/ui/app.js".into(), "/metrics".into(), "/api/sessions".into()];
    let list: serde_json::Value = serde_json::from_slice(&get(http, "/api/sessions?per_page=500").body).unwrap();
    for s in list["sessions"].as_array().unwrap() {
        let Some(id) = s["id"].as_str() else { continue };
        paths.push(format!("/api/sessions/{id}"));
        for f in s["files"].as_array().unwrap() {
            paths.push(format!("/api/sessions/{id}/files/{}", f.as_str().unwrap()));
        }
        paths.push(format!("/api/sessions/{id}/displays/0/screenshot.png"));
    }
    assert!(paths.len() > 10, "{paths:?}");
    for path in &paths {
        let r = get(http, path);
        let mut all: Vec<u8> = r.headers.iter().flat_map(|(k, v)| format!("{k}: {v}\n").into_bytes()).collect();
        all.extend_from_slice(&r.body);
        for secret in [VM_PASSWORD, TOKEN, OLD_TOKEN] {
            let hit = all.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!hit, "{secret:?} in the response to {path}");
        }
    }
    let metrics = String::from_utf8(get(http, "/metrics").body).unwrap();
    assert!(metrics.contains("spicetap_token_logins_total{result=\"denied\"} 4"), "{metrics}");
    assert!(metrics.contains("spicetap_token_logins_total{result=\"allowed\"}"), "{metrics}");
    tap.stop();
    drop(x);

    // session.json: the target, the removed migration caps, the caps as advertised.
    let all: Vec<serde_json::Value> = tap.sessions().iter().flat_map(|d| channels(&session_json(d))).collect();
    let mains: Vec<_> = all.iter().filter(|c| c["type"] == "main" && c["target"] == "vm1").collect();
    assert!(!mains.is_empty());
    for m in &mains {
        assert_eq!(m["auth_mode"], "tokens");
        let removed: Vec<&str> =
            m["caps_removed_upstream"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(removed, ["SPICE_MAIN_CAP_SEMI_SEAMLESS_MIGRATE", "SPICE_MAIN_CAP_SEAMLESS_MIGRATE"]);
        assert_eq!(m["migrate_messages_withheld"], 0);
        assert!(m["vm_caps"].is_object());
    }
    let denied: Vec<_> = all.iter().filter_map(|c| c["denied"].as_str()).collect();
    assert!(denied.contains(&"unknown token") && denied.contains(&"expired token"), "{denied:?}");
    for session in tap.sessions() {
        for c in channels(&session_json(&session)) {
            check_pcap(&session, &c);
        }
    }

    // The audit log tells the story without secrets.
    let audit_text = std::fs::read_to_string(&audit).unwrap();
    let events: Vec<serde_json::Value> = audit_text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let has = |e: &str| events.iter().any(|v| v["event"] == e);
    for e in ["accepted", "authenticated", "denied", "session_started", "channel_ended", "session_ended"] {
        assert!(has(e), "audit log lacks {e}:\n{audit_text}");
    }
    assert!(events.iter().any(|v| v["event"] == "authenticated" && v["target"] == "vm1"));
    assert!(events.iter().any(|v| v["event"] == "denied" && v["reason"] == "expired token" && v["target"] == "old"));

    // No secret anywhere spicetap wrote.
    let mut files = vec![tap.log.clone(), audit.clone()];
    for session in tap.sessions() {
        files.extend(std::fs::read_dir(&session).unwrap().map(|e| e.unwrap().path()));
    }
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for secret in [VM_PASSWORD, TOKEN, OLD_TOKEN] {
            let hit = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!hit, "{secret:?} found in {}", f.display());
        }
    }
}

#[test]
fn failed_logins_are_rate_limited_per_address() {
    let dir = Scratch::new("tokens-rate");
    let (decoy_port, _) = decoy();
    let targets = dir.path.join("targets.toml");
    std::fs::write(
        &targets,
        format!(
            "[[target]]\nname = \"vm\"\ntoken = \"good\"\nupstream = \"127.0.0.1:{decoy_port}\"\npassword = \"p\"\n"
        ),
    )
    .unwrap();
    let mut tap = token_proxy(&dir.path, false, &targets, &[]);
    for _ in 0..5 {
        let (mut s, reply) = link_start(tap.addr, 1, 0);
        assert_eq!(link_result(&mut s, &reply), 7);
    }
    // The sixth attempt is refused in the link reply, before any ticket.
    let (_s, reply) = link_start(tap.addr, 1, 0);
    assert_eq!(link_error(&reply), 7, "rate-limited: PERMISSION_DENIED at once");
    tap.stop();
    let log = tap.log_text();
    assert!(log.contains("too many failed authentications"), "{log}");
    assert!(log.contains("the targets file holds passwords and tokens but others may read it"), "{log}");
}

/// Token mode honours `--stream-codecs`: the display link message spicetap
/// sends to the VM leaves out the other codecs' caps, and session.json says
/// so. What the VM received is seen by a second spicetap (passthrough, with
/// capture) standing between the token proxy and QEMU.
#[test]
fn token_mode_applies_stream_codecs_upstream() {
    let dir = Scratch::new("tokens-codecs");
    let qemu = Qemu::bios_password(&dir.path, VM_PASSWORD);
    let (inner_dir, outer_dir) = (dir.path.join("inner"), dir.path.join("outer"));
    std::fs::create_dir_all(&inner_dir).unwrap();
    std::fs::create_dir_all(&outer_dir).unwrap();
    let mut inner = Spicetap::start(&inner_dir, &format!("127.0.0.1:{}", qemu.port), true, &["--no-video"]);
    let targets = dir.path.join("targets.toml");
    write_targets(
        &targets,
        &format!(
            "[[target]]\nname = \"vm\"\ntoken = \"{TOKEN}\"\nupstream = \"127.0.0.1:{}\"\npassword = \"{VM_PASSWORD}\"\n",
            inner.port()
        ),
    );
    let mut outer = token_proxy(&outer_dir, true, &targets, &["--stream-codecs", "h264", "--no-video"]);
    let shot = dir.path.join("shot.ppm");
    assert!(spicy_screenshot_password(outer.port(), Some(TOKEN), &shot), "the token shows the VM");
    outer.stop();
    inner.stop();

    let caps = |c: &serde_json::Value, key: &str| -> Vec<String> {
        let v = if key == "client" { &c["client_caps"]["channel"] } else { &c[key] };
        v.as_array().unwrap().iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()
    };
    let display_of = |tap: &Spicetap| {
        tap.sessions().iter().flat_map(|d| channels(&session_json(d))).find(|c| c["type"] == "display").unwrap()
    };
    let outer_display = display_of(&outer);
    let (client, removed) = (caps(&outer_display, "client"), caps(&outer_display, "caps_removed_upstream"));
    assert!(client.iter().any(|c| c == "SPICE_DISPLAY_CAP_CODEC_MJPEG"), "spice-gtk offers MJPEG: {client:?}");
    assert!(removed.iter().any(|c| c == "SPICE_DISPLAY_CAP_CODEC_MJPEG"), "{outer_display}");
    assert!(!removed.iter().any(|c| c == "SPICE_DISPLAY_CAP_CODEC_H264"), "{removed:?}");
    // What reached the VM: no MJPEG, everything else the client asked for.
    let vm_got = caps(&display_of(&inner), "client");
    assert!(!vm_got.iter().any(|c| c == "SPICE_DISPLAY_CAP_CODEC_MJPEG"), "{vm_got:?}");
    let kept: Vec<&String> = client.iter().filter(|c| !removed.contains(c)).collect();
    assert_eq!(vm_got.iter().collect::<Vec<_>>(), kept);
}
