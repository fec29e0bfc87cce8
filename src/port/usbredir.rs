//! The usbredir channel decoder: a session tap consumer that follows every
//! usbredir channel (SPICE channel type 9) of the session, parses the
//! usbredir protocol out of its SpiceVMC messages in both directions, and
//! writes `usbredir-<channel id>.usbmon.pcap` (Linux usbmon records, which
//! Wireshark dissects as USB: descriptors, mass storage, SCSI) and a
//! `usbredir` section in `session.json` (hellos, devices, transfers per
//! endpoint, errors, SCSI commands).
//!
//! ```text
//! ChannelTap ──TapEvent──> DecoderSink ──(own byte budget)──> usbredir thread (per session)
//!                          (try-send)                           MessageAssembler per direction
//!                                                               SpiceVMC payload (LZ4 inflated)
//!                                                               UsbredirDecoder (server = usb-guest,
//!                                                                 client = usb-host)
//!                                                               UsbmonConverter -> .usbmon.pcap
//!                                                               report -> tap::Reports
//! ```
//!
//! A channel whose usbredir stream breaks the protocol, or that the queue
//! cannot keep up with, stops being decoded (recorded in its report); its
//! bytes are still forwarded unchanged and its SPICE pcap stays complete.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use serde::Serialize;
use time::OffsetDateTime;

use super::{Decoder, DecoderSink, DecoderThreads, decoder_sink, vmc_payload};
use crate::flushing::FlushingFile;
use crate::framing::MessageAssembler;
use crate::msc::{Cbw, Csw, scsi_command_name};
use crate::protocol::{ChannelType, Direction};
use crate::report::rfc3339;
use crate::tap::{ChannelKey, Reports, TapEvent};
use crate::usbmon::{HEADER_LEN, UsbmonConverter, UsbmonRecord};
use crate::usbredir::{Packet, Side, TypeHeader, UsbredirDecoder, cap_names};

/// Data bytes of one transfer kept in the usbmon pcap (the rest is counted
/// in the record's length): enough for descriptors, CBWs, CSWs and the
/// first blocks of a read.
pub const KEEP_DATA: usize = 64 * 1024;

/// A session's usbredir decoder writing into `dir`; reports go to
/// `reports`, at most `budget` bytes wait in its queue. Its thread starts
/// with the session's first usbredir channel; its handle goes to `threads`.
pub fn sink(
    session_id: u32,
    dir: PathBuf,
    reports: Arc<dyn Reports>,
    budget: usize,
    threads: DecoderThreads,
) -> DecoderSink {
    let decoder = DecoderThread { dir, reports: reports.clone(), channels: HashMap::new(), names: HashSet::new() };
    decoder_sink("usbredir", &[ChannelType::USBREDIR], session_id, reports, budget, threads, decoder)
}

/// What `session.json` says of one usbredir channel.
#[derive(Debug, Default, Serialize)]
pub struct UsbredirReport {
    /// The usbmon pcap's file name.
    pub usbmon_pcap: Option<String>,
    /// The usb-guest's hello (QEMU).
    pub guest_hello: Option<HelloReport>,
    /// The usb-host's hello (the device side).
    pub host_hello: Option<HelloReport>,
    /// Devices connected, in order.
    pub devices: Vec<DeviceReport>,
    /// Completed transfers and their data bytes, by "type endpoint".
    pub transfers: BTreeMap<String, TransferCount>,
    /// Completions that did not succeed, by usbredir status name.
    pub errors: BTreeMap<String, u64>,
    /// Bulk-Only mass storage seen in the transfers.
    pub mass_storage: Option<MassStorageReport>,
    /// usbredir packets parsed.
    pub packets: u64,
    /// usbmon records written.
    pub usbmon_records: u64,
    /// Why decoding stopped early, if it did.
    pub stopped: Option<String>,
}

/// A hello: version string and capability names.
#[derive(Debug, Serialize)]
pub struct HelloReport {
    /// The version string.
    pub version: String,
    /// Capability names (`usbredirproto.h`).
    pub caps: Vec<String>,
}

