//! Between EventStoreDB's types and the contract's.

use ledger_store::{Error, Metadata, Position, RecordedEvent, StreamName, Timestamp};

/// A namespace safe in stream names and filters: ASCII letters, digits, `-` and `_`, 1 to 64
/// bytes.
pub(crate) fn check_namespace(namespace: &str) -> Result<(), Error> {
    let ok = (1..=64).contains(&namespace.len())
        && namespace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::Backend(
            format!("invalid EventStoreDB namespace {namespace:?}: use letters, digits, - and _")
                .into(),
        ))
    }
}

pub(crate) fn to_esdb_position(position: Position) -> eventstore::Position {
    eventstore::Position {
        commit: position.commit(),
        prepare: position.prepare(),
    }
}

/// A ledger event stored in EventStoreDB, under our stream name `stream`.
pub(crate) fn recorded(
    stream: &str,
    event: &eventstore::RecordedEvent,
) -> Result<RecordedEvent, Error> {
    let position = Position::new(event.position.commit, event.position.prepare);
    let corrupt = |reason: String| Error::Corrupt {
        position: position.to_string(),
        reason,
    };
    Ok(RecordedEvent {
        stream: StreamName::new(stream).map_err(|e| corrupt(format!("stream name: {e}")))?,
        revision: event.revision,
        position,
        id: event.id,
        event_type: event.event_type.clone(),
        payload: event.data.clone(),
        metadata: Metadata::decode(&event.custom_metadata).map_err(corrupt)?,
        recorded_at: Timestamp::from_micros(event.created.timestamp_micros()),
    })
}

/// Connection trouble (a retry may succeed) is unavailability; the rest is a backend failure.
pub(crate) fn from_esdb(error: eventstore::Error) -> Error {
    use eventstore::Error as E;
    match error {
        E::ConnectionClosed
        | E::GrpcConnectionError(_)
        | E::DeadlineExceeded
        | E::NotLeaderException(_) => Error::Unavailable(Box::new(error)),
        error => Error::Backend(Box::new(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_checked() {
        assert!(check_namespace("ledger").is_ok());
        assert!(check_namespace("ledger_test-1").is_ok());
        for bad in ["", "a:b", "a/b", "$all", &"x".repeat(65)] {
            assert!(check_namespace(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn positions_round_trip() {
        let position = Position::new(1_234, 1_200);
        let esdb = to_esdb_position(position);
        assert_eq!((esdb.commit, esdb.prepare), (1_234, 1_200));
    }

    #[test]
    fn connection_trouble_is_unavailability() {
        assert!(matches!(
            from_esdb(eventstore::Error::ConnectionClosed),
            Error::Unavailable(_)
        ));
        assert!(matches!(
            from_esdb(eventstore::Error::DeadlineExceeded),
            Error::Unavailable(_)
        ));
        assert!(matches!(
            from_esdb(eventstore::Error::AccessDenied),
            Error::Backend(_)
        ));
    }
}
