//! Compiles caremesh's protobuf API with protox (pure Rust, no system `protoc`), writes the encoded
//! file descriptor set for server reflection, and generates the prost messages and tonic clients
//! and servers from that same descriptor set.

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

/// The directory, relative to this crate, that holds the `.proto` files (the buf module root is
/// the crate directory itself, so the import paths read `caremesh/<service>/v1/<file>.proto`).
const PROTO_ROOT: &str = "caremesh";

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    // A directory makes cargo rescan everything below it.
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    println!("cargo:rerun-if-changed=build.rs");

    let mut files = Vec::new();
    collect_protos(&manifest_dir, Path::new(PROTO_ROOT), &mut files)?;
    files.sort();
    if files.is_empty() {
        return Err(format!("no .proto files under {}", manifest_dir.join(PROTO_ROOT).display()).into());
    }

    let mut compiler = protox::Compiler::new([&manifest_dir])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(&files)?;

    // The reflection set keeps the source info (comments show up in `grpcurl describe`) and the
    // imported well-known types, so it is self-contained.
    fs::write(
        out_dir.join("caremesh_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Undecodable requests are INVALID_ARGUMENT, not tonic-prost's INTERNAL (src/codec.rs).
        .codec_path("crate::codec::CaremeshCodec")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}

/// Collects the `.proto` files under `root/dir`, as paths relative to `root`.
fn collect_protos(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Box<dyn Error>> {
    for entry in fs::read_dir(root.join(dir))? {
        let entry = entry?;
        let relative = dir.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            collect_protos(root, &relative, out)?;
        } else if relative.extension().is_some_and(|ext| ext == "proto") {
            out.push(relative);
        }
    }
    Ok(())
}
