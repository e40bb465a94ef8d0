// The step kinds and their fields, read from the workflow format's JSON Schema
// (`schema/workflow.schema.json`, generated from the Rust types by `nexus schema`), so
// the editor offers exactly what the engine accepts. The common fields are the
// properties of `$defs.Step`; the kinds are the variants in its `oneOf` (one per
// `StepKind`, tagged by a constant `kind`), and each kind's fields are that variant's own
// properties.
import schema from '../../schema/workflow.schema.json';

export interface FieldSpec {
  name: string;
  description: string;
  kinds: string[] | 'all';
  /** What the value is, for the inspector's control (see `shapeOf`). */
  shape: Shape;
  /** The inspector section the field is shown in. */
  section: SectionId;
}

/** The inspector's sections, in order. */
export type SectionId = 'general' | 'prompt' | 'model' | 'tools' | 'output' | 'reliability' | 'governance';
export const SECTIONS: { id: SectionId; title: string; hint: string }[] = [
  { id: 'general', title: 'General', hint: 'Name, when the step runs and what it works on.' },
  { id: 'prompt', title: 'Prompt', hint: 'The text sent or rendered; `{{` completes inputs and upstream outputs.' },
  { id: 'model', title: 'Model', hint: 'Which model serves the step and how it samples.' },
  { id: 'tools', title: 'Tools and agents', hint: 'The tools `kind: tool` and `kind: agent` steps call, and the personas steps may use.' },
  { id: 'output', title: 'Output', hint: 'The shape of what the step returns.' },
  { id: 'reliability', title: 'Reliability', hint: 'Retries, timeouts, the fallback ladder and what a failure does.' },
  { id: 'governance', title: 'Governance', hint: 'Spending limits, caching and where the step may run.' },
];

/** Fields by name → section; a field not listed (a new kind's own) goes to General. */
const SECTION_OF: Record<string, SectionId> = {
  prompt: 'prompt',
  system: 'prompt',
  template: 'prompt',
  model: 'model',
  task: 'model',
  agent: 'model',
  temperature: 'model',
  max_tokens: 'model',
  think: 'model',
  tools: 'tools',
  max_tool_calls: 'tools',
  voters: 'model',
  output_schema: 'output',
  format: 'output',
  result: 'output',
  retry: 'reliability',
  timeout: 'reliability',
  fallback: 'reliability',
  on_failure: 'reliability',
  on_error: 'reliability',
  on_item_error: 'reliability',
  tolerated_failures: 'reliability',
  tolerated_failure_percent: 'reliability',
  on_max_iterations: 'reliability',
  budget: 'governance',
  guardrails: 'governance',
  cache: 'governance',
  local_only: 'governance',
};

/**
 * A field's value as the inspector edits it, read from its schema node:
 * - `boolean`, `integer`, `number`, `string` (with `duration` when the value is a
 *   humantime duration such as `500ms`, `2m`), `enum` (a `oneOf` of constants, each with
 *   its description);
 * - `object`: named sub-fields, each with its own shape, description and default;
 * - `union`: constants and objects mixed (`on_failure`: `fail`, `skip`, `{default}`,
 *   `{alternate}`), one variant at a time;
 * - `raw`: anything else (lists, model specs, JSON Schemas), edited as YAML text.
 */
export type Shape =
  | { type: 'boolean'; default?: boolean }
  | { type: 'integer' | 'number'; minimum?: number; maximum?: number; default?: number }
  | { type: 'string'; duration: boolean; default?: string }
  | { type: 'enum'; options: { value: string; description: string }[] }
  | { type: 'list' }
  | { type: 'object'; fields: SubField[] }
  | { type: 'union'; variants: Variant[] }
  | { type: 'raw' };

export interface SubField {
  name: string;
  description: string;
  shape: Shape;
}

/** One `union` variant: a constant, or an object with one required key (`{alternate: …}`). */
export type Variant =
  | { type: 'const'; value: string; description: string }
  | { type: 'object'; key: string; description: string; shape: Shape };

export interface KindSpec {
  kind: string;
  description: string;
  /** The field the kind cannot do without (`prompt`, `template`). */
  required: string;
}

interface Node {
  $ref?: string;
  allOf?: Node[];
  oneOf?: Node[];
  anyOf?: Node[];
  properties?: Record<string, Node>;
  required?: string[];
  description?: string;
  const?: string;
  type?: string | string[];
  default?: unknown;
  minimum?: number;
  maximum?: number;
}

