import { useMemo, useRef, useState } from 'react';
import { fieldsOf } from '../registry';
import { useEditor } from '../store';
import type { Backend, RunOptions } from '../backend';
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

/**
 * A prompt or template field that completes variables: typing `{{` (and the start of a
 * name) lists the workflow's inputs and the outputs of upstream steps; Enter, Tab or a
 * click inserts the one chosen.
 */
function PromptEditor({
  testId,
  value,
  rows,
  variables,
  onChange,
}: {
  testId: string;
  value: string;
  rows: number;
  variables: string[];
  onChange(v: string): void;
}) {
  const ref = useRef<HTMLTextAreaElement>(null);
  const [query, setQuery] = useState<{ start: number; text: string } | null>(null);
  const [active, setActive] = useState(0);
  const matches = useMemo(
    () => (query ? variables.filter((v) => v.replace(/[{} ]/g, '').includes(query.text.trim())) : []),
    [query, variables],
  );
  const track = (el: HTMLTextAreaElement) => {
    const before = el.value.slice(0, el.selectionStart);
    const open = before.lastIndexOf('{{');
    if (open >= 0 && !before.slice(open).includes('}}') && /^\{\{[\w. ]*$/.test(before.slice(open))) {
      setQuery({ start: open, text: before.slice(open + 2) });
      setActive(0);
    } else {
      setQuery(null);
    }
  };
  const choose = (v: string) => {
    const el = ref.current;
    if (!el || !query) return;
    const next = el.value.slice(0, query.start) + v + el.value.slice(el.selectionStart);
    onChange(next);
    setQuery(null);
    const at = query.start + v.length;
    requestAnimationFrame(() => {
      el.focus();
      el.setSelectionRange(at, at);
    });
  };
  return (
    <span className="prompt-editor">
      <textarea
        ref={ref}
        data-testid={testId}
        value={value}
        rows={rows}
        onChange={(e) => {
          onChange(e.target.value);
          track(e.target);
        }}
        onKeyDown={(e) => {
          if (!query || matches.length === 0) return;
          if (e.key === 'ArrowDown') {
            e.preventDefault();
            setActive((active + 1) % matches.length);
          } else if (e.key === 'ArrowUp') {
            e.preventDefault();
            setActive((active + matches.length - 1) % matches.length);
          } else if (e.key === 'Enter' || e.key === 'Tab') {
            e.preventDefault();
            choose(matches[active]);
          } else if (e.key === 'Escape') {
            setQuery(null);
          }
        }}
        onBlur={() => setTimeout(() => setQuery(null), 150)}
      />
      {query && matches.length > 0 && (
        <ul className="completions" data-testid="completions">
          {matches.map((m, i) => (
            <li
              key={m}
              className={i === active ? 'active' : ''}
              data-testid={`completion-${m.replace(/[{} ]/g, '')}`}
              onMouseDown={(e) => {
                e.preventDefault();
                choose(m);
              }}
            >
              {m}
            </li>
          ))}
        </ul>
      )}
    </span>
  );
}

/** The selected step's fields, with the variables its templates may use. */
export function Inspector({ backend, onRun }: { backend: Backend; onRun(options: RunOptions): void }) {
  const node = useEditor((s) => s.nodes.find((n) => n.selected));
  const edges = useEditor((s) => s.edges);
  const inputs = useEditor((s) => s.inputs);
  const diagnostics = useEditor((s) => s.diagnostics);
  const updateField = useEditor((s) => s.updateField);
  const renameStep = useEditor((s) => s.renameStep);
  const live = useEditor((s) => (node ? s.run?.steps[node.id] : undefined));
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
      <div className="row">
        <button data-testid="run-from" title="Run this step and everything after it; reuse the outputs of the steps before it from the latest run" onClick={() => onRun({ from: step.id })}>
          Run from here
        </button>
        <button data-testid="run-until" title="Run only this step and the steps it needs" onClick={() => onRun({ until: step.id })}>
          Run up to here
        </button>
      </div>
      {live && (live.tokens || live.error) && (
        <div className="live-output" data-testid="inspector-output">
          <div>
            {live.status}
            {live.model ? ` on ${live.model}` : ''}
          </div>
          <pre>{live.error && live.status !== 'succeeded' ? live.error : live.tokens}</pre>
        </div>
      )}
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
              <PromptEditor
                testId={`field-${f.name}`}
                value={asText(step.fields[f.name])}
                rows={f.name === 'prompt' || f.name === 'template' ? 6 : 2}
                variables={variables}
                onChange={(v) => updateField(step.id, f.name, v || undefined)}
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
