import { useState } from 'react';
import { useEditor } from '../store';
import type { Backend, HumanDecision, RunHandle } from '../backend';
import { Timeline } from './Timeline';

/**
 * The run under the canvas: status, cancel, the question a step waits on, one row per
 * step (status, model, duration, output) and, for the selected row, what the store
 * recorded: the step's input, reasoning (a thinking model's, streamed apart and never passed
 * on), output, model and why, tokens and every attempt.
 */
export function RunPanel({ backend, handle }: { backend: Backend; handle: RunHandle | null }) {
  const run = useEditor((s) => s.run);
  const [open, setOpen] = useState<string | null>(null);
  if (!run) return null;
  const detail = run.detail?.steps.find((s) => s.step_id === open);
  const decide = (decision: HumanDecision) => {
    if (run.question) void backend.answer(run.runId, run.question.stepId, decision);
  };
  return (
    <section className="run-panel" data-testid="run-panel">
      <div className="row">
        <strong data-testid="run-status">{run.status}</strong>
        {run.past && <span>from the history</span>}
        <span className="run-id" data-testid="run-id">{run.runId}</span>
        {run.status === 'running' && handle && !run.past && (
          <button data-testid="run-cancel" onClick={() => handle.cancel()}>Cancel</button>
        )}
      </div>
      {run.question && (
        <div className="question" data-testid="run-question">
          <span>
            <strong>{run.question.stepId}</strong> asks: {run.question.text}
          </span>
          <button data-testid="answer-approve" onClick={() => decide({ decision: 'approve' })}>Approve</button>
          <button data-testid="answer-reject" onClick={() => decide({ decision: 'reject' })}>Reject</button>
        </div>
      )}
      <table>
        <thead>
          <tr>
            <th>step</th>
            <th>status</th>
            <th>model</th>
            <th>time</th>
            <th>output</th>
          </tr>
        </thead>
        <tbody>
          {Object.entries(run.steps).map(([id, s]) => (
            <tr
              key={id}
              data-testid={`run-row-${id}`}
              className={open === id ? 'open' : ''}
              onClick={() => setOpen(open === id ? null : id)}
            >
              <td>{id}</td>
              <td>{s.status}</td>
              <td>{s.model ?? ''}</td>
              <td>{s.durationMs !== undefined ? `${s.durationMs} ms` : ''}</td>
              <td className="output" data-testid={`run-output-${id}`}>
                {s.reasoning && (
                  <details className="reasoning" data-testid={`run-reasoning-${id}`} open={!s.tokens}>
                    <summary>{s.tokens ? 'reasoning' : 'thinking…'}</summary>
                    {s.reasoning}
                  </details>
                )}
                {s.error && s.status !== 'succeeded' ? s.error : s.tokens}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {open && (
        <div className="step-detail" data-testid="step-detail">
          <h4>{open}</h4>
          {!detail && <p>Details appear when the step's record is stored (at the end of the run).</p>}
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
                {detail.fallbacks.map((f, i) => (
                  <div key={i}>fallback ({f.rung}): {f.from} → {f.to}: {f.reason}</div>
                ))}
              </dd>
            </dl>
          )}
        </div>
      )}
      <Timeline />
    </section>
  );
}
