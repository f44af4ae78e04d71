//! `## template: jinja` user-data: rendered before it is read, with the instance data
//! cloud-init's templates are written against (`v1.*`, `ds.meta_data.*`) and stoke's
//! own variables (metadata and `vars:`) at the top level. An undefined variable is an
//! error naming it and its line, not an empty string: a template that silently renders
//! `hostname: ""` would be worse than one that is reported and skipped.

use std::collections::BTreeMap;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Map, Value, json};
use stoke_api::InstanceData;

/// Instructions a template may execute: a real one takes hundreds; this is some milliseconds.
const MAX_FUEL: u64 = 2_000_000;

/// The rendered text a template may produce. Fuel counts instructions, not bytes: one
/// instruction can write a string of 100 MB (minijinja's cap on `"x" * n`), and a loop of
/// them exhausted the memory (found by the `template` fuzz target).
const MAX_RENDERED: usize = 16 * 1024 * 1024;

/// The variables a template sees.
pub fn template_context(instance: &InstanceData, vars: &BTreeMap<String, String>) -> Value {
    let cloud_name = match instance.datasource.as_str() {
        "ec2" => "aws",
        other => other,
    };
    let v1 = json!({
        "instance_id": instance.instance_id,
        "local_hostname": instance.local_hostname,
        "region": instance.region,
        "availability_zone": instance.availability_zone,
        "instance_type": instance.instance_type,
        "cloud_name": cloud_name,
        "platform": instance.datasource,
        "public_ssh_keys": instance.public_keys,
    });
    // Tags are one object (`tags.Name`, `tags["my-key"]`), not flat `tags.X` names.
    let mut meta: Map<String, Value> = instance
        .vars()
        .into_iter()
        .filter(|(k, _)| !k.starts_with(stoke_api::TAG_PREFIX))
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    meta.insert("tags".into(), json!(instance.tags));
    let mut top: Map<String, Value> = vars
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    for (k, v) in &meta {
        top.entry(k.clone()).or_insert_with(|| v.clone());
    }
    top.insert("v1".into(), v1);
    top.insert("ds".into(), json!({ "meta_data": meta }));
    Value::Object(top)
}

/// Renders a template body (its `## template: jinja` line already removed).
pub fn render(body: &str, context: &Value) -> Result<String, String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // User-data is untrusted and rendered in the boot's path: nested loops (each `range` is
    // capped at 10,000, not their product) must end in an error, not hold the boot for hours.
    env.set_fuel(Some(MAX_FUEL));
    // As cloud-init: the trailing newline of the document is kept.
    let syntax = SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
        .map_err(describe)?;
    env.set_syntax(syntax);
    let tmpl = env.template_from_str(body).map_err(describe)?;
    let mut out = Bounded(Vec::new());
    tmpl.render_captured_to(Serde(context), &mut out)
        .map_err(|e| {
            if e.kind() == minijinja::ErrorKind::WriteFailure {
                format!("the rendered text is over {} MiB", MAX_RENDERED >> 20)
            } else {
                describe(e)
            }
        })?;
    String::from_utf8(out.0).map_err(|_| "the rendered text is not UTF-8".to_string())
}

