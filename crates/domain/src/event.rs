//! The domain's events: one variant per stored message type of `dialogue.ledger.events.v1`.

use prost::Message;

use crate::pb;

macro_rules! events {
    ($($name:ident),* $(,)?) => {
        /// A domain event. Its stored form is its protobuf message, under a stable type name.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Event {
            $($name(pb::$name),)*
        }

        impl Event {
            /// The stable type name stored with the event: the message's full protobuf name.
            pub fn type_name(&self) -> &'static str {
                match self {
                    $(Self::$name(_) => concat!("dialogue.ledger.events.v1.", stringify!($name)),)*
                }
            }

            /// The stored payload.
            pub fn encode(&self) -> Vec<u8> {
                match self {
                    $(Self::$name(event) => event.encode_to_vec(),)*
                }
            }

            /// Reads a stored event back; `Ok(None)` for a type this version does not know.
            pub fn decode(type_name: &str, payload: &[u8]) -> Result<Option<Self>, prost::DecodeError> {
                let Some(name) = type_name.strip_prefix("dialogue.ledger.events.v1.") else {
                    return Ok(None);
                };
                match name {
                    $(stringify!($name) => pb::$name::decode(payload).map(|e| Some(Self::$name(e))),)*
                    _ => Ok(None),
                }
            }
        }

        $(impl From<pb::$name> for Event {
            fn from(event: pb::$name) -> Self {
                Self::$name(event)
            }
        })*
    };
}

events!(
    OrgUnitDefined,
    PersonRegistered,
    ManagerAssigned,
    PersonMoved,
    PersonDeparted,
    SessionScheduled,
    SessionRescheduled,
    SessionCancelled,
    SessionHeld,
    AgendaItemAdded,
    NoteRecorded,
    ActionItemAgreed,
    ActionItemCompleted,
    ActionItemDropped,
    ReflectionRecorded,
    InsightRecorded,
    InsightShared,
    InsightNarrowed,
    InsightRetracted,
    GoalSet,
    GoalProgressRecorded,
    GoalReflected,
    GoalRevised,
    GoalCompleted,
    GoalAbandoned,
    SurveyResultRecorded,
    AccessRecorded,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_under_their_type_name() {
        let event = Event::from(pb::SessionCancelled {
            session_id: "s-1".into(),
            reason: "sick".into(),
            cancelled_by: "p-1".into(),
        });
        assert_eq!(
            event.type_name(),
            "dialogue.ledger.events.v1.SessionCancelled"
        );
        assert_eq!(
            Event::decode(event.type_name(), &event.encode()).unwrap(),
            Some(event)
        );
        assert_eq!(
            Event::decode("dialogue.ledger.events.v1.Unknown", &[]).unwrap(),
            None
        );
        assert_eq!(Event::decode("other.Type", &[]).unwrap(), None);
        assert!(Event::decode("dialogue.ledger.events.v1.SessionCancelled", &[0xff]).is_err());
    }
}
