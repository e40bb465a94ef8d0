// The workflow's `tools:` and `agents:` declarations in the inspector (no step selected):
// one card per tool (its name, its kind — http, file, shell or mcp — and that kind's
// fields from the schema) and per agent (name, description, system prompt, model). An
// `mcp` tool lists the functions its server offers once discovered (the backend connects
// to it as a run would, from the saved file), or says why discovery failed.
import { useState } from 'react';
import { Badge, Button, Callout, Card, Code, Flex, IconButton, Select, Text, TextField } from '@radix-ui/themes';
import { Plus, Search, Trash2 } from 'lucide-react';
import { AGENT_FIELDS, TOOL_KINDS } from '../registry';
import { useEditor } from '../store';
import type { Backend, ToolFunction } from '../backend';
import { Field, helpText, ValueControl } from './fields';

type Decls = Record<string, Record<string, unknown>>;

function asDecls(value: unknown): Decls {
  return value && typeof value === 'object' && !Array.isArray(value) ? (value as Decls) : {};
}

function freshName(base: string, taken: Decls): string {
  for (let i = 1; ; i++) if (!(`${base}_${i}` in taken)) return `${base}_${i}`;
}

/** The declarations with `name` renamed to `next`, keeping their order. */
function renamed(decls: Decls, name: string, next: string): Decls {
  return Object.fromEntries(Object.entries(decls).map(([k, v]) => [k === name ? next : k, v]));
}

/** A declaration's name, renamed when the field is left (refused when taken or not an identifier). */
function NameField({ id, name, decls, onRename }: { id: string; name: string; decls: Decls; onRename(next: string): void }) {
  const [error, setError] = useState<string | null>(null);
  return (
    <Flex direction="column" className="grow">
      <TextField.Root
        id={id}
        data-testid={id}
        aria-label="name"
        defaultValue={name}
        key={`${id}-${name}`}
        onBlur={(e) => {
          const next = e.target.value.trim();
          if (next === name) return setError(null);
          if (!/^[A-Za-z_][A-Za-z0-9_-]*$/.test(next) || next in decls) {
            setError(`\`${next}\` is not a free name (letters, digits, _ and -)`);
            e.target.value = name;
            return;
          }
          setError(null);
          onRename(next);
        }}
        onKeyDown={(e) => e.key === 'Enter' && (e.target as HTMLInputElement).blur()}
      />
      {error && <Text size="1" color="red" role="alert" data-testid={`${id}-error`}>{error}</Text>}
    </Flex>
  );
}

/** The functions of an `mcp` tool, after discovery. */
export function Discovery({ backend, name }: { backend: Backend; name: string }) {
  const path = useEditor((s) => s.path);
  const dirty = useEditor((s) => s.dirty);
  const [state, setState] = useState<{ busy: boolean; functions?: ToolFunction[]; error?: string }>({ busy: false });
  const discover = () => {
    if (!path) {
      setState({ busy: false, error: 'Save the workflow first: discovery connects to the server declared in the saved file.' });
      return;
    }
    setState({ busy: true });
    backend.discoverTools(path, name).then(
      (functions) => setState({ busy: false, functions }),
      (e: unknown) => setState({ busy: false, error: e instanceof Error ? e.message : String(e) }),
    );
  };
  return (
    <Flex direction="column" gap="2">
      <Flex align="center" gap="2">
        <Button size="1" variant="soft" data-testid={`tool-discover-${name}`} loading={state.busy} onClick={discover}>
          <Search size={12} /> Discover the server's tools
        </Button>
        {dirty && path && <Text size="1" color="gray">reads the saved file</Text>}
      </Flex>
      {state.error && (
        <Callout.Root color="red" size="1" role="alert" data-testid={`tool-discover-error-${name}`}>
          <Callout.Text>Discovery failed: {state.error}</Callout.Text>
        </Callout.Root>
      )}
      {state.functions && (
        <ul className="tool-functions" data-testid={`tool-functions-${name}`}>
          {state.functions.length === 0 && <Text size="1" color="gray">The server lists no tools.</Text>}
          {state.functions.map((f) => (
            <li key={f.name} data-testid={`tool-function-${name}-${f.name}`}>
              <Code size="1">{f.name}</Code>
              {f.description && <Text size="1" color="gray"> — {f.description}</Text>}
              <Text as="div" size="1" color="gray">agents call it as <Code size="1" variant="ghost">{name}__{f.name}</Code></Text>
            </li>
          ))}
        </ul>
      )}
    </Flex>
  );
}

