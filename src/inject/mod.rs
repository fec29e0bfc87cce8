//! Channels spicetap itself opens in a client's session, and what it plays
//! on them.
//!
//! - [`spicevmc`]: what every such channel shares: the link stage as a
//!   client, headers, PING/SET_ACK, SpiceVMC data out, the tap record.
//! - [`usb_host`]: the usb-host side of usbredir for the virtual disk of
//!   [`crate::usb_disk`] (what spice-gtk's usbredirhost does for a real
//!   device), sans-IO: the part the `--usb-disk` channel task drives.
//! - [`usb_channel`]: that channel task: links a usbredir channel of the
//!   client's session to the server as a SPICE client, answers the
//!   channel's housekeeping (PING, SET_ACK) and carries usbredir between
//!   the server and the usb-host, every byte to the session tap.
//! - [`share`]: the folder of `--share-dir`: dav-server's handler over a
//!   local filesystem confined to the folder.
//! - [`webdav_channel`]: the webdav channel task of `--share-dir`: the mux
//!   of the guest's HTTP connections, one hyper HTTP/1 connection to the
//!   share per mux client.

pub mod share;
pub mod spicevmc;
pub mod usb_channel;
pub mod usb_host;
pub mod webdav_channel;