/// One device as `usb_redir_device_connect` (and the interface and
/// endpoint information before it) described it.
#[derive(Debug, Serialize)]
pub struct DeviceReport {
    /// When it connected.
    pub connected: String,
    /// When it disconnected.
    pub disconnected: Option<String>,
    /// low, full, high, super.
    pub speed: String,
    /// bDeviceClass, bDeviceSubClass, bDeviceProtocol.
    pub class: [u8; 3],
    /// idVendor:idProduct in hex.
    pub vendor_product: String,
    /// bcdDevice in hex.
    pub bcd_device: Option<String>,
    /// Interfaces: number, class, subclass, protocol.
    pub interfaces: Vec<[u8; 4]>,
    /// Endpoints: address, transfer type, max packet size.
    pub endpoints: Vec<EndpointReport>,
}

/// One endpoint of a device.
#[derive(Debug, Serialize)]
pub struct EndpointReport {
    /// Address in hex (bit 7: IN).
    pub address: String,
    /// control, iso, bulk, interrupt.
    pub transfer_type: String,
    /// wMaxPacketSize.
    pub max_packet_size: Option<u16>,
}

/// Transfers and bytes.
#[derive(Debug, Default, Serialize)]
pub struct TransferCount {
    /// Completed transfers.
    pub transfers: u64,
    /// Data bytes they moved.
    pub bytes: u64,
}

/// SCSI over Bulk-Only Transport.
#[derive(Debug, Default, Serialize)]
pub struct MassStorageReport {
    /// Commands completed, by name.
    pub commands: BTreeMap<String, u64>,
    /// Commands whose CSW said failed or phase error.
    pub failed: u64,
    /// Blocks read by successful READ commands.
    pub blocks_read: u64,
    /// Bytes they moved (data transfer length minus residue).
    pub bytes_read: u64,
    /// Blocks written by successful WRITE commands.
    pub blocks_written: u64,
    /// Bytes they moved.
    pub bytes_written: u64,
}

struct ChannelState {
    channel_id: u8,
    assemblers: Option<[MessageAssembler; 2]>,
    decoder: UsbredirDecoder,
    converter: UsbmonConverter,
    pcap: Option<PcapWriter<FlushingFile>>,
    report: UsbredirReport,
    /// Interfaces and endpoints announced for the next device_connect.
    interfaces: Vec<[u8; 4]>,
    endpoints: Vec<EndpointReport>,
    /// CBWs waiting for their CSW, by tag.
    cbws: HashMap<u32, Cbw>,
}

struct DecoderThread {
    dir: PathBuf,
    reports: Arc<dyn Reports>,
    channels: HashMap<ChannelKey, ChannelState>,
    names: HashSet<String>,
}

impl Decoder for DecoderThread {
    fn event(&mut self, ev: TapEvent) {
        match ev {
            TapEvent::Open { key, channel_id, .. } => self.open(key, channel_id),
            TapEvent::StartMessages { key, kind } => {
                if let (Some(ch), Some(kind)) = (self.channels.get_mut(&key), kind) {
                    ch.assemblers = Some([MessageAssembler::new(kind), MessageAssembler::new(kind)]);
                }
            }
            TapEvent::Data { key, dir, at, bytes } => {
                if let Some(ch) = self.channels.get_mut(&key)
                    && ch.report.stopped.is_none()
                    && let Err(e) = ch.feed(dir, at, &bytes)
                {
                    tracing::warn!(key, error = %e, "usbredir decoding stopped for this channel; forwarding continues");
                    ch.report.stopped = Some(e);
                }
            }
            TapEvent::Close { key, .. } => self.close(key),
            TapEvent::Link { .. } => {}
        }
    }

    fn stop(&mut self, key: ChannelKey, reason: String) {
        if let Some(ch) = self.channels.get_mut(&key) {
            ch.report.stopped.get_or_insert(reason);
        }
    }

    fn finish(&mut self) {
        let keys: Vec<_> = self.channels.keys().copied().collect();
        for key in keys {
            self.close(key);
        }
    }
}

