// Workflow files ↔ the editor's graph. A file is kept as a `yaml` Document so that
// comments and formatting of untouched parts survive an edit, and an unchanged workflow
// is saved byte for byte as it was read.
import { Document, isMap, isSeq, parseDocument, YAMLMap, YAMLSeq } from 'yaml';

export interface StepData {
  id: string;
  kind: string;
  needs: string[];
  position?: { x: number; y: number };
  /** Every other field, as written (prompt, model, retry, ...). */
  fields: Record<string, unknown>;
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
  const rawSteps = Array.isArray(js.steps) ? (js.steps as Record<string, unknown>[]) : [];
  const steps: StepData[] = rawSteps.map((s, i) => {
    const { id, kind, needs, position, ...fields } = s ?? {};
    const pos = position as { x?: number; y?: number } | undefined;
    return {
      id: typeof id === 'string' ? id : `step_${i + 1}`,
      kind: typeof kind === 'string' ? kind : 'llm',
      needs: Array.isArray(needs) ? needs.map(String) : [],
      position:
        pos && typeof pos.x === 'number' && typeof pos.y === 'number'
          ? { x: pos.x, y: pos.y }
          : undefined,
      fields,
    };
  });
  return {
    doc,
    id: typeof js.id === 'string' ? js.id : 'untitled',
    inputs: (js.inputs as ParsedWorkflow['inputs']) ?? {},
    steps,
    settings: Object.fromEntries(Object.entries(js).filter(([k]) => !['format', 'id', 'inputs', 'steps'].includes(k))),
    errors,
  };
}

function stepMaps(doc: Document): YAMLSeq {
  let seq = doc.get('steps');
  if (!isSeq(seq)) {
    seq = doc.createNode([]) as YAMLSeq;
    doc.set('steps', seq);
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
  map.set(key, doc.createNode(value, { flow: Array.isArray(value) || key === 'position' }));
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
  const seq = stepMaps(doc);
  const byId = new Map<string, YAMLMap>();
  for (const item of seq.items) {
    if (isMap(item)) byId.set(String(item.get('id')), item);
  }
  const keep = new Set(steps.map((s) => s.id));
  seq.items = seq.items.filter((item) => isMap(item) && keep.has(String(item.get('id'))));
  for (const step of steps) {
    let map = byId.get(step.id);
    if (!map) {
      map = doc.createNode({ id: step.id, kind: step.kind }) as YAMLMap;
      seq.items.push(map);
    }
    setOrDelete(map, doc, 'kind', step.kind);
    setOrDelete(map, doc, 'needs', step.needs);
    for (const [key, value] of Object.entries(step.fields)) setOrDelete(map, doc, key, value);
    for (const item of map.items) {
      const key = String((item.key as { value?: unknown })?.value ?? item.key);
      if (!['id', 'kind', 'needs', 'position'].includes(key) && !(key in step.fields)) {
        map.delete(key);
      }
    }
    if (step.position) {
      setOrDelete(map, doc, 'position', {
        x: Math.round(step.position.x),
        y: Math.round(step.position.y),
      });
    }
  }
  return doc.toString({ lineWidth: 0 });
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
