//! The ledger's public contract as Rust types, generated from `proto/` by `build.rs`: the stored
//! event payloads and metadata (`events`), and the gRPC API (`v1`, with services under the `grpc`
//! feature). Never edit generated code; change the `.proto` files.

#[allow(missing_debug_implementations, unreachable_pub, clippy::all)]
mod dialogue {
    pub mod ledger {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/dialogue.ledger.v1.rs"));
        }
        pub mod events {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/dialogue.ledger.events.v1.rs"));
            }
        }
    }
}

/// Package `dialogue.ledger.v1`: the gRPC API.
pub use dialogue::ledger::v1;

/// Package `dialogue.ledger.events.v1`: what is stored, one message per event type.
pub use dialogue::ledger::events::v1 as events;

/// The encoded `FileDescriptorSet` of every file in `proto/`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/dialogue_ledger_descriptor.bin"));
