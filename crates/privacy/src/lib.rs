//! Personal text at rest (crypto-shredding).
//!
//! Every person has a data key; an event's personal text (the fields `events.proto` marks
//! "Personal: sealed") is encrypted with its data subject's key before it is appended
//! (XChaCha20-Poly1305, the associated data binding tenant, stream, event id and key id). Data
//! keys are stored wrapped by a master key from configuration, in a [`KeyStore`] apart from the
//! event log. Erasing a person destroys their keys: their text becomes unreadable in every copy
//! of the log while the events, and the Merkle tree over them, stay as they were.

mod aead;
mod keys;
mod master;
mod ring;

pub use keys::{KeyStore, PostgresKeys, SqliteKeys, StoredKey};
pub use master::MasterKey;
pub use ring::{KeyRing, Opened};

/// What can go wrong with keys and sealed text.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the master key does not open the key store: it was sealed with master key {sealed_with}, \
         the configured key is {configured} (configure the right key, or during a rotation the \
         old one as the previous master key)"
    )]
    WrongMasterKey {
        sealed_with: String,
        configured: String,
    },
    #[error("the master key is unusable: {0}")]
    MasterKey(String),
    #[error(
        "sealed text failed authentication: the ciphertext or the event it belongs to was altered"
    )]
    Tampered,
    #[error("the key store failed: {0}")]
    Store(String),
}
