//! Located diagnostics: what is wrong with a workflow, where, and what would fix it.
//!
//! Every problem found while reading or validating a workflow becomes one [`Diagnostic`]
//! naming the file, the line and column when known, the step id and field, and a hint.
//! Rendering is stable text (`file:line:column: error[code]: message`), so the corpus of
//! broken files under `tests/invalid/` is checked with snapshot tests.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What kind of problem a [`Diagnostic`] reports. Serialized as a snake_case string.
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiagnosticCode {
    /// The file could not be read.
    Io,
    /// The YAML is malformed or does not match the format (wrong type, unknown field).
    Syntax,
    /// The `format` version is not one this build reads.
    UnsupportedFormat,
    /// An id (workflow, step, input) is empty or not an identifier.
    InvalidId,
    /// Two steps share an id.
    DuplicateId,
    /// A `needs` entry names no step.
    UnknownNeed,
    /// The `needs` edges form a cycle.
    Cycle,
    /// A field is missing for the step's kind.
    MissingField,
    /// A field is not used by the step's kind.
    UnexpectedField,
    /// A value is out of range or malformed.
    InvalidValue,
    /// A template or condition does not compile.
    TemplateSyntax,
    /// A template or condition references an undeclared input.
    UnknownInput,
    /// A template or condition references a step that does not exist.
    UnknownStep,
    /// A template or condition references a step that is not among the step's
    /// dependencies, so its output would not be ready.
    NotADependency,
    /// A model reference names no known provider.
    UnknownProvider,
    /// A required input was not given for a run.
    MissingInput,
    /// An input given for a run is not declared, or has the wrong type.
    BadInput,
    /// The workflow has no steps.
    NoSteps,
    /// A step or fallback ladder names an agent that is not declared.
    UnknownAgent,
    /// A step's `capability` is listed by no agent.
    UnknownCapability,
}

impl DiagnosticCode {
    /// The snake_case name shown in rendered diagnostics.
    pub fn as_str(self) -> &'static str {
        match self {
            DiagnosticCode::Io => "io",
            DiagnosticCode::Syntax => "syntax",
            DiagnosticCode::UnsupportedFormat => "unsupported_format",
            DiagnosticCode::InvalidId => "invalid_id",
            DiagnosticCode::DuplicateId => "duplicate_id",
            DiagnosticCode::UnknownNeed => "unknown_need",
            DiagnosticCode::Cycle => "cycle",
            DiagnosticCode::MissingField => "missing_field",
            DiagnosticCode::UnexpectedField => "unexpected_field",
            DiagnosticCode::InvalidValue => "invalid_value",
            DiagnosticCode::TemplateSyntax => "template_syntax",
            DiagnosticCode::UnknownInput => "unknown_input",
            DiagnosticCode::UnknownStep => "unknown_step",
            DiagnosticCode::NotADependency => "not_a_dependency",
            DiagnosticCode::UnknownProvider => "unknown_provider",
            DiagnosticCode::MissingInput => "missing_input",
            DiagnosticCode::BadInput => "bad_input",
            DiagnosticCode::UnknownAgent => "unknown_agent",
            DiagnosticCode::UnknownCapability => "unknown_capability",
            DiagnosticCode::NoSteps => "no_steps",
        }
    }
}

/// A 1-based line and column in a workflow file.
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// Line, counting from 1.
    pub line: u32,
    /// Column, counting from 1.
    pub column: u32,
}

/// One located problem in a workflow.
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// What kind of problem.
    pub code: DiagnosticCode,
    /// The workflow file, as given by the user, when the workflow came from a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Where in the file, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span: Option<Span>,
    /// The step concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The field concerned, as a path inside the step or workflow (`needs[1]`, `prompt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
    /// What to change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A diagnostic with only a code and a message; add the rest with the builders.
    pub fn new(code: DiagnosticCode, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            file: None,
            span: None,
            step: None,
            field: None,
            message: message.into(),
            hint: None,
        }
    }

    /// Sets the step id.
    pub fn step(mut self, step: impl Into<String>) -> Self {
        self.step = Some(step.into());
        self
    }

    /// Sets the field path.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Sets the hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Sets the location, if known.
    pub fn at(mut self, span: Option<Span>) -> Self {
        if span.is_some() {
            self.span = span;
        }
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut wrote_place = false;
        if let Some(file) = &self.file {
            write!(f, "{file}")?;
            wrote_place = true;
        }
        if let Some(span) = self.span {
            if wrote_place {
                write!(f, ":")?;
            }
            write!(f, "{}:{}", span.line, span.column)?;
            wrote_place = true;
        }
        if wrote_place {
            write!(f, ": ")?;
        }
        write!(f, "error[{}]: {}", self.code.as_str(), self.message)?;
        match (&self.step, &self.field) {
            (Some(step), Some(field)) => write!(f, " (step `{step}`, field `{field}`)")?,
            (Some(step), None) => write!(f, " (step `{step}`)")?,
            (None, Some(field)) => write!(f, " (field `{field}`)")?,
            (None, None) => {}
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  help: {hint}")?;
        }
        Ok(())
    }
}

/// Renders a list of diagnostics, one per paragraph, as the CLI prints them.
pub fn render_all(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}
