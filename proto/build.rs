//! Generates the protobuf/gRPC code. The protoc binary comes from protoc-bin-vendored and is passed to
//! prost-build directly; exporting PROTOC globally would break raft-proto's own build (it wants protoc 3).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/trestle/table.proto",
        "proto/trestle/admin.proto",
        "proto/trestle/raft.proto",
        "proto/trestle/internal.proto",
        "proto/trestle/node.proto",
        "proto/trestle/lock.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let mut cfg = prost_build::Config::new();
    cfg.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    cfg.bytes([".trestle.raft"]);
    tonic_prost_build::configure().compile_with_config(cfg, &protos, &["proto"])?;
    Ok(())
}
