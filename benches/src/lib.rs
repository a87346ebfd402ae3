//! Criterion micro-benchmarks per layer (`benches/*.rs`) and the `trestle-bench` load harness.
//!
//! The harness is a *client*: it speaks the Azure Table REST protocol (its own Shared Key signer, so the
//! same binary drives Trestle and Azurite), Trestle's gRPC API through the Rust SDK, and etcd's lease and
//! lock services (to compare Trestle's locks with), and links no server crate. Module map, from the wire up:
//!
//! - [`signing`]: Table Shared Key signatures; [`tls`]: rustls for `https://` REST targets;
//! - [`workload`] and [`bodies`]: which operation comes next, on which keys, with which entity;
//! - [`rest`] and [`driver`]: one connection per worker over either protocol (REST, gRPC through the
//!   SDK), targets, the load phase;
//! - [`locks`] and [`etcd`]: the lock workloads, on Trestle's lock service and on etcd's (issue 8);
//! - [`runner`]: closed- and open-loop measured runs, A/B rounds (`--compare`);
//! - [`report`]: histograms, percentiles, medians, ratios, the JSON result files; [`summary`]: Markdown
//!   and SVG from result files; [`fsync`]: the disk's synchronous append rate; [`cpu`]: process CPU time
//!   per operation.
//!
//! The micro-benchmarks (`cargo bench -p trestle-benches`) dev-depend on the server crates to time their
//! internals; `benches/compare.sh` runs the whole Trestle-vs-Azurite comparison.

pub mod bodies;
pub mod cpu;
pub mod driver;
pub mod etcd;
pub mod fsync;
pub mod locks;
pub mod report;
pub mod rest;
pub mod runner;
pub mod signing;
pub mod summary;
pub mod tls;
pub mod workload;
