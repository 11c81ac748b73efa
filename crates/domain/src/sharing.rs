//! Who may use an insight: its subject's sharing scopes, and the rules for changing them.

use std::collections::BTreeSet;

use crate::{DomainError, pb};

use pb::SharingScope as Scope;

/// The scopes an insight starts with when the recorder names none: participants only for
/// horizontal and diagonal sessions (the confidential channel), participants and the manager
/// chain for vertical ones. Condition (health) insights always start with participants only.
pub fn default_scopes(relationship: pb::Relationship, kind: pb::InsightKind) -> Vec<Scope> {
    let vertical = matches!(
        relationship,
        pb::Relationship::VerticalDirect | pb::Relationship::VerticalSkip
    );
    if vertical && kind != pb::InsightKind::Condition {
        vec![Scope::Participants, Scope::ManagerChain]
    } else {
        vec![Scope::Participants]
    }
}

/// Checks a list of scopes from request field `field`: at least one, each specified; sorted and
/// without repeats.
pub(crate) fn parse_scopes(field: &str, raw: &[i32]) -> Result<Vec<Scope>, DomainError> {
    let mut scopes = BTreeSet::new();
    for value in raw {
        match Scope::try_from(*value) {
            Ok(Scope::Unspecified) | Err(_) => {
                return Err(DomainError::invalid(
                    field,
                    "holds an unspecified or unknown scope",
                ));
            }
            Ok(scope) => {
                scopes.insert(scope);
            }
        }
    }
    if scopes.is_empty() {
        return Err(DomainError::invalid(field, "name at least one scope"));
    }
    Ok(scopes.into_iter().collect())
}
