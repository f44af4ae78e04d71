//! Route53's XML: the ChangeResourceRecordSets body, written with every value
//! escaped, and the answers (and error answers) read with roxmltree. Element
//! names are matched without their namespace, as the SDKs do.

use roxmltree::{Document, Node};

use stoke_aws::xml::{child, field, text};

use crate::config::RecordSet;

const NAMESPACE: &str = "https://route53.amazonaws.com/doc/2013-04-01/";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Upsert,
    Delete,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Upsert => "UPSERT",
            Action::Delete => "DELETE",
        }
    }
}

/// Text as XML character data or attribute value.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The body of ChangeResourceRecordSets: `action` on every set, one batch.
pub fn change_batch(action: Action, sets: &[RecordSet], comment: &str) -> String {
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <ChangeResourceRecordSetsRequest xmlns=\"{NAMESPACE}\"><ChangeBatch>\
         <Comment>{}</Comment><Changes>",
        escape(comment)
    );
    for s in sets {
        x.push_str(&format!(
            "<Change><Action>{}</Action><ResourceRecordSet><Name>{}</Name><Type>{}</Type>\
             <TTL>{}</TTL><ResourceRecords>",
            action.as_str(),
            escape(&s.name),
            escape(&s.kind),
            s.ttl
        ));
        for v in &s.values {
            x.push_str(&format!(
                "<ResourceRecord><Value>{}</Value></ResourceRecord>",
                escape(v)
            ));
        }
        x.push_str("</ResourceRecords></ResourceRecordSet></Change>");
    }
    x.push_str("</Changes></ChangeBatch></ChangeResourceRecordSetsRequest>");
    x
}

/// A hosted zone as listed.
#[derive(Clone, Debug, PartialEq)]
pub struct HostedZone {
    /// As Route53 gives it: `/hostedzone/Z…`.
    pub id: String,
    pub name: String,
    pub private: bool,
}

/// A change's id (as given, `/change/C…` or bare) and whether it is INSYNC.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeStatus {
    pub id: String,
    pub insync: bool,
}

/// A record set as listed.
#[derive(Clone, Debug, PartialEq)]
pub struct RrSet {
    pub name: String,
    pub kind: String,
    pub ttl: Option<i64>,
    pub set_identifier: Option<String>,
    pub values: Vec<String>,
}

/// ListHostedZonesByName: the zones of the page.
pub fn hosted_zones(body: &str) -> Result<Vec<HostedZone>, String> {
    let doc = parse(body)?;
    let list = child(doc.root_element(), "HostedZones").ok_or("no <HostedZones>")?;
    list.children()
        .filter(|n| n.has_tag_name("HostedZone"))
        .map(zone)
        .collect()
}

/// GetHostedZone: the zone.
pub fn hosted_zone(body: &str) -> Result<HostedZone, String> {
    let doc = parse(body)?;
    zone(child(doc.root_element(), "HostedZone").ok_or("no <HostedZone>")?)
}

/// ChangeResourceRecordSets and GetChange: the `ChangeInfo`.
pub fn change_info(body: &str) -> Result<ChangeStatus, String> {
    let doc = parse(body)?;
    let info = child(doc.root_element(), "ChangeInfo").ok_or("no <ChangeInfo>")?;
    Ok(ChangeStatus {
        id: field(info, "Id").ok_or("no <ChangeInfo><Id>")?,
        insync: field(info, "Status").ok_or("no <ChangeInfo><Status>")? == "INSYNC",
    })
}

