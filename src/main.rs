//! The `spicetap` command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use spicetap::auth::audit::AuditLog;
use spicetap::auth::ratelimit::FailureLimiter;
use spicetap::auth::targets::{Lookup, Targets};
use spicetap::auth::ticket::KeyPool;
use spicetap::fleet::{self, Fleet};
use spicetap::protocol::ChannelType;
use spicetap::proxy::channel::RequireTls;
use spicetap::proxy::token_link::{TargetSource, TokenAuth};
use spicetap::proxy::upstream::{TlsChannels, Upstream};
use spicetap::proxy::{Proxy, ProxyConfig};
use spicetap::tls::certs::Identity;
use spicetap::tls::subject::{HostSubject, subject_text};
use spicetap::tls::{UpstreamVerify, client_config, server_config};

/// A transparent SPICE recording proxy.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Forward SPICE clients to a server, optionally recording every channel.
    #[command(args_override_self = true)]
    Proxy(Box<ProxyArgs>),
    /// Print a virt-viewer connection file for a token of a targets file.
    Vv(VvArgs),
    /// Rebuild a recorded display from the session's pcaps and write the
    /// primary surface as PNG.
    Render(RenderArgs),
    /// Read a recorded session as one timeline across its channels, or in
    /// a screen (--summary).
    Inspect(InspectArgs),
    /// Compare two recordings channel by channel (exit 0 equal, 1
    /// different, 2 error).
    Diff(DiffArgs),
    /// The fleet database: apply schema migrations, generate key files.
    #[command(subcommand)]
    Db(DbCommand),
    /// The fleet database's targets (VMs): add, list, remove.
    #[command(subcommand)]
    Target(TargetCommand),
    /// Console tokens in the fleet database: issue, revoke.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The fleet's session index: every node's part of each session.
    Sessions(SessionsArgs),
    /// Write the man pages (spicetap.1 and one per subcommand) into DIR.
    Man {
        /// Output folder.
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
    },
}

/// How to reach the fleet database, and its keys.
#[derive(Debug, Args)]
struct DbArgs {
    /// The fleet database: `postgres://user@host/db` or `host=... dbname=...`.
    #[arg(long, env = "SPICETAP_DB", value_name = "URL")]
    db: String,
    /// Key file of token hashes (HMAC-SHA-256), 64 hex digits.
    #[arg(long, env = "SPICETAP_TOKEN_KEY", value_name = "FILE")]
    token_key: Option<PathBuf>,
    /// Key file of VM passwords (AES-256-GCM), 64 hex digits.
    #[arg(long, env = "SPICETAP_PASSWORD_KEY", value_name = "FILE")]
    password_key: Option<PathBuf>,
}

