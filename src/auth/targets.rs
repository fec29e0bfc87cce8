//! The targets file of token mode: which token reaches which VM.
//!
//! ```toml
//! [[target]]
//! name = "vm1"                          # shown in logs, session.json, audit log
//! token = "8c1f...e2"                   # what the client types as its SPICE password
//! upstream = "10.1.2.3:5900"            # plain port, optional
//! upstream_tls = "10.1.2.3:5901"        # TLS port, optional
//! ca = "/etc/spicetap/vm-ca.pem"        # optional: CA for upstream_tls
//! host_subject = "C=XX,O=Example,CN=h1" # optional: spice-gtk subject check instead of the host name
//! password = "the VM's SPICE password"
//! expires = 2026-12-31T23:59:59Z        # optional
//! upstream_tls_channels = "auto"        # optional: auto | all | none | channel list
//!
//! # optional: the caps spicetap advertises to clients per channel type
//! # before it knows the VM (default: what spice-server 0.15 advertises)
//! [server_caps.display]
//! common = [11]
//! channel = [4178]
//! ```
//!
//! Tokens are compared in constant time; tokens and passwords never appear
//! in `Debug` output, logs or errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use subtle::ConstantTimeEq;
use thiserror::Error;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::link::Caps;
use crate::protocol::ChannelType;
use crate::proxy::upstream::{TlsChannels, Upstream};
use crate::tls::subject::HostSubject;
use crate::tls::{UpstreamVerify, client_config};

