//! Linux usbmon records (`LINKTYPE_USB_LINUX_MMAPPED`, 220) made from
//! usbredir packets, so Wireshark shows a usbredir channel as USB traffic.
//!
//! ```text
//! struct usbmon_packet (64 bytes, little-endian; Linux Documentation/usb/usbmon.rst)
//!   0 id u64          URB id: the usbredir packet id, shared by S and C
//!   8 type u8         'S' submission, 'C' completion
//!   9 xfer_type u8    ISO 0, interrupt 1, control 2, bulk 3
//!  10 epnum u8        endpoint number, bit 7 set for IN
//!  11 devnum u8       device address
//!  12 busnum u16      bus number
//!  14 flag_setup i8   0: setup bytes present; '-': none
//!  15 flag_data i8    0: data present; '<' (IN) or '>' (OUT): none
//!  16 ts_sec i64, 24 ts_usec i32
//!  28 status i32      -EINPROGRESS on submissions, 0 or -errno on completions
//!  32 length u32      bytes submitted (OUT) or asked (IN), or transferred
//!  36 len_cap u32     bytes of data that follow the header
//!  40 setup [u8; 8]   control submissions: bmRequestType bRequest wValue wIndex wLength
//!  48 interval i32, 52 start_frame i32, 56 xfer_flags u32, 60 ndesc u32
//! ```
//!
//! The usb-guest's requests (QEMU) are submissions, the usb-host's answers
//! (the device side) completions, matched by packet id. usbredir sends
//! `SET_CONFIGURATION` and `SET_INTERFACE` (and their GET forms) as packets
//! of their own; they are shown as the standard control requests they
//! stand for (USB 2.0 9.4), so Wireshark's view of the device stays right.

use std::collections::HashMap;

use crate::usbredir::{Packet, Side, TypeHeader, status};

/// `usbmon_packet` size in bytes.
pub const HEADER_LEN: usize = 64;

/// `xfer_type` values.
#[allow(missing_docs)]
pub mod xfer {
    pub const ISO: u8 = 0;
    pub const INTERRUPT: u8 = 1;
    pub const CONTROL: u8 = 2;
    pub const BULK: u8 = 3;
}

/// `-EINPROGRESS`: the status of every submission.
pub const EINPROGRESS: i32 = -115;

/// One usbmon record: the header's fields and the data that follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbmonRecord {
    /// URB id.
    pub id: u64,
    /// `b'S'` or `b'C'`.
    pub kind: u8,
    /// [`xfer`] type.
    pub xfer_type: u8,
    /// Endpoint address (bit 7: IN).
    pub endpoint: u8,
    /// Device address.
    pub devnum: u8,
    /// Bus number.
    pub busnum: u16,
    /// Setup packet of a control submission.
    pub setup: Option<[u8; 8]>,
    /// 0 or a negative errno.
    pub status: i32,
    /// `length` field (bytes).
    pub length: u32,
    /// Interval of interrupt and iso endpoints.
    pub interval: i32,
    /// Data captured (at most what the converter kept).
    pub data: Vec<u8>,
}

impl UsbmonRecord {
    /// The record as `usbmon_packet` plus data, timestamped `secs`.`usecs`.
    pub fn encode(&self, secs: i64, usecs: i32) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER_LEN + self.data.len());
        b.extend_from_slice(&self.id.to_le_bytes());
        b.push(self.kind);
        b.push(self.xfer_type);
        b.push(self.endpoint);
        b.push(self.devnum);
        b.extend_from_slice(&self.busnum.to_le_bytes());
        b.push(if self.setup.is_some() { 0 } else { b'-' });
        let in_dir = self.endpoint & 0x80 != 0;
        b.push(if !self.data.is_empty() {
            0
        } else if in_dir {
            b'<'
        } else {
            b'>'
        });
        b.extend_from_slice(&secs.to_le_bytes());
        b.extend_from_slice(&usecs.to_le_bytes());
        b.extend_from_slice(&self.status.to_le_bytes());
        b.extend_from_slice(&self.length.to_le_bytes());
        b.extend_from_slice(&(self.data.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.setup.unwrap_or([0; 8]));
        b.extend_from_slice(&self.interval.to_le_bytes());
        b.extend_from_slice(&0i32.to_le_bytes()); // start_frame
        b.extend_from_slice(&0u32.to_le_bytes()); // xfer_flags
        b.extend_from_slice(&0u32.to_le_bytes()); // ndesc
        b.extend_from_slice(&self.data);
        b
    }
}

