//! The Trestle storage node: the table and catalog state machines, the partition map, the query engine,
//! the gRPC services and the node wiring, plus the `trestle` binary's commands.

pub mod admin;
pub mod balance;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod codec;
pub mod commands;
pub mod config;
pub mod dev;
pub mod drain;
pub mod forward;
pub mod grpc_api;
pub mod grpc_auth;
pub mod hooks;
pub mod join;
pub mod lock_api;
pub mod locks;
pub mod logging;
pub mod members;
pub mod merges;
pub mod meta_sm;
pub mod moves;
pub mod node;
pub mod partition_manager;
pub mod query;
pub mod ranges;
pub mod rebalance;
pub mod scheduler;
pub mod splits;
pub mod table_sm;
pub mod tables;
pub mod tls;

pub use config::{NodeConfig, PeerConfig};
pub use node::{Listeners, Node};