/** One tool of `tools:`: `{<kind>: {fields}}`. */
function ToolCard({ backend, name, decl, decls, onChange }: { backend: Backend; name: string; decl: Record<string, unknown>; decls: Decls; onChange(next: Decls): void }) {
  const kind = Object.keys(decl)[0] ?? 'http';
  const spec = TOOL_KINDS.find((k) => k.kind === kind);
  const config = (decl[kind] && typeof decl[kind] === 'object' ? decl[kind] : {}) as Record<string, unknown>;
  const put = (next: Record<string, unknown>) => onChange({ ...decls, [name]: next });
  const setKind = (k: string) => {
    const required = TOOL_KINDS.find((t) => t.kind === k)?.required ?? [];
    put({ [k]: Object.fromEntries(required.map((r) => [r, r === 'command' ? [] : ''])) });
  };
  const setField = (f: string, v: unknown) => {
    const next = { ...config, [f]: v };
    if (v === undefined) delete next[f];
    put({ [kind]: next });
  };
  const without = () => onChange(Object.fromEntries(Object.entries(decls).filter(([k]) => k !== name)));
  return (
    <Card size="1" data-testid={`tool-${name}`}>
      <Flex align="start" gap="2" mb="2">
        <NameField id={`tool-name-${name}`} name={name} decls={decls} onRename={(next) => onChange(renamed(decls, name, next))} />
        <Select.Root value={kind} onValueChange={setKind} size="2">
          <Select.Trigger data-testid={`tool-kind-${name}`} aria-label={`${name}: kind`} />
          <Select.Content position="popper">
            {TOOL_KINDS.map((k) => (
              <Select.Item key={k.kind} value={k.kind} data-testid={`tool-kind-${name}-option-${k.kind}`}>
                {k.kind}
              </Select.Item>
            ))}
          </Select.Content>
        </Select.Root>
        <IconButton variant="ghost" color="red" aria-label={`Remove tool ${name}`} data-testid={`tool-remove-${name}`} onClick={without}>
          <Trash2 size={14} />
        </IconButton>
      </Flex>
      {spec && <Text as="p" size="1" color="gray" mb="2">{helpText(spec.description)}</Text>}
      {spec?.fields.map((f) => (
        <Field key={f.name} label={f.name.replace(/_/g, ' ')} help={helpText(f.description).split('. ')[0]} htmlFor={`tool-${name}-${f.name}`}>
          <ValueControl id={`tool-${name}-${f.name}`} shape={f.shape} value={config[f.name]} label={`${name} ${f.name}`} onChange={(v) => setField(f.name, v)} />
        </Field>
      ))}
      {kind === 'mcp' && <Discovery backend={backend} name={name} />}
    </Card>
  );
}

/** The workflow's `tools:`. */
export function ToolsEditor({ backend, value, onChange }: { backend: Backend; value: unknown; onChange(v: unknown): void }) {
  const decls = asDecls(value);
  const set = (next: Decls) => onChange(Object.keys(next).length ? next : undefined);
  return (
    <Flex direction="column" gap="2" data-testid="wf-tools">
      {Object.entries(decls).map(([name, decl]) => (
        <ToolCard key={name} backend={backend} name={name} decl={decl ?? {}} decls={decls} onChange={set} />
      ))}
      <Button size="1" variant="soft" data-testid="tool-add" onClick={() => set({ ...decls, [freshName('tool', decls)]: { http: { url: '' } } })}>
        <Plus size={12} /> Add tool
      </Button>
    </Flex>
  );
}

/** The workflow's `agents:`: named personas. */
export function AgentsEditor({ value, onChange }: { value: unknown; onChange(v: unknown): void }) {
  const decls = asDecls(value);
  const set = (next: Decls) => onChange(Object.keys(next).length ? next : undefined);
  return (
    <Flex direction="column" gap="2" data-testid="wf-agents">
      {Object.entries(decls).map(([name, decl]) => {
        const agent = decl ?? {};
        const setField = (f: string, v: unknown) => {
          const next = { ...agent, [f]: v };
          if (v === undefined) delete next[f];
          set({ ...decls, [name]: next });
        };
        return (
          <Card size="1" key={name} data-testid={`agent-${name}`}>
            <Flex align="start" gap="2" mb="2">
              <NameField id={`agent-name-${name}`} name={name} decls={decls} onRename={(next) => set(renamed(decls, name, next))} />
              <Badge color="pink">agent</Badge>
              <IconButton variant="ghost" color="red" aria-label={`Remove agent ${name}`} data-testid={`agent-remove-${name}`} onClick={() => set(Object.fromEntries(Object.entries(decls).filter(([k]) => k !== name)))}>
                <Trash2 size={14} />
              </IconButton>
            </Flex>
            {AGENT_FIELDS.map((f) => (
              <Field key={f.name} label={f.name} help={helpText(f.description).split('. ')[0]} htmlFor={`agent-${name}-${f.name}`}>
                <ValueControl id={`agent-${name}-${f.name}`} shape={f.shape} value={agent[f.name]} label={`${name} ${f.name}`} onChange={(v) => setField(f.name, v)} />
              </Field>
            ))}
          </Card>
        );
      })}
      <Button size="1" variant="soft" data-testid="agent-add" onClick={() => set({ ...decls, [freshName('agent', decls)]: { system: '' } })}>
        <Plus size={12} /> Add agent
      </Button>
    </Flex>
  );
}
