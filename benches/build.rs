//! Generates the etcd client `trestle-bench` compares Trestle's locks with: a subset of etcd's public
//! API (`proto/`: the Lease and Lock services), client side only. As in `proto/build.rs`, the protoc
//! binary comes from protoc-bin-vendored and is passed to prost-build directly; exporting PROTOC globally
//! would break raft-proto's own build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/etcdserverpb/rpc.proto",
        "proto/v3lockpb/v3lock.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let mut cfg = prost_build::Config::new();
    cfg.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_server(false)
        .compile_with_config(cfg, &protos, &["proto"])?;
    Ok(())
}
