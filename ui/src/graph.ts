// The workflow's steps (a tree: `map` and `loop` bodies hold steps) ↔ the canvas graph
// (flat xyflow nodes, a body's steps with `parentId` and `extent: 'parent'` inside their
// owner's group node, parents before children; edges for `needs` and for a switch's
// cases). A switch's case edges leave the case's own handle (`case-<i>`, `default`) and
// are written back as that case's `then:` (or the switch's `default:`), in edge order.
import type { Edge, Node } from '@xyflow/react';
import { BODY_KINDS, flatSteps, type StepData } from './workflow';

export interface StepNodeData extends Record<string, unknown> {
  step: StepData;
}
/** `step` for a plain step, `container` for a map or loop drawn as a group around its body. */
export type StepNode = Node<StepNodeData, 'step' | 'container'>;

/** What an edge stands for: the target's `needs` lists the source, and/or a switch case names it. */
export interface EdgeData extends Record<string, unknown> {
  needs: boolean;
  /** The switch handle the edge leaves from (`case-<i>` or `default`). */
  branch?: string;
}
export type StepEdge = Edge<EdgeData>;

/** Room at the top of a group for its own header; and around its body. */
export const GROUP_HEADER = 96;
export const GROUP_PAD = 24;
const STEP_W = 220;
const STEP_H = 100;
const EMPTY_W = 300;
const EMPTY_H = 200;

/** A switch's cases as written (`name`, `when`, `then`). */
export interface SwitchCase {
  name?: string | null;
  when: string;
  then: string[];
  [key: string]: unknown;
}

export function casesOf(step: StepData): SwitchCase[] {
  return Array.isArray(step.fields.cases) ? (step.fields.cases as SwitchCase[]) : [];
}

/** The name a case goes by (the engine's default is `case<N>`). */
export function caseName(c: SwitchCase, i: number): string {
  return typeof c.name === 'string' && c.name ? c.name : `case${i}`;
}

/** Nodes for `steps`, parents before their body's steps. */
export function toNodes(steps: StepData[], parentId?: string): StepNode[] {
  return steps.flatMap((step, i): StepNode[] => {
    const container = BODY_KINDS.has(step.kind);
    const { body, ...own } = step;
    const node: StepNode = {
      id: step.id,
      type: container ? 'container' : 'step',
      position: step.position ?? { x: parentId ? GROUP_PAD : 0, y: parentId ? GROUP_HEADER + i * 120 : i * 120 },
      data: { step: own },
      ...(parentId ? { parentId, extent: 'parent' as const } : {}),
    };
    return [node, ...(container ? toNodes(body ?? [], step.id) : [])];
  });
}

/** Edges for the `needs` of every step (bodies included) and for every switch case's targets. */
export function toEdges(steps: StepData[]): StepEdge[] {
  const all = flatSteps(steps);
  const ids = new Set(all.map((s) => s.id));
  const edges: StepEdge[] = [];
  const branch = new Map<string, StepEdge>();
  for (const s of all.filter((x) => x.kind === 'switch')) {
    const add = (handle: string, targets: unknown) => {
      for (const t of Array.isArray(targets) ? targets.map(String) : []) {
        if (!ids.has(t) || branch.has(`${s.id}->${t}`)) continue;
        const e: StepEdge = { id: `${s.id}->${t}@${handle}`, source: s.id, target: t, sourceHandle: handle, data: { needs: false, branch: handle } };
        branch.set(`${s.id}->${t}`, e);
        edges.push(e);
      }
    };
    casesOf(s).forEach((c, i) => add(`case-${i}`, c.then));
    add('default', s.fields.default);
  }
  for (const s of all) {
    for (const n of s.needs) {
      const b = branch.get(`${n}->${s.id}`);
      if (b) b.data = { ...b.data!, needs: true };
      else edges.push({ id: `${n}->${s.id}`, source: n, target: s.id, data: { needs: true } });
    }
  }
  return edges;
}

/** The targets of a switch handle, in edge order. */
function targetsOf(edges: Edge[], source: string, handle: string): string[] {
  return edges.filter((e) => e.source === source && (e.data as EdgeData | undefined)?.branch === handle).map((e) => e.target);
}

/** The switch's fields with each case's `then` (and `default`) read from its edges. */
export function switchFields(step: StepData, edges: Edge[]): Record<string, unknown> {
  const fields = { ...step.fields };
  if (Array.isArray(fields.cases)) {
    fields.cases = casesOf(step).map((c, i) => ({ ...c, then: targetsOf(edges, step.id, `case-${i}`) }));
  }
  const def = targetsOf(edges, step.id, 'default');
  fields.default = def.length ? def : undefined;
  return fields;
}

/**
 * The steps the nodes stand for, as a tree: the nodes whose parent is `parent` (or, with
 * `roots`, every node whose parent is not among them), each with its body.
 */
export function stepsOf(nodes: StepNode[], edges: Edge[], parent?: string, roots = false): StepData[] {
  const ids = new Set(nodes.map((n) => n.id));
  const level = nodes.filter((n) => (roots ? !n.parentId || !ids.has(n.parentId) : n.parentId === parent));
  return level.map((n) => {
    const step = n.data.step;
    const needs = [...new Set(edges.filter((e) => e.target === n.id && (e.data as EdgeData | undefined)?.needs !== false).map((e) => e.source))];
    const out: StepData = {
      ...step,
      id: n.id,
      position: n.position,
      needs,
      fields: step.kind === 'switch' ? switchFields(step, edges) : step.fields,
    };
    if (BODY_KINDS.has(step.kind)) out.body = stepsOf(nodes, edges, n.id);
    else delete out.body;
    return out;
  });
}