impl DbArgs {
    fn keys(&self) -> Result<spicetap::fleet::secrets::Keys> {
        use spicetap::fleet::secrets::{Key, Keys};
        let (Some(t), Some(p)) = (&self.token_key, &self.password_key) else {
            bail!("give --token-key FILE and --password-key FILE (or SPICETAP_TOKEN_KEY, SPICETAP_PASSWORD_KEY)");
        };
        Ok(Keys { token: Key::load(t)?, password: Key::load(p)? })
    }
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Apply the schema migrations not yet applied.
    Migrate(DbArgs),
    /// Write two fresh key files (mode 0600); never replaces one.
    Keygen {
        /// Key file of token hashes.
        #[arg(long, value_name = "FILE")]
        token_key: PathBuf,
        /// Key file of VM passwords.
        #[arg(long, value_name = "FILE")]
        password_key: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum TargetCommand {
    /// Add a target (or replace one of the same name).
    Add(TargetAddArgs),
    /// List the targets (never their passwords).
    List {
        #[command(flatten)]
        db: DbArgs,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a target: its tokens are revoked and their channels closed.
    Remove {
        #[command(flatten)]
        db: DbArgs,
        /// Target name.
        name: String,
    },
}

#[derive(Debug, Args)]
struct TargetAddArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Target name (unique).
    name: String,
    /// The VM's plain SPICE port, HOST:PORT.
    #[arg(long)]
    upstream: Option<String>,
    /// The VM's TLS SPICE port, HOST:PORT.
    #[arg(long)]
    upstream_tls: Option<String>,
    /// PEM file of the CA the VM's certificate chains to (stored in the
    /// database).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Check the VM certificate's subject instead of its host name.
    #[arg(long)]
    host_subject: Option<String>,
    /// `auto`, `all`, `none` or a channel list.
    #[arg(long, default_value = "auto")]
    upstream_tls_channels: String,
    /// File whose first line is the VM's SPICE password (`-`: standard
    /// input). Stored sealed.
    #[arg(long, value_name = "FILE")]
    password_file: PathBuf,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Issue a token for a target: printed once (or as a .vv file), stored
    /// only as a keyed hash.
    Issue(TokenIssueArgs),
    /// Revoke a token, or every token of a target: their live channels
    /// close on every node within a second.
    Revoke {
        #[command(flatten)]
        db: DbArgs,
        /// The token.
        #[arg(required_unless_present = "target", conflicts_with = "target")]
        token: Option<String>,
        /// Every token of this target.
        #[arg(long)]
        target: Option<String>,
        /// Who revokes (audit log; default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
}

#[derive(Debug, Args)]
struct TokenIssueArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The target the token leads to.
    #[arg(long)]
    target: String,
    /// How long the token works: `90s`, `30m`, `1h`, `7d`.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// Who issues it (audit log; default: $USER).
    #[arg(long)]
    by: Option<String>,
    /// Print a virt-viewer connection file instead of the bare token.
    #[arg(long)]
    vv: bool,
    #[command(flatten)]
    client: VvClientArgs,
}

/// Where clients reach spicetap, for a .vv file.
#[derive(Debug, Args)]
struct VvClientArgs {
    /// Host name or address of spicetap (or its load balancer) as clients
    /// reach it.
    #[arg(long, default_value = "127.0.0.1")]
    proxy_host: String,
    /// spicetap's plain port, if clients may use it.
    #[arg(long)]
    port: Option<u16>,
    /// spicetap's TLS port.
    #[arg(long)]
    tls_port: Option<u16>,
    /// CA certificate the client should trust (default: certs/ca-cert.pem
    /// when it exists and a TLS port is given).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Certificate subject to check instead of the host name.
    #[arg(long)]
    host_subject: Option<String>,
}

#[derive(Debug, Args)]
struct SessionsArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Only sessions with a channel still open.
    #[arg(long)]
    live: bool,
    /// As JSON.
    #[arg(long)]
    json: bool,
    /// Most rows.
    #[arg(long, default_value_t = 100)]
    limit: i64,
}

#[derive(Debug, Args)]
struct DiffArgs {
    /// A session folder or a pcap.
    a: PathBuf,
    /// The session folder or pcap to compare it with.
    b: PathBuf,
    /// Channel type of pcaps without a link stage (as ryll writes them).
    #[arg(long, value_name = "TYPE")]
    channel_type: Option<String>,
    /// Also leave out these message names (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    mask: Vec<String>,
    /// Compare these default-masked message names after all.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    no_mask: Vec<String>,
    /// The report as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Also write the verdict as JUnit XML (one test case per channel).
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Also render each display both sides opened and compare the final
    /// pictures pixel by pixel.
    #[arg(long)]
    render: bool,
}

#[derive(Debug, Args)]
struct InspectArgs {
    /// A session folder written by `spicetap proxy --capture`; several
    /// folders of one session (its parts recorded on several fleet nodes)
    /// are read as one.
    #[arg(required = true, num_args = 1..)]
    sessions: Vec<PathBuf>,
    /// The folder read (several are joined), set by `main`.
    #[arg(skip)]
    session: PathBuf,
    /// Only these channels: type names (display) or type-id (display-0).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    channel: Vec<String>,
    /// Only messages whose name contains one of these (case-insensitive),
    /// e.g. DRAW_COPY,MARK.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    message: Vec<String>,
    /// Show key presses (they can be passwords; hidden by default).
    #[arg(long)]
    keys: bool,
    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,
    /// The session in a screen: channels, durations, bytes, message rates,
    /// what the renderer could not draw, capture losses.
    #[arg(long)]
    summary: bool,
}

#[derive(Debug, Args)]
struct RenderArgs {
    /// A session folder written by `spicetap proxy --capture`, or a display
    /// pcap file; several folders of one session (its parts recorded on
    /// several fleet nodes) are read as one (PNGs go to the first).
    #[arg(required = true, num_args = 1..)]
    sessions: Vec<PathBuf>,
    /// The folder read (several are joined), set by `main`.
    #[arg(skip)]
    session: PathBuf,
    /// Display channel id.
    #[arg(long, default_value_t = 0)]
    display: u8,
    /// Write the primary surface here (default: SESSION/display-N.png).
    #[arg(long, value_name = "FILE")]
    png: Option<PathBuf>,
    /// Also write the whole recording as an H.264 MP4 (timed by the capture).
    #[arg(long, value_name = "FILE")]
    mp4: Option<PathBuf>,
    /// MP4: most frames per second.
    #[arg(long, default_value_t = 30, value_name = "FPS")]
    video_fps: u32,
    /// Render up to this many seconds after the first message (default: the
    /// end). Several, comma-separated: one PNG per time, named
    /// `at-<seconds>s.png`, into --png-dir.
    #[arg(long, value_name = "SECONDS", value_delimiter = ',', conflicts_with = "mark")]
    at: Vec<f64>,
    /// A PNG at every SPICE_MSG_DISPLAY_MARK into DIR, named
    /// `mark-<n>-<seconds>s.png` (the step-by-step pictures of a session).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["mark", "mp4"])]
    png_every_mark: Option<PathBuf>,
    /// Where the PNGs of several --at times go (default: the session folder,
    /// or the current folder for a pcap).
    #[arg(long, value_name = "DIR")]
    png_dir: Option<PathBuf>,
    /// Draw the mouse pointer over the pictures and the video, from the
    /// session's cursor, main and inputs pcaps.
    #[arg(long)]
    cursor: bool,
    /// Render up to the N-th SPICE_MSG_DISPLAY_MARK (1: the first complete
    /// frame, what spicy-screenshot saves).
    #[arg(long, value_name = "N")]
    mark: Option<u64>,
    /// Channel type of a pcap without a link stage (as ryll writes them).
    #[arg(long, value_name = "TYPE")]
    channel_type: Option<String>,
}

#[derive(Debug, Args)]
struct VvArgs {
    /// The targets file of token mode.
    #[arg(long, value_name = "FILE")]
    targets: PathBuf,
    /// The token (what the client sends as its SPICE password).
    #[arg(long)]
    token: String,
    #[command(flatten)]
    client: VvClientArgs,
}

#[derive(Debug, Args)]
struct ProxyArgs {
    /// Address to accept plain-TCP SPICE clients on; port 0 picks a free
    /// port. Repeatable. Default 127.0.0.1:5900 when no --tls-listen is given.
    #[arg(long)]
    listen: Vec<SocketAddr>,
    /// Address to accept TLS SPICE clients on (QEMU's `tls-port`
    /// equivalent). Repeatable.
    #[arg(long)]
    tls_listen: Vec<SocketAddr>,
    /// PEM certificate chain for the TLS listener (with --key).
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key for --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// Without --cert/--key: folder where spicetap generates (once) and then
    /// reuses its CA and server certificate.
    #[arg(long, value_name = "DIR", default_value = "certs")]
    cert_dir: PathBuf,
    /// Host name to put in the generated server certificate (besides the
    /// listen addresses). Repeatable.
    #[arg(long, value_name = "NAME")]
    cert_hostname: Vec<String>,
    /// Refuse these channels on the plain listener with
    /// SPICE_LINK_ERR_NEED_SECURED, so clients use the TLS listener:
    /// `all` or a list such as `main,inputs`.
    #[arg(long, value_name = "all|CHANNELS")]
    require_client_tls: Option<String>,
    /// The SPICE server's plain port (QEMU's `-spice port=`), HOST:PORT.
    #[arg(long)]
    upstream: Option<String>,
    /// The SPICE server's TLS port (QEMU's `-spice tls-port=`), HOST:PORT.
    #[arg(long)]
    upstream_tls: Option<String>,
    /// CA certificate(s) (PEM) the server's certificate must chain to.
    /// Default: the system bundle /etc/ssl/certs/ca-certificates.crt.
    #[arg(long, value_name = "FILE")]
    upstream_ca: Option<PathBuf>,
    /// Check the server certificate's subject instead of its host name, as
    /// spice-gtk's --spice-host-subject: "C=XX,O=Example,CN=host".
    #[arg(long, value_name = "SUBJECT")]
    upstream_host_subject: Option<String>,
    /// Do not check the server's certificate at all. For tests only:
    /// warned at start-up and recorded in session.json.
    #[arg(long)]
    upstream_insecure: bool,
    /// Which channels use TLS to the server: `auto` (plain, then TLS when
    /// the server answers NEED_SECURED), `all`, `none`, or a list of channels.
    #[arg(long, value_name = "auto|all|none|CHANNELS", default_value = "auto")]
    upstream_tls_channels: String,
    /// Record each session into DIR/<UTC start>-<session id>/: a pcap per
    /// channel and session.json.
    #[arg(long, value_name = "DIR")]
    capture: Option<PathBuf>,
    /// Write `host:port` of the first listener to FILE once it accepts.
    #[arg(long, value_name = "FILE")]
    ready_file: Option<PathBuf>,
    /// Log every message header of these channel types (names such as
    /// `main,display,inputs` or numbers), at debug level.
    #[arg(long, value_name = "CHANNELS", value_delimiter = ',')]
    debug_channels: Vec<String>,
    /// Most channel connections open at once.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// `passthrough`: the server's key and the client's ticket cross
    /// unchanged. `tokens`: spicetap authenticates clients by token (their
    /// SPICE password) against --targets and logs in to the VM itself.
    #[arg(long, default_value = "passthrough", value_parser = ["passthrough", "tokens"])]
    auth: String,
    /// Token mode's targets file (TOML): tokens, VM addresses and passwords.
    #[arg(long, value_name = "FILE", conflicts_with = "db")]
    targets: Option<PathBuf>,
    /// Token mode from the fleet database instead of --targets: tokens,
    /// targets, audit events and the session index shared by many nodes
    /// (`postgres://user@host/db`). Needs --token-key and --password-key.
    #[arg(long, env = "SPICETAP_DB", value_name = "URL")]
    db: Option<String>,
    /// With --db: key file of token hashes (HMAC-SHA-256).
    #[arg(long, env = "SPICETAP_TOKEN_KEY", value_name = "FILE", requires = "db")]
    token_key: Option<PathBuf>,
    /// With --db: key file of VM passwords (AES-256-GCM).
    #[arg(long, env = "SPICETAP_PASSWORD_KEY", value_name = "FILE", requires = "db")]
    password_key: Option<PathBuf>,
    /// With --db: this node's name in the audit log and the session index
    /// (default: the host name).
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
    /// Read options from this TOML file first: each key is a long option
    /// (`listen = ["0.0.0.0:5900"]`, `capture = "/var/lib/spicetap"`,
    /// `no_video = true`); options on the command line come after it, so a
    /// single-valued one there wins and list options add up.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Append audit events (JSON lines) to FILE: connections, logins,
    /// denials, sessions. Never tokens or passwords.
    #[arg(long, value_name = "FILE")]
    audit_log: Option<PathBuf>,
    /// Remove the display caps of every video codec not listed (mjpeg, vp8,
    /// h264, vp9, h265) from clients' link messages, so servers stream only
    /// codecs the recording can decode. The one case where spicetap changes
    /// bytes in passthrough mode (recorded in session.json).
    #[arg(long, value_name = "CODECS", value_delimiter = ',')]
    stream_codecs: Vec<String>,
    /// With --capture: most video frames per second in display-N.mp4.
    #[arg(long, default_value_t = 30, value_name = "FPS")]
    video_fps: u32,
    /// With --capture: longest time between two keyframes of the video, in
    /// seconds (seeking granularity, and what a crash can lose).
    #[arg(long, default_value_t = 2.0, value_name = "SECONDS")]
    keyframe_interval: f64,
    /// With --capture: do not record video (pcaps and session.json only).
    #[arg(long)]
    no_video: bool,
    /// Serve Prometheus metrics and a read-only JSON API of the live and
    /// recorded sessions on this address (loopback or a private address;
    /// off by default).
    #[arg(long, value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,
    /// With --http: every request needs `Authorization: Bearer <token>`,
    /// the token being this file's first line.
    #[arg(long, value_name = "FILE", requires = "http")]
    http_token: Option<PathBuf>,
    /// With --capture: leave the mouse pointer out of the video (by
    /// default it is drawn over each frame, as spice-gtk shows it).
    #[arg(long)]
    no_video_cursor: bool,
    /// Most MiB of traffic waiting for a session's capture writer; past it
    /// that capture stops (recorded in session.json) and forwarding goes on.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    capture_queue_mib: usize,
    /// CI harness: after this many sessions (with a session id) have
    /// ended, stop listening, finish every recording and exit.
    #[arg(long, value_name = "N")]
    exit_after_sessions: Option<usize>,
    /// When spicetap exits, write a JSON verdict of every session it
    /// recorded (needs --capture).
    #[arg(long, value_name = "FILE", requires = "capture")]
    result: Option<PathBuf>,
    /// When spicetap exits, write the verdict as JUnit XML: a test suite
    /// per session, a test case for it and for each channel (needs
    /// --capture).
    #[arg(long, value_name = "FILE", requires = "capture")]
    result_junit: Option<PathBuf>,
    /// Exit with status 3 if any recording is incomplete (link error,
    /// capture loss, renderer stopped, unsupported draw, decoder stopped,
    /// unfinished session). Needs --capture.
    #[arg(long, requires = "capture")]
    strict: bool,
    /// With --capture: write webdav request paths to session.json as
    /// `sha256:<16 hex digits>` hashes (paths may name private files).
    #[arg(long)]
    redact_paths: bool,
    /// Attach this raw image (a multiple of 512 bytes) to every session's
    /// guest as a USB disk, on a usbredir channel spicetap links itself
    /// (the session's highest-numbered one, withheld from the client).
    #[arg(long, value_name = "FILE")]
    usb_disk: Option<PathBuf>,
    /// With --usb-disk: attach it read-only (the file is never opened for
    /// writing).
    #[arg(long, requires = "usb_disk")]
    usb_disk_ro: bool,
    /// Share this folder with every session's guest over the webdav
    /// channel, which spicetap links itself (withheld from the client).
    /// Nothing outside the folder is reachable (symlinks leading out are
    /// refused).
    #[arg(long, value_name = "DIR")]
    share_dir: Option<PathBuf>,
    /// With --share-dir: allow only GET, HEAD, OPTIONS and PROPFIND.
    #[arg(long, requires = "share_dir")]
    share_dir_ro: bool,
    /// The server's SPICE password, for the channels spicetap links itself
    /// (--usb-disk, --share-dir) in passthrough mode (token mode uses each target's).
    /// Never logged.
    #[arg(long, value_name = "FILE")]
    upstream_password_file: Option<PathBuf>,
}

fn parse_channels(list: &str) -> Result<Vec<ChannelType>> {
    list.split(',').filter(|c| !c.is_empty()).map(parse_channel).collect()
}

fn parse_channel(name: &str) -> Result<ChannelType> {
    if let Ok(n) = name.parse::<u8>() {
        return Ok(ChannelType(n));
    }
    (1..=11).map(ChannelType).find(|c| c.name() == name).with_context(|| format!("unknown channel type {name:?}"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let argv = match with_config_file(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("spicetap: {e:#}");
            std::process::exit(2);
        }
    };
    let cli = Cli::parse_from(argv);
    match cli.command {
        Command::Proxy(args) => proxy(*args).await,
        Command::Vv(args) => vv(args),
        Command::Inspect(mut args) => {
            let joined = JoinedFolders::new(&args.sessions)?;
            args.session = joined.path().to_path_buf();
            inspect(&args)
        }
        Command::Diff(args) => match diff(&args) {
            Ok(equal) => std::process::exit(if equal { 0 } else { 1 }),
            Err(e) => {
                eprintln!("spicetap diff: {e:#}");
                std::process::exit(2)
            }
        },
        Command::Render(mut args) => {
            let joined = JoinedFolders::new(&args.sessions)?;
            args.session = joined.path().to_path_buf();
            render(args)
        }
        Command::Db(c) => db_command(c).await,
        Command::Target(c) => target_command(c).await,
        Command::Token(c) => token_command(c).await,
        Command::Sessions(args) => sessions_command(args).await,
        Command::Man { out } => man_pages(&out),
    }
}

/// `spicetap proxy --config FILE ...`: the file's options are put before
/// the command line's, as long options (`key = value` is `--key value`,
/// `key = true` is `--key`, a list repeats the option).
fn with_config_file(args: Vec<std::ffi::OsString>) -> Result<Vec<std::ffi::OsString>> {
    if args.get(1).is_none_or(|a| a != "proxy") {
        return Ok(args);
    }
    let mut rest = Vec::new();
    let mut file = None;
    let mut it = args.iter().skip(2);
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--config") => file = Some(PathBuf::from(it.next().context("--config needs a FILE")?)),
            Some(x) if x.starts_with("--config=") => file = Some(PathBuf::from(&x["--config=".len()..])),
            _ => rest.push(a.clone()),
        }
    }
    let Some(file) = file else { return Ok(args) };
    let text = std::fs::read_to_string(&file).with_context(|| format!("--config {}", file.display()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!("--config {}: {}", file.display(), spicetap::auth::targets::redact(e.message()))
    })?;
    let mut out: Vec<std::ffi::OsString> = vec![args[0].clone(), "proxy".into()];
    for (key, value) in &table {
        let flag = format!("--{}", key.replace('_', "-"));
        let scalar = |v: &toml::Value| -> Result<String> {
            Ok(match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => bail!("--config {}: {key}: unsupported value {}", file.display(), other.type_str()),
            })
        };
        match value {
            toml::Value::Boolean(true) => out.push(flag.into()),
            toml::Value::Boolean(false) => {}
            toml::Value::Array(items) => {
                for item in items {
                    out.push(flag.clone().into());
                    out.push(scalar(item)?.into());
                }
            }
            v => {
                out.push(flag.into());
                out.push(scalar(v)?.into());
            }
        }
    }
    out.extend(rest);
    Ok(out)
}

