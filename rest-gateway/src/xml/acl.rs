//! Get/Set Table ACL documents: up to five `SignedIdentifier`s, each a stored access policy that a table
//! SAS can name with `si`. Permissions are a subset of `raud`, stored in that canonical order.

use trestle_types::{AccessPolicy, DateTime};

use super::{Node, invalid_xml, parse_tree};
use crate::error::ApiResult;

/// At most five stored access policies per table (Azure's limit).
pub const MAX_SIGNED_IDENTIFIERS: usize = 5;

/// Parses a Set Table ACL body into stored access policies (at most five; permissions from `raud`).
pub fn parse_signed_identifiers(document: &str) -> ApiResult<Vec<AccessPolicy>> {
    if document.trim().is_empty() {
        return Ok(Vec::new());
    }
    let root = parse_tree(document)?;
    if root.name != "SignedIdentifiers" {
        return Err(invalid_xml("The root element must be SignedIdentifiers."));
    }
    if root.children.len() > MAX_SIGNED_IDENTIFIERS {
        return Err(invalid_xml(
            "More than five signed identifiers are specified.",
        ));
    }
    let mut policies = Vec::new();
    for identifier in &root.children {
        if identifier.name != "SignedIdentifier" {
            return Err(invalid_xml(format!(
                "Unexpected element {}.",
                identifier.name
            )));
        }
        let id = identifier.required_text("Id")?.to_string();
        if id.is_empty() || id.chars().count() > 64 {
            return Err(invalid_xml(
                "A signed identifier Id must be 1 to 64 characters.",
            ));
        }
        if policies.iter().any(|p: &AccessPolicy| p.id == id) {
            return Err(invalid_xml("A signed identifier Id is specified twice."));
        }
        let mut policy = AccessPolicy {
            id,
            start: None,
            expiry: None,
            permission: String::new(),
        };
        if let Some(access) = identifier.child("AccessPolicy") {
            policy.start = optional_time(access, "Start")?;
            policy.expiry = optional_time(access, "Expiry")?;
            if let Some(permission) = access.child("Permission") {
                policy.permission = normalize_permissions(permission.text.trim())?;
            }
        }
        policies.push(policy);
    }
    Ok(policies)
}

fn optional_time(node: &Node, name: &str) -> ApiResult<Option<DateTime>> {
    match node.child(name).map(|c| c.text.trim()) {
        None | Some("") => Ok(None),
        Some(text) => DateTime::parse(text).map(Some).ok_or_else(|| {
            invalid_xml(format!(
                "The {name} time {text:?} is not a valid ISO 8601 time."
            ))
        }),
    }
}

/// Checks a table permission string and returns it in Azure's canonical `raud` order.
fn normalize_permissions(text: &str) -> ApiResult<String> {
    if let Some(bad) = text.chars().find(|c| !"raud".contains(*c)) {
        return Err(invalid_xml(format!(
            "The permission {bad:?} is not valid for a table."
        )));
    }
    Ok("raud".chars().filter(|c| text.contains(*c)).collect())
}

/// The Get Table ACL body.
pub fn signed_identifiers_document(policies: &[AccessPolicy]) -> String {
    let mut root = Node::new("SignedIdentifiers");
    for policy in policies {
        let mut identifier = Node::new("SignedIdentifier");
        identifier
            .children
            .push(Node::leaf("Id", policy.id.clone()));
        let mut access = Node::new("AccessPolicy");
        if let Some(start) = policy.start {
            access.children.push(Node::leaf("Start", start.to_iso()));
        }
        if let Some(expiry) = policy.expiry {
            access.children.push(Node::leaf("Expiry", expiry.to_iso()));
        }
        access
            .children
            .push(Node::leaf("Permission", policy.permission.clone()));
        identifier.children.push(access);
        root.children.push(identifier);
    }
    root.to_document()
}

#[cfg(test)]
mod tests {
    use trestle_types::ErrorCode;

    use super::*;

    const ACL: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<SignedIdentifiers>
  <SignedIdentifier>
    <Id>MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=</Id>
    <AccessPolicy>
      <Start>2009-09-28T08:49:37.0000000Z</Start>
      <Expiry>2009-09-29T08:49:37Z</Expiry>
      <Permission>dr</Permission>
    </AccessPolicy>
  </SignedIdentifier>
  <SignedIdentifier><Id>empty</Id></SignedIdentifier>
</SignedIdentifiers>"#;

    #[test]
    fn acl_round_trips() {
        let policies = parse_signed_identifiers(ACL).unwrap();
        assert_eq!(policies.len(), 2);
        assert_eq!(policies[0].permission, "rd");
        assert_eq!(
            policies[0].start.unwrap().to_iso(),
            "2009-09-28T08:49:37.0000000Z"
        );
        assert_eq!(policies[1].permission, "");
        let doc = signed_identifiers_document(&policies);
        assert!(doc.starts_with(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><SignedIdentifiers><SignedIdentifier>"
        ));
        assert!(
            doc.contains(
                "<Expiry>2009-09-29T08:49:37.0000000Z</Expiry><Permission>rd</Permission>"
            )
        );
        assert_eq!(parse_signed_identifiers(&doc).unwrap(), policies);
        assert!(parse_signed_identifiers("").unwrap().is_empty());
    }

    #[test]
    fn acl_rules_are_enforced() {
        let six: String = (0..6)
            .map(|i| format!("<SignedIdentifier><Id>id{i}</Id></SignedIdentifier>"))
            .collect();
        let err =
            parse_signed_identifiers(&format!("<SignedIdentifiers>{six}</SignedIdentifiers>"))
                .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidXmlDocument);
        for bad in [
            "<SignedIdentifiers><SignedIdentifier><Id>a</Id><AccessPolicy><Permission>rwx</Permission></AccessPolicy></SignedIdentifier></SignedIdentifiers>",
            "<SignedIdentifiers><SignedIdentifier></SignedIdentifier></SignedIdentifiers>",
            "<SignedIdentifiers><SignedIdentifier><Id>a</Id>",
            "<Other/>",
            "not xml at all <",
            "<a></b>",
        ] {
            assert_eq!(
                parse_signed_identifiers(bad).unwrap_err().code,
                ErrorCode::InvalidXmlDocument,
                "{bad}"
            );
        }
    }
}
