//! Compiles `proto/roster/v1/*.proto` with protox (pure Rust, so no system `protoc`) and feeds the
//! descriptors to tonic-prost-build. The descriptor set is also written out for server reflection.
//! A second server for `roster.v1.AuthorizationService` is generated from a hand-written
//! description, so that CheckPermissions can use the borrowing codec of `roster_proto::batch`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let dir = root.join("roster/v1");
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&dir)?.map(|entry| entry.map(|e| e.path())).collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|ext| ext == "proto"));
    files.sort();
    println!("cargo:rerun-if-changed={}", dir.display());
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("roster_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::SliceCodec")
        .compile_fds(fds)?;

    authorization_server();
    Ok(())
}

/// `roster.v1.AuthorizationService` as in the proto file, except that CheckPermissions decodes
/// into `batch::CheckPermissionsRequestView` and answers an already encoded response. Routes, names
/// and wire format are the same; only the server's Rust types differ. Clients keep the generated
/// types.
fn authorization_server() {
    use tonic_prost_build::manual::{Builder, Method, Service};
    let method = |name: &str, route: &str, input: &str, output: &str, codec: &str| {
        Method::builder().name(name).route_name(route).input_type(input).output_type(output).codec_path(codec).build()
    };
    let service = Service::builder()
        .name("AuthorizationService")
        .package("roster.v1")
        .method(method(
            "check_permission",
            "CheckPermission",
            "crate::v1::CheckPermissionRequest",
            "crate::v1::CheckPermissionResponse",
            "crate::codec::SliceCodec",
        ))
        .method(method(
            "check_permissions",
            "CheckPermissions",
            "crate::batch::CheckPermissionsRequestView",
            "crate::batch::EncodedCheckPermissionsResponse",
            "crate::batch::BatchCodec",
        ))
        .method(method(
            "list_effective_permissions",
            "ListEffectivePermissions",
            "crate::v1::ListEffectivePermissionsRequest",
            "crate::v1::ListEffectivePermissionsResponse",
            "crate::codec::SliceCodec",
        ))
        .build();
    Builder::new().build_client(false).compile(&[service]);
}
