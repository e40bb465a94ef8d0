//! Reading workflow files: YAML → [`Workflow`], keeping line/column locations.
//!
//! The YAML is read with `serde-saphyr` (a maintained serde YAML crate that reports
//! locations). The typed parse gives the [`Workflow`]; a second pass over the same text
//! into a small "skeleton" of `Spanned` values records where the fields that validation
//! talks about (ids, `needs`, templates, conditions, model references) were written, so a
//! diagnostic found later can name its line and column.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::Spanned;

use crate::diagnostic::{Diagnostic, DiagnosticCode, Span};
use crate::workflow::Workflow;

/// Locations of the parts of a workflow file that diagnostics refer to. Missing entries
/// mean "unknown" (for example when a value came through an alias).
#[derive(Debug, Default, Clone)]
pub struct Locations {
    /// Where the workflow's `id` value is.
    pub id: Option<Span>,
    /// Where the `format` value is.
    pub format: Option<Span>,
    /// Where the `steps` list starts.
    pub steps: Option<Span>,
    /// Per step, by position in the file.
    pub step: Vec<StepLocations>,
    /// Per output, by name: where its template is.
    pub outputs: BTreeMap<String, Span>,
    /// Per input, by name: where its declaration is.
    pub inputs: BTreeMap<String, Span>,
    /// Where the workflow's `budget` is.
    pub budget: Option<Span>,
    /// Per agent, by name: where its declaration is.
    pub agents: BTreeMap<String, Span>,
}

/// Locations inside one step.
#[derive(Debug, Default, Clone)]
pub struct StepLocations {
    /// The step's mapping itself.
    pub start: Option<Span>,
    /// Field name → where its value is (`id`, `kind`, `prompt`, `when`, `template`,
    /// `system`, `model`, `temperature`, ...).
    pub fields: BTreeMap<&'static str, Span>,
    /// Each `needs` entry.
    pub needs: Vec<Option<Span>>,
    /// Each model reference of `model` / `model.prefer`.
    pub models: Vec<Option<Span>>,
}

impl StepLocations {
    /// Where `field` is, falling back to the step's start.
    pub fn of(&self, field: &str) -> Option<Span> {
        self.fields.get(field).copied().or(self.start)
    }
}

/// A parsed workflow with the locations of its parts.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The workflow as written.
    pub workflow: Workflow,
    /// Where its parts are in the source text.
    pub locations: Locations,
    /// The file it came from, as given by the user (for diagnostics).
    pub file: Option<String>,
}

fn span(loc: &serde_saphyr::Location) -> Option<Span> {
    let (line, column) = (loc.line(), loc.column());
    if line == 0 {
        None
    } else {
        Some(Span {
            line: u32::try_from(line).unwrap_or(u32::MAX),
            column: u32::try_from(column).unwrap_or(u32::MAX),
        })
    }
}

fn spanned<T>(s: &Spanned<T>) -> Option<Span> {
    span(&s.referenced)
}

#[derive(Deserialize)]
struct SkelDoc {
    #[serde(default)]
    id: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    format: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    inputs: Option<BTreeMap<String, Spanned<IgnoredAny>>>,
    #[serde(default)]
    outputs: Option<BTreeMap<String, Spanned<IgnoredAny>>>,
    #[serde(default)]
    steps: Option<Spanned<Vec<Spanned<SkelStep>>>>,
    #[serde(default)]
    budget: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    agents: Option<BTreeMap<String, Spanned<IgnoredAny>>>,
}

