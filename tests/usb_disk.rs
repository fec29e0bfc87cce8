//! `spicetap proxy --usb-disk`: remote-viewer through spicetap to the Linux
//! guest; spicetap links the session's highest usbredir channel itself and
//! attaches a 64 MiB image of random bytes as a USB disk. The guest must
//! see a disk of exactly that size with the file's MD5, a sector it writes
//! must be in the file afterwards (not with `--usb-disk-ro`), and
//! remote-viewer must keep working meanwhile.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

const SIZE: usize = 64 * 1024 * 1024;

fn xdotool(display: &str, args: &[&str]) -> String {
    let out = run_bounded(Command::new("xdotool").env("DISPLAY", display).args(args), Duration::from_secs(60));
    assert!(out.status.success(), "xdotool {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The serial line starting with `prefix`, once the guest printed it.
fn serial_line(qemu: &Qemu, prefix: &str) -> String {
    qemu.wait_serial(prefix, Duration::from_secs(180));
    qemu.serial_log().lines().find(|l| l.starts_with(prefix)).unwrap().trim().to_string()
}

fn disk_case(read_only: bool) {
    let dir = Scratch::new(if read_only { "usb-disk-ro" } else { "usb-disk" });
    let image = dir.path.join("disk.img");
    std::fs::write(&image, noise(SIZE, 0x2468_ace1)).unwrap();
    let before = md5_of(&image);
    let qemu = Qemu::linux(&dir.path, "", "spicetap.md5=sda spicetap.write=sda");
    let mut args = vec!["--usb-disk", image.to_str().unwrap()];
    if read_only {
        args.push("--usb-disk-ro");
    }
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", qemu.port), true, &args);
    let x = Xvfb::start();
    let mut viewer = remote_viewer(&x, &format!("spice://127.0.0.1:{}", tap.port()), &[]);

    let md5 = serial_line(&qemu, "SPICETAP-MD5:/dev/sda:");
    assert_eq!(md5, format!("SPICETAP-MD5:/dev/sda:{before}:{SIZE}"), "the guest sees the image");
    let wrote = serial_line(&qemu, "SPICETAP-WROTE:/dev/sda:");
    // remote-viewer still works: typed keys reach the guest.
    let window = xdotool(&x.display, &["search", "--sync", "--onlyvisible", "--class", "remote-viewer"]);
    let window = window.lines().next().unwrap().to_string();
    xdotool(&x.display, &["windowfocus", "--sync", &window]);
    xdotool(&x.display, &["type", "--delay", "30", "disk attached"]);
    xdotool(&x.display, &["key", "Return"]);
    qemu.wait_serial("SPICETAP-KEYS:disk attached", Duration::from_secs(30));
    assert!(viewer.is_running(), "remote-viewer still running");
    viewer.terminate(Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    tap.stop();

    let data = std::fs::read(&image).unwrap();
    if read_only {
        assert_ne!(wrote, "SPICETAP-WROTE:/dev/sda:0", "a write to a read-only disk fails");
        assert_eq!(md5_of(&image), before, "the image is unchanged");
    } else {
        assert_eq!(wrote, "SPICETAP-WROTE:/dev/sda:0");
        assert_eq!(&data[512..531], b"SPICETAP-WRITE-TEST", "the guest's sector is in the file");
    }

    let session = tap.sessions().into_iter().next().expect("a session");
    let s = session_json(&session);
    let chans = channels(&s);
    let main = chans.iter().find(|c| c["type"] == "main").unwrap();
    assert_eq!(main["channels_withheld"], serde_json::json!(["usbredir 1"]), "{main}");
    let injected = chans.iter().find(|c| c["client_address"] == "spicetap --usb-disk").expect("the injected channel");
    assert_eq!(injected["channel_id"], 1);
    check_pcap(&session, injected);
    let u = &injected["usbredir"];
    assert_eq!(u["devices"][0]["vendor_product"], "1209:0001", "{u}");
    let ms = &u["mass_storage"];
    assert!(ms["bytes_read"].as_u64().unwrap() >= SIZE as u64, "{ms}");
    if !read_only {
        assert!(ms["bytes_written"].as_u64().unwrap() >= 512, "{ms}");
    }
    // The client never linked the withheld channel.
    assert!(
        !chans
            .iter()
            .any(|c| c["type"] == "usbredir" && c["channel_id"] == 1 && c["client_address"] != "spicetap --usb-disk")
    );
}

#[test]
fn usb_disk_is_attached_read_write() {
    disk_case(false);
}

#[test]
fn usb_disk_ro_refuses_writes() {
    disk_case(true);
}

/// Token mode: spicetap links the injected channel to the client's target
/// with the target's password (the VM has one; the client only knows its
/// token).
#[test]
fn usb_disk_in_token_mode_uses_the_targets_password() {
    const PASSWORD: &str = "vm-Secret-disk";
    const TOKEN: &str = "tok-usb-disk-1";
    let dir = Scratch::new("usb-disk-tokens");
    let image = dir.path.join("disk.img");
    std::fs::write(&image, noise(4 * 1024 * 1024, 0x2468_ace1)).unwrap();
    let before = md5_of(&image);
    let qemu = Qemu::linux_password(&dir.path, PASSWORD, "spicetap.md5=sda");
    let targets = dir.path.join("targets.toml");
    std::fs::write(
        &targets,
        format!(
            "[[target]]\nname = \"vm\"\ntoken = \"{TOKEN}\"\nupstream = \"127.0.0.1:{}\"\npassword = \"{PASSWORD}\"\n",
            qemu.port
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&targets, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--auth",
        "tokens",
        "--targets",
        targets.to_str().unwrap(),
        "--no-video",
        "--usb-disk",
        image.to_str().unwrap(),
        "--usb-disk-ro",
    ];
    let mut tap = Spicetap::start_args(&dir.path, true, &args);
    let x = Xvfb::start();
    let mut viewer = remote_viewer(&x, &format!("spice://127.0.0.1:{}?password={TOKEN}", tap.port()), &[]);
    let md5 = serial_line(&qemu, "SPICETAP-MD5:/dev/sda:");
    assert_eq!(md5, format!("SPICETAP-MD5:/dev/sda:{before}:{}", 4 * 1024 * 1024));
    viewer.terminate(Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    tap.stop();
    let log = tap.log_text();
    assert!(!log.contains(PASSWORD) && !log.contains(TOKEN), "no secret in the log");
}
