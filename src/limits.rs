//! Every bound spicetap puts on what a peer sends, each with its reason.
//!
//! A parser checks a size from the wire against one of these before it
//! allocates or waits for that many bytes. Changing a bound here changes it
//! everywhere.

use std::time::Duration;

/// Largest `SpiceLinkHeader.size` accepted from a client or a server, in bytes.
///
/// A link message is 18 bytes plus the caps words (a few words per side in
/// every known client and server); a link reply is 178 bytes plus caps.
/// kerbside and ryll use the same 4 KiB bound.
pub const MAX_LINK_SIZE: u32 = 4096;

/// Largest number of 32-bit words in one caps vector (common or channel).
///
/// spice-protocol defines fewer than 32 caps for any channel, so one word is
/// used in practice; 16 words leave room for growth (kerbside, ryll).
pub const MAX_CAPS_WORDS: u32 = 16;

/// Largest message body accepted in a data header (mini or full), in bytes.
///
/// The largest legitimate SPICE message is a display draw carrying an
/// uncompressed 32-bit bitmap of a whole surface: 4096 × 4096 × 4 = 64 MiB
/// for the largest QXL surface. Twice that is "absurd": the channel is closed
/// and the reason recorded.
pub const MAX_MESSAGE_SIZE: u32 = 128 * 1024 * 1024;

/// How long a client may take to send its whole link message after connecting.
pub const LINK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the upstream may take to accept the TCP connection.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Size of each relay read buffer, in bytes (one per direction per channel).
///
/// Large reads keep the per-byte cost of relaying low; this is the most data
/// one direction holds in flight inside the proxy, so back-pressure from a
/// slow reader reaches the writer after at most this much.
pub const RELAY_BUFFER_SIZE: usize = 256 * 1024;

/// Most bytes of captured traffic queued for one session's capture writer.
///
/// Past this the writer is behind: the capture of that session stops, the loss
/// is recorded, and forwarding goes on untouched.
pub const CAPTURE_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// Largest TCP payload of one synthetic pcap segment, in bytes: the IPv4 total
/// length limit (65535) minus a 20-byte IPv4 header and a 20-byte TCP header.
pub const PCAP_MAX_SEGMENT: usize = 65495;

/// Snapshot length written in every pcap header, in bytes. Larger than any
/// synthetic frame, so nothing is ever truncated.
pub const PCAP_SNAPLEN: u32 = 262_144;

/// On shutdown, how long a relay may still spend writing the chunk it has
/// already read, so that bytes taken from one peer reach the other.
pub const SHUTDOWN_WRITE_GRACE: Duration = Duration::from_secs(5);

/// Most clip rectangles in one display message. A clip list larger than the
/// pixels of a 4096 × 4096 surface divided into 16-pixel tiles is absurd;
/// spice-server sends a few dozen at most.
pub const MAX_CLIP_RECTS: u32 = 65_536;

/// Largest surface side accepted by the renderer, in pixels (QXL's limit).
pub const MAX_SURFACE_SIDE: u32 = 16_384;

/// Most pixels of one surface, decoded image, 1-bit mask or scaled
/// `DRAW_ROP3` source: 64 Mi pixels (256 MiB).
pub const MAX_SURFACE_PIXELS: u64 = 64 * 1024 * 1024;

/// Most bytes of display traffic queued for a session's renderer. Past this
/// the renderer is behind: it stops for the session (a skipped message would
/// corrupt its caches), the loss is recorded, forwarding goes on.
pub const RENDER_QUEUE_BYTES: usize = 256 * 1024 * 1024;

/// Most pixels of all surfaces of one display channel together: 128 Mi
/// pixels (512 MiB). A server asking for more (many large off-screen
/// surfaces) gets its surface refused by the renderer, recorded; forwarding
/// is not affected.
pub const MAX_DISPLAY_PIXELS: u64 = 128 * 1024 * 1024;

/// Most data bytes of one usbredir data packet: usbredirparser's own bound
/// on a bulk transfer (`usbredirparser.c` `MAX_BULK_TRANSFER_SIZE`).
pub const USBREDIR_MAX_DATA: u32 = 128 * 1024 * 1024;

/// Most data bytes of a usbredir packet that is not a transfer (the hello's
/// caps words, a filter's rules string).
pub const USBREDIR_MAX_CONTROL_DATA: u32 = 64 * 1024;

/// Most bytes waiting for a session's usbredir decoder: past it the decoder
/// stops following the channel whose data was refused (recorded).
pub const USBREDIR_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// Most bytes waiting for a session's port decoder (port and webdav
/// channels): past it the decoder stops following the channel whose data
/// was refused (recorded).
pub const PORT_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// Largest cursor width or height accepted, in pixels.
///
/// Guests send 32x32 to 64x64 pointers (qxl and QEMU's own cursors are
/// 64x64), HiDPI desktops up to 256x256; spice-gtk checks nothing. 512 per
/// side bounds one decoded shape at 1 MiB of RGBA.
pub const MAX_CURSOR_SIDE: u32 = 512;

/// Most bytes of decoded cursor shapes kept in a session's cursor cache.
///
/// spice-server caches at most 256 shapes per client
/// (`CLIENT_CURSOR_CACHE_SIZE`), evicting with `INVAL_ONE`; 256 qxl cursors
/// of 64x64 take 4 MiB. A shape past this bound is shown but not cached
/// (a later `FROM_CACHE` of it is an error, recorded).
pub const MAX_CURSOR_CACHE_BYTES: usize = 16 * 1024 * 1024;
