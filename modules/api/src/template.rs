use std::collections::BTreeMap;

/// A `{{ name }}` placeholder that cannot be filled.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TemplateError {
    #[error("template {template:?}: unknown variable `{name}` (known: {known})")]
    Unknown {
        template: String,
        name: String,
        known: String,
    },
    #[error("template {template:?}: unclosed `{{{{`")]
    Unclosed { template: String },
}

/// Renders `{{ name }}` placeholders from `vars`. Deliberately tiny: no logic,
/// no filters, so a hostname template cannot do anything surprising at boot.
pub fn render(template: &str, vars: &BTreeMap<String, String>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| TemplateError::Unclosed {
            template: template.to_string(),
        })?;
        let name = after[..end].trim();
        match vars.get(name) {
            Some(v) => out.push_str(v),
            None => {
                return Err(TemplateError::Unknown {
                    template: template.to_string(),
                    name: name.to_string(),
                    known: vars.keys().cloned().collect::<Vec<_>>().join(", "),
                });
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_reports_unknown() {
        let mut v = BTreeMap::new();
        v.insert("role".to_string(), "web".to_string());
        v.insert("uuid8".to_string(), "0a1b2c3d".to_string());
        assert_eq!(render("{{ role }}-{{uuid8}}", &v).unwrap(), "web-0a1b2c3d");
        assert_eq!(render("plain", &v).unwrap(), "plain");
        let err = render("{{ rol }}", &v).unwrap_err();
        assert!(err.to_string().contains("unknown variable `rol`"), "{err}");
        assert!(err.to_string().contains("role"), "{err}");
        assert!(matches!(
            render("{{ role", &v),
            Err(TemplateError::Unclosed { .. })
        ));
    }
}
