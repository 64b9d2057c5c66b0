//! Compiles `annex/v1/*.proto` with protox (no `protoc` binary) and tonic-prost-build.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "annex/v1/common.proto",
        "annex/v1/registry.proto",
        "annex/v1/trust.proto",
        "annex/v1/installs.proto",
        "annex/v1/execute.proto",
        "annex/v1/dispatch.proto",
        "annex/v1/fleet.proto",
        "annex/v1/host.proto",
        "annex/v1/worker.proto",
        "annex/v1/captures.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // The encoded descriptor set feeds gRPC reflection.
    std::fs::write(
        out.join("annex_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
