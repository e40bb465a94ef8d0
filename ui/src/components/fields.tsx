// The inspector's controls, one per value shape read from the workflow schema
// (registry.ts `Shape`): switches for booleans, number fields, duration fields that check
// the humantime form, selects for enums, nested groups for objects (retry policy,
// timeouts, fallback ladder, budget), a variant select for unions (`on_failure`), and
// YAML text for everything else. Each control has its label and the schema's help text.
import { useEffect, useRef, useState, type ReactNode } from 'react';
import { CodeEditor } from './CodeEditor';
import { Code, Flex, Select, Switch, Text, TextArea, TextField } from '@radix-ui/themes';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { DURATION, type Shape, type SubField } from '../registry';

/** A schema description as a short help text: links and line breaks of the doc comment removed. */
export function helpText(description: string): string {
  return description
    .replace(/\[`([^`]+)`\]/g, '$1')
    .replace(/\s*\n\s*/g, ' ')
    .trim();
}

const DEFAULT = '__default';

/** A help text with its `code` spans (Markdown backticks of the doc comment) as code. */
export function Help({ text }: { text: string }) {
  return (
    <>
      {text.split(/(`[^`]+`)/).map((part, i) =>
        part.startsWith('`') && part.endsWith('`') && part.length > 2 ? (
          <Code key={i} size="1" variant="ghost">
            {part.slice(1, -1)}
          </Code>
        ) : (
          part
        ),
      )}
    </>
  );
}

/** A labelled field with its help text and errors. */
export function Field({
  label,
  help,
  htmlFor,
  errors,
  errorTestId,
  children,
}: {
  label: string;
  help?: string;
  htmlFor?: string;
  errors?: string[];
  errorTestId?: string;
  children: ReactNode;
}) {
  return (
    <div className="field">
      <Text as="label" size="2" weight="medium" htmlFor={htmlFor} className="field-label">
        {label}
      </Text>
      {children}
      {help && (
        <Text as="p" size="1" color="gray" className="field-help">
          <Help text={help} />
        </Text>
      )}
      {errors?.map((e, i) => (
        <Text as="p" size="1" color="red" key={i} className="field-error" data-testid={errorTestId} role="alert">
          {e}
        </Text>
      ))}
    </div>
  );
}

/** The control for one value of a shape. `value` is the YAML value; `undefined` means unset. */
export function ValueControl({
  id,
  shape,
  value,
  onChange,
  label,
}: {
  id: string;
  shape: Shape;
  value: unknown;
  onChange(v: unknown): void;
  label: string;
}) {
  switch (shape.type) {
    case 'boolean':
      return (
        <Flex align="center" gap="2">
          <Switch
            id={id}
            data-testid={id}
            aria-label={label}
            checked={typeof value === 'boolean' ? value : (shape.default ?? false)}
            onCheckedChange={(c) => onChange(c)}
          />
          <Text size="1" color="gray">
            {typeof value === 'boolean' ? (value ? 'on' : 'off') : `default (${shape.default ? 'on' : 'off'})`}
          </Text>
        </Flex>
      );
    case 'integer':
    case 'number':
      return <NumberInput id={id} shape={shape} value={value} onChange={onChange} label={label} />;
    case 'string':
      return shape.duration ? (
        <DurationInput id={id} value={value} placeholder={shape.default} onChange={onChange} label={label} />
      ) : (
        <TextInput id={id} value={value} placeholder={shape.default} onChange={onChange} label={label} />
      );
    case 'enum':
      return (
        <Select.Root
          value={typeof value === 'string' ? value : DEFAULT}
          onValueChange={(v) => onChange(v === DEFAULT ? undefined : v)}
        >
          <Select.Trigger id={id} data-testid={id} aria-label={label} className="wide-select" />
          <Select.Content position="popper">
            <Select.Item value={DEFAULT}>default</Select.Item>
            {shape.options.map((o) => (
              <Select.Item key={o.value} value={o.value} data-testid={`${id}-option-${o.value}`}>
                {o.value}
              </Select.Item>
            ))}
          </Select.Content>
        </Select.Root>
      );
    case 'object':
      return <ObjectControl id={id} fields={shape.fields} value={value} onChange={onChange} />;
    case 'union':
      return <UnionControl id={id} shape={shape} value={value} onChange={onChange} label={label} />;
    case 'list':
      return <ListInput id={id} value={value} onChange={onChange} label={label} />;
    case 'raw':
      return <YamlInput id={id} value={value} onChange={onChange} label={label} />;
  }
}

