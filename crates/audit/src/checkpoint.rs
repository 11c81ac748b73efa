//! Signed checkpoints in the C2SP `tlog-checkpoint` format, as C2SP `signed-note`s with Ed25519:
//!
//! ```text
//! <origin>
//! <tree size>
//! <base64 root hash>
//! timestamp <unix seconds>
//!
//! — <key name> <base64(key id || signature)>
//! ```
//!
//! The key id is the first 4 bytes of `SHA-256(key name || "\n" || 0x01 || public key)`; the
//! signature covers the note text (every line before the blank line, each ending in "\n"). The
//! verifier key is published as `<key name>+<key id hex>+<base64(0x01 || public key)>`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::merkle::Hash;

/// Ed25519 in the signed-note algorithm registry.
const ALG_ED25519: u8 = 0x01;

/// Why a checkpoint is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    #[error("malformed verifier key")]
    MalformedKey,
    #[error("no signature by key {0}")]
    NotSigned(String),
    #[error("the signature does not verify")]
    BadSignature,
}

/// The body of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Names the log: `<origin prefix>/<tenant>`.
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// When it was signed, Unix seconds.
    pub timestamp: u64,
}

impl Checkpoint {
    /// The note text that is signed.
    pub fn text(&self) -> String {
        format!(
            "{}\n{}\n{}\ntimestamp {}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root),
            self.timestamp
        )
    }

    fn parse_text(text: &str) -> Result<Self, CheckpointError> {
        let mut lines = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::Malformed("no final newline"))?
            .split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or(CheckpointError::Malformed("no origin"))?;
        let size = lines
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or(CheckpointError::Malformed("bad size"))?;
        let root = (lines.next())
            .and_then(|r| BASE64.decode(r).ok())
            .and_then(|r| Hash::try_from(r).ok())
            .ok_or(CheckpointError::Malformed("bad root hash"))?;
        let timestamp = (lines.next())
            .and_then(|line| line.strip_prefix("timestamp "))
            .and_then(|t| t.parse().ok())
            .ok_or(CheckpointError::Malformed("bad timestamp"))?;
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            timestamp,
        })
    }
}

/// Signs checkpoints with one Ed25519 key under one name.
#[derive(Debug, Clone)]
pub struct NoteSigner {
    name: String,
    key: SigningKey,
}

impl NoteSigner {
    pub fn new(name: impl Into<String>, key: SigningKey) -> Self {
        Self {
            name: name.into(),
            key,
        }
    }

    /// The signed note: the checkpoint text, a blank line, the signature line.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        let text = checkpoint.text();
        let signature = self.key.sign(text.as_bytes());
        let mut blob = key_id(&self.name, &self.key.verifying_key()).to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        format!("{text}\n\u{2014} {} {}\n", self.name, BASE64.encode(blob))
    }

    /// The verifier key string that auditors configure.
    pub fn verifier_key(&self) -> String {
        let public = self.key.verifying_key();
        let mut encoded = vec![ALG_ED25519];
        encoded.extend_from_slice(public.as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            hex(&key_id(&self.name, &public)),
            BASE64.encode(encoded)
        )
    }
}

/// Verifies signed checkpoints against one verifier key.
#[derive(Debug, Clone)]
pub struct NoteVerifier {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Parses `<name>+<key id hex>+<base64(0x01 || public key)>`.
    pub fn parse(verifier_key: &str) -> Result<Self, CheckpointError> {
        let mut parts = verifier_key.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CheckpointError::MalformedKey);
        };
        let key = BASE64
            .decode(key)
            .map_err(|_| CheckpointError::MalformedKey)?;
        let (&[ALG_ED25519], public) = key
            .split_at_checked(1)
            .ok_or(CheckpointError::MalformedKey)?
        else {
            return Err(CheckpointError::MalformedKey);
        };
        let public: [u8; 32] = public
            .try_into()
            .map_err(|_| CheckpointError::MalformedKey)?;
        let key = VerifyingKey::from_bytes(&public).map_err(|_| CheckpointError::MalformedKey)?;
        let expected_id = key_id(name, &key);
        if hex(&expected_id) != id {
            return Err(CheckpointError::MalformedKey);
        }
        Ok(Self {
            name: name.to_owned(),
            id: expected_id,
            key,
        })
    }

    /// Checks the note's signature by this key and returns the checkpoint it signs.
    pub fn verify(&self, note: &str) -> Result<Checkpoint, CheckpointError> {
        let (text, signatures) = note
            .split_once("\n\n")
            .ok_or(CheckpointError::Malformed("no signature block"))?;
        let text = format!("{text}\n");
        for line in signatures.lines() {
            let Some(rest) = line.strip_prefix("\u{2014} ") else {
                continue;
            };
            let Some((name, blob)) = rest.rsplit_once(' ') else {
                continue;
            };
            let Ok(blob) = BASE64.decode(blob) else {
                continue;
            };
            if name != self.name || blob.len() != 4 + 64 || blob[..4] != self.id {
                continue;
            }
            let signature =
                Signature::from_slice(&blob[4..]).map_err(|_| CheckpointError::BadSignature)?;
            self.key
                .verify(text.as_bytes(), &signature)
                .map_err(|_| CheckpointError::BadSignature)?;
            return Checkpoint::parse_text(&text);
        }
        Err(CheckpointError::NotSigned(self.name.clone()))
    }
}

fn key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update(b"\n")
        .chain_update([ALG_ED25519])
        .chain_update(key.as_bytes())
        .finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> NoteSigner {
        NoteSigner::new("dialogue-ledger", SigningKey::from_bytes(&[42; 32]))
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "dialogue-ledger/acme".into(),
            size: 12,
            root: [9; 32],
            timestamp: 1_764_000_000,
        }
    }

    #[test]
    fn a_signed_checkpoint_verifies_and_parses_back() {
        let note = signer().sign(&checkpoint());
        assert!(note.starts_with("dialogue-ledger/acme\n12\n"));
        assert!(note.contains("\n\n\u{2014} dialogue-ledger "));
        let verifier = NoteVerifier::parse(&signer().verifier_key()).unwrap();
        assert_eq!(verifier.verify(&note).unwrap(), checkpoint());
    }

    #[test]
    fn altered_or_foreign_notes_are_rejected() {
        let verifier = NoteVerifier::parse(&signer().verifier_key()).unwrap();
        let note = signer().sign(&checkpoint());
        let altered = note.replacen("\n12\n", "\n13\n", 1);
        assert_eq!(
            verifier.verify(&altered),
            Err(CheckpointError::BadSignature)
        );
        let other = NoteSigner::new("dialogue-ledger", SigningKey::from_bytes(&[7; 32]));
        assert!(matches!(
            verifier.verify(&other.sign(&checkpoint())),
            Err(CheckpointError::NotSigned(_))
        ));
        assert!(verifier.verify("garbage").is_err());
        assert!(NoteVerifier::parse("dialogue-ledger+00000000+AQ==").is_err());
    }
}
