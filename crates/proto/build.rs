//! Compiles every file in `proto/` with protox (pure Rust), so a fresh machine needs no `protoc`.
//! With the `grpc` feature the tonic services are generated too.

use std::path::{Path, PathBuf};

fn proto_files(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            proto_files(&path, found)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            found.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    proto_files(&root, &mut files)?;
    files.sort();
    let descriptors = protox::compile(&files, [&root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("dialogue_ledger_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    // A replay streams the stored payload as it is: shared, not copied per event.
    let shared_bytes = ".dialogue.ledger.v1.LedgerEvent.payload";
    if std::env::var_os("CARGO_FEATURE_GRPC").is_some() {
        (tonic_prost_build::configure())
            .bytes(shared_bytes)
            .compile_fds(descriptors)?;
    } else {
        prost_build::Config::new()
            .bytes([shared_bytes])
            .compile_fds(descriptors)?;
    }
    Ok(())
}
