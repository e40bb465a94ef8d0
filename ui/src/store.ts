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
  type NodeChange,
} from '@xyflow/react';
import ELK from 'elkjs/lib/elk.bundled.js';
import type { Document } from 'yaml';
import { BODY_KINDS, flatSteps, parseWorkflow, reaches, serializeWorkflow, type StepData } from './workflow';
import { WORKFLOW_KEYS } from './registry';
import type { Diagnostic, EngineEvent, StoredRun } from './backend';
import { fromRecord, withDetail, withEvent } from './runState';
import { elkLevel, elkPositions, GROUP_HEADER, GROUP_PAD, newFields, stepsOf, toEdges, toNodes, withDescendants, type ElkChild, type StepNode } from './graph';

export type { StepNode, StepNodeData } from './graph';

/** `waiting`: an `event` step waiting for its event (`waitingFor` says which). */
export type StepStatus = 'queued' | 'running' | 'retrying' | 'waiting' | 'succeeded' | 'failed' | 'skipped';


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

/** A run shown in the run panel: live, or opened from the history. */
export interface RunState {
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
  run: RunState | null;
  /** The selector's first pick for a general step, shown on nodes whose model is "auto". */
  firstModel: string | null;
  clipboard: StepData[];
  /** The item (map) or iteration (loop) shown for each body, by the owner's run path. */
  picked: Record<string, number>;
}

