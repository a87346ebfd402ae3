//! The XML documents of the non-OData APIs: table ACLs (`SignedIdentifiers`, in [`acl`]), table service
//! properties (`StorageServiceProperties`) and service stats (in [`properties`]).
//!
//! Documents are read into a small element tree ([`Node`]) with quick-xml and validated against Azure's
//! schema rules; anything malformed or out of rule is `InvalidXmlDocument` (400), never a panic. The tree
//! is bounded in depth ([`MAX_DEPTH`]) so a hostile document cannot exhaust the stack when it is walked.

use quick_xml::Reader;
use quick_xml::events::Event;
use trestle_types::ErrorCode;

use crate::error::{ApiError, ApiResult};

pub mod acl;
pub mod properties;

pub use acl::{parse_signed_identifiers, signed_identifiers_document};
pub use properties::{
    cors_node, cors_rules, default_service_properties, merge_service_properties,
    parse_service_properties, service_stats_document,
};

/// The deepest element nesting accepted in a request document.
pub const MAX_DEPTH: usize = 16;

const XML_DECL: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>";

/// Escapes text for element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
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

/// An element: its local name, its text content and its child elements.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    pub name: String,
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    pub fn new(name: &str) -> Node {
        Node {
            name: name.to_string(),
            ..Node::default()
        }
    }

    pub fn leaf(name: &str, text: impl Into<String>) -> Node {
        Node {
            name: name.to_string(),
            text: text.into(),
            children: Vec::new(),
        }
    }

    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The trimmed text of a required child element.
    pub fn required_text(&self, name: &str) -> ApiResult<&str> {
        self.child(name).map(|c| c.text.trim()).ok_or_else(|| {
            invalid_xml(format!("The element {name} is missing from {}.", self.name))
        })
    }

    /// Writes the element (and its subtree) as XML.
    pub fn write(&self, out: &mut String) {
        if self.children.is_empty() && self.text.is_empty() {
            out.push_str(&format!("<{} />", self.name));
            return;
        }
        out.push_str(&format!("<{}>", self.name));
        out.push_str(&escape(&self.text));
        for child in &self.children {
            child.write(out);
        }
        out.push_str(&format!("</{}>", self.name));
    }

    /// The document: XML declaration plus this element.
    pub fn to_document(&self) -> String {
        let mut out = String::from(XML_DECL);
        self.write(&mut out);
        out
    }
}

pub(crate) fn invalid_xml(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidXmlDocument, message)
}

/// Parses a whole document into its root element. Text is unescaped and kept only when it is not just
/// whitespace between elements.
pub fn parse_tree(document: &str) -> ApiResult<Node> {
    let document = document.trim_start_matches('\u{feff}');
    let mut reader = Reader::from_str(document);
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| invalid_xml(format!("XML is not well formed: {e}")))?;
        match event {
            Event::Start(start) => {
                if root.is_some() || stack.len() >= MAX_DEPTH {
                    return Err(invalid_xml(
                        "The XML document is too deep or has several roots.",
                    ));
                }
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                stack.push(Node::new(&name));
            }
            Event::Empty(empty) => {
                let name = String::from_utf8_lossy(empty.local_name().as_ref()).into_owned();
                attach(&mut stack, &mut root, Node::new(&name))?;
            }
            Event::End(_) => {
                let node = stack
                    .pop()
                    .ok_or_else(|| invalid_xml("Unbalanced XML end tag."))?;
                attach(&mut stack, &mut root, node)?;
            }
            Event::Text(text) => {
                let text = text
                    .unescape()
                    .map_err(|e| invalid_xml(format!("Bad XML text: {e}")))?;
                match stack.last_mut() {
                    Some(node) => node.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err(invalid_xml("Text outside the root element.")),
                }
            }
            Event::CData(data) => {
                let text = String::from_utf8_lossy(&data).into_owned();
                match stack.last_mut() {
                    Some(node) => node.text.push_str(&text),
                    None => return Err(invalid_xml("CDATA outside the root element.")),
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(invalid_xml("The XML document ends inside an element."));
    }
    let mut root = root.ok_or_else(|| invalid_xml("The XML document has no root element."))?;
    normalize_text(&mut root);
    Ok(root)
}

fn attach(stack: &mut [Node], root: &mut Option<Node>, node: Node) -> ApiResult<()> {
    match stack.last_mut() {
        Some(parent) => parent.children.push(node),
        None if root.is_none() => *root = Some(node),
        None => return Err(invalid_xml("The XML document has several root elements.")),
    }
    Ok(())
}

/// Elements with children keep no (whitespace) text; leaves keep their text trimmed.
fn normalize_text(node: &mut Node) {
    if node.children.is_empty() {
        node.text = node.text.trim().to_string();
    } else {
        node.text.clear();
        for child in &mut node.children {
            normalize_text(child);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_documents_are_rejected_not_overflowed() {
        let deep = "<a>".repeat(10_000);
        assert_eq!(
            parse_tree(&deep).unwrap_err().code,
            ErrorCode::InvalidXmlDocument
        );
    }
}
