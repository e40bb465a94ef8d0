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
}

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

/** Every field: the common ones (all kinds), then each kind's own. */
export const FIELDS: FieldSpec[] = [
  ...Object.entries(defs.Step.properties ?? {})
    .filter(([name]) => !STRUCTURAL.has(name))
    .map(([name, p]): FieldSpec => ({ name, description: describe(p), kinds: 'all' })),
  ...variants.flatMap((v) =>
    v.fields.map(([name, p]): FieldSpec => ({ name, description: describe(p), kinds: [v.kind] })),
  ),
];

/** The fields of one kind: the common ones, then the kind's own, in the schema's order. */
export function fieldsOf(kind: string): FieldSpec[] {
  return FIELDS.filter((f) => f.kinds === 'all' || f.kinds.includes(kind));
}
