// The editor's state (zustand) with undo/redo of every graph edit (zundo's `temporal`
// middleware over the steps and edges only; selection, run state and messages are not
// history). State and actions are separate types.
import { create } from 'zustand';
import { temporal } from 'zundo';
import {
  applyEdgeChanges,
  applyNodeChanges,
  type Edge,
  type EdgeChange,
  type Node,
  type NodeChange,
} from '@xyflow/react';
import ELK from 'elkjs/lib/elk.bundled.js';
import type { Document } from 'yaml';
import { parseWorkflow, reaches, serializeWorkflow, type StepData } from './workflow';
import { WORKFLOW_KEYS } from './registry';
import type { Diagnostic, EngineEvent, StoredRun } from './backend';

/** `waiting`: an `event` step waiting for its event (`waitingFor` says which). */
export type StepStatus = 'queued' | 'running' | 'retrying' | 'waiting' | 'succeeded' | 'failed' | 'skipped';

export interface StepNodeData extends Record<string, unknown> {
  step: StepData;
}
export type StepNode = Node<StepNodeData, 'step'>;

export interface StepRun {
  status: StepStatus;
  tokens: string;
  /** A thinking model's reasoning, streamed and stored apart from the output (never passed on). */
  reasoning?: string;
  model?: string | null;
  error?: string;
  durationMs?: number;
  /** A map's items: ended (failed included), failed, in all. */
  progress?: { done: number; failed: number; total: number };
  /** The attempt now running or last run (1 for the first). */
  attempt?: number;
  /** When the current attempt started (ms since the epoch), while it runs. */
  startedAt?: number;
  /** Streamed token events of the current attempt (a live count; the usage is exact). */
  tokenCount?: number;
  /** Prompt and completion tokens, once the step has succeeded. */
  usage?: { prompt_tokens: number; completion_tokens: number } | null;
  /** The last fallback taken (`from → to`, with its reason). */
  fallback?: string;
  /** Cost in US dollars, from the stored record. */
  costUsd?: number | null;
  /** What a `waiting` step waits for (`event payment`, with its deadline). */
  waitingFor?: string;
}

/** Most events kept for the run panel's Events tab (the oldest are dropped). */
export const MAX_EVENTS = 2000;

export interface AttemptBar {
  step: string;
  attempt: number;
  model?: string | null;
  start: number;
  end?: number;
  outcome: 'running' | 'succeeded' | 'failed' | 'skipped';
}

export interface EditorState {
  path: string | null;
  /** The text as read or last saved (an unchanged workflow is saved as exactly this). */
  original: string;
  doc: Document | null;
  workflowId: string;
  inputs: Record<string, { type?: string; default?: unknown; description?: string }>;
  /** The workflow's own settings (registry WORKFLOW_KEYS: name, local_only, budget, ...). */
  settings: Record<string, unknown>;
  nodes: StepNode[];
  edges: Edge[];
  dirty: boolean;
  message: { kind: 'error' | 'info'; text: string } | null;
  diagnostics: Diagnostic[];
  run: {
    runId: string;
    status: string;
    steps: Record<string, StepRun>;
    /** When the run started (ms since the epoch, as the events arrived). */
    startedAt: number;
    /** One bar per attempt for the timeline, times in ms since the run started. */
    attempts: AttemptBar[];
    /** What the store recorded (inputs, outputs, model and why, attempts), once known. */
    detail: StoredRun | null;
    /** The question the run waits on, if any. */
    question: { stepId: string; text: string } | null;
    /** A run opened from the history (not live). */
    past: boolean;
    /** The run's events in order, at most `MAX_EVENTS` (the latest). */
    events: EngineEvent[];
  } | null;
  /** The selector's first pick for a general step, shown on nodes whose model is "auto". */
  firstModel: string | null;
  clipboard: StepData[];
}

