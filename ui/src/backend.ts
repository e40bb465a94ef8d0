// The one interface between the editor and whatever runs workflows: the Tauri shell in
// the desktop app (tauriBackend.ts), an in-memory implementation in tests and in a plain
// browser (testBackend.ts). The data types are generated from the Rust types
// (bindings.ts, by src-tauri), so both sides agree on every field.
import type {
  Diagnostic,
  Event,
  HumanDecision,
  ModelsView,
  PendingQuestion,
  PullProgress,
  RunSummary,
  ServiceStatus,
  Settings,
  StoredRun,
  TriggerView,
} from './bindings';

export type { Diagnostic, HumanDecision, ModelsView, PendingQuestion, PullProgress, RunSummary, ServiceStatus, Settings, StoredRun, TriggerView };
/** One engine event (JSON tagged by `type`; crates/engine/src/events.rs). */
export type EngineEvent = Event;

export interface RunHandle {
  runId: string;
  cancel(): void;
  /** Resolves when the run has finished. */
  done: Promise<void>;
}

/** "Run from this step" / "run up to this step", and which file the text came from. */
export interface RunOptions {
  file?: string | null;
  from?: string | null;
  until?: string | null;
  fresh?: boolean;
}

/** A model the selector can use now, in the selector's order. */
export interface ModelEntry {
  /** `provider:model`. */
  reference: string;
  locality: 'local' | 'cloud' | 'embedded';
  /** Why it is at this rank. */
  reason: string;
  contextLength?: number | null;
}

/** One function an `mcp` tool's server offers, as its `tools/list` describes it. */
export interface ToolFunction {
  name: string;
  description?: string | null;
  input_schema?: unknown;
}

/** A failure the UI shows: the backend's error `kind` and its message. */
export class BackendError extends globalThis.Error {
  constructor(
    readonly kind: string,
    message: string,
    readonly diagnostics: Diagnostic[] = [],
  ) {
    super(message);
  }
}

export interface Backend {
  /** Models available now, in the selector's order for a general step. */
  models(): Promise<ModelEntry[]>;
  /** Providers, their models, Ollama's and the embedded model's status, keys. */
  modelsView(): Promise<ModelsView>;
  /** Pulls a model into Ollama, reporting progress lines. */
  pullModel(name: string, onProgress: (p: PullProgress) => void): Promise<void>;
  setApiKey(provider: string, key: string): Promise<void>;
  deleteApiKey(provider: string): Promise<void>;
  settings(): Promise<Settings>;
  /** Asks the user for the workflows folder in a native dialog; null when cancelled. */
  chooseWorkflowsFolder(): Promise<Settings | null>;
  /**
   * Asks the user for an input file in a native dialog (the only way to use a file
   * outside the workflows folder); its path, or null when cancelled.
   */
  chooseInputFile(): Promise<string | null>;
  /** A template's text; the data files it reads are put into the workflows folder. */
  useTemplate(name: string): Promise<string>;
  /** Workflow files in the workflows folder, by name. */
  listWorkflows(): Promise<string[]>;
  /** Example workflows to start a new one from. */
  templates(): Promise<{ name: string; text: string }[]>;
  readWorkflow(path: string): Promise<string>;
  writeWorkflow(path: string, text: string): Promise<void>;
  /** The engine's diagnostics for a workflow text (empty when valid). */
  validate(text: string): Promise<Diagnostic[]>;
  run(
    text: string,
    inputs: Record<string, string>,
    onEvent: (e: EngineEvent) => void,
    options?: RunOptions,
  ): Promise<RunHandle>;
  /**
   * Continues a run: a paused run of this app goes on; an interrupted one (its process
   * died) continues here with its completed steps kept, its events going to `onEvent`.
   */
  resume(runId: string, onEvent: (e: EngineEvent) => void): Promise<RunHandle>;
  /** The latest runs, newest first (shared with the CLI). */
  listRuns(limit: number): Promise<RunSummary[]>;
  /** Everything stored about a run: steps with input, output, model and why, attempts. */
  getRun(runId: string): Promise<StoredRun>;
  pendingQuestions(): Promise<PendingQuestion[]>;
  answer(runId: string, stepId: string, decision: HumanDecision): Promise<void>;
  /** The workflows folder's triggers: which this process runs, next and last fires, problems. */
  listTriggers(): Promise<TriggerView[]>;
  /**
   * The login service (`nexus serve` started at login, so schedules fire while the app
   * is closed); null where this backend cannot manage one (a browser on `nexus serve`).
   */
  serviceStatus(): Promise<ServiceStatus | null>;
  /** Installs and starts the login service for this app's folder and runs. */
  installService(): Promise<ServiceStatus>;
  /** Stops and removes the login service. */
  uninstallService(): Promise<ServiceStatus>;
  /**
   * The functions an `mcp` tool's server offers (those its `allow` admits), read by
   * connecting to it as a run would; `workflow` is the saved file's name in the folder.
   */
  discoverTools(workflow: string, tool: string): Promise<ToolFunction[]>;
}