/// A targets file that cannot be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TargetsError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML of the expected shape (the parser's message never
    /// quotes token or password values: see [`redact`]).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A target is unusable.
    #[error("{path}: target {name:?}: {message}")]
    Target {
        /// The file.
        path: PathBuf,
        /// The target's name.
        name: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    #[serde(default, rename = "target")]
    targets: Vec<TargetShape>,
    #[serde(default)]
    server_caps: BTreeMap<String, CapsShape>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetShape {
    name: String,
    token: String,
    upstream: Option<String>,
    upstream_tls: Option<String>,
    ca: Option<PathBuf>,
    host_subject: Option<String>,
    password: String,
    expires: Option<toml::value::Datetime>,
    upstream_tls_channels: Option<String>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct CapsShape {
    #[serde(default)]
    common: Vec<u32>,
    #[serde(default)]
    channel: Vec<u32>,
}

/// One VM a token leads to.
pub struct Target {
    /// Name for logs, `session.json` and the audit log.
    pub name: String,
    token: Vec<u8>,
    password: Vec<u8>,
    /// When the token stops working, if ever.
    pub expires: Option<OffsetDateTime>,
    /// How to reach the VM.
    pub upstream: Arc<Upstream>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("name", &self.name).field("expires", &self.expires).finish_non_exhaustive()
    }
}

impl Target {
    /// The VM's SPICE password, to encrypt under the VM's key.
    pub fn password(&self) -> &[u8] {
        &self.password
    }

    /// The token (for `spicetap vv`, which prints it into a connection file).
    pub fn token(&self) -> &[u8] {
        &self.token
    }
}

/// What a token leads to.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// A valid token.
    Found(&'a Target),
    /// A token of no target.
    Unknown,
    /// The token of a target whose `expires` has passed.
    Expired(&'a Target),
}

/// The loaded targets file.
#[derive(Debug)]
pub struct Targets {
    targets: Vec<Target>,
    caps: BTreeMap<u8, Caps>,
}

/// Common caps spice-server 0.15 sets on every channel: auth selection,
/// SPICE ticket auth, mini header.
pub const SERVER_COMMON_CAPS: u32 = 0b1011;

/// Channel caps spice-server 0.15.1 (QEMU 7.2, Debian bookworm) answers,
/// read from its link replies (main, display, inputs, cursor, usbredir) and
/// from spice-server `sound.c` for playback and record.
pub fn default_caps(ct: ChannelType) -> Vec<u32> {
    match ct {
        // SEMI_SEAMLESS_MIGRATE, NAME_AND_UUID, AGENT_CONNECTED_TOKENS, SEAMLESS_MIGRATE
        ChannelType::MAIN => vec![0b1111],
        // MONITORS_CONFIG, STREAM_REPORT, PREF_COMPRESSION, PREF_VIDEO_CODEC_TYPE
        ChannelType::DISPLAY => vec![(1 << 1) | (1 << 4) | (1 << 6) | (1 << 12)],
        // KEY_SCANCODE
        ChannelType::INPUTS => vec![1],
        // VOLUME, LATENCY, OPUS
        ChannelType::PLAYBACK => vec![0b1110],
        // VOLUME, OPUS
        ChannelType::RECORD => vec![0b110],
        // DATA_COMPRESS_LZ4
        ChannelType::USBREDIR | ChannelType::PORT | ChannelType::WEBDAV | ChannelType::SMARTCARD => vec![1],
        _ => vec![],
    }
}

impl Targets {
    /// Reads and checks a targets file; warns when others may read it.
    ///
    /// # Errors
    /// [`TargetsError`] for an unreadable or malformed file or target.
    pub fn load(path: &Path) -> Result<Self, TargetsError> {
        let text = std::fs::read_to_string(path).map_err(|source| TargetsError::Io { path: path.into(), source })?;
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(file = %path.display(), "the targets file holds passwords and tokens but others may read it (chmod 600)");
            }
        }
        Self::parse(&text, path)
    }

    /// Parses a targets file's text (`path` only names it in errors).
    ///
    /// # Errors
    /// [`TargetsError`] for malformed TOML or an unusable target.
    pub fn parse(text: &str, path: &Path) -> Result<Self, TargetsError> {
        let shape: FileShape = toml::from_str(text)
            .map_err(|e| TargetsError::Parse { path: path.into(), message: redact(e.message()) })?;
        let mut targets = Vec::new();
        for t in shape.targets {
            let bad = |message: String| TargetsError::Target { path: path.into(), name: t.name.clone(), message };
            if t.token.is_empty() || t.token.len() > crate::auth::ticket::SPICE_MAX_PASSWORD_LENGTH {
                return Err(bad("token must be 1 to 60 bytes (a SPICE password)".into()));
            }
            if t.password.len() > crate::auth::ticket::SPICE_MAX_PASSWORD_LENGTH {
                return Err(bad("password longer than 60 bytes".into()));
            }
            let expires = match &t.expires {
                None => None,
                Some(d) => Some(
                    OffsetDateTime::parse(&d.to_string(), &Rfc3339)
                        .map_err(|_| bad(format!("expires {d} is not a full RFC 3339 date-time with offset")))?,
                ),
            };
            let channels = parse_tls_channels(t.upstream_tls_channels.as_deref().unwrap_or("auto")).map_err(bad)?;
            let tls = match &t.upstream_tls {
                None => None,
                Some(address) => {
                    let verify = match &t.host_subject {
                        Some(s) => UpstreamVerify::Subject(HostSubject::parse(s).map_err(|e| bad(e.to_string()))?),
                        None => UpstreamVerify::Hostname,
                    };
                    let config = client_config(t.ca.as_deref(), verify).map_err(|e| bad(e.to_string()))?;
                    Some((address.clone(), config))
                }
            };
            let upstream = Upstream::new(t.upstream.clone(), tls, channels).map_err(|e| bad(e.to_string()))?;
            targets.push(Target {
                name: t.name.clone(),
                token: t.token.into_bytes(),
                password: t.password.into_bytes(),
                expires,
                upstream: Arc::new(upstream),
            });
        }
        let mut caps = BTreeMap::new();
        for (name, c) in shape.server_caps {
            let ct = (1..=11).map(ChannelType).find(|ct| ct.name() == name.as_str()).ok_or_else(|| {
                TargetsError::Parse { path: path.into(), message: format!("server_caps: unknown channel {name:?}") }
            })?;
            caps.insert(ct.0, Caps { common: c.common, channel: c.channel });
        }
        Ok(Self { targets, caps })
    }

    /// Number of targets.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether there is no target.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Finds the target of `token`, comparing against every target's token
    /// in constant time (per length) so timing says nothing of which matched.
    pub fn lookup(&self, token: &[u8], now: OffsetDateTime) -> Lookup<'_> {
        let mut found = None;
        for t in &self.targets {
            let eq: bool = t.token.as_slice().ct_eq(token).into();
            if eq && found.is_none() {
                found = Some(t);
            }
        }
        match found {
            None => Lookup::Unknown,
            Some(t) if t.expires.is_some_and(|e| e <= now) => Lookup::Expired(t),
            Some(t) => Lookup::Found(t),
        }
    }

    /// The target named `name` (names are unique in a targets file).
    pub fn by_name(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name == name)
    }

    /// The caps spicetap advertises to clients for channel type `ct`.
    pub fn advertised_caps(&self, ct: ChannelType) -> Caps {
        self.caps
            .get(&ct.0)
            .cloned()
            .unwrap_or_else(|| Caps { common: vec![SERVER_COMMON_CAPS], channel: default_caps(ct) })
    }
}

