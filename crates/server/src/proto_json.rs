//! Stored messages in proto3 JSON, by their full type name, from the build's descriptors.

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, DynamicMessage};

static DESCRIPTORS: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(ledger_proto::FILE_DESCRIPTOR_SET).expect("the build's descriptors")
});

/// The message of type `type_name` encoded in `bytes`, as proto3 JSON.
pub fn to_json(type_name: &str, bytes: &[u8]) -> Result<serde_json::Value, String> {
    let descriptor = (DESCRIPTORS.get_message_by_name(type_name))
        .ok_or_else(|| format!("no message type {type_name}"))?;
    let message = DynamicMessage::decode(descriptor, bytes).map_err(|e| e.to_string())?;
    serde_json::to_value(&message).map_err(|e| e.to_string())
}
