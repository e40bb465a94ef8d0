import { useMemo } from 'react';
import { fieldsOf } from '../registry';
import { useEditor } from '../store';
import type { Backend } from '../backend';
import { ModelPicker } from './ModelPicker';

const TEXT_FIELDS = new Set(['prompt', 'system', 'template', 'when']);

function asText(v: unknown): string {
  if (v === undefined || v === null) return '';
  return typeof v === 'string' ? v : JSON.stringify(v);
}

function parseValue(raw: string): unknown {
  if (raw.trim() === '') return undefined;
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}

/** The selected step's fields, with the variables its templates may use. */
export function Inspector({ backend }: { backend: Backend }) {
  const node = useEditor((s) => s.nodes.find((n) => n.selected));
  const edges = useEditor((s) => s.edges);
  const inputs = useEditor((s) => s.inputs);
  const diagnostics = useEditor((s) => s.diagnostics);
  const updateField = useEditor((s) => s.updateField);
  const renameStep = useEditor((s) => s.renameStep);
  const upstream = useMemo(() => {
    if (!node) return [];
    // Every ancestor: a template may read any step it depends on.
    const seen = new Set<string>();
    const stack = [node.id];
    while (stack.length) {
      const id = stack.pop()!;
      for (const e of edges) if (e.target === id && !seen.has(e.source)) {
        seen.add(e.source);
        stack.push(e.source);
      }
    }
    return [...seen].sort();
  }, [node, edges]);
  if (!node) {
    return <aside className="inspector" data-testid="inspector"><p className="hint">Select a step to edit it.</p></aside>;
  }
  const step = node.data.step;
  const variables = [
    ...Object.keys(inputs).map((k) => `{{ inputs.${k} }}`),
    ...upstream.map((u) => `{{ steps.${u}.output }}`),
  ];
  return (
    <aside className="inspector" data-testid="inspector">
      <label>
        id
        <input
          data-testid="field-id"
          defaultValue={step.id}
          key={`id-${step.id}`}
          onBlur={(e) => {
            if (e.target.value !== step.id && !renameStep(step.id, e.target.value)) e.target.value = step.id;
          }}
        />
      </label>
      <div className="kind">kind: {step.kind}</div>
      {fieldsOf(step.kind).map((f) => {
        if (f.name === 'model') {
          return (
            <ModelPicker
              key="model"
              backend={backend}
              value={step.fields.model}
              onChange={(v) => updateField(step.id, 'model', v)}
            />
          );
        }
        const errors = diagnostics.filter((d) => d.step === step.id && d.field === f.name);
        return (
          <label key={f.name} title={f.description}>
            {f.name}
            {TEXT_FIELDS.has(f.name) ? (
              <textarea
                data-testid={`field-${f.name}`}
                value={asText(step.fields[f.name])}
                rows={f.name === 'prompt' || f.name === 'template' ? 6 : 2}
                onChange={(e) => updateField(step.id, f.name, e.target.value || undefined)}
              />
            ) : (
              <input
                data-testid={`field-${f.name}`}
                defaultValue={asText(step.fields[f.name])}
                key={`${step.id}-${f.name}`}
                onBlur={(e) => updateField(step.id, f.name, parseValue(e.target.value))}
              />
            )}
            {errors.map((d, i) => (
              <span className="field-error" key={i} data-testid={`field-error-${f.name}`}>{d.message}</span>
            ))}
          </label>
        );
      })}
      {variables.length > 0 && (
        <div className="variables" data-testid="variables">
          <div>Insert into the prompt:</div>
          {variables.map((v) => (
            <button
              key={v}
              data-testid={`insert-${v.replace(/[{} ]/g, '')}`}
              onClick={() => {
                const field = step.kind === 'template' ? 'template' : 'prompt';
                updateField(step.id, field, `${asText(step.fields[field])}${v}`);
              }}
            >
              {v}
            </button>
          ))}
        </div>
      )}
    </aside>
  );
}
