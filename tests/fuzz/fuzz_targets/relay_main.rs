//! What the relay reads on a main channel from the server: the MAIN_INIT
//! sniffer that learns the session id, and the CHANNELS_LIST rewrite of
//! `--usb-disk` / `--share-dir`, on a stream cut anywhere (the first byte
//! picks the header kind and the chunk size).
#![no_main]
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use spicetap::framing::Framer;
use spicetap::link::HeaderKind;
use spicetap::protocol::{ChannelType, Direction};
use spicetap::proxy::channel::{SPICE_MSG_MAIN_CHANNELS_LIST, Withhold, withhold_channels};
use spicetap::proxy::relay::{MessageFilter, Observer};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let kind = if first & 1 == 0 { HeaderKind::Mini } else { HeaderKind::Full };
    let chunk = usize::from(first >> 1).max(1);
    let hook = Box::new(|_id: u32| {});
    let mut observer =
        Observer::new(ChannelType::MAIN, Direction::ServerToClient, Some(Framer::new(kind)), None, Some(hook), false);
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let choice = Withhold { usbredir: true, webdav: true };
    let rewrite = withhold_channels(choice, tx, Arc::new(Mutex::new(Vec::new())));
    let mut filter = MessageFilter::new(kind, |t| t == 116).with_rewrite(SPICE_MSG_MAIN_CHANNELS_LIST, rewrite);
    let mut out = Vec::new();
    for c in rest.chunks(chunk) {
        if observer.observe(&Bytes::copy_from_slice(c), SystemTime::UNIX_EPOCH).is_err() {
            break;
        }
        if filter.apply(c, &mut out).is_err() {
            break;
        }
        out.clear();
    }
});
