//! Fuzzes the owner-file record reader: any bytes decode or are refused without a
//! panic; a decoded record encodes back to a record that decodes the same. The input is
//! padded to the record size and checksummed, so the fields themselves get fuzzed.
#![no_main]

use musefs_core::state::{seal, OwnerRecord, FORMAT_VERSION, MAGIC, RECORD_LEN};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = OwnerRecord::decode(data);
    let mut b = data.to_vec();
    b.resize(RECORD_LEN, 0);
    b[..8].copy_from_slice(&MAGIC);
    b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    seal(&mut b);
    if let Some(r) = OwnerRecord::decode(&b) {
        let again = OwnerRecord::decode(&r.encode()).expect("an encoded record decodes");
        assert_eq!(again.pid, r.pid);
        assert_eq!(again.generation, r.generation);
        assert_eq!(again.mountpoint, r.mountpoint);
    }
});
