//! SIGTERM with a session open: listeners close, the session ends, every
//! capture file is finished, and spicetap exits 0. Start-up tells systemd
//! it is ready (`Type=notify`).

mod support;

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use support::*;

#[test]
fn sigterm_finishes_open_sessions_and_exits_zero() {
    let dir = Scratch::new("shutdown");
    let qemu = Qemu::bios(&dir.path, "");
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", qemu.port), true, &[]);
    let mut main = link_raw(tap.addr, 1, 0);
    let mut buf = [0u8; 256];
    assert!(main.read(&mut buf).unwrap() > 0, "MAIN_INIT arrives");
    wait_until("the session folder", Duration::from_secs(10), || tap.sessions().len() == 1);

    tap.stop();

    // The client sees the connection end.
    main.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    let _ = main.read_to_end(&mut rest);
    // No more listener.
    assert!(TcpStream::connect(tap.addr).is_err(), "listener closed");

    let sessions = tap.sessions();
    let s = session_json(&sessions[0]);
    assert!(s["end"].is_string(), "session end recorded");
    let chans = channels(&s);
    assert_eq!(chans.len(), 1);
    assert_eq!(chans[0]["end"]["reason"], "proxy_shutdown");
    let summary = check_pcap(&sessions[0], &chans[0]);
    assert!(summary.contains("FIN"), "the pcap is closed with FIN:\n{summary}");
    assert!(summary.contains("Server INIT"), "{summary}");
}

/// With `$NOTIFY_SOCKET` set (systemd's `Type=notify`), spicetap sends
/// `READY=1` there once its listeners accept connections (sd_notify(3)).
#[test]
fn readiness_goes_to_the_notify_socket_once_listening() {
    use std::os::unix::net::UnixDatagram;
    use std::process::{Command, Stdio};
    let dir = Scratch::new("notify");
    let socket_path = dir.path.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let port = free_port();
    let mut child = Guard::spawn(
        "spicetap",
        Command::new(SPICETAP)
            .args(["proxy", "--listen", &format!("127.0.0.1:{port}"), "--upstream", "127.0.0.1:9"])
            .env("NOTIFY_SOCKET", &socket_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let mut buf = [0u8; 64];
    let n = socket.recv(&mut buf).expect("READY=1 within 20 s");
    assert_eq!(&buf[..n], b"READY=1");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok(), "listening when it said ready");
    // The signal handlers are in place before READY=1: a SIGTERM right
    // after it is a clean stop.
    assert_eq!(child.terminate(Duration::from_secs(20)), Some(0));
}
