// The Backend of the desktop app: every call is one typed command of the Tauri shell
// (bindings.ts, generated from src-tauri); run events and pull progress arrive on a
// `Channel` per call. Errors come back tagged by `kind` and become BackendErrors.
import { Channel, invoke } from '@tauri-apps/api/core';
import { commands, type Error as ShellError, type Result } from './bindings';
import {
  BackendError,
  type Backend,
  type EngineEvent,
  type ModelEntry,
  type PullProgress,
  type RunHandle,
  type RunOptions,
  type ToolFunction,
} from './backend';

function toError(e: ShellError): BackendError {
  const diagnostics = 'diagnostics' in e ? e.diagnostics : [];
  const message =
    'message' in e
      ? e.message
      : 'reason' in e
        ? `${e.path}: ${e.reason}`
        : diagnostics.map((d) => `${d.span ? `${d.span.line}:${d.span.column}: ` : ''}${d.message}`).join('\n');
  return new BackendError(e.kind, message, diagnostics);
}

async function call<T>(p: Promise<Result<T, ShellError>>): Promise<T> {
  const r = await p;
  if (r.status === 'ok') return r.data;
  throw toError(r.error);
}

/** True inside the desktop app's web view. */
export function inTauri(): boolean {
  return typeof window !== 'undefined' && '__TAURI_INTERNALS__' in window;
}

export class TauriBackend implements Backend {
  async models(): Promise<ModelEntry[]> {
    const view = await this.modelsView();
    return view.order.map((m) => ({
      reference: m.reference,
      locality: m.locality as ModelEntry['locality'],
      reason: m.reason,
      contextLength: m.context_length,
    }));
  }

  modelsView() {
    return call(commands.models());
  }

  async pullModel(name: string, onProgress: (p: PullProgress) => void) {
    const progress = new Channel<PullProgress>();
    progress.onmessage = onProgress;
    await call(commands.pullModel(name, progress));
  }

  async setApiKey(provider: string, key: string) {
    await call(commands.setApiKey(provider, key));
  }

  async deleteApiKey(provider: string) {
    await call(commands.deleteApiKey(provider));
  }

  settings() {
    return call(commands.settings());
  }

  chooseWorkflowsFolder() {
    return call(commands.chooseWorkflowsFolder());
  }

  chooseInputFile() {
    return call(commands.chooseInputFile());
  }

  useTemplate(name: string) {
    return call(commands.useTemplate(name));
  }

  listWorkflows() {
    return call(commands.listWorkflows());
  }

  templates() {
    return call(commands.templates());
  }

  readWorkflow(path: string) {
    return call(commands.readWorkflow(path));
  }

  async writeWorkflow(path: string, text: string) {
    await call(commands.writeWorkflow(path, text));
  }

  validate(text: string) {
    return call(commands.validate(text, null));
  }

  async run(
    text: string,
    inputs: Record<string, string>,
    onEvent: (e: EngineEvent) => void,
    options: RunOptions = {},
  ): Promise<RunHandle> {
    let finish: () => void = () => {};
    const done = new Promise<void>((resolve) => (finish = resolve));
    const events = new Channel<EngineEvent>();
    events.onmessage = (e) => {
      onEvent(e);
      if (e.type === 'run_finished') finish();
    };
    const runId = await call(
      commands.startRun(
        {
          text,
          file: options.file ?? null,
          inputs,
          from: options.from ?? null,
          reuse: null,
          until: options.until ?? null,
          fresh: options.fresh ?? false,
        },
        events,
      ),
    );
    return {
      runId,
      cancel: () => void commands.cancelRun(runId),
      done,
    };
  }

  async resume(runId: string, onEvent: (e: EngineEvent) => void): Promise<RunHandle> {
    let finish: () => void = () => {};
    const done = new Promise<void>((resolve) => (finish = resolve));
    const events = new Channel<EngineEvent>();
    events.onmessage = (e) => {
      onEvent(e);
      if (e.type === 'run_finished') finish();
    };
    const id = await call(commands.resumeRun(runId, events));
    return { runId: id, cancel: () => void commands.cancelRun(id), done };
  }

  listRuns(limit: number) {
    return call(commands.listRuns(limit));
  }

  getRun(runId: string) {
    return call(commands.getRun(runId));
  }

  pendingQuestions() {
    return call(commands.pendingQuestions());
  }

  async answer(runId: string, stepId: string, decision: Parameters<Backend['answer']>[2]) {
    await call(commands.answer(runId, stepId, decision));
  }

  listTriggers() {
    return call(commands.listTriggers());
  }

  serviceStatus() {
    return call(commands.serviceStatus());
  }

  installService() {
    return call(commands.installService());
  }

  uninstallService() {
    return call(commands.uninstallService());
  }

  /**
   * The shell's `discover_tool_functions` command (not in bindings.ts yet: invoked by
   * name, its error tagged by `kind` like every command's).
   */
  async discoverTools(workflow: string, tool: string): Promise<ToolFunction[]> {
    try {
      return await invoke<ToolFunction[]>('discover_tool_functions', { workflow, tool });
    } catch (e) {
      if (e && typeof e === 'object' && 'kind' in e) throw toError(e as ShellError);
      throw new BackendError('internal', String(e));
    }
  }
}
