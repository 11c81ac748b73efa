//! The ledger's public contract as Rust types: the protobuf messages stored with events and the gRPC
//! services, generated from `proto/` by `build.rs`. Never edit generated code; change the `.proto` files.

/// Package `dialogue.ledger.v1`.
pub mod v1 {
    #![allow(missing_debug_implementations, unreachable_pub, clippy::all)]
    tonic::include_proto!("dialogue.ledger.v1");
}

/// The encoded `FileDescriptorSet` of every file in `proto/`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("dialogue_ledger_descriptor");