export interface EditorActions {
  load(path: string | null, text: string): Promise<void>;
  addStep(kind: string, position: { x: number; y: number }): string;
  /** Adds the edge `source → target` (target needs source); refuses a cycle. */
  connect(source: string, target: string): boolean;
  onNodesChange(changes: NodeChange<StepNode>[]): void;
  onEdgesChange(changes: EdgeChange[]): void;
  updateField(id: string, key: string, value: unknown): void;
  /** Sets (or, with `undefined`, removes) a workflow-level setting. */
  updateSetting(key: string, value: unknown): void;
  renameStep(id: string, next: string): boolean;
  deleteSelected(): void;
  copy(): void;
  paste(): void;
  layout(): Promise<void>;
  serialize(): string;
  /**
   * Replaces the workflow by an edited text (the YAML view): its steps, edges, inputs and
   * document (so its comments and layout are what is saved). A step without a position
   * keeps the one it had; selection is kept by id. Text with YAML syntax errors changes
   * nothing and returns them, located.
   */
  applyText(text: string): { line: number; column: number; message: string }[];
  markSaved(path: string, text: string): void;
  setMessage(message: EditorState['message']): void;
  setDiagnostics(d: Diagnostic[]): void;
  startRun(runId: string): void;
  applyEvent(e: EngineEvent): void;
  /** Attaches the stored record of the current run (run panel details). */
  setRunDetail(detail: StoredRun): void;
  /** Shows a stored run: its workflow on the canvas, statuses, outputs and timeline. */
  showRun(detail: StoredRun): Promise<void>;
}

const elk = new ELK();

function toNodes(steps: StepData[]): StepNode[] {
  return steps.map((step, i) => ({
    id: step.id,
    type: 'step',
    position: step.position ?? { x: 0, y: i * 120 },
    data: { step },
  }));
}

function toEdges(steps: StepData[]): Edge[] {
  return steps.flatMap((s) =>
    s.needs.map((n) => ({ id: `${n}->${s.id}`, source: n, target: s.id })),
  );
}

function stepsOf(nodes: StepNode[], edges: Edge[]): StepData[] {
  return nodes.map((n) => ({
    ...n.data.step,
    id: n.id,
    position: n.position,
    needs: edges.filter((e) => e.target === n.id).map((e) => e.source),
  }));
}

async function autoLayout(nodes: StepNode[], edges: Edge[]): Promise<StepNode[]> {
  const graph = await elk.layout({
    id: 'root',
    layoutOptions: {
      'elk.algorithm': 'layered',
      'elk.direction': 'DOWN',
      'elk.spacing.nodeNode': '40',
      'elk.layered.spacing.nodeNodeBetweenLayers': '60',
    },
    children: nodes.map((n) => ({ id: n.id, width: 220, height: 90 })),
    edges: edges.map((e) => ({ id: e.id, sources: [e.source], targets: [e.target] })),
  });
  const pos = new Map((graph.children ?? []).map((c) => [c.id, { x: c.x ?? 0, y: c.y ?? 0 }]));
  return nodes.map((n) => ({ ...n, position: pos.get(n.id) ?? n.position }));
}

function freshId(kind: string, taken: Set<string>): string {
  for (let i = 1; ; i++) {
    const id = `${kind}_${i}`;
    if (!taken.has(id)) return id;
  }
}