/// The Linux errno a usbredir status stands for in a completion (the
/// values Linux's host controller drivers give URBs: USB
/// `Documentation/driver-api/usb/error-codes.rst`).
pub fn errno(usbredir_status: u8) -> i32 {
    match usbredir_status {
        status::SUCCESS => 0,
        status::CANCELLED => -2, // -ENOENT: unlinked
        status::INVAL => -22,    // -EINVAL
        status::IOERROR => -71,  // -EPROTO
        status::STALL => -32,    // -EPIPE
        status::TIMEOUT => -110, // -ETIMEDOUT
        status::BABBLE => -75,   // -EOVERFLOW
        _ => -71,
    }
}

/// Turns one channel's usbredir packets into usbmon records.
#[derive(Debug)]
pub struct UsbmonConverter {
    busnum: u16,
    devnum: u8,
    /// Interval of each endpoint, from `ep_info`.
    intervals: HashMap<u8, u8>,
    /// Submissions waiting for their completion: id -> (xfer type, endpoint).
    pending: HashMap<u64, (u8, u8)>,
}

impl UsbmonConverter {
    /// A converter naming the device `devnum` on bus `busnum`.
    pub fn new(busnum: u16, devnum: u8) -> Self {
        Self { busnum, devnum, intervals: HashMap::new(), pending: HashMap::new() }
    }