/** The node ids of `ids` and of everything inside them. */
export function withDescendants(nodes: StepNode[], ids: Set<string>): Set<string> {
  const out = new Set(ids);
  let grew = true;
  while (grew) {
    grew = false;
    for (const n of nodes) {
      if (n.parentId && out.has(n.parentId) && !out.has(n.id)) {
        out.add(n.id);
        grew = true;
      }
    }
  }
  return out;
}

/** Nodes with their group's size: room for the body's steps as they are placed and measured. */
export function sizeGroups(nodes: StepNode[]): StepNode[] {
  const size = new Map<string, { width: number; height: number }>();
  const byParent = new Map<string, StepNode[]>();
  for (const n of nodes) if (n.parentId) byParent.set(n.parentId, [...(byParent.get(n.parentId) ?? []), n]);
  const measure = (n: StepNode): { width: number; height: number } => {
    const known = size.get(n.id);
    if (known) return known;
    if (n.type !== 'container') return { width: n.measured?.width ?? STEP_W, height: n.measured?.height ?? STEP_H };
    let width = EMPTY_W;
    let height = EMPTY_H;
    for (const c of byParent.get(n.id) ?? []) {
      const s = measure(c);
      width = Math.max(width, c.position.x + s.width + GROUP_PAD);
      height = Math.max(height, c.position.y + s.height + GROUP_PAD);
    }
    const out = { width: Math.round(width), height: Math.round(height) };
    size.set(n.id, out);
    return out;
  };
  return nodes.map((n) => {
    if (n.type !== 'container') return n;
    const s = measure(n);
    return n.style?.width === s.width && n.style?.height === s.height ? n : { ...n, style: { ...n.style, width: s.width, height: s.height } };
  });
}

/**
 * The path the engine records a node's runs under: a body's step as
 * `<owner path>[<item>].<id>`, with the item or iteration picked for each owner (0 when
 * none is picked).
 */
export function runPath(nodes: StepNode[], picked: Record<string, number>, id: string): string {
  const node = nodes.find((n) => n.id === id);
  if (!node?.parentId) return id;
  const owner = runPath(nodes, picked, node.parentId);
  return `${owner}[${picked[owner] ?? 0}].${id}`;
}

/** The items (or iterations) of the run that a map or loop at `path` has records or events for, in order. */
export function itemsOf(keys: string[], path: string): number[] {
  const prefix = `${path}[`;
  const found = new Set<number>();
  for (const k of keys) {
    if (!k.startsWith(prefix)) continue;
    const m = /^(\d+)\]\./.exec(k.slice(prefix.length));
    if (m) found.add(Number(m[1]));
  }
  return [...found].sort((a, b) => a - b);
}

/** The ELK graph of one level (the top or a group's body), groups laid out with their body inside. */
export function elkLevel(nodes: StepNode[], edges: Edge[], parent?: string): { children: ElkChild[]; edges: { id: string; sources: string[]; targets: string[] }[] } {
  const level = nodes.filter((n) => n.parentId === parent);
  const here = new Set(level.map((n) => n.id));
  return {
    children: level.map((n) =>
      n.type === 'container'
        ? {
            id: n.id,
            layoutOptions: { 'elk.padding': `[top=${GROUP_HEADER},left=${GROUP_PAD},bottom=${GROUP_PAD},right=${GROUP_PAD}]` },
            ...elkLevel(nodes, edges, n.id),
          }
        : { id: n.id, width: STEP_W, height: 90 },
    ),
    edges: edges.filter((e) => here.has(e.source) && here.has(e.target)).map((e) => ({ id: e.id, sources: [e.source], targets: [e.target] })),
  };
}

export interface ElkChild {
  id: string;
  width?: number;
  height?: number;
  layoutOptions?: Record<string, string>;
  children?: ElkChild[];
  edges?: { id: string; sources: string[]; targets: string[] }[];
  x?: number;
  y?: number;
}

/** Every laid-out position (relative to its parent), by node id. */
export function elkPositions(children: ElkChild[], out = new Map<string, { x: number; y: number }>()) {
  for (const c of children) {
    out.set(c.id, { x: c.x ?? 0, y: c.y ?? 0 });
    elkPositions(c.children ?? [], out);
  }
  return out;
}

/** The fields a new step of `kind` starts with (the ones it cannot do without). */
export function newFields(kind: string): Record<string, unknown> {
  switch (kind) {
    case 'template':
      return { template: '' };
    case 'switch':
      return { cases: [{ name: 'case0', when: '', then: [] }] };
    case 'map':
      return { items: '' };
    case 'loop':
      return { max_iterations: 3 };
    case 'tool':
      return { tool: '' };
    case 'agent':
      return { prompt: '', tools: [] };
    case 'vote':
      return { prompt: '', choices: [], voters: [] };
    case 'wait':
    case 'event':
    case 'workflow':
      return {};
    default:
      return { prompt: '' };
  }
}
