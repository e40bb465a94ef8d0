// The run-to-run diff view (runDiff.ts): per step, the output as a word diff and the
// model, tokens, duration, cost, status and attempts of both runs, changes marked.
import { Badge, Code, Flex, Table, Text } from '@radix-ui/themes';
import type { StoredRun } from '../backend';
import { diffRuns, type Side } from '../runDiff';

const ms = (n: number) => (n < 1000 ? `${n} ms` : `${(n / 1000).toFixed(2)} s`);

const ROWS: { key: string; label: string; show(s: Side): string }[] = [
  { key: 'status', label: 'status', show: (s) => s.status },
  { key: 'model', label: 'model', show: (s) => s.model ?? '—' },
  { key: 'tokens', label: 'tokens', show: (s) => (s.tokens === null ? '—' : String(s.tokens)) },
  { key: 'duration', label: 'duration', show: (s) => ms(s.durationMs) },
  { key: 'cost', label: 'cost', show: (s) => (s.costUsd === null ? '—' : `$${s.costUsd.toFixed(6)}`) },
  { key: 'attempts', label: 'attempts', show: (s) => String(s.attempts) },
];

export function RunDiff({ before, after }: { before: StoredRun; after: StoredRun }) {
  const steps = diffRuns(before, after);
  const changedSteps = steps.filter((s) => s.changed.length).length;
  return (
    <Flex direction="column" gap="3" data-testid="run-diff">
      <Text size="2" data-testid="run-diff-summary">
        <Code>{before.run_id.slice(0, 12)}</Code> ({new Date(before.started_at).toLocaleString()}) →{' '}
        <Code>{after.run_id.slice(0, 12)}</Code> ({new Date(after.started_at).toLocaleString()}): {changedSteps} of {steps.length} steps changed
      </Text>
      {steps.map((s) => (
        <section key={s.stepId} className="diff-step" data-testid={`diff-step-${s.stepId}`} aria-label={`Step ${s.stepId}`}>
          <Flex gap="2" align="center">
            <Text size="2" weight="bold">{s.stepId}</Text>
            {s.changed.length === 0 ? (
              <Badge color="gray" data-testid={`diff-unchanged-${s.stepId}`}>unchanged</Badge>
            ) : (
              s.changed.map((c) => (
                <Badge key={c} highContrast={c !== 'added' && c !== 'removed'} color={c === 'added' ? 'green' : c === 'removed' ? 'red' : 'amber'} data-testid={`diff-changed-${s.stepId}-${c}`}>
                  {c}
                </Badge>
              ))
            )}
          </Flex>
          <Table.Root size="1">
            <Table.Header>
              <Table.Row>
                <Table.ColumnHeaderCell />
                <Table.ColumnHeaderCell>before</Table.ColumnHeaderCell>
                <Table.ColumnHeaderCell>after</Table.ColumnHeaderCell>
              </Table.Row>
            </Table.Header>
            <Table.Body>
              {ROWS.map((r) => (
                <Table.Row key={r.key} className={s.changed.includes(r.key) ? 'changed' : ''}>
                  <Table.RowHeaderCell>{r.label}</Table.RowHeaderCell>
                  <Table.Cell data-testid={`diff-${s.stepId}-${r.key}-before`}>{s.before ? r.show(s.before) : '—'}</Table.Cell>
                  <Table.Cell data-testid={`diff-${s.stepId}-${r.key}-after`}>{s.after ? r.show(s.after) : '—'}</Table.Cell>
                </Table.Row>
              ))}
            </Table.Body>
          </Table.Root>
          <pre className="diff" data-testid={`diff-output-${s.stepId}`} aria-label={`Output of ${s.stepId}, before and after`}>
            {s.output.map((part, i) =>
              part.added ? (
                <ins key={i}>{part.value}</ins>
              ) : part.removed ? (
                <del key={i}>{part.value}</del>
              ) : (
                <span key={i}>{part.value}</span>
              ),
            )}
          </pre>
        </section>
      ))}
    </Flex>
  );
}
