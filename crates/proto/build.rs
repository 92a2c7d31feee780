//! Compiles `proto/roster/v1/*.proto` with protox (pure Rust, so no system `protoc`) and feeds the
//! descriptors to tonic-prost-build. The descriptor set is also written out for server reflection.
//! A second server for `roster.v1.AuthorizationService` is generated from the same descriptors by
//! tonic-build's manual builder, so that CheckPermissions can run on `roster_proto::batch`'s types.

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
        .compile_fds(fds.clone())?;

    authorization_server(&fds)?;
    Ok(())
}

/// `roster.v1.AuthorizationService` as the proto file declares it (its methods are read from the
/// descriptors, so a method added there is served here too), except that CheckPermissions decodes
/// into `batch::CheckPermissionsRequestView` and answers an already encoded response. Routes,
/// names and wire format are the same; only the server's Rust types differ. Clients keep the
/// generated types.
fn authorization_server(fds: &tonic_prost_build::FileDescriptorSet) -> Result<(), Box<dyn std::error::Error>> {
    use tonic_prost_build::manual::{Builder, Method, Service};
    let service = fds
        .file
        .iter()
        .filter(|file| file.package() == "roster.v1")
        .flat_map(|file| &file.service)
        .find(|service| service.name() == "AuthorizationService")
        .ok_or("roster.v1.AuthorizationService is not in proto/roster/v1")?;
    let rust_type = |proto: &str| -> Result<String, String> {
        let name = proto.strip_prefix(".roster.v1.").ok_or_else(|| format!("{proto} is not a roster.v1 message"))?;
        Ok(format!("crate::v1::{name}"))
    };
    let mut builder = Service::builder().name("AuthorizationService").package("roster.v1");
    for method in &service.method {
        let (input, output, codec) = if method.name() == "CheckPermissions" {
            (
                "crate::batch::CheckPermissionsRequestView".to_owned(),
                "crate::batch::EncodedCheckPermissionsResponse".to_owned(),
                "crate::batch::BatchCodec",
            )
        } else {
            (rust_type(method.input_type())?, rust_type(method.output_type())?, "crate::codec::SliceCodec")
        };
        let mut m = Method::builder()
            .name(snake_case(method.name()))
            .route_name(method.name())
            .input_type(input)
            .output_type(output)
            .codec_path(codec);
        if method.client_streaming() {
            m = m.client_streaming();
        }
        if method.server_streaming() {
            m = m.server_streaming();
        }
        builder = builder.method(m.build());
    }
    Builder::new().build_client(false).compile(&[builder.build()]);
    Ok(())
}

/// `CheckPermissions` → `check_permissions`.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}
