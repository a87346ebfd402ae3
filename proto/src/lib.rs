//! Trestle's protobuf messages and gRPC services, generated from `proto/trestle/*.proto`.
//!
//! Generated code, plus [`convert`]: the one place where protobuf messages and the domain types of
//! `trestle-types` are turned into each other (the client SDK and the servers both need it).

#![allow(clippy::all)]

/// The generated modules, nested as their protobuf packages (generated code refers across packages with
/// `super::super::...` paths).
pub mod trestle {
    pub mod table {
        pub mod v1 {
            tonic::include_proto!("trestle.table.v1");
        }
    }
    pub mod admin {
        pub mod v1 {
            tonic::include_proto!("trestle.admin.v1");
        }
    }
    pub mod raft {
        pub mod v1 {
            tonic::include_proto!("trestle.raft.v1");
        }
    }
    pub mod internal {
        pub mod v1 {
            tonic::include_proto!("trestle.internal.v1");
        }
    }
    pub mod node {
        pub mod v1 {
            tonic::include_proto!("trestle.node.v1");
        }
    }
    pub mod lock {
        pub mod v1 {
            tonic::include_proto!("trestle.lock.v1");
        }
    }
}

/// Cluster administration and status.
pub use trestle::admin::v1 as admin;
/// Messages that never leave the cluster: replicated commands and the stored entity format.
pub use trestle::internal::v1 as internal;
/// The public lock service.
pub use trestle::lock::v1 as lock;
/// Node-to-node forwarding of calls the public API has no RPC for.
pub use trestle::node::v1 as node;
/// Node-to-node Raft transport.
pub use trestle::raft::v1 as raft;
/// The public table API.
pub use trestle::table::v1 as table;

pub mod auth;
pub mod convert;
