//! Identifiers chosen by the calling systems, and tenants.

use std::fmt;

use crate::DomainError;

/// The id of a person, org unit, session, insight, goal, item or survey result: 1 to 64
/// characters of `[A-Za-z0-9._:-]`, chosen by the calling system.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id(String);

impl Id {
    pub const MAX_LEN: usize = 64;

    /// Checks an id given in request field `field`.
    pub fn parse(field: &str, value: &str) -> Result<Self, DomainError> {
        if value.is_empty() {
            return Err(DomainError::invalid(field, "is required"));
        }
        if value.len() > Self::MAX_LEN {
            return Err(DomainError::invalid(field, "must be at most 64 characters"));
        }
        if !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
        {
            return Err(DomainError::invalid(
                field,
                "may only contain A-Z a-z 0-9 . _ : -",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// Like [`Id::parse`], where an empty value means "none".
    pub fn parse_optional(field: &str, value: &str) -> Result<Option<Self>, DomainError> {
        if value.is_empty() {
            Ok(None)
        } else {
            Self::parse(field, value).map(Some)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for Id {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

/// An organisation: 1 to 63 characters of `[a-z0-9-]`, starting with a letter or digit. Every
/// stream and key is namespaced by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantId(String);

impl TenantId {
    pub fn parse(value: &str) -> Option<Self> {
        let valid = (1..=63).contains(&value.len())
            && value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !value.starts_with('-');
        valid.then(|| Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name of the stream holding aggregate `kind`/`id` of this tenant.
    pub fn stream(&self, kind: &str, id: &str) -> String {
        format!("{}/{kind}-{id}", self.0)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_and_name_their_field() {
        assert!(Id::parse("person_id", "emp-0042").is_ok());
        assert!(Id::parse("person_id", "a.b_c:d").is_ok());
        for bad in ["", "has space", "ユーザー", &"x".repeat(65)] {
            match Id::parse("person_id", bad) {
                Err(DomainError::InvalidArgument { field, .. }) => assert_eq!(field, "person_id"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        assert_eq!(Id::parse_optional("manager_id", "").unwrap(), None);
    }

    #[test]
    fn tenants_are_checked() {
        assert!(TenantId::parse("acme-1").is_some());
        for bad in ["", "Acme", "-acme", "a/b", &"a".repeat(64)] {
            assert!(TenantId::parse(bad).is_none(), "{bad:?} was accepted");
        }
        let tenant = TenantId::parse("acme").unwrap();
        assert_eq!(tenant.stream("session", "s-1"), "acme/session-s-1");
    }
}
