//! Channels spicetap itself opens in a client's session, and what it plays
//! on them.
//!
//! - [`usb_host`]: the usb-host side of usbredir for the virtual disk of
//!   [`crate::usb_disk`] (what spice-gtk's usbredirhost does for a real
//!   device), sans-IO: the part the `--usb-disk` channel task drives.
//! - [`usb_channel`]: that channel task: links a usbredir channel of the
//!   client's session to the server as a SPICE client, answers the
//!   channel's housekeeping (PING, SET_ACK) and carries usbredir between
//!   the server and the usb-host, every byte to the session tap.

pub mod usb_channel;
pub mod usb_host;
