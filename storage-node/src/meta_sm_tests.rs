//! Tests of the catalog state machine, driven directly on a memory engine.

use prost::Message;
use trestle_engine::{Cf, Engine, MemoryEngine, WriteBatch, keys};
use trestle_proto::internal::{
    AccessPolicy, CreateTable, DeleteTable, MetaCommand, SetServiceProperties, SetTableAcl,
    TableRecord, command_result::Kind, meta_command,
};
use trestle_replication::StateMachine;
use trestle_types::{BatchError, ErrorCode};

use super::*;
use crate::commands::decode_result;
use crate::ranges::RangeMap;

struct Meta {
    engine: MemoryEngine,
    sm: MetaStateMachine,
    index: u64,
}

impl Meta {
    fn new() -> Self {
        Meta {
            engine: MemoryEngine::new(),
            sm: MetaStateMachine::new(),
            index: 0,
        }
    }

    fn apply(&mut self, kind: meta_command::Kind) -> Result<Kind, BatchError> {
        self.index += 1;
        let mut batch = WriteBatch::new();
        let bytes = MetaCommand { kind: Some(kind) }.encode_to_vec();
        let out = self
            .sm
            .apply(&self.engine, &mut batch, self.index, &bytes)
            .unwrap();
        self.engine.write(&batch, false).unwrap();
        decode_result(&out)
    }

    fn create(&mut self, account: &str, name: &str) -> Result<TableRecord, ErrorCode> {
        let cmd = CreateTable {
            account: account.into(),
            name: name.into(),
        };
        match self.apply(meta_command::Kind::CreateTable(cmd)) {
            Ok(Kind::Table(t)) => Ok(t),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => Err(e.error.code),
        }
    }

    fn delete(&mut self, account: &str, name: &str) -> Result<TableRecord, ErrorCode> {
        let cmd = DeleteTable {
            account: account.into(),
            name: name.into(),
        };
        match self.apply(meta_command::Kind::DeleteTable(cmd)) {
            Ok(Kind::Table(t)) => Ok(t),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => Err(e.error.code),
        }
    }

    fn set_acl(&mut self, name: &str, n: usize) -> Result<Kind, ErrorCode> {
        let policies = (0..n)
            .map(|i| AccessPolicy {
                id: format!("p{i}"),
                start_ticks: None,
                expiry_ticks: Some(9),
                permission: "r".into(),
            })
            .collect();
        let cmd = SetTableAcl {
            account: "acct".into(),
            name: name.into(),
            policies,
        };
        self.apply(meta_command::Kind::SetTableAcl(cmd))
            .map_err(|e| e.error.code)
    }

    fn engine(&self) -> &dyn Engine {
        &self.engine
    }

    fn names(
        &self,
        account: &str,
        start: Option<&str>,
        limit: usize,
    ) -> (Vec<String>, Option<String>) {
        let (tables, next) = list_tables(self.engine(), account, start, limit).unwrap();
        (tables.into_iter().map(|t| t.name).collect(), next)
    }
}

#[test]
fn names_are_unique_case_insensitively_and_keep_their_case() {
    let mut m = Meta::new();
    let t = m.create("acct", "MyTable").unwrap();
    assert_eq!((t.name.as_str(), t.id), ("MyTable", table_id(1)));
    assert_eq!(
        m.create("acct", "mytable"),
        Err(ErrorCode::TableAlreadyExists)
    );
    assert_eq!(
        m.create("acct", "MYTABLE"),
        Err(ErrorCode::TableAlreadyExists)
    );
    // Another account has its own namespace.
    assert!(m.create("other", "mytable").is_ok());
    assert_eq!(
        get_table(m.engine(), "acct", "MYTABLE")
            .unwrap()
            .unwrap()
            .name,
        "MyTable"
    );
    assert_eq!(get_table(m.engine(), "acct", "nope").unwrap(), None);
    assert_eq!(
        m.create("acct", "bad-name"),
        Err(ErrorCode::InvalidResourceName)
    );
}

