//! The upstream leg: which SPICE server address, plain or TLS, per channel.
//!
//! QEMU listens on a plain `port` and/or a `tls-port`; with `tls-channel=`
//! it refuses some channels on the plain port with
//! `SPICE_LINK_ERR_NEED_SECURED` (spice-server `reds.c`). The policy
//! ([`TlsChannels`]) picks the first leg per channel type; under `auto` a
//! NEED_SECURED refusal makes the link stage reconnect over TLS before the
//! client sees any reply.

use std::io;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::io::BoxedStream;
use crate::limits::UPSTREAM_CONNECT_TIMEOUT;
use crate::protocol::ChannelType;
use crate::tls::TlsInfo;

/// Which channels use TLS to the server (`--upstream-tls-channels`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsChannels {
    /// Plain first (when a plain address is known); TLS after
    /// `SPICE_LINK_ERR_NEED_SECURED`.
    Auto,
    /// Every channel over TLS.
    All,
    /// No channel over TLS.
    None,
    /// These channel types over TLS, the others plain.
    List(Vec<ChannelType>),
}

/// Plain TCP or TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// Plain TCP.
    Plain,
    /// TLS over TCP.
    Tls,
}

/// A configuration that cannot work.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// Neither address was given.
    #[error("no upstream: give --upstream and/or --upstream-tls")]
    None,
    /// The policy needs an address that was not given.
    #[error("--upstream-tls-channels {policy} needs {needs}")]
    Missing {
        /// The policy.
        policy: String,
        /// The missing option.
        needs: &'static str,
    },
    /// The TLS address has no usable host name.
    #[error("--upstream-tls {0}: not HOST:PORT with a valid host name or IP address")]
    BadAddress(String),
}

/// A connected upstream leg.
pub struct Connected {
    /// The stream.
    pub stream: BoxedStream,
    /// The address connected to.
    pub address: String,
    /// TLS parameters, for a TLS leg.
    pub tls: Option<TlsInfo>,
}

struct TlsTarget {
    address: String,
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

/// How to reach one SPICE server.
pub struct Upstream {
    plain: Option<String>,
    tls: Option<TlsTarget>,
    channels: TlsChannels,
    label: Option<String>,
}

impl Upstream {
    /// A server reached over plain TCP only.
    pub fn plain(address: impl Into<String>) -> Self {
        Self { plain: Some(address.into()), tls: None, channels: TlsChannels::None, label: None }
    }

    /// No fixed server (token mode, where each target has its own): every
    /// connection attempt fails; `label` describes it.
    pub fn per_target(label: impl Into<String>) -> Self {
        Self { plain: None, tls: None, channels: TlsChannels::None, label: Some(label.into()) }
    }

    /// A server with a plain address, a TLS address (with its client
    /// configuration), or both, and a per-channel policy.
    ///
    /// # Errors
    /// [`UpstreamError`] when the policy needs an address not given, or the
    /// TLS address has no valid host.
    pub fn new(
        plain: Option<String>,
        tls: Option<(String, Arc<ClientConfig>)>,
        channels: TlsChannels,
    ) -> Result<Self, UpstreamError> {
        if plain.is_none() && tls.is_none() {
            return Err(UpstreamError::None);
        }
        let needs_tls = matches!(channels, TlsChannels::All | TlsChannels::List(_));
        if needs_tls && tls.is_none() {
            return Err(UpstreamError::Missing { policy: format!("{channels:?}"), needs: "--upstream-tls" });
        }
        if channels == TlsChannels::None && plain.is_none() {
            return Err(UpstreamError::Missing { policy: "none".into(), needs: "--upstream" });
        }
        let tls = match tls {
            Some((address, config)) => {
                let host = host_of(&address).ok_or_else(|| UpstreamError::BadAddress(address.clone()))?;
                let server_name =
                    ServerName::try_from(host.to_string()).map_err(|_| UpstreamError::BadAddress(address.clone()))?;
                Some(TlsTarget { address, connector: TlsConnector::from(config), server_name })
            }
            None => None,
        };
        Ok(Self { plain, tls, channels, label: None })
    }

