//! Test support: real QEMU, real spicetap, real clients, all on loopback.
//!
//! Every process started here is killed when its guard drops, and every wait
//! is bounded. Tools come from Debian packages that `.ci/run` installs
//! (qemu-system-x86, spice-client-gtk, virt-viewer, xvfb, xdotool, tshark).

#![allow(dead_code)]

pub mod browser;
pub mod fake_server;
pub mod postgres;
pub mod webdriver;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const SPICETAP: &str = env!("CARGO_BIN_EXE_spicetap");

/// A free loopback TCP port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `cond` every 50 ms until it holds or `limit` passes.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed on drop.
pub struct Guard {
    pub name: String,
    pub child: Child,
}

impl Guard {
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        let child =
            cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e} (is its Debian package installed?)"));
        Self { name: name.to_string(), child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (bounded) for exit; returns the exit status code.
    pub fn terminate(&mut self, limit: Duration) -> Option<i32> {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{} did not exit within {limit:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch folder removed on drop unless `SPICETAP_KEEP_TEST_DIRS` is set.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Self {
        let base = std::env::var_os("CARGO_TARGET_TMPDIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        let path = base.join(format!("{name}-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&path).unwrap();
        Self { path }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("SPICETAP_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.path);
        } else {
            eprintln!("kept {}", self.path.display());
        }
    }
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(200)).is_ok()
}

/// QEMU serving SPICE on a free loopback port.
pub struct Qemu {
    pub guard: Guard,
    pub port: u16,
    pub serial: PathBuf,
    /// The human monitor's Unix socket.
    pub monitor: PathBuf,
}

impl Qemu {
    /// SeaBIOS with no disk: a static "No bootable device" screen.
    /// `spice_opts` are extra `-spice` options (e.g. `image-compression=off`).
    pub fn bios(dir: &Path, spice_opts: &str) -> Self {
        Self::start(dir, spice_opts, &[])
    }

    /// The tiny Linux guest of `scripts/build-guest` (built and cached on
    /// first use), with the webdav port, a named port
    /// (`org.spicetap.test.0`) and usbredir channels. Waits until
    /// the guest has drawn its screen.
    pub fn linux(dir: &Path, spice_opts: &str, append: &str) -> Self {
        let q = Self::linux_booting(dir, spice_opts, append);
        q.wait_serial("SPICETAP-GUEST-READY", Duration::from_secs(180));
        q
    }

    /// The Linux guest, returned as soon as QEMU's SPICE port accepts (the
    /// guest is still booting), so a client can watch it draw.
    pub fn linux_booting(dir: &Path, spice_opts: &str, append: &str) -> Self {
        Self::linux_with(dir, spice_opts, append, &[])
    }

    /// The Linux guest with QEMU stopped before its first instruction
    /// (`-S`): a client connects, then `monitor_command("cont")` starts the
    /// machine, so the client sees everything from SeaBIOS on.
    pub fn linux_paused(dir: &Path, spice_opts: &str, append: &str) -> Self {
        Self::linux_with(dir, spice_opts, append, &["-S"])
    }

    /// The Linux guest behind a SPICE password; returned once it drew its
    /// screen.
    pub fn linux_password(dir: &Path, password: &str, append: &str) -> Self {
        let q = Self::linux_args(dir, "password-secret=spicepw", append, &[], Some(password));
        q.wait_serial("SPICETAP-GUEST-READY", Duration::from_secs(180));
        q
    }

    fn linux_with(dir: &Path, spice_opts: &str, append: &str, extra: &[&str]) -> Self {
        Self::linux_args(dir, spice_opts, append, extra, None)
    }

    fn linux_args(dir: &Path, spice_opts: &str, append: &str, extra: &[&str], password: Option<&str>) -> Self {
        let guest = build_guest();
        let kernel = guest.join("vmlinuz");
        let initrd = guest.join("initrd.img");
        let append = format!("console=ttyS0 console=tty0 {append}");
        let args: Vec<String> = [
            "-kernel",
            kernel.to_str().unwrap(),
            "-initrd",
            initrd.to_str().unwrap(),
            "-append",
            &append,
            "-device",
            "virtio-serial-pci",
            "-chardev",
            "spiceport,name=org.spice-space.webdav.0,id=webdav0",
            "-device",
            "virtserialport,chardev=webdav0,name=org.spice-space.webdav.0",
            "-chardev",
            "spiceport,name=org.spicetap.test.0,id=port0",
            "-device",
            "virtserialport,chardev=port0,name=org.spicetap.test.0",
            "-device",
            "qemu-xhci",
            "-chardev",
            "spicevmc,name=usbredir,id=ur1",
            "-device",
            "usb-redir,chardev=ur1",
            "-chardev",
            "spicevmc,name=usbredir,id=ur2",
            "-device",
            "usb-redir,chardev=ur2",
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
        match password {
            None => Self::start(dir, spice_opts, &args),
            Some(p) => {
                let mut args = args;
                args.extend(["-object".to_string(), format!("secret,id=spicepw,data={p}")]);
                Self::start_with(dir, spice_opts, &args, false)
            }
        }
    }

    /// SeaBIOS with a TLS port too: a CA and a server certificate for
    /// 127.0.0.1 in `dir/x509` (QEMU's `x509-dir` layout), and `spice_opts`
    /// such as `tls-channel=main`. Returns the QEMU and its TLS port; the CA
    /// is `dir/x509/ca-cert.pem`.
    pub fn bios_tls(dir: &Path, spice_opts: &str) -> (Self, u16) {
        let x509 = dir.join("x509");
        make_x509_dir(&x509);
        let tls_port = free_port();
        let opts = format!("tls-port={tls_port},x509-dir={},{spice_opts}", x509.display());
        (Self::start(dir, &opts, &[]), tls_port)
    }

    /// SeaBIOS with a SPICE password (`password-secret`).
    pub fn bios_password(dir: &Path, password: &str) -> Self {
        let secret = ["-object".to_string(), format!("secret,id=spicepw,data={password}")];
        Self::start_with(dir, "password-secret=spicepw", &secret, false)
    }

    fn start(dir: &Path, spice_opts: &str, extra: &[String]) -> Self {
        Self::start_with(dir, spice_opts, extra, true)
    }

    fn start_with(dir: &Path, spice_opts: &str, extra: &[String], no_ticket: bool) -> Self {
        let port = free_port();
        let serial = dir.join(format!("serial-{port}.log"));
        let mut spice = format!("port={port},addr=127.0.0.1");
        if no_ticket {
            spice.push_str(",disable-ticketing=on");
        }
        if !spice_opts.is_empty() {
            spice.push(',');
            spice.push_str(spice_opts);
        }
        let monitor = dir.join(format!("monitor-{port}.sock"));
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-nodefaults", "-machine", "pc", "-m", "512", "-vga", "qxl", "-display", "none"])
            .args(["-spice", &spice])
            .args(["-serial", &format!("file:{}", serial.display())])
            .args(["-monitor", &format!("unix:{},server=on,wait=off", monitor.display())])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut guard = Guard::spawn("qemu-system-x86_64", &mut cmd);
        wait_until("QEMU's SPICE port", Duration::from_secs(30), || {
            assert!(guard.is_running(), "QEMU exited early");
            port_open(port)
        });
        Self { guard, port, serial, monitor }
    }

    /// Sends one command to QEMU's human monitor (e.g. `stop` pauses the VM).
    pub fn monitor_command(&self, command: &str) {
        let mut s = std::os::unix::net::UnixStream::connect(&self.monitor).expect("QEMU monitor");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut banner = [0u8; 4096];
        let _ = s.read(&mut banner);
        s.write_all(format!("{command}\n").as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let _ = s.read(&mut banner);
    }

    pub fn serial_log(&self) -> String {
        std::fs::read_to_string(&self.serial).unwrap_or_default()
    }

    pub fn wait_serial(&self, needle: &str, limit: Duration) {
        wait_until(&format!("{needle:?} on the guest's serial console"), limit, || self.serial_log().contains(needle));
    }
}

/// Writes `ca-cert.pem`, `server-cert.pem` and `server-key.pem` (what QEMU's
/// `x509-dir` expects) into `dir`: a CA and a certificate for 127.0.0.1
/// (subject `O=spicetap, CN=qemu.test`), made with spicetap's generator.
pub fn make_x509_dir(dir: &Path) {
    let ip = "127.0.0.1".parse().unwrap();
    spicetap::tls::certs::Identity::generated_in(dir, &["qemu.test".to_string()], &[ip]).unwrap();
}

/// The same files made with the `openssl` command (RSA keys, v1 server
/// certificate without subject alternative names).
pub fn make_x509_dir_openssl(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let run = |args: &[&str]| {
        let out = run_bounded(Command::new("openssl").current_dir(dir).args(args), Duration::from_secs(60));
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=spicetap test CA",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca-cert.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server-key.pem",
        "-out",
        "server.csr",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca-cert.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        "server-cert.pem",
    ]);
}

/// Builds (or reuses the cache of) the Linux test guest; returns its folder.
pub fn build_guest() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-guest");
    let out = Command::new(&script).stderr(Stdio::inherit()).output().expect("run scripts/build-guest");
    assert!(out.status.success(), "scripts/build-guest failed");
    let text = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(text.lines().last().expect("build-guest prints its folder").trim())
}

/// A running `spicetap proxy`.
pub struct Spicetap {
    pub guard: Guard,
    /// First listener (plain, or TLS when there is no plain one).
    pub addr: SocketAddr,
    /// The TLS listener, when there is one.
    pub tls_addr: Option<SocketAddr>,
    pub capture: Option<PathBuf>,
    pub log: PathBuf,
}

impl Spicetap {
    /// Starts `spicetap proxy` on a free port in front of `upstream`.
    pub fn start(dir: &Path, upstream: &str, capture: bool, extra: &[&str]) -> Self {
        let mut args = vec!["--listen", "127.0.0.1:0", "--upstream", upstream];
        args.extend_from_slice(extra);
        Self::start_args(dir, capture, &args)
    }

    /// Starts `spicetap proxy ARGS` (with `--ready-file`, and `--capture`
    /// when asked) and waits until it accepts connections.
    pub fn start_args(dir: &Path, capture: bool, args: &[&str]) -> Self {
        let ready = dir.join(format!("ready-{}", free_port()));
        let log = dir.join(format!("spicetap-{}.log", free_port()));
        let capture_dir = capture.then(|| dir.join("capture"));
        let mut cmd = Command::new(SPICETAP);
        cmd.arg("proxy")
            .arg("--ready-file")
            .arg(&ready)
            .args(args)
            .env("RUST_LOG", std::env::var("SPICETAP_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(c) = &capture_dir {
            cmd.arg("--capture").arg(c);
        }
        let mut guard = Guard::spawn("spicetap", &mut cmd);
        wait_until("spicetap's ready file", Duration::from_secs(20), || {
            assert!(guard.is_running(), "spicetap exited early: {}", std::fs::read_to_string(&log).unwrap_or_default());
            ready.exists()
        });
        let text = std::fs::read_to_string(&ready).unwrap();
        let mut lines = text.lines();
        let addr = lines.next().expect("ready file names an address").parse().unwrap();
        let tls_addr = lines.find_map(|l| l.strip_prefix("tls ")).map(|a| a.parse().unwrap());
        Self { guard, addr, tls_addr, capture: capture_dir, log }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then asserts a clean exit 0 within 20 s.
    pub fn stop(&mut self) {
        let code = self.guard.terminate(Duration::from_secs(20));
        assert_eq!(code, Some(0), "spicetap exit status; log:\n{}", self.log_text());
    }

    /// The session folders under the capture folder, oldest first.
    pub fn sessions(&self) -> Vec<PathBuf> {
        let Some(c) = &self.capture else { return Vec::new() };
        let mut v: Vec<PathBuf> =
            std::fs::read_dir(c).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
        v.sort();
        v
    }
}

/// Runs `spicy-screenshot` over TLS against `tls_port`, trusting `ca`,
/// writing `out`; returns whether it succeeded. spicy-screenshot has no CA
/// option, and without one spice-gtk falls back to OpenSSL's default verify
/// paths (spice-gtk `spice-channel.c`), which honour `SSL_CERT_FILE`.
pub fn spicy_screenshot_tls(tls_port: u16, ca: &Path, out: &Path) -> bool {
    let result = run_bounded(
        Command::new("spicy-screenshot")
            .args(["-h", "127.0.0.1", "-s", &tls_port.to_string(), "-o"])
            .arg(out)
            .env("SSL_CERT_FILE", ca),
        Duration::from_secs(60),
    );
    if !result.status.success() {
        eprintln!("spicy-screenshot: {}", String::from_utf8_lossy(&result.stderr));
    }
    result.status.success() && out.exists()
}

/// Runs `spicy-screenshot` against `port`, writing `out`; asserts success.
pub fn spicy_screenshot(port: u16, out: &Path) {
    assert!(spicy_screenshot_password(port, None, out), "spicy-screenshot failed");
}

/// Runs `spicy-screenshot -w PASSWORD` against `port`; returns whether it
/// saved a screenshot.
pub fn spicy_screenshot_password(port: u16, password: Option<&str>, out: &Path) -> bool {
    let mut cmd = Command::new("spicy-screenshot");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-o"]).arg(out);
    if let Some(pw) = password {
        cmd.args(["-w", pw]);
    }
    let status = run_bounded(&mut cmd, Duration::from_secs(60));
    if !status.status.success() {
        eprintln!("spicy-screenshot: {}", String::from_utf8_lossy(&status.stderr));
    }
    status.status.success() && out.exists()
}

/// spice-gtk's own rendering at the end of a session: `scripts/spice-gtk-shot`
/// stays connected to `port` until `until_file` contains `until_text` and
/// the display has been quiet for 2 s, then saves its primary surface.
pub fn spice_gtk_shot(port: u16, out: &Path, until_file: &Path, until_text: &str) {
    spice_gtk_shot_with(
        port,
        out,
        until_file,
        &["--until-text", until_text, "--timeout", "240"],
        Duration::from_secs(300),
    );
}

/// `scripts/spice-gtk-shot` on `port` saving to `out` once `until_file`
/// exists, with more of its options in `args`; the run is bounded by
/// `limit` and must succeed.
pub fn spice_gtk_shot_with(port: u16, out: &Path, until_file: &Path, args: &[&str], limit: Duration) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/spice-gtk-shot");
    let result = run_bounded(
        Command::new(script)
            .args(["127.0.0.1", &port.to_string()])
            .arg(out)
            .arg("--until-file")
            .arg(until_file)
            .args(args),
        limit,
    );
    assert!(result.status.success(), "spice-gtk-shot failed: {}", String::from_utf8_lossy(&result.stderr));
}

/// Width, height and RGB bytes of an 8-bit RGB PNG.
pub fn read_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// Runs a command with a time limit, capturing its output (read while it
/// runs, so a large output never blocks it).
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("command timed out after {limit:?}: {cmd:?}");
        }
    }
}

