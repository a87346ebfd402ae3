//! Fuzzes the EDM JSON entity parser, which reads every entity body a client sends.
//!
//! Arbitrary bytes go to `parse_entity_json` and `parse_entity`, which must never panic. Whatever parses
//! and validates must round-trip through the response writer: at minimal and full metadata the written
//! JSON parses back to an entity that writes out as the same text (compared as text, because a NaN
//! Double is unequal to itself).

use trestle_rest_gateway::json::{
    EntityUrls, MetadataLevel, entity_document, parse_entity, parse_entity_json,
};

const URLS: EntityUrls<'static> = EntityUrls {
    base_url: "http://127.0.0.1:10002/devstoreaccount1",
    account: "devstoreaccount1",
    table: "fuzz",
};

/// Runs one input; panics if a promise is broken.
pub fn check(data: &[u8]) {
    let _ = parse_entity_json(data);
    let Ok(entity) = parse_entity(data, None) else {
        return;
    };
    for level in [MetadataLevel::Minimal, MetadataLevel::Full] {
        let written = entity_document(&entity, level, &URLS, None);
        let reparsed = match parse_entity(written.as_bytes(), None) {
            Ok(reparsed) => reparsed,
            Err(e) => panic!("written entity {written} does not parse back: {e}"),
        };
        assert_eq!(
            entity_document(&reparsed, level, &URLS, None),
            written,
            "round trip changed the entity"
        );
    }
    // nometadata loses the types but must still be a JSON object the parser accepts.
    let plain = entity_document(&entity, MetadataLevel::None, &URLS, None);
    assert!(
        parse_entity_json(plain.as_bytes()).is_ok(),
        "nometadata output {plain} does not parse"
    );
}