export interface EditorActions {
  load(path: string | null, text: string): Promise<void>;
  /** Adds a step; with `parentId`, into that map's or loop's body (position relative to it). */
  addStep(kind: string, position: { x: number; y: number }, parentId?: string): string;
  /**
   * Adds the edge `source → target` (target needs source; from a switch's case handle,
   * the case names target in `then`); refuses a cycle and an edge between bodies.
   */
  connect(source: string, target: string, sourceHandle?: string | null): boolean;
  /** Replaces a switch's cases; `removed` is the index of a case taken out (its edges go, later ones move up). */
  updateCases(id: string, cases: unknown[], removed?: number): void;
  /**
   * Moves a top-level step into the body of map or loop `parentId` at `position` (relative
   * to it); its connections to steps outside that body are removed, as a body's `needs`
   * stay inside it.
   */
  moveIntoBody(id: string, parentId: string, position: { x: number; y: number }): void;
  /** Shows item (or iteration) `index` of the map or loop recorded at `path`. */
  pickItem(path: string, index: number): void;
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

async function autoLayout(nodes: StepNode[], edges: Edge[]): Promise<StepNode[]> {
  const graph = await elk.layout({
    id: 'root',
    layoutOptions: {
      'elk.algorithm': 'layered',
      'elk.direction': 'DOWN',
      'elk.spacing.nodeNode': '40',
      'elk.layered.spacing.nodeNodeBetweenLayers': '60',
      'elk.hierarchyHandling': 'SEPARATE_CHILDREN',
    },
    ...elkLevel(nodes, edges),
  } as Parameters<typeof elk.layout>[0]);
  const pos = elkPositions((graph.children ?? []) as ElkChild[]);
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
      picked: {},

      async load(path, text) {
        const wf = parseWorkflow(text);
        let nodes = toNodes(wf.steps);
        const edges = toEdges(wf.steps);
        if (flatSteps(wf.steps).some((s) => !s.position)) nodes = await autoLayout(nodes, edges);
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
          picked: {},
          message: wf.errors.length
            ? { kind: 'error', text: `${path ?? 'workflow'}:${wf.errors[0].line}:${wf.errors[0].column}: ${wf.errors[0].message}` }
            : null,
        });
        useEditor.temporal.getState().clear();
      },

      addStep(kind, position, parentId) {
        const nodes = get().nodes;
        const taken = new Set(nodes.map((n) => n.id));
        const id = freshId(kind, taken);
        const inside = parentId && nodes.some((n) => n.id === parentId && n.type === 'container') ? parentId : undefined;
        const node: StepNode = {
          id,
          type: BODY_KINDS.has(kind) ? 'container' : 'step',
          position: inside ? { x: Math.max(GROUP_PAD, position.x), y: Math.max(GROUP_HEADER, position.y) } : position,
          data: { step: { id, kind, needs: [], fields: newFields(kind) } },
          ...(inside ? { parentId: inside, extent: 'parent' as const } : {}),
        };
        set({ nodes: [...nodes, node], dirty: true });
        return id;
      },

      connect(source, target, sourceHandle) {
        const { edges, nodes } = get();
        if (source === target) {
          set({ message: { kind: 'error', text: `Refused: a step cannot depend on itself (\`${source}\`).` } });
          return false;
        }
        const from = nodes.find((n) => n.id === source);
        const to = nodes.find((n) => n.id === target);
        if (from && to && from.parentId !== to.parentId) {
          const where = (n: StepNode) => (n.parentId ? `the body of \`${n.parentId}\`` : 'the top level');
          set({ message: { kind: 'error', text: `Refused: \`${target}\` (in ${where(to)}) cannot need \`${source}\` (in ${where(from)}); a body's steps need only steps of the same body.` } });
          return false;
        }
        const branch = from?.data.step.kind === 'switch' && sourceHandle && (sourceHandle === 'default' || sourceHandle.startsWith('case-')) ? sourceHandle : undefined;
        if (edges.some((e) => e.source === source && e.target === target && (e.data?.branch as string | undefined) === branch)) return false;
        const path = reaches(edges, target, source);
        if (path) {
          const cycle = [...path, target].join(' → ');
          set({ message: { kind: 'error', text: `Refused: connecting ${source} → ${target} would form a cycle: ${cycle}` } });
          return false;
        }
        if (!nodes.some((n) => n.id === source) || !nodes.some((n) => n.id === target)) return false;
        const edge: Edge = branch
          ? { id: `${source}->${target}@${branch}`, source, target, sourceHandle: branch, data: { needs: false, branch } }
          : { id: `${source}->${target}`, source, target, data: { needs: true } };
        set({ edges: [...edges, edge], dirty: true, message: null });
        return true;
      },

      updateCases(id, cases, removed) {
        const handle = (h: string | null | undefined) => {
          const m = /^case-(\d+)$/.exec(h ?? '');
          return m ? Number(m[1]) : null;
        };
        const edges = removed === undefined
          ? get().edges
          : get().edges.flatMap((e) => {
              const i = e.source === id ? handle(e.sourceHandle) : null;
              if (i === null || i < removed) return [e];
              if (i === removed) return [];
              const h = `case-${i - 1}`;
              return [{ ...e, id: `${e.source}->${e.target}@${h}`, sourceHandle: h, data: { ...e.data, branch: h } }];
            });
        get().updateField(id, 'cases', cases);
        set({ edges });
      },

      moveIntoBody(id, parentId, position) {
        const { nodes, edges } = get();
        const node = nodes.find((n) => n.id === id);
        if (!node || node.parentId || withDescendants(nodes, new Set([id])).has(parentId)) return;
        const moved = { ...node, parentId, extent: 'parent' as const, position: { x: Math.max(GROUP_PAD, position.x), y: Math.max(GROUP_HEADER, position.y) } };
        // Parents come before their body's steps in the node list.
        const rest = nodes.filter((n) => n.id !== id);
        const at = rest.findIndex((n) => n.id === parentId) + 1;
        const inside = withDescendants(nodes, new Set([id]));
        const kept = edges.filter((e) => inside.has(e.source) === inside.has(e.target));
        set({
          nodes: [...rest.slice(0, at), moved, ...rest.slice(at)],
          edges: kept,
          dirty: true,
          message: kept.length < edges.length ? { kind: 'info', text: `Moved ${id} into the body of ${parentId}; its ${edges.length - kept.length} connection(s) outside the body were removed.` } : null,
        });
      },

      pickItem(path, index) {
        set({ picked: { ...get().picked, [path]: index } });
      },

      onNodesChange(all) {
        // A node mounted again as it comes into view (zoom, pan) is measured again; the
        // same size is no change, so the graph (and everything that reads it) stays as is.
        const sizes = new Map(get().nodes.map((n) => [n.id, n.measured]));
        const changes = all.filter((c) => {
          if (c.type !== 'dimensions' || c.resizing || !c.dimensions) return true;
          const was = sizes.get(c.id);
          return !was || was.width !== c.dimensions.width || was.height !== c.dimensions.height;
        });
        if (!changes.length) return;
        const structural = changes.some((c) => c.type === 'remove' || c.type === 'position');
        const removed = new Set(changes.flatMap((c) => (c.type === 'remove' ? [c.id] : [])));
        // A removed group takes its body with it.
        const gone = withDescendants(get().nodes, removed);
        set({ nodes: applyNodeChanges(changes, get().nodes).filter((n) => !gone.has(n.id)), dirty: get().dirty || structural });
        if (removed.size) {
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
            n.id === id
              ? { ...n, id: next, data: { step: { ...n.data.step, id: next } } }
              : n.parentId === id
                ? { ...n, parentId: next }
                : n,
          ),
          edges: get().edges.map((e) => ({
            ...e,
            id: `${e.source === id ? next : e.source}->${e.target === id ? next : e.target}${e.data?.branch ? `@${String(e.data.branch)}` : ''}`,
            source: e.source === id ? next : e.source,
            target: e.target === id ? next : e.target,
          })),
          dirty: true,
        });
        return true;
      },

      deleteSelected() {
        const { nodes, edges } = get();
        const gone = withDescendants(nodes, new Set(nodes.filter((n) => n.selected).map((n) => n.id)));
        const edgesLeft = edges.filter(
          (e) => !e.selected && !gone.has(e.source) && !gone.has(e.target),
        );
        if (!gone.size && edgesLeft.length === edges.length) return;
        set({ nodes: nodes.filter((n) => !gone.has(n.id)), edges: edgesLeft, dirty: true });
      },

      copy() {
        const { nodes, edges } = get();
        const chosen = nodes.filter((n) => n.selected);
        set({ clipboard: stepsOf(chosen, edges, undefined, true) });
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
          // A pasted map or loop starts with an empty body.
          const { body: _body, ...step } = s;
          void _body;
          return {
            id,
            type: BODY_KINDS.has(s.kind) ? 'container' : 'step',
            selected: true,
            position: { x: (s.position?.x ?? 0) + 40, y: (s.position?.y ?? 0) + 40 },
            data: { step: { ...step, id, needs: [] } },
          };
        });
        const addedEdges: Edge[] = clipboard.flatMap((s) =>
          s.needs
            .filter((n) => rename.has(n))
            .map((n) => ({
              id: `${rename.get(n)}->${rename.get(s.id)}`,
              source: rename.get(n)!,
              target: rename.get(s.id)!,
              data: { needs: true },
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
        const written = new Map(flatSteps(wf.steps).map((st) => [st.id, st.position]));
        const nodes: StepNode[] = toNodes(wf.steps).map((n) => {
          const before = prev.get(n.id);
          const placed = written.get(n.id);
          return { ...n, position: placed ?? before?.position ?? n.position, selected: before?.selected ?? false };
        });
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
        // A body's steps are recorded per item, under their paths, as they run.
        for (const n of get().nodes) if (!n.parentId) steps[n.id] = { status: 'queued', tokens: '' };
        set({ picked: {}, run: { runId, status: 'running', steps, startedAt: Date.now(), attempts: [], detail: null, question: null, past: false, events: [] } });
      },

      setRunDetail(detail) {
        const run = withDetail(get().run, detail);
        if (run) set({ run });
      },

      async showRun(detail) {
        // The workflow as run is its JSON form, which the YAML reader reads as is.
        const text = detail.workflow ? JSON.stringify(detail.workflow, null, 2) : get().serialize();
        await get().load(null, text);
        const startedAt = Date.parse(detail.started_at);
        const steps: Record<string, StepRun> = {};
        for (const n of get().nodes) if (!n.parentId) steps[n.id] = { status: 'skipped', tokens: '', error: 'not run' };
        const attempts: AttemptBar[] = [];
        for (const st of detail.steps) {
          steps[st.step_id] = fromRecord(st);
          const status = steps[st.step_id].status;
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
        const run = withEvent(get().run, e);
        if (run) set({ run });
      },
    }),
    {
      // Only the graph is history; positions are recorded when a drag ends.
      partialize: (s) => ({
        nodes: s.nodes.map((n) => ({ id: n.id, type: n.type, position: n.position, data: n.data, ...(n.parentId ? { parentId: n.parentId, extent: n.extent } : {}) })),
        edges: s.edges.map((e) => ({ id: e.id, source: e.source, target: e.target, sourceHandle: e.sourceHandle, data: e.data })),
        settings: s.settings,
      }),
      equality: (a, b) => JSON.stringify(a) === JSON.stringify(b),
      limit: 200,
    },
  ),
);
