//! Tests of the member list: its order, what it refuses, and what it keeps on disk.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use trestle_engine::MemoryEngine;

use super::*;

fn peer(id: u64, addr: &str) -> PeerConfig {
    PeerConfig {
        id,
        grpc_addr: addr.into(),
        zone: None,
        rest_addr: None,
    }
}

fn configured() -> Vec<PeerConfig> {
    // Configured out of id order: the configuration's order (its first three vote) is kept.
    vec![
        peer(3, "h3:1"),
        peer(1, "h1:1"),
        peer(2, "h2:1"),
        peer(9, "h9:1"),
    ]
}

#[test]
fn joined_nodes_follow_the_configured_peers_by_id_and_each_is_told_once() {
    let m = Members::new(configured());
    let told = Arc::new(AtomicUsize::new(0));
    let seen = told.clone();
    m.on_learn(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
    });
    assert!(m.learn(peer(7, "h7:1")));
    assert!(m.learn(peer(5, "h5:1")));
    assert!(m.learn(peer(12, "h12:1")));
    // Known ids are not learned again, whatever address they come with.
    assert!(!m.learn(peer(5, "elsewhere:1")));
    assert!(!m.learn(peer(1, "elsewhere:1")));
    let order: Vec<u64> = m.list().iter().map(|p| p.id).collect();
    assert_eq!(order, vec![3, 1, 2, 9, 5, 7, 12]);
    assert_eq!(m.ids(), vec![1, 2, 3, 5, 7, 9, 12]);
    assert_eq!(told.load(Ordering::SeqCst), 3);
    assert_eq!(m.get(5).unwrap().grpc_addr, "h5:1");
    assert!(m.is_configured(9));
    assert!(!m.is_configured(5));
}

#[test]
fn a_join_is_new_a_repeat_or_a_conflict() {
    let list = configured();
    assert_eq!(check_join(&list, &peer(4, "h4:1")), Ok(true));
    assert_eq!(check_join(&list, &peer(2, "h2:1")), Ok(false));
    let err = check_join(&list, &peer(2, "h4:1")).unwrap_err();
    assert!(err.contains("already a member at h2:1"), "{err}");
}

#[test]
fn a_joiner_needs_an_id_and_host_port_addresses() {
    assert!(validate_joiner(&peer(4, "10.0.0.4:7100")).is_ok());
    assert!(validate_joiner(&peer(4, "node4.example:7100")).is_ok());
    for bad in ["", "10.0.0.4", ":7100", "h:0", "h:99999", "h:port"] {
        assert!(validate_joiner(&peer(4, bad)).is_err(), "{bad:?}");
    }
    assert!(validate_joiner(&peer(0, "h:1")).is_err());
    let mut with_rest = peer(4, "h:1");
    with_rest.rest_addr = Some("h".into());
    assert!(validate_joiner(&with_rest).is_err());
}

#[test]
fn the_saved_list_round_trips_with_zones_and_rest_addresses() {
    let engine = MemoryEngine::new();
    assert!(saved(&engine).unwrap().is_none());
    let m = Members::new(configured());
    let mut four = peer(4, "h4:1");
    four.zone = Some("rack-b".into());
    four.rest_addr = Some("h4:2".into());
    m.learn(four.clone());
    m.save(&engine, "trestle-abc").unwrap();
    let back = saved(&engine).unwrap().unwrap();
    assert_eq!(back.cluster_id, "trestle-abc");
    let restored: Vec<PeerConfig> = back.nodes.iter().map(peer_from_info).collect();
    assert_eq!(restored, m.list());
    // A node that starts from its configuration learns the saved ones.
    let again = Members::new(configured());
    again.load_saved(&engine).unwrap();
    assert_eq!(again.get(4), Some(four));
}