    /// Submissions still without a completion.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The records a packet stands for (none for packets that are not
    /// transfers: hello, device information, stream management).
    pub fn convert(&mut self, p: &Packet) -> Option<UsbmonRecord> {
        let rec = |xfer_type, endpoint, setup, status, length, data: &[u8]| UsbmonRecord {
            id: p.id,
            kind: if p.side == Side::Guest { b'S' } else { b'C' },
            xfer_type,
            endpoint,
            devnum: self.devnum,
            busnum: self.busnum,
            setup,
            status,
            length,
            interval: 0,
            data: data.to_vec(),
        };
        match (&p.header, p.side) {
            (TypeHeader::EpInfo { endpoints }, _) => {
                for e in endpoints {
                    self.intervals.insert(e.address, e.interval);
                }
                None
            }
            (TypeHeader::ControlPacket { endpoint, request, requesttype, status, value, index, length }, side) => {
                let mut setup = [*requesttype, *request, 0, 0, 0, 0, 0, 0];
                setup[2..4].copy_from_slice(&value.to_le_bytes());
                setup[4..6].copy_from_slice(&index.to_le_bytes());
                setup[6..8].copy_from_slice(&length.to_le_bytes());
                let ep = endpoint & 0x80;
                if side == Side::Guest {
                    self.pending.insert(p.id, (xfer::CONTROL, ep));
                    Some(rec(xfer::CONTROL, ep, Some(setup), EINPROGRESS, u32::from(*length), &p.data))
                } else {
                    self.pending.remove(&p.id);
                    // An IN completion's length is what came back; an OUT
                    // one's what the device took.
                    let done = if ep != 0 { p.data_len } else { u32::from(*length) };
                    Some(rec(xfer::CONTROL, ep, None, errno(*status), done, &p.data))
                }
            }
            (TypeHeader::BulkPacket { endpoint, status, length, .. }, _) => {
                Some(self.data_transfer(p, xfer::BULK, *endpoint, *status, *length))
            }
            (TypeHeader::InterruptPacket { endpoint, status, length }, _) => {
                Some(self.data_transfer(p, xfer::INTERRUPT, *endpoint, *status, u32::from(*length)))
            }
            (TypeHeader::IsoPacket { endpoint, status, length }, _) => {
                Some(self.data_transfer(p, xfer::ISO, *endpoint, *status, u32::from(*length)))
            }
            (TypeHeader::BufferedBulkPacket { endpoint, status, length, .. }, _) => {
                // Bulk receiving: data the host read on its own; shown as a
                // completion only.
                Some(self.data_transfer(p, xfer::BULK, *endpoint, *status, *length))
            }
            // The standard requests usbredir carries as packets of their own.
            (TypeHeader::SetConfiguration { configuration }, Side::Guest) => {
                let setup = [0x00, 9, *configuration, 0, 0, 0, 0, 0];
                self.pending.insert(p.id, (xfer::CONTROL, 0));
                Some(rec(xfer::CONTROL, 0, Some(setup), EINPROGRESS, 0, &[]))
            }
            (TypeHeader::GetConfiguration, Side::Guest) => {
                let setup = [0x80, 8, 0, 0, 0, 0, 1, 0];
                self.pending.insert(p.id, (xfer::CONTROL, 0x80));
                Some(rec(xfer::CONTROL, 0x80, Some(setup), EINPROGRESS, 1, &[]))
            }
            (TypeHeader::ConfigurationStatus { status, configuration }, Side::Host) => {
                let (_, ep) = self.pending.remove(&p.id)?;
                let data = if ep != 0 { vec![*configuration] } else { Vec::new() };
                Some(rec(xfer::CONTROL, ep, None, errno(*status), data.len() as u32, &data))
            }
            (TypeHeader::SetAltSetting { interface, alt }, Side::Guest) => {
                let setup = [0x01, 11, *alt, 0, *interface, 0, 0, 0];
                self.pending.insert(p.id, (xfer::CONTROL, 0));
                Some(rec(xfer::CONTROL, 0, Some(setup), EINPROGRESS, 0, &[]))
            }
            (TypeHeader::GetAltSetting { interface }, Side::Guest) => {
                let setup = [0x81, 10, 0, 0, *interface, 0, 1, 0];
                self.pending.insert(p.id, (xfer::CONTROL, 0x80));
                Some(rec(xfer::CONTROL, 0x80, Some(setup), EINPROGRESS, 1, &[]))
            }
            (TypeHeader::AltSettingStatus { status, alt, .. }, Side::Host) => {
                let (_, ep) = self.pending.remove(&p.id)?;
                let data = if ep != 0 { vec![*alt] } else { Vec::new() };
                Some(rec(xfer::CONTROL, ep, None, errno(*status), data.len() as u32, &data))
            }
            _ => None,
        }
    }