export const useEditor = create<EditorState & EditorActions>()(
  temporal(
    (set, get) => ({
      path: null,
      original: '',
      doc: null,
      workflowId: 'untitled',
      inputs: {},
      settings: {},
      nodes: [],
      edges: [],
      dirty: false,
      message: null,
      diagnostics: [],
      run: null,
      firstModel: null,
      clipboard: [],

      async load(path, text) {
        const wf = parseWorkflow(text);
        let nodes = toNodes(wf.steps);
        const edges = toEdges(wf.steps);
        if (wf.steps.some((s) => !s.position)) nodes = await autoLayout(nodes, edges);
        set({
          path,
          original: text,
          doc: wf.doc,
          workflowId: wf.id,
          inputs: wf.inputs,
          settings: wf.settings,
          nodes,
          edges,
          dirty: false,
          run: null,
          message: wf.errors.length
            ? { kind: 'error', text: `${path ?? 'workflow'}:${wf.errors[0].line}:${wf.errors[0].column}: ${wf.errors[0].message}` }
            : null,
        });
        useEditor.temporal.getState().clear();
      },

      addStep(kind, position) {
        const taken = new Set(get().nodes.map((n) => n.id));
        const id = freshId(kind, taken);
        const fields: Record<string, unknown> =
          kind === 'template' ? { template: '' } : { prompt: '' };
        const node: StepNode = {
          id,
          type: 'step',
          position,
          data: { step: { id, kind, needs: [], fields } },
        };
        set({ nodes: [...get().nodes, node], dirty: true });
        return id;
      },

      connect(source, target) {
        const { edges, nodes } = get();
        if (source === target) {
          set({ message: { kind: 'error', text: `Refused: a step cannot depend on itself (\`${source}\`).` } });
          return false;
        }
        if (edges.some((e) => e.source === source && e.target === target)) return false;
        const path = reaches(edges, target, source);
        if (path) {
          const cycle = [...path, target].join(' → ');
          set({ message: { kind: 'error', text: `Refused: connecting ${source} → ${target} would form a cycle: ${cycle}` } });
          return false;
        }
        if (!nodes.some((n) => n.id === source) || !nodes.some((n) => n.id === target)) return false;
        set({
          edges: [...edges, { id: `${source}->${target}`, source, target }],
          dirty: true,
          message: null,
        });
        return true;
      },

      onNodesChange(changes) {
        const structural = changes.some((c) => c.type === 'remove' || c.type === 'position');
        set({ nodes: applyNodeChanges(changes, get().nodes), dirty: get().dirty || structural });
        if (changes.some((c) => c.type === 'remove')) {
          const ids = new Set(get().nodes.map((n) => n.id));
          set({ edges: get().edges.filter((e) => ids.has(e.source) && ids.has(e.target)) });
        }
      },

      onEdgesChange(changes) {
        const removes = changes.some((c) => c.type === 'remove');
        set({ edges: applyEdgeChanges(changes, get().edges), dirty: get().dirty || removes });
      },

      updateField(id, key, value) {
        set({
          nodes: get().nodes.map((n) =>
            n.id === id
              ? {
                  ...n,
                  data: {
                    step: {
                      ...n.data.step,
                      fields: { ...n.data.step.fields, [key]: value },
                    },
                  },
                }
              : n,
          ),
          dirty: true,
        });
      },

      updateSetting(key, value) {
        const settings = { ...get().settings, [key]: value };
        if (value === undefined) delete settings[key];
        set({ settings, dirty: true });
      },

      renameStep(id, next) {
        if (!/^[a-z_][a-z0-9_]*$/.test(next) || get().nodes.some((n) => n.id === next)) {
          set({ message: { kind: 'error', text: `\`${next}\` is not a free lowercase identifier` } });
          return false;
        }
        set({
          nodes: get().nodes.map((n) =>
            n.id === id ? { ...n, id: next, data: { step: { ...n.data.step, id: next } } } : n,
          ),
          edges: get().edges.map((e) => ({
            ...e,
            id: `${e.source === id ? next : e.source}->${e.target === id ? next : e.target}`,
            source: e.source === id ? next : e.source,
            target: e.target === id ? next : e.target,
          })),
          dirty: true,
        });
        return true;
      },

      deleteSelected() {
        const { nodes, edges } = get();
        const gone = new Set(nodes.filter((n) => n.selected).map((n) => n.id));
        const edgesLeft = edges.filter(
          (e) => !e.selected && !gone.has(e.source) && !gone.has(e.target),
        );
        if (!gone.size && edgesLeft.length === edges.length) return;
        set({ nodes: nodes.filter((n) => !gone.has(n.id)), edges: edgesLeft, dirty: true });
      },

      copy() {
        const { nodes, edges } = get();
        const chosen = nodes.filter((n) => n.selected);
        set({ clipboard: stepsOf(chosen, edges) });
      },

      paste() {
        const { clipboard, nodes, edges } = get();
        if (!clipboard.length) return;
        const taken = new Set(nodes.map((n) => n.id));
        const rename = new Map<string, string>();
        for (const s of clipboard) {
          const id = freshId(s.id.replace(/_\d+$/, ''), taken);
          taken.add(id);
          rename.set(s.id, id);
        }
        const added: StepNode[] = clipboard.map((s) => {
          const id = rename.get(s.id)!;
          return {
            id,
            type: 'step',
            selected: true,
            position: { x: (s.position?.x ?? 0) + 40, y: (s.position?.y ?? 0) + 40 },
            data: { step: { ...s, id, needs: [] } },
          };
        });
        const addedEdges: Edge[] = clipboard.flatMap((s) =>
          s.needs
            .filter((n) => rename.has(n))
            .map((n) => ({
              id: `${rename.get(n)}->${rename.get(s.id)}`,
              source: rename.get(n)!,
              target: rename.get(s.id)!,
            })),
        );
        set({
          nodes: [...nodes.map((n) => ({ ...n, selected: false })), ...added],
          edges: [...edges, ...addedEdges],
          dirty: true,
        });
      },

      async layout() {
        const nodes = await autoLayout(get().nodes, get().edges);
        set({ nodes, dirty: true });
      },

      serialize() {
        const { doc, dirty, original, nodes, edges, settings } = get();
        if (!dirty && doc) return original;
        const target = doc ?? parseWorkflow('id: untitled\nsteps: []\n').doc;
        return serializeWorkflow(target, stepsOf(nodes, edges), { keys: WORKFLOW_KEYS, values: settings });
      },

      applyText(text) {
        const wf = parseWorkflow(text);
        if (wf.errors.length) return wf.errors;
        const prev = new Map(get().nodes.map((n) => [n.id, n]));
        const nodes: StepNode[] = wf.steps.map((step, i) => ({
          id: step.id,
          type: 'step',
          position: step.position ?? prev.get(step.id)?.position ?? { x: 0, y: i * 120 },
          selected: prev.get(step.id)?.selected ?? false,
          data: { step },
        }));
        set({ doc: wf.doc, workflowId: wf.id, inputs: wf.inputs, settings: wf.settings, nodes, edges: toEdges(wf.steps), dirty: text !== get().original });
        return [];
      },

      markSaved(path, text) {
        const wf = parseWorkflow(text);
        set({ path, original: text, doc: wf.doc, dirty: false, message: { kind: 'info', text: `Saved ${path}` } });
      },

      setMessage(message) {
        set({ message });
      },

      setDiagnostics(diagnostics) {
        set({ diagnostics });
      },

      startRun(runId) {
        const steps: Record<string, StepRun> = {};
        for (const n of get().nodes) steps[n.id] = { status: 'queued', tokens: '' };
        set({ run: { runId, status: 'running', steps, startedAt: Date.now(), attempts: [], detail: null, question: null, past: false, events: [] } });
      },

      setRunDetail(detail) {
        const run = get().run;
        if (!run || run.runId !== detail.run_id) return;
        // Steps that stream nothing (templates, approvals, cached outputs) show their
        // stored output once the record is read; a stored output replaces the streamed text.
        const steps = { ...run.steps };
        for (const st of detail.steps) {
          const cur = steps[st.step_id];
          if (cur && st.output != null) steps[st.step_id] = { ...cur, tokens: st.output };
          if (steps[st.step_id] && st.reasoning != null) steps[st.step_id] = { ...steps[st.step_id], reasoning: st.reasoning };
          if (steps[st.step_id]) steps[st.step_id] = { ...steps[st.step_id], usage: st.usage, costUsd: st.cost_usd, attempt: st.attempts.length || steps[st.step_id].attempt };
        }
        set({ run: { ...run, steps, detail } });
      },

      async showRun(detail) {
        // The workflow as run is its JSON form, which the YAML reader reads as is.
        const text = detail.workflow ? JSON.stringify(detail.workflow, null, 2) : get().serialize();
        await get().load(null, text);
        const startedAt = Date.parse(detail.started_at);
        const steps: Record<string, StepRun> = {};
        for (const n of get().nodes) steps[n.id] = { status: 'skipped', tokens: '', error: 'not run' };
        const attempts: AttemptBar[] = [];
        for (const st of detail.steps) {
          const status: StepStatus = st.status === 'cancelled' ? 'skipped' : st.status;
          steps[st.step_id] = {
            status,
            tokens: st.output ?? '',
            reasoning: st.reasoning ?? undefined,
            model: st.model,
            error: st.error ?? undefined,
            durationMs: st.duration_ms,
            attempt: st.attempts.length,
            usage: st.usage,
            costUsd: st.cost_usd,
            fallback: st.fallbacks.length ? `${st.fallbacks[st.fallbacks.length - 1].from} → ${st.fallbacks[st.fallbacks.length - 1].to}` : undefined,
          };
          st.attempts.forEach((a, i) => {
            const start = Date.parse(a.started_at) - startedAt;
            const last = i === st.attempts.length - 1;
            attempts.push({
              step: st.step_id,
              attempt: a.attempt,
              model: a.model,
              start,
              end: start + a.duration_ms,
              outcome: a.error_kind ? 'failed' : last && status === 'succeeded' ? 'succeeded' : 'failed',
            });
          });
        }
        set({
          run: { runId: detail.run_id, status: detail.status, steps, startedAt, attempts, detail, question: null, past: true, events: detail.events.slice(-MAX_EVENTS) },
          message: { kind: 'info', text: `Run ${detail.run_id.slice(0, 8)} of ${detail.workflow_id} (${detail.status}); save to keep this workflow as a file` },
        });
      },

      applyEvent(e) {
        let run = get().run;
        if (!run) return;
        const steps = { ...run.steps };
        const events = run.events.length >= MAX_EVENTS ? [...run.events.slice(1), e] : [...run.events, e];
        // The run's id is known from its first event, even before the backend's handle
        // (an approval can ask before `run()` has returned).
        const runId = run.runId === 'starting' && 'run_id' in e ? e.run_id : run.runId;
        run = { ...run, events, runId };
        const patch = (id: string, p: Partial<StepRun>) => {
          steps[id] = { ...(steps[id] ?? { status: 'queued', tokens: '' }), ...p };
        };
        const now = Date.now() - run.startedAt;
        let attempts = run.attempts;
        const close = (id: string, outcome: AttemptBar['outcome']) => {
          attempts = attempts.map((a) =>
            a.step === id && a.end === undefined ? { ...a, end: now, outcome } : a,
          );
        };
        switch (e.type) {
          case 'step_started':
            patch(e.step_id, {
              status: e.attempt > 1 ? 'retrying' : 'running',
              model: e.model,
              tokens: '',
              reasoning: undefined,
              attempt: e.attempt,
              startedAt: Date.now(),
              tokenCount: 0,
            });
            close(e.step_id, 'failed');
            attempts = [...attempts, { step: e.step_id, attempt: e.attempt, model: e.model, start: now, outcome: 'running' }];
            break;
          case 'token':
            patch(e.step_id, { tokens: (steps[e.step_id]?.tokens ?? '') + e.text, tokenCount: (steps[e.step_id]?.tokenCount ?? 0) + 1 });
            break;
          case 'reasoning':
            patch(e.step_id, { reasoning: (steps[e.step_id]?.reasoning ?? '') + e.text });
            break;
          case 'attempt_failed':
            patch(e.step_id, { status: 'retrying', error: e.message });
            close(e.step_id, 'failed');
            break;
          case 'step_succeeded':
            patch(e.step_id, { status: 'succeeded', model: e.model, durationMs: e.duration_ms, usage: e.usage, startedAt: undefined });
            close(e.step_id, 'succeeded');
            break;
          case 'step_failed':
            patch(e.step_id, { status: 'failed', error: e.error, startedAt: undefined });
            close(e.step_id, 'failed');
            break;
          case 'step_skipped':
            patch(e.step_id, { status: 'skipped', error: e.reason });
            close(e.step_id, 'skipped');
            break;
          case 'fallback_taken':
            patch(e.step_id, { fallback: `${e.from} → ${e.to}` });
            break;
          case 'map_progress':
            patch(e.step_id, { progress: { done: e.done, failed: e.failed, total: e.total } });
            break;
          case 'run_finished':
            set({ run: { ...run, steps, attempts, status: e.status, question: null } });
            return;
          case 'waiting_for_human':
            set({ run: { ...run, steps, attempts, question: { stepId: e.step_id, text: e.question } } });
            return;
          case 'waiting_for_event':
            patch(e.step_id, { status: 'waiting', waitingFor: e.until ? `event ${e.event} until ${new Date(e.until).toLocaleString()}` : `event ${e.event}` });
            break;
          case 'human_decided':
            set({ run: { ...run, steps, attempts, question: null } });
            return;
          default:
            break;
        }
        set({ run: { ...run, steps, attempts } });
      },
    }),
    {
      // Only the graph is history; positions are recorded when a drag ends.
      partialize: (s) => ({
        nodes: s.nodes.map((n) => ({ id: n.id, type: n.type, position: n.position, data: n.data })),
        edges: s.edges.map((e) => ({ id: e.id, source: e.source, target: e.target })),
        settings: s.settings,
      }),
      equality: (a, b) => JSON.stringify(a) === JSON.stringify(b),
      limit: 200,
    },
  ),
);
