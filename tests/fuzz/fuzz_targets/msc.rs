//! USB mass storage: Bulk-Only CBWs and the SCSI commands in them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = spicetap::msc::Cbw::parse(data);
});