/// Tells systemd the service is ready (`Type=notify`): `READY=1` to the
/// datagram socket named by `$NOTIFY_SOCKET` (sd_notify(3)); nothing
/// without it.
fn notify_systemd(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() else { return };
    let sent = match path.to_str().and_then(|p| p.strip_prefix('@')) {
        Some(abstract_name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
                .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
        }
        None => socket.send_to(state.as_bytes(), &path),
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// Several session folders of one session (its parts recorded on several
/// fleet nodes) seen as one: a temporary folder of symbolic links to every
/// pcap and the first `session.json`, removed on drop. One folder (or a
/// file) is used as it is.
struct JoinedFolders {
    path: PathBuf,
    temporary: bool,
}

impl JoinedFolders {
    fn new(folders: &[PathBuf]) -> Result<Self> {
        if let [one] = folders {
            return Ok(Self { path: one.clone(), temporary: false });
        }
        let path =
            std::env::temp_dir().join(format!("spicetap-joined-{}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        let me = Self { path, temporary: true };
        for folder in folders {
            let entries = std::fs::read_dir(folder).with_context(|| format!("reading {}", folder.display()))?;
            for e in entries {
                let e = e?;
                let name = e.file_name();
                let is_pcap = name.to_string_lossy().ends_with(".pcap");
                if !(is_pcap || name == "session.json") {
                    continue;
                }
                let link = me.path.join(&name);
                if link.symlink_metadata().is_ok() {
                    if is_pcap {
                        tracing::warn!(pcap = %e.path().display(), "a channel of this name is in an earlier folder; left out");
                    }
                    continue;
                }
                let target = std::path::absolute(e.path())?;
                std::os::unix::fs::symlink(&target, &link).with_context(|| format!("linking {}", link.display()))?;
            }
        }
        Ok(me)
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for JoinedFolders {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// This machine's host name (the default node name).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "node".into())
}

/// Who runs an admin command, for the audit log.
fn operator(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "unknown".into())
}

async fn db_command(c: DbCommand) -> Result<()> {
    match c {
        DbCommand::Migrate(db) => {
            let mut client = fleet::connect(&db.db).await.context("connecting to the fleet database")?;
            let applied = fleet::migrate::migrate(&mut client).await?;
            let version = fleet::migrate::version(&client).await?;
            println!("schema version {}; applied now: {applied:?}", version.unwrap_or(0));
        }
        DbCommand::Keygen { token_key, password_key } => {
            fleet::secrets::Key::generate(&token_key)?;
            fleet::secrets::Key::generate(&password_key)?;
            println!(
                "wrote {} and {} (mode 0600): give both to every node",
                token_key.display(),
                password_key.display()
            );
        }
    }
    Ok(())
}

async fn target_command(c: TargetCommand) -> Result<()> {
    match c {
        TargetCommand::Add(a) => {
            let keys = a.db.keys()?;
            let text = if a.password_file == Path::new("-") {
                std::io::read_to_string(std::io::stdin()).context("reading the password from standard input")?
            } else {
                std::fs::read_to_string(&a.password_file)
                    .with_context(|| format!("--password-file {}", a.password_file.display()))?
            };
            let password = text.lines().next().unwrap_or("").as_bytes().to_vec();
            if password.len() > 60 {
                bail!("the VM password is longer than 60 bytes (SPICE_MAX_PASSWORD_LENGTH)");
            }
            if a.upstream.is_none() && a.upstream_tls.is_none() {
                bail!("give --upstream HOST:PORT and/or --upstream-tls HOST:PORT");
            }
            spicetap::auth::targets::parse_tls_channels(&a.upstream_tls_channels).map_err(anyhow::Error::msg)?;
            let ca_pem = match &a.ca {
                Some(p) => {
                    let pem = std::fs::read_to_string(p).with_context(|| format!("--ca {}", p.display()))?;
                    spicetap::tls::root_store_pem(&pem, &p.display().to_string())?;
                    Some(pem)
                }
                None => None,
            };
            let t = fleet::store::NewTarget {
                name: a.name.clone(),
                upstream: a.upstream,
                upstream_tls: a.upstream_tls,
                ca_pem,
                host_subject: a.host_subject,
                upstream_tls_channels: a.upstream_tls_channels,
                password,
            };
            let client = fleet::connect(&a.db.db).await.context("connecting to the fleet database")?;
            fleet::store::add_target(&client, &keys, &t).await?;
            println!("target {} stored", a.name);
        }
        TargetCommand::List { db, json } => {
            let client = fleet::connect(&db.db).await.context("connecting to the fleet database")?;
            let rows = fleet::store::list_targets(&client).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{:<20} {:<24} {:<24} {:>6}", "NAME", "UPSTREAM", "UPSTREAM_TLS", "TOKENS");
                for r in rows {
                    let addr = |a: Option<String>| a.unwrap_or_else(|| "-".into());
                    println!(
                        "{:<20} {:<24} {:<24} {:>6}",
                        r.name,
                        addr(r.upstream),
                        addr(r.upstream_tls),
                        r.live_tokens
                    );
                }
            }
        }
        TargetCommand::Remove { db, name } => {
            let mut client = fleet::connect(&db.db).await.context("connecting to the fleet database")?;
            if !fleet::store::remove_target(&mut client, &name, &operator(None)).await? {
                bail!("no target named {name:?}");
            }
            println!("target {name} removed; its tokens are revoked");
        }
    }
    Ok(())
}

/// `90s`, `30m`, `1h`, `7d` as a duration.
fn parse_ttl(text: &str) -> Result<time::Duration> {
    let (n, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: i64 = n.parse().with_context(|| format!("--ttl {text:?}: a number and s, m, h or d"))?;
    let seconds = match unit {
        "s" => n,
        "m" | "" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => bail!("--ttl {text:?}: a number and s, m, h or d"),
    };
    if seconds <= 0 {
        bail!("--ttl must be positive");
    }
    Ok(time::Duration::seconds(seconds))
}

async fn token_command(c: TokenCommand) -> Result<()> {
    match c {
        TokenCommand::Issue(a) => {
            let keys = a.db.keys()?;
            let ttl = parse_ttl(&a.ttl)?;
            let mut client = fleet::connect(&a.db.db).await.context("connecting to the fleet database")?;
            let token = fleet::secrets::new_token();
            let expires = time::OffsetDateTime::now_utc() + ttl;
            let id = fleet::store::issue_token(&mut client, &keys, &token, &a.target, expires, &operator(a.by)).await?;
            if a.vv {
                print!("{}", vv_text(&a.target, &token, &a.client)?);
            } else {
                println!("{token}");
            }
            eprintln!("token {id} for target {} expires {}", a.target, spicetap::report::rfc3339(expires));
        }
        TokenCommand::Revoke { db, token, target, by } => {
            let keys = db.keys()?;
            let mut client = fleet::connect(&db.db).await.context("connecting to the fleet database")?;
            let what = match (&token, &target) {
                (Some(t), _) => fleet::store::Revoke::Token(t),
                (None, Some(name)) => fleet::store::Revoke::Target(name),
                (None, None) => bail!("give a token or --target NAME"),
            };
            let ids = fleet::store::revoke(&mut client, &keys, what, &operator(by)).await?;
            if ids.is_empty() {
                bail!("nothing to revoke (unknown or already revoked)");
            }
            println!("revoked token(s) {ids:?}; their channels close on every node");
        }
    }
    Ok(())
}

async fn sessions_command(a: SessionsArgs) -> Result<()> {
    let client = fleet::connect(&a.db.db).await.context("connecting to the fleet database")?;
    let rows = fleet::store::sessions(&client, a.live, a.limit).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<12} {:<12} {:<10} {:<22} {:<25} {:<25} {:>3}  FOLDER",
        "TARGET", "SESSION", "NODE", "CLIENT", "STARTED", "ENDED", "CH"
    );
    for r in rows {
        println!(
            "{:<12} {:<12} {:<10} {:<22} {:<25} {:<25} {:>3}  {}",
            r.target.unwrap_or_default(),
            r.session_id.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
            r.node,
            r.client.unwrap_or_default(),
            r.started,
            r.ended.unwrap_or_else(|| "live".into()),
            r.channels,
            r.folder.unwrap_or_else(|| "-".into())
        );
    }
    Ok(())
}

/// `spicetap man`: spicetap.1 and spicetap-<command>.1 from the clap model.
fn man_pages(out: &Path) -> Result<()> {
    use clap::CommandFactory;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let cmd = Cli::command();
    let write = |name: String, cmd: clap::Command| -> Result<()> {
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd).title(name.to_uppercase()).render(&mut buf)?;
        let path = out.join(format!("{name}.1"));
        std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))
    };
    for sub in cmd.get_subcommands() {
        write(format!("spicetap-{}", sub.get_name()), sub.clone().name(format!("spicetap-{}", sub.get_name())))?;
    }
    write("spicetap".into(), cmd)?;
    println!("man pages written to {}", out.display());
    Ok(())
}

