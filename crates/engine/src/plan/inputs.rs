//! Workflow inputs: their declarations checked at validation, and the values of a run
//! resolved from what the user gave (`--input name=value`, the desktop form) and the
//! declared defaults.
//!
//! A `file` input's value is the text of the file; a path given for a run is relative to
//! the current directory, a default path to the workflow file's folder.

use std::collections::BTreeMap;

use super::Plan;
use super::report::{Ctx, did_you_mean, is_identifier};
use crate::diagnostic::{Diagnostic, DiagnosticCode};
use crate::workflow::{InputSpec, InputType};

/// Checks one input declaration: an identifier name, a default of the declared type.
pub(super) fn check_input(cx: &mut Ctx<'_>, name: &str, spec: &InputSpec) {
    let at = cx.locs.inputs.get(name).copied();
    if !is_identifier(name) {
        cx.push(
            Diagnostic::new(
                DiagnosticCode::InvalidId,
                format!("input name `{name}` is not a lowercase identifier"),
            )
            .field(format!("inputs.{name}"))
            .at(at)
            .hint("use lowercase letters, digits and `_` (templates read it as `inputs.<name>`)"),
        );
    }
    if let Some(default) = &spec.default {
        let ok = match spec.kind {
            InputType::String | InputType::File => default.is_string(),
            InputType::Number => default.is_number(),
            InputType::Boolean => default.is_boolean(),
            InputType::Json => true,
        };
        if !ok {
            cx.push(
                Diagnostic::new(
                    DiagnosticCode::InvalidValue,
                    format!(
                        "default of input `{name}` is not a {}",
                        input_type_name(spec.kind)
                    ),
                )
                .field(format!("inputs.{name}.default"))
                .at(at)
                .hint("make the default match the input's `type`, or change the type"),
            );
        }
    }
}

/// The name of an input type as written in files.
pub fn input_type_name(t: InputType) -> &'static str {
    match t {
        InputType::String => "string",
        InputType::Number => "number",
        InputType::Boolean => "boolean",
        InputType::File => "file",
        InputType::Json => "json",
    }
}

/// Resolves the inputs of a run: applies defaults, converts `key=value` strings to the
/// declared types, reads `file` inputs, and reports missing or unknown inputs. A `file`
/// input given on the command line is a path relative to the current directory; a
/// `file` default is relative to the workflow file's folder.
///
/// # Errors
/// One diagnostic per missing, unknown or ill-typed input, each saying which
/// `--input name=value` to give.
pub fn resolve_inputs(
    plan: &Plan,
    given: &BTreeMap<String, String>,
) -> Result<serde_json::Map<String, serde_json::Value>, Vec<Diagnostic>> {
    let folder = plan
        .file
        .as_deref()
        .and_then(|f| std::path::Path::new(f).parent())
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let read = |p: &std::path::Path| std::fs::read_to_string(p).map_err(|e| e.to_string());
    resolve(plan, given, std::path::Path::new(""), &folder, &read)
}

/// Where [`resolve_inputs_in`] finds `file` inputs.
pub struct FileInputs<'a> {
    /// The folder that relative paths, given or default, are joined to (the desktop
    /// app's workflows folder: its UI sends paths relative to it).
    pub base: &'a std::path::Path,
    /// Reads one `file` input (its path already joined to `base`); `Err` carries why it
    /// cannot be read or is refused, shown in the input's diagnostic. The desktop app
    /// confines reads to its workflows folder here.
    pub read: &'a dyn Fn(&std::path::Path) -> Result<String, String>,
}

/// [`resolve_inputs`] with `file` inputs, given or default, relative to `files.base`
/// and read by `files.read`.
///
/// # Errors
/// As [`resolve_inputs`]; a refused file is a diagnostic of its input.
pub fn resolve_inputs_in(
    plan: &Plan,
    given: &BTreeMap<String, String>,
    files: &FileInputs<'_>,
) -> Result<serde_json::Map<String, serde_json::Value>, Vec<Diagnostic>> {
    resolve(plan, given, files.base, files.base, files.read)
}