#[derive(Deserialize)]
struct SkelStep {
    #[serde(default)]
    id: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    kind: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    needs: Option<Vec<Spanned<IgnoredAny>>>,
    #[serde(default)]
    when: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    system: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    prompt: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    template: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    format: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    model: Option<Spanned<SkelModel>>,
    #[serde(default)]
    temperature: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    max_tokens: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    output_schema: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    retry: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    timeout: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    on_failure: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    cache: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    task: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    agent: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    budget: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    fallback: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    approval: Option<Spanned<IgnoredAny>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SkelModel {
    One(Spanned<String>),
    List(Vec<Spanned<IgnoredAny>>),
    Map {
        #[serde(default)]
        prefer: Vec<Spanned<IgnoredAny>>,
    },
}

fn skeleton(text: &str) -> Locations {
    let Ok(doc) = serde_saphyr::from_str::<SkelDoc>(text) else {
        return Locations::default();
    };
    let mut out = Locations {
        id: doc.id.as_ref().and_then(spanned),
        format: doc.format.as_ref().and_then(spanned),
        budget: doc.budget.as_ref().and_then(spanned),
        ..Locations::default()
    };
    for (name, s) in doc.agents.unwrap_or_default() {
        if let Some(sp) = spanned(&s) {
            out.agents.insert(name, sp);
        }
    }
    for (name, s) in doc.inputs.unwrap_or_default() {
        if let Some(sp) = spanned(&s) {
            out.inputs.insert(name, sp);
        }
    }
    for (name, s) in doc.outputs.unwrap_or_default() {
        if let Some(sp) = spanned(&s) {
            out.outputs.insert(name, sp);
        }
    }
    if let Some(steps) = doc.steps {
        out.steps = spanned(&steps);
        for step in steps.value {
            let mut loc = StepLocations {
                start: spanned(&step),
                ..StepLocations::default()
            };
            let s = step.value;
            let fields: [(&'static str, &Option<Spanned<IgnoredAny>>); 20] = [
                ("on_failure", &s.on_failure),
                ("cache", &s.cache),
                ("task", &s.task),
                ("agent", &s.agent),
                ("budget", &s.budget),
                ("fallback", &s.fallback),
                ("approval", &s.approval),
                ("id", &s.id),
                ("kind", &s.kind),
                ("when", &s.when),
                ("system", &s.system),
                ("prompt", &s.prompt),
                ("template", &s.template),
                ("format", &s.format),
                ("temperature", &s.temperature),
                ("max_tokens", &s.max_tokens),
                ("output_schema", &s.output_schema),
                ("retry", &s.retry),
                ("timeout", &s.timeout),
                ("needs", &None),
            ];
            for (name, value) in fields {
                if let Some(sp) = value.as_ref().and_then(spanned) {
                    loc.fields.insert(name, sp);
                }
            }
            if let Some(needs) = &s.needs {
                loc.needs = needs.iter().map(spanned).collect();
                if let Some(first) = loc.needs.first().copied().flatten() {
                    loc.fields.insert("needs", first);
                }
            }
            if let Some(model) = &s.model {
                if let Some(sp) = spanned(model) {
                    loc.fields.insert("model", sp);
                }
                loc.models = match &model.value {
                    SkelModel::One(one) => vec![spanned(one)],
                    SkelModel::List(items) => items.iter().map(spanned).collect(),
                    SkelModel::Map { prefer } => prefer.iter().map(spanned).collect(),
                };
            }
            out.step.push(loc);
        }
    }
    out
}

/// Parses workflow YAML text. `file` is used in diagnostics only.
///
/// # Errors
/// One [`DiagnosticCode::Syntax`] diagnostic, located, when the text is not valid YAML or
/// does not match the format (wrong type, unknown or missing field).
pub fn parse_str(text: &str, file: Option<&str>) -> Result<Parsed, Box<Diagnostic>> {
    match serde_saphyr::from_str::<Workflow>(text) {
        Ok(workflow) => Ok(Parsed {
            workflow,
            locations: skeleton(text),
            file: file.map(str::to_owned),
        }),
        Err(err) => {
            let at = err.location().and_then(|l| span(&l));
            let message = syntax_message(&err);
            let mut d = Diagnostic::new(DiagnosticCode::Syntax, message)
                .at(at)
                .hint("fix the YAML at this place; the format is described by schema/workflow.schema.json");
            d.file = file.map(str::to_owned);
            Err(Box::new(d))
        }
    }
}

/// The error's own message without the rendered source snippet serde-saphyr appends.
fn syntax_message(err: &serde_saphyr::Error) -> String {
    let full = err.to_string();
    let first = full
        .lines()
        .next()
        .unwrap_or("invalid workflow file")
        .trim();
    // serde-saphyr prefixes "error: line X column Y: "; the location is printed separately.
    let trimmed = first.strip_prefix("error: ").unwrap_or(first);
    let trimmed = match trimmed.find(": ") {
        Some(i) if trimmed[..i].starts_with("line ") => &trimmed[i + 2..],
        _ => trimmed,
    };
    trimmed.to_string()
}

/// Reads and parses a workflow file.
///
/// # Errors
/// A [`DiagnosticCode::Io`] diagnostic when the file cannot be read, otherwise as
/// [`parse_str`].
pub fn parse_file(path: &Path) -> Result<Parsed, Box<Diagnostic>> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        let mut d = Diagnostic::new(DiagnosticCode::Io, format!("cannot read the file: {e}"))
            .hint("check the path and that the file is readable UTF-8 text");
        d.file = Some(name.clone());
        Box::new(d)
    })?;
    parse_str(&text, Some(&name))
}
