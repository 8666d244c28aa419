#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nsq_fuzz::engine_ops::run(data));
