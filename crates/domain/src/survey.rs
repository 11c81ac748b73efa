//! Survey results: aggregate scores per org unit and period, refused below the anonymity
//! threshold of respondents.

use crate::error::text;
use crate::{Aggregate, Context, DomainError, Event, Id, Policy, References, Role, api, pb};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SurveyResult {
    pub recorded: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SurveyCommand {
    Record(api::RecordSurveyResultRequest),
}

/// Checks a period such as `2026`, `2026-H2`, `2026-Q4` or `2026-11` given in request field `field`.
pub fn period(field: &str, value: &str) -> Result<(), DomainError> {
    let (year, rest) = value.split_at_checked(4).unwrap_or(("", ""));
    let year_ok = year.len() == 4 && year.chars().all(|c| c.is_ascii_digit());
    let rest_ok = match rest.strip_prefix('-') {
        None => rest.is_empty(),
        Some(part) => {
            matches!(part, "H1" | "H2" | "Q1" | "Q2" | "Q3" | "Q4")
                || part.parse::<u8>().is_ok_and(|m| (1..=12).contains(&m)) && part.len() == 2
        }
    };
    if year_ok && rest_ok {
        Ok(())
    } else {
        Err(DomainError::invalid(
            field,
            "must look like 2026, 2026-H2, 2026-Q4 or 2026-11",
        ))
    }
}

impl Aggregate for SurveyResult {
    type Command = SurveyCommand;
    const KIND: &'static str = "survey";

    fn starts(_command: &Self::Command) -> bool {
        true
    }

    fn id(command: &Self::Command) -> Result<Id, DomainError> {
        let SurveyCommand::Record(c) = command;
        Id::parse("survey_result_id", &c.survey_result_id)
    }

    fn references(command: &Self::Command, _state: &Self) -> References {
        let SurveyCommand::Record(c) = command;
        References {
            org_units: vec![c.org_unit_id.clone()],
            ..References::default()
        }
    }

    fn decide(
        command: &Self::Command,
        state: &Self,
        context: &Context<'_>,
    ) -> Result<Vec<Event>, DomainError> {
        let SurveyCommand::Record(c) = command;
        context.actor.require_any(
            &[Role::Service, Role::Hr, Role::Admin],
            "recording survey results",
        )?;
        let id = Self::id(command)?;
        let unit = Id::parse("org_unit_id", &c.org_unit_id)?;
        period("period", &c.period)?;
        text("metric", &c.metric, 64, false)?;
        if !c.score.is_finite() {
            return Err(DomainError::invalid("score", "must be a finite number"));
        }
        if state.recorded {
            return Err(DomainError::exists(format!("survey result {id}")));
        }
        if !context.world.org_unit_exists(unit.as_str()) {
            return Err(DomainError::not_found(format!("org unit {unit}")));
        }
        let threshold = context
            .policy
            .anonymity_threshold
            .max(Policy::MIN_ANONYMITY);
        if c.respondent_count < threshold {
            return Err(DomainError::precondition(format!(
                "{} respondents is below the anonymity threshold of {threshold}",
                c.respondent_count
            )));
        }
        Ok(vec![
            pb::SurveyResultRecorded {
                survey_result_id: c.survey_result_id.clone(),
                org_unit_id: c.org_unit_id.clone(),
                period: c.period.clone(),
                metric: c.metric.clone(),
                score: c.score,
                respondent_count: c.respondent_count,
            }
            .into(),
        ])
    }

    fn evolve(state: Self, event: &Event) -> Self {
        match event {
            Event::SurveyResultRecorded(_) => Self { recorded: true },
            _ => state,
        }
    }
}