/// ListResourceRecordSets: the record sets of the page.
pub fn record_sets(body: &str) -> Result<Vec<RrSet>, String> {
    let doc = parse(body)?;
    let list = child(doc.root_element(), "ResourceRecordSets").ok_or("no <ResourceRecordSets>")?;
    list.children()
        .filter(|n| n.has_tag_name("ResourceRecordSet"))
        .map(|s| {
            Ok(RrSet {
                name: field(s, "Name").ok_or("a record set without <Name>")?,
                kind: field(s, "Type").ok_or("a record set without <Type>")?,
                ttl: field(s, "TTL")
                    .map(|t| {
                        t.parse()
                            .map_err(|_| format!("<TTL>{t}</TTL> is not a number"))
                    })
                    .transpose()?,
                set_identifier: field(s, "SetIdentifier"),
                values: child(s, "ResourceRecords")
                    .map(|rr| {
                        rr.children()
                            .filter(|n| n.has_tag_name("ResourceRecord"))
                            .filter_map(|r| child(r, "Value").map(text))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

fn parse(body: &str) -> Result<Document<'_>, String> {
    Document::parse(body).map_err(|e| format!("not XML: {e}"))
}

fn zone(z: Node) -> Result<HostedZone, String> {
    Ok(HostedZone {
        id: field(z, "Id").ok_or("a hosted zone without <Id>")?,
        name: field(z, "Name").ok_or("a hosted zone without <Name>")?,
        private: child(z, "Config")
            .and_then(|c| field(c, "PrivateZone"))
            .is_some_and(|p| p == "true"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_read_back_unchanged() {
        let tricky = r#""a <b> & 'c'" ]]> </Value>"#;
        let sets = [RecordSet {
            name: "w.example.com.".into(),
            kind: "TXT".into(),
            ttl: 60,
            values: vec![tricky.into(), "\"plain\"".into()],
        }];
        let body = change_batch(Action::Upsert, &sets, "stoke & co");
        assert!(
            !body.contains("<b>") && !body.contains("]]> </Value>"),
            "{body}"
        );
        assert!(body.contains("&lt;b&gt; &amp; &apos;c&apos;"), "{body}");
        // The body is well-formed and says what was meant.
        let doc = Document::parse(&body).unwrap();
        let root = doc.root_element();
        assert_eq!(root.tag_name().namespace(), Some(NAMESPACE));
        let values: Vec<String> = root
            .descendants()
            .filter(|n| n.has_tag_name("Value"))
            .map(text)
            .collect();
        assert_eq!(values, [tricky, "\"plain\""]);
        assert!(body.contains("<Action>UPSERT</Action>"));
        assert!(body.contains("<Comment>stoke &amp; co</Comment>"));
        assert!(change_batch(Action::Delete, &sets, "").contains("<Action>DELETE</Action>"));
    }

    #[test]
    fn answers_are_read() {
        let zones = r#"<?xml version="1.0"?>
<ListHostedZonesByNameResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">
 <HostedZones>
  <HostedZone><Id>/hostedzone/Z1</Id><Name>example.com.</Name><CallerReference>r</CallerReference>
   <Config><Comment>c</Comment><PrivateZone>true</PrivateZone></Config></HostedZone>
  <HostedZone><Id>/hostedzone/Z2</Id><Name>example.com.</Name><Config><PrivateZone>false</PrivateZone></Config></HostedZone>
 </HostedZones><DNSName>example.com.</DNSName><IsTruncated>false</IsTruncated><MaxItems>20</MaxItems>
</ListHostedZonesByNameResponse>"#;
        let z = hosted_zones(zones).unwrap();
        assert_eq!(z.len(), 2);
        assert_eq!((z[0].id.as_str(), z[0].private), ("/hostedzone/Z1", true));
        assert!(!z[1].private);

        let info = r#"<ChangeResourceRecordSetsResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">
<ChangeInfo><Id>/change/C2682N5HXP0BZ4</Id><Status>PENDING</Status><SubmittedAt>2026-11-25T00:00:00Z</SubmittedAt></ChangeInfo></ChangeResourceRecordSetsResponse>"#;
        let c = change_info(info).unwrap();
        assert_eq!((c.id.as_str(), c.insync), ("/change/C2682N5HXP0BZ4", false));

        let sets = r#"<ListResourceRecordSetsResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><ResourceRecordSets>
<ResourceRecordSet><Name>w.example.com.</Name><Type>TXT</Type><TTL>60</TTL><ResourceRecords>
<ResourceRecord><Value>"a &lt;b&gt; &amp; c"</Value></ResourceRecord><ResourceRecord><Value>"d"</Value></ResourceRecord></ResourceRecords></ResourceRecordSet>
<ResourceRecordSet><Name>w.example.com.</Name><Type>A</Type><SetIdentifier>eu</SetIdentifier><AliasTarget><DNSName>x.</DNSName></AliasTarget></ResourceRecordSet>
</ResourceRecordSets><IsTruncated>false</IsTruncated><MaxItems>2</MaxItems></ListResourceRecordSetsResponse>"#;
        let s = record_sets(sets).unwrap();
        assert_eq!(s[0].values, ["\"a <b> & c\"", "\"d\""]);
        assert_eq!((s[0].ttl, s[0].set_identifier.as_deref()), (Some(60), None));
        assert_eq!(
            (s[1].ttl, s[1].set_identifier.as_deref()),
            (None, Some("eu"))
        );
        assert!(s[1].values.is_empty());

        assert!(hosted_zone("<html>").unwrap_err().starts_with("not XML"));
        assert!(
            change_info("<GetChangeResponse/>")
                .unwrap_err()
                .contains("ChangeInfo")
        );
    }
}