async fn proxy(args: ProxyArgs) -> Result<()> {
    let debug_channels = args.debug_channels.iter().map(|c| parse_channel(c)).collect::<Result<Vec<_>>>()?;
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if !debug_channels.is_empty() {
        filter = filter.add_directive("spicetap::messages=debug".parse()?);
    }
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    // Installed before the listeners exist, so that a SIGTERM sent as soon
    // as the ready file or READY=1 appears stops spicetap cleanly.
    let signals = StopSignals::install();
    let token_mode = args.auth == "tokens";
    if !token_mode && args.upstream.is_none() && args.upstream_tls.is_none() {
        bail!("give --upstream HOST:PORT and/or --upstream-tls HOST:PORT");
    }
    if token_mode && args.targets.is_none() && args.db.is_none() {
        bail!("--auth tokens needs --targets FILE or --db URL");
    }
    if args.max_connections == 0 {
        bail!("--max-connections must be at least 1");
    }

    let mut listen = args.listen;
    if listen.is_empty() && args.tls_listen.is_empty() {
        listen.push(SocketAddr::from(([127, 0, 0, 1], 5900)));
    }

    let tls_server = if args.tls_listen.is_empty() {
        None
    } else {
        let identity = match (&args.cert, &args.key) {
            (Some(cert), Some(key)) => Identity::from_pem_files(cert, key)?,
            _ => {
                let ips: Vec<_> = args.tls_listen.iter().chain(&listen).map(SocketAddr::ip).collect();
                Identity::generated_in(&args.cert_dir, &args.cert_hostname, &ips)?
            }
        };
        let subject = identity.chain.first().and_then(|c| subject_text(c)).unwrap_or_default();
        match &identity.ca_path {
            Some(ca) => {
                tracing::info!(ca = %ca.display(), %subject, "TLS clients trust this CA (--spice-ca-file); host subject for --spice-host-subject")
            }
            None => tracing::info!(%subject, "TLS certificate subject (for --spice-host-subject)"),
        }
        Some(server_config(identity).context("TLS certificate and key")?)
    };

    let require_client_tls = match args.require_client_tls.as_deref() {
        None => RequireTls::None,
        Some("all") => RequireTls::All,
        Some(list) => RequireTls::List(parse_channels(list)?),
    };
    if require_client_tls != RequireTls::None && args.tls_listen.is_empty() {
        bail!("--require-client-tls sends clients to a TLS port: give --tls-listen too");
    }

    let tls_channels = match args.upstream_tls_channels.as_str() {
        "auto" => TlsChannels::Auto,
        "all" => TlsChannels::All,
        "none" => TlsChannels::None,
        list => TlsChannels::List(parse_channels(list)?),
    };
    let tls_upstream = match &args.upstream_tls {
        None => None,
        Some(address) => {
            let verify = if args.upstream_insecure {
                tracing::warn!("--upstream-insecure: the server's certificate is NOT checked; for tests only");
                UpstreamVerify::Insecure
            } else if let Some(s) = &args.upstream_host_subject {
                UpstreamVerify::Subject(HostSubject::parse(s)?)
            } else {
                UpstreamVerify::Hostname
            };
            Some((address.clone(), client_config(args.upstream_ca.as_deref(), verify)?))
        }
    };
    let upstream = if token_mode && args.upstream.is_none() && args.upstream_tls.is_none() {
        Upstream::per_target("per target (token mode)")
    } else {
        Upstream::new(args.upstream.clone(), tls_upstream, tls_channels)?
    };
    let tokens = if token_mode {
        let mut audit = match &args.audit_log {
            Some(p) => Some(AuditLog::open(p).with_context(|| format!("opening audit log {}", p.display()))?),
            None => None,
        };
        let targets = match (&args.targets, &args.db) {
            (Some(path), _) => {
                let targets = Targets::load(path)?;
                tracing::info!(file = %path.display(), targets = targets.len(), "token mode");
                TargetSource::File(std::sync::Arc::new(targets))
            }
            (None, Some(url)) => {
                let keys = DbArgs {
                    db: url.clone(),
                    token_key: args.token_key.clone(),
                    password_key: args.password_key.clone(),
                }
                .keys()?;
                let node = args.node.clone().unwrap_or_else(host_name);
                let fleet = Fleet::start(url.clone(), node.clone(), keys);
                tracing::info!(%node, "token mode from the fleet database");
                if !fleet.connected(std::time::Duration::from_secs(5)).await {
                    tracing::warn!("fleet database not reachable yet; token logins are refused until it is");
                }
                audit = Some(audit.unwrap_or_default().with_sink(fleet.clone()));
                TargetSource::Fleet(fleet)
            }
            (None, None) => unreachable!("checked above"),
        };
        Some(std::sync::Arc::new(TokenAuth {
            targets,
            keys: std::sync::Arc::new(KeyPool::start(4)?),
            limiter: FailureLimiter::default(),
            audit,
        }))
    } else {
        None
    };

    // SPICE_DISPLAY_CAP_CODEC_* bits (spice-protocol protocol.h).
    let codec_caps = [("mjpeg", 9u32), ("vp8", 10), ("h264", 11), ("vp9", 13), ("h265", 14)];
    let mut display_caps_removed = 0u32;
    if !args.stream_codecs.is_empty() {
        for c in &args.stream_codecs {
            if !codec_caps.iter().any(|(n, _)| n == c) {
                bail!("--stream-codecs: unknown codec {c:?} (mjpeg, vp8, h264, vp9, h265)");
            }
        }
        for (name, bit) in codec_caps {
            if !args.stream_codecs.iter().any(|c| c == name) {
                display_caps_removed |= 1 << bit;
            }
        }
    }

    let video = if args.no_video || args.capture.is_none() {
        None
    } else {
        if !(args.keyframe_interval.is_finite() && args.keyframe_interval > 0.0) {
            bail!("--keyframe-interval must be a positive number of seconds");
        }
        let config = spicetap::video::VideoConfig {
            max_fps: args.video_fps,
            keyframe_interval: std::time::Duration::from_secs_f64(args.keyframe_interval),
            ..spicetap::video::VideoConfig::default()
        };
        // Checked by the recorder too; refuse bad values at start-up.
        spicetap::video::VideoRecorder::check_config(&config)?;
        Some(config)
    };

    // The server's password, for the channels spicetap links itself.
    let password = match (&args.upstream_password_file, args.usb_disk.is_some() || args.share_dir.is_some()) {
        (Some(file), true) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                if std::fs::metadata(file).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
                    tracing::warn!(file = %file.display(), "the password file may be read by others (chmod 600)");
                }
            }
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("--upstream-password-file {}", file.display()))?;
            Some(text.trim_end_matches(['\r', '\n']).as_bytes().to_vec())
        }
        _ => None,
    };
    let usb_disk = match &args.usb_disk {
        None => None,
        Some(path) => {
            let config = spicetap::inject::usb_channel::UsbDiskConfig {
                path: path.clone(),
                read_only: args.usb_disk_ro,
                password: password.clone(),
            };
            let size = config.check().map_err(anyhow::Error::msg)?;
            tracing::info!(file = %path.display(), bytes = size, read_only = args.usb_disk_ro, "USB disk attached to every session");
            Some(std::sync::Arc::new(config))
        }
    };
    let share_dir = match &args.share_dir {
        None => None,
        Some(dir) => {
            let config = spicetap::inject::share::ShareConfig {
                dir: dir.clone(),
                read_only: args.share_dir_ro,
                password: password.clone(),
            };
            config.check().map_err(anyhow::Error::msg)?;
            tracing::info!(dir = %dir.display(), read_only = args.share_dir_ro, "folder shared with every session");
            Some(std::sync::Arc::new(config))
        }
    };

    let config = ProxyConfig {
        listen,
        tls_listen: args.tls_listen,
        tls_server,
        upstream: std::sync::Arc::new(upstream),
        upstream_insecure: args.upstream_insecure,
        require_client_tls,
        tokens,
        display_caps_removed,
        video,
        capture_dir: args.capture,
        ready_file: args.ready_file,
        debug_channels,
        max_connections: args.max_connections,
        capture_queue_bytes: args.capture_queue_mib.saturating_mul(1024 * 1024),
        redact_paths: args.redact_paths,
        list_folders: args.result.is_some() || args.result_junit.is_some() || args.strict,
        video_cursor: !args.no_video_cursor,
        usb_disk,
        share_dir,
    };
    let proxy = Proxy::bind(config).await.context("starting the proxy")?;
    notify_systemd("READY=1");
    let sessions = proxy.sessions();
    let (http_stop, http_stopped) = tokio::sync::watch::channel(false);
    if let Some(addr) = args.http {
        let token = match &args.http_token {
            Some(file) => {
                let text = std::fs::read_to_string(file).with_context(|| format!("--http-token {}", file.display()))?;
                let token = text.lines().next().unwrap_or("").trim().to_string();
                if token.is_empty() {
                    bail!("--http-token {}: the file holds no token", file.display());
                }
                Some(token.into_bytes())
            }
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("--http {addr}"))?;
        let bound = listener.local_addr()?;
        tracing::info!(addr = %bound, token = token.is_some(), "HTTP surface listening");
        let state = std::sync::Arc::new(spicetap::http::HttpState {
            sessions: sessions.clone(),
            metrics: proxy.metrics(),
            token,
        });
        tokio::spawn(spicetap::http::serve(listener, state, http_stopped));
    }
    let mut ended = sessions.ended_sessions();
    let exit_after = args.exit_after_sessions;
    let stop = async move {
        match exit_after {
            None => signals.recv().await,
            Some(n) => tokio::select! {
                _ = signals.recv() => {}
                _ = ended.wait_for(|&e| e >= n) => tracing::info!(sessions = n, "--exit-after-sessions reached"),
            },
        }
    };
    proxy.run(stop).await.context("running the proxy")?;
    let _ = http_stop.send(true);

    if args.result.is_none() && args.result_junit.is_none() && !args.strict {
        return Ok(());
    }
    let verdict = spicetap::verdict::Verdict::from_folders(&sessions.folders());
    if let Some(path) = &args.result {
        verdict.write_json(path).context("--result")?;
    }
    if let Some(path) = &args.result_junit {
        verdict.write_junit(path).context("--result-junit")?;
    }
    if args.strict && !verdict.complete {
        let incomplete = verdict.sessions.iter().filter(|s| !s.complete).count();
        tracing::error!(incomplete, "--strict: some recordings are incomplete");
        std::process::exit(3);
    }
    Ok(())
}