const defs = (schema as unknown as { $defs: Record<string, Node> }).$defs;

/** A schema node with its `$ref` and `allOf` parts, in order (the node first). */
function parts(node: Node): Node[] {
  const out: Node[] = [node];
  if (node.$ref) {
    const target = defs[node.$ref.replace('#/$defs/', '')];
    if (target) out.push(...parts(target));
  }
  for (const sub of node.allOf ?? []) out.push(...parts(sub));
  return out;
}

/** The properties of a node and of what it refers to, in order of first appearance. */
function propertiesOf(node: Node): [string, Node][] {
  const seen = new Map<string, Node>();
  for (const p of parts(node)) {
    for (const [name, prop] of Object.entries(p.properties ?? {})) {
      if (!seen.has(name)) seen.set(name, prop);
    }
  }
  return [...seen.entries()];
}

const variants = parts(defs.Step).flatMap((p) => p.oneOf ?? []).map((v) => {
  const props = propertiesOf(v);
  const kind = props.find(([name]) => name === 'kind')?.[1].const ?? '';
  const required = parts(v).flatMap((p) => p.required ?? []).filter((r) => r !== 'kind');
  const description = parts(v).find((p) => p.description)?.description ?? '';
  const fields = props.filter(([name]) => name !== 'kind');
  return { kind, description, required, fields };
});

/** Step kinds, in the schema's order. */
export const KINDS: KindSpec[] = variants.map((v) => ({
  kind: v.kind,
  description: v.description,
  required: v.required[0] ?? '',
}));

/** Fields a user edits in the inspector (structure fields are edited on the canvas). */
const STRUCTURAL = new Set(['id', 'kind', 'needs', 'position']);

const describe = (p: Node) => p.description ?? '';

/** A humantime duration as the engine reads it (`500ms`, `2s`, `1m 30s`, `2h`). */
export const DURATION = /^\s*(\d+(\.\d+)?\s*(ms|s|m|h|d)\s*)+$/;

/** The node with `$ref`s followed and an optional (`anyOf [X, null]`) unwrapped. */
function unwrap(node: Node): Node {
  if (node.$ref) {
    const target = defs[node.$ref.replace('#/$defs/', '')];
    return target ? unwrap({ ...target, description: node.description ?? target.description }) : node;
  }
  const alts = node.anyOf?.filter((a) => !(a.type === 'null'));
  if (node.anyOf && alts && alts.length === 1) return unwrap({ ...alts[0], description: node.description ?? alts[0].description });
  return node;
}

function baseType(node: Node): string | undefined {
  const t = Array.isArray(node.type) ? node.type.filter((x) => x !== 'null') : node.type ? [node.type] : [];
  return t.length === 1 ? t[0] : undefined;
}

/** The shape of a schema node (see `Shape`). */
export function shapeOf(raw: Node, depth = 0): Shape {
  const node = unwrap(raw);
  if (node.oneOf && node.oneOf.every((o) => o.const !== undefined)) {
    return { type: 'enum', options: node.oneOf.map((o) => ({ value: String(o.const), description: o.description ?? '' })) };
  }
  if (node.oneOf && depth < 2) {
    const variants: Variant[] = [];
    for (const o of node.oneOf) {
      if (o.const !== undefined) variants.push({ type: 'const', value: String(o.const), description: o.description ?? '' });
      else if (o.properties && o.required?.length === 1) {
        const key = o.required[0];
        variants.push({ type: 'object', key, description: o.description ?? '', shape: shapeOf(o.properties[key] ?? {}, depth + 1) });
      } else return { type: 'raw' };
    }
    return { type: 'union', variants };
  }
  const t = baseType(node);
  const items = (node as { items?: Node }).items;
  if (t === 'array' && items && baseType(unwrap(items)) === 'string' && !unwrap(items).oneOf) return { type: 'list' };
  if (t === 'boolean') return { type: 'boolean', default: typeof node.default === 'boolean' ? node.default : undefined };
  if (t === 'integer' || t === 'number') {
    return { type: t, minimum: node.minimum, maximum: node.maximum, default: typeof node.default === 'number' ? node.default : undefined };
  }
  if (t === 'string' && !node.oneOf && !node.anyOf) {
    const def = typeof node.default === 'string' ? node.default : undefined;
    const duration = (def !== undefined && DURATION.test(def)) || /\b(delay|interval|timeout|how long|longest (wait|gap|time))\b|e\.g\. `\d+(ms|s|m|h)`/i.test(node.description ?? '');
    return { type: 'string', duration, default: def };
  }
  if (t === 'object' && node.properties && depth < 2) {
    const fields = Object.entries(node.properties).map(([name, p]) => ({
      name,
      description: unwrap(p).description ?? '',
      shape: shapeOf(p, depth + 1),
    }));
    if (fields.every((f) => f.shape.type !== 'raw' && f.shape.type !== 'object')) return { type: 'object', fields };
  }
  return { type: 'raw' };
}