#[test]
fn ids_come_from_a_sequence_and_are_never_reused() {
    let mut m = Meta::new();
    let first = m.create("a", "one").unwrap().id;
    m.delete("a", "one").unwrap();
    let again = m.create("a", "one").unwrap().id;
    assert_eq!((first, again), (table_id(1), table_id(2)));
    assert_ne!(first, again);
    assert_eq!(table_id(1), 0x9E37_79B9_7F4A_7C15);
}

#[test]
fn the_id_sequence_spreads_tables_over_the_initial_ranges() {
    let map = RangeMap::initial(4, vec![1, 2, 3]);
    let mut per_range = std::collections::BTreeMap::<u64, usize>::new();
    for seq in 1..=400 {
        *per_range
            .entry(map.range_for_table(table_id(seq)).id)
            .or_default() += 1;
    }
    assert_eq!(per_range.len(), 4);
    assert!(
        per_range.values().all(|&n| (90..=110).contains(&n)),
        "{per_range:?}"
    );
}

#[test]
fn delete_returns_the_record_and_remembers_the_id() {
    let mut m = Meta::new();
    assert_eq!(m.delete("a", "ghost"), Err(ErrorCode::ResourceNotFound));
    let created = m.create("a", "Orders").unwrap();
    let deleted = m.delete("a", "ORDERS").unwrap();
    assert_eq!(deleted, created);
    assert_eq!(get_table(m.engine(), "a", "Orders").unwrap(), None);
    assert_eq!(dropped_tables(m.engine()).unwrap(), vec![created]);
}

#[test]
fn acls_replace_the_policies_up_to_five() {
    let mut m = Meta::new();
    assert_eq!(m.set_acl("t1x", 1), Err(ErrorCode::TableNotFound));
    m.create("acct", "tab").unwrap();
    let Ok(Kind::Table(t)) = m.set_acl("TAB", 5) else {
        panic!("five policies are allowed")
    };
    assert_eq!(t.policies.len(), 5);
    assert_eq!(m.set_acl("tab", 6), Err(ErrorCode::InvalidXmlDocument));
    assert_eq!(
        get_table(m.engine(), "acct", "tab")
            .unwrap()
            .unwrap()
            .policies
            .len(),
        5
    );
    m.set_acl("tab", 0).unwrap();
    assert!(
        get_table(m.engine(), "acct", "tab")
            .unwrap()
            .unwrap()
            .policies
            .is_empty()
    );
}

#[test]
fn service_properties_are_per_account() {
    let mut m = Meta::new();
    assert_eq!(get_service_properties(m.engine(), "a").unwrap(), None);
    let cmd = SetServiceProperties {
        account: "a".into(),
        xml: "<StorageServiceProperties/>".into(),
    };
    assert_eq!(
        m.apply(meta_command::Kind::SetServiceProperties(cmd)),
        Ok(Kind::Done(true))
    );
    assert_eq!(
        get_service_properties(m.engine(), "a").unwrap().as_deref(),
        Some("<StorageServiceProperties/>")
    );
    assert_eq!(get_service_properties(m.engine(), "b").unwrap(), None);
}

#[test]
fn listing_pages_in_folded_name_order() {
    let mut m = Meta::new();
    for name in ["Delta", "alpha", "Charlie", "bravo", "echo"] {
        m.create("acct", name).unwrap();
    }
    m.create("acct2", "zulu").unwrap();
    m.create("acc", "yankee").unwrap();
    let (page, next) = m.names("acct", None, 2);
    assert_eq!(
        (page, next.as_deref()),
        (vec!["alpha".to_string(), "bravo".into()], Some("Charlie"))
    );
    let (page, next) = m.names("acct", Some("CHARLIE"), 2);
    assert_eq!(
        (page, next.as_deref()),
        (vec!["Charlie".to_string(), "Delta".into()], Some("echo"))
    );
    let (page, next) = m.names("acct", Some("echo"), 2);
    assert_eq!((page, next), (vec!["echo".to_string()], None));
    let (all, _) = m.names("acct", None, 1000);
    assert_eq!(all.len(), 5);
    assert_eq!(m.names("nobody", None, 10), (vec![], None));
}

