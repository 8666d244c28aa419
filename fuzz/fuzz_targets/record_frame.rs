#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nsq_fuzz::record_frame::run(data));