impl DecoderThread {
    fn open(&mut self, key: ChannelKey, channel_id: u8) {
        let mut name = format!("usbredir-{channel_id}.usbmon.pcap");
        let mut n = 1;
        while !self.names.insert(name.clone()) {
            name = format!("usbredir-{channel_id}.{n}.usbmon.pcap");
            n += 1;
        }
        let mut report = UsbredirReport::default();
        // usbmon fields are in the capturing host's byte order, which
        // readers take from the pcap header: little-endian both.
        let header = PcapHeader {
            snaplen: (HEADER_LEN + KEEP_DATA) as u32,
            datalink: DataLink::USB_LINUX_MMAPPED,
            endianness: pcap_file::Endianness::Little,
            ..PcapHeader::default()
        };
        let pcap = FlushingFile::create(&self.dir.join(&name))
            .map_err(|e| e.to_string())
            .and_then(|f| PcapWriter::with_header(f, header).map_err(|e| e.to_string()));
        let pcap = match pcap {
            Ok(p) => {
                report.usbmon_pcap = Some(name);
                Some(p)
            }
            Err(e) => {
                tracing::error!(file = name, error = %e, "cannot write the usbmon pcap");
                report.stopped = Some(format!("usbmon pcap: {e}"));
                None
            }
        };
        let state = ChannelState {
            channel_id,
            assemblers: None,
            decoder: UsbredirDecoder::new(KEEP_DATA),
            converter: UsbmonConverter::new(u16::from(channel_id) + 1, 1),
            pcap,
            report,
            interfaces: Vec::new(),
            endpoints: Vec::new(),
            cbws: HashMap::new(),
        };
        self.channels.insert(key, state);
    }

    fn close(&mut self, key: ChannelKey) {
        let Some(mut ch) = self.channels.remove(&key) else { return };
        if let Some(p) = ch.pcap.take()
            && let Err(e) = p.into_writer().flush()
        {
            tracing::error!(channel_id = ch.channel_id, error = %e, "finishing the usbmon pcap failed");
        }
        if let Some(d) = ch.report.devices.last_mut() {
            d.disconnected.get_or_insert_with(|| rfc3339(OffsetDateTime::now_utc()));
        }
        match serde_json::to_value(&ch.report) {
            Ok(v) => self.reports.consumer_report(key, "usbredir", v),
            Err(e) => tracing::error!(error = %e, "usbredir report not serialisable"),
        }
    }
}

impl ChannelState {
    /// Assembles SPICE messages from a chunk and follows the usbredir
    /// packets they carry.
    fn feed(&mut self, dir: Direction, at: SystemTime, bytes: &[u8]) -> Result<(), String> {
        let Some(assemblers) = &mut self.assemblers else { return Ok(()) };
        let messages = assemblers[dir.index()].feed(bytes).map_err(|e| e.to_string())?;
        // The SPICE server is QEMU's usb-redir device: the usb-guest.
        let side = if dir == Direction::ServerToClient { Side::Guest } else { Side::Host };
        let mut packets = Vec::new();
        for (header, body) in messages {
            let Some(payload) = vmc_payload(header.msg_type, &body).map_err(|e| e.to_string())? else { continue };
            self.decoder.feed(side, &payload, &mut packets).map_err(|e| e.to_string())?;
        }
        for p in packets {
            self.packet(&p, at)?;
        }
        Ok(())
    }

    fn packet(&mut self, p: &Packet, at: SystemTime) -> Result<(), String> {
        self.report.packets += 1;
        let when = || rfc3339(OffsetDateTime::from(at));
        match &p.header {
            TypeHeader::Hello { version, caps } => {
                let h = Some(HelloReport { version: version.clone(), caps: cap_names(caps) });
                match p.side {
                    Side::Guest => self.report.guest_hello = h,
                    Side::Host => self.report.host_hello = h,
                }
            }
            TypeHeader::InterfaceInfo { interfaces } => {
                self.interfaces = interfaces.iter().map(|i| [i.interface, i.class, i.subclass, i.protocol]).collect();
            }
            TypeHeader::EpInfo { endpoints } => {
                self.endpoints = endpoints
                    .iter()
                    .map(|e| EndpointReport {
                        address: format!("{:#04x}", e.address),
                        transfer_type: transfer_type_name(e.transfer_type).to_string(),
                        max_packet_size: e.max_packet_size,
                    })
                    .collect();
            }
            TypeHeader::DeviceConnect {
                speed,
                class,
                subclass,
                protocol,
                vendor_id,
                product_id,
                device_version_bcd,
            } => {
                self.report.devices.push(DeviceReport {
                    connected: when(),
                    disconnected: None,
                    speed: ["low", "full", "high", "super"].get(usize::from(*speed)).unwrap_or(&"unknown").to_string(),
                    class: [*class, *subclass, *protocol],
                    vendor_product: format!("{vendor_id:04x}:{product_id:04x}"),
                    bcd_device: device_version_bcd.map(|v| format!("{v:04x}")),
                    interfaces: std::mem::take(&mut self.interfaces),
                    endpoints: std::mem::take(&mut self.endpoints),
                });
            }
            TypeHeader::DeviceDisconnect => {
                if let Some(d) = self.report.devices.last_mut() {
                    d.disconnected = Some(when());
                }
            }
            _ => {}
        }
        if let Some(rec) = self.converter.convert(p) {
            self.count(p, &rec);
            self.write(&rec, p, at)?;
        }
        Ok(())
    }

