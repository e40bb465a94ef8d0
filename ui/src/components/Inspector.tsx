// The selected step's fields, grouped in sections (General, Prompt, Model, Output,
// Reliability, Governance; registry.ts assigns each schema field to one) with a control
// per value shape (fields.tsx) and the schema's doc comment as each field's help text.
import { useMemo, type ReactNode } from 'react';
import { Accordion } from 'radix-ui';
import { Badge, Button, Code, Flex, Heading, Switch, Text, TextField, Tooltip } from '@radix-ui/themes';
import { CodeEditor, type EditorProblem } from './CodeEditor';
import { ChevronDown, MousePointerClick, Play, SkipForward } from 'lucide-react';
import { defDescription, fieldsOf, SECTIONS, WORKFLOW_FIELDS, type FieldSpec } from '../registry';
import { useEditor } from '../store';
import type { Backend, RunOptions } from '../backend';
import type { StepData } from '../workflow';
import { ModelPicker } from './ModelPicker';
import { Field, Help, helpText, SchemaEditor, ValueControl } from './fields';
import { kindLook } from '../design/kinds';
import { AgentsEditor, Discovery, ToolsEditor } from './Declarations';
import { CasesEditor, DeclPicker, DefaultTargets, ToolChecklist, VotersEditor } from './StepEditors';
import { switchFields } from '../graph';

const TEXT_FIELDS = new Set(['prompt', 'system', 'template', 'when']);

function asText(v: unknown): string {
  if (v === undefined || v === null) return '';
  return typeof v === 'string' ? v : JSON.stringify(v);
}

/**
 * Where in a field's text a validator message points: the first `code` span of the
 * message found in the text (an unknown `steps.nope`), else the whole text.
 */
