//! User-data decoding (gzip, MIME multiparts, headers, transfer encodings, jinja parts): any
//! bytes give user-data or an error, never a panic, a stack overflow or a hang.
#![no_main]

#[path = "../../src/datasource/userdata.rs"]
#[allow(dead_code)]
mod userdata;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // With a stand-in renderer for `## template: jinja` parts (the template target fuzzes the
    // real one), failing some, as a template error would.
    let render = |body: &str| -> Result<String, String> {
        if body.len() % 7 == 0 {
            Err("no".into())
        } else {
            Ok(body.to_string())
        }
    };
    let _ = userdata::decode_rendering(data, &render);
});
