// How a run's state follows its events and its stored record: pure functions of the
// run state, so that a run in a workflow's tab that is not shown is kept up to date
// the same way as the shown one (tabs.ts).
import type { EngineEvent, StoredRun } from './backend';
import type { StepRecord } from './bindings';
import { MAX_EVENTS, type AttemptBar, type RunState, type StepRun, type StepStatus } from './store';

/** The stored record of a step as the run panel keeps it. */
export function fromRecord(st: StepRecord): StepRun {
  const status: StepStatus = st.status === 'cancelled' ? 'skipped' : st.status;
  return {
    status,
    tokens: st.output ?? '',
    reasoning: st.reasoning ?? undefined,
    model: st.model,
    error: st.error ?? undefined,
    durationMs: st.duration_ms,
    attempt: st.attempts.length,
    usage: st.usage,
    costUsd: st.cost_usd,
    fallback: st.fallbacks.length ? `${st.fallbacks[st.fallbacks.length - 1].from} → ${st.fallbacks[st.fallbacks.length - 1].to}` : undefined,
  };
}

/** The run with the stored record attached (null when it is another run's record). */
export function withDetail(run: RunState | null, detail: StoredRun): RunState | null {
  if (!run || run.runId !== detail.run_id) return null;
  // Steps that stream nothing (templates, approvals, cached outputs) show their
  // stored output once the record is read; a stored output replaces the streamed text.
  const steps = { ...run.steps };
  for (const st of detail.steps) {
    const cur = steps[st.step_id];
    // A body step's record (`each[2].say`) may come only with the record.
    if (!cur) {
      steps[st.step_id] = fromRecord(st);
      continue;
    }
    if (cur && st.output != null) steps[st.step_id] = { ...cur, tokens: st.output };
    if (steps[st.step_id] && st.reasoning != null) steps[st.step_id] = { ...steps[st.step_id], reasoning: st.reasoning };
    if (steps[st.step_id]) steps[st.step_id] = { ...steps[st.step_id], usage: st.usage, costUsd: st.cost_usd, attempt: st.attempts.length || steps[st.step_id].attempt };
  }
  return { ...run, steps, detail };
}

/** The run after event `e` (null when there is no run). */
export function withEvent(run: RunState | null, e: EngineEvent): RunState | null {
  if (!run) return null;
  const steps = { ...run.steps };
  const events = run.events.length >= MAX_EVENTS ? [...run.events.slice(1), e] : [...run.events, e];
  // The run's id is known from its first event, even before the backend's handle
  // (an approval can ask before `run()` has returned).
  const runId = run.runId === 'starting' && 'run_id' in e ? e.run_id : run.runId;
  run = { ...run, events, runId };
  const patch = (id: string, p: Partial<StepRun>) => {
    steps[id] = { ...(steps[id] ?? { status: 'queued', tokens: '' }), ...p };
  };
  const now = Date.now() - run.startedAt;
  let attempts = run.attempts;
  const close = (id: string, outcome: AttemptBar['outcome']) => {
    attempts = attempts.map((a) =>
      a.step === id && a.end === undefined ? { ...a, end: now, outcome } : a,
    );
  };
  switch (e.type) {
    case 'step_started':
      patch(e.step_id, {
        status: e.attempt > 1 ? 'retrying' : 'running',
        model: e.model,
        tokens: '',
        reasoning: undefined,
        attempt: e.attempt,
        startedAt: Date.now(),
        tokenCount: 0,
      });
      close(e.step_id, 'failed');
      attempts = [...attempts, { step: e.step_id, attempt: e.attempt, model: e.model, start: now, outcome: 'running' }];
      break;
    case 'token':
      patch(e.step_id, { tokens: (steps[e.step_id]?.tokens ?? '') + e.text, tokenCount: (steps[e.step_id]?.tokenCount ?? 0) + 1 });
      break;
    case 'reasoning':
      patch(e.step_id, { reasoning: (steps[e.step_id]?.reasoning ?? '') + e.text });
      break;
    case 'attempt_failed':
      patch(e.step_id, { status: 'retrying', error: e.message });
      close(e.step_id, 'failed');
      break;
    case 'step_succeeded':
      patch(e.step_id, { status: 'succeeded', model: e.model, durationMs: e.duration_ms, usage: e.usage, startedAt: undefined });
      close(e.step_id, 'succeeded');
      break;
    case 'step_failed':
      patch(e.step_id, { status: 'failed', error: e.error, startedAt: undefined });
      close(e.step_id, 'failed');
      break;
    case 'step_skipped':
      patch(e.step_id, { status: 'skipped', error: e.reason });
      close(e.step_id, 'skipped');
      break;
    case 'fallback_taken':
      patch(e.step_id, { fallback: `${e.from} → ${e.to}` });
      break;
    case 'map_progress':
      patch(e.step_id, { progress: { done: e.done, failed: e.failed, total: e.total } });
      break;
    case 'run_finished':
      return { ...run, steps, attempts, status: e.status, question: null };
    case 'waiting_for_human':
      return { ...run, steps, attempts, question: { stepId: e.step_id, text: e.question } };
    case 'waiting_for_event':
      patch(e.step_id, { status: 'waiting', waitingFor: e.until ? `event ${e.event} until ${new Date(e.until).toLocaleString()}` : `event ${e.event}` });
      break;
    case 'human_decided':
      return { ...run, steps, attempts, question: null };
    default:
      break;
  }
  return { ...run, steps, attempts };
}
