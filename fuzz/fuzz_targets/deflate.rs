#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sockeye_proto::fuzzing::deflate(data));