/// The rendered text, refused past [`MAX_RENDERED`].
struct Bounded(Vec<u8>);

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_RENDERED {
            return Err(std::io::Error::other("over the cap"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// "line N: what", counting the header line the user sees in their file.
fn describe(e: minijinja::Error) -> String {
    let what = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    match e.line() {
        Some(l) => format!("line {}: {what}", l + 1),
        None => what,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Value {
        let inst = InstanceData {
            datasource: "ec2".into(),
            instance_id: "i-0abc".parse().unwrap(),
            region: Some("eu-west-1".into()),
            local_hostname: Some("ip-10-0-0-1".into()),
            ..InstanceData::default()
        };
        let vars = BTreeMap::from([("role".to_string(), "web".to_string())]);
        template_context(&inst, &vars)
    }

    #[test]
    fn cloud_init_names_and_stoke_vars_render() {
        let out = render(
            "#cloud-config\nhostname: {{ role }}-{{ v1.instance_id }}\n# {{ v1.cloud_name }} {{ v1.region }} {{ ds.meta_data.local_hostname }}\n",
            &ctx(),
        )
        .unwrap();
        assert_eq!(
            out,
            "#cloud-config\nhostname: web-i-0abc\n# aws eu-west-1 ip-10-0-0-1\n"
        );
    }

    /// Found by the template fuzz target (a timeout): an empty sequence repeated 7.8 × 10^14
    /// times is one instruction (no fuel spent), and printing or looping over it stepped
    /// through every empty repetition. minijinja 3 makes it an empty sequence at once, and
    /// caps the length of a repeated one.
    #[test]
    fn an_empty_sequence_repeated_for_ever_is_empty_at_once() {
        assert_eq!(
            render("[{{ () * 777777777777774 }}]", &ctx()).unwrap(),
            "[()]"
        );
        assert_eq!(
            render(
                "{% for x in [] * 777777777777774 %}{{ x }}{% endfor %}.",
                &ctx()
            )
            .unwrap(),
            "."
        );
        let err = render("{{ [1] * 777777777777774 }}", &ctx()).unwrap_err();
        assert!(err.contains("too large"), "{err}");
    }

    /// Found by the template fuzz target: two nested loops of 10,000 ran for minutes. The
    /// fuel error is what bounds it (no wall-clock assert: a loaded CI machine is no clock).
    #[test]
    fn a_template_that_would_run_for_ever_is_an_error_at_once() {
        let err = render(
            "{% for a in range(10000) %}{% for b in range(10000) %}x{% endfor %}{% endfor %}",
            &ctx(),
        )
        .unwrap_err();
        assert!(err.contains("fuel"), "{err}");
        let many = "{% for a in range(100) %}{{ a }}{% endfor %}";
        assert_eq!(
            render(many, &ctx()).unwrap().len(),
            190,
            "ordinary loops still run"
        );
    }

    #[test]
    fn a_template_that_writes_gigabytes_is_an_error_not_an_exhausted_memory() {
        // The fuzzer's input: each of 230 turns writes a 10 MB string (2 GB in all).
        let err = render(
            "{% for a in range(60)~(3) %}{{551615*instance_id }}{% endfor %}\n",
            &ctx(),
        )
        .unwrap_err();
        assert!(err.contains("over 16 MiB"), "{err}");
        // Under the cap, a long text renders whole.
        let out = render("{{ 'x' * 1000000 }}", &ctx()).unwrap();
        assert_eq!(out.len(), 1_000_000);
    }

    #[test]
    fn tags_are_one_object() {
        let inst = InstanceData {
            datasource: "ec2".into(),
            instance_id: "i-0abc".parse().unwrap(),
            local_ipv6: Some("2600::1".into()),
            tags: [
                ("role".to_string(), "api".to_string()),
                ("app:tier".to_string(), "db".to_string()),
            ]
            .into(),
            ..InstanceData::default()
        };
        let ctx = template_context(&inst, &BTreeMap::new());
        let out = render(
            "{{ tags.role }} {{ tags['app:tier'] }} {{ ds.meta_data.tags.role }} {{ local_ipv6 }}",
            &ctx,
        )
        .unwrap();
        assert_eq!(out, "api db api 2600::1");
        let err = render("{{ tags.nope }}", &ctx).unwrap_err();
        assert!(err.contains("undefined"), "{err}");
    }

    #[test]
    fn an_undefined_variable_is_an_error_with_its_line() {
        let err = render("#cloud-config\n\nhostname: {{ v1.nope.x }}\n", &ctx()).unwrap_err();
        assert!(err.starts_with("line 4: "), "{err}");
        let err = render("{% if %}", &ctx()).unwrap_err();
        assert!(err.starts_with("line 2: syntax error"), "{err}");
    }
}