#[test]
fn malformed_commands_are_results_and_corrupt_records_are_fatal() {
    let mut m = Meta::new();
    let mut batch = WriteBatch::new();
    let out = m.sm.apply(&m.engine, &mut batch, 1, b"\xff\xff").unwrap();
    assert_eq!(
        decode_result(&out).unwrap_err().error.code,
        ErrorCode::InternalError
    );
    let out =
        m.sm.apply(
            &m.engine,
            &mut batch,
            2,
            &MetaCommand { kind: None }.encode_to_vec(),
        )
        .unwrap();
    assert_eq!(
        decode_result(&out).unwrap_err().error.code,
        ErrorCode::InternalError
    );
    assert!(batch.is_empty());

    m.create("a", "tab").unwrap();
    let key = keys::catalog_key("a", "tab");
    let mut bytes = m.engine.get(Cf::Meta, &key).unwrap().unwrap();
    bytes[6] ^= 1;
    let mut corrupt = WriteBatch::new();
    corrupt.put(Cf::Meta, key, bytes);
    m.engine.write(&corrupt, false).unwrap();
    assert_eq!(
        get_table(m.engine(), "a", "tab").unwrap_err().code,
        ErrorCode::DataCorrupted
    );
    let cmd = MetaCommand {
        kind: Some(meta_command::Kind::DeleteTable(DeleteTable {
            account: "a".into(),
            name: "tab".into(),
        })),
    };
    let err =
        m.sm.apply(&m.engine, &mut WriteBatch::new(), 9, &cmd.encode_to_vec())
            .unwrap_err();
    assert!(err.0.contains("DataCorrupted"), "{err}");
}

#[test]
fn two_replicas_build_identical_catalogs() {
    let (mut a, mut b) = (Meta::new(), Meta::new());
    for m in [&mut a, &mut b] {
        m.create("x", "One").unwrap();
        m.create("x", "Two").unwrap();
        m.delete("x", "one").unwrap();
        m.set_acl("two", 2).unwrap_err();
        m.create("acct", "two").unwrap();
        m.set_acl("two", 2).unwrap();
    }
    let dump = |m: &Meta| {
        m.engine
            .scan(Cf::Meta, &[], None)
            .unwrap()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
    };
    assert_eq!(dump(&a), dump(&b));
}

fn register(id: u64, addr: &str) -> meta_command::Kind {
    meta_command::Kind::RegisterNode(trestle_proto::internal::RegisterNode {
        node_id: id,
        grpc_addr: addr.into(),
        rest_addr: String::new(),
        zone: "z2".into(),
    })
}

#[test]
fn a_joined_node_is_recorded_once_told_to_the_members_and_refused_at_another_address() {
    let members = std::sync::Arc::new(crate::members::Members::new(Vec::new()));
    let mut m = Meta::new();
    m.sm = MetaStateMachine::new().with_members(members.clone());
    assert!(matches!(
        m.apply(register(4, "10.0.0.4:7100")),
        Ok(Kind::Done(true))
    ));
    assert_eq!(members.ids(), vec![4]);
    assert_eq!(members.get(4).unwrap().zone.as_deref(), Some("z2"));
    // The same node asking again (a restart) changes nothing.
    assert!(matches!(
        m.apply(register(4, "10.0.0.4:7100")),
        Ok(Kind::Done(false))
    ));
    // Its id from another address is refused, and the record stays.
    let err = m.apply(register(4, "10.0.0.9:7100")).unwrap_err();
    assert_eq!(err.error.code, ErrorCode::NodeAlreadyExists);
    // A malformed registration is a result, not a fatal error.
    let err = m.apply(register(0, "10.0.0.5:7100")).unwrap_err();
    assert_eq!(err.error.code, ErrorCode::InvalidInput);
    let err = m.apply(register(5, "no-port")).unwrap_err();
    assert_eq!(err.error.code, ErrorCode::InvalidInput);
    let recorded = crate::members::registered(&m.engine).unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].grpc_addr, "10.0.0.4:7100");

    // A replica that gets the group's state by snapshot learns every recorded node.
    let fresh = std::sync::Arc::new(crate::members::Members::new(Vec::new()));
    let mut sm = MetaStateMachine::new().with_members(fresh.clone());
    sm.on_snapshot_restored(&m.engine).unwrap();
    assert_eq!(fresh.ids(), vec![4]);
}
