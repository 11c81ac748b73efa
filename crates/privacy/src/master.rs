//! The master key: 32 random bytes, written as base64, that wraps every data key.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use crate::Error;
use crate::aead::{Cipher, NONCE};

/// The key that wraps data keys. Its fingerprint (not secret) names it in errors and logs.
pub struct MasterKey {
    cipher: Cipher,
    fingerprint: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.fingerprint)
    }
}

impl MasterKey {
    /// Reads a key written as base64 (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<Self, Error> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| Error::MasterKey("it is not base64".into()))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|bytes: Vec<u8>| {
            Error::MasterKey(format!("it has {} bytes, not 32", bytes.len()))
        })?;
        Ok(Self::from_bytes(&bytes))
    }

    pub fn read(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::MasterKey(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text)
            .map_err(|e| Error::MasterKey(format!("{} holds no master key: {e}", path.display())))
    }

    /// A new random key, as base64.
    pub fn generate() -> String {
        STANDARD.encode(rand::random::<[u8; 32]>())
    }

    fn from_bytes(bytes: &[u8; 32]) -> Self {
        let digest = Sha256::new()
            .chain_update(b"dialogue-ledger master key\0")
            .chain_update(bytes)
            .finalize();
        Self {
            cipher: Cipher::new(bytes),
            fingerprint: digest[..8].iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// Names the key without revealing it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// `secret` encrypted under this key; `context` must be given again to unwrap it.
    pub(crate) fn wrap(&self, secret: &[u8], context: &[u8]) -> Vec<u8> {
        let (nonce, ciphertext) = self.cipher.seal(context, secret);
        [nonce.as_slice(), &ciphertext].concat()
    }

    /// `None` when `wrapped` was not wrapped by this key with this context.
    pub(crate) fn unwrap(&self, wrapped: &[u8], context: &[u8]) -> Option<Vec<u8>> {
        let (nonce, ciphertext) = wrapped.split_first_chunk::<NONCE>()?;
        self.cipher.open(nonce, context, ciphertext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_from_base64_and_wrap_only_for_their_context() {
        let key = MasterKey::parse(&format!("{}\n", MasterKey::generate())).unwrap();
        let wrapped = key.wrap(b"secret", b"context");
        assert_eq!(key.unwrap(&wrapped, b"context").unwrap(), b"secret");
        assert!(key.unwrap(&wrapped, b"other").is_none());
        let other = MasterKey::parse(&MasterKey::generate()).unwrap();
        assert!(other.unwrap(&wrapped, b"context").is_none());
        assert_ne!(key.fingerprint(), other.fingerprint());
        assert!(matches!(
            MasterKey::parse("not base64!"),
            Err(Error::MasterKey(_))
        ));
        assert!(matches!(MasterKey::parse("AAAA"), Err(Error::MasterKey(_))));
    }
}
