//! The usb-host side of usbredir for spicetap's virtual disk, sans-IO: what
//! spice-gtk's usbredirhost does for a real device, here for a
//! [`BulkOnlyDisk`].
//!
//! ```text
//! spicetap (usb-host)                              QEMU usb-redir (usb-guest)
//! hello (caps) ─────────────────────────────────>
//!              <───────────────────────────────── hello
//! interface_info, ep_info, device_connect ──────>
//!              <───────────────────────────────── control (GET_DESCRIPTOR ...), set_configuration
//! control answers, ep_info + interface_info,
//!   configuration_status ───────────────────────>
//!              <───────────────────────────────── bulk OUT (CBW, write data), bulk IN requests
//! bulk answers (status, IN data) ───────────────>
//! ```
//! (usbredir `docs/usb-redirection-protocol.md`; QEMU `hw/usb/redirect.c`
//! refuses, on xHCI, a host without `ep_info_max_packet_size`,
//! `32bits_bulk_length` and `64bits_ids`.)
//!
//! The device: USB 2.0 high speed, vendor 0x1209 (pid.codes) product 0x0001,
//! one configuration with one interface of class 8 (mass storage),
//! subclass 6 (SCSI transparent), protocol 0x50 (Bulk-Only), bulk IN 0x81
//! and bulk OUT 0x02 of 512 bytes; strings "spicetap", "spicetap virtual
//! disk" and the serial number.

use crate::usb_disk::{BulkOnlyDisk, InResult, OutResult, Storage};
use crate::usbredir::{
    Packet, Side, TypeHeader, UsbredirDecoder, UsbredirError, cap, encode_packet, packet_type, status,
};

/// idVendor: pid.codes, the open-source vendor id.
pub const VENDOR_ID: u16 = 0x1209;
/// idProduct: one of pid.codes' test product ids.
pub const PRODUCT_ID: u16 = 0x0001;
/// bcdDevice.
pub const BCD_DEVICE: u16 = 0x0100;
/// The bulk IN endpoint.
pub const EP_IN: u8 = 0x81;
/// The bulk OUT endpoint.
pub const EP_OUT: u8 = 0x02;
/// wMaxPacketSize of both bulk endpoints (high speed).
pub const BULK_MAX_PACKET: u16 = 512;

/// The caps spicetap's hello carries.
const HOST_CAPS: u32 = 1 << cap::CONNECT_DEVICE_VERSION
    | 1 << cap::FILTER
    | 1 << cap::DEVICE_DISCONNECT_ACK
    | 1 << cap::EP_INFO_MAX_PACKET_SIZE
    | 1 << cap::BITS64_IDS
    | 1 << cap::BITS32_BULK_LENGTH;

/// Data bytes of guest packets kept by the parser: a whole bulk OUT of
/// write data must reach the disk, up to the disk's own bound.
const KEEP: usize = crate::usb_disk::MAX_TRANSFER as usize;

/// The usb-host of one usbredir channel, owning the virtual disk.
#[derive(Debug)]
pub struct UsbHost<S: Storage> {
    disk: BulkOnlyDisk<S>,
    decoder: UsbredirDecoder,
    serial: String,
    out: Vec<u8>,
    configuration: u8,
    connected: bool,
}

impl<S: Storage> UsbHost<S> {
    /// A host for `disk` whose serial number string is `serial`; its hello
    /// is ready to send.
    pub fn new(disk: BulkOnlyDisk<S>, serial: &str) -> Self {
        let mut h = Self {
            disk,
            decoder: UsbredirDecoder::new(KEEP),
            serial: serial.to_string(),
            out: Vec::new(),
            configuration: 0,
            connected: false,
        };
        let mut version = [0u8; 64];
        let v = concat!("spicetap ", env!("CARGO_PKG_VERSION")).as_bytes();
        version[..v.len()].copy_from_slice(v);
        let hello = encode_packet(packet_type::HELLO, 0, false, &version, &HOST_CAPS.to_le_bytes());
        // Our own hello goes through the parser too: it decides id and
        // header sizes from both hellos.
        let mut sink = Vec::new();
        let _ = h.decoder.feed(Side::Host, &hello, &mut sink);
        h.out.extend_from_slice(&hello);
        h
    }

    /// The disk.
    pub fn disk(&mut self) -> &mut BulkOnlyDisk<S> {
        &mut self.disk
    }

    /// Bytes to send to the guest since the last call.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Whether the device was announced (the guest's hello came).
    pub fn connected(&self) -> bool {
        self.connected
    }