    /// Transfer counts, errors and mass-storage commands of one record.
    fn count(&mut self, p: &Packet, rec: &UsbmonRecord) {
        let in_dir = rec.endpoint & 0x80 != 0;
        if rec.kind == b'C' {
            let key = format!("{} {:#04x}", usbmon_type_name(rec.xfer_type), rec.endpoint);
            let t = self.report.transfers.entry(key).or_default();
            t.transfers += 1;
            t.bytes += u64::from(if in_dir { p.data_len } else { rec.length });
            if rec.status != 0 {
                *self.report.errors.entry(status_name(rec.status).to_string()).or_insert(0) += 1;
            }
        }
        if rec.xfer_type != crate::usbmon::xfer::BULK {
            return;
        }
        if rec.kind == b'S'
            && !in_dir
            && let Ok(cbw) = Cbw::parse(&p.data)
        {
            self.report.mass_storage.get_or_insert_with(MassStorageReport::default);
            self.cbws.insert(cbw.tag, cbw);
        } else if rec.kind == b'C'
            && in_dir
            && let Some(csw) = Csw::parse(&p.data)
        {
            let Some(cbw) = self.cbws.remove(&csw.tag) else { return };
            let ms = self.report.mass_storage.get_or_insert_with(MassStorageReport::default);
            *ms.commands.entry(scsi_command_name(cbw.opcode())).or_insert(0) += 1;
            if csw.status != 0 {
                ms.failed += 1;
                return;
            }
            let moved = u64::from(cbw.data_transfer_length.saturating_sub(csw.residue));
            match (cbw.is_read(), cbw.transfer_blocks()) {
                (Some(true), Some(n)) => {
                    ms.blocks_read += u64::from(n);
                    ms.bytes_read += moved;
                }
                (Some(false), Some(n)) => {
                    ms.blocks_written += u64::from(n);
                    ms.bytes_written += moved;
                }
                _ => {}
            }
        }
    }

    fn write(&mut self, rec: &UsbmonRecord, p: &Packet, at: SystemTime) -> Result<(), String> {
        let Some(pcap) = &mut self.pcap else { return Ok(()) };
        let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let bytes = rec.encode(since.as_secs() as i64, since.subsec_micros() as i32);
        // The original length counts the data the transfer really carried.
        let orig = (HEADER_LEN as u64 + u64::from(p.data_len)).min(u64::from(u32::MAX)) as u32;
        let orig = orig.max(bytes.len() as u32);
        if let Err(e) = pcap.write_packet(&PcapPacket::new(since, orig, &bytes)) {
            self.pcap = None;
            return Err(format!("usbmon pcap write failed: {e}"));
        }
        self.report.usbmon_records += 1;
        Ok(())
    }
}

/// USB transfer type names in the USB numbering `ep_info` uses (USB 2.0
/// table 9-13: control 0, isochronous 1, bulk 2, interrupt 3).
fn transfer_type_name(t: u8) -> &'static str {
    match t {
        0 => "control",
        1 => "iso",
        2 => "bulk",
        3 => "interrupt",
        _ => "invalid",
    }
}

/// The same names in usbmon's `xfer_type` numbering (ISO 0, interrupt 1,
/// control 2, bulk 3).
fn usbmon_type_name(t: u8) -> &'static str {
    match t {
        crate::usbmon::xfer::ISO => "iso",
        crate::usbmon::xfer::INTERRUPT => "interrupt",
        crate::usbmon::xfer::CONTROL => "control",
        _ => "bulk",
    }
}

/// The usbredir status name behind a completion's errno.
fn status_name(errno: i32) -> &'static str {
    match errno {
        -2 => "cancelled",
        -22 => "inval",
        -71 => "ioerror",
        -32 => "stall",
        -110 => "timeout",
        -75 => "babble",
        _ => "error",
    }
}