    /// A bulk, interrupt or iso packet: a submission from the guest (with
    /// its OUT data), a completion from the host (with its IN data).
    fn data_transfer(&mut self, p: &Packet, xfer_type: u8, endpoint: u8, status: u8, length: u32) -> UsbmonRecord {
        let interval = if matches!(xfer_type, xfer::INTERRUPT | xfer::ISO) {
            i32::from(self.intervals.get(&endpoint).copied().unwrap_or(0))
        } else {
            0
        };
        let (kind, status) = if p.side == Side::Guest {
            self.pending.insert(p.id, (xfer_type, endpoint));
            (b'S', EINPROGRESS)
        } else {
            self.pending.remove(&p.id);
            (b'C', errno(status))
        };
        UsbmonRecord {
            id: p.id,
            kind,
            xfer_type,
            endpoint,
            devnum: self.devnum,
            busnum: self.busnum,
            setup: None,
            status,
            length,
            interval,
            data: p.data.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(side: Side, id: u64, header: TypeHeader, data: &[u8]) -> Packet {
        Packet {
            side,
            packet_type: crate::usbredir::packet_type::CONTROL_PACKET,
            id,
            header,
            data: data.to_vec(),
            data_len: data.len() as u32,
        }
    }

    #[test]
    fn a_control_in_transfer_is_a_submission_with_setup_and_a_completion_with_data() {
        let mut c = UsbmonConverter::new(1, 2);
        let get = TypeHeader::ControlPacket {
            endpoint: 0x80,
            request: 6,
            requesttype: 0x80,
            status: 0,
            value: 0x0100,
            index: 0,
            length: 18,
        };
        let s = c.convert(&packet(Side::Guest, 5, get.clone(), &[])).unwrap();
        assert_eq!((s.kind, s.xfer_type, s.endpoint, s.status, s.length), (b'S', xfer::CONTROL, 0x80, EINPROGRESS, 18));
        assert_eq!(s.setup, Some([0x80, 6, 0, 1, 0, 0, 18, 0]));
        assert_eq!(c.pending(), 1);
        let done = c.convert(&packet(Side::Host, 5, get, &[0x12; 18])).unwrap();
        assert_eq!((done.kind, done.status, done.length, done.data.len()), (b'C', 0, 18, 18));
        assert_eq!(c.pending(), 0);
        // The encoding: 64-byte header, flags, length and len_cap.
        let e = s.encode(1, 2);
        assert_eq!(e.len(), 64);
        assert_eq!(&e[0..8], &5u64.to_le_bytes());
        assert_eq!((e[8], e[9], e[10], e[11]), (b'S', 2, 0x80, 2));
        assert_eq!((e[14], e[15]), (0, b'<'));
        assert_eq!(i32::from_le_bytes(e[28..32].try_into().unwrap()), EINPROGRESS);
        assert_eq!(&e[40..48], &[0x80, 6, 0, 1, 0, 0, 18, 0]);
        let e = done.encode(1, 2);
        assert_eq!((e.len(), e[14], e[15]), (64 + 18, b'-', 0));
        assert_eq!(u32::from_le_bytes(e[36..40].try_into().unwrap()), 18);
    }

    #[test]
    fn set_configuration_is_shown_as_the_standard_request() {
        let mut c = UsbmonConverter::new(1, 1);
        let s = c.convert(&packet(Side::Guest, 9, TypeHeader::SetConfiguration { configuration: 1 }, &[])).unwrap();
        assert_eq!(s.setup, Some([0, 9, 1, 0, 0, 0, 0, 0]));
        let done = c
            .convert(&packet(Side::Host, 9, TypeHeader::ConfigurationStatus { status: 4, configuration: 1 }, &[]))
            .unwrap();
        assert_eq!((done.kind, done.status, done.endpoint), (b'C', -32, 0));
    }

    #[test]
    fn bulk_out_carries_its_data_in_the_submission() {
        let mut c = UsbmonConverter::new(1, 1);
        let h = TypeHeader::BulkPacket { endpoint: 0x02, status: 0, length: 31, stream_id: 0 };
        let s = c.convert(&packet(Side::Guest, 3, h.clone(), &[0x55; 31])).unwrap();
        assert_eq!((s.kind, s.xfer_type, s.length, s.data.len()), (b'S', xfer::BULK, 31, 31));
        let done = c.convert(&packet(Side::Host, 3, h, &[])).unwrap();
        assert_eq!((done.kind, done.status, done.data.len()), (b'C', 0, 0));
        assert_eq!(done.encode(0, 0)[15], b'>');
    }

    #[test]
    fn statuses_map_to_linux_errnos() {
        assert_eq!(errno(status::SUCCESS), 0);
        assert_eq!(errno(status::STALL), -32);
        assert_eq!(errno(status::CANCELLED), -2);
        assert_eq!(errno(200), -71);
    }
}
