//! Where things are in the store: stream names, revisions within a stream, positions in the global log.

use std::fmt;

use crate::Error;

/// The name of a stream: 1 to 256 bytes of UTF-8 without control characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamName(String);

impl StreamName {
    /// The longest stream name, in bytes.
    pub const MAX_LEN: usize = 256;

    /// Checks and wraps a stream name.
    pub fn new(name: impl Into<String>) -> Result<Self, Error> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("must not be empty")
        } else if name.len() > Self::MAX_LEN {
            Some("must be at most 256 bytes")
        } else if name.chars().any(char::is_control) {
            Some("must not contain control characters")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidStreamName { reason }),
            None => Ok(Self(name)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A place in the global log. Opaque to callers: compare positions, store them and pass them back,
/// but do no arithmetic on them (EventStoreDB's positions, for one, are not consecutive).
///
/// Backends with a gap-free global sequence use that sequence for both parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    commit: u64,
    prepare: u64,
}

impl Position {
    pub const fn new(commit: u64, prepare: u64) -> Self {
        Self { commit, prepare }
    }

    /// The position of the `n`th event (1-based) of a backend with a gap-free global sequence.
    pub const fn from_sequence(n: u64) -> Self {
        Self::new(n, n)
    }

    pub const fn commit(&self) -> u64 {
        self.commit
    }

    pub const fn prepare(&self) -> u64 {
        self.prepare
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.commit, self.prepare)
    }
}

/// What the writer believes about the stream it appends to; checked atomically with the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must exist, at any revision.
    StreamExists,
    /// The stream's last event must have exactly this revision.
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream whose last revision is `actual` (`None`: no stream) satisfies this expectation.
    pub fn is_satisfied_by(self, actual: Option<u64>) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => actual.is_none(),
            Self::StreamExists => actual.is_some(),
            Self::Exact(revision) => actual == Some(revision),
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::NoStream => f.write_str("no stream"),
            Self::StreamExists => f.write_str("stream exists"),
            Self::Exact(revision) => write!(f, "revision {revision}"),
        }
    }
}

/// Which events of a stream to read. Revisions count from 0 and are inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRead {
    /// Ascending, starting at `from` (0 is the stream's first event).
    Forward { from: u64 },
    /// Descending, starting at `from`, or at the stream's last event when `None`.
    Backward { from: Option<u64> },
}

/// Which events of the global log to read. Positions are exclusive cursors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllRead {
    /// Ascending, strictly after `after`, or from the first event when `None`.
    Forward { after: Option<Position> },
    /// Descending, strictly before `before`, or from the last event when `None`.
    Backward { before: Option<Position> },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_are_checked() {
        assert!(StreamName::new("tenant-a/session-1").is_ok());
        assert!(StreamName::new("セッション").is_ok());
        assert!(StreamName::new("a".repeat(StreamName::MAX_LEN)).is_ok());
        for bad in [
            String::new(),
            "a".repeat(StreamName::MAX_LEN + 1),
            "a\nb".into(),
        ] {
            assert!(
                matches!(
                    StreamName::new(bad.clone()),
                    Err(Error::InvalidStreamName { .. })
                ),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn expected_versions_match_only_their_case() {
        use ExpectedVersion::*;
        let cases = [
            (Any, None, true),
            (Any, Some(3), true),
            (NoStream, None, true),
            (NoStream, Some(0), false),
            (StreamExists, None, false),
            (StreamExists, Some(0), true),
            (Exact(2), Some(2), true),
            (Exact(2), Some(3), false),
            (Exact(0), None, false),
        ];
        for (expected, actual, satisfied) in cases {
            assert_eq!(
                expected.is_satisfied_by(actual),
                satisfied,
                "{expected} vs {actual:?}"
            );
        }
    }

    #[test]
    fn positions_order_by_commit_then_prepare() {
        assert!(Position::new(1, 5) < Position::new(2, 0));
        assert!(Position::new(2, 1) < Position::new(2, 2));
        assert_eq!(Position::from_sequence(7), Position::new(7, 7));
    }
}
