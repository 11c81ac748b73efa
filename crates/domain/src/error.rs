//! Why a command is refused. Each variant maps to one gRPC status code in the server.

/// A refused command; nothing is appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// A request field is malformed (INVALID_ARGUMENT).
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// Something the command names does not exist (NOT_FOUND).
    #[error("{0} not found")]
    NotFound(String),
    /// The thing the command would create exists already (ALREADY_EXISTS).
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The command is well-formed but the state does not allow it (FAILED_PRECONDITION).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The actor may not do this (PERMISSION_DENIED).
    #[error("{0}")]
    PermissionDenied(String),
}

impl DomainError {
    pub fn invalid(field: &str, reason: &str) -> Self {
        Self::InvalidArgument {
            field: field.to_owned(),
            reason: reason.to_owned(),
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound(what.into())
    }

    pub fn exists(what: impl Into<String>) -> Self {
        Self::AlreadyExists(what.into())
    }

    pub fn precondition(why: impl Into<String>) -> Self {
        Self::FailedPrecondition(why.into())
    }

    pub fn denied(why: impl Into<String>) -> Self {
        Self::PermissionDenied(why.into())
    }
}

/// Checks free text given in `field`: required (unless `optional`) and at most `max` characters.
pub(crate) fn text(
    field: &str,
    value: &str,
    max: usize,
    optional: bool,
) -> Result<(), DomainError> {
    if !optional && value.trim().is_empty() {
        return Err(DomainError::invalid(field, "is required"));
    }
    if value.chars().count() > max {
        return Err(DomainError::invalid(
            field,
            &format!("must be at most {max} characters"),
        ));
    }
    Ok(())
}
