//! The port decoder on synthetic channels: port messages, the mux split
//! across SPICE messages, LZ4 data, id reuse, hostile streams.

use std::sync::Mutex;

use bytes::Bytes;
use pcap_file::pcap::PcapReader;

use super::*;
use crate::framing::mini;
use crate::link::HeaderKind;
use crate::report::ChannelReport;
use crate::webdav_mux::encode_frame;

#[derive(Debug, Default)]
struct Collect(Mutex<Vec<(ChannelKey, serde_json::Value)>>);

impl Reports for Collect {
    fn channel_opened(&self, _: ChannelKey, _: Box<ChannelReport>) {}
    fn channel_closed(&self, _: ChannelKey, _: Box<ChannelReport>) {}
    fn consumer_report(&self, key: ChannelKey, consumer: &'static str, report: serde_json::Value) {
        assert_eq!(consumer, "port");
        self.0.lock().unwrap().push((key, report));
    }
    fn consumer_done(&self, _: &'static str) {}
    fn session_ended(&self, _: OffsetDateTime, _: usize) {}
}

struct Bed {
    dir: tempfile::TempDir,
    reports: Arc<Collect>,
    decoder: PortDecoder,
    t: SystemTime,
}

impl Bed {
    fn new(redact: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let reports = Arc::new(Collect::default());
        let decoder = PortDecoder {
            dir: dir.path().to_path_buf(),
            reports: reports.clone(),
            redact_paths: redact,
            channels: HashMap::new(),
            names: HashSet::new(),
        };
        Self { dir, reports, decoder, t: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000) }
    }

    fn open(&mut self, key: ChannelKey, channel_type: ChannelType) {
        self.decoder.event(TapEvent::Open { key, channel_type, channel_id: 0, at: self.t });
        self.decoder.event(TapEvent::StartMessages { key, kind: Some(HeaderKind::Mini) });
    }

    fn send(&mut self, key: ChannelKey, dir: Direction, bytes: &[u8]) {
        self.t += std::time::Duration::from_millis(1);
        self.decoder.event(TapEvent::Data { key, dir, at: self.t, bytes: Bytes::copy_from_slice(bytes) });
    }

    fn close(&mut self, key: ChannelKey) -> serde_json::Value {
        self.decoder.event(TapEvent::Close { key, first: Direction::ClientToServer, at: self.t });
        let r = self.reports.0.lock().unwrap();
        r.iter().find(|(k, _)| *k == key).unwrap().1.clone()
    }

    /// Per TCP port pair: the client port and each direction's payload.
    fn conversations(&self, file: &str) -> Vec<(u16, Vec<u8>, Vec<u8>, usize)> {
        let data = std::fs::read(self.dir.path().join(file)).unwrap();
        let mut r = PcapReader::new(&data[..]).unwrap();
        let mut out: Vec<(u16, Vec<u8>, Vec<u8>, usize)> = Vec::new();
        while let Some(p) = r.next_packet() {
            let p = p.unwrap();
            let s = etherparse::SlicedPacket::from_ethernet(&p.data).unwrap();
            let Some(etherparse::TransportSlice::Tcp(t)) = s.transport else { panic!("not tcp") };
            let (port, up) =
                if t.destination_port() == HTTP_PORT { (t.source_port(), true) } else { (t.destination_port(), false) };
            if t.syn() && !t.ack() {
                out.push((port, Vec::new(), Vec::new(), 0));
            }
            let c = out.iter_mut().rev().find(|c| c.0 == port).unwrap();
            if up { &mut c.1 } else { &mut c.2 }.extend_from_slice(t.payload());
            if t.fin() {
                c.3 += 1;
            }
        }
        out
    }
}

fn port_init(name: &str, opened: bool) -> Vec<u8> {
    let mut b = (name.len() as u32 + 1).to_le_bytes().to_vec();
    b.extend_from_slice(&9u32.to_le_bytes());
    b.push(u8::from(opened));
    b.extend_from_slice(name.as_bytes());
    b.push(0);
    mini(crate::port::PORT_INIT, &b)
}

const GET: &[u8] = b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
const PUT: &[u8] = b"PUT /new.txt HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
const CREATED: &[u8] = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";

