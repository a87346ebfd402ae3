//! Table service properties (`StorageServiceProperties`: Logging, HourMetrics, MinuteMetrics, Cors) and
//! the service stats document.
//!
//! Properties are stored as the canonical XML text of the merged tree: Set Service Properties replaces
//! only the top-level elements it supplies, as Azure does.

use super::{Node, invalid_xml, parse_tree};
use crate::cors::{self, CorsRule};
use crate::error::ApiResult;

const SERVICE_PROPERTY_ELEMENTS: [&str; 4] = ["Logging", "HourMetrics", "MinuteMetrics", "Cors"];

/// The properties of an account that never set any (Azure's defaults: everything off, no CORS).
pub fn default_service_properties() -> Node {
    let retention = || {
        let mut r = Node::new("RetentionPolicy");
        r.children.push(Node::leaf("Enabled", "false"));
        r
    };
    let mut logging = Node::new("Logging");
    for (name, value) in [
        ("Version", "1.0"),
        ("Delete", "false"),
        ("Read", "false"),
        ("Write", "false"),
    ] {
        logging.children.push(Node::leaf(name, value));
    }
    logging.children.push(retention());
    let metrics = |name: &str| {
        let mut m = Node::new(name);
        m.children.push(Node::leaf("Version", "1.0"));
        m.children.push(Node::leaf("Enabled", "false"));
        m.children.push(retention());
        m
    };
    let mut root = Node::new("StorageServiceProperties");
    root.children = vec![
        logging,
        metrics("HourMetrics"),
        metrics("MinuteMetrics"),
        Node::new("Cors"),
    ];
    root
}

/// Parses and validates a Set Service Properties body.
pub fn parse_service_properties(document: &str) -> ApiResult<Node> {
    let root = parse_tree(document)?;
    if root.name != "StorageServiceProperties" {
        return Err(invalid_xml(
            "The root element must be StorageServiceProperties.",
        ));
    }
    for child in &root.children {
        if !SERVICE_PROPERTY_ELEMENTS.contains(&child.name.as_str()) {
            return Err(invalid_xml(format!("Unexpected element {}.", child.name)));
        }
    }
    if let Some(node) = root.child("Cors") {
        cors_rules(node)?;
    }
    for name in ["Logging", "HourMetrics", "MinuteMetrics"] {
        if let Some(node) = root.child(name) {
            node.required_text("Version")?;
            if let Some(retention) = node.child("RetentionPolicy") {
                let enabled = retention.required_text("Enabled")?;
                if enabled == "true" {
                    let days: u32 = retention
                        .required_text("Days")?
                        .parse()
                        .map_err(|_| invalid_xml("RetentionPolicy Days must be a number."))?;
                    if !(1..=365).contains(&days) {
                        return Err(invalid_xml(
                            "RetentionPolicy Days must be between 1 and 365.",
                        ));
                    }
                }
            }
        }
    }
    Ok(root)
}

/// Replaces in `stored` the top-level elements that `update` supplies, keeping the others.
pub fn merge_service_properties(stored: &mut Node, update: Node) {
    for element in update.children {
        match stored.children.iter_mut().find(|c| c.name == element.name) {
            Some(existing) => *existing = element,
            None => stored.children.push(element),
        }
    }
}

/// The CORS rules of a `<Cors>` element.
pub fn cors_rules(node: &Node) -> ApiResult<Vec<CorsRule>> {
    if node.children.len() > cors::MAX_CORS_RULES {
        return Err(invalid_xml("More than five CORS rules are specified."));
    }
    let list = |n: &Node, name: &str| -> ApiResult<Vec<String>> {
        Ok(n.required_text(name)?
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect())
    };
    let mut rules = Vec::new();
    for rule in &node.children {
        if rule.name != "CorsRule" {
            return Err(invalid_xml(format!(
                "Unexpected element {} in Cors.",
                rule.name
            )));
        }
        let parsed = CorsRule {
            allowed_origins: list(rule, "AllowedOrigins")?,
            allowed_methods: list(rule, "AllowedMethods")?,
            allowed_headers: list(rule, "AllowedHeaders")?,
            exposed_headers: list(rule, "ExposedHeaders")?,
            max_age_in_seconds: rule
                .required_text("MaxAgeInSeconds")?
                .parse()
                .map_err(|_| invalid_xml("MaxAgeInSeconds must be a non-negative number."))?,
        };
        parsed.validate().map_err(invalid_xml)?;
        rules.push(parsed);
    }
    Ok(rules)
}