/// Parses an `upstream_tls_channels` value: `auto`, `all`, `none` or a
/// comma-separated list of channel type names.
///
/// # Errors
/// The unknown channel name, as a message.
pub fn parse_tls_channels(value: &str) -> Result<TlsChannels, String> {
    Ok(match value {
        "auto" => TlsChannels::Auto,
        "all" => TlsChannels::All,
        "none" => TlsChannels::None,
        list => TlsChannels::List(
            list.split(',')
                .map(|c| {
                    (1..=11).map(ChannelType).find(|ct| ct.name() == c).ok_or_else(|| format!("unknown channel {c:?}"))
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// Removes quoted values from a TOML parser message, so a typo next to a
/// token or password never prints it.
pub fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut in_quote = false;
    for c in message.chars() {
        if c == '"' {
            in_quote = !in_quote;
            out.push_str(if in_quote { "\"…" } else { "\"" });
        } else if !in_quote {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[target]]
name = "vm1"
token = "tok-one"
upstream = "127.0.0.1:5900"
password = "pw1"

[[target]]
name = "old"
token = "tok-old"
upstream = "127.0.0.1:5901"
password = "pw2"
expires = 2020-01-01T00:00:00Z

[server_caps.display]
common = [11]
channel = [1]
"#;

    #[test]
    fn lookup_finds_expires_and_refuses() {
        let t = Targets::parse(FILE, Path::new("t.toml")).unwrap();
        let now = OffsetDateTime::now_utc();
        assert!(matches!(t.lookup(b"tok-one", now), Lookup::Found(x) if x.name == "vm1" && x.password() == b"pw1"));
        assert!(matches!(t.lookup(b"tok-old", now), Lookup::Expired(x) if x.name == "old"));
        assert!(matches!(t.lookup(b"tok-on", now), Lookup::Unknown));
        assert!(matches!(t.lookup(b"", now), Lookup::Unknown));
        assert_eq!(t.advertised_caps(ChannelType::DISPLAY).channel, [1]);
        assert_eq!(t.advertised_caps(ChannelType::INPUTS).channel, [1]);
        assert_eq!(t.advertised_caps(ChannelType::MAIN).common, [0b1011]);
    }

    #[test]
    fn secrets_stay_out_of_errors_and_debug() {
        let e =
            Targets::parse("[[target]]\nname = \"a\"\ntoken = \"SECRET-TOKEN\"\n", Path::new("t.toml")).unwrap_err();
        assert!(!e.to_string().contains("SECRET-TOKEN"), "{e}");
        let e = Targets::parse(
            "[[target]]\nname=\"a\"\ntoken=\"SECRET\"\npassword=\"PW\"\nbogus=\"SECRET\"\n",
            Path::new("x"),
        )
        .unwrap_err();
        assert!(!e.to_string().contains("SECRET"), "{e}");
        let t = Targets::parse(FILE, Path::new("t.toml")).unwrap();
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("tok-one") && !dbg.contains("pw1"), "{dbg}");
        assert_eq!(redact(r#"invalid value "abc" here"#), "invalid value \"…\" here");
    }

    #[test]
    fn unusable_targets_are_refused() {
        let no_upstream = "[[target]]\nname=\"a\"\ntoken=\"t\"\npassword=\"p\"\n";
        assert!(Targets::parse(no_upstream, Path::new("x")).is_err());
        let long = format!("[[target]]\nname=\"a\"\ntoken=\"{}\"\nupstream=\"h:1\"\npassword=\"p\"\n", "x".repeat(61));
        assert!(Targets::parse(&long, Path::new("x")).is_err());
    }
}