#[test]
fn webdav_mux_clients_become_http_conversations() {
    let mut b = Bed::new(false);
    b.open(7, ChannelType::WEBDAV);
    b.send(7, Direction::ServerToClient, &port_init("org.spice-space.webdav.0", true));
    b.send(7, Direction::ServerToClient, &mini(crate::port::PORT_EVENT, &[0]));
    // The guest's stream: a GET on id 1 whose frame is split across two
    // SPICE messages, then a PUT on id -5 in one LZ4-compressed message.
    let mut guest = encode_frame(1, GET);
    let cut = 7;
    let mut msgs = mini(101, &guest[..cut]);
    msgs.extend(mini(101, &guest[cut..]));
    b.send(7, Direction::ServerToClient, &msgs[..3]);
    b.send(7, Direction::ServerToClient, &msgs[3..]);
    guest = encode_frame(-5, PUT);
    let mut lz = vec![1u8];
    lz.extend((guest.len() as u32).to_le_bytes());
    lz.extend(lz4_flex::block::compress(&guest));
    b.send(7, Direction::ServerToClient, &mini(102, &lz));
    // The share answers both and closes them; the guest then reuses id 1.
    let mut share = encode_frame(1, OK);
    share.extend(encode_frame(1, b""));
    share.extend(encode_frame(-5, CREATED));
    share.extend(encode_frame(-5, b""));
    b.send(7, Direction::ClientToServer, &mini(101, &share));
    b.send(7, Direction::ServerToClient, &mini(101, &encode_frame(1, GET)));
    // A close of an unknown id changes nothing.
    b.send(7, Direction::ServerToClient, &mini(101, &encode_frame(99, b"")));
    b.send(7, Direction::ClientToServer, &mini(crate::port::PORTC_EVENT, &[1]));
    let r = b.close(7);

    assert_eq!(r["name"], "org.spice-space.webdav.0");
    assert_eq!(r["opened_at_init"], true);
    let events: Vec<_> =
        r["events"].as_array().unwrap().iter().map(|e| (e["from"].clone(), e["event"].clone())).collect();
    assert_eq!(events, [("server".into(), "opened".into()), ("client".into(), "closed".into())]);
    let w = &r["webdav"];
    assert_eq!(w["http_pcap"], "webdav-0.http.pcap");
    assert_eq!(w["clients"], 3);
    assert_eq!(w["requests"], serde_json::json!({"GET": 2, "PUT": 1}));
    assert_eq!(w["responses"], serde_json::json!({"200": 1, "201": 1}));
    assert_eq!(w["paths"], serde_json::json!(["/hello.txt", "/new.txt"]));
    assert_eq!(w["bytes_from_guest"], 2 * GET.len() + PUT.len());
    assert_eq!(w["bytes_to_guest"], OK.len() + CREATED.len());
    assert!(r["stopped"].is_null(), "{r}");

    let convs = b.conversations("webdav-0.http.pcap");
    assert_eq!(convs.len(), 3, "id 1 used twice makes two conversations");
    assert_eq!((convs[0].1.as_slice(), convs[0].2.as_slice(), convs[0].3), (GET, OK, 2));
    assert_eq!((convs[1].1.as_slice(), convs[1].2.as_slice(), convs[1].3), (PUT, CREATED, 2));
    assert_eq!((convs[2].1.as_slice(), convs[2].2.as_slice(), convs[2].3), (GET, &b""[..], 2));
    assert_eq!(convs.iter().map(|c| c.0).collect::<Vec<_>>(), [49152, 49153, 49154]);
}

#[test]
fn named_ports_record_name_and_events_only() {
    let mut b = Bed::new(false);
    b.open(3, ChannelType::PORT);
    b.send(3, Direction::ServerToClient, &port_init("org.qemu.monitor.qmp.0", false));
    b.send(3, Direction::ServerToClient, &mini(crate::port::PORT_EVENT, &[0]));
    b.send(3, Direction::ServerToClient, &mini(101, &encode_frame(1, GET)));
    let r = b.close(3);
    assert_eq!(r["name"], "org.qemu.monitor.qmp.0");
    assert_eq!(r["opened_at_init"], false);
    assert_eq!(r["events"][0]["event"], "opened");
    assert!(r["webdav"].is_null());
    assert_eq!(std::fs::read_dir(b.dir.path()).unwrap().count(), 0, "no HTTP pcap for a named port");
}

#[test]
fn paths_are_hashed_on_request() {
    let mut b = Bed::new(true);
    b.open(1, ChannelType::WEBDAV);
    b.send(1, Direction::ServerToClient, &mini(101, &encode_frame(4, GET)));
    let r = b.close(1);
    assert_eq!(r["webdav"]["paths_redacted"], true);
    assert_eq!(r["webdav"]["paths"], serde_json::json!([redacted("/hello.txt")]));
    assert!(!r.to_string().contains("hello"), "{r}");
    assert!(redacted("/x").starts_with("sha256:") && redacted("/x").len() == 7 + 16);
}

#[test]
fn hostile_streams_stop_the_decoder_or_the_http_count_only() {
    // A bad PORT_INIT stops decoding of the channel.
    let mut b = Bed::new(false);
    b.open(1, ChannelType::WEBDAV);
    b.send(1, Direction::ServerToClient, &mini(crate::port::PORT_INIT, &[0xff, 0xff, 0xff, 0xff, 9, 0, 0, 0, 0]));
    b.send(1, Direction::ServerToClient, &mini(101, &encode_frame(4, GET)));
    let r = b.close(1);
    assert!(r["stopped"].as_str().unwrap().contains("port name"), "{r}");
    assert_eq!(r["webdav"]["clients"], 0);

    // Bad LZ4 stops it too.
    let mut b = Bed::new(false);
    b.open(1, ChannelType::WEBDAV);
    b.send(1, Direction::ServerToClient, &mini(102, &[1, 10, 0, 0, 0, 0xff]));
    assert!(b.close(1)["stopped"].as_str().unwrap().contains("LZ4"));

    // Too many clients open at once.
    let mut b = Bed::new(false);
    b.open(1, ChannelType::WEBDAV);
    let mut many = Vec::new();
    for id in 0..=MAX_OPEN_CLIENTS as i64 {
        many.extend(encode_frame(id, b"G"));
    }
    b.send(1, Direction::ServerToClient, &mini(101, &many));
    let r = b.close(1);
    assert!(r["stopped"].as_str().unwrap().contains("mux clients"), "{r}");
    assert_eq!(r["webdav"]["clients"], MAX_OPEN_CLIENTS);

    // Garbage HTTP on one client: still in the pcap, no longer counted.
    let mut b = Bed::new(false);
    b.open(1, ChannelType::WEBDAV);
    let mut s = encode_frame(1, b"\x01\x02\x03 nonsense\r\n\r\n");
    s.extend(encode_frame(2, GET));
    b.send(1, Direction::ServerToClient, &mini(101, &s));
    let r = b.close(1);
    assert!(r["stopped"].is_null());
    assert_eq!(r["webdav"]["http_unfollowed"], 1);
    assert_eq!(r["webdav"]["requests"], serde_json::json!({"GET": 1}));
    assert_eq!(b.conversations("webdav-0.http.pcap")[0].1, b"\x01\x02\x03 nonsense\r\n\r\n");
}
