//! Generates the gRPC code from `proto/` with a vendored protoc (no system package needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        root.join("trellis/v1/trellis.proto"),
        root.join("trellis/v1/raft.proto"),
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    tonic_build::configure().compile_protos(&files, &[root])?;
    Ok(())
}
