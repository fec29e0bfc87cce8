//! spicetap: a transparent SPICE recording proxy.
//!
//! spicetap sits between a SPICE client (remote-viewer, spicy) and a SPICE
//! server (QEMU). It forwards every channel connection byte for byte while
//! following the protocol, and records each channel as a pcap that
//! Wireshark dissects as SPICE, plus a `session.json` per session.
//!
//! # Layout
//!
//! The module tree follows the bytes:
//!
//! - [`link`]: the link stage structures (`SpiceLinkHeader`, `SpiceLinkMess`,
//!   `SpiceLinkReply`), sans-IO.
//! - [`framing`]: mini and full data headers; finds message boundaries in a
//!   stream cut anywhere, sans-IO.
//! - [`proxy`]: listeners, the per-connection task ([`proxy::channel`]), the
//!   async link-stage driver and the relay with its inline observer.
//! - [`session`]: groups channel connections into SPICE sessions.
//! - [`tcp_pcap`]: byte streams as synthetic TCP conversations in pcap
//!   files, shared by the consumers that write Wireshark captures.
//! - [`tap`]: the session tap: each channel's ordered bytes with their
//!   times, handed to independent consumers behind their own bounded
//!   queues; [`report`]: the `session.json` model the reports fill.
//! - Consumers: [`capture`] (the writer thread, the synthetic TCP
//!   conversation in pcap form, `session.json`, and replay of pcaps) and
//!   [`render`] (the shadow renderer: display messages, images and their
//!   codecs, canvas, streams; live per session or offline from pcaps) and
//!   [`port`] (port-channel decoders: usbredir channels as usbmon pcaps,
//!   port channels' names and events, webdav folder sharing as HTTP pcaps).
//! - [`video`]: H.264 in fragmented MP4 from the renderer's frames.
//! - [`inject`]: channels spicetap opens itself in a client's session (the
//!   usb-host of `--usb-disk`).
//! - [`diff`]: two recordings compared channel by channel (caps, message
//!   sequences aligned, counts); [`inspect`]: a recording read as one timeline of messages with their
//!   fields, or summarised; [`verdict`]: a CI run's verdict (`--result`, `--result-junit`) read
//!   back from the `session.json` files it wrote.
//! - [`tls`]: certificates and rustls configurations for both legs;
//!   [`auth`]: token mode (tickets, targets, rate limit, audit log);
//!   [`fleet`]: many nodes sharing targets, tokens (keyed hashes), audit
//!   and a session index in PostgreSQL, revocations pushed.
//! - [`usbredir`]: the usbredir protocol inside usbredir channels, parsed
//!   per direction from the byte stream, sans-IO; [`usbmon`]: usbredir
//!   transfers as Linux usbmon records for Wireshark; [`msc`]: USB mass
//!   storage Bulk-Only Transport wrappers and SCSI command names;
//!   [`usb_disk`]: the virtual USB disk (Bulk-Only Transport and SCSI over a
//!   raw image) spicetap can attach to a guest.
//! - [`webdav_mux`]: the connection multiplexing of SPICE folder sharing
//!   (webdav port channel), parsed per direction, sans-IO; [`http1`]:
//!   HTTP/1.1 message boundaries of a connection, to count WebDAV
//!   requests and responses.
//! - [`protocol`]: spice-protocol numbers and names; [`wire`]: the
//!   little-endian reader; [`limits`]: every bound on peer input.
//!
//! See `ARCHITECTURE.md` for tasks, queues and ownership.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod capture;
pub mod diff;
pub mod fleet;
pub mod flushing;
pub mod framing;
pub mod http;
pub mod http1;
pub mod inject;
pub mod inspect;
pub mod limits;
pub mod link;
pub mod metrics;
pub mod msc;
pub mod port;
pub mod protocol;
pub mod proxy;
pub mod render;
pub mod report;
pub mod session;
pub mod tap;
pub mod tcp_pcap;
pub mod tls;
pub mod usb_disk;
pub mod usbmon;
pub mod usbredir;
pub mod verdict;
pub mod video;
pub mod webdav_mux;
pub mod wire;
