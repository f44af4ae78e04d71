//! `authorized_keys` lines (options, quoting, key types, base64 blobs, comments).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines() {
        if let Ok(Some(key)) = stoke_ssh::keyline::parse(line)
            && let Some(opts) = key.options.as_deref()
        {
            let _ = stoke_ssh::keyline::check_options(opts);
        }
    }
});
