//! Compiles the `.proto` files with protox (pure Rust), so no system `protoc` is needed.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/data_nexus/metrics.proto",
    "proto/nimbus/nimbus.proto",
    "proto/raftmetrics/v1/metrics.proto",
    "proto/datanexus/v1/records.proto",
    "proto/datanexus/v1/stream.proto",
    "proto/prometheus/remote.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("descriptor.bin"), fds.encode_to_vec())?;
    // Service code (tonic) only with the `grpc` feature; the messages always.
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .build_client(grpc)
        .build_server(grpc)
        .compile_fds(fds)?;
    Ok(())
}