/** A list of strings, one a line; empty lines are dropped when the field is left. */
export function ListInput({ id, value, onChange, label, placeholder }: { id: string; value: unknown; onChange(v: unknown): void; label: string; placeholder?: string }) {
  const text = Array.isArray(value) ? value.map(String).join('\n') : '';
  return (
    <TextArea
      id={id}
      data-testid={id}
      aria-label={`${label} (one a line)`}
      key={`${id}-${text}`}
      defaultValue={text}
      rows={Math.max(2, text.split('\n').length)}
      placeholder={placeholder ?? 'one a line'}
      onBlur={(e) => {
        const items = e.target.value.split('\n').map((l) => l.trim()).filter(Boolean);
        onChange(items.length ? items : undefined);
      }}
    />
  );
}

function TextInput({ id, value, placeholder, onChange, label }: { id: string; value: unknown; placeholder?: string; onChange(v: unknown): void; label: string }) {
  return (
    <TextField.Root
      id={id}
      data-testid={id}
      aria-label={label}
      key={`${id}-${String(value ?? '')}`}
      defaultValue={value === undefined || value === null ? '' : String(value)}
      placeholder={placeholder}
      onBlur={(e) => onChange(e.target.value === '' ? undefined : e.target.value)}
      onKeyDown={(e) => e.key === 'Enter' && (e.target as HTMLInputElement).blur()}
    />
  );
}

/**
 * A text field whose value is checked when it is left: `parse` turns the text into the
 * value (`undefined` for an empty field) or refuses it with a message shown under it.
 */
function CheckedInput({
  id,
  label,
  text,
  placeholder,
  type,
  step,
  min,
  max,
  slot,
  parse,
  onChange,
}: {
  id: string;
  label: string;
  text: string;
  placeholder?: string;
  type?: 'number';
  step?: number | 'any';
  min?: number;
  max?: number;
  slot?: ReactNode;
  parse(raw: string): { value: unknown } | { error: string };
  onChange(v: unknown): void;
}) {
  const [error, setError] = useState<string | null>(null);
  return (
    <>
      <TextField.Root
        id={id}
        data-testid={id}
        aria-label={label}
        type={type}
        step={step}
        min={min}
        max={max}
        key={`${id}-${text}`}
        defaultValue={text}
        placeholder={placeholder}
        onBlur={(e) => {
          const raw = e.target.value.trim();
          const parsed = raw === '' ? { value: undefined } : parse(raw);
          if ('error' in parsed) {
            setError(parsed.error);
            return;
          }
          setError(null);
          onChange(parsed.value);
        }}
        onKeyDown={(e) => e.key === 'Enter' && (e.target as HTMLInputElement).blur()}
      >
        {slot && <TextField.Slot side="right">{slot}</TextField.Slot>}
      </TextField.Root>
      {error && <Text size="1" color="red" role="alert" data-testid={`${id}-error`}>{error}</Text>}
    </>
  );
}

