import { useEffect, useState } from 'react';
import { Badge, Button, Callout, Checkbox, Flex, Select, Table, Text } from '@radix-ui/themes';
import { ArrowLeft, GitCompare } from 'lucide-react';
import { RunDiff } from './RunDiff';
import { Modal } from '../design/Modal';
import { useEditor } from '../store';
import { newTab } from '../tabs';
import type { Backend, RunSummary, StoredRun } from '../backend';

/** Past runs from the run database (shared with the CLI); opening one shows it on the canvas. */
/** Runs that have not finished: paused, waiting, or interrupted (their process died). */
const UNFINISHED = new Set(['running', 'paused', 'waiting_for_human']);

/** Who started a run: a trigger's kind and name (just the kind when it has no name of
 * its own), or `person` (the Run button, `nexus run`, the API). */
export function startedBy(r: RunSummary): string {
  if (!r.trigger) return 'person';
  return r.trigger.name === r.trigger.kind ? r.trigger.kind : `${r.trigger.kind}: ${r.trigger.name}`;
}

/** A run status's badge colour. */
export const STATUS_COLOR: Record<string, 'green' | 'red' | 'amber' | 'gray' | 'blue'> = {
  succeeded: 'green',
  failed: 'red',
  running: 'blue',
  paused: 'amber',
  waiting_for_human: 'amber',
  waiting: 'amber',
  cancelled: 'gray',
  skipped: 'gray',
};

export function HistoryDialog({
  backend,
  onClose,
  onResume,
}: {
  backend: Backend;
  onClose(): void;
  /** Continues an unfinished run in the run panel. */
  onResume(runId: string): void;
}) {
  const [runs, setRuns] = useState<RunSummary[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  /** Runs picked for the run-to-run diff (at most two, of one workflow). */
  const [picked, setPicked] = useState<string[]>([]);
  const [diff, setDiff] = useState<[StoredRun, StoredRun] | null>(null);
  /** Only the runs started this way (`startedBy`), or all. */
  const [by, setBy] = useState('all');
  const starters = [...new Set((runs ?? []).map(startedBy))].sort();
  const shown = (runs ?? []).filter((r) => by === 'all' || startedBy(r) === by);
  const pickedWorkflow = runs?.find((r) => r.run_id === picked[0])?.workflow_id;
  const compare = async () => {
    try {
      const both = await Promise.all(picked.map((id) => backend.getRun(id)));
      both.sort((a, b) => Date.parse(a.started_at) - Date.parse(b.started_at));
      setDiff([both[0], both[1]]);
    } catch (e) {
      setError(String(e));
    }
  };
  useEffect(() => {
    backend.listRuns(50).then(setRuns, (e) => setError(String(e)));
  }, [backend]);
  const open = async (id: string) => {
    try {
      // In a tab of its own: the workflow shown stays open as it is.
      const detail = await backend.getRun(id);
      await newTab();
      await useEditor.getState().showRun(detail);
      onClose();
    } catch (e) {
      setError(String(e));
    }
  };
  return (
    <Modal testId="history-dialog" title="Run history" description="Runs of every workflow, newest first (shared with the CLI). Open one to see it on the canvas." width={860} onClose={onClose}>
      {error && (
        <Callout.Root color="red" size="1">
          <Callout.Text>{error}</Callout.Text>
        </Callout.Root>
      )}
      {diff && (
        <>
          <Flex>
            <Button variant="soft" color="gray" data-testid="diff-back" onClick={() => setDiff(null)}>
              <ArrowLeft size={14} /> All runs
            </Button>
          </Flex>
          <RunDiff before={diff[0]} after={diff[1]} />
        </>
      )}
      {!diff && runs && runs.length > 1 && (
        <Flex align="center" gap="3">
          <Select.Root value={by} onValueChange={setBy} size="1">
            <Select.Trigger data-testid="history-started-by" aria-label="started by" />
            <Select.Content position="popper">
              <Select.Item value="all">started by anyone</Select.Item>
              {starters.map((s) => (
                <Select.Item key={s} value={s}>
                  {s}
                </Select.Item>
              ))}
            </Select.Content>
          </Select.Root>
          <Text size="1" color="gray" className="grow">
            Tick two runs of one workflow to see what changed between them, step by step.
          </Text>
          <Button data-testid="history-compare" disabled={picked.length !== 2} onClick={() => void compare()}>
            <GitCompare size={14} /> Compare
          </Button>
        </Flex>
      )}
      {!diff && runs === null && !error && <Text size="2" color="gray">Loading…</Text>}
      {runs?.length === 0 && <Text size="2" color="gray">No runs yet.</Text>}
      {!diff && runs && runs.length > 0 && (
        <Table.Root size="1" variant="surface">
          <Table.Header>
            <Table.Row>
              <Table.ColumnHeaderCell><span className="sr-only">compare</span></Table.ColumnHeaderCell>
              <Table.ColumnHeaderCell>workflow</Table.ColumnHeaderCell>
              <Table.ColumnHeaderCell>status</Table.ColumnHeaderCell>
              <Table.ColumnHeaderCell>started by</Table.ColumnHeaderCell>
              <Table.ColumnHeaderCell>started</Table.ColumnHeaderCell>
              <Table.ColumnHeaderCell>steps</Table.ColumnHeaderCell>
              <Table.ColumnHeaderCell>tokens</Table.ColumnHeaderCell>
              <Table.ColumnHeaderCell><span className="sr-only">actions</span></Table.ColumnHeaderCell>
            </Table.Row>
          </Table.Header>
          <Table.Body>
            {shown.map((r) => (
              <Table.Row key={r.run_id} data-testid={`history-row-${r.run_id}`} className="clickable" onClick={() => void open(r.run_id)}>
                <Table.Cell onClick={(e) => e.stopPropagation()}>
                  <Checkbox
                    data-testid={`history-pick-${r.run_id}`}
                    aria-label={`Compare run ${r.run_id}`}
                    checked={picked.includes(r.run_id)}
                    disabled={!picked.includes(r.run_id) && (picked.length >= 2 || (pickedWorkflow !== undefined && pickedWorkflow !== r.workflow_id))}
                    onCheckedChange={(c) => setPicked(c ? [...picked, r.run_id] : picked.filter((p) => p !== r.run_id))}
                  />
                </Table.Cell>
                <Table.RowHeaderCell>{r.workflow_id}</Table.RowHeaderCell>
                <Table.Cell>
                  <Badge highContrast color={STATUS_COLOR[r.status] ?? 'gray'}>{r.status}</Badge>
                </Table.Cell>
                <Table.Cell data-testid={`history-by-${r.run_id}`}>{startedBy(r)}</Table.Cell>
                <Table.Cell>{new Date(r.started_at).toLocaleString()}</Table.Cell>
                <Table.Cell>{r.steps}</Table.Cell>
                <Table.Cell>{r.tokens}</Table.Cell>
                <Table.Cell>
                  {UNFINISHED.has(r.status) && (
                    <Button
                      size="1"
                      variant="soft"
                      data-testid={`history-resume-${r.run_id}`}
                      onClick={(e) => {
                        e.stopPropagation();
                        onResume(r.run_id);
                      }}
                    >
                      Resume
                    </Button>
                  )}
                </Table.Cell>
              </Table.Row>
            ))}
          </Table.Body>
        </Table.Root>
      )}
    </Modal>
  );
}
