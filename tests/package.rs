//! The Debian package: `scripts/package` (cargo-deb) builds it, `dpkg -i`
//! installs it, the unit's `ExecStart` line with the default configuration
//! serves a session (systemd is not PID 1 on the test machines, so the
//! line is run as it is, with the upstream pointed at the test's QEMU),
//! and `man spicetap` shows the man page. Needs root (dpkg); the package is
//! purged at the end.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::*;

fn run(cmd: &mut Command) -> String {
    let out = run_bounded(cmd, Duration::from_secs(900));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Purges the package when the test ends, passed or not.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "spicetap"]).output();
    }
}

#[test]
fn the_debian_package_installs_serves_a_session_and_has_a_man_page() {
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
    if !root {
        eprintln!("skipped: dpkg -i needs root");
        return;
    }
    let dir = Scratch::new("package");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let deb = dir.path.join("spicetap.deb");
    run(Command::new(manifest.join("scripts/package"))
        .args(["--output", deb.to_str().unwrap()])
        .env("PROFILE", "dev")
        .current_dir(manifest));
    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    for f in [
        "./usr/bin/spicetap",
        "./lib/systemd/system/spicetap.service",
        "./etc/spicetap/spicetap.toml",
        "./usr/share/man/man1/spicetap.1.gz",
        "./usr/share/man/man1/spicetap-proxy.1.gz",
    ] {
        assert!(contents.contains(f), "{f} in the package:\n{contents}");
    }

    let _installed = Installed;
    run(Command::new("dpkg").arg("-i").arg(&deb));
    assert!(Path::new("/var/lib/spicetap/captures").is_dir(), "postinst made the capture folder");
    let id = |flag: &str| run(Command::new("id").args([flag, "spicetap"])).trim().parse::<u32>().unwrap();
    let (uid, gid) = (id("-u"), id("-g"));
    let unit = std::fs::read_to_string("/lib/systemd/system/spicetap.service").unwrap();
    for hardening in
        ["User=spicetap", "ProtectSystem=strict", "NoNewPrivileges=yes", "ReadWritePaths=/var/lib/spicetap"]
    {
        assert!(unit.contains(hardening), "{hardening} in the unit");
    }
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("an ExecStart line");
    let mut words = exec.split_whitespace();
    let program = words.next().unwrap();
    assert_eq!(program, "/usr/bin/spicetap");

    // The unit's command line, as the spicetap user, with the default
    // configuration; only the upstream (QEMU on a free port) and the
    // listener (a free port) are given on top, as `systemctl edit` would.
    let qemu = Qemu::bios(&dir.path, "");
    let recorded = || std::fs::read_dir("/var/lib/spicetap/captures").map(|d| d.count()).unwrap_or(0);
    let recorded_before = recorded();
    let port = free_port();
    let ready = dir.path.join("ready");
    std::fs::set_permissions(&dir.path, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let log = std::fs::File::create(dir.path.join("service.log")).unwrap();
    let mut service = Guard::spawn(
        "spicetap service",
        std::os::unix::process::CommandExt::gid(
            std::os::unix::process::CommandExt::uid(&mut Command::new(program), uid),
            gid,
        )
        .args(words)
        .args(["--upstream", &format!("127.0.0.1:{}", qemu.port), "--listen", &format!("127.0.0.1:{port}")])
        .arg("--ready-file")
        .arg(&ready)
        .current_dir("/var/lib/spicetap")
        .stdout(std::process::Stdio::null())
        .stderr(log),
    );
    wait_until("the service's listeners", Duration::from_secs(20), || {
        assert!(service.is_running(), "{}", std::fs::read_to_string(dir.path.join("service.log")).unwrap_or_default());
        ready.exists()
    });
    let out = dir.path.join("via-package.ppm");
    spicy_screenshot(port, &out);
    assert!(out.exists(), "a screenshot through the packaged spicetap");
    assert_eq!(service.terminate(Duration::from_secs(20)), Some(0));
    assert!(recorded() > recorded_before, "the session was recorded under /var/lib/spicetap/captures");

    let man = run(Command::new("man").args(["-P", "cat", "spicetap"]).env("MANWIDTH", "80"));
    assert!(man.contains("spicetap") && man.contains("proxy"), "{man}");
    let man = run(Command::new("man").args(["-P", "cat", "spicetap-proxy"]).env("MANWIDTH", "80"));
    assert!(man.contains("--db"), "{man}");
}
