//! TLS on both legs against QEMU's `tls-port`, certificate handling, and
//! refusal of upstream certificates that do not check out.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

/// Starts a TLS-only spicetap (its CA generated in `dir/certs`) in front of
/// QEMU's TLS port, trusting QEMU's CA.
fn tls_proxy(dir: &std::path::Path, qemu_tls: u16, extra: &[&str]) -> Spicetap {
    let upstream = format!("127.0.0.1:{qemu_tls}");
    let certs = dir.join("certs");
    let ca = dir.join("x509/ca-cert.pem");
    let mut args = vec![
        "--tls-listen",
        "127.0.0.1:0",
        "--cert-dir",
        certs.to_str().unwrap(),
        "--upstream-tls",
        &upstream,
        "--upstream-ca",
        ca.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Spicetap::start_args(dir, true, &args)
}

#[test]
fn tls_on_both_legs_with_remote_viewer_and_spicy_screenshot() {
    let dir = Scratch::new("tls-both");
    let (_qemu, qemu_tls) = Qemu::bios_tls(&dir.path, "tls-channel=default");
    let mut tap = tls_proxy(&dir.path, qemu_tls, &[]);
    let tls = tap.tls_addr.expect("TLS listener");
    let our_ca = dir.path.join("certs/ca-cert.pem");
    std::thread::sleep(Duration::from_secs(3));

    // spice-gtk's screenshot over TLS through spicetap equals the direct one.
    let qemu_ca = dir.path.join("x509/ca-cert.pem");
    same_screen(
        |out| assert!(spicy_screenshot_tls(qemu_tls, &qemu_ca, out), "direct TLS screenshot"),
        |out| assert!(spicy_screenshot_tls(tls.port(), &our_ca, out), "TLS screenshot through spicetap"),
        &dir.path,
    );

    // remote-viewer, every channel secured.
    let x = Xvfb::start();
    let mut viewer = remote_viewer(
        &x,
        &format!("spice://127.0.0.1?tls-port={}", tls.port()),
        &[&format!("--spice-ca-file={}", our_ca.display()), "--spice-secure-channels=all"],
    );
    wait_until("remote-viewer's inputs and cursor channels", Duration::from_secs(60), || {
        let log = tap.log_text();
        let linked =
            |ch: &str| log.lines().any(|l| l.contains(&format!("channel={ch}")) && l.contains("channel linked"));
        linked("inputs") && linked("cursor")
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(viewer.is_running());
    viewer.terminate(Duration::from_secs(10));
    tap.stop();

    let sessions = tap.sessions();
    let last = sessions.last().unwrap();
    let s = session_json(last);
    let chans = channels(&s);
    let types: Vec<&str> = chans.iter().map(|c| c["type"].as_str().unwrap()).collect();
    for t in ["main", "display", "inputs", "cursor"] {
        assert!(types.contains(&t), "{types:?}");
    }
    for c in &chans {
        assert!(c["client_tls"]["version"].as_str().unwrap().starts_with("TLSv1_"), "{c}");
        assert!(c["upstream_tls"]["cipher_suite"].as_str().unwrap().starts_with("TLS"), "{c}");
        assert_eq!(c["upstream_tls"]["peer_subject"], "O=spicetap, CN=qemu.test");
        assert!(c["link_error"].is_null());
        // The pcap holds the plaintext: SPICE, byte for byte.
        check_pcap(last, c);
    }
    let display = chans.iter().find(|c| c["type"] == "display").unwrap();
    assert!(display["server_to_client"]["histogram"]["SPICE_MSG_DISPLAY_DRAW_COPY"].as_u64().unwrap() >= 1);
}

#[test]
fn plain_client_reaches_a_tls_only_server_via_auto() {
    let dir = Scratch::new("tls-auto");
    let (qemu, qemu_tls) = Qemu::bios_tls(&dir.path, "tls-channel=default");
    let ca = dir.path.join("x509/ca-cert.pem");
    let plain = format!("127.0.0.1:{}", qemu.port);
    let secure = format!("127.0.0.1:{qemu_tls}");
    let mut tap = Spicetap::start_args(
        &dir.path,
        true,
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &plain,
            "--upstream-tls",
            &secure,
            "--upstream-ca",
            ca.to_str().unwrap(),
        ],
    );
    same_screen(
        |out| assert!(spicy_screenshot_tls(qemu_tls, &ca, out)),
        |out| spicy_screenshot(tap.port(), out),
        &dir.path,
    );
    tap.stop();
    for session in tap.sessions() {
        for c in channels(&session_json(&session)) {
            assert_eq!(c["upstream_upgraded_to_tls"], true, "{c}");
            assert!(c["client_tls"].is_null());
            assert!(c["upstream_tls"]["version"].is_string());
            check_pcap(&session, &c);
        }
    }
    assert!(tap.log_text().contains("server answered NEED_SECURED; reconnecting over TLS"));
}

#[test]
fn require_client_tls_sends_plain_clients_to_the_tls_port() {
    let dir = Scratch::new("tls-require");
    let qemu = Qemu::bios(&dir.path, "");
    let certs = dir.path.join("certs");
    let upstream = format!("127.0.0.1:{}", qemu.port);
    let mut tap = Spicetap::start_args(
        &dir.path,
        true,
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls-listen",
            "127.0.0.1:0",
            "--cert-dir",
            certs.to_str().unwrap(),
            "--require-client-tls",
            "main",
            "--upstream",
            &upstream,
        ],
    );
    let (_s, reply) = link_start(tap.addr, 1, 0);
    assert_eq!(link_error(&reply), 5, "SPICE_LINK_ERR_NEED_SECURED on the plain port");
    // spice-gtk follows the refusal to the TLS port when it knows it.
    let out = dir.path.join("shot.ppm");
    let result = run_bounded(
        Command::new("spicy-screenshot")
            .args(["-h", "127.0.0.1", "-p", &tap.port().to_string(), "-s", &tap.tls_addr.unwrap().port().to_string()])
            .arg("-o")
            .arg(&out)
            .env("SSL_CERT_FILE", certs.join("ca-cert.pem")),
        Duration::from_secs(60),
    );
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    tap.stop();
    let all: Vec<_> = tap.sessions().iter().flat_map(|d| channels(&session_json(d))).collect();
    assert!(all.iter().any(|c| c["answered_by_proxy"] == "SPICE_LINK_ERR_NEED_SECURED"));
    assert!(all.iter().any(|c| c["type"] == "main" && c["client_tls"].is_object() && c["link_error"].is_null()));
}

#[test]
fn certificates_are_generated_once_and_bad_ones_stop_start_up() {
    let dir = Scratch::new("tls-certs");
    let certs = dir.path.join("certs");
    let run = |args: &[&str]| {
        let mut tap = Spicetap::start_args(&dir.path, false, args);
        tap.stop();
        tap.log_text()
    };
    let base = ["--tls-listen", "127.0.0.1:0", "--cert-dir", certs.to_str().unwrap(), "--upstream", "127.0.0.1:9"];
    let first = run(&base);
    assert!(first.contains("generating a CA"), "{first}");
    let ca = std::fs::read(certs.join("ca-cert.pem")).unwrap();
    let cert = std::fs::read(certs.join("server-cert.pem")).unwrap();
    let second = run(&base);
    assert!(!second.contains("generating a CA") && !second.contains("issuing"), "{second}");
    assert_eq!(std::fs::read(certs.join("ca-cert.pem")).unwrap(), ca);
    assert_eq!(std::fs::read(certs.join("server-cert.pem")).unwrap(), cert);
    assert!(second.contains("TLS clients trust this CA"), "{second}");

    // User-provided PEM files work.
    let x509 = dir.path.join("x509");
    make_x509_dir(&x509);
    let user = ["--tls-listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9"];
    let cert_path = x509.join("server-cert.pem");
    let key_path = x509.join("server-key.pem");
    let mut args = user.to_vec();
    args.extend(["--cert", cert_path.to_str().unwrap(), "--key", key_path.to_str().unwrap()]);
    let log = run(&args);
    assert!(log.contains("O=spicetap, CN=qemu.test"), "{log}");

    // Missing, malformed and mismatched files are start-up errors.
    let junk = dir.path.join("junk.pem");
    std::fs::write(&junk, "not pem").unwrap();
    let missing = dir.path.join("missing.pem");
    let other_key = certs.join("server-key.pem");
    for (cert, key, expect) in [
        (&missing, &key_path, "missing.pem"),
        (&junk, &key_path, "not a PEM certificate"),
        (&cert_path, &junk, "not a PEM private key"),
        (&cert_path, &other_key, "TLS certificate and key"),
    ] {
        let out = run_bounded(
            Command::new(SPICETAP)
                .args(["proxy", "--tls-listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--cert"])
                .arg(cert)
                .arg("--key")
                .arg(key)
                .env("NO_COLOR", "1"),
            Duration::from_secs(20),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cert:?} {key:?} must fail");
        assert!(err.contains(expect), "{expect:?} not in: {err}");
    }
}

#[test]
fn upstream_certificates_from_another_ca_or_subject_are_refused() {
    let dir = Scratch::new("tls-refuse");
    let (_qemu, qemu_tls) = Qemu::bios_tls(&dir.path, "");
    let upstream = format!("127.0.0.1:{qemu_tls}");
    // Another CA: spicetap's own, generated in a separate folder.
    let other = dir.path.join("other-ca");
    make_x509_dir(&other);
    let cases = [
        (
            vec!["--upstream-ca".to_string(), other.join("ca-cert.pem").to_str().unwrap().to_string()],
            "invalid peer certificate",
        ),
        (
            vec![
                "--upstream-ca".to_string(),
                dir.path.join("x509/ca-cert.pem").to_str().unwrap().to_string(),
                "--upstream-host-subject".to_string(),
                "O=spicetap,CN=somebody-else".to_string(),
            ],
            "does not match --upstream-host-subject",
        ),
    ];
    for (extra, expect) in cases {
        let mut args = vec!["--listen".to_string(), "127.0.0.1:0".into(), "--upstream-tls".into(), upstream.clone()];
        args.extend(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut tap = Spicetap::start_args(&dir.path, false, &args);
        let (_s, reply) = link_start(tap.addr, 1, 0);
        assert_eq!(link_error(&reply), 1, "the client gets SPICE_LINK_ERR_ERROR");
        tap.stop();
        let log = tap.log_text();
        assert!(log.contains(&format!("cannot connect upstream TLS {upstream}")) && log.contains(expect), "{log}");
    }
    // The right subject is accepted.
    let ca = dir.path.join("x509/ca-cert.pem");
    let mut tap = Spicetap::start_args(
        &dir.path,
        false,
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream-tls",
            &upstream,
            "--upstream-ca",
            ca.to_str().unwrap(),
            "--upstream-host-subject",
            "O=spicetap,CN=qemu.test",
        ],
    );
    let _main = link_raw(tap.addr, 1, 0);
    tap.stop();
}
