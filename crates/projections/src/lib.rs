//! Projections fold the event log into read models (documents), each with its own checkpoint
//! committed in the same transaction as its documents, so a restart never loses or doubles an
//! event's effect. A projection whose version changed is rebuilt from position zero.

pub mod as_of;
pub mod development;
mod documents;
mod embedded;
pub mod evaluation;
mod feed;
pub mod health;
mod period;
pub mod postgres;
mod runner;
mod sharing;
pub mod staffing;
mod text;

pub use documents::{
    Change, Checkpoint, DocumentReads, DocumentStore, Documents, Error, Lease, Write, decode,
    encode,
};
pub use embedded::EmbeddedDocuments;
pub use feed::SharedLog;
pub use period::{bounds, enclosing, months, periods_of, previous};
pub use runner::{Applied, DEFAULT_COMMIT_EVENTS, Projection, ProjectionRunner, ProjectionStatus};
pub use text::Text;
