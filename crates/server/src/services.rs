//! The command services of `dialogue.ledger.v1`: each RPC names its aggregate and command, and
//! the [`CommandHandler`] does the rest.

use std::sync::Arc;

use ledger_domain::{
    Goal, GoalCommand, Insight, InsightCommand, OrgUnit, OrgUnitCommand, PersonCommand,
    PersonRecord, Session, SessionCommand, SurveyCommand, SurveyResult,
};
use ledger_proto::v1 as api;
use tonic::{Request, Response, Status};

use crate::commands::CommandHandler;

/// One service struct per gRPC service, all sharing the handler.
#[derive(Debug, Clone)]
pub struct CommandService {
    handler: Arc<CommandHandler>,
}

impl CommandService {
    pub fn new(handler: Arc<CommandHandler>) -> Self {
        Self { handler }
    }
}

macro_rules! rpcs {
    ($service:path { $($rpc:ident($request:ty) => $aggregate:ty, $command:path;)* }) => {
        #[tonic::async_trait]
        impl $service for CommandService {
            $(
                async fn $rpc(&self, request: Request<$request>) -> Result<Response<api::CommandResult>, Status> {
                    self.handler.handle::<$aggregate, _>(request, $command).await
                }
            )*
        }
    };
}

rpcs!(api::org_directory_server::OrgDirectory {
    define_org_unit(api::DefineOrgUnitRequest) => OrgUnit, OrgUnitCommand::Define;
    register_person(api::RegisterPersonRequest) => PersonRecord, PersonCommand::Register;
    assign_manager(api::AssignManagerRequest) => PersonRecord, PersonCommand::AssignManager;
    move_person(api::MovePersonRequest) => PersonRecord, PersonCommand::Move;
    record_departure(api::RecordDepartureRequest) => PersonRecord, PersonCommand::Depart;
});

rpcs!(api::sessions_server::Sessions {
    schedule_session(api::ScheduleSessionRequest) => Session, SessionCommand::Schedule;
    reschedule_session(api::RescheduleSessionRequest) => Session, SessionCommand::Reschedule;
    cancel_session(api::CancelSessionRequest) => Session, SessionCommand::Cancel;
    record_session_held(api::RecordSessionHeldRequest) => Session, SessionCommand::RecordHeld;
    add_agenda_item(api::AddAgendaItemRequest) => Session, SessionCommand::AddAgendaItem;
    record_note(api::RecordNoteRequest) => Session, SessionCommand::RecordNote;
    agree_action_item(api::AgreeActionItemRequest) => Session, SessionCommand::AgreeActionItem;
    complete_action_item(api::CompleteActionItemRequest) => Session, SessionCommand::CompleteActionItem;
    drop_action_item(api::DropActionItemRequest) => Session, SessionCommand::DropActionItem;
    record_reflection(api::RecordReflectionRequest) => Session, SessionCommand::RecordReflection;
});

rpcs!(api::insights_server::Insights {
    record_insight(api::RecordInsightRequest) => Insight, InsightCommand::Record;
    share_insight(api::ShareInsightRequest) => Insight, InsightCommand::Share;
    narrow_insight(api::NarrowInsightRequest) => Insight, InsightCommand::Narrow;
    retract_insight(api::RetractInsightRequest) => Insight, InsightCommand::Retract;
});

rpcs!(api::goals_server::Goals {
    set_goal(api::SetGoalRequest) => Goal, GoalCommand::Set;
    record_goal_progress(api::RecordGoalProgressRequest) => Goal, GoalCommand::RecordProgress;
    reflect_on_goal(api::ReflectOnGoalRequest) => Goal, GoalCommand::Reflect;
    revise_goal(api::ReviseGoalRequest) => Goal, GoalCommand::Revise;
    complete_goal(api::CompleteGoalRequest) => Goal, GoalCommand::Complete;
    abandon_goal(api::AbandonGoalRequest) => Goal, GoalCommand::Abandon;
});

rpcs!(api::surveys_server::Surveys {
    record_survey_result(api::RecordSurveyResultRequest) => SurveyResult, SurveyCommand::Record;
});
