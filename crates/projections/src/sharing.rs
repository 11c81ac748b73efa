//! How an insight's sharing stands, folded from its events the same way by every read model, so
//! the rule "served only while its subject shares it with this use" lives in one place.

use ledger_domain::{Event, pb};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::documents::{Documents, Error};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Sharing {
    scopes: Vec<i32>,
    retracted: bool,
}

impl Sharing {
    /// As recorded with these scopes.
    pub(crate) fn recorded(scopes: &[i32]) -> Self {
        Self {
            scopes: scopes.to_vec(),
            retracted: false,
        }
    }

    /// Whether the insight may be used for `scope` now.
    pub(crate) fn allows(&self, scope: pb::SharingScope) -> bool {
        !self.retracted && self.scopes.contains(&i32::from(scope))
    }

    /// The insight a sharing change is about, if `event` is one.
    pub(crate) fn changed_insight(event: &Event) -> Option<&str> {
        match event {
            Event::InsightShared(e) => Some(&e.insight_id),
            Event::InsightNarrowed(e) => Some(&e.insight_id),
            Event::InsightRetracted(e) => Some(&e.insight_id),
            _ => None,
        }
    }

    /// Folds a sharing change (widening, narrowing, retraction); other events change nothing.
    pub(crate) fn apply(&mut self, event: &Event) {
        match event {
            Event::InsightShared(e) => {
                for scope in &e.added {
                    if !self.scopes.contains(scope) {
                        self.scopes.push(*scope);
                    }
                }
            }
            Event::InsightNarrowed(e) => self.scopes.retain(|scope| !e.removed.contains(scope)),
            Event::InsightRetracted(_) => self.retracted = true,
            _ => {}
        }
    }
}

/// Serves `shown` under `key` of `model` (`Some`: the insight is shared for the read model's use
/// now), or withdraws it if it was `served` until this change: what was never served has
/// nothing to withdraw, and looking would cost a read of the store.
pub(crate) fn serve<T: Serialize + DeserializeOwned + Send + 'static>(
    documents: &mut Documents<'_>,
    model: &str,
    key: &str,
    shown: Option<T>,
    served: bool,
) -> Result<(), Error> {
    match shown {
        Some(document) => documents.put(model, key, document),
        None if served => documents.delete::<T>(model, key),
        None => Ok(()),
    }
}