/** Every field: the common ones (all kinds), then each kind's own. */
export const FIELDS: FieldSpec[] = [
  ...Object.entries(defs.Step.properties ?? {})
    .filter(([name]) => !STRUCTURAL.has(name))
    .map(([name, p]): FieldSpec => ({ name, description: describe(p), kinds: 'all', shape: shapeOf(p), section: SECTION_OF[name] ?? 'general' })),
  ...variants.flatMap((v) =>
    v.fields.map(([name, p]): FieldSpec => ({ name, description: describe(p), kinds: [v.kind], shape: shapeOf(p), section: SECTION_OF[name] ?? 'general' })),
  ),
];

/** The fields of one kind: the common ones, then the kind's own, in the schema's order. */
export function fieldsOf(kind: string): FieldSpec[] {
  return FIELDS.filter((f) => f.kinds === 'all' || f.kinds.includes(kind));
}

/** The description of property `prop` of schema definition `def` (e.g. `ModelRequirements.local_only`). */
export function defDescription(def: string, prop: string): string {
  return defs[def]?.properties?.[prop]?.description ?? '';
}

/** Workflow-level settings the inspector shows when no step is selected (structure, id and inputs are edited elsewhere). */
const WORKFLOW_SKIP = new Set(['format', 'id', 'inputs', 'steps']);
const WORKFLOW_SECTION: Record<string, SectionId> = {
  local_only: 'governance',
  budget: 'governance',
  guardrails: 'governance',
  on_failure: 'reliability',
  outputs: 'output',
  tools: 'tools',
  agents: 'tools',
};
const root = schema as unknown as Node;
/** The workflow's own fields (name, description, local_only, budget, guardrails, ...), from the schema's top level. */
export const WORKFLOW_FIELDS: FieldSpec[] = Object.entries(root.properties ?? {})
  .filter(([name]) => !WORKFLOW_SKIP.has(name))
  .map(([name, p]) => ({ name, description: describe(p), kinds: 'all', shape: shapeOf(p), section: WORKFLOW_SECTION[name] ?? 'general' }));

/** The names of the workflow-level fields the editor keeps (store `settings`). */
export const WORKFLOW_KEYS = WORKFLOW_FIELDS.map((f) => f.name);

/** A kind of tool of `tools:` (`http`, `file`, `shell`, `mcp`): its fields, from `ToolDecl`'s variants. */
export interface ToolKind {
  kind: string;
  description: string;
  fields: SubField[];
  required: string[];
}

export const TOOL_KINDS: ToolKind[] = (defs.ToolDecl?.oneOf ?? []).map((v) => {
  const kind = v.required?.[0] ?? '';
  const target = unwrap(v.properties?.[kind] ?? {});
  return {
    kind,
    description: v.description ?? '',
    fields: Object.entries(target.properties ?? {}).map(([name, p]) => ({ name, description: unwrap(p).description ?? '', shape: shapeOf(p, 1) })),
    required: target.required ?? [],
  };
});

/** The fields of an entry of `agents:` (description, system, model). */
export const AGENT_FIELDS: SubField[] = Object.entries(defs.Agent?.properties ?? {}).map(([name, p]) => ({
  name,
  description: unwrap(p).description ?? '',
  shape: shapeOf(p, 1),
}));

/** The fields of a vote's voter (name, agent, model, weight, veto). */
export const VOTER_FIELDS: SubField[] = Object.entries(defs.Voter?.properties ?? {}).map(([name, p]) => ({
  name,
  description: unwrap(p).description ?? '',
  shape: shapeOf(p, 1),
}));