    /// Bytes from the guest; answers go to the output.
    ///
    /// # Errors
    /// A [`UsbredirError`] when the guest's stream breaks the protocol: the
    /// channel should be closed.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), UsbredirError> {
        let mut packets = Vec::new();
        self.decoder.feed(Side::Guest, bytes, &mut packets)?;
        for p in packets {
            self.packet(&p);
        }
        Ok(())
    }

    fn ids64(&self) -> bool {
        self.decoder.both_have(cap::BITS64_IDS)
    }

    fn send(&mut self, packet_type: u32, id: u64, type_header: &[u8], data: &[u8]) {
        let p = encode_packet(packet_type, id, self.ids64(), type_header, data);
        self.out.extend_from_slice(&p);
    }

    fn packet(&mut self, p: &Packet) {
        match &p.header {
            TypeHeader::Hello { .. } => {
                self.announce();
                self.send(packet_type::DEVICE_CONNECT, 0, &self.device_connect(), &[]);
                self.connected = true;
            }
            TypeHeader::ControlPacket { endpoint, request, requesttype, value, index, length, .. } => {
                let (st, data) = self.control(*requesttype, *request, *value, *index, *length);
                let data = if endpoint & 0x80 != 0 { data } else { Vec::new() };
                let done = if endpoint & 0x80 != 0 { data.len() as u16 } else { *length };
                let mut th = vec![*endpoint, *request, *requesttype, st];
                th.extend_from_slice(&value.to_le_bytes());
                th.extend_from_slice(&index.to_le_bytes());
                th.extend_from_slice(&done.to_le_bytes());
                self.send(packet_type::CONTROL_PACKET, p.id, &th, &data);
            }
            TypeHeader::SetConfiguration { configuration } => {
                let ok = *configuration <= 1;
                if ok {
                    self.configuration = *configuration;
                }
                // usbredirhost re-announces the endpoints after a change.
                self.announce();
                let st = if ok { status::SUCCESS } else { status::STALL };
                self.send(packet_type::CONFIGURATION_STATUS, p.id, &[st, self.configuration], &[]);
            }
            TypeHeader::GetConfiguration => {
                self.send(packet_type::CONFIGURATION_STATUS, p.id, &[status::SUCCESS, self.configuration], &[]);
            }
            TypeHeader::SetAltSetting { interface, alt } => {
                let ok = *interface == 0 && *alt == 0;
                self.announce();
                let st = if ok { status::SUCCESS } else { status::STALL };
                self.send(packet_type::ALT_SETTING_STATUS, p.id, &[st, *interface, 0], &[]);
            }
            TypeHeader::GetAltSetting { interface } => {
                let st = if *interface == 0 { status::SUCCESS } else { status::STALL };
                self.send(packet_type::ALT_SETTING_STATUS, p.id, &[st, *interface, 0], &[]);
            }
            TypeHeader::Reset => self.disk.reset(),
            TypeHeader::BulkPacket { endpoint, length, stream_id, .. } => {
                let (st, data, done) = match *endpoint {
                    EP_OUT => match self.disk.bulk_out(&p.data) {
                        OutResult::Ok => (status::SUCCESS, Vec::new(), p.data_len),
                        OutResult::Stall => (status::STALL, Vec::new(), 0),
                    },
                    EP_IN => match self.disk.bulk_in(*length as usize) {
                        InResult::Data(d) => {
                            let n = d.len() as u32;
                            (status::SUCCESS, d, n)
                        }
                        InResult::Stall => (status::STALL, Vec::new(), 0),
                    },
                    _ => (status::INVAL, Vec::new(), 0),
                };
                let mut th = vec![*endpoint, st];
                th.extend_from_slice(&(done as u16).to_le_bytes());
                th.extend_from_slice(&stream_id.to_le_bytes());
                th.extend_from_slice(&((done >> 16) as u16).to_le_bytes());
                self.send(packet_type::BULK_PACKET, p.id, &th, &data);
            }
            TypeHeader::InterruptPacket { endpoint, .. } | TypeHeader::IsoPacket { endpoint, .. } => {
                // No such endpoints on this device.
                let th = [*endpoint, status::INVAL, 0, 0];
                self.send(p.packet_type, p.id, &th, &[]);
            }
            TypeHeader::StartInterruptReceiving { endpoint } | TypeHeader::StopInterruptReceiving { endpoint } => {
                self.send(packet_type::INTERRUPT_RECEIVING_STATUS, p.id, &[status::INVAL, *endpoint], &[]);
            }
            TypeHeader::StartIsoStream { endpoint, .. } | TypeHeader::StopIsoStream { endpoint } => {
                self.send(packet_type::ISO_STREAM_STATUS, p.id, &[status::INVAL, *endpoint], &[]);
            }
            // Answered at once, so never pending: nothing to cancel.
            TypeHeader::CancelDataPacket
            | TypeHeader::FilterReject
            | TypeHeader::FilterFilter
            | TypeHeader::DeviceDisconnectAck => {}
            _ => {}
        }
    }

    /// interface_info then ep_info.
    fn announce(&mut self) {
        let mut ii = vec![0u8; 132];
        ii[0] = 1;
        ii[4] = 0; // interface 0
        ii[36] = 8; // mass storage
        ii[68] = 6; // SCSI transparent
        ii[100] = 0x50; // Bulk-Only
        self.send(packet_type::INTERFACE_INFO, 0, &ii, &[]);
        // Index i of the arrays is endpoint ((i & 0x10) << 3) | (i & 0x0f).
        let with_size = self.decoder.both_have(cap::EP_INFO_MAX_PACKET_SIZE);
        let mut ep = vec![0u8; if with_size { 160 } else { 96 }];
        ep[..32].fill(255);
        for (i, t, size) in
            [(0usize, 0u8, 64u16), (0x10, 0, 64), (0x11, 2, BULK_MAX_PACKET), (0x02, 2, BULK_MAX_PACKET)]
        {
            ep[i] = t;
            if with_size {
                ep[96 + 2 * i..98 + 2 * i].copy_from_slice(&size.to_le_bytes());
            }
        }
        self.send(packet_type::EP_INFO, 0, &ep, &[]);
    }

    fn device_connect(&self) -> Vec<u8> {
        let mut dc = vec![2u8, 0, 0, 0]; // high speed; class at the interface
        dc.extend_from_slice(&VENDOR_ID.to_le_bytes());
        dc.extend_from_slice(&PRODUCT_ID.to_le_bytes());
        if self.decoder.both_have(cap::CONNECT_DEVICE_VERSION) {
            dc.extend_from_slice(&BCD_DEVICE.to_le_bytes());
        }
        dc
    }

    /// A control transfer on endpoint 0: status and IN data (USB 2.0 9.4;
    /// Bulk-Only 3.1 and 3.2 for the class requests).
    fn control(&mut self, requesttype: u8, request: u8, value: u16, index: u16, length: u16) -> (u8, Vec<u8>) {
        let fit = |mut d: Vec<u8>| {
            d.truncate(usize::from(length));
            (status::SUCCESS, d)
        };
        match (requesttype, request) {
            // GET_DESCRIPTOR.
            (0x80, 6) => match (value >> 8) as u8 {
                1 => fit(device_descriptor()),
                2 => fit(configuration_descriptor()),
                3 => match value & 0xff {
                    0 => fit(vec![4, 3, 0x09, 0x04]),
                    1 => fit(string_descriptor("spicetap")),
                    2 => fit(string_descriptor("spicetap virtual disk")),
                    3 => fit(string_descriptor(&self.serial)),
                    _ => (status::STALL, Vec::new()),
                },
                6 => fit(vec![10, 6, 0x00, 0x02, 0, 0, 0, 64, 1, 0]),
                _ => (status::STALL, Vec::new()),
            },
            // GET_STATUS of the device, interface or an endpoint.
            (0x80..=0x82, 0) => fit(vec![0, 0]),
            // CLEAR_FEATURE / SET_FEATURE (endpoint halt, remote wakeup).
            (0x00..=0x02, 1 | 3) => (status::SUCCESS, Vec::new()),
            // Bulk-Only: Get Max LUN, Bulk-Only Mass Storage Reset.
            (0xa1, 0xfe) if index == 0 => fit(vec![self.disk.max_lun()]),
            (0x21, 0xff) if index == 0 => {
                self.disk.reset();
                (status::SUCCESS, Vec::new())
            }
            _ => (status::STALL, Vec::new()),
        }
    }
}