/// The `<Cors>` element for the given rules.
pub fn cors_node(rules: &[CorsRule]) -> Node {
    let mut cors = Node::new("Cors");
    for rule in rules {
        let mut node = Node::new("CorsRule");
        node.children
            .push(Node::leaf("AllowedOrigins", rule.allowed_origins.join(",")));
        node.children
            .push(Node::leaf("AllowedMethods", rule.allowed_methods.join(",")));
        node.children.push(Node::leaf(
            "MaxAgeInSeconds",
            rule.max_age_in_seconds.to_string(),
        ));
        node.children
            .push(Node::leaf("ExposedHeaders", rule.exposed_headers.join(",")));
        node.children
            .push(Node::leaf("AllowedHeaders", rule.allowed_headers.join(",")));
        cors.children.push(node);
    }
    cors
}

/// The Get Service Stats body: Trestle replicates synchronously, so the "secondary" is always live and
/// in sync as of now.
pub fn service_stats_document(last_sync: &str) -> String {
    let mut geo = Node::new("GeoReplication");
    geo.children.push(Node::leaf("Status", "live"));
    geo.children.push(Node::leaf("LastSyncTime", last_sync));
    let mut root = Node::new("StorageServiceStats");
    root.children.push(geo);
    root.to_document()
}

#[cfg(test)]
mod tests {
    use trestle_types::ErrorCode;

    use super::*;

    #[test]
    fn service_properties_merge_and_cors() {
        let mut stored = default_service_properties();
        let update = parse_service_properties(
            "<StorageServiceProperties><Cors><CorsRule><AllowedOrigins>http://a.com,http://b.com</AllowedOrigins>\
             <AllowedMethods>GET,PUT</AllowedMethods><MaxAgeInSeconds>60</MaxAgeInSeconds>\
             <ExposedHeaders>x-ms-meta-*</ExposedHeaders><AllowedHeaders>x-ms-*</AllowedHeaders></CorsRule></Cors>\
             </StorageServiceProperties>",
        )
        .unwrap();
        merge_service_properties(&mut stored, update);
        assert_eq!(
            stored
                .child("Logging")
                .unwrap()
                .required_text("Version")
                .unwrap(),
            "1.0"
        );
        let rules = cors_rules(stored.child("Cors").unwrap()).unwrap();
        assert_eq!(
            rules[0].allowed_origins,
            vec!["http://a.com", "http://b.com"]
        );
        assert_eq!(rules[0].max_age_in_seconds, 60);
        let text = stored.to_document();
        assert_eq!(parse_tree(&text).unwrap(), stored);
        assert!(text.contains(
            "<Cors><CorsRule><AllowedOrigins>http://a.com,http://b.com</AllowedOrigins>"
        ));
    }

    #[test]
    fn service_properties_validation() {
        for bad in [
            "<StorageServiceProperties><Bogus/></StorageServiceProperties>",
            "<StorageServiceProperties><Cors><CorsRule><AllowedOrigins>*</AllowedOrigins></CorsRule></Cors></StorageServiceProperties>",
            "<StorageServiceProperties><Cors><CorsRule><AllowedOrigins>*</AllowedOrigins><AllowedMethods>FETCH</AllowedMethods><MaxAgeInSeconds>1</MaxAgeInSeconds><ExposedHeaders></ExposedHeaders><AllowedHeaders></AllowedHeaders></CorsRule></Cors></StorageServiceProperties>",
            "<StorageServiceProperties><HourMetrics><Version>1.0</Version><RetentionPolicy><Enabled>true</Enabled><Days>400</Days></RetentionPolicy></HourMetrics></StorageServiceProperties>",
            "<Wrong/>",
        ] {
            assert_eq!(
                parse_service_properties(bad).unwrap_err().code,
                ErrorCode::InvalidXmlDocument,
                "{bad}"
            );
        }
    }

    #[test]
    fn stats_document() {
        let doc = service_stats_document("Mon, 01 Jan 2024 00:00:00 GMT");
        assert_eq!(
            doc,
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><StorageServiceStats><GeoReplication><Status>live</Status>\
             <LastSyncTime>Mon, 01 Jan 2024 00:00:00 GMT</LastSyncTime></GeoReplication></StorageServiceStats>"
        );
    }
}