function NumberInput({ id, shape, value, onChange, label }: { id: string; shape: Extract<Shape, { type: 'integer' | 'number' }>; value: unknown; onChange(v: unknown): void; label: string }) {
  return (
    <CheckedInput
      id={id}
      label={label}
      type="number"
      step={shape.type === 'integer' ? 1 : 'any'}
      min={shape.minimum}
      max={shape.maximum}
      text={typeof value === 'number' ? String(value) : ''}
      placeholder={shape.default !== undefined ? String(shape.default) : undefined}
      parse={(raw) => {
        const n = Number(raw);
        return !Number.isFinite(n) || (shape.type === 'integer' && !Number.isInteger(n))
          ? { error: `${label}: ${shape.type === 'integer' ? 'a whole number' : 'a number'} is needed` }
          : { value: n };
      }}
      onChange={onChange}
    />
  );
}

/** A humantime duration (`500ms`, `2s`, `1m 30s`); a value that is not one is refused with the form to use. */
function DurationInput({ id, value, placeholder, onChange, label }: { id: string; value: unknown; placeholder?: string; onChange(v: unknown): void; label: string }) {
  return (
    <CheckedInput
      id={id}
      label={label}
      text={typeof value === 'string' ? value : ''}
      placeholder={placeholder ?? 'e.g. 30s'}
      slot={<Text size="1" color="gray">duration</Text>}
      parse={(raw) =>
        DURATION.test(raw) ? { value: raw } : { error: `${label}: "${raw}" is not a duration; write a number and a unit, e.g. 500ms, 30s, 2m, 1h` }
      }
      onChange={onChange}
    />
  );
}

function ObjectControl({ id, fields, value, onChange }: { id: string; fields: SubField[]; value: unknown; onChange(v: unknown): void }) {
  const obj = value && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
  const set = (k: string, v: unknown) => {
    const next = { ...obj, [k]: v };
    if (v === undefined) delete next[k];
    onChange(Object.keys(next).length ? next : undefined);
  };
  return (
    <div className="object-control" data-testid={id}>
      {fields.map((f) => (
        <Field key={f.name} label={f.name.replace(/_/g, ' ')} help={helpText(f.description)} htmlFor={`${id}-${f.name}`}>
          <ValueControl id={`${id}-${f.name}`} shape={f.shape} value={obj[f.name]} onChange={(v) => set(f.name, v)} label={f.name} />
        </Field>
      ))}
    </div>
  );
}

function UnionControl({ id, shape, value, onChange, label }: { id: string; shape: Extract<Shape, { type: 'union' }>; value: unknown; onChange(v: unknown): void; label: string }) {
  const current =
    typeof value === 'string'
      ? value
      : value && typeof value === 'object'
        ? (Object.keys(value)[0] ?? DEFAULT)
        : DEFAULT;
  const variant = shape.variants.find((v) => (v.type === 'const' ? v.value : v.key) === current);
  return (
    <Flex direction="column" gap="2">
      <Select.Root
        value={current}
        onValueChange={(v) => {
          const chosen = shape.variants.find((x) => (x.type === 'const' ? x.value : x.key) === v);
          if (!chosen) onChange(undefined);
          else if (chosen.type === 'const') onChange(chosen.value);
          else onChange({ [chosen.key]: '' });
        }}
      >
        <Select.Trigger id={id} data-testid={id} aria-label={label} className="wide-select" />
        <Select.Content position="popper">
          <Select.Item value={DEFAULT}>default</Select.Item>
          {shape.variants.map((v) => {
            const key = v.type === 'const' ? v.value : v.key;
            return (
              <Select.Item key={key} value={key} data-testid={`${id}-option-${key}`}>
                {key}
              </Select.Item>
            );
          })}
        </Select.Content>
      </Select.Root>
      {variant && (
        <Text size="1" color="gray">
          <Help text={helpText(variant.description)} />
        </Text>
      )}
      {variant?.type === 'object' && (
        <ValueControl
          id={`${id}-${variant.key}`}
          shape={variant.shape}
          value={(value as Record<string, unknown>)[variant.key]}
          onChange={(v) => onChange({ [variant.key]: v ?? '' })}
          label={`${label} ${variant.key}`}
        />
      )}
    </Flex>
  );
}

