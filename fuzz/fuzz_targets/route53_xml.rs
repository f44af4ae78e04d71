//! Route53's XML answers (hosted zones, change info, record sets, errors).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        stoke_route53::fuzz_answers(text);
    }
});
