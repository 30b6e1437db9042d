//! libFuzzer entry for `rtcd::fuzz::rebase` (see that function for what it drives and asserts).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rtcd::fuzz::rebase(data);
});