    /// The leg a channel of type `ct` starts with.
    pub fn first_leg(&self, ct: ChannelType) -> Leg {
        match &self.channels {
            TlsChannels::All => Leg::Tls,
            TlsChannels::None => Leg::Plain,
            TlsChannels::List(l) if l.contains(&ct) => Leg::Tls,
            _ if self.plain.is_none() => Leg::Tls,
            _ => Leg::Plain,
        }
    }

    /// Whether a plain leg refused with `SPICE_LINK_ERR_NEED_SECURED` is
    /// retried over TLS.
    pub fn upgrades(&self) -> bool {
        self.channels == TlsChannels::Auto && self.tls.is_some()
    }

    /// Connects a leg.
    ///
    /// # Errors
    /// The I/O error of the connection or TLS handshake (a certificate the
    /// verifier refuses is `InvalidData` with the reason).
    pub async fn connect(&self, leg: Leg) -> io::Result<Connected> {
        match leg {
            Leg::Plain => {
                let address = self.plain.clone().ok_or_else(|| io::Error::other("no plain upstream address"))?;
                let stream = tcp(&address).await?;
                Ok(Connected { stream: Box::new(stream), address, tls: None })
            }
            Leg::Tls => {
                let t = self.tls.as_ref().ok_or_else(|| io::Error::other("no TLS upstream address"))?;
                let stream = tcp(&t.address).await?;
                let tls =
                    tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, t.connector.connect(t.server_name.clone(), stream))
                        .await
                        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
                let info = TlsInfo::of(tls.get_ref().1);
                Ok(Connected { stream: Box::new(tls), address: t.address.clone(), tls: Some(info) })
            }
        }
    }

    /// The address of a leg, if configured.
    pub fn address(&self, leg: Leg) -> Option<&str> {
        match leg {
            Leg::Plain => self.plain.as_deref(),
            Leg::Tls => self.tls.as_ref().map(|t| t.address.as_str()),
        }
    }

    /// The addresses, for logs and `session.json`.
    pub fn describe(&self) -> String {
        if let Some(l) = &self.label {
            return l.clone();
        }
        match (&self.plain, &self.tls) {
            (Some(p), Some(t)) => format!("{p} (TLS {})", t.address),
            (Some(p), None) => p.clone(),
            (None, Some(t)) => format!("TLS {}", t.address),
            (None, None) => String::new(),
        }
    }
}

async fn tcp(address: &str) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The host part of `HOST:PORT` or `[V6]:PORT`.
fn host_of(address: &str) -> Option<&str> {
    let (host, port) = address.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_addresses() {
        assert_eq!(host_of("127.0.0.1:5901"), Some("127.0.0.1"));
        assert_eq!(host_of("vm.example:5901"), Some("vm.example"));
        assert_eq!(host_of("[::1]:5901"), Some("::1"));
        assert_eq!(host_of("nohost"), None);
        assert_eq!(host_of(":5901"), None);
    }

    #[test]
    fn policy_picks_the_first_leg() {
        let u = Upstream { plain: Some("a:1".into()), tls: None, channels: TlsChannels::Auto, label: None };
        assert_eq!(u.first_leg(ChannelType::MAIN), Leg::Plain);
        assert!(!u.upgrades(), "auto without a TLS address cannot upgrade");
        let u = Upstream { plain: None, tls: None, channels: TlsChannels::Auto, label: None };
        assert_eq!(u.first_leg(ChannelType::MAIN), Leg::Tls);
        let u = Upstream {
            plain: Some("a:1".into()),
            tls: None,
            channels: TlsChannels::List(vec![ChannelType::MAIN]),
            label: None,
        };
        assert_eq!(u.first_leg(ChannelType::MAIN), Leg::Tls);
        assert_eq!(u.first_leg(ChannelType::DISPLAY), Leg::Plain);
    }

    #[test]
    fn impossible_policies_are_refused() {
        assert!(matches!(Upstream::new(None, None, TlsChannels::Auto), Err(UpstreamError::None)));
        assert!(matches!(
            Upstream::new(Some("a:1".into()), None, TlsChannels::All),
            Err(UpstreamError::Missing { .. })
        ));
    }
}
