//! The link stage: `SpiceLinkHeader`, `SpiceLinkMess`, `SpiceLinkReply`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use spicetap::link::{LinkHeader, LinkMess, LinkReply};

fuzz_target!(|data: &[u8]| {
    let _ = LinkHeader::parse(data.get(..16).unwrap_or(data), LinkMess::FIXED_SIZE);
    let _ = LinkHeader::parse(data.get(..16).unwrap_or(data), 4);
    let _ = LinkMess::parse(data);
    let _ = LinkReply::parse(data);
});
