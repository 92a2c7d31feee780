//! Roster's `roster.v1` API as Rust types, clients and server traits.
//!
//! The code is generated at build time from `proto/roster/v1` by protox and tonic-prost-build, so
//! building needs no system `protoc`. Other Rust services depend on this crate for the clients;
//! `rosterd` uses the server traits and [`FILE_DESCRIPTOR_SET`] for server reflection.

/// The `roster.v1` package.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("roster.v1");
}

/// The encoded `FileDescriptorSet` of every file under `proto/roster/v1`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/roster_descriptor.bin"));
