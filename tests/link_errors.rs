//! Link errors from the real server are forwarded to the client unchanged
//! and recorded in `session.json`.

mod support;

use std::io::Read;

use support::*;

/// QEMU with `tls-channel=main` refuses a plain main channel with
/// `SPICE_LINK_ERR_NEED_SECURED` (spice-server `reds.c`): spicetap passes the
/// refusal on, so the client can reconnect on the TLS port.
#[test]
fn need_secured_is_forwarded_and_recorded() {
    let dir = Scratch::new("need-secured");
    let (qemu, _tls_port) = Qemu::bios_tls(&dir.path, "tls-channel=main");
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", qemu.port), true, &[]);

    let (direct, direct_reply) = link_start(format!("127.0.0.1:{}", qemu.port).parse().unwrap(), 1, 0);
    drop(direct);
    assert_eq!(link_error(&direct_reply), 5, "QEMU itself answers SPICE_LINK_ERR_NEED_SECURED");

    let (mut s, reply) = link_start(tap.addr, 1, 0);
    assert_eq!(reply, direct_reply, "the refusal reaches the client byte for byte");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "nothing follows a refusal");

    tap.stop();
    let sessions = tap.sessions();
    assert_eq!(sessions.len(), 1);
    let s = session_json(&sessions[0]);
    let chans = channels(&s);
    assert_eq!(chans[0]["link_error"], "SPICE_LINK_ERR_NEED_SECURED");
    assert_eq!(chans[0]["end"]["reason"], "link_failed");
    assert!(chans[0]["header_kind"].is_null());
    let summary = check_pcap(&sessions[0], &chans[0]);
    assert!(summary.contains("Server link message"), "{summary}");
    assert!(tap.log_text().contains("SPICE_LINK_ERR_NEED_SECURED"));
}

/// A channel with a connection id no session has: spice-server refuses it
/// and spicetap records the channel in a session of that id.
#[test]
fn unknown_connection_id_is_refused_by_the_server() {
    let dir = Scratch::new("bad-connection-id");
    let qemu = Qemu::bios(&dir.path, "");
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", qemu.port), true, &[]);
    let (mut s, reply) = link_start(tap.addr, 2, 0x5eed);
    assert_eq!(link_error(&reply), 0);
    let result = link_result(&mut s, &reply);
    assert_eq!(result, 8, "QEMU answers SPICE_LINK_ERR_BAD_CONNECTION_ID in the link result");
    tap.stop();
    let s = session_json(&tap.sessions()[0]);
    assert_eq!(s["session_id"], 0x5eed);
    let chans = channels(&s);
    assert_eq!(chans[0]["link_error"], "SPICE_LINK_ERR_BAD_CONNECTION_ID");
    check_pcap(&tap.sessions()[0], &chans[0]);
}