/// The device descriptor (18 bytes).
fn device_descriptor() -> Vec<u8> {
    let mut d = vec![18, 1, 0x00, 0x02, 0, 0, 0, 64];
    d.extend_from_slice(&VENDOR_ID.to_le_bytes());
    d.extend_from_slice(&PRODUCT_ID.to_le_bytes());
    d.extend_from_slice(&BCD_DEVICE.to_le_bytes());
    d.extend_from_slice(&[1, 2, 3, 1]);
    d
}

/// Configuration 1 with its interface and two bulk endpoints (32 bytes).
fn configuration_descriptor() -> Vec<u8> {
    let mut d = vec![9, 2, 32, 0, 1, 1, 0, 0x80, 50];
    d.extend_from_slice(&[9, 4, 0, 0, 2, 8, 6, 0x50, 0]);
    d.extend_from_slice(&[7, 5, EP_IN, 2]);
    d.extend_from_slice(&BULK_MAX_PACKET.to_le_bytes());
    d.push(0);
    d.extend_from_slice(&[7, 5, EP_OUT, 2]);
    d.extend_from_slice(&BULK_MAX_PACKET.to_le_bytes());
    d.push(0);
    d
}

/// A string descriptor (UTF-16LE).
fn string_descriptor(s: &str) -> Vec<u8> {
    let units: Vec<u16> = s.encode_utf16().take(126).collect();
    let mut d = vec![(2 + 2 * units.len()) as u8, 3];
    for u in units {
        d.extend_from_slice(&u.to_le_bytes());
    }
    d
}

#[cfg(test)]
mod tests;
