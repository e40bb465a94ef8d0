// Inspector controls for the fields that name the workflow's declarations or are lists
// of records: a `tool` step's tool and an `llm`/`agent` step's agent (picked from
// `tools:` and `agents:`), an agent's tools (checked from `tools:`), a vote's voters, a
// switch's cases (their targets are drawn on the canvas from each case's handle).
import { Badge, Button, Card, CheckboxGroup, Code, Flex, IconButton, Select, Text, TextField } from '@radix-ui/themes';
import { Plus, Trash2 } from 'lucide-react';
import { useEditor } from '../store';
import { VOTER_FIELDS } from '../registry';
import { caseName, type SwitchCase } from '../graph';
import { Field, helpText, ValueControl } from './fields';

const NONE = '__none';

function useDeclared(key: 'tools' | 'agents'): [string, Record<string, unknown>][] {
  const decls = useEditor((s) => s.settings[key]);
  return decls && typeof decls === 'object' && !Array.isArray(decls) ? Object.entries(decls as Record<string, Record<string, unknown>>) : [];
}

/** Picks one of the workflow's `tools:` or `agents:` by name. */
export function DeclPicker({ id, of, value, onChange, optional }: { id: string; of: 'tools' | 'agents'; value: unknown; onChange(v: unknown): void; optional?: boolean }) {
  const declared = useDeclared(of);
  const current = typeof value === 'string' && value ? value : NONE;
  const kindOf = (d: Record<string, unknown>) => (of === 'tools' ? Object.keys(d ?? {})[0] : 'agent');
  return (
    <Flex direction="column" gap="1">
      <Select.Root value={current} onValueChange={(v) => onChange(v === NONE ? undefined : v)}>
        <Select.Trigger id={id} data-testid={id} aria-label={of === 'tools' ? 'tool' : 'agent'} className="wide-select" placeholder="none" />
        <Select.Content position="popper">
          <Select.Item value={NONE}>{optional ? 'none' : 'choose…'}</Select.Item>
          {declared.map(([name, d]) => (
            <Select.Item key={name} value={name} data-testid={`${id}-option-${name}`}>
              {name} ({kindOf(d)})
            </Select.Item>
          ))}
          {current !== NONE && !declared.some(([n]) => n === current) && (
            <Select.Item value={current}>{current} (not declared)</Select.Item>
          )}
        </Select.Content>
      </Select.Root>
      {declared.length === 0 && (
        <Text size="1" color="gray" data-testid={`${id}-none`}>
          The workflow declares no {of} yet: add them in the workflow settings (click the canvas), under Tools and agents.
        </Text>
      )}
    </Flex>
  );
}

/** An agent step's `tools`: any of the workflow's tools. */
export function ToolChecklist({ id, value, onChange }: { id: string; value: unknown; onChange(v: unknown): void }) {
  const declared = useDeclared('tools');
  const chosen = Array.isArray(value) ? value.map(String) : [];
  return (
    <Flex direction="column" gap="1" data-testid={id}>
      <CheckboxGroup.Root value={chosen} onValueChange={(v) => onChange(declared.map(([n]) => n).filter((n) => v.includes(n)).concat(chosen.filter((c) => !declared.some(([n]) => n === c) && v.includes(c))))} aria-label="tools the agent may call">
        {declared.map(([name, d]) => (
          <CheckboxGroup.Item key={name} value={name} data-testid={`${id}-${name}`}>
            {name} <Text color="gray">({Object.keys(d ?? {})[0]})</Text>
          </CheckboxGroup.Item>
        ))}
      </CheckboxGroup.Root>
      {declared.length === 0 && (
        <Text size="1" color="gray" data-testid={`${id}-none`}>
          The workflow declares no tools yet: add them in the workflow settings (click the canvas), under Tools and agents.
        </Text>
      )}
    </Flex>
  );
}

