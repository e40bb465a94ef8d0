//! Collecting diagnostics while validating: the context that stamps each one with the
//! file, where a step's fields are, and "did you mean" suggestions.
//!
//! Invariant: every diagnostic pushed through [`Ctx::push`] names the workflow's file
//! (when it has one); validation never stops at the first problem.

use crate::diagnostic::{Diagnostic, DiagnosticCode, Span};
use crate::parse::{Locations, StepLocations};

/// Where the locations of a step without any (a workflow that did not come from a file)
/// are looked up.
static NO_LOCATIONS: std::sync::LazyLock<StepLocations> =
    std::sync::LazyLock::new(StepLocations::default);

/// The diagnostics found so far and what they need: the file name and the locations.
pub(super) struct Ctx<'a> {
    pub(super) file: Option<&'a str>,
    pub(super) locs: &'a Locations,
    pub(super) diags: Vec<Diagnostic>,
    /// The workflow files being validated, outermost first, this one last (canonical
    /// paths; a file not read from disk is not in it): a `workflow` step naming one of
    /// them is a cycle.
    pub(super) chain: &'a [std::path::PathBuf],
    /// The folder no other file may be read from outside of (canonical), when the
    /// workflow runs from one (see [`super::validate::validate_within`]).
    pub(super) root: Option<&'a std::path::Path>,
}

impl<'a> Ctx<'a> {
    /// Records `d`, naming the file.
    pub(super) fn push(&mut self, mut d: Diagnostic) {
        d.file = self.file.map(str::to_owned);
        self.diags.push(d);
    }

    /// Where the parts of step `i` are (nothing known when the workflow has no locations).
    pub(super) fn step_locs(&self, i: usize) -> &'a StepLocations {
        self.locs.step.get(i).unwrap_or(&NO_LOCATIONS)
    }
}

/// A place a diagnostic is about: the step (if any), the field path, the location.
pub(super) struct At {
    pub(super) step: Option<String>,
    pub(super) field: String,
    pub(super) span: Option<Span>,
}

impl At {
    /// A diagnostic at this place.
    pub(super) fn diag(&self, code: DiagnosticCode, message: String, hint: &str) -> Diagnostic {
        let mut d = Diagnostic::new(code, message)
            .field(&self.field)
            .at(self.span)
            .hint(hint);
        if let Some(step) = &self.step {
            d = d.step(step);
        }
        d
    }
}

/// Whether `s` is a lowercase identifier (`[a-z_][a-z0-9_]*`), as step ids and input
/// names must be so templates can name them.
pub(super) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The candidate nearest to `name` by edit distance, when it is near enough to be a typo
/// (at most 2 edits, or a third of the candidate's length).
fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::levenshtein(name, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// ` (did you mean `x`?)` for the nearest candidate, or nothing.
pub(super) fn did_you_mean<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    match closest(name, candidates) {
        Some(c) => format!(" (did you mean `{c}`?)"),
        None => String::new(),
    }
}
