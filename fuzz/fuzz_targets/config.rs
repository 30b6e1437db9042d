//! libFuzzer entry for `rtcd::fuzz::config` (see that function for what it drives and asserts).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rtcd::fuzz::config(data);
});
