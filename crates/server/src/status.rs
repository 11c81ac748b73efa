//! The one place where errors become gRPC statuses. Internal failures are logged with context
//! here and reach the caller only as a generic message.

use ledger_domain::DomainError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// INVALID_ARGUMENT naming the field, with a `google.rpc.BadRequest` detail.
pub fn invalid_argument(field: &str, reason: &str) -> Status {
    Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid {field}: {reason}"),
        ErrorDetails::with_bad_request_violation(field, reason),
    )
}

pub fn from_domain(error: DomainError) -> Status {
    match error {
        DomainError::InvalidArgument { field, reason } => invalid_argument(&field, &reason),
        DomainError::NotFound(_) => Status::not_found(error.to_string()),
        DomainError::AlreadyExists(_) => Status::already_exists(error.to_string()),
        DomainError::FailedPrecondition(_) => Status::failed_precondition(error.to_string()),
        DomainError::PermissionDenied(_) => Status::permission_denied(error.to_string()),
    }
}

/// A store failure the caller did not cause. `context` says what was being done.
pub fn from_store(error: ledger_store::Error, context: &str) -> Status {
    use ledger_store::Error as E;
    match error {
        E::Unavailable(_) | E::Closed => {
            tracing::warn!(error = %error, context, "event store unavailable");
            Status::unavailable("the event store is unavailable; retry with the same command_id")
        }
        error => {
            tracing::error!(error = %error, source = ?std::error::Error::source(&error), context, "event store failure");
            Status::internal("internal error")
        }
    }
}

/// A key ring failure. Tampered text is DATA_LOSS (the stored bytes are not what was sealed);
/// a key store that does not answer is UNAVAILABLE. `context` says what was being done.
pub fn from_keys(error: ledger_privacy::Error, context: &str) -> Status {
    use ledger_privacy::Error as E;
    match error {
        E::Tampered => {
            tracing::error!(%error, context, "sealed personal text failed authentication");
            Status::data_loss("stored personal text failed authentication (altered)")
        }
        E::Store(_) => {
            tracing::warn!(%error, context, "key store unavailable");
            Status::unavailable("the key store is unavailable; retry")
        }
        error => {
            tracing::error!(%error, context, "key ring failure");
            Status::internal("internal error")
        }
    }
}