/// `spicetap diff`: prints the report; returns whether the two are equal.
fn diff(args: &DiffArgs) -> Result<bool> {
    use spicetap::diff;
    let channel_type = args.channel_type.as_deref().map(parse_channel).transpose()?;
    let mut masks: Vec<String> =
        diff::DEFAULT_MASKS.iter().map(|m| m.to_string()).filter(|m| !args.no_mask.contains(m)).collect();
    masks.extend(args.mask.iter().cloned());
    let options = diff::DiffOptions { channel_type, masks, render: args.render };
    let report = diff::diff(&args.a, &args.b, &options)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", diff::format_report(&report));
    }
    if let Some(path) = &args.junit {
        diff::write_junit(&report, path).with_context(|| format!("--junit {}", path.display()))?;
    }
    Ok(report.equal)
}

/// `spicetap inspect`: the timeline, or the summary.
fn inspect(args: &InspectArgs) -> Result<()> {
    use spicetap::inspect;
    use std::io::Write as _;
    if args.summary {
        let s = inspect::summary(&args.session)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&s)?);
        } else {
            print!("{}", inspect::format_summary(&s));
        }
        return Ok(());
    }
    let filter = inspect::Filter { channels: args.channel.clone(), messages: args.message.clone(), keys: args.keys };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    inspect::for_each_line(&args.session, &filter, |l| {
        let text = if args.json { serde_json::to_string(&l).unwrap_or_default() } else { inspect::format_line(&l) };
        // A closed pipe (| head) ends the listing.
        writeln!(out, "{text}").is_ok()
    })?;
    let _ = out.flush();
    Ok(())
}