/** Any other value as YAML text (CodeMirror), parsed by the `yaml` library when the field is left. */
function YamlInput({ id, value, onChange, label }: { id: string; value: unknown; onChange(v: unknown): void; label: string }) {
  const text = value === undefined || value === null ? '' : stringifyYaml(value).trimEnd();
  const [draft, setDraft] = useState(text);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => setDraft(text), [text]);
  const commit = () => {
    if (draft.trim() === '') {
      setError(null);
      onChange(undefined);
      return;
    }
    try {
      onChange(parseYaml(draft));
      setError(null);
    } catch (e) {
      setError(`${label}: not valid YAML: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`);
    }
  };
  const latest = useRef(commit);
  latest.current = commit;
  return (
    <>
      <CodeEditor
        language="yaml"
        testId={id}
        label={`${label} (YAML)`}
        value={draft}
        minLines={2}
        placeholder="YAML"
        problems={error ? [{ message: error }] : []}
        onChange={setDraft}
        onBlur={() => latest.current()}
      />
      {error && <Text size="1" color="red" role="alert" data-testid={`${id}-error`}>{error}</Text>}
    </>
  );
}

/** A JSON Schema's properties, for the preview under `output_schema`: name, type, required, description. */
function schemaRows(schema: unknown, prefix = '', depth = 0): { path: string; type: string; required: boolean; description: string }[] {
  if (!schema || typeof schema !== 'object' || depth > 3) return [];
  const s = schema as { properties?: Record<string, unknown>; required?: string[]; items?: unknown };
  const out: { path: string; type: string; required: boolean; description: string }[] = [];
  for (const [name, prop] of Object.entries(s.properties ?? {})) {
    const p = (prop ?? {}) as { type?: string | string[]; description?: string; items?: unknown; enum?: unknown[] };
    const type = p.enum ? `enum (${p.enum.map(String).join(', ')})` : Array.isArray(p.type) ? p.type.join(' | ') : (p.type ?? 'any');
    out.push({ path: `${prefix}${name}`, type, required: (s.required ?? []).includes(name), description: p.description ?? '' });
    out.push(...schemaRows(prop, `${prefix}${name}.`, depth + 1));
    if (p.items) out.push(...schemaRows(p.items, `${prefix}${name}[].`, depth + 1));
  }
  return out;
}

/**
 * `output_schema`: the JSON Schema as YAML in the code editor, and a preview of the
 * object the step must return (each property with its type and whether it is required).
 */
export function SchemaEditor({ id, value, onChange }: { id: string; value: unknown; onChange(v: unknown): void }) {
  const rows = schemaRows(value);
  const type = value && typeof value === 'object' ? (value as { type?: unknown }).type : undefined;
  return (
    <Flex direction="column" gap="2">
      <YamlInput id={id} value={value} onChange={onChange} label="output_schema" />
      {value !== undefined && value !== null && (
        <div className="schema-preview" data-testid={`${id}-preview`}>
          <Text size="1" weight="bold">
            The step returns {type === 'object' || rows.length ? 'an object' : type ? `a ${String(type)}` : 'JSON'}
            {rows.length ? ':' : ''}
          </Text>
          {typeof value !== 'object' && (
            <Text size="1" color="red" role="alert">
              A JSON Schema is an object, e.g. type: object with properties.
            </Text>
          )}
          <ul>
            {rows.map((r) => (
              <li key={r.path} data-testid={`${id}-preview-${r.path}`}>
                <Code size="1" variant="ghost">{r.path}</Code> <Text size="1" color="gray">{r.type}</Text>
                {r.required && <Text size="1" weight="bold"> required</Text>}
                {r.description && <Text size="1" color="gray"> — {r.description}</Text>}
              </li>
            ))}
          </ul>
        </div>
      )}
    </Flex>
  );
}
