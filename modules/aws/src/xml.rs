//! The code and message of an AWS error answer (REST-XML and Query APIs share the shapes).

use roxmltree::{Document, Node};

/// The code and message of an error answer: Route53's
/// `<ErrorResponse><Error><Code/><Message/></Error></ErrorResponse>`, the bare
/// `<Error>` or `<ErrorResponse><Errors><Error>` some look-alikes send, or the older
/// `<InvalidChangeBatch><Messages><Message/>…` form (the root names the code).
pub fn error(body: &str) -> Option<(String, Option<String>)> {
    let doc = Document::parse(body).ok()?;
    let root = doc.root_element();
    let err = root
        .descendants()
        .find(|n| n.has_tag_name("Error"))
        .unwrap_or(root);
    let message = field(err, "Message").or_else(|| {
        let msgs: Vec<String> = child(err, "Messages")?
            .children()
            .filter(|n| n.has_tag_name("Message"))
            .map(text)
            .collect();
        (!msgs.is_empty()).then(|| msgs.join("; "))
    });
    match field(err, "Code") {
        Some(code) => Some((code, message)),
        None if err == root && !root.has_tag_name("ErrorResponse") && message.is_some() => {
            Some((root.tag_name().name().to_string(), message))
        }
        None => None,
    }
}

/// The first child element named `name`.
pub fn child<'a, 'i>(n: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    n.children().find(|c| c.has_tag_name(name))
}

/// All the text inside an element (entities and CDATA resolved).
pub fn text(n: Node) -> String {
    n.descendants()
        .filter(|d| d.is_text())
        .filter_map(|d| d.text())
        .collect()
}

/// The trimmed text of child `name`, if present and not empty.
pub fn field(n: Node, name: &str) -> Option<String> {
    child(n, name)
        .map(|c| text(c).trim().to_string())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_in_each_shape() {
        let route53 = r#"<?xml version="1.0"?>
<ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Error><Type>Sender</Type>
<Code>Throttling</Code><Message>Rate exceeded &amp; more</Message></Error><RequestId>x</RequestId></ErrorResponse>"#;
        assert_eq!(
            error(route53),
            Some(("Throttling".into(), Some("Rate exceeded & more".into())))
        );
        let bare = "<Error><Code>AccessDenied</Code><Message>no</Message></Error>";
        assert_eq!(
            error(bare),
            Some(("AccessDenied".into(), Some("no".into())))
        );
        let listed = "<ErrorResponse><Errors><Error><Code>SignatureDoesNotMatch</Code>\
                      <Message>m</Message></Error></Errors></ErrorResponse>";
        assert_eq!(
            error(listed),
            Some(("SignatureDoesNotMatch".into(), Some("m".into())))
        );
        let old = r#"<InvalidChangeBatch xmlns="https://route53.amazonaws.com/doc/2013-04-01/">
<Messages><Message>Tried to delete x but it was not found</Message><Message>and y</Message></Messages>
<RequestId>r</RequestId></InvalidChangeBatch>"#;
        assert_eq!(
            error(old),
            Some((
                "InvalidChangeBatch".into(),
                Some("Tried to delete x but it was not found; and y".into())
            ))
        );
        let no_message =
            "<ErrorResponse><Error><Code>InternalFailure</Code></Error></ErrorResponse>";
        assert_eq!(error(no_message), Some(("InternalFailure".into(), None)));
        assert_eq!(error("<!doctype html><html>"), None);
        assert_eq!(error(""), None);
        assert_eq!(error("<ErrorResponse><Error/></ErrorResponse>"), None);
    }
}