/// Resolves the inputs; given `file` paths are joined to `given_base`, default ones to
/// `base`, and both are read by `read`.
fn resolve(
    plan: &Plan,
    given: &BTreeMap<String, String>,
    given_base: &std::path::Path,
    base: &std::path::Path,
    read: &dyn Fn(&std::path::Path) -> Result<String, String>,
) -> Result<serde_json::Map<String, serde_json::Value>, Vec<Diagnostic>> {
    let wf = &plan.workflow;
    let mut diags = Vec::new();
    let mut out = serde_json::Map::new();
    for name in given.keys() {
        if !wf.inputs.contains_key(name) {
            let dym = did_you_mean(name, wf.inputs.keys().map(String::as_str));
            let declared: Vec<&str> = wf.inputs.keys().map(String::as_str).collect();
            diags.push(
                Diagnostic::new(
                    DiagnosticCode::BadInput,
                    format!(
                        "input `{name}` is not declared by workflow `{}`{dym}",
                        wf.id
                    ),
                )
                .field(format!("inputs.{name}"))
                .hint(format!("declared inputs: {}", declared.join(", "))),
            );
        }
    }
    for (name, spec) in &wf.inputs {
        let value = match given.get(name) {
            Some(raw) => match convert_input(spec.kind, raw, given_base, read) {
                Ok(v) => v,
                Err(why) => {
                    diags.push(
                        Diagnostic::new(DiagnosticCode::BadInput, format!("input `{name}`: {why}"))
                            .field(format!("inputs.{name}"))
                            .hint(format!(
                                "give `--input {name}=<{}>`",
                                input_type_name(spec.kind)
                            )),
                    );
                    continue;
                }
            },
            None => match &spec.default {
                Some(default) => match (spec.kind, default) {
                    (InputType::File, serde_json::Value::String(path)) => {
                        match convert_input(InputType::File, path, base, read) {
                            Ok(v) => v,
                            Err(why) => {
                                diags.push(
                                    Diagnostic::new(
                                        DiagnosticCode::BadInput,
                                        format!("input `{name}` (default): {why}"),
                                    )
                                    .field(format!("inputs.{name}.default"))
                                    .hint(format!("give `--input {name}=<path>`")),
                                );
                                continue;
                            }
                        }
                    }
                    _ => default.clone(),
                },
                None => {
                    diags.push(
                        Diagnostic::new(
                            DiagnosticCode::MissingInput,
                            format!(
                                "required input `{name}` was not given{}",
                                spec.description
                                    .as_deref()
                                    .map(|d| format!(" ({d})"))
                                    .unwrap_or_default()
                            ),
                        )
                        .field(format!("inputs.{name}"))
                        .hint(format!(
                            "give `--input {name}=<{}>`",
                            input_type_name(spec.kind)
                        )),
                    );
                    continue;
                }
            },
        };
        out.insert(name.clone(), value);
    }
    if diags.is_empty() {
        Ok(out)
    } else {
        Err(diags)
    }
}

/// The value of an input of type `kind` given as text (a `file` input: the path).
fn convert_input(
    kind: InputType,
    raw: &str,
    base: &std::path::Path,
    read: &dyn Fn(&std::path::Path) -> Result<String, String>,
) -> Result<serde_json::Value, String> {
    match kind {
        InputType::String => Ok(serde_json::Value::String(raw.to_string())),
        InputType::Number => raw
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(|f| {
                if f.fract() == 0.0 && f.abs() < 9e15 {
                    #[allow(clippy::cast_possible_truncation)]
                    Some(serde_json::Value::from(f as i64))
                } else {
                    serde_json::Number::from_f64(f).map(serde_json::Value::Number)
                }
            })
            .ok_or_else(|| format!("`{raw}` is not a number")),
        InputType::Boolean => match raw.trim() {
            "true" | "yes" | "1" => Ok(serde_json::Value::Bool(true)),
            "false" | "no" | "0" => Ok(serde_json::Value::Bool(false)),
            _ => Err(format!("`{raw}` is not true or false")),
        },
        InputType::Json => serde_json::from_str(raw).map_err(|e| format!("not valid JSON: {e}")),
        InputType::File => {
            let path = base.join(raw);
            read(&path)
                .map(serde_json::Value::String)
                .map_err(|e| format!("cannot read file `{}`: {e}", path.display()))
        }
    }
}
