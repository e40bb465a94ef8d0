// The run under the canvas: status, cancel, the question a step waits on, and tabs:
// Steps (one row per step: status, model, tokens, cost, duration, attempts, output; a map's
// or loop's row with a picker of its items or iterations, whose steps' rows follow it, by
// their recorded paths such as `each[3].summarize`; the selected row's drawer with the
// step's input, reasoning, output, model and why, tokens, attempts, fallbacks, guardrail
// verdicts and an agent's transcript), Timeline (the Gantt chart), Events (the
// engine's events as they came) and Outputs (the run's outputs and each step's output).
import { Fragment, useState } from 'react';
import { Badge, Button, Callout, Code, Flex, Table, Tabs, Text } from '@radix-ui/themes';
import { Check, Square, X } from 'lucide-react';
import { useEditor } from '../store';
import type { Backend, HumanDecision, RunHandle } from '../backend';
import { Timeline } from './Timeline';
import { STATUS_COLOR } from './HistoryDialog';
import { ItemPicker } from './GroupNode';
import { Transcript } from './Transcript';
import { itemsOf } from '../graph';
import type { StepRun } from '../store';

function duration(ms: number | undefined): string {
  if (ms === undefined) return '';
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function StepDrawer({ open }: { open: string }) {
  const run = useEditor((s) => s.run);
  const detail = run?.detail?.steps.find((s) => s.step_id === open);
  return (
    <div className="step-detail" data-testid="step-detail">
      <Text as="div" size="2" weight="bold" mb="2">{open}</Text>
      {!detail && <Text size="1" color="gray">Details appear when the step's record is stored (at the end of the run).</Text>}
      {detail && (
        <dl>
          <dt>input</dt>
          <dd><pre data-testid="detail-input">{detail.input ?? '—'}</pre></dd>
          {detail.reasoning && (
            <>
              <dt>reasoning (not passed to dependants)</dt>
              <dd><pre data-testid="detail-reasoning">{detail.reasoning}</pre></dd>
            </>
          )}
          <dt>output</dt>
          <dd><pre data-testid="detail-output">{detail.output_json ? JSON.stringify(detail.output_json, null, 2) : detail.output ?? '—'}</pre></dd>
          <dt>model</dt>
          <dd data-testid="detail-model">{detail.model ?? '—'}</dd>
          <dt>why this model</dt>
          <dd data-testid="detail-why">{detail.model_reason ?? '—'}{detail.cached ? ' (output from the cache)' : ''}</dd>
          <dt>tokens</dt>
          <dd data-testid="detail-tokens">
            {detail.usage ? `${detail.usage.prompt_tokens} in, ${detail.usage.completion_tokens} out` : '—'}
            {detail.cost_usd ? `, $${detail.cost_usd.toFixed(6)}` : ''}
          </dd>
          <dt>duration</dt>
          <dd>{detail.duration_ms} ms</dd>
          <dt>attempts</dt>
          <dd>
            <ol data-testid="detail-attempts">
              {detail.attempts.map((a) => (
                <li key={a.attempt}>
                  {a.model ?? 'no model'}, {a.duration_ms} ms
                  {a.error_kind ? ` — ${a.error_kind}: ${a.error_message ?? ''}` : ' — ok'}
                </li>
              ))}
            </ol>
          </dd>
          <dt>fallbacks</dt>
          <dd data-testid="detail-fallbacks">
            {detail.fallbacks.length === 0 && '—'}
            {detail.fallbacks.map((f, i) => (
              <div key={i}>fallback ({f.rung}): {f.from} → {f.to}: {f.reason}</div>
            ))}
          </dd>
          <dt>guardrails</dt>
          <dd data-testid="detail-guardrails">
            {(detail.guardrails ?? []).length === 0 && '—'}
            {(detail.guardrails ?? []).map((g, i) => (
              <div key={i}>
                {g.stage} · {g.detector}: {g.action} ({g.count}, {g.severity})
              </div>
            ))}
          </dd>
          {(detail.transcript ?? []).length > 0 && (
            <>
              <dt>transcript</dt>
              <dd><Transcript entries={detail.transcript} /></dd>
            </>
          )}
        </dl>
      )}
    </div>
  );
}

const NO_STEPS: Record<string, StepRun> = {};

/** One step's row: `id` is its recorded path, `label` what the row shows (the last part of a body step's path). */
function StepRow({ id, label, s, open, onOpen, child }: { id: string; label: string; s: StepRun; open: boolean; onOpen(): void; child: boolean }) {
  return (
    <Table.Row data-testid={`run-row-${id}`} className={`clickable ${open ? 'open' : ''} ${child ? 'run-row-child' : ''}`} onClick={onOpen}>
      <Table.RowHeaderCell>
        <Button size="1" variant="ghost" color="gray" highContrast aria-expanded={open} aria-label={`${id}: details`}>
          {label}
        </Button>
      </Table.RowHeaderCell>
      <Table.Cell>
        <Badge highContrast color={STATUS_COLOR[s.status] ?? (s.status === 'retrying' ? 'amber' : 'gray')} data-testid={`run-step-status-${id}`}>
          {s.status}
        </Badge>
        {s.waitingFor && s.status === 'waiting' && (
          <Text size="1" color="gray" data-testid={`run-step-waiting-${id}`}> for {s.waitingFor}</Text>
        )}
      </Table.Cell>
      <Table.Cell><Code variant="ghost" size="1">{s.model ?? ''}</Code></Table.Cell>
      <Table.Cell className="num" data-testid={`run-tokens-${id}`}>
        {s.usage ? s.usage.prompt_tokens + s.usage.completion_tokens : s.tokenCount || ''}
      </Table.Cell>
      <Table.Cell className="num">{s.costUsd ? `$${s.costUsd.toFixed(4)}` : ''}</Table.Cell>
      <Table.Cell className="num">{duration(s.durationMs)}</Table.Cell>
      <Table.Cell className="num" data-testid={`run-attempts-${id}`}>{s.attempt ?? ''}</Table.Cell>
      <Table.Cell className="output" data-testid={`run-output-${id}`}>
        {s.reasoning && (
          <details className="reasoning" data-testid={`run-reasoning-${id}`} open={!s.tokens}>
            <summary>{s.tokens ? 'reasoning' : 'thinking…'}</summary>
            {s.reasoning}
          </details>
        )}
        {s.error && s.status !== 'succeeded' ? s.error : s.tokens}
      </Table.Cell>
    </Table.Row>
  );
}

/**
 * The rows of the steps recorded under `prefix` (`''` for the workflow's own, `each[2].`
 * for item 2 of `each`), each map or loop followed by its item picker and the rows of
 * the picked item's steps.
 */
function StepRows({ prefix, open, setOpen }: { prefix: string; open: string | null; setOpen(id: string | null): void }) {
  const steps = useEditor((s) => s.run?.steps ?? NO_STEPS);
  const picked = useEditor((s) => s.picked);
  const nodes = useEditor((s) => s.nodes);
  const keys = Object.keys(steps);
  const here = keys.filter((k) => k.startsWith(prefix) && !k.slice(prefix.length).includes('['));
  return (
    <>
      {here.map((id) => {
        const items = itemsOf(keys, id);
        const own = id.slice(prefix.length);
        const kind = nodes.find((n) => n.id === own)?.data.step.kind ?? 'map';
        return (
          <Fragment key={id}>
            <StepRow id={id} label={own} s={steps[id]} open={open === id} onOpen={() => setOpen(open === id ? null : id)} child={prefix !== ''} />
            {items.length > 0 && (
              <>
                <Table.Row className="run-row-child" data-testid={`run-items-${id}`}>
                  <Table.Cell colSpan={8}>
                    <Flex align="center" gap="2">
                      <Text size="1" color="gray">
                        {id}: {items.length} {kind === 'loop' ? 'iterations' : 'items'}, showing
                      </Text>
                      <ItemPicker path={id} kind={kind} testId={`run-item-${id}`} />
                    </Flex>
                  </Table.Cell>
                </Table.Row>
                <StepRows prefix={`${id}[${picked[id] ?? 0}].`} open={open} setOpen={setOpen} />
              </>
            )}
          </Fragment>
        );
      })}
    </>
  );
}

function StepsTab() {
  const run = useEditor((s) => s.run);
  const [open, setOpen] = useState<string | null>(null);
  if (!run) return null;
  return (
    <>
      <Table.Root size="1" data-testid="run-steps">
        <Table.Header>
          <Table.Row>
            <Table.ColumnHeaderCell>step</Table.ColumnHeaderCell>
            <Table.ColumnHeaderCell>status</Table.ColumnHeaderCell>
            <Table.ColumnHeaderCell>model</Table.ColumnHeaderCell>
            <Table.ColumnHeaderCell className="num">tokens</Table.ColumnHeaderCell>
            <Table.ColumnHeaderCell className="num">cost</Table.ColumnHeaderCell>
            <Table.ColumnHeaderCell className="num">time</Table.ColumnHeaderCell>
            <Table.ColumnHeaderCell className="num">attempts</Table.ColumnHeaderCell>
            <Table.ColumnHeaderCell>output</Table.ColumnHeaderCell>
          </Table.Row>
        </Table.Header>
        <Table.Body>
          <StepRows prefix="" open={open} setOpen={setOpen} />
        </Table.Body>
      </Table.Root>
      {open && <StepDrawer open={open} />}
    </>
  );
}

function EventsTab() {
  const events = useEditor((s) => s.run?.events ?? []);
  // Tokens are many and small: shown as one line per run of them.
  const rows: { type: string; step?: string; text: string }[] = [];
  for (const e of events) {
    const step = 'step_id' in e ? e.step_id : undefined;
    const last = rows[rows.length - 1];
    if ((e.type === 'token' || e.type === 'reasoning') && last && last.type === e.type && last.step === step) {
      last.text += e.text;
      continue;
    }
    const { type, run_id: _r, step_id: _s, ...rest } = e as Record<string, unknown> & { type: string };
    void _r;
    void _s;
    rows.push({ type, step, text: type === 'token' || type === 'reasoning' ? String(rest.text ?? '') : JSON.stringify(rest) });
  }
  return (
    <ol className="events" data-testid="run-events">
      {rows.length === 0 && <Text size="1" color="gray">No events yet.</Text>}
      {rows.map((r, i) => (
        <li key={i} data-testid={`event-${r.type}`}>
          <Code size="1" color={r.type.includes('fail') ? 'red' : r.type.includes('succeeded') ? 'green' : 'gray'}>{r.type}</Code>{' '}
          {r.step && <strong>{r.step}</strong>} {r.text}
        </li>
      ))}
    </ol>
  );
}

function OutputsTab() {
  const run = useEditor((s) => s.run);
  if (!run) return null;
  const outputs = run.detail?.outputs;
  return (
    <Flex direction="column" gap="2" className="outputs" data-testid="run-outputs">
      {outputs !== undefined && outputs !== null && (
        <>
          <Text size="1" weight="bold">Workflow outputs</Text>
          <pre data-testid="run-outputs-json">{JSON.stringify(outputs, null, 2)}</pre>
        </>
      )}
      {Object.entries(run.steps)
        .filter(([, s]) => s.tokens)
        .map(([id, s]) => (
          <div key={id}>
            <Text size="1" weight="bold">{id}</Text>
            <pre data-testid={`outputs-${id}`}>{s.tokens}</pre>
          </div>
        ))}
    </Flex>
  );
}

export function RunPanel({ backend, handle }: { backend: Backend; handle: RunHandle | null }) {
  const run = useEditor((s) => s.run);
  const [tab, setTab] = useState('steps');
  if (!run) return null;
  const decide = (decision: HumanDecision) => {
    if (run.question) void backend.answer(run.runId, run.question.stepId, decision);
  };
  return (
    <section className="run-panel" data-testid="run-panel" aria-label="Run">
      <div className="run-panel-head">
        <Badge size="2" highContrast color={STATUS_COLOR[run.status] ?? 'gray'} data-testid="run-status">{run.status}</Badge>
        {run.past && <Text size="1" color="gray">from the history</Text>}
        <span className="run-id" data-testid="run-id">{run.runId}</span>
        {run.status === 'running' && handle && !run.past && (
          <Button size="1" color="red" variant="soft" data-testid="run-cancel" onClick={() => handle.cancel()}>
            <Square size={12} /> Cancel
          </Button>
        )}
      </div>
      {run.question && (
        <Callout.Root color="amber" size="1" className="question" data-testid="run-question">
          <Callout.Text>
            <strong>{run.question.stepId}</strong> asks: {run.question.text}
          </Callout.Text>
          <Flex gap="2">
            <Button size="1" color="green" data-testid="answer-approve" onClick={() => decide({ decision: 'approve' })}>
              <Check size={12} /> Approve
            </Button>
            <Button size="1" color="red" variant="soft" data-testid="answer-reject" onClick={() => decide({ decision: 'reject' })}>
              <X size={12} /> Reject
            </Button>
          </Flex>
        </Callout.Root>
      )}
      <Tabs.Root value={tab} onValueChange={setTab} className="run-tabs">
        <Tabs.List size="1" aria-label="Run views">
          {[
            ['steps', 'Steps'],
            ['timeline', 'Timeline'],
            ['events', 'Events'],
            ['outputs', 'Outputs'],
          ].map(([v, label]) => (
            <Tabs.Trigger key={v} value={v} data-testid={`run-tab-${v}`}>
              {label}
            </Tabs.Trigger>
          ))}
        </Tabs.List>
        <Tabs.Content value="steps" forceMount className="run-tab">
          <StepsTab />
        </Tabs.Content>
        <Tabs.Content value="timeline" forceMount className="run-tab">
          <Timeline />
        </Tabs.Content>
        <Tabs.Content value="events" forceMount className="run-tab">
          {tab === 'events' && <EventsTab />}
        </Tabs.Content>
        <Tabs.Content value="outputs" forceMount className="run-tab">
          {tab === 'outputs' && <OutputsTab />}
        </Tabs.Content>
      </Tabs.Root>
    </section>
  );
}