export function locate(text: string, message: string): EditorProblem {
  for (const m of message.matchAll(/`([^`]+)`/g)) {
    const at = text.indexOf(m[1]);
    if (at >= 0) return { from: at, to: at + m[1].length, message };
  }
  return { message };
}

/**
 * "Local only" of an `llm` step: `model.local_only` of the full model form; turning it on
 * turns a reference or a list into `{prefer: [...], local_only: true}`, turning it off
 * gives the shorthand back when nothing else is set.
 */
function LocalOnly({ value, onChange }: { value: unknown; onChange(v: unknown): void }) {
  const obj = value && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
  const on = obj?.local_only === true;
  const set = (next: boolean) => {
    const prefer = obj ? obj.prefer : typeof value === 'string' ? [value] : value;
    const full: Record<string, unknown> = { ...(obj ?? {}), ...(prefer !== undefined ? { prefer } : {}), local_only: next };
    if (!next) delete full.local_only;
    const keys = Object.keys(full);
    if (keys.length === 0) onChange(undefined);
    else if (keys.length === 1 && keys[0] === 'prefer') onChange(full.prefer);
    else onChange(full);
  };
  return (
    <Field label="local only" help={helpText(defDescription('ModelRequirements', 'local_only'))} htmlFor="field-local_only">
      <Flex align="center" gap="2">
        <Switch id="field-local_only" data-testid="field-local_only" aria-label="local only" checked={on} onCheckedChange={set} />
        <Text size="1" color="gray">{on ? 'on' : 'off'}</Text>
      </Flex>
    </Field>
  );
}

/** The workflow's own settings (name, description, local only, budget, guardrails, on_failure, tools, agents, ...), by section. */
function WorkflowSettings({ backend }: { backend: Backend }) {
  const settings = useEditor((s) => s.settings);
  const workflowId = useEditor((s) => s.workflowId);
  const updateSetting = useEditor((s) => s.updateSetting);
  const sections = SECTIONS.map((s) => ({ ...s, fields: WORKFLOW_FIELDS.filter((f) => f.section === s.id) })).filter((s) => s.fields.length > 0);
  return (
    <div data-testid="workflow-settings">
      <div className="inspector-head">
        <Heading as="h2" size="3">Workflow settings</Heading>
        <Text size="1" color="gray">
          <Code variant="ghost">{workflowId}</Code> · apply to every step and run
        </Text>
      </div>
      <Sections
        sections={sections}
        values={settings}
        prefix="wf-"
        open={['general', 'governance']}
        body={(s) =>
          s.fields.map((f) => (
            <Field key={f.name} label={f.name.replace(/_/g, ' ')} help={helpText(f.description)} htmlFor={`wf-${f.name}`}>
              {f.name === 'tools' ? (
                <ToolsEditor backend={backend} value={settings.tools} onChange={(v) => updateSetting('tools', v)} />
              ) : f.name === 'agents' ? (
                <AgentsEditor value={settings.agents} onChange={(v) => updateSetting('agents', v)} />
              ) : (
                <ValueControl id={`wf-${f.name}`} shape={f.shape} value={settings[f.name]} label={f.name} onChange={(v) => updateSetting(f.name, v)} />
              )}
            </Field>
          ))
        }
      />
    </div>
  );
}

/**
 * The inspector's sections as an accordion (Radix): a header with the section's title and
 * what is set in it, then its hint and whatever `body` renders for it. `prefix` names the
 * test ids (`section-general`, `section-toggle-general`).
 */
function Sections({
  sections,
  values,
  prefix,
  open,
  body,
}: {
  sections: (typeof SECTIONS[number] & { fields: FieldSpec[] })[];
  values: Record<string, unknown>;
  prefix: string;
  open: string[];
  body(section: typeof SECTIONS[number] & { fields: FieldSpec[] }): ReactNode;
}) {
  return (
    <Accordion.Root type="multiple" defaultValue={open} className="sections">
      {sections.map((s) => {
        const set = summary(s.fields, values);
        return (
          <Accordion.Item key={s.id} value={s.id} className="section" data-testid={`${prefix}section-${s.id}`}>
            <Accordion.Header className="section-header">
              <Accordion.Trigger className="section-trigger" data-testid={`${prefix}section-toggle-${s.id}`}>
                <span className="section-title">{s.title}</span>
                {set && <span className="section-summary">{set}</span>}
                <ChevronDown size={14} className="chevron" aria-hidden />
              </Accordion.Trigger>
            </Accordion.Header>
            <Accordion.Content className="section-content">
              <Text as="p" size="1" color="gray" className="section-hint"><Help text={s.hint} /></Text>
              {body(s)}
            </Accordion.Content>
          </Accordion.Item>
        );
      })}
    </Accordion.Root>
  );
}

/** The selected step's header: kind chip, title, kind and id, run from / up to here. */
function StepHead({ step, onRun }: { step: StepData; onRun(options: RunOptions): void }) {
  const look = kindLook(step.kind);
  const Icon = look.icon;
  return (
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
  );
}

/** How a section's fields are set, for its collapsed header ("retry, timeout"). */
function summary(fields: FieldSpec[], values: Record<string, unknown>): string {
  return fields
    .filter((f) => values[f.name] !== undefined && values[f.name] !== null && values[f.name] !== '')
    .map((f) => f.name)
    .join(', ');
}

/** The control of a field that names declarations or holds records (StepEditors.tsx), if it is one. */
function declarationField(f: FieldSpec, step: StepData, set: (v: unknown) => void, backend: Backend, tools: unknown): ReactNode {
  const id = `field-${f.name}`;
  const value = step.fields[f.name];
  if (f.name === 'tool' && step.kind === 'tool') {
    // An mcp tool's functions (what `args.call` names), once discovered.
    const decl = typeof value === 'string' && tools && typeof tools === 'object' ? (tools as Record<string, Record<string, unknown>>)[value] : undefined;
    return (
      <>
        <DeclPicker id={id} of="tools" value={value} onChange={set} />
        {decl && 'mcp' in decl && <Discovery backend={backend} name={String(value)} />}
      </>
    );
  }
  if (f.name === 'agent') return <DeclPicker id={id} of="agents" value={value} onChange={set} optional />;
  if (f.name === 'tools' && step.kind === 'agent') return <ToolChecklist id={id} value={value} onChange={set} />;
  if (f.name === 'voters') return <VotersEditor id={id} value={value} onChange={set} />;
  if (f.name === 'cases' && step.kind === 'switch') return <CasesEditor stepId={step.id} value={value} />;
  if (f.name === 'default' && step.kind === 'switch') return <DefaultTargets value={value} />;
  return null;
}

/** One field of the selected step, with the control its name or shape calls for. */
function StepField({ field: f, step, backend, variables, errors }: { field: FieldSpec; step: StepData; backend: Backend; variables: string[]; errors: string[] }) {
  const updateField = useEditor((s) => s.updateField);
  const help = helpText(f.description);
  const tools = useEditor((s) => s.settings.tools);
  const special = declarationField(f, step, (v) => updateField(step.id, f.name, v), backend, tools);
  if (special) {
    return (
      <Field key={`${step.id}-${f.name}`} label={f.name.replace(/_/g, ' ')} help={help} htmlFor={`field-${f.name}`} errors={errors} errorTestId={`field-error-${f.name}`}>
        {special}
      </Field>
    );
  }
  if (f.name === 'model') {
    return (
      <Field key="model" label="model" help={help} htmlFor="model-picker" errors={errors} errorTestId="field-error-model">
        <ModelPicker backend={backend} value={step.fields.model} onChange={(v) => updateField(step.id, 'model', v)} />
      </Field>
    );
  }
  if (f.name === 'output_schema') {
    return (
      <Field key={`${step.id}-output_schema`} label="output schema" help={help} htmlFor="field-output_schema" errors={errors} errorTestId="field-error-output_schema">
        <SchemaEditor id="field-output_schema" value={step.fields.output_schema} onChange={(v) => updateField(step.id, 'output_schema', v)} />
      </Field>
    );
  }
  if (TEXT_FIELDS.has(f.name)) {
    const big = f.name === 'prompt' || f.name === 'template';
    return (
      <Field key={f.name} label={f.name} help={help} htmlFor={`field-${f.name}`} errors={errors} errorTestId={`field-error-${f.name}`}>
        <CodeEditor
          key={`${step.id}-${f.name}`}
          language="jinja"
          testId={`field-${f.name}`}
          label={f.name}
          value={asText(step.fields[f.name])}
          minLines={big ? 5 : 1}
          variables={variables}
          problems={errors.map((m) => locate(asText(step.fields[f.name]), m))}
          placeholder={big ? 'Type {{ to insert an input or an upstream output' : undefined}
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
}

/**
 * What a body's templates read besides steps: a map's item and its position (`as`,
 * `index_as`), a loop's `iteration` and `state.<name>`, for every body the step is in.
 */
function bodyVariables(nodes: { id: string; parentId?: string; data: { step: StepData } }[], parentId: string | undefined): string[] {
  const out: string[] = [];
  for (let owner = nodes.find((n) => n.id === parentId); owner; owner = nodes.find((n) => n.id === owner!.parentId)) {
    const f = owner.data.step.fields;
    if (owner.data.step.kind === 'map') out.push(`{{ ${String(f.as ?? 'item')} }}`, `{{ ${String(f.index_as ?? 'index')} }}`);
    else {
      out.push('{{ iteration }}');
      const state = f.state && typeof f.state === 'object' ? Object.keys(f.state) : [];
      out.push(...state.map((k) => `{{ state.${k} }}`));
    }
  }
  return [...new Set(out)];
}

/** The selected step's fields, with the variables its templates may use. */
export function Inspector({ backend, onRun }: { backend: Backend; onRun(options: RunOptions): void }) {
const node = useEditor((s) => s.nodes.find((n) => n.selected));
const nodes = useEditor((s) => s.nodes);
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
      <Flex align="center" gap="2" className="inspector-empty">
        <MousePointerClick size={18} aria-hidden />
        <Text size="1" color="gray">
          Select a step on the canvas to edit it, or add one from the palette (double-click, Enter, or drag).
        </Text>
      </Flex>
      <WorkflowSettings backend={backend} />
    </aside>
  );
}
// A switch's targets are its edges (each case's handle), shown as its cases' `then`.
const step = node.data.step.kind === 'switch' ? { ...node.data.step, fields: switchFields(node.data.step, edges) } : node.data.step;
const variables = [
  ...Object.keys(inputs).map((k) => `{{ inputs.${k} }}`),
  ...bodyVariables(nodes, node.parentId),
  ...upstream.map((u) => `{{ steps.${u}.output }}`),
];
const fields = fieldsOf(step.kind);
const errorsOf = (name: string) => diagnostics.filter((d) => d.step === step.id && d.field === name).map((d) => d.message);

const control = (f: FieldSpec) => (
  <StepField key={`${step.id}-${f.name}`} field={f} step={step} backend={backend} variables={variables} errors={errorsOf(f.name)} />
);

const sections = SECTIONS.map((s) => ({ ...s, fields: fields.filter((f) => f.section === s.id) })).filter(
  (s) => s.id === 'general' || s.fields.length > 0,
);
return (
  <aside className="inspector" data-testid="inspector" aria-label="Inspector">
    <StepHead step={step} onRun={onRun} />
    {live && (live.tokens || live.error) && (
      <div className="live-output" data-testid="inspector-output">
        <Flex gap="2" align="center">
          <Badge highContrast color={live.status === 'failed' ? 'red' : live.status === 'succeeded' ? 'green' : 'amber'}>{live.status}</Badge>
          {live.model && <Text size="1" color="gray">on {live.model}</Text>}
        </Flex>
        <pre>{live.error && live.status !== 'succeeded' ? live.error : live.tokens}</pre>
      </div>
    )}
    <Sections
      sections={sections}
      values={step.fields}
      prefix=""
      open={['general', 'prompt', 'model', 'tools', 'output']}
      body={(s) => (
        <>
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
          {s.id === 'governance' && fields.some((f) => f.name === 'model') && (
            <LocalOnly value={step.fields.model} onChange={(v) => updateField(step.id, 'model', v)} />
          )}
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
        </>
      )}
    />
  </aside>
);
}