/** A vote's `voters`: one card each with the voter's fields. */
export function VotersEditor({ id, value, onChange }: { id: string; value: unknown; onChange(v: unknown): void }) {
  const voters = Array.isArray(value) ? (value as Record<string, unknown>[]) : [];
  const put = (i: number, v: Record<string, unknown> | null) => {
    const next = voters.flatMap((x, j) => (j !== i ? [x] : v ? [v] : []));
    onChange(next.length ? next : undefined);
  };
  return (
    <Flex direction="column" gap="2" data-testid={id}>
      {voters.map((voter, i) => (
        <Card size="1" key={i} data-testid={`voter-${i}`}>
          <Flex justify="between" align="center" mb="1">
            <Text size="1" weight="bold">{String(voter.name ?? voter.agent ?? `voter ${i + 1}`)}</Text>
            <IconButton size="1" variant="ghost" color="red" aria-label={`Remove voter ${i + 1}`} data-testid={`voter-remove-${i}`} onClick={() => put(i, null)}>
              <Trash2 size={12} />
            </IconButton>
          </Flex>
          {VOTER_FIELDS.map((f) => {
            const fid = `voter-${i}-${f.name}`;
            const set = (v: unknown) => {
              const next = { ...voter, [f.name]: v };
              if (v === undefined) delete next[f.name];
              put(i, next);
            };
            return (
              <Field key={f.name} label={f.name} help={helpText(f.description)} htmlFor={fid}>
                {f.name === 'agent' ? (
                  <DeclPicker id={fid} of="agents" value={voter.agent} onChange={set} optional />
                ) : (
                  <ValueControl id={fid} shape={f.shape} value={voter[f.name]} label={`voter ${i + 1} ${f.name}`} onChange={set} />
                )}
              </Field>
            );
          })}
        </Card>
      ))}
      <Button size="1" variant="soft" data-testid="voter-add" onClick={() => onChange([...voters, { name: `voter_${voters.length + 1}` }])}>
        <Plus size={12} /> Add voter
      </Button>
    </Flex>
  );
}

/** A switch's `cases`: name and condition here, the steps each runs drawn from its handle. */
export function CasesEditor({ stepId, value }: { stepId: string; value: unknown }) {
  const updateCases = useEditor((s) => s.updateCases);
  const cases = Array.isArray(value) ? (value as SwitchCase[]) : [];
  const set = (i: number, key: 'name' | 'when', v: string) => {
    updateCases(stepId, cases.map((c, j) => {
      if (j !== i) return c;
      const next = { ...c, [key]: v };
      if (key === 'name' && !v) delete next.name;
      return next;
    }));
  };
  return (
    <Flex direction="column" gap="2" data-testid="field-cases">
      {cases.map((c, i) => (
        <Card size="1" key={i} data-testid={`case-${i}`}>
          <Flex gap="2" align="center" mb="1">
            <TextField.Root
              className="grow"
              data-testid={`case-name-${i}`}
              aria-label={`case ${i} name`}
              placeholder={`case${i}`}
              key={`name-${i}-${c.name ?? ''}`}
              defaultValue={c.name ?? ''}
              onBlur={(e) => e.target.value.trim() !== (c.name ?? '') && set(i, 'name', e.target.value.trim())}
              onKeyDown={(e) => e.key === 'Enter' && (e.target as HTMLInputElement).blur()}
            />
            <IconButton size="1" variant="ghost" color="red" aria-label={`Remove case ${caseName(c, i)}`} data-testid={`case-remove-${i}`} onClick={() => updateCases(stepId, cases.filter((_, j) => j !== i), i)}>
              <Trash2 size={12} />
            </IconButton>
          </Flex>
          <TextField.Root
            className="mono"
            data-testid={`case-when-${i}`}
            aria-label={`case ${caseName(c, i)}: when`}
            placeholder='when, e.g. steps.classify.json.kind == "bug"'
            key={`when-${i}-${c.when}`}
            defaultValue={c.when ?? ''}
            onBlur={(e) => e.target.value !== (c.when ?? '') && set(i, 'when', e.target.value)}
            onKeyDown={(e) => e.key === 'Enter' && (e.target as HTMLInputElement).blur()}
          />
          <Flex gap="1" mt="1" align="center" wrap="wrap" data-testid={`case-then-${i}`}>
            <Text size="1" color="gray">then:</Text>
            {(c.then ?? []).length === 0 && <Text size="1" color="gray">drag from the <Code size="1" variant="ghost">{caseName(c, i)}</Code> handle to a step</Text>}
            {(c.then ?? []).map((t) => <Badge key={t} color="orange">{t}</Badge>)}
          </Flex>
        </Card>
      ))}
      <Button size="1" variant="soft" data-testid="case-add" onClick={() => updateCases(stepId, [...cases, { name: `case${cases.length}`, when: '', then: [] }])}>
        <Plus size={12} /> Add case
      </Button>
    </Flex>
  );
}

/** A switch's `default`: the steps run when no case holds, drawn from its `default` handle. */
export function DefaultTargets({ value }: { value: unknown }) {
  const targets = Array.isArray(value) ? value.map(String) : [];
  return (
    <Flex gap="1" wrap="wrap" data-testid="field-default">
      {targets.length === 0 ? <Text size="1" color="gray">drag from the switch's <Code size="1" variant="ghost">default</Code> handle to a step</Text> : targets.map((t) => <Badge key={t} color="gray">{t}</Badge>)}
    </Flex>
  );
}
