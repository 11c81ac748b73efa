//! Personal text as read models keep it: still sealed, as the event stored it. The query layer
//! opens it for the caller, so read-model files never hold plaintext and erasing a person (by
//! destroying their key) needs no change to any read model, rebuilt or as of any time.

use ledger_domain::pb;
use prost::Message;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::runner::Applied;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Text {
    /// In clear: the event carried it so (no key ring), or the query layer opened it.
    Clear(String),
    /// Field `field` of the event's sealed text (`Sealed`, protobuf-encoded).
    Sealed {
        stream: String,
        event_id: Uuid,
        field: u32,
        /// As bytes, not a sequence of numbers: encoded alike (postcard), in one copy.
        #[serde(with = "serde_bytes")]
        sealed: Vec<u8>,
    },
    /// Its data subject was erased: the text is gone.
    Erased,
}

impl Default for Text {
    fn default() -> Self {
        Self::Clear(String::new())
    }
}

impl Text {
    /// Field `field` of the applied event's personal text: `clear` unless the event is sealed.
    pub fn of(applied: &Applied<'_>, sealed: &Option<pb::Sealed>, field: u32, clear: &str) -> Self {
        match sealed {
            Some(sealed) => Self::Sealed {
                stream: applied.stream.to_owned(),
                event_id: applied.id,
                field,
                sealed: sealed.encode_to_vec(),
            },
            None => Self::Clear(clear.to_owned()),
        }
    }

    /// The sealed text this refers to, decoded; `None` if it is not sealed.
    pub fn sealed(&self) -> Option<(&str, Uuid, usize, Option<pb::Sealed>)> {
        match self {
            Self::Sealed {
                stream,
                event_id,
                field,
                sealed,
            } => {
                let decoded = pb::Sealed::decode(sealed.as_slice()).ok();
                Some((stream, *event_id, *field as usize, decoded))
            }
            _ => None,
        }
    }

    /// The text to show: empty when sealed or erased.
    pub fn shown(&self) -> &str {
        match self {
            Self::Clear(text) => text,
            _ => "",
        }
    }

    /// The text to show, owned: empty when sealed or erased.
    pub fn into_shown(self) -> String {
        match self {
            Self::Clear(text) => text,
            _ => String::new(),
        }
    }

    pub fn is_erased(&self) -> bool {
        matches!(self, Self::Erased)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::documents::{decode, encode};

    /// `Text` as the read-model files written before the sealed bytes were encoded as bytes.
    #[derive(Debug, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Before {
        Clear(String),
        Sealed {
            stream: String,
            event_id: Uuid,
            field: u32,
            sealed: Vec<u8>,
        },
        Erased,
    }

    /// Existing files are read as they are (no rebuild): the encoding did not change.
    #[test]
    fn sealed_bytes_encode_as_they_did() {
        let (stream, event_id) = ("acme/goal-g-1".to_owned(), Uuid::from_u128(7));
        let sealed: Vec<u8> = (0..=255).chain(0..40).collect();
        let before = Before::Sealed {
            stream: stream.clone(),
            event_id,
            field: 2,
            sealed: sealed.clone(),
        };
        let now = Text::Sealed {
            stream,
            event_id,
            field: 2,
            sealed,
        };
        let written = encode(&before).unwrap();
        assert_eq!(encode(&now).unwrap(), written);
        assert_eq!(decode::<Text>(&written).unwrap(), now);
    }
}
