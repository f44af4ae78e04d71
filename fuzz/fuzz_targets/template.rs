//! The template renderers: stoke's `{{ var }}` templates (hostname, ...) and user-data's
//! `## template: jinja` parts (minijinja, with the instance's context).
#![no_main]

use std::collections::BTreeMap;

#[path = "../../src/datasource/jinja.rs"]
#[allow(dead_code)]
mod jinja;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut vars = BTreeMap::new();
    vars.insert("role".to_string(), "web".to_string());
    vars.insert("uuid8".to_string(), "0123abcd".to_string());
    let _ = stoke_api::render(text, &vars);
    let instance = stoke_api::InstanceData {
        instance_id: stoke_api::InstanceId::new("i-0123456789abcdef0").unwrap_or_default(),
        ..Default::default()
    };
    let context = jinja::template_context(&instance, &vars);
    let _ = jinja::render(text, &context);
});
