// The step kinds and their fields, read from the workflow format's JSON Schema
// (`schema/workflow.schema.json`, generated from the Rust types by `nexus schema`), so
// the editor offers exactly what the engine accepts. A field belongs to the kinds its
// description names (`llm`: ..., `approval`: ...); fields without such a prefix are
// common to every kind.
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

interface SchemaDefs {
  $defs: {
    StepKind: { oneOf: { const: string; description: string }[] };
    Step: { properties: Record<string, { description?: string }> };
  };
}

const defs = (schema as unknown as SchemaDefs).$defs;

/** Step kinds, in the schema's order. */
export const KINDS: KindSpec[] = defs.StepKind.oneOf.map((k) => ({
  kind: k.const,
  description: k.description,
  required: k.const === 'template' ? 'template' : 'prompt',
}));

/** Fields a user edits in the inspector (structure fields are edited on the canvas). */
const STRUCTURAL = new Set(['id', 'kind', 'needs', 'position']);

export const FIELDS: FieldSpec[] = Object.entries(defs.Step.properties)
  .filter(([name]) => !STRUCTURAL.has(name))
  .map(([name, p]) => {
    const description = p.description ?? '';
    const kinds = [...description.matchAll(/`(llm|template|approval)`:/g)].map((m) => m[1]);
    return { name, description, kinds: kinds.length ? kinds : 'all' };
  });

/** The fields of one kind. */
export function fieldsOf(kind: string): FieldSpec[] {
  return FIELDS.filter((f) => f.kinds === 'all' || f.kinds.includes(kind));
}
