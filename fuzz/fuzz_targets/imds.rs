//! Answers of the EC2 instance metadata service: text leaves (one value, listings, HTML pages
//! from a captive portal) and the JSON leaf of the instance profile's credentials.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let path = "meta-data/placement/region";
    let _ = stoke_imds::text(path, data);
    let _ = stoke_imds::value_of(path, data);
    let _ = stoke_imds::listing_of("meta-data/public-keys/", data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = stoke_aws::fuzz_imds_credentials(text);
    }
});
