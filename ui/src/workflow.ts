// Workflow files ↔ the editor's graph. A file is kept as a `yaml` Document so that
// comments and formatting of untouched parts survive an edit, and an unchanged workflow
// is saved byte for byte as it was read.
import { Document, isMap, isSeq, parseDocument, YAMLMap, YAMLSeq } from 'yaml';

export interface StepData {
  id: string;
  kind: string;
  needs: string[];
  position?: { x: number; y: number };
  /** Every other field, as written (prompt, model, retry, ...); a body's `steps` are in `body`. */
  fields: Record<string, unknown>;
  /** The body of a `map` or `loop` (its `steps:`), each step with its own fields and body. */
  body?: StepData[];
}

/** The kinds whose `steps:` is a body of steps (control.rs: `map`, `loop`). */
export const BODY_KINDS = new Set(['map', 'loop']);

/** The steps of a `steps:` list as written, bodies included. */
function parseSteps(raw: unknown, taken: Set<string>): StepData[] {
  const list = Array.isArray(raw) ? (raw as Record<string, unknown>[]) : [];
  return list.map((s) => {
    const { id, kind, needs, position, ...fields } = s ?? {};
    const pos = position as { x?: number; y?: number } | undefined;
    const k = typeof kind === 'string' ? kind : 'llm';
    let sid = typeof id === 'string' ? id : '';
    for (let n = taken.size + 1; !sid || taken.has(sid); n++) sid = `step_${n}`;
    taken.add(sid);
    const step: StepData = {
      id: sid,
      kind: k,
      needs: Array.isArray(needs) ? needs.map(String) : [],
      position:
        pos && typeof pos.x === 'number' && typeof pos.y === 'number'
          ? { x: pos.x, y: pos.y }
          : undefined,
      fields,
    };
    if (BODY_KINDS.has(k)) {
      const { steps, ...rest } = fields;
      step.fields = rest;
      step.body = parseSteps(steps, taken);
    }
    return step;
  });
}

/** Every step of a list with the steps of their bodies, depth first. */
export function flatSteps(steps: StepData[]): StepData[] {
  return steps.flatMap((s) => [s, ...flatSteps(s.body ?? [])]);
}

export interface ParsedWorkflow {
  doc: Document;
  id: string;
  inputs: Record<string, { type?: string; default?: unknown; description?: string }>;
  steps: StepData[];
  /** Every other top-level key (name, description, local_only, budget, ...), as written. */
  settings: Record<string, unknown>;
  /** YAML syntax errors, located. */
  errors: { line: number; column: number; message: string }[];
}

export function parseWorkflow(text: string): ParsedWorkflow {
  const doc = parseDocument(text, { keepSourceTokens: true });
  const errors = doc.errors.map((e) => ({
    line: e.linePos?.[0].line ?? 0,
    column: e.linePos?.[0].col ?? 0,
    message: e.message.split('\n')[0],
  }));
  const js = (errors.length ? {} : (doc.toJS() ?? {})) as Record<string, unknown>;
  const steps = parseSteps(js.steps, new Set());
  return {
    doc,
    id: typeof js.id === 'string' ? js.id : 'untitled',
    inputs: (js.inputs as ParsedWorkflow['inputs']) ?? {},
    steps,
    settings: Object.fromEntries(Object.entries(js).filter(([k]) => !['format', 'id', 'inputs', 'steps'].includes(k))),
    errors,
  };
}

/** The `steps:` sequence of the document or of a step's map (created when absent). */
function stepMaps(doc: Document, owner: Document | YAMLMap): YAMLSeq {
  let seq = owner.get('steps');
  if (!isSeq(seq)) {
    seq = doc.createNode([]) as YAMLSeq;
    owner.set('steps', seq);
  }
  return seq as YAMLSeq;
}

function setOrDelete(map: YAMLMap, doc: Document, key: string, value: unknown) {
  const empty =
    value === undefined || value === null || value === '' || (Array.isArray(value) && value.length === 0);
  if (empty) {
    if (map.has(key)) map.delete(key);
    return;
  }
  const current = map.get(key, false);
  const currentJs = current && typeof current === 'object' && 'toJSON' in current
    ? (current as { toJSON(): unknown }).toJSON()
    : current;
  if (JSON.stringify(currentJs) === JSON.stringify(value)) return;
  // Lists of scalars (`needs: [a, b]`) and positions are written inline; records in block style.
  const scalars = Array.isArray(value) && value.every((v) => v === null || typeof v !== 'object');
  map.set(key, doc.createNode(value, { flow: scalars || key === 'position' }));
}

/**
 * Writes the graph back into the document and returns the file text. Steps keep their
 * order in the file; new steps are appended; removed ones are dropped. Only changed keys
 * are rewritten.
 */
export function serializeWorkflow(doc: Document, steps: StepData[], settings?: { keys: string[]; values: Record<string, unknown> }): string {
  if (settings && isMap(doc.contents)) {
    const top = doc.contents as YAMLMap;
    for (const key of settings.keys) setOrDelete(top, doc, key, settings.values[key]);
  }
  writeSteps(doc, stepMaps(doc, doc), steps);
  return doc.toString({ lineWidth: 0 });
}

/** Writes `steps` into `seq` (a `steps:` list), keeping untouched maps as they are. */
function writeSteps(doc: Document, seq: YAMLSeq, steps: StepData[]) {
  const byId = new Map<string, YAMLMap>();
  for (const item of seq.items) {
    if (isMap(item)) byId.set(String(item.get('id')), item);
  }
  const keep = new Set(steps.map((s) => s.id));
  seq.items = seq.items.filter((item) => isMap(item) && keep.has(String(item.get('id'))));
  // `steps: []` that gets its first steps is written as a block list.
  if (seq.items.length === 0 && steps.length > 0) seq.flow = false;
  for (const step of steps) {
    let map = byId.get(step.id);
    if (!map) {
      map = doc.createNode({ id: step.id, kind: step.kind }) as YAMLMap;
      seq.items.push(map);
    }
    setOrDelete(map, doc, 'kind', step.kind);
    setOrDelete(map, doc, 'needs', step.needs);
    for (const [key, value] of Object.entries(step.fields)) setOrDelete(map, doc, key, value);
    const owned = ['id', 'kind', 'needs', 'position', ...(step.body ? ['steps'] : [])];
    for (const item of [...map.items]) {
      const key = String((item.key as { value?: unknown })?.value ?? item.key);
      if (!owned.includes(key) && !(key in step.fields)) {
        map.delete(key);
      }
    }
    if (step.position) {
      setOrDelete(map, doc, 'position', {
        x: Math.round(step.position.x),
        y: Math.round(step.position.y),
      });
    }
    if (step.body) writeSteps(doc, stepMaps(doc, map), step.body);
  }
}

/** The steps that `target` depends on, directly or not (for cycle checks). */
export function reaches(edges: { source: string; target: string }[], from: string, to: string): string[] | null {
  // Is there a path from `from` to `to` following source → target? Returns it.
  const next = new Map<string, string[]>();
  for (const e of edges) next.set(e.source, [...(next.get(e.source) ?? []), e.target]);
  const stack: string[][] = [[from]];
  const seen = new Set<string>();
  while (stack.length) {
    const path = stack.pop()!;
    const last = path[path.length - 1];
    if (last === to) return path;
    if (seen.has(last)) continue;
    seen.add(last);
    for (const n of next.get(last) ?? []) stack.push([...path, n]);
  }
  return null;
}