/// `spicetap render --png-every-mark DIR` / `--at T1,T2,...`: one replay,
/// a PNG at every MARK and at each time.
fn render_snapshots(args: &RenderArgs, pcap: &std::path::Path, channel_type: Option<ChannelType>) -> Result<()> {
    use spicetap::render::offline::{self, Snapshot};
    let first = &args.sessions[0];
    let default_dir = if first.is_dir() { first.clone() } else { PathBuf::from(".") };
    let time_dir = args.png_dir.clone().unwrap_or(default_dir);
    let times: Vec<std::time::Duration> = if args.at.len() > 1 {
        std::fs::create_dir_all(&time_dir).with_context(|| format!("--png-dir {}", time_dir.display()))?;
        args.at.iter().map(|&t| std::time::Duration::from_secs_f64(t)).collect()
    } else {
        Vec::new()
    };
    if let Some(dir) = &args.png_every_mark {
        std::fs::create_dir_all(dir).with_context(|| format!("--png-every-mark {}", dir.display()))?;
    }
    let mut written = 0usize;
    let stats = offline::render_pcap_snapshots(
        pcap,
        channel_type,
        args.cursor,
        args.png_every_mark.is_some(),
        &times,
        |snap, surface| {
            let path = match (snap, &args.png_every_mark) {
                (Snapshot::Mark { n, at }, Some(dir)) => dir.join(format!("mark-{n:04}-{:.3}s.png", at.as_secs_f64())),
                (Snapshot::Time(t), _) => time_dir.join(format!("at-{:.3}s.png", t.as_secs_f64())),
                (Snapshot::Mark { .. }, None) => return Ok(()),
            };
            written += 1;
            offline::write_png(surface, &path)
        },
    )?;
    eprintln!("{written} PNGs from {} ({} messages, {} marks)", pcap.display(), stats.messages, stats.marks);
    Ok(())
}