/// An Xvfb server on a free display number.
pub struct Xvfb {
    pub guard: Guard,
    pub display: String,
}

impl Xvfb {
    pub fn start() -> Self {
        for n in 50..200 {
            let (lock, socket) = (format!("/tmp/.X{n}-lock"), format!("/tmp/.X11-unix/X{n}"));
            // A lock left by an X server that is gone (killed) frees its display.
            if let Ok(text) = std::fs::read_to_string(&lock)
                && let Ok(pid) = text.trim().parse::<u32>()
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_file(&lock);
                let _ = std::fs::remove_file(&socket);
            }
            if Path::new(&lock).exists() || Path::new(&socket).exists() {
                continue;
            }
            let display = format!(":{n}");
            let mut cmd = Command::new("Xvfb");
            cmd.args([&display, "-nolisten", "tcp", "-screen", "0", "1280x1024x24"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut guard = Guard::spawn("Xvfb", &mut cmd);
            let socket = format!("/tmp/.X11-unix/X{n}");
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if Path::new(&socket).exists() {
                    return Self { guard, display };
                }
                if !guard.is_running() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("cannot start Xvfb");
    }
}

impl Drop for Xvfb {
    /// SIGTERM first, so Xvfb removes its lock file and socket.
    fn drop(&mut self) {
        if self.guard.is_running() {
            let _ = Command::new("kill").arg("-TERM").arg(self.guard.pid().to_string()).status();
            let start = Instant::now();
            while self.guard.is_running() && start.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// `remote-viewer URI EXTRA...` on `x`'s display, output discarded, killed
/// on drop. `uri` is e.g. `spice://127.0.0.1:PORT`.
pub fn remote_viewer(x: &Xvfb, uri: &str, extra: &[&str]) -> Guard {
    Guard::spawn(
        "remote-viewer",
        Command::new("remote-viewer")
            .arg(uri)
            .args(extra)
            .env("DISPLAY", &x.display)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

/// `spicy -h 127.0.0.1 -p PORT EXTRA...` under `x`; its stdout and stderr
/// go to `spicy.out` and `spicy.err` in `logs`.
pub fn spicy(x: &Xvfb, port: u16, extra: &[String], logs: &Path) -> Guard {
    Guard::spawn(
        "spicy",
        Command::new("spicy")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(extra)
            .env("DISPLAY", &x.display)
            .stdout(std::fs::File::create(logs.join("spicy.out")).unwrap())
            .stderr(std::fs::File::create(logs.join("spicy.err")).unwrap()),
    )
}

/// Takes a screenshot with `direct` and one with `via` until both show the
/// same picture (the SeaBIOS screen settles a few seconds after boot);
/// panics after 30 s. The picture must not be blank.
pub fn same_screen(direct: impl Fn(&Path), via: impl Fn(&Path), dir: &Path) {
    let start = Instant::now();
    let (a, b) = (dir.join("direct.ppm"), dir.join("via.ppm"));
    loop {
        direct(&a);
        via(&b);
        let (pa, pb) = (read_ppm(&a), read_ppm(&b));
        if pa == pb && pa.2.iter().any(|&p| p != 0) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "screenshots through spicetap differ from direct ones");
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Reads a binary PPM (P6) into (width, height, RGB bytes).
pub fn read_ppm(path: &Path) -> (usize, usize, Vec<u8>) {
    let data = std::fs::read(path).unwrap();
    let mut fields = Vec::new();
    let mut pos = 0;
    while fields.len() < 4 {
        while data[pos].is_ascii_whitespace() {
            pos += 1;
        }
        if data[pos] == b'#' {
            while data[pos] != b'\n' {
                pos += 1;
            }
            continue;
        }
        let start = pos;
        while !data[pos].is_ascii_whitespace() {
            pos += 1;
        }
        fields.push(String::from_utf8(data[start..pos].to_vec()).unwrap());
    }
    assert_eq!(fields[0], "P6");
    let (w, h): (usize, usize) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    let pixels = data[pos + 1..].to_vec();
    assert_eq!(pixels.len(), w * h * 3);
    (w, h, pixels)
}

/// `session.json` of a session folder.
pub fn session_json(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("session.json")).unwrap()).unwrap()
}

/// The channel entries of `session.json`.
pub fn channels(session: &serde_json::Value) -> Vec<serde_json::Value> {
    session["channels"].as_array().unwrap().clone()
}

/// Runs `tshark -r FILE` with more arguments; returns stdout.
/// `spicetap inspect SESSION extra...`: its standard output; panics when
/// it fails.
pub fn inspect(session: &Path, extra: &[&str]) -> String {
    let out = Command::new(SPICETAP).arg("inspect").arg(session).args(extra).output().unwrap();
    assert!(out.status.success(), "inspect {extra:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

pub fn tshark(file: &Path, args: &[&str]) -> String {
    let out = run_bounded(Command::new("tshark").arg("-r").arg(file).args(args), Duration::from_secs(120));
    assert!(out.status.success(), "tshark failed on {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Reads a pcap that may end inside a packet (a crash, a full disk) with
/// tshark and returns how many packets it holds: tshark must read every
/// complete packet, the only complaint allowed being a last one cut
/// short. A file too short for the pcap file header holds none.
pub fn pcap_packets_to_last_complete(file: &Path) -> usize {
    if std::fs::metadata(file).map(|m| m.len()).unwrap_or(0) < 24 {
        return 0;
    }
    let out = run_bounded(
        Command::new("tshark").arg("-r").arg(file).args(["-T", "fields", "-e", "frame.number"]),
        Duration::from_secs(120),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || err.contains("cut short in the middle of a packet"),
        "tshark cannot read {}: {err}",
        file.display()
    );
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// Checks one channel pcap with tshark: SPICE dissected, no malformed
/// packets, no TCP sequence problems, and TCP payload bytes per direction
/// equal to the byte counts of `session.json`. Returns the summary lines.
pub fn check_pcap(session_dir: &Path, channel: &serde_json::Value) -> String {
    let file = session_dir.join(channel["pcap"].as_str().expect("channel has a pcap"));
    let summary = tshark(&file, &[]);
    assert!(summary.contains("Spice"), "{} not dissected as SPICE:\n{summary}", file.display());
    let bad = tshark(
        &file,
        &[
            "-Y",
            "_ws.malformed || _ws.expert.severity >= error || tcp.analysis.lost_segment || tcp.analysis.out_of_order \
             || tcp.analysis.retransmission || tcp.analysis.ack_lost_segment || tcp.analysis.retransmission",
        ],
    );
    assert!(bad.trim().is_empty(), "{}: problem packets:\n{bad}", file.display());
    let lens = tshark(&file, &["-T", "fields", "-e", "tcp.dstport", "-e", "tcp.len"]);
    let mut by_dir: BTreeMap<bool, u64> = BTreeMap::new();
    for line in lens.lines() {
        let mut f = line.split('\t');
        let (Some(port), Some(len)) = (f.next(), f.next()) else { continue };
        let to_server = port == "5930";
        *by_dir.entry(to_server).or_default() += len.parse::<u64>().unwrap_or(0);
    }
    let c2s = channel["client_to_server"]["bytes"].as_u64().unwrap();
    let s2c = channel["server_to_client"]["bytes"].as_u64().unwrap();
    assert_eq!(by_dir.get(&true).copied().unwrap_or(0), c2s, "{}: client-to-server bytes", file.display());
    assert_eq!(by_dir.get(&false).copied().unwrap_or(0), s2c, "{}: server-to-client bytes", file.display());
    summary
}

/// A minimal SPICE client for hostile-input tests: links a channel through
/// `addr` (to a QEMU with ticketing disabled) and returns the stream after
/// the link result.
pub fn link_raw(addr: SocketAddr, channel_type: u8, connection_id: u32) -> TcpStream {
    let (s, reply) = link_start(addr, channel_type, connection_id);
    assert_eq!(link_error(&reply), 0, "link reply error");
    link_finish(s, &reply)
}

/// The `error` field of a `SpiceLinkReply` body.
pub fn link_error(reply: &[u8]) -> u32 {
    u32::from_le_bytes(reply[..4].try_into().unwrap())
}

/// Sends a link message and reads the link reply; returns the stream and
/// the `SpiceLinkReply` body.
pub fn link_start(addr: SocketAddr, channel_type: u8, connection_id: u32) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let caps: u32 = 0b1011; // AUTH_SELECTION, AUTH_SPICE, MINI_HEADER
    let mut body = Vec::new();
    body.extend_from_slice(&connection_id.to_le_bytes());
    body.extend_from_slice(&[channel_type, 0]);
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&18u32.to_le_bytes());
    body.extend_from_slice(&caps.to_le_bytes());
    let mut msg = b"REDQ".to_vec();
    msg.extend_from_slice(&2u32.to_le_bytes());
    msg.extend_from_slice(&2u32.to_le_bytes());
    msg.extend_from_slice(&(body.len() as u32).to_le_bytes());
    msg.extend_from_slice(&body);
    s.write_all(&msg).unwrap();
    let mut header = [0u8; 16];
    s.read_exact(&mut header).unwrap();
    assert_eq!(&header[..4], b"REDQ");
    let size = u32::from_le_bytes(header[12..16].try_into().unwrap()) as usize;
    let mut reply = vec![0u8; size];
    s.read_exact(&mut reply).unwrap();
    (s, reply)
}

/// Sends the auth mechanism and an empty-password ticket, checks the link
/// result is OK.
pub fn link_finish(mut s: TcpStream, reply: &[u8]) -> TcpStream {
    assert_eq!(link_result(&mut s, reply), 0, "link result");
    s
}

/// Sends the auth mechanism and an empty-password ticket; returns the link
/// result (`SpiceLinkErr`).
pub fn link_result(s: &mut TcpStream, reply: &[u8]) -> u32 {
    link_result_password(s, reply, "")
}

/// As [`link_result`], with `password` as the ticket.
pub fn link_result_password(s: &mut TcpStream, reply: &[u8], password: &str) -> u32 {
    s.write_all(&1u32.to_le_bytes()).unwrap();
    // The password and a NUL, RSA-OAEP (SHA-1) under the server's key, as
    // spice-gtk sends it.
    use rsa::pkcs8::DecodePublicKey;
    let key = rsa::RsaPublicKey::from_public_key_der(&reply[4..4 + 162]).expect("server public key");
    let plain = [password.as_bytes(), b"\0"].concat();
    let ticket = key.encrypt(&mut rand::thread_rng(), rsa::Oaep::new::<sha1::Sha1>(), &plain[..]).unwrap();
    s.write_all(&ticket).unwrap();
    let mut result = [0u8; 4];
    s.read_exact(&mut result).unwrap();
    u32::from_le_bytes(result)
}

/// `n` bytes of deterministic noise from `seed` (xorshift32), for images
/// and shared files.
pub fn noise(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// The MD5 of a file as `md5sum` prints it.
pub fn md5_of(path: &Path) -> String {
    let out = run_bounded(Command::new("md5sum").arg(path), Duration::from_secs(60));
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string()
}

impl Qemu {
    /// Types `text` and Return on the guest's PS/2 keyboard with the human
    /// monitor's `sendkey` (no SPICE client involved), all keys over one
    /// monitor connection. QEMU queues the key events, so they arrive in
    /// order, 50 ms each; this returns once the monitor took every command
    /// (the keys may still be on their way). Letters (upper case with
    /// shift), digits, space and the printable ASCII punctuation of a US
    /// keyboard are known.
    pub fn type_line(&self, text: &str) {
        let mut keys: Vec<String> = text.chars().map(sendkey_name).collect();
        keys.push("ret".into());
        let mut s = std::os::unix::net::UnixStream::connect(&self.monitor).expect("QEMU monitor");
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let script: String = keys.iter().map(|k| format!("sendkey {k} 50\n")).collect();
        s.write_all(script.as_bytes()).unwrap();
        // One "(qemu)" prompt after the banner, then one per command.
        let mut seen = Vec::new();
        let start = Instant::now();
        let prompts = |b: &[u8]| String::from_utf8_lossy(b).matches("(qemu)").count();
        while prompts(&seen) <= keys.len() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "QEMU's monitor did not take all sendkey commands: {}",
                String::from_utf8_lossy(&seen)
            );
            let mut buf = [0u8; 4096];
            match s.read(&mut buf) {
                Ok(0) => panic!("QEMU's monitor closed the connection"),
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        let text = String::from_utf8_lossy(&seen);
        assert!(!text.contains("nvalid parameter") && !text.contains("unknown key"), "sendkey: {text}");
    }
}

/// QEMU's `sendkey` name of a character (US keyboard layout, the guest
/// kernel's default keymap).
fn sendkey_name(c: char) -> String {
    let name = match c {
        'a'..='z' | '0'..='9' => return c.to_string(),
        'A'..='Z' => return format!("shift-{}", c.to_ascii_lowercase()),
        ' ' => "spc",
        '-' => "minus",
        '_' => "shift-minus",
        '=' => "equal",
        '+' => "shift-equal",
        '.' => "dot",
        '>' => "shift-dot",
        ',' => "comma",
        '<' => "shift-comma",
        '/' => "slash",
        '?' => "shift-slash",
        ';' => "semicolon",
        ':' => "shift-semicolon",
        '\'' => "apostrophe",
        '"' => "shift-apostrophe",
        '[' => "bracket_left",
        '{' => "shift-bracket_left",
        ']' => "bracket_right",
        '}' => "shift-bracket_right",
        '\\' => "backslash",
        '|' => "shift-backslash",
        '`' => "grave_accent",
        '~' => "shift-grave_accent",
        '!' => "shift-1",
        '@' => "shift-2",
        '#' => "shift-3",
        '$' => "shift-4",
        '%' => "shift-5",
        '^' => "shift-6",
        '&' => "shift-7",
        '*' => "shift-8",
        '(' => "shift-9",
        ')' => "shift-0",
        _ => panic!("type_line: no sendkey name for {c:?}"),
    };
    name.to_string()
}

/// One connection of the guest's webdav probe (`webdav <tag>` typed on its
/// keyboard, see `scripts/guest/init`): mux client `id` and the lines of
/// the HTTP response the SPICE client's phodav sent on it (`\r` dropped,
/// bytes outside ASCII 32..126 shown as `.`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebdavAnswer {
    pub id: String,
    pub lines: Vec<String>,
    /// The client side closed the connection (a size-0 mux frame).
    pub closed: bool,
    /// The last line had no final newline (`SPICETAP-WEBDAV-NOEOL`).
    pub no_eol: bool,
}

impl WebdavAnswer {
    /// The status code of the status line (`HTTP/1.1 207 Multi-Status`).
    pub fn status(&self) -> Option<u16> {
        let first = self.lines.first()?;
        let mut words = first.split(' ');
        words.next().filter(|v| v.starts_with("HTTP/"))?;
        words.next()?.parse().ok()
    }

    /// A header's value (the name is case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.lines[..self.head_len()]
            .iter()
            .skip(1)
            .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
    }

    /// The body: everything after the blank line ending the header, each
    /// line with its `\n` (but `\r` dropped, and no chunked decoding).
    pub fn body(&self) -> String {
        let mut body = String::new();
        let rest = &self.lines[(self.head_len() + 1).min(self.lines.len())..];
        for (i, l) in rest.iter().enumerate() {
            body.push_str(l);
            if !(self.no_eol && i + 1 == rest.len()) {
                body.push('\n');
            }
        }
        body
    }

    /// Lines up to (not including) the blank line ending the header.
    fn head_len(&self) -> usize {
        self.lines.iter().position(|l| l.is_empty()).unwrap_or(self.lines.len())
    }
}

/// Runs the guest's webdav probe: types `webdav <tag>` (tag `[a-z0-9]+`,
/// unique in this boot), waits up to `limit` for
/// `SPICETAP-WEBDAV-DONE:<tag>` and returns its connections in request
/// order: PROPFIND /, GET /hello.txt, PUT /new-<tag>.txt (body
/// `spicetap put <tag>\n`), then any other id the client sent on. The
/// probe's own errors (`SPICETAP-WEBDAV-ERROR`) are printed to stderr;
/// see [`webdav_errors`].
pub fn webdav_probe(qemu: &Qemu, tag: &str, limit: Duration) -> Vec<WebdavAnswer> {
    let log = webdav_command(qemu, tag, &format!("webdav {tag}"), limit);
    webdav_answers(&log, tag)
}

/// Types a webdav keyboard command `line` of the run `tag` (`[a-z0-9]+`,
/// unique in this boot) and waits up to `limit` for its
/// `SPICETAP-WEBDAV-DONE:<tag>`; prints the run's `SPICETAP-WEBDAV-ERROR`
/// texts to stderr and returns the serial log. Panics (naming the errors)
/// when DONE does not come.
fn webdav_command(qemu: &Qemu, tag: &str, line: &str, limit: Duration) -> String {
    assert!(!tag.is_empty() && tag.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()), "tag {tag:?}");
    let done = format!("SPICETAP-WEBDAV-DONE:{tag}");
    let finished = |log: &str| log.lines().any(|l| l.trim_end_matches('\r') == done);
    assert!(!finished(&qemu.serial_log()), "webdav run {tag:?} already ran in this boot");
    qemu.type_line(line);
    let start = Instant::now();
    while !finished(&qemu.serial_log()) {
        if start.elapsed() >= limit {
            let log = qemu.serial_log();
            panic!(
                "no {done} within {limit:?} after typing {line:?}; errors {:?}; the guest's serial log:\n{log}",
                webdav_errors(&log, tag)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = qemu.serial_log();
    for e in webdav_errors(&log, tag) {
        eprintln!("webdav {tag}: {e}");
    }
    log
}

/// One request of the guest's webdav probe (`webdav-req <tag> <method>
/// <path>`, see `scripts/guest/init`): `method` (`[A-Za-z]+`) with `path`
/// sent verbatim as the request target (`/%2e%2e/x` stays as it is), no
/// body, on mux client 5; `Depth: 1` for PROPFIND. Waits up to `limit` for
/// the run's DONE and returns client 5's answer (no lines if nothing came
/// back; the run's errors are on stderr, see [`webdav_errors`]). `path`
/// takes what [`Qemu::type_line`] can type.
pub fn webdav_request(qemu: &Qemu, tag: &str, method: &str, path: &str, limit: Duration) -> WebdavAnswer {
    assert!(!method.is_empty() && method.chars().all(|c| c.is_ascii_alphabetic()), "method {method:?}");
    assert!(!path.is_empty(), "empty request target");
    let log = webdav_command(qemu, tag, &format!("webdav-req {tag} {method} {path}"), limit);
    let id = "5";
    webdav_answers(&log, tag)
        .into_iter()
        .find(|a| a.id == id)
        .unwrap_or_else(|| WebdavAnswer { id: id.to_string(), ..Default::default() })
}

/// Times a GET of `path` (a big file) in the guest (`webdav-bench <tag>
/// <path>`, see `scripts/guest/init`): waits up to `limit` and returns the
/// bytes the guest's port delivered (the response with its mux frame
/// headers), the seconds from the request's write to the close frame seen
/// (10 ms steps; the guest looks every 50 ms) and the response's status
/// code. Panics when the guest reported no result (naming its errors).
pub fn webdav_bench(qemu: &Qemu, tag: &str, path: &str, limit: Duration) -> (u64, f64, u16) {
    assert!(!path.is_empty(), "empty request target");
    let log = webdav_command(qemu, tag, &format!("webdav-bench {tag} {path}"), limit);
    let prefix = format!("SPICETAP-WEBDAV-BENCH:{tag}:");
    let Some(result) = log.lines().find_map(|l| l.trim_end_matches('\r').strip_prefix(&prefix)) else {
        panic!("webdav-bench {tag}: no result; errors: {:?}", webdav_errors(&log, tag));
    };
    let fields: Vec<&str> = result.split(':').collect();
    let [bytes, centis, status] = fields[..] else { panic!("webdav-bench {tag}: bad result {result:?}") };
    let parse = |f: &str| f.parse::<u64>().unwrap_or_else(|e| panic!("webdav-bench {tag}: {result:?}: {e}"));
    (parse(bytes), parse(centis) as f64 / 100.0, parse(status) as u16)
}

/// The connections the webdav probe `tag` reported in a serial log, in the
/// order it printed them.
pub fn webdav_answers(log: &str, tag: &str) -> Vec<WebdavAnswer> {
    fn slot<'a>(answers: &'a mut Vec<WebdavAnswer>, id: &str) -> &'a mut WebdavAnswer {
        if let Some(i) = answers.iter().position(|a| a.id == id) {
            return &mut answers[i];
        }
        answers.push(WebdavAnswer { id: id.to_string(), ..Default::default() });
        answers.last_mut().unwrap()
    }
    let mut answers = Vec::new();
    for line in log.lines().map(|l| l.trim_end_matches('\r')) {
        let Some((kind, rest)) = line.split_once(':') else { continue };
        let Some(rest) = rest.strip_prefix(tag).and_then(|r| r.strip_prefix(':')) else { continue };
        match kind {
            "SPICETAP-WEBDAV" => {
                let (id, text) = rest.split_once(':').unwrap_or((rest, ""));
                slot(&mut answers, id).lines.push(text.to_string());
            }
            "SPICETAP-WEBDAV-CLOSED" => slot(&mut answers, rest).closed = true,
            "SPICETAP-WEBDAV-NOEOL" => slot(&mut answers, rest).no_eol = true,
            _ => {}
        }
    }
    answers
}

/// The `SPICETAP-WEBDAV-ERROR` texts of the webdav probe `tag`.
pub fn webdav_errors(log: &str, tag: &str) -> Vec<String> {
    let prefix = format!("SPICETAP-WEBDAV-ERROR:{tag}:");
    log.lines().filter_map(|l| l.trim_end_matches('\r').strip_prefix(&prefix).map(str::to_string)).collect()
}

/// One HTTP/1.1 response: status, headers (lower-case names), body.
pub struct Reply {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

/// `GET path` (or another method) on 127.0.0.1:`port` with `headers`
/// (`--http`'s surface).
pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect::<BTreeMap<_, _>>();
    let mut body = raw[split + 4..].to_vec();
    if headers.get("transfer-encoding").is_some_and(|t| t == "chunked") {
        body = dechunk(&body);
    }
    Reply { status, headers, body }
}

pub fn get(port: u16, path: &str) -> Reply {
    request(port, "GET", path, &[])
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..nl]).trim(), 16).unwrap();
        b = &b[nl + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}
