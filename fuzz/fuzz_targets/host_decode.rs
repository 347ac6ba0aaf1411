//! The host's reader of worker output: frames, messages, batch items.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match procpool::__private::fuzz::host_decode(data, 1 << 20) {
        Ok(_) | Err(procpool::Error::Protocol { .. }) => {}
        Err(other) => panic!("not a protocol error: {other:?}"),
    }
});
