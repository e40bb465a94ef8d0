// The one interface between the editor and whatever runs workflows: the Tauri shell in
// the desktop app, an in-memory implementation in tests and in a plain browser. Events
// follow the engine's `Event` (JSON tagged by `type`, see crates/engine/src/events.rs).

export interface Diagnostic {
  code: string;
  message: string;
  step?: string | null;
  field?: string | null;
  span?: { line: number; column: number } | null;
  hint?: string | null;
}

export type EngineEvent =
  | { type: 'run_started'; run_id: string; workflow_id: string; steps: number }
  | { type: 'step_started'; run_id: string; step_id: string; attempt: number; model?: string | null }
  | { type: 'token'; run_id: string; step_id: string; text: string }
  | { type: 'attempt_failed'; run_id: string; step_id: string; attempt: number; error_kind: string; message: string }
  | { type: 'fallback_taken'; run_id: string; step_id: string; from: string; to: string; reason: string }
  | { type: 'step_succeeded'; run_id: string; step_id: string; model?: string | null; duration_ms: number; cached?: boolean }
  | { type: 'step_failed'; run_id: string; step_id: string; error: string }
  | { type: 'step_skipped'; run_id: string; step_id: string; reason: string }
  | { type: 'run_finished'; run_id: string; status: string; duration_ms: number };

export interface RunHandle {
  runId: string;
  cancel(): void;
  /** Resolves when the run has finished. */
  done: Promise<void>;
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

export interface Backend {
  /** Models available now, in the selector's order for a general step. */
  models(): Promise<ModelEntry[]>;
  /** Workflow files in the workflows folder, by path. */
  listWorkflows(): Promise<string[]>;
  /** Example workflows to start a new one from. */
  templates(): Promise<{ name: string; text: string }[]>;
  readWorkflow(path: string): Promise<string>;
  writeWorkflow(path: string, text: string): Promise<void>;
  /** The engine's diagnostics for a workflow text (empty when valid). */
  validate(text: string): Promise<Diagnostic[]>;
  run(text: string, inputs: Record<string, string>, onEvent: (e: EngineEvent) => void): Promise<RunHandle>;
}
