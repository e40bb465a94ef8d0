//! Validation of `memory` tools and their calls: a collection name, an embedder that
//! names a declared provider (no cloud one in a `local_only` workflow), an overlap
//! smaller than the chunk size, a known `op`, and the arguments each op takes.

use crate::diagnostic::DiagnosticCode;
use crate::plan::declared_providers;
use crate::plan::step::StepPlanner;
use crate::provider::Locality;
use crate::workflow::{MemoryTool, ToolStep};

/// The arguments a `memory` call may give.
pub(super) const MEMORY_ARGS: [&str; 8] = [
    "op",
    "text",
    "document",
    "metadata",
    "query",
    "top_k",
    "min_score",
    "filter",
];

/// Checks the tool's declaration.
pub(super) fn check_tool(p: &mut StepPlanner<'_, '_>, name: &str, tool: &MemoryTool) {
    if tool.collection.trim().is_empty() {
        p.report(
            "tool",
            DiagnosticCode::InvalidValue,
            format!("tool `{name}`: `collection` is empty"),
            "name the collection, e.g. `collection: notes`",
        );
    }
    let embedder = tool.embedder();
    let (provider, model) = embedder.split_once(':').unwrap_or((embedder, ""));
    let family = crate::provider::family(provider);
    match declared_providers().iter().find(|d| d.id == family) {
        None => p.report(
            "tool",
            DiagnosticCode::UnknownProvider,
            format!("tool `{name}`: embedder `{embedder}` names unknown provider `{provider}`"),
            &format!(
                "write `{}`, `ollama:<model>` or `openai:<model>`",
                MemoryTool::DEFAULT_EMBEDDER
            ),
        ),
        Some(_) if model.is_empty() => p.report(
            "tool",
            DiagnosticCode::InvalidValue,
            format!("tool `{name}`: embedder `{embedder}` has no model name"),
            &format!("write `{provider}:<model>`, e.g. `ollama:nomic-embed-text`"),
        ),
        Some(d) if p.wf.local_only && d.locality == Locality::Cloud => p.report(
            "tool",
            DiagnosticCode::InvalidValue,
            format!("tool `{name}`: embedder `{embedder}` is a cloud model but the workflow is `local_only`"),
            "use a local embedder (`embedded:all-minilm-l6-v2` or an Ollama model)",
        ),
        Some(_) => {}
    }
    let size = tool.chunk_size.unwrap_or(MemoryTool::DEFAULT_CHUNK_SIZE);
    let overlap = tool
        .chunk_overlap
        .unwrap_or(MemoryTool::DEFAULT_CHUNK_OVERLAP.min(size.saturating_sub(1)));
    if size == 0 || overlap >= size {
        p.report(
            "tool",
            DiagnosticCode::InvalidValue,
            format!("tool `{name}`: chunks of {size} characters cannot overlap by {overlap}"),
            "give a `chunk_size` above 0 and a `chunk_overlap` below it",
        );
    }
    if tool
        .top_k
        .is_some_and(|k| k == 0 || k > MemoryTool::MAX_TOP_K)
    {
        p.report(
            "tool",
            DiagnosticCode::InvalidValue,
            format!(
                "tool `{name}`: `top_k` must be 1 to {}",
                MemoryTool::MAX_TOP_K
            ),
            "give a number of hits from 1 to 100",
        );
    }
}

/// Checks a `kind: tool` step's call of a memory tool: an `op`, and the argument it
/// needs (`text` to add, `query` to search, `document` to delete).
pub(super) fn check_call(p: &mut StepPlanner<'_, '_>, name: &str, step: &ToolStep) {
    let op = step.args.get("op").and_then(serde_json::Value::as_str);
    let Some(op) = op else {
        p.report(
            "args",
            DiagnosticCode::MissingField,
            format!("tool `{name}`: the call gives no `op`"),
            "give `op: add`, `op: search` or `op: delete`",
        );
        return;
    };
    if op.contains('{') {
        return;
    }
    let needs = match op {
        "add" => "text",
        "search" => "query",
        "delete" => "document",
        other => {
            p.report(
                "args",
                DiagnosticCode::InvalidValue,
                format!("tool `{name}`: `op: {other}` is not an operation of a memory tool"),
                "use `add`, `search` or `delete`",
            );
            return;
        }
    };
    if !step.args.contains_key(needs) {
        p.report(
            "args",
            DiagnosticCode::MissingField,
            format!("tool `{name}`: `op: {op}` needs `{needs}`"),
            &format!("give `args.{needs}`"),
        );
    }
    if let Some(filter) = step.args.get("filter")
        && !filter.is_object()
    {
        p.report(
            "args",
            DiagnosticCode::InvalidValue,
            format!("tool `{name}`: `filter` is not an object"),
            "give metadata keys and the values they must have, e.g. `filter: {source: web}`",
        );
    }
}
