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
    PersonForgotten,
    AccessRecorded,
);

/// An event's personal text: its sealed fields, in sealing order, and where their ciphertext goes.
#[derive(Debug)]
pub struct PersonalText<'a> {
    pub fields: Vec<&'a mut String>,
    pub sealed: &'a mut Option<pb::Sealed>,
}

fn with_key_results<'a>(
    mut fields: Vec<&'a mut String>,
    key_results: &'a mut [pb::KeyResult],
) -> Vec<&'a mut String> {
    fields.extend(key_results.iter_mut().map(|kr| &mut kr.description));
    fields
}

impl Event {
    /// The fields marked "Personal: sealed" in `events.proto`; `None` for an event without any.
    pub fn personal_text(&mut self) -> Option<PersonalText<'_>> {
        let (fields, sealed) = match self {
            Self::PersonRegistered(e) => (vec![&mut e.display_name], &mut e.sealed),
            Self::SessionScheduled(e) => (vec![&mut e.topic], &mut e.sealed),
            Self::SessionCancelled(e) => (vec![&mut e.reason], &mut e.sealed),
            Self::AgendaItemAdded(e) => (vec![&mut e.text], &mut e.sealed),
            Self::NoteRecorded(e) => (vec![&mut e.text], &mut e.sealed),
            Self::ActionItemAgreed(e) => (vec![&mut e.text], &mut e.sealed),
            Self::ActionItemDropped(e) => (vec![&mut e.reason], &mut e.sealed),
            Self::ReflectionRecorded(e) => (vec![&mut e.what_was_decided], &mut e.sealed),
            Self::InsightRecorded(e) => (vec![&mut e.text], &mut e.sealed),
            Self::GoalSet(e) => (
                with_key_results(vec![&mut e.title, &mut e.description], &mut e.key_results),
                &mut e.sealed,
            ),
            Self::GoalProgressRecorded(e) => (vec![&mut e.note], &mut e.sealed),
            Self::GoalReflected(e) => (vec![&mut e.text], &mut e.sealed),
            Self::GoalRevised(e) => (
                with_key_results(
                    vec![&mut e.title, &mut e.description, &mut e.reason],
                    &mut e.key_results,
                ),
                &mut e.sealed,
            ),
            Self::GoalCompleted(e) => (vec![&mut e.note], &mut e.sealed),
            Self::GoalAbandoned(e) => (vec![&mut e.reason], &mut e.sealed),
            _ => return None,
        };
        Some(PersonalText { fields, sealed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_under_their_type_name() {
        let event = Event::from(pb::SessionCancelled {
            sealed: None,
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

    #[test]
    fn goal_text_lists_its_own_fields_then_key_result_descriptions() {
        let mut event = Event::from(pb::GoalSet {
            title: "t".into(),
            description: "d".into(),
            key_results: vec![
                pb::KeyResult {
                    description: "k1".into(),
                    ..Default::default()
                },
                pb::KeyResult {
                    description: "k2".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        let text = event.personal_text().unwrap();
        let fields: Vec<&str> = text.fields.iter().map(|f| f.as_str()).collect();
        assert_eq!(fields, ["t", "d", "k1", "k2"]);
        assert!(
            Event::from(pb::SessionHeld::default())
                .personal_text()
                .is_none()
        );
    }
}
