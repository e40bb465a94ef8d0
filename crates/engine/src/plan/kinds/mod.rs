//! One planner per step kind. Each takes the kind's fields (a struct of
//! [`crate::workflow::StepKind`]) and the step's planning context, reports what is wrong,
//! and returns the step's [`super::Action`]. A new kind is one more module here.

pub(super) mod agent;
pub(super) mod approval;
pub(super) mod llm;
pub(super) mod loops;
pub(super) mod map;
pub(super) mod subflow;
pub(super) mod switch;
pub(super) mod template;
