//! Channels spicetap itself opens in a client's session, and what it plays
//! on them.
//!
//! - [`usb_host`]: the usb-host side of usbredir for the virtual disk of
//!   [`crate::usb_disk`] (what spice-gtk's usbredirhost does for a real
//!   device), sans-IO: the part the `--usb-disk` channel task drives.

pub mod usb_host;
