//! A fleet of spicetap nodes sharing one PostgreSQL database: tokens issued
//! with `spicetap token issue` reach a VM through haproxy spreading one
//! session's channels over two nodes; revocation closes them on both within
//! a second; the database going away fails new logins closed while live
//! sessions go on; no secret is stored in the clear.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::postgres::Postgres;
use support::*;

const VM_PASSWORD: &str = "vm-Fleet-Secret-5521";

/// Runs `spicetap ARGS` with the fleet's database and keys; its stdout.
fn admin(fleet: &Fleet, args: &[&str]) -> String {
    let out = Command::new(SPICETAP)
        .args(args)
        .env("SPICETAP_DB", &fleet.pg.url)
        .env("SPICETAP_TOKEN_KEY", &fleet.token_key)
        .env("SPICETAP_PASSWORD_KEY", &fleet.password_key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "spicetap {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A migrated database, two key files and a target for `qemu`.
struct Fleet {
    pg: Postgres,
    token_key: PathBuf,
    password_key: PathBuf,
}

impl Fleet {
    fn new(dir: &Path, name: &str, qemu_port: u16) -> Self {
        let pg = Postgres::start(name);
        let token_key = dir.join("token.key");
        let password_key = dir.join("password.key");
        let f = Self { pg, token_key, password_key };
        admin(
            &f,
            &[
                "db",
                "keygen",
                "--token-key",
                f.token_key.to_str().unwrap(),
                "--password-key",
                f.password_key.to_str().unwrap(),
            ],
        );
        assert!(admin(&f, &["db", "migrate"]).contains("schema version 1"));
        let pw = dir.join("vm-password");
        std::fs::write(&pw, format!("{VM_PASSWORD}\n")).unwrap();
        admin(
            &f,
            &[
                "target",
                "add",
                "vm1",
                "--upstream",
                &format!("127.0.0.1:{qemu_port}"),
                "--password-file",
                pw.to_str().unwrap(),
            ],
        );
        std::fs::remove_file(&pw).unwrap();
        f
    }

    /// `spicetap proxy --auth tokens --db` as node `name`, recording.
    fn node(&self, dir: &Path, name: &str) -> Spicetap {
        let node_dir = dir.join(name);
        std::fs::create_dir_all(&node_dir).unwrap();
        let args = [
            "--listen",
            "127.0.0.1:0",
            "--auth",
            "tokens",
            "--db",
            &self.pg.url,
            "--token-key",
            self.token_key.to_str().unwrap(),
            "--password-key",
            self.password_key.to_str().unwrap(),
            "--node",
            name,
            "--no-video",
        ];
        Spicetap::start_args(&node_dir, true, &args)
    }
}

/// haproxy in TCP mode, round robin over `nodes`.
fn haproxy(dir: &Path, nodes: &[&Spicetap]) -> (Guard, u16) {
    let port = free_port();
    let mut cfg = format!(
        "global\n  maxconn 256\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n\
         frontend spice\n  bind 127.0.0.1:{port}\n  default_backend nodes\nbackend nodes\n  balance roundrobin\n"
    );
    for (i, n) in nodes.iter().enumerate() {
        cfg.push_str(&format!("  server node{i} {}\n", n.addr));
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let guard = Guard::spawn(
        "haproxy",
        Command::new("haproxy").arg("-db").arg("-f").arg(&path).stdout(Stdio::null()).stderr(Stdio::null()),
    );
    wait_until("haproxy's port", Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    (guard, port)
}

fn count(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

/// The channel types (pcap names without `.pcap`) of every session folder
/// of a node.
fn recorded(node: &Spicetap) -> Vec<String> {
    let mut out = Vec::new();
    for s in node.sessions() {
        for e in std::fs::read_dir(&s).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if let Some(ch) = name.strip_suffix(".pcap") {
                out.push(ch.to_string());
            }
        }
    }
    out
}

#[test]
fn a_session_split_over_two_nodes_is_indexed_and_revoked_within_a_second() {
    let dir = Scratch::new("fleet");
    let qemu = Qemu::bios_password(&dir.path, VM_PASSWORD);
    let fleet = Fleet::new(&dir.path, "split", qemu.port);
    let a = fleet.node(&dir.path, "a");
    let b = fleet.node(&dir.path, "b");
    let (_haproxy, lb_port) = haproxy(&dir.path, &[&a, &b]);

    // A token as a connection file leading to haproxy.
    let vv =
        admin(&fleet, &["token", "issue", "--target", "vm1", "--ttl", "1h", "--vv", "--port", &lb_port.to_string()]);
    let token = vv.lines().find_map(|l| l.strip_prefix("password=")).unwrap().to_string();
    assert!(!vv.contains(VM_PASSWORD) && !vv.contains(&qemu.port.to_string()), "{vv}");
    let vv_file = dir.path.join("vm1.vv");
    std::fs::write(&vv_file, &vv).unwrap();

    let x = Xvfb::start();
    let mut viewer = remote_viewer(&x, vv_file.to_str().unwrap(), &[]);
    let linked = || count(&a.log_text(), "channel linked") + count(&b.log_text(), "channel linked");
    wait_until("remote-viewer's main, display, inputs and cursor channels", Duration::from_secs(60), || linked() >= 4);
    std::thread::sleep(Duration::from_secs(2));
    let channels = linked();
    let (on_a, on_b) = (count(&a.log_text(), "channel linked"), count(&b.log_text(), "channel linked"));
    assert!(on_a > 0 && on_b > 0, "round robin put channels on both nodes: a {on_a}, b {on_b}");

    // The index has both nodes' parts of one session, with their folders.
    let mut rows = Vec::new();
    wait_until("index rows of both nodes", Duration::from_secs(10), || {
        let json = admin(&fleet, &["sessions", "--live", "--json"]);
        rows = serde_json::from_str::<Vec<serde_json::Value>>(&json).unwrap();
        rows.len() == 2 && rows.iter().all(|r| r["folder"].is_string() && r["session_id"].is_i64())
    });
    assert_eq!(rows[0]["session_id"], rows[1]["session_id"], "{rows:?}");
    let mut nodes: Vec<&str> = rows.iter().map(|r| r["node"].as_str().unwrap()).collect();
    nodes.sort();
    assert_eq!(nodes, ["a", "b"]);
    assert_eq!(rows.iter().map(|r| r["channels"].as_i64().unwrap()).sum::<i64>() as usize, channels);
    // Every channel was recorded on one of them.
    let mut pcaps = recorded(&a);
    pcaps.extend(recorded(&b));
    for ch in ["main-0", "display-0", "inputs-0", "cursor-0"] {
        assert!(pcaps.iter().any(|p| p == ch), "{ch} recorded on a node: {pcaps:?}");
    }

    // Revocation closes every channel on both nodes within a second (the
    // client may close some itself once its main channel is gone).
    let revoked_at = Instant::now();
    admin(&fleet, &["token", "revoke", &token]);
    wait_until("every channel closed", Duration::from_secs(5), || {
        count(&a.log_text(), "channel closed") + count(&b.log_text(), "channel closed") >= channels
    });
    let took = revoked_at.elapsed();
    eprintln!("revocation closed {channels} channels on 2 nodes in {took:?} (including the revoke command)");
    assert!(took < Duration::from_secs(1), "revocation took {took:?}");
    viewer.terminate(Duration::from_secs(10));

    // The token is refused now: PERMISSION_DENIED in the link result.
    for node in [&a, &b] {
        let (mut s, reply) = link_start(node.addr, 1, 0);
        assert_eq!(link_result_password(&mut s, &reply, &token), 7, "SPICE_LINK_ERR_PERMISSION_DENIED");
    }

    // The audit table: issue, use, revoke and close.
    wait_until("the audit events", Duration::from_secs(10), || {
        let events = fleet.pg.sql("SELECT DISTINCT event || ':' || coalesce(reason, '') FROM audit ORDER BY 1");
        ["token_issued:", "authenticated:", "token_revoked:", "channel_ended:revoked", "denied:revoked token"]
            .iter()
            .all(|e| events.lines().any(|l| l == *e))
    });
    wait_until("index rows closed", Duration::from_secs(10), || {
        fleet.pg.sql("SELECT count(*) FROM session_channels WHERE closed IS NOT NULL").trim() == channels.to_string()
    });
    let revoked = fleet.pg.sql("SELECT count(*) FROM session_channels WHERE end_reason = 'revoked'");
    assert!(revoked.trim().parse::<usize>().unwrap() >= 2, "channels closed as revoked on both nodes: {revoked}");
    assert!(fleet.pg.sql("SELECT count(*) FROM sessions WHERE ended IS NULL").trim() == "0");

    // render and inspect read the session from both nodes' folders as one.
    let folders: Vec<String> = rows.iter().map(|r| r["folder"].as_str().unwrap().to_string()).collect();
    let summary = Command::new(SPICETAP).args(["inspect", "--summary"]).args(&folders).output().unwrap();
    assert!(summary.status.success(), "{}", String::from_utf8_lossy(&summary.stderr));
    let summary = String::from_utf8_lossy(&summary.stdout);
    for ch in ["main-0", "display-0", "inputs-0", "cursor-0"] {
        assert!(summary.contains(ch), "inspect of both folders shows {ch}:\n{summary}");
    }
    let png = dir.path.join("split.png");
    let render = Command::new(SPICETAP)
        .args(["render", "--cursor", "--png", png.to_str().unwrap()])
        .args(&folders)
        .output()
        .unwrap();
    assert!(render.status.success(), "render of both folders: {}", String::from_utf8_lossy(&render.stderr));
    let (w, h, _) = read_png(&png);
    assert!(w >= 640 && h >= 400, "{w}x{h}");

    // Nothing secret in the database: no token, no VM password.
    let dump = fleet.pg.dump();
    assert!(dump.contains("token_issued"), "the dump holds the audit table");
    assert!(!dump.contains(&token) && !dump.contains(VM_PASSWORD), "a secret in the clear in pg_dump");
    let hex_pw: String = VM_PASSWORD.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(!dump.contains(&hex_pw), "the VM password as bytea hex in pg_dump");
    for node in [&a, &b] {
        let log = node.log_text();
        assert!(!log.contains(&token) && !log.contains(VM_PASSWORD), "a secret in a node's log");
    }
}

#[test]
fn without_the_database_live_sessions_go_on_and_logins_fail_closed() {
    let dir = Scratch::new("fleet-away");
    let qemu = Qemu::bios_password(&dir.path, VM_PASSWORD);
    let fleet = Fleet::new(&dir.path, "away", qemu.port);
    // A key file others may read is warned about.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fleet.token_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let node = fleet.node(&dir.path, "n1");
    assert!(node.log_text().contains("key file may be read by others"), "{}", node.log_text());
    let token = admin(&fleet, &["token", "issue", "--target", "vm1"]).trim().to_string();

    let x = Xvfb::start();
    let uri = format!("spice://127.0.0.1:{}?password={token}", node.port());
    let mut viewer = remote_viewer(&x, &uri, &[]);
    wait_until("remote-viewer's four channels", Duration::from_secs(60), || {
        count(&node.log_text(), "channel linked") >= 4
    });

    fleet.pg.down();
    wait_until("the node noticing", Duration::from_secs(10), || {
        node.log_text().contains("fleet database connection lost")
    });
    // A new login fails closed, with a clear log line and PERMISSION_DENIED.
    let (mut s, reply) = link_start(node.addr, 1, 0);
    assert_eq!(link_result_password(&mut s, &reply, &token), 7, "SPICE_LINK_ERR_PERMISSION_DENIED");
    assert!(node.log_text().contains("fleet database unavailable; login refused"));
    // The live session goes on: typing still crosses the inputs channel.
    let served_closed =
        |log: &str| log.lines().filter(|l| l.contains("channel closed") && !l.contains("link_failed")).count();
    let before = served_closed(&node.log_text());
    let _ = Command::new("xdotool").args(["key", "a", "b", "c"]).env("DISPLAY", &x.display).status();
    std::thread::sleep(Duration::from_secs(2));
    assert!(viewer.is_running(), "remote-viewer still runs");
    assert_eq!(served_closed(&node.log_text()), before, "no channel closed while the database was away");

    // The database returns: logins work again without a restart, and the
    // events queued meanwhile are written.
    fleet.pg.up();
    wait_until("the node reconnecting", Duration::from_secs(15), || {
        count(&node.log_text(), "fleet database connected") >= 2
    });
    let out = dir.path.join("after.ppm");
    assert!(spicy_screenshot_password(node.port(), Some(&token), &out), "a login after the database returned");
    wait_until("the queued denial in the audit table", Duration::from_secs(10), || {
        fleet.pg.sql("SELECT count(*) FROM audit WHERE reason = 'fleet database unavailable'").trim() == "1"
    });
    viewer.terminate(Duration::from_secs(10));

    // Removing the target revokes its tokens: refused from then on.
    admin(&fleet, &["target", "remove", "vm1"]);
    assert!(!admin(&fleet, &["target", "list"]).contains("vm1"));
    let (mut s, reply) = link_start(node.addr, 1, 0);
    assert_eq!(link_result_password(&mut s, &reply, &token), 7, "SPICE_LINK_ERR_PERMISSION_DENIED");
    assert_eq!(fleet.pg.sql("SELECT count(*) FROM audit WHERE event = 'target_removed'").trim(), "1");
    assert_eq!(fleet.pg.sql("SELECT count(*) FROM tokens WHERE revoked IS NULL").trim(), "0");
}