/// `spicetap render`: PNG of the primary surface of a recording.
fn render(args: RenderArgs) -> Result<()> {
    use spicetap::render::offline;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let pcap = offline::display_pcap(&args.session, args.display)?;
    let channel_type = args.channel_type.as_deref().map(parse_channel).transpose()?;
    for t in &args.at {
        if !t.is_finite() || *t < 0.0 {
            bail!("--at {t}: not a number of seconds");
        }
    }
    if args.png_every_mark.is_some() || args.at.len() > 1 {
        return render_snapshots(&args, &pcap, channel_type);
    }
    let until = match (args.at.first().copied(), args.mark) {
        (Some(s), _) if s.is_finite() && s >= 0.0 => offline::Until::Time(std::time::Duration::from_secs_f64(s)),
        (Some(s), _) => bail!("--at {s}: not a number of seconds"),
        (None, Some(n)) => offline::Until::Mark(n),
        (None, None) => offline::Until::End,
    };
    let (surface, stats) = match &args.mp4 {
        None => offline::render_pcap(&pcap, channel_type, until, args.cursor)?,
        Some(mp4) => {
            let config = spicetap::video::VideoConfig { max_fps: args.video_fps, ..Default::default() };
            spicetap::video::VideoRecorder::check_config(&config)?;
            let (surface, stats, report) =
                offline::render_pcap_mp4(&pcap, channel_type, until, args.cursor, mp4, config)?;
            if let Some(f) = &report.file {
                let sizes: Vec<String> = f
                    .sizes
                    .iter()
                    .map(|s| format!("{}x{} from {:.3} s", s.width, s.height, s.at.as_secs_f64()))
                    .collect();
                eprintln!(
                    "{}: {}, {} samples, {:.3} s",
                    f.path.display(),
                    sizes.join(", "),
                    f.samples,
                    report.duration.as_secs_f64()
                );
            }
            (surface, stats)
        }
    };
    let png = args.png.unwrap_or_else(|| {
        let first = &args.sessions[0];
        let dir = if first.is_dir() { first.clone() } else { PathBuf::from(".") };
        dir.join(format!("display-{}.png", args.display))
    });
    offline::write_png(&surface, &png)?;
    eprintln!(
        "{}: {}x{} from {} ({} messages, {} draws, {} marks)",
        png.display(),
        surface.width,
        surface.height,
        pcap.display(),
        stats.messages,
        stats.draws,
        stats.marks
    );
    let images: Vec<String> = stats.images.iter().map(|(t, n)| format!("{t} x{n}")).collect();
    if !images.is_empty() {
        eprintln!("images: {}", images.join(", "));
    }
    for (what, n) in &stats.unsupported {
        eprintln!("warning: not rendered: {what} x{n}");
    }
    for e in &stats.error_samples {
        eprintln!("warning: {e}");
    }
    if stats.errors > 0 || !stats.unsupported.is_empty() {
        bail!("the rendering is incomplete: {} errors, {} unsupported kinds", stats.errors, stats.unsupported.len());
    }
    Ok(())
}

