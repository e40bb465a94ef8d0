//! Reading the workflows folder for triggers (blocking: runs on a blocking thread).

use nexus_engine::workflow::{Trigger, WebhookTrigger};

use super::{Target, TriggerView};
use crate::Desktop;

pub(super) struct Scanned {
    pub targets: Vec<Target>,
    /// Files that declare triggers but cannot arm them.
    pub problems: Vec<TriggerView>,
}

/// Every trigger of every valid workflow of the folder, in file-name order.
pub(super) fn scan(desktop: &Desktop) -> Scanned {
    let mut out = Scanned {
        targets: Vec::new(),
        problems: Vec::new(),
    };
    let problem = |file: &str, message: String| TriggerView {
        file: file.to_string(),
        workflow_id: None,
        name: None,
        kind: None,
        detail: String::new(),
        armed: false,
        next_fire: None,
        last_fire: None,
        problem: Some(message),
    };
    let names = match desktop.list_workflows() {
        Ok(n) => n,
        Err(e) => {
            out.problems.push(problem("", e.to_string()));
            return out;
        }
    };
    let root = desktop.root().ok();
    for file in names {
        let text = match desktop.read_workflow(&file) {
            Ok(t) => t,
            Err(e) => {
                out.problems.push(problem(&file, e.to_string()));
                continue;
            }
        };
        let plan = match desktop.load(&text, Some(&file)) {
            Ok(p) => p,
            Err(diagnostics) => {
                if declares_triggers(&text) {
                    let first = diagnostics
                        .first()
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    out.problems.push(problem(
                        &file,
                        format!(
                            "the workflow does not validate, so its triggers are not armed: {first}"
                        ),
                    ));
                }
                continue;
            }
        };
        let folder = root
            .as_ref()
            .map(|r| {
                r.join(&file)
                    .parent()
                    .map_or_else(|| r.clone(), std::path::Path::to_path_buf)
            })
            .unwrap_or_default();
        for trigger in &plan.workflow.triggers {
            out.targets.push(Target {
                file: file.clone(),
                folder: folder.clone(),
                text: text.clone(),
                workflow_id: plan.workflow.id.clone(),
                inputs: plan.workflow.inputs.keys().cloned().collect(),
                name: trigger.name().to_string(),
                trigger: trigger.clone(),
            });
        }
    }
    out
}

/// Whether a file that does not validate seems to declare triggers (a top-level
/// `triggers:` line), so its error is worth listing with the triggers.
fn declares_triggers(text: &str) -> bool {
    text.lines().any(|l| l.starts_with("triggers:"))
}

/// How `target` is listed before it is armed.
pub(super) fn view_of(target: &Target) -> TriggerView {
    let detail = match &target.trigger {
        Trigger::Cron(c) => format!(
            "{} ({})",
            c.schedule,
            c.timezone.as_deref().unwrap_or("this machine's time zone")
        ),
        Trigger::Webhook(w) => format!("{} /hooks/{}", method_of(w), w.path),
        Trigger::File(f) => f.paths.join(", "),
        Trigger::Manual(m) => match &m.permission {
            Some(p) => format!("started by a person with `{p}`"),
            None => "started by a person".to_string(),
        },
    };
    TriggerView {
        file: target.file.clone(),
        workflow_id: Some(target.workflow_id.clone()),
        name: Some(target.name.clone()),
        kind: Some(target.trigger.kind().to_string()),
        detail,
        armed: false,
        next_fire: None,
        last_fire: None,
        problem: None,
    }
}

/// A webhook's method, upper case (default `POST`).
pub(crate) fn method_of(w: &WebhookTrigger) -> String {
    w.method.as_deref().unwrap_or("POST").to_ascii_uppercase()
}
