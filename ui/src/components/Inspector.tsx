// The selected step's fields, grouped in sections (General, Prompt, Model, Output,
// Reliability, Governance; registry.ts assigns each schema field to one) with a control
// per value shape (fields.tsx) and the schema's doc comment as each field's help text.
import { useMemo, useRef, useState } from 'react';
import { Accordion } from 'radix-ui';
import { Badge, Button, Code, Flex, Heading, Text, TextArea, TextField, Tooltip } from '@radix-ui/themes';
import { ChevronDown, MousePointerClick, Play, SkipForward } from 'lucide-react';
import { fieldsOf, SECTIONS, type FieldSpec } from '../registry';
import { useEditor } from '../store';
import type { Backend, RunOptions } from '../backend';
import { ModelPicker } from './ModelPicker';
import { Field, helpText, ValueControl } from './fields';
import { kindLook } from '../design/kinds';

const TEXT_FIELDS = new Set(['prompt', 'system', 'template', 'when']);

function asText(v: unknown): string {
  if (v === undefined || v === null) return '';
  return typeof v === 'string' ? v : JSON.stringify(v);
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
  label,
  onChange,
}: {
  testId: string;
  value: string;
  rows: number;
  variables: string[];
  label: string;
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
  const listId = `${testId}-completions`;
  return (
    <span className="prompt-editor">
      <TextArea
        ref={ref}
        id={testId}
        data-testid={testId}
        aria-label={label}
        className="mono"
        value={value}
        rows={rows}
        role="combobox"
        aria-expanded={Boolean(query && matches.length)}
        aria-controls={listId}
        aria-autocomplete="list"
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
        <ul className="completions" data-testid="completions" id={listId} role="listbox">
          {matches.map((m, i) => (
            <li
              key={m}
              role="option"
              aria-selected={i === active}
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

/** How a section's fields are set, for its collapsed header ("retry, timeout"). */
function summary(fields: FieldSpec[], values: Record<string, unknown>): string {
  return fields
    .filter((f) => values[f.name] !== undefined && values[f.name] !== null && values[f.name] !== '')
    .map((f) => f.name)
    .join(', ');
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
      for (const e of edges)
        if (e.target === id && !seen.has(e.source)) {
          seen.add(e.source);
          stack.push(e.source);
        }
    }
    return [...seen].sort();
  }, [node, edges]);
  if (!node) {
    return (
      <aside className="inspector" data-testid="inspector" aria-label="Inspector">
        <Flex direction="column" align="center" gap="2" className="inspector-empty">
          <MousePointerClick size={28} aria-hidden />
          <Text size="2" weight="medium">No step selected</Text>
          <Text size="1" color="gray" align="center">
            Select a step on the canvas to edit it, or add one from the palette (double-click, Enter, or drag).
          </Text>
        </Flex>
      </aside>
    );
  }
  const step = node.data.step;
  const look = kindLook(step.kind);
  const Icon = look.icon;
  const variables = [
    ...Object.keys(inputs).map((k) => `{{ inputs.${k} }}`),
    ...upstream.map((u) => `{{ steps.${u}.output }}`),
  ];
  const fields = fieldsOf(step.kind);
  const errorsOf = (name: string) => diagnostics.filter((d) => d.step === step.id && d.field === name).map((d) => d.message);

  const control = (f: FieldSpec) => {
    const errors = errorsOf(f.name);
    const help = helpText(f.description);
    if (f.name === 'model') {
      return (
        <Field key="model" label="model" help={help} htmlFor="model-picker" errors={errors} errorTestId="field-error-model">
          <ModelPicker backend={backend} value={step.fields.model} onChange={(v) => updateField(step.id, 'model', v)} />
        </Field>
      );
    }
    if (TEXT_FIELDS.has(f.name)) {
      const big = f.name === 'prompt' || f.name === 'template';
      return (
        <Field key={f.name} label={f.name} help={help} htmlFor={`field-${f.name}`} errors={errors} errorTestId={`field-error-${f.name}`}>
          <PromptEditor
            testId={`field-${f.name}`}
            label={f.name}
            value={asText(step.fields[f.name])}
            rows={big ? 7 : 2}
            variables={variables}
            onChange={(v) => updateField(step.id, f.name, v || undefined)}
          />
        </Field>
      );
    }
    return (
      <Field key={`${step.id}-${f.name}`} label={f.name.replace(/_/g, ' ')} help={help} htmlFor={`field-${f.name}`} errors={errors} errorTestId={`field-error-${f.name}`}>
        <ValueControl
          id={`field-${f.name}`}
          shape={f.shape}
          value={step.fields[f.name]}
          label={f.name}
          onChange={(v) => updateField(step.id, f.name, v)}
        />
      </Field>
    );
  };

  const sections = SECTIONS.map((s) => ({ ...s, fields: fields.filter((f) => f.section === s.id) })).filter(
    (s) => s.id === 'general' || s.fields.length > 0,
  );
  return (
    <aside className="inspector" data-testid="inspector" aria-label="Inspector">
      <div className="inspector-head" style={{ ['--kind' as string]: `var(--${look.color}-9)` }}>
        <Flex align="center" gap="2">
          <span className="kind-chip" aria-hidden>
            <Icon size={16} />
          </span>
          <div className="grow">
            <Heading as="h2" size="3" className="ellipsis">
              {String(step.fields.name ?? '') || step.id}
            </Heading>
            <Text size="1" color="gray">
              {look.label} step · <Code variant="ghost">{step.id}</Code>
            </Text>
          </div>
        </Flex>
        <Flex gap="2" mt="3">
          <Tooltip content="Run this step and everything after it; reuse the outputs of the steps before it from the latest run">
            <Button size="1" variant="soft" data-testid="run-from" onClick={() => onRun({ from: step.id })}>
              <SkipForward size={14} /> Run from here
            </Button>
          </Tooltip>
          <Tooltip content="Run only this step and the steps it needs">
            <Button size="1" variant="soft" data-testid="run-until" onClick={() => onRun({ until: step.id })}>
              <Play size={14} /> Run up to here
            </Button>
          </Tooltip>
        </Flex>
      </div>
      {live && (live.tokens || live.error) && (
        <div className="live-output" data-testid="inspector-output">
          <Flex gap="2" align="center">
            <Badge color={live.status === 'failed' ? 'red' : live.status === 'succeeded' ? 'green' : 'amber'}>{live.status}</Badge>
            {live.model && <Text size="1" color="gray">on {live.model}</Text>}
          </Flex>
          <pre>{live.error && live.status !== 'succeeded' ? live.error : live.tokens}</pre>
        </div>
      )}
      <Accordion.Root type="multiple" defaultValue={['general', 'prompt', 'model', 'output']} className="sections">
        {sections.map((s) => {
          const set = summary(s.fields, step.fields);
          return (
            <Accordion.Item key={s.id} value={s.id} className="section" data-testid={`section-${s.id}`}>
              <Accordion.Header className="section-header">
                <Accordion.Trigger className="section-trigger" data-testid={`section-toggle-${s.id}`}>
                  <span className="section-title">{s.title}</span>
                  {set && <span className="section-summary">{set}</span>}
                  <ChevronDown size={14} className="chevron" aria-hidden />
                </Accordion.Trigger>
              </Accordion.Header>
              <Accordion.Content className="section-content">
                <Text as="p" size="1" color="gray" className="section-hint">{s.hint}</Text>
                {s.id === 'general' && (
                  <Field label="id" help="Unique within the workflow; templates read it as steps.<id>.output." htmlFor="field-id">
                    <TextField.Root
                      id="field-id"
                      data-testid="field-id"
                      defaultValue={step.id}
                      key={`id-${step.id}`}
                      onBlur={(e) => {
                        if (e.target.value !== step.id && !renameStep(step.id, e.target.value)) e.target.value = step.id;
                      }}
                      onKeyDown={(e) => e.key === 'Enter' && (e.target as HTMLInputElement).blur()}
                    />
                  </Field>
                )}
                {s.fields.map(control)}
                {s.id === 'prompt' && variables.length > 0 && (
                  <div className="variables" data-testid="variables">
                    <Text size="1" color="gray">Insert:</Text>
                    {variables.map((v) => (
                      <Button
                        key={v}
                        size="1"
                        variant="surface"
                        color="gray"
                        className="mono"
                        data-testid={`insert-${v.replace(/[{} ]/g, '')}`}
                        onClick={() => {
                          const field = step.kind === 'template' ? 'template' : 'prompt';
                          updateField(step.id, field, `${asText(step.fields[field])}${v}`);
                        }}
                      >
                        {v}
                      </Button>
                    ))}
                  </div>
                )}
              </Accordion.Content>
            </Accordion.Item>
          );
        })}
      </Accordion.Root>
    </aside>
  );
}