/// `spicetap vv`: a virt-viewer connection file on stdout.
fn vv(args: VvArgs) -> Result<()> {
    let targets = Targets::load(&args.targets)?;
    let now = time::OffsetDateTime::now_utc();
    let target = match targets.lookup(args.token.as_bytes(), now) {
        Lookup::Found(t) => t,
        Lookup::Expired(t) => bail!("the token of target {:?} has expired", t.name),
        Lookup::Unknown => bail!("no target in {} has this token", args.targets.display()),
    };
    print!("{}", vv_text(&target.name, &String::from_utf8_lossy(target.token()), &args.client)?);
    Ok(())
}

/// A virt-viewer connection file leading to spicetap with `token`.
fn vv_text(title: &str, token: &str, args: &VvClientArgs) -> Result<String> {
    let mut out = String::from("[virt-viewer]\ntype=spice\n");
    out.push_str(&format!("title={title}\n"));
    out.push_str(&format!("host={}\n", args.proxy_host));
    let port = args.port.or(if args.tls_port.is_none() { Some(5900) } else { None });
    if let Some(p) = port {
        out.push_str(&format!("port={p}\n"));
    }
    if let Some(p) = args.tls_port {
        out.push_str(&format!("tls-port={p}\n"));
        let ca = args.ca.clone().or_else(|| Some(PathBuf::from("certs/ca-cert.pem")).filter(|p| p.exists()));
        if let Some(ca) = ca {
            let pem = std::fs::read_to_string(&ca).with_context(|| format!("reading {}", ca.display()))?;
            out.push_str(&format!("ca={}\n", pem.trim_end().replace('\n', "\\n")));
        }
        if let Some(s) = &args.host_subject {
            out.push_str(&format!("host-subject={s}\n"));
        }
        if port.is_none() {
            out.push_str("secure-channels=all\n");
        }
    }
    out.push_str(&format!("password={token}\n"));
    Ok(out)
}

/// SIGINT and SIGTERM handlers; a signal that arrives between `install`
/// and `recv` is kept, not lost.
struct StopSignals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl StopSignals {
    fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(term), Ok(int)) => Self(Some((term, int))),
            _ => {
                tracing::error!("cannot install signal handlers; stop with SIGKILL");
                Self(None)
            }
        }
    }

    /// Completes on SIGINT or SIGTERM (never, when the handlers are missing).
    async fn recv(self) {
        let Some((mut term, mut int)) = self.0 else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<std::ffi::OsString> {
        args.iter().map(Into::into).collect()
    }

    #[test]
    fn a_config_file_comes_before_the_command_line() {
        let dir = std::env::temp_dir().join(format!("spicetap-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "listen = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\nupstream = \"h:5900\"\nno_video = true\nredact_paths = false\nmax_connections = 9\n",
        )
        .unwrap();
        let out =
            with_config_file(argv(&["spicetap", "proxy", "--upstream", "cli:1", "--config", file.to_str().unwrap()]))
                .unwrap();
        let out: Vec<String> = out.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            out,
            [
                "spicetap",
                "proxy",
                "--listen",
                "127.0.0.1:1",
                "--listen",
                "127.0.0.1:2",
                "--max-connections",
                "9",
                "--no-video",
                "--upstream",
                "h:5900",
                "--upstream",
                "cli:1"
            ]
        );
        // The command line's single-valued options win.
        let cli = Cli::try_parse_from(
            with_config_file(argv(&["spicetap", "proxy", "--config", file.to_str().unwrap(), "--upstream", "cli:1"]))
                .unwrap(),
        )
        .unwrap();
        let Command::Proxy(p) = cli.command else { panic!("proxy") };
        assert_eq!(p.upstream.as_deref(), Some("cli:1"));
        assert_eq!(p.listen.len(), 2);
        assert!(p.no_video && !p.redact_paths);
        // Errors name the file; other commands pass through.
        std::fs::write(&file, "listen = { a = 1 }\n").unwrap();
        assert!(with_config_file(argv(&["spicetap", "proxy", "--config", file.to_str().unwrap()])).is_err());
        assert!(with_config_file(argv(&["spicetap", "proxy", "--config", "/nonexistent.toml"])).is_err());
        assert_eq!(with_config_file(argv(&["spicetap", "render", "x"])).unwrap(), argv(&["spicetap", "render", "x"]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn token_lifetimes_parse() {
        assert_eq!(parse_ttl("90s").unwrap(), time::Duration::seconds(90));
        assert_eq!(parse_ttl("30m").unwrap(), time::Duration::minutes(30));
        assert_eq!(parse_ttl("1h").unwrap(), time::Duration::hours(1));
        assert_eq!(parse_ttl("7d").unwrap(), time::Duration::days(7));
        for bad in ["", "h", "0h", "1w", "-1h", "1.5h"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
